"""The OPC UA sink: publishes minute results and raw tag values to DCS / SCADA clients.

Address space (namespace ``urn:carbonscada:<site id>``, string NodeIds built from the
path so that they stay the same across restarts)::

    Objects/CarbonSCADA/<site id>/
      Units/<unit>/                 U1.Output, U1.CO2Today, U1.CO2FactorDay, U1.DataFlag …
        Sources/<source>/           U1.S1.CO2Minute, U1.S1.CO2Hour, U1.S1.DataFlag …
      Allowance/                    Allowance.Annual, Allowance.ForecastYearEnd …
      Tags/<device>/<tag>           Tags.cems1.s1_co2
      Alarms/<rule>                 Alarms.s1_rate (an AlarmConditionType)

Minute values change every minute; CO2Hour with every closed hour (the hour's value,
substituted if invalid), the unit's day values with every closed day, the allowance
position at the end of every hour. Each carries the start of its period (the allowance:
the time it refers to) as source timestamp.

Alarms (OPC UA Part 9, Alarms & Conditions): one AlarmConditionType object per alarm rule,
``<site id>/Alarms/<rule>`` (NodeId ``Alarms.<rule>``), with SuppressedState,
OutOfServiceState and MessageZh (the Chinese message) besides the mandatory children. Its
SourceNode is the site object, its SourceName what the rule watches ("source S1 co2_kg").
Every transition is an event notified by the Server object and by the site object
(Server HasNotifier site); a condition not back to normal keeps Retain, so that
ConditionRefresh / ConditionRefresh2 replay its last event. Acknowledge (EventId and a
comment) goes to the alarm engine as "opcua:<session user>"; the new state comes back as
an event. Not implemented: Confirm, condition branches, the shelve / suppress / service
methods and ShelvingState nodes (the shelving state is in the events' ShelvingState
fields); Enable, Disable and AddComment answer Bad_NotSupported.

Identities: anonymous sessions are accepted and read-only (browse, read, subscribe,
ConditionRefresh). Given a user store (`users`), the server also takes UserName tokens and
checks them there; a refused login is Bad_UserAccessDenied at ActivateSession, the same for
an unknown name as for a wrong password. Acknowledge needs a session user with role
operator or higher. The only endpoint is NoSecurity for now, and asyncua encrypts a
password only under a Sign or Sign&Encrypt policy: user names and passwords travel in
clear text. The Basic256Sha256 and Aes128_Sha256_RsaOaep Sign&Encrypt endpoints (with the
server certificate) are still to come.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import TypeVar, cast
from zoneinfo import ZoneInfo

from asyncua import ua
from asyncua.common.events import Event
from asyncua.common.instantiate_util import instantiate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from model.accounts import has_role
from model.errors import AlarmActionError, ConfigError, SinkError, UnknownRuleError
from model.flags import DataFlag
from model.protocols import ActionAuditor, AlarmControl, Authenticator
from model.records import (
    AlarmEvent,
    AllowancePosition,
    AuditRecord,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    Sample,
    SourceMinute,
    UnitMinute,
    UnitPeriod,
)
from server.config import PlantConfig

log = logging.getLogger(__name__)

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
    EngineeringUnit("°C", "CEL", "degree Celsius"),
    EngineeringUnit("Pa", "PAL", "pascal"),
    EngineeringUnit("kPa", "KPA", "kilopascal"),
    EngineeringUnit("m/s", "MTS", "metre per second"),
    EngineeringUnit("kg/h", "E93", "kilogram per hour"),
    EngineeringUnit("CNY", None, "yuan renminbi"),  # a currency: not a UNECE Rec. 20 unit
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


def status_of(flag: DataFlag) -> ua.StatusCode:
    """StatusCode of an instantaneous or last-minute value carrying this HJ 212 flag."""
    return _FLAG_STATUS[flag]


def hour_status(hour: PeriodResult) -> ua.StatusCode:
    """StatusCode of a closed hour's CO2: Good when valid, UncertainSubstituteValue when
    its value is a substitute, else the status of its flag (no value)."""
    if hour.valid:
        return _GOOD
    if hour.substituted:
        return _SUBSTITUTE
    return status_of(hour.flag)


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

CO2_HOUR = VarSpec("CO2Hour", "t", "CO2 emitted in the last complete hour (substituted if "
                   "invalid)", "上一完整小时CO2排放量（无效时为替代值）")

UNIT_DAY_VARS: tuple[tuple[VarSpec, Callable[[UnitPeriod], float]], ...] = (
    (VarSpec("CO2Day", "t", "CO2 emitted yesterday, CEMS", "昨日CO2排放量（在线监测）"),
     attrgetter("co2_cems_t")),
    (VarSpec("CO2FactorDay", "t", "CO2 emitted yesterday, emission-factor method",
             "昨日CO2排放量（排放因子法）"), attrgetter("co2_factor_t")),
    (VarSpec("ReconciliationDiff", "%", "Yesterday's CEMS vs emission-factor difference",
             "昨日在线监测与排放因子法偏差"), attrgetter("reconciliation_diff_pct")),
)

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


def _description(en: str, zh: str) -> ua.LocalizedText:
    # asyncua keeps one LocalizedText per attribute (it does not pick by the session's
    # locale), so the Description carries both languages in one locale-neutral text.
    return ua.LocalizedText(f"{en} / {zh}" if zh else en)


_SourceWrite = tuple[ua.NodeId, Callable[[SourceMinute], float], bool]
_UnitWrite = tuple[ua.NodeId, Callable[[UnitMinute], float], bool]
_Rec = TypeVar("_Rec", SourceMinute, UnitMinute)


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
    hours: dict[str, ua.NodeId] = field(default_factory=dict)  # source → its CO2Hour
    unit_days: dict[str, list[tuple[ua.NodeId, Callable[[UnitPeriod], float], bool]]] = field(
        default_factory=dict)  # unit → its day variables (and whether one is the reconciliation)
    tags: dict[str, ua.NodeId] = field(default_factory=dict)
    site: ua.NodeId = field(default_factory=ua.NodeId)  # the alarms' source and notifier
    alarms: ua.NodeId = field(default_factory=ua.NodeId)  # the Alarms folder
    conditions: dict[str, ua.NodeId] = field(default_factory=dict)  # configured rule → condition
    rule_names: dict[str, str] = field(default_factory=dict)


class _Builder:
    """Appends AddNodes items, parents first, in the site namespace."""

    def __init__(self, ns: int, own_namespace: str) -> None:
        self.ns = ns
        self.own_namespace = own_namespace
        self.items: list[ua.AddNodesItem] = []
        self.initial: list[tuple[ua.NodeId, ua.Variant]] = []
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
        attrs = ua.ObjectAttributes(DisplayName=ua.LocalizedText(display, "en"),
                                    Description=_description(display, zh))
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
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(spec.name, "en"),
            Description=_description(f"{spec.en} ({spec.unit})" if spec.unit else spec.en,
                                     spec.zh),
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
    tags = b.obj(site, "Tags", "Tags", "Tags", "现场原始数据", what="the Tags folder",
                 folder=True)
    out.site = site
    out.alarms = b.obj(site, "Alarms", "Alarms", "Alarms", "报警", what="the Alarms folder",
                       folder=True)
    for i, unit in enumerate(cfg.units):
        upath = f"units[{i}]"
        unode = b.obj(units, unit.id, unit.id, unit.name, unit.name_zh, what=f"{upath}.id",
                      folder=False)
        uwrites: list[_UnitWrite] = [
            (b.variable(unode, f"{unit.id}.{spec.name}", spec, what=upath), get, spec.total)
            for spec, get in UNIT_VARS]
        limit = cfg.reconciliation.limit_pct if cfg.reconciliation is not None else None
        out.unit_days[unit.id] = []
        for spec, dget in UNIT_DAY_VARS:
            is_diff = spec.name == "ReconciliationDiff"
            if is_diff and limit is not None:  # beyond the range: the limit is exceeded
                spec = dataclasses.replace(spec, eu_range=(-limit, limit))
            out.unit_days[unit.id].append(
                (b.variable(unode, f"{unit.id}.{spec.name}", spec, what=upath), dget, is_diff))
        uflag = b.variable(unode, f"{unit.id}.{DATA_FLAG.name}", DATA_FLAG, what=upath)
        out.units[unit.id] = (uwrites, uflag)
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
            sflag = b.variable(snode, f"{prefix}.{DATA_FLAG.name}", DATA_FLAG, what=spath)
            out.sources[src.id] = (swrites, sflag)
    for i, dev in enumerate(cfg.devices):
        dnode = b.obj(tags, f"Tags.{dev.id}", dev.id, dev.id, "", what=f"devices[{i}].id",
                      folder=True)
        for j, tag in enumerate(dev.tags):
            spec = VarSpec(tag.id, tag.unit, tag.description or tag.id, tag.description_zh)
            out.tags[tag.id] = b.variable(dnode, f"Tags.{dev.id}.{tag.id}", spec,
                                          what=f"devices[{i}].tags[{j}]")
    for i, rule in enumerate(cfg.alarms.rules):
        # The condition objects themselves are instantiated from AlarmConditionType at start.
        out.conditions[rule.id] = b.node_id(f"Alarms.{rule.id}", f"alarms.rules[{i}].id")
        out.rule_names[rule.id] = rule.name
    out.items, out.initial = b.items, b.initial
    return out


# ISA-18.2 states of AlarmEvent.ack_state.
_NORMAL = "normal"
_UNACK = "active-unacknowledged"
_ACKED = "active-acknowledged"
_RTN_UNACK = "returned-unacknowledged"
_SHELVED = "shelved"
_SUPPRESSED = "suppressed"
_OUT_OF_SERVICE = "out-of-service"
_ACKED_BY_STATE = {_NORMAL: True, _ACKED: True, _UNACK: False, _RTN_UNACK: False}
_LEVEL = {"normal": 0, "warning": 1, "alarm": 2}

SEVERITY = {"alarm": 800, "warning": 500, "normal": 100}
"""OPC UA Severity (1-1000) of each alarm condition."""

ACKNOWLEDGE_ROLE = "operator"
"""The least role (server.users.ROLES) that may acknowledge alarms through OPC UA."""

_EVENT_IDS_KEPT = 32  # EventIds per condition that Acknowledge accepts
_QUEUE_SIZE = 10_000  # alarm transitions waiting to be published
_SERVER = _ns0(ObjectIds.Server)
_ALARM_CONDITION_TYPE = _ns0(ObjectIds.AlarmConditionType)
_ACKNOWLEDGE = _ns0(ObjectIds.AcknowledgeableConditionType_Acknowledge)
_UNSUPPORTED_METHODS = {"Enable": ObjectIds.ConditionType_Enable,
                        "Disable": ObjectIds.ConditionType_Disable,
                        "AddComment": ObjectIds.ConditionType_AddComment}
_REFRESH_METHODS = (ObjectIds.ConditionType_ConditionRefresh,
                    ObjectIds.ConditionType_ConditionRefresh2)


@dataclass
class _SessionUser(User):
    """An asyncua session user with its carbonscada role ("" for an anonymous session)."""

    rights: str = ""


class _UserManager(UserManager):
    """asyncua user manager: anonymous sessions, and user names checked against `users`."""

    def __init__(self, users: Authenticator | None) -> None:
        self.users = users

    def get_user(self, iserver: InternalServer, username: str | None = None,
                 password: str | None = None, certificate: object = None) -> User | None:
        """The session user of an ActivateSession; None refuses it (Bad_UserAccessDenied)."""
        # UserRole.User for every session: asyncua's SimpleRoleRuleset refuses the Anonymous
        # role every service, Read included, and Admin may add and delete nodes. A non-admin
        # writes only nodes with CurrentWrite access, and this address space has none.
        if username is None and password is None:  # an anonymous token
            return _SessionUser(role=UserRole.User)
        if self.users is None:
            return None
        try:
            # Called synchronously by asyncua: the scrypt check (~50 ms) holds the loop.
            account = self.users.authenticate(username or "", password or "")
        except Exception:
            log.exception("OPC UA login of %r: user store failed", username)
            return None
        if account is None:
            log.warning("OPC UA login of %r refused", username)
            return None
        return _SessionUser(role=UserRole.User, name=account.name, rights=account.role)


# The user of the session whose method call is running (asyncua hands a method callback
# only the object and the arguments, not the session).
_CALLER: ContextVar[User | None] = ContextVar("opcua_caller", default=None)


class _CallerSession(InternalSession):
    """A client session that makes its user known to the method callbacks it runs."""

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        """Run the calls with this session's user in `_CALLER`."""
        token = _CALLER.set(self.user)
        try:
            return await super().call(params)
        finally:
            _CALLER.reset(token)


class _InternalServer(InternalServer):
    """asyncua's internal server with `_CallerSession` client sessions."""

    def create_session(self, name: str, user: User | None = None,
                       external: bool = False) -> InternalSession:
        """A session for a client connection."""
        return _CallerSession(self, self.aspace, self.subscription_service, name,
                              user=user or User(role=UserRole.Anonymous), external=external)


_Field = tuple[object, ua.VariantType]
_CallResult = ua.CallMethodResult | ua.StatusCode


@dataclass(slots=True)
class _Condition:
    """One rule's condition object and what its events carry between transitions."""

    rule: str
    node: ua.NodeId
    nodes: set[ua.NodeId]  # the condition object's own nodes (its state variables)
    last: AlarmEvent | None = None
    acked: bool = True
    active: bool = False
    severity: int = SEVERITY["normal"]
    last_severity: int = SEVERITY["normal"]
    active_t: datetime | None = None
    acked_t: datetime | None = None
    severity_t: datetime | None = None
    comment: str = ""
    user: str = ""
    comment_t: datetime | None = None
    # The EventIds of its latest notifications, each with its AckedState/Id.
    event_ids: dict[bytes, bool] = field(default_factory=dict)
    retained: list[Event] = field(default_factory=list)  # its last events while Retain

    def advance(self, ev: AlarmEvent) -> None:
        """Take one transition of the rule."""
        first = self.last is None
        acked = _acked_after(self.acked, ev, first=first)
        active = ev.state != "normal"
        severity = SEVERITY.get(ev.state, SEVERITY["normal"])
        if first:
            self.last_severity = SEVERITY.get(ev.previous, SEVERITY["normal"])
            self.active_t = self.acked_t = self.severity_t = ev.t
        if acked != self.acked:
            self.acked_t = ev.t
        if active != self.active:
            self.active_t = ev.t
        if severity != self.severity:
            self.last_severity, self.severity_t = self.severity, ev.t
        if ev.comment:
            self.comment, self.user, self.comment_t = ev.comment, ev.user, ev.t
        self.acked, self.active, self.severity, self.last = acked, active, severity, ev


def _acked_after(acked: bool, ev: AlarmEvent, *, first: bool) -> bool:
    """Whether the alarm is acknowledged after `ev`.

    The four ISA-18.2 base states say it; a shelved, suppressed or out-of-service alarm's
    acknowledgement is followed through the transitions (a rise wants a new one).
    """
    if ev.ack_state in _ACKED_BY_STATE:
        return _ACKED_BY_STATE[ev.ack_state]
    if ev.cause in ("acknowledge", "return_to_service"):
        return True
    if ev.cause == "condition" and _LEVEL.get(ev.state, 0) > _LEVEL.get(ev.previous, 0):
        return False
    if ev.previous_ack_state in _ACKED_BY_STATE and ev.cause in (
            "shelve", "suppress", "out_of_service"):
        return _ACKED_BY_STATE[ev.previous_ack_state]
    # First seen while masked (after a restart): what the base state can have been.
    return ev.state == "normal" if first else acked


def _two_state(name: str, value: bool, true: str, false: str) -> dict[str, _Field]:
    return {name: (ua.LocalizedText(true if value else false, "en"), ua.VariantType.LocalizedText),
            f"{name}/Id": (value, ua.VariantType.Boolean)}


def _condition_extras(cond: ua.NodeId, ns: int) -> list[ua.AddNodesItem]:
    """SuppressedState and OutOfServiceState (optional in AlarmConditionType) with their
    Id, and MessageZh: the Chinese message (an attribute holds one locale in asyncua)."""
    items: list[ua.AddNodesItem] = []

    def variable(parent: ua.NodeId, sub: str, name: ua.QualifiedName, value: ua.Variant,
                 datatype: int, typedef: int, ref: int) -> ua.NodeId:
        nid = ua.NodeId(cast("ua.String", f"{cast(str, parent.Identifier)}.{sub}"),
                        cast("ua.Int16", ns))
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(name.Name, "en"), Value=value, DataType=_ns0(datatype),
            ValueRank=ua.ValueRank.Scalar, AccessLevel=_READ_ONLY, UserAccessLevel=_READ_ONLY,
            Historizing=False)
        items.append(ua.AddNodesItem(
            ParentNodeId=parent, ReferenceTypeId=_ns0(ref), RequestedNewNodeId=nid,
            BrowseName=name, NodeClass=ua.NodeClass.Variable, NodeAttributes=attrs,
            TypeDefinition=_ns0(typedef)))
        return nid

    for state, false in (("SuppressedState", "Unsuppressed"),
                         ("OutOfServiceState", "In Service")):
        var = variable(cond, state, ua.QualifiedName(state, 0),
                       ua.Variant(ua.LocalizedText(false, "en"), ua.VariantType.LocalizedText),
                       ObjectIds.LocalizedText, ObjectIds.TwoStateVariableType,
                       ObjectIds.HasComponent)
        variable(var, "Id", ua.QualifiedName("Id", 0), ua.Variant(False, ua.VariantType.Boolean),
                 ObjectIds.Boolean, ObjectIds.PropertyType, ObjectIds.HasProperty)
    variable(cond, "MessageZh", ua.QualifiedName("MessageZh", cast("ua.UInt16", ns)),
             ua.Variant(ua.LocalizedText("", "zh-CN"), ua.VariantType.LocalizedText),
             ObjectIds.LocalizedText, ObjectIds.PropertyType, ObjectIds.HasProperty)
    return items


def _reference(source: ua.NodeId, ref: int, target: ua.NodeId) -> ua.AddReferencesItem:
    return ua.AddReferencesItem(SourceNodeId=source, ReferenceTypeId=_ns0(ref), IsForward=True,
                                TargetNodeId=target, TargetNodeClass=ua.NodeClass.Object)


def _check(results: Sequence[ua.StatusCode], what: str) -> None:
    for res in results:
        if not res.is_good():
            raise SinkError(f"OPC UA: cannot add the nodes of {what}: {res.name}")


def _bad_arguments(code: int, ok: Sequence[bool]) -> ua.CallMethodResult:
    return ua.CallMethodResult(StatusCode=_status(code), InputArgumentResults=[
        _GOOD if good else _status(code) for good in ok])


def _refresh_event(etype: int, notifier: ua.NodeId) -> Event:
    now = datetime.now(UTC)
    vt = ua.VariantType
    return _new_event(notifier, {
        "EventId": (uuid.uuid4().bytes, vt.ByteString), "EventType": (_ns0(etype), vt.NodeId),
        "SourceNode": (_SERVER, vt.NodeId), "SourceName": ("Server", vt.String),
        "Time": (now, vt.DateTime), "ReceiveTime": (now, vt.DateTime),
        "Message": (ua.LocalizedText("", "en"), vt.LocalizedText),
        "Severity": (SEVERITY["normal"], vt.UInt16)})


def _new_event(notifier: ua.NodeId, fields: dict[str, _Field]) -> Event:
    ev = Event(notifier)
    for name, (value, vtype) in fields.items():
        ev.add_property(name, value, vtype)
    return ev


class OpcUaSink:
    """Sink that serves the plant's results, raw tags and alarms over OPC UA (asyncua server).

    `alarms` answers Acknowledge calls and gives the current alarms at start; `audit`
    receives the audit record of every acknowledgement made through OPC UA. The runtime
    hands every alarm transition to `on_alarm`. `users` checks user-name logins; only a
    user with role operator or higher may acknowledge, so without `users` (anonymous
    sessions only) Acknowledge is refused to everyone with Bad_UserAccessDenied.
    """

    name = "opcua"

    def __init__(self, config: PlantConfig, *, alarms: AlarmControl | None = None,
                 audit: ActionAuditor | None = None, users: Authenticator | None = None) -> None:
        self.config = config
        self.namespace_uri = site_namespace(config)
        self.alarms = alarms
        self.audit = audit
        self.users = users
        # A dry run, so that clashing NodeIds are reported before anything starts.
        self._layout = build_layout(config, ns=0)
        self._server: Server | None = None
        self._zone = ZoneInfo(config.site.timezone)
        self._conditions: dict[str, _Condition] = {}
        self._by_node: dict[ua.NodeId, _Condition] = {}
        self._queue: asyncio.Queue[AlarmEvent] | None = None  # set while events are taken
        self._worker: asyncio.Task[None] | None = None
        self._alarm_error = ""  # the last alarm-publishing failure logged

    @property
    def server(self) -> Server | None:
        """The running asyncua server, None before start() and after stop()."""
        return self._server

    async def start(self) -> None:
        """Build the address space and the alarm conditions, and listen on the endpoint."""
        server = Server(iserver=_InternalServer(user_manager=_UserManager(self.users)))
        await server.init()
        server.set_endpoint(self.config.opcua.endpoint)
        server.set_server_name(f"carbonscada {self.config.site.name}")
        await server.set_application_uri(f"{self.namespace_uri}:server")
        self._configure_security(server)
        layout = build_layout(self.config, await server.register_namespace(self.namespace_uri))
        results = await server.iserver.isession.add_nodes(layout.items)
        for item, res in zip(layout.items, results, strict=True):
            if not res.StatusCode.is_good():
                raise SinkError(f"OPC UA: cannot add node {item.RequestedNewNodeId.to_string()}: "
                                f"{res.StatusCode.name}")
        now = _ts(datetime.now(UTC))
        for nid, initial in layout.initial:
            await server.write_attribute_value(nid, ua.DataValue(initial, _WAITING,
                                                                 ServerTimestamp=now))
        await self._start_alarms(server, layout)
        try:
            await server.start()
        except OSError as exc:
            await self._stop_alarms()
            raise SinkError(f"OPC UA: cannot listen on {self.config.opcua.endpoint}: "
                            f"{exc.strerror or exc}") from exc
        self._layout = layout
        self._server = server

    def _configure_security(self, server: Server) -> None:
        """Endpoints and identities: for now NoSecurity; anonymous, and user names if `users`."""
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        tokens: list[type] = [ua.AnonymousIdentityToken]
        if self.users is not None:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)

    def _running(self) -> Server:
        if self._server is None:
            raise SinkError("OPC UA sink is not started")
        return self._server

    async def on_minute(self, result: MinuteResult) -> None:
        """Write every source and unit variable of one minute result."""
        server = self._running()
        layout = self._layout
        t = _ts(result.t)
        now = _ts(datetime.now(UTC))

        def dv(value: float, status: ua.StatusCode) -> ua.DataValue:
            return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double), status,
                                SourceTimestamp=t, ServerTimestamp=now)

        def flag_dv(flag: DataFlag) -> ua.DataValue:
            # The flag is always a good value: it is what explains the others' status.
            return ua.DataValue(ua.Variant(flag.name, ua.VariantType.String), _GOOD,
                                SourceTimestamp=t, ServerTimestamp=now)

        async def write(entry: tuple[list[tuple[ua.NodeId, Callable[[_Rec], float], bool]],
                                     ua.NodeId] | None, record: _Rec) -> None:
            if entry is None:  # not in this server's address space
                return
            writes, flag_node = entry
            status, total = status_of(record.flag), total_status_of(record.flag)
            for nid, get, is_total in writes:
                await server.write_attribute_value(
                    nid, dv(get(record), total if is_total else status))
            await server.write_attribute_value(flag_node, flag_dv(record.flag))

        for src in result.sources:
            await write(layout.sources.get(src.source), src)
        for unit in result.units:
            await write(layout.units.get(unit.unit), unit)

    async def on_period(self, records: PeriodRecords) -> None:
        """Write a closed hour's CO2Hour and allowance position, or a closed day's unit values."""
        server = self._running()
        layout = self._layout
        now = _ts(datetime.now(UTC))

        def dv(value: float, status: ua.StatusCode, t: datetime) -> ua.DataValue:
            return ua.DataValue(ua.Variant(float(value), ua.VariantType.Double), status,
                                SourceTimestamp=_ts(t), ServerTimestamp=now)

        if records.level == "hour":
            for src in records.sources:
                nid = layout.hours.get(src.source)
                if nid is not None:
                    await server.write_attribute_value(nid, dv(src.co2_t, hour_status(src),
                                                               records.t))
            if records.allowance is not None:
                # An accounting figure without a flag, as of the end of the hour.
                for anid, aget in layout.allowance:
                    await server.write_attribute_value(
                        anid, dv(aget(records.allowance), _GOOD, records.t_end))
            return
        for unit in records.units:
            status = total_status_of(unit.flag)
            for unid, uget, is_diff in layout.unit_days.get(unit.unit, ()):
                code = (_status(StatusCodes.UncertainEngineeringUnitsExceeded)
                        if is_diff and unit.reconciliation_exceeded else status)
                await server.write_attribute_value(unid, dv(uget(unit), code, records.t))

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Write the latest value of each raw tag in the batch; unknown tags are ignored."""
        server = self._running()
        tags = self._layout.tags
        now = _ts(datetime.now(UTC))
        for tag, sample in {s.tag: s for s in samples}.items():
            nid = tags.get(tag)
            if nid is None:
                continue
            await server.write_attribute_value(nid, ua.DataValue(
                ua.Variant(float(sample.value), ua.VariantType.Double), status_of(sample.flag),
                SourceTimestamp=_ts(sample.t), ServerTimestamp=now))

    async def stop(self) -> None:
        """Stop the server and release its port."""
        await self._stop_alarms()
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    # --- alarms ---------------------------------------------------------------------------

    def on_alarm(self, event: AlarmEvent) -> None:
        """Publish one alarm transition as an OPC UA event: queued, never blocks or raises.

        Call from the event loop. Before start() and after stop() the event is dropped:
        start() takes the current alarms from `alarms`.
        """
        queue = self._queue
        if queue is None:
            return
        try:
            queue.put_nowait(event)
        except Exception as exc:  # QueueFull: the publisher is stuck
            self._alarm_failed(event.rule, f"event dropped: {type(exc).__name__} {exc}")

    async def _start_alarms(self, server: Server, layout: _Layout) -> None:
        """The site as notifier, the method handlers, a condition per rule, the current
        alarms queued first, and the worker that publishes the queue in order."""
        isession = server.iserver.isession
        _check(await isession.add_references(
            [_reference(_SERVER, ObjectIds.HasNotifier, layout.site)]), "Server HasNotifier site")
        for method in _REFRESH_METHODS:
            isession.add_method_callback(_ns0(method), self._condition_refresh)
        isession.add_method_callback(_ACKNOWLEDGE, self._acknowledge)
        for method in _UNSUPPORTED_METHODS.values():
            isession.add_method_callback(_ns0(method), self._not_supported)
        current = self.alarms.alarm_list() if self.alarms is not None else []
        queue: asyncio.Queue[AlarmEvent] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        for event in current:
            queue.put_nowait(event)
        # From here on every transition is newer than the list just taken.
        self._queue = queue
        try:
            for rule in dict.fromkeys([*layout.conditions, *(e.rule for e in current)]):
                await self._add_condition(server, layout, rule)
        except BaseException:
            await self._stop_alarms()
            raise
        self._worker = asyncio.create_task(self._publish_all(server, layout, queue),
                                           name="opcua-alarms")

    async def _stop_alarms(self) -> None:
        self._queue = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._conditions.clear()
        self._by_node.clear()

    async def _add_condition(self, server: Server, layout: _Layout, rule: str) -> _Condition:
        """Instantiate AlarmConditionType for `rule` below the Alarms folder."""
        ns = layout.ns
        nid = layout.conditions.get(rule) or ua.NodeId(cast("ua.String", f"Alarms.{rule}"),
                                                      cast("ua.Int16", ns))
        name = layout.rule_names.get(rule) or rule
        isession = server.iserver.isession
        try:
            nodes = await instantiate(
                server.get_node(layout.alarms), server.get_node(_ALARM_CONDITION_TYPE),
                nodeid=nid, bname=ua.QualifiedName(rule, cast("ua.UInt16", ns)),
                dname=ua.LocalizedText(name, "en"), instantiate_optional=False)
        except Exception as exc:
            raise SinkError(f"OPC UA: cannot add the condition of alarm rule {rule!r}: "
                            f"{exc}") from exc
        created = {n.nodeid for n in nodes}
        if nid not in created:
            raise SinkError(f"OPC UA: cannot add the condition of alarm rule {rule!r}: "
                            f"NodeId {nid.to_string()} is taken")
        extras = _condition_extras(nid, ns)
        _check([r.StatusCode for r in await isession.add_nodes(extras)], f"alarm rule {rule!r}")
        created |= {item.RequestedNewNodeId for item in extras}
        _check(await isession.add_references(
            [_reference(layout.site, ObjectIds.HasCondition, nid)]), f"alarm rule {rule!r}")
        prefix = cast(str, nid.Identifier)
        for method, callback in (("Acknowledge", self._acknowledge),
                                 *((m, self._not_supported) for m in _UNSUPPORTED_METHODS)):
            mid = ua.NodeId(cast("ua.String", f"{prefix}.{method}"), cast("ua.Int16", ns))
            if mid in created:
                isession.add_method_callback(mid, callback)
        cond = _Condition(rule, nid, created)
        self._conditions[rule] = cond
        self._by_node[nid] = cond
        await self._write_condition(server, cond, self._fields(layout, cond, b"",
                                                               datetime.now(UTC)))
        return cond

    async def _publish_all(self, server: Server, layout: _Layout,
                           queue: asyncio.Queue[AlarmEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._publish(server, layout, event)
            except Exception as exc:  # one bad event must not stop the others
                self._alarm_failed(event.rule, f"{type(exc).__name__}: {exc}")
            else:
                if self._alarm_error:
                    log.info("OPC UA alarm events are published again")
                    self._alarm_error = ""

    def _alarm_failed(self, rule: str, text: str) -> None:
        if text != self._alarm_error:
            log.error("OPC UA alarm event of rule %s failed: %s", rule, text)
            self._alarm_error = text

    async def _publish(self, server: Server, layout: _Layout, event: AlarmEvent) -> None:
        """One transition: the condition's variables, then its event from both notifiers."""
        cond = self._conditions.get(event.rule) or await self._add_condition(server, layout,
                                                                             event.rule)
        cond.advance(event)
        event_id = uuid.uuid4().bytes
        cond.event_ids[event_id] = cond.acked
        while len(cond.event_ids) > _EVENT_IDS_KEPT:
            del cond.event_ids[next(iter(cond.event_ids))]
        fields = self._fields(layout, cond, event_id, datetime.now(UTC))
        await self._write_condition(server, cond, fields)
        # asyncua delivers an event only to the monitored items of its emitting node: one
        # copy for clients of the Server object, one for clients of the site object.
        events = [_new_event(notifier, fields) for notifier in (_SERVER, layout.site)]
        cond.retained = events if event.ack_state != _NORMAL else []
        for ev in events:
            await server.iserver.subscription_service.trigger_event(ev)

    def _fields(self, layout: _Layout, cond: _Condition, event_id: bytes,
                now: datetime) -> dict[str, _Field]:
        """The condition's event fields, named by browse path (asyncua's event attributes)."""
        ev = cond.last
        mode = ev.ack_state if ev is not None else _NORMAL
        shelved, suppressed = mode == _SHELVED, mode == _SUPPRESSED
        t = ev.t if ev is not None else now
        unshelve_ms = None
        if shelved and ev is not None and ev.shelved_until is not None:
            unshelve_ms = max(0.0, (ev.shelved_until - now).total_seconds() * 1000.0)
        vt = ua.VariantType
        text, time, node = vt.LocalizedText, vt.DateTime, vt.NodeId
        return {
            "EventId": (event_id, vt.ByteString),
            "EventType": (_ALARM_CONDITION_TYPE, node),
            "SourceNode": (layout.site, node),
            "SourceName": (ev.target if ev is not None and ev.target else self.config.site.id,
                           vt.String),
            "Time": (t, time),
            "ReceiveTime": (now, time),
            "LocalTime": (self._local_time(t), vt.ExtensionObject),
            "Message": (ua.LocalizedText(ev.message if ev is not None else "", "en"), text),
            "MessageZh": (ua.LocalizedText(ev.message_zh if ev is not None else "", "zh-CN"),
                          text),
            "Severity": (cond.severity, vt.UInt16),
            "ConditionClassId": (_ns0(ObjectIds.ProcessConditionClassType), node),
            "ConditionClassName": (ua.LocalizedText("Process", "en"), text),
            "ConditionName": (cond.rule, vt.String),
            "BranchId": (ua.NodeId(), node),
            "Retain": (mode != _NORMAL, vt.Boolean),
            **_two_state("EnabledState", True, "Enabled", "Disabled"),
            "Quality": (_GOOD, vt.StatusCode),
            "Quality/SourceTimestamp": (t, time),
            "LastSeverity": (cond.last_severity, vt.UInt16),
            "LastSeverity/SourceTimestamp": (cond.severity_t, time),
            "Comment": (ua.LocalizedText(cond.comment), text),
            "Comment/SourceTimestamp": (cond.comment_t, time),
            "ClientUserId": (cond.user, vt.String),
            **_two_state("AckedState", cond.acked, "Acknowledged", "Unacknowledged"),
            "AckedState/TransitionTime": (cond.acked_t, time),
            **_two_state("ActiveState", cond.active, "Active", "Inactive"),
            "ActiveState/EffectiveDisplayName": (ua.LocalizedText(
                ev.state.capitalize() if cond.active and ev is not None else "Inactive", "en"),
                text),
            "ActiveState/TransitionTime": (cond.active_t, time),
            "InputNode": (ua.NodeId(), node),
            **_two_state("SuppressedState", suppressed, "Suppressed", "Unsuppressed"),
            **_two_state("OutOfServiceState", mode == _OUT_OF_SERVICE, "Out of Service",
                         "In Service"),
            "SuppressedOrShelved": (suppressed or shelved, vt.Boolean),
            "ShelvingState/CurrentState": (ua.LocalizedText(
                "TimedShelved" if shelved else "Unshelved", "en"), text),
            "ShelvingState/CurrentState/Id": (_ns0(
                ObjectIds.ShelvedStateMachineType_TimedShelved if shelved
                else ObjectIds.ShelvedStateMachineType_Unshelved), node),
            "ShelvingState/UnshelveTime": (unshelve_ms, vt.Double),  # Duration, ms
            "NodeId": (cond.node, node),  # the ConditionId
        }

    def _local_time(self, t: datetime) -> ua.TimeZoneDataType:
        local = t.astimezone(self._zone)
        offset, dst = local.utcoffset(), local.dst()
        minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
        return ua.TimeZoneDataType(Offset=cast("ua.Int16", minutes),
                                   DaylightSavingInOffset=bool(dst))

    async def _write_condition(self, server: Server, cond: _Condition,
                               fields: dict[str, _Field]) -> None:
        """Write the fields that the condition object has as variables (browse path = id)."""
        prefix, ns = cast(str, cond.node.Identifier), cond.node.NamespaceIndex
        now = _ts(datetime.now(UTC))
        for name, (value, vtype) in fields.items():
            nid = ua.NodeId(cast("ua.String", f"{prefix}.{name.replace('/', '.')}"), ns)
            if value is not None and nid in cond.nodes:
                await server.write_attribute_value(nid, ua.DataValue(
                    ua.Variant(value, vtype), _GOOD, ServerTimestamp=now))

    async def _acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> _CallResult:
        """Acknowledge(EventId, Comment) of a condition; a status code, never an exception."""
        try:
            return await self._acknowledge_call(parent, args)
        except Exception:
            log.exception("OPC UA Acknowledge on %s failed", parent.to_string())
            return _status(StatusCodes.BadInternalError)

    async def _acknowledge_call(self, parent: ua.NodeId,
                                args: tuple[ua.Variant, ...]) -> _CallResult:
        caller = _CALLER.get()
        # Checked first, so that a refused caller learns nothing about conditions or events.
        if (self.users is None or not isinstance(caller, _SessionUser) or caller.name is None
                or not has_role(caller.rights, ACKNOWLEDGE_ROLE)):
            return _status(StatusCodes.BadUserAccessDenied)
        cond = self._by_node.get(parent)
        if cond is None:  # not a condition (Part 9: also when called on the type)
            return _status(StatusCodes.BadNodeIdUnknown)
        if len(args) != 2:
            return _status(StatusCodes.BadArgumentsMissing if len(args) < 2
                           else StatusCodes.BadTooManyArguments)
        event_id, comment = args[0].Value, args[1].Value
        if isinstance(comment, ua.LocalizedText):
            comment = comment.Text or ""
        if not isinstance(event_id, bytes) or not isinstance(comment, str):
            return _bad_arguments(StatusCodes.BadTypeMismatch,
                                  [isinstance(event_id, bytes), isinstance(comment, str)])
        if event_id not in cond.event_ids:
            return _status(StatusCodes.BadEventIdUnknown)
        if cond.event_ids[event_id]:  # that notification showed it acknowledged
            return _status(StatusCodes.BadConditionBranchAlreadyAcked)
        if not comment.strip():  # this plant's rule: an acknowledgement says why
            return _bad_arguments(StatusCodes.BadInvalidArgument, [True, False])
        if self.alarms is None:
            return _status(StatusCodes.BadNotSupported)
        try:
            rec = self.alarms.acknowledge(cond.rule, f"opcua:{caller.name}", comment)
        except UnknownRuleError:
            return _status(StatusCodes.BadNodeIdUnknown)
        except AlarmActionError:
            return _status(StatusCodes.BadConditionBranchAlreadyAcked if cond.acked
                           else StatusCodes.BadInvalidState)
        await self._record(rec)
        return _status(StatusCodes.Good)

    async def _record(self, rec: AuditRecord) -> None:
        if self.audit is None:
            return
        try:
            result = self.audit.append_record(rec)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the acknowledgement stands; the lost record must be seen
            log.exception("audit record of an OPC UA acknowledgement failed: %s", rec)

    async def _not_supported(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        return _status(StatusCodes.BadNotSupported)

    async def _condition_refresh(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        """ConditionRefresh(SubscriptionId) and ConditionRefresh2(SubscriptionId,
        MonitoredItemId): RefreshStart, every retained condition's last event, RefreshEnd."""
        try:
            return await self._refresh(args)
        except Exception:
            log.exception("OPC UA ConditionRefresh failed")
            return _status(StatusCodes.BadInternalError)

    async def _refresh(self, args: tuple[ua.Variant, ...]) -> ua.StatusCode:
        server = self._server
        if server is None:
            return _status(StatusCodes.BadInvalidState)
        try:
            sub_id = int(args[0].Value)
            mid = int(args[1].Value) if len(args) > 1 else None
        except (IndexError, TypeError, ValueError):
            return _status(StatusCodes.BadInvalidArgument)
        sub = server.iserver.subscription_service.subscriptions.get(sub_id)
        if sub is None:
            return _status(StatusCodes.BadSubscriptionIdInvalid)
        items = sub.monitored_item_srv
        notifiers = [_SERVER, self._layout.site]
        if mid is not None:
            # asyncua has no public view of a subscription's items; its own
            # condition_refresh reads the same dictionary.
            data = items._monitored_items.get(mid)
            if data is None:
                return _status(StatusCodes.BadMonitoredItemIdInvalid)
            watched = data.read_value_id.NodeId if data.read_value_id is not None else None
            notifiers = [n for n in notifiers if n == watched]
        for notifier in notifiers:
            await items.trigger_event(_refresh_event(ObjectIds.RefreshStartEventType, notifier),
                                      mid)
        for cond in list(self._conditions.values()):
            for ev in cond.retained:
                if ev.emitting_node in notifiers:
                    await items.trigger_event(ev, mid)
        for notifier in notifiers:
            await items.trigger_event(_refresh_event(ObjectIds.RefreshEndEventType, notifier), mid)
        return _status(StatusCodes.Good)
