"""The ISA-18.2 state machine of one alarm: condition × acknowledgement, plus modes.

The condition (normal / warning 预警 / alarm 报警) comes from the rule; the
acknowledgement from an operator. Together they give the four states of ISA-18.2:

    normal                  ──condition rises──►   active-unacknowledged
    active-unacknowledged   ──acknowledge──►       active-acknowledged
    active-acknowledged     ──condition returns──► normal
    active-unacknowledged   ──condition returns──► returned-unacknowledged
    returned-unacknowledged ──acknowledge──►       normal
    returned-unacknowledged ──condition rises──►   active-unacknowledged

A rise from warning to alarm needs a new acknowledgement; a fall keeps it. On top of
these, an alarm may be shelved by an operator (until a time, then unshelved
automatically), suppressed while its unit is stopped, or taken out of service. In
the first two the condition is still followed and journaled but not announced (out of
service it is not journaled either); an alarm that rose while masked is unacknowledged
when the mask ends, one that rose and cleared while masked leaves nothing behind.

Every transition returns an `AlarmEvent` for the alarm journal; acknowledge, shelve,
unshelve and the service actions also return an `AuditRecord` for the audit log. After a
restart, `restore` puts a state back from the rule's last journaled event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from model.errors import AlarmActionError, InvalidValueError
from model.records import AlarmEvent, AuditRecord
from model.states import AckState, Condition

# Short names of the ISA-18.2 states (model.states.AckState holds them, once).
NORMAL, UNACK, ACKED, RTN_UNACK = (AckState.NORMAL, AckState.UNACK, AckState.ACKED,
                                   AckState.RTN_UNACK)
SHELVED, SUPPRESSED, OUT_OF_SERVICE = (AckState.SHELVED, AckState.SUPPRESSED,
                                       AckState.OUT_OF_SERVICE)

LEVELS = tuple(Condition)
"""Condition names by level: 0 normal, 1 warning (预警), 2 alarm (报警)."""

MAX_SHELVE = timedelta(hours=24)
"""The longest an operator may shelve an alarm for (ISA-18.2: shelving is time-limited)."""

_BASE_STATES = {(False, True): NORMAL, (False, False): RTN_UNACK,
                (True, True): ACKED, (True, False): UNACK}
_ANNOUNCED_AFTER_MASK = ("unshelve", "shelve_expired", "unsuppress")
_MODE_ON = ("shelve", "suppress", "out_of_service")  # leave the base state as it was


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the state machine writes into every event of its rule."""

    rule: str
    target: str
    kind: str = ""
    area: str = ""
    name: str = ""


def annunciates(event: AlarmEvent) -> bool:
    """Whether an event is announced to people: notification channels, horns.

    Condition changes of an alarm that is not masked are; so is the end of a shelf or
    a suppression that leaves the alarm active and unacknowledged. Acknowledgements,
    shelving and masked condition changes are journaled only.
    """
    if event.cause == "condition":
        return event.ack_state in (NORMAL, UNACK, ACKED, RTN_UNACK)
    return event.cause in _ANNOUNCED_AFTER_MASK and event.ack_state == UNACK


def _aware(t: datetime, what: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidValueError(f"{what} must be a timezone-aware UTC datetime, got {t!r}")
    return t


def require_user(action: str, user: str, comment: str) -> tuple[str, str]:
    """`user` and `comment` stripped; AlarmActionError saying which is missing for `action`."""
    user, comment = (user or "").strip(), (comment or "").strip()
    missing = [name for name, v in (("a user", user), ("a comment", comment)) if not v]
    if missing:
        raise AlarmActionError(f"{action}: needs {' and '.join(missing)}")
    return user, comment


class AlarmState:
    """The alarm state of one rule (ISA-18.2), driven by condition changes and operators."""

    def __init__(self, info: RuleInfo, *, max_shelve: timedelta = MAX_SHELVE) -> None:
        self.info = info
        self.max_shelve = max_shelve
        self.level = 0
        self.acked = True  # nothing waits for an acknowledgement
        self.shelved_until: datetime | None = None
        self.suppressed = False
        self.out_of_service = False
        self.value = math.nan  # of the last condition change
        self.limit: float | None = None
        self.last_event: AlarmEvent | None = None
        self._raised_masked = False

    @property
    def state(self) -> str:
        """The condition: "normal", "warning" or "alarm"."""
        return LEVELS[self.level]

    @property
    def masked(self) -> bool:
        """Whether the alarm is shelved, suppressed or out of service (not announced)."""
        return self.out_of_service or self.shelved_until is not None or self.suppressed

    @property
    def ack_state(self) -> str:
        """The ISA-18.2 state: a mode (out-of-service, shelved, suppressed) or the base state."""
        if self.out_of_service:
            return OUT_OF_SERVICE
        if self.shelved_until is not None:
            return SHELVED
        if self.suppressed:
            return SUPPRESSED
        return self.base_state

    @property
    def base_state(self) -> str:
        """normal, active-unacknowledged, active-acknowledged or returned-unacknowledged."""
        return _BASE_STATES[(self.level > 0, self.acked)]

    def condition(self, level: int, value: float, limit: float | None, t: datetime,
                  message: str, message_zh: str) -> AlarmEvent:
        """The rule's condition changed to `level` (0, 1, 2): the event of that transition."""
        _aware(t, "alarm event time")
        if level == self.level or not 0 <= level <= 2:
            raise InvalidValueError(f"alarm rule {self.info.rule!r}: condition {level} is no "
                                    f"change from {self.level}")
        if self.out_of_service:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is out of service")
        before = (self.level, self.ack_state)
        if level > self.level:  # a new or a worse condition wants a new acknowledgement
            self.acked = False
            if self.masked:
                self._raised_masked = True
        self.level = level
        self.value, self.limit = value, limit
        return self._event(t, before, "condition", message, message_zh)

    def acknowledge(self, user: str, comment: str, t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator acknowledges: active-unack → active-ack, returned-unack → normal."""
        user, comment = self._require(user, comment, "acknowledge", t)
        if self.out_of_service:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is out of service: "
                                   "nothing to acknowledge")
        if self.acked:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} has nothing to acknowledge "
                                   f"(state {self.ack_state})")
        before = (self.level, self.ack_state)
        self.acked = True
        self._raised_masked = False
        event = self._event(t, before, "acknowledge", f"acknowledged by {user}: {comment}",
                            f"已由 {user} 确认：{comment}", user=user, comment=comment)
        return AuditRecord(t, user, "acknowledge", self.info.rule, comment), event

    def shelve(self, user: str, comment: str, until: datetime,
               t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator shelves the alarm until `until` (at most `max_shelve` from `t`)."""
        user, comment = self._require(user, comment, "shelve", t)
        _aware(until, "shelve 'until'")
        if self.out_of_service:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is out of service: "
                                   "it cannot be shelved")
        if until <= t:
            raise AlarmActionError(f"shelve alarm rule {self.info.rule!r}: 'until' "
                                   f"{until.isoformat()} is not after {t.isoformat()}")
        if until - t > self.max_shelve:
            raise AlarmActionError(f"shelve alarm rule {self.info.rule!r}: at most "
                                   f"{self.max_shelve} ahead, not {until - t}")
        before = (self.level, self.ack_state)
        self.shelved_until = until
        stamp = until.strftime("%Y-%m-%d %H:%M UTC")
        event = self._event(t, before, "shelve", f"shelved by {user} until {stamp}: {comment}",
                            f"已由 {user} 搁置至 {stamp}：{comment}", user=user,
                            comment=comment)
        return AuditRecord(t, user, "shelve", self.info.rule, comment, until), event

    def unshelve(self, user: str, comment: str, t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator ends the shelf before it expires."""
        user, comment = self._require(user, comment, "unshelve", t)
        if self.shelved_until is None:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is not shelved")
        event = self._unshelve(t, "unshelve", f"unshelved by {user}: {comment}",
                               f"已由 {user} 解除搁置：{comment}", user, comment)
        return AuditRecord(t, user, "unshelve", self.info.rule, comment), event

    def expire(self, t: datetime) -> AlarmEvent | None:
        """Unshelve if the shelf has expired at `t`; the event, or None."""
        _aware(t, "shelf expiry check time")
        if self.shelved_until is None or t < self.shelved_until:
            return None
        return self._unshelve(t, "shelve_expired", "shelf expired", "搁置到期", "", "")

    def _unshelve(self, t: datetime, cause: str, en: str, zh: str, user: str,
                  comment: str) -> AlarmEvent:
        before = (self.level, self.ack_state)
        self.shelved_until = None
        self._unmasked()
        return self._event(t, before, cause, en, zh, user=user, comment=comment)

    def suppress(self, on: bool, t: datetime) -> AlarmEvent | None:
        """Suppress while the rule's unit is stopped (flag F); the event, or None if unchanged."""
        _aware(t, "suppression time")
        if on == self.suppressed:
            return None
        before = (self.level, self.ack_state)
        self.suppressed = on
        area = self.info.area
        if on:
            return self._event(t, before, "suppress", f"suppressed: unit {area} stopped (F)",
                               f"已抑制：{area} 停运（F）")
        self._unmasked()
        return self._event(t, before, "unsuppress", f"unit {area} running, suppression ended",
                           f"{area} 恢复运行，解除抑制")

    def remove_from_service(self, user: str, comment: str,
                            t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An engineer takes the rule out of service (e.g. instrument maintenance)."""
        user, comment = self._require(user, comment, "remove from service", t)
        if self.out_of_service:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is already out of service")
        before = (self.level, self.ack_state)
        self.out_of_service = True
        event = self._event(t, before, "out_of_service",
                            f"removed from service by {user}: {comment}",
                            f"已由 {user} 停用：{comment}", user=user, comment=comment)
        return AuditRecord(t, user, "out_of_service", self.info.rule, comment), event

    def return_to_service(self, user: str, comment: str,
                          t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """Back in service from a clean normal state: the condition is evaluated afresh."""
        user, comment = self._require(user, comment, "return to service", t)
        if not self.out_of_service:
            raise AlarmActionError(f"alarm rule {self.info.rule!r} is not out of service")
        before = (self.level, self.ack_state)
        self.out_of_service = False
        self.level, self.acked, self._raised_masked = 0, True, False
        self.value, self.limit = math.nan, None
        event = self._event(t, before, "return_to_service",
                            f"returned to service by {user}: {comment}",
                            f"已由 {user} 恢复投用：{comment}", user=user, comment=comment)
        return AuditRecord(t, user, "return_to_service", self.info.rule, comment), event

    def add_comment(self, user: str, comment: str, t: datetime, *,
                    action: str = "comment") -> tuple[AuditRecord, AlarmEvent]:
        """An operator's comment on the alarm, in any state; nothing else changes.

        `action` "confirm" records an OPC UA Confirm: this engine has no confirmed state,
        so a confirmation is an audited comment of that name.
        """
        if action not in ("comment", "confirm"):
            raise InvalidValueError(f"alarm comment action {action!r}: comment or confirm")
        user, comment = self._require(user, comment, action, t)
        before = (self.level, self.ack_state)
        verb = "confirmed" if action == "confirm" else "comment"
        verb_zh = "确认完成" if action == "confirm" else "备注"
        event = self._event(t, before, action, f"{verb} by {user}: {comment}",
                            f"{verb_zh}（{user}）：{comment}", user=user, comment=comment)
        return AuditRecord(t, user, action, self.info.rule, comment), event

    def _unmasked(self) -> None:
        """After a mask ended: forget a condition that rose and cleared while masked."""
        if self.masked:
            return
        if self._raised_masked and self.level == 0:
            self.acked = True
        self._raised_masked = False

    def remove(self, user: str, comment: str, t: datetime) -> AlarmEvent:
        """The rule is deleted from the configuration: its last event, back to normal."""
        user, comment = self._require(user, comment, "remove", t)
        before = (self.level, self.ack_state)
        self.level, self.acked, self._raised_masked = 0, True, False
        self.shelved_until, self.suppressed, self.out_of_service = None, False, False
        self.value, self.limit = math.nan, None
        return self._event(t, before, "removed", f"rule removed by {user}: {comment}",
                           f"规则已由 {user} 删除：{comment}", user=user, comment=comment)

    def restore(self, event: AlarmEvent) -> None:
        """Put the state back as `event`, the rule's last journaled event, left it (after a
        restart); no event."""
        level = LEVELS.index(event.state)
        mode, before = event.ack_state, event.previous_ack_state
        base_states = _BASE_STATES.values()
        raised = False
        if mode in base_states:
            acked = mode in (NORMAL, ACKED)
        elif event.cause in ("acknowledge", "return_to_service"):
            acked = True
        elif event.cause == "condition" and level > LEVELS.index(event.previous):
            acked, raised = False, True  # it rose while masked
        elif event.cause in _MODE_ON and before in base_states:
            acked = before in (NORMAL, ACKED)
        else:
            # A mode's base state that the event does not tell (e.g. the condition fell
            # while shelved; it may or may not have been acknowledged): conservatively
            # unacknowledged if the condition is active, nothing to acknowledge if normal.
            acked = level == 0
        self.level, self.acked, self._raised_masked = level, acked, raised
        self.shelved_until = event.shelved_until
        self.out_of_service = mode == OUT_OF_SERVICE
        # Under a shelf or out of service, suppression shows only in the event that set it;
        # otherwise it is taken as off, and the next minute suppresses again if need be.
        self.suppressed = (mode == SUPPRESSED or event.cause == "suppress"
                           or (event.cause in _MODE_ON and before == SUPPRESSED))
        self.value, self.limit = event.value, event.limit
        self.last_event = event

    def _require(self, user: str, comment: str, action: str,
                 t: datetime) -> tuple[str, str]:
        _aware(t, f"{action} time")
        return require_user(f"{action} alarm rule {self.info.rule!r}", user, comment)

    def _event(self, t: datetime, before: tuple[int, str], cause: str, en: str, zh: str, *,
               user: str = "", comment: str = "") -> AlarmEvent:
        _aware(t, "alarm event time")
        info = self.info
        name = f": {info.name}" if info.name else ""
        name_zh = f"：{info.name}" if info.name else ""
        event = AlarmEvent(
            rule=info.rule, t=t, state=self.state, previous=LEVELS[before[0]], value=self.value,
            limit=self.limit, target=info.target, message=f"{en} [rule {info.rule}{name}]",
            message_zh=f"{zh}［规则 {info.rule}{name_zh}］", ack_state=self.ack_state,
            previous_ack_state=before[1], cause=cause, kind=info.kind, area=info.area,
            user=user, comment=comment, shelved_until=self.shelved_until)
        self.last_event = event
        return event
