"""Login accounts and their roles, shared by the web, OPC UA and the user store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ROLES: tuple[str, ...] = ("viewer", "operator", "engineer", "admin")  # ascending rights


def has_role(role: str, needed: str) -> bool:
    """Whether `role` has at least the rights of `needed` (False for unknown names)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class User:
    """A login account as stored (the hash never leaves the store)."""

    name: str
    role: str
    created: datetime  # UTC
    changed: datetime  # UTC, last change of role or password
