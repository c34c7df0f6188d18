"""The carbon-asset keeper: the ledger of allocations, trades, offsets, surrenders,
transfers, prices, reductions and verified emissions, and the compliance position.

The ledger is the `carbon_entry` table of the historian's SQLite file, append-only
(triggers refuse UPDATE and DELETE, like server/ledger.py and the audit log): a wrong
entry is undone by a `reversal` entry naming it, never changed. Every entry is checked
(quantities > 0, prices ≥ 0, sane years, a sale, transfer out or surrender never more
than is held of that instrument and year, a reversal of an existing entry not reversed
yet) and audited (action `carbon_<kind>`, target `carbon:<id>`).

Holdings and the position derive from the entries (compute/assets.py); the live emissions
of a year are its stored days plus the stored hours after the last stored day (today's),
replaced by the year's `verified` entry when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from compute.assets import (
    CSV_HEADER,
    INSTRUMENTS,
    KINDS,
    OFFSETS,
    AssetEntry,
    CarbonConfig,
    CompliancePosition,
    Forecast,
    effective,
    forecast_year_end,
    holdings,
    monthly_trend,
    position,
    reversed_ids,
)
from compute.assets import position_json as position_json  # JSON of a position, for sinks
from compute.clock import PlantClock
from model.errors import CarbonScadaError, ConfigError, InvalidValueError
from model.records import PeriodRecords
from model.times import MAX_YEAR, MIN_YEAR
from server.audit import AuditLog
from server.config import Plant
from server.historian import Historian, read_only
from server.tablefile import TableFile

EPS_T = 1e-9  # tonnes: what "more than held" tolerates of float sums
# A renewable meter's tag unit: (MWh per unit, a counter?); rates are per hour.
RENEWABLE_UNITS: dict[str, tuple[float, bool]] = {
    "MW": (1.0, False), "kW": (1e-3, False), "MWh": (1.0, True), "kWh": (1e-3, True)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS carbon_entry (
  id INTEGER PRIMARY KEY AUTOINCREMENT, entered_ms INTEGER NOT NULL, user TEXT NOT NULL,
  kind TEXT NOT NULL, t_ms INTEGER NOT NULL, year INTEGER NOT NULL, instrument TEXT NOT NULL,
  quantity_t REAL, side TEXT NOT NULL, price_cny_t REAL, counterparty TEXT NOT NULL,
  vintage INTEGER, reverses INTEGER, document TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS carbon_entry_no_update BEFORE UPDATE ON carbon_entry
BEGIN SELECT RAISE(ABORT, 'the carbon ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS carbon_entry_no_delete BEFORE DELETE ON carbon_entry
BEGIN SELECT RAISE(ABORT, 'the carbon ledger is append-only'); END;
"""
_COLUMNS = ("id, entered_ms, user, kind, t_ms, year, instrument, quantity_t, side, "
            "price_cny_t, counterparty, vintage, reverses, document, reason")

log = logging.getLogger(__name__)



class AssetsError(InvalidValueError):
    """A carbon-ledger entry or import is refused: names the field (or line and column)."""


class AssetsFileError(CarbonScadaError):
    """The carbon ledger's file cannot be read or written; names the file."""


# ------------------------------------------------------------------ what may be entered


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    t: AwareDatetime | None = None  # when it happened; default: now
    document: str = ""
    reason: str = ""


Year = Annotated[int, Field(ge=MIN_YEAR, le=MAX_YEAR)]
Tonnes = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class AllocationIn(_In):
    """Allowances allocated for a compliance year: pre-allocation, final, adjustment."""

    kind: Literal["allocation"]
    year: Year
    instrument: Literal["national_allowance", "local_allowance"] = "national_allowance"
    side: Literal["pre", "final", "adjustment"]
    quantity_t: Tonnes


class AcquisitionIn(_In):
    """Offsets (CCER, other certified reductions) or allowances acquired, with vintage."""

    kind: Literal["acquisition"]
    year: Year
    instrument: Literal["national_allowance", "local_allowance", "ccer", "other_offset"]
    quantity_t: Tonnes
    price_cny_t: Price | None = None
    counterparty: str = ""
    vintage: Year | None = None


class TradeIn(_In):
    """A purchase or sale on the market."""

    kind: Literal["trade"]
    year: Year
    instrument: Literal["national_allowance", "local_allowance", "ccer", "other_offset"]
    side: Literal["buy", "sell"]
    quantity_t: Tonnes
    price_cny_t: Price
    counterparty: str = ""
    vintage: Year | None = None


class SurrenderIn(_In):
    """Allowances or offsets surrendered for a compliance year."""

    kind: Literal["surrender"]
    year: Year
    instrument: Literal["national_allowance", "local_allowance", "ccer", "other_offset"]
    quantity_t: Tonnes


class TransferIn(_In):
    """A transfer in or out (between accounts, a recovery by the authority)."""

    kind: Literal["transfer"]
    year: Year
    instrument: Literal["national_allowance", "local_allowance", "ccer", "other_offset"]
    side: Literal["in", "out"]
    quantity_t: Tonnes
    counterparty: str = ""
    vintage: Year | None = None


class PriceIn(_In):
    """A market price (CNY per t) on a date; the latest one values the holdings."""

    kind: Literal["price"]
    instrument: Literal["national_allowance", "local_allowance", "ccer", "other_offset"] = \
        "national_allowance"
    price_cny_t: Price
    year: Year | None = None  # default: the year of t


class ReductionIn(_In):
    """Renewable generation or green certificates (MWh), or CO2 captured (CCUS, t)."""

    kind: Literal["reduction"]
    year: Year
    side: Literal["renewable_mwh", "green_certificate_mwh", "ccus_t"]
    quantity_t: Tonnes  # MWh for renewable_mwh and green_certificate_mwh


class VerifiedIn(_In):
    """The year's verified emissions (the verifier's report); replaces the live figure."""

    kind: Literal["verified"]
    year: Year
    quantity_t: Tonnes


class ReversalIn(_In):
    """Undoes one earlier entry (the only way to put one right)."""

    kind: Literal["reversal"]
    reverses: int = Field(ge=1)
    reason: str = Field(min_length=1)


CarbonIn = Annotated[AllocationIn | AcquisitionIn | TradeIn | SurrenderIn | TransferIn
                     | PriceIn | ReductionIn | VerifiedIn | ReversalIn,
                     Field(discriminator="kind")]
_CARBON = TypeAdapter(CarbonIn)
AnyIn = (AllocationIn | AcquisitionIn | TradeIn | SurrenderIn | TransferIn | PriceIn
         | ReductionIn | VerifiedIn | ReversalIn)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0] in KINDS:  # the union's tag: not a field
            loc = loc[1:]
        out.append((".".join(loc) or "body", str(e["msg"])))
    return out


def parse_carbon_entry(body: Any) -> AnyIn:
    """A carbon entry from its JSON body; AssetsError naming the field otherwise."""
    try:
        return _CARBON.validate_python(body)
    except ValidationError as exc:
        text = "; ".join(f"{f}: {m}" for f, m in _problems(exc))
        raise AssetsError(f"carbon entry: {text}") from None


# ------------------------------------------------------------------ the table


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _row_entry(row: Sequence[Any]) -> AssetEntry:
    (id_, _entered, user, kind, t_ms, year, instrument, q, side, price, counterparty,
     vintage, reverses, document, reason) = row
    return AssetEntry(int(id_), kind, _dt(t_ms), int(year), instrument, _nan(q), side,
                      _nan(price), counterparty, vintage, reverses, document, user, reason)


class CarbonLedger:
    """The `carbon_entry` table of one SQLite file."""

    def __init__(self, path: Any) -> None:
        self._file = TableFile(path, _SCHEMA, "carbon ledger", AssetsFileError)
        self.path = self._file.path

    def append_many(self, entries: Sequence[AssetEntry], now: datetime) -> list[AssetEntry]:
        """Append entries (their ids are assigned here) in one transaction; returns them."""
        out = []
        with self._file.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for e in entries:
                    cur = db.execute(
                        f"INSERT INTO carbon_entry ({_COLUMNS}) VALUES "
                        "(NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (_ms(now), e.user, e.kind, _ms(e.t), e.year, e.instrument,
                         None if math.isnan(e.quantity_t) else e.quantity_t, e.side,
                         None if math.isnan(e.price_cny_t) else e.price_cny_t,
                         e.counterparty, e.vintage, e.reverses, e.document, e.reason))
                    assert cur.lastrowid is not None
                    row = db.execute(f"SELECT {_COLUMNS} FROM carbon_entry WHERE id = ?",
                                     (cur.lastrowid,)).fetchone()
                    out.append(_row_entry(row))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        return out

    def entries(self) -> list[AssetEntry]:
        """Every entry, in entry order."""
        with self._file.connect() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM carbon_entry ORDER BY id").fetchall()
        return [_row_entry(r) for r in rows]


def _period_t(rec: PeriodRecords) -> float:
    """A stored period's plant emissions: Σ of its units' finite accounted CO2 (as the live
    allowance position sums them, compute/periods.py): CEMS, or the emission-factor method
    of a unit whose basis is `factor` (by the stored basis, so rows from before co2_t
    existed count their CEMS)."""
    values = (u.co2_factor_t if u.basis == "factor" else u.co2_cems_t for u in rec.units)
    return math.fsum(v for v in values if math.isfinite(v))


# ------------------------------------------------------------------ the keeper


class AssetKeeper:
    """Checks, keeps and audits carbon-ledger entries; the compliance position per year."""

    def __init__(self, plant: Plant, historian: Historian, audit: AuditLog) -> None:
        self.plant = plant
        self.config = plant.config
        self.carbon: CarbonConfig = plant.config.carbon
        self.historian = historian
        self.audit = audit
        self.clock = PlantClock(plant.config.clock.minute_seconds, plant.config.site.timezone)
        self.ledger = CarbonLedger(plant.config.historian.path)
        self._entries: list[AssetEntry] = []
        self._lock = asyncio.Lock()  # one entry (or import) checked and kept at a time
        self._meter = self._renewable_meter()
        # Called after entries were kept (the runtime: recompute the position for the
        # alarm rules and OPC UA at once, not at the next closed hour).
        self.on_change: Callable[[], None] | None = None

    async def load(self) -> None:
        """Read the ledger (at start)."""
        self._entries = await asyncio.to_thread(self.ledger.entries)

    # -------------------------------------------------------------- reading

    def all_entries(self) -> list[AssetEntry]:
        """Every entry, oldest first (the dataclasses)."""
        return list(self._entries)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry (of one kind), oldest first, as JSON-ready dicts with `reversed_by`."""
        by = {e.reverses: e.id for e in self._entries if e.kind == "reversal"}
        return [{**e.as_json(), "reversed_by": by.get(e.id)} for e in self._entries
                if kind is None or e.kind == kind]

    def now(self) -> datetime:
        """The current time (UTC); tests may replace it."""
        return datetime.now(UTC)

    def current_year(self, now: datetime | None = None) -> int:
        """The plant-local compliance year at `now`."""
        return self.clock.scaled_local(self.now() if now is None else now).year

    def _year_bounds(self, year: int) -> tuple[datetime, datetime]:
        probe = datetime(year, 7, 1, tzinfo=ZoneInfo(self.config.site.timezone))
        # the wall instant the (possibly sped-up) clock shows as mid-year of `year`
        return self.clock.year_bounds(self.clock.wall_of(probe))

    async def _emissions(self, year: int, now: datetime) -> tuple[float, list[tuple[date,
                                                                               float]]]:
        """(live emissions of the year, its stored days as (local date, t))."""
        y0, y1 = self._year_bounds(year)
        end = min(y1, now)
        if end <= y0:
            return 0.0, []
        days = await self.historian.periods("day", y0, end)
        daily = [(self.clock.scaled_local(d.t).date(), _period_t(d)) for d in days]
        after = max(y0, max((d.t_end for d in days), default=y0))
        hours = await self.historian.periods("hour", after, end) if after < end else []
        total = math.fsum(v for _, v in daily) + math.fsum(_period_t(h) for h in hours)
        return total, daily

    def _renewable_meter(self) -> tuple[str, float, bool] | None:
        """(tag, MWh per tag unit, counter?) of the renewable meter; None without one;
        ConfigError naming carbon.renewable_tag if it is not a meter."""
        tag = self.carbon.renewable_tag
        if tag is None:
            return None
        unit = next((t.unit for d in self.config.devices for t in d.tags if t.id == tag), None)
        if unit is None:
            raise ConfigError("plant file", "carbon.renewable_tag", f"unknown tag {tag!r}")
        scale = RENEWABLE_UNITS.get(unit.strip())
        if scale is None:
            raise ConfigError("plant file", "carbon.renewable_tag",
                              f"tag {tag!r} has unit {unit!r}; a renewable meter's is one of "
                              f"{', '.join(RENEWABLE_UNITS)}")
        return tag, scale[0], scale[1]

    async def _renewable_mwh(self, year: int, now: datetime) -> float:
        """Renewable generation of the year from its meter's stored minutes: a rate (MW,
        kW) as Σ minute means · 1/60 h; a counter (MWh, kWh) as its largest reading less
        its smallest (a counter that was reset in the year is undercounted)."""
        meter = self._meter
        if meter is None:
            return 0.0
        tag, per_mwh, counter = meter
        y0, y1 = self._year_bounds(year)
        end = min(y1, now)
        if end <= y0:
            return 0.0
        path = self.config.historian.path

        def query() -> tuple[float, float | None, float | None]:
            with read_only(path, AssetsFileError) as db:
                row = db.execute(
                    "SELECT TOTAL(CASE WHEN count > 0 THEN mean END), MIN(min), MAX(max)"
                    " FROM tag_minute WHERE tag = ? AND t_ms >= ? AND t_ms < ?",
                    (tag, _ms(y0), _ms(end))).fetchone()
            return float(row[0]), row[1], row[2]

        total, lo, hi = await asyncio.to_thread(query)
        if counter:
            return 0.0 if lo is None or hi is None else (float(hi) - float(lo)) * per_mwh
        return total / 60.0 * per_mwh

    async def position(self, year: int | None = None) -> CompliancePosition:
        """The compliance position of `year` (default: the current plant year)."""
        now = self.now()
        year = self.current_year(now) if year is None else year
        entries = list(self._entries)
        live_t, daily = await self._emissions(year, now)
        verified = [e for e in effective(entries) if e.kind == "verified" and e.year == year]
        y0, y1 = self._year_bounds(year)
        day_s = 24 * 60 * self.clock.minute_seconds
        days_left = max(0.0, (y1 - max(now, y0)).total_seconds() / day_s)
        if verified:
            v = max(verified, key=lambda e: (e.t, e.id)).quantity_t
            rate = forecast_year_end([x for _, x in daily], live_t, 0.0,
                                     self.carbon.forecast_window_d)
            forecast = Forecast(v, v, v, rate.rate_t_d, rate.window_d)
            emissions, basis = v, "verified"
        else:
            forecast = forecast_year_end([x for _, x in daily], live_t, days_left,
                                         self.carbon.forecast_window_d)
            emissions, basis = live_t, "live"
        today = self.clock.scaled_local(now).date()
        metered = await self._renewable_mwh(year, now)
        return position(entries, year, emissions, basis, forecast, self.carbon, today,
                        renewable_metered_mwh=metered)

    async def trend(self, year: int | None = None) -> list[dict[str, float]]:
        """Emissions, prorated allowance and the gap per month of `year`."""
        now = self.now()
        year = self.current_year(now) if year is None else year
        y0, y1 = self._year_bounds(year)
        end = min(y1, now)
        days = await self.historian.periods("day", y0, end) if end > y0 else []
        daily = [(self.clock.scaled_local(d.t).date(), _period_t(d)) for d in days]
        output = [(self.clock.scaled_local(d.t).date(), math.fsum(
            u.output_mwh for u in d.units if math.isfinite(u.output_mwh))) for d in days]
        h = holdings(self._entries, year)
        # the year's allowance budget: held plus what was already surrendered
        budget = sum(x.held_t + x.surrendered_t for i, x in h.items() if i not in OFFSETS)
        return monthly_trend(daily, budget, year, output, self.carbon.intensity_target_t_mwh)

    # -------------------------------------------------------------- entering

    async def enter(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep and audit one entry; `{"entry": …}` as kept."""
        item = parse_carbon_entry(body)
        async with self._lock:
            now = self.now()
            e = self._check(item, user, now, self._entries)
            kept = await asyncio.to_thread(self.ledger.append_many, [e], now)
            await self._audit(kept)
            self._entries.extend(kept)
        self._changed()
        return {"entry": self.entries_by_id(kept[0].id)}

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # the entry is kept whatever the listener does
                log.exception("carbon ledger: the position was not refreshed")

    def entries_by_id(self, entry_id: int) -> dict[str, Any]:
        """One entry as JSON (with `reversed_by`)."""
        return next(x for x in self.entries() if x["id"] == entry_id)

    async def _audit(self, kept: Sequence[AssetEntry]) -> None:
        for e in kept:
            await asyncio.to_thread(self.audit.append, e.user, f"carbon_{e.kind}",
                                    f"carbon:{e.id}", e.as_json())

    def _check(self, item: AnyIn, user: str, now: datetime,
               entries: Sequence[AssetEntry]) -> AssetEntry:
        """The entry `item` makes, checked against `entries`; AssetsError naming the field."""
        kind = item.kind
        t = now if item.t is None else item.t.astimezone(UTC)
        if t > now + timedelta(days=1):
            raise AssetsError(f"{kind}: t {t.isoformat()} is in the future")
        this_year = self.current_year(now)
        base = AssetEntry(0, kind, t, this_year, "", math.nan, "", math.nan, "", None, None,
                          item.document, user, item.reason)
        if isinstance(item, ReversalIn):
            by_id = {e.id: e for e in entries}
            target = by_id.get(item.reverses)
            if target is None:
                raise AssetsError(f"reversal: reverses: there is no entry {item.reverses}")
            if target.kind == "reversal":
                raise AssetsError(f"reversal: reverses: entry {item.reverses} is a reversal; "
                                  "enter the original again instead")
            if target.id in reversed_ids(entries):
                raise AssetsError(f"reversal: reverses: entry {item.reverses} is already "
                                  "reversed")
            e = replace(base, year=target.year, instrument=target.instrument,
                        reverses=target.id)
            self._check_held(entries, e, "reverses",
                             f"reversing entry {target.id} ({target.kind})")
            return e
        year = getattr(item, "year", None)
        if year is None:
            year = t.year
        if year > this_year + 1:
            raise AssetsError(f"{kind}: year {year} is after next year ({this_year + 1})")
        vintage = getattr(item, "vintage", None)
        if vintage is not None and vintage > this_year:
            raise AssetsError(f"{kind}: vintage {vintage} is in the future")
        quantity = getattr(item, "quantity_t", None)
        price = getattr(item, "price_cny_t", None)
        e = replace(base, year=year, instrument=getattr(item, "instrument", ""),
                    quantity_t=math.nan if quantity is None else float(quantity),
                    side=getattr(item, "side", ""),
                    price_cny_t=math.nan if price is None else float(price),
                    counterparty=getattr(item, "counterparty", ""), vintage=vintage)
        if (kind == "trade" and e.side == "sell") or (kind == "transfer" and e.side == "out") \
                or kind == "surrender":
            what = {"trade": "sale", "transfer": "transfer out", "surrender": "surrender"}[kind]
            self._check_held(entries, e, "quantity_t",
                             f"{what} of {e.quantity_t:g} t")
        elif kind == "verified":
            prior = [x.id for x in effective(entries) if x.kind == "verified" and x.year == year]
            if prior:
                raise AssetsError(f"verified: year: {year} has verified emissions already "
                                  f"(entry {prior[-1]}): reverse that entry first")
        elif kind == "allocation" and e.side == "final":
            self._check_held(entries, e, "quantity_t", f"final allocation of {e.quantity_t:g} t")
        return e

    @staticmethod
    def _check_held(entries: Sequence[AssetEntry], e: AssetEntry, field: str,
                    what: str) -> None:
        """Refuse `e` if afterwards less than nothing would be held of its instrument."""
        if e.instrument not in INSTRUMENTS:
            return
        before = holdings(entries, e.year)[e.instrument].held_t
        after = holdings([*entries, replace(e, id=-1)], e.year)[e.instrument].held_t
        if after < -EPS_T and after < before:
            raise AssetsError(f"{e.kind}: {field}: {what} is more than the {before:g} t of "
                              f"{e.instrument} held for {e.year}")

    # -------------------------------------------------------------- CSV

    def csv_export(self) -> str:
        """Every entry as CSV (one header, CSV_HEADER; times ISO 8601 UTC, empty for none)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for e in self._entries:
            w.writerow((e.id, e.kind, e.t.isoformat(), e.year, e.instrument,
                        "" if math.isnan(e.quantity_t) else repr(e.quantity_t), e.side,
                        "" if math.isnan(e.price_cny_t) else repr(e.price_cny_t),
                        e.counterparty, "" if e.vintage is None else e.vintage,
                        "" if e.reverses is None else e.reverses, e.document, e.user,
                        e.reason))
        return out.getvalue()

    async def import_csv(self, user: str, text: str) -> dict[str, Any]:
        """Enter every row of a CSV with CSV_HEADER (id and user are ignored: the importer
        enters them); all rows or none. Errors name the line and the column."""
        async with self._lock:
            now = self.now()
            # parsing and checking up to 1 MB of rows is work for a thread, not the loop
            made = await asyncio.to_thread(self._check_csv, text, user, now,
                                           list(self._entries))
            kept = await asyncio.to_thread(self.ledger.append_many, made, now)
            await self._audit(kept)
            self._entries.extend(kept)
        self._changed()
        return {"entries": [self.entries_by_id(e.id) for e in kept]}


    def _check_csv(self, text: str, user: str, now: datetime,
                   entries: list[AssetEntry]) -> list[AssetEntry]:
        """The entries the rows of a CSV make, each checked against the ledger and the rows
        before it; AssetsError naming the line (and the column)."""
        sim = entries
        made: list[AssetEntry] = []
        for line, body in _csv_bodies(text):
            try:
                item = _CARBON.validate_python(body)
            except ValidationError as exc:
                field, msg = _problems(exc)[0]
                raise AssetsError(f"line {line}, column {field}: {msg}") from None
            try:
                e = self._check(item, user, now, sim)
            except AssetsError as exc:
                raise AssetsError(f"line {line}: {exc}") from None
            sim.append(replace(e, id=-len(sim) - 1))  # stands in until it has an id
            made.append(e)
        return made

_INT_COLUMNS = ("year", "vintage", "reverses")
_FLOAT_COLUMNS = ("quantity_t", "price_cny_t")


def _csv_bodies(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, entry body) of each row; AssetsError naming the line and column."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
        raise AssetsError(f"line 1: the header must be {','.join(CSV_HEADER)}")
    out: list[tuple[int, dict[str, Any]]] = []
    for row in reader:
        line = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(CSV_HEADER):
            raise AssetsError(f"line {line}: expected {len(CSV_HEADER)} columns, got {len(row)}")
        cells = dict(zip(CSV_HEADER, (c.strip() for c in row), strict=True))
        kind = cells["kind"]
        if kind not in KINDS:
            raise AssetsError(f"line {line}, column kind: must be one of {', '.join(KINDS)}, "
                              f"not {kind!r}")
        body: dict[str, Any] = {"kind": kind}
        for name, value in cells.items():
            if name in ("id", "user", "kind") or value == "":
                continue
            if kind == "reversal" and name in ("year", "instrument"):
                continue  # the export writes the reversed entry's; they follow from it
            if name in _INT_COLUMNS:
                try:
                    body[name] = int(value)
                except ValueError:
                    raise AssetsError(f"line {line}, column {name}: {value!r} is not a whole "
                                      "number") from None
            elif name in _FLOAT_COLUMNS:
                try:
                    body[name] = float(value)
                except ValueError:
                    raise AssetsError(f"line {line}, column {name}: {value!r} is not a "
                                      "number") from None
            else:
                body[name] = value
        out.append((line, body))
    if not out:
        raise AssetsError("the CSV has no rows")
    return out
