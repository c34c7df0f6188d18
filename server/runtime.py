"""The runtime: builds every stage from the configuration, runs the minute cycle, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from alarms.persistence import RulePersistence
from compute import kernels, periods, tagstore
from compute.assets import CompliancePosition, deadline_of
from compute.co2e_today import CO2eToday
from compute.cycle import PAIRED_CO2, PAIRED_OUTPUT, MinuteCycle
from compute.hour_co2 import HourCO2
from compute.minute import MinuteCalculator
from compute.performance import Performance
from compute.periods import PeriodCycle, minute_batch, windows_batch
from compute.tagstore import TagStore
from compute.totals import Totals
from drivers.base import Driver, Simulator, create_drivers, create_simulators
from model.errors import SinkError
from model.records import (
    AlarmEvent,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    RevisedMinutes,
    RevisedPeriod,
    SampleBlock,
    TagTable,
)
from model.times import MAX_YEAR, MIN_YEAR
from server import heap
from server.assets import AssetKeeper
from server.audit import AuditLog
from server.cases import CaseKeeper
from server.config import Plant, PlantConfig
from server.filelock import HistorianLock
from server.historian import Historian
from server.metrics import Monitor
from server.performance import PerformanceKeeper
from server.records import RecordKeeper
from server.sinks import AlarmListener, QueuedSink, Sink
from server.users import UserStore
from web.collaborators import RawTags

if TYPE_CHECKING:
    from alarms.engine import AlarmSink
    from server.backup import BackupScheduler
    from server.calibration import CalibrationMonitor
    from server.conformity import ConformityMonitor

log = logging.getLogger("carbonscada")

SAMPLE_BATCH_S = 0.05  # raw readings reach the sinks in blocks of this interval
POLL_CHECK_S = 0.01  # how often a closing minute looks whether every device polled past it
OVERFLOW_LOG_S = 3600.0  # a tag-store overflow is logged at most this often
# At most this long after start, the minute cycle waits for every device's first poll
# (answered or failed) before it picks its first minute; a device still connecting then
# is a device failing, and its minutes are flagged.
FIRST_POLLS_WAIT_S = 10.0


# The sinks a plant may have, like the driver registry: when the plant has one, what must
# hold before anything starts (`check`, also run by check-config), and how to build it.
# The sink modules are imported only here, so that `check-config` of a plant without
# them does not pay for asyncua / aiohttp.


def _check_opcua(cfg: PlantConfig) -> None:
    from server.opcua.layout import build_layout

    build_layout(cfg, ns=0)  # node ids and names: a ConfigError names the key


def _opcua(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from server.opcua.sink import OpcUaSink

    sink = OpcUaSink(cfg, alarms=alarms, audit=rt.audit, users=rt.users, history=rt.historian)
    rt.carbon_listeners.append(sink.on_carbon_position)  # Allowance.Holdings, .Deficit …
    rt.performance_listeners.append(sink.on_carbon_performance)  # the Performance objects
    return sink


def _influx(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from server.influx.refill import HistorianMinutes
    from server.influx.sink import InfluxSink

    assert cfg.influx is not None
    # On start the outbox takes back what the historian stored after its high-water mark.
    refill = HistorianMinutes(rt.historian, rt.plan, rt._seed_totals)
    # The outbox's alarm takes the devices' path to the alarm engine (a DeviceEvent).
    return InfluxSink(cfg.influx, cfg.site.id, refill=refill, on_event=rt._on_device_event)


def _check_hj212(cfg: PlantConfig) -> None:
    from server.hj212.config import check_plant

    check_plant(cfg)  # sources, duplicate MNs, codes naming a missing tag


def _hj212(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from server.hj212.uplink import Hj212Sink

    # history requests: from the historian; the uplinks' alarms: device events
    return Hj212Sink(cfg, history=rt.historian, on_event=rt._on_device_event)


def _check_web(cfg: PlantConfig) -> None:
    from web.app import tls_context

    if cfg.web.tls_cert is not None and cfg.web.tls_key is not None:
        tls_context(cfg.web.tls_cert, cfg.web.tls_key)  # a ConfigError names the file


def _web(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from web.app import WebSink

    return WebSink(cfg, history=rt.historian, devices=rt.device_status, users=rt.users,
                   audit=rt.audit, alarms=alarms, journal=rt.historian, monitor=rt.monitor,
                   device_tags=rt, records=rt.records, reports=rt.reports,
                   assets=rt.assets, cases=rt.cases, performance=rt.performance,
                   monitoring_plan=rt.conformity)


def _qa_capture(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from server.qacapture import QaCapture  # automatic zero / span checks, as entries

    return QaCapture(cfg, rt.records.enter)


def _cases(rt: Runtime, cfg: PlantConfig, alarms: AlarmSink) -> Sink:
    from server.cases import CaseSink  # opens the cases of `cases.auto`

    return CaseSink(rt.cases, cfg.cases.auto, cfg.clock, cfg.site.timezone)


def _no_check(cfg: PlantConfig) -> None:
    """Nothing to check before start."""


@dataclass(frozen=True, slots=True)
class SinkEntry:
    """One optional sink of the runtime's table."""

    name: str
    wanted: Callable[[PlantConfig], bool]
    build: Callable[[Runtime, PlantConfig, AlarmSink], Sink]
    check: Callable[[PlantConfig], None] = _no_check


SINKS: tuple[SinkEntry, ...] = (
    SinkEntry("opcua", lambda c: c.opcua.enabled, _opcua, _check_opcua),
    SinkEntry("influx", lambda c: c.influx is not None, _influx),
    SinkEntry("hj212", lambda c: bool(c.hj212), _hj212, _check_hj212),
    SinkEntry("web", lambda c: c.web.enabled, _web, _check_web),
    SinkEntry("qa_capture", lambda c: any(s.qa is not None and s.qa.auto
                                          for _, s in c.sources()), _qa_capture),
    SinkEntry("cases", lambda c: c.cases.auto.enabled, _cases),
)


def preflight(cfg: PlantConfig) -> None:
    """Every check `run` makes before it starts anything, beyond the schema's: the alarm
    channels' secrets and rule bank, the OPC UA node ids, the TLS files. No I/O but reads."""
    from alarms.engine import AlarmSink
    from server.backupconfig import with_backup_alarm
    from server.calibration import with_calibration_alarm
    from server.conformity import with_conformity_alarm
    from server.hj212.config import with_uplink_alarms
    from server.influx.config import with_outbox_alarm

    cfg = with_outbox_alarm(cfg, cfg.influx)  # as _prepare_records adds it
    cfg = with_uplink_alarms(cfg, cfg.hj212)
    cfg = with_backup_alarm(cfg, cfg.backup)
    cfg = with_calibration_alarm(cfg, cfg.instruments)
    cfg = with_conformity_alarm(cfg, cfg.monitoring)
    AlarmSink(cfg)
    for entry in SINKS:
        if entry.wanted(cfg):
            entry.check(cfg)


class Runtime:
    """One site's server: drivers → tag store → minute cycle → sinks, hours and days."""

    def __init__(self, plant: Plant, *, started_at: float | None = None) -> None:
        """Check the plant as `check-config` does, then build (nothing runs until start)."""
        # Before the user store and audit log create their file: a missing secret or TLS
        # file must not leave demo accounts or audit entries behind.
        preflight(plant.config)
        config = self.config = plant.config
        self.factors = plant.factors
        plan = self.plan = plant.plan()
        self.cycle = MinuteCycle(plan)
        self.clock = self.cycle.clock
        # The factor-method units' CO2 comes with their hours: into the running totals.
        self.hour_co2 = HourCO2(self.cycle.totals, self.clock,
                                [u.id for u in config.units if u.accounting_basis == "factor"])
        poll_min = min((d.poll_interval_s for d in config.devices), default=1.0)
        # Rows in configuration order, a device's tags together: a poll group each.
        self.table = TagTable(tuple(self.cycle.calc.tag_ids))
        # Room for three minutes of polls at the fastest poll rate, and for the grace a
        # minute waits for a slow device: a minute is taken only `close_grace_s` after its
        # end, and with short minutes (demos, tests) the grace is the longer of the two.
        keep_s = 3 * config.clock.minute_seconds + config.clock.close_grace_s
        self.store = TagStore(self.table.ids, math.ceil(keep_s / poll_min) + 16,
                              groups=[len(d.tags) for d in config.devices if d.tags])
        self._batch: list[SampleBlock] = []  # blocks of the current interval, for the sinks
        # Each device's tags: contiguous rows of the table (start, stop) and their names.
        self._device_rows = {
            d.id: (self.table.index[d.tags[0].id], self.table.index[d.tags[0].id] + len(d.tags),
                   tuple(t.id for t in d.tags),
                   tuple(t.description_zh or t.description for t in d.tags),
                   tuple(t.description for t in d.tags), tuple(t.unit for t in d.tags))
            for d in config.devices if d.tags}
        self.simulators: list[Simulator] = []  # those of the devices marked `simulate: true`
        self.historian = Historian(config.historian.path)
        # Accounts and the audit log live in the historian's file, beside the alarm journal.
        self.users = UserStore(config.historian.path)
        self.audit = AuditLog(config.historian.path)
        self.rules = RulePersistence([r.model_dump(mode="json") for r in config.alarms.rules],
                                     self.historian, self.audit, self._spawn, asyncio.to_thread)
        self.periods = PeriodCycle(plan)
        # Entries people make (lab data, corrections, QA checks, locks): kept, applied, and
        # the closed periods they change recalculated (server/records.py).
        self.records = RecordKeeper(plant, self.historian, self.audit, self.periods,
                                    MinuteCalculator(plan),
                                    self._publish_revised, self.cycle,
                                    self._publish_revised_minutes, self._historian_settled)
        # Reports (server/reports/): on demand over HTTP and on the plant file's schedule.
        from server.reports.definition import load_definitions
        from server.reports.engine import ReportMaker

        self.reports = ReportMaker(config, self.historian, lambda: self.records.factors,
                                   self.records.entries,
                                   load_definitions(config.reports.definitions,
                                                    "reports.definitions", config))
        # The carbon asset ledger and the compliance position (server/assets.py): the
        # position goes to the alarms and OPC UA after every closed hour and day.
        self.assets = AssetKeeper(plant, self.historian, self.audit)
        self.reports.assets = self.assets  # the carbon sheets of monthly and annual reports
        # Abnormal-data cases (server/cases.py): opened on a period, an alarm or an entry.
        self.cases = CaseKeeper(config.historian.path, self.historian, self.audit)
        self.reports.cases = self.cases  # the cases sheet of the emission reports
        # The monitoring plan and its daily check (server/conformity.py): the API, the
        # `monitoring_plan` report and the daily report's sheet, and its system alarm.
        from server.conformity import ConformityReader

        self.conformity = ConformityReader(config, config.monitoring, self.historian,
                                           lambda: self.records.factors, config.historian.path)
        self.reports.conformity = self.conformity
        self.conformity_monitor: ConformityMonitor | None = None
        # Carbon performance (server/performance.py): API, HMI, the performance report and,
        # each time a day closes, the carbon_performance alarm rules.
        self.performance = PerformanceKeeper(config)
        self.reports.performance = self.performance
        self._performance_error = ""
        self.carbon_listeners: list[Callable[[CompliancePosition, datetime],
                                             Awaitable[None]]] = []
        self.performance_listeners: list[Callable[[Performance, datetime],
                                                  Awaitable[None]]] = []
        self._carbon_busy = False
        self._carbon_again = False  # asked for while one was being computed
        self._carbon_error = ""
        self._sinks: list[QueuedSink] = []
        self._drivers: list[Driver] = []
        self._alarms: AlarmSink | None = None
        self.backups: BackupScheduler | None = None
        self.calibration: CalibrationMonitor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[object]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._stop_errors: list[str] = []
        self._started_at = started_at if started_at is not None else time.monotonic()
        self._first_published = False
        self._overflow_logged = (0, -math.inf)  # (samples dropped, monotonic time) last told
        self.ready = asyncio.Event()
        # /metrics, /health, /ready (served by the web sink); reads the live stages.
        self.monitor = Monitor(drivers=lambda: self._drivers, sinks=lambda: self._sinks,
                               tasks=lambda: self._tasks, started=self.ready.is_set)

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
        in_force = await self.rules.rules_in_force(cfg, str(h.path))
        # A plant with an outbox always has its alarm (server/influx/alarm.py), added here,
        # not to the file's rules: the configuration's and the file rules' hashes stay as
        # they were, so rules saved through the API still apply (and get it added too).
        from server.backupconfig import with_backup_alarm
        from server.calibration import with_calibration_alarm
        from server.conformity import with_conformity_alarm
        from server.hj212.config import with_uplink_alarms
        from server.influx.config import with_outbox_alarm

        # The backups' alarm likewise (server/backup.py), when backups are configured, and
        # one per registered instrument for an overdue calibration (server/calibration.py).
        # And one per HJ 212 platform whose uploads stall (server/hj212/uplink.py), and the
        # monitoring plan's daily check (server/conformity.py).

        rules = with_uplink_alarms(with_calibration_alarm(with_backup_alarm(
            with_outbox_alarm(in_force, cfg.influx), cfg.backup), cfg.instruments), cfg.hj212)
        return with_conformity_alarm(rules, cfg.monitoring)

    def _build_sinks(self, cfg: PlantConfig) -> list[Sink]:
        from alarms.engine import AlarmSink

        h = self.historian
        self.carbon_listeners.clear()  # the sinks built below add theirs
        self.performance_listeners.clear()
        alarms = self._alarms = AlarmSink(
            cfg, on_delivery=lambda rec: self._spawn(h.record_delivery(rec)))
        sinks = [entry.build(self, cfg, alarms) for entry in SINKS if entry.wanted(cfg)]
        listeners = [s.on_alarm for s in sinks if isinstance(s, AlarmListener)]

        def on_alarm(event: AlarmEvent) -> None:
            self._spawn(h.record_alarm(event))
            for listener in listeners:
                listener(event)
        alarms.subscribe(on_alarm)
        alarms.on_rules_changed(self.rules.changed)
        self.rules.started_with(alarms.rules_config())
        return [*sinks, alarms]

    def _on_device_event(self, event: DeviceEvent) -> None:
        if self._alarms is not None:  # communication-loss rules; the bus has logged it
            self._alarms.on_device_event(event)

    def device_status(self) -> list[dict[str, Any]]:
        """Every bus with its counters and the counters of each device on it."""
        return [{**asdict(d.bus_stats()), "devices": [asdict(s) for s in d.stats()]}
                for d in self._drivers]

    def device_tags(self, device: str) -> RawTags | None:
        """The newest reading of each tag of `device` (None if there is no such device)."""
        rows = self._device_rows.get(device)
        if rows is None:
            return None
        start, stop, ids, names, names_en, units = rows
        times_s, values, flags = self.store.newest(start, stop)
        return RawTags(device, ids, names, names_en, units, times_s, values, flags)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _on_stop(self, what: str, stop: Callable[[], Awaitable[object]]) -> None:
        """Run `stop` at stop(), after everything started later was stopped."""
        async def run() -> None:
            try:
                await stop()
            except Exception as exc:  # the others must still stop: the historian above all
                text = f"{what}: {type(exc).__name__}: {exc}"
                log.error("stopping %s", text)
                self._stop_errors.append(text)
        self._stack.push_async_callback(run)

    async def _wait_side_tasks(self) -> None:
        """Let journal, delivery-log and rule writes spawned so far reach the historian."""
        if self._side_tasks:
            await asyncio.wait(self._side_tasks, timeout=5)

    async def _cancel_tasks(self) -> None:
        """Cancel the drivers' buses and the minute cycle and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def start(self) -> None:
        """Start every stage; on failure, stop what was started and re-raise.

        """
        try:
            # First, so that it measures everything after, and stops last.
            self.monitor.probe.start()
            self._on_stop("event-loop probe", self.monitor.probe.stop)
            # Thawed last, once every stage stopped: thawed earlier, the stages still
            # running would set off full collections of the whole heap (23.7 s measured
            # with 100k tags). Harmless when nothing was frozen.
            self._on_stop("heap", lambda: asyncio.to_thread(heap.thaw_heap))
            await asyncio.to_thread(kernels.warm_up)
            await asyncio.to_thread(periods.warm_up)
            await asyncio.to_thread(tagstore.warm_up)
            # Held while running: `carbonscada restore` refuses a running server's file,
            # and a second server started on the same historian refuses to start.
            lock = await asyncio.to_thread(HistorianLock, self.historian.path)
            self._on_stop("historian lock", lambda: asyncio.to_thread(lock.release))
            historian = QueuedSink(self.historian)
            await historian.start()
            self._sinks.append(historian)
            self._on_stop("historian", historian.stop)
            # Stops run last-in first-out: the sinks (alarms first) stop before this
            # runs, and the historian only after it.
            self._on_stop("pending historian writes", self._wait_side_tasks)
            cfg = await self._prepare_records()
            sinks = self._build_sinks(cfg)
            if self._alarms is not None:  # before the web and OPC UA seed their alarm lists
                self._alarms.restore(await self.historian.last_alarm_events())
            await self._start_platform_simulators()  # listening before the uplink dials
            for sink in sinks:
                queued = QueuedSink(sink)
                await queued.start()
                self._sinks.append(queued)
                self._on_stop(f"sink {sink.name}", queued.stop)
            await self._start_backups()
            await self._start_calibration_monitor()
            await self._start_report_schedule()
            await self._seed_totals()
            await self._seed_hour_co2()
            await self._seed_co2e_today()
            await self.records.load()  # before the open hour is read back: entries apply
            await self.assets.load()
            await self.cases.load()
            self.assets.on_change = self._carbon_position_soon  # an entry: a new position
            await self._restore_periods()
            self._carbon_position_soon()  # clients and rules see the position at once
            self._spawn(self._carbon_performance(rules=False))  # and OPC UA its performance
            await self._start_conformity_monitor()  # after the entries: lab factors apply
            for sim in create_simulators(self.config.devices, self.config.site.timezone):
                await sim.start()
                self.simulators.append(sim)
                self._on_stop("simulator", sim.stop)
            self._drivers = create_drivers(self.config.devices, self._on_device_event,
                                           self.table)
            # What lives as long as the server is built: out of the collector's way.
            heap.freeze_heap()
            self._on_stop("drivers and the minute cycle", self._cancel_tasks)
            for driver in self._drivers:
                self._tasks.append(asyncio.create_task(driver.run(self._ingest),
                                                       name=f"bus:{driver.name}"))
            self._tasks.append(asyncio.create_task(self._minute_loop(), name="minute-cycle"))
        except BaseException:
            with contextlib.suppress(SinkError):  # each failed stop is logged already
                await self.stop()
            raise
        self.ready.set()

    async def _start_backups(self) -> None:
        """The backup schedule (and pruning after each backup), once the alarms exist."""
        cfg = self.config
        if cfg.backup is None:
            log.warning("no backup configured (backup.dir): the historian %s is not backed "
                        "up; the standard asks for a backup at least every 7 days",
                        cfg.historian.path)
            return
        from server.backup import BackupScheduler

        self.backups = BackupScheduler(cfg.backup, cfg.retention, self.historian.path,
                                       self.audit, self._on_device_event,
                                       locked=self.records.locked_ranges)
        await self.backups.start()
        self._on_stop("backup scheduler", self.backups.stop)

    async def _start_platform_simulators(self) -> None:
        """The HJ 212 platforms marked `simulate: true` (the demo's), in this process."""
        from server.hj212.codec import Packet
        from server.hj212.simulator import PlatformSimulator, describe

        by_port: dict[tuple[str, int], list[Any]] = {}
        for p in self.config.hj212:
            if p.simulate:  # the data loggers of one platform (one MN each) share it
                by_port.setdefault((p.host, p.port), []).append(p)
        for (host, port), entries in by_port.items():
            where = f"HJ 212 platform {'/'.join(e.id for e in entries)} (simulated)"

            def received(pkt: Packet, where: str = where) -> None:
                log.info("%s received %s", where, describe(pkt))

            def refused(text: str, where: str = where) -> None:
                log.warning("%s: %s", where, text)
            one = entries[0] if len(entries) == 1 else None  # else no MN / PW check
            sim = PlatformSimulator(tz=self.config.site.timezone,
                                    pw=one.pw if one else "", mn=one.mn if one else "",
                                    on_packet=received, on_error=refused)
            await sim.start(host, port)
            self._on_stop(where, sim.stop)
            log.info("%s on %s:%d", where, host, port)

    async def _start_report_schedule(self) -> None:
        """The scheduled reports (reports.schedule), e-mailed through alarm channels."""
        from server.reports.schedule import ReportScheduler, email_channels

        cfg = self.config
        if not cfg.reports.schedule:
            return
        senders = {c.id: getattr(c, "sender", "") for c in cfg.alarms.channels}
        scheduler = ReportScheduler(cfg.reports.schedule, self.reports, email_channels(cfg),
                                    senders)
        await scheduler.start()
        self._on_stop("report schedule", scheduler.stop)

    async def _start_conformity_monitor(self) -> None:
        """The monitoring plan's daily check and its alarm (server/conformity.py)."""
        from server.conformity import ConformityMonitor

        self.conformity_monitor = ConformityMonitor(
            self.conformity, lambda: self.historian.last_period("day"), self._on_device_event)
        await self.conformity_monitor.start()
        self._on_stop("monitoring plan check", self.conformity_monitor.stop)

    async def _start_calibration_monitor(self) -> None:
        """The overdue-calibration alarms of the instrument register, once the alarms exist."""
        from server.calibration import CalibrationMonitor

        cfg = self.config
        if not cfg.instruments.alarm:
            return
        self.calibration = CalibrationMonitor(cfg, cfg.instruments, self._on_device_event)
        await self.calibration.start()
        self._on_stop("calibration monitor", self.calibration.stop)

    async def _seed_totals(self, totals: Totals | None = None, at: datetime | None = None,
                           ) -> None:
        """Seed running totals from the stored minutes: the live cycle's at start, or (the
        InfluxDB outbox refill) `totals` with the minutes stored before `at`."""
        now = datetime.now(UTC) if at is None else at
        totals = self.cycle.totals if totals is None else totals
        starts = (self.clock.hour_start(now), self.clock.day_start(now),
                  self.clock.year_start(now))
        stored = [("source_minute", "co2_kg", [s.id for _, s in self.config.sources()]),
                  ("unit_minute", "co2_kg", [u.id for u in self.config.units]),
                  ("unit_minute", "output_mwh", [u.id for u in self.config.units])]
        for table, column, ids in stored:
            sums = await self.historian.period_sums(table, column, starts, end=at)
            for key in ids:
                totals.seed(f"{key}.{column}", now, *sums.get(key, (0.0, 0.0, 0.0)))
        # The running intensity's sums: over the valid minutes only (compute/cycle.py).
        units = [u.id for u in self.config.units]
        for column, name in (("co2_kg", PAIRED_CO2), ("output_mwh", PAIRED_OUTPUT)):
            sums = await self.historian.period_sums("unit_minute", column, starts,
                                                    end=at, valid_only=True)
            for key in units:
                totals.seed(f"{key}.{name}", now, *sums.get(key, (0.0, 0.0, 0.0)))

    async def _seed_hour_co2(self) -> None:
        """The factor-method units' stored hours of the plant year into the running totals
        (seeded from the minutes, which have no CO2 of theirs) and into HourCO2's count."""
        now = datetime.now(UTC)
        start = self.clock.year_start(now)
        for unit in sorted(self.hour_co2.units):  # ≤ 8 784 rows a unit, once at start
            rows = await self.historian.period_rows("unit", "hour", unit, start, now)
            self.hour_co2.seed(unit, ((r["t"], r["co2_t"]) for r in rows), now)

    async def _seed_co2e_today(self) -> None:
        """The units' stored hours of today into the sinks' CO2eToday (OPC UA, web): after a
        restart it goes on from CO2Today + those hours' other gases, as CO2Today goes on."""
        sums = [acc for s in self._sinks
                if isinstance(acc := getattr(s.sink, "co2e_today", None), CO2eToday)]
        if not sums:
            return
        now = datetime.now(UTC)
        start = self.clock.day_start(now)
        for unit in self.config.units:  # at most 24 rows a unit, once at start
            for row in await self.historian.period_rows("unit", "hour", unit.id, start, now):
                for acc in sums:
                    acc.seed_hour(unit.id, row["t"], row["co2_t"], row["co2e_t"])

    async def _restore_periods(self) -> None:
        """Continue the hours and days where the historian left them (after a restart)."""
        h = self.historian
        await h.record_factor_versions(self.factors)
        now = datetime.now(UTC)
        last = await h.last_period("hour")
        hour_s = 60 * self.config.clock.minute_seconds
        hours, days = [], []
        if last is None:  # a new historian, or none of its hours closed yet: its first
            # stored minute opens the hour, so that a kill before the first hour closed does
            # not cost that hour's row (issue 11); a month back at most.
            open_hour = self.clock.hour_start(now)
            bounds = await h.minute_bounds()
            if bounds is not None:
                oldest = open_hour - timedelta(seconds=31 * 24 * hour_s)
                open_hour = min(open_hour, self.clock.hour_start(max(bounds[0], oldest)))
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

    def _publish_revised(self, closed: Sequence[PeriodRecords]) -> None:
        """Hours and days recalculated after an entry (already stored): to every other sink,
        but to the alarm rules only the latest hour and day. An old hour evaluated again
        would raise, clear and notify alarms about a past the operators already saw."""
        latest = {rec.level: rec for rec in closed}
        for rec in closed:
            self.hour_co2.take(rec)  # a revised hour of a factor unit: the difference
            for sink in self._sinks:
                if not sink.takes_periods or sink.sink is self.historian:
                    continue
                if sink.sink is self._alarms:
                    if latest[rec.level] is rec:
                        sink.submit_period(rec)
                    continue
                sink.submit_period(RevisedPeriod(rec))
        if closed:  # the year's emissions changed: so may its compliance position
            self._carbon_position_soon()

    def _publish_revised_minutes(self, revised: RevisedMinutes) -> None:
        """Minutes corrected after they were sent: to the sinks that keep minutes."""
        for sink in self._sinks:
            if sink.takes_revisions:
                sink.submit_revised(revised)

    def _close_periods(self, result: MinuteResult) -> None:
        """Hand the minute to the period stage; publish the hours and days it closes."""
        try:
            closed = self.periods.add(minute_batch(result, self.periods.counter_tags))
        except Exception:  # a fault here must not stop the minute results
            log.exception("hour / day calculation failed at minute %s", result.t.isoformat())
            return
        for rec in closed:
            self.hour_co2.take(rec)
            self._publish_period(rec)
        if closed:
            self._carbon_position_soon()
        if any(rec.level == "day" for rec in closed):
            self._spawn(self._carbon_performance())

    def _carbon_position_soon(self) -> None:
        """Compute the compliance position in a task of its own and hand it to the alarms
        and the OPC UA sink: never in the minute cycle's way. While one is being computed,
        no second task is started: the one running computes it once more when done."""
        if self._carbon_busy:
            self._carbon_again = True
            return
        self._carbon_busy = True
        self._spawn(self._carbon_positions())

    async def _carbon_positions(self) -> None:
        """Positions until none was asked for while the last one was being computed."""
        try:
            while True:
                self._carbon_again = False
                await self._carbon_position()
                if not self._carbon_again:
                    return
        finally:
            self._carbon_busy = False

    async def _historian_settled(self) -> None:
        """Until the historian stored every minute and period handed to it so far (5 s at
        most): what reads them back (an entry's recalculation, the positions) needs them."""
        for queued in self._sinks:
            if queued.sink is self.historian:
                await queued.drain()

    async def _carbon_position(self) -> None:
        """The current year's position and, until its deadline passed, the previous
        year's (whose surrender is due this year) for the deadline rules; a failure is
        logged once until it changes or the next position succeeds."""
        try:
            await self._historian_settled()  # the hour or day just closed, read back
            current = await self.assets.position()
            today = current.surrender_deadline - timedelta(days=current.days_to_deadline)
            due = None
            if deadline_of(current.year - 1, self.assets.carbon) >= today:
                due = await self.assets.position(current.year - 1)
            t = datetime.now(UTC)
            if self._alarms is not None:
                self._alarms.on_carbon_position(current, t, deadline=due)
            for listener in list(self.carbon_listeners):
                await listener(current, t)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._carbon_error:
                log.error("carbon compliance position failed: %s", text)
                self._carbon_error = text
        else:
            self._carbon_error = ""

    async def _carbon_performance(self, rules: bool = True) -> None:
        """The year's carbon performance once a day closed (and at start), to the
        carbon_performance rules (not at start: `rules`) and the listeners (OPC UA); a
        failure is logged once until it changes or the next one succeeds."""
        alarms = self._alarms if rules else None
        if alarms is not None and not any(r.get("kind") == "carbon_performance"
                                          for r in alarms.rules_config()):
            alarms = None
        if alarms is None and not self.performance_listeners:
            return
        if not MIN_YEAR <= self.clock.scaled_local(datetime.now(UTC)).year <= MAX_YEAR:
            return  # a clock sped up past 2100 (tests, demos): no year a target can name
        try:
            await self._historian_settled()  # the day just closed is stored first
            perf = await self.performance.performance()
            t = datetime.now(UTC)
            if alarms is not None:
                alarms.on_carbon_performance(perf, t)
            for listener in list(self.performance_listeners):
                await listener(perf, t)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._performance_error:
                log.error("carbon performance failed: %s", text)
                self._performance_error = text
        else:
            self._performance_error = ""

    def _ingest(self, block: SampleBlock) -> None:
        self.store.append_block(block)
        # Sinks get the blocks of an interval at once: a queue item per poll would cost
        # more than the sinks' own work at thousands of polls a second.
        if not self._batch:
            asyncio.get_running_loop().call_later(SAMPLE_BATCH_S, self._submit_batch)
        self._batch.append(block)

    def _submit_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        block = SampleBlock.concat(batch)
        for sink in self._sinks:
            sink.submit_samples(block)

    async def _minute_loop(self) -> None:
        minute = timedelta(seconds=self.config.clock.minute_seconds)
        grace = self.config.clock.close_grace_s
        # The first minute calculated is the first one every device polled all through. The
        # minute the server started in (and one begun before the first polls) was partly
        # not watched: calculated, it would read flag B, "communication failure", although
        # no device failed. Not calculated, its hour tells "not running" (issue 11).
        started = datetime.now(UTC)
        await self._wait_for_polls(started, FIRST_POLLS_WAIT_S)
        polled = datetime.now(UTC)
        first = self.clock.next_minute(polled)
        log.info("minutes are calculated from %s on (the server started at %s, every device "
                 "polled by %s)", first.isoformat(), started.isoformat(), polled.isoformat())
        end = first + minute
        while True:
            await self._wait_for_polls(end, grace)
            began = time.perf_counter()
            # In a worker thread: the take and the kernels release the GIL, so polls and
            # clients are served while the minute is calculated.
            result = await asyncio.to_thread(self.run_minute, end - minute, end)
            for sink in self._sinks:
                sink.submit_minute(result)
            self.monitor.minute_published(end.timestamp(), time.perf_counter() - began)
            self._tell_overflow()
            # After the minute is out: closing an hour or a day never delays it.
            self._close_periods(result)
            if not self._first_published:
                self._first_published = True
                log.info("first minute %s published %.2f s after process start",
                         result.t.isoformat(), time.monotonic() - self._started_at)
            end += minute

    def _tell_overflow(self) -> None:
        # Samples dropped from a full ring are gone from the minutes: say so, with the
        # total, at the first drop and then at most once an hour.
        told, at = self._overflow_logged
        dropped = self.store.overflowed
        if dropped > told and time.monotonic() - at >= OVERFLOW_LOG_S:
            log.warning("%d samples dropped so far: the minute cycle fell behind the polls "
                        "and the tag store's rings overflowed", dropped)
            self._overflow_logged = (dropped, time.monotonic())

    async def _wait_for_polls(self, end: datetime, grace_s: float) -> None:
        """Until every device polled past `end`, or `grace_s` after it at most."""
        delay = (end - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        deadline = end.timestamp() + grace_s
        boundary = end.timestamp()
        while not self.store.polled_past(boundary) and time.time() < deadline:
            await asyncio.sleep(POLL_CHECK_S)

    def run_minute(self, start: datetime, end: datetime) -> MinuteResult:
        """Calculate the minute [start, end) from the buffered samples."""
        return self.cycle.run(start, self.store.take(start.timestamp(), end.timestamp()))

    async def stop(self) -> None:
        """Stop everything started, newest first: drivers and the minute cycle, simulators,
        the sinks (alarms first, so that their last events still reach the others), the
        historian last. Every stop runs even when one fails; SinkError then names them all.
        """
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
        self._sinks.clear()
        errors, self._stop_errors = self._stop_errors, []
        if errors:
            raise SinkError("stopping failed: " + "; ".join(errors))
