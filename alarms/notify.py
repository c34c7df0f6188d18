"""Delivery of alarm events to the notification channels.

The alarm engine hands every event to `Notifier.notify`, which never waits: each
channel has its own bounded queue and worker task, so a slow or dead channel delays
only itself. Here are decided routing (severity, area, plant-local time of day),
dedupe, per-channel rate limits, retries with capped exponential backoff, and, for
rules left unacknowledged, escalation and repeats. Whether a rule is acknowledged is
asked of the engine's state machine through the `is_acknowledged(rule_id)` callback.
Every attempt and every decision not to send goes to the delivery log, kept in memory
(bounded) and handed to the `on_delivery` callback (the runtime writes it to the
historian).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alarms.channels import Channel, build_channels, redact
from alarms.config import AlarmsConfig, RouteConfig
from compute.config import SiteConfig
from model.records import AlarmEvent, DeliveryRecord

log = logging.getLogger(__name__)

AckCheck = Callable[[str], bool]
"""Whether the current warning / alarm state of the rule with this id is acknowledged."""

Clock = Callable[[], datetime]
"""The current time, timezone-aware."""

DeliveryHook = Callable[[DeliveryRecord], None]
"""Takes every record of the delivery log as it is logged (e.g. to persist it)."""

_STATE_ZH = {"alarm": "报警", "warning": "预警", "normal": "正常"}
_SUMMARY_LINES = 20  # events listed one by one in a rate-limit summary


def never_acknowledged(rule_id: str) -> bool:
    """The acknowledgement check until the engine provides one: nothing is acknowledged."""
    return False


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class TokenBucket:
    """Rate limit: up to `burst` messages at once, then one every 60/`per_minute` s."""

    def __init__(self, burst: int, per_minute: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(burst)
        self.rate = per_minute / 60.0
        self.tokens = float(burst)
        self._now = monotonic
        self._t = monotonic()

    def _refill(self) -> None:
        now = self._now()
        self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self) -> bool:
        """Use up one token if there is one."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return max(0.0, (1.0 - self.tokens) / self.rate)


@dataclass
class _Item:
    event: AlarmEvent
    kind: str


@dataclass
class _Worker:
    channel: Channel
    queue: asyncio.Queue[_Item]
    bucket: TokenBucket
    guard_s: float  # hard limit on one send, beyond the channel's own timeouts
    secrets: tuple[str, ...]
    held: list[_Item] = field(default_factory=list)  # over the rate limit, for a summary
    current: _Item | None = None
    task: asyncio.Task[None] | None = None
    error: str | None = None  # last error logged, until the channel works again


@dataclass
class _Active:
    """A rule in warning or alarm: what escalation and repeats need."""

    event: AlarmEvent
    routes: list[int]
    since: datetime
    last_sent: dict[int, datetime]
    escalated: set[int] = field(default_factory=set)


def in_window(hhmm: str, start: str | None, end: str | None) -> bool:
    """Whether plant-local "HH:MM" is in [start, end); a window may pass midnight."""
    if start is None or end is None:
        return True
    if start < end:
        return start <= hhmm < end
    return hhmm >= start or hhmm < end


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _annotate(event: AlarmEvent, kind: str, minutes: float) -> AlarmEvent:
    """The event with a note saying why it is sent again."""
    m = f"{minutes:.0f}"
    if kind == "escalation":
        zh, en = f"【升级通知】已 {m} 分钟未确认。", f"[Escalation] not acknowledged for {m} min. "
    else:
        zh, en = f"【重复通知】已 {m} 分钟未确认。", f"[Repeat] not acknowledged for {m} min. "
    return dataclasses.replace(event, message=en + event.message,
                               message_zh=zh + event.message_zh)


class Notifier:
    """Routes alarm events to channels and delivers them (see the module doc)."""

    def __init__(self, alarms: AlarmsConfig, site: SiteConfig, *,
                 is_acknowledged: AckCheck = never_acknowledged, clock: Clock = utc_now,
                 origin: str = "configuration", tick_s: float = 10.0,
                 on_delivery: DeliveryHook | None = None) -> None:
        self.routes: list[RouteConfig] = list(alarms.routes)
        self.delivery = alarms.delivery
        self.site_name = f"{site.name_zh} {site.name}" if site.name_zh else site.name
        self.tz = ZoneInfo(site.timezone)
        self.is_acknowledged = is_acknowledged
        self.clock = clock
        self.tick_s = tick_s
        self.on_delivery = on_delivery
        self._on_delivery_failed = False
        self.channels: dict[str, Channel] = build_channels(alarms, site, origin)
        self._workers: dict[str, _Worker] = {}
        for cfg in alarms.channels:
            ch = self.channels[cfg.id]
            self._workers[cfg.id] = _Worker(
                ch, asyncio.Queue(maxsize=self.delivery.queue_size),
                TokenBucket(cfg.rate_limit.burst, cfg.rate_limit.per_minute),
                guard_s=3 * cfg.timeout_s + 1, secrets=tuple(getattr(ch, "secrets", ())))
        self._log: deque[DeliveryRecord] = deque(maxlen=self.delivery.log_size)
        # (channel, outcome) → records since start, for /metrics; the log above is bounded.
        self.outcome_counts: Counter[tuple[str, str]] = Counter()
        self._last: dict[str, tuple[str, datetime]] = {}  # rule → last state notified, when
        self._active: dict[str, _Active] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._unknown_logged: set[str] = set()
        self._stopped = False

    # ---- what the engine calls ---------------------------------------------------------

    def notify(self, event: AlarmEvent, channels: Sequence[str] = (),
               area: str | None = None) -> None:
        """Route one event (plus the rule's own `channels`) to the channel queues; never waits.

        `area` (default: the event's own) is matched against the routes' `areas`. Only
        condition changes are deduplicated: a re-announcement (e.g. unshelve) always goes.
        """
        self._ensure_started()
        now = self.clock()
        if area is None:
            area = str(getattr(event, "area", ""))
        routes = self._routes_for(event.state, area, now)
        targets = _unique([*channels, *(c for i in routes for c in self.routes[i].channels)])
        last = self._last.get(event.rule)
        window = self.delivery.dedupe_window_s
        if (last is not None and last[0] == event.state
                and getattr(event, "cause", "condition") == "condition"
                and (now - last[1]).total_seconds() < window):
            for cid in targets:
                self._record(cid, event, "event", "deduplicated",
                             error=f"same state notified within {window:g} s")
            return
        self._last[event.rule] = (event.state, now)
        previous = self._active.pop(event.rule, None)
        if event.state == "normal":
            if previous is not None:  # whoever was escalated to hears of the recovery too
                targets = _unique([*targets, *(c for i in sorted(previous.escalated)
                                               for c in self.routes[i].escalate_to)])
        else:
            self._active[event.rule] = _Active(event, routes, now, dict.fromkeys(routes, now))
        self._enqueue(targets, event, "event")

    def tick(self) -> None:
        """Send the repeats and escalations that are due; runs every `tick_s` once started."""
        now = self.clock()
        for rule, act in list(self._active.items()):
            if self._acknowledged(rule):
                continue
            minutes = (now - act.since).total_seconds() / 60
            for i in act.routes:
                route = self.routes[i]
                if (route.repeat_min is not None
                        and (now - act.last_sent[i]).total_seconds() / 60 >= route.repeat_min):
                    act.last_sent[i] = now
                    extra = route.escalate_to if i in act.escalated else []
                    self._enqueue(_unique([*route.channels, *extra]),
                                  _annotate(act.event, "repeat", minutes), "repeat")
                if (route.escalate_after_min is not None and i not in act.escalated
                        and minutes >= route.escalate_after_min):
                    act.escalated.add(i)
                    self._enqueue(route.escalate_to,
                                  _annotate(act.event, "escalation", minutes), "escalation")

    def forget(self, rule: str) -> None:
        """Drop a rule's repeats, escalation and dedupe memory (the rule was removed)."""
        self._active.pop(rule, None)
        self._last.pop(rule, None)

    async def start(self) -> None:
        """Start one worker per channel and the repeat / escalation timer."""
        self._stopped = False
        self._ensure_started()

    def _ensure_started(self) -> None:
        """Start the tasks if not yet done (notify starts them too, in a running loop)."""
        if self._ticker is not None or self._stopped:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: queue now, the tasks start with the loop
            return
        for cid, w in self._workers.items():
            w.task = asyncio.create_task(self._work(w), name=f"notify:{cid}")
        self._ticker = asyncio.create_task(self._tick_loop(), name="notify:tick")

    async def stop(self, grace_s: float = 2.0) -> None:
        """Let queued messages go out for up to `grace_s`, then cancel; log what was left."""
        self._stopped = True  # a late notify queues but starts nothing
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        joins = [asyncio.ensure_future(w.queue.join()) for w in self._workers.values()
                 if w.task is not None]
        if joins:
            await asyncio.wait(joins, timeout=grace_s)
            for j in joins:
                j.cancel()
        # No await between this snapshot and the cancel: what is in flight now is lost.
        in_flight = {cid: w.current for cid, w in self._workers.items()}
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for cid, w in self._workers.items():
            w.task = None
            current = in_flight[cid]
            left = [*([current] if current is not None else []), *w.held]
            w.current, w.held = None, []
            while not w.queue.empty():
                left.append(w.queue.get_nowait())
                w.queue.task_done()
            for item in left:
                self._record(cid, item.event, item.kind, "dropped", error="not sent before stop")
            if left:
                log.warning("alarm channel %s: %d notification(s) not sent before stop",
                            cid, len(left))

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """The delivery log, oldest first (the most recent `delivery.log_size` records)."""
        return list(self._log)

    # ---- routing -----------------------------------------------------------------------

    def _routes_for(self, state: str, area: str, now: datetime) -> list[int]:
        hhmm = now.astimezone(self.tz).strftime("%H:%M")
        return [i for i, r in enumerate(self.routes)
                if state in r.severities and (not r.areas or area in r.areas)
                and in_window(hhmm, r.start, r.end)]

    def _acknowledged(self, rule: str) -> bool:
        try:
            return bool(self.is_acknowledged(rule))
        except Exception as exc:  # an ack check that fails must not stop notification
            log.error("acknowledgement check for rule %s failed (%s: %s); treated as "
                      "not acknowledged", rule, type(exc).__name__, exc)
            return False

    # ---- queues and delivery -----------------------------------------------------------

    def _record(self, channel: str, event: AlarmEvent, kind: str, outcome: str,
                attempt: int = 0, error: str = "") -> None:
        record = DeliveryRecord(self.clock().astimezone(UTC), channel, event.rule,
                                event.state, kind, outcome, attempt, error)
        self._log.append(record)
        self.outcome_counts[(channel, outcome)] += 1
        if self.on_delivery is None:
            return
        try:
            self.on_delivery(record)
        except Exception:  # the log's keeper must not stop delivery
            if not self._on_delivery_failed:
                log.exception("delivery log callback failed (logged once until it works)")
                self._on_delivery_failed = True
            return
        if self._on_delivery_failed:
            log.info("delivery log callback works again")
            self._on_delivery_failed = False

    def _enqueue(self, channels: Iterable[str], event: AlarmEvent, kind: str) -> None:
        for cid in channels:
            w = self._workers.get(cid)
            if w is None:
                self._record(cid, event, kind, "dropped", error=f"unknown channel {cid!r}")
                if cid not in self._unknown_logged:
                    log.error("alarm rule %s names unknown channel %r", event.rule, cid)
                    self._unknown_logged.add(cid)
                continue
            if w.queue.full():
                old = w.queue.get_nowait()
                w.queue.task_done()
                self._record(cid, old.event, old.kind, "dropped",
                             error=f"queue full ({w.queue.maxsize}): oldest dropped")
                log.error("alarm channel %s: queue full, oldest notification dropped", cid)
            w.queue.put_nowait(_Item(event, kind))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:  # the timer must survive a bug in one round
                log.exception("alarm notification timer failed")

    async def _work(self, w: _Worker) -> None:
        cid = w.channel.id
        while True:
            if w.held and w.bucket.wait_s() <= 0:
                summary = self._summary(w.held)
                w.held = []
                w.bucket.take()
                await self._deliver(w, summary)
                continue
            if w.held:
                try:
                    item = await asyncio.wait_for(w.queue.get(), w.bucket.wait_s())
                except TimeoutError:
                    continue
            else:
                item = await w.queue.get()
            try:
                if w.bucket.take():
                    await self._deliver(w, item)
                else:
                    if not w.held:
                        log.warning("alarm channel %s: rate limit reached; holding "
                                    "notifications for one summary", cid)
                    w.held.append(item)
                    self._record(cid, item.event, item.kind, "rate_limited",
                                 error="over the rate limit: held for a summary")
            finally:
                w.queue.task_done()

    def _error_text(self, exc: Exception, w: _Worker) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            text = f"no answer within {w.guard_s:g} s"
        else:
            text = str(exc) or type(exc).__name__
        return redact(text, w.secrets)

    async def _deliver(self, w: _Worker, item: _Item) -> None:
        """Send with retries and capped exponential backoff; log every attempt."""
        cid = w.channel.id
        d = self.delivery
        tries = d.retries + 1
        w.current = item
        try:
            for attempt in range(1, tries + 1):
                try:
                    await asyncio.wait_for(w.channel.send(item.event, self.site_name),
                                           w.guard_s)
                except Exception as exc:  # any failure of one channel stays in its worker
                    text = self._error_text(exc, w)
                    if attempt < tries:
                        self._record(cid, item.event, item.kind, "retry", attempt, text)
                        log.debug("alarm channel %s try %d failed: %s", cid, attempt, text)
                        await asyncio.sleep(min(d.backoff_max_s,
                                                d.backoff_initial_s * 2 ** (attempt - 1)))
                        continue
                    self._record(cid, item.event, item.kind, "failed", attempt, text)
                    if w.error != text:
                        log.error("alarm channel %s failed after %d tries: %s", cid, tries, text)
                        w.error = text
                    return
                self._record(cid, item.event, item.kind, "sent", attempt)
                if w.error is not None:
                    log.info("alarm channel %s works again", cid)
                    w.error = None
                return
        finally:
            w.current = None

    def _summary(self, held: list[_Item]) -> _Item:
        """One message standing for the notifications held back by the rate limit."""
        latest = held[-1].event
        lines_zh, lines_en = [], []
        for it in held[:_SUMMARY_LINES]:
            e = it.event
            hhmm = e.t.astimezone(self.tz).strftime("%H:%M")
            lines_zh.append(f"{hhmm} {e.rule} {_STATE_ZH.get(e.previous, e.previous)}→"
                            f"{_STATE_ZH.get(e.state, e.state)}")
            lines_en.append(f"{hhmm} {e.rule} {e.previous}→{e.state}")
        more = len(held) - _SUMMARY_LINES
        if more > 0:
            lines_zh.append(f"另 {more} 条")
            lines_en.append(f"{more} more")
        zh = (f"【限流汇总】发送过于频繁，{len(held)} 条通知合并为本条：{'；'.join(lines_zh)}。"
              f"最新：{latest.message_zh}")
        en = (f"[Rate limit summary] {len(held)} notifications merged into this one: "
              f"{'; '.join(lines_en)}. Latest: {latest.message}")
        return _Item(dataclasses.replace(latest, message=en, message_zh=zh), "summary")
