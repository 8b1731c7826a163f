"""engine/syntax.py: what is an address, its normalised form, and typo suggestions."""

import dataclasses

import pytest
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import DOMAIN_NAME_REGEX
from mailprobe.engine.syntax import (
    Address,
    InvalidAddress,
    _checked_domain,
    parse_address,
    suggest_correction,
)


def _parsed(text: str, **options: bool) -> Address:
    result = parse_address(text, **options)
    assert isinstance(result, Address), result
    return result


def _rejected(text: str, **options: bool) -> InvalidAddress:
    result = parse_address(text, **options)
    assert isinstance(result, InvalidAddress), result
    return result


# --- valid and invalid ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("john@enterprise.com", "john@enterprise.com"),
        ("John.Smith@Enterprise.COM", "John.Smith@enterprise.com"),
        ("jane+newsletter@example.com", "jane+newsletter@example.com"),
        ("o'brien@example.co.uk", "o'brien@example.co.uk"),
        ("!#$%&'*+/=?^_`{|}~-@example.org", "!#$%&'*+/=?^_`{|}~-@example.org"),
        ("first.middle.last@sub.domain.example", "first.middle.last@sub.domain.example"),
        ("x@mail-server.example", "x@mail-server.example"),
        ("user@123.com", "user@123.com"),
        ("test@io", "test@io"),
        # RFC 2142 names are case-insensitive; email-validator lower-cases them
        ("Postmaster@Example.com", "postmaster@example.com"),
    ],
)
def test_valid_address_is_normalized(text: str, normalized: str) -> None:
    assert _parsed(text).normalized == normalized


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plainaddress",
        "@example.com",
        "user@",
        "user@@example.com",
        "a@b@example.com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "user@-example.com",
        "user@example-.com",
        "user@exa..mple.com",
        "user@example.com.",
        "us er@example.com",
        "user@exa mple.com",
        "user(comment)@example.com",
        "user@example.com (comment)",
        "John Smith <john@example.com>",
        "<john@example.com>",
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@example.123",
        "user@192.0.2.1",
        "user@exam_ple.com",
        "user@localhost",
        "user@printer.local",
        "user@host.invalid",
        "user@hidden.onion",
        "user@1.0.0.127.in-addr.arpa",
        "user@host.test",
        "user\u0007@example.com",
        "user@example.com\n",
        "user@exa\r\nmple.com",
        "\nuser@example.com",
    ],
)
def test_malformed_text_is_invalid_address(text: str) -> None:
    assert _rejected(text).message


def test_invalid_address_keeps_stripped_text_and_email_validator_message() -> None:
    result = _rejected("  user@@example.com ")
    assert result.original == "user@@example.com"
    assert "@" in result.message


def test_invalid_address_is_a_frozen_value_not_an_exception() -> None:
    result = _rejected("nope")
    assert not isinstance(result, BaseException)
    assert result == InvalidAddress(result.original, result.message)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.message = "changed"  # type: ignore[misc]


def test_address_is_frozen_and_hashable() -> None:
    address = _parsed("jane@example.com")
    assert {address: 1}[_parsed("jane@example.com")] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        address.domain = "other.example"  # type: ignore[misc]


# --- normalisation -------------------------------------------------------------------------


def test_domain_is_lowercased_and_local_part_case_kept() -> None:
    address = _parsed("Jane.DOE@Example.COM")
    assert (address.local_part, address.domain) == ("Jane.DOE", "example.com")


@pytest.mark.parametrize(
    ("text", "domain", "domain_unicode"),
    [
        ("jane@bücher.example", "xn--bcher-kva.example", "bücher.example"),
        ("jane@BÜCHER.example", "xn--bcher-kva.example", "bücher.example"),
        ("jane@xn--bcher-kva.example", "xn--bcher-kva.example", "bücher.example"),
        ("jane@例え.jp", "xn--r8jz45g.jp", "例え.jp"),
        ("jane@παράδειγμα.δοκιμή", "xn--hxajbheg2az3al.xn--jxalpdlp", "παράδειγμα.δοκιμή"),
    ],
)
def test_idn_domain_becomes_a_label_with_u_label_kept(
    text: str, domain: str, domain_unicode: str
) -> None:
    address = _parsed(text)
    assert (address.domain, address.domain_unicode) == (domain, domain_unicode)
    assert address.normalized == f"jane@{domain}"
    assert not address.smtputf8


@pytest.mark.parametrize(
    ("text", "local_part"),
    [
        ("jürgen@example.com", "jürgen"),
        ("δοκιμή@example.com", "δοκιμή"),
        ("用户@例子.广告", "用户"),
        # NFC: "u" + combining diaeresis becomes "ü"
        ("ju\u0308rgen@example.com", "jürgen"),
    ],
)
def test_non_ascii_local_part_needs_smtputf8(text: str, local_part: str) -> None:
    address = _parsed(text)
    assert address.smtputf8
    assert address.local_part == local_part


def test_ascii_address_needs_no_smtputf8() -> None:
    assert not _parsed("jane@example.com").smtputf8


@pytest.mark.parametrize(
    "text",
    [
        "  jane@example.com  ",
        "\tjane@example.com\t",
        "\u00a0jane@example.com\u00a0",
        "\ufeffjane@example.com",
        "jane@example.com\u200b",
        "\r\n jane@example.com",  # RFC 5322 folding: CRLF followed by a space
        "jane@example.com\r\n\t",
    ],
)
def test_white_space_around_address_is_stripped(text: str) -> None:
    address = _parsed(text)
    assert address.original == "jane@example.com"
    assert address.normalized == "jane@example.com"


@pytest.mark.parametrize(
    "text", ["jane@example.com\r\n", "\r\njane@example.com", "jane@example.com\r", "ja\nne@x.com"]
)
def test_line_break_not_folding_is_invalid(text: str) -> None:
    assert "line break" in _rejected(text).message


def test_original_keeps_input_form_while_normalized_uses_a_label() -> None:
    address = _parsed(" Jane@Bücher.Example ")
    assert address.original == "Jane@Bücher.Example"
    assert address.normalized == "Jane@xn--bcher-kva.example"


# --- length limits -------------------------------------------------------------------------


def test_local_part_of_64_characters_is_valid() -> None:
    assert _parsed("a" * 64 + "@example.com")


def test_local_part_of_65_characters_is_invalid() -> None:
    assert "too long" in _rejected("a" * 65 + "@example.com").message


def _domain_of_length(length: int) -> str:
    # labels of 63 characters (the maximum) joined by dots, ending in ".com"
    body = length - len(".com")
    labels = []
    while body > 0:
        size = min(63, body)
        labels.append("d" * size)
        body -= size + 1
    return ".".join(labels) + ".com"


def test_address_of_254_octets_is_valid() -> None:
    text = "a" * 64 + "@" + _domain_of_length(189)
    assert len(text) == 254
    assert _parsed(text)


def test_address_of_255_octets_is_invalid() -> None:
    text = "a" * 64 + "@" + _domain_of_length(190)
    assert len(text) == 255
    assert "too long" in _rejected(text).message


def test_address_length_counts_utf8_octets() -> None:
    # 63 two-octet characters: 63 characters but 126 octets of local part
    text = "é" * 63 + "@" + _domain_of_length(127)
    assert len(text) == 191 and len(text.encode()) == 254
    assert _parsed(text)
    assert "too long" in _rejected("é" * 63 + "@" + _domain_of_length(128)).message


def test_domain_label_of_63_characters_is_valid() -> None:
    assert _parsed("a@" + "d" * 63 + ".com")


def test_domain_label_of_64_characters_is_invalid() -> None:
    assert "periods" in _rejected("a@" + "d" * 64 + ".com").message


# --- unusual forms (see the table in engine/syntax.py) -------------------------------------


def test_tld_only_domain_is_accepted_for_dns_to_decide() -> None:
    assert _parsed("user@org").domain == "org"


@pytest.mark.parametrize("text", ["user@iana.123", "user@255.255.255.255"])
def test_numeric_tld_is_invalid(text: str) -> None:
    assert "TLD" in _rejected(text).message


def test_quoted_local_part_is_an_address_its_server_is_asked_about() -> None:
    # RFC 5321 quoted-string: valid on the envelope, and real servers accept it.
    assert _parsed('"john smith"@example.com').normalized == '"john smith"@example.com'


def test_quotes_that_change_nothing_are_dropped() -> None:
    assert _parsed('"jane"@example.com').normalized == "jane@example.com"


@pytest.mark.parametrize(
    "text", ['""@example.com', '"a"b"@example.com', '"bell\u0007"@example.com', '"a\nb"@x.com']
)
def test_quoted_text_that_is_no_address_stays_invalid(text: str) -> None:
    _rejected(text.encode().decode("unicode_escape"))


def test_address_literal_is_invalid() -> None:
    assert "bracketed" in _rejected("jane@[192.0.2.1]").message


# --- test domains --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["user@host.test", "user@test", "user@mx.sub.test"])
def test_test_domain_is_valid_only_when_allowed(text: str) -> None:
    assert "special-use" in _rejected(text).message
    assert _parsed(text, allow_test_domains=True).normalized == text


@pytest.mark.parametrize(
    "text", ["user@localhost", "user@host.invalid", "user@host.local", "user@x.onion"]
)
def test_other_special_use_names_stay_invalid_with_test_domains(text: str) -> None:
    assert _rejected(text, allow_test_domains=True)


@pytest.mark.parametrize("text", ["user@example.com", "user@host.example", "user@example.org"])
def test_example_domains_are_valid_without_test_domains(text: str) -> None:
    assert _parsed(text).normalized == text


# --- suggestions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("jane@gmial.com", "jane@gmail.com"),
        ("jane@gmai.com", "jane@gmail.com"),
        ("jane@gnail.com", "jane@gmail.com"),
        ("jane@gmail.con", "jane@gmail.com"),
        ("jane@gmail.cmo", "jane@gmail.com"),
        ("jane@gmail.cm", "jane@gmail.com"),
        ("jane@gmail.co", "jane@gmail.com"),
        ("jane@gmailcom", "jane@gmail.com"),
        ("jane@gmail", "jane@gmail.com"),
        ("jane@gmial.con", "jane@gmail.com"),
        ("jane@hotmial.com", "jane@hotmail.com"),
        ("jane@hotmail.co", "jane@hotmail.com"),
        ("jane@hotmail.couk", "jane@hotmail.co.uk"),
        ("jane@hotmail.uk", "jane@hotmail.co.uk"),
        ("jane@yahoo.co.uj", "jane@yahoo.co.uk"),
        ("jane@yaho.com", "jane@yahoo.com"),
        ("jane@yahooo.com", "jane@yahoo.com"),
        ("jane@outlok.com", "jane@outlook.com"),
        ("jane@outlook.cmo", "jane@outlook.com"),
        ("jane@iclod.com", "jane@icloud.com"),
        ("jane@icloud.co", "jane@icloud.com"),
        ("jane@googlemial.com", "jane@googlemail.com"),
        ("jane@protonmai.com", "jane@protonmail.com"),
        ("jane@comcast.nte", "jane@comcast.net"),
        ("jane@aol.cm", "jane@aol.com"),
        ("Jane.Doe@GMIAL.COM", "Jane.Doe@gmail.com"),
    ],
)
def test_typo_of_popular_domain_is_corrected(text: str, suggestion: str) -> None:
    assert suggest_correction(_parsed(text)) == suggestion


@pytest.mark.parametrize(
    "domain",
    [
        # known mailbox domains, popular or not
        "gmail.com", "googlemail.com", "gmx.de", "gmx.net", "gmx.com", "mail.com", "email.com",
        "ymail.com", "aim.com", "me.com", "mac.com", "hotmail.dk", "hotmail.se", "live.ca",
        "yahoo.co.jp", "yahoo.com.au", "proton.me", "protonmail.ch", "mail.de", "cloud.com",
        # a known brand under another suffix is not a slip
        "yahoo.se", "gmail.de", "orange.es", "gmx.at", "email.co",
        # not close to a popular domain, or too short a name to guess
        "mycompany.com", "acme.io", "enterprise.com", "love.com", "wen.de", "aol.de",
        "gmail-like.com", "bücher.example",
    ],
)  # fmt: skip
def test_known_or_distant_domain_gets_no_suggestion(domain: str) -> None:
    assert suggest_correction(_parsed(f"jane@{domain}")) is None


def test_suggestion_is_deterministic_and_picks_the_closest_domain() -> None:
    # hotmail.co is one slip from hotmail.com and three from hotmail.co.uk
    suggestions = {suggest_correction(_parsed("a@hotmail.co")) for _ in range(5)}
    assert suggestions == {"a@hotmail.com"}


# --- the per-domain cache changes nothing ----------------------------------------------------


def _as_email_validator_says(text: str, *, allow_test_domains: bool) -> Address | InvalidAddress:
    """Return what one plain validate_email() call makes of the text: the contract of the cache."""
    try:
        parsed = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_empty_local=False,
            allow_quoted_local=True,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=True,
            globally_deliverable=False,
            test_environment=allow_test_domains,
        )
    except EmailNotValidError as error:
        return InvalidAddress(text, str(error))
    if not DOMAIN_NAME_REGEX.search(parsed.ascii_domain):
        return InvalidAddress(
            text, "The part after the @-sign is not valid. It is not within a valid TLD."
        )
    return Address(text, parsed.local_part, parsed.ascii_domain, parsed.domain, parsed.smtputf8)


_LOCAL_PARTS = (
    "jane", "Jane.Doe", "jane+tag", "Postmaster", "ABUSE", "jürgen", "ju\u0308rgen", "用户",
    "a" * 64, "a" * 65, "é" * 63, ".jane", "jane.", "ja..ne", '"jane"', '"ja ne"', "ja ne", "",
    "ja(ne)", "ja\u200bne",
)  # fmt: skip
_DOMAIN_PARTS = (
    "example.com", "Example.COM", "bücher.example", "BÜCHER.example", "xn--bcher-kva.example",
    "例え.jp", "host.test", "test", "localhost", "printer.local", "iana.123", "255.255.255.255",
    "-bad.com", "bad-.com", "bad_.com", "exa..mple.com", "example.com.", "", "io",
    "[192.0.2.1]", "[IPv6:2001:db8::1]", "[300.1.1.1]", "[nope]", "d" * 64 + ".com",
    ".".join(["d" * 63] * 3) + ".com", ".".join(["d" * 63] * 4), "xn--zz.com", "ex ample.com",
    "exam\u200bple.com", "a@b.com",
)  # fmt: skip
_WHOLE = ("John <jane@example.com>", "<jane@example.com>", "plain", "@", "jane@@example.com")


@pytest.mark.parametrize("allow_test_domains", [False, True])
def test_parse_address_says_what_email_validator_says_for_every_local_and_domain_part(
    allow_test_domains: bool,
) -> None:
    texts = [f"{local}@{domain}" for local in _LOCAL_PARTS for domain in _DOMAIN_PARTS]
    # twice: the second time every domain comes from the cache
    for text in [*texts, *_WHOLE, *texts]:
        expected = _as_email_validator_says(text, allow_test_domains=allow_test_domains)
        assert parse_address(text, allow_test_domains=allow_test_domains) == expected, text


def test_domain_is_checked_once_for_all_its_addresses() -> None:
    domain = "once-per-domain.example"
    before = _checked_domain.cache_info()
    parse_address(f"jane@{domain}")
    parse_address(f"john@{domain}")
    parse_address(f"jo..hn@{domain}")  # the local part fails first: the domain is not asked
    after = _checked_domain.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_domain_cache_is_bounded() -> None:
    assert _checked_domain.cache_info().maxsize is not None
