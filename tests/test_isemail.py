"""engine/syntax.py against is_email's address-syntax suite (shared/corpus/isemail/tests.xml).

Errors must be invalid, valid and DNS-warning addresses must parse, and every other diagnosis
follows the choice documented in engine/syntax.py's docstring, mirrored in ACCEPTED below.
"""

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import pytest
from mailprobe.engine.syntax import InvalidAddress, parse_address

from tests.shared import CORPUS, corpus_file

#: diagnosis -> accepted, for the categories where mailprobe chooses (see engine/syntax.py)
ACCEPTED: dict[str, bool] = {
    # ISEMAIL_RFC5321: valid by RFC 5321 but unusual
    "ISEMAIL_RFC5321_TLD": True,  # test@org: a domain; DNS decides whether it takes mail
    "ISEMAIL_RFC5321_TLDNUMERIC": False,  # no TLD is numeric
    "ISEMAIL_RFC5321_QUOTEDSTRING": True,  # valid envelope addresses: the server decides
    "ISEMAIL_RFC5321_ADDRESSLITERAL": False,  # [1.2.3.4] has no MX to look up
    "ISEMAIL_RFC5321_IPV6DEPRECATED": False,  # an address literal too
    # ISEMAIL_CFWS: comments and folding white space
    "ISEMAIL_CFWS_FWS": True,  # around the address: stripped
    "ISEMAIL_CFWS_COMMENT": False,
    # ISEMAIL_DEPREC: obsolete RFC 5322 forms
    "ISEMAIL_DEPREC_FWS": True,  # around the address: stripped (inside: see EXCEPTIONS)
    "ISEMAIL_DEPREC_CFWS_NEAR_AT": False,
    "ISEMAIL_DEPREC_COMMENT": False,
    "ISEMAIL_DEPREC_CTEXT": False,
    "ISEMAIL_DEPREC_LOCALPART": False,
    "ISEMAIL_DEPREC_QP": False,
    "ISEMAIL_DEPREC_QTEXT": False,
    # ISEMAIL_RFC5322: header-only or over-long forms
    "ISEMAIL_RFC5322_DOMAIN": False,
    "ISEMAIL_RFC5322_DOMAINLITERAL": False,
    "ISEMAIL_RFC5322_DOMAIN_TOOLONG": False,
    "ISEMAIL_RFC5322_DOMLIT_OBSDTEXT": False,
    "ISEMAIL_RFC5322_IPV6_2X2XCOLON": False,
    "ISEMAIL_RFC5322_IPV6_BADCHAR": False,
    "ISEMAIL_RFC5322_IPV6_COLONEND": False,
    "ISEMAIL_RFC5322_IPV6_COLONSTRT": False,
    "ISEMAIL_RFC5322_IPV6_GRPCOUNT": False,
    "ISEMAIL_RFC5322_IPV6_MAXGRPS": False,
    "ISEMAIL_RFC5322_LABEL_TOOLONG": False,
    "ISEMAIL_RFC5322_LOCAL_TOOLONG": False,
    "ISEMAIL_RFC5322_TOOLONG": False,
}

#: test id -> accepted, where the diagnosis alone does not decide
EXCEPTIONS: dict[str, bool] = {
    "87": False,  # "test . test@iana.org": DEPREC_FWS inside the local part, not around it
    "43": False,  # '""@iana.org': a quoted string, but an empty mailbox name is no mailbox
}

MUST_BE_INVALID = {"ISEMAIL_ERR"}
MUST_BE_VALID = {"ISEMAIL_VALID_CATEGORY", "ISEMAIL_DNSWARN"}


@dataclass(frozen=True)
class Case:
    id: str
    address: str
    category: str
    diagnosis: str

    @property
    def expected_accepted(self) -> bool:
        if self.category in MUST_BE_INVALID:
            return False
        if self.category in MUST_BE_VALID:
            return True
        return EXCEPTIONS.get(self.id, ACCEPTED[self.diagnosis])


def _control_chars(text: str) -> str:
    # The suite writes control characters as U+2400 + their code (U+2407 is BEL).
    return "".join(chr(ord(c) - 0x2400) if 0x2400 <= ord(c) <= 0x241F else c for c in text)


def _load_cases() -> list[Case]:
    tree = ElementTree.parse(corpus_file("isemail", "tests.xml"))
    return [
        Case(
            id=test.get("id", ""),
            address=_control_chars(test.findtext("address") or ""),
            category=test.findtext("category") or "",
            diagnosis=test.findtext("diagnosis") or "",
        )
        for test in tree.getroot().iter("test")
    ]


def _params() -> list:
    # Collection must not fail where shared/ is absent: one placeholder that skips instead.
    if not (CORPUS / "isemail" / "tests.xml").exists():
        return [pytest.param(None, id="corpus-absent")]
    return [pytest.param(case, id=f"{case.id}-{case.diagnosis}") for case in _load_cases()]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return _load_cases()


@pytest.mark.parametrize("case", _params())
def test_isemail_address_gets_documented_verdict(case: Case | None) -> None:
    if case is None:
        corpus_file("isemail", "tests.xml")  # skips
        return
    result = parse_address(case.address)
    accepted = not isinstance(result, InvalidAddress)
    assert accepted == case.expected_accepted, (case, result)


def test_isemail_choice_table_covers_every_unusual_diagnosis(cases: list[Case]) -> None:
    chosen = {
        case.diagnosis for case in cases if case.category not in MUST_BE_INVALID | MUST_BE_VALID
    }
    assert chosen == set(ACCEPTED)


def test_isemail_suite_has_expected_size_per_category(cases: list[Case]) -> None:
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.category] = counts.get(case.category, 0) + 1
    assert counts == {
        "ISEMAIL_ERR": 66,
        "ISEMAIL_VALID_CATEGORY": 14,
        "ISEMAIL_DNSWARN": 8,
        "ISEMAIL_RFC5321": 16,
        "ISEMAIL_CFWS": 10,
        "ISEMAIL_DEPREC": 20,
        "ISEMAIL_RFC5322": 30,
    }
