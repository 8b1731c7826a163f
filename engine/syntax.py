"""Address syntax: is the text an address an SMTP envelope can carry, and in which form?

`email-validator` does the parsing (RFC 5321/5322 grammar, lengths, IDNA, SMTPUTF8, NFC); this
module chooses its options, adds two rules of its own (line breaks, numeric TLDs; below), and
suggests corrections for well-known domains. It calls validate_email()'s steps itself so that a
domain is checked once, not once per address (a bounded cache; results and messages are the
library's). It never looks anything up: DNS decides later whether the domain takes mail.

Input: white space around the address (spaces, tabs, NBSP, zero-width spaces, a BOM, and RFC
5322 folding, i.e. a CRLF followed by a space or tab) is dropped. Any other CR or LF makes the
text invalid: a stray line break is a broken record (isemail counts it as an error), and a
reader of files strips its own line endings before calling us.

Output: the local part as given (NFC; RFC 2142 names such as `Postmaster` lower-cased by
email-validator, since servers must treat them case-insensitively), the domain lower-cased in
IDNA A-label form for DNS and RCPT, and the U-label form for display.

Choices for the unusual forms (isemail diagnoses; tests/test_isemail.py holds the same table):

| isemail diagnosis                         | accepted | why                                    |
|-------------------------------------------|----------|----------------------------------------|
| RFC5321_TLD (`test@org`)                  | yes      | syntactically a domain; DNS decides (a |
|                                           |          | few TLDs publish an MX, `test@io` is   |
|                                           |          | isemail's own valid example)           |
| RFC5321_TLDNUMERIC (`test@iana.123`)      | no       | no TLD is numeric; it is an IP address |
|                                           |          | written as a name                      |
| RFC5321_QUOTEDSTRING (`"a b"@x.org`)      | yes      | valid RFC 5321 envelope addresses that |
|                                           |          | real servers accept: the server says   |
|                                           |          | whether the mailbox exists; calling    |
|                                           |          | them invalid would drop deliverable    |
|                                           |          | addresses (quotes that change nothing, |
|                                           |          | `"alice"@x.org`, are dropped)          |
| RFC5321_ADDRESSLITERAL, IPV6DEPRECATED    | no       | `[1.2.3.4]` has no MX to look up and   |
|                                           |          | would bypass mail routing entirely     |
| CFWS_FWS (white space around the address) | yes      | stripped as surrounding white space    |
| DEPREC_FWS                                | around:  | folded white space around the address  |
|                                           | yes;     | is stripped; inside (`a . b@x.org`) it |
|                                           | inside:  | is not part of any envelope address    |
|                                           | no       |                                        |
| CFWS_COMMENT, DEPREC_* (comments, quoted  | no       | header-only RFC 5322 forms that no     |
| pairs, obsolete local parts, CFWS at @)   |          | SMTP envelope carries                  |
| RFC5322_* (too long, domain literals)     | no       | over RFC 5321 limits or not routable   |

Lengths (email-validator, `strict=True` for the local part): local part 64 characters, address
254 octets, domain 253 octets, label 63 octets.

Special-use names (`.test`, `localhost`, `.invalid`, `.local`, `.onion`, `.arpa`) are invalid.
`allow_test_domains` is email-validator's `test_environment`: it admits `test` and `*.test`
only. `.example` names are always accepted (RFC 6761 asks for no special treatment; DNS
answers them).

Suggestions are hints shown beside the status, never a change of address. They come only for
slips of a popular mailbox domain: a suffix typo from an explicit table (`gmail.con`,
`hotmail.co`, `yahoo.uk`), a missing dot or TLD (`gmailcom`, `gmail`), or one edit (two for
names of 6+ letters) in a name of 5+ letters (`gmial.com`, `hotmial.com`). Never for a known
mailbox domain (`mail.com`, `ymail.com`), a known brand under another suffix (`yahoo.se`), or
short names, which are one edit from many real domains (`love.com` is not `live.com`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, EmailSyntaxError, ValidatedEmail

# email-validator's own "TLDs end with a letter" rule, which it applies only together with the
# dot requirement (globally_deliverable); we want the first without the second.
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOMAIN_NAME_REGEX
from email_validator.syntax import (
    split_email,
    validate_email_domain_literal,
    validate_email_domain_name,
    validate_email_length,
    validate_email_local_part,
)

from .enrich import FREE_DOMAINS

# RFC 5322 §2.2.3: unfolding is removing each CRLF that is immediately followed by WSP.
_FOLD = re.compile(r"\r\n(?=[ \t])")
# White space and the invisible characters pasted text brings along (zero-width space, BOM).
_AROUND = re.compile(r"^[\s\u200b-\u200d\u2060\ufeff]+|[\s\u200b-\u200d\u2060\ufeff]+$")


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid address, split and normalised for the SMTP probe."""

    original: str  # as given, stripped of surrounding white space
    local_part: str  # case kept (the SMTP probe sends it as is)
    domain: str  # lower-case A-label (IDNA) form: what DNS and RCPT use
    domain_unicode: str  # U-label form, for display
    smtputf8: bool  # local part needs SMTPUTF8 (non-ASCII)

    @property
    def normalized(self) -> str:
        """Return local_part@domain with the A-label domain: the cache key and RCPT argument."""
        return f"{self.local_part}@{self.domain}"


@dataclass(frozen=True, slots=True)
class InvalidAddress:
    """Text that is not an address an SMTP envelope can carry, and why (a value, not an error)."""

    original: str  # as given, stripped of surrounding white space
    message: str  # human readable, mostly email-validator's words


def parse_address(text: str, *, allow_test_domains: bool = False) -> Address | InvalidAddress:
    """Return the parsed address, or why it is not one."""
    unfolded = _FOLD.sub("", text)
    original = _AROUND.sub("", unfolded)
    if "\r" in unfolded or "\n" in unfolded:
        return InvalidAddress(original, "The email address contains a line break.")
    try:
        return _validated(original, test_environment=allow_test_domains)
    except EmailNotValidError as error:
        return InvalidAddress(original, str(error))


# What follows is email-validator's validate_email() with our options, step by step, so that the
# domain's checks (IDNA, UTS #46, special-use names: most of the time spent) run once per domain
# instead of once per address. Each step is the library's own function, called in
# validate_email()'s order, so results and messages are the library's; tests/test_syntax.py
# holds parse_address to validate_email() itself. The options, all fixed so that nobody's change
# to email-validator's module-level defaults can change what we accept: check_deliverability
# off, allow_smtputf8 on, quoted local parts accepted (RFC 5321 quoted-string), empty local
# parts, domain literals and display names refused, strict on (the 64-character local part),
# globally_deliverable off (it admits dotless domains, test@io: DNS decides),
# test_environment = allow_test_domains.


def _validated(original: str, *, test_environment: bool) -> Address | InvalidAddress:
    """Return the address validate_email() would accept; raise what it would raise."""
    display_name, given_local_part, local_part, quoted, domain_part = split_email(original)
    checked = validate_email_local_part(
        local_part,
        allow_smtputf8=True,
        allow_empty_local=False,
        quoted_local_part=quoted,
        strict=True,
    )
    smtputf8 = checked["smtputf8"]  # of the local part as given, before NFC
    nfc_local_part = unicodedata.normalize("NFC", local_part)
    if nfc_local_part != local_part:
        try:
            checked = validate_email_local_part(
                nfc_local_part,
                allow_smtputf8=True,
                allow_empty_local=False,
                quoted_local_part=quoted,
                strict=True,
            )
        except EmailSyntaxError as error:
            raise EmailSyntaxError("After Unicode normalization: " + str(error)) from error
    local_part, ascii_local_part = checked["local_part"], checked["ascii_local_part"]
    if quoted:
        _check_quoted(given_local_part, local_part)
    if ascii_local_part is not None and ascii_local_part.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        ascii_local_part, local_part = ascii_local_part.lower(), local_part.lower()  # RFC 2142

    if not domain_part:
        raise EmailSyntaxError("There must be something after the @-sign.")
    if domain_part.startswith("[") and domain_part.endswith("]"):
        validate_email_domain_literal(domain_part[1:-1])  # a malformed literal is told first
        raise EmailSyntaxError("A bracketed IP address after the @-sign is not allowed here.")
    domain = _checked_domain(domain_part, test_environment=test_environment)
    if domain.error is not None:
        raise EmailSyntaxError(domain.error)

    lengths = ValidatedEmail()
    lengths.original = f"{given_local_part}@{domain_part}"
    lengths.normalized = f"{local_part}@{domain.unicode}"
    lengths.local_part, lengths.ascii_local_part = local_part, ascii_local_part
    lengths.ascii_domain = domain.ascii
    validate_email_length(lengths)
    if display_name is not None:
        raise EmailSyntaxError(
            "A display name and angle brackets around the email address are not permitted here."
        )

    if not domain.in_tld:
        return InvalidAddress(
            original, "The part after the @-sign is not valid. It is not within a valid TLD."
        )
    return Address(
        original=original,
        local_part=local_part,
        domain=domain.ascii,
        domain_unicode=domain.unicode,
        smtputf8=smtputf8,
    )


# RFC 5321 quoted-pairSMTP: a backslash escapes printable ASCII only (RFC 6531 widens qtext,
# not quoted pairs).
_BAD_QUOTED_PAIR = re.compile(r"\\(?![\x20-\x7e])")
_LOCAL_PART_MAX_OCTETS = 64


def _check_quoted(given: str, local_part: str) -> None:
    """Raise what RFC 5321 says of a quoted local part that email-validator lets through.

    Hand-written: email-validator measures the local part without its quotes and accepts a
    backslash before any character; RFC 5321 limits both, quotes and escapes as written.
    """
    if _BAD_QUOTED_PAIR.search(given):
        raise EmailSyntaxError("A backslash inside quotes must escape a printable ASCII character.")
    if max(len(given.encode()), len(local_part.encode())) > _LOCAL_PART_MAX_OCTETS:
        raise EmailSyntaxError(
            "The email address is too long before the @-sign (with its quotes, over 64 octets)."
        )


@dataclass(frozen=True, slots=True)
class _Domain:
    """A domain part as email-validator judged it: its two forms, or its complaint."""

    ascii: str = ""  # A-label form
    unicode: str = ""  # U-label form
    in_tld: bool = False  # ends in a TLD that is not numeric (our rule, checked last)
    error: str | None = None


# Bounded, so a list of a million distinct domains cannot grow it; 8,192 entries are a few MB.
# It keeps email-validator's special-use names as they were when a domain was first seen.
@lru_cache(maxsize=8192)
def _checked_domain(domain_part: str, *, test_environment: bool) -> _Domain:
    """Return email-validator's verdict on a domain part (no DNS: syntax and IDNA only)."""
    try:
        checked = validate_email_domain_name(
            domain_part, test_environment=test_environment, globally_deliverable=False
        )
    except EmailSyntaxError as error:
        return _Domain(error=str(error))
    ascii_domain = checked["ascii_domain"]
    return _Domain(
        ascii=ascii_domain,
        unicode=checked["domain"],
        in_tld=DOMAIN_NAME_REGEX.search(ascii_domain) is not None,
    )


# --- typo suggestions ----------------------------------------------------------------------

#: Domains people mistype, most used first (ties go to the earlier one).
_POPULAR_DOMAINS: tuple[str, ...] = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com",
    "live.com", "msn.com", "googlemail.com", "yahoo.co.uk", "hotmail.co.uk", "hotmail.fr",
    "me.com", "proton.me", "protonmail.com", "gmx.de", "gmx.net", "web.de", "mail.ru",
    "yandex.ru", "comcast.net", "orange.fr", "free.fr",
)  # fmt: skip

#: Real domains one slip away from a popular one; never "corrected".
_LOOKALIKE_DOMAINS: frozenset[str] = frozenset({"cloud.com", "email.com", "ymail.com"})
_KNOWN_DOMAINS: frozenset[str] = FREE_DOMAINS | _LOOKALIKE_DOMAINS | frozenset(_POPULAR_DOMAINS)
# A name that is the first label of a real domain (yahoo, mail, email) is not a misspelling.
_KNOWN_NAMES: frozenset[str] = frozenset(domain.split(".", 1)[0] for domain in _KNOWN_DOMAINS)

#: Suffix -> its slips that are not real TLDs ("" is a missing TLD: jane@gmail).
_SUFFIX_TYPOS: dict[str, frozenset[str]] = {
    "com": frozenset(
        {"", "co", "con", "cmo", "cm", "om", "comm", "coom", "ccom", "c0m", "cpm", "vom", "xom",
         "ocm", "cim", "clm", "comn", "coml", "cok", "com.com", "co.com"}
    ),
    "net": frozenset({"", "ne", "nte", "nett", "neet", "nt", "ner", "nrt", "met", "bet"}),
    "co.uk": frozenset(
        {"uk", "couk", "co.k", "co.u", "c.uk", "co.ukk", "cp.uk", "com.uk", "co.uj", "co.ul",
         "co.ik", "co.jk"}
    ),
    "fr": frozenset({"frr", "rf"}),
    "de": frozenset({"dee", "ed"}),
    "ru": frozenset({"ruu", "ur"}),
    "me": frozenset({"mee", "em"}),
}  # fmt: skip

# Short names (aol, live, web) are one edit from many real domains (love.com, wen.de): only
# their suffix slips are corrected. Longer names allow one edit, or two from 6 letters on.
_FUZZY_MIN_NAME = 5


def _split(domain: str) -> tuple[str, str]:
    name, _, suffix = domain.partition(".")
    return name, suffix


def _suffix_matches(suffix: str, target: str) -> bool:
    return suffix == target or suffix in _SUFFIX_TYPOS.get(target, frozenset())


def _osa_distance(a: str, b: str) -> int:
    """Return the optimal-string-alignment (Damerau-Levenshtein) distance between a and b.

    Hand-written: no installed library counts a swap of neighbours (gmial) as one edit; difflib
    gives a similarity ratio, not an edit count.
    """
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _suffix_slip(name: str, suffix: str) -> str | None:
    """Return the popular domain whose name this is, with a slipped suffix or a lost dot."""
    for target in _POPULAR_DOMAINS:
        target_name, target_suffix = _split(target)
        if name == target_name and _suffix_matches(suffix, target_suffix):
            return target  # gmail.con, hotmail.co, yahoo.uk, gmail
        if not suffix and name == target.replace(".", ""):
            return target  # gmailcom
    return None


def _name_slip(name: str, suffix: str) -> str | None:
    """Return the closest popular domain whose long name is one or two edits from this name."""
    best: tuple[int, str] | None = None
    for target in _POPULAR_DOMAINS:
        target_name, target_suffix = _split(target)
        if len(target_name) < _FUZZY_MIN_NAME or not _suffix_matches(suffix, target_suffix):
            continue
        limit = 1 if len(target_name) == _FUZZY_MIN_NAME else 2
        distance = _osa_distance(name, target_name)
        # Strictly closer only: on a tie the more popular domain, listed first, stays.
        if distance <= limit and (best is None or distance < best[0]):
            best = (distance, target)
    return best[1] if best else None


def _corrected_domain(domain: str) -> str | None:
    """Return the popular domain this one is a slip of, or None when it is not clearly one."""
    if domain in _KNOWN_DOMAINS:
        return None
    name, suffix = _split(domain)
    corrected = _suffix_slip(name, suffix)
    if corrected is None and name not in _KNOWN_NAMES:
        # A known name under another suffix (yahoo.se, gmx.at, mail.de) is a real brand domain.
        corrected = _name_slip(name, suffix)
    return corrected


def suggest_correction(address: Address) -> str | None:
    """Return the address with a well-known domain's typo fixed (jane@gmial.com -> jane@gmail.com).

    None when the domain is itself a known mailbox domain or is not close to a popular one.
    """
    corrected = _corrected_domain(address.domain)
    return f"{address.local_part}@{corrected}" if corrected else None
