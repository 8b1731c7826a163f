"""deploy/: the container image, the compose file and the systemd unit do what they say.

Where a tool is at hand the real thing runs: `systemd-analyze verify` on the unit, the unit's
own ExecStart line as a process, the image's HEALTHCHECK command against a running daemon, and
a podman build and run of the image. Each skips, saying why, where its tool or the base image
is missing (base images cannot be pulled without a registry).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_cli_daemon import Output, clean_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
MAILPROBE = Path(sys.executable).with_name("mailprobe")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the final stage's instructions as (KEYWORD, arguments), continuations joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    final = lines[stages[-1] :]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in final]


def instruction(name: str) -> list[str]:
    return [args for keyword, args in dockerfile_instructions() if keyword == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "mailprobe.service")
    return parser


# -- the image --------------------------------------------------------------------------------


def test_image_runs_as_a_non_root_user_with_a_data_volume() -> None:
    assert instruction("USER") == ["mailprobe"]
    assert json.loads(instruction("VOLUME")[0]) == ["/data"]
    assert instruction("WORKDIR") == ["/data"]  # default store and drop folder land in /data
    assert "useradd --system --uid 10001" in " ".join(instruction("RUN"))


def test_image_is_two_stages_and_keeps_no_build_tools() -> None:
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) == 2
    assert "pip uninstall --yes pip setuptools" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "*.db"} <= set(ignored)


def test_image_healthcheck_command_passes_against_a_running_daemon(tmp_path: Path) -> None:
    """Run the daemon as the image would (its ENV, in an empty /data) and the HEALTHCHECK."""
    healthcheck = instruction("HEALTHCHECK")[0]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    listen = image_env()["MAILPROBE_METRICS__LISTEN"]
    assert f":{listen.rpartition(':')[2]}/healthz" in command[-1]
    env = clean_env(**{k: v for k, v in image_env().items() if k.startswith("MAILPROBE_")})
    env["MAILPROBE_METRICS__LISTEN"] = "127.0.0.1:0"
    process = subprocess.Popen(
        [str(MAILPROBE), *json.loads(instruction("CMD")[0])],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    output = Output(process.stderr)
    try:
        assert output.wait_for("metrics on http://"), output.lines
        line = next(json.loads(x) for x in output.lines if "metrics on http://" in x)
        port = line["message"].split("metrics on http://")[1].split("/")[0].rpartition(":")[2]
        probe = command[-1].replace(":9108/", f":{port}/")
        healthy = subprocess.run([sys.executable, "-c", probe], timeout=30)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert healthy.returncode == 0
    assert (tmp_path / "mailprobe.db").exists() and (tmp_path / "mailprobe-drop" / "inbox").is_dir()


def test_compose_runs_the_daemon_with_data_and_loopback_metrics() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["mailprobe"]
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    assert service["command"] == ["run"]
    assert any(volume.endswith(":/data") for volume in service["volumes"])
    assert service["ports"] == ["127.0.0.1:9108:9108"] and instruction("EXPOSE") == ["9108"]
    assert service["stop_grace_period"] == "60s"


# -- the systemd unit -------------------------------------------------------------------------


def test_systemd_unit_runs_the_daemon_as_its_own_user_and_stops_with_sigterm() -> None:
    service = unit()["Service"]
    assert service["User"] == "mailprobe" and service["KillSignal"] == "SIGTERM"
    assert service["WorkingDirectory"] == "/var/lib/mailprobe"
    assert service["StateDirectory"] == "mailprobe"
    assert service["ExecStart"].endswith(" run")
    assert service["Restart"] == "on-failure"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    text = (DEPLOY / "mailprobe.service").read_text()
    # The venv the README installs is not on this machine: point at this one's script.
    copy = tmp_path / "mailprobe.service"
    copy.write_text(text.replace("/opt/mailprobe/venv/bin/mailprobe", str(MAILPROBE)))

    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr


def test_systemd_exec_start_line_runs_the_daemon(tmp_path: Path) -> None:
    """The unit's ExecStart, with this machine's paths, starts and stops cleanly."""
    config = tmp_path / "etc" / "mailprobe.yaml"
    config.parent.mkdir()
    assert subprocess.run([str(MAILPROBE), "init", str(config)], timeout=60).returncode == 0
    line = unit()["Service"]["ExecStart"]
    line = line.replace("/opt/mailprobe/venv/bin/mailprobe", str(MAILPROBE))
    line = line.replace("/etc/mailprobe/mailprobe.yaml", str(config))
    process = subprocess.Popen(
        shlex.split(line), cwd=tmp_path, env=clean_env(), text=True,
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stderr is not None
    output = Output(process.stderr)
    try:
        assert output.wait_for("mailprobe running"), output.lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert all(json.loads(x)["level"] for x in output.join() if x.startswith("{"))


# -- a real container -------------------------------------------------------------------------

BASE_IMAGE = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE, re.M)[1]  # type: ignore[index]


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def _base_image() -> str:
    """Return the base image to build on: the Dockerfile's, or MAILPROBE_TEST_BASE_IMAGE."""
    return os.environ.get("MAILPROBE_TEST_BASE_IMAGE", BASE_IMAGE)


def _container_runtime_problem() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman)"
    if _podman("image", "exists", _base_image(), timeout=60).returncode != 0:
        return (
            f"base image {_base_image()} is not available locally and no registry can be "
            f"reached here; `podman pull docker.io/library/{BASE_IMAGE}` where one can, or set "
            "MAILPROBE_TEST_BASE_IMAGE to a local image with Python 3.11+"
        )
    return None


def _extra(variable: str) -> list[str]:
    """Return extra podman arguments from the environment (a host's runtime or pip quirks)."""
    return shlex.split(os.environ.get(variable, ""))


def test_image_builds_runs_healthy_verifies_a_dropped_file_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    """podman build (docker format: OCI drops HEALTHCHECK), run on a /data folder, healthcheck,
    a dropped file verified, SIGTERM exit 0. MAILPROBE_TEST_PODMAN_BUILD_ARGS and
    MAILPROBE_TEST_PODMAN_RUN_ARGS pass a host's extra arguments (runtime, pip mirrors)."""
    problem = _container_runtime_problem()
    if problem is not None:
        pytest.skip(problem)
    tag = "localhost/mailprobe-test:latest"
    built = _podman(
        "build", "--format", "docker", "--build-arg", f"PYTHON_IMAGE={_base_image()}",
        *_extra("MAILPROBE_TEST_PODMAN_BUILD_ARGS"),
        "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    data = tmp_path / "data"
    (data / "mailprobe-drop" / "inbox").mkdir(parents=True)
    (data / "mailprobe.yaml").write_text(
        "connectors:\n  drop:\n    type: csv\n    schedule: 2s\n    settle_s: 0\n"
    )
    if os.geteuid() == 0:  # the image's user (10001) owns /data, as the README says
        for path in [data, *data.rglob("*")]:
            os.chown(path, 10001, 10001)
    name = f"mailprobe-test-{os.getpid()}"
    started = _podman(
        "run", "-d", "--name", name, "-v", f"{data}:/data",
        *_extra("MAILPROBE_TEST_PODMAN_RUN_ARGS"), tag,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        _wait_healthy(name)
        (data / "mailprobe-drop" / "inbox" / "list.csv").write_text("email\nnot-an-address\n")
        output = data / "mailprobe-drop" / "outbox" / "list.verified.csv"
        _wait_for_file(output)
        assert "invalid_syntax" in output.read_text()
        stopped = _podman("stop", "-t", "60", name)
        assert stopped.returncode == 0, stopped.stderr
        code = _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        image_user = _podman("inspect", "--format", "{{.Config.User}}", tag).stdout.strip()
        assert code == "0" and image_user == "mailprobe"
        assert (data / "mailprobe.db").stat().st_uid == 10001  # written by the image's user
    finally:
        _podman("rm", "-f", name)


def _wait_healthy(name: str, timeout: float = 120) -> None:
    """Return once the image's HEALTHCHECK passes (podman healthcheck run), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _podman("healthcheck", "run", name, timeout=30).returncode == 0:
            return
        time.sleep(1)  # polling an external process: there is no event to wait on
    pytest.fail(_podman("logs", name).stderr[-3000:])


def _wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the daemon in the container writes it; no event crosses the boundary
    assert path.exists(), f"{path} did not appear"
