"""Stored minutes and months of the historian over a range, for trends and reports.

GET /api/v1/{sources,units,tags}/{id}/minutes?from=&to=[&points=N] answers the stored
minutes of one source, unit or raw tag with from ≤ t < to; with `points` they are cut into
at most N equal buckets of whole minutes, each keeping the min, max and mean of every
value (so a chart's min/max band shows the peaks a plain average would hide).
GET /api/v1/{sources,units}/{id}/months?from=&to= sums the stored days by plant-local
calendar month. Times come in with any UTC offset and go out in plant local time with
its offset; inside everything is UTC. The grouping runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

from aiohttp import web

from web.auth import ApiError
from web.collaborators import MinuteHistory, PeriodHistory
from web.live import LiveState
from web.params import count_param, span
from web.serialize import Json, dumps, iso_local, num

MAX_MINUTE_SPAN: Final = timedelta(days=31)
MAX_MONTH_SPAN: Final = timedelta(days=3660)
MAX_POINTS: Final = 5000
# Minutes answered one by one; a longer range needs `points`.
MAX_MINUTE_ROWS: Final = 10_000
# Minutes read for one downsampled answer (31 days of 1-second demo minutes is more).
MAX_SCAN_ROWS: Final = 500_000

SOURCE_MINUTE_FIELDS: Final = ("flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct",
                               "co2_mg_m3", "co2_rate_kg_h", "co2_kg")
UNIT_MINUTE_FIELDS: Final = ("output_mwh", "co2_kg", "intensity_t_mwh")
TAG_MINUTE_FIELDS: Final = ("mean", "min", "max")

# kind → (historian table, numeric fields of a minute)
_TABLES: Final = {"source": ("source_minute", SOURCE_MINUTE_FIELDS),
                  "unit": ("unit_minute", UNIT_MINUTE_FIELDS),
                  "tag": ("tag_minute", TAG_MINUTE_FIELDS)}

# Day-row columns a month sums, per kind.
SOURCE_MONTH_SUMS: Final = ("co2_t", "co2_measured_t", "n_valid", "n_substituted", "n_missing")
UNIT_MONTH_SUMS: Final = ("co2_cems_t", "co2_factor_t", "output_mwh", "co2e_t", "co2_t",
                           "output_t")


@dataclass(frozen=True, slots=True)
class HistoryContext:
    """What the history routes read: the configured ids, the stored minutes and days."""

    live: LiveState
    minutes: MinuteHistory | None
    periods: PeriodHistory | None

    @property
    def tz(self) -> tzinfo:
        """The plant's local time zone."""
        return ZoneInfo(self.live.config.site.timezone)

    @property
    def minute(self) -> timedelta:
        """The length of one minute (shorter on an accelerated demo plant)."""
        return timedelta(seconds=self.live.config.clock.minute_seconds)

    def known(self, kind: str, ident: str) -> bool:
        """Whether a source, unit or raw tag of that id is configured."""
        if kind == "tag":
            return ident in self.live.config.tag_ids()
        return self.live.has(kind, ident)


HISTORY_CONTEXT: Final = web.AppKey("history_context", HistoryContext)


def _json(data: Any) -> web.Response:
    return web.Response(text=dumps(data), content_type="application/json")


def _flag(value: Any) -> str:
    """A stored flag as its letter (the historian hands out DataFlag or text)."""
    return str(getattr(value, "name", value))


# ------------------------------------------------------------------ minutes


def minute_json(kind: str, row: dict[str, Any], minute: timedelta, tz: tzinfo) -> Json:
    """One stored minute as JSON: its local time range, values (null for missing), flag."""
    t: datetime = row["t"]
    out: Json = {"t": iso_local(t, tz), "t_end": iso_local(t + minute, tz)}
    for name in _TABLES[kind][1]:
        out[name] = num(row.get(name))
    if kind == "tag":
        out["count"] = int(row["count"])
    else:
        out["valid"] = bool(row["valid"])
    out["flag"] = _flag(row["flag"])
    if kind == "source":
        out["substitution"] = row.get("substitution") or ""
    return out


def bucket_width(start: datetime, end: datetime, minute: timedelta, points: int) -> timedelta:
    """The width of the buckets cutting start..end into at most `points`: whole minutes."""
    n_minutes = math.ceil((end - start) / minute)
    return minute * max(1, math.ceil(n_minutes / points))


def _stats(values: Iterable[float | None]) -> Json:
    """min, max and mean of the finite values (nulls when there is none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(xs), "max": max(xs), "mean": math.fsum(xs) / len(xs)}


def _flags(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        flag = _flag(r["flag"])
        counts[flag] = counts.get(flag, 0) + 1
    return counts


def _tag_bucket(rows: Sequence[dict[str, Any]]) -> Json:
    """A tag's minute statistics merged: min of the mins, max of the maxes, the mean
    weighted by the sample counts, the counts summed."""
    mins = [r["min"] for r in rows if r["min"] is not None and math.isfinite(r["min"])]
    maxs = [r["max"] for r in rows if r["max"] is not None and math.isfinite(r["max"])]
    weighted = [(r["mean"], int(r["count"])) for r in rows
                if r["mean"] is not None and math.isfinite(r["mean"]) and r["count"] > 0]
    n = sum(c for _, c in weighted)
    return {"min": min(mins) if mins else None, "max": max(maxs) if maxs else None,
            "mean": math.fsum(m * c for m, c in weighted) / n if n else None,
            "count": sum(int(r["count"]) for r in rows)}


def downsample(kind: str, rows: Sequence[dict[str, Any]], start: datetime, end: datetime,
               width: timedelta, tz: tzinfo) -> list[Json]:
    """The minutes (oldest first, start ≤ t < end) in buckets of `width` from `start`:
    per bucket its local time range, how many minutes, their flags and per value its min,
    max and mean; empty buckets are left out."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["t"] - start) // width, []).append(r)
    out = []
    for i, group in sorted(groups.items()):
        t0 = start + width * i
        b: Json = {"t": iso_local(t0, tz), "t_end": iso_local(min(t0 + width, end), tz),
                   "n": len(group)}
        if kind == "tag":
            b.update(_tag_bucket(group))
        else:
            b["n_valid"] = sum(1 for r in group if r["valid"])
            for name in _TABLES[kind][1]:
                b[name] = _stats(r.get(name) for r in group)
        b["flags"] = _flags(group)
        out.append(b)
    return out


def _item(request: web.Request, kind: str) -> tuple[HistoryContext, str]:
    """The history context and the {id} of the path, 404 naming it if it is not configured."""
    ctx = request.app[HISTORY_CONTEXT]
    ident = request.match_info["id"]
    if not ctx.known(kind, ident):
        raise ApiError(404, f"unknown {kind} {ident!r}")
    return ctx, ident


def _minutes_handler(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        ctx, ident = _item(request, kind)
        start, end = span(request, MAX_MINUTE_SPAN, "minutes")
        points = count_param(request, "points", MAX_POINTS)
        if ctx.minutes is None:
            raise ApiError(503, "no historian: stored minutes are not available")
        table, fields = _TABLES[kind]
        limit = MAX_SCAN_ROWS if points is not None else MAX_MINUTE_ROWS
        rows = await ctx.minutes.history_rows(table, ident, start, end, limit=limit + 1)
        if len(rows) > limit:
            hint = "a shorter range" if points is not None else "a shorter range or 'points'"
            raise ApiError(400, f"more than {limit} minutes from 'from' to 'to': ask for "
                                f"{hint}")
        tz, minute = ctx.tz, ctx.minute
        out: Json = {"kind": kind, "id": ident, "from": iso_local(start, tz),
                     "to": iso_local(end, tz), "timezone": ctx.live.config.site.timezone,
                     "minute_seconds": minute.total_seconds(),
                     "fields": [*fields, *(("count",) if kind == "tag" else ())],
                     "points": points}
        if points is None:
            out["minutes"] = await asyncio.to_thread(
                lambda: [minute_json(kind, r, minute, tz) for r in rows])
        else:
            width = bucket_width(start, end, minute, points)
            out["bucket_seconds"] = width.total_seconds()
            out["buckets"] = await asyncio.to_thread(downsample, kind, rows, start, end,
                                                     width, tz)
        return _json(out)
    return handler


# ------------------------------------------------------------------ months


def _month_start(t: datetime, tz: tzinfo) -> datetime:
    local = t.astimezone(tz)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(m: datetime) -> datetime:
    # Built from the calendar fields with the zone again: the offset may differ (DST).
    year, month = (m.year + 1, 1) if m.month == 12 else (m.year, m.month + 1)
    return datetime(year, month, 1, tzinfo=m.tzinfo)


def _total(rows: Sequence[dict[str, Any]], name: str) -> float | None:
    xs = [float(r[name]) for r in rows
          if r.get(name) is not None and math.isfinite(float(r[name]))]
    return math.fsum(xs) if xs else None


def months(kind: str, days: Sequence[dict[str, Any]], tz: tzinfo) -> list[Json]:
    """Stored day rows (oldest first) summed by plant-local calendar month."""
    groups: dict[datetime, list[dict[str, Any]]] = {}
    for d in days:
        groups.setdefault(_month_start(d["t"], tz), []).append(d)
    out = []
    for m, group in groups.items():
        rec: Json = {"month": f"{m.year:04d}-{m.month:02d}", "t": iso_local(m, tz),
                     "t_end": iso_local(_next_month(m), tz), "days": len(group),
                     "valid_days": sum(1 for d in group if d.get("valid"))}
        if kind == "source":
            for name in SOURCE_MONTH_SUMS:
                rec[name] = _total(group, name)
            rec["substituted_days"] = sum(1 for d in group if d.get("substituted"))
        else:
            for name in UNIT_MONTH_SUMS:
                rec[name] = _total(group, name)
            co2, mwh = rec["co2_cems_t"], rec["output_mwh"]
            rec["intensity_t_mwh"] = co2 / mwh if co2 is not None and mwh else None
            # A product output (t of hot metal, lime …): the accounted CO2 over it.
            co2_t, out_t = rec["co2_t"], rec["output_t"]
            rec["intensity_t_t"] = co2_t / out_t if co2_t is not None and out_t else None
            rec["reconciliation_exceeded_days"] = sum(
                1 for d in group if d.get("reconciliation_exceeded"))
            # The GWP sets the month's CO2e is under (two when a set takes over in it).
            rec["gwp_set"] = ",".join(dict.fromkeys(d["gwp_set"] for d in group
                                                    if d.get("gwp_set")))
        for name in SOURCE_MONTH_SUMS[2:]:  # counts stay whole numbers
            if isinstance(rec.get(name), float):
                rec[name] = int(rec[name])
        out.append(rec)
    return out


def _months_handler(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        ctx, ident = _item(request, kind)
        start, end = span(request, MAX_MONTH_SPAN, "months")
        if ctx.periods is None:
            raise ApiError(503, "no historian: stored days are not available")
        days = await ctx.periods.period_rows(kind, "day", ident, start, end)
        return _json(await asyncio.to_thread(months, kind, days, ctx.tz))
    return handler


def add_history_routes(app: web.Application, ctx: HistoryContext, prefix: str) -> None:
    """Add the minutes routes of sources, units and tags and the months of sources and
    units under `prefix`."""
    app[HISTORY_CONTEXT] = ctx
    for kind in ("source", "unit", "tag"):
        app.router.add_get(f"{prefix}/{kind}s/{{id}}/minutes", _minutes_handler(kind))
    for kind in ("source", "unit"):
        app.router.add_get(f"{prefix}/{kind}s/{{id}}/months", _months_handler(kind))
