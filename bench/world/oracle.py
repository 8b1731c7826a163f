"""The independent oracle: confirms each label of the truth file before anyone trusts it.

It shares no code with mailprobe: `dig` answers the DNS facts, Python's smtplib asks each server
about each address. Run inside the world's namespace by world.py:

    python oracle.py TRUTH.jsonl     # prints one JSON line per disagreement; exit 1 if any
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

DNS = "198.18.0.53"
SENDER = "oracle@oracle.test"  # not mailprobe's sender: postgrey still greylists mailprobe
TIMEOUT_S = 3.0
GREY_WAIT_S = 11.0
MAX_WAITS = 9  # 99 s: past one anvil window (60 s)
CHUNK = 15  # RCPTs per session, under Postfix's smtpd_hard_error_limit (20)


def dig(kind: str, name: str) -> tuple[str, list[str]]:
    """Return (rcode, answers) of one query to the world's DNS."""
    out = subprocess.run(
        ["dig", f"@{DNS}", "+time=2", "+tries=2", kind, name], capture_output=True, text=True
    ).stdout
    rcode = out.split("status: ", 1)[1].split(",", 1)[0] if "status: " in out else "NONE"
    return rcode, subprocess.run(
        ["dig", f"@{DNS}", "+short", kind, name], capture_output=True, text=True
    ).stdout.split("\n")[:-1]


def dns_label(domain: str) -> str | None:
    """Return 'invalid' when DNS alone says no mail can be delivered, else None."""
    rcode, mx = dig("MX", domain)
    if rcode == "NXDOMAIN" or mx == ["0 ."]:
        return "invalid"
    if not mx:
        return None if dig("A", domain)[1] else "invalid"
    hosts = [line.split()[1] for line in mx]
    if all(dig("A", h)[1] == ["127.0.0.1"] for h in hosts):
        return "invalid"
    return None


def route(domain: str) -> list[str]:
    """Return the domain's MX addresses in preference order (or its A: implicit MX)."""
    mx = sorted((int(p), h) for p, h in (line.split() for line in dig("MX", domain)[1]))
    hosts = [h for _, h in mx] or [domain]
    return [ip for h in hosts for ip in dig("A", h)[1]]


def ask(ips: list[str], rcpts: list[str]) -> dict[str, str]:
    """Ask the first MX that answers about each address: 'code enhanced' or an error word."""
    for ip in ips:
        try:
            return _session(ip, rcpts)
        except OSError:  # refused or unreachable: the next MX
            continue
    return {r: "refused" for r in rcpts}


def _session(ip: str, rcpts: list[str]) -> dict[str, str]:
    answers: dict[str, str] = {}
    for start in range(0, len(rcpts), CHUNK):
        for attempt in range(30):  # Postfix B's anvil: 421 too many connections, wait it out
            try:
                answers.update(_chunk(ip, rcpts[start : start + CHUNK]))
                break
            except smtplib.SMTPConnectError as error:
                if error.smtp_code != 421 or attempt == 29:
                    raise
                time.sleep(3)
    return answers


def _chunk(ip: str, rcpts: list[str]) -> dict[str, str]:
    answers = {}
    with smtplib.SMTP(ip, 25, local_hostname="oracle.test", timeout=TIMEOUT_S) as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)
        for rcpt in rcpts:
            try:
                code, text = smtp.rcpt(rcpt)
            except TimeoutError:
                return {**answers, **{r: "timeout" for r in rcpts if r not in answers}}
            except smtplib.SMTPServerDisconnected:
                return {**answers, **{r: "dropped" for r in rcpts if r not in answers}}
            answers[rcpt] = f"{code} {text[:6].decode('latin-1')}"
    return answers


def label(answer: str, catch_all: bool) -> str:
    """Map one oracle answer to a status, by RFC 5321/3463 classes only."""
    if answer in ("timeout", "dropped", "refused") or answer.startswith("421"):
        return "unknown"
    code = int(answer[:3])
    if code < 300:
        return "catch_all" if catch_all else "valid"
    if "4.2.2" in answer:
        return "risky"
    return "invalid" if code >= 500 else "unknown"


def check_domain(domain: str, rows: list[dict]) -> list[dict]:
    """Return the rows of one domain whose label the oracle does not confirm."""
    if (verdict := dns_label(domain)) is not None:
        return [dict(r, oracle=verdict) for r in rows if r["status"] != verdict]
    ips = route(domain)
    emails = [r["email"] for r in rows]
    probe = f"zz-made-up-{int(time.time())}@{domain}"
    answers = ask(ips, [probe, *emails])
    for _ in range(MAX_WAITS):  # greylisting and anvil's recipient rate: the later try answers
        pending = [rcpt for rcpt, answer in answers.items() if answer.startswith("450")]
        if not pending:
            break
        time.sleep(GREY_WAIT_S)
        answers.update(ask(ips, pending))
    catch_all = label(answers[probe], False) == "valid"
    wrong = []
    for row in rows:
        got = label(answers[row["email"]], catch_all)
        if got != row["status"]:
            wrong.append(dict(row, oracle=got, answer=answers[row["email"]]))
    return wrong


def main(path: str) -> int:
    by_domain: dict[str, list[dict]] = defaultdict(list)
    with open(path) as handle:
        for line in handle:
            row = json.loads(line)
            by_domain[row["email"].rsplit("@", 1)[1]].append(row)
    with ThreadPoolExecutor(len(by_domain)) as pool:
        results = pool.map(lambda item: check_domain(*item), by_domain.items())
        wrong = [row for rows in results for row in rows]
    for row in wrong:
        print(json.dumps(row))
    total = sum(map(len, by_domain.values()))
    print(f"oracle: {total - len(wrong)}/{total} labels confirmed", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
