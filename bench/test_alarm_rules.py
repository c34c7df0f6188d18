"""10 000 alarm rules of mixed kinds in one minute cycle: the vectorised engine next to a
plain-Python loop over the same rules, in the same run.

Run with `make bench` (or `pytest bench/test_alarm_rules.py`). The synthetic plant has
100 units × 4 stacks × 6 tags; the rules are threshold, rate of change, stale, comm
loss, intensity (all windows), allowance, capture rate and reconciliation, with levels
set so that about 1 % of them change state each minute. Target: `AlarmEngine.on_minute`
≤ 20 ms a minute for 10 000 rules.

With `--benchmark-disable` (make test) every case runs once, and the engine and the
loop are checked to give the same events over 20 minutes. A change of rules at run
time (1 % removed, 1 % added, the rest reordered) is timed too, and its kept rules are
checked to go on exactly as in an engine whose rules never changed. Target:
`AlarmEngine.change_rules` ≤ 1 s for 10 000 rules.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alarms.config import with_alarm_rules
from alarms.context import MinuteContext
from alarms.engine import AlarmEngine
from compute.clock import PlantClock
from model.flags import DataFlag
from model.records import MinuteResult, SiteMinute, SourceMinute, TagMinute, UnitMinute
from server.config import PlantConfig, parse_config
from tests.alarms.reference import ScalarRule, scalar_rules

N_UNITS = 100
SOURCES_PER_UNIT = 4
TAGS = ("co2", "temp", "velocity", "moisture", "static", "o2")
MIX = {"threshold": 4000, "rate_of_change": 1500, "stale": 1500, "comm_loss": 500,
       "intensity": 1500, "allowance_position": 500, "capture_rate": 300,
       "reconciliation_diff": 200}
N_RULES = sum(MIX.values())
VARIANTS = 32  # distinct minutes of values, cycled
WARM_MINUTES = 70  # fill the hour windows and the rate-of-change history first
T0 = datetime(2024, 6, 30, 14, 0, tzinfo=UTC)
TARGET_S = 0.020
CHANGE_TARGET_S = 1.0
GROUP = f"alarm rules: {N_RULES} rules, one minute cycle"

SOURCE_FIELDS = {"co2_dry_pct": (12.0, 0.4), "co2_rate_kg_h": (150_000.0, 5_000.0),
                 "flow_std_dry_m3_h": (600_000.0, 20_000.0)}
UNIT_FIELDS = {"output_mwh": (5.0, 0.2), "co2_kg": (4_200.0, 150.0)}


def _sid(u: int, s: int) -> str:
    return f"S{u:03d}_{s}"


def _level(mean: float, sd: float, z: float) -> float:
    return round(mean + z * sd, 6)


def _rules(rng: random.Random) -> list[dict[str, Any]]:
    """The rule mix; levels at ~2.3 σ (warning) and 3 σ (alarm) of the value's noise."""
    rules: list[dict[str, Any]] = []

    def unit() -> int:
        return rng.randrange(N_UNITS)

    def source_target() -> tuple[dict[str, Any], float, float]:
        f = rng.choice(list(SOURCE_FIELDS))
        return {"source": _sid(unit(), rng.randrange(SOURCES_PER_UNIT)), "field": f}, \
            *SOURCE_FIELDS[f]

    def target() -> tuple[dict[str, Any], float, float]:
        r = rng.random()
        if r < 0.6:
            return source_target()
        if r < 0.8:
            f = rng.choice(list(UNIT_FIELDS))
            return {"unit": f"U{unit():03d}", "field": f}, *UNIT_FIELDS[f]
        u, s = unit(), rng.randrange(SOURCES_PER_UNIT)
        return {"tag": f"u{u:03d}_{s}_co2", "field": "mean"}, 12.0, 0.4

    for kind, count in MIX.items():
        for _ in range(count):
            rid = f"{kind}_{len(rules)}"
            delays = {"on_delay_min": rng.choice([0, 0, 1, 2]),
                      "off_delay_min": rng.choice([0, 0, 1])}
            if kind == "threshold":
                tgt, mean, sd = target()
                rules.append({"id": rid, "target": tgt, "warning": _level(mean, sd, 2.3),
                              "alarm": _level(mean, sd, 3.0), "deadband": sd / 10, **delays})
            elif kind == "rate_of_change":
                tgt, _, sd = target()
                over = rng.choice([1, 5, 15])
                rules.append({"id": rid, "kind": kind, "target": tgt, "over_min": over,
                              "warning": 3.3 * sd / over, "alarm": 4.2 * sd / over, **delays})
            elif kind == "stale":
                tgt, _, _ = target()
                rules.append({"id": rid, "kind": kind, "target": tgt, "warning_min": 2,
                              "alarm_min": 5})
            elif kind == "comm_loss":
                rules.append({"id": rid, "kind": kind, "device": f"rtu{unit():03d}", **delays})
            elif kind == "intensity":
                window = rng.choice(["minute", "hour", "day", "month_to_date"])
                scope = rng.choice([{"unit": f"U{unit():03d}"}, {"unit": f"U{unit():03d}"},
                                    {"source": _sid(unit(), 0)}, {"site": True}])
                rules.append({"id": rid, "kind": kind, "scope": scope, "window": window,
                              "benchmark_t_mwh": 0.8229, "warning_pct": 100.0,
                              "alarm_pct": 110.0, "min_output_mwh": 1.0, **delays})
            elif kind == "allowance_position":
                measure = rng.choice(["used_pct", "prorated_pct", "forecast_pct",
                                      "shortfall_cost_cny"])
                lv = {"used_pct": (80.0, 90.0), "prorated_pct": (100.0, 105.0),
                      "forecast_pct": (95.0, 100.0), "shortfall_cost_cny": (1e6, 5e6)}[measure]
                rules.append({"id": rid, "kind": kind, "measure": measure, "warning": lv[0],
                              "alarm": lv[1]})
            elif kind == "capture_rate":
                rules.append({"id": rid, "kind": kind, "source": _sid(unit(), 0),
                              "warning": 95.0, "alarm": 90.0})
            else:
                rules.append({"id": rid, "kind": kind, "unit": f"U{unit():03d}",
                              "warning": 3.0, "alarm": 5.0})
    return rules


@functools.cache
def plant() -> PlantConfig:
    """100 units of 4 stacks, one RTU of 24 tags and one power tag per unit; 10 000 rules."""
    rng = random.Random(7)
    devices, units = [], []
    for u in range(N_UNITS):
        tags = [{"id": f"u{u:03d}_power", "register": 0}]
        sources = []
        for s in range(SOURCES_PER_UNIT):
            pre = f"u{u:03d}_{s}"
            tags += [{"id": f"{pre}_{name}", "register": 2 + 2 * (6 * s + k)}
                     for k, name in enumerate(TAGS)]
            sources.append({"id": _sid(u, s), "name": f"Stack {u}.{s}", "area_m2": 20.0,
                            "inputs": {"velocity_m_s": {"tag": f"{pre}_velocity"},
                                       "co2_pct": {"tag": f"{pre}_co2"},
                                       "temp_c": {"tag": f"{pre}_temp"},
                                       "static_pa": {"tag": f"{pre}_static"},
                                       "moisture_pct": {"tag": f"{pre}_moisture"},
                                       "o2_dry_pct": {"tag": f"{pre}_o2"}}})
        devices.append({"id": f"rtu{u:03d}", "protocol": "modbus_tcp", "host": "10.0.0.1",
                        "port": 502, "device_id": u + 1, "tags": tags})
        units.append({"id": f"U{u:03d}", "name": f"Unit {u}",
                      "output": {"power_mw": {"tag": f"u{u:03d}_power"}}, "sources": sources})
    data = {"site": {"id": "bench", "name": "Bench Plant"}, "devices": devices, "units": units,
            "allowance": {"annual_t": 30_000_000.0, "carbon_price_cny_t": 90.0},
            "reconciliation": {"limit_pct": 5.0}, "alarms": {"rules": _rules(rng)}}
    return parse_config(data, "bench/test_alarm_rules.py")


Parts = tuple[tuple[SourceMinute, ...], tuple[UnitMinute, ...], tuple[TagMinute, ...],
              SiteMinute]


@functools.cache
def variants() -> list[Parts]:
    """Minutes of gaussian values; a few tags flagged bad, a few units stopped now and then."""
    rng = random.Random(11)
    out = []
    for k in range(VARIANTS):
        t = T0 + timedelta(minutes=k)
        sources, units, tags = [], [], []
        for u in range(N_UNITS):
            stopped = rng.random() < 0.003
            uflag = DataFlag.F if stopped else DataFlag.N
            out_mwh = rng.gauss(*UNIT_FIELDS["output_mwh"])
            units.append(UnitMinute(f"U{u:03d}", t, out_mwh, rng.gauss(*UNIT_FIELDS["co2_kg"]),
                                    math.nan, not stopped, uflag))
            for s in range(SOURCES_PER_UNIT):
                flag = DataFlag.D if rng.random() < 0.01 else uflag
                co2 = rng.gauss(*SOURCE_FIELDS["co2_dry_pct"])
                rate = rng.gauss(*SOURCE_FIELDS["co2_rate_kg_h"])
                sources.append(SourceMinute(
                    _sid(u, s), f"U{u:03d}", t, 8e5, rng.gauss(*SOURCE_FIELDS["flow_std_dry_m3_h"]),
                    co2, co2 * 19_640, rate, rate / 60, flag is DataFlag.N, flag))
                for name in TAGS:
                    bad = rng.random() < 0.01
                    tags.append(TagMinute(f"u{u:03d}_{s}_{name}", t, rng.gauss(12.0, 0.4), 0.0,
                                          0.0, 0 if bad else 60, DataFlag.B if bad else uflag))
        site = SiteMinute(t, 1.7e6, 2.4e4, 1.35e7, 3e7, 45.0, 1.65e7)
        out.append((tuple(sources), tuple(units), tuple(tags), site))
    return out


def minute(k: int) -> MinuteResult:
    """Minute k after T0, its values from variant k mod VARIANTS."""
    sources, units, tags, site = variants()[k % VARIANTS]
    return MinuteResult(T0 + timedelta(minutes=k), sources, units, site, tags)


class PlainLoop:
    """The same rules as plain-Python objects, each evaluated in turn."""

    def __init__(self, cfg: PlantConfig) -> None:
        self.cfg = cfg
        self.rules: list[ScalarRule] = scalar_rules(cfg)
        self.clock = PlantClock(cfg.clock.minute_seconds, cfg.site.timezone)

    def on_minute(self, result: MinuteResult) -> list[Any]:
        ctx = MinuteContext(result, self.clock, self.cfg.allowance)
        return [e for r in self.rules for e in r.step(ctx)]


def runner(evaluate: Callable[[MinuteResult], list[Any]]) -> Callable[[], int]:
    """A function that evaluates the next minute on each call; warmed up first."""
    k = 0

    def step() -> int:
        nonlocal k
        k += 1
        return len(evaluate(minute(k)))

    for _ in range(WARM_MINUTES):
        step()
    return step


def test_engine(benchmark) -> None:  # type: ignore[no-untyped-def]
    cfg = plant()
    engine = AlarmEngine(cfg)
    assert len(engine.specs) == N_RULES
    benchmark.group = GROUP
    step = runner(engine.on_minute)
    benchmark.pedantic(step, rounds=60, iterations=1, warmup_rounds=3)
    changed = sum(step() for _ in range(20)) / 20
    print(f"\n{changed:.0f} events a minute on average")
    assert 10 <= changed <= 1000  # about 1 % of the rules change each minute
    if benchmark.stats is not None:
        assert benchmark.stats.stats.median <= TARGET_S


def test_plain_python_loop(benchmark) -> None:  # type: ignore[no-untyped-def]
    loop = PlainLoop(plant())
    benchmark.group = GROUP
    benchmark.pedantic(runner(loop.on_minute), rounds=20, iterations=1, warmup_rounds=1)


def key(e: Any) -> tuple[Any, ...]:
    return (e.rule, e.t, e.state, e.previous, e.ack_state, e.cause, e.message)


@pytest.mark.parametrize("minutes", [20])
def test_engine_and_loop_agree(minutes: int) -> None:
    cfg = plant()
    engine, loop = AlarmEngine(cfg), PlainLoop(cfg)
    total = 0
    for k in range(minutes):
        a = sorted(map(key, engine.on_minute(minute(k))))
        b = sorted(map(key, loop.on_minute(minute(k))))
        assert a == b, f"minute {k}"
        total += len(a)
    assert total > 100


@functools.cache
def changed_plant() -> tuple[PlantConfig, frozenset[str]]:
    """The bench plant with 1 % of its rules removed, 1 % added, the rest shuffled; and
    the ids of the rules it kept."""
    rules = [r.model_dump(mode="json") for r in plant().alarms.rules]
    rng = random.Random(13)
    removed = set(rng.sample(range(N_RULES), N_RULES // 100))
    kept = [r for i, r in enumerate(rules) if i not in removed]
    rng.shuffle(kept)
    added = [{**rules[i], "id": f"added_{i}"} for i in sorted(removed)]
    return (with_alarm_rules(plant(), [*kept, *added], "bench/test_alarm_rules.py"),
            frozenset(r["id"] for r in kept))


def test_change_rules(benchmark) -> None:  # type: ignore[no-untyped-def]
    cfg = plant()
    new_cfg, kept = changed_plant()
    engine, same = AlarmEngine(cfg), AlarmEngine(cfg)
    for k in range(WARM_MINUTES):
        engine.on_minute(minute(k))
        same.on_minute(minute(k))
    t = minute(WARM_MINUTES).t
    engine.change_rules(new_cfg, "bench", "1 % removed, 1 % added, reordered", t)
    assert len(engine.specs) == N_RULES
    compared = 0
    for k in range(WARM_MINUTES, WARM_MINUTES + 20):
        a = sorted(key(e) for e in same.on_minute(minute(k)) if e.rule in kept)
        b = sorted(key(e) for e in engine.on_minute(minute(k)) if e.rule in kept)
        assert a == b, f"minute {k}"
        compared += len(a)
    assert compared > 100

    configs = itertools.cycle([cfg, new_cfg])
    benchmark.group = f"alarm rules: change of {N_RULES} rules"
    benchmark.pedantic(lambda: engine.change_rules(next(configs), "bench", "again", t),
                       rounds=6, iterations=1)
    if benchmark.stats is not None:
        assert benchmark.stats.stats.median <= CHANGE_TARGET_S


def test_rebuild_engine(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Baseline for test_change_rules: a new engine from the new rules, as a restart
    would build it (every alarm state and evaluation history lost)."""
    configs = itertools.cycle([plant(), changed_plant()[0]])
    benchmark.group = f"alarm rules: change of {N_RULES} rules"
    engine = benchmark.pedantic(lambda: AlarmEngine(next(configs)), rounds=6, iterations=1)
    assert len(engine.specs) == N_RULES
