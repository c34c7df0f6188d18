"""GET /api/v1/uncertainty: the CO2 uncertainty of each unit's and the site's total of an
hour, a day or the year to date, from the instruments (compute/uncertainty.py) and the
masses the historian stored.

`level=hour`: the plant hour containing `t` (default: the last complete hour);
`level=day`: the plant-local day containing `t` (default: yesterday);
`level=year`: the year to date at `t` (default: now), i.e. the stored days of the
plant-local year before the day of `t` plus the stored hours of that day before the
hour of `t` (complete periods only, as Allowance.EmittedYTD).

A source's mass is its stored `co2_t` (substitutes included); a source without any value
in the period is listed in `no_data` and left out; one with a mass and an input without
a registered instrument in `unknown` (the total's figures are then null). Read-only and
without login, as the instrument register is.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from aiohttp import web

from compute.clock import PlantClock
from compute.uncertainty import (
    K_EXPANDED,
    Components,
    SourceMass,
    TotalUncertainty,
    components_rel_pct,
    unit_site_uncertainty,
)
from model.records import PeriodRecords
from web.auth import ApiError
from web.params import parse_user_time
from web.register import RegisterPlantConfig, source_components_of
from web.serialize import Json, dumps, iso_local, num

LEVELS: Final = ("hour", "day", "year")


@runtime_checkable
class StoredPeriods(Protocol):
    """Where stored hours and days of every source come from at once (the historian)."""

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """The stored hours or days with start ≤ t < end as records, oldest first."""
        ...


def bounds(clock: PlantClock, level: str, t: datetime | None,
           now: datetime) -> list[tuple[str, datetime, datetime]]:
    """The stored (level, start, end) spans the answer sums, first to last.

    The answer's own period is from the first start to the last end.
    """
    if level == "hour":
        h0 = clock.hour_start(t if t is not None else clock.hour_start(now) - timedelta(
            microseconds=1))
        return [("hour", h0, clock.next_hour(h0))]
    if level == "day":
        d0 = clock.day_start(t if t is not None else clock.day_start(now) - timedelta(
            microseconds=1))
        return [("day", d0, clock.next_day(d0))]
    at = now if t is None else t
    d0 = clock.day_start(at)
    return [("day", clock.year_start(at), d0), ("hour", d0, clock.hour_start(at))]


def add_masses(acc: dict[str, float], records: Sequence[PeriodRecords]) -> None:
    """Add each source's finite `co2_t` of `records` to `acc` (a source without any
    stays absent: no data)."""
    for rec in records:
        for src in rec.sources:
            if math.isfinite(src.co2_t):
                acc[src.source] = acc.get(src.source, 0.0) + src.co2_t


# Days read from the historian at once for a year: a year of a big plant's days as records
# at once would be millions of objects; a month of them is summed and let go.
_CHUNK: Final = timedelta(days=31)


def _total_json(total: TotalUncertainty) -> Json:
    return {"co2_t": num(total.co2_t),
            "co2_rel_uncertainty_pct": num(total.rel_pct),
            "co2_rel_expanded_uncertainty_pct": num(total.rel_expanded_pct),
            "co2_expanded_uncertainty_t": num(total.expanded_t),
            "no_data": list(total.no_data), "unknown": list(total.unknown)}


def uncertainty_json(cfg: RegisterPlantConfig, components: dict[str, tuple[str, Components]],
                     level: str, start: datetime, end: datetime,
                     co2_t: dict[str, float]) -> Json:
    """The answer: the period, each source's mass and figure, each unit's and the site's."""
    tz = ZoneInfo(cfg.site.timezone)
    parts = [SourceMass(s, u, co2_t.get(s, math.nan), c) for s, (u, c) in components.items()]
    units, site = unit_site_uncertainty(parts, [u.id for u in cfg.units])
    return {"level": level, "t": iso_local(start, tz), "t_end": iso_local(end, tz),
            "coverage_factor": K_EXPANDED,
            "sources": [{"source": p.source, "unit": p.unit, "co2_t": num(p.co2_t),
                         "co2_rel_uncertainty_pct": components_rel_pct(p.components)}
                        for p in parts],
            "units": [{"unit": u, **_total_json(t)} for u, t in units.items()],
            "site": _total_json(site)}


UNCERTAINTY_CONTEXT: Final[web.AppKey[dict[str, Any]]] = web.AppKey("uncertainty_context")


async def _get_uncertainty(request: web.Request) -> web.Response:
    ctx = request.app[UNCERTAINTY_CONTEXT]
    cfg: RegisterPlantConfig = ctx["config"]
    level = request.query.get("level", "hour")
    if level not in LEVELS:
        raise ApiError(400, f"query parameter 'level' must be one of {', '.join(LEVELS)}")
    text = request.query.get("t")
    t = parse_user_time(text, "query parameter 't'") if text else None
    history = ctx["history"]
    if not isinstance(history, StoredPeriods):
        raise ApiError(503, "no historian: stored hours and days are not available")
    if ctx.get("components") is None:  # constant with the configuration: one pass, cached
        ctx["components"] = await asyncio.to_thread(source_components_of, cfg)
    clock = PlantClock(cfg.clock.minute_seconds, cfg.site.timezone)
    spans = bounds(clock, level, t, datetime.now(UTC))
    masses: dict[str, float] = {}
    for lvl, start, end in spans:
        a = start
        while a < end:
            b = min(end, a + _CHUNK)
            records = await history.periods(lvl, a, b)
            await asyncio.to_thread(add_masses, masses, records)
            a = b
    start, end = spans[0][1], spans[-1][2]
    text_out = await asyncio.to_thread(lambda: dumps(uncertainty_json(
        cfg, ctx["components"], level, start, end, masses)))
    return web.Response(text=text_out, content_type="application/json")


def add_uncertainty_routes(app: web.Application, api: str, config: RegisterPlantConfig,
                           history: object) -> None:
    """Add GET {api}/uncertainty answering from `config` and the stored periods of
    `history` (503 when it has none)."""
    app[UNCERTAINTY_CONTEXT] = {"config": config, "history": history, "components": None}
    app.router.add_get(f"{api}/uncertainty", _get_uncertainty)
