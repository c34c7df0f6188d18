from __future__ import annotations

from datetime import UTC, datetime, timedelta

from compute.clock import PlantClock
from compute.totals import Totals


def test_minutes_align_to_wall_clock() -> None:
    c = PlantClock(60.0, "Asia/Shanghai")
    t = datetime(2026, 11, 21, 8, 30, 42, 500_000, tzinfo=UTC)
    assert c.minute_start(t) == datetime(2026, 11, 21, 8, 30, tzinfo=UTC)
    assert c.next_minute(t) == datetime(2026, 11, 21, 8, 31, tzinfo=UTC)


def test_plant_day_is_local_midnight() -> None:
    c = PlantClock(60.0, "Asia/Shanghai")
    # 2026-11-21 17:30 UTC is 2026-11-22 01:30 in Shanghai (UTC+8): the day began 16:00 UTC.
    t = datetime(2026, 11, 21, 17, 30, tzinfo=UTC)
    assert c.day_start(t) == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
    assert c.year_start(t) == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
    assert c.hour_start(t) == datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def test_short_minutes_scale_every_period() -> None:
    c = PlantClock(2.0, "UTC")  # a "minute" of 2 s: an hour is 120 s, a day 2880 s
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=2881)
    assert c.minute_start(t) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=2880)
    assert c.day_start(t) == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=2880)
    assert c.hour_start(t + timedelta(seconds=130)) == (
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=2880 + 120))


def test_totals_reset_at_period_boundaries() -> None:
    c = PlantClock(60.0, "UTC")
    tot = Totals(c)
    t = datetime(2026, 12, 31, 23, 58, tzinfo=UTC)
    tot.seed("x", t, hour=1.0, day=10.0, year=100.0)
    r = tot.add("x", t, 2.0)
    assert (r.hour, r.day, r.year) == (3.0, 12.0, 102.0)
    r = tot.add("x", t + timedelta(minutes=2), 5.0)  # new year
    assert (r.hour, r.day, r.year) == (5.0, 5.0, 5.0)
    r = tot.add("x", t + timedelta(minutes=3), float("nan"))
    assert (r.hour, r.day, r.year) == (5.0, 5.0, 5.0)


def test_sped_up_clock_stays_in_calendar_range_for_decades() -> None:
    """Scaled from 2026, a 0.45-s minute clock shows year 3359 in 2036, not > 9999 in 2030."""
    clock = PlantClock(minute_seconds=0.45)
    # 10 years of wall time × 60/0.45 = 1333.3 scaled years after 2026-01-01 → 3359.
    assert clock.scaled_local(datetime(2036, 1, 1, tzinfo=UTC)).year == 3359
    t = datetime(2060, 6, 1, 0, 0, 13, tzinfo=UTC)  # still a valid calendar in 2060
    assert clock.hour_start(t) <= t < clock.next_hour(t)


def test_periods_start_on_calculation_minutes_at_any_minute_length() -> None:
    """Hours and days of a sped-up clock begin on its minute grid; at 60 s it is the wall."""
    t = datetime(2026, 12, 7, 15, 46, 7, 250000, tzinfo=UTC)
    for ms in (0.37, 0.45, 0.5, 2.0, 60.0):
        clock = PlantClock(minute_seconds=ms)
        for start in (clock.hour_start(t), clock.day_start(t), clock.next_hour(t),
                      clock.next_day(t), *clock.year_bounds(t)):
            assert clock.minute_start(start) == start, (ms, start)
        assert clock.hour_start(t) <= t < clock.next_hour(t)
    assert PlantClock().scaled_local(t) == t


def test_date_start_is_the_day_the_clock_shows() -> None:
    """date_start(d) is the wall instant a (sped-up) clock begins plant-local date d."""
    from datetime import date

    for ms in (0.45, 0.5, 60.0):
        clock = PlantClock(minute_seconds=ms)
        start = clock.date_start(date(2027, 3, 1))
        assert clock.scaled_local(start).isoformat() == "2027-03-01T00:00:00+08:00"
    # at 60-s minutes: Shanghai midnight of 2027-03-01 is 2027-02-28 16:00 UTC
    assert PlantClock().date_start(date(2027, 3, 1)) == datetime(2027, 2, 28, 16, tzinfo=UTC)


def test_tenth_of_a_second_minutes_keep_every_boundary_exact() -> None:
    # At 0.1-s and 0.101-s minutes the clock runs 600× and 594× the wall clock: float
    # seconds put a minute start 4e-6 minute short (into the minute before) and a plant
    # midnight 0.1 ms into the day before, which made a day 0 hours long.
    for minute_s in (0.1, 0.101, 0.137):
        c = PlantClock(minute_s, "Asia/Shanghai")
        step = timedelta(microseconds=round(minute_s * 1e6))
        d0 = c.day_start(datetime(2026, 12, 7, 22, 58, 25, 746_000, tzinfo=UTC))
        for day in range(3):
            start = d0 + day * 1440 * step  # 24 h of 60 minutes each
            assert c.day_start(start) == start and c.next_day(start) == start + 1440 * step
            assert c.day_start(start - timedelta(microseconds=1)) == start - 1440 * step
            for hour in range(24):
                h = start + hour * 60 * step
                assert c.hour_start(h) == h and c.minute_start(h) == h
                assert c.minute_start(h - timedelta(microseconds=1)) == h - step
                assert c.scaled_local(h).minute == 0 and c.scaled_local(h).hour == hour
