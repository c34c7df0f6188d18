"""Request parsing of the REST API: query times, ranges and counts, JSON bodies and their
fields, each checked (400 naming what is wrong)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from aiohttp import web

from model.errors import InvalidValueError
from model.times import TimeRangeError, parse_time, parse_year
from web.auth import ApiError
from web.serialize import Json

TIME_HINT = "ISO 8601 with offset, e.g. 2026-11-21T00:00:00+08:00"


def parse_user_time(text: str, what: str) -> datetime:
    """A time a client gave, as UTC; 400 naming `what` and the allowed range if it is not one."""
    # The project's one time rule (model/times.py).
    try:
        return parse_time(text, what)
    except TimeRangeError as exc:
        raise ApiError(400, str(exc)) from None


def time_param(request: web.Request, name: str) -> datetime:
    """A required time query parameter, as UTC (400 naming it when missing or wrong)."""
    text = request.query.get(name)
    if not text:
        raise ApiError(400, f"query parameter '{name}' is required ({TIME_HINT})")
    return parse_user_time(text, f"query parameter '{name}'")


def span(request: web.Request, longest: timedelta, what: str) -> tuple[datetime, datetime]:
    """The ?from=…&to=… of a request, checked: to after from, at most `longest` apart."""
    start, end = time_param(request, "from"), time_param(request, "to")
    if end <= start:
        raise ApiError(400, "'to' must be after 'from'")
    if end - start > longest:
        raise ApiError(400, f"at most {longest.days} days of {what} per request")
    return start, end


def year_param(request: web.Request, name: str = "year") -> int | None:
    """The optional year query parameter `name`; 400 naming it unless 2005 to 2100."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return parse_year(text, name)
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None


def count_param(request: web.Request, name: str, largest: int) -> int | None:
    """An optional whole-number query parameter from 1 to `largest` (None when absent)."""
    text = request.query.get(name)
    if text is None:
        return None
    shown = text if len(text) <= 20 else text[:20] + "…"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= largest:
        raise ApiError(400, f"query parameter '{name}' must be a whole number from 1 to "
                            f"{largest}, not {shown!r}")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_body(request: web.Request) -> Json:
    """The request's JSON object (400 if it is not one)."""
    try:
        body = json.loads(await request.text(), parse_constant=_refuse_constant)
    except ValueError:  # also bad UTF-8
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


MAX_CSV_BYTES: Final = 1 << 20  # a CSV upload (lab data, the carbon ledger)


async def csv_body(request: web.Request, max_bytes: int = MAX_CSV_BYTES) -> str:
    """The request's body as UTF-8 text (a BOM dropped): 413 beyond `max_bytes` (read no
    further than that), 400 if it is not UTF-8."""
    if (request.content_length or 0) > max_bytes:
        raise ApiError(413, f"at most {max_bytes} bytes of CSV per request")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"at most {max_bytes} bytes of CSV per request")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the CSV is not UTF-8") from None


def text_field(body: Json, name: str, *, max_len: int, blank_ok: bool = False) -> str:
    """A string field of a request body (400 naming it if missing, not a string, blank or
    too long); stripped unless `blank_ok` (passwords are kept as typed)."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    if not blank_ok and not value.strip():
        raise ApiError(400, f"'{name}' must not be empty")
    if len(value) > max_len:
        raise ApiError(400, f"'{name}' is longer than {max_len} characters")
    return value if blank_ok else value.strip()
