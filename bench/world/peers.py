"""Run a peer verifier over a list, one JSON line per address: {"email", "status"}.

Runs with the peer's own venv (`.peer-venvs/<peer>`, made by `bench/accuracy.py --peer`),
inside the world's namespace: neither peer has a resolver setting, both read /etc/resolv.conf,
which `ip netns exec` replaces with /etc/netns/<namespace>/resolv.conf (the world's DNS).

    python peers.py py3-validate-email LIST.txt
    python peers.py validate-email LIST.txt
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

# Both packages install a module named validate_email: one venv each.
from validate_email import validate_email

STATUS = {True: "valid", False: "invalid", None: "unknown"}
HELO, SENDER = "probe.world.test", "bounce@probe.world.test"


def ask(peer: str, email: str) -> bool | None:
    """The peer's own answer: True, False, or None (ambiguous)."""
    if peer == "py3-validate-email":
        return validate_email(
            email, check_blacklist=False, smtp_helo_host=HELO, smtp_from_address=SENDER,
            smtp_timeout=10, dns_timeout=5,
        )  # fmt: skip
    return validate_email(email, check_mx=True, verify=True, smtp_timeout=10)


def one(peer: str, email: str) -> str:
    """Its answer as a status; a crash (py3-validate-email raises UnicodeDecodeError on a
    Latin-1 reply) is unknown, with the error beside."""
    try:
        answer = ask(peer, email)
    except Exception as error:  # noqa: BLE001 - the peer's crash is a finding, not our failure
        return json.dumps({"email": email, "status": "unknown", "error": repr(error)[:200]})
    return json.dumps({"email": email, "status": STATUS[answer]})


if __name__ == "__main__":
    peer, path = sys.argv[1], sys.argv[2]
    with open(path) as handle:
        emails = handle.read().split()
    with ThreadPoolExecutor(20) as pool:  # the peers are blocking: threads give concurrency
        for line in pool.map(lambda email: one(peer, email), emails):
            print(line, flush=True)
