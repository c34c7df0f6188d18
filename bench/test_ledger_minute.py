"""The live period stage with a ledger of years of corrections (issue 15).

Every entry people make stays in the calculation's `Records` for good, so the live stage
must not pay per stored entry. This measures `PeriodCycle.add` of one live minute, and of
the minute that closes an hour, on a 16 700-source plant whose ledger holds 10 000 minute
corrections and 1 000 hour corrections of past days plus 200 out-of-control intervals,
against the same plant with an empty ledger, in the same run. The target: the same time
within noise (ratio ≈ 1), no Python loop over the ledger or over the sources.

With `--benchmark-disable` (make test) every case runs once, as a correctness check: the
hour closed with the ledger equals the one without, except the source corrected in it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bench.test_real_minute import plant
from compute.entries import Override, Records
from compute.periods import MinuteBatch, PeriodCycle
from compute.plan import CalculationPlan
from model.flags import DataFlag
from model.records import PeriodRecords

N_SRC = 16_700
HOUR0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai: inside the plant day
PAST = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def ledger() -> Records:
    """10 000 minute and 1 000 hour corrections of past days, 200 QA intervals, and one
    hour correction of source S0 in the measured hour."""
    minutes = tuple(Override("source", "minute", f"S{k % N_SRC}", PAST + k * MINUTE,
                             {"co2_dry_pct": 11.0}, entry=k + 1) for k in range(10_000))
    hours = tuple(Override("source", "hour", f"S{k}", PAST + timedelta(hours=k),
                           {"co2_t": 100.0}, entry=20_000 + k) for k in range(1_000))
    now = (Override("source", "hour", "S0", HOUR0, {"co2_t": 42.0}, entry=30_000),)
    t0 = PAST.timestamp()
    qa = {f"S{k}": ((t0 + 86_400.0 * k, t0 + 86_400.0 * k + 3_600.0),) for k in range(200)}
    return Records(minutes + hours + now, (), qa)


@functools.cache
def plan(with_ledger: bool) -> CalculationPlan:
    """The plant's plan with the ledger or an empty one."""
    return plant(N_SRC).plan(ledger() if with_ledger else None)


def minute(p: CalculationPlan, t: datetime) -> MinuteBatch:
    """One valid minute at `t`: 12 % CO2, 500 000 m³/h on every source."""
    n, n_tags = N_SRC, len(p.tag_ids)
    return MinuteBatch(np.array([t.timestamp()]), np.full((1, n), 12.0),
                       np.full((1, n), 500_000.0), np.zeros((1, n), np.uint8),
                       np.full((1, n_tags), 10.0), np.zeros((1, n_tags), np.uint8))


def fed(p: CalculationPlan, n_minutes: int) -> PeriodCycle:
    """A period stage that has taken the first `n_minutes` of the measured hour."""
    cycle = PeriodCycle(p)
    for j in range(n_minutes):
        cycle.add(minute(p, HOUR0 + j * MINUTE))
    return cycle


def group(what: str) -> str:
    return f"period stage, {N_SRC:,} sources, {what}"


@pytest.mark.parametrize("with_ledger", [False, True], ids=["empty-ledger", "11k-entries"])
def test_live_minute(benchmark, with_ledger: bool) -> None:  # type: ignore[no-untyped-def]
    """PeriodCycle.add of one minute inside the hour."""
    p = plan(with_ledger)
    cycle = PeriodCycle(p)
    t = iter(HOUR0 + j * MINUTE for j in range(50))
    benchmark.group = group("one live minute")

    def one() -> list[PeriodRecords]:
        return cycle.add(minute(p, next(t)))

    out = benchmark.pedantic(one, rounds=20 if benchmark.enabled else 1, iterations=1)
    assert out == []


@pytest.mark.parametrize("with_ledger", [False, True], ids=["empty-ledger", "11k-entries"])
def test_minute_closing_the_hour(benchmark, with_ledger: bool) -> None:  # type: ignore[no-untyped-def]
    """PeriodCycle.add of the hour's last minute: with it the hour closes."""
    p = plan(with_ledger)
    benchmark.group = group("the minute that closes an hour")
    cycles = iter(lambda: fed(p, 59), None)

    def setup() -> tuple[tuple[PeriodCycle], dict[str, object]]:
        return (next(cycles),), {}

    def close(cycle: PeriodCycle) -> list[PeriodRecords]:
        return cycle.add(minute(p, HOUR0 + 59 * MINUTE))

    out = benchmark.pedantic(close, setup=setup, rounds=5 if benchmark.enabled else 1)
    (hour,) = [r for r in out if r.level == "hour"]
    # G = C·ρ·Q/100 = 12 · 1.964 · 500 000 / 100 kg/h = 117.84 t in the hour.
    s0, s1 = hour.sources[0], hour.sources[1]
    assert s1.co2_t == pytest.approx(117.84, rel=1e-9)
    assert s1.flag == DataFlag.N
    if with_ledger:  # the hour corrected by hand: 42 t, flag S, measured mass kept
        assert (s0.co2_t, s0.flag) == (42.0, DataFlag.S)
        assert s0.co2_measured_t == pytest.approx(117.84, rel=1e-9)
    else:
        assert (s0.co2_t, s0.flag) == (s1.co2_t, DataFlag.N)
