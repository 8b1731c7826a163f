"""One batch of a domain's recipients over its MX addresses: sessions, made-up address, limits.

Owns the SMTP step: which MX address the next session goes to, how many recipients it carries,
what its replies mean for each recipient once the made-up address has answered, what the hosts'
limit replies teach the throttle, and when a batch is given up. Sessions happen in probe.py;
replies.py, catchall.py and limits.py decide what a reply means. No queues (run.py) and no
results (verifier.py) here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from .answer import Answer, Job
from .caps import KeyedLimit, registrable_domain, suffixes
from .catchall import CatchAllOutcome, catch_all_outcome, recipient_verdict
from .errors import ProbeConnectError, ProbeError, ProbeTimeout
from .limits import (
    is_error_limit,
    is_rate_limit,
    is_session_limit,
    is_size_limit,
    is_too_many_connections,
    rcpt_max,
)
from .mx import MailRoute
from .probe import Session, run_session
from .replies import classify
from .result import Reason, SmtpReply, Stage, Verdict
from .settings import EngineSettings
from .throttle import HostThrottle, Slot, TooSlow

#: Sessions in a row that answer no recipient before a host is given up for this batch.
_MAX_STALLS = 3
#: Rounds over every MX address while they all say "too many" before the batch gives up.
_MAX_BUSY_ROUNDS = 3
#: Distinct RCPT replies whose verdict, and hosts whose crowding, is remembered.
_MAX_REMEMBERED = 10_000
#: How long a domain's catch-all answer (per MX address) is trusted: domains change set-up.
CATCH_ALL_TTL_S = 3600.0
#: What stands for the recipient in a remembered reply: any address reads the same to classify().
_SOMEONE = "someone@example.test"
_ACCEPTED = Verdict.of(Reason.ACCEPTED)
_NO_SESSION = Answer(Verdict.of(Reason.CONNECTION_FAILED))
_CATCH_ALL = {CatchAllOutcome.ACCEPTS_ALL: True, CatchAllOutcome.REJECTS_UNKNOWN: False}

_Known = tuple[CatchAllOutcome, Verdict]  # the made-up address's outcome and its own verdict
#: Whose catch-all answer: a domain at one MX address (a backup MX may accept everyone).
_Whose = tuple[str, str]


@dataclass(slots=True)
class _Round:
    """One SMTP session's outcome for a batch: answers, and why it stopped early."""

    answers: dict[Job, Answer]
    problem: Answer | None = None  # what the unanswered recipients get if nothing better comes
    move_on: bool = False  # this MX address cannot serve us now: try the next one
    busy: bool = False  # the host said "too many": it is backing off
    paced: bool = False  # the host limits us per time: its window, not a back-off, paces us
    final: bool = False  # the problem is the answer for every recipient left (5xx, blocked)


def mx_addresses(route: MailRoute) -> list[tuple[str, str]]:
    """Return the (MX host, IP address) pairs to dial, best first."""
    return [(host.name, ip) for host in route.hosts for ip in host.addresses]


def best_addresses(route: MailRoute) -> int:
    """Return how many of mx_addresses(route) belong to the most preferred MX hosts."""
    best = route.hosts[0].preference if route.hosts else 0
    return sum(len(host.addresses) for host in route.hosts if host.preference == best)


class SmtpStep:
    """Asks a domain's MX servers about batches of its recipients; one per Verifier.

    Keeps what the verifier's conversations share: the global session cap, each domain's
    catch-all answer, classify()'s verdict per distinct reply, the source address rotation,
    the sessions held per MX address and the hosts that refused our parallel sessions.
    """

    def __init__(self, settings: EngineSettings, *, throttle: HostThrottle) -> None:
        self.settings = settings
        self.throttle = throttle
        self._sessions = asyncio.Semaphore(settings.concurrency)
        smtp = settings.smtp
        self._per_domain = KeyedLimit(smtp.max_sessions_per_domain)
        self._per_registrable = KeyedLimit(smtp.max_sessions_per_registrable_domain)
        suffixes()  # parsed now, not while the first sessions wait for it
        # (domain, MX address) → the made-up address's answer and when it expires; LRU-bounded.
        self._catch_all: OrderedDict[_Whose, tuple[_Known, float]] = OrderedDict()
        self._verdicts: dict[SmtpReply, Verdict] = {}  # RCPT replies without the recipient
        self._open: Counter[str] = Counter()  # MX address → sessions we hold with it now
        self._crowded: set[str] = set()  # MX addresses that refused us while we held others
        sources = settings.smtp.source_addresses
        self._sources = itertools.cycle(sources) if sources else None

    def knows_catch_all(self, route: MailRoute) -> bool:
        """Return True once the domain's catch-all answer at its first MX address is known."""
        _, ip = self._targets(route)[0]
        return self._known(route.domain, ip) is not None

    def session_room(self, route: MailRoute) -> int:
        """Return how many addresses fill the domain's next session on its first MX address."""
        _, ip = self._targets(route)[0]
        made_up = 0 if self._known(route.domain, ip) else 1
        return max(1, self.throttle.rcpt_limit(ip) - made_up)

    def sessions_for(self, route: MailRoute) -> int:
        """Return how many sessions the domain may use at once: its best hosts', within caps."""
        per_host = self.settings.smtp.max_sessions_per_host
        return min(self.settings.smtp.max_sessions_per_domain, best_addresses(route) * per_host)

    def _known(self, domain: str, ip: str) -> _Known | None:
        """Return the domain's catch-all answer at this MX address while it is fresh."""
        entry = self._catch_all.get((domain, ip))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def _remember(self, domain: str, ip: str, known: _Known) -> None:
        """Keep a definite catch-all answer for CATCH_ALL_TTL_S; the oldest go past the bound."""
        self._catch_all[(domain, ip)] = (known, time.monotonic() + CATCH_ALL_TTL_S)
        self._catch_all.move_to_end((domain, ip))
        while len(self._catch_all) > _MAX_REMEMBERED:
            self._catch_all.popitem(last=False)

    def _targets(self, route: MailRoute) -> list[tuple[str, str]]:
        """Return the MX addresses to try in order: the least busy most-preferred one first.

        Hosts of equal preference share the load (RFC 5321 §5.1); a less preferred host is
        only a fallback, asked with its own made-up address (a backup MX may take anyone).
        """
        targets = mx_addresses(route)
        best = best_addresses(route)
        if best > 1:
            first = min(range(best), key=lambda i: self.throttle.load(targets[i][1]))
            targets = targets[first:best] + targets[:first] + targets[best:]
        return targets

    def _budget_s(self, jobs: list[Job], queue: deque[Job] | None) -> float:
        """Return how much longer the oldest of these jobs may wait for a host's pace."""
        oldest = jobs[0] if jobs else (queue[0] if queue else None)
        if oldest is None:
            return self.settings.deferral.max_wait_s
        waited = time.perf_counter() - min(job.started for job in jobs or [oldest])
        return self.settings.deferral.max_wait_s - waited

    async def converse(
        self,
        route: MailRoute,
        jobs: list[Job],
        *,
        made_up: str,
        queue: deque[Job] | None = None,
    ) -> dict[Job, Answer]:
        """Return an answer for every job: sessions over the MX addresses, best first.

        With a queue, the first session also takes as many of its jobs as the host lets one
        session carry, when a session slot is free; they are appended to `jobs`.
        """
        answers: dict[Job, Answer] = {}
        targets = self._targets(route)
        queued = queue
        remaining = jobs
        problem = _NO_SESSION
        index = stalls = busy_rounds = 0
        spent = False  # every back-off round was used and the last MX still said "too many"
        while (remaining or queue is not None) and index < len(targets):
            mx_host, ip = targets[index]
            if (deferred := self._deferred(mx_host, ip, remaining, queue)) is not None:
                # The host's pace would keep these past deferral.max_wait_s: say when to ask.
                problem, index = deferred, index + 1
                continue
            patience = self._budget_s(remaining, queue)
            domain = route.domain
            found = await self._round(
                domain, mx_host, ip, remaining, made_up=made_up, queue=queue, patience=patience
            )
            queue = None  # later sessions carry what this conversation took
            answers.update(found.answers)
            remaining = [job for job in remaining if job not in answers]
            problem = found.problem or problem
            if found.final:
                break
            stalls = 0 if found.answers or found.paced else stalls + 1
            if found.move_on or stalls >= _MAX_STALLS:
                index, stalls = index + 1, 0
            if index == len(targets) and found.busy:
                # Every MX asked us to slow down: go round again; their back-off paces us,
                # and a host that paces us per time is waited for within deferral.max_wait_s.
                spent = busy_rounds == _MAX_BUSY_ROUNDS and not found.paced
                if not spent:
                    index, busy_rounds = 0, busy_rounds + (0 if found.paced else 1)
        if spent:
            problem = self._given_up(problem, targets)
        if queued and not jobs and problem.verdict.reason is Reason.RATE_LIMITED:
            # No session took any of the queue: answer a batch of it, or its worker would spin.
            taken = min(len(queued), self.settings.smtp.max_rcpt_per_session)
            jobs += [queued.popleft() for _ in range(taken)]
            remaining = [job for job in jobs if job not in answers]
        for job in remaining:
            answers[job] = problem
        return answers

    def _deferred(
        self, mx_host: str, ip: str, jobs: list[Job], queue: deque[Job] | None
    ) -> Answer | None:
        """Return the answer for jobs a paced host cannot take within their budget, or None."""
        wait = self.throttle.wait_s(ip)
        if wait <= 0 or wait <= self._budget_s(jobs, queue) or not self.throttle.paced(ip):
            return None
        return _rate_limited(mx_host, wait)

    def _given_up(self, problem: Answer, targets: list[tuple[str, str]]) -> Answer:
        """Return what a batch given up on a busy domain gets: rate_limited when it was us.

        A host that refused our parallel sessions and still says "too many" after every
        back-off is limiting the verifier, not answering for the recipients; a host that
        refuses even a lone session keeps the classifier's verdict, as do blocks of us.
        """
        crowded = any(ip in self._crowded for _, ip in targets)
        if crowded and problem.verdict.reason is Reason.TEMPORARY_FAILURE:
            return replace(problem, verdict=Verdict.of(Reason.RATE_LIMITED))
        return problem

    async def _round(
        self,
        domain: str,
        mx_host: str,
        ip: str,
        jobs: list[Job],
        *,
        made_up: str,
        queue: deque[Job] | None = None,
        patience: float | None = None,
    ) -> _Round:
        """Run one session with one MX address for as many of the jobs as it may carry."""
        try:
            async with self._slot(domain, ip, patience) as slot:
                known = self._known(domain, ip)
                asked = None if known else made_up  # a known catch-all answer is reused
                batch = self._batch(ip, jobs, queue, made_up=asked is not None)
                if not batch:
                    return _Round({})
                session = await self._session(mx_host, ip, batch, made_up=asked)
                paced = False
                if session.refusal is not None and is_too_many_connections(session.refusal[1]):
                    paced = self._one_too_many(slot, ip, session.refusal[1])
        except ProbeError as exc:
            return _Round({}, problem=Answer(_error_verdict(exc), mx_host=mx_host), move_on=True)
        except TooSlow as slow:
            return _Round({}, problem=_rate_limited(mx_host, slow.wait_s), move_on=True)
        judged = self._judge(domain, session, asked, batch, known)
        return replace(judged, paced=True) if paced else judged

    @contextlib.asynccontextmanager
    async def _slot(self, domain: str, ip: str, patience: float | None) -> AsyncIterator[Slot]:
        """Hold the domain's and its registrable domain's slots, then the host's."""
        # Caps first, then the host: a session waiting for a busy host holds nothing another
        # host could use; the global slot is taken only once the host has greeted us.
        async with (
            self._per_domain.hold(domain),
            self._per_registrable.hold(registrable_domain(domain)),
            self.throttle.session(ip, patience_s=patience) as slot,
        ):
            self._open[ip] += 1
            try:
                yield slot
            finally:
                self._open[ip] -= 1
                if not self._open[ip]:
                    del self._open[ip]  # bounded: only hosts with a session open are kept

    def _one_too_many(self, slot: Slot, ip: str, reply: SmtpReply) -> bool:
        """Learn the host's session limit, or pace, from a "too many connections" refusal.

        Return True when it was a limit per time (Postfix anvil's connection rate): alone
        with the host, after other sessions in its window, we are paced, not crowding it.
        """
        if self._open[ip] == 1 and is_rate_limit(reply):
            if self.throttle.learn_session_rate(ip) is not None:
                return True
        # The sessions we hold besides this one are what the host tolerates.
        slot.one_too_many()
        if self._open[ip] > 1:
            # It refused us while we held others: our own pace met its limit.
            if len(self._crowded) >= _MAX_REMEMBERED:
                self._crowded.clear()
            self._crowded.add(ip)
        return False

    def _batch(
        self, ip: str, jobs: list[Job], queue: deque[Job] | None, *, made_up: bool
    ) -> list[Job]:
        """Return the jobs the next session carries, topping `jobs` up from the queue.

        Sized when the session starts, not when the jobs were queued: the host's learned limit
        and the catch-all answer are freshest, and the queue has grown while we waited.
        """
        room = max(1, self.throttle.rcpt_limit(ip) - (1 if made_up else 0))
        while queue and len(jobs) < room:
            jobs.append(queue.popleft())
        return jobs[:room]

    async def _session(
        self, mx_host: str, ip: str, batch: list[Job], *, made_up: str | None
    ) -> Session:
        """Return one conversation asking the made-up address (when given), then each job's."""
        recipients = [made_up] if made_up else []
        recipients += [job.address.normalized for job in batch]
        return await run_session(
            mx_host,
            ip,
            recipients,
            settings=self.settings,
            smtputf8=batch[0].address.smtputf8,
            source_address=next(self._sources) if self._sources else None,
            gate=self._sessions,
        )

    def _judge(
        self,
        domain: str,
        session: Session,
        made_up: str | None,
        batch: list[Job],
        known: _Known | None,
    ) -> _Round:
        """Turn one session's replies into answers, learning the host's limits on the way."""
        base = _session_answer(session)
        if (advertised := rcpt_max(session.ehlo)) is not None:
            self.throttle.learn_rcpt_limit(session.ip, advertised)
        if session.refusal is not None:
            return self._refused(session, base)
        self.throttle.greeted(session.ip)
        replies = dict(session.rcpt_replies)
        limited = [r for r in replies.values() if is_session_limit(r)]
        self.throttle.sent(session.ip, len(replies) - len(limited))
        if limited:
            self._learn_limit(session, limited)
        else:
            self.throttle.succeeded(session.ip)
        if known is None and made_up is not None:
            known = self._made_up_answer(domain, session.ip, made_up, replies.get(made_up))
        answers = {} if known is None else self._answers(batch, replies, base, known)
        problem = None
        if len(answers) < len(batch):
            problem = self._session_problem(session, base, limited)
        # A 421 that blames us ("low reputation ... blocked") is a refusal, not a session size:
        # asking again only digs deeper. A host that limits the first RCPT of a session takes
        # no recipient now: another MX address may.
        blocked = bool(limited) and classify(Stage.RCPT, limited[0]).reason is Reason.BLOCKED
        refused_first = bool(session.rcpt_replies) and is_session_limit(session.rcpt_replies[0][1])
        paced = any(is_rate_limit(reply) for reply in limited)
        return _Round(
            answers,
            problem=problem,
            move_on=refused_first and not paced,
            busy=bool(limited) and not blocked,
            paced=paced,
            final=blocked and problem is not None,
        )

    def _made_up_answer(
        self, domain: str, ip: str, made_up: str, reply: SmtpReply | None
    ) -> _Known | None:
        """Return what the made-up address's reply says of the domain; None: it was not asked.

        A definite answer (catch-all or not) is kept for the domain's later sessions with
        the same MX address.
        """
        if reply is None or is_session_limit(reply):
            return None
        verdict = self._rcpt_verdict(made_up, reply)
        known = (catch_all_outcome(verdict), verdict)
        if known[0] in _CATCH_ALL:
            self._remember(domain, ip, known)
        return known

    def _answers(
        self, batch: list[Job], replies: dict[str, SmtpReply], base: Answer, known: _Known
    ) -> dict[Job, Answer]:
        """Return the answers of the batch's recipients the session judged (limits are not)."""
        outcome, made_up_verdict = known
        answers: dict[Job, Answer] = {}
        for job in batch:
            reply = replies.get(job.address.normalized)
            if reply is None or is_session_limit(reply):
                continue
            verdict = self._rcpt_verdict(job.address.normalized, reply)
            verdict = recipient_verdict(outcome, made_up_verdict, verdict)
            answers[job] = replace(
                base, verdict=verdict, reply=reply, catch_all=_CATCH_ALL.get(outcome)
            )
        return answers

    def _rcpt_verdict(self, recipient: str, reply: SmtpReply) -> Verdict:
        """Return classify()'s verdict on a RCPT reply, once per distinct reply of the run.

        classify() costs up to a millisecond (hundreds of multilingual patterns) and masks
        addresses before it reads a reply, so "550 5.1.1 <ann@x>: User unknown" and the same
        for <bob@x> read alike: keyed without the recipient, thousands of replies are one.
        """
        if 200 <= reply.code < 300:
            return _ACCEPTED
        key = replace(reply, message=reply.message.replace(recipient, _SOMEONE))
        verdict = self._verdicts.get(key)
        if verdict is None:
            if len(self._verdicts) >= _MAX_REMEMBERED:
                self._verdicts.clear()  # distinct replies are few; this only bounds the odd run
            verdict = self._verdicts[key] = classify(Stage.RCPT, key)
        return verdict

    def _refused(self, session: Session, base: Answer) -> _Round:
        """Return the round for a session refused before RCPT (banner, EHLO or MAIL FROM)."""
        assert session.refusal is not None
        stage, reply = session.refusal
        answer = replace(base, verdict=classify(stage, reply), reply=reply)
        if reply.code // 100 == 4:
            # A busy or temporarily failing server: another MX address may serve us.
            busy = reply.code == 421
            if busy and not (is_rate_limit(reply) and self.throttle.paced(session.ip)):
                self.throttle.back_off(session.ip)
            return _Round({}, problem=answer, move_on=True, busy=busy)
        return _Round({}, problem=answer, final=True)

    def _learn_limit(self, session: Session, limited: list[SmtpReply]) -> None:
        """Remember how many recipients the host took before it stopped us; back off if asked.

        Learning the limit keeps the next sessions under it: after "452 too many recipients",
        as many as it answered; after an error limit, one rejection fewer than it allowed, since
        we cannot know which recipients it will reject. Only a limit on our pace (a bare 421,
        "too many connections", rate limits) also backs the host off: a size limit is a count
        to keep under, not a reason to wait (docs/architecture.md, "One address through the
        engine", step 4).
        """
        answered = [r for _, r in session.rcpt_replies if not is_session_limit(r)]
        if any(is_rate_limit(reply) for reply in limited):
            self.throttle.learn_rcpt_rate(session.ip)
            if not answered:  # nothing new in its window: our count is off, back off as well
                self.throttle.back_off(session.ip)
            return
        if any(is_error_limit(reply) for reply in limited):
            refused = sum(1 for reply in answered if reply.code >= 400)
            self.throttle.learn_rcpt_limit(session.ip, max(1, refused - 1))
        elif answered:
            self.throttle.learn_rcpt_limit(session.ip, len(answered))
        if not all(is_size_limit(reply) for reply in limited):
            self.throttle.back_off(session.ip)

    def _session_problem(self, session: Session, base: Answer, limited: list[SmtpReply]) -> Answer:
        """Return what unanswered recipients get if no later session answers them."""
        if session.error is not None:
            answered = len(session.rcpt_replies)
            if answered:
                # Dropped after some recipients (Postfix smtpd_hard_error_limit): ask fewer.
                self.throttle.learn_rcpt_limit(session.ip, answered)
            return replace(base, verdict=_error_verdict(session.error))
        if limited:
            # The reply itself says why (replies.py rule 6: a plain limit is temporary_failure;
            # one justified by our reputation is blocked).
            return replace(base, verdict=classify(Stage.RCPT, limited[0]), reply=limited[0])
        return replace(base, verdict=Verdict.of(Reason.PROTOCOL_ERROR))


def _rate_limited(mx_host: str, wait_s: float) -> Answer:
    """Return what a job gets when its host's pace would keep it past deferral.max_wait_s."""
    # retry_after_s: the daemon asks again when the host's window has room, not blindly.
    return Answer(Verdict.of(Reason.RATE_LIMITED, round(wait_s + 0.5, 1)), mx_host=mx_host)


def _session_answer(session: Session) -> Answer:
    """Return what every recipient of the session shares: host, TLS, software, connected."""
    software = " ".join(str(r) for r in (session.banner, session.ehlo) if r is not None)
    return Answer(
        Verdict.of(Reason.CONNECTION_FAILED),
        mx_host=session.mx_host,
        connected=session.banner is not None,
        tls=session.tls,
        software=software or None,
    )


def _error_verdict(error: ProbeError) -> Verdict:
    """Return the verdict for a conversation that broke: timeouts and drops are not answers."""
    if isinstance(error, ProbeTimeout):
        return Verdict.of(Reason.TIMEOUT)
    if isinstance(error, ProbeConnectError):
        return Verdict.of(Reason.CONNECTION_FAILED)
    return Verdict.of(Reason.PROTOCOL_ERROR)
