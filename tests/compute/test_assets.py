"""Carbon assets, the pure part (compute/assets.py): holdings, the compliance position,
the year-end forecast and the monthly trend, against numbers worked out by hand (issue 17)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from compute.assets import (
    AssetEntry,
    CarbonConfig,
    Forecast,
    forecast_year_end,
    holdings,
    monthly_trend,
    position,
)

NA = "national_allowance"
CFG = CarbonConfig()  # 5 % offset limit, deadline 12-31 of the next year, 0.5703 t/MWh
TODAY = date(2026, 12, 1)


def entry(id_: int, kind: str, q: float, *, inst: str = NA, side: str = "",
          price: float = math.nan, year: int = 2025, reverses: int | None = None,
          day: int = 0) -> AssetEntry:
    return AssetEntry(id_, kind, datetime(2025, 3, 1, tzinfo=UTC) + timedelta(days=day or id_),
                      year, inst, q, side, price, "", None, reverses, "", "u", "")


def worked_year() -> list[AssetEntry]:
    """An allocation, two purchases, a sale, a CCER purchase above the limit, a price."""
    return [
        entry(1, "allocation", 950_000.0, side="final"),
        entry(2, "trade", 20_000.0, side="buy", price=80.0),
        entry(3, "trade", 10_000.0, side="buy", price=85.0),
        entry(4, "trade", 5_000.0, side="sell", price=90.0),
        entry(5, "acquisition", 60_000.0, inst="ccer", price=40.0),
        entry(6, "price", math.nan, price=92.0, day=120),  # the latest price
    ]


def flat(t: float) -> Forecast:
    return Forecast(t, t, t, 0.0, 0)


def test_worked_example_surplus() -> None:
    # allowances: 950 000 + 20 000 + 10 000 − 5 000 = 975 000 t
    # offsets eligible: min(60 000, 5 % · 1 000 000 = 50 000) = 50 000 t
    # balance: 975 000 + 50 000 − 1 000 000 = +25 000 t → surplus 25 000, deficit 0
    # value of the holdings at the latest price 92: 975 000 · 92 = 89 700 000 CNY
    p = position(worked_year(), 2025, 1_000_000.0, "verified", flat(1_000_000.0), CFG, TODAY)
    assert p.allowances_t == 975_000.0
    assert p.offsets_held_t == 60_000.0
    assert p.offsets_eligible_t == 50_000.0
    assert p.surplus_t == 25_000.0 and p.deficit_t == 0.0
    assert p.price_cny_t == 92.0 and p.price_t == datetime(2025, 6, 29, tzinfo=UTC)
    assert p.deficit_cost_cny == 0.0
    assert p.holdings_value_cny == 89_700_000.0
    assert p.surrender_deadline == date(2026, 12, 31) and p.days_to_deadline == 30.0
    assert p.emissions_basis == "verified"


def test_worked_example_deficit() -> None:
    # emissions 1 100 000 t: the limit is 5 % · 1 100 000 = 55 000 t of the 60 000 t CCER
    # balance: 975 000 + 55 000 − 1 100 000 = −70 000 t → deficit 70 000 t
    # cost of closing it at 92 CNY/t: 70 000 · 92 = 6 440 000 CNY
    p = position(worked_year(), 2025, 1_100_000.0, "live", flat(1_100_000.0), CFG, TODAY)
    assert p.offsets_eligible_t == 55_000.0
    assert p.surplus_t == 0.0 and p.deficit_t == 70_000.0
    assert p.deficit_cost_cny == 6_440_000.0
    assert p.forecast_deficit_t == 70_000.0  # the forecast is the same 1 100 000 t


def test_forecast_deficit_uses_the_limit_of_the_forecast() -> None:
    # live so far 800 000 t (surplus now), forecast 1 200 000 t: eligible at year end
    # min(60 000, 5 % · 1 200 000 = 60 000) = 60 000 → 1 200 000 − 975 000 − 60 000 = 165 000
    f = Forecast(1_200_000.0, 1_150_000.0, 1_250_000.0, 1000.0, 30)
    p = position(worked_year(), 2025, 800_000.0, "live", f, CFG, TODAY)
    assert p.deficit_t == 0.0 and p.surplus_t == 975_000.0 + 40_000.0 - 800_000.0
    assert p.forecast_deficit_t == 165_000.0
    assert (p.forecast_year_end_t, p.forecast_low_t, p.forecast_high_t) == (
        1_200_000.0, 1_150_000.0, 1_250_000.0)


def test_surrender_reduces_holdings_not_the_balance() -> None:
    # surrender 900 000 allowances and 50 000 CCER for 2025: held 75 000 and 10 000 t;
    # the CCER surrendered use up the 50 000 t limit, so none held is eligible any more;
    # counted as surrendered 900 000 + 50 000 = 950 000; balance 75 000 + 0 + 950 000 −
    # 1 000 000 = +25 000 (unchanged)
    es = [*worked_year(), entry(7, "surrender", 900_000.0),
          entry(8, "surrender", 50_000.0, inst="ccer")]
    h = holdings(es, 2025)
    assert h[NA].held_t == 75_000.0 and h[NA].surrendered_t == 900_000.0
    assert h["ccer"].held_t == 10_000.0
    p = position(es, 2025, 1_000_000.0, "verified", flat(1_000_000.0), CFG, TODAY)
    assert p.allowances_t == 75_000.0
    assert p.offsets_eligible_t == 0.0
    assert p.surrendered_t == 950_000.0
    assert p.surplus_t == 25_000.0


def test_a_reversed_entry_and_its_reversal_count_nothing() -> None:
    # the sale of 5 000 t reversed: 980 000 t held, surplus 30 000 t
    es = [*worked_year(), entry(7, "reversal", math.nan, year=2025, reverses=4)]
    h = holdings(es, 2025)[NA]
    assert (h.sold_t, h.held_t) == (0.0, 980_000.0)
    p = position(es, 2025, 1_000_000.0, "verified", flat(1_000_000.0), CFG, TODAY)
    assert p.surplus_t == 30_000.0


def test_final_allocation_replaces_the_pre_allocation_adjustments_add() -> None:
    # pre 700 000, then final 950 000 (not 1 650 000), then +10 000 adjustment
    es = [entry(1, "allocation", 700_000.0, side="pre"),
          entry(2, "allocation", 950_000.0, side="final"),
          entry(3, "allocation", 10_000.0, side="adjustment"),
          entry(4, "allocation", 5.0, side="final", year=2024),  # another year
          entry(5, "transfer", 1_000.0, side="out")]
    h = holdings(es, 2025)[NA]
    assert h.allocated_t == 960_000.0 and h.transferred_out_t == 1_000.0
    assert h.held_t == 959_000.0
    assert holdings(es, 2024)[NA].held_t == 5.0


def test_reductions_kept_apart_from_compliance() -> None:
    # renewable 1 000 MWh · 0.5703 = 570.3 t; green certificates 200 MWh · 0.5703 = 114.06 t;
    # CCUS 300 t → 984.36 t; net 1 000 000 − 984.36 = 999 015.64 t; the balance unchanged
    es = [*worked_year(), entry(7, "reduction", 1000.0, inst="", side="renewable_mwh"),
          entry(8, "reduction", 200.0, inst="", side="green_certificate_mwh"),
          entry(9, "reduction", 300.0, inst="", side="ccus_t")]
    p = position(es, 2025, 1_000_000.0, "verified", flat(1_000_000.0), CFG, TODAY)
    assert p.renewable_avoided_t == pytest.approx(570.3, abs=1e-9)
    assert p.green_certificate_avoided_t == pytest.approx(114.06, abs=1e-9)
    assert p.ccus_t == 300.0
    assert p.reductions_t == pytest.approx(984.36, abs=1e-9)
    assert p.net_emissions_t == pytest.approx(999_015.64, abs=1e-6)
    assert p.surplus_t == 25_000.0


def test_no_price_means_no_cost() -> None:
    es = [entry(1, "allocation", 100.0, side="final")]
    p = position(es, 2025, 200.0, "live", flat(200.0), CFG, TODAY)
    assert p.deficit_t == 100.0 and math.isnan(p.price_cny_t) and p.price_t is None
    assert math.isnan(p.deficit_cost_cny)


def test_forecast_interval_on_a_hand_made_series() -> None:
    # daily 90, 110, 90, 110: mean 100 t/d; s² = (4 · 10²) / 3 = 133.33
    # year end = 400 + 100 · 10 = 1 400 t
    # var = s² · (10 + 10² / 4) = 133.33 · 35 = 4 666.67; sd 68.313; 1.96 · sd = 133.891
    f = forecast_year_end([90.0, 110.0, 90.0, 110.0], 400.0, 10.0, window_d=30)
    assert (f.central_t, f.rate_t_d, f.window_d) == (1400.0, 100.0, 4)
    assert f.low_t == pytest.approx(1266.109, abs=1e-3)
    assert f.high_t == pytest.approx(1533.891, abs=1e-3)
    # the window keeps the last 2 (NaN skipped): 90, 110 → s² 200, var 200 · (10 + 50)
    # = 12 000, sd 109.545, half 214.704
    g = forecast_year_end([5.0, 90.0, math.nan, 110.0], 400.0, 10.0, window_d=2)
    assert g.central_t == 1400.0 and g.window_d == 2
    assert g.high_t - g.central_t == pytest.approx(214.704, abs=1e-3)
    # the low end never below the year to date; no days left: no spread
    h = forecast_year_end([0.0, 200.0], 400.0, 1.0)
    assert h.low_t == 400.0
    assert forecast_year_end([90.0, 110.0], 400.0, 0.0) == Forecast(400.0, 400.0, 400.0,
                                                                     100.0, 2)


def test_monthly_trend() -> None:
    # January 31 days · 10 t = 310 t, February 28 days · 20 t = 560 t (2025: no leap day)
    # allowance 3 650 t prorated: Jan 3 650 · 31/365 = 310 (gap 0), Feb · 59/365 = 590
    # (cumulative 870: gap −280), December 3 650 (gap 3 650 − 870 = 2 780)
    days = [(date(2025, 1, d), 10.0) for d in range(1, 32)]
    days += [(date(2025, 2, d), 20.0) for d in range(1, 29)]
    days.append((date(2024, 12, 31), 999.0))  # another year: ignored
    rows = monthly_trend(days, 3650.0, 2025)
    assert len(rows) == 12
    assert {k: v for k, v in rows[0].items() if not k.startswith(("intensity", "output"))} == {
        "month": 1.0, "emissions_t": 310.0, "cumulative_t": 310.0,
        "allowance_prorated_t": 310.0, "gap_t": 0.0, "days": 31.0}
    assert rows[1]["cumulative_t"] == 870.0 and rows[1]["allowance_prorated_t"] == 590.0
    assert rows[1]["gap_t"] == -280.0
    assert rows[11]["allowance_prorated_t"] == 3650.0 and rows[11]["gap_t"] == 2780.0


def test_config_deadline_checked() -> None:
    with pytest.raises(ValueError, match="surrender_deadline"):
        CarbonConfig(surrender_deadline="13-01")
    assert CarbonConfig(surrender_deadline="06-30").offset_limit_pct == 5.0


def test_monthly_trend_shows_the_intensity_against_the_target() -> None:
    from compute.assets import monthly_trend
    # January: 31 days of 100 t and 125 MWh: 3 100 t / 3 875 MWh = 0.8 t/MWh, against a
    # target of 0.85 t/MWh: 0.05 below it. February: emissions but no output: no intensity.
    jan = [date(2026, 1, d) for d in range(1, 32)]
    days = [(d, 100.0) for d in jan] + [(date(2026, 2, 1), 50.0)]
    out = [(d, 125.0) for d in jan]
    trend = monthly_trend(days, 36_500.0, 2026, out, 0.85)
    m1, m2 = trend[0], trend[1]
    assert (m1["emissions_t"], m1["output_mwh"]) == (3_100.0, 3_875.0)
    assert m1["intensity_t_mwh"] == pytest.approx(0.8, rel=1e-15)
    assert m1["intensity_gap_t_mwh"] == pytest.approx(-0.05, rel=1e-12)
    assert m1["intensity_target_t_mwh"] == 0.85
    assert math.isnan(m2["intensity_t_mwh"]) and math.isnan(m2["intensity_gap_t_mwh"])
    # 36 500 t a year prorated to 31 January: 36 500 · 31 / 365 = 3 100 t, gap 0
    assert m1["allowance_prorated_t"] == pytest.approx(3_100.0, rel=1e-15)
    assert m1["gap_t"] == pytest.approx(0.0, abs=1e-9)
    # without a target the gap is NaN, the intensity still there
    assert math.isnan(monthly_trend(days, 0.0, 2026, out)[0]["intensity_gap_t_mwh"])
