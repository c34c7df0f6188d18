"""Query parameters of the REST API: times, ranges and counts, checked (400 naming them)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from model.times import TimeRangeError, parse_time
from web.auth import ApiError

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
