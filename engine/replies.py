"""SMTP replies: split a reply into code, enhanced code and text, and say what it means.

Pure: no I/O, no sockets, no logging, no settings. The probe hands over what the server said;
this module decides what that says about the recipient address, by these numbered rules,
evaluated in order (first match wins; `_RULES` below is the table that implements them):

    1   2xx                                   -> valid/accepted (at any stage; callers ask at RCPT)
    2   before RCPT, nothing is a verdict on the recipient: an invalid/full answer becomes
        unknown (blocked for 5xx, temporary_failure for 4xx)
    3   "greylist..." (never a 421), OpenBSD spamd's bare 451 -> unknown/greylisted (with the
        server's delay when it states one)
    4   refusals aimed at us: our IP, PTR, HELO, sender, SPF/DKIM/DMARC, reputation, spam,
        relay, authentication, policy, access denied (but Microsoft's 5.4.1 "Recipient address
        rejected: Access denied" is Directory-Based Edge Blocking: no such recipient)
                                              -> unknown/blocked, whatever the code
    5   421                                   -> unknown/temporary_failure (connection closing)
    6   rate, load and server trouble         -> unknown/temporary_failure
   10   protocol: syntax, sequence, unknown command, TLS required; codes 500/502/503 and
        5.1.3 (malformed address)                                  -> unknown/protocol_error
    7   mailbox full or over quota            -> risky/mailbox_full (4xx too)
    8   5xx disabled/suspended/inactive, mailbox "blocked"         -> invalid/mailbox_disabled
    9   5xx no such user/mailbox, in many languages                -> invalid/mailbox_not_found
    3   450/451 "try again later" naming no cause                  -> unknown/greylisted
   11   text silent: the enhanced code decides (5.1.1 not found, 5.2.1 disabled, x.2.2 full,
        5.7.x and 5.1.7/5.1.8 blocked)
   12   otherwise 501/504/555 -> protocol_error, other 5xx -> unknown/blocked, 4xx ->
        unknown/temporary_failure; a code outside 2xx/4xx/5xx -> unknown/protocol_error

By stage: a 501 to EHLO/HELO objects to its only parameter, our HELO name -> unknown/blocked;
a 500 or 503 to RCPT is about our command, whatever its text says of a mailbox ->
unknown/protocol_error (unless it refuses us: rule 4).

Rule 0 ("explicit text beats the enhanced code") is why every text rule comes before rule 11.
Protocol complaints (10) are checked before the mailbox rules so that a complaint about our
command's syntax ("Bad recipient address syntax") is never read as a statement about a mailbox.
No library classifies SMTP replies this way (by our "about us is never invalid" principle), so
the table below is hand-written; it is data, and each marker should make sense to a mail admin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .result import Reason, ReplyCode, SmtpReply, Stage, Verdict
from .untrusted import clean_text

__all__ = ["classify", "greylist_delay_s", "parse_reply"]


def _markers(*alternatives: str) -> re.Pattern[str]:
    """Return one compiled pattern matching any of the alternatives (case-insensitive)."""
    return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives), re.I)


# --- Reading a reply ------------------------------------------------------------------------

# RFC 3463: class "." subject "." detail, subject and detail 1-3 digits.
_ENHANCED_CODE = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?=\s|$)")
# qmail and some gateways print the enhanced code inside the text: "(#5.1.1)", "#5.1.0 ...".
_HASH_ENHANCED_CODE = re.compile(r"#([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
# Text is matched with URLs cut to their host, addresses and IPs masked: a "policy" or "spam"
# in a help link's path, or a local part like "spam@", must not decide a verdict.
_URL = re.compile(r"\b(?:https?|ftp)://([^/\s?#)\]>]+)\S*", re.I)
_EMAIL_ADDRESS = re.compile(r"[^\s<>()\[\]@,;:\"']+@[^\s<>()\[\]@,;:\"']+")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")


def parse_reply(code: int, text: str) -> SmtpReply:
    """Return the reply with its RFC 3463 enhanced code split off.

    `text` is what follows the 3-digit code: lines joined by "\\n" (as aiosmtplib's
    SMTPResponse.message gives them). The enhanced code is taken from the first line when it
    is a valid x.y.z whose class matches the basic code's first digit (2/4/5); the same code
    repeated at the start of continuation lines is stripped; message keeps the rest, lines
    joined with "\\n", stripped.
    """
    # Untrusted text, made safe where it enters: invalid bytes become U+FFFD, control
    # characters go, the length is capped (untrusted.clean_text).
    lines = [line.strip() for line in clean_text(text).splitlines()]
    first = _ENHANCED_CODE.match(lines[0]) if lines else None
    if first is None or first.group(1) != str(code)[:1]:
        return SmtpReply(code, None, "\n".join(lines).strip())
    enhanced = first.group(0)
    kept = [_without_code(line, enhanced) for line in lines]
    return SmtpReply(code, enhanced, "\n".join(kept).strip())


def _without_code(line: str, enhanced: str) -> str:
    """Return the line without a leading copy of the reply's enhanced code."""
    if line == enhanced or (line.startswith(enhanced) and line[len(enhanced)].isspace()):
        return line[len(enhanced) :].strip()
    return line


@dataclass(frozen=True, slots=True)
class _Reading:
    """A reply as the rules see it: code, its class, enhanced code, and normalised text."""

    code: int
    klass: int
    enhanced: str | None
    text: str

    @classmethod
    def of(cls, reply: SmtpReply) -> _Reading:
        """Return the reading of a reply; the enhanced code falls back to a "#x.y.z" in text."""
        klass = reply.code // 100
        return cls(reply.code, klass, _enhanced_code(reply, klass), _normalised(reply.message))


def _enhanced_code(reply: SmtpReply, klass: int) -> str | None:
    """Return the reply's enhanced code when its class agrees with the basic code's."""
    if reply.enhanced_code and reply.enhanced_code[:1] == str(klass):
        return reply.enhanced_code
    if "#" in reply.message:
        for candidate in _HASH_ENHANCED_CODE.findall(reply.message):
            if candidate[:1] == str(klass):
                return candidate
    return None


# Each masking pattern runs only when the text holds what every one of its matches contains.
_DIGIT_DOT_DIGIT = re.compile(r"\d\.\d")


def _normalised(message: str) -> str:
    """Return the text the markers are matched against: one line, lower case, masked."""
    text = message
    if "://" in text:
        text = _URL.sub(lambda match: f" {match.group(1)} ", text)
    if "@" in text:
        text = _EMAIL_ADDRESS.sub("<@>", text)
    if _DIGIT_DOT_DIGIT.search(text):
        text = _IPV4.sub("<ipv4>", text)  # not "ip": "from <ipv4>" names no IP block
    return " ".join(text.split()).lower()


# --- Markers: what a reply's text can say ---------------------------------------------------

_GREYLIST = _markers(
    r"gr[ae]y[- ]?list",
    r"postgrey",
    r"liste grise",
    r"graue liste",
    r"lista gris",
    r"lista grigia",
    r"grijze lijst",
    r"сер\w* спис",
)

# OpenBSD spamd greylists with exactly this reply (spamd.c), naming neither greylisting nor a
# delay; the same words with anything else around them stay a plain temporary failure.
_SPAMD = re.compile(r"^temporary failure, please try again later\.?$")

# Microsoft 365 Directory-Based Edge Blocking: the tenant has no such recipient.
_DBEB = _markers(r"recipient address rejected:? access denied")

# Rule 4, one pattern per thing of ours a server can refuse.
_OUR_CLIENT = _markers(
    r"client host rejected",
    r"\bclient\b[^.;]{0,40}\b(?:blocked|rejected|denied|refused|banned)",
    r"blocked using",
    r"blocked - see",
    r"\bblock[- ]?list",
    r"\bblack[- ]?list",
    r"\bdeny[- ]?list",
    r"\b(?:white|allow)[- ]?list",
    r"\b(?:rbl|dnsbl|dnsrbl|rhsbl|uribl|surbl)\b",
    r"spamhaus|spamcop|cloudmark|barracuda ?(?:reputation|central)|\bsorbs\b",
    r"\bbann?ed\b",
    r"\bip\b[^.;]{0,40}\b(?:not (?:allowed|authori[sz]ed|permitted|accepted)|blocked|banned"
    r"|listed|rejected|refused|denied|gesperrt|blockiert|bloqu|blocc|geblokkeerd|заблокир)",
    r"not authori[sz]ed to (?:send|connect|deliver|use)",
    r"\byour (?:sending )?(?:ip|host ?name|host|(?:mail )?server|mta|network|domain|isp)\b",
    r"\b(?:mail ?server|server|host|network)\b[^.;]{0,30}\bis (?:\w+ )?(?:blocked|banned)",
    r"not allowed to (?:send|connect|relay)|no access from|open proxy",
    r"(?:dynamic|residential|dial-?up|consumer) (?:ip|address|range|pool|host)",
    r"liste noire|lista negra|lista nera|zwarte lijst|schwarze liste|черн\w* спис",
)
_OUR_PTR = _markers(
    r"\bptr\b",
    r"\brdns\b|fcrdns",
    r"\breverse\b",
    r"cannot find your (?:reverse )?host ?name",
    r"\bname lookup failed",
    r"forward dns",
    r"dns inverse|r[ée]solution inverse|dns inverso|обратн\w* (?:dns|зон)",
)
_OUR_HELO = _markers(
    r"\b(?:e?hlo|helo)\b[^.;]{0,40}\b(?:rejected|invalid|refused|denied|forged|bad|illegal"
    r"|not (?:allowed|accepted|valid|permitted|found)|unknown|does ?n[o'’]?t (?:exist|resolve)"
    r"|abgelehnt|ungültig|refus|rechaz|rifiutat|recusad|geweigerd|отклон)",
    r"\b(?:rejected|invalid|refused|denied|forged|bad|illegal)\b[^.;]{0,20}\b(?:e?hlo|helo)\b",
    r"fully[- ]qualified host ?name",
)
_OUR_SENDER = _markers(
    r"sender address rejected",
    r"domain of sender",
    r"sender (?:address|domain)\b[^.;]{0,40}\b(?:rejected|invalid|unknown|not|does ?n[o'’]?t"
    r"|blocked|denied|refused|unverified|must|listed)",
    r"\bsender\b[^.;]{0,20}\b(?:rejected|refused|denied|blocked|banned|unknown|invalid"
    r"|not (?:allowed|authori[sz]ed|permitted|in|on))",
    r"(?:invalid|unknown|bad|unverified|forged|unauthori[sz]ed|illegal|your|envelope) sender",
    r"sender (?:verif|callout|check)",
    r"sender domain",
    r"badmailfrom",
    r"\b(?:mail ?from|from|return[- ]path|envelope[- ]from|reply-to) (?:address|domain)",
    r"\bmail ?from\b[^.;]{0,60}\b(?:rejected|refused|denied|blocked|listed|invalid|not)",
    r"unregistered domains?",
    r"absender|exp[ée]diteur|remitente|mittente|remetente|afzender|avs[äa]ndar|nadawc|отправител",
)
_OUR_AUTHENTICATION = _markers(
    r"\bspf\b|sender policy framework",
    r"\bdkim\b|domainkeys",
    r"\bdmarc\b",
    r"unauthenticated|not authenticated",
    r"authentication (?:is )?(?:required|failed|failure|results)",
    r"must (?:first )?authenticate",
    r"anti-?spoof|\bspoof",
    r"authentifi\w* (?:requise|obligatoire|[ée]chou)|authentifizierung|autenticaci[óo]n"
    r"|autenticazione|autentica[çc][ãa]o",
)
_OUR_REPUTATION = _markers(
    r"reputation|r[ée]putation|reputaci[óo]n|reputazione|reputa[çc][ãa]o|репутац",
    # "spam", but not inside a host name such as antispam.example.com.
    r"\b(?:anti-?)?spam(?!\w*\.\w)",
    r"unsolicited|unerw[üu]nscht|ind[ée]sirable|no solicitad|non richiest|ongewenst|нежелательн",
    r"\bjunk",
    r"complaints?",
    r"bulk (?:mail|e-?mail|sender)",
    r"suspicious|phish|\bvirus|malware",
    r"content (?:filter|rejected|polic)",
)
_OUR_RELAY = _markers(
    r"\brelay(?:ing)?\b[^.;]{0,30}\b(?:denied|not (?:permitted|allowed|authori[sz]ed)"
    r"|prohibited|refused|rejected|disallowed|disabled|verweigert|nicht|refus|denegad|no permitid"
    r"|negat|rifiutat|recusad|geweigerd|niet toegestaan|запрещ)",
    r"(?:unable|cannot|can't|can ?not|will not|won't|do not|don't|does not|doesn't"
    r"|not allowed|not permitted|not authori[sz]ed) (?:to )?relay",
    r"unauthori[sz]ed relay",
    r"open relay|as a relay|rcpthosts|\brelais\b|\bno relay",
)
_OUR_POLICY = _markers(
    r"\bpolic(?:y|ies)\b",
    r"administrative(?:ly)? prohibit",
    r"\bprohibited\b",
    r"envelope blocked",
    r"denied by",
    r"richtlinie|\bpolitique|pol[íi]tica|\bbeleid|политик",
)
_OUR_ACCESS = _markers(
    r"\baccess\b[^.;]{0,30}\b(?:denied|refused|rejected|forbidden|not allowed)",
    r"zugriff verweigert|zugang verweigert|acc[èe]s (?:refus|interdit)|acceso denegado"
    r"|accesso negato|acesso negado|toegang geweigerd|доступ запрещ",
)

# Rule 6: throughput limits (ours or the recipient's) and load: come back later.
_RATE = _markers(
    r"too many",
    r"\brate\b",
    r"too (?:quickly|fast|frequent)",
    r"\bfrequen",
    r"\bper (?:hour|day|minute|second|connection|session)\b",
    r"\bhourly\b|\bdaily\b",
    r"excessive",
    r"\bvolume\b",
    r"throttl",
    r"concurrent",
    r"max(?:imum)? (?:number of )?(?:\w+ )?(?:messages?|connections?|recipients?|sessions?|mails?)",
    r"(?:send|sending|submission|outbound|messages?|relay|connection) quota",
    r"zu viele|trop de|demasiad[oa]s|tropp[ie]\b|te veel|слишком много|muit[oa]s",
)
# Server-side trouble, including the server's own storage (rule 7: that is not a full mailbox).
_SERVER_TROUBLE = _markers(
    r"insufficient (?:system )?(?:storage|disk|resources|space|memory)",
    r"system (?:storage|resources)",
    r"\bdisk (?:space|full|error)",
    r"no space left",
    r"\bqueue\b",
    r"(?:server|system|service)s? (?:is |are )?(?:busy|overloaded|error|problem|failure)",
    r"internal (?:server )?error",
    r"temporar\w* (?:failure|error|problem|unavailable|not available)",
    r"local (?:problem|error)",
    r"\bbusy\b",
    r"time ?out|timed out",
)
# Rule 10: the server did not understand or accept how we talk, not who we ask about.
_PROTOCOL = _markers(
    r"syntax",
    r"bad sequence|out of sequence",
    r"need (?:mail|rcpt|helo|ehlo|data)\b",
    r"send (?:helo|ehlo|mail)\b[^.;]{0,10}first",
    r"command (?:is )?(?:not )?(?:recogni[sz]ed|unrecogni[sz]ed|unknown|implemented|supported)",
    r"(?:unrecogni[sz]ed|unknown|unsupported|invalid|unimplemented) command",
    r"not implemented",
    r"unsupported (?:option|parameter|extension|feature|encoding)",
    r"(?:parameters?|options?|arguments?|extensions?)\b[^.;]{0,20}\bnot (?:recogni[sz]ed"
    r"|supported|implemented)",
    r"invalid (?:parameter|argument|option)",
    r"starttls",
    r"\btls\b[^.;]{0,20}\b(?:required|first|needed|not available)",
    r"(?:must|required to|need to) (?:use|issue|start|negotiate) (?:tls|encryption|a secure)",
    r"encryption (?:is )?(?:required|needed)",
    r"line too long",
    r"befehl|commande|comando|opdracht|команд",
)
# Rule 7: the recipient's mailbox is over its quota.
_FULL = _markers(
    r"over ?quota|\bquota",
    r"(?:mail ?box|inbox|mail ?folder|account|storage)\b[^.;]{0,20}\bfull\b",
    r"\b(?:user|recipient)\b[^.;]{0,20}\b(?:is|was) (?:\w+ )?full\b",
    r"\bfull (?:mail ?box|inbox)",
    r"mailbox size",
    r"(?:storage|space) allocation",
    r"out of (?:\w+ )?(?:storage|space)",
    r"\bvoll\b|speicher\w* (?:voll|überschritten|erschöpft)",
    r"\bpleine?\b|\bllen[oa]\b|\bpien[oa]\b|\bchei[ao]\b|\bvol\b|переполнен|квот",
)
# Rule 8: the mailbox exists but takes no mail. "Blocked" counts when it is the mailbox's.
_DISABLED = _markers(
    r"disabled|inactive|suspend|deactivated|de-activated|discontinued|archiv(?:ed|ée|ee)|frozen",
    r"no longer (?:valid|active|available|in use|exists?|used|accept\w*|receiv\w*)",
    r"\b(?:user|account|mailbox|recipient) (?:is )?not active\b",
    r"\b(?:mail ?box|account|postfach|konto|compte|cuenta|buz[óo]n|casella|conta|ящик|аккаунт"
    r"|учетн\w*)\b[^.;:()]{0,30}\b(?:blocked|locked|frozen|closed|expired|terminated"
    r"|cancell?ed|gesperrt|bloqu|blocc|geblokkeerd|заблокирован)",
    r"\b(?:blocked|locked|closed|expired|terminated) (?:mail ?box|account)",
    r"deaktiviert|stillgelegt|inaktiv|d[ée]sactiv|suspendu|inactif|desactivad|inactiv[oa]"
    r"|disattivat|sospes[oa]|disabilitat|desativad|inativ[oa]|gedeactiveerd|opgeschort"
    r"|отключен|заблокирован|неактивн|приостановлен|停用|冻结",
)
# A server feature being disabled is not the mailbox being disabled.
_FEATURE_DISABLED = _markers(
    r"(?:command|service|feature|relay\w*|tls|starttls|auth\w*|extension|vrfy|expn)\s+"
    r"(?:is\s+|has been\s+)?(?:temporarily\s+|currently\s+)?(?:disabled|suspended|inactive)",
)
# Rule 9: the recipient does not exist, in the words servers use.
_NOT_FOUND = _markers(
    r"(?:does|do|did) ?n[o'’]?t exist|\bnot exist",
    r"non-?existent|nonexisting",
    r"\bno such\b",
    r"\b(?:user|mailbox|recipient|addressee|account|local[- ]part|alias)e?s?"
    r"(?: [(<\[]*<@>[)>\]]*)? (?:is |was |are |were )?(?:unknown|not found|not known|not listed"
    r"|not recogni[sz]ed|not valid|invalid|not present|unavailable|not available)",
    r"\baddress(?:es)?(?: [(<\[]*<@>[)>\]]*)? (?:is |was |are |were )?(?:unknown|not found"
    r"|not present|invalid)",
    r"unknown (?:\w+ )?(?:user|recipient|mailbox|addressee|account|local[- ]?part|alias"
    r"|e-?mail|address)",
    r"invalid (?:recipient|mailbox|user|addressee|account|(?:e-?mail )?address)",
    r"not an? (?:known|valid|active) (?:user|recipient|address|mailbox|account)",
    r"no (?:mail ?box|account|user|recipient) (?:by|with|available|here|found|for)",
    r"there is no one at|badrcptto|badrecipientto|nessun (?:utente|destinatario)",
    r"bad destination mailbox address(?! syntax)",
    # "not found", but not a DNS record, certificate or host of the infrastructure
    r"(?<!record )(?<!records )(?<!dns )(?<!certificate )(?<!key )(?<!host )(?<!route )"
    r"(?<!mx )(?<!ptr )not found",
    r"(?:cannot|could ?n[o'’]?t|can't) (?:be )?(?:found|located)",
    r"unroute?able address",
    r"recip(?:ient)?notfound",
    r"not our customer",
    r"does ?n[o'’]?t have an? (?:[\w.-]+ )?account",
    r"\bno mailbox",
    r"no longer (?:a )?valid (?:user|mailbox|recipient|account)",
    r"misspelled",
    r"validrcptto",
    # German, French, Spanish, Italian, Portuguese, Dutch
    r"(?:benutzer|nutzer|empf[äa]nger|adresse|postfach|mailbox|konto)\w*[^.;]{0,25}unbekannt",
    r"unbekannte[rs]? (?:benutzer|nutzer|empf[äa]nger|adresse|postfach|konto)",
    r"existiert nicht|gibt es nicht|nicht gefunden|nicht vorhanden",
    r"ung[üu]ltig\w* (?:empf[äa]nger|postfach|benutzer|mailbox)",
    r"(?:empf[äa]nger|postfach|benutzer)\w* (?:ist )?ung[üu]ltig",
    r"(?:utilisateur|destinataire|adresse|bo[iî]te|compte|usager)\w*[^.;]{0,25}inconnu",
    r"inconnu\w* (?:utilisateur|destinataire)",
    r"n['’]existe pas|inexistant|introuvable|aucun (?:utilisateur|destinataire|compte)",
    r"(?:destinataire|utilisateur|bo[iî]te)\w*[^.;]{0,20}(?:invalide|non valide)",
    r"(?:usuario|destinatario|direcci[óo]n|buz[óo]n|cuenta)\w*[^.;]{0,25}desconocid[oa]",
    r"\bno existe|inexistente|no (?:se ha |fue )?encontrad[oa]",
    r"(?:usuario|destinatario|buz[óo]n|cuenta)\w*[^.;]{0,20}no (?:es )?v[áa]lid",
    r"(?:utente|destinatario|indirizzo|casella)\w*[^.;]{0,25}sconosciut[oa]",
    r"non esiste|inesistente|non (?:è stato )?trovat[oa]",
    r"(?:utente|destinatario|casella)\w*[^.;]{0,20}non (?:è )?valid",
    r"(?:usu[áa]rio|utilizador|destinat[áa]rio|endere[çc]o|caixa|conta)\w*[^.;]{0,25}"
    r"desconhecid[oa]",
    r"n[ãa]o existe|n[ãa]o (?:foi )?encontrad[oa]",
    r"(?:usu[áa]rio|utilizador|destinat[áa]rio|caixa)\w*[^.;]{0,20}inv[áa]lid",
    r"(?:gebruiker|ontvanger|adres|mailbox)\w*[^.;]{0,25}onbekend",
    r"onbekende (?:gebruiker|ontvanger|geadresseerde)|bestaat niet|niet gevonden",
    r"(?:ontvanger|gebruiker|mailbox)\w* (?:is )?ongeldig|ongeldige? (?:ontvanger|gebruiker)",
    # Russian, Polish, Czech/Slovak, Scandinavian, Turkish, Chinese, Japanese, Korean
    r"не найден|не существует|нет такого|несуществующ",
    r"неизвестн\w* (?:пользовател|получател|адрес|ящик)",
    r"nie istnieje|nieznany (?:u[żz]ytkownik|odbiorca|adres)|neexistuje",
    r"finns inte|findes ikke|finnes ikke|ok[äa]nd (?:anv[äa]ndare|mottagare)",
    r"ukendt (?:bruger|modtager)|ukjent (?:bruker|mottaker)",
    r"bulunamad|b[öo]yle bir kullan",
    r"不存在|无此用户|查无此人|存在しません|見つかりません|존재하지 않",
)
# Rule 3's second half: a bare "come back later" from a 450/451 is greylisting...
_TRY_LATER = _markers(
    r"try (?:again )?later|retry later|come back later|please retry",
    r"(?:try|retry|come back) (?:again )?(?:in|after) \d",
    r"sp[äa]ter (?:erneut|noch ?mal|wieder)|plus tard|m[áa]s tarde|pi[uù] tardi|mais tarde",
    r"later opnieuw|later nog|повтор\w* (?:попытку )?позже",
)
# ...unless the reply names a cause: then it is a plain temporary failure.
_CAUSE = _markers(
    r"\b(?:servers?|service|system|busy|resources?|problems?|errors?|insufficient|disk"
    r"|storage|rate|limits?|limited|volume|quota|too many|connections?|unavailable)\b",
    r"time ?out|timed out",
    r"überlast|fehler|syst[èe]me|erreur|surcharg|servidor|sobrecarg|sistema|errore|sovraccaric"
    r"|storing|overbelast|сервер|ошибк|перегруж",
)


# --- The rule table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """One line of the table: the replies it applies to and the reason it gives them."""

    name: str
    reason: Reason
    text: re.Pattern[str] | None = None  # must be found in the normalised text
    enhanced: re.Pattern[str] | None = None  # must match the whole enhanced code
    classes: frozenset[int] = frozenset({4, 5})  # first digit of the basic code
    codes: frozenset[int] = frozenset()  # when set, only these basic codes
    except_codes: frozenset[int] = frozenset()
    unless: tuple[re.Pattern[str], ...] = ()  # none of these may be found in the text

    def takes(self, code: int) -> bool:
        """Return whether this rule can apply to a reply with this basic code."""
        if code // 100 not in self.classes or code in self.except_codes:
            return False
        return not self.codes or code in self.codes

    def applies(self, reading: _Reading) -> bool:
        """Return whether this rule decides the reply (of a code it takes)."""
        if self.enhanced is not None and not (
            reading.enhanced and self.enhanced.fullmatch(reading.enhanced)
        ):
            return False
        if self.text is not None and not self.text.search(reading.text):
            return False
        return not any(pattern.search(reading.text) for pattern in self.unless)


_4XX = frozenset({4})
_5XX = frozenset({5})
_R = Reason


_RULES: tuple[_Rule, ...] = (
    # Rule 3, first half: the server says it greylists (a 421 closes the session: rule 5).
    _Rule("greylisting", _R.GREYLISTED, text=_GREYLIST, except_codes=frozenset({421})),
    _Rule("spamd greylisting", _R.GREYLISTED, text=_SPAMD, codes=frozenset({450, 451})),
    # Rule 4's exception, checked before "access denied" can claim it.
    _Rule(
        "edge blocking (DBEB)",
        _R.MAILBOX_NOT_FOUND,
        text=_DBEB,
        enhanced=re.compile(r"5\.4\.1"),
        classes=_5XX,
    ),
    # Rule 4: about us, whatever the code.
    _Rule("our client or IP", _R.BLOCKED, text=_OUR_CLIENT),
    _Rule("our PTR/rDNS", _R.BLOCKED, text=_OUR_PTR),
    _Rule("our HELO name", _R.BLOCKED, text=_OUR_HELO),
    _Rule("our sender", _R.BLOCKED, text=_OUR_SENDER),
    _Rule("our authentication", _R.BLOCKED, text=_OUR_AUTHENTICATION),
    _Rule("our reputation or content", _R.BLOCKED, text=_OUR_REPUTATION),
    _Rule("relaying", _R.BLOCKED, text=_OUR_RELAY),
    _Rule("policy", _R.BLOCKED, text=_OUR_POLICY),
    _Rule("access denied", _R.BLOCKED, text=_OUR_ACCESS),
    # Rules 5 and 6: the server closes, limits or struggles; come back later.
    _Rule("closing connection", _R.TEMPORARY_FAILURE, codes=frozenset({421})),
    _Rule("rate or limit", _R.TEMPORARY_FAILURE, text=_RATE),
    _Rule("server trouble", _R.TEMPORARY_FAILURE, text=_SERVER_TROUBLE),
    # Rule 10, before the mailbox rules: a complaint about our command is not about a mailbox.
    _Rule("protocol", _R.PROTOCOL_ERROR, text=_PROTOCOL),
    # RFC 5321: 500 command unrecognised, 502 not implemented, 503 bad sequence.
    _Rule("command code", _R.PROTOCOL_ERROR, codes=frozenset({500, 502, 503})),
    # RFC 3463 5.1.3: the address we sent is malformed ("501 5.1.3 Invalid address").
    _Rule("5.1.3 address syntax", _R.PROTOCOL_ERROR, enhanced=re.compile(r"5\.1\.3")),
    # Rules 7-9: what the text says about the mailbox (only a 5xx is a verdict, rule 5).
    _Rule("mailbox full", _R.MAILBOX_FULL, text=_FULL),
    _Rule(
        "mailbox disabled",
        _R.MAILBOX_DISABLED,
        text=_DISABLED,
        classes=_5XX,
        unless=(_FEATURE_DISABLED,),
    ),
    _Rule("mailbox not found", _R.MAILBOX_NOT_FOUND, text=_NOT_FOUND, classes=_5XX),
    # Rule 3, second half: "try again later" and nothing else.
    _Rule(
        "bare deferral",
        _R.GREYLISTED,
        text=_TRY_LATER,
        codes=frozenset({450, 451}),
        unless=(_CAUSE, _NOT_FOUND, _DISABLED),
    ),
    # Rule 11: the text said nothing the rules above understand; the enhanced code decides.
    _Rule("x.2.2 full", _R.MAILBOX_FULL, enhanced=re.compile(r"[45]\.2\.2")),
    _Rule(
        "5.1.x no such mailbox",
        _R.MAILBOX_NOT_FOUND,
        enhanced=re.compile(r"5\.1\.(?:0|1|6|10)"),
        classes=_5XX,
    ),
    _Rule("5.2.1 disabled", _R.MAILBOX_DISABLED, enhanced=re.compile(r"5\.2\.1"), classes=_5XX),
    _Rule(
        "5.7.x, 5.1.7, 5.1.8 refused",
        _R.BLOCKED,
        enhanced=re.compile(r"5\.(?:7\.\d+|1\.[78])"),
        classes=_5XX,
    ),
    _Rule("x.5.3 too many recipients", _R.TEMPORARY_FAILURE, enhanced=re.compile(r"[45]\.5\.3")),
    _Rule(
        "5.5.x our command",
        _R.PROTOCOL_ERROR,
        enhanced=re.compile(r"5\.5\.[12456]"),
        classes=_5XX,
    ),
    # Rule 12: nothing readable. RFC 5321's parameter codes still say it was our command.
    _Rule("parameter code", _R.PROTOCOL_ERROR, codes=frozenset({501, 504, 555})),
    _Rule("unexplained refusal", _R.BLOCKED, classes=_5XX),
    _Rule("unexplained deferral", _R.TEMPORARY_FAILURE, classes=_4XX),
)

#: RFC 5321's "command unrecognised" and "bad sequence": the command, not its recipient, failed.
_COMMAND_CODES = frozenset({ReplyCode.SYNTAX_ERROR, ReplyCode.BAD_SEQUENCE})

# Rule 2: before RCPT a reply is about the session, never about the recipient.
_NOT_A_VERDICT_BEFORE_RCPT = frozenset({_R.MAILBOX_NOT_FOUND, _R.MAILBOX_DISABLED, _R.MAILBOX_FULL})


def classify(stage: Stage, reply: SmtpReply) -> Verdict:
    """Return what this reply says about the recipient address (the module's rules 0-12)."""
    if 200 <= reply.code < 300:
        return Verdict.of(Reason.ACCEPTED)
    reading = _Reading.of(reply)
    reason = _reason(reading)
    if stage != Stage.RCPT and reason in _NOT_A_VERDICT_BEFORE_RCPT:
        reason = Reason.BLOCKED if reading.klass == 5 else Reason.TEMPORARY_FAILURE
    if stage == Stage.EHLO and reply.code == ReplyCode.PARAMETER_ERROR:
        reason = Reason.BLOCKED  # EHLO's one parameter is our name: it is what they refuse
    elif stage == Stage.RCPT and reply.code in _COMMAND_CODES and reason is not Reason.BLOCKED:
        reason = Reason.PROTOCOL_ERROR  # they did not take our command, mailbox or not
    if reason is Reason.GREYLISTED:
        return Verdict.of(reason, greylist_delay_s(reply))
    return Verdict.of(reason)


# Servers repeat themselves: one host's "user unknown" reads the same once the address in it
# is masked. Bounded, so unique texts (queue ids, host names) cannot grow it past a few MB.
@lru_cache(maxsize=4096)
def _reason(reading: _Reading) -> Reason:
    """Return the reason of the first rule that applies; a non-SMTP code is a protocol error."""
    for rule in _rules_for(reading.code):
        if rule.applies(reading):
            return rule.reason
    return Reason.PROTOCOL_ERROR


@lru_cache(maxsize=1024)  # codes are 3 digits: the cache holds them all and never grows beyond
def _rules_for(code: int) -> tuple[_Rule, ...]:
    """Return the rules, in order, that can apply to a reply with this basic code."""
    return tuple(rule for rule in _RULES if rule.takes(code))


# --- Greylisting delay ----------------------------------------------------------------------

_DELAY = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:"
    r"(?P<s>s|secs?|seconds?|sek(?:unden?)?|secondes?|segundos?|secondi|seconden|секунд\w*)"
    r"|(?P<m>m|mins?|minutes?|minuten|minutos?|minuti|минут\w*)"
    r"|(?P<h>h|hrs?|hours?|stunden?|heures?|horas?|or[ae]|uur|час\w*)"
    r")(?!\w)",
    re.I,
)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


def greylist_delay_s(reply: SmtpReply) -> float | None:
    """Return the wait the server states ("try again in 300 seconds", "5 minutes",
    "retry in 60s"), or None when it names none.

    Postgrey's reply ("Greylisted, see http://postgrey.../help/...") names none: its default
    --delay is 300 s, but many sites run shorter ones, and a guess must not stand in for the
    user's configured retries (a stated delay is a floor; a guessed one is not).
    """
    match = _DELAY.search(reply.message)
    if match is None:
        return None
    unit = next(name for name in _UNIT_S if match.group(name))
    return float(match.group(1)) * _UNIT_S[unit]
