"""The latest values the HMI shows: every source and unit, the site totals and the alarms."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from compute.clock import PlantClock
from compute.co2e_today import CO2eToday
from model.records import (
    AlarmEvent,
    AllowancePosition,
    MinuteResult,
    PeriodRecords,
    SiteMinute,
    SourceMinute,
    UnitMinute,
)
from web.config import WebPlantConfig
from web.serialize import (
    SITE_FIELDS,
    SOURCE_FIELDS,
    UNIT_FIELDS,
    Json,
    alarm_json,
    allowance_json,
    iso_utc,
    listed,
    num,
)

_SEVERITY: Final = {"alarm": 0, "warning": 1}


@dataclass(frozen=True, slots=True)
class _Meta:
    """Display identity of a source or unit, taken from the configuration."""

    id: str
    name: str
    name_zh: str
    unit: str = ""  # the unit a source belongs to
    sources: tuple[str, ...] = ()  # the sources of a unit
    streams: tuple[Json, ...] = ()  # the fuel and energy streams of a unit: id, names, unit
    output_unit: str = ""  # a unit's output: MWh, or t of a product


class LiveState:
    """The latest minute of every source and unit, the site totals and the active alarms."""

    def __init__(self, config: WebPlantConfig) -> None:
        self.config = config
        self._source_meta = {
            s.id: _Meta(s.id, s.name, s.name_zh, unit=u.id) for u, s in config.sources()
        }
        self._unit_meta = {
            u.id: _Meta(u.id, u.name, u.name_zh, sources=tuple(s.id for s in u.sources),
                        streams=tuple({"id": st.id, "name": st.name, "name_zh": st.name_zh,
                                       "quantity_unit": st.quantity_unit} for st in u.streams),
                        output_unit=u.output.unit)
            for u in config.units
        }
        self._sources: dict[str, SourceMinute] = {}
        self._units: dict[str, UnitMinute] = {}
        self._site: SiteMinute | None = None
        self._alarms: dict[str, AlarmEvent] = {}
        self._condition_text: dict[str, tuple[str, str]] = {}  # rule → what is wrong (en, zh)
        # Kept on the server (issue 14) so that a reloaded page still shows when the
        # condition began and who acknowledged it, not the time of the latest action.
        self._raised_at: dict[str, datetime] = {}  # rule → when its condition began
        self._acked: dict[str, tuple[str, datetime]] = {}  # rule → (user, when)
        self.t: datetime | None = None
        self.streams = {s.id for _, s in config.streams()}
        self.allowance: tuple[datetime, AllowancePosition] | None = None  # at an hour's end
        # co2e_today_t: co2_today_t + the closed hours' other gases, as OPC UA's CO2eToday.
        self.co2e_today = CO2eToday(PlantClock(config.clock.minute_seconds,
                                               config.site.timezone))

    # -- updates

    def update(self, result: MinuteResult) -> None:
        """Take a minute result as the latest values."""
        for s in result.sources:
            self._sources[s.source] = s
        for u in result.units:
            self._units[u.unit] = u
        self._site = result.site
        self.t = result.t

    def update_period(self, records: PeriodRecords) -> None:
        """Take a closed hour's allowance position as the latest (not an older one)."""
        if records.allowance is not None and (
                self.allowance is None or records.t_end >= self.allowance[0]):
            self.allowance = (records.t_end, records.allowance)
        self.co2e_today.add_hour(records)

    def set_alarms(self, events: Iterable[AlarmEvent]) -> None:
        """Replace the listed alarms (events whose ISA-18.2 state is not normal)."""
        self._alarms = {e.rule: e for e in events if listed(e)}
        for store in (self._raised_at, self._acked):
            for rule in list(store):
                if rule not in self._alarms:
                    del store[rule]
        for e in self._alarms.values():
            self._note_times(e)

    def _note_times(self, event: AlarmEvent) -> None:
        """Track when the rule's condition began and who acknowledged it.

        A rise from normal starts a new alarm (a new raise time, no acknowledgement yet);
        warning → alarm keeps the first raise. An event that is not a condition change of
        an unknown rule (a list taken over after a restart) leaves the raise time unknown.
        """
        rule = event.rule
        if event.cause == "condition" and event.state != "normal" and (
                event.previous == "normal" or rule not in self._raised_at):
            self._raised_at[rule] = event.t
            self._acked.pop(rule, None)
        if event.cause == "acknowledge" and event.user:
            self._acked[rule] = (event.user, event.t)

    def display(self, event: AlarmEvent) -> AlarmEvent:
        """The event as its row shows it: after an operator's action (acknowledge,
        shelve …) the row keeps saying what is wrong; `user` and `comment` say who did what."""
        said = self._condition_text.get(event.rule)
        if event.cause == "condition" or said is None:
            return event
        return dataclasses.replace(event, message=said[0], message_zh=said[1])

    def apply_alarm(self, event: AlarmEvent) -> AlarmEvent:
        """Record an alarm transition (back to the normal state clears the rule); the
        event as the row shows it."""
        if event.cause == "condition":
            self._condition_text[event.rule] = (event.message, event.message_zh)
        event = self.display(event)
        if listed(event):
            self._alarms[event.rule] = event
            self._note_times(event)
        else:
            self._condition_text.pop(event.rule, None)
            self._alarms.pop(event.rule, None)
            self._raised_at.pop(event.rule, None)
            self._acked.pop(event.rule, None)
        return event

    def alarm_row_json(self, event: AlarmEvent) -> Json:
        """An alarm as its row shows it: the event, when the condition began (raised_at,
        ISO UTC) and who acknowledged it when (null if unknown or not acknowledged)."""
        out = alarm_json(event)
        raised = self._raised_at.get(event.rule)
        acked = self._acked.get(event.rule)
        out["raised_at"] = iso_utc(raised)
        out["acknowledged_by"] = acked[0] if acked else None
        out["acknowledged_at"] = iso_utc(acked[1]) if acked else None
        return out

    # -- views

    def has_source(self, source_id: str) -> bool:
        """Whether the source is configured."""
        return source_id in self._source_meta

    def has(self, kind: str, ident: str) -> bool:
        """Whether a source, unit or stream of that id is configured."""
        known = {"source": self._source_meta, "unit": self._unit_meta, "stream": self.streams}
        return ident in known[kind]

    def source_json(self, source_id: str) -> Json:
        """Latest values of one source (nulls before its first minute)."""
        rec = self._sources.get(source_id)
        meta = self._source_meta[source_id]
        out: Json = {"id": meta.id, "name": meta.name, "name_zh": meta.name_zh,
                     "unit": meta.unit, "t": iso_utc(rec.t) if rec else None}
        for name in SOURCE_FIELDS:
            out[name] = num(getattr(rec, name)) if rec else None
        out["valid"] = rec.valid if rec else None
        out["flag"] = rec.flag.name if rec else None
        return out

    def sources_json(self) -> list[Json]:
        """Latest values of every configured source, in configuration order."""
        return [self.source_json(i) for i in self._source_meta]

    def unit_json(self, unit_id: str) -> Json:
        """Latest values of one unit (nulls before its first minute)."""
        rec = self._units.get(unit_id)
        meta = self._unit_meta[unit_id]
        out: Json = {"id": meta.id, "name": meta.name, "name_zh": meta.name_zh,
                     "sources": list(meta.sources), "streams": list(meta.streams),
                     "output_unit": meta.output_unit, "t": iso_utc(rec.t) if rec else None}
        for name in UNIT_FIELDS:
            out[name] = num(getattr(rec, name)) if rec else None
            if name == "co2_today_t":  # its CO2 equivalent next to it
                out["co2e_today_t"] = num(self.co2e_today.today_t(
                    unit_id, rec.t, rec.co2_today_t)) if rec else None
        out["valid"] = rec.valid if rec else None
        out["flag"] = rec.flag.name if rec else None
        return out

    def units_json(self) -> list[Json]:
        """Latest values of every configured unit, in configuration order."""
        return [self.unit_json(i) for i in self._unit_meta]

    def site_json(self) -> Json:
        """Site identity, local time zone and the latest totals and allowance position."""
        cfg = self.config
        site = self._site
        out: Json = {
            "id": cfg.site.id, "name": cfg.site.name, "name_zh": cfg.site.name_zh,
            "timezone": cfg.site.timezone, "minute_seconds": cfg.clock.minute_seconds,
            "t": iso_utc(site.t) if site else None,
        }
        for name in SITE_FIELDS:
            out[name] = num(getattr(site, name)) if site else None
        # One allowance answer (issue 14): the position /allowance serves, at the latest
        # closed hour, not the minute's running figure (which counted the open hour and
        # disagreed with /allowance and OPC UA). The flat fields repeat it for old clients.
        pos = self.allowance[1] if self.allowance is not None else None
        out["allowance_annual_t"] = num(pos.annual_t if pos else cfg.allowance.annual_t)
        out["allowance_used_pct"] = num(pos.used_pct) if pos else None
        out["allowance_headroom_t"] = num(pos.headroom_t) if pos else None
        out["allowance"] = self.allowance_json()
        return out

    def allowance_json(self) -> Json:
        """The allowance position at the end of the latest closed hour (what /allowance
        serves and /site embeds); only {"t": null} before the first closed hour."""
        if self.allowance is None:
            return allowance_json(None, None)
        return allowance_json(*self.allowance)

    def alarms_json(self) -> list[Json]:
        """Listed alarms: alarms, then warnings, then returned ones; newest first in each."""
        events = sorted(self._alarms.values(), key=lambda e: e.t, reverse=True)
        events.sort(key=lambda e: _SEVERITY.get(e.state, 2))
        return [self.alarm_row_json(e) for e in events]

    def snapshot(self) -> Json:
        """Everything a newly connected HMI needs."""
        return {
            "type": "snapshot", "server_time": iso_utc(datetime.now(UTC)),
            "t": iso_utc(self.t), "site": self.site_json(), "units": self.units_json(),
            "sources": self.sources_json(), "alarms": self.alarms_json(),
        }

    def minute_message(self, result: MinuteResult) -> Json:
        """The push message of one minute: the sources and units it reported, and the site."""
        return {
            "type": "minute", "t": iso_utc(result.t),
            "sources": [self.source_json(s.source) for s in result.sources],
            "units": [self.unit_json(u.unit) for u in result.units],
            "site": self.site_json(),
        }
