"""Plain typed records exchanged between the stages (drivers → compute → sinks).

No stage reaches into another's objects; they hand each other these records.
All timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from model.flags import DataFlag


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one tag, as a driver produced it."""

    tag: str
    t: datetime
    value: float
    flag: DataFlag = DataFlag.N


@dataclass(frozen=True, slots=True, eq=False)
class TagTable:
    """The plant's tags in configuration order: blocks name their tags by row in this table.

    Built once from the configuration (devices in order, each device's tags in order), so
    that a device's tags are contiguous rows and a poll's readings are one slice of them.
    """

    ids: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {tag: i for i, tag in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, tags: Sequence[str]) -> npt.NDArray[np.int32]:
        """The rows of `tags` (KeyError names an unknown tag)."""
        return np.fromiter((self.index[t] for t in tags), np.int32, len(tags))


@dataclass(frozen=True, slots=True, eq=False)
class SampleBlock:
    """Readings as columns, the way they travel from a driver to the tag store and sinks.

    Reading k is tag `table.ids[rows[k]]`, read at `times[k]` (epoch seconds, UTC) with
    `values[k]` and `flags[k]` (a DataFlag's integer). A driver emits one block per poll
    of a device, all its readings stamped alike; the runtime hands sinks the blocks of a
    short interval concatenated. No Python object per point: the hot path stays numpy.
    """

    table: TagTable
    times: npt.NDArray[np.float64]
    rows: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]
    flags: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of_poll(cls, table: TagTable, t: float, rows: npt.NDArray[np.int32],
                values: npt.NDArray[np.float64], flags: npt.NDArray[np.uint8]) -> SampleBlock:
        """The block of one poll: every reading stamped `t` (epoch seconds, UTC)."""
        return cls(table, np.full(len(rows), t), rows, values, flags)

    @classmethod
    def concat(cls, blocks: Sequence[SampleBlock]) -> SampleBlock:
        """One block of `blocks` in order (all of the same table; at least one)."""
        if len(blocks) == 1:
            return blocks[0]
        return cls(blocks[0].table, np.concatenate([b.times for b in blocks]),
                   np.concatenate([b.rows for b in blocks]),
                   np.concatenate([b.values for b in blocks]),
                   np.concatenate([b.flags for b in blocks]))

    @classmethod
    def of_samples(cls, table: TagTable, samples: Sequence[Sample]) -> SampleBlock:
        """The block of per-reading records (tests and tools; not the hot path)."""
        return cls(table, np.array([s.t.timestamp() for s in samples], np.float64),
                   table.rows([s.tag for s in samples]),
                   np.array([s.value for s in samples], np.float64),
                   np.array([int(s.flag) for s in samples], np.uint8))

    def samples(self) -> list[Sample]:
        """The readings as per-reading records (tests and tools; not the hot path)."""
        ids = self.table.ids
        return [Sample(ids[r], datetime.fromtimestamp(t, UTC), v, DataFlag(f))
                for t, r, v, f in zip(self.times.tolist(), self.rows.tolist(),
                                      self.values.tolist(), self.flags.tolist(), strict=True)]


@dataclass(frozen=True, slots=True)
class TagMinute:
    """Minute statistics of one raw tag."""

    tag: str
    t: datetime  # minute start, UTC
    mean: float
    min: float
    max: float
    count: int  # valid samples
    flag: DataFlag


@dataclass(frozen=True, slots=True)
class SourceMinute:
    """CEMS results of one emission source for one minute (minute start in `t`)."""

    source: str
    unit: str
    t: datetime
    flow_act_m3_h: float
    flow_std_dry_m3_h: float
    co2_dry_pct: float
    co2_mg_m3: float
    co2_rate_kg_h: float
    co2_kg: float
    valid: bool
    flag: DataFlag
    substitution: str = ""  # rule that produced a substitute value (e.g. "f_factor_o2")
    co2_hour_t: float = 0.0  # current hour so far, this minute included
    co2_today_t: float = 0.0  # plant-local day so far
    co2_ytd_t: float = 0.0  # plant-local year so far

    @property
    def co2_rate_t_h(self) -> float:
        """CO2 mass rate in t/h."""
        return self.co2_rate_kg_h / 1000.0


@dataclass(frozen=True, slots=True)
class UnitMinute:
    """Results of one generating / production unit for one minute."""

    unit: str
    t: datetime
    output_mwh: float
    co2_kg: float
    # CO2 / output of this minute: NaN unless the minute is valid (its sources' CO2 and its
    # output all flag N; `flag` says why not) and the output is > 0. Never from partial data.
    intensity_t_mwh: float
    valid: bool
    flag: DataFlag  # the worst of its sources' flags and its output's (`output_flag`)
    co2_today_t: float = 0.0
    output_today_mwh: float = 0.0
    # Σ CO2 / Σ output over today's valid minutes only (both measured validly), so that a lost
    # output meter (or CO2 analyser) does not make it drift; NaN without valid output today.
    intensity_today_t_mwh: float = float("nan")
    co2_ytd_t: float = 0.0
    output_flag: DataFlag = DataFlag.N  # the output minute's own flag (the power meter's)


@dataclass(frozen=True, slots=True)
class SiteMinute:
    """Site totals for one minute (allowance position lives here)."""

    t: datetime
    co2_kg: float
    co2_today_t: float
    co2_ytd_t: float
    allowance_annual_t: float
    allowance_used_pct: float
    allowance_headroom_t: float


@dataclass(frozen=True, slots=True, eq=False)
class RawWindow:
    """The raw samples one minute was calculated from, tag after tag.

    Tag i's samples are `times[o:o+counts[i]]` etc. with `o = counts[:i].sum()`:
    exactly what the calculation used, so that a recalculation can reproduce it.
    """

    tags: tuple[str, ...]
    counts: npt.NDArray[np.int64]
    times: npt.NDArray[np.float64]  # epoch seconds
    values: npt.NDArray[np.float64]
    flags: npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True, eq=False)
class TagColumns:
    """Minute statistics of every raw tag, as columns (row i is tag `tags[i]`)."""

    tags: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]  # valid samples
    flag: npt.NDArray[np.uint8]  # DataFlag integers

    def records(self, t: datetime) -> tuple[TagMinute, ...]:
        """One TagMinute per tag (for sinks that want records)."""
        flags = [DataFlag(f) for f in range(len(DataFlag))]
        return tuple(TagMinute(tag, t, mean, lo, hi, n, flags[f]) for tag, mean, lo, hi, n, f
                     in zip(self.tags, self.mean.tolist(), self.min.tolist(),
                            self.max.tolist(), self.count.tolist(), self.flag.tolist(),
                            strict=True))


@dataclass(frozen=True, slots=True, eq=False)
class SourceColumns:
    """CEMS results of every source for one minute, as columns (row i is `sources[i]`)."""

    sources: tuple[str, ...]
    units: tuple[str, ...]  # the unit of each source
    flow_act_m3_h: npt.NDArray[np.float64]
    flow_std_dry_m3_h: npt.NDArray[np.float64]
    co2_dry_pct: npt.NDArray[np.float64]
    co2_mg_m3: npt.NDArray[np.float64]
    co2_rate_kg_h: npt.NDArray[np.float64]
    co2_kg: npt.NDArray[np.float64]
    flag: npt.NDArray[np.uint8]  # DataFlag integers; valid is flag == N
    substitution: npt.NDArray[np.int64]  # index into `rules`
    rules: tuple[str, ...]  # substitution rule names ("" for none)
    co2_hour_t: npt.NDArray[np.float64]
    co2_today_t: npt.NDArray[np.float64]
    co2_ytd_t: npt.NDArray[np.float64]

    @property
    def co2_rate_t_h(self) -> npt.NDArray[np.float64]:
        """CO2 mass rate in t/h (SourceMinute.co2_rate_t_h of every row)."""
        return self.co2_rate_kg_h / 1000.0

    def records(self, t: datetime) -> tuple[SourceMinute, ...]:
        """One SourceMinute per source (for sinks that want records)."""
        flags = [DataFlag(f) for f in range(len(DataFlag))]
        rules = self.rules
        return tuple(
            SourceMinute(source=src, unit=unit, t=t, flow_act_m3_h=fa, flow_std_dry_m3_h=fs,
                         co2_dry_pct=cd, co2_mg_m3=cm, co2_rate_kg_h=cr, co2_kg=ck,
                         valid=f == 0, flag=flags[f], substitution=rules[sub],
                         co2_hour_t=ch, co2_today_t=ct, co2_ytd_t=cy)
            for src, unit, fa, fs, cd, cm, cr, ck, f, sub, ch, ct, cy in zip(
                self.sources, self.units, self.flow_act_m3_h.tolist(),
                self.flow_std_dry_m3_h.tolist(), self.co2_dry_pct.tolist(),
                self.co2_mg_m3.tolist(), self.co2_rate_kg_h.tolist(), self.co2_kg.tolist(),
                self.flag.tolist(), self.substitution.tolist(), self.co2_hour_t.tolist(),
                self.co2_today_t.tolist(), self.co2_ytd_t.tolist(), strict=True))


class MinuteResult:
    """Everything one minute cycle produced: what every sink receives (never changed).

    The minute cycle hands over sources and tags as columns (`source_columns`,
    `tag_columns`); `sources` and `tags` are their records, built on first use, once
    for every sink. Records can also be given directly (tests, tools).
    """

    __slots__ = ("_lock", "_sources", "_tags", "raw", "site", "source_columns", "t",
                 "tag_columns", "units")

    def __init__(self, t: datetime, sources: tuple[SourceMinute, ...] | None = None,
                 units: tuple[UnitMinute, ...] = (), site: SiteMinute | None = None,
                 tags: tuple[TagMinute, ...] | None = None, raw: RawWindow | None = None,
                 *, source_columns: SourceColumns | None = None,
                 tag_columns: TagColumns | None = None) -> None:
        if site is None:
            raise TypeError("MinuteResult needs its site record")
        self.t = t
        self.units = units
        self.site = site
        self.raw = raw
        self.source_columns = source_columns
        self.tag_columns = tag_columns
        self._sources = sources if sources is not None or source_columns else ()
        self._tags = tags if tags is not None or tag_columns else ()
        self._lock = threading.Lock()  # sinks' tasks and worker threads may ask at once

    @property
    def sources(self) -> tuple[SourceMinute, ...]:
        """The source records (built from the columns on first use)."""
        if self._sources is None:
            with self._lock:
                if self._sources is None:
                    assert self.source_columns is not None
                    self._sources = self.source_columns.records(self.t)
        return self._sources

    @property
    def tags(self) -> tuple[TagMinute, ...]:
        """The raw tags' minute statistics (built from the columns on first use)."""
        if self._tags is None:
            with self._lock:
                if self._tags is None:
                    assert self.tag_columns is not None
                    self._tags = self.tag_columns.records(self.t)
        return self._tags

    def replace(self, **changes: Any) -> MinuteResult:
        """A copy with the given fields (t, sources, units, site, tags, raw) replaced."""
        fields = {"t": self.t, "sources": self.sources, "units": self.units, "site": self.site,
                  "tags": self.tags, "raw": self.raw}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"MinuteResult has no field {', '.join(sorted(unknown))}")
        return MinuteResult(**{**fields, **changes})

    def __repr__(self) -> str:
        return (f"MinuteResult(t={self.t.isoformat()}, {len(self.sources)} sources, "
                f"{len(self.units)} units, {len(self.tags)} tags)")


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A transition of one alarm rule's state: its condition, acknowledgement or mode."""

    rule: str
    t: datetime
    state: str  # the condition: "normal" | "warning" | "alarm"
    previous: str
    value: float
    limit: float | None
    target: str  # e.g. "source S1 co2_rate_t_h"
    message: str  # English
    message_zh: str
    # ISA-18.2 state after / before the transition: normal, active-unacknowledged,
    # active-acknowledged, returned-unacknowledged, shelved, suppressed, out-of-service.
    ack_state: str = ""
    previous_ack_state: str = ""
    # What made the transition: condition, acknowledge, shelve, unshelve, shelve_expired,
    # suppress, unsuppress, out_of_service, return_to_service, removed (rule deleted),
    # comment, confirm (an operator's note; nothing else changes).
    cause: str = "condition"
    kind: str = ""  # rule kind, e.g. "threshold"
    area: str = ""  # the unit the rule belongs to, "site", or "" (none)
    user: str = ""  # who acknowledged / shelved; "" for the system
    comment: str = ""
    shelved_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An operator's action on an alarm, for the audit log."""

    t: datetime  # UTC
    user: str
    action: str  # acknowledge, shelve, unshelve, out_of_service, return_to_service,
    # comment, confirm
    rule: str
    comment: str
    until: datetime | None = None  # shelve: when the shelf expires


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One line of the delivery log: an attempt, or a decision not to send.

    `kind`: event, repeat, escalation or summary. `outcome`: sent; retry (this attempt
    failed, another follows); failed (the last attempt failed); deduplicated;
    rate_limited (held for a summary); dropped (queue full, unknown channel, stopped).
    `error` never holds a secret.
    """

    t: datetime  # UTC
    channel: str
    rule: str
    state: str
    kind: str
    outcome: str
    attempt: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A field device's communication failed (`fault`) or was restored."""

    device: str
    bus: str  # serial port path or host:port
    t: datetime
    fault: bool
    message: str


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """One source's CEMS result for one hour or day.

    `co2_t` is what the period contributes to the next level: the measured mass when
    valid, else the substitute when there is one, else NaN (an hour); for a day the
    measured valid hours plus the substituted ones. `co2_measured_t` is always the
    mass from the valid subperiods only; a substitute never replaces it. The flag
    stays the period's own (e.g. D) when it is substituted: `substituted` and
    `substitution_rule` say that, and which rule, produced `co2_t`.
    """

    source: str
    t: datetime  # period start, UTC
    co2_dry_pct: float
    flow_std_dry_m3_h: float
    co2_rate_kg_h: float
    co2_t: float
    co2_measured_t: float
    valid: bool
    flag: DataFlag
    n_valid: int  # valid minutes of an hour, valid hours of a day
    substituted: bool = False
    substitution_rule: str = ""
    n_substituted: int = 0  # hours in the period whose value is a substitute
    n_missing: int = 0  # hours in the period without any value
    substitution_note: str = ""  # why an invalid hour has no substitute under its rule
    # Why an invalid period lacks data when no measured flag explains it: "not_running" when
    # minutes (hours of a day) of it were never calculated because the server was not
    # running. The flag stays B (HJ 212 has no letter for it); "" otherwise.
    missing_reason: str = ""
    # A substituted hour: the concentration and flow its substitute mass was computed from
    # (co2_t = C · ρ · Q / 100 / 1000), so that it can be checked by hand; NaN otherwise (and
    # for factor_method substitutes and days, which have no such pair).
    substitute_co2_dry_pct: float = float("nan")
    substitute_flow_std_dry_m3_h: float = float("nan")


@dataclass(frozen=True, slots=True)
class StreamPeriod:
    """Emission-factor-method result of one stream for one hour, or for the part of a day
    that one factor version governs (a day has one record per version in force)."""

    stream: str
    unit: str
    t: datetime  # start, UTC
    t_end: datetime  # end (exclusive), UTC
    quantity: float  # in quantity_unit; NaN when nothing was measured
    quantity_unit: str  # t, 1e4m3, MWh or GJ
    co2_t: float  # NaN without a quantity or a factor version in force
    factor_version: str  # id of the version used; "" when none is in force
    method: str  # ncv_cc_of, measured_carbon, electricity, heat, process
    valid: bool
    flag: DataFlag
    n_valid: int  # valid minutes (rate) or readings (counter) of an hour; valid hours of a day
    note: str = ""  # meter-counter events of the period, or why co2_t is missing
    # Other greenhouse gases (compute/gases.py), t of gas: a fuel's combustion CH4 and N2O
    # (0 without their factors), a ghg stream's gas (CH4 / CH4_fossil in ch4_t, N2O in
    # n2o_t, any other in gas_t); `gas` names a ghg stream's gas ("" for other streams).
    ch4_t: float = 0.0
    n2o_t: float = 0.0
    gas: str = ""
    gas_t: float = 0.0
    # co2_t + Σ gas · GWP of the set `gwp_set` (its id; "" when none is in force).
    co2e_t: float = float("nan")
    gwp_set: str = ""


@dataclass(frozen=True, slots=True)
class UnitPeriod:
    """One unit's result for one hour or day: CEMS, factor method, output, reconciliation."""

    unit: str
    t: datetime  # period start, UTC
    co2_cems_t: float  # Σ of its sources' co2_t (substitutes included)
    co2_factor_t: float  # Σ of its fuel and process streams; NaN without any
    output_mwh: float
    intensity_t_mwh: float  # NaN unless intensity_flag is N and there is output (> 0)
    valid: bool
    flag: DataFlag  # the worst of its sources' flags and (hours) of its output's
    reconciliation_diff_pct: float = float("nan")  # days: (CEMS − factor) / factor · 100
    reconciliation_exceeded: bool = False  # days: |diff| above reconciliation.limit_pct
    # The intensity's own validity (compute/periods.py): an hour's needs a valid output hour
    # and a CO2 value of every source; a day's is over its hours with a valid intensity and
    # needs min_valid_hours_per_day of them. N: valid; else the flag that made it invalid.
    intensity_flag: DataFlag = DataFlag.N
    intensity_n_valid: int = 0  # hours: valid output minutes; days: hours the ratio is over
    # The accounted CO2 (compute.config.UnitConfig.basis): co2_cems_t for a `cems` unit,
    # co2_factor_t for a `factor` one (a blast furnace's carbon balance, a lime kiln's
    # carbonates). Direct emissions only: net purchased electricity and heat are indirect,
    # reported apart (their stream records), as the China guidelines report them.
    co2_t: float = float("nan")
    basis: str = "cems"  # "cems" | "factor"
    # A unit whose output is a product rate (output.rate_t_h: hot metal, lime …) has its
    # output in t and intensity in t CO2/t here; output_mwh and intensity_t_mwh are then NaN
    # (and these NaN for a power unit). The intensity is always co2_t / output.
    output_t: float = float("nan")
    intensity_t_t: float = float("nan")
    # The accounted co2_t + Σ gas · GWP of its direct streams' other gases (GWP set
    # `gwp_set`, its id; "" when none is in force).
    co2e_t: float = float("nan")
    gwp_set: str = ""
    # Hours of the period whose accounted CO2 holds a substitute: a `cems` unit's hours in
    # which one of its sources' hours was substituted; a carbon balance's incomplete hours
    # of a day, each counted at the mean of its common hours (PeriodCycle._balance_day).
    # An hour says 0 or 1. The flag says whether the period is valid; this, how much of it
    # an auditor has to look at as estimated.
    n_substituted: int = 0


@dataclass(frozen=True, slots=True)
class AllowancePosition:
    """Year-to-date emissions against the annual allowance, and the year-end forecast."""

    annual_t: float
    ytd_t: float
    year_fraction: float  # of the plant-local year passed
    days_left: float
    trailing_30d_t: float
    prorated_t: float  # annual · year fraction
    used_pct: float  # ytd / annual · 100
    headroom_t: float  # annual − ytd
    forecast_year_end_t: float  # ytd + trailing 30-day daily rate · days left
    forecast_shortfall_t: float  # max(0, forecast − annual)
    carbon_price_cny_t: float
    shortfall_cost_cny: float


@dataclass(frozen=True, slots=True)
class PeriodRecords:
    """Everything one closed plant hour or day produced: what period sinks receive."""

    level: str  # "hour" | "day"
    t: datetime  # period start, UTC
    t_end: datetime  # period end (exclusive), UTC
    sources: tuple[PeriodResult, ...]
    streams: tuple[StreamPeriod, ...]
    units: tuple[UnitPeriod, ...]
    allowance: AllowancePosition | None = None  # hours: the position at t_end


@dataclass(frozen=True, slots=True)
class RevisedMinute:
    """A stored source or unit minute set by hand afterwards (a correction entry).

    `values` are the stored columns that changed (None: no value, NaN); `old_flag` is the
    flag the minute was first stored with, `flag` the one it has now (S).
    """

    level: str  # "source" | "unit"
    ident: str  # the source or unit id
    unit: str  # the unit (a source's; a unit's own id)
    t: datetime  # minute start, UTC
    old_flag: DataFlag
    flag: DataFlag
    values: dict[str, float | None] = field(hash=False)
    entry: int = 0  # the ledger entry that set it


@dataclass(frozen=True, slots=True)
class RevisedMinutes:
    """The minutes one entry revised, for the sinks that keep minutes (InfluxDB)."""

    minutes: tuple[RevisedMinute, ...]


@dataclass(frozen=True, slots=True)
class RevisedPeriod:
    """A closed hour or day calculated again after an entry (a correction, a lab factor),
    handed to the sinks once more: one that keeps what it sent (the HJ 212 uplink) sends it
    again; for the others it is a closed period like any."""

    records: PeriodRecords
