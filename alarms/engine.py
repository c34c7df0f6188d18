"""The alarm engine and sink: rules evaluated each minute, ISA-18.2 states, notifications.

`AlarmEngine` is synchronous and does no I/O: the vectorised `RuleBank` evaluates all
rules, and the per-rule `AlarmState` machines are touched only for rules whose
condition or suppression changed, or that an operator acts on. `AlarmSink` runs it as
a sink of the runtime and hands every event to its listeners (alarm journal, web) and
the events to be announced to the notifier. After a restart both are restored from the
journal's last event of each rule; their rules can be changed while they run.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from alarms import notify
from alarms.bank import Changes, RuleBank
from alarms.config import AlarmPlantConfig, with_alarm_rules
from alarms.spec import RuleSpec, definition
from alarms.state import MAX_SHELVE, NORMAL, AlarmState, annunciates, require_user
from model.errors import UnknownRuleError
from model.records import (
    AlarmEvent,
    AuditRecord,
    DeliveryRecord,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    SampleBlock,
)

if TYPE_CHECKING:
    from compute.assets import CompliancePosition
    from compute.performance import Performance

log = logging.getLogger(__name__)

MAX_EVENTS = 1000
"""How many recent events `AlarmSink.events` keeps in memory (the historian keeps all)."""

RULES_ORIGIN = "alarm rules change"
"""What ConfigErrors of `AlarmSink.change_rules` name as their origin."""

Listener = Callable[[AlarmEvent], None]
RulesListener = Callable[[list[dict[str, Any]], str, str, datetime], None]
"""Called after a change of rules with (the new rules, user, comment, time)."""


class AlarmEngine:
    """Every alarm rule of a plant with its alarm state; synchronous, no I/O."""

    def __init__(self, config: AlarmPlantConfig, *, max_shelve: timedelta = MAX_SHELVE) -> None:
        self.max_shelve = max_shelve
        self.bank = RuleBank(config)
        self.specs: list[RuleSpec] = self.bank.specs
        self.alarms = [AlarmState(s.info, max_shelve=max_shelve) for s in self.specs]
        self.index = {s.id: i for i, s in enumerate(self.specs)}
        self._shelved: set[int] = set()

    def restore(self, events: Sequence[AlarmEvent]) -> None:
        """Put each rule's alarm state back as its last journaled event left it (a restart).

        For each rule the last of its events in `events` counts; events of rules no
        longer configured, or with a condition state not known here, are skipped. The
        bank holds the same levels, its on / off delays start afresh; a shelf that
        expired meanwhile ends at the next minute, and a device's fault comes again from
        its driver. No event is emitted.
        """
        last = {e.rule: e for e in events}
        gone = sorted(rule for rule in last if rule not in self.index)
        if gone:
            log.info("alarm states not restored for %d rule(s) no longer configured: %s",
                     len(gone), ", ".join(gone))
        for rule, event in last.items():
            i = self.index.get(rule)
            if i is None:
                continue
            alarm = self.alarms[i]
            try:
                alarm.restore(event)
            except ValueError:  # a journal row this version cannot read
                log.warning("alarm rule %s: its last event (%s, %s) cannot be restored; it "
                            "starts normal", rule, event.state, event.ack_state)
                continue
            self.bank.restore(i, alarm.level, alarm.suppressed, event.t, alarm.value)
            if alarm.shelved_until is not None:
                self._shelved.add(i)
            else:
                self._shelved.discard(i)

    def change_rules(self, config: AlarmPlantConfig, user: str, comment: str,
                     t: datetime) -> list[AlarmEvent]:
        """Replace the rules with those of `config` (validated); the removed rules' last events.

        A rule whose id stays keeps its alarm state (acknowledgement, shelf, modes) and,
        if what it measures (kind, target, window …) is unchanged, its evaluation state
        (levels, delay timers, history); changed levels, deadband and delays apply from
        its next evaluation. A removed rule not in the normal state ends with a "removed"
        event back to normal. New rules start normal.
        """
        user, comment = require_user("change alarm rules", user, comment)
        bank = RuleBank(config)
        new_ids = {s.id for s in bank.specs}
        events = [self.alarms[i].remove(user, comment, t) for rule, i in self.index.items()
                  if rule not in new_ids and self.alarms[i].ack_state != NORMAL]
        alarms: list[AlarmState] = []
        kept: list[tuple[int, int]] = []
        redefined: list[int] = []
        for row, spec in enumerate(bank.specs):
            i = self.index.get(spec.id)
            if i is None:
                alarms.append(AlarmState(spec.info, max_shelve=self.max_shelve))
                continue
            alarm = self.alarms[i]
            alarm.info = spec.info
            alarms.append(alarm)
            if definition(spec.config) == definition(self.specs[i].config):
                kept.append((row, i))
            else:
                redefined.append(row)
        bank.take_over(self.bank, kept)
        for row in redefined:
            bank.levels.reset(row, alarms[row].level)
        bank.suppressed[:] = [a.suppressed for a in alarms]
        self.bank, self.specs, self.alarms = bank, bank.specs, alarms
        self.index = {s.id: i for i, s in enumerate(self.specs)}
        self._shelved = {i for i, a in enumerate(alarms) if a.shelved_until is not None}
        return events

    def alarm(self, rule: str) -> AlarmState:
        """The alarm state of one rule; UnknownRuleError naming it if there is no such rule."""
        try:
            return self.alarms[self.index[rule]]
        except KeyError:
            raise UnknownRuleError(f"no alarm rule {rule!r}") from None

    def on_minute(self, result: MinuteResult) -> list[AlarmEvent]:
        """Evaluate every rule on one minute's results; the events, in order."""
        events = self.expire_shelves(result.t)
        events += self._apply(self.bank.minute(result))
        return events

    def on_period(self, records: PeriodRecords) -> list[AlarmEvent]:
        """Take a closed hour (capture rates, allowance forecast) or day (reconciliation)."""
        events = self._apply(self.bank.period(records))
        if records.level == "day":
            for u in records.units:
                if math.isfinite(u.reconciliation_diff_pct):
                    events += self.on_reconciliation(u.unit, records.t_end,
                                                     u.reconciliation_diff_pct)
        return events

    def on_device_event(self, event: DeviceEvent) -> list[AlarmEvent]:
        """Take a device's communication fault or restoration (comm_loss rules)."""
        return self._apply(self.bank.device_event(event))

    def on_reconciliation(self, unit: str, t: datetime, diff_pct: float) -> list[AlarmEvent]:
        """Take one day's CEMS vs factor-method difference (%) of a unit."""
        return self._apply(self.bank.reconciliation(unit, t, diff_pct))

    def on_carbon_position(self, position: CompliancePosition, t: datetime,
                           deadline: CompliancePosition | None = None) -> list[AlarmEvent]:
        """Take the ledger's compliance position computed at `t` (carbon_position rules;
        `deadline`: the position of the year whose surrender is due, see RuleBank)."""
        return self._apply(self.bank.carbon_position(position, t, deadline))

    def on_carbon_performance(self, perf: Performance, t: datetime) -> list[AlarmEvent]:
        """Take the year's carbon performance computed at `t` (carbon_performance rules)."""
        return self._apply(self.bank.carbon_performance(perf, t))

    def expire_shelves(self, t: datetime) -> list[AlarmEvent]:
        """Unshelve every alarm whose shelf has expired at `t`."""
        events = []
        for i in sorted(self._shelved):
            event = self.alarms[i].expire(t)
            if event is not None:
                self._shelved.discard(i)
                events.append(event)
        return events

    def _apply(self, ch: Changes) -> list[AlarmEvent]:
        """Hand the bank's changes to the alarm states.

        A stopping unit suppresses its rules before their conditions change (the trip is
        not announced); a restarting one lifts the suppression after (what cleared at the
        restart is not announced either).
        """
        events = self._suppress(ch, on=True)
        value = self.bank.value
        for i, old, new in zip(ch.rows.tolist(), ch.old.tolist(), ch.new.tolist(), strict=True):
            alarm = self.alarms[i]
            if alarm.out_of_service:
                continue
            v = float(value[i])
            limit, en, zh = self.specs[i].message(new, old, v, self.bank.note(i))
            events.append(alarm.condition(new, v, limit, ch.t, en, zh))
        return events + self._suppress(ch, on=False)

    def _suppress(self, ch: Changes, *, on: bool) -> list[AlarmEvent]:
        events = []
        for i in ch.suppress_rows[ch.suppress_on == on].tolist():
            event = self.alarms[i].suppress(on, ch.t)
            if event is not None:
                events.append(event)
        return events

    def acknowledge(self, rule: str, user: str, comment: str,
                    t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator acknowledges a rule's alarm (needs a user and a comment)."""
        return self.alarm(rule).acknowledge(user, comment, t)

    def shelve(self, rule: str, user: str, comment: str, until: datetime,
               t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator shelves a rule's alarm until `until` (needs a user and a comment)."""
        out = self.alarm(rule).shelve(user, comment, until, t)
        self._shelved.add(self.index[rule])
        return out

    def unshelve(self, rule: str, user: str, comment: str,
                 t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An operator unshelves a rule's alarm before its shelf expires."""
        out = self.alarm(rule).unshelve(user, comment, t)
        self._shelved.discard(self.index[rule])
        return out

    def remove_from_service(self, rule: str, user: str, comment: str,
                            t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """An engineer takes a rule out of service: evaluated, but not journaled or announced."""
        return self.alarm(rule).remove_from_service(user, comment, t)

    def return_to_service(self, rule: str, user: str, comment: str,
                          t: datetime) -> tuple[AuditRecord, AlarmEvent]:
        """Back in service, normal, its delay timers cleared; the next minute re-evaluates it."""
        out = self.alarm(rule).return_to_service(user, comment, t)
        self.bank.levels.reset(self.index[rule])
        return out

    def add_comment(self, rule: str, user: str, comment: str, t: datetime, *,
                    action: str = "comment") -> tuple[AuditRecord, AlarmEvent]:
        """An operator comments on a rule's alarm ("confirm": an OPC UA confirmation)."""
        return self.alarm(rule).add_comment(user, comment, t, action=action)

    def active(self) -> list[AlarmEvent]:
        """The latest event of each rule whose condition is not normal."""
        return [a.last_event for a in self.alarms
                if a.level > 0 and a.last_event is not None]

    def alarm_list(self) -> list[AlarmEvent]:
        """The latest event of each rule an operator should see: every state but normal
        (returned-unacknowledged, shelved, suppressed and out-of-service included)."""
        return [a.last_event for a in self.alarms
                if a.ack_state != NORMAL and a.last_event is not None]


class Notifier(Protocol):
    """What the sink hands announced events to (alarms/notify.py's Notifier fits it)."""

    async def start(self) -> None:
        """Start the channel workers."""
        ...

    def notify(self, event: AlarmEvent, channels: Sequence[str]) -> None:
        """Queue one event for the named channels (routing may add more); never blocks."""
        ...

    async def stop(self) -> None:
        """Deliver what can be delivered in a short grace period."""
        ...

    def forget(self, rule: str) -> None:
        """The rule was removed: no more repeats or escalation of it."""
        ...


class AlarmSink:
    """Sink that runs the alarm engine and sends its events to listeners and the notifier.

    Listeners get every event (the alarm journal, the web HMI); the notifier gets the
    events that `annunciates` — condition changes of alarms that are not shelved,
    suppressed or out of service — with the rule's channels. Without a `notifier` the
    sink builds alarms.notify's from the configuration (`origin` names the file in its
    errors), asking the sink whether a rule is acknowledged and handing every delivery
    record to `on_delivery`.
    """

    name = "alarms"

    def __init__(self, config: AlarmPlantConfig, *, notifier: Notifier | None = None,
                 on_delivery: Callable[[DeliveryRecord], None] | None = None,
                 origin: str = "configuration") -> None:
        self.config = config
        self.engine = AlarmEngine(config)
        known = {c.id for c in config.alarms.channels}
        for rule in self.engine.specs:
            for ch in rule.notify:
                if ch not in known:
                    raise ValueError(f"alarm rule {rule.id!r}: unknown channel {ch!r}")
        if notifier is None:
            notifier = notify.Notifier(config.alarms, config.site,
                                       is_acknowledged=self.is_acknowledged, origin=origin,
                                       on_delivery=on_delivery)
        elif on_delivery is not None:
            raise ValueError("on_delivery is for the notifier the sink builds: give it to "
                             "your own notifier instead")
        self.notifier = notifier
        self.events: list[AlarmEvent] = []
        self._listeners: list[Listener] = []
        self._rules_listeners: list[RulesListener] = []
        self._listener_error: dict[int, str] = {}

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call `callback` with every future event; returns a function that unsubscribes."""
        return _add(self._listeners, callback)

    def on_rules_changed(self, callback: RulesListener) -> Callable[[], None]:
        """Call `callback(rules, user, comment, t)` after each change of rules (to persist
        and audit it); returns a function that unsubscribes."""
        return _add(self._rules_listeners, callback)

    def restore(self, events: Sequence[AlarmEvent]) -> None:
        """Put the alarm states back from each rule's last journaled event (after a
        restart); nothing is journaled or notified."""
        self.engine.restore(events)

    def rules_config(self) -> list[dict[str, Any]]:
        """The alarm rules now in force as plain data (JSON types), in order."""
        return [r.model_dump(mode="json") for r in self.config.alarms.rules]

    def change_rules(self, rules: list[dict[str, Any]], user: str, comment: str,
                     t: datetime | None = None) -> list[dict[str, Any]]:
        """Replace the alarm rules while running; the new `rules_config()`.

        Needs a user and a comment (AlarmActionError). `rules` are validated like the
        configuration file: ConfigError naming each key path, nothing changed. Rules
        keep or start their states as `AlarmEngine.change_rules` says: changed levels
        take effect at the next evaluation. A removed rule that was not normal is
        journaled once more ("removed", not announced) and the notifier forgets it.
        Then every `on_rules_changed` listener is called.
        """
        t = t or datetime.now(UTC)
        user, comment = require_user("change alarm rules", user, comment)
        config = with_alarm_rules(self.config, rules, RULES_ORIGIN)
        before = set(self.engine.index)
        events = self.engine.change_rules(config, user, comment, t)
        self.config = config
        for rule in sorted(before - set(self.engine.index)):
            self.notifier.forget(rule)
        self._dispatch_all(events)
        new = self.rules_config()
        log.info("alarm rules changed by %s (%d → %d rules): %s", user, len(before), len(new),
                 comment)
        for listener in list(self._rules_listeners):
            self._call(listener, new, user, comment, t)
        return new

    def active(self) -> list[AlarmEvent]:
        """The latest event of each rule whose condition is not normal."""
        return self.engine.active()

    def alarm_list(self) -> list[AlarmEvent]:
        """The latest event of each rule not in the normal state (what the HMI lists)."""
        return self.engine.alarm_list()

    def is_acknowledged(self, rule: str) -> bool:
        """Whether a rule's alarm needs no repeats or escalation: acknowledged, or shelved,
        suppressed or out of service, or the rule is gone (the notifier's callback)."""
        i = self.engine.index.get(rule)
        if i is None:
            return True
        alarm = self.engine.alarms[i]
        return alarm.acked or alarm.masked

    async def start(self) -> None:
        """Start the notifier."""
        await self.notifier.start()

    async def on_samples(self, block: SampleBlock) -> None:
        """Raw samples are not used: rules read minute results."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Evaluate every rule on one minute's results and dispatch the events."""
        self._dispatch_all(self.engine.on_minute(result))

    async def on_period(self, records: PeriodRecords) -> None:
        """Evaluate the hourly and daily rules on a closed hour or day."""
        self._dispatch_all(self.engine.on_period(records))

    def on_device_event(self, event: DeviceEvent) -> None:
        """Take a driver's device fault or restoration (call from the event loop)."""
        self._dispatch_all(self.engine.on_device_event(event))

    def on_reconciliation(self, unit: str, t: datetime, diff_pct: float) -> None:
        """Take one day's CEMS vs factor-method difference (%) of a unit."""
        self._dispatch_all(self.engine.on_reconciliation(unit, t, diff_pct))

    def on_carbon_position(self, position: CompliancePosition, t: datetime | None = None,
                           *, deadline: CompliancePosition | None = None) -> None:
        """Take the current year's compliance position, computed at `t` (default now), and
        dispatch the carbon_position rules' events (call from the event loop). `deadline`:
        the position of the year whose surrender deadline comes next, when it is not the
        current year (the previous one, until its deadline passed)."""
        self._dispatch_all(self.engine.on_carbon_position(position, t or datetime.now(UTC),
                                                          deadline))

    def on_carbon_performance(self, perf: Performance, t: datetime | None = None) -> None:
        """Take the year's carbon performance, computed at `t` (default now) when a day
        closed, and dispatch the carbon_performance rules' events (from the event loop)."""
        self._dispatch_all(self.engine.on_carbon_performance(perf, t or datetime.now(UTC)))

    def expire_shelves(self, t: datetime | None = None) -> None:
        """Unshelve what has expired by `t` (each minute does this; call it between too)."""
        self._dispatch_all(self.engine.expire_shelves(t or datetime.now(UTC)))

    def acknowledge(self, rule: str, user: str, comment: str,
                    t: datetime | None = None) -> AuditRecord:
        """Acknowledge a rule's alarm; the audit record for the caller to write.

        Raises AlarmActionError without a user or comment or with nothing to acknowledge,
        UnknownRuleError for an unknown rule.
        """
        audit, event = self.engine.acknowledge(rule, user, comment, t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def shelve(self, rule: str, user: str, comment: str, until: datetime,
               t: datetime | None = None) -> AuditRecord:
        """Shelve a rule's alarm until `until`; the audit record for the caller to write."""
        audit, event = self.engine.shelve(rule, user, comment, until, t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def unshelve(self, rule: str, user: str, comment: str,
                 t: datetime | None = None) -> AuditRecord:
        """Unshelve a rule's alarm; the audit record for the caller to write."""
        audit, event = self.engine.unshelve(rule, user, comment, t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def remove_from_service(self, rule: str, user: str, comment: str,
                            t: datetime | None = None) -> AuditRecord:
        """Take a rule out of service; the audit record for the caller to write."""
        audit, event = self.engine.remove_from_service(rule, user, comment,
                                                       t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def return_to_service(self, rule: str, user: str, comment: str,
                          t: datetime | None = None) -> AuditRecord:
        """Return a rule to service; the audit record for the caller to write."""
        audit, event = self.engine.return_to_service(rule, user, comment,
                                                     t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def add_comment(self, rule: str, user: str, comment: str,
                    t: datetime | None = None) -> AuditRecord:
        """Comment on a rule's alarm (journaled, not announced); the audit record."""
        audit, event = self.engine.add_comment(rule, user, comment, t or datetime.now(UTC))
        self._dispatch(event)
        return audit

    def confirm(self, rule: str, user: str, comment: str,
                t: datetime | None = None) -> AuditRecord:
        """Confirm a rule's alarm (OPC UA Confirm): an audited comment; the audit record."""
        audit, event = self.engine.add_comment(rule, user, comment, t or datetime.now(UTC),
                                               action="confirm")
        self._dispatch(event)
        return audit

    def _dispatch_all(self, events: Sequence[AlarmEvent]) -> None:
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: AlarmEvent) -> None:
        log.info("alarm %s %s (%s): %s", event.rule, event.state, event.ack_state,
                 event.message)
        self.events.append(event)
        if len(self.events) > MAX_EVENTS:
            del self.events[:-MAX_EVENTS]
        for listener in list(self._listeners):
            self._call(listener, event)
        if annunciates(event):
            spec = self.engine.specs[self.engine.index[event.rule]]
            self.notifier.notify(event, spec.notify)

    def _call(self, listener: Callable[..., None], *args: Any) -> None:
        """Call a listener; one that fails is logged (once per error) and does not stop others."""
        try:
            listener(*args)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if self._listener_error.get(id(listener)) != text:
                log.error("alarm listener %r failed: %s", listener, text)
                self._listener_error[id(listener)] = text

    async def stop(self) -> None:
        """Stop the notifier: queued notifications get a short grace period to go out."""
        await self.notifier.stop()


def _add(listeners: list[Any], callback: Any) -> Callable[[], None]:
    """Append `callback` to `listeners`; a function that removes it again."""
    listeners.append(callback)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(callback)

    return unsubscribe


__all__ = ["AlarmEngine", "AlarmSink", "Notifier"]
