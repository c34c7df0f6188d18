"""GET /api/v1/boundaries: CO2 and CO2e of the site, each process (accounting unit) and each
facility (unit) over an hour, a day, a month or a year, with each node's share of its
parent and of the site (compute/boundaries.py); GET /api/v1/boundaries/tree: the tree alone.

`level=hour`: the plant hour containing `t` (default: the last complete hour), from the
stored hour; `level=day`: the plant-local day containing `t` (default: yesterday), from the
stored day; `level=month` / `year`: the plant-local calendar month / year containing `t`
(default: the current one), from the days stored so far in it.

`t` is an ISO 8601 time with a UTC offset, as the other history routes take it, or a
plant-local date: 2026-11-21 (day, month, year), 2026-11 (month, year), 2026 (year); an
hour needs a time. Read-only and without login, as the other history routes are.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from aiohttp import web

from compute.boundaries import BoundaryTree, Node, rollup, tree_of
from compute.clock import PlantClock
from compute.config import CalculationConfig
from model.records import PeriodRecords
from model.times import EARLIEST, LATEST
from web.auth import ApiError
from web.params import parse_user_time
from web.serialize import Json, dumps, iso_local, num

LEVELS: Final = ("hour", "day", "month", "year")
_DATE: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
# Which plant-local date forms (how many of year, month, day) a level takes.
_DATE_PARTS: Final = {"hour": (), "day": (3,), "month": (2, 3), "year": (1, 2, 3)}
_CHUNK: Final = timedelta(days=31)  # days read from the historian at once


@runtime_checkable
class StoredPeriods(Protocol):
    """Where the stored hours and days come from (the historian)."""

    async def periods(self, level: str, start: datetime, end: datetime) -> list[PeriodRecords]:
        """The stored hours or days with start ≤ t < end as records, oldest first."""
        ...


def _local_date(clock: PlantClock, level: str, text: str) -> datetime | None:
    """The wall-clock UTC start of a plant-local date `text` of a form the level takes;
    None when `text` is not a bare date; 400 when it is one the level does not take."""
    m = _DATE.fullmatch(text)
    if m is None:
        return None
    parts = [int(p) for p in m.groups() if p is not None]
    forms = _DATE_PARTS[level]
    if len(parts) not in forms:
        need = {"hour": "a time with its UTC offset, e.g. 2026-11-21T08:00:00+08:00",
                "day": "a day (2026-11-21) or a time with its UTC offset",
                "month": "a month (2026-11), a day or a time with its UTC offset"}[level]
        raise ApiError(400, f"query parameter 't': {text!r} does not name one {level}; "
                            f"give {need}")
    year, month, day = (*parts, 1, 1)[:3]
    try:
        local = datetime(year, month, day, tzinfo=ZoneInfo(clock.timezone))
    except ValueError as exc:
        raise ApiError(400, f"query parameter 't': {text!r} is not a date ({exc})") from None
    if not EARLIEST <= local < LATEST:
        raise ApiError(400, f"query parameter 't': {text!r} is outside the allowed range "
                            "1970 to 2199")
    # A demo plant's clock runs faster than the wall clock (compute/clock.py): its local
    # calendar is of the scaled time, so the date maps back to a wall-clock instant.
    return clock.date_start(local.date())


def bounds(clock: PlantClock, level: str, text: str | None,
           now: datetime) -> tuple[datetime, datetime]:
    """The UTC start and end of the period the request names (see the module doc)."""
    tick = timedelta(microseconds=1)
    if text:
        at = _local_date(clock, level, text)
        if at is None:
            at = parse_user_time(text, "query parameter 't'")
    elif level == "hour":
        at = clock.hour_start(now) - tick
    elif level == "day":
        at = clock.day_start(now) - tick
    else:
        at = now
    if level == "hour":
        return clock.hour_start(at), clock.next_hour(at)
    if level == "day":
        return clock.day_start(at), clock.next_day(at)
    return clock.month_bounds(at) if level == "month" else clock.year_bounds(at)


def label(clock: PlantClock, level: str, start: datetime) -> str:
    """The period as plant people name it: 2026-11-21 08:00, 2026-11-21, 2026-11, 2026."""
    fmt = {"hour": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}[level]
    return clock.scaled_local(start).strftime(fmt)


def tree_json(tree: BoundaryTree) -> Json:
    """The static tree: the site, its processes and their facilities with their ids."""
    return {"site": {"id": tree.id, "name": tree.name, "name_zh": tree.name_zh},
            "processes": [{
                "id": p.id, "name": p.name, "name_zh": p.name_zh, "kind": p.kind,
                "implicit": p.implicit,
                "facilities": [{"id": f.id, "name": f.name, "name_zh": f.name_zh,
                                "output_unit": f.output_unit, "sources": list(f.sources),
                                "streams": list(f.streams)} for f in p.facilities]}
                for p in tree.processes]}


def node_json(node: Node) -> Json:
    """One rolled-up node and the nodes below it (NaN as null)."""
    return {"level": node.level, "id": node.id, "name": node.name, "name_zh": node.name_zh,
            "kind": node.kind, "co2_t": num(node.co2_t), "co2e_t": num(node.co2e_t),
            "output_mwh": num(node.output_mwh), "output_t": num(node.output_t),
            "share_of_parent_pct": num(node.share_of_parent_pct),
            "share_of_site_pct": num(node.share_of_site_pct),
            "co2e_share_of_parent_pct": num(node.co2e_share_of_parent_pct),
            "co2e_share_of_site_pct": num(node.co2e_share_of_site_pct),
            "complete": node.complete, "valid": node.valid, "n_valid": node.n_valid,
            "n_invalid": node.n_invalid, "missing": list(node.missing),
            "children": [node_json(c) for c in node.children]}


def _periods_in(clock: PlantClock, level: str, start: datetime, end: datetime,
                now: datetime) -> int:
    """How many hours (level hour) or days of the span have ended by `now`."""
    if level == "hour":
        return int(end <= now)
    n, t = 0, start
    while t < end and clock.next_day(t) <= now:
        n += 1
        t = clock.next_day(t)
    return n


def boundaries_json(cfg: CalculationConfig, tree: BoundaryTree, level: str, start: datetime,
                    end: datetime, records: list[PeriodRecords], now: datetime) -> Json:
    """The answer: the period, how many of its hours or days are stored, and the tree."""
    tz = ZoneInfo(cfg.site.timezone)
    clock = PlantClock(cfg.clock.minute_seconds, cfg.site.timezone)
    root = rollup(tree, records)
    return {"level": level, "label": label(clock, level, start), "t": iso_local(start, tz),
            "t_end": iso_local(end, tz), "timezone": cfg.site.timezone,
            "periods_stored": len(records),
            "periods_ended": _periods_in(clock, level, start, end, now),
            "site": node_json(root)}


class _Context:
    """What the routes answer from: the configuration, its tree and the historian."""

    def __init__(self, config: CalculationConfig, history: object) -> None:
        self.config = config
        self.tree = tree_of(config)
        self.history = history
        self.clock = PlantClock(config.clock.minute_seconds, config.site.timezone)


BOUNDARIES: Final = web.AppKey("boundaries", _Context)


def _json(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")


async def _get_tree(request: web.Request) -> web.Response:
    ctx = request.app[BOUNDARIES]
    return _json(dumps(tree_json(ctx.tree)))


async def _get_boundaries(request: web.Request) -> web.Response:
    ctx = request.app[BOUNDARIES]
    level = request.query.get("level", "day")
    if level not in LEVELS:
        raise ApiError(400, f"query parameter 'level' must be one of {', '.join(LEVELS)}")
    now = datetime.now(UTC)
    start, end = bounds(ctx.clock, level, request.query.get("t"), now)
    history = ctx.history
    if not isinstance(history, StoredPeriods):
        raise ApiError(503, "no historian: stored hours and days are not available")
    records: list[PeriodRecords] = []
    stored = "hour" if level == "hour" else "day"
    a = start
    while a < end:  # the historian reads on its own thread, a month of days at a time
        b = min(end, a + _CHUNK)
        records.extend(await history.periods(stored, a, b))
        a = b
    text = await asyncio.to_thread(lambda: dumps(boundaries_json(
        ctx.config, ctx.tree, level, start, end, records, now)))
    return _json(text)


def add_boundary_routes(app: web.Application, api: str, config: CalculationConfig,
                        history: object) -> None:
    """Add GET {api}/boundaries and {api}/boundaries/tree answering from `config` and the
    stored periods of `history` (503 for the roll-up when it has none)."""
    app[BOUNDARIES] = _Context(config, history)
    app.router.add_get(f"{api}/boundaries", _get_boundaries)
    app.router.add_get(f"{api}/boundaries/tree", _get_tree)
