"""The alarm engine and sink: rules evaluated each minute, ISA-18.2 states, notifications.

`AlarmEngine` is synchronous and does no I/O: the vectorised `RuleBank` evaluates all
rules, and the per-rule `AlarmState` machines are touched only for rules whose
condition or suppression changed, or that an operator acts on. `AlarmSink` runs it as
a sink of the runtime and hands every event to its listeners (alarm journal, web) and
the events to be announced to the notification channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from alarms.email import EmailChannel
from alarms.rules import Changes, RuleBank, RuleSpec
from alarms.state import (
    MAX_SHELVE,
    NORMAL,
    AlarmActionError,
    AlarmState,
    annunciates,
)
from server.config import EmailChannelConfig, PlantConfig
from server.records import (
    AlarmEvent,
    AuditRecord,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    Sample,
)

log = logging.getLogger(__name__)

RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0)
"""Waits between the tries of one notification: 3 tries in all."""

MAX_EVENTS = 1000
"""How many recent events `AlarmSink.events` keeps in memory (the historian keeps all)."""

Listener = Callable[[AlarmEvent], None]


class AlarmEngine:
    """Every alarm rule of a plant with its alarm state; synchronous, no I/O."""

    def __init__(self, config: PlantConfig, *, max_shelve: timedelta = MAX_SHELVE) -> None:
        self.bank = RuleBank(config)
        self.specs: list[RuleSpec] = self.bank.specs
        self.alarms = [AlarmState(s.info, max_shelve=max_shelve) for s in self.specs]
        self.index = {s.id: i for i, s in enumerate(self.specs)}
        self._shelved: set[int] = set()

    def alarm(self, rule: str) -> AlarmState:
        """The alarm state of one rule; KeyError naming it if there is no such rule."""
        try:
            return self.alarms[self.index[rule]]
        except KeyError:
            raise KeyError(f"no alarm rule {rule!r}") from None

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


class AlarmSink:
    """Sink that runs the alarm engine and sends its events to listeners and channels.

    Listeners get every event (the alarm journal, the web HMI); notification channels
    get the events that `annunciates` — condition changes of alarms that are not
    shelved, suppressed or out of service. With a `notifier` the channels are its
    business; without one, the built-in email path below sends them (the seam:
    `_notify`).
    """

    name = "alarms"

    def __init__(self, config: PlantConfig, *,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
                 stop_grace_s: float = 2.0, notifier: Notifier | None = None) -> None:
        site = config.site
        self.site_name = f"{site.name_zh} {site.name}" if site.name_zh else site.name
        self.engine = AlarmEngine(config)
        self.rules = self.engine.specs
        self.notifier = notifier
        self.channels: dict[str, EmailChannel] = {
            c.id: EmailChannel(c, site.timezone) for c in config.alarms.channels
            if isinstance(c, EmailChannelConfig)}
        known = {c.id for c in config.alarms.channels}
        for rule in self.rules:
            for ch in rule.notify:
                if ch not in known:
                    raise ValueError(f"alarm rule {rule.id!r}: unknown channel {ch!r}")
        self.events: list[AlarmEvent] = []
        self.retry_delays_s = tuple(retry_delays_s)
        self.stop_grace_s = stop_grace_s
        self._listeners: list[Listener] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._channel_error: dict[str, str] = {}  # last error logged per channel
        self._listener_error: dict[int, str] = {}

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call `callback` with every future event; returns a function that unsubscribes."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def active(self) -> list[AlarmEvent]:
        """The latest event of each rule whose condition is not normal."""
        return self.engine.active()

    def alarm_list(self) -> list[AlarmEvent]:
        """The latest event of each rule not in the normal state (what the HMI lists)."""
        return self.engine.alarm_list()

    def is_acknowledged(self, rule: str) -> bool:
        """Whether a rule's alarm needs no repeats or escalation: acknowledged, or shelved,
        suppressed or out of service (the notifier's `is_acknowledged` callback)."""
        alarm = self.engine.alarm(rule)
        return alarm.acked or alarm.masked

    async def start(self) -> None:
        """Start the notifier if there is one; the built-in email path connects per message."""
        if self.notifier is not None:
            await self.notifier.start()

    async def on_samples(self, samples: Sequence[Sample]) -> None:
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

    def expire_shelves(self, t: datetime | None = None) -> None:
        """Unshelve what has expired by `t` (each minute does this; call it between too)."""
        self._dispatch_all(self.engine.expire_shelves(t or datetime.now(UTC)))

    def acknowledge(self, rule: str, user: str, comment: str,
                    t: datetime | None = None) -> AuditRecord:
        """Acknowledge a rule's alarm; the audit record for the caller to write.

        Raises AlarmActionError without a user or comment or with nothing to acknowledge,
        KeyError for an unknown rule.
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
            try:
                listener(event)
            except Exception as exc:  # one bad listener must not stop the others
                text = f"{type(exc).__name__}: {exc}"
                if self._listener_error.get(id(listener)) != text:
                    log.error("alarm listener %r failed: %s", listener, text)
                    self._listener_error[id(listener)] = text
        if annunciates(event):
            self._notify(event, self.rules[self.engine.index[event.rule]].notify)

    def _notify(self, event: AlarmEvent, channels: Sequence[str]) -> None:
        """The seam to the notifier: with one, hand it the event; else send email here."""
        if self.notifier is not None:
            self.notifier.notify(event, channels)
            return
        for ch in channels:
            channel = self.channels.get(ch)
            if channel is None:  # a channel kind only the notifier can send
                continue
            task = asyncio.create_task(self._send(channel, event),
                                       name=f"alarm-send:{ch}:{event.rule}")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, channel: EmailChannel, event: AlarmEvent) -> None:
        """Send with retries; log a channel's failure once until it recovers."""
        tries = len(self.retry_delays_s) + 1
        for attempt in range(tries):
            try:
                await channel.send(event, self.site_name)
            except Exception as exc:
                if attempt + 1 < tries:
                    log.debug("channel %s try %d failed: %s", channel.id, attempt + 1, exc)
                    await asyncio.sleep(self.retry_delays_s[attempt])
                    continue
                text = str(exc)
                if self._channel_error.get(channel.id) != text:
                    log.error("alarm channel %s failed after %d tries: %s",
                              channel.id, tries, text)
                    self._channel_error[channel.id] = text
                return
            if self._channel_error.pop(channel.id, None) is not None:
                log.info("alarm channel %s works again", channel.id)
            return

    async def stop(self) -> None:
        """Let in-flight sends finish for a short grace period, then cancel the rest."""
        if self.notifier is not None:
            await self.notifier.stop()
        pending = set(self._sends)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.stop_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["AlarmActionError", "AlarmEngine", "AlarmSink", "AuditRecord", "Notifier"]
