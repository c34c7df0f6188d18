"""The small protocols two stages share: what a sink asks of the alarm engine and stores.

The runtime hands each sink the real objects (alarms.engine.AlarmSink, server.users.
UserStore, server.audit.AuditLog); the sinks know them only by these shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from model.accounts import User
from model.records import AlarmEvent, AuditRecord


class AlarmControl(Protocol):
    """The alarm engine an operator acts on, from the web or OPC UA (alarms.engine.AlarmSink).

    Actions raise AlarmActionError (fit for the operator) when incomplete or impossible
    in the alarm's state, UnknownRuleError for an unknown rule.
    """

    def acknowledge(self, rule: str, user: str, comment: str) -> AuditRecord:
        """Acknowledge the rule's alarm."""
        ...

    def shelve(self, rule: str, user: str, comment: str, until: datetime) -> AuditRecord:
        """Shelve the rule's alarm until `until`."""
        ...

    def unshelve(self, rule: str, user: str, comment: str) -> AuditRecord:
        """End the rule's shelf."""
        ...

    def remove_from_service(self, rule: str, user: str, comment: str) -> AuditRecord:
        """Take the rule out of service."""
        ...

    def return_to_service(self, rule: str, user: str, comment: str) -> AuditRecord:
        """Put the rule back in service."""
        ...

    def add_comment(self, rule: str, user: str, comment: str) -> AuditRecord:
        """Comment on the rule's alarm; its state does not change."""
        ...

    def confirm(self, rule: str, user: str, comment: str) -> AuditRecord:
        """Confirm the rule's alarm (OPC UA Confirm): an audited comment."""
        ...

    def on_rules_changed(self, callback: Callable[[list[dict[str, Any]], str, str, datetime],
                                                  None]) -> Callable[[], None]:
        """Call `callback(rules, user, comment, t)` after each change of rules; the
        function that unsubscribes it."""
        ...

    def alarm_list(self) -> list[AlarmEvent]:
        """The latest event of every rule not in the normal state."""
        ...

    def rules_config(self) -> list[dict[str, Any]]:
        """The alarm rules as configured (config file form)."""
        ...

    def change_rules(self, rules: list[dict[str, Any]], user: str,
                     comment: str) -> list[dict[str, Any]]:
        """Replace every rule; the new rules. Raises ConfigError (its .problems) or
        AlarmActionError; the change is audited by the runtime."""
        ...


class Authenticator(Protocol):
    """Where user names and passwords are checked (server.users.UserStore fits it)."""

    def authenticate(self, name: str, password: str) -> User | None:
        """The account if the password is right, else None (alike for unknown names).

        scrypt makes it slow (~50 ms): call it in a worker thread.
        """
        ...


class ActionAuditor(Protocol):
    """Where operator actions on alarms are recorded (server.audit.AuditLog fits it)."""

    def append_record(self, rec: AuditRecord) -> object:
        """Append one record."""
        ...
