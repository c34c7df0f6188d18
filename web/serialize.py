"""JSON for the web clients: encoding, times, numbers and the records the API serves."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

from model.records import AlarmEvent, AllowancePosition, AuditRecord, DeliveryRecord
from web.auth import AuditEntryLike

Json = dict[str, Any]

SOURCE_FIELDS: Final = (
    "flow_act_m3_h", "flow_std_dry_m3_h", "co2_dry_pct", "co2_mg_m3", "co2_rate_kg_h",
    "co2_rate_t_h", "co2_kg", "co2_hour_t", "co2_today_t", "co2_ytd_t",
)
UNIT_FIELDS: Final = (
    "output_mwh", "co2_kg", "intensity_t_mwh", "co2_today_t", "output_today_mwh",
    "intensity_today_t_mwh", "co2_ytd_t",
)
SITE_FIELDS: Final = (
    "co2_kg", "co2_today_t", "co2_ytd_t", "allowance_annual_t", "allowance_used_pct",
    "allowance_headroom_t",
)


def dumps(obj: Any) -> str:
    """Encode JSON for clients; refuses NaN/Infinity, which the serializers turn into null."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def iso_utc(t: datetime | None) -> str | None:
    """ISO 8601 UTC with a "Z" suffix (milliseconds only when the time has them)."""
    if t is None:
        return None
    spec = "milliseconds" if t.microsecond else "seconds"
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def iso_local(t: datetime, tz: tzinfo) -> str:
    """ISO 8601 in plant local time with its offset, e.g. 2026-01-01T08:00:00+08:00."""
    spec = "milliseconds" if t.microsecond else "seconds"
    return t.astimezone(tz).isoformat(timespec=spec)


def num(x: float | None) -> float | None:
    """A finite float, or None for missing, NaN and infinite values (JSON null)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def alarm_json(event: AlarmEvent) -> Json:
    """JSON form of an alarm event."""
    return {
        "rule": event.rule,
        "t": iso_utc(event.t),
        "state": event.state,
        "previous": event.previous,
        "value": num(event.value),
        "limit": num(event.limit),
        "target": event.target,
        "message": event.message,
        "message_zh": event.message_zh,
        "ack_state": event.ack_state,
        "previous_ack_state": event.previous_ack_state,
        "cause": event.cause,
        "kind": event.kind,
        "area": event.area,
        "user": event.user,
        "comment": event.comment,
        "shelved_until": iso_utc(event.shelved_until),
    }


def listed(event: AlarmEvent) -> bool:
    """Whether the HMI lists the alarm: every ISA-18.2 state but normal.

    Returned-unacknowledged, shelved, suppressed and out-of-service stay listed. An
    event without an ISA-18.2 state is listed while its condition is not normal.
    """
    if event.ack_state:
        return event.ack_state != "normal"
    return event.state != "normal"


def audit_record_json(rec: AuditRecord) -> Json:
    """JSON form of an alarm action's audit record."""
    return {"t": iso_utc(rec.t), "user": rec.user, "action": rec.action, "rule": rec.rule,
            "comment": rec.comment, "until": iso_utc(rec.until)}


def delivery_json(rec: DeliveryRecord) -> Json:
    """JSON form of one line of the notification delivery log."""
    return {"t": iso_utc(rec.t), "channel": rec.channel, "rule": rec.rule, "state": rec.state,
            "kind": rec.kind, "outcome": rec.outcome, "attempt": rec.attempt,
            "error": rec.error}


def audit_entry_json(entry: AuditEntryLike) -> Json:
    """JSON form of one audit log entry."""
    return {"seq": entry.seq, "t": iso_utc(entry.t), "user": entry.user,
            "action": entry.action, "target": entry.target,
            "detail": dict(entry.detail) if entry.detail is not None else None,
            "prev_hash": entry.prev_hash, "hash": entry.hash}


def row_json(row: dict[str, Any]) -> Json:
    """JSON form of a stored hour or day row: ISO times, null for missing numbers."""
    out: Json = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = iso_utc(value)
        elif isinstance(value, float):
            out[key] = num(value)
        else:
            out[key] = value
    return out


def allowance_json(t: datetime | None, pos: AllowancePosition | None) -> Json:
    """JSON form of the allowance position at `t` (nulls before the first closed hour)."""
    fields = {k: num(v) for k, v in asdict(pos).items()} if pos is not None else {}
    return {"t": iso_utc(t), **fields}
