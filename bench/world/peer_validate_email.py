"""Run py3-validate-email over a list, one JSON line per address: {"email", "status"}.

Runs with the peer's own venv (`.peer-venv`, made by `bench/accuracy.py --peer`), inside the
world's namespace: py3-validate-email has no resolver setting, it reads /etc/resolv.conf, which
`ip netns exec` replaces with /etc/netns/<namespace>/resolv.conf (the world's DNS).

    python peer_validate_email.py LIST.txt
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from validate_email import validate_email

STATUS = {True: "valid", False: "invalid", None: "unknown"}


def one(email: str) -> str:
    """Its answer as a status: True valid, False invalid, None (ambiguous) unknown; a crash
    (it raises UnicodeDecodeError on a Latin-1 reply) is unknown, with the error beside."""
    try:
        answer = validate_email(
            email,
            check_blacklist=False,
            smtp_helo_host="probe.world.test",
            smtp_from_address="bounce@probe.world.test",
            smtp_timeout=10,
            dns_timeout=5,
        )
    except Exception as error:  # noqa: BLE001 - the peer's crash is a finding, not our failure
        return json.dumps({"email": email, "status": "unknown", "error": repr(error)[:200]})
    return json.dumps({"email": email, "status": STATUS[answer]})


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        emails = handle.read().split()
    with ThreadPoolExecutor(20) as pool:  # the peer is blocking: threads give it concurrency
        for line in pool.map(one, emails):
            print(line, flush=True)
