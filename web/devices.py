"""GET /api/v1/devices/{id}/tags: the newest raw reading of each tag of one device.

Read-only and without login, as the device list is (wall displays). The readings come
from the runtime's tag store as one device's slice (web/collaborators.DeviceTags); the
runtime sets the app key, a web sink without one knows no device.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Final

import numpy as np
from aiohttp import web

from model.flags import DataFlag
from web.auth import ApiError
from web.collaborators import DeviceTags, RawTags
from web.serialize import Json, dumps, iso_utc

DEVICE_TAGS: Final[web.AppKey[DeviceTags | None]] = web.AppKey("device_tags")
MAX_ECHO: Final = 64  # characters of an unknown device id repeated in the answer

# OPC UA's three qualities (Part 8, 6.3.2), as the OPC UA sink maps the flags: a
# communication or instrument failure is Bad, a set / over-range / calibration /
# maintenance / stopped value is Uncertain.
_QUALITY: Final = {DataFlag.N: "good", DataFlag.B: "bad", DataFlag.D: "bad"}


def quality(flag: DataFlag) -> str:
    """good, uncertain or bad: what the flag says of the reading."""
    return _QUALITY.get(flag, "uncertain")


def tags_json(raw: RawTags, now_s: float) -> Json:
    """The device's tags as the endpoint answers them (age against `now_s`, epoch s)."""
    times = raw.times_s.tolist()
    values = raw.values.tolist()
    flags = raw.flags.tolist()
    read = np.isfinite(raw.times_s).tolist()
    rows: list[Json] = []
    for i, tag in enumerate(raw.ids):
        t, v = times[i], values[i]
        flag = DataFlag(flags[i]) if read[i] else None
        rows.append({
            "tag": tag, "name": raw.names[i], "name_en": raw.names_en[i], "unit": raw.units[i],
            "value": None if math.isnan(v) else v,
            "flag": None if flag is None else flag.name,
            "quality": None if flag is None else quality(flag),
            "t": iso_utc_s(t) if read[i] else None,
            "age_s": round(max(now_s - t, 0.0), 3) if read[i] else None,
        })
    return {"device": raw.device, "t": iso_utc_s(now_s), "tags": rows}


def iso_utc_s(t_s: float) -> str:
    """Epoch seconds as the API's UTC ISO time."""
    text = iso_utc(datetime.fromtimestamp(t_s, UTC))
    assert text is not None
    return text


async def _get_device_tags(request: web.Request) -> web.Response:
    device = request.match_info["id"]
    source = request.app.get(DEVICE_TAGS)
    raw = source.device_tags(device) if source is not None else None
    if raw is None:
        raise ApiError(404, f"no device {device[:MAX_ECHO]!r}")
    return web.Response(text=dumps(tags_json(raw, time.time())),
                        content_type="application/json")


def add_device_routes(app: web.Application, api: str) -> None:
    """Add GET {api}/devices/{id}/tags (the app key DEVICE_TAGS is set by the runtime)."""
    app[DEVICE_TAGS] = None
    app.router.add_get(f"{api}/devices/{{id}}/tags", _get_device_tags)
