"""Accuracy against a labelled mail world of real mail software: mailprobe, and its peers.

Brings up bench/world (root on Debian: a network namespace with NSD, two Postfix instances,
postgrey, scripted mimics), has the oracle confirm every label, then runs the real CLI,
`mailprobe verify --file list.txt --format jsonl --quiet`, inside the namespace with a config
pointed at the world, and prints the confusion matrix (truth rows, answer columns), accuracy on
definite answers (every answer but unknown), overall accuracy, dangerous errors (a deliverable
address called invalid, an undeliverable one called valid), wall time, and whether every output
line is valid JSON. Exit status 1 when a target is missed: definite accuracy >= 99.5 %,
0 dangerous errors, every line JSON.

    python bench/accuracy.py            # the whole world (~500 addresses)
    python bench/accuracy.py --slice    # the slice CI runs
    python bench/accuracy.py --peer     # also py3-validate-email, validate-email (own venvs)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "world"))

from world import CANARY, DNS_IP, NET, Sizes, World, can_run, stop_on_sigterm  # noqa: E402

STATUSES = ("valid", "invalid", "catch_all", "risky", "unknown")
PEER_VENVS = ROOT / ".peer-venvs"
#: Open-source verifiers that ask the server (SMTP RCPT), with what pip installs for each.
PEERS = {
    "py3-validate-email": ["py3-validate-email"],
    "validate-email": ["validate-email", "py3dns"],
}
TARGET_DEFINITE = 0.995


def mailprobe_env(command_timeout_s: float = 10.0) -> dict[str, str]:
    """Settings pointing mailprobe at the world: its DNS, its addresses, its canary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROBE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        MAILPROBE_ENGINE__HELO_HOSTNAME="probe.world.test",
        MAILPROBE_ENGINE__MAIL_FROM="bounce@probe.world.test",
        MAILPROBE_ENGINE__DNS__NAMESERVERS=json.dumps([DNS_IP]),
        MAILPROBE_ENGINE__DNS__CANARIES=json.dumps([CANARY]),
        MAILPROBE_ENGINE__DNS__NXDOMAIN_ZONE="test",
        MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS=json.dumps([f"{NET}.0/24"]),
        MAILPROBE_ENGINE__SMTP__CONNECT_TIMEOUT_S="5",
        MAILPROBE_ENGINE__SMTP__GREETING_TIMEOUT_S="10",
        MAILPROBE_ENGINE__SMTP__COMMAND_TIMEOUT_S=str(command_timeout_s),
        MAILPROBE_ENGINE__GREYLIST__RETRY_DELAYS_S="[12]",
        MAILPROBE_ENGINE__GREYLIST__MAX_WAIT_S="60",
        MAILPROBE_ENGINE__SYNTAX__ALLOW_TEST_DOMAINS="true",
        MAILPROBE_LOG__LEVEL="WARNING",
    )
    return env


@dataclass(frozen=True, slots=True)
class Run:
    """One verifier's answers over the list."""

    name: str
    answers: dict[str, str]  # email -> status
    bad_lines: int  # output lines that are not JSON objects with email and status
    wall_s: float
    tls: int = 0  # answers whose SMTP session ran over STARTTLS (mailprobe's checks.smtp.tls)


def run_in_world(world: World, name: str, argv: list[str], workdir: Path, env=None) -> Run:
    """Run one verifier inside the namespace; parse its JSON lines."""
    started = time.perf_counter()
    done = subprocess.run(
        ["ip", "netns", "exec", world.ns, *argv],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall_s = time.perf_counter() - started
    if done.returncode:
        print(f"{name} exited {done.returncode}: {done.stderr[-600:]}", file=sys.stderr)
    answers, bad, tls = {}, 0, 0
    for line in done.stdout.splitlines():
        try:
            item = json.loads(line)
            answers[item["email"]] = item["status"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        tls += bool(((item.get("checks") or {}).get("smtp") or {}).get("tls"))
    return Run(name, answers, bad, wall_s, tls)


def mailprobe_argv() -> list[str]:
    script = Path(sys.executable).with_name("mailprobe")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "mailprobe.cli"]
    return [*base, "verify", "--file", "list.txt", "--format", "jsonl", "--quiet"]


def peer_argv(peer: str) -> list[str]:
    """A peer's runner, in its own venv (made here once: our deps stay ours)."""
    venv = PEER_VENVS / peer
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = [str(python), "-m", "pip", "install", "-q", *PEERS[peer]]
        subprocess.run(install, check=True)
    return [str(python), str(ROOT / "bench" / "world" / "peers.py"), peer, "list.txt"]


@dataclass(frozen=True, slots=True)
class Score:
    """A run scored against the truth."""

    matrix: Counter  # (truth, answer) -> count
    total: int
    correct: int
    definite: int
    definite_correct: int
    dangerous: list[tuple[str, str, str]]  # (email, truth, answer)
    missing: int

    @property
    def definite_accuracy(self) -> float:
        return self.definite_correct / self.definite if self.definite else 0.0


def score(truth: dict[str, str], run: Run) -> Score:
    matrix: Counter = Counter()
    dangerous = []
    for email, expected in truth.items():
        got = run.answers.get(email, "missing")
        matrix[expected, got] += 1
        if (expected == "valid" and got == "invalid") or (
            expected == "invalid" and got in ("valid", "catch_all")
        ):
            dangerous.append((email, expected, got))
    definite = [
        (t, a) for (t, a), n in matrix.items() for _ in range(n) if a not in ("unknown", "missing")
    ]
    return Score(
        matrix=matrix,
        total=len(truth),
        correct=sum(n for (t, a), n in matrix.items() if t == a),
        definite=len(definite),
        definite_correct=sum(1 for t, a in definite if t == a),
        dangerous=dangerous,
        missing=sum(n for (t, a), n in matrix.items() if a == "missing"),
    )


def report(run: Run, result: Score) -> bool:
    """Print one verifier's figures; return True when every target is met."""
    columns = [*STATUSES, "missing"]
    print(f"\n== {run.name}: {result.total} addresses, wall time {run.wall_s:.1f} s")
    print("truth \\ answer " + "".join(f"{c:>10}" for c in columns))
    for expected in STATUSES:
        row = [result.matrix[expected, c] for c in columns]
        if any(row):
            print(f"{expected:<15}" + "".join(f"{n:>10}" for n in row))
    print(
        f"definite accuracy: {result.definite_accuracy:.2%} "
        f"({result.definite_correct}/{result.definite} answers other than unknown)"
    )
    print(
        f"overall accuracy:  {result.correct / result.total:.2%} ({result.correct}/{result.total})"
    )
    print(f"dangerous errors:  {len(result.dangerous)}")
    for email, expected, got in result.dangerous[:20]:
        print(f"    {email}: truth {expected}, answered {got}")
    print(f"output lines not JSON: {run.bad_lines}; addresses with no answer: {result.missing}")
    if run.tls:
        print(f"answers from a session over STARTTLS: {run.tls}")
    return (
        result.definite_accuracy >= TARGET_DEFINITE
        and not result.dangerous
        and run.bad_lines == 0
        and result.missing == 0
    )


def wrong_answers(truth: dict[str, str], run: Run) -> list[str]:
    return [
        f"{e}: truth {t}, answered {run.answers.get(e, 'missing')}"
        for e, t in truth.items()
        if run.answers.get(e) != t
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", action="store_true", help="the small slice CI runs")
    parser.add_argument("--peer", action="store_true", help="also run the peers (PEERS)")
    parser.add_argument("--show-wrong", action="store_true", help="list every wrong answer")
    args = parser.parse_args(argv)
    if reason := can_run():
        print(f"cannot bring up the world: {reason}", file=sys.stderr)
        return 2
    stop_on_sigterm()
    timeout_s = 5.0 if args.slice else 10.0  # the slice meets the tarpit sooner
    with tempfile.TemporaryDirectory(prefix="mailprobe-accuracy-") as tmp:
        workdir = Path(tmp)
        with World.up(workdir / "world", Sizes.of(args.slice)) as world:
            world.confirm()
            truth = {row.email: row.status for row in world.rows}
            emails = list(truth)
            random.Random(16).shuffle(emails)
            (workdir / "list.txt").write_text("\n".join(emails) + "\n")
            print(
                f"world {world.ns}: {len(truth)} addresses, every label confirmed by the "
                f"oracle (dig, smtplib): {dict(Counter(truth.values()))}"
            )
            runs = [
                run_in_world(
                    world, "mailprobe", mailprobe_argv(), workdir, mailprobe_env(timeout_s)
                )
            ]
            if args.peer:
                runs += [run_in_world(world, p, peer_argv(p), workdir) for p in PEERS]
    met = True
    for index, run in enumerate(runs):
        ok = report(run, score(truth, run))
        met = met and (ok or index > 0)  # the targets are ours; peers are printed beside
        if args.show_wrong:
            print("\n".join(f"    {line}" for line in wrong_answers(truth, run)))
    print(
        f"\ntargets (definite >= {TARGET_DEFINITE:.1%}, 0 dangerous, all JSON): "
        f"{'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
