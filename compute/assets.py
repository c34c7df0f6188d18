"""Carbon assets: the configuration, the ledger entry, holdings, the compliance position,
the year-end forecast and the monthly trend. Pure: no I/O (server/assets.py keeps the
ledger and reads the stored emissions).

Holdings per instrument and compliance year derive from the entries; nothing is stored
twice. A reversed entry and the reversal itself both count nothing.

The compliance balance of a year is

    allowances held + eligible offsets held + surrendered − emissions

where "surrendered" is what was already handed in for that year (allowances, and offsets
up to the limit) — a surrender moves tonnes from "held" to "surrendered" and leaves the
balance unchanged. Offsets (CCER, other certified reductions) count up to
`offset_limit_pct` of the year's emissions, the national market's rule (5 % by default),
surrendered offsets first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from model.schema import ConfigModel

Instrument = Literal["national_allowance", "local_allowance", "ccer", "other_offset"]
INSTRUMENTS: tuple[str, ...] = ("national_allowance", "local_allowance", "ccer", "other_offset")
ALLOWANCES: tuple[str, ...] = ("national_allowance", "local_allowance")
OFFSETS: tuple[str, ...] = ("ccer", "other_offset")
KINDS: tuple[str, ...] = ("allocation", "acquisition", "trade", "surrender", "transfer",
                          "price", "reduction", "verified", "reversal")
REDUCTION_SIDES: tuple[str, ...] = ("renewable_mwh", "green_certificate_mwh", "ccus_t")
# The one header of the carbon ledger's CSV, export and import (server/assets.py).
CSV_HEADER: tuple[str, ...] = ("id", "kind", "t", "year", "instrument", "quantity_t", "side",
                               "price_cny_t", "counterparty", "vintage", "reverses",
                               "document", "user", "reason")

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


class CarbonConfig(ConfigModel):
    """Carbon assets of the plant file (`carbon:`): offset limit, deadline, grid factor."""

    offset_limit_pct: float = Field(5.0, ge=0, le=100)  # of the year's emissions
    surrender_deadline: str = "12-31"  # MM-DD of the year after the compliance year
    grid_factor_tco2_mwh: float = Field(0.5703, ge=0)  # avoided t CO2 per MWh renewable
    renewable_tag: str | None = None  # meter of renewable generation (MWh counter / MW)
    forecast_window_d: int = Field(30, ge=1, le=366)
    # The site's intensity target (t CO2/MWh), e.g. the benchmark its allocation is computed
    # from; the monthly trend shows the intensity against it. None: no target.
    intensity_target_t_mwh: float | None = Field(None, gt=0)

    @field_validator("surrender_deadline")
    @classmethod
    def _month_day(cls, v: str) -> str:
        try:
            month, day = (int(x) for x in v.split("-"))
            date(2024, month, day)  # a leap year: 02-29 is a valid deadline
        except ValueError:
            raise ValueError(f"surrender_deadline {v!r} is not MM-DD") from None
        return v


@dataclass(frozen=True, slots=True)
class AssetEntry:
    """One carbon-ledger entry (server/assets.py keeps them, append-only)."""

    id: int
    kind: str  # one of KINDS
    t: datetime  # UTC: trade date, allocation date, price date …
    year: int  # compliance year
    instrument: str  # one of INSTRUMENTS, "" when n/a
    quantity_t: float  # > 0 (MWh for renewable and green-certificate reductions); NaN: price
    side: str  # buy/sell, in/out, pre/final/adjustment, reduction kind, "" otherwise
    price_cny_t: float  # NaN if none
    counterparty: str
    vintage: int | None  # of an offset
    reverses: int | None  # the entry a reversal undoes
    document: str
    user: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (NaN as null, time ISO 8601 UTC)."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x
        return {"id": self.id, "kind": self.kind, "t": self.t.isoformat(), "year": self.year,
                "instrument": self.instrument, "quantity_t": num(self.quantity_t),
                "side": self.side, "price_cny_t": num(self.price_cny_t),
                "counterparty": self.counterparty, "vintage": self.vintage,
                "reverses": self.reverses, "document": self.document, "user": self.user,
                "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Holding:
    """Tonnes of one instrument for one compliance year, by movement, and what is held."""

    instrument: str
    allocated_t: float
    bought_t: float  # trades bought and acquisitions
    sold_t: float
    transferred_in_t: float
    transferred_out_t: float
    surrendered_t: float
    held_t: float  # allocated + bought − sold + in − out − surrendered


def reversed_ids(entries: Sequence[AssetEntry]) -> set[int]:
    """Ids of the entries a reversal undoes."""
    return {e.reverses for e in entries if e.kind == "reversal" and e.reverses is not None}


def effective(entries: Sequence[AssetEntry]) -> list[AssetEntry]:
    """The entries that count: neither reversed nor a reversal."""
    gone = reversed_ids(entries)
    return [e for e in entries if e.kind != "reversal" and e.id not in gone]


def holdings(entries: Sequence[AssetEntry], year: int) -> dict[str, Holding]:
    """Holdings per instrument of one compliance year (every instrument, zeros included).

    Allocation: the latest `final` replaces the `pre` allocations before it, adjustments
    add (a recovery by the authority is a transfer out).
    """
    out: dict[str, Holding] = {}
    live = [e for e in effective(entries) if e.year == year]
    for inst in INSTRUMENTS:
        mine = [e for e in live if e.instrument == inst]
        pre = final = adjust = bought = sold = t_in = t_out = surrendered = 0.0
        have_final = False
        for e in sorted(mine, key=lambda x: (x.t, x.id)):
            q = e.quantity_t
            if e.kind == "allocation":
                if e.side == "final":
                    final, have_final, pre = q, True, 0.0
                elif e.side == "pre":
                    pre += q
                else:
                    adjust += q
            elif e.kind == "acquisition" or (e.kind == "trade" and e.side == "buy"):
                bought += q
            elif e.kind == "trade" and e.side == "sell":
                sold += q
            elif e.kind == "transfer":
                if e.side == "in":
                    t_in += q
                else:
                    t_out += q
            elif e.kind == "surrender":
                surrendered += q
        allocated = (final if have_final else 0.0) + pre + adjust
        held = allocated + bought - sold + t_in - t_out - surrendered
        out[inst] = Holding(inst, allocated, bought, sold, t_in, t_out, surrendered, held)
    return out


@dataclass(frozen=True, slots=True)
class Forecast:
    """Year-end emissions forecast: central value, 95 % interval, trailing rate."""

    central_t: float
    low_t: float
    high_t: float
    rate_t_d: float  # mean of the trailing daily values
    window_d: int  # how many daily values the rate is the mean of


def forecast_year_end(daily_t: Sequence[float], ytd_t: float, days_left: float,
                      window_d: int = 30) -> Forecast:
    """Year end = ytd + rate · days_left, rate the mean of the last `window_d` daily values.

    Interval (95 %): the remaining days are taken as independent draws around the trailing
    mean with the trailing days' sample standard deviation s (n values), so the sum of the
    rest has variance s² · (days_left + days_left² / n): the days' own scatter plus the
    uncertainty of the mean itself. central ± 1.96 · √that, the low end never below the
    year to date. Non-finite daily values are skipped; fewer than two values: no spread.
    """
    tail = [float(x) for x in daily_t if math.isfinite(x)][-window_d:] if window_d > 0 else []
    n = len(tail)
    days_left = max(0.0, float(days_left))
    rate = sum(tail) / n if n else 0.0
    central = ytd_t + rate * days_left
    if n >= 2:
        s2 = sum((x - rate) ** 2 for x in tail) / (n - 1)
        half = Z95 * math.sqrt(s2 * (days_left + days_left * days_left / n))
    else:
        half = 0.0
    return Forecast(central, max(ytd_t, central - half), central + half, rate, n)


@dataclass(frozen=True, slots=True)
class CompliancePosition:
    """One compliance year's position: emissions vs allowances and eligible offsets."""

    year: int
    emissions_t: float
    emissions_basis: str  # "verified" | "live"
    allowances_t: float  # national + local allowances held for the year
    offsets_held_t: float  # CCER + other offsets held for the year
    offset_limit_pct: float
    offsets_eligible_t: float  # what of the held offsets may still count
    surplus_t: float  # ≥ 0
    deficit_t: float  # ≥ 0
    price_cny_t: float  # latest price, NaN if none
    price_t: datetime | None
    deficit_cost_cny: float
    holdings_value_cny: float  # allowances_t · price
    forecast_year_end_t: float
    forecast_low_t: float
    forecast_high_t: float
    forecast_deficit_t: float
    surrendered_t: float  # counted for the year: allowances, offsets up to the limit
    surrender_deadline: date
    days_to_deadline: float  # negative once passed
    reductions_t: float  # renewable avoided + green certificates + CCUS (not compliance)
    net_emissions_t: float  # emissions − reductions (not used for compliance)
    renewable_mwh: float = 0.0  # entered and metered renewable generation
    renewable_avoided_t: float = 0.0
    green_certificate_avoided_t: float = 0.0
    ccus_t: float = 0.0
    forecast_rate_t_d: float = 0.0
    holdings: tuple[Holding, ...] = ()


def latest_price(entries: Sequence[AssetEntry]) -> tuple[float, datetime | None]:
    """The latest allowance price: of `price` entries, else of trades with a price; (NaN,
    None) if none. Latest by time, then by entry order. Prices are not per year."""
    live = effective(entries)
    prices = [e for e in live if e.kind == "price" and e.instrument in (*ALLOWANCES, "")]
    trades = [e for e in live if e.kind == "trade" and e.instrument in ALLOWANCES]
    for chosen in (prices, trades):
        priced = [e for e in chosen if math.isfinite(e.price_cny_t)]
        if priced:
            best = max(priced, key=lambda e: (e.t, e.id))
            return best.price_cny_t, best.t
    return math.nan, None


def deadline_of(year: int, cfg: CarbonConfig) -> date:
    """The surrender deadline of a compliance year (MM-DD of the year after; 02-29 of a
    common year falls back to 02-28)."""
    month, day = (int(x) for x in cfg.surrender_deadline.split("-"))
    try:
        return date(year + 1, month, day)
    except ValueError:
        return date(year + 1, month, 28)


def _eligible(held_t: float, surrendered_t: float, limit_t: float) -> tuple[float, float]:
    """(held offsets still eligible, surrendered offsets counted) under the limit."""
    counted = min(surrendered_t, limit_t)
    return max(0.0, min(held_t, limit_t - counted)), counted


def position(entries: Sequence[AssetEntry], year: int, emissions_t: float, basis: str,
             forecast: Forecast, cfg: CarbonConfig, today: date, *,
             renewable_metered_mwh: float = 0.0) -> CompliancePosition:
    """The compliance position of `year` from the ledger and the year's emissions."""
    h = holdings(entries, year)
    allowances = math.fsum(h[i].held_t for i in ALLOWANCES)
    offsets = math.fsum(h[i].held_t for i in OFFSETS)
    surr_allow = math.fsum(h[i].surrendered_t for i in ALLOWANCES)
    surr_off = math.fsum(h[i].surrendered_t for i in OFFSETS)
    share = cfg.offset_limit_pct / 100.0
    eligible, counted = _eligible(offsets, surr_off, share * max(emissions_t, 0.0))
    surrendered = surr_allow + counted
    balance = allowances + eligible + surrendered - emissions_t
    f_eligible, f_counted = _eligible(offsets, surr_off, share * max(forecast.central_t, 0.0))
    f_deficit = max(0.0, forecast.central_t - allowances - f_eligible - surr_allow - f_counted)
    price, price_t = latest_price(entries)
    deficit = max(0.0, -balance)
    reds = [e for e in effective(entries) if e.kind == "reduction" and e.year == year]
    renewable = renewable_metered_mwh + math.fsum(e.quantity_t for e in reds
                                            if e.side == "renewable_mwh")
    green = math.fsum(e.quantity_t for e in reds if e.side == "green_certificate_mwh")
    ccus = math.fsum(e.quantity_t for e in reds if e.side == "ccus_t")
    renewable_t = renewable * cfg.grid_factor_tco2_mwh
    green_t = green * cfg.grid_factor_tco2_mwh
    reductions = renewable_t + green_t + ccus
    deadline = deadline_of(year, cfg)
    return CompliancePosition(
        year=year, emissions_t=emissions_t, emissions_basis=basis, allowances_t=allowances,
        offsets_held_t=offsets, offset_limit_pct=cfg.offset_limit_pct,
        offsets_eligible_t=eligible, surplus_t=max(0.0, balance), deficit_t=deficit,
        price_cny_t=price, price_t=price_t, deficit_cost_cny=deficit * price,
        holdings_value_cny=allowances * price, forecast_year_end_t=forecast.central_t,
        forecast_low_t=forecast.low_t, forecast_high_t=forecast.high_t,
        forecast_deficit_t=f_deficit, surrendered_t=surrendered, surrender_deadline=deadline,
        days_to_deadline=float((deadline - today).days), reductions_t=reductions,
        net_emissions_t=emissions_t - reductions, renewable_mwh=renewable,
        renewable_avoided_t=renewable_t, green_certificate_avoided_t=green_t, ccus_t=ccus,
        forecast_rate_t_d=forecast.rate_t_d, holdings=tuple(h.values()))


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def position_json(p: CompliancePosition) -> dict[str, Any]:
    """The position as JSON: every field named with its unit (NaN as null, ISO dates)."""
    return {
        "year": p.year, "emissions_t": _num(p.emissions_t), "emissions_basis": p.emissions_basis,
        "allowances_t": p.allowances_t, "offsets_held_t": p.offsets_held_t,
        "offset_limit_pct": p.offset_limit_pct, "offsets_eligible_t": p.offsets_eligible_t,
        "surplus_t": p.surplus_t, "deficit_t": p.deficit_t, "price_cny_t": _num(p.price_cny_t),
        "price_t": None if p.price_t is None else p.price_t.isoformat(),
        "deficit_cost_cny": _num(p.deficit_cost_cny),
        "holdings_value_cny": _num(p.holdings_value_cny),
        "forecast_year_end_t": _num(p.forecast_year_end_t),
        "forecast_low_t": _num(p.forecast_low_t), "forecast_high_t": _num(p.forecast_high_t),
        "forecast_deficit_t": _num(p.forecast_deficit_t),
        "forecast_rate_t_d": _num(p.forecast_rate_t_d), "surrendered_t": p.surrendered_t,
        "surrender_deadline": p.surrender_deadline.isoformat(),
        "days_to_deadline_d": p.days_to_deadline, "reductions_t": p.reductions_t,
        "renewable_mwh": p.renewable_mwh, "renewable_avoided_t": p.renewable_avoided_t,
        "green_certificate_avoided_t": p.green_certificate_avoided_t, "ccus_t": p.ccus_t,
        "net_emissions_t": _num(p.net_emissions_t),
        "holdings": [{"instrument": h.instrument, "allocated_t": h.allocated_t,
                      "bought_t": h.bought_t, "sold_t": h.sold_t,
                      "transferred_in_t": h.transferred_in_t,
                      "transferred_out_t": h.transferred_out_t,
                      "surrendered_t": h.surrendered_t, "held_t": h.held_t}
                     for h in p.holdings],
    }


def _days_in_year(year: int) -> int:
    return (date(year + 1, 1, 1) - date(year, 1, 1)).days


def monthly_trend(days: Sequence[tuple[date, float]], allowances_t: float,
                  year: int, outputs: Sequence[tuple[date, float]] = (),
                  intensity_target_t_mwh: float | None = None) -> list[dict[str, float]]:
    """Per month 1..12: emissions, cumulative, the allowance prorated by calendar days to
    the month's end, and gap_t = prorated allowance − cumulative (positive: headroom).
    Days of other years are ignored; `days` is the count of daily values in the month.
    With `outputs` (the days' MWh): the month's output_mwh, intensity_t_mwh = emissions /
    output (NaN without output) and, with a target, intensity_gap_t_mwh = intensity −
    target (positive: above the target)."""
    per = [0.0] * 12
    count = [0] * 12
    mwh = [0.0] * 12
    for d, value in days:
        if d.year == year and math.isfinite(value):
            per[d.month - 1] += value
            count[d.month - 1] += 1
    for d, value in outputs:
        if d.year == year and math.isfinite(value):
            mwh[d.month - 1] += value
    target = math.nan if intensity_target_t_mwh is None else intensity_target_t_mwh
    total_days = _days_in_year(year)
    out: list[dict[str, float]] = []
    cumulative = 0.0
    for m in range(1, 13):
        cumulative += per[m - 1]
        end = date(year + 1, 1, 1) if m == 12 else date(year, m + 1, 1)
        elapsed = (end - date(year, 1, 1)).days
        prorated = allowances_t * elapsed / total_days
        intensity = per[m - 1] / mwh[m - 1] if mwh[m - 1] > 0 else math.nan
        out.append({"month": float(m), "emissions_t": per[m - 1], "cumulative_t": cumulative,
                    "allowance_prorated_t": prorated, "gap_t": prorated - cumulative,
                    "days": float(count[m - 1]), "output_mwh": mwh[m - 1],
                    "intensity_t_mwh": intensity, "intensity_target_t_mwh": target,
                    "intensity_gap_t_mwh": intensity - target})
    return out
