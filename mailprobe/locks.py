"""One pass per connector at a time, across processes: an advisory lock file beside the store.

`mailprobe run` and a `mailprobe sync` started by hand would otherwise work the same queue and
write the same records. The kernel drops a flock when its process dies, so a `kill -9` never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailprobe.engine import MailprobeError


class ConnectorBusy(MailprobeError):
    """Another mailprobe process is running a pass of this connector."""

    def __init__(self, connector: str, lock_path: Path) -> None:
        self.connector = connector
        self.lock_path = lock_path
        super().__init__(connector, str(lock_path))

    def __str__(self) -> str:
        return (
            f"{self.connector}: another mailprobe process is running a pass of this connector "
            f"(lock {self.lock_path}); this pass was skipped"
        )


def lock_path(store_path: Path, connector: str) -> Path:
    """Return the lock file of one connector of one store."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in connector)
    return store_path.with_name(f"{store_path.name}.{safe}.lock")


@contextmanager
def pass_lock(store_path: Path, connector: str) -> Iterator[None]:
    """Hold the connector's pass lock, or raise ConnectorBusy at once when another has it."""
    path = lock_path(store_path, connector)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConnectorBusy(connector, path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
