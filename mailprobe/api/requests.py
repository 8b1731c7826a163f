"""What a caller may send: the request models, their limits, and problems in plain words.

Owns VerifyRequest and BatchRequest, the body and query-string readers, and the 413/422
RequestErrors that name every problem. It must not verify addresses or know about API keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)
from starlette.requests import Request

from .errors import Problem, RequestError

MAX_EMAIL_LENGTH = 254  # RFC 5321 §4.5.3.1.3 path limit less the angle brackets
MAX_BATCH = 100
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 60_000
#: 100 addresses of 254 characters, each escaped as \uXXXX, fit with room to spare.
MAX_BODY_BYTES = 256 * 1024


def _address_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


EmailText = Annotated[StrictStr, Field(max_length=MAX_EMAIL_LENGTH), AfterValidator(_address_text)]
TimeoutMs = Annotated[StrictInt, Field(ge=MIN_TIMEOUT_MS, le=MAX_TIMEOUT_MS)]


class VerifyRequest(BaseModel):
    """One address to verify, and how long the caller waits for the SMTP answer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    email: EmailText
    timeout_ms: TimeoutMs | None = None


class BatchRequest(BaseModel):
    """Up to 100 addresses to verify together (addresses of one domain share SMTP sessions)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    emails: Annotated[list[EmailText], Field(min_length=1, max_length=MAX_BATCH)]
    timeout_ms: TimeoutMs | None = None


_RANGE = f"must be an integer from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"
_PROBLEMS: dict[str, str] = {
    "missing": "is required",
    "string_type": "must be a string",
    # A lone surrogate (JSON "\ud800") could not even be written back in the answer.
    "string_unicode": "must be valid Unicode text (no lone surrogates)",
    "string_too_long": f"is longer than {MAX_EMAIL_LENGTH} characters",
    "int_type": _RANGE,
    "greater_than_equal": _RANGE,
    "less_than_equal": _RANGE,
    "list_type": "must be a list of addresses",
    "too_short": "must hold at least one address",
    "too_long": f"may hold at most {MAX_BATCH} addresses",
    "model_type": "the body must be a JSON object",
    "model_attributes_type": "the body must be a JSON object",
}


def problems_of(error: ValidationError) -> list[Problem]:
    """Return pydantic's findings as plain problems (`emails[3]: must be a string`)."""
    found: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
        message = _PROBLEMS.get(item["type"])
        if message is None:
            cause = item.get("ctx", {}).get("error")
            message = str(cause) if cause is not None else item["msg"]
        found.append(Problem(where.lstrip(".") or "body", message))
    return found


def _invalid(problems: Sequence[Problem]) -> RequestError:
    return RequestError(422, "invalid_request", "; ".join(map(str, problems)), problems=problems)


_M = TypeVar("_M", bound=BaseModel)


def validate(model: type[_M], data: Any) -> _M:
    """Return the validated request, or raise a 422 RequestError naming every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(problems_of(exc)) from None


async def read_json(request: Request) -> Any:
    """Return the JSON body; raise a 413 or 422 RequestError for an oversized or broken one."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise _invalid([Problem("body", "is empty; send a JSON object")])
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; absurd nesting
        raise _invalid([Problem("body", "is not valid JSON")]) from None


def query_request(request: Request) -> VerifyRequest:
    """Return the GET request's parameters validated like a POST body."""
    params = request.query_params
    data: dict[str, Any] = {}
    if "email" in params:
        data["email"] = params["email"]
    if "timeout_ms" in params:
        text = params["timeout_ms"].strip()
        data["timeout_ms"] = int(text) if text.isascii() and text.isdigit() else text
    return validate(VerifyRequest, data)
