"""Web login accounts: names, roles and scrypt password hashes in the historian's file.

Every call opens its own short-lived SQLite connection, so one `UserStore` may be used
from any thread (e.g. through `asyncio.to_thread`) and by several processes at once.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from model.accounts import ROLES, User
from model.errors import UserError
from server.tablefile import TableFile

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MIN_PASSWORD = 8
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
# scrypt needs 128·n·r bytes; allow what any stored hash may reasonably ask for.
_SCRYPT_MAXMEM = 256 * 1024 * 1024

# Names compare without regard to case: "Alice" and "alice" are one account.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  name TEXT NOT NULL COLLATE NOCASE PRIMARY KEY, role TEXT NOT NULL,
  password TEXT NOT NULL, created_ms INTEGER NOT NULL, changed_ms INTEGER NOT NULL);
"""


def hash_password(password: str) -> str:
    """The scrypt hash of a password: `scrypt$16384$8$1$<salt b64>$<key b64>`."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                         p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=_KEY_BYTES)
    return (f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}")


def check_password(password: str, encoded: str) -> bool:
    """Whether `password` matches an encoding made by `hash_password` (False if malformed)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
        if not key or not 1 < n <= 2**20 or not 1 <= r <= 64 or not 1 <= p <= 16:
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                             maxmem=_SCRYPT_MAXMEM, dklen=len(key))
    except (ValueError, MemoryError):  # binascii.Error is a ValueError
        return False
    return hmac.compare_digest(got, key)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, so they cost as much as known ones."""
    return hash_password(secrets.token_urlsafe(16))


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _user(row: tuple[str, str, int, int]) -> User:
    name, role, created_ms, changed_ms = row
    return User(name, role, datetime.fromtimestamp(created_ms / 1000, UTC),
                datetime.fromtimestamp(changed_ms / 1000, UTC))


class UserStore:
    """The `users` table of one SQLite file (created with its directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        self._file = TableFile(path, _SCHEMA, "user store", UserError)
        self.path = self._file.path
        self._db = self._file.connect

    def add(self, name: str, role: str, password: str) -> User:
        """Create an account; refuses a bad name, unknown role, short password or duplicate."""
        if not _NAME.fullmatch(name):
            raise UserError(f"user {name!r}: a name starts with a letter and holds only "
                            "letters, digits, '_', '.' and '-', at most 64 characters")
        self._check_role(name, role)
        self._check_password(name, password)
        encoded = hash_password(password)
        now = _ms(datetime.now(UTC))
        with self._db() as db:
            old = db.execute("SELECT name FROM users WHERE name = ?", (name,)).fetchone()
            if old is not None:
                same = "" if old[0] == name else f" (as {old[0]!r})"
                raise UserError(f"user {name!r}: already exists{same}")
            db.execute("INSERT INTO users VALUES (?,?,?,?,?)", (name, role, encoded, now, now))
        return _user((name, role, now, now))

    def set_password(self, name: str, password: str) -> None:
        """Replace an account's password."""
        self._check_password(name, password)
        encoded = hash_password(password)
        self._update(name, "password", encoded)

    def set_role(self, name: str, role: str) -> None:
        """Change an account's role."""
        self._check_role(name, role)
        self._update(name, "role", role)

    def remove(self, name: str) -> None:
        """Delete an account."""
        with self._db() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UserError(f"user {name!r}: no such user")

    def get(self, name: str) -> User | None:
        """The account of that name, None if there is none."""
        with self._db() as db:
            row = db.execute("SELECT name, role, created_ms, changed_ms FROM users"
                             " WHERE name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def list(self) -> builtins.list[User]:
        """Every account, by name."""
        with self._db() as db:
            rows = db.execute("SELECT name, role, created_ms, changed_ms FROM users"
                              " ORDER BY name").fetchall()
        return [_user(row) for row in rows]

    def authenticate(self, name: str, password: str) -> User | None:
        """The account if the password is right, else None.

        An unknown name costs one scrypt too, so the time taken does not tell which
        names exist.
        """
        with self._db() as db:
            row = db.execute("SELECT name, role, created_ms, changed_ms, password FROM users"
                             " WHERE name = ?", (name,)).fetchone()
        if row is None:
            check_password(password, _dummy_hash())
            return None
        return _user(row[:4]) if check_password(password, row[4]) else None

    def ensure_demo_users(self) -> builtins.list[str]:
        """Create the missing demo accounts (one per role, password "demo-<role>")."""
        created = []
        for role in ROLES:
            if self.get(role) is None:
                try:
                    self.add(role, role, f"demo-{role}")
                except UserError:
                    if self.get(role) is None:  # not another process creating it meanwhile
                        raise
                    continue
                created.append(role)
        return created

    def _update(self, name: str, column: str, value: str) -> None:
        with self._db() as db:
            cur = db.execute(f"UPDATE users SET {column} = ?, changed_ms = ? WHERE name = ?",
                             (value, _ms(datetime.now(UTC)), name))
            if cur.rowcount == 0:
                raise UserError(f"user {name!r}: no such user")

    @staticmethod
    def _check_role(name: str, role: str) -> None:
        if role not in ROLES:
            raise UserError(f"user {name!r}: unknown role {role!r} "
                            f"(one of {', '.join(ROLES)})")

    @staticmethod
    def _check_password(name: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise UserError(f"user {name!r}: a password needs at least {MIN_PASSWORD} "
                            "characters")
