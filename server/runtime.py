"""The runtime: builds every stage from the configuration, runs the minute cycle, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from compute import kernels, periods
from compute.cycle import MinuteCycle
from compute.periods import PeriodCycle, minute_batch, windows_batch
from compute.tagstore import TagStore
from drivers.base import Driver, Simulator, create_drivers, create_simulators
from model.errors import ConfigError
from model.records import AlarmEvent, DeviceEvent, MinuteResult, PeriodRecords, Sample
from server.audit import AuditLog, canonical_json
from server.config import PlantConfig, with_alarm_rules
from server.historian import Historian
from server.sinks import QueuedSink, Sink
from server.users import UserStore

if TYPE_CHECKING:
    from alarms.engine import AlarmSink

log = logging.getLogger("carbonscada")


class Runtime:
    """One site's server: drivers → tag store → minute cycle → sinks, hours and days."""

    def __init__(self, config: PlantConfig, *, started_at: float | None = None) -> None:
        self.config = config
        self.cycle = MinuteCycle(config)
        self.clock = self.cycle.clock
        poll_min = min((d.poll_interval_s for d in config.devices), default=1.0)
        # Room for three minutes of samples at the fastest poll rate.
        self.store = TagStore(self.cycle.calc.tag_ids,
                              math.ceil(3 * config.clock.minute_seconds / poll_min) + 16)
        self.historian = Historian(config.historian.path)
        # Accounts and the audit log live in the historian's file, beside the alarm journal.
        self.users = UserStore(config.historian.path)
        self.audit = AuditLog(config.historian.path)
        file_rules = [r.model_dump(mode="json") for r in config.alarms.rules]
        self.file_rules_hash = hashlib.sha256(canonical_json(file_rules).encode()).hexdigest()
        self._rules_in_force: list[dict[str, Any]] = []  # the alarm sink's, before a change
        self.periods = PeriodCycle(config)
        self._sinks: list[QueuedSink] = []
        self._simulators: list[Simulator] = []
        self._drivers: list[Driver] = []
        self._alarms: AlarmSink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[object]] = set()
        self._started_at = started_at if started_at is not None else time.monotonic()
        self._first_published = False
        self.ready = asyncio.Event()

    async def _prepare_records(self) -> PlantConfig:
        """Accounts, the configuration's audit entry and the alarm rules in force.

        Alarm rules an engineer changed through the API are kept in the historian with a
        hash of the file's rules they were made on: they apply while the file's rules are
        unchanged; once the file is edited, the file wins (and the log says so).
        """
        cfg, h = self.config, self.historian
        if cfg.web.enabled and cfg.web.demo_users:
            for name in await asyncio.to_thread(self.users.ensure_demo_users):
                log.warning("demo account %r created (password demo-%s): demo plants only",
                            name, name)
                await asyncio.to_thread(self.audit.append, "system", "user_add",
                                        f"user:{name}", {"role": name, "demo": True})
        digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()
        last = await asyncio.to_thread(self.audit.latest, "config_changed")
        if last is None or last.detail.get("sha256") != digest:
            await asyncio.to_thread(
                self.audit.append, "system", "config_changed", f"site:{cfg.site.id}",
                {"sha256": digest, "previous": None if last is None else last.detail["sha256"]})
        stored = await h.load_alarm_rules()
        if stored is None:
            return cfg
        when = stored.t.isoformat()
        if stored.config_hash != self.file_rules_hash:
            log.warning("the configuration file's alarm rules changed after %s changed them "
                        "through the API at %s: the file's rules apply", stored.user, when)
            return cfg
        try:
            cfg = with_alarm_rules(cfg, stored.rules, f"{h.path} (alarm rules of {when})")
        except ConfigError as exc:
            log.error("stored alarm rules no longer fit the plant, the file's apply: %s", exc)
            return cfg
        log.info("alarm rules as changed by %s at %s apply (%d rules): %s", stored.user, when,
                 len(cfg.alarms.rules), stored.comment)
        return cfg

    def _build_sinks(self, cfg: PlantConfig) -> list[Sink]:
        # Imported here so that `check-config` does not pay for asyncua / aiohttp imports.
        from alarms.engine import AlarmSink
        from server.influx import InfluxSink
        from server.opcua import OpcUaSink
        from web.app import WebSink

        h = self.historian
        alarms = self._alarms = AlarmSink(
            cfg, on_delivery=lambda rec: self._spawn(h.record_delivery(rec)))
        sinks: list[Sink] = []
        listeners: list[Callable[[AlarmEvent], None]] = []
        if cfg.opcua.enabled:
            opcua = OpcUaSink(cfg, alarms=alarms, audit=self.audit, users=self.users)
            sinks.append(opcua)
            listeners.append(opcua.on_alarm)
        if cfg.influx is not None:
            sinks.append(InfluxSink(cfg.influx, cfg.site.id))
        if cfg.web.enabled:
            web = WebSink(cfg, history=h, devices=self.device_status, users=self.users,
                          audit=self.audit, alarms=alarms, journal=h)
            sinks.append(web)
            listeners.append(web.on_alarm)
        sinks.append(alarms)

        def on_alarm(event: AlarmEvent) -> None:
            self._spawn(h.record_alarm(event))
            for listener in listeners:
                listener(event)
        alarms.subscribe(on_alarm)
        alarms.on_rules_changed(self._rules_changed)
        self._rules_in_force = alarms.rules_config()
        return sinks

    def _rules_changed(self, rules: list[dict[str, Any]], user: str, comment: str,
                       t: datetime) -> None:
        """Keep an engineer's rule change across restarts and audit it, rule by rule."""
        before = {r["id"]: r for r in self._rules_in_force}
        after = {r["id"]: r for r in rules}
        self._rules_in_force = rules
        detail = {"comment": comment,
                  "added": [after[k] for k in after if k not in before],
                  "removed": [before[k] for k in before if k not in after],
                  "changed": [{"before": before[k], "after": after[k]} for k in after
                              if k in before and before[k] != after[k]]}
        self._spawn(self.historian.save_alarm_rules(rules, self.file_rules_hash, user, comment, t))
        self._spawn(asyncio.to_thread(self.audit.append, user, "alarm_rules_changed",
                                      "alarm-rules", detail, t))

    def _on_device_event(self, event: DeviceEvent) -> None:
        if self._alarms is not None:  # communication-loss rules; the bus has logged it
            self._alarms.on_device_event(event)

    def device_status(self) -> list[dict[str, Any]]:
        """Every bus with its counters and the counters of each device on it."""
        return [{**asdict(d.bus_stats()), "devices": [asdict(s) for s in d.stats()]}
                for d in self._drivers]

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def start(self) -> None:
        """Start every stage; on failure, stop what was started and re-raise."""
        try:
            await asyncio.to_thread(kernels.warm_up)
            await asyncio.to_thread(periods.warm_up)
            historian = QueuedSink(self.historian)
            await historian.start()
            self._sinks.append(historian)
            cfg = await self._prepare_records()
            sinks = self._build_sinks(cfg)
            if self._alarms is not None:  # before the web and OPC UA seed their alarm lists
                self._alarms.restore(await self.historian.last_alarm_events())
            for sink in sinks:
                queued = QueuedSink(sink)
                await queued.start()
                self._sinks.append(queued)
            await self._seed_totals()
            await self._restore_periods()
            self._simulators = create_simulators(self.config.devices, self.config.site.timezone)
            for sim in self._simulators:
                await sim.start()
            self._drivers = create_drivers(self.config.devices, self._on_device_event)
            for driver in self._drivers:
                self._tasks.append(asyncio.create_task(driver.run(self._ingest),
                                                       name=f"bus:{driver.name}"))
            self._tasks.append(asyncio.create_task(self._minute_loop(), name="minute-cycle"))
        except BaseException:
            await self.stop()
            raise
        self.ready.set()

    async def _seed_totals(self) -> None:
        now = datetime.now(UTC)
        starts = (self.clock.hour_start(now), self.clock.day_start(now),
                  self.clock.year_start(now))
        stored = [("source_minute", "co2_kg", [s.id for _, s in self.config.sources()]),
                  ("unit_minute", "co2_kg", [u.id for u in self.config.units]),
                  ("unit_minute", "output_mwh", [u.id for u in self.config.units])]
        for table, column, ids in stored:
            sums = await self.historian.period_sums(table, column, starts)
            for key in ids:
                self.cycle.totals.seed(f"{key}.{column}", now, *sums.get(key, (0.0, 0.0, 0.0)))

    async def _restore_periods(self) -> None:
        """Continue the hours and days where the historian left them (after a restart)."""
        h = self.historian
        await h.record_factor_versions(self.config.factors)
        now = datetime.now(UTC)
        last = await h.last_period("hour")
        hour_s = 60 * self.config.clock.minute_seconds
        hours, days = [], []
        if last is None:  # a new historian, or none of its hours closed yet: this hour's
            open_hour = self.clock.hour_start(now)  # minutes, if it has them, open it
        else:
            hours = await h.periods("hour", last - timedelta(
                seconds=(self.periods.lookback_h + 26) * hour_s), last + timedelta(seconds=1))
            open_hour = self.clock.next_hour(last)
            since = min(self.clock.year_bounds(open_hour)[0],
                        open_hour - timedelta(seconds=31 * 24 * hour_s))
            days = await h.periods("day", since, open_hour)
            self.periods.restore(hours, days)
        for i, tag in enumerate(self.periods.counter_tags):
            reading = await h.last_reading(tag, open_hour)
            if reading is not None:
                self.periods.restore_counter(i, *reading)
        tag_ids = tuple(self.cycle.calc.tag_ids)
        windows = [w for w in await h.raw_windows(open_hour, now) if w[1].tags == tag_ids]
        if windows:
            for rec in self.periods.add(windows_batch(self.cycle.calc, windows,
                                                      self.periods.counter_tags)):
                self._publish_period(rec)
        # Clients see the last closed hour and day (and the allowance) at once.
        for rec in (*hours[-1:], *days[-1:]):
            self._publish_period(rec, stored=True)
        if hours or windows:
            log.info("hours and days continue from %s (%d hours, %d days, %d minutes read "
                     "back)", open_hour.isoformat(), len(hours), len(days), len(windows))

    def _publish_period(self, rec: PeriodRecords, *, stored: bool = False) -> None:
        for sink in self._sinks:
            if sink.takes_periods and not (stored and sink.sink is self.historian):
                sink.submit_period(rec)

    def _close_periods(self, result: MinuteResult) -> None:
        """Hand the minute to the period stage; publish the hours and days it closes."""
        try:
            closed = self.periods.add(minute_batch(result, self.periods.counter_tags))
        except Exception:  # a fault here must not stop the minute results
            log.exception("hour / day calculation failed at minute %s", result.t.isoformat())
            return
        for rec in closed:
            self._publish_period(rec)

    def _ingest(self, samples: Sequence[Sample]) -> None:
        index = self.store.index
        for s in samples:
            i = index.get(s.tag)
            if i is not None:
                self.store.append(i, s.t.timestamp(), s.value, int(s.flag))
        for sink in self._sinks:
            sink.submit_samples(samples)

    async def _minute_loop(self) -> None:
        minute = timedelta(seconds=self.config.clock.minute_seconds)
        # Wait a little past the boundary so that polls in flight at the boundary land.
        grace = min(0.2 * minute.total_seconds(), 2.0)
        end = self.clock.next_minute(datetime.now(UTC))
        while True:
            delay = (end - datetime.now(UTC)).total_seconds() + grace
            if delay > 0:
                await asyncio.sleep(delay)
            result = self.run_minute(end - minute, end)
            for sink in self._sinks:
                sink.submit_minute(result)
            # After the minute is out: closing an hour or a day never delays it.
            self._close_periods(result)
            if not self._first_published:
                self._first_published = True
                log.info("first minute %s published %.2f s after process start",
                         result.t.isoformat(), time.monotonic() - self._started_at)
            end += minute

    def run_minute(self, start: datetime, end: datetime) -> MinuteResult:
        """Calculate the minute [start, end) from the buffered samples."""
        return self.cycle.run(start, self.store.take(start.timestamp(), end.timestamp()))

    async def stop(self) -> None:
        """Cancel drivers and the minute cycle, stop simulators, drain and stop sinks."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sim in self._simulators:
            await sim.stop()
        self._simulators.clear()
        # Alarms (last) may still push into the historian: stop in reverse order.
        for sink in reversed(self._sinks):
            await sink.drain()
        if self._side_tasks:
            await asyncio.wait(self._side_tasks, timeout=5)
        for sink in reversed(self._sinks):
            await sink.stop()
        self._sinks.clear()
