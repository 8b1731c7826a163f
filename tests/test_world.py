"""A slice of the labelled mail world (bench/world): real NSD, Postfix and postgrey.

Runs `bench/accuracy.py --slice`: the world comes up in its own network namespace, the oracle
confirms every label, then `mailprobe verify` must answer every address right. Needs root, the
Debian packages (postfix postgrey nsd dnsutils openssl) and network namespaces; skips, saying
which is missing, otherwise. Whatever happens, no namespace or process of the world stays behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "world"))

from world import can_run, remove_namespace  # noqa: E402

REASON = can_run()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"mail world: {REASON}")


def _world_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("mpworld")}


def _run_slice(timeout_s: float) -> tuple[int, str]:
    """Run the slice; past timeout_s, SIGTERM it (it tears the world down) and fail."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "accuracy.py"), "--slice", "--show-wrong"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        out, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=20)
        pytest.fail(f"the world slice took over {timeout_s} s:\n{out[-3000:]}")
    return child.returncode, out


@pytest.mark.timeout(115)
def test_mailprobe_answers_every_address_of_the_world_slice_right() -> None:
    before = _world_namespaces()
    try:
        code, out = _run_slice(timeout_s=85)
    finally:
        left = _world_namespaces() - before
        for name in left:
            remove_namespace(name)
        assert not left, f"the world left {left} behind"
    assert code == 0, out[-4000:]
    assert "overall accuracy:  100.00%" in out, out[-3000:]
    assert "dangerous errors:  0" in out
    assert "output lines not JSON: 0; addresses with no answer: 0" in out
