"""Recalculation from raw samples (auditors, factor corrections) and the sample export.

SAMPLES.csv: header `timestamp,tag,value[,flag]`; timestamp ISO 8601 with offset, or
epoch seconds; flag an HJ 212 letter, default N. The export writes ISO 8601 UTC with
microseconds and values with every digit, so that a recalculation of exported samples
reproduces the stored results exactly.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from compute import periods
from compute.clock import PlantClock
from compute.cycle import MinuteCycle
from compute.rollup import PeriodResult
from compute.tagstore import TagStore
from server.config import PlantConfig
from server.errors import CarbonScadaError
from server.records import DataFlag, MinuteResult, RawWindow

SAMPLE_HEADER = ("timestamp", "tag", "value", "flag")
MINUTE_FIELDS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3",
                 "co2_rate_kg_h", "co2_rate_t_h", "co2_kg")


class SamplesError(CarbonScadaError):
    """A samples file is malformed; names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class TagSamples:
    """All samples of one tag, sorted by time (stable for equal times)."""

    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    flags: npt.NDArray[np.uint8]


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return t.timestamp()


def read_samples(path: Path, tag_ids: Iterable[str]) -> dict[str, TagSamples]:
    """Read SAMPLES.csv; every tag must be one of `tag_ids`."""
    known = set(tag_ids)
    cols: dict[str, tuple[list[float], list[float], list[int]]] = {}
    unknown: dict[str, int] = {}
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise SamplesError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header[:3]) != SAMPLE_HEADER[:3] or header[3:] not in ([], ["flag"]):
            raise SamplesError(f"{path}: line 1: header must be "
                               f"'timestamp,tag,value' or 'timestamp,tag,value,flag'")
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) not in (3, 4):
                raise SamplesError(f"{path}: line {line}: expected 3 or 4 columns, "
                                   f"got {len(row)}")
            tag = row[1].strip()
            try:
                t = _parse_time(row[0].strip())
                value = float(row[2])
                letter = row[3].strip() if len(row) == 4 and row[3].strip() else "N"
                if letter not in DataFlag.__members__:
                    raise ValueError(f"unknown flag {letter!r} (known: "
                                     f"{', '.join(DataFlag.__members__)})")
            except ValueError as exc:
                raise SamplesError(f"{path}: line {line}: {exc}") from None
            if tag not in known:
                unknown.setdefault(tag, line)
                continue
            ts, vs, fs = cols.setdefault(tag, ([], [], []))
            ts.append(t)
            vs.append(value)
            fs.append(int(DataFlag[letter]))
    if unknown:
        listed = ", ".join(f"{tag!r} (line {line})" for tag, line in unknown.items())
        raise SamplesError(f"{path}: tags not in the plant configuration: {listed}")
    out = {}
    for tag, (ts, vs, fs) in cols.items():
        order = np.argsort(np.array(ts), kind="stable")
        out[tag] = TagSamples(np.array(ts)[order], np.array(vs)[order],
                              np.array(fs, np.uint8)[order])
    return out


def recalculate(config: PlantConfig, samples: dict[str, TagSamples]) -> Iterator[MinuteResult]:
    """Run the live minute cycle over every minute from the first sample to the last."""
    cycle = MinuteCycle(config)
    tag_ids = cycle.calc.tag_ids
    if not samples:
        return
    first = min(float(s.times[0]) for s in samples.values())
    last = max(float(s.times[-1]) for s in samples.values())
    minute = timedelta(seconds=config.clock.minute_seconds)
    start = cycle.clock.minute_start(datetime.fromtimestamp(first, UTC))
    stop = cycle.clock.next_minute(datetime.fromtimestamp(last, UTC))
    bounds = []
    t = start
    while t < stop:
        bounds.append(t.timestamp())
        t += minute
    bounds.append(t.timestamp())
    edges = np.array(bounds)
    # The live server takes each minute out of a TagStore; so does the recalculation.
    cuts = {tag: np.searchsorted(s.times, edges, side="left") for tag, s in samples.items()}
    widest = max((int(np.diff(c).max(initial=0)) for c in cuts.values()), default=0)
    store = TagStore(tag_ids, widest + 4)
    for i in range(len(edges) - 1):
        for tag, s in samples.items():
            j = store.index[tag]
            a, b = cuts[tag][i], cuts[tag][i + 1]
            for k in range(a, b):
                store.append(j, float(s.times[k]), float(s.values[k]), int(s.flags[k]))
        m_start = datetime.fromtimestamp(edges[i], UTC)
        yield cycle.run(m_start, store.take(edges[i], edges[i + 1]))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(x)


def write_minute_results(out: TextIO, results: Iterable[MinuteResult]) -> int:
    """RESULTS.csv at minute level: one row per source and minute; returns the row count."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("period_start", "source", "unit", *MINUTE_FIELDS, "valid", "flag",
                "substitution"))
    n = 0
    for r in results:
        for s in r.sources:
            w.writerow((_iso(s.t), s.source, s.unit, *(_num(getattr(s, f)) for f in MINUTE_FIELDS),
                        int(s.valid), s.flag.name, s.substitution))
            n += 1
    return n


PERIOD_FIELDS = ("co2_dry_pct", "flow_std_dry_m3_h", "co2_rate_kg_h", "co2_t",
                 "co2_measured_t")


def write_period_results(out: TextIO, config: PlantConfig, minutes: Iterable[MinuteResult],
                         level: str) -> int:
    """RESULTS.csv at hour or day level: one row per source and period; returns the rows."""
    clock = PlantClock(config.clock.minute_seconds, config.site.timezone)
    sources = tuple(s.id for _, s in config.sources())
    unit_of = {s.id: u.id for u, s in config.sources()}
    rho = config.constants.co2_density_kg_m3
    hour_results = periods.hours(clock, sources, minutes, rho_kg_m3=rho)
    records: Iterable[tuple[PeriodResult, ...]] = (
        (recs for _, recs in hour_results) if level == "hour"
        else periods.days(clock, sources, hour_results))
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("period_start", "source", "unit", *PERIOD_FIELDS, "valid", "flag",
                "n_valid", "substituted", "substitution_rule", "n_substituted", "n_missing"))
    n = 0
    for recs in records:
        for r in recs:
            w.writerow((_iso(r.t), r.source, unit_of[r.source],
                        *(_num(getattr(r, f)) for f in PERIOD_FIELDS), int(r.valid),
                        r.flag.name, r.n_valid, int(r.substituted), r.substitution_rule,
                        r.n_substituted, r.n_missing))
            n += 1
    return n


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
