"""The running server's lock on its historian file, beside it as `<historian>.lock`.

A running server and `carbonscada restore` each hold an exclusive flock on the lock file
(and write their pid in it): a restore refuses while a server runs, a server does not
start while a restore replaces the file or another server writes it. The kernel drops the lock when
the process ends, however it ends: a killed server leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from model.errors import CarbonScadaError


class HistorianLockedError(CarbonScadaError):
    """The historian file is held by another process (a running server or a restore)."""


def lock_path(historian: Path) -> Path:
    """The lock file of a historian file."""
    return historian.with_name(historian.name + ".lock")


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text(encoding="ascii").strip() or "0")
        if pid:
            return f" (pid {pid})"
    return ""


class HistorianLock:
    """One process's lock on a historian file; `release` (or process end) drops it."""

    def __init__(self, historian: Path) -> None:
        """Take the lock without waiting; HistorianLockedError says who holds it."""
        self.path = lock_path(historian)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise HistorianLockedError(
                f"historian {historian} is held by a running server or a restore"
                f"{_holder(self.path)}: stop it first, or wait for the restore to finish"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode("ascii"))

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
