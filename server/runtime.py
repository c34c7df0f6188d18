"""The runtime: builds every stage from the configuration, runs the minute cycle, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from compute import kernels
from compute.clock import PlantClock
from compute.minute import MinuteArrays, MinuteCalculator
from compute.tagstore import TagStore
from compute.totals import Totals
from drivers.base import Driver, Simulator, create_driver, create_simulators
from server.config import PlantConfig
from server.historian import Historian
from server.records import (
    AlarmEvent,
    DataFlag,
    MinuteResult,
    Sample,
    SiteMinute,
    SourceMinute,
    TagMinute,
    UnitMinute,
)
from server.sinks import QueuedSink, Sink

log = logging.getLogger("carbonscada")


class Runtime:
    """One site's server: drivers → tag store → minute cycle → sinks."""

    def __init__(self, config: PlantConfig, *, started_at: float | None = None) -> None:
        self.config = config
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
        self.calc = MinuteCalculator(config)
        poll_min = min((d.poll_interval_s for d in config.devices), default=1.0)
        # Room for three minutes of samples at the fastest poll rate.
        self.store = TagStore(self.calc.tag_ids,
                              math.ceil(3 * config.clock.minute_seconds / poll_min) + 16)
        self.totals = Totals(self.clock)
        self.historian = Historian(config.historian.path)
        self._sinks: list[QueuedSink] = []
        self._simulators: list[Simulator] = []
        self._drivers: list[Driver] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._started_at = started_at if started_at is not None else time.monotonic()
        self._first_published = False
        self._flag_names = {int(f): f for f in DataFlag}
        self.ready = asyncio.Event()

    def _build_sinks(self) -> list[Sink]:
        # Imported here so that `check-config` does not pay for asyncua / aiohttp imports.
        from alarms.engine import AlarmSink
        from server.influx import InfluxSink
        from server.opcua import OpcUaSink
        from web.app import WebSink

        cfg = self.config
        sinks: list[Sink] = [self.historian]
        alarms = AlarmSink(cfg)
        web: WebSink | None = None
        if cfg.opcua.enabled:
            sinks.append(OpcUaSink(cfg))
        if cfg.influx is not None:
            sinks.append(InfluxSink(cfg.influx, cfg.site.id))
        if cfg.web.enabled:
            web = WebSink(cfg)
            sinks.append(web)
        sinks.append(alarms)

        def on_alarm(event: AlarmEvent) -> None:
            if web is not None:
                web.on_alarm(event)
            self._spawn(self.historian.record_alarm(event))
        alarms.subscribe(on_alarm)
        return sinks

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def start(self) -> None:
        """Start every stage; on failure, stop what was started and re-raise."""
        try:
            await asyncio.to_thread(kernels.warm_up)
            sinks = self._build_sinks()
            for sink in sinks:
                queued = QueuedSink(sink)
                await queued.start()
                self._sinks.append(queued)
            await self._seed_totals()
            self._simulators = create_simulators(self.config.devices, self.config.site.timezone)
            for sim in self._simulators:
                await sim.start()
            for dev in self.config.devices:
                driver = create_driver(dev)
                self._drivers.append(driver)
                self._tasks.append(asyncio.create_task(driver.run(self._ingest),
                                                       name=f"driver:{dev.id}"))
            self._tasks.append(asyncio.create_task(self._minute_loop(), name="minute-cycle"))
        except BaseException:
            await self.stop()
            raise
        self.ready.set()

    async def _seed_totals(self) -> None:
        now = datetime.now(UTC)
        h, d, y = self.clock.hour_start(now), self.clock.day_start(now), self.clock.year_start(now)
        for _, src in self.config.sources():
            src_id = src.id
            sums = [await self.historian.sum_since("source_minute", src_id, "co2_kg", p)
                    for p in (h, d, y)]
            self.totals.seed(f"{src_id}.co2_kg", now, *sums)
        for unit in self.config.units:
            for column in ("co2_kg", "output_mwh"):
                sums = [await self.historian.sum_since("unit_minute", unit.id, column, p)
                        for p in (h, d, y)]
                self.totals.seed(f"{unit.id}.{column}", now, *sums)

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
            if not self._first_published:
                self._first_published = True
                log.info("first minute %s published %.2f s after process start",
                         result.t.isoformat(), time.monotonic() - self._started_at)
            end += minute

    def run_minute(self, start: datetime, end: datetime) -> MinuteResult:
        """Calculate the minute [start, end) from the buffered samples."""
        window = self.store.take(start.timestamp(), end.timestamp())
        arrays = self.calc.compute(window)
        return self._records(start, arrays)

    def _records(self, t: datetime, a: MinuteArrays) -> MinuteResult:
        flag = self._flag_names
        tags = tuple(
            TagMinute(tag, t, float(a.tag_mean[i]), float(a.tag_min[i]), float(a.tag_max[i]),
                      int(a.tag_count[i]), flag[int(a.tag_flag[i])])
            for i, tag in enumerate(self.calc.tag_ids))
        sources = []
        for i, (unit, src) in enumerate(self.config.sources()):
            row = a.cems[i]
            mass = float(row[kernels.OUT_MASS])
            run = self.totals.add(f"{src.id}.co2_kg", t, mass)
            f = flag[int(a.source_flag[i])]
            sources.append(SourceMinute(
                source=src.id, unit=unit.id, t=t,
                flow_act_m3_h=float(row[kernels.OUT_FLOW_ACT]),
                flow_std_dry_m3_h=float(row[kernels.OUT_FLOW_SD]),
                co2_dry_pct=float(row[kernels.OUT_CO2_DRY]),
                co2_mg_m3=float(row[kernels.OUT_CO2_MG]),
                co2_rate_kg_h=float(row[kernels.OUT_RATE]), co2_kg=mass,
                valid=f is DataFlag.N, flag=f, co2_hour_t=run.hour / 1000,
                co2_today_t=run.day / 1000, co2_ytd_t=run.year / 1000))
        units = []
        site_kg = site_day = site_year = 0.0
        for i, unit in enumerate(self.config.units):
            co2 = float(a.unit_co2_kg[i])
            out = float(a.unit_output_mwh[i])
            c = self.totals.add(f"{unit.id}.co2_kg", t, co2)
            o = self.totals.add(f"{unit.id}.output_mwh", t, out)
            f = flag[int(a.unit_flag[i])]
            units.append(UnitMinute(
                unit=unit.id, t=t, output_mwh=out, co2_kg=co2,
                intensity_t_mwh=co2 / 1000 / out if out > 0 else math.nan,
                valid=f is DataFlag.N, flag=f, co2_today_t=c.day / 1000,
                output_today_mwh=o.day,
                intensity_today_t_mwh=c.day / 1000 / o.day if o.day > 0 else math.nan,
                co2_ytd_t=c.year / 1000))
            if not math.isnan(co2):
                site_kg += co2
            site_day += c.day / 1000
            site_year += c.year / 1000
        annual = self.config.allowance.annual_t
        site = SiteMinute(
            t=t, co2_kg=site_kg, co2_today_t=site_day, co2_ytd_t=site_year,
            allowance_annual_t=annual,
            allowance_used_pct=site_year / annual * 100 if annual > 0 else math.nan,
            allowance_headroom_t=annual - site_year if annual > 0 else math.nan)
        return MinuteResult(t=t, sources=tuple(sources), units=tuple(units), site=site,
                            tags=tags)

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
