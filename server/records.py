"""Plain typed records exchanged between the stages (drivers → compute → sinks).

No stage reaches into another's objects; they hand each other these records.
All timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt


class DataFlag(enum.IntEnum):
    """HJ 212-2017 data flag of a sample or result; the integer is its precedence.

    When a period has too few valid samples, the flag of highest precedence among
    its samples becomes the period's flag (a stopped unit explains more than a
    communication fault does).
    """

    N = 0  # normal
    S = 1  # manually set
    T = 2  # over range
    B = 3  # communication failure
    D = 4  # instrument fault
    C = 5  # calibration
    M = 6  # maintenance
    F = 7  # unit stopped

    @property
    def valid(self) -> bool:
        """Whether a value with this flag counts towards validity."""
        return self is DataFlag.N


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one tag, as a driver produced it."""

    tag: str
    t: datetime
    value: float
    flag: DataFlag = DataFlag.N


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
    intensity_t_mwh: float  # NaN when there is no output
    valid: bool
    flag: DataFlag
    co2_today_t: float = 0.0
    output_today_mwh: float = 0.0
    intensity_today_t_mwh: float = float("nan")
    co2_ytd_t: float = 0.0


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


@dataclass(frozen=True, slots=True)
class MinuteResult:
    """Everything one minute cycle produced: what every sink receives."""

    t: datetime
    sources: tuple[SourceMinute, ...]
    units: tuple[UnitMinute, ...]
    site: SiteMinute
    tags: tuple[TagMinute, ...] = field(default=())
    raw: RawWindow | None = None


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A transition of one alarm rule's state."""

    rule: str
    t: datetime
    state: str  # "normal" | "warning" | "alarm"
    previous: str
    value: float
    limit: float | None
    target: str  # e.g. "source S1 co2_rate_t_h"
    message: str  # English
    message_zh: str


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A field device's communication failed (`fault`) or was restored."""

    device: str
    bus: str  # serial port path or host:port
    t: datetime
    fault: bool
    message: str
