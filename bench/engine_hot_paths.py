"""Microseconds per call of the engine's two pure hot paths: replies.classify, syntax.parse_address.

classify runs over the rows of shared/corpus/smtp-replies.csv (or, without shared/, over the
built-in REPLIES below), each at its own stage. parse_address runs over 10,000 generated
addresses spread across ~500 domains, the shape of a bulk list: many people per domain, a few
IDN, test and broken domains, odd local parts. Each figure is printed for the first pass over the
inputs (cold: nothing seen before, every domain new) and for the best later pass (warm), because
a per-domain cache pays only from the second address of a domain on.

Run from the repository root: `python bench/engine_hot_paths.py [--passes 5]`.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailprobe.engine import replies, syntax  # noqa: E402
from mailprobe.engine.replies import classify, parse_reply  # noqa: E402
from mailprobe.engine.result import SmtpReply, Stage  # noqa: E402
from mailprobe.engine.syntax import parse_address  # noqa: E402

CORPUS_CSV = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "smtp-replies.csv"

#: (stage, code, text) used when the shared corpus is absent: the common shapes of each rule.
REPLIES: tuple[tuple[str, int, str], ...] = (
    ("rcpt", 250, "2.1.5 OK 1a2b3c4d5e.12 - gsmtp"),
    ("rcpt", 550, "5.1.1 <jane@example.com>: Recipient address rejected: User unknown"),
    ("rcpt", 550, "5.1.1 The email account that you tried to reach does not exist. Please try\n"
                  "5.1.1 double-checking the recipient's email address for typos or\n"
                  "5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser "
                  "a1b2c3d4e5f.6 - gsmtp"),
    ("rcpt", 550, "5.4.1 Recipient address rejected: Access denied. AS(201806281) "
                  "[AM4PEPF00025F97.EURPRD83.prod.outlook.com]"),
    ("rcpt", 550, "Requested action not taken: mailbox unavailable"),
    ("rcpt", 553, "5.1.3 Invalid address"),
    ("rcpt", 552, "5.2.2 The email account that you tried to reach is over quota."),
    ("rcpt", 550, "5.2.1 The email account that you tried to reach is disabled."),
    ("rcpt", 554, "5.7.1 Service unavailable; Client host [192.0.2.10] blocked using "
                  "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.10"),
    ("rcpt", 550, "5.7.1 Sender address rejected: Domain not found"),
    ("rcpt", 550, "5.7.26 Unauthenticated email from example.com is not accepted due to "
                  "domain's DMARC policy."),
    ("rcpt", 554, "5.7.1 Relay access denied"),
    ("rcpt", 450, "4.2.0 <jane@example.com>: Recipient address rejected: Greylisted, see "
                  "http://postgrey.schweikert.ch/help/example.com.html"),
    ("rcpt", 451, "4.7.1 Please try again later"),
    ("rcpt", 421, "4.7.0 Try again later, closing connection. (EHLO)"),
    ("rcpt", 452, "4.5.3 Too many recipients"),
    ("rcpt", 451, "4.3.0 Temporary lookup failure"),
    ("rcpt", 450, "4.2.1 The user you are trying to contact is receiving mail at a rate "
                  "that prevents additional messages from being delivered."),
    ("rcpt", 550, "Benutzer unbekannt"),
    ("rcpt", 550, "Utilisateur inconnu"),
    ("rcpt", 550, "Пользователь не найден"),
    ("rcpt", 550, "#5.1.0 Address rejected jane@example.com"),
    ("rcpt", 501, "5.5.4 Syntax error in parameters or arguments"),
    ("rcpt", 503, "5.5.1 Error: need MAIL command"),
    ("rcpt", 550, "5.7.1 Message rejected due to content restrictions"),
    ("rcpt", 550, "Mailbox unavailable or access denied"),
    ("connect", 554, "mx.example.com ESMTP not accepting messages"),
    ("connect", 421, "mx.example.com Service not available, closing transmission channel"),
    ("ehlo", 550, "5.7.1 Your HELO name is not a fully qualified host name"),
    ("mail", 550, "5.1.8 Bad sender address syntax"),
    ("mail", 553, "5.7.1 Sender address rejected: not owned by user"),
)  # fmt: skip


def corpus_replies() -> list[tuple[Stage, SmtpReply]]:
    """Return the corpus rows as (stage, reply), or the built-in REPLIES without shared/."""
    if not CORPUS_CSV.exists():
        return [(Stage(stage), parse_reply(code, text)) for stage, code, text in REPLIES]
    with CORPUS_CSV.open(newline="", encoding="utf-8") as handle:
        return [
            (
                Stage(row["stage"]),
                parse_reply(int(row["code"]), row["message"].replace("\\n", "\n")),
            )
            for row in csv.DictReader(handle)
        ]


_WORDS = (
    "acme", "globex", "initech", "umbrella", "stark", "wayne", "wonka", "tyrell", "cyberdyne",
    "hooli", "vandelay", "soylent", "gringotts", "oscorp", "aperture", "dunder", "pied",
    "monarch", "nakatomi", "zorg",
)  # fmt: skip
_TLDS = ("com", "net", "org", "de", "co.uk", "io", "fr", "example", "com.au", "nl")
_FIRST = ("jane", "john", "maria", "ahmed", "li", "olga", "pierre", "sven", "aiko", "carlos")
_LAST = ("smith", "doe", "garcia", "khan", "wang", "ivanova", "dupont", "berg", "sato", "silva")


def generated_domains(count: int = 500, *, seed: int = 1) -> list[str]:
    """Return `count` domain parts as people type them: mostly plain, some IDN, test or broken."""
    rng = random.Random(seed)
    domains = []
    for number in range(count):
        word, tld = rng.choice(_WORDS), rng.choice(_TLDS)
        kind = number % 50
        if kind == 0:
            domains.append(f"bücher-{word}{number}.de")  # IDN, U-label
        elif kind == 1:
            domains.append(f"xn--bcher-kva{number}.{tld}")  # A-label as typed
        elif kind == 2:
            domains.append(f"{word}{number}.test")  # special-use unless test domains allowed
        elif kind == 3:
            broken = (
                f"{word}_{number}.com",
                f"-{word}{number}.com",
                f"{word}{number}..com",
                f"{word}{number}.123",
                f"{word}{number}.local",
                f"{'d' * 64}{number}.com",
            )
            domains.append(rng.choice(broken))
        elif kind == 4:
            domains.append(f"{word.upper()}{number}.{tld.upper()}")  # case as typed
        elif kind == 5:
            domains.append(f"例え{number}.jp")
        else:
            domains.append(f"{word}{number}.{tld}")
    return domains


def generated_addresses(count: int = 10_000, *, domains: int = 500, seed: int = 1) -> list[str]:
    """Return `count` addresses over `domains` domains, with some odd or broken local parts."""
    rng = random.Random(seed)
    names = generated_domains(domains, seed=seed)
    addresses = []
    for number in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        kind = number % 40
        if kind == 0:
            local = f"{first}..{last}"  # consecutive dots
        elif kind == 1:
            local = f"{first}+news{number}"
        elif kind == 2:
            local = "jürgen." + last  # SMTPUTF8
        elif kind == 3:
            local = "x" * 65  # over 64 characters
        elif kind == 4:
            local = rng.choice(("Postmaster", "ABUSE", f'"{first} {last}"', f".{first}"))
        elif kind == 5:
            local = f"{first}{number}"
        else:
            local = f"{first}.{last}{rng.randrange(100)}"
        text = f"{local}@{rng.choice(names)}"
        addresses.append(f"  {text} " if kind == 6 else text)
    return addresses


def forget_everything() -> None:
    """Empty the engine's caches (when this version has them), so the next pass is cold."""
    for cached in (getattr(replies, "_reason", None), getattr(syntax, "_checked_domain", None)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def per_call_us(function: Callable[[], object], calls: int, *, passes: int) -> tuple[float, float]:
    """Return µs per call of the first pass (caches empty) and of the fastest later pass."""
    forget_everything()
    timings = []
    for _ in range(passes):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return timings[0], min(timings[1:], default=timings[0])


def _report(name: str, calls: int, figures: Sequence[float]) -> None:
    cold, warm = figures
    print(
        f"{name:<40} {calls:>7} calls   first pass {cold:8.1f} µs/call   best {warm:8.1f} µs/call"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5, help="passes over the inputs")
    passes = parser.parse_args(argv).passes

    replies = corpus_replies()
    refusals = [(stage, reply) for stage, reply in replies if reply.code >= 300]
    source = "corpus" if CORPUS_CSV.exists() else "built-in"
    for name, rows in ((f"classify ({source}, all rows)", replies),
                       (f"classify ({source}, non-2xx rows)", refusals)):  # fmt: skip
        figures = per_call_us(
            lambda rows=rows: [classify(stage, reply) for stage, reply in rows],
            len(rows),
            passes=passes,
        )
        _report(name, len(rows), figures)

    addresses = generated_addresses()
    domains = len({address.strip().rpartition("@")[2] for address in addresses})
    figures = per_call_us(
        lambda: [parse_address(address) for address in addresses], len(addresses), passes=passes
    )
    _report(f"parse_address ({domains} domains)", len(addresses), figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
