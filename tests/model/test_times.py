"""model/times.py: the one range of times users may give, and its messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import CarbonScadaError, InvalidValueError
from model.times import EARLIEST, LATEST, TimeRangeError, in_range, later_by, parse_time

RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"


def test_the_range_is_1970_to_2200_utc_both_ends_included() -> None:
    assert datetime(1970, 1, 1, tzinfo=UTC) == EARLIEST
    assert datetime(2200, 1, 1, tzinfo=UTC) == LATEST
    assert parse_time("1970-01-01T08:00+08:00", "--from") == EARLIEST
    assert parse_time("2199-12-31T10:00-14:00", "--to") == LATEST
    assert parse_time("2026-11-21T00:00+08:00", "--from") == datetime(2026, 11, 20, 16,
                                                                       tzinfo=UTC)
    for text in ("1970-01-01T07:59:59.999999+08:00", "2200-01-01T00:00:00.000001Z"):
        with pytest.raises(TimeRangeError) as e:
            parse_time(text, "--from")
        assert str(e.value) == f"--from: {text!r} is outside the allowed range {RANGE}"


@pytest.mark.parametrize(("text", "problem"), [
    ("yesterday", "'yesterday' is not an ISO 8601 time"),
    ("", "'' is not an ISO 8601 time"),
    ("2026-01-01T00:00", "'2026-01-01T00:00' needs a UTC offset, e.g. 2026-01-01T00:00+08:00"),
    ("x" * 100, f"'{'x' * 60}'… is not an ISO 8601 time"),
])
def test_messages_name_what_and_why(text: str, problem: str) -> None:
    with pytest.raises(TimeRangeError) as e:
        parse_time(text, "query parameter 'to'")
    assert str(e.value) == f"query parameter 'to': {problem}"
    # ours (exit 2 / HTTP 4xx), and a ValueError for pydantic validators
    assert isinstance(e.value, CarbonScadaError) and isinstance(e.value, InvalidValueError)


@settings(max_examples=300, deadline=None)
@given(t=st.datetimes(timezones=st.builds(timezone, st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)))))
def test_any_aware_datetime_is_judged_without_overflow(t: datetime) -> None:
    # years 1 to 9999 at any offset: in UTC some are year 0 or 10000, which datetime lacks
    inside = EARLIEST <= t <= LATEST
    try:
        got = in_range(t, "'until'")
    except TimeRangeError as exc:
        assert not inside and str(exc).startswith("'until': ")
        assert str(exc).endswith(f"is outside the allowed range {RANGE}")
    else:
        assert inside and got == t and got.tzinfo is UTC


def test_later_by_stays_inside_the_range() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert later_by(now, timedelta(minutes=30), "'minutes'") == now + timedelta(minutes=30)
    assert later_by(now, LATEST - now, "'minutes'") == LATEST
    with pytest.raises(TimeRangeError) as e:
        later_by(now, timedelta(days=999_999_999), "'minutes'")
    assert str(e.value) == ("'minutes': 2026-01-01T00:00:00Z + 999999999 days, 0:00:00 is "
                            f"outside the allowed range {RANGE}")
