"""The address space of the OPC UA sink: NodeIds, variables, engineering units and statuses.

Address space (namespace ``urn:carbonscada:<site id>``, string NodeIds built from the
path so that they stay the same across restarts)::

    Objects/CarbonSCADA/<site id>/
      Units/<unit>/                 U1.Output, U1.CO2Today, U1.CO2FactorDay, U1.DataFlag …
                                    U1.CO2LastHour, U1.CO2eLastHour, U1.CO2eDay (CO2e)
                                    U1.CO2eToday (CO2Today + the closed hours' other gases)
                                    U1.CO2RelUncertaintyHour / Day / YTD
        Performance/                U1.Performance.TargetYTD, .DeviationYTD, .VsBaseline …
        Sources/<source>/           U1.S1.CO2Minute, U1.S1.CO2Hour, U1.S1.DataFlag …
      Allowance/                    Allowance.Annual, Allowance.ForecastYearEnd …
                                    Allowance.Holdings, .Deficit, .ForecastDeficit … (ledger)
      Totals/                       Totals.CO2RelUncertaintyHour / Day / YTD (the site's)
      Performance/                  Performance.TargetYTD … (the site's carbon performance)
      Tags/<device>/<tag>           Tags.cems1.s1_co2
      Alarms/<rule>                 Alarms.s1_rate (an AlarmConditionType)

Minute values change every minute; CO2Hour with every closed hour (the hour's value,
substituted if invalid), the unit's day values with every closed day, the allowance
position at the end of every hour, the units' and the site's CO2 uncertainty of the hour
and the year to date with every closed hour and of the day with every closed day
(server/opcua/uncertainty.py), the carbon performance at start and with every closed
day. Each carries the start of its period (the allowance: the time it refers to) as
source timestamp. A value that is missing (NaN) carries
BadWaitingForInitialData or its flag's Bad status, never Good (value_status). Names and
descriptions are kept in English and Chinese (NodeTexts); server.opcua.locales answers
each session in the language of its LocaleIds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import cast

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from compute.assets import CompliancePosition
from compute.boundaries import Node, tree_of
from compute.performance import SITE, Progress
from compute.uncertainty import Components, components_rel_pct
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import (
    AllowancePosition,
    PeriodResult,
    SourceMinute,
    UnitMinute,
    UnitPeriod,
)
from server.config import PlantConfig
from server.heap import collection_paused
from web.register import source_components_of

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"


def site_namespace(cfg: PlantConfig) -> str:
    """The namespace URI of the site's nodes."""
    return f"urn:carbonscada:{cfg.site.id}"


def unece_unit_id(code: str) -> int:
    """UnitId of a UNECE Rec. 20 common code (OPC UA Part 8, 5.6.3): its ASCII bytes, big-endian."""
    if not 1 <= len(code) <= 3 or not code.isascii():
        raise ValueError(f"not a UNECE common code: {code!r}")
    unit_id = 0
    for ch in code:
        unit_id = unit_id << 8 | ord(ch)
    return unit_id


@dataclass(frozen=True, slots=True)
class EngineeringUnit:
    """A unit symbol with its UNECE common code (None when UNECE has none)."""

    symbol: str
    code: str | None
    description: str

    def eu_information(self, own_namespace: str) -> ua.EUInformation:
        """The OPC UA EUInformation; a unit without a UNECE code gets UnitId -1 in our namespace."""
        if self.code is None:
            namespace, unit_id = own_namespace, -1
        else:
            namespace, unit_id = UNECE_NAMESPACE, unece_unit_id(self.code)
        return ua.EUInformation(NamespaceUri=namespace, UnitId=unit_id,
                                DisplayName=ua.LocalizedText(self.symbol, "en"),
                                Description=ua.LocalizedText(self.description, "en"))


_UNIT_LIST = (
    EngineeringUnit("%", "P1", "percent"),
    EngineeringUnit("mg/m³", "GP", "milligram per cubic metre"),
    EngineeringUnit("m³/h", "MQH", "cubic metre per hour"),
    EngineeringUnit("t/h", "E18", "tonne per hour"),
    EngineeringUnit("kg", "KGM", "kilogram"),
    EngineeringUnit("t", "TNE", "tonne"),
    EngineeringUnit("MWh", "MWH", "megawatt hour"),
    EngineeringUnit("MW", "MAW", "megawatt"),
    EngineeringUnit("t/MWh", None, "tonne per megawatt hour"),
    EngineeringUnit("t/t", None, "tonne per tonne"),  # CO2 per t of product
    EngineeringUnit("°C", "CEL", "degree Celsius"),
    EngineeringUnit("Pa", "PAL", "pascal"),
    EngineeringUnit("kPa", "KPA", "kilopascal"),
    EngineeringUnit("m/s", "MTS", "metre per second"),
    EngineeringUnit("kg/h", "E93", "kilogram per hour"),
    EngineeringUnit("CNY", None, "yuan renminbi"),  # a currency: not a UNECE Rec. 20 unit
    EngineeringUnit("CNY/t", None, "yuan renminbi per tonne"),
    EngineeringUnit("d", "DAY", "day"),
)
UNITS: dict[str, EngineeringUnit] = {u.symbol: u for u in _UNIT_LIST}
# Spellings that appear in YAML files typed on keyboards without ³.
UNITS["mg/m3"] = UNITS["mg/m³"]
UNITS["m3/h"] = UNITS["m³/h"]


def engineering_unit(symbol: str) -> EngineeringUnit | None:
    """The engineering unit of a configured unit string; None for an empty string."""
    if not symbol:
        return None
    return UNITS.get(symbol) or EngineeringUnit(symbol, None, symbol)


# asyncua annotates its API with the codec's marker classes (ua.UInt32, ua.DateTime …);
# at run time it takes, and itself passes, plain Python values. These helpers hold the casts.
def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast("ua.UInt32", code))


def _ns0(ident: int) -> ua.NodeId:
    return ua.NodeId(cast("ua.Int32", ident))


def _ts(t: datetime) -> ua.DateTime:
    return cast("ua.DateTime", t)


_FLAG_STATUS: dict[DataFlag, ua.StatusCode] = {
    DataFlag.N: _status(StatusCodes.Good),
    DataFlag.S: _status(StatusCodes.UncertainSubstituteValue),
    DataFlag.T: _status(StatusCodes.UncertainEngineeringUnitsExceeded),
    DataFlag.B: _status(StatusCodes.BadCommunicationError),
    DataFlag.D: _status(StatusCodes.BadSensorFailure),
    DataFlag.C: _status(StatusCodes.BadOutOfService),
    DataFlag.M: _status(StatusCodes.BadOutOfService),
    DataFlag.F: _status(StatusCodes.BadOutOfService),
}
_GOOD = _status(StatusCodes.Good)
_SUBSTITUTE = _status(StatusCodes.UncertainSubstituteValue)
_SUBNORMAL = _status(StatusCodes.UncertainSubNormal)
_WAITING = _status(StatusCodes.BadWaitingForInitialData)
# A period the server did not run for: no data exists for it (Part 11's BadNoData), which
# a client must not read as a failure of the plant's communication (BadCommunicationError).
_NO_DATA = _status(StatusCodes.BadNoData)
# compute.periods.NOT_RUNNING, not imported here (compute pulls in numba at import).
NOT_RUNNING = "not_running"


def status_of(flag: DataFlag) -> ua.StatusCode:
    """StatusCode of an instantaneous or last-minute value carrying this HJ 212 flag."""
    return _FLAG_STATUS[flag]


def hour_status(hour: PeriodResult) -> ua.StatusCode:
    """StatusCode of a closed hour's CO2: Good when valid, UncertainSubstituteValue when
    its value is a substitute, BadNoData when the server did not run for it, else the
    status of its flag (no value)."""
    return period_status(hour.valid, hour.substituted, hour.flag, hour.missing_reason)


def period_status(valid: bool, substituted: bool, flag: DataFlag,
                  missing_reason: str = "") -> ua.StatusCode:
    """StatusCode of a closed hour's value (live or from the history), see hour_status.

    An hour the server did not run for keeps HJ 212 flag B (compute/periods.py says why)
    but is BadNoData here, not BadCommunicationError: no device failed.
    """
    if valid:
        return _GOOD
    if substituted:
        return _SUBSTITUTE
    if missing_reason == NOT_RUNNING:
        return _NO_DATA
    return status_of(flag)


def value_status(value: float, status: ua.StatusCode) -> ua.StatusCode:
    """`status`, except that a missing value (NaN) is never Good or Uncertain.

    A NaN is no value (a forecast without 30 days of data, an intensity without output):
    a client must not take it for a measurement, so it carries BadWaitingForInitialData
    unless its status is already Bad (the data flag's).
    """
    if math.isnan(value) and not status.is_bad():
        return _WAITING
    return status


def total_status_of(flag: DataFlag) -> ua.StatusCode:
    """StatusCode of a running total (hour, day, year) after a minute with this flag.

    A Bad code would make the server drop the value (OPC UA Part 4, 7.7.1), and one
    failed minute does not void a day's total: it only makes it less than complete.
    A stopped unit emits nothing, so its totals stay complete.
    """
    return _GOOD if flag in (DataFlag.N, DataFlag.F) else _SUBNORMAL


@dataclass(frozen=True, slots=True)
class VarSpec:
    """One analog variable of a unit, source or the allowance."""

    name: str  # BrowseName, DisplayName and last part of the NodeId
    unit: str
    en: str
    zh: str
    total: bool = False  # a running total, see total_status_of
    eu_range: tuple[float, float] | None = None
    text: bool = False  # a String (the data flag) rather than an analog Double


SOURCE_VARS: tuple[tuple[VarSpec, Callable[[SourceMinute], float]], ...] = (
    (VarSpec("CO2Dry", "%", "CO2 concentration, dry basis", "CO2浓度（干基）",
             eu_range=(0.0, 100.0)), attrgetter("co2_dry_pct")),
    (VarSpec("CO2MgM3", "mg/m³", "CO2 mass concentration, standard dry",
             "CO2质量浓度（标干）"), attrgetter("co2_mg_m3")),
    (VarSpec("FlowActual", "m³/h", "Flue gas flow, actual conditions", "烟气流量（工况）"),
     attrgetter("flow_act_m3_h")),
    (VarSpec("FlowStdDry", "m³/h", "Flue gas flow, standard dry", "烟气流量（标干）"),
     attrgetter("flow_std_dry_m3_h")),
    (VarSpec("CO2Rate", "t/h", "CO2 emission rate", "CO2排放速率"), attrgetter("co2_rate_t_h")),
    (VarSpec("CO2Minute", "kg", "CO2 emitted in the last minute", "上一分钟CO2排放量"),
     attrgetter("co2_kg")),
    (VarSpec("CO2Today", "t", "CO2 emitted today", "今日CO2排放量", total=True),
     attrgetter("co2_today_t")),
    (VarSpec("CO2YTD", "t", "CO2 emitted this year", "本年累计CO2排放量", total=True),
     attrgetter("co2_ytd_t")),
)

UNIT_VARS: tuple[tuple[VarSpec, Callable[[UnitMinute], float]], ...] = (
    (VarSpec("Output", "MWh", "Output in the last minute", "上一分钟发电量"),
     attrgetter("output_mwh")),
    (VarSpec("OutputToday", "MWh", "Output today", "今日发电量", total=True),
     attrgetter("output_today_mwh")),
    (VarSpec("CO2Today", "t", "CO2 emitted today", "今日CO2排放量", total=True),
     attrgetter("co2_today_t")),
    (VarSpec("CO2YTD", "t", "CO2 emitted this year", "本年累计CO2排放量", total=True),
     attrgetter("co2_ytd_t")),
    (VarSpec("Intensity", "t/MWh", "CO2 intensity of the last minute", "上一分钟碳排放强度"),
     attrgetter("intensity_t_mwh")),
    (VarSpec("IntensityToday", "t/MWh", "CO2 intensity today", "今日碳排放强度", total=True),
     attrgetter("intensity_today_t_mwh")),
)

# CO2Today + the other gases of the day's closed hours (compute/co2e_today.py): written
# with every minute, as CO2Today, and again when an hour of the day closes.
CO2E_TODAY = VarSpec("CO2eToday", "t", "CO2 equivalent emitted today",
                     "今日二氧化碳当量排放量", total=True)

CO2_HOUR = VarSpec("CO2Hour", "t", "CO2 emitted in the last complete hour (substituted if "
                   "invalid)", "上一完整小时CO2排放量（无效时为替代值）")

UNIT_DAY_VARS: tuple[tuple[VarSpec, Callable[[UnitPeriod], float]], ...] = (
    # The unit's accounted CO2: CEMS, or the emission-factor method for a unit without a
    # stack monitor (units[].basis); CO2FactorDay stays the factor method's check value.
    (VarSpec("CO2Day", "t", "CO2 emitted yesterday (accounted: CEMS or emission-factor "
             "method, as the unit is accounted)", "昨日CO2排放量（核算值）"),
     attrgetter("co2_t")),
    (VarSpec("CO2FactorDay", "t", "CO2 emitted yesterday, emission-factor method",
             "昨日CO2排放量（排放因子法）"), attrgetter("co2_factor_t")),
    (VarSpec("ReconciliationDiff", "%", "Yesterday's CEMS vs emission-factor difference",
             "昨日在线监测与排放因子法偏差"), attrgetter("reconciliation_diff_pct")),
    (VarSpec("CO2eDay", "t", "CO2 equivalent emitted yesterday (CO2 + other gases · GWP)",
             "昨日二氧化碳当量排放量"), attrgetter("co2e_t")),
)
# The unit's accounted CO2 and CO2e of its last complete hour (compute/gases.py:
# CO2e = CO2 + Σ gas · GWP); a factor unit's CO2 is known only when its hour closes.
UNIT_HOUR_VARS: tuple[tuple[VarSpec, Callable[[UnitPeriod], float]], ...] = (
    (VarSpec("CO2LastHour", "t", "CO2 emitted in the last complete hour (accounted)",
             "上一完整小时CO2排放量（核算值）"), attrgetter("co2_t")),
    (VarSpec("CO2eLastHour", "t", "CO2 equivalent emitted in the last complete hour "
             "(CO2 + other gases · GWP)", "上一完整小时二氧化碳当量排放量"),
     attrgetter("co2e_t")),
)

# Carbon performance of the year to date (compute/performance.py): against the output-
# normalised baseline and the targets, per unit and for the site, written whenever the
# runtime computes it (at start and after each closed day). Tonnes and percentages here;
# the intensities (PERFORMANCE_INTENSITY_VARS) in the output's unit, t/MWh or t/t.
PERFORMANCE_VARS: tuple[tuple[VarSpec, Callable[[Progress], float]], ...] = (
    (VarSpec("CO2YTD", "t", "CO2 this year by the performance basis", "本年累计CO2排放量"),
     attrgetter("co2_ytd_t")),
    (VarSpec("TargetYTD", "t", "Target emissions to date (the year's, prorated by days)",
             "截至目前目标排放量"), attrgetter("target_ytd_t")),
    (VarSpec("DeviationYTD", "t", "CO2 to date above (+) or below (−) the target to date",
             "截至目前偏离目标量"), attrgetter("deviation_ytd_t")),
    (VarSpec("DeviationYTDPercent", "%", "Deviation from the target to date",
             "截至目前偏离目标比例"), attrgetter("deviation_ytd_pct")),
    (VarSpec("TargetUsedPercent", "%", "Share of the year's target emitted",
             "年度目标使用率"), attrgetter("target_used_pct")),
    (VarSpec("DeviationQTD", "t", "CO2 this quarter above (+) or below (−) its target to date",
             "本季度偏离目标量"), attrgetter("deviation_qtd_t")),
    (VarSpec("VsBaseline", "t", "CO2 to date above (+) or below (−) the baseline normalised "
             "by output", "较基准年（按产量折算）增减量"), attrgetter("vs_baseline_t")),
    (VarSpec("VsBaselinePercent", "%", "CO2 to date against the normalised baseline",
             "较基准年（按产量折算）增减比例"), attrgetter("vs_baseline_pct")),
)
PERFORMANCE_INTENSITY_VARS: tuple[tuple[str, str, str, Callable[[Progress], float]], ...] = (
    ("IntensityYTD", "CO2 intensity this year", "本年碳排放强度", attrgetter("intensity_ytd")),
    ("TargetIntensity", "Intensity target of the year", "年度强度目标",
     attrgetter("target_intensity")),
)
PERFORMANCE_INTENSITY_PCT = (
    VarSpec("IntensityDeviationPercent", "%", "Intensity above (+) or below (−) its target",
            "强度偏离目标比例"), attrgetter("intensity_deviation_pct"))


# A process (accounting unit) of the site's boundaries (compute/boundaries.py): its
# facilities' CO2 and CO2e rolled up, and its share of the site, per closed hour and day.
PROCESS_VARS: dict[str, tuple[tuple[VarSpec, Callable[[Node], float]], ...]] = {
    "hour": (
        (VarSpec("CO2LastHour", "t", "CO2 emitted in the last complete hour",
                 "上一完整小时CO2排放量"), attrgetter("co2_t")),
        (VarSpec("CO2eLastHour", "t", "CO2 equivalent emitted in the last complete hour",
                 "上一完整小时二氧化碳当量排放量"), attrgetter("co2e_t")),
        (VarSpec("ShareLastHour", "%", "Share of the site's CO2 in the last complete hour",
                 "上一完整小时占全厂CO2比例", eu_range=(0.0, 100.0)),
         attrgetter("share_of_site_pct")),
    ),
    "day": (
        (VarSpec("CO2Day", "t", "CO2 emitted yesterday", "昨日CO2排放量"),
         attrgetter("co2_t")),
        (VarSpec("CO2eDay", "t", "CO2 equivalent emitted yesterday", "昨日二氧化碳当量排放量"),
         attrgetter("co2e_t")),
        (VarSpec("ShareDay", "%", "Share of the site's CO2 yesterday", "昨日占全厂CO2比例",
                 eu_range=(0.0, 100.0)), attrgetter("share_of_site_pct")),
    ),
}

ALLOWANCE_VARS: tuple[tuple[VarSpec, Callable[[AllowancePosition], float]], ...] = (
    (VarSpec("Annual", "t", "Annual allowance", "年度配额"), attrgetter("annual_t")),
    (VarSpec("EmittedYTD", "t", "CO2 emitted this year (complete hours)", "本年累计排放量"),
     attrgetter("ytd_t")),
    (VarSpec("UsedPercent", "%", "Share of the annual allowance used", "配额使用率"),
     attrgetter("used_pct")),
    (VarSpec("Headroom", "t", "Allowance left this year", "剩余配额"), attrgetter("headroom_t")),
    (VarSpec("ForecastYearEnd", "t", "Forecast emissions at year end (last 30 days' rate)",
             "年末排放量预测（近30日速率）"), attrgetter("forecast_year_end_t")),
    (VarSpec("ForecastShortfall", "t", "Forecast allowance shortfall at year end",
             "年末配额缺口预测"), attrgetter("forecast_shortfall_t")),
    (VarSpec("ShortfallCost", "CNY", "Cost of the forecast shortfall at the carbon price",
             "预测配额缺口成本"), attrgetter("shortfall_cost_cny")),
)

# The compliance position of the carbon asset ledger (compute/assets.py, server/assets.py),
# written with every position the runtime computes (after each closed hour and day).
CARBON_VARS: tuple[tuple[VarSpec, Callable[[CompliancePosition], float]], ...] = (
    (VarSpec("Holdings", "t", "Allowances held for the compliance year (national and local)",
             "本履约年度持有配额"), attrgetter("allowances_t")),
    (VarSpec("OffsetsHeld", "t", "Offsets held for the compliance year (CCER and other)",
             "持有抵销量（CCER等）"), attrgetter("offsets_held_t")),
    (VarSpec("OffsetsEligible", "t", "Offsets that may count for compliance (offset limit)",
             "可用于履约的抵销量（抵销比例上限内）"), attrgetter("offsets_eligible_t")),
    (VarSpec("Surplus", "t", "Compliance surplus of the year", "履约盈余"),
     attrgetter("surplus_t")),
    (VarSpec("Deficit", "t", "Compliance deficit of the year", "履约缺口"),
     attrgetter("deficit_t")),
    (VarSpec("DeficitCost", "CNY", "Cost of closing the deficit at the latest price",
             "按最新价格补足缺口的成本"), attrgetter("deficit_cost_cny")),
    (VarSpec("HoldingsValue", "CNY", "Value of the allowances held at the latest price",
             "持有配额按最新价格的价值"), attrgetter("holdings_value_cny")),
    (VarSpec("CarbonPrice", "CNY/t", "Latest carbon allowance price", "最新碳配额价格"),
     attrgetter("price_cny_t")),
    (VarSpec("ForecastDeficit", "t", "Forecast compliance deficit at year end",
             "年末履约缺口预测"), attrgetter("forecast_deficit_t")),
    (VarSpec("DaysToSurrenderDeadline", "d", "Days left to the surrender deadline",
             "距配额清缴截止日天数"), attrgetter("days_to_deadline")),
    (VarSpec("NetEmissions", "t", "Emissions less renewable, green-certificate and CCUS "
             "reductions (not for compliance)",
             "扣除可再生能源、绿证和CCUS减排后的净排放量（不用于履约）"),
     attrgetter("net_emissions_t")),
)

CO2_UNCERTAINTY = VarSpec(
    "CO2RelUncertainty", "%", "Relative standard uncertainty (k = 1) of the CO2 mass of an "
    "hour, a day or a year, from the instruments' accuracy (instrument register)",
    "CO2排放量相对标准不确定度（k=1，由仪表准确度计算，适用于小时、日、年）")

# The uncertainty of a unit's or the site's CO2 total (compute/uncertainty.py), per level:
# the last complete hour, the last complete day and the year to date (complete hours).
TOTAL_UNCERTAINTY: tuple[tuple[str, VarSpec], ...] = (
    ("hour", VarSpec("CO2RelUncertaintyHour", "%", "Relative standard uncertainty (k = 1) of "
                     "the CO2 emitted in the last complete hour, from the instruments",
                     "上一完整小时CO2排放量相对标准不确定度（k=1）")),
    ("day", VarSpec("CO2RelUncertaintyDay", "%", "Relative standard uncertainty (k = 1) of "
                    "the CO2 emitted yesterday, from the instruments",
                    "昨日CO2排放量相对标准不确定度（k=1）")),
    ("ytd", VarSpec("CO2RelUncertaintyYTD", "%", "Relative standard uncertainty (k = 1) of "
                    "the CO2 emitted this year, from the instruments",
                    "本年累计CO2排放量相对标准不确定度（k=1）")),
)

DATA_FLAG = VarSpec("DataFlag", "", "HJ 212 data flag of the last minute",
                    "数据标记（HJ 212）", text=True)

_OBJECTS_FOLDER = _ns0(ObjectIds.ObjectsFolder)
_FOLDER_TYPE = _ns0(ObjectIds.FolderType)
_OBJECT_TYPE = _ns0(ObjectIds.BaseObjectType)
_ANALOG_TYPE = _ns0(ObjectIds.BaseAnalogType)
_VARIABLE_TYPE = _ns0(ObjectIds.BaseDataVariableType)
_PROPERTY_TYPE = _ns0(ObjectIds.PropertyType)
_ORGANIZES = _ns0(ObjectIds.Organizes)
_HAS_COMPONENT = _ns0(ObjectIds.HasComponent)
_HAS_PROPERTY = _ns0(ObjectIds.HasProperty)
_READ_ONLY = ua.AccessLevel.CurrentRead.mask
_SUBSCRIBE_TO_EVENTS = cast("ua.Byte", int(ua.EventNotifierType.SubscribeToEvents))


EN = "en"
ZH = "zh-CN"


@dataclass(frozen=True, slots=True)
class NodeTexts:
    """DisplayName and Description of a node in English and Chinese ("" where none).

    asyncua keeps one LocalizedText per attribute: the English one (Locale "en") is
    stored; a session whose LocaleIds ask for Chinese gets the Chinese one when it reads
    or browses (server.opcua.locales).
    """

    display_en: str
    display_zh: str
    description_en: str
    description_zh: str

    def display(self, locale: str) -> ua.LocalizedText:
        """The DisplayName in `locale` (EN or ZH); English where there is no Chinese."""
        if locale == ZH and self.display_zh:
            return ua.LocalizedText(self.display_zh, ZH)
        return ua.LocalizedText(self.display_en, EN)

    def description(self, locale: str) -> ua.LocalizedText:
        """The Description in `locale` (EN or ZH); English where there is no Chinese."""
        if locale == ZH and self.description_zh:
            return ua.LocalizedText(self.description_zh, ZH)
        return ua.LocalizedText(self.description_en, EN)


_SourceWrite = tuple[ua.NodeId, Callable[[SourceMinute], float], bool]
_UnitWrite = tuple[ua.NodeId, Callable[[UnitMinute], float], bool]


@dataclass(slots=True)
class _Layout:
    """The address space of one plant: AddNodes items and the NodeIds the fast path writes."""

    ns: int
    items: list[ua.AddNodesItem] = field(default_factory=list)
    initial: list[tuple[ua.NodeId, ua.Variant]] = field(default_factory=list)
    sources: dict[str, tuple[list[_SourceWrite], ua.NodeId]] = field(default_factory=dict)
    units: dict[str, tuple[list[_UnitWrite], ua.NodeId]] = field(default_factory=dict)
    allowance: list[tuple[ua.NodeId, Callable[[AllowancePosition], float]]] = field(
        default_factory=list)
    carbon: list[tuple[ua.NodeId, Callable[[CompliancePosition], float]]] = field(
        default_factory=list)  # the Allowance object's compliance-position variables
    hours: dict[str, ua.NodeId] = field(default_factory=dict)  # source → its CO2Hour
    unit_co2e_today: dict[str, ua.NodeId] = field(default_factory=dict)  # unit → CO2eToday
    # unit id (or compute.performance.SITE) → its Performance variables with their getters
    performance: dict[str, list[tuple[ua.NodeId, Callable[[Progress], float]]]] = field(
        default_factory=dict)
    # unit → its CO2LastHour and CO2eLastHour with their getters
    unit_hours: dict[str, list[tuple[ua.NodeId, Callable[[UnitPeriod], float]]]] = field(
        default_factory=dict)
    # level (hour, day) → process id → its variables with their getters (explicit
    # `processes:` only: a unit that is its own process has them on its own node)
    processes: dict[str, dict[str, list[tuple[ua.NodeId, Callable[[Node], float]]]]] = field(
        default_factory=lambda: {"hour": {}, "day": {}})
    # Each source's CO2RelUncertainty and its value (None: an input has no instrument).
    uncertainty: list[tuple[ua.NodeId, float | None]] = field(default_factory=list)
    # Source → (unit, the instruments' shares of its uncertainty), for the totals.
    components: dict[str, tuple[str, Components]] = field(default_factory=dict)
    # Level (hour, day, ytd) → unit → its CO2RelUncertainty<Level>; "" is the site's.
    totals: dict[str, dict[str, ua.NodeId]] = field(default_factory=dict)
    unit_days: dict[str, list[tuple[ua.NodeId, Callable[[UnitPeriod], float], bool]]] = field(
        default_factory=dict)  # unit → its day variables (and whether one is the reconciliation)
    tags: dict[str, ua.NodeId] = field(default_factory=dict)
    site: ua.NodeId = field(default_factory=ua.NodeId)  # the alarms' source and notifier
    alarms: ua.NodeId = field(default_factory=ua.NodeId)  # the Alarms folder
    conditions: dict[str, ua.NodeId] = field(default_factory=dict)  # configured rule → condition
    rule_names: dict[str, str] = field(default_factory=dict)
    texts: dict[ua.NodeId, NodeTexts] = field(default_factory=dict)  # en and zh of each node


class _Builder:
    """Appends AddNodes items, parents first, in the site namespace."""

    def __init__(self, ns: int, own_namespace: str) -> None:
        self.ns = ns
        self.own_namespace = own_namespace
        self.items: list[ua.AddNodesItem] = []
        self.initial: list[tuple[ua.NodeId, ua.Variant]] = []
        self.texts: dict[ua.NodeId, NodeTexts] = {}
        self._owner: dict[str, str] = {}  # NodeId string → the config item that made it
        self._folders: set[ua.NodeId] = {_OBJECTS_FOLDER}

    def node_id(self, ident: str, what: str) -> ua.NodeId:
        """A string NodeId in the site namespace; two config items must not map to one id."""
        if ident in self._owner:
            raise ConfigError("plant configuration", what,
                              f"its OPC UA NodeId {ident!r} is already used by "
                              f"{self._owner[ident]}; rename one of them")
        self._owner[ident] = what
        return ua.NodeId(cast("ua.String", ident), cast("ua.Int16", self.ns))

    def _reference(self, parent: ua.NodeId) -> ua.NodeId:
        return _ORGANIZES if parent in self._folders else _HAS_COMPONENT

    def obj(self, parent: ua.NodeId, ident: str, name: str, display: str, zh: str, *,
            what: str, folder: bool, notifier: bool = False) -> ua.NodeId:
        """Add a folder or a plain object below `parent` (an event notifier if `notifier`)."""
        nid = self.node_id(ident, what)
        texts = self.texts[nid] = NodeTexts(display, zh, display, zh)
        attrs = ua.ObjectAttributes(DisplayName=texts.display(EN),
                                    Description=texts.description(EN))
        if notifier:
            attrs.EventNotifier = _SUBSCRIBE_TO_EVENTS
        self.items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=self._reference(parent),
            RequestedNewNodeId=nid, BrowseName=ua.QualifiedName(name, self.ns),
            NodeClass=ua.NodeClass.Object, NodeAttributes=attrs,
            TypeDefinition=_FOLDER_TYPE if folder else _OBJECT_TYPE))
        if folder:
            self._folders.add(nid)
        return nid

    def variable(self, parent: ua.NodeId, ident: str, spec: VarSpec, *, what: str) -> ua.NodeId:
        """Add a read-only Double variable (String for the data flag) and its EU properties."""
        nid = self.node_id(ident, what)
        initial = (ua.Variant("", ua.VariantType.String) if spec.text
                   else ua.Variant(math.nan, ua.VariantType.Double))
        # The Chinese DisplayName is the Chinese description: what an operator reads in a
        # tree; the BrowseName stays the stable English name.
        texts = self.texts[nid] = NodeTexts(
            spec.name, spec.zh, f"{spec.en} ({spec.unit})" if spec.unit else spec.en,
            f"{spec.zh}（{spec.unit}）" if spec.zh and spec.unit else spec.zh)
        attrs = ua.VariableAttributes(
            DisplayName=texts.display(EN), Description=texts.description(EN),
            Value=initial,
            DataType=_ns0(ObjectIds.String if spec.text else ObjectIds.Double),
            ValueRank=ua.ValueRank.Scalar, AccessLevel=_READ_ONLY,
            UserAccessLevel=_READ_ONLY, Historizing=False)
        self.items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=self._reference(parent),
            RequestedNewNodeId=nid, BrowseName=ua.QualifiedName(spec.name, self.ns),
            NodeClass=ua.NodeClass.Variable, NodeAttributes=attrs,
            TypeDefinition=_VARIABLE_TYPE if spec.text else _ANALOG_TYPE))
        self.initial.append((nid, initial))
        eu = engineering_unit(spec.unit)
        if eu is not None:
            self._property(nid, ident, "EngineeringUnits", eu.eu_information(self.own_namespace),
                           ObjectIds.EUInformation, what)
        if spec.eu_range is not None:
            low, high = spec.eu_range
            self._property(nid, ident, "EURange", ua.Range(Low=low, High=high), ObjectIds.Range,
                           what)
        return nid

    def _property(self, parent: ua.NodeId, parent_ident: str, name: str, value: object,
                  datatype: int, what: str) -> None:
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name, "en"), Description=ua.LocalizedText(name, "en"),
            Value=ua.Variant(value, ua.VariantType.ExtensionObject), DataType=_ns0(datatype),
            ValueRank=ua.ValueRank.Scalar, AccessLevel=_READ_ONLY,
            UserAccessLevel=_READ_ONLY, Historizing=False)
        self.items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=_HAS_PROPERTY,
            RequestedNewNodeId=self.node_id(f"{parent_ident}.{name}", f"{what} {name}"),
            BrowseName=ua.QualifiedName(name, 0), NodeClass=ua.NodeClass.Variable,
            NodeAttributes=attrs, TypeDefinition=_PROPERTY_TYPE))


def build_layout(cfg: PlantConfig, ns: int) -> _Layout:
    """The address space of `cfg` with NodeIds in namespace index `ns`."""
    # Millions of small asyncua objects for 100 000 raw tags, none of them garbage: the
    # cyclic collector took more than half the time (server/heap.py).
    with collection_paused():
        return _build_layout(cfg, ns)


def _performance(b: _Builder, parent: ua.NodeId, path: str, intensity_unit: str | None,
                 what: str) -> list[tuple[ua.NodeId, Callable[[Progress], float]]]:
    """A Performance object under `parent` (NodeIds `path`.<name>) and its variables."""
    node = b.obj(parent, path, "Performance", "Carbon performance", "碳绩效", what=what,
                 folder=False)
    specs = list(PERFORMANCE_VARS)
    if intensity_unit is not None:
        specs += [(VarSpec(name, intensity_unit, en, zh), get)
                  for name, en, zh, get in PERFORMANCE_INTENSITY_VARS]
        specs.append(PERFORMANCE_INTENSITY_PCT)
    return [(b.variable(node, f"{path}.{spec.name}", spec, what=what), get)
            for spec, get in specs]


async def build_layout_async(cfg: PlantConfig, ns: int) -> _Layout:
    """build_layout in a worker thread: seconds for a plant of 100 000 raw tags, during
    which the event loop keeps running."""
    return await asyncio.to_thread(build_layout, cfg, ns)


def _build_layout(cfg: PlantConfig, ns: int) -> _Layout:
    b = _Builder(ns, site_namespace(cfg))
    out = _Layout(ns)
    root = b.obj(_OBJECTS_FOLDER, "CarbonSCADA", "CarbonSCADA", "CarbonSCADA", "碳排放监测",
                 what="the root folder", folder=True)
    site = b.obj(root, cfg.site.id, cfg.site.id, cfg.site.name, cfg.site.name_zh,
                 what="site.id", folder=True, notifier=True)
    # Fixed nodes first, so that a clash is reported against the configuration item.
    units = b.obj(site, "Units", "Units", "Units", "机组", what="the Units folder", folder=True)
    allowance = b.obj(site, "Allowance", "Allowance", "Allowance", "碳排放配额",
                      what="the Allowance object", folder=False)
    out.allowance = [(b.variable(allowance, f"Allowance.{spec.name}", spec, what="allowance"),
                      get) for spec, get in ALLOWANCE_VARS]
    out.carbon = [(b.variable(allowance, f"Allowance.{spec.name}", spec, what="allowance"),
                   get) for spec, get in CARBON_VARS]
    # The site's intensity only when its units' outputs add up (all MWh, or all t).
    kinds = {u.output.unit for u in cfg.units}
    out.performance[SITE] = _performance(b, site, "Performance",
                                         f"t/{kinds.pop()}" if len(kinds) == 1 else None,
                                         "the site's Performance object")
    tags = b.obj(site, "Tags", "Tags", "Tags", "现场原始数据", what="the Tags folder",
                 folder=True)
    out.site = site
    out.alarms = b.obj(site, "Alarms", "Alarms", "Alarms", "报警", what="the Alarms folder",
                       folder=True)
    totals = b.obj(site, "Totals", "Totals", "Site totals", "全厂合计",
                   what="the Totals object", folder=False)
    out.totals = {level: {"": b.variable(totals, f"Totals.{spec.name}", spec, what="totals")}
                  for level, spec in TOTAL_UNCERTAINTY}
    out.components = source_components_of(cfg)  # one pass over the tags
    for i, unit in enumerate(cfg.units):
        upath = f"units[{i}]"
        unode = b.obj(units, unit.id, unit.id, unit.name, unit.name_zh, what=f"{upath}.id",
                      folder=False)
        uwrites: list[_UnitWrite] = [
            (b.variable(unode, f"{unit.id}.{spec.name}", spec, what=upath), get, spec.total)
            for spec, get in UNIT_VARS]
        out.unit_co2e_today[unit.id] = b.variable(unode, f"{unit.id}.{CO2E_TODAY.name}",
                                                  CO2E_TODAY, what=upath)
        limit = cfg.reconciliation.limit_pct if cfg.reconciliation is not None else None
        out.unit_days[unit.id] = []
        for spec, dget in UNIT_DAY_VARS:
            is_diff = spec.name == "ReconciliationDiff"
            if is_diff and limit is not None:  # beyond the range: the limit is exceeded
                spec = dataclasses.replace(spec, eu_range=(-limit, limit))
            out.unit_days[unit.id].append(
                (b.variable(unode, f"{unit.id}.{spec.name}", spec, what=upath), dget, is_diff))
        out.unit_hours[unit.id] = [
            (b.variable(unode, f"{unit.id}.{spec.name}", spec, what=upath), hget)
            for spec, hget in UNIT_HOUR_VARS]
        for level, spec in TOTAL_UNCERTAINTY:
            out.totals[level][unit.id] = b.variable(unode, f"{unit.id}.{spec.name}", spec,
                                                    what=upath)
        uflag = b.variable(unode, f"{unit.id}.{DATA_FLAG.name}", DATA_FLAG, what=upath)
        out.units[unit.id] = (uwrites, uflag)
        out.performance[unit.id] = _performance(b, unode, f"{unit.id}.Performance",
                                                f"t/{unit.output.unit}", upath)
        sources = b.obj(unode, f"{unit.id}.Sources", "Sources", "Sources", "排放源",
                        what=f"the Sources folder of {upath}", folder=True)
        for j, src in enumerate(unit.sources):
            spath = f"{upath}.sources[{j}]"
            prefix = f"{unit.id}.{src.id}"
            snode = b.obj(sources, prefix, src.id, src.name, src.name_zh, what=f"{spath}.id",
                          folder=False)
            swrites: list[_SourceWrite] = [
                (b.variable(snode, f"{prefix}.{spec.name}", spec, what=spath), get, spec.total)
                for spec, get in SOURCE_VARS]
            out.hours[src.id] = b.variable(snode, f"{prefix}.{CO2_HOUR.name}", CO2_HOUR,
                                           what=spath)
            out.uncertainty.append((b.variable(
                snode, f"{prefix}.{CO2_UNCERTAINTY.name}", CO2_UNCERTAINTY, what=spath),
                components_rel_pct(out.components[src.id][1])))
            sflag = b.variable(snode, f"{prefix}.{DATA_FLAG.name}", DATA_FLAG, what=spath)
            out.sources[src.id] = (swrites, sflag)
    if cfg.processes:
        pfolder = b.obj(site, "Processes", "Processes", "Processes", "工序",
                        what="the Processes folder", folder=True)
        for i, proc in enumerate(tree_of(cfg).processes):
            ppath = f"processes[{i}]"
            pnode = b.obj(pfolder, f"Processes.{proc.id}", proc.id, proc.name, proc.name_zh,
                          what=f"{ppath}.id", folder=False)
            for level, pvars in PROCESS_VARS.items():
                out.processes[level][proc.id] = [
                    (b.variable(pnode, f"Processes.{proc.id}.{spec.name}", spec, what=ppath),
                     pget) for spec, pget in pvars]
    for i, dev in enumerate(cfg.devices):
        dnode = b.obj(tags, f"Tags.{dev.id}", dev.id, dev.id, "", what=f"devices[{i}].id",
                      folder=True)
        for j, tag in enumerate(dev.tags):
            # A raw value in percent (O2, H2O, CO2, load …) is a share: 0 to 100 %.
            spec = VarSpec(tag.id, tag.unit, tag.description or tag.id, tag.description_zh,
                           eu_range=(0.0, 100.0) if tag.unit == "%" else None)
            out.tags[tag.id] = b.variable(dnode, f"Tags.{dev.id}.{tag.id}", spec,
                                          what=f"devices[{i}].tags[{j}]")
    for i, rule in enumerate(cfg.alarms.rules):
        # The condition objects themselves are instantiated from AlarmConditionType at start.
        out.conditions[rule.id] = b.node_id(f"Alarms.{rule.id}", f"alarms.rules[{i}].id")
        out.rule_names[rule.id] = rule.name
    out.items, out.initial, out.texts = b.items, b.initial, b.texts
    return out
