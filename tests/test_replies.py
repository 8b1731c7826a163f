"""engine/replies.py as a spec: reply text -> enhanced code, verdict, greylisting delay.

Wordings here are written for these tests (several languages, odd codes, multi-line forms); the
labelled real-world corpus is exercised separately by test_replies_corpus.py.
"""

from __future__ import annotations

import pytest
from mailprobe.engine.replies import _reason, _rules_for, classify, greylist_delay_s, parse_reply
from mailprobe.engine.result import Reason, SmtpReply, Stage, Status, Verdict

R = Reason


def _verdict(code: int, text: str, stage: Stage = Stage.RCPT) -> Verdict:
    return classify(stage, parse_reply(code, text))


def _case(code: int, text: str, reason: Reason, name: str) -> object:
    return pytest.param(code, text, reason, id=name)


# --- parse_reply ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "message"),
    [
        pytest.param(550, "5.1.1 No such user", "5.1.1", "No such user", id="simple"),
        pytest.param(250, "2.1.5 Ok", "2.1.5", "Ok", id="positive"),
        pytest.param(452, "4.5.3 Too many recipients", "4.5.3", "Too many recipients", id="4xx"),
        pytest.param(550, "No such user", None, "No such user", id="no-enhanced-code"),
        pytest.param(550, "", None, "", id="empty-text"),
        pytest.param(550, "   ", None, "", id="blank-text"),
        pytest.param(550, "5.1.1", "5.1.1", "", id="code-only"),
        pytest.param(550, "4.2.2 Mailbox full", None, "4.2.2 Mailbox full", id="class-mismatch"),
        pytest.param(421, "5.7.1 Go away", None, "5.7.1 Go away", id="class-mismatch-421"),
        pytest.param(354, "3.0.0 Go ahead", None, "3.0.0 Go ahead", id="class-3-is-not-rfc3463"),
        pytest.param(550, "5.1.10 Not found", "5.1.10", "Not found", id="three-digit-detail"),
        pytest.param(550, "5.1.1234 Odd", None, "5.1.1234 Odd", id="four-digit-detail"),
        pytest.param(550, "5.1.1: User unknown", None, "5.1.1: User unknown", id="glued-colon"),
        pytest.param(550, "#5.1.0 Address rejected", None, "#5.1.0 Address rejected", id="hash"),
        pytest.param(
            550,
            "5.7.26 Unauthenticated mail\n5.7.26 is refused here.\n5.7.26  See the docs",
            "5.7.26",
            "Unauthenticated mail\nis refused here.\nSee the docs",
            id="repeated-code-on-continuation-lines",
        ),
        pytest.param(
            550,
            "5.7.1 First line\n5.7.10 second line",
            "5.7.1",
            "First line\n5.7.10 second line",
            id="longer-code-on-continuation-is-kept",
        ),
        pytest.param(
            550,
            "5.7.1 Message refused\n5.7.1\n5.7.1 Details follow",
            "5.7.1",
            "Message refused\n\nDetails follow",
            id="code-only-continuation-line",
        ),
        pytest.param(
            554,
            "Transaction failed\nReject due to policy",
            None,
            "Transaction failed\nReject due to policy",
            id="multi-line-without-codes",
        ),
        pytest.param(550, "5.1.1 User unknown\r\n", "5.1.1", "User unknown", id="crlf"),
    ],
)
def test_parse_reply_splits_enhanced_code(
    code: int, text: str, enhanced: str | None, message: str
) -> None:
    assert parse_reply(code, text) == SmtpReply(code, enhanced, message)


# --- classify: rule 1 and 2 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [(250, "2.1.5 Recipient ok"), (251, "User not local; will forward"), (252, "Cannot VRFY")],
)
def test_rcpt_2xx_is_accepted(code: int, text: str) -> None:
    assert _verdict(code, text) == Verdict(Status.VALID, R.ACCEPTED)


@pytest.mark.parametrize("stage", [Stage.CONNECT, Stage.EHLO, Stage.STARTTLS, Stage.MAIL])
def test_2xx_before_rcpt_is_accepted(stage: Stage) -> None:
    assert _verdict(250, "OK", stage).reason is R.ACCEPTED


@pytest.mark.parametrize(
    ("stage", "code", "text", "reason"),
    [
        (
            Stage.MAIL,
            550,
            "5.1.1 <me@probe.example>: Sender address rejected: User unknown",
            R.BLOCKED,
        ),
        (Stage.MAIL, 550, "5.1.1 User unknown", R.BLOCKED),
        (Stage.MAIL, 552, "5.2.2 Mailbox full", R.BLOCKED),
        (Stage.MAIL, 550, "5.2.1 Account disabled", R.BLOCKED),
        (Stage.MAIL, 450, "4.2.2 Mailbox full", R.TEMPORARY_FAILURE),
        (Stage.CONNECT, 554, "5.7.1 No SMTP service here", R.BLOCKED),
        (Stage.CONNECT, 421, "Too busy, closing transmission channel", R.TEMPORARY_FAILURE),
        (Stage.CONNECT, 554, "Benutzer unbekannt", R.BLOCKED),
        (Stage.EHLO, 502, "5.5.2 Error: command not implemented", R.PROTOCOL_ERROR),
        (Stage.STARTTLS, 454, "4.7.0 TLS not available due to local problem", R.TEMPORARY_FAILURE),
        (Stage.MAIL, 451, "4.7.1 Greylisted, come back in 2 minutes", R.GREYLISTED),
    ],
)
def test_reply_before_rcpt_is_never_invalid(
    stage: Stage, code: int, text: str, reason: Reason
) -> None:
    verdict = _verdict(code, text, stage)
    assert (verdict.status, verdict.reason) == (Status.UNKNOWN, reason)


# --- classify: rule 9 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        _case(
            550,
            "5.1.1 <a@b.example>: Recipient address rejected: User unknown",
            R.MAILBOX_NOT_FOUND,
            "postfix",
        ),
        _case(550, "No such recipient here", R.MAILBOX_NOT_FOUND, "no-such-recipient"),
        _case(550, "Mailbox <a@b.example> does not exist", R.MAILBOX_NOT_FOUND, "does-not-exist"),
        _case(550, "The mailbox you addressed doesn't exist", R.MAILBOX_NOT_FOUND, "doesnt-exist"),
        _case(550, "5.7.1 Unknown recipient", R.MAILBOX_NOT_FOUND, "text-beats-5.7.1"),
        _case(511, "Recipient unknown", R.MAILBOX_NOT_FOUND, "odd-code-511"),
        _case(553, "Invalid mailbox: a@b.example", R.MAILBOX_NOT_FOUND, "odd-code-553"),
        _case(
            554,
            "delivery error: user (a@b.example) unknown",
            R.MAILBOX_NOT_FOUND,
            "554-parenthesised",
        ),
        _case(550, "Recipient not found in directory", R.MAILBOX_NOT_FOUND, "directory"),
        _case(550, "5.1.1 Unrouteable address", R.MAILBOX_NOT_FOUND, "unrouteable"),
        _case(
            550,
            "Requested action not taken: mailbox unavailable",
            R.MAILBOX_NOT_FOUND,
            "rfc-550-text",
        ),
        _case(
            550, "This user doesn't have a example.org account", R.MAILBOX_NOT_FOUND, "no-account"
        ),
        _case(
            550,
            "Callout verification failed:\n550 5.1.1 User unknown",
            R.MAILBOX_NOT_FOUND,
            "exim-callout",
        ),
        _case(
            550,
            "5.1.1 User unknown [antispam02.example.net]",
            R.MAILBOX_NOT_FOUND,
            "spam-in-hostname",
        ),
        _case(550, "5.1.1 Benutzer unbekannt", R.MAILBOX_NOT_FOUND, "german-user-unknown"),
        _case(
            550, "Empfängeradresse existiert nicht", R.MAILBOX_NOT_FOUND, "german-does-not-exist"
        ),
        _case(550, "Utilisateur inconnu", R.MAILBOX_NOT_FOUND, "french-user-unknown"),
        _case(550, "Cette adresse n'existe pas", R.MAILBOX_NOT_FOUND, "french-does-not-exist"),
        _case(550, "Usuario desconocido", R.MAILBOX_NOT_FOUND, "spanish-user-unknown"),
        _case(550, "El buzón no existe", R.MAILBOX_NOT_FOUND, "spanish-does-not-exist"),
        _case(550, "Utente sconosciuto", R.MAILBOX_NOT_FOUND, "italian-user-unknown"),
        _case(550, "Casella di posta inesistente", R.MAILBOX_NOT_FOUND, "italian-nonexistent"),
        _case(550, "Usuário desconhecido", R.MAILBOX_NOT_FOUND, "portuguese-user-unknown"),
        _case(550, "Gebruiker onbekend", R.MAILBOX_NOT_FOUND, "dutch-user-unknown"),
        _case(550, "Пользователь не найден", R.MAILBOX_NOT_FOUND, "russian-user-not-found"),
        _case(550, "Użytkownik nie istnieje", R.MAILBOX_NOT_FOUND, "polish-does-not-exist"),
        _case(550, "收件人不存在", R.MAILBOX_NOT_FOUND, "chinese-does-not-exist"),
    ],
)
def test_recipient_statement_is_mailbox_not_found(code: int, text: str, reason: Reason) -> None:
    verdict = _verdict(code, text)
    assert (verdict.status, verdict.reason) == (Status.INVALID, reason)


def test_microsoft_5_4_1_recipient_access_denied_is_mailbox_not_found() -> None:
    text = "5.4.1 Recipient address rejected: Access denied. AS(1234) [X.prod.outlook.com]"
    assert _verdict(550, text).reason is R.MAILBOX_NOT_FOUND


def test_recipient_access_denied_without_5_4_1_is_blocked() -> None:
    text = "5.7.1 <a@b.example>: Recipient address rejected: Access denied"
    assert _verdict(554, text).reason is R.BLOCKED


# --- classify: rules 7 and 8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        _case(550, "Account suspended for non-payment", R.MAILBOX_DISABLED, "suspended"),
        _case(550, "5.7.1 Recipient mailbox is inactive", R.MAILBOX_DISABLED, "text-beats-5.7.1"),
        _case(550, "This address no longer accepts mail", R.MAILBOX_DISABLED, "no-longer"),
        _case(
            550,
            "Mailbox has been blocked by its owner's administrator",
            R.MAILBOX_DISABLED,
            "mailbox-blocked",
        ),
        _case(550, "Account is locked", R.MAILBOX_DISABLED, "locked"),
        _case(550, "Postfach deaktiviert", R.MAILBOX_DISABLED, "german"),
        _case(550, "Compte désactivé", R.MAILBOX_DISABLED, "french"),
        _case(550, "Cuenta suspendida", R.MAILBOX_DISABLED, "spanish"),
        _case(550, "Учетная запись заблокирована", R.MAILBOX_DISABLED, "russian-blocked-account"),
        _case(552, "5.2.2 Quota exceeded for this mailbox", R.MAILBOX_FULL, "quota"),
        _case(550, "Mailbox is full and inactive", R.MAILBOX_FULL, "full-beats-inactive"),
        _case(552, "Disk quota exceeded", R.MAILBOX_FULL, "disk-quota-is-the-users"),
        _case(452, "Recipient's inbox is full, try again later", R.MAILBOX_FULL, "4xx-full"),
        _case(552, "Postfach voll", R.MAILBOX_FULL, "german"),
        _case(552, "Boîte aux lettres pleine", R.MAILBOX_FULL, "french"),
        _case(552, "Почтовый ящик переполнен", R.MAILBOX_FULL, "russian"),
    ],
)
def test_mailbox_state_is_disabled_or_full(code: int, text: str, reason: Reason) -> None:
    assert _verdict(code, text).reason is reason


# --- classify: rule 4 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        pytest.param(
            550, "5.7.1 Client host [203.0.113.9] blocked using bl.example.org", id="dnsbl"
        ),
        pytest.param(554, "Your IP 203.0.113.9 is on our blocklist", id="blocklist"),
        pytest.param(
            451, "4.7.1 Client host rejected: no reverse DNS for 203.0.113.9", id="4xx-rdns"
        ),
        pytest.param(550, "5.7.1 Missing PTR record for sending IP", id="ptr"),
        pytest.param(550, "5.7.1 Helo command rejected: Host not found", id="helo"),
        pytest.param(
            550,
            "5.1.1 <me@probe.example>: Sender address rejected: User unknown",
            id="sender-5.1.1",
        ),
        pytest.param(
            450,
            "4.1.7 <me@probe.example>: Sender address rejected: unverified address: "
            "host mx.probe.example said: 550 5.1.1 User unknown",
            id="sender-verify-postfix",
        ),
        pytest.param(
            550,
            "Verification failed for <me@probe.example>\nNo Such User Here\nSender verify failed",
            id="sender-verify-exim",
        ),
        pytest.param(550, "5.7.1 SPF check failed for probe.example", id="spf"),
        pytest.param(550, "5.7.1 Message failed DKIM verification", id="dkim"),
        pytest.param(550, "Unauthenticated mail is not accepted", id="unauthenticated"),
        pytest.param(550, "5.1.1 Rejected: message looks like spam", id="spam-beats-5.1.1"),
        pytest.param(421, "4.7.0 Poor sender reputation, try again later", id="421-reputation"),
        pytest.param(550, "Relaying not allowed", id="relay"),
        pytest.param(550, "5.7.1 Rejected by local policy", id="policy"),
        pytest.param(550, "Access denied", id="access-denied"),
        pytest.param(550, "Absenderadresse abgelehnt: Benutzer unbekannt", id="german-sender"),
        pytest.param(554, "Votre adresse IP est sur liste noire", id="french-ip-blacklist"),
        pytest.param(550, "Remitente rechazado", id="spanish-sender"),
        pytest.param(550, "Spam", id="one-word"),
    ],
)
def test_refusal_aimed_at_us_is_blocked_never_invalid(code: int, text: str) -> None:
    verdict = _verdict(code, text)
    assert (verdict.status, verdict.reason) == (Status.UNKNOWN, R.BLOCKED)


# --- classify: rules 3, 5, 6, 10 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        _case(
            450,
            "4.7.1 Greylisted by our antispam, come back in 5 minutes",
            R.GREYLISTED,
            "greylisted-and-spam",
        ),
        _case(451, "Please retry later", R.GREYLISTED, "bare-deferral"),
        _case(450, "Bitte versuchen Sie es später erneut", R.GREYLISTED, "german-bare-deferral"),
        _case(451, "Graylisting in effect", R.GREYLISTED, "graylisting-spelling"),
        _case(
            421,
            "4.7.0 Greylisted, closing connection",
            R.TEMPORARY_FAILURE,
            "421-never-greylisting",
        ),
        _case(451, "Server busy, try again later", R.TEMPORARY_FAILURE, "deferral-naming-a-cause"),
        _case(
            451, "Server überlastet, später erneut versuchen", R.TEMPORARY_FAILURE, "german-cause"
        ),
        _case(452, "4.2.2 Insufficient system storage", R.TEMPORARY_FAILURE, "server-storage"),
        _case(450, "4.1.1 User unknown, try again later", R.TEMPORARY_FAILURE, "4xx-user-unknown"),
        _case(450, "Mailbox temporarily disabled", R.TEMPORARY_FAILURE, "4xx-disabled"),
        _case(451, "4.3.0 Temporary lookup failure", R.TEMPORARY_FAILURE, "4xx-lookup"),
        _case(
            421,
            "Too many concurrent connections from 203.0.113.9",
            R.TEMPORARY_FAILURE,
            "421-limit",
        ),
        _case(
            550,
            "5.1.1 Too many recipients in this session",
            R.TEMPORARY_FAILURE,
            "rate-beats-5.1.1",
        ),
        _case(
            550,
            "5.2.1 Recipient exceeded their limit of 100 messages per hour",
            R.TEMPORARY_FAILURE,
            "per-hour",
        ),
        _case(554, "5.3.2 Server busy", R.TEMPORARY_FAILURE, "5xx-busy"),
        _case(500, "5.5.1 Unrecognized command", R.PROTOCOL_ERROR, "unrecognised"),
        _case(501, "5.5.4 Invalid parameters for RCPT", R.PROTOCOL_ERROR, "parameters"),
        _case(503, "Error: send HELO first", R.PROTOCOL_ERROR, "sequence"),
        _case(530, "5.7.0 Must issue a STARTTLS command first", R.PROTOCOL_ERROR, "starttls"),
        _case(553, "5.1.3 Invalid address", R.PROTOCOL_ERROR, "5.1.3-address-syntax"),
        _case(500, "Unbekannter Befehl", R.PROTOCOL_ERROR, "german-unknown-command"),
    ],
)
def test_deferrals_and_protocol_complaints_are_unknown(
    code: int, text: str, reason: Reason
) -> None:
    verdict = _verdict(code, text)
    assert (verdict.status, verdict.reason) == (Status.UNKNOWN, reason)


# --- classify: rules 11 and 12 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        _case(550, "5.1.1 Rejected", R.MAILBOX_NOT_FOUND, "5.1.1"),
        _case(550, "5.1.10 Rejected", R.MAILBOX_NOT_FOUND, "5.1.10"),
        _case(550, "#5.1.0 Address rejected", R.MAILBOX_NOT_FOUND, "hash-5.1.0-in-text"),
        _case(553, "sorry, not accepted (#5.1.1)", R.MAILBOX_NOT_FOUND, "qmail-hash-code"),
        _case(550, "5.2.1 Rejected", R.MAILBOX_DISABLED, "5.2.1"),
        _case(552, "5.2.2 Rejected", R.MAILBOX_FULL, "5.2.2"),
        _case(452, "4.2.2 Rejected", R.MAILBOX_FULL, "4.2.2"),
        _case(550, "5.7.1 Rejected", R.BLOCKED, "5.7.1"),
        _case(553, "5.1.8 Rejected", R.BLOCKED, "5.1.8-sender"),
        _case(450, "4.1.1 Rejected", R.TEMPORARY_FAILURE, "4.1.1-is-no-verdict"),
        _case(550, "Rejected", R.BLOCKED, "unreadable-5xx"),
        _case(550, "", R.BLOCKED, "empty-5xx"),
        _case(521, "Server does not accept mail", R.BLOCKED, "odd-521"),
        _case(451, "Message deferred [#42]", R.TEMPORARY_FAILURE, "unreadable-4xx"),
        _case(550, "Unknown error", R.BLOCKED, "unknown-error-is-not-unknown-user"),
        _case(550, "Unbekannter Fehler", R.BLOCKED, "german-unknown-error"),
        _case(550, "DNS record not found", R.BLOCKED, "infrastructure-not-found"),
        _case(354, "Start mail input", R.PROTOCOL_ERROR, "3xx-at-rcpt"),
        _case(999, "What?", R.PROTOCOL_ERROR, "not-an-smtp-code"),
    ],
)
def test_silent_text_lets_codes_decide(code: int, text: str, reason: Reason) -> None:
    assert _verdict(code, text).reason is reason


def test_greylisted_verdict_carries_the_servers_delay() -> None:
    verdict = _verdict(451, "4.7.1 Greylisted, please try again in 90 seconds")
    assert verdict == Verdict(Status.UNKNOWN, R.GREYLISTED, 90.0)


def test_non_greylisted_verdict_has_no_delay() -> None:
    assert _verdict(451, "4.3.0 Server busy, retry in 60 seconds").retry_after_s is None


# --- greylist_delay_s -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delay"),
    [
        ("Greylisted, try again in 300 seconds", 300.0),
        ("Greylisted for 5 minutes", 300.0),
        ("greylisted: retry in 60s", 60.0),
        ("Greylisting active, wait 1 min", 60.0),
        ("Greylisted for 2 hours", 7200.0),
        ("Greylisted, retry after 1.5 minutes", 90.0),
        ("Graue Liste: bitte in 10 Minuten erneut versuchen", 600.0),
        ("Liste grise, réessayez dans 120 secondes", 120.0),
        # Postgrey names no delay: a guess must not cancel the configured retries.
        ("Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", None),
        ("Greylisted, see https://mx.example.org/greylisting.html", None),
        ("Greylisting in action, please come back later", None),
        ("Greylisted by host mta1061.example.net", None),
        ("Greylisted (ref 554.30)", None),
        ("", None),
    ],
)
def test_greylist_delay_s_reads_the_servers_wait(text: str, delay: float | None) -> None:
    assert greylist_delay_s(SmtpReply(451, "4.7.1", text)) == delay


def test_stage_given_as_its_string_is_understood() -> None:
    reply = parse_reply(550, "5.1.1 User unknown")
    assert classify("rcpt", reply).reason is R.MAILBOX_NOT_FOUND  # type: ignore[arg-type]
    assert classify("mail", reply).reason is R.BLOCKED  # type: ignore[arg-type]


# --- classify: the same verdicts, fast (masking guards, caches) ----------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("5.1.1 User unknown, see https://help.example/policy/spam.html", id="url"),
        pytest.param("5.1.1 <spam@b.example>: User unknown", id="address"),
        pytest.param("5.1.1 User unknown (SPAM@B.EXAMPLE)", id="address-upper-case"),
    ],
)
def test_rcpt_550_words_in_links_and_addresses_decide_nothing(text: str) -> None:
    assert _verdict(550, text).reason is R.MAILBOX_NOT_FOUND


def test_same_reply_at_other_stages_keeps_each_stages_verdict() -> None:
    reply = parse_reply(550, "5.1.1 <jane@b.example>: Recipient address rejected: User unknown")
    reasons = [classify(stage, reply).reason for stage in (Stage.RCPT, Stage.MAIL, Stage.RCPT)]
    assert reasons == [R.MAILBOX_NOT_FOUND, R.BLOCKED, R.MAILBOX_NOT_FOUND]


def test_same_text_under_other_codes_keeps_each_codes_verdict() -> None:
    reasons = [_verdict(code, "Please try again later").reason for code in (450, 550, 421, 450)]
    assert reasons == [R.GREYLISTED, R.BLOCKED, R.TEMPORARY_FAILURE, R.GREYLISTED]


def test_classify_caches_are_bounded() -> None:
    assert _reason.cache_info().maxsize is not None
    assert _rules_for.cache_info().maxsize is not None


# --- issue 10: reply classes revisited ------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "code", "text", "reason"),
    [
        # Gateways that validate recipients say 5.7.1 while the text speaks of the recipient.
        (Stage.RCPT, 550, "5.7.1 <bob@x.example>: Recipient address rejected: User unknown",
         R.MAILBOX_NOT_FOUND),
        (Stage.RCPT, 550, "5.7.1 Recipient not valid", R.MAILBOX_NOT_FOUND),
        (Stage.RCPT, 554, "5.7.1 <bob@x.example>: Recipient address rejected: Invalid recipient",
         R.MAILBOX_NOT_FOUND),
        (Stage.RCPT, 550, "5.7.1 The recipient is not a valid user in this organization",
         R.MAILBOX_NOT_FOUND),
        (Stage.RCPT, 550, "5.7.1 Unknown recipient", R.MAILBOX_NOT_FOUND),
        # ...while a 5.7.1 about us (IP, policy, reputation, HELO, preferences) stays blocked.
        (Stage.RCPT, 550, "5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org",
         R.BLOCKED),
        (Stage.RCPT, 550, "5.7.1 Recipient rejected by policy", R.BLOCKED),
        (Stage.RCPT, 550, "5.7.1 Message rejected due to IP reputation", R.BLOCKED),
        (Stage.RCPT, 550, "5.7.1 Recipient address rejected: your HELO name is not valid",
         R.BLOCKED),
        (Stage.RCPT, 550, "5.7.1 Recipient does not accept mail from your domain (preferences)",
         R.BLOCKED),
        # A 500 or 503 to RCPT is about our command, whatever it says of a mailbox.
        (Stage.RCPT, 500, "5.5.1 Too many unknown commands", R.PROTOCOL_ERROR),
        (Stage.RCPT, 503, "5.1.1 User unknown", R.PROTOCOL_ERROR),
        (Stage.RCPT, 500, "User unknown", R.PROTOCOL_ERROR),
        # A 501 to EHLO/HELO objects to its only parameter: our HELO name.
        (Stage.EHLO, 501, "5.5.4 Invalid domain name", R.BLOCKED),
        (Stage.EHLO, 501, "5.0.0 hostname not allowed", R.BLOCKED),
        (Stage.EHLO, 501, "Syntactically invalid EHLO argument(s)", R.BLOCKED),
        # OpenBSD spamd's greylisting reply names neither greylisting nor a delay.
        (Stage.RCPT, 451, "Temporary failure, please try again later.", R.GREYLISTED),
        (Stage.RCPT, 451, "Temporary failure, please try again later. Disk full",
         R.TEMPORARY_FAILURE),
        (Stage.RCPT, 421, "Temporary failure, please try again later.", R.TEMPORARY_FAILURE),
    ],
)  # fmt: skip
def test_issue_10_reply_classes(stage: Stage, code: int, text: str, reason: Reason) -> None:
    assert classify(stage, parse_reply(code, text)).reason is reason
