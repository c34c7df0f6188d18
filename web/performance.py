"""Carbon performance over HTTP.

- GET /api/v1/performance[?year=YYYY]   baseline, targets, progress and deviation per unit
  and for the site, and the benchmark comparison (compute/performance.py performance_json:
  every number's key names its unit); 400 naming the parameter for a bad year.

The keeper (server/performance.py) reads the historian; this module only speaks HTTP.
Reading needs no login, like the rest of the API.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from aiohttp import web

from model.errors import CarbonScadaError, InvalidValueError
from web.auth import ApiError
from web.params import year_param
from web.serialize import dumps


class PerformanceSource(Protocol):
    """What the route reads (server/performance.py PerformanceKeeper)."""

    async def performance_json(self, year: int | None = None) -> dict[str, Any]:
        """The performance of `year` (default: the current plant year) as JSON."""
        ...


PERFORMANCE: Final[web.AppKey[PerformanceSource | None]] = web.AppKey("performance")



async def _get_performance(request: web.Request) -> web.Response:
    source = request.app.get(PERFORMANCE)
    if source is None:
        raise ApiError(503, "this server computes no carbon performance")
    year = year_param(request)
    try:
        body = await source.performance_json(year)
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None
    except CarbonScadaError as exc:  # the historian cannot be read: say so, no traceback
        raise ApiError(503, str(exc)) from None
    return web.Response(text=dumps(body), content_type="application/json")


def add_performance_routes(app: web.Application, api: str) -> None:
    """Add GET {api}/performance."""
    app.router.add_get(f"{api}/performance", _get_performance)
