"""What the verifier's steps hand each other for one address, before its result is built.

Owns three values: the job (an address as given and as parsed), the answer the SMTP step found
for it, and the answer a whole domain gets without a session. Values only: no I/O, no decisions;
verifier.py turns a job and its answer into the contract result.
"""

from __future__ import annotations

from dataclasses import dataclass

from .mx import MailRoute
from .result import Reason, SmtpReply, Verdict
from .syntax import Address


@dataclass(frozen=True, slots=True)
class Job:
    """One address being verified, as given and as parsed."""

    email: str
    address: Address
    started: float  # time.perf_counter() when it was read, for response_time_ms


@dataclass(frozen=True, slots=True)
class Answer:
    """What the SMTP step found for one recipient."""

    verdict: Verdict
    reply: SmtpReply | None = None
    mx_host: str | None = None  # None: no session was attempted (checks.smtp is null)
    connected: bool = False
    tls: bool = False
    software: str | None = None  # banner and EHLO text: they name the server software
    catch_all: bool | None = None


@dataclass(frozen=True, slots=True)
class DomainAnswer:
    """The answer every address of a domain gets without a session (no route, disposable...)."""

    answer: Answer
    route: MailRoute | None


#: What a job gets when a step failed with a bug (logged with its traceback where it happened).
INTERNAL_ERROR = Answer(Verdict.of(Reason.INTERNAL_ERROR))
