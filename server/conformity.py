"""The daily conformity check of the data against the monitoring plan, and its alarm.

The plan and the verdicts are web/monitoring_plan.py's (pure); this module reads what they
are judged on, recomputed from what the historian already keeps rather than stored a
second time (a correction entry that recalculates a day changes the check with it):

- the day's tag minutes: per tag, how many minutes had how many valid samples (grouped
  queries on `tag_minute`, one for all the days of a range, on a read-only connection of
  its own to the historian's file, server/historian.read_only), for the capture rates;
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
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol, TypeVar

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from compute.clock import PlantClock
from compute.factors import FactorTable
from model.errors import InvalidValueError
from model.records import DeviceEvent, PeriodRecords
from server.historian import read_only, to_ms
from server.periodic import Periodic
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
_DAY_CHUNK: Final = 100  # days per query: 3 parameters each, with the tags under 999


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
    return tag_counts_by_day(path, tags, [(start, end)])[0]


def tag_counts_by_day(path: str | Path, tags: Sequence[str],
                      bounds: Sequence[tuple[datetime, datetime]],
                      ) -> list[dict[str, dict[int, int]]]:
    """`tag_counts` of each [start, end) of `bounds`, on one read-only connection, in one
    grouped query per chunk of tags and of bounds (call off the event loop)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidValueError(f"historian {p}: no such file")
    out: list[dict[str, dict[int, int]]] = [{} for _ in bounds]
    wanted = sorted(set(tags))
    ms = [(round(a.timestamp() * 1000), round(b.timestamp() * 1000)) for a, b in bounds]
    with read_only(p, InvalidValueError) as db:
        for j in range(0, len(ms), _DAY_CHUNK):
            days = ms[j:j + _DAY_CHUNK]
            # The days as rows (index, start ms, end ms) joined to their minutes along the
            # (tag, t_ms) primary key: a range search per tag and day, all in one query.
            values = ",".join("(?,?,?)" for _ in days)
            day_args = [x for i, (a, b) in enumerate(days, j) for x in (i, a, b)]
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i:i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for d, tag, count, n in db.execute(
                        f"WITH d(i, a, b) AS (VALUES {values}) SELECT d.i, m.tag, m.count,"
                        " COUNT(*) FROM d CROSS JOIN tag_minute m WHERE m.tag IN"
                        f" ({marks}) AND m.t_ms >= d.a AND m.t_ms < d.b"
                        " GROUP BY d.i, m.tag, m.count", (*day_args, *chunk)):
                    out[int(d)].setdefault(str(tag), {})[int(count)] = int(n)
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
        checks = await asyncio.to_thread(self._check, self._factors(),
                                         [(day, start, end, stored[0])])
        return checks[0]

    async def days(self, start: datetime, end: datetime) -> list[DayConformity]:
        """The checks of every stored day with start ≤ its start < end, oldest first."""
        stored = await self._historian.periods("day", start, end)
        s_ms = to_ms(start)
        todo: list[tuple[date, datetime, datetime, PeriodRecords]] = []
        for rec in stored:
            day = self.day_starting(rec.t)
            d0, d1 = day_bounds(self.clock, day)
            a, b = to_ms(d0), to_ms(d1)
            # The day's record is the first stored day starting in [d0, d1), as `day`
            # reads it: one of `stored` unless the day begins before `start` (or its
            # record is not in it), then read for that day alone.
            record = next((r for r in stored if a <= to_ms(r.t) < b), None)
            if record is None or a < s_ms:
                alone = await self._historian.periods("day", d0, d1)
                record = alone[0] if alone else None
            if record is not None:
                todo.append((day, d0, d1, record))
        if not todo:
            return []
        return await asyncio.to_thread(self._check, self._factors(), todo)

    def _check(self, factors: FactorTable,
               days: Sequence[tuple[date, datetime, datetime, PeriodRecords]],
               ) -> list[DayConformity]:
        """The checks of (day, its start, its end, its stored record) each, the minutes'
        counts of all read at once (on a thread: the plans, the query and the checks)."""
        plans = [monitoring_plan(self.config, self.monitoring, factors,
                                 end - timedelta(microseconds=1)) for _, _, end, _ in days]
        tags = {r.tag for plan in plans for r in plan if r.tag is not None}
        # Each day is given the counts of its own plan's tags only, as read for it alone.
        counts = tag_counts_by_day(self.path, sorted(tags), [(a, b) for _, a, b, _ in days])
        out = []
        for (day, a, b, record), plan, got in zip(days, plans, counts, strict=True):
            mine = {r.tag for r in plan if r.tag is not None}
            out.append(conformity(self.config, self.monitoring, plan, day, a, b,
                                  self.clock.minute_seconds,
                                  {t: c for t, c in got.items() if t in mine}, record, factors))
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
        self._periodic = Periodic("monitoring-plan-check", self.check, lambda: self.interval_s,
                                 log, "monitoring plan conformity check failed")

    async def start(self) -> None:
        """Start the task (the last stored day is checked at once)."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop the task."""
        await self._periodic.stop()

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
