"""GET /api/v1/instruments: the instrument register and the CO2 uncertainty of each source.

Read-only and without login, as the device list is (web/devices.py). The answer is built
from the plant configuration at the time of the request (web/register.py): the due dates
are the plant's calendar dates, `t` the UTC time the states were taken at.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from web.register import RegisterPlantConfig, register_json
from web.serialize import dumps

REGISTER_CONFIG: Final[web.AppKey[RegisterPlantConfig]] = web.AppKey("instrument_register")


async def _get_instruments(request: web.Request) -> web.Response:
    cfg, now = request.app[REGISTER_CONFIG], datetime.now(UTC)
    # A row per tag: with a big plant's tens of thousands of tags, built off the loop.
    text = await asyncio.to_thread(lambda: dumps(register_json(cfg, now)))
    return web.Response(text=text, content_type="application/json")


def add_instrument_routes(app: web.Application, api: str, config: RegisterPlantConfig) -> None:
    """Add GET {api}/instruments answering from `config`."""
    app[REGISTER_CONFIG] = config
    app.router.add_get(f"{api}/instruments", _get_instruments)
