"""What the HJ 212 uploads carry: the CP text of minute, hour, day and real-time data.

Pure functions (no I/O). One platform entry is one source (one MN); its code map
(server/hj212/config.py) resolves to `Channel`s: a code and where its figure comes from,
the source's minute result or one of its input tags' minute statistics. The live minute
and a minute read back from the historian go through the same `MinuteRow`, so that a
history request answers exactly what was uploaded live.

Per code: ``x-Avg`` and, for a tag, ``x-Min`` and ``x-Max`` (its minute minimum, mean and
maximum; a calculated figure such as CO2 mg/m³ has one value a minute, from the minute's
means, so it has only ``x-Avg``), ``x-Cou`` where the code has an amount (CO2 kg, standard dry
gas m³), and ``x-Flag``, the HJ 212-2017 data flag letter. A value that is NaN is left
out; its flag is still sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from model.flags import DataFlag
from model.records import MinuteResult, PeriodResult
from server.hj212.codec import format_cp, hj_time
from server.hj212.config import SOURCE_FIELDS, CodeConfig, Hj212Config, input_attr

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Channel:
    """One code of one platform: its spec and the figure it reads (a source field or a tag)."""

    code: str
    spec: CodeConfig
    tag: str | None  # None: the source result's field `spec.field`


@dataclass(frozen=True, slots=True)
class Point:
    """One code's figures of one period (our units, before the code's scale)."""

    min: float
    avg: float
    max: float
    cou: float
    flag: DataFlag


MinuteRow = dict[str, Point]
"""Code → its figures, of one minute (or one N-minute interval)."""


def channels(cfg: Hj212Config, source_tags: Mapping[str, str | None]) -> tuple[Channel, ...]:
    """The platform's codes in the order of its map, those a source lacks left out."""
    out = []
    for code, spec in cfg.code_map().items():
        if spec.field in SOURCE_FIELDS:
            out.append(Channel(code, spec, None))
            continue
        tag = source_tags.get(input_attr(spec.field))
        if tag is not None:
            out.append(Channel(code, spec, tag))
    return tuple(out)


def _minute_cou(ch: Channel, co2_kg: float, flow_std_dry_m3_h: float) -> float:
    if ch.spec.cou == "co2_kg":
        return co2_kg
    if ch.spec.cou == "flow_std_dry_m3":
        return flow_std_dry_m3_h / 60.0  # a (plant) minute is 1/60 of an hour
    return NAN


def minute_row(chans: Sequence[Channel], source: Mapping[str, float], source_flag: DataFlag,
               tags: Mapping[str, tuple[float, float, float, DataFlag]]) -> MinuteRow:
    """The row of one minute from the source's result fields and its tags' (min, mean, max,
    flag); a tag without statistics is left out."""
    row: MinuteRow = {}
    co2_kg = source.get("co2_kg", NAN)
    flow = source.get("flow_std_dry_m3_h", NAN)
    for ch in chans:
        cou = _minute_cou(ch, co2_kg, flow)
        if ch.tag is None:
            # One value a minute (from the minute's means): no minimum or maximum of it.
            row[ch.code] = Point(NAN, source.get(ch.spec.field, NAN), NAN, cou, source_flag)
        else:
            stats = tags.get(ch.tag)
            if stats is not None:
                lo, mean, hi, flag = stats
                row[ch.code] = Point(lo, mean, hi, cou, flag)
    return row


_SOURCE_COLUMNS = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3", "co2_kg")


class RowLookup:
    """Where one source and its tags are in a minute's columns: looked up once per layout
    (the minute cycle hands the same tuples of names every minute), not once a minute."""

    def __init__(self, source_id: str, chans: Sequence[Channel]) -> None:
        """For `source_id` and the tags of `chans`."""
        self.source_id = source_id
        self.tags = tuple(dict.fromkeys(ch.tag for ch in chans if ch.tag is not None))
        self._sources: tuple[str, ...] | None = None
        self._source_row: int | None = None
        self._tag_names: tuple[str, ...] | None = None
        self._tag_rows: dict[str, int] = {}

    def source_row(self, sources: tuple[str, ...]) -> int | None:
        """The row of the source in `sources`; None if it is not there."""
        if sources is not self._sources:
            self._sources = sources
            self._source_row = sources.index(self.source_id) if self.source_id in sources \
                else None
        return self._source_row

    def tag_rows(self, tags: tuple[str, ...]) -> dict[str, int]:
        """The rows of the wanted tags in `tags` (those present)."""
        if tags is not self._tag_names:
            self._tag_names = tags
            wanted = set(self.tags)
            self._tag_rows = {t: k for k, t in enumerate(tags) if t in wanted}
        return self._tag_rows


def live_minute_row(chans: Sequence[Channel], lookup: RowLookup, result: MinuteResult
                    ) -> tuple[MinuteRow, bool]:
    """The row of the lookup's source in a minute result, read from its columns (no object
    per source or tag); False when the minute does not have the source."""
    flags = list(DataFlag)
    cols = result.source_columns
    source: dict[str, float] = {}
    if cols is not None:
        i = lookup.source_row(cols.sources)
        if i is None:
            return {}, False
        for name in _SOURCE_COLUMNS:
            source[name] = float(getattr(cols, name)[i])
        source_flag = DataFlag(int(cols.flag[i]))
    else:
        rec = next((s for s in result.sources if s.source == lookup.source_id), None)
        if rec is None:
            return {}, False
        for name in _SOURCE_COLUMNS:
            source[name] = float(getattr(rec, name))
        source_flag = rec.flag
    tags: dict[str, tuple[float, float, float, DataFlag]] = {}
    tc = result.tag_columns
    if lookup.tags and tc is not None:
        for tag, k in lookup.tag_rows(tc.tags).items():
            tags[tag] = (float(tc.min[k]), float(tc.mean[k]), float(tc.max[k]),
                         flags[int(tc.flag[k])])
    elif lookup.tags:
        for tm in result.tags:
            if tm.tag in lookup.tags:
                tags[tm.tag] = (tm.min, tm.mean, tm.max, tm.flag)
    return minute_row(chans, source, source_flag, tags), True


def aggregate(rows: Sequence[MinuteRow]) -> MinuteRow:
    """N minutes as one interval: mean of the finite means, min, max, Σ amounts, the flag N
    when all were N, else the one of highest precedence."""
    out: MinuteRow = {}
    codes: list[str] = []
    for r in rows:
        codes.extend(c for c in r if c not in codes)
    for code in codes:
        pts = [r[code] for r in rows if code in r]
        avgs = [p.avg for p in pts if math.isfinite(p.avg)]
        los = [p.min for p in pts if math.isfinite(p.min)]
        his = [p.max for p in pts if math.isfinite(p.max)]
        cous = [p.cou for p in pts if math.isfinite(p.cou)]
        out[code] = Point(min(los) if los else NAN,
                          sum(avgs) / len(avgs) if avgs else NAN,
                          max(his) if his else NAN,
                          math.fsum(cous) if cous else NAN,
                          max(p.flag for p in pts))
    return out


def period_row(chans: Sequence[Channel], rec: PeriodResult, hours: float,
               co2_density_kg_m3: float) -> MinuteRow:
    """The row of one source's hour or day (`hours` long): the source fields the period
    has (CO2 concentration, standard dry flow) with their amounts; tags are left out."""
    row: MinuteRow = {}
    values = {"co2_dry_pct": rec.co2_dry_pct,
              "co2_mg_m3": rec.co2_dry_pct * co2_density_kg_m3 * 1e4,
              "flow_std_dry_m3_h": rec.flow_std_dry_m3_h}
    for ch in chans:
        if ch.tag is not None or ch.spec.field not in values:
            continue
        v = values[ch.spec.field]
        if ch.spec.cou == "co2_kg":
            cou = rec.co2_t * 1000.0  # what the period contributes, substitutes included
        elif ch.spec.cou == "flow_std_dry_m3":
            cou = rec.flow_std_dry_m3_h * hours
        else:
            cou = NAN
        row[ch.code] = Point(NAN, v, NAN, cou, rec.flag)
    return row


def _num(v: float, scale: float, decimals: int) -> str | None:
    if not math.isfinite(v):
        return None
    text = f"{v * scale:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def row_cp(t: datetime, tz: str, chans: Sequence[Channel], row: MinuteRow) -> str:
    """CP text of a row: ``DataTime=…;code-Min=…,code-Avg=…,code-Max=…,code-Cou=…,
    code-Flag=X;…`` (one group per code, in the map's order)."""
    groups: list[dict[str, str]] = [{"DataTime": hj_time(t, tz)}]
    for ch in chans:
        p = row.get(ch.code)
        if p is None:
            continue
        g: dict[str, str] = {}
        for name, v in (("Min", p.min), ("Avg", p.avg), ("Max", p.max)):
            text = _num(v, ch.spec.scale, ch.spec.decimals)
            if text is not None:
                g[f"{ch.code}-{name}"] = text
        if ch.spec.cou != "none":  # kg or m³ as they are: the scale is the rate's
            text = _num(p.cou, 1.0, ch.spec.decimals)
            if text is not None:
                g[f"{ch.code}-Cou"] = text
        g[f"{ch.code}-Flag"] = p.flag.name
        groups.append(g)
    return format_cp(groups)


def rtd_cp(t: datetime, tz: str, chans: Sequence[Channel],
           latest: Mapping[str, tuple[float, DataFlag]]) -> str | None:
    """CP text of real-time data (CN 2011) from the tags' latest readings: ``x-Rtd``,
    ``x-Flag``; None when no tag of the platform has a reading."""
    groups: list[dict[str, str]] = [{"DataTime": hj_time(t, tz)}]
    for ch in chans:
        if ch.tag is None or ch.tag not in latest:
            continue
        value, flag = latest[ch.tag]
        g = {}
        text = _num(value, ch.spec.scale, ch.spec.decimals)
        if text is not None:
            g[f"{ch.code}-Rtd"] = text
        g[f"{ch.code}-Flag"] = flag.name
        groups.append(g)
    return format_cp(groups) if len(groups) > 1 else None
