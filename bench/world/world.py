"""A labelled mail world in a network namespace: real DNS, real Postfix, postgrey, mimics.

Run as root on Debian with `apt-get install postfix postgrey nsd dnsutils swaks openssl`
(under a policy-rc.d that forbids starts: none of them runs as a host service). Everything lives
in a fresh network namespace whose own loopback also holds 198.18.0.0/24 (the benchmarking
range, RFC 2544; an MX on 127.0.0.1 thus stays unroutable for the verifier): nothing started here
is reachable from the host or beyond, and the host's own mail and DNS services are never touched.
Every daemon gets its own config and spool under a temp dir.

    python bench/world/world.py up            # bring it up, print the truth, hold until Ctrl-C
    python bench/world/world.py up --slice    # the small slice CI runs

Who answers what (addresses inside the namespace):
    198.18.0.53  NSD, authoritative for `test.` (every world domain, NXDOMAIN for the rest)
    198.18.0.1   Postfix "A": virtual mailboxes, catch-all, postgrey, STARTTLS (self-signed)
    198.18.0.2   Postfix "B": Exim-style reply texts, anvil limits (1 connection; a minute:
                 4 connections, 40 recipients)
    198.18.0.10+ mimics.py: Gmail/Microsoft texts, Latin-1 replies, slow drip, tarpit, drop
    198.18.0.99  nothing listens (a dead MX)

Exim is not used: Debian's exim4 binary (run from the unpacked .deb) looks up the user
`Debian-exim` at start, whatever its config says (exim_user does not help), and creating that user
would change the host; Postfix "B" stands in with replies from an access map in Exim's words.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
NET = "198.18.0"
DNS_IP = f"{NET}.53"
PF_A, PF_B = f"{NET}.1", f"{NET}.2"
MIMIC_IPS = {"gmail": 10, "microsoft": 11, "latin1": 12, "slowdrip": 13, "tarpit": 14, "drop": 15}
DEAD_IP = f"{NET}.99"
GREY_DELAY_S = 10
CANARY = "canary.test"


@dataclass(frozen=True, slots=True)
class Truth:
    """One labelled address: what a correct verifier answers, and why."""

    email: str
    status: str  # valid | invalid | catch_all | risky | unknown
    why: str


FIRST = "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert"
LAST = "smith jones brown taylor wilson evans thomas roberts walker wright"


def people(count: int, seed: int = 0) -> list[str]:
    """Return `count` distinct personal local parts (never role words)."""
    firsts, lasts = FIRST.split(), LAST.split()
    names = [f"{f}.{last}" for last in lasts for f in firsts]
    return [names[(i * 7 + seed) % len(names)] for i in range(count)]


def strangers(count: int, seed: int) -> list[str]:
    """Return `count` local parts no mailbox has."""
    return [f"{name}.x{seed}{i}" for i, name in enumerate(people(count, seed + 3))]


@dataclass(frozen=True, slots=True)
class Sizes:
    """Addresses per category: the full world, or the slice CI runs."""

    mailbox: int  # valid and invalid per ordinary mailbox domain
    small: int  # per special case

    @classmethod
    def of(cls, slice_: bool) -> Sizes:
        return cls(2, 1) if slice_ else cls(60, 8)


def truth(sizes: Sizes) -> tuple[list[Truth], dict[str, list[str]]]:
    """Return the labelled addresses and each server's mailbox list (address -> exists)."""
    rows: list[Truth] = []
    boxes: dict[str, list[str]] = {"A": [], "B": [], **{k: [] for k in MIMIC_IPS}}

    def mailbox_domain(domain: str, server: str, count: int, why: str, seed: int) -> None:
        for local in people(count, seed):
            boxes[server].append(f"{local}@{domain}")
            rows.append(Truth(f"{local}@{domain}", "valid", f"mailbox on {why}"))
        for local in strangers(count, seed):
            rows.append(Truth(f"{local}@{domain}", "invalid", f"no such mailbox on {why}"))

    m, s = sizes.mailbox, sizes.small
    mailbox_domain("pf.test", "A", m, "Postfix virtual, STARTTLS", 1)
    mailbox_domain("implicit.test", "A", s, "Postfix via implicit MX (A record only)", 2)
    mailbox_domain("backup.test", "A", s, "Postfix backup MX (primary MX dead)", 3)
    mailbox_domain("grey.test", "A", s, f"Postfix behind postgrey ({GREY_DELAY_S} s)", 4)
    mailbox_domain("other.test", "B", m // 2 or 1, "Postfix B, Exim texts, anvil limits", 5)
    mailbox_domain("gstyle.test", "gmail", m // 2 or 1, "Gmail-style mimic", 6)
    mailbox_domain("mstyle.test", "microsoft", m // 2 or 1, "Microsoft-style mimic", 7)
    mailbox_domain("latin.test", "latin1", s, "mimic replying in Latin-1", 8)
    mailbox_domain("slow.test", "slowdrip", s, "mimic answering after 2 s each", 9)
    rows += [Truth(f"{u}@catch.test", "catch_all", "Postfix catch-all") for u in people(s * 2)]
    rows += [
        Truth("disabled@other.test", "invalid", "550 5.2.1 mailbox disabled (Postfix B)"),
        Truth("full@other.test", "risky", "452 4.2.2 mailbox full (Postfix B)"),
    ]
    for domain, status, why in (
        ("nullmx.test", "invalid", "null MX (RFC 7505)"),
        ("nomail.test", "invalid", "no MX and no address record"),
        ("gone.test", "invalid", "NXDOMAIN"),
        ("loopmx.test", "invalid", "MX on 127.0.0.1"),
        ("tarpit.test", "unknown", "tarpit: RCPT never answered"),
        ("drop.test", "unknown", "session dropped after RCPT"),
        ("dead.test", "unknown", "the only MX refuses connections"),
    ):
        rows += [Truth(f"{u}@{domain}", status, why) for u in people(max(1, s // 2), 11)]
    boxes["A"] += ["@catch.test"]
    return rows, boxes


def zone() -> str:
    """Return the zone file of `test.`: every world domain's mail route."""

    def mx(domain: str, host: str, ip: str) -> str:
        return f"{domain}. MX 10 {host}.\n{host}. A {ip}\n"

    return (
        "$TTL 300\n"
        "test. SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n"
        f"test. NS ns.test.\nns.test. A {DNS_IP}\n{CANARY}. A {PF_A}\n"
        + mx("pf.test", "mx1.pf.test", PF_A)
        + f"implicit.test. A {PF_A}\n"
        + mx("catch.test", "mx.catch.test", PF_A)
        + mx("grey.test", "mx.grey.test", PF_A)
        + f"backup.test. MX 10 mx-dead.backup.test.\nmx-dead.backup.test. A {DEAD_IP}\n"
        + "backup.test. MX 20 mx1.pf.test.\n"
        + mx("other.test", "mx.other.test", PF_B)
        + "".join(
            mx(d, f"mx.{d}", f"{NET}.{MIMIC_IPS[k]}")
            for d, k in (
                ("gstyle.test", "gmail"),
                ("mstyle.test", "microsoft"),
                ("latin.test", "latin1"),
                ("slow.test", "slowdrip"),
                ("tarpit.test", "tarpit"),
                ("drop.test", "drop"),
            )
        )
        + mx("dead.test", "mx.dead.test", DEAD_IP)
        + "nullmx.test. MX 0 .\n"
        + 'nomail.test. TXT "v=spf1 -all"\n'
        + mx("loopmx.test", "lo.loopmx.test", "127.0.0.1")
    )


NSD_CONF = """server:
  ip-address: {ip}
  port: 53
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: test
  zonefile: test.zone
"""

POSTFIX_COMMON = """compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = /dev/stdout
inet_interfaces = {ip}
inet_protocols = ipv4
myhostname = {host}
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtpd_banner = $myhostname ESMTP
virtual_mailbox_base = {d}/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_mailbox_maps = texthash:{d}/conf/mailboxes
"""

POSTFIX_A = """virtual_mailbox_domains = pf.test implicit.test catch.test backup.test grey.test
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_restriction_classes = greylist
greylist = check_policy_service inet:127.0.0.1:10023
smtpd_recipient_restrictions = reject_unauth_destination,
    check_recipient_access texthash:{d}/conf/greydomains
"""

# Replies from an access map, in Exim's words; Postfix adds "Recipient address rejected:".
POSTFIX_B = """virtual_mailbox_domains = other.test
smtpd_recipient_restrictions = reject_unauth_destination,
    check_recipient_access texthash:{d}/conf/special
smtpd_client_connection_count_limit = 1
smtpd_client_connection_rate_limit = 4
smtpd_client_recipient_rate_limit = 40
anvil_rate_time_unit = 60s
"""


def special_b(boxes: list[str]) -> str:
    """Postfix B's access map: known mailboxes pass, two special ones, everyone else Exim's 550."""
    return (
        "".join(f"{b} OK\n" for b in boxes)
        + "disabled@other.test 550 5.2.1 <disabled@other.test>: mailbox disabled\n"
        + "full@other.test 452 4.2.2 <full@other.test>: mailbox full, over quota\n"
        + "other.test 550 5.1.1 Unrouteable address\n"
    )


class World:
    """The namespace and its daemons: `with World.up(dir, sizes) as world:` tears it all down."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root, self.sizes = root, sizes
        root.mkdir(parents=True, exist_ok=True)
        for folder in (root, *root.parents):  # the daemons' users must reach their dirs
            if str(folder).startswith(tempfile.gettempdir() + "/"):
                folder.chmod(0o755)
        self.ns = f"mpworld{os.getpid()}"
        self.rows, self.boxes = truth(sizes)
        self.children: list[subprocess.Popen] = []

    @classmethod
    @contextmanager
    def up(cls, root: Path, sizes: Sizes) -> Iterator[World]:
        world = cls(root, sizes)
        try:
            world.start()
            yield world
        finally:
            world.stop()

    def run(self, *argv: str) -> str:
        """Run a command inside the namespace; its output, or an error that quotes it."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)[:80]}: {(done.stderr + done.stdout)[-800:]}")
        return done.stdout

    def spawn(self, *argv: str, log: str) -> subprocess.Popen:
        out = open(self.root / log, "w")  # noqa: SIM115 - the child owns it for its life
        child = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], stdout=out, stderr=subprocess.STDOUT
        )
        self.children.append(child)
        return child

    def start(self) -> None:
        _become_subreaper()
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        resolv = Path("/etc/netns") / self.ns
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text(f"nameserver {DNS_IP}\n")
        self.run("ip", "link", "set", "lo", "up")
        for host in (1, 2, 53, 99, *MIMIC_IPS.values()):
            self.run("ip", "addr", "add", f"{NET}.{host}/32", "dev", "lo")
        self._nsd()
        self._postgrey()
        self._postfix("a", PF_A, "mx1.pf.test", POSTFIX_A, "\n".join(self.boxes["A"]))
        self._postfix("b", PF_B, "mx.other.test", POSTFIX_B, "\n".join(self.boxes["B"]))
        self._mimics()
        self._wait_ready()

    def _nsd(self) -> None:
        d = self.root / "nsd"
        d.mkdir()
        (d / "test.zone").write_text(zone())
        (d / "nsd.conf").write_text(NSD_CONF.format(ip=DNS_IP, d=d))
        self.spawn("nsd", "-d", "-c", str(d / "nsd.conf"), log="nsd.out")

    def _postgrey(self) -> None:
        d = self.root / "postgrey"
        d.mkdir()
        shutil.chown(d, "postgrey", "postgrey")
        self.spawn(
            "postgrey",
            "--inet=127.0.0.1:10023",
            f"--delay={GREY_DELAY_S}",
            f"--dbdir={d}",
            "--auto-whitelist-clients=0",
            "--user=postgrey",
            "--group=postgrey",
            log="postgrey.out",
        )

    def _postfix(self, name: str, ip: str, host: str, extra: str, boxes: str) -> None:
        d = self.root / f"postfix-{name}"
        (d / "conf").mkdir(parents=True)
        for sub in ("mail", "queue", "data"):
            (d / sub).mkdir()
        shutil.chown(d / "mail", 65534, 65534)
        shutil.chown(d / "data", "postfix")
        main = POSTFIX_COMMON.format(d=d, ip=ip, host=host) + extra.format(d=d)
        (d / "conf" / "main.cf").write_text(main)
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        master = "\n".join(_no_chroot(line) for line in master.splitlines())
        (d / "conf" / "master.cf").write_text(master + "\n")
        (d / "conf" / "mailboxes").write_text(
            "".join(f"{b} {b.replace('@', '/')}/\n" for b in boxes.split())
        )
        (d / "conf" / "greydomains").write_text("grey.test greylist\n")
        (d / "conf" / "special").write_text(special_b(self.boxes["B"]))
        if name == "a":
            _self_signed(d, host)
        self.run("postfix", "-c", str(d / "conf"), "check")
        self.spawn("postfix", "-c", str(d / "conf"), "start-fg", log=f"postfix-{name}.out")
        self.postfix_dirs = [*getattr(self, "postfix_dirs", []), d]

    def _mimics(self) -> None:
        spec = [
            {"kind": kind, "host": f"{NET}.{n}", "users": self.boxes[kind]}
            for kind, n in MIMIC_IPS.items()
        ]
        path = self.root / "mimics.json"
        path.write_text(json.dumps(spec))
        self.spawn(sys.executable, str(HERE / "mimics.py"), str(path), log="mimics.out")

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until DNS answers and every SMTP server gives its banner."""
        probe = (
            "import socket,sys\n"
            "for ip in sys.argv[1:]:\n"
            "    s = socket.create_connection((ip, 25), 5); s.recv(100); s.close()\n"
        )
        ips = [PF_A, PF_B, *(f"{NET}.{n}" for n in MIMIC_IPS.values())]
        deadline = time.monotonic() + timeout_s
        while True:
            dig = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    "dig",
                    "+short",
                    "+time=1",
                    "+tries=1",
                    f"@{DNS_IP}",
                    CANARY,
                ],
                capture_output=True,
                text=True,
            )
            smtp = subprocess.run(
                ["ip", "netns", "exec", self.ns, sys.executable, "-c", probe, *ips],
                capture_output=True,
            )
            if dig.stdout.strip() == PF_A and smtp.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"world not ready: dig={dig.stdout!r} {smtp.stderr[-300:]!r}")
            time.sleep(0.5)  # polling daemons started elsewhere: there is no event to wait on

    def stop(self) -> None:
        """Stop every process inside the namespace, then delete it (safe to call twice)."""
        for d in getattr(self, "postfix_dirs", []):
            with suppress(Exception):
                subprocess.run(
                    ["ip", "netns", "exec", self.ns, "postfix", "-c", str(d / "conf"), "stop"],
                    capture_output=True,
                    timeout=15,
                )
        for child in self.children:
            with suppress(ProcessLookupError):
                child.terminate()
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for child in self.children:
            with suppress(subprocess.TimeoutExpired):
                child.wait(5)
        _reap_orphans()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / self.ns, ignore_errors=True)

    def write_truth(self, path: Path) -> None:
        path.write_text("".join(json.dumps(asdict(row)) + "\n" for row in self.rows))

    def confirm(self) -> Path:
        """Write the truth file and have the oracle confirm every label; raise if it does not."""
        path = self.root / "truth.jsonl"
        self.write_truth(path)
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, str(HERE / "oracle.py"), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(
                f"the oracle disagrees with the truth file:\n{done.stdout[-3000:]}"
                f"{done.stderr[-1000:]}"
            )
        return path


def _become_subreaper() -> None:
    """Adopt the daemons' orphans (Postfix and NSD fork workers), so stop() can reap them
    instead of leaving zombies behind."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans() -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            time.sleep(0.05)


def _no_chroot(line: str) -> str:
    """Turn a master.cf service line's chroot column to n: the spools live in a temp dir."""
    fields = line.split()
    if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#"):
        fields[4] = "n"
        return " ".join(fields)
    return line


def _self_signed(d: Path, host: str) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so `World.up` tears the world down on either."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def remove_namespace(name: str) -> None:
    """Kill what runs in one of our namespaces and delete it: the last resort of a failed run."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def can_run() -> str | None:
    """Return why this machine cannot bring up the world, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, daemons)"
    missing = [
        t for t in ("ip", "nsd", "postfix", "postgrey", "dig", "openssl") if shutil.which(t) is None
    ]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install postfix postgrey nsd dnsutils"
    probe = subprocess.run(["ip", "netns", "add", f"mpcheck{os.getpid()}"], capture_output=True)
    if probe.returncode:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()[:120]}"
    subprocess.run(["ip", "netns", "del", f"mpcheck{os.getpid()}"], capture_output=True)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up"])
    parser.add_argument("--slice", action="store_true", help="the small slice CI runs")
    parser.add_argument("--truth", type=Path, help="also copy the truth file here")
    args = parser.parse_args()
    if reason := can_run():
        sys.exit(f"cannot bring up the world: {reason}")
    stop_on_sigterm()
    with (
        tempfile.TemporaryDirectory(prefix="mailworld-") as tmp,
        World.up(Path(tmp), Sizes.of(args.slice)) as world,
    ):
        path = world.confirm()
        print(f"namespace {world.ns}, {len(world.rows)} addresses confirmed, truth in {path}")
        sample = next(row.email for row in world.rows if row.status == "valid")
        print(f"try: ip netns exec {world.ns} swaks --server {PF_A} --to {sample} -q RCPT")
        if args.truth:
            shutil.copy(path, args.truth)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
