"""Which alarm rules apply: the file's, or the ones an engineer changed through the API.

Rules changed at run time are kept (by the historian) with the hash of the file's rules
they were made on. At the next start they apply while the file's rules are unchanged;
once the file is edited, the file wins, and the log says so. Every change is audited
rule by rule: what was added, removed, and each changed rule before and after.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from alarms.config import AlarmPlantConfig, with_alarm_rules
from model.errors import ConfigError

log = logging.getLogger(__name__)

P = TypeVar("P", bound=AlarmPlantConfig)
Rules = list[dict[str, Any]]


class SavedRules(Protocol):
    """A set of rules as an engineer last saved it (server.historian.StoredRules)."""

    @property
    def rules(self) -> Rules:
        """The rules, in the configuration file's form."""
        ...

    @property
    def config_hash(self) -> str:
        """`rules_hash` of the file's rules the change was made on."""
        ...

    @property
    def user(self) -> str:
        """Who saved them."""
        ...

    @property
    def comment(self) -> str:
        """Why."""
        ...

    @property
    def t(self) -> datetime:
        """When (UTC)."""
        ...


class RuleSetStore(Protocol):
    """Where changed rule sets are kept (server.historian.Historian)."""

    async def load_alarm_rules(self) -> SavedRules | None:
        """The newest saved set; None when none was ever saved."""
        ...

    async def save_alarm_rules(self, rules: Rules, config_hash: str, user: str, comment: str,
                               t: datetime) -> None:
        """Keep a new set (the newest is the one in force)."""
        ...


class RuleAudit(Protocol):
    """Where the rule changes are audited (server.audit.AuditLog, called in a thread)."""

    def append(self, user: str, action: str, target: str,
               detail: Mapping[str, Any] | None = None, t: datetime | None = None) -> object:
        """Append one entry."""
        ...


def rules_hash(rules: Rules) -> str:
    """sha256 of the rules' canonical JSON (keys sorted, no spaces): what a change is tied to."""
    text = json.dumps(rules, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def rules_diff(before: Rules, after: Rules, comment: str) -> dict[str, Any]:
    """The audit detail of a change: rules added, removed, and changed (before and after)."""
    old = {r["id"]: r for r in before}
    new = {r["id"]: r for r in after}
    return {"comment": comment,
            "added": [new[k] for k in new if k not in old],
            "removed": [old[k] for k in old if k not in new],
            "changed": [{"before": old[k], "after": new[k]} for k in new
                        if k in old and old[k] != new[k]]}


class RulePersistence:
    """Chooses the rules in force at start and keeps and audits every change after it."""

    def __init__(self, file_rules: Rules, store: RuleSetStore, audit: RuleAudit,
                 run: Callable[[Coroutine[Any, Any, object]], None],
                 in_thread: Callable[..., Coroutine[Any, Any, object]]) -> None:
        self.file_hash = rules_hash(file_rules)
        self._store = store
        self._audit = audit
        self._run = run  # runs a write without making the caller wait for it
        self._in_thread = in_thread  # asyncio.to_thread: the audit log is synchronous
        self._in_force: Rules = list(file_rules)

    async def rules_in_force(self, cfg: P, origin: str) -> P:
        """`cfg` with the rules that apply now: the saved ones while the file's are unchanged."""
        stored = await self._store.load_alarm_rules()
        if stored is None:
            return cfg
        when = stored.t.isoformat()
        if stored.config_hash != self.file_hash:
            log.warning("the configuration file's alarm rules changed after %s changed them "
                        "through the API at %s: the file's rules apply", stored.user, when)
            return cfg
        try:
            cfg = with_alarm_rules(cfg, stored.rules, f"{origin} (alarm rules of {when})")
        except ConfigError as exc:
            log.error("stored alarm rules no longer fit the plant, the file's apply: %s", exc)
            return cfg
        log.info("alarm rules as changed by %s at %s apply (%d rules): %s", stored.user, when,
                 len(cfg.alarms.rules), stored.comment)
        self._in_force = list(stored.rules)
        return cfg

    def started_with(self, rules: Sequence[dict[str, Any]]) -> None:
        """The rules the engine started with: what the first change is compared against."""
        self._in_force = list(rules)

    def changed(self, rules: Rules, user: str, comment: str, t: datetime) -> None:
        """Keep an engineer's rule change across restarts and audit it, rule by rule."""
        detail = rules_diff(self._in_force, rules, comment)
        self._in_force = list(rules)
        self._run(self._store.save_alarm_rules(rules, self.file_hash, user, comment, t))
        self._run(self._in_thread(self._audit.append, user, "alarm_rules_changed",
                                  "alarm-rules", detail, t))
