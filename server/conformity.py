"""The daily conformity check of the data against the monitoring plan, and its alarm.

The plan and the verdicts are web/monitoring_plan.py's (pure); this module reads what they
are judged on, recomputed from what the historian already keeps rather than stored a
second time (a correction entry that recalculates a day changes the check with it):

- the day's tag minutes: per tag, how many minutes had how many valid samples (one
  grouped query on `tag_minute`, on a read-only connection of its own to the historian's
  file, as server/assets.py reads a meter's minutes), for the capture rates;
- the stored day record (server/historian.py), for the substitutions used;
- the factor table with the lab entries (server/records.py), for the factors.

The alarm is built as the backups' and the calibration's are (server/backupconfig.py,
server/calibration.py): a comm_loss rule on the system device `monitoring_plan`, added to
the rules in force by the runtime; `ConformityMonitor` sends it a DeviceEvent whose `fault`
says that the last closed day deviates, and clears it when a later day conforms. It looks
for a newly stored day every calculation minute (a day is stored after its minutes: the
historian's queue is one FIFO), checks the last stored day at start, and sends an event
only when the verdict changes (and once at start, which also clears an alarm restored from
the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol, TypeVar

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from compute.clock import PlantClock
from compute.factors import FactorTable
from model.errors import InvalidValueError
from model.records import DeviceEvent, PeriodRecords
from web.monitoring_plan import (
    DayConformity,
    MonitoringConfig,
    PlanRow,
    conformity,
    monitoring_plan,
)
from web.register import RegisterPlantConfig

log = logging.getLogger(__name__)

MONITORING_DEVICE: Final = "monitoring_plan"
"""The system device under which the daily check reports a deviation (a DeviceEvent)."""
MONITORING_RULE_ID: Final = "monitoring_plan_conformity"
_IN_CHUNK: Final = 500  # tags per query: well under SQLite's bound-parameter limit


def monitoring_device_ids(monitoring: MonitoringConfig) -> tuple[str, ...]:
    """The check's system device, when its alarm is on."""
    return (MONITORING_DEVICE,) if monitoring.alarm else ()


_P = TypeVar("_P", bound=AlarmPlantConfig)


def with_conformity_alarm(cfg: _P, monitoring: MonitoringConfig) -> _P:
    """`cfg` with the check's comm_loss rule, unless the plant's rules already watch the
    device (a plant's own rule for `monitoring_plan` sets its delays or notify)."""
    rules = cfg.alarms.rules
    if not monitoring.alarm or any(r.id == MONITORING_RULE_ID or (
            isinstance(r, CommLossRuleConfig) and r.device == MONITORING_DEVICE)
            for r in rules):
        return cfg
    rule = CommLossRuleConfig(id=MONITORING_RULE_ID, kind="comm_loss", device=MONITORING_DEVICE,
                              name="Monitoring plan not followed / 监测计划执行偏差",
                              suppress_when_stopped=False)
    return cfg.model_copy(update={"alarms": cfg.alarms.model_copy(
        update={"rules": [*rules, rule]})})


def day_bounds(clock: PlantClock, day: date) -> tuple[datetime, datetime]:
    """The UTC start and end of the plant-local `day` on the (possibly sped-up) clock.

    InvalidValueError when the clock cannot show that day (a far date on a sped-up clock).
    """
    try:
        start = clock.date_start(day)
        end = clock.next_day(start)
    except OverflowError:
        raise InvalidValueError(f"day {day.isoformat()} is out of the clock's range") from None
    if clock.scaled_local(start).date() != day:
        raise InvalidValueError(f"day {day.isoformat()} is out of the clock's range")
    return start, end


class StoredDays(Protocol):
    """Where stored days come from (server/historian.py Historian)."""

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """The stored hours or days with start ≤ t < end, oldest first."""
        ...


def tag_counts(path: str | Path, tags: Sequence[str], start: datetime,
               end: datetime) -> dict[str, dict[int, int]]:
    """Per tag, valid samples of a stored minute → how many of [start, end)'s minutes had
    that many; read-only, on a connection of its own (call off the event loop)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidValueError(f"historian {p}: no such file")
    out: dict[str, dict[int, int]] = {}
    wanted = sorted(set(tags))
    t0, t1 = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    try:
        db = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise InvalidValueError(f"historian {p}: cannot open: {exc}") from None
    try:
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i:i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for tag, count, n in db.execute(
                    f"SELECT tag, count, COUNT(*) FROM tag_minute WHERE tag IN ({marks})"
                    " AND t_ms >= ? AND t_ms < ? GROUP BY tag, count", (*chunk, t0, t1)):
                out.setdefault(str(tag), {})[int(count)] = int(n)
    except sqlite3.Error as exc:
        raise InvalidValueError(f"historian {p}: {exc}") from None
    finally:
        db.close()
    return out


class ConformityReader:
    """The plan of a plant, and the check of any of its stored days against it."""

    def __init__(self, config: RegisterPlantConfig, monitoring: MonitoringConfig,
                 historian: StoredDays, factors: Callable[[], FactorTable],
                 path: str | Path) -> None:
        self.config = config
        self.monitoring = monitoring
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
        self._historian = historian
        self._factors = factors
        self.path = Path(path)

    def plan(self, at: datetime | None = None) -> tuple[PlanRow, ...]:
        """The plan's rows, the factors as in force at `at` (default now)."""
        return monitoring_plan(self.config, self.monitoring, self._factors(),
                               at or datetime.now(UTC))

    def day_of(self, t: datetime) -> date:
        """The plant-local date of the day containing the UTC instant `t`."""
        return self.clock.scaled_local(t).date()

    def day_starting(self, t: datetime) -> date:
        """The plant-local date of the day that starts at `t` (a stored day's start):
        taken half a minute in, as a sped-up clock's float arithmetic may put the start
        instant itself a hair before midnight."""
        return self.day_of(t + timedelta(seconds=self.clock.minute_seconds / 2))

    async def day(self, day: date) -> DayConformity | None:
        """The check of the plant-local `day`; None when the historian has no such closed
        day stored (not yet closed, or before the data)."""
        start, end = day_bounds(self.clock, day)
        stored = await self._historian.periods("day", start, end)
        if not stored:  # one day starts in [start, end): its record, when stored
            return None
        record = stored[0]
        factors = self._factors()
        plan = monitoring_plan(self.config, self.monitoring, factors,
                               end - timedelta(microseconds=1))
        tags = [r.tag for r in plan if r.tag is not None]
        counts = await asyncio.to_thread(tag_counts, self.path, tags, start, end)
        return await asyncio.to_thread(conformity, self.config, self.monitoring, plan, day,
                                       start, end, self.clock.minute_seconds, counts, record,
                                       factors)

    async def days(self, start: datetime, end: datetime) -> list[DayConformity]:
        """The checks of every stored day with start ≤ its start < end, oldest first."""
        out = []
        for rec in await self._historian.periods("day", start, end):
            c = await self.day(self.day_starting(rec.t))
            if c is not None:
                out.append(c)
        return out


OnDeviceEvent = Callable[[DeviceEvent], None]


class ConformityMonitor:
    """Checks each newly stored day and raises or clears the check's system alarm."""

    def __init__(self, reader: ConformityReader,
                 last_day: Callable[[], Awaitable[datetime | None]],
                 on_event: OnDeviceEvent | None, interval_s: float | None = None) -> None:
        self.reader = reader
        self._last_day = last_day
        self.on_event = on_event
        self.interval_s = interval_s if interval_s is not None else max(
            reader.config.clock.minute_seconds, 0.1)
        self._checked: datetime | None = None  # start of the last day checked
        self._sent: bool | None = None  # deviates, as last sent
        self.last: DayConformity | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the task (the last stored day is checked at once)."""
        self._task = asyncio.create_task(self._loop(), name="monitoring-plan-check")

    async def stop(self) -> None:
        """Stop the task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the monitor goes on whatever one check does
                log.exception("monitoring plan conformity check failed")
            await asyncio.sleep(self.interval_s)

    async def check(self, now: datetime | None = None) -> DayConformity | None:
        """Check the last stored day if it was not yet; send the alarm's event when the
        verdict changed. Returns the new check (None when there was nothing new)."""
        t = await self._last_day()
        if t is None or t == self._checked:
            return None
        result = await self.reader.day(self.reader.day_starting(t))
        self._checked = t
        if result is None:
            return None
        self.last = result
        deviates = not result.conforms
        if deviates != self._sent:
            self._sent = deviates
            event = DeviceEvent(MONITORING_DEVICE, "monitoring plan", now or datetime.now(UTC),
                                deviates, result.summary())
            log.info("%s", event.message)  # the alarm, when on, is what operators see
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("monitoring plan alarm not delivered: %s", event.message)
        return result
