"""The result JSON is the contract: the README's example, field for field."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mailprobe.engine.result import (
    STATUS_OF_REASON,
    Action,
    Checks,
    Reason,
    SmtpCheck,
    Status,
    VerificationResult,
)

from mailprobe import engine
from tests.shared import SHARED

DESIGN_EXAMPLE = {
    "email": "john@enterprise.com",
    "normalized": "john@enterprise.com",
    "status": "valid",
    "reason": "accepted",
    "action": "send",
    "score": 98,
    "checks": {
        "syntax": True,
        "domain": True,
        "mx_record": True,
        "smtp": {
            "connected": True,
            "mailbox_exists": True,
            "is_catch_all": False,
            "smtp_provider": "Microsoft Exchange",
            "response_code": 250,
            "enhanced_code": "2.1.5",
            "response_message": "2.1.5 Recipient OK",
            "mx_host": "enterprise-com.mail.protection.outlook.com",
            "tls": True,
        },
        "disposable": False,
        "catch_all": False,
        "role": False,
        "free": False,
    },
    "suggestion": None,
    "verified_at": "2026-11-27T12:00:00Z",
    "response_time_ms": 287,
}


def _example() -> VerificationResult:
    smtp = SmtpCheck(
        connected=True, mailbox_exists=True, is_catch_all=False,
        smtp_provider="Microsoft Exchange", response_code=250, enhanced_code="2.1.5",
        response_message="2.1.5 Recipient OK",
        mx_host="enterprise-com.mail.protection.outlook.com", tls=True,
    )  # fmt: skip
    return VerificationResult(
        email="john@enterprise.com",
        normalized="john@enterprise.com",
        status=Status.VALID,
        reason=Reason.ACCEPTED,
        action=Action.SEND,
        score=98,
        checks=Checks(
            syntax=True,
            domain=True,
            mx_record=True,
            smtp=smtp,
            disposable=False,
            catch_all=False,
            role=False,
            free=False,
        ),  # fmt: skip
        suggestion=None,
        verified_at=datetime(2026, 11, 27, 12, tzinfo=UTC),
        response_time_ms=287,
    )


def test_to_json_matches_the_design_example_field_for_field_and_in_order() -> None:
    produced = _example().to_json()
    assert produced == DESIGN_EXAMPLE
    assert list(produced) == list(DESIGN_EXAMPLE)
    assert list(produced["checks"]["smtp"]) == list(DESIGN_EXAMPLE["checks"]["smtp"])


def test_from_json_round_trips() -> None:
    result = _example()
    assert VerificationResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def _json_example(document: Path) -> dict:
    block = re.search(r"```json\n(.*?)```", document.read_text(encoding="utf-8"), re.S)
    assert block is not None, f"{document.name} has no JSON example"
    return json.loads(block[1])


def test_readme_example_is_what_we_test_against() -> None:
    assert _json_example(Path(__file__).resolve().parents[1] / "README.md") == DESIGN_EXAMPLE


def test_team_brief_example_is_what_we_test_against() -> None:
    design = SHARED / "design.md"
    if not design.exists():
        pytest.skip("the team's brief (../shared/design.md) is only beside CI and team checkouts")
    assert _json_example(design) == DESIGN_EXAMPLE


def test_every_reason_in_design_belongs_to_one_status() -> None:
    assert set(STATUS_OF_REASON) == set(Reason)


def test_engine_exports_its_public_surface() -> None:
    for name in engine.__all__:
        assert hasattr(engine, name), name
    public = {n for n in dir(engine) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(engine.__all__)
