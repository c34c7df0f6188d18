"""Recalculation from raw samples (auditors, factor corrections) and the sample export.

RESULTS.csv holds one row per source and period; at hour, day, month and year level the
stream (emission-factor method, with the factor version and the factors used), unit
(CEMS, factor method, output, intensity, reconciliation) and site allowance rows go to
RESULTS-streams.csv, RESULTS-units.csv and RESULTS-allowance.csv beside it. Every column
names its unit (co2_t, flow_std_dry_m3_h, n_valid_min / n_valid_h / n_valid_d …).
Stream and unit rows end with CO2e (compute/gases.py): a stream's ch4_t, n2o_t, gas, gas_t,
co2e_t and gwp_set (the GWP set used), a unit's co2e_t and gwp_set; a unit's row then
n_substituted_h, the hours whose CO2 holds a substitute.

SAMPLES.csv: header `timestamp,tag,value[,flag]`; timestamp ISO 8601 with offset, or
epoch seconds; flag an HJ 212 letter, default N. The export writes ISO 8601 UTC with
microseconds and values with every digit, so that a recalculation of exported samples
reproduces the stored results exactly.

The file is read in blocks of lines tokenized by a numba kernel (lines it cannot take,
e.g. quoted fields or `nan`, go through the csv module one by one), and the minutes are
calculated many at a time (MinuteCalculator.compute_batch) and handed to the same period
stage as the live server's. Rows must come in time order as export-samples writes them,
give or take one block (~300 000 rows): a minute is calculated once a later block starts
after it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
from numba import njit

from compute import derived, factors, kernels, periods
from compute.clock import PlantClock
from compute.config import CalculationConfig
from compute.minute import MinuteArrays, MinuteCalculator
from compute.periods import PeriodCycle, Readings, arrays_batch
from compute.plan import CalculationPlan
from model.errors import CarbonScadaError, InvalidValueError
from model.flags import DataFlag
from model.records import (
    AllowancePosition,
    PeriodRecords,
    PeriodResult,
    RawWindow,
    StreamPeriod,
    UnitPeriod,
)
from model.times import EARLIEST_S, LATEST_S, RANGE_TEXT

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

SAMPLE_HEADER = ("timestamp", "tag", "value", "flag")
MINUTE_FIELDS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                 "co2_rate_kg_h", "co2_rate_t_h", "co2_kg")
_MINUTE_COLUMNS = (kernels.OUT_FLOW_ACT, kernels.OUT_FLOW_SD, kernels.OUT_CO2_DRY,
                   kernels.OUT_CO2_MG, kernels.OUT_RATE, -1, kernels.OUT_MASS)
PERIOD_FIELDS = ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_t",
                 "co2_measured_t")
LEVELS = ("minute", "hour", "day", "month", "year")

BLOCK_BYTES = 16 << 20  # lines read and tokenized at a time
MAX_BATCH_MINUTES = 1440  # minutes per kernel call
_NUM_WIDTH = 32  # longest number text taken by the fast path (repr of a float is ≤ 24)
_FLAG_CODES = {f.name: int(f) for f in DataFlag}
_FLAG_OF_BYTE = np.full(256, -1, np.int64)  # ASCII letter → DataFlag, -1 for other bytes
for _name, _code in _FLAG_CODES.items():
    _FLAG_OF_BYTE[ord(_name)] = _code


class SamplesError(CarbonScadaError):
    """A samples file is malformed; names the file, the line and the problem."""


@dataclass(frozen=True, slots=True, eq=False)
class SampleBlock:
    """Samples of a block of lines in file order; `tag` indexes the configured tags."""

    t_s: F64
    tag: I64
    value: F64
    flag: U8
    line: I64  # line number in the file, for messages


@dataclass(frozen=True, slots=True, eq=False)
class RecalcBatch:
    """Minutes calculated together: their starts, arrays and the meter-counter readings."""

    t_s: F64
    arrays: MinuteArrays
    counters: tuple[Readings, ...]


# ------------------------------------------------------------------------ reading


@njit(cache=True)
def _fnv(buf: U8, a: int, b: int) -> int:  # pragma: no cover - compiled
    h = np.uint64(14695981039346656037)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(1099511628211)
    return int(h & np.uint64(0x7FFFFFFFFFFFFFFF))


@njit(cache=True)
def _strip(buf: U8, a: int, b: int) -> tuple[int, int]:  # pragma: no cover - compiled
    while a < b and (buf[a] == 32 or 9 <= buf[a] <= 13):
        a += 1
    while b > a and (buf[b - 1] == 32 or 9 <= buf[b - 1] <= 13):
        b -= 1
    return a, b


@njit(cache=True)
def _is_number(buf: U8, a: int, b: int) -> bool:  # pragma: no cover - compiled
    """[+-]? (d+ (. d*)? | . d+) ([eE] [+-]? d+)?, the syntax float() and numpy share."""
    i = a
    if i < b and (buf[i] == 43 or buf[i] == 45):
        i += 1
    digits = 0
    while i < b and 48 <= buf[i] <= 57:
        i += 1
        digits += 1
    if i < b and buf[i] == 46:
        i += 1
        while i < b and 48 <= buf[i] <= 57:
            i += 1
            digits += 1
    if digits == 0:
        return False
    if i < b and (buf[i] == 101 or buf[i] == 69):
        i += 1
        if i < b and (buf[i] == 43 or buf[i] == 45):
            i += 1
        exp = 0
        while i < b and 48 <= buf[i] <= 57:
            i += 1
            exp += 1
        if exp == 0:
            return False
    return i == b and b - a <= _NUM_WIDTH


@njit(cache=True)
def _digits(buf: U8, a: int, n: int) -> int:  # pragma: no cover - compiled
    v = 0
    for i in range(a, a + n):
        c = buf[i]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(cache=True)
def _days_from_civil(y: int, m: int, d: int) -> int:  # pragma: no cover - compiled
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _iso_us(buf: U8, a: int, b: int) -> int:  # pragma: no cover - compiled
    """Epoch µs of YYYY-MM-DD[T ]HH:MM[:SS[.f{1,6}]](Z|±HH:MM); −2⁶² when not that form."""
    bad = -(1 << 62)
    if b - a < 17 or buf[a + 4] != 45 or buf[a + 7] != 45 or buf[a + 13] != 58:
        return bad
    if buf[a + 10] != 84 and buf[a + 10] != 32:
        return bad
    y, mo, d = _digits(buf, a, 4), _digits(buf, a + 5, 2), _digits(buf, a + 8, 2)
    hh, mi = _digits(buf, a + 11, 2), _digits(buf, a + 14, 2)
    if min(y, mo, d, hh, mi) < 0 or not (1 <= mo <= 12 and 0 <= hh <= 23 and 0 <= mi <= 59):
        return bad
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    month_days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if d < 1 or d > month_days[mo - 1] or y < 1:
        return bad
    i = a + 16
    ss = 0
    us = 0
    if i < b and buf[i] == 58:
        ss = _digits(buf, i + 1, 2) if i + 3 <= b else -1
        if ss < 0 or ss > 59:
            return bad
        i += 3
        if i < b and buf[i] == 46:
            i += 1
            n = 0
            while i < b and 48 <= buf[i] <= 57 and n < 6:
                us = us * 10 + (buf[i] - 48)
                i += 1
                n += 1
            if n == 0 or (i < b and 48 <= buf[i] <= 57):
                return bad
            for _ in range(6 - n):
                us *= 10
    if i == b - 1 and buf[i] == 90:
        off = 0
    elif i == b - 6 and (buf[i] == 43 or buf[i] == 45) and buf[i + 3] == 58:
        oh, om = _digits(buf, i + 1, 2), _digits(buf, i + 4, 2)
        if oh < 0 or om < 0 or oh > 23 or om > 59:
            return bad
        off = (oh * 60 + om) * 60 * (1 if buf[i] == 43 else -1)
    else:
        return bad
    seconds = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off
    return seconds * 1_000_000 + us


@njit(cache=True)
def _tokenize(buf: U8, starts: I64, ends: I64, table: I64, names: U8, name_off: I64,
              t_s: F64, tnum: U8, vnum: U8, tag: I64, flag: U8,
              status: U8) -> None:  # pragma: no cover - compiled
    """Fields of each line [starts[i], ends[i]); status 0 taken, 1 for the slow path,
    2 blank. `tnum` / `vnum` get the text of a numeric time / value (t_s NaN then)."""
    mask = table.shape[0] - 1
    cuts = np.empty(4, np.int64)
    fa = np.empty(4, np.int64)
    fb = np.empty(4, np.int64)
    for li in range(starts.shape[0]):
        a, b = starts[li], ends[li]
        if b > a and buf[b - 1] == 13:
            b -= 1
        status[li] = 1
        blank = True
        for i in range(a, b):
            if not (buf[i] == 32 or buf[i] == 44 or 9 <= buf[i] <= 13):
                blank = False
                break
        if blank:
            status[li] = 2
            continue
        n = 0
        quoted = False
        for i in range(a, b):
            if buf[i] == 34:
                quoted = True
            elif buf[i] == 44:
                if n == 4:
                    n = 5
                    break
                cuts[n] = i
                n += 1
        if quoted or n < 2 or n > 3:
            continue
        fa[0] = a
        for k in range(n):
            fb[k] = cuts[k]
            fa[k + 1] = cuts[k] + 1
        fb[n] = b
        ta, tb = _strip(buf, fa[0], fb[0])
        if _is_number(buf, ta, tb):
            t_s[li] = math.nan
            for k in range(tb - ta):
                tnum[li, k] = buf[ta + k]
        else:
            us = _iso_us(buf, ta, tb)
            if us == -(1 << 62):
                continue
            t_s[li] = us / 1e6  # as datetime.timestamp() computes it: µs / 10⁶
        va, vb = _strip(buf, fa[2], fb[2])
        if not _is_number(buf, va, vb):
            continue
        for k in range(vb - va):
            vnum[li, k] = buf[va + k]
        f = 0
        if n == 3:
            ga, gb = _strip(buf, fa[3], fb[3])
            if gb - ga > 1:
                continue
            if gb - ga == 1:
                f = _FLAG_OF_BYTE[buf[ga]]
                if f < 0:
                    continue
        ka, kb = _strip(buf, fa[1], fb[1])
        slot = _fnv(buf, ka, kb) & mask
        found = -1
        while table[slot] >= 0:
            j = table[slot]
            na, nb = name_off[j], name_off[j + 1]
            if nb - na == kb - ka:
                same = True
                for k in range(nb - na):
                    if names[na + k] != buf[ka + k]:
                        same = False
                        break
                if same:
                    found = j
                    break
            slot = (slot + 1) & mask
        if found < 0:
            continue
        tag[li] = found
        flag[li] = f
        status[li] = 0


class _Tags:
    """The configured tag ids as the tokenizer's open-addressing hash table."""

    def __init__(self, tag_ids: Sequence[str]) -> None:
        self.ids = list(tag_ids)
        self.index = {t: i for i, t in enumerate(self.ids)}
        encoded = [t.encode() for t in self.ids]
        self.names = np.frombuffer(b"".join(encoded), np.uint8).copy()
        self.name_off = np.concatenate(([0], np.cumsum([len(e) for e in encoded]))).astype(
            np.int64)
        size = 1 << max(4, (2 * len(encoded)).bit_length())
        self.table = np.full(size, -1, np.int64)
        for j, e in enumerate(encoded):
            arr = np.frombuffer(e, np.uint8)
            slot = _fnv(arr, 0, len(arr)) & (size - 1)
            while self.table[slot] >= 0:
                slot = (slot + 1) & (size - 1)
            self.table[slot] = j


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise InvalidValueError(f"timestamp {text!r} has no UTC offset")
    return t.timestamp()


def _slow_line(path: Path, line: int, text: str,
               tags: _Tags) -> tuple[float, int, float, int] | str | None:
    """One line the kernel did not take, as the csv module reads it: (t, tag, value, flag),
    the unknown tag's name, or None for a blank row; SamplesError for a bad one."""
    row = next(csv.reader(io.StringIO(text)), [])
    if not row or not "".join(row).strip():
        return None
    if len(row) not in (3, 4):
        raise SamplesError(f"{path}: line {line}: expected 3 or 4 columns, got {len(row)}")
    tag = row[1].strip()
    try:
        t = _parse_time(row[0].strip())
        value = float(row[2])
        letter = row[3].strip() if len(row) == 4 and row[3].strip() else "N"
        if letter not in _FLAG_CODES:
            raise InvalidValueError(f"unknown flag {letter!r} (known: {', '.join(_FLAG_CODES)})")
    except ValueError as exc:
        raise SamplesError(f"{path}: line {line}: {exc}") from None
    if tag not in tags.index:
        return tag
    return t, tags.index[tag], value, _FLAG_CODES[letter]


def read_samples(path: Path, tag_ids: Iterable[str]) -> Iterator[SampleBlock]:
    """The samples of SAMPLES.csv, a block of lines at a time, in file order.

    Every tag must be one of `tag_ids`: the tags that are not are named, with the line of
    their first appearance, when the block that has them ends.
    """
    tags = _Tags(list(tag_ids))
    try:
        f = path.open("rb")
    except OSError as exc:
        raise SamplesError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        head = f.readline().decode("utf-8", "replace")
        header = [h.strip() for h in next(csv.reader(io.StringIO(head)), [])]
        if tuple(header[:3]) != SAMPLE_HEADER[:3] or header[3:] not in ([], ["flag"]):
            raise SamplesError(f"{path}: line 1: header must be "
                               f"'timestamp,tag,value' or 'timestamp,tag,value,flag'")
        line0 = 2
        rest = b""
        while True:
            data = f.read(BLOCK_BYTES)
            buf = rest + data
            cut = buf.rfind(b"\n") + 1 if data else len(buf)
            if cut == 0 and data:
                rest = buf
                continue
            block, rest = buf[:cut], buf[cut:]
            if block:
                yield _block(path, block, line0, tags)
                line0 += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if not data:
                return


def _block(path: Path, block: bytes, line0: int, tags: _Tags) -> SampleBlock:
    buf = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(buf == 10)
    ends = nl if block.endswith(b"\n") else np.append(nl, len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    ends = ends.astype(np.int64)
    n = len(starts)
    t_s = np.empty(n)
    tnum = np.zeros((n, _NUM_WIDTH), np.uint8)
    vnum = np.zeros((n, _NUM_WIDTH), np.uint8)
    tag = np.zeros(n, np.int64)
    flag = np.zeros(n, np.uint8)
    status = np.empty(n, np.uint8)
    _tokenize(buf, starts, ends, tags.table, tags.names, tags.name_off, t_s, tnum, vnum, tag,
              flag, status)
    ok = status == 0
    numeric_t = ok & np.isnan(t_s)
    value = np.full(n, np.nan)
    value[ok] = vnum[ok].view(f"S{_NUM_WIDTH}").ravel().astype(np.float64)
    t_s[numeric_t] = tnum[numeric_t].view(f"S{_NUM_WIDTH}").ravel().astype(np.float64)
    line = np.arange(line0, line0 + n, dtype=np.int64)
    unknown: dict[str, int] = {}
    for i in np.flatnonzero(status == 1).tolist():
        got = _slow_line(path, int(line[i]), block[starts[i]:ends[i]].decode("utf-8", "replace"),
                         tags)
        if isinstance(got, str):
            unknown.setdefault(got, int(line[i]))
        elif got is not None:
            t_s[i], tag[i], value[i], flag[i] = got
            ok[i] = True
    if unknown:
        listed = ", ".join(f"{t!r} (line {ln})" for t, ln in unknown.items())
        raise SamplesError(f"{path}: tags not in the plant configuration: {listed}")
    # The project's time range (model/times.py): a year-0 or NaN time would otherwise
    # overflow a datetime further on (exit 70), and the historian keeps epoch ms.
    outside = ok & ~((t_s >= EARLIEST_S) & (t_s <= LATEST_S))
    if outside.any():
        i = int(np.argmax(outside))
        text = block[starts[i]:ends[i]].decode("utf-8", "replace").split(",", 1)[0].strip()
        raise SamplesError(f"{path}: line {int(line[i])}: timestamp {text!r} is outside the "
                           f"allowed range {RANGE_TEXT}")
    return SampleBlock(t_s[ok], tag[ok], value[ok], flag[ok], line[ok])


# ------------------------------------------------------------------------ calculating


class _Minutes:
    """Exact minute boundaries (as the live server's datetimes give them) from a first one."""

    def __init__(self, clock: PlantClock, first_t_s: float) -> None:
        start = clock.minute_start(datetime.fromtimestamp(first_t_s, UTC))
        self.start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        self.step_us = timedelta(seconds=clock.minute_seconds) // timedelta(microseconds=1)

    def edge(self, i: I64) -> F64:
        """Start of minute i (epoch seconds) as `datetime.timestamp()` gives it."""
        out: F64 = (self.start_us + i * self.step_us) / 1e6
        return out

    def index(self, t_s: F64) -> I64:
        """The minute each time lies in: edge(i) ≤ t < edge(i + 1)."""
        i = np.floor((t_s * 1e6 - self.start_us) / self.step_us).astype(np.int64)
        i -= t_s < self.edge(i)
        i += t_s >= self.edge(i + 1)
        return i


def recalculate(plan: CalculationPlan, samples: Path) -> Iterator[RecalcBatch]:
    """Every minute from the first sample's to the last one's that has a reading, calculated
    as the live server calculates it, in batches of minutes in time order."""
    config = plan.config
    calc = MinuteCalculator(plan)
    clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
    counter_idx = [calc.tag_ids.index(s.counter.tag)
                   for _, s in config.streams() if s.counter is not None]
    minutes: _Minutes | None = None
    pending: list[tuple[I64, SampleBlock]] = []
    done = 0  # minutes [0, done) are calculated
    last = -1
    for block in read_samples(samples, calc.tag_ids):
        if block.t_s.size == 0:
            continue
        if minutes is None:
            minutes = _Minutes(clock, float(block.t_s.min()))
        idx = minutes.index(block.t_s)
        if (idx < done).any():
            i = int(np.argmax(idx < done))
            raise SamplesError(
                f"{samples}: line {int(block.line[i])}: sample at "
                f"{datetime.fromtimestamp(float(block.t_s[i]), UTC).isoformat()} is in a minute "
                "already calculated: rows must be in time order (as export-samples writes them)")
        pending.append((idx, block))
        last = max(last, int(idx.max()))
        upto = int(idx.min())  # later blocks must not go back before this block's start
        if upto > done:
            yield from _calculate(calc, minutes, pending, done, upto, counter_idx)
            pending = [(i, b) for i, b in pending if (i >= upto).any()]
            done = upto
    if minutes is not None:
        yield from _calculate(calc, minutes, pending, done, last + 1, counter_idx)


def _calculate(calc: MinuteCalculator, minutes: _Minutes,
               pending: Sequence[tuple[I64, SampleBlock]], first: int, stop: int,
               counter_idx: Sequence[int]) -> Iterator[RecalcBatch]:
    """Minutes [first, stop) from the pending samples, MAX_BATCH_MINUTES at a time."""
    idx = np.concatenate([i for i, _ in pending])
    keep = (idx >= first) & (idx < stop)
    idx = idx[keep]
    t_s = np.concatenate([b.t_s for _, b in pending])[keep]
    tag = np.concatenate([b.tag for _, b in pending])[keep]
    value = np.concatenate([b.value for _, b in pending])[keep]
    flag = np.concatenate([b.flag for _, b in pending])[keep]
    # Per minute and tag in time order, equal times in file order: what the live
    # server's tag store held (and export-samples wrote).
    order = np.lexsort((t_s, tag, idx))
    idx, t_s, tag, value, flag = idx[order], t_s[order], tag[order], value[order], flag[order]
    n_tags = len(calc.tag_ids)
    for a in range(first, stop, MAX_BATCH_MINUTES):
        b = min(a + MAX_BATCH_MINUTES, stop)
        lo, hi = np.searchsorted(idx, [a, b])
        m, tg = idx[lo:hi] - a, tag[lo:hi]
        cell = m * n_tags + tg
        counts = np.bincount(cell, minlength=(b - a) * n_tags).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.arange(hi - lo) - starts[cell]
        width = max(int(counts.max(initial=0)), 1)
        values = np.full((b - a, n_tags, width), np.nan)
        flags = np.zeros((b - a, n_tags, width), np.uint8)
        values[m, tg, pos] = value[lo:hi]
        flags[m, tg, pos] = flag[lo:hi]
        per_minute = counts.reshape(b - a, n_tags)
        # A minute without a single reading (not even a failed poll's, which the live
        # server stores flagged) is one the server did not run for: it never calculated
        # it, so neither does recalc, and its hour reads "not running" alike.
        ran = per_minute.sum(axis=1) > 0
        if not ran.any():
            continue
        readings = []
        for c in counter_idx:
            sel = tg == c
            readings.append(Readings(t_s[lo:hi][sel], value[lo:hi][sel], flag[lo:hi][sel]))
        arrays = calc.compute_batch(values[ran], flags[ran], per_minute[ran])
        yield RecalcBatch(minutes.edge(np.arange(a, b, dtype=np.int64)[ran]), arrays,
                          tuple(readings))


def recalculate_periods(plan: CalculationPlan,
                        batches: Iterable[RecalcBatch]) -> Iterator[PeriodRecords]:
    """The hours and days the live server closes, from recalculated minutes; at the end
    the incomplete last hour and day too."""
    cycle = PeriodCycle(plan)
    for batch in batches:
        yield from cycle.add(arrays_batch(batch.t_s, batch.arrays, batch.counters))
    yield from cycle.flush()


# ------------------------------------------------------------------------ writing


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(x)


def write_minute_results(out: TextIO, config: CalculationConfig,
                         batches: Iterable[RecalcBatch]) -> int:
    """RESULTS.csv at minute level: one row per source and minute; returns the row count."""
    pairs = config.sources()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("period_start", "source", "unit", *MINUTE_FIELDS, "valid", "flag",
                "substitution"))
    names = {int(f): f.name for f in DataFlag}
    n = 0
    for batch in batches:
        a = batch.arrays
        cols = [a.cems[:, :, c] if c >= 0 else a.cems[:, :, kernels.OUT_RATE] / 1000.0
                for c in _MINUTE_COLUMNS]
        values = np.stack(cols, axis=-1).tolist()
        flags = a.source_flag.tolist()
        subs = a.source_substitution.tolist()
        for m, t_s in enumerate(batch.t_s.tolist()):
            t = _iso(datetime.fromtimestamp(t_s, UTC))
            for s, (unit, src) in enumerate(pairs):
                w.writerow((t, src.id, unit.id, *(_num(v) for v in values[m][s]),
                            int(flags[m][s] == 0), names[flags[m][s]],
                            kernels.SUBSTITUTION_RULES[subs[m][s]]))
                n += 1
    return n


# Counted subperiods, by level: an hour counts minutes, a day hours, a month or year days.
COUNT_UNIT = {"hour": "min", "day": "h", "month": "d", "year": "d"}
RESULT_KINDS = ("streams", "units", "allowance")  # files written next to RESULTS.csv
# The formula of each method, in the factor columns' names: compute/factors.py's, once.
FORMULA = factors.FORMULA_TEXT
ALLOWANCE_FIELDS = ("annual_t", "ytd_t", "year_fraction", "days_left_d", "trailing_30d_t",
                    "prorated_t", "used_pct", "headroom_t", "forecast_year_end_t",
                    "forecast_shortfall_t", "carbon_price_cny_t", "shortfall_cost_cny")


@dataclass(frozen=True, slots=True)
class ResultFiles:
    """Where recalc writes each kind of period row; None: that kind is not written."""

    sources: TextIO
    streams: TextIO | None = None
    units: TextIO | None = None
    allowance: TextIO | None = None


def result_paths(out: Path) -> dict[str, Path]:
    """The stream, unit and allowance files next to RESULTS.csv: RESULTS-streams.csv …"""
    return {k: out.with_name(f"{out.stem}-{k}{out.suffix or '.csv'}") for k in RESULT_KINDS}


@dataclass(frozen=True, slots=True)
class _Period:
    """One period's rows of every kind, and the allowance position at its end."""

    t: datetime
    t_end: datetime
    sources: Sequence[PeriodResult]
    streams: Sequence[StreamPeriod]
    units: Sequence[UnitPeriod]
    allowance: AllowancePosition | None
    allowance_at: datetime | None  # the end of the hour the position is of


def _flag_of(n_valid: int, n_needed: int, flags: Iterable[DataFlag]) -> DataFlag:
    """N when every subperiod is there and valid, else the worst flag (B when none worse)."""
    worst = max((int(f) for f in flags), default=0)
    return DataFlag(0 if n_valid == n_needed else worst or int(DataFlag.B))


def _sum_or_nan(values: Iterable[float]) -> float:
    xs = [x for x in values if math.isfinite(x)]
    return math.fsum(xs) if xs else math.nan


def _source_totals(config: CalculationConfig, clock: PlantClock, start: datetime,
                   end: datetime, group: Sequence[PeriodRecords]) -> list[PeriodResult]:
    """Month or year totals of each source from its days (compute/rollup.py rollup_total):
    Σ of the days' CO2; valid when every day of the period is there and valid."""
    n_days = round((end - start).total_seconds() / (24 * 60 * config.clock.minute_seconds))
    out = []
    for i, sid in enumerate(s.id for _, s in config.sources()):
        ds = [g.sources[i] for g in group]
        n_valid = sum(d.valid for d in ds)
        flag = _flag_of(n_valid, n_days, (d.flag for d in ds))
        n_sub = sum(d.n_substituted for d in ds)
        rules = sorted({d.substitution_rule for d in ds if d.substitution_rule})
        out.append(PeriodResult(
            sid, start, math.nan, math.nan, math.nan, _sum_or_nan(d.co2_t for d in ds),
            _sum_or_nan(d.co2_measured_t for d in ds), flag is DataFlag.N, flag,
            n_valid, n_sub > 0, ",".join(rules), n_sub,
            sum(d.n_missing for d in ds)
            + periods.hours_of_absent_days(clock, start, end, [g.t for g in group])))
    return out


def _stream_totals(config: CalculationConfig, start: datetime, end: datetime,
                   group: Sequence[PeriodRecords]) -> list[StreamPeriod]:
    """Month or year totals of each stream and factor version in force from its days:
    Σ quantity and Σ CO2 (n_valid_d: the version's valid days); valid when every day of
    the period has the stream valid (a day that changes version counts once)."""
    n_days = round((end - start).total_seconds() / (24 * 60 * config.clock.minute_seconds))
    by: dict[tuple[str, str], list[StreamPeriod]] = {}
    bad_days: dict[str, set[datetime]] = {}
    all_days: dict[str, set[datetime]] = {}
    for g in group:
        for s in g.streams:
            by.setdefault((s.stream, s.factor_version), []).append(s)
            all_days.setdefault(s.stream, set()).add(g.t)
            if not s.valid:
                bad_days.setdefault(s.stream, set()).add(g.t)
    out = []
    for (stream, version), rs in by.items():
        days_valid = len({r_.t for r_ in rs if r_.valid})
        stream_valid = len(all_days[stream] - bad_days.get(stream, set()))
        flag = _flag_of(stream_valid, n_days, (r_.flag for r_ in rs))
        out.append(StreamPeriod(
            rs[0].stream, rs[0].unit, max(start, rs[0].t), min(end, rs[-1].t_end),
            _sum_or_nan(r_.quantity for r_ in rs), rs[0].quantity_unit,
            _sum_or_nan(r_.co2_t for r_ in rs), version, rs[0].method, flag is DataFlag.N,
            flag, days_valid, "; ".join(sorted({r_.note for r_ in rs if r_.note})),
            _sum_or_nan(r_.ch4_t for r_ in rs), _sum_or_nan(r_.n2o_t for r_ in rs), rs[0].gas,
            _sum_or_nan(r_.gas_t for r_ in rs), _sum_or_nan(r_.co2e_t for r_ in rs),
            _gwp_sets(rs)))
    return out


def _gwp_sets(records: Iterable[StreamPeriod | UnitPeriod]) -> str:
    """The GWP sets of the days a total sums, in order (two when a set takes over)."""
    return ",".join(dict.fromkeys(r.gwp_set for r in records if r.gwp_set))


def _unit_totals(config: CalculationConfig, start: datetime, end: datetime,
                 group: Sequence[PeriodRecords]) -> list[UnitPeriod]:
    """Month or year totals of each unit from its days: Σ CEMS, Σ factor method, Σ output;
    intensity over the days with a valid intensity; reconciliation of the sums."""
    n_days = round((end - start).total_seconds() / (24 * 60 * config.clock.minute_seconds))
    out = []
    for u, unit in enumerate(config.units):
        ds = [g.units[u] for g in group]
        cems = _sum_or_nan(d.co2_cems_t for d in ds)
        factor = _sum_or_nan(d.co2_factor_t for d in ds)
        basis = unit.accounting_basis
        product = unit.output.unit == "t"
        acc = [d.co2_factor_t if basis == "factor" else d.co2_cems_t for d in ds]
        outs = [d.output_t if product else d.output_mwh for d in ds]
        ok = [k for k, d in enumerate(ds) if d.intensity_flag is DataFlag.N and outs[k] > 0]
        i_cems = math.fsum(acc[k] for k in ok)
        i_out = math.fsum(outs[k] for k in ok)
        flag = _flag_of(sum(d.valid for d in ds), n_days, (d.flag for d in ds))
        i_flag = _flag_of(len(ok), n_days, (d.intensity_flag for d in ds))
        diff, exceeded = math.nan, False
        if config.reconciliation is not None and math.isfinite(factor) and unit.sources:
            rec = derived.reconcile(cems, factor, config.reconciliation.limit_pct)
            diff, exceeded = float(rec.diff_pct), bool(rec.exceeds)
        total = _sum_or_nan(outs)
        intensity = i_cems / i_out if i_out > 0 else math.nan
        nan = math.nan
        out.append(UnitPeriod(unit.id, start, cems, factor, nan if product else total,
                              nan if product else intensity, flag is DataFlag.N,
                              flag, diff, exceeded, i_flag, len(ok),
                              co2_t=factor if basis == "factor" else cems, basis=basis,
                              output_t=total if product else nan,
                              intensity_t_t=intensity if product else nan,
                              co2e_t=_sum_or_nan(d.co2e_t for d in ds), gwp_set=_gwp_sets(ds),
                              n_substituted=sum(d.n_substituted for d in ds)))
    return out


_Position = tuple[AllowancePosition | None, datetime | None]  # and the end of its hour


def _day_groups(config: CalculationConfig, records: Iterable[PeriodRecords], level: str
                ) -> Iterator[tuple[datetime, datetime, list[PeriodRecords], _Position]]:
    """The days of each month or year (level), with the allowance position at the end of
    the last hour before the group's last day closed."""
    clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
    bounds = clock.month_bounds if level == "month" else clock.year_bounds
    last: _Position = (None, None)
    at_end: _Position = (None, None)
    group: list[PeriodRecords] = []
    for r in records:
        if r.level == "hour":
            last = (r.allowance, r.t_end)
            continue
        if group and bounds(r.t) != bounds(group[0].t):
            yield (*bounds(group[0].t), group, at_end)
            group = []
        group.append(r)
        at_end = last
    if group:
        yield (*bounds(group[0].t), group, at_end)


def _totals(config: CalculationConfig, days: Iterable[PeriodRecords],
            level: str) -> Iterator[tuple[datetime, list[PeriodResult]]]:
    """Month or year totals of each source from its days (see _source_totals)."""
    clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
    for start, end, group, _ in _day_groups(config, days, level):
        yield start, _source_totals(config, clock, start, end, group)


def _periods(config: CalculationConfig, records: Iterable[PeriodRecords],
             level: str) -> Iterator[_Period]:
    """The periods of `level` with their rows; the allowance position at a period's end is
    its last hour's."""
    if level in ("hour", "day"):
        last: _Position = (None, None)
        for r in records:
            if r.level == "hour":
                last = (r.allowance, r.t_end)
            if r.level == level:
                yield _Period(r.t, r.t_end, r.sources, r.streams, r.units, *last)
        return
    clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
    for start, end, group, at_end in _day_groups(config, records, level):
        yield _Period(start, end, _source_totals(config, clock, start, end, group),
                      _stream_totals(config, start, end, group),
                      _unit_totals(config, start, end, group), *at_end)


def _source_header(level: str) -> tuple[str, ...]:
    n = COUNT_UNIT[level]
    return ("period_start", "source", "unit", *PERIOD_FIELDS, "valid", "flag", f"n_valid_{n}",
            "substituted", "substitution_rule", "n_substituted_h", "n_missing_h",
            "substitute_co2_dry_pct", "substitute_flow_std_dry_m3_h", "substitution_note")


def _stream_header(level: str) -> tuple[str, ...]:
    counts = (("n_valid_min", "n_valid_readings") if level == "hour"
              else (f"n_valid_{COUNT_UNIT[level]}",))
    return ("period_start", "period_end", "stream", "unit", "method", "quantity",
            "quantity_unit", "co2_t", "factor_version", "factor_source", "formula",
            *factors.FACTOR_UNITS, "valid", "flag", *counts, "note", *_GAS_COLUMNS)


# CO2e of a stream row (compute/gases.py): its other gases in t, and co2_t + Σ gas · GWP.
_GAS_COLUMNS = ("ch4_t", "n2o_t", "gas", "gas_t", "co2e_t", "gwp_set")


def _unit_header(level: str) -> tuple[str, ...]:
    n = COUNT_UNIT[level]
    return ("period_start", "unit", "co2_cems_t", "co2_factor_t", "output_mwh",
            "intensity_t_mwh", "intensity_flag", f"intensity_n_valid_{n}", "valid", "flag",
            "reconciliation_diff_pct", "reconciliation_exceeded", "co2_t", "basis",
            "output_t", "intensity_t_t", "co2e_t", "gwp_set", "n_substituted_h")


def write_records(files: ResultFiles, plan: CalculationPlan, records: Iterable[PeriodRecords],
                  level: str) -> dict[str, int]:
    """The source, stream, unit and allowance rows of every period of `level` (hour, day,
    month, year) from closed hours and days; returns the row count of each kind.

    Every column names its unit: t, kg/h, %, m³/h; n_valid_min / n_valid_h / n_valid_d
    count valid minutes / hours / days. A stream row gives the factor version in force and
    the factors its formula used (the others blank), so its co2_t can be recomputed by hand.
    """
    config = plan.config
    unit_of = {s.id: u.id for u, s in config.sources()}
    counter_streams = {s.id for _, s in config.streams() if s.counter is not None}
    versions = {v.id: v for name in plan.factors.streams for v in plan.factors.versions(name)}
    site = config.site.id
    out: dict[str, TextIO | None] = {"sources": files.sources, "streams": files.streams,
                                     "units": files.units, "allowance": files.allowance}
    headers = {"sources": _source_header(level), "streams": _stream_header(level),
               "units": _unit_header(level),
               "allowance": ("period_start", "position_at", "site", *ALLOWANCE_FIELDS)}
    writers = {k: csv.writer(f, lineterminator="\n") for k, f in out.items() if f is not None}
    for k, w in writers.items():
        w.writerow(headers[k])
    n = dict.fromkeys(out, 0)

    def row(kind: str, cells: Iterable[object]) -> None:
        if kind in writers:
            writers[kind].writerow(cells)
            n[kind] += 1

    for p in _periods(config, records, level):
        start = _iso(p.t)
        for r in p.sources:
            row("sources", (start, r.source, unit_of[r.source],
                            *(_num(getattr(r, f)) for f in PERIOD_FIELDS), int(r.valid),
                            r.flag.name, r.n_valid, int(r.substituted), r.substitution_rule,
                            r.n_substituted, r.n_missing, _num(r.substitute_co2_dry_pct),
                            _num(r.substitute_flow_std_dry_m3_h), r.substitution_note))
        for s in p.streams:
            v = versions.get(s.factor_version)
            used = factors.REQUIRED_FACTORS.get((s.method, s.quantity_unit), ())
            if v is not None and any(g in v.values for g in factors.GAS_FACTORS.values()):
                # CH4 / N2O = quantity · NCV · EF · 1e-6: their factors, checkable by hand too
                used = (*used, factors.NCV_FACTOR.get(s.quantity_unit, ""),
                        *factors.GAS_FACTORS.values())
            fac = [_num(v.values[f]) if v is not None and f in used and f in v.values else ""
                   for f in factors.FACTOR_UNITS]
            counts: tuple[object, ...] = (s.n_valid,)
            if level == "hour":
                counts = ("", s.n_valid) if s.stream in counter_streams else (s.n_valid, "")
            row("streams", (_iso(s.t), _iso(s.t_end), s.stream, s.unit, s.method,
                            _num(s.quantity), s.quantity_unit, _num(s.co2_t), s.factor_version,
                            v.source if v is not None else "", FORMULA.get(s.method, ""), *fac,
                            int(s.valid), s.flag.name, *counts, s.note, _num(s.ch4_t),
                            _num(s.n2o_t), s.gas, _num(s.gas_t), _num(s.co2e_t), s.gwp_set))
        for u in p.units:
            row("units", (start, u.unit, _num(u.co2_cems_t), _num(u.co2_factor_t),
                          _num(u.output_mwh), _num(u.intensity_t_mwh), u.intensity_flag.name,
                          u.intensity_n_valid, int(u.valid), u.flag.name,
                          _num(u.reconciliation_diff_pct), int(u.reconciliation_exceeded),
                          _num(u.co2_t), u.basis, _num(u.output_t), _num(u.intensity_t_t),
                          _num(u.co2e_t), u.gwp_set, u.n_substituted))
        a = p.allowance
        if a is not None and p.allowance_at is not None:
            row("allowance", (start, _iso(p.allowance_at), site, _num(a.annual_t), _num(a.ytd_t),
                              _num(a.year_fraction), _num(a.days_left), _num(a.trailing_30d_t),
                              _num(a.prorated_t), _num(a.used_pct), _num(a.headroom_t),
                              _num(a.forecast_year_end_t), _num(a.forecast_shortfall_t),
                              _num(a.carbon_price_cny_t), _num(a.shortfall_cost_cny)))
    return n


def write_period_results(out: TextIO, plan: CalculationPlan, batches: Iterable[RecalcBatch],
                         level: str, *, streams: TextIO | None = None,
                         units: TextIO | None = None,
                         allowance: TextIO | None = None) -> int:
    """RESULTS.csv at hour, day, month or year level: one row per source and period, and
    the stream, unit and allowance rows into the files given (write_records).

    Month and year rows sum the days (n_valid_d: valid days; n_substituted_h, n_missing_h:
    hours); they have no concentration or flow. Returns the number of source rows.
    """
    got = write_records(ResultFiles(out, streams, units, allowance), plan,
                        recalculate_periods(plan, batches), level)
    return got["sources"]


def write_samples(out: TextIO, windows: Iterable[tuple[datetime, RawWindow]]) -> int:
    """SAMPLES.csv of stored raw windows; returns the number of samples written."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(SAMPLE_HEADER)
    names = {int(f): f.name for f in DataFlag}
    n = 0
    for _, raw in windows:
        o = 0
        for tag, count in zip(raw.tags, raw.counts.tolist(), strict=True):
            for k in range(o, o + count):
                t = datetime.fromtimestamp(float(raw.times[k]), UTC)
                w.writerow((t.isoformat(timespec="microseconds"), tag,
                            repr(float(raw.values[k])), names[int(raw.flags[k])]))
            o += count
            n += count
    return n
