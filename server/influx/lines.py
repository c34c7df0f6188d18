"""Line protocol of raw readings, a whole SampleBlock at a time, and of a minute's results.

The lines are the ones `server.influx.sink.sample_lines` makes from per-reading records
(`sample,site=…,tag=…,flag=… value=… <ns>`, NaN and ±inf left out), built from the
block's columns without a Python object per reading but the line itself:

* the measurement-and-tag-set prefix of each (tag, flag) is escaped once and kept for the
  process's life, per tag table (a table is built once from the configuration), as an
  object array indexed by the block's rows;
* the nanosecond timestamps are computed with numpy exactly as `datetime.fromtimestamp`
  would round them to microseconds, and formatted once per run of equal times (a block
  is polls concatenated, each poll's readings stamped alike);
* values are formatted with `repr` (the shortest text that reads back to the same
  float), integral ones as integers; then each line is one `"".join` of three pieces.

Measured on the 2-core box (bench/test_influx_throughput.py, 100 000 float32-decoded
readings, 64-66 ms: 1.5 M lines/s against 1.0 M for a bare f-string): `repr` of the
values is about 75 % of it (the shortest round-trip text is what costs; numpy's own
float-to-string casts were slower), the prefixes and timestamps 3 %, the join the rest.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from model.flags import DataFlag
from model.records import MinuteResult, RevisedMinutes, SampleBlock, TagTable

# Same escapes as server.influx.sink.escape_key (kept here: the sink imports this module).
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
# Integral floats below this print as "<digits>.0" (repr switches to 1e+16 notation here).
_FIXED_NOTATION_LIMIT = 1e16
# Tables whose prefixes are kept: the runtime has one; tests and tools make more.
_MAX_TABLES = 8
_FLAG_NAMES = {int(f): f.name for f in DataFlag}

ObjectArray = npt.NDArray[np.object_]


def _escape_key(text: str) -> str:
    out = text.translate(_ESCAPE_KEY)
    # A trailing backslash would escape the separator that follows it.
    return out + " " if out.endswith("\\") else out


class _TablePrefixes:
    """The line prefixes of one tag table and site: per flag, one string per row."""

    def __init__(self, table: TagTable, site: str) -> None:
        self.table = table  # held so that id(table), the cache key, stays this table's
        head = f"sample,site={_escape_key(site)}" if site else "sample"
        self._tag_heads = [f"{head},tag={_escape_key(tag)}" if tag else head
                           for tag in table.ids]
        self._by_flag: dict[int, ObjectArray] = {}

    def for_flag(self, flag: int) -> ObjectArray:
        """Prefixes `sample,site=…,tag=…,flag=X value=` of every row (built on first use)."""
        got = self._by_flag.get(flag)
        if got is None:
            name = _FLAG_NAMES.get(flag)
            if name is None:
                raise ValueError(f"{flag} is not a DataFlag")
            tail = f",flag={name} value="
            got = np.array([h + tail for h in self._tag_heads], dtype=object)
            self._by_flag[flag] = got
        return got


_cache: OrderedDict[tuple[int, str], _TablePrefixes] = OrderedDict()
_cache_lock = threading.Lock()  # the sink builds lines in worker threads


def _prefixes(table: TagTable, site: str) -> _TablePrefixes:
    key = (id(table), site)
    with _cache_lock:
        got = _cache.get(key)
        if got is not None and got.table is table:
            _cache.move_to_end(key)
            return got
    got = _TablePrefixes(table, site)
    with _cache_lock:
        _cache[key] = got
        _cache.move_to_end(key)
        while len(_cache) > _MAX_TABLES:
            _cache.popitem(last=False)
    return got


def timestamps_ns(times: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Epoch nanoseconds of epoch-second floats, rounded to microseconds as
    `datetime.fromtimestamp` rounds them (half to even on the fraction's microseconds)."""
    frac, whole = np.modf(times)
    us = np.rint(frac * 1e6)  # the same double product and rounding as CPython's pytime.c
    return (whole.astype(np.int64) * 1_000_000 + us.astype(np.int64)) * 1000


def value_texts(values: npt.NDArray[np.float64]) -> list[str]:
    """Field texts of finite float values: `repr`, without the ".0" of integral ones."""
    integral = (values == np.trunc(values)) & (np.abs(values) < _FIXED_NOTATION_LIMIT)
    n_int = int(np.count_nonzero(integral))
    if n_int == 0:
        return list(map(repr, values.tolist()))
    # int formatting is several times faster than float repr; -0.0 keeps its sign.
    ints = list(map(str, values[integral].astype(np.int64).tolist()))
    if np.signbit(values[integral]).any():
        neg_zero = np.flatnonzero(np.signbit(values[integral]) & (values[integral] == 0))
        for i in neg_zero.tolist():
            ints[i] = "-0"
    if n_int == len(values):
        return ints
    out = np.empty(len(values), dtype=object)
    out[integral] = ints
    rest = ~integral
    out[rest] = list(map(repr, values[rest].tolist()))
    texts: list[str] = out.tolist()
    return texts


def _time_texts(ns: npt.NDArray[np.int64]) -> list[str]:
    """" <ns>" per reading, each distinct run of equal times formatted once."""
    n = len(ns)
    starts = np.flatnonzero(np.concatenate(([True], ns[1:] != ns[:-1])))
    if len(starts) == n:
        return [f" {t}" for t in ns.tolist()]
    texts = np.array([f" {t}" for t in ns[starts].tolist()], dtype=object)
    runs = np.diff(np.append(starts, n))
    out: list[str] = np.repeat(texts, runs).tolist()
    return out


def block_lines(block: SampleBlock, site: str) -> list[str]:
    """Lines `sample,site=…,tag=…,flag=… value=… <ns>` of a block's readings, in its order;
    readings whose value is NaN or ±inf (which line protocol cannot hold) are left out."""
    values, rows, flags, times = block.values, block.rows, block.flags, block.times
    if len(values) == 0:
        return []
    finite = np.isfinite(values)
    if not finite.all():
        values, rows, flags, times = values[finite], rows[finite], flags[finite], times[finite]
        if len(values) == 0:
            return []
    table = _prefixes(block.table, site)
    lo, hi = int(flags.min()), int(flags.max())
    if lo == hi:
        heads: list[str] = table.for_flag(lo)[rows].tolist()
    else:
        mixed = np.empty(len(rows), dtype=object)
        for flag in np.unique(flags).tolist():
            at = flags == flag
            mixed[at] = table.for_flag(int(flag))[rows[at]]
        heads = mixed.tolist()
    return list(map("".join, zip(heads, value_texts(values),
                                 _time_texts(timestamps_ns(times)), strict=True)))


# --- a minute's results ---------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_SOURCE_FLOATS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                  "co2_rate_kg_h", "co2_kg", "co2_hour_t", "co2_today_t", "co2_ytd_t")
_UNIT_FLOATS = ("output_mwh", "co2_kg", "intensity_t_mwh", "co2_today_t", "output_today_mwh",
                "intensity_today_t_mwh", "co2_ytd_t")
_SITE_FLOATS = ("co2_kg", "co2_today_t", "co2_ytd_t", "allowance_annual_t",
                "allowance_used_pct", "allowance_headroom_t")
_BOOL_TEXT = np.array(["false", "true"], dtype=object)
# Heads `co2_source,site=…,unit=…,source=…,flag=X ` by (measurement, site, tag values):
# the plant's sources and units, so a few thousand entries; cleared if it ever grows past
# what any plant has (names made up per minute would otherwise grow it without end).
_HEADS: dict[tuple[str, ...], str] = {}
_MAX_HEADS = 1_000_000


def _head(measurement: str, keys: Sequence[str], values: Sequence[str]) -> str:
    """`measurement,k=v,… ` (empty values left out), escaped once and kept."""
    key = (measurement, *values)
    got = _HEADS.get(key)
    if got is None:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        got = measurement + "".join(f",{k}={_escape_key(v)}"
                                    for k, v in zip(keys, values, strict=True) if v) + " "
        _HEADS[key] = got
    return got


def _time_text(t: datetime) -> str:
    return f" {(t - _EPOCH) // _MICROSECOND * 1000}"


def _field_lines(heads: list[str], names: Sequence[str],
                 columns: npt.NDArray[np.float64], valid: npt.NDArray[np.bool_] | None,
                 tails: Sequence[str]) -> list[str]:
    """head + `name=value,…` (NaN and ±inf fields left out) [+ `,valid=…`] + tail per row;
    rows left without any field are left out. `columns` is rows × len(names)."""
    n = len(heads)
    finite = np.isfinite(columns)
    texts: list[list[str]] = []
    for j in range(len(names)):
        col = np.full(n, "", dtype=object)
        ok = finite[:, j]
        col[ok] = value_texts(columns[ok, j])
        texts.append(col.tolist())
    flag_text: list[str] = (_BOOL_TEXT[valid.astype(np.intp)].tolist() if valid is not None
                            else [])
    keys = [("" if j == 0 else ",") + f"{_escape_key(name)}=" for j, name in enumerate(names)]
    parts: list[Any] = [heads]
    for key, col_texts in zip(keys, texts, strict=True):
        parts += [repeat(key, n), col_texts]
    if valid is not None:
        parts += [repeat(",valid=" if names else "valid=", n), flag_text]
    parts.append(tails)
    out = list(map("".join, zip(*parts, strict=False)))
    bad = np.flatnonzero(~finite.all(axis=1)).tolist()
    if not bad:
        return out
    # Rows with a NaN field: built again field by field, and left out if nothing is left.
    for i in bad:
        pieces = [f"{_escape_key(name)}={texts[j][i]}" for j, name in enumerate(names)
                  if finite[i, j]]
        if valid is not None:
            pieces.append(f"valid={flag_text[i]}")
        out[i] = f"{heads[i]}{','.join(pieces)}{tails[i]}" if pieces else ""
    return [x for x in out if x]


def source_count(result: MinuteResult) -> int:
    """How many sources the minute has (without building their records)."""
    cols = result.source_columns
    return len(cols.sources) if cols is not None else len(result.sources)


def minute_lines(result: MinuteResult, site: str) -> list[str]:
    """Lines of one minute's results (co2_source, co2_unit, co2_site), the same as
    server.influx.sink.result_lines makes; sources from the minute's columns if it has them."""
    out: list[str] = []
    cols = result.source_columns
    if cols is not None:
        n = len(cols.sources)
        names = [f.name for f in DataFlag]
        flags = cols.flag.tolist()
        heads = [_head("co2_source", ("site", "unit", "source", "flag"),
                       (site, u, s, names[f]))
                 for u, s, f in zip(cols.units, cols.sources, flags, strict=True)]
        values = np.column_stack([getattr(cols, name) for name in _SOURCE_FLOATS]) if n else (
            np.empty((0, len(_SOURCE_FLOATS))))
        out += _field_lines(heads, _SOURCE_FLOATS, values, cols.flag == 0,
                            [_time_text(result.t)] * n)
    elif result.sources:
        src = result.sources
        heads = [_head("co2_source", ("site", "unit", "source", "flag"),
                       (site, s.unit, s.source, s.flag.name)) for s in src]
        get = attrgetter(*_SOURCE_FLOATS)
        values = np.array([get(s) for s in src], dtype=np.float64)
        out += _field_lines(heads, _SOURCE_FLOATS, values,
                            np.array([s.valid for s in src], dtype=bool),
                            _times(s.t for s in src))
    if result.units:
        units = result.units
        heads = [_head("co2_unit", ("site", "unit", "flag"), (site, u.unit, u.flag.name))
                 for u in units]
        get = attrgetter(*_UNIT_FLOATS)
        out += _field_lines(heads, _UNIT_FLOATS,
                            np.array([get(u) for u in units], dtype=np.float64),
                            np.array([u.valid for u in units], dtype=bool),
                            _times(u.t for u in units))
    st = result.site
    out += _field_lines([_head("co2_site", ("site",), (site,))], _SITE_FLOATS,
                        np.array([attrgetter(*_SITE_FLOATS)(st)], dtype=np.float64), None,
                        [_time_text(st.t)])
    return out


def _times(times: Any) -> list[str]:
    """" <ns>" of each datetime, each distinct one computed once."""
    cache: dict[datetime, str] = {}
    out = []
    for t in times:
        text = cache.get(t)
        if text is None:
            text = cache[t] = _time_text(t)
        out.append(text)
    return out


def revised_lines(revised: RevisedMinutes, site: str) -> list[str]:
    """Lines of minutes corrected after they were sent: the corrected values in the series
    of their new flag (S), and `superseded=true,valid=false` written over the point first
    sent, where the flag was another, so that a query of valid points counts each minute
    once and the original values stay readable."""
    out: list[str] = []
    for m in revised.minutes:
        measurement = "co2_source" if m.level == "source" else "co2_unit"
        keys = ("site", "unit", "source", "flag") if m.level == "source" else (
            "site", "unit", "flag")
        ids = (site, m.unit, m.ident) if m.level == "source" else (site, m.unit)
        names = sorted(k for k, v in m.values.items()
                       if isinstance(v, float) and math.isfinite(v) and k != "valid")
        fields = [f"{_escape_key(k)}={value_texts(np.array([m.values[k]]))[0]}"
                  for k in names]
        valid = "true" if m.flag in (DataFlag.N, DataFlag.S) else "false"
        tail = _time_text(m.t)
        if m.old_flag != m.flag:
            out.append(_head(measurement, keys, (*ids, m.old_flag.name))
                       + "superseded=true,valid=false" + tail)
        out.append(_head(measurement, keys, (*ids, m.flag.name))
                   + ",".join([*fields, f"valid={valid}"]) + tail)
    return out
