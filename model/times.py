"""The one range of times a user may give, everywhere: REST queries, shelving, CLI options.

Accepted: 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z, both included (so the end of the
range can be given as an exclusive 'to'). Why these bounds: the historian and the audit
log store integer milliseconds since the Unix epoch, so nothing before it was ever stored;
and whatever the server computes from an accepted time (a local day's end, a month of
windows, a shelf's expiry) stays ~7800 years inside what `datetime` can hold, so no
arithmetic on it can overflow. 2200 lies well past the life of any plant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from model.errors import InvalidValueError

EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
RANGE_TEXT: Final = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
# The same in epoch seconds, for arrays of sample times (NaN is outside too).
EARLIEST_S: Final = 0.0
LATEST_S: Final = LATEST.timestamp()
_SPAN: Final = LATEST - EARLIEST
_SHOWN_CHARS: Final = 60  # of a user's text echoed in a message


class TimeRangeError(InvalidValueError):
    """A time a user gave is not a time, has no UTC offset, or lies outside the range."""


def _shown(text: str) -> str:
    """The user's text as a message quotes it, cut short: a 10 kB query is not echoed."""
    return repr(text) if len(text) <= _SHOWN_CHARS else repr(text[:_SHOWN_CHARS]) + "…"


def in_range(t: datetime, what: str, shown: str | None = None) -> datetime:
    """`t` (aware) in UTC if it lies in the allowed range, else TimeRangeError naming `what`."""
    offset = t.utcoffset()
    if offset is None:
        raise TimeRangeError(f"{what}: {shown or t.isoformat()} needs a UTC offset")
    # Aware subtraction is exact timedelta arithmetic and cannot overflow, where astimezone
    # can: 0001-01-01T00:00+08:00 lies in year 0 in UTC, 9999-12-31T23:59-14:00 in 10000.
    if not timedelta(0) <= t - EARLIEST <= _SPAN:
        raise TimeRangeError(f"{what}: {shown or repr(t.isoformat())} is outside the allowed "
                             f"range {RANGE_TEXT}")
    return t.astimezone(UTC)


def as_utc(t: datetime, what: str) -> datetime:
    """`t` in UTC; InvalidValueError naming `what` when it is naive (a time without a zone
    is ambiguous by up to a day: the plant's local time or UTC)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidValueError(f"{what}: {t.isoformat()} has no time zone; give UTC or "
                                "an offset")
    return t.astimezone(UTC)


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time with a UTC offset, as UTC, inside the allowed range; else
    TimeRangeError naming `what` (e.g. "query parameter 'from'" or "--from")."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise TimeRangeError(f"{what}: {_shown(text)} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        example = f", e.g. {text}+08:00" if len(text) <= _SHOWN_CHARS else ""
        raise TimeRangeError(f"{what}: {_shown(text)} needs a UTC offset{example}")
    return in_range(t, what, _shown(text))


def later_by(start: datetime, duration: timedelta, what: str) -> datetime:
    """`start` plus a duration a user gave, inside the allowed range; else TimeRangeError
    naming `what` (e.g. "'minutes'")."""
    # Compare durations, not the sum: start + duration may not even be a datetime.
    room = LATEST - in_range(start, what)
    if duration > room:
        stamp = start.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        raise TimeRangeError(f"{what}: {stamp} + {duration} is outside the allowed range "
                             f"{RANGE_TEXT}")
    return start + duration


# Compliance years a request or an entry may name: from the first emissions-trading year
# anywhere (EU ETS, 2005) to the end of the century.
MIN_YEAR: Final = 2005
MAX_YEAR: Final = 2100


def parse_year(text: str, name: str = "year") -> int:
    """The year `text` gives; InvalidValueError naming `name` unless 2005 to 2100."""
    shown = text if len(text) <= 20 else text[:20] + "…"
    if not (text.isascii() and text.isdigit()) or not MIN_YEAR <= int(text) <= MAX_YEAR:
        raise InvalidValueError(f"query parameter {name!r} must be a year from {MIN_YEAR} "
                                f"to {MAX_YEAR}, not {shown!r}")
    return int(text)
