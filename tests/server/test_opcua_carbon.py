"""The Allowance object's compliance-position variables (Holdings, Deficit, ForecastDeficit …)
read back over TCP by a real asyncua client after the sink got a position worked by hand."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes

from compute.assets import AssetEntry, CarbonConfig, forecast_year_end, position
from server.opcua.sink import OpcUaSink
from tests.fixtures.plant import plant_config

NS_URI = "urn:carbonscada:testsite"
NAN = math.nan
T = datetime(2025, 10, 31, 16, 0, tzinfo=UTC)  # when the position was computed


def entry(i: int, kind: str, quantity_t: float, *, instrument: str = "national_allowance",
          side: str = "", price: float = NAN) -> AssetEntry:
    return AssetEntry(i, kind, datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=10 * i), 2025,
                      instrument, quantity_t, side, price, "", None, None, "", "eng", "")


# 100 000 t allocated, 20 000 t bought at 85, 5 000 t sold at 90: 115 000 t of allowances;
# 8 000 t CCER; latest price 88 CNY/t; 1 000 MWh of renewable generation and 200 t CCUS.
LEDGER = [entry(1, "allocation", 100_000.0, side="final"),
          entry(2, "trade", 20_000.0, side="buy", price=85.0),
          entry(3, "trade", 5_000.0, side="sell", price=90.0),
          entry(4, "acquisition", 8_000.0, instrument="ccer"),
          entry(5, "reduction", 1_000.0, instrument="", side="renewable_mwh"),
          entry(6, "reduction", 200.0, instrument="", side="ccus_t"),
          entry(7, "price", NAN, instrument="", price=88.0)]

# By hand, with 125 000 t emitted so far and 400 t/d for the last 30 days, 61 days left:
#   eligible offsets  min(8 000, 5 % · 125 000 = 6 250)             = 6 250 t
#   deficit           125 000 − 115 000 − 6 250                     = 3 750 t
#   deficit cost      3 750 · 88                                    = 330 000 CNY
#   holdings value    115 000 · 88                                  = 10 120 000 CNY
#   forecast          125 000 + 400 · 61                            = 149 400 t
#   forecast deficit  149 400 − 115 000 − min(8 000, 7 470)         = 26 930 t
#   deadline          2026-12-31 − 2025-10-31                       = 426 d
#   net emissions     125 000 − 1 000 · 0.5703 − 200                = 124 229.7 t
EXPECTED = {"Holdings": 115_000.0, "OffsetsHeld": 8_000.0, "OffsetsEligible": 6_250.0,
            "Surplus": 0.0, "Deficit": 3_750.0, "DeficitCost": 330_000.0,
            "HoldingsValue": 10_120_000.0, "CarbonPrice": 88.0, "ForecastDeficit": 26_930.0,
            "DaysToSurrenderDeadline": 426.0, "NetEmissions": 124_229.7}
UNITS = {"Holdings": "t", "DeficitCost": "CNY", "CarbonPrice": "CNY/t",
         "DaysToSurrenderDeadline": "d", "NetEmissions": "t"}

pytestmark = pytest.mark.asyncio


async def test_position_is_written_and_read_back(port: int) -> None:
    fc = forecast_year_end([400.0] * 30, 125_000.0, 61)
    p = position(LEDGER, 2025, 125_000.0, "live", fc, CarbonConfig(), date(2025, 10, 31))
    sink = OpcUaSink(plant_config(opcua_port=port))
    await sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
            ns = await client.get_namespace_index(NS_URI)

            def node(name: str) -> str:
                return f"ns={ns};s=Allowance.{name}"
            # Before any position: no value yet, never a Good 0.
            dv = await client.get_node(node("Deficit")).read_data_value(
                raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == StatusCodes.BadWaitingForInitialData

            await sink.on_carbon_position(p, T)
            allowance = await client.nodes.objects.get_child(
                [f"{ns}:CarbonSCADA", f"{ns}:testsite", f"{ns}:Allowance"])
            names = {(await n.read_browse_name()).Name for n in await allowance.get_children()}
            assert set(EXPECTED) <= names and "Annual" in names  # beside the old ones
            for name, value in EXPECTED.items():
                dv = await client.get_node(node(name)).read_data_value()
                assert dv.Value is not None and dv.StatusCode is not None
                assert dv.Value.Value == pytest.approx(value, rel=1e-12), name
                assert dv.Value.VariantType == ua.VariantType.Double
                assert (dv.StatusCode.value, dv.SourceTimestamp) == (StatusCodes.Good, T), name
            for name, unit in UNITS.items():
                eu = await client.get_node(node(name)).get_child("0:EngineeringUnits")
                assert (await eu.read_value()).DisplayName.Text == unit, name
            deadline = client.get_node(node("DaysToSurrenderDeadline"))
            assert (await deadline.read_description()).Text == (
                "Days left to the surrender deadline (d)")

            # Without any price (no price entry, no priced trade) the price is missing: not
            # Good; the holdings are still there (100 000 t allocated).
            no_trades = [e for e in LEDGER if e.kind not in ("price", "trade")]
            bare = position(no_trades, 2025, 125_000.0, "live", fc, CarbonConfig(),
                            date(2025, 10, 31))
            await sink.on_carbon_position(bare, T + timedelta(hours=1))
            dv = await client.get_node(node("CarbonPrice")).read_data_value(
                raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == StatusCodes.BadWaitingForInitialData
            dv = await client.get_node(node("Holdings")).read_data_value()
            assert dv.Value is not None and dv.Value.Value == 100_000.0
    finally:
        await sink.stop()
