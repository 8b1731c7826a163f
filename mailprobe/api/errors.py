"""The API's error answers: RequestError and the handlers that turn exceptions into JSON.

Every refusal is `{"error", "message", "problems"?}` with its HTTP status. Our own bugs become a
bare 500 that tells the caller nothing; nothing here decides *whether* to refuse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: where (`emails[3]`, `body`) and what, in plain words."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _error_response(
    status: int,
    code: str,
    message: str,
    *,
    problems: Sequence[Problem] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Return the JSON error answer: `{"error", "message", "problems"?}`."""
    body: dict[str, Any] = {"error": code, "message": message}
    if problems:
        body["problems"] = [{"field": p.field, "message": p.message} for p in problems]
    return JSONResponse(body, status_code=status, headers=headers)


class RequestError(Exception):
    """A request we refuse, as the status and JSON body to answer with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: Sequence[Problem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.headers = headers or {}
        super().__init__(status, code, message)

    def response(self) -> JSONResponse:
        """Return the JSON error answer: `{"error", "message", "problems"?}`."""
        return _error_response(
            self.status, self.code, self.message, problems=self.problems, headers=self.headers
        )


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Only our bugs land here (uvicorn logs the traceback); the caller learns nothing of it.
    return _error_response(500, "internal_error", "an internal error occurred; it has been logged")


#: Starlette's exception_handlers for the app: ours, Starlette's HTTP errors, anything else.
EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    RequestError: _request_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
