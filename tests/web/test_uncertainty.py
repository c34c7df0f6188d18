"""GET /api/v1/uncertainty on a real web sink with a real historian (issue 15): the CO2
uncertainty of each unit's and the site's total of a stored hour, day and the year to
date, against worked examples done by hand (the plant of tests/server/
test_opcua_uncertainty.py: S1 u² = 4.62, S2 u² = 3.03 and S3 u² = 3.78 (%²), S2 and S3
reading one barometer of u² = 0.03)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from model.records import PeriodRecords
from server.config import parse_config
from server.historian import Historian
from tests.conftest import free_port
from tests.server.test_opcua_uncertainty import DAY_T0, DAY_T1, HOUR_T0, HOUR_T1, _hour
from tests.server.test_opcua_uncertainty import _three_sources as three_sources
from web.app import WebSink


async def _serve(tmp_path: Path, skip: str = "", *, historian: bool = True,
                 ) -> AsyncIterator[tuple[str, Historian | None]]:
    d = three_sources(free_port(), skip)
    d["web"]["port"] = free_port()
    h = Historian(tmp_path / "h.sqlite") if historian else None
    if h is not None:
        await h.start()
        # An hour (11:00 local on 7 Dec 2026): S1 100 t, S2 300 t, S3 200 t.
        await h.on_period(PeriodRecords("hour", HOUR_T0, HOUR_T1, (
            _hour("S1", 100.0), _hour("S2", 300.0), _hour("S3", 200.0)), (), ()))
        # The day before (6 Dec local): S1 2 400 t, S2 without a value, S3 4 800 t.
        await h.on_period(PeriodRecords("day", DAY_T0, DAY_T1, (
            _hour("S1", 2400.0, DAY_T0), _hour("S2", math.nan, DAY_T0),
            _hour("S3", 4800.0, DAY_T0)), (), ()))
    sink = WebSink(parse_config(d, "test_uncertainty"), history=h)
    await sink.start()
    try:
        yield f"http://127.0.0.1:{sink.port}/api/v1/uncertainty", h
    finally:
        await sink.stop()
        if h is not None:
            await h.stop()


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    async for url, _h in _serve(tmp_path):
        yield url


async def _get(url: str, status: int = 200) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        return await r.json()


def _by_unit(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["unit"]: u for u in body["units"]}


async def test_hour(base: str) -> None:
    body = await _get(f"{base}?level=hour&t=2026-12-07T11:20:00%2B08:00")
    assert (body["level"], body["t"], body["t_end"], body["coverage_factor"]) == (
        "hour", "2026-12-07T11:00:00+08:00", "2026-12-07T12:00:00+08:00", 2.0)
    u1, u2 = _by_unit(body)["U1"], _by_unit(body)["U2"]
    # U1: √(100²·4.62 + 300²·3.03) = √318 900 = 564.71232 t·% → 1.4117808 % of 400 t;
    #   expanded 2.8235616 %, 2 · 5.6471232 = 11.2942463 t
    assert u1["co2_t"] == 400.0
    assert u1["co2_rel_uncertainty_pct"] == pytest.approx(1.4117808, abs=1e-7)
    assert u1["co2_rel_expanded_uncertainty_pct"] == pytest.approx(2.8235616, abs=1e-7)
    assert u1["co2_expanded_uncertainty_t"] == pytest.approx(11.2942463, abs=1e-7)
    assert (u1["no_data"], u1["unknown"]) == ([], [])
    assert u2["co2_rel_uncertainty_pct"] == pytest.approx(1.9442222, abs=1e-7)  # √3.78
    # Site: Σ = 473 700 (the barometer once: (300 + 200)²·0.03) → √ = 688.25867 t·%
    #   / 600 t = 1.1470978 %; expanded 2 · 6.8825867 = 13.7651734 t
    site = body["site"]
    assert site["co2_t"] == 600.0
    assert site["co2_rel_uncertainty_pct"] == pytest.approx(1.1470978, abs=1e-7)
    assert site["co2_expanded_uncertainty_t"] == pytest.approx(13.7651734, abs=1e-7)
    by_source = {s["source"]: s for s in body["sources"]}
    assert by_source["S1"]["co2_rel_uncertainty_pct"] == pytest.approx(2.1494185, abs=1e-7)
    assert by_source["S2"]["co2_t"] == 300.0


async def test_day_with_a_source_without_data(base: str) -> None:
    body = await _get(f"{base}?level=day&t=2026-12-06T15:00:00%2B08:00")
    assert (body["t"], body["t_end"]) == ("2026-12-06T00:00:00+08:00",
                                          "2026-12-07T00:00:00+08:00")
    u1 = _by_unit(body)["U1"]
    # S2 has no value: U1 is S1's 2 400 t alone, S1's 2.1494185 %.
    assert (u1["co2_t"], u1["no_data"]) == (2400.0, ["S2"])
    assert u1["co2_rel_uncertainty_pct"] == pytest.approx(2.1494185, abs=1e-7)
    # Site: 2 400²·4.62 + 4 800²·3.78 = 113 702 400 → √ = 10 663.133 / 7 200 = 1.4809907 %
    assert body["site"]["co2_t"] == 7200.0 and body["site"]["no_data"] == ["S2"]
    assert body["site"]["co2_rel_uncertainty_pct"] == pytest.approx(1.4809907, abs=1e-7)


async def test_year_to_date(base: str) -> None:
    # At 12:30 on 7 Dec: the day of 6 Dec and the hour 11:00-12:00 of 7 Dec.
    #   S1 2 500 t, S2 300 t, S3 5 000 t
    body = await _get(f"{base}?level=year&t=2026-12-07T12:30:00%2B08:00")
    assert (body["t"], body["t_end"]) == ("2026-01-01T00:00:00+08:00",
                                          "2026-12-07T12:00:00+08:00")
    u1 = _by_unit(body)["U1"]
    # U1: √(2 500²·4.62 + 300²·3.03) = √(28 875 000 + 272 700) = 5 398.861 / 2 800
    #   = 1.9281646 %
    assert u1["co2_t"] == 2800.0 and u1["no_data"] == []
    assert u1["co2_rel_uncertainty_pct"] == pytest.approx(1.9281646, abs=1e-7)
    # Site: 28 875 000 + 90 000·(1.08 + 1.92) + 25·10⁶·(0.75 + 3) + 5 300²·0.03
    #   = 28 875 000 + 270 000 + 93 750 000 + 842 700 = 123 737 700 → √ = 11 123.745
    #   / 7 800 = 1.4261211 %
    assert body["site"]["co2_t"] == 7800.0
    assert body["site"]["co2_rel_uncertainty_pct"] == pytest.approx(1.4261211, abs=1e-7)
    # Before the hour was complete (11:59): the day only.
    early = await _get(f"{base}?level=year&t=2026-12-07T11:59:00%2B08:00")
    assert early["site"]["co2_t"] == 7200.0


async def test_nothing_stored_and_bad_requests(base: str) -> None:
    body = await _get(f"{base}?level=hour&t=2026-12-07T09:00:00%2B08:00")
    assert body["site"]["co2_t"] is None and body["site"]["co2_rel_uncertainty_pct"] is None
    assert body["site"]["no_data"] == ["S1", "S2", "S3"]
    assert (await _get(f"{base}?level=month", 400))["error"].startswith(
        "query parameter 'level' must be one of")
    assert "query parameter 't'" in (await _get(f"{base}?t=yesterday", 400))["error"]
    # Without t: the last complete hour (nothing stored for it here), an answer all the same.
    assert (await _get(base))["level"] == "hour"


async def test_unknown_instrument(tmp_path: Path) -> None:
    async for url, _h in _serve(tmp_path, skip="s3_velocity"):
        body = await _get(f"{url}?level=hour&t=2026-12-07T11:00:00%2B08:00")
        u1, u2 = _by_unit(body)["U1"], _by_unit(body)["U2"]
        assert u1["co2_rel_uncertainty_pct"] == pytest.approx(1.4117808, abs=1e-7)
        assert (u2["co2_t"], u2["unknown"], u2["co2_rel_uncertainty_pct"],
                u2["co2_expanded_uncertainty_t"]) == (200.0, ["S3"], None, None)
        assert (body["site"]["unknown"], body["site"]["co2_rel_uncertainty_pct"]) == (
            ["S3"], None)


async def test_no_historian(tmp_path: Path) -> None:
    async for url, _h in _serve(tmp_path, historian=False):
        assert (await _get(f"{url}?level=day", 503))["error"].startswith("no historian")
