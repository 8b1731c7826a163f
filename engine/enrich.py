"""Flags and names an address earns besides its status: disposable, role, free, provider.

Pure lookups in module-level tables: no DNS, no SMTP, no I/O. The verifier passes in what it
already learnt (MX host names, the SMTP banner); this module only names it.

Domain matching is on dot boundaries, case-insensitive, with any trailing dot ignored:
`x.mailinator.com` is under `mailinator.com`, `notmailinator.com` is not.

Role local parts (`is_role`): lower-cased, a `+tag` dropped, then the local part is a role when
a leading run of its `.`/`-`/`_`-separated words, joined and with trailing digits dropped, is a
role word: `sales`, `Sales+eu`, `sales.team`, `support-uk`, `no-reply`, `customer.service.de`,
`info2` are roles; `john.smith`, `johnsales`, `salesman`, `bill` are not. Qualifiers after a
role word (`.team`, `-uk`) are usually a department or a region; a role word after a personal
name (`john.sales`) is usually a person, so only the leading words count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from disposable_email_domains import allowlist as _PACKAGE_ALLOWLIST
from disposable_email_domains import blocklist as _PACKAGE_BLOCKLIST

# --- disposable ----------------------------------------------------------------------------

#: Domains never reported as disposable, whatever a blocklist says (most specific entry wins).
_NEVER_DISPOSABLE: frozenset[str] = frozenset(_PACKAGE_ALLOWLIST)
_DISPOSABLE: frozenset[str] = frozenset(_PACKAGE_BLOCKLIST)


def _parents(domain: str) -> Iterable[str]:
    """Yield the domain, then each parent domain, most specific first (never the bare TLD)."""
    labels = _clean(domain).split(".")
    for start in range(max(len(labels) - 1, 1)):
        yield ".".join(labels[start:])


def _clean(name: str) -> str:
    return name.strip().rstrip(".").lower()


def is_disposable(domain: str) -> bool:
    """Return True when the domain, or a parent of it, hands out throwaway mailboxes."""
    for name in _parents(domain):
        if name in _NEVER_DISPOSABLE:
            return False
        if name in _DISPOSABLE:
            return True
    return False


# --- role ----------------------------------------------------------------------------------

_ROLE_WORDS: frozenset[str] = frozenset(
    {
        # RFC 2142 mailbox names
        "abuse", "ftp", "hostmaster", "info", "marketing", "news", "noc", "postmaster",
        "sales", "security", "support", "usenet", "uucp", "webmaster", "www",
        # no-reply and system senders
        "noreply", "donotreply", "dontreply", "mailerdaemon", "bounce", "bounces",
        "notifications", "notification", "alerts", "devnull", "root", "daemon", "nobody",
        # departments and functions
        "accounting", "accounts", "admin", "administrator", "administration", "billing",
        "bookings", "booking", "careers", "compliance", "contact", "contactus", "customercare",
        "customerservice", "customersupport", "dpo", "enquiries", "enquiry", "events",
        "feedback", "finance", "gdpr", "hello", "help", "helpdesk", "hr", "inquiries",
        "inquiry", "investors", "invoice", "invoices", "jobs", "legal", "mail", "media",
        "membership", "newsletter", "office", "orders", "partners", "partnerships", "payroll",
        "press", "privacy", "procurement", "purchasing", "reception", "recruiting",
        "recruitment", "reservations", "service", "shop", "staff", "sysadmin", "team", "tech",
        "welcome", "everyone", "all",
    }
)  # fmt: skip

_ROLE_SEPARATORS = re.compile(r"[._-]+")
_TRAILING_DIGITS = re.compile(r"\d+$")


def is_role(local_part: str) -> bool:
    """Return True when the local part names a function (sales, no-reply), not a person."""
    base = local_part.split("+", 1)[0].lower()
    words = [word for word in _ROLE_SEPARATORS.split(base) if word]
    joined = ""
    for word in words:
        joined += word
        if _TRAILING_DIGITS.sub("", joined) in _ROLE_WORDS:
            return True
    return False


# --- free ----------------------------------------------------------------------------------

#: Consumer mailbox domains: free webmail and the mailboxes consumer ISPs hand out.
FREE_DOMAINS: frozenset[str] = frozenset(
    {
        # Google, Microsoft, Yahoo, AOL, Apple
        "gmail.com", "googlemail.com",
        "outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com", "windowslive.com",
        "hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "hotmail.nl",
        "hotmail.be", "hotmail.ca", "hotmail.se", "hotmail.dk", "hotmail.no", "hotmail.com.br",
        "hotmail.com.ar", "hotmail.com.mx", "outlook.fr", "outlook.de", "outlook.es",
        "outlook.it", "outlook.jp", "outlook.com.br", "live.co.uk", "live.fr", "live.de",
        "live.it", "live.nl", "live.ca", "live.be", "live.se", "live.dk", "live.no",
        "live.com.au", "live.com.mx",
        "yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de",
        "yahoo.es", "yahoo.it", "yahoo.ca", "yahoo.in", "yahoo.co.in", "yahoo.com.au",
        "yahoo.com.br", "yahoo.com.mx", "yahoo.com.ar", "yahoo.co.jp", "yahoo.co.id",
        "aol.com", "aol.co.uk", "aol.fr", "aol.de", "aim.com",
        "icloud.com", "me.com", "mac.com",
        # privacy-minded and independent webmail
        "proton.me", "protonmail.com", "protonmail.ch", "pm.me", "tutanota.com", "tutanota.de",
        "tuta.io", "tutamail.com", "fastmail.com", "fastmail.fm", "hushmail.com", "hey.com",
        "mailbox.org", "posteo.de", "posteo.net", "zoho.com", "zohomail.com", "zoho.eu",
        "mail.com", "email.com", "usa.com", "post.com", "inbox.com", "lycos.com", "gmx.com",
        # Europe
        "gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.fr", "gmx.co.uk", "web.de", "t-online.de",
        "freenet.de", "arcor.de", "mail.de", "orange.fr", "wanadoo.fr", "free.fr", "sfr.fr",
        "neuf.fr", "laposte.net", "libero.it", "virgilio.it", "tiscali.it", "alice.it",
        "seznam.cz", "centrum.cz", "wp.pl", "o2.pl", "interia.pl", "onet.pl", "bluewin.ch",
        "telenet.be", "skynet.be", "ziggo.nl", "kpnmail.nl", "btinternet.com", "sky.com",
        "virginmedia.com", "ntlworld.com", "talktalk.net",
        # Russia and neighbours
        "mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru", "yandex.ru", "yandex.com",
        "ya.ru", "yandex.ua", "yandex.by", "yandex.kz", "rambler.ru", "ukr.net",
        # Asia
        "qq.com", "163.com", "126.com", "yeah.net", "sina.com", "sohu.com", "aliyun.com",
        "naver.com", "daum.net", "hanmail.net", "rediffmail.com",
        # North America and Oceania
        "comcast.net", "att.net", "sbcglobal.net", "verizon.net", "cox.net", "charter.net",
        "bellsouth.net", "earthlink.net", "optonline.net", "juno.com", "shaw.ca", "rogers.com",
        "sympatico.ca", "bigpond.com", "optusnet.com.au", "xtra.co.nz",
    }
)  # fmt: skip

#: Brands whose consumer mail runs under many country domains (yahoo.se, hotmail.com.tr).
_FREE_BRANDS: frozenset[str] = frozenset(
    {"yahoo", "hotmail", "outlook", "live", "gmx", "yandex", "aol"}
)
# A country or generic suffix (se, com, co.uk, com.br), so outlook.example.com is no brand domain.
_BRAND_SUFFIX = re.compile(r"(?:[a-z]{2,3}|(?:co|com|net|ne|or|org)\.[a-z]{2})")


def is_free(domain: str) -> bool:
    """Return True for consumer mailbox domains (gmail.com, yahoo.fr): no company behind them."""
    name = _clean(domain)
    if name in FREE_DOMAINS:
        return True
    brand, _, suffix = name.partition(".")
    return brand in _FREE_BRANDS and _BRAND_SUFFIX.fullmatch(suffix) is not None


# --- provider ------------------------------------------------------------------------------

GMAIL = "Gmail"
GOOGLE_WORKSPACE = "Google Workspace"
MICROSOFT_365 = "Microsoft 365"
OUTLOOK_COM = "Outlook.com"
YAHOO = "Yahoo"
AOL = "AOL"

#: MX host suffix -> provider; the longest matching suffix wins (gmail-smtp-in beats google.com).
_MX_SUFFIXES: dict[str, str] = {
    # Google: gmail.com's own MX is gmail-smtp-in; every hosted domain uses aspmx / smtp.google.com
    "gmail-smtp-in.l.google.com": GMAIL,
    "google.com": GOOGLE_WORKSPACE,
    "googlemail.com": GOOGLE_WORKSPACE,
    # Microsoft: Exchange Online for organisations, olc.* for hotmail/outlook/live consumers
    "mail.protection.outlook.com": MICROSOFT_365,
    "mx.microsoft": MICROSOFT_365,
    "mail.eo.outlook.com": MICROSOFT_365,
    "mail.protection.office365.us": MICROSOFT_365,
    "mail.protection.partner.outlook.cn": MICROSOFT_365,
    "olc.protection.outlook.com": OUTLOOK_COM,
    "hotmail.com": OUTLOOK_COM,
    # Yahoo runs AOL's mail too; AOL's MX is a named host under Yahoo's zone
    "yahoodns.net": YAHOO,
    "mx-aol.mail.gm0.yahoodns.net": AOL,
    "aol.com": AOL,
    # hosted mailboxes
    "zoho.com": "Zoho",
    "zoho.eu": "Zoho",
    "zoho.in": "Zoho",
    "zoho.com.au": "Zoho",
    "zohomail.com": "Zoho",
    "protonmail.ch": "Proton",
    "icloud.com": "iCloud",
    "me.com": "iCloud",
    "yandex.net": "Yandex",
    "yandex.ru": "Yandex",
    "messagingengine.com": "Fastmail",
    "emailsrvr.com": "Rackspace",
    "secureserver.net": "GoDaddy",
    "ovh.net": "OVH",
    "ionos.com": "IONOS",
    "ionos.de": "IONOS",
    "ionos.co.uk": "IONOS",
    "ionos.fr": "IONOS",
    "ionos.es": "IONOS",
    "kundenserver.de": "IONOS",
    "perfora.net": "IONOS",
    "1and1.com": "IONOS",
    "1and1.co.uk": "IONOS",
    "awsapps.com": "Amazon WorkMail",
    "hostinger.com": "Hostinger",
    "titan.email": "Titan",
    "privateemail.com": "Namecheap Private Email",
    "registrar-servers.com": "Namecheap",
    "gmx.net": "GMX",
    "gmx.de": "GMX",
    "gmx.com": "GMX",
    "web.de": "WEB.DE",
    "mail.ru": "Mail.ru",
    "qq.com": "QQ Mail",
    "exmail.qq.com": "Tencent Exmail",
    "mxbiz1.qq.com": "Tencent Exmail",
    "mxbiz2.qq.com": "Tencent Exmail",
    "netease.com": "NetEase",
    "163.com": "NetEase",
    "mxhichina.com": "Alibaba Mail",
    "mailbox.org": "mailbox.org",
    "posteo.de": "Posteo",
    "tutanota.de": "Tuta",
    "migadu.com": "Migadu",
    "gandi.net": "Gandi",
    "orange.fr": "Orange",
    "free.fr": "Free",
    "t-online.de": "Telekom",
    "comcast.net": "Comcast",
    # relays and forwarders in front of a domain's mailboxes
    "mailgun.org": "Mailgun",
    "sendgrid.net": "SendGrid",
    "mx.cloudflare.net": "Cloudflare Email Routing",
    "improvmx.com": "ImprovMX",
    "forwardemail.net": "Forward Email",
    "mailchannels.net": "MailChannels",
    # security gateways: they answer RCPT for the mail server behind them
    "mimecast.com": "Mimecast",
    "mimecast.co.za": "Mimecast",
    "pphosted.com": "Proofpoint",
    "ppe-hosted.com": "Proofpoint",
    "barracudanetworks.com": "Barracuda",
    "iphmx.com": "Cisco Secure Email",
    "messagelabs.com": "Broadcom Email Security.cloud",
    "sophos.com": "Sophos",
    "trendmicro.com": "Trend Micro",
    "trendmicro.eu": "Trend Micro",
    "mailcontrol.com": "Forcepoint",
    "fireeyecloud.com": "Trellix",
    "hornetsecurity.com": "Hornetsecurity",
    "antispamcloud.com": "SpamExperts",
    "mailspamprotection.com": "SiteGround",
}

# Host names whose provider sits in the middle of the name, which suffixes cannot express.
_MX_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # WorkMail's documented MX: inbound-smtp.<region>.amazonaws.com
    (re.compile(r"inbound-smtp\.[a-z0-9-]+\.amazonaws\.com"), "Amazon WorkMail"),
)

#: Banner text -> mail server software, tried in order when no MX host name is recognised.
_BANNER_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
        (r"Microsoft ESMTP MAIL Service", "Microsoft Exchange"),
        (r"\bgsmtp\b", GOOGLE_WORKSPACE),
        (r"\bPostfix\b", "Postfix"),
        (r"\bExim\b", "Exim"),
        (r"\bSendmail\b", "Sendmail"),
        (r"\bqmail\b", "qmail"),
        (r"\bMailEnable\b", "MailEnable"),
        (r"\bZimbra\b", "Zimbra"),
        (r"\bHaraka\b", "Haraka"),
        (r"\bOpenSMTPD\b", "OpenSMTPD"),
        (r"\bhMailServer\b", "hMailServer"),
        (r"\bMDaemon\b", "MDaemon"),
        (r"\bKerio\b", "Kerio Connect"),
        (r"\bCommuniGate\b", "CommuniGate Pro"),
        (r"\bAxigen\b", "Axigen"),
        (r"\bIceWarp\b", "IceWarp"),
        (r"\bSmarterMail\b", "SmarterMail"),
        (r"\bDomino\b", "HCL Domino"),
        (r"\bGroupWise\b", "GroupWise"),
        (r"\bStalwart\b", "Stalwart"),
    )
)

#: Providers that answer 250 to every RCPT, real mailbox or not, so RCPT proves nothing.
_ACCEPT_ALL_PROVIDERS: frozenset[str] = frozenset({YAHOO, AOL})


def _provider_of_host(host: str) -> str | None:
    """Return the provider whose longest suffix matches the host name, if any."""
    name = _clean(host)
    labels = name.split(".")
    for start in range(len(labels)):
        provider = _MX_SUFFIXES.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    for pattern, provider in _MX_PATTERNS:
        if pattern.fullmatch(name):
            return provider
    return None


def provider_name(mx_hosts: Sequence[str], banner: str | None = None) -> str | None:
    """Return the mailbox provider named by MX host names, else by the SMTP banner.

    Host names win: a banner names the server software (Postfix), the MX the service.
    """
    for host in mx_hosts:
        provider = _provider_of_host(host)
        if provider is not None:
            return provider
    if banner:
        for pattern, provider in _BANNER_PATTERNS:
            if pattern.search(banner):
                return provider
    return None


def is_accept_all_provider(provider: str | None) -> bool:
    """Return True for providers that answer 250 to every recipient at RCPT (Yahoo, AOL)."""
    return provider in _ACCEPT_ALL_PROVIDERS
