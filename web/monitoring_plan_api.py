"""The monitoring plan over HTTP (web/monitoring_plan.py; the checks of server/conformity.py).

- GET /api/v1/monitoring-plan                          the plan, one row per parameter
- GET /api/v1/monitoring-plan/conformity?day=YYYY-MM-DD  the check of one closed
                                                         plant-local day

Read-only and without login, as the instrument register is (web/instruments.py). A day
that is no date is a 400 naming it; a day the historian has not stored (not closed yet, or
before the data) a 404.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Final, Protocol

from aiohttp import web

from model.errors import InvalidValueError
from web.auth import ApiError
from web.monitoring_plan import (
    DayConformity,
    PlanRow,
    conformity_json,
    parse_day,
    plan_row_json,
)
from web.serialize import dumps, iso_utc


class MonitoringPlanSource(Protocol):
    """Where the plan and its checks come from (server/conformity.py ConformityReader)."""

    def plan(self, at: datetime | None = None) -> tuple[PlanRow, ...]:
        """The plan's rows, the factors as in force at `at` (default now)."""
        ...

    async def day(self, day: date) -> DayConformity | None:
        """The check of a plant-local day; None when no such day is stored."""
        ...


MONITORING_PLAN: Final[web.AppKey[MonitoringPlanSource | None]] = web.AppKey("monitoring_plan")


def _source(request: web.Request) -> MonitoringPlanSource:
    source = request.app.get(MONITORING_PLAN)
    if source is None:
        raise ApiError(503, "this server has no monitoring plan (no conformity reader)")
    return source


async def _get_plan(request: web.Request) -> web.Response:
    source, now = _source(request), datetime.now(UTC)
    rows = await asyncio.to_thread(source.plan, now)
    body = {"t": iso_utc(now),
            "parameters": [plan_row_json(r) for r in rows]}
    return web.Response(text=dumps(body), content_type="application/json")


async def _get_conformity(request: web.Request) -> web.Response:
    source = _source(request)
    text = request.query.get("day")
    if not text:
        raise ApiError(400, "query parameter 'day' is required (a plant-local date "
                            "YYYY-MM-DD)")
    try:
        day = parse_day(text)
        result = await source.day(day)
    except InvalidValueError as exc:
        raise ApiError(400, f"query parameter 'day': {exc}") from None
    if result is None:
        raise ApiError(404, f"no closed day {day.isoformat()} is stored")
    return web.Response(text=dumps(conformity_json(result)), content_type="application/json")


def add_monitoring_plan_routes(app: web.Application, api: str) -> None:
    """Add GET {api}/monitoring-plan and {api}/monitoring-plan/conformity."""
    app.router.add_get(f"{api}/monitoring-plan", _get_plan)
    app.router.add_get(f"{api}/monitoring-plan/conformity", _get_conformity)
