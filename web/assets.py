"""Carbon assets over HTTP: the compliance position, the monthly trend, the ledger.

- GET  /api/v1/carbon/position[?year=]   the compliance position (every field with its unit)
- GET  /api/v1/carbon/trend[?year=]      emissions, prorated allowance and gap per month
- GET  /api/v1/carbon/entries[?kind=]    every ledger entry, oldest first
- POST /api/v1/carbon/entries            one entry, JSON (engineer); 201, 400 naming the field
- POST /api/v1/carbon/entries/import     entries as CSV (engineer), all rows or none
- GET  /api/v1/carbon/entries.csv        every entry as CSV (the import's header)

The asset keeper (server/assets.py) checks, keeps and audits; this module only speaks HTTP.
Reading needs no login, like the rest of the API.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from compute.assets import KINDS, position_json
from model.errors import InvalidValueError
from web.auth import ApiError, require
from web.collaborators import CarbonAssets
from web.params import csv_body, json_body, year_param
from web.serialize import dumps, num

ASSETS: Final[web.AppKey[CarbonAssets | None]] = web.AppKey("assets")
ROLE: Final = "engineer"  # who may enter carbon-ledger entries


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


def _keeper(request: web.Request) -> CarbonAssets:
    keeper = request.app.get(ASSETS)
    if keeper is None:
        raise ApiError(503, "this server keeps no carbon assets (no asset keeper)")
    return keeper



async def _get_position(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    return _json(position_json(await keeper.position(year_param(request))))


async def _get_trend(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    # NaN (a month without output has no intensity) goes out as null
    trend = await keeper.trend(year_param(request))
    return _json([{k: num(v) for k, v in m.items()} for m in trend])


async def _get_entries(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise ApiError(400, f"'kind' must be one of {', '.join(KINDS)}, not {kind[:40]!r}")
    return _json(_keeper(request).entries(kind))


async def _get_csv(request: web.Request) -> web.Response:
    return web.Response(text=_keeper(request).csv_export(), content_type="text/csv",
                        headers={"Content-Disposition":
                                 'attachment; filename="carbon-entries.csv"'})


async def _post_entry(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    session = require(request, ROLE)  # before the body is read
    body = await json_body(request)
    try:
        return _json(await keeper.enter(session.user, body), status=201)
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None


async def _import_csv(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    session = require(request, ROLE)
    text = await csv_body(request)
    try:
        return _json(await keeper.import_csv(session.user, text), status=201)
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None


def add_asset_routes(app: web.Application, api: str) -> None:
    """Add the carbon-asset routes under `api`."""
    app.router.add_get(f"{api}/carbon/position", _get_position)
    app.router.add_get(f"{api}/carbon/trend", _get_trend)
    app.router.add_get(f"{api}/carbon/entries", _get_entries)
    app.router.add_post(f"{api}/carbon/entries", _post_entry)
    app.router.add_post(f"{api}/carbon/entries/import", _import_csv)
    app.router.add_get(f"{api}/carbon/entries.csv", _get_csv)
