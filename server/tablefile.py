"""A table of its own in the historian's SQLite file, reached by short-lived connections.

The user store and the audit log are written by the server and by the CLI at the same
time; a connection per call (WAL, 5 s busy timeout) lets threads and processes share
the file without a long-lived connection of either.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from model.errors import CarbonScadaError


class TableFile:
    """One SQLite file with `schema` applied; errors as `error`, naming `what` and the file."""

    def __init__(self, path: str | Path, schema: str, what: str,
                 error: type[CarbonScadaError]) -> None:
        self.path = Path(path)
        self.what = what
        self.error = error
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            raise error(f"{what} {self.path}: cannot create directory "
                        f"{self.path.parent}: {why}") from None
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode for one call; SQLite errors as `error`."""
        try:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self.error(f"{self.what} {self.path}: cannot open: {exc}") from None
        try:
            yield db
        except sqlite3.Error as exc:
            raise self.error(f"{self.what} {self.path}: {exc}") from None
        finally:
            db.close()
