"""engine/enrich.py: disposable, role, free and provider lookups."""

import pytest
from mailprobe.engine.enrich import (
    FREE_DOMAINS,
    is_accept_all_provider,
    is_disposable,
    is_free,
    is_role,
    provider_name,
)

# --- disposable ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        "mailinator.com",
        "MAILINATOR.COM",
        "mailinator.com.",
        "x.mailinator.com",
        "deep.sub.mailinator.com",
        "10minutemail.com",
        "guerrillamail.com",
        "yopmail.com",
    ],
)
def test_disposable_domain_or_its_subdomain_is_disposable(domain: str) -> None:
    assert is_disposable(domain)


@pytest.mark.parametrize(
    "domain",
    ["gmail.com", "enterprise.com", "xmailinator.com", "mailinator.com.example", "com", ""],
)
def test_ordinary_domain_is_not_disposable(domain: str) -> None:
    assert not is_disposable(domain)


def test_free_provider_is_never_on_the_disposable_list() -> None:
    assert not [domain for domain in FREE_DOMAINS if is_disposable(domain)]


def test_allowlisted_domain_wins_over_disposable_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    import mailprobe.engine.enrich as enrich

    monkeypatch.setattr(enrich, "_NEVER_DISPOSABLE", frozenset({"kept.mailinator.com"}))
    assert not enrich.is_disposable("kept.mailinator.com")
    assert not enrich.is_disposable("a.kept.mailinator.com")
    assert enrich.is_disposable("other.mailinator.com")


# --- role ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "local_part",
    [
        "info", "INFO", "Sales", "support", "admin", "postmaster", "abuse", "webmaster",
        "hostmaster", "billing", "contact", "hello", "office", "hr", "jobs", "careers", "team",
        "marketing", "press", "help", "security", "privacy", "legal",
        # no-reply spellings
        "noreply", "no-reply", "no_reply", "no.reply", "NoReply", "donotreply", "do-not-reply",
        # +tags, qualifiers after the role word, numbers
        "sales+eu", "info+newsletter", "sales.team", "support-uk", "info.berlin", "info2",
        "support01", "customer.service", "customer-service.de", "mailer-daemon",
    ],
)  # fmt: skip
def test_role_local_part_is_role(local_part: str) -> None:
    assert is_role(local_part)


@pytest.mark.parametrize(
    "local_part",
    [
        "john", "john.smith", "jane+sales", "johnsales", "john.sales", "salesman", "information",
        "bill", "mark", "helen", "officer.jones", "j.doe", "123", "",
    ],
)  # fmt: skip
def test_personal_local_part_is_not_role(local_part: str) -> None:
    assert not is_role(local_part)


# --- free ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com", "GMAIL.COM", "gmail.com.", "googlemail.com", "yahoo.com", "yahoo.fr",
        "yahoo.se", "yahoo.com.tr", "ymail.com", "hotmail.com", "hotmail.co.uk", "hotmail.gr",
        "outlook.com", "outlook.com.tr", "live.com", "live.co.za", "aol.com", "icloud.com",
        "me.com", "gmx.de", "gmx.pt", "web.de", "mail.ru", "yandex.ru", "yandex.com.tr",
        "proton.me", "protonmail.com", "zoho.com", "comcast.net", "orange.fr", "free.fr",
        "qq.com",
    ],
)  # fmt: skip
def test_consumer_mailbox_domain_is_free(domain: str) -> None:
    assert is_free(domain)


@pytest.mark.parametrize(
    "domain",
    [
        "enterprise.com", "mycompany.com", "google.com", "microsoft.com",
        "outlook.example.com", "mail.yahoo.com", "hotmail.example.org", "yahoo.company",
        "mailinator.com",
    ],
)  # fmt: skip
def test_business_domain_is_not_free(domain: str) -> None:
    assert not is_free(domain)


def test_free_domain_table_has_about_a_hundred_entries() -> None:
    assert 100 <= len(FREE_DOMAINS) <= 250


# --- provider by MX ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mx_hosts", "provider"),
    [
        (["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"], "Gmail"),
        (["alt4.gmail-smtp-in.l.google.com."], "Gmail"),
        (["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "Google Workspace"),
        (["ASPMX2.GOOGLEMAIL.COM"], "Google Workspace"),
        (["smtp.google.com"], "Google Workspace"),
        (["enterprise-com.mail.protection.outlook.com"], "Microsoft 365"),
        (["contoso-com.o-v1.mx.microsoft"], "Microsoft 365"),
        (["hotmail-com.olc.protection.outlook.com"], "Outlook.com"),
        (["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"], "Yahoo"),
        (["mx-aol.mail.gm0.yahoodns.net"], "AOL"),
        (["mx.zoho.com", "mx2.zoho.com"], "Zoho"),
        (["mx.zoho.eu"], "Zoho"),
        (["mail.protonmail.ch", "mailsec.protonmail.ch"], "Proton"),
        (["mx01.mail.icloud.com"], "iCloud"),
        (["mx.yandex.net"], "Yandex"),
        (["in1-smtp.messagingengine.com"], "Fastmail"),
        (["eu-smtp-inbound-1.mimecast.com"], "Mimecast"),
        (["mx0a-00123456.pphosted.com"], "Proofpoint"),
        (["mx1-us1.ppe-hosted.com"], "Proofpoint"),
        (["d123456a.ess.barracudanetworks.com"], "Barracuda"),
        (["mx1.hc1234-56.iphmx.com"], "Cisco Secure Email"),
        (["smtp.secureserver.net", "mailstore1.secureserver.net"], "GoDaddy"),
        (["mx1.mail.ovh.net"], "OVH"),
        (["mx00.ionos.de"], "IONOS"),
        (["mx00.kundenserver.de"], "IONOS"),
        (["mx.perfora.net"], "IONOS"),
        (["mxa.mailgun.org"], "Mailgun"),
        (["inbound-smtp.eu-west-1.amazonaws.com"], "Amazon WorkMail"),
        (["mx1.emailsrvr.com"], "Rackspace"),
        (["mx1.privateemail.com"], "Namecheap Private Email"),
        (["mx00.gmx.net"], "GMX"),
        (["mx-ha03.web.de"], "WEB.DE"),
        (["mxs.mail.ru"], "Mail.ru"),
        (["mx1.qq.com"], "QQ Mail"),
        (["mxbiz1.qq.com"], "Tencent Exmail"),
        (["163mx01.mxmail.netease.com"], "NetEase"),
        # the best MX decides; unknown hosts are skipped until one is recognised
        (["mail.enterprise.com", "enterprise-com.mail.protection.outlook.com"], "Microsoft 365"),
        (["aspmx.l.google.com", "backup.mimecast.com"], "Google Workspace"),
    ],
)
def test_provider_is_named_by_mx_host_suffix(mx_hosts: list[str], provider: str) -> None:
    assert provider_name(mx_hosts) == provider


@pytest.mark.parametrize(
    "mx_hosts",
    [
        ["notgoogle.com"],  # suffixes match on dot boundaries only
        ["mail.enterprise.com"],
        ["google.com.evil.example"],
        ["ec2-192-0-2-1.compute-1.amazonaws.com"],
        [],
    ],
)
def test_unknown_mx_host_names_no_provider(mx_hosts: list[str]) -> None:
    assert provider_name(mx_hosts) is None


def test_mx_host_name_wins_over_banner() -> None:
    banner = "mx.enterprise.com ESMTP Postfix"
    assert provider_name(["aspmx.l.google.com"], banner) == "Google Workspace"


# --- provider by banner --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("banner", "provider"),
    [
        ("mail.enterprise.com Microsoft ESMTP MAIL Service ready", "Microsoft Exchange"),
        ("mx.enterprise.com ESMTP Postfix (Ubuntu)", "Postfix"),
        ("mx.enterprise.com ESMTP Exim 4.96 Mon, 01 Jan 2024", "Exim"),
        ("mx.enterprise.com ESMTP Sendmail 8.15.2/8.15.2; Mon, 1 Jan 2024", "Sendmail"),
        ("mx.enterprise.com ESMTP qmail", "qmail"),
        ("mx.enterprise.com ESMTP MailEnable Service, Version: 10.0", "MailEnable"),
        ("mx.enterprise.com Zimbra ESMTP ready", "Zimbra"),
        ("mx.enterprise.com ESMTP Haraka 3.0.2 ready", "Haraka"),
        ("mx.enterprise.com ESMTP OpenSMTPD", "OpenSMTPD"),
        ("mx.enterprise.com ESMTP hMailServer", "hMailServer"),
        ("mx.enterprise.com ESMTP MDaemon 23.0.0; Mon, 01 Jan 2024", "MDaemon"),
        ("mx.enterprise.com Kerio Connect 10.0.0 ESMTP ready", "Kerio Connect"),
        ("mx.google.com ESMTP a1b2c3 - gsmtp", "Google Workspace"),
    ],
)  # fmt: skip
def test_provider_is_named_by_banner_when_mx_is_unknown(banner: str, provider: str) -> None:
    assert provider_name(["mail.enterprise.com"], banner) == provider


@pytest.mark.parametrize("banner", [None, "", "mx.enterprise.com ESMTP ready", "Service ready"])
def test_plain_banner_names_no_provider(banner: str | None) -> None:
    assert provider_name(["mail.enterprise.com"], banner) is None


# --- accept-all providers ------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "accept_all"), [
    ("Yahoo", True), ("AOL", True), ("Gmail", False), ("Google Workspace", False),
    ("Microsoft 365", False), ("Postfix", False), (None, False),
])  # fmt: skip
def test_yahoo_style_provider_accepts_all_at_rcpt(provider: str | None, accept_all: bool) -> None:
    assert is_accept_all_provider(provider) is accept_all


def test_accept_all_check_uses_provider_name_output() -> None:
    assert is_accept_all_provider(provider_name(["mx-aol.mail.gm0.yahoodns.net"]))
    assert not is_accept_all_provider(provider_name(["gmail-smtp-in.l.google.com"]))
