"""GET /api/v1/instruments: the instrument register and the CO2 uncertainty of each source.

Read-only and without login, as the device list is (web/devices.py). The answer is built
from the plant configuration at the time of the request (web/register.py): the due dates
are the plant's calendar dates, `t` the UTC time the states were taken at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from web.register import RegisterPlantConfig, register_json
from web.serialize import dumps

REGISTER_CONFIG: Final[web.AppKey[RegisterPlantConfig]] = web.AppKey("instrument_register")


async def _get_instruments(request: web.Request) -> web.Response:
    body = register_json(request.app[REGISTER_CONFIG], datetime.now(UTC))
    return web.Response(text=dumps(body), content_type="application/json")


def add_instrument_routes(app: web.Application, api: str, config: RegisterPlantConfig) -> None:
    """Add GET {api}/instruments answering from `config`."""
    app[REGISTER_CONFIG] = config
    app.router.add_get(f"{api}/instruments", _get_instruments)
