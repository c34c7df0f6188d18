"""Automatic zero and span checks (compute/qa.py AutoCheck, calibration_episodes,
auto_check) and the `qa.auto` configuration; server/qacapture.py's watch over streamed
samples. Every number is worked by hand in a comment."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from compute.qa import (
    AutoCheck,
    CalibrationEpisode,
    auto_check,
    calibration_episodes,
    judge_check,
)
from model.errors import ConfigError, InvalidValueError
from server.config import parse_config
from server.qacapture import CheckWatch, entry_body
from tests.fixtures.plant import plant_dict

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC).timestamp()
SPAN = AutoCheck(parameter="co2", check="span", reading_tag="s1_co2", reference_value=15.0,
                 full_scale=25.0, unit="%", average_s=3.0)


def secs(n: int) -> list[float]:
    return [T0 + i for i in range(n)]


# ------------------------------------------------------------------ the pure function


def test_whole_calibration_mean_of_the_last_seconds_before_the_falling_edge() -> None:
    # status on at t = 2..7 s, off again at 8 s: the episode [2, 8); the readings of the
    # last 3 s before the edge are those at 5, 6, 7 s: (15.2 + 15.4 + 15.6) / 3 = 15.4.
    # The reading at 8 s (12.0, stamped with the edge) belongs to after it.
    status = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    reading = [12.0, 12.0, 13.0, 14.0, 15.0, 15.2, 15.4, 15.6, 12.0, 12.0]
    eps, running = calibration_episodes(secs(10), status, secs(10), reading, average_s=3.0)
    assert running is None
    assert len(eps) == 1
    ep = eps[0]
    assert (ep.t0 - T0, ep.t1 - T0, ep.n) == (2.0, 8.0, 3)
    assert ep.measured_value == pytest.approx(15.4, abs=1e-12)


def test_phase_codes_separate_the_zero_and_the_span_gas() -> None:
    # A logger's phase code: 1 zero gas on (t = 1..3), 2 span gas on (t = 4..7), 0 after.
    # Zero: edge at 4 (the status leaves 1), window [max(1, 4 − 2), 4) = [2, 4): readings
    # 0.2, 0.3 → 0.25. Span: edge at 8, window [6, 8): 15.0, 15.1 → 15.05.
    status = [0, 1, 1, 1, 2, 2, 2, 2, 0]
    reading = [12.0, 0.1, 0.2, 0.3, 10.0, 14.8, 15.0, 15.1, 12.0]
    (zero,), _ = calibration_episodes(secs(9), status, secs(9), reading, phase_value=1,
                                      average_s=2.0)
    (span,), _ = calibration_episodes(secs(9), status, secs(9), reading, phase_value=2,
                                      average_s=2.0)
    assert (zero.t0 - T0, zero.t1 - T0, zero.n) == (1.0, 4.0, 2)
    assert zero.measured_value == pytest.approx(0.25, abs=1e-12)
    assert (span.t0 - T0, span.t1 - T0, span.n) == (4.0, 8.0, 2)
    assert span.measured_value == pytest.approx(15.05, abs=1e-12)
    # A status register read as a float: 2.0000001 is the phase code 2 (rounded).
    (again,), _ = calibration_episodes(secs(9), [v + 1e-7 for v in status], secs(9), reading,
                                       phase_value=2, average_s=2.0)
    assert again == span


def test_the_window_never_reaches_before_the_phase() -> None:
    # A phase of 2 s (t = 3, 4; edge 5) with average_s 30: only its own readings, 7 and 9:
    # mean 8. The readings before it (100) are the flue gas.
    status = [0, 0, 0, 1, 1, 0]
    reading = [100.0, 100.0, 100.0, 7.0, 9.0, 100.0]
    (ep,), _ = calibration_episodes(secs(6), status, secs(6), reading, average_s=30.0)
    assert (ep.n, ep.measured_value) == (2, 8.0)


def test_a_running_calibration_is_not_finished_and_says_since_when() -> None:
    eps, running = calibration_episodes(secs(5), [0, 0, 1, 1, 1], secs(5), [1.0] * 5)
    assert eps == [] and running == T0 + 2
    # on at the first sample: the episode starts there
    (ep,), running = calibration_episodes(secs(4), [1, 1, 0, 1], secs(4), [4.0, 6.0, 0, 0],
                                          average_s=10.0)
    assert (ep.t0, ep.t1, ep.measured_value, running) == (T0, T0 + 2, 5.0, T0 + 3)


def test_too_few_readings_give_no_measured_value() -> None:
    # min_samples 3, the window [5, 8) holds 2 readings (one is NaN: no reading) → None
    status = [0, 1, 1, 1, 1, 1, 1, 1, 0]
    reading = [1.0] * 6 + [math.nan, 2.0, 1.0]
    (ep,), _ = calibration_episodes(secs(9), status, secs(9), reading, average_s=3.0,
                                    min_samples=3)
    assert (ep.n, ep.measured_value) == (2, None)
    auto = SPAN.model_copy(update={"min_samples": 3})
    with pytest.raises(InvalidValueError, match=r"2 readings of s1_co2 in the last 3 s"):
        auto_check("S1", auto, ep)


def test_a_nan_status_says_nothing_and_shapes_must_agree() -> None:
    # the NaN at t = 3 is dropped: the phase still runs 1..4, edge at 5
    (ep,), _ = calibration_episodes(secs(6), [0, 1, 1, math.nan, 1, 0], secs(6), [2.0] * 6)
    assert (ep.t0 - T0, ep.t1 - T0, ep.measured_value) == (1.0, 5.0, 2.0)
    with pytest.raises(InvalidValueError, match="as many times as values"):
        calibration_episodes(secs(3), [0, 1], secs(2), [1.0, 1.0])


def test_the_check_an_episode_records_is_judged_by_the_limits() -> None:
    # span 15 % CO2 at 25 % F.S.: measured 18.0 → (18 − 15) / 25 · 100 = 12 % F.S., beyond
    # the out-of-control index 10 %; measured 15.4 → 1.6 % F.S., within 2.5 %: pass.
    fail = auto_check("S1", SPAN, CalibrationEpisode(T0, T0 + 60, 18.0, 3))
    assert fail.t == datetime(2026, 12, 7, 2, 1, tzinfo=UTC)  # at the falling edge
    assert (fail.kind, fail.parameter, fail.reference_value, fail.full_scale, fail.unit) == (
        "span", "co2", 15.0, 25.0, "%")
    r = judge_check(fail)
    assert r.drift_pct_fs == pytest.approx(12.0, abs=1e-12) and r.status == "out_of_control"
    ok = judge_check(auto_check("S1", SPAN, CalibrationEpisode(T0, T0 + 60, 15.4, 3)))
    assert ok.drift_pct_fs == pytest.approx(1.6, abs=1e-12) and ok.status == "pass"


def test_entry_body_names_the_episode_in_the_document() -> None:
    body = entry_body("S1", "s1_cal", SPAN, CalibrationEpisode(T0, T0 + 60, 18.0, 3))
    assert body == {
        "kind": "qa_check", "source": "S1", "t": "2026-12-07T02:01:00+00:00",
        "check": "span", "parameter": "co2", "reference_value": 15.0, "measured_value": 18.0,
        "full_scale": 25.0, "unit": "%",
        "document": "auto: s1_cal 2026-12-07T02:00:00+00:00–2026-12-07T02:01:00+00:00",
        "reason": "automatic span check: mean of 3 readings of s1_co2 over the last 3 s of "
                  "the phase"}


# ------------------------------------------------------------ the watch over blocks


def arr(x: list[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(x, np.float64)


def test_a_watch_finds_an_episode_split_over_many_blocks_once() -> None:
    # The episode of the first test, one sample per block: found when the edge arrives
    # (with a reading at the edge's time), exactly once, with the same mean 15.4.
    w = CheckWatch("S1", "s1_cal", SPAN)
    status = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    reading = [12.0, 12.0, 13.0, 14.0, 15.0, 15.2, 15.4, 15.6, 12.0, 12.0]
    found: list[tuple[int, CalibrationEpisode]] = []
    for i, (s, r) in enumerate(zip(status, reading, strict=True)):
        t = arr([T0 + i])
        found += [(i, ep) for ep in w.add(t, arr([s]), t, arr([r]))]
    assert len(found) == 1
    i, ep = found[0]
    assert i == 8 and (ep.t0 - T0, ep.t1 - T0, ep.n) == (2.0, 8.0, 3)
    assert ep.measured_value == pytest.approx(15.4, abs=1e-12)


def test_a_watch_waits_for_readings_of_another_device() -> None:
    # The status edge (t = 8) arrives before the readings of t = 5..7, which another
    # device polls: the episode is held until a reading at or after the edge comes.
    w = CheckWatch("S1", "s1_cal", SPAN)
    e: Any = arr([])
    assert w.add(arr([T0 + 2, T0 + 8]), arr([1, 0]), arr([T0 + 2, T0 + 4]), arr([13.0, 15.0])
                 ) == []
    (ep,) = w.add(e, e, arr([T0 + 5, T0 + 6, T0 + 7, T0 + 8]), arr([15.2, 15.4, 15.6, 12.0]))
    assert ep.measured_value == pytest.approx(15.4, abs=1e-12) and ep.n == 3
    assert w.add(arr([T0 + 9]), arr([0]), arr([T0 + 9]), arr([12.0])) == []
    # without a later reading it goes out READING_GRACE_S (5 s) after the edge: at 13 s
    w2 = CheckWatch("S1", "s1_cal", SPAN)
    assert w2.add(arr([T0 + 2, T0 + 8]), arr([1, 0]), arr([T0 + 5, T0 + 6, T0 + 7]),
                  arr([15.0, 16.0, 17.0])) == []
    assert w2.add(arr([T0 + 12]), arr([0]), e, e) == []  # 4 s after the edge: still held
    (ep2,) = w2.add(arr([T0 + 13]), arr([0]), e, e)
    assert (ep2.n, ep2.measured_value) == (3, 16.0)


def test_a_long_calibration_keeps_only_what_its_edge_needs() -> None:
    # 10 000 samples of a stuck status: the watch keeps 2 status samples and the readings
    # of the last average_s (3 s: 4 samples at 1 Hz, t − 3 … t).
    w = CheckWatch("S1", "s1_cal", SPAN)
    for i in range(10_000):
        t = arr([T0 + i])
        assert w.add(t, arr([1]), t, arr([float(i)])) == []
    assert w._st.size == 2 and w._rt.size == 4
    (ep,) = w.add(arr([T0 + 10_000]), arr([0]), arr([T0 + 10_000]), arr([0.0]))
    # window [9997, 10000): 9997, 9998, 9999 → 9998
    assert (ep.t0, ep.n, ep.measured_value) == (T0, 3, 9998.0)


# ----------------------------------------------------------------- configuration


def with_auto(auto: list[dict[str, Any]], cal: str | None = "s1_cal") -> dict[str, Any]:
    d = plant_dict()
    d["devices"][0]["tags"].append({"id": "s1_cal", "register": 30, "sim": {"value": 0.0}})
    qa: dict[str, Any] = {"auto": auto}
    if cal is not None:
        qa["calibration_tag"] = cal
    d["units"][0]["sources"][0]["qa"] = qa
    return d


AUTO = {"parameter": "co2", "check": "span", "reading_tag": "s1_co2", "reference_value": 15.0,
        "full_scale": 25.0, "unit": "%"}


def problems_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml")
    return exc.value.problems


def test_auto_block_parses_with_defaults() -> None:
    cfg = parse_config(with_auto([AUTO, {**AUTO, "check": "zero", "reference_value": 0.0,
                                         "phase_value": 1, "status_tag": "s1_cal"}]), "p.yaml")
    qa = cfg.units[0].sources[0].qa
    assert qa is not None
    span, zero = qa.auto
    assert (span.average_s, span.min_samples, span.phase_value, span.status_tag) == (
        30.0, 3, None, None)
    assert qa.status_tag(span) == "s1_cal" and zero.phase_value == 1


def test_auto_tags_are_checked_to_exist() -> None:
    assert problems_of(with_auto([{**AUTO, "reading_tag": "s1_span"}])) == [
        ("units[0].sources[0].qa.auto[0].reading_tag", "unknown tag 's1_span'")]
    assert problems_of(with_auto([{**AUTO, "status_tag": "s1_status"}])) == [
        ("units[0].sources[0].qa.auto[0].status_tag", "unknown tag 's1_status'")]


def test_bad_auto_checks_name_the_key() -> None:
    assert problems_of(with_auto([AUTO], cal=None)) == [
        ("units[0].sources[0].qa", "auto[0] (co2 span) has no status tag: set "
         "'calibration_tag' or the check's 'status_tag'")]
    assert problems_of(with_auto([AUTO, AUTO])) == [
        ("units[0].sources[0].qa", "auto[1]: a second automatic co2 span check")]
    got = problems_of(with_auto([{**AUTO, "full_scale": 0.0, "parameter": "so2"}]))
    assert [p for p, _ in got] == ["units[0].sources[0].qa.auto[0].parameter",
                                   "units[0].sources[0].qa.auto[0].full_scale"]
    assert problems_of(with_auto([{**AUTO, "phase_value": 0}])) == [
        ("units[0].sources[0].qa.auto[0]", "'phase_value' 0 is the status of no calibration; "
         "give the code of this check's gas, or leave it out for any non-zero")]
    assert problems_of(with_auto([{**AUTO, "settle": 3}])) == [
        ("units[0].sources[0].qa.auto[0].settle", "unknown key")]
