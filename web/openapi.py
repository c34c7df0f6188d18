"""The OpenAPI 3.1 description of the web sink, served at /api/v1/openapi.json, and a page
rendering it at /api/v1/docs.

Written by hand next to the routes of web/handlers.py, web/history.py and
web/monitoring.py; tests/web/test_openapi.py checks that every route is described and
tests/web/test_openapi_schemathesis.py that the answers match it. The page is rendered
on the server as plain HTML and CSS (no script, nothing from outside: the control room
has no internet, and the CSP allows only the server itself).
"""

from __future__ import annotations

import html
from typing import Any, Final

from aiohttp import web

from compute.assets import CSV_HEADER as CARBON_CSV_HEADER
from compute.assets import KINDS as CARBON_KINDS
from model.accounts import ROLES
from model.times import MAX_YEAR, MIN_YEAR
from web.admin import MAX_NAME, MAX_PASSWORD
from web.auth import COOKIE, CSRF_HEADER
from web.cases import ROLE_OF_EVENT as CASE_ROLE_OF_EVENT
from web.cases import STATES as CASE_STATES
from web.history import MAX_MINUTE_ROWS, MAX_POINTS, SOURCE_MINUTE_FIELDS
from web.records import CSV_COLUMNS, REVISED_TABLES, ROLE_OF_KIND
from web.reports import FORMATS as REPORT_FORMATS
from web.reports import KINDS as REPORT_KINDS
from web.serialize import SITE_FIELDS, SOURCE_FIELDS, UNIT_FIELDS, Json, dumps

VERSION: Final = "1.0.0"

_NUM: Final = {"type": ["number", "null"]}
_STR_OR_NULL: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": ["string", "null"], "description": "ISO 8601"}
_INT: Final = {"type": "integer"}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: tuple[str, ...] | None = None,
         extra: bool = True) -> Json:
    """An object schema; every listed property required unless `required` says otherwise."""
    out: Json = {"type": "object", "properties": props,
                 "required": list(props if required is None else required)}
    if not extra:
        out["additionalProperties"] = False
    return out


_ALLOWANCE_FIELDS: Final = ("annual_t", "ytd_t", "year_fraction", "days_left",
                            "trailing_30d_t", "prorated_t", "used_pct", "headroom_t",
                            "forecast_year_end_t", "forecast_shortfall_t",
                            "carbon_price_cny_t", "shortfall_cost_cny")

_STATS: Final = _obj({"min": _NUM, "max": _NUM, "mean": _NUM})

SCHEMAS: Final[dict[str, Json]] = {
    "Error": _obj({"error": {"type": "string"},
                   "problems": {"type": "array", "items": _obj(
                       {"path": {"type": "string"}, "problem": {"type": "string"}})}},
                  required=("error",)),
    "Source": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                    "name_zh": {"type": "string"}, "unit": {"type": "string"}, "t": _TIME,
                    **{f: _NUM for f in SOURCE_FIELDS},
                    "valid": {"type": ["boolean", "null"]}, "flag": _STR_OR_NULL}),
    "Unit": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                  "name_zh": {"type": "string"},
                  "sources": {"type": "array", "items": {"type": "string"}},
                  "streams": {"type": "array", "items": _obj(
                      {"id": {"type": "string"}, "name": {"type": "string"},
                       "name_zh": {"type": "string"}, "quantity_unit": {"type": "string"}})},
                  "output_unit": {"type": "string", "enum": ["MWh", "t"], "description": (
                      "what the unit's output is in: MWh, or t of a product (hot metal, "
                      "lime …); an entered output is in it")},
                  "t": _TIME, **{f: _NUM for f in UNIT_FIELDS},
                  "co2e_today_t": {**_NUM, "description": (
                      "CO2 equivalent of the plant day so far (t): co2_today_t + the other "
                      "gases (CH4, N2O … · GWP) of the unit's closed hours of the day; "
                      "OPC UA Units/<unit>/CO2eToday.")},
                  "valid": {"type": ["boolean", "null"]}, "flag": _STR_OR_NULL}),
    "Allowance": {**_obj({"t": _TIME, **{f: _NUM for f in _ALLOWANCE_FIELDS}},
                         required=("t",)),
                  "description": "Year-to-date emissions against the annual allowance at "
                                 "the end of the latest closed hour; only t (null) before "
                                 "the first closed hour."},
    "Site": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                  "name_zh": {"type": "string"}, "timezone": {"type": "string"},
                  "minute_seconds": {"type": "number"}, "t": _TIME,
                  **{f: _NUM for f in SITE_FIELDS}, "allowance": _ref("Allowance")}),
    "Alarm": _obj({"rule": {"type": "string"}, "t": _TIME, "state": {"type": "string"},
                   "previous": {"type": "string"}, "value": _NUM, "limit": _NUM,
                   "target": {"type": "string"}, "message": {"type": "string"},
                   "message_zh": {"type": "string"}, "ack_state": {"type": "string"},
                   "previous_ack_state": {"type": "string"}, "cause": {"type": "string"},
                   "kind": {"type": "string"}, "area": {"type": "string"},
                   "user": {"type": "string"}, "comment": {"type": "string"},
                   "shelved_until": _TIME}),
    # An alarm as the HMI lists it (GET /alarms, WebSocket "alarm" messages, the result
    # of an action): the event, when its condition began and who acknowledged it.
    "ActiveAlarm": {"allOf": [_ref("Alarm"), _obj({
        "raised_at": {**_TIME, "description": "ISO 8601 UTC: when the condition began "
                                                "(null if unknown, e.g. after a restart)"},
        "acknowledged_by": _STR_OR_NULL, "acknowledged_at": _TIME})]},
    "Devices": _obj({"buses": {"type": "array", "items": {"type": "object"}}}),
    "DeviceTags": _obj({"device": {"type": "string"}, "t": {"type": "string"},
                        "tags": {"type": "array", "items": _ref("RawTag")}}),
    "RawTag": {**_obj({"tag": {"type": "string"}, "name": {"type": "string"},
                       "name_en": {"type": "string"}, "unit": {"type": "string"},
                       "value": _NUM, "flag": _STR_OR_NULL,
                       "quality": {"enum": ["good", "uncertain", "bad", None]},
                       "t": _TIME, "age_s": _NUM}),
               "description": "The newest raw reading of one tag; flag, quality, t and age_s "
                              "are null before its first poll, value null for no value."},
    "PeriodRow": {**_obj({"t": {"type": "string"}, "valid": {"type": "boolean"},
                          "flag": {"type": "string"},
                          # CO2e (streams and units; compute/gases.py)
                          "co2e_t": _NUM, "gwp_set": {"type": "string"},
                          "ch4_t": _NUM, "n2o_t": _NUM, "gas": {"type": "string"},
                          "gas_t": _NUM},
                         required=("t", "valid", "flag")),
                  "description": "A stored hour or day: the historian's columns, times in "
                                 "UTC, null for missing numbers. Streams and units carry "
                                 "co2e_t (CO2 + Σ gas · GWP) and gwp_set (the GWP set it "
                                 "used, e.g. AR5); streams their other gases in t: ch4_t, "
                                 "n2o_t, and a ghg stream's `gas` with gas_t for any other."},
    "Minute": _obj({"t": {"type": "string"}, "t_end": {"type": "string"},
                    "flag": {"type": "string"}, "valid": {"type": "boolean"},
                    "substitution": {"type": "string"}, "count": _INT,
                    "mean": _NUM, "min": _NUM, "max": _NUM,
                    **{f: _NUM for f in SOURCE_MINUTE_FIELDS}, "output_mwh": _NUM,
                    "intensity_t_mwh": _NUM},
                   required=("t", "t_end", "flag")),
    "Bucket": {**_obj({"t": {"type": "string"}, "t_end": {"type": "string"}, "n": _INT,
                       "n_valid": _INT, "count": _INT,
                       "flags": {"type": "object",
                                 "additionalProperties": {"type": "integer"}},
                       "min": {"oneOf": [_NUM, _STATS]}, "max": {"oneOf": [_NUM, _STATS]},
                       "mean": {"oneOf": [_NUM, _STATS]},
                       **{f: _STATS for f in SOURCE_MINUTE_FIELDS}, "output_mwh": _STATS,
                       "intensity_t_mwh": _STATS},
                      required=("t", "t_end", "n", "flags")),
               "description": "Minutes t ≤ minute < t_end: per value of a source or unit "
                              "its min, max and mean; of a tag the min of the minute "
                              "minimums, the max of the maximums, the mean weighted by "
                              "the sample counts and the summed count."},
    "MinuteSeries": _obj({
        "kind": {"enum": ["source", "unit", "tag"]}, "id": {"type": "string"},
        "from": {"type": "string"}, "to": {"type": "string"},
        "timezone": {"type": "string"}, "minute_seconds": {"type": "number"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "points": {"type": ["integer", "null"]}, "bucket_seconds": {"type": "number"},
        "minutes": {"type": "array", "items": _ref("Minute")},
        "buckets": {"type": "array", "items": _ref("Bucket")}},
        required=("kind", "id", "from", "to", "timezone", "minute_seconds", "fields",
                  "points")),
    "Month": _obj({"month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                   "t": {"type": "string"}, "t_end": {"type": "string"}, "days": _INT,
                   "valid_days": _INT, "co2_t": _NUM, "co2_measured_t": _NUM,
                   "n_valid": _INT, "n_substituted": _INT, "n_missing": _INT,
                   "substituted_days": _INT, "co2_cems_t": _NUM, "co2_factor_t": _NUM,
                   "output_mwh": _NUM, "intensity_t_mwh": _NUM, "output_t": _NUM,
                   "intensity_t_t": _NUM,
                   "reconciliation_exceeded_days": _INT, "co2e_t": _NUM,
                   "gwp_set": {"type": "string"}},
                  required=("month", "t", "t_end", "days", "valid_days")),
    "Session": _obj({"user": {"type": "string"}, "role": {"type": "string"},
                     "csrf_token": {"type": "string"}, "expires": {"type": "string"},
                     "idle_timeout_s": {"type": "number"}}),
    "LoggedOut": _obj({"user": {"type": "null"}}),
    "AuditRecord": _obj({"t": _TIME, "user": {"type": "string"},
                         "action": {"type": "string"}, "rule": {"type": "string"},
                         "comment": {"type": "string"}, "until": _TIME}),
    "AlarmActionResult": _obj({"audit": _ref("AuditRecord"),
                               "alarm": {"oneOf": [_ref("ActiveAlarm"),
                                                             {"type": "null"}]}}),
    "Delivery": _obj({"t": _TIME, "channel": {"type": "string"}, "rule": {"type": "string"},
                      "state": {"type": "string"}, "kind": {"type": "string"},
                      "outcome": {"type": "string"}, "attempt": _INT,
                      "error": {"type": "string"}}),
    "AuditEntry": _obj({"seq": _INT, "t": _TIME, "user": {"type": "string"},
                        "action": {"type": "string"}, "target": {"type": "string"},
                        "detail": {"type": ["object", "null"]},
                        "prev_hash": {"type": "string"}, "hash": {"type": "string"}}),
    "AlarmRule": {"type": "object", "description": "An alarm rule as configured "
                                                   "(alarms/config.py)."},
    "User": {**_obj({"name": {"type": "string"}, "role": {"enum": list(ROLES)},
                     "created": {"type": "string"}, "updated": {"type": "string"}},
                    extra=False),
             "description": "A login account (never its password hash); times ISO 8601 "
                            "UTC, updated = the last change of role or password."},
    "UserRemoved": _obj({"removed": {"type": "string"}}),
    # The instrument register (web/instruments.py, web/register.py).
    "Instrument": {**_obj({
        "tag": {"type": "string"}, "device": {"type": "string"},
        "protocol": {"type": "string"}, "unit": {"type": "string"},
        "description": {"type": "string"}, "description_zh": {"type": "string"},
        "used_by": {"type": "array", "items": {"type": "string"}},
        "serial": _STR_OR_NULL, "model": _STR_OR_NULL, "accuracy_pct": _NUM,
        "calibrated_on": {"type": ["string", "null"], "format": "date"},
        "calibration_interval_days": {"type": ["integer", "null"]},
        "verified_by": _STR_OR_NULL, "certificate": _STR_OR_NULL,
        "calibration_due": {"type": ["string", "null"], "format": "date"},
        "days_to_due": {"type": ["integer", "null"]},
        "state": {"enum": ["ok", "due_soon", "overdue", "unregistered"]}}),
        "description": "One tag and its instrument; the instrument fields are null for an "
                       "unregistered tag. Dates are plant-local; accuracy_pct is % of "
                       "reading; days_to_due < 0 once overdue."},
    "SourceUncertainty": {**_obj({
        "source": {"type": "string"}, "unit": {"type": "string"},
        "co2_rel_uncertainty_pct": _NUM, "co2_rel_expanded_uncertainty_pct": _NUM,
        "coverage_factor": {"type": "number"},
        "inputs": {"type": "array", "items": _obj({
            "input": {"type": "string"}, "tag": _STR_OR_NULL, "constant": _NUM,
            "accuracy_pct": _NUM, "rel_std_uncertainty_pct": _NUM,
            "sensitivity": {"type": "number"},
            "state": {"enum": ["ok", "due_soon", "overdue", "unregistered", None]}})},
        "missing": {"type": "array", "items": {"type": "string"}},
        "periods": {"type": "array", "items": {"type": "string"}}}),
        "description": "Relative standard uncertainty (%) of the source's CO2 mass from its "
                       "instruments: accuracy a → a/√3, root-sum-square of sensitivity × "
                       "u over the inputs (IPCC 2006 Vol. 1 eq. 3.1); the same for an "
                       "hour, a day and a year (systematic errors). Null while an input "
                       "tag has no instrument (listed in missing)."},
    # The uncertainty of units' and the site's totals (web/uncertainty.py).
    "TotalUncertainty": {**_obj({
        "co2_t": _NUM, "co2_rel_uncertainty_pct": _NUM,
        "co2_rel_expanded_uncertainty_pct": _NUM, "co2_expanded_uncertainty_t": _NUM,
        "no_data": {"type": "array", "items": {"type": "string"}},
        "unknown": {"type": "array", "items": {"type": "string"}}}),
        "description": "The CO2 total of the sources with data (t) and its uncertainty: "
                       "relative standard (k = 1, %), relative and absolute expanded "
                       "(k = 2). Combined per instrument, so that one shared by several "
                       "sources counts once; for independent sources IPCC 2006 Vol. 1 eq. "
                       "3.2. no_data: sources without a value, left out; unknown: sources "
                       "with a mass and an input without instrument (the figures are then "
                       "null, as for a zero total or no data)."},
    "Uncertainty": _obj({
        "level": {"enum": ["hour", "day", "year"]}, "t": {"type": "string"},
        "t_end": {"type": "string"}, "coverage_factor": {"type": "number"},
        "sources": {"type": "array", "items": _obj({
            "source": {"type": "string"}, "unit": {"type": "string"}, "co2_t": _NUM,
            "co2_rel_uncertainty_pct": _NUM})},
        "units": {"type": "array", "items": {"allOf": [
            _obj({"unit": {"type": "string"}}), _ref("TotalUncertainty")]}},
        "site": _ref("TotalUncertainty")}),
    # The boundary tree site → process → facility rolled up (web/boundaries.py).
    "BoundaryNode": {**_obj({
        "level": {"enum": ["site", "process", "facility"]}, "id": {"type": "string"},
        "name": {"type": "string"}, "name_zh": {"type": "string"}, "kind": {"type": "string"},
        "co2_t": _NUM, "co2e_t": _NUM, "output_mwh": _NUM, "output_t": _NUM,
        "share_of_parent_pct": _NUM, "share_of_site_pct": _NUM,
        "co2e_share_of_parent_pct": _NUM, "co2e_share_of_site_pct": _NUM,
        "complete": {"type": "boolean"}, "valid": {"type": "boolean"}, "n_valid": _INT,
        "n_invalid": _INT, "missing": {"type": "array", "items": {"type": "string"}},
        "children": {"type": "array", "items": {"$ref": "#/components/schemas/BoundaryNode"}}}),
        "description": "CO2 and CO2e (t) of the facilities below over the stored periods; "
                       "complete: every facility below has a value in every period (else "
                       "the totals are of what is known and `missing` names the rest); "
                       "shares in % of the parent and of the site, null unless the node and "
                       "the whole are complete and the whole > 0; n_valid / n_invalid: the "
                       "children (a facility's: its emission points) valid in every period."},
    "Boundaries": _obj({
        "level": {"enum": ["hour", "day", "month", "year"]}, "label": {"type": "string"},
        "t": {"type": "string"}, "t_end": {"type": "string"}, "timezone": {"type": "string"},
        "periods_stored": _INT, "periods_ended": _INT, "site": _ref("BoundaryNode")}),
    "BoundaryTree": _obj({
        "site": _obj({"id": {"type": "string"}, "name": {"type": "string"},
                      "name_zh": {"type": "string"}}),
        "processes": {"type": "array", "items": _obj({
            "id": {"type": "string"}, "name": {"type": "string"},
            "name_zh": {"type": "string"}, "kind": {"type": "string"},
            "implicit": {"type": "boolean"},
            "facilities": {"type": "array", "items": _obj({
                "id": {"type": "string"}, "name": {"type": "string"},
                "name_zh": {"type": "string"}, "output_unit": {"type": "string"},
                "sources": {"type": "array", "items": {"type": "string"}},
                "streams": {"type": "array", "items": {"type": "string"}}})}})}}),
    "InstrumentRegister": _obj({
        "t": {"type": "string"}, "date": {"type": "string", "format": "date"},
        "timezone": {"type": "string"}, "due_soon_days": _INT,
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "instruments": {"type": "array", "items": {"$ref": "#/components/schemas/Instrument"}},
        "sources": {"type": "array",
                    "items": {"$ref": "#/components/schemas/SourceUncertainty"}}}),
}


def _json_response(description: str, schema: Json) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Json:
    return _json_response(description, _ref("Error"))


def _text(description: str, content_type: str = "text/plain") -> Json:
    return {"description": description,
            "content": {content_type: {"schema": {"type": "string"}}}}


def _array(name: str) -> Json:
    return {"type": "array", "items": _ref(name)}


def _id(example: str) -> Json:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
            "example": example}


# Examples of ids, per kind (those of the demo plant).
_EXAMPLE_ID: Final = {"source": "S1", "unit": "U1", "stream": "U1_coal", "tag": "s1_co2"}
_ID: Final = _id("S1")
_RULE: Final = {"name": "rule", "in": "path", "required": True,
                "schema": {"type": "string"}}


def _time_query(name: str, what: str, example: str) -> Json:
    return {"name": name, "in": "query", "required": True, "example": example,
            "description": f"{what}: ISO 8601 with a UTC offset, e.g. "
                           "2026-11-21T00:00:00+08:00, from 1970-01-01T00:00:00Z to "
                           "2200-01-01T00:00:00Z",
            "schema": {"type": "string", "format": "date-time"}}


_RANGE: Final = [_time_query("from", "start (included)", "2026-01-01T08:00:00+08:00"),
                 _time_query("to", "end (excluded)", "2026-01-01T10:00:00+08:00")]
_NOT_FOUND: Final = {"404": _error("no such id")}
_BAD: Final = {"400": _error("a parameter is missing or wrong; the message names it")}
_NO_HISTORIAN: Final = {"503": _error("the server runs without a historian")}
_LOGIN: Final = {"401": _error("not logged in"),
                 "403": _error("the role is too low (or, for a change, the CSRF token is "
                               "missing or wrong)")}
_COOKIE: Final[list[dict[str, list[str]]]] = [{"session": []}]
_COMMENT_BODY: Final = {"required": True, "content": {"application/json": {"schema": _obj(
    {"comment": {"type": "string", "minLength": 1, "maxLength": 1000}})}}}


def _get(summary: str, ok: Json, *, params: list[Json] | None = None,
         errors: dict[str, Json] | None = None, tags: tuple[str, ...] = (),
         auth: bool = False) -> Json:
    op: Json = {"summary": summary, "tags": list(tags),
                "responses": {"200": ok, **(errors or {})}}
    if params:
        op["parameters"] = params
    if auth:
        op["security"] = _COOKIE
    return op


def _change(summary: str, ok: Json, body: Json | None, *, errors: dict[str, Json],
            tags: tuple[str, ...], status: str = "200", auth: bool = True) -> Json:
    op: Json = {"summary": summary, "tags": list(tags), "responses": {status: ok, **errors}}
    if body is not None:
        op["requestBody"] = body
    if auth:
        op["security"] = [{"session": [], "csrf": []}]
    return op


def _periods(kind: str, level: str) -> Json:
    return _get(f"Stored {level} of one {kind}, oldest first (times UTC)",
                _json_response(f"the {level}", _array("PeriodRow")),
                params=[_id(_EXAMPLE_ID[kind]), *_RANGE],
                errors={**_BAD, **_NOT_FOUND, **_NO_HISTORIAN}, tags=("history",))


def _minutes(kind: str) -> Json:
    what = {"source": "the minute results incl. flags and substitution",
            "unit": "the unit's minute values (output, CO₂, intensity)",
            "tag": "the minute statistics (min, max, mean, count) of the raw tag"}[kind]
    points = {"name": "points", "in": "query", "required": False,
              "description": f"cut the range into at most this many buckets of whole minutes "
                             f"(1 to {MAX_POINTS}), keeping min, max and mean; without it at "
                             f"most {MAX_MINUTE_ROWS} minutes are answered one by one",
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_POINTS},
              "example": 4}
    return _get(f"Stored minutes of one {kind} over a range (at most 31 days): {what}; "
                "times in plant local time with the offset",
                _json_response("the minutes, or the buckets with points", _ref("MinuteSeries")),
                params=[_id(_EXAMPLE_ID[kind]), *_RANGE, points],
                errors={**_BAD, **_NOT_FOUND, **_NO_HISTORIAN}, tags=("history",))


def _months(kind: str) -> Json:
    return _get(f"Stored days of one {kind} summed by plant-local calendar month "
                "(at most 3660 days)",
                _json_response("the months, oldest first", _array("Month")),
                params=[_id(_EXAMPLE_ID[kind]), *_RANGE],
                errors={**_BAD, **_NOT_FOUND, **_NO_HISTORIAN}, tags=("history",))


_ENTRY: Final = _obj({
    "id": _INT, "entered": {"type": "string"}, "user": {"type": "string"},
    "kind": {"enum": list(ROLE_OF_KIND)}, "target": {"type": "string"},
    "level": {"type": "string"}, "t": {"type": "string"}, "t_end": _STR_OR_NULL,
    "fields": {"type": "object"}, "unit": {"type": "string"}, "document": {"type": "string"},
    "reason": {"type": "string"}}, required=("id", "entered", "user", "kind", "t", "fields"))
_APPLIED: Final = _obj({"entry": _ENTRY, "recalculated_from": _STR_OR_NULL,
                        "hours": _INT, "days": _INT, "rows_revised": _INT})
_ENTRY_BODY: Final = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["kind"], "properties": {"kind": {"enum": list(ROLE_OF_KIND)}},
    "description": (
        "One entry; by kind: factor {factors, effective_from, values {ncv_gj_t …}, units?, "
        "document, reason?} · quantity {target stream:ID|unit:ID, level hour|day, t, value, "
        "unit, document} · correction {target source:ID|stream:ID|unit:ID, level "
        "minute|hour|day, t, values, reason} · qa_check {source, t, check zero|span, "
        "parameter co2|o2|flow, reference_value, measured_value, full_scale, unit} · ra_test "
        "{source, t, parameter, reference [], cems [], unit, document} · lock {start, end, "
        "reason} (admin) · unlock {lock, reason} (admin). Times ISO 8601 with offset; a "
        "period's t is its start in plant time.")}}}}
_CSV_BODY: Final = {"required": True, "content": {"text/csv": {"schema": {
    "type": "string", "description": "header " + ",".join(CSV_COLUMNS) + "; one value a row"}}}}


def _boundary_paths(api: str) -> dict[str, Json]:
    """The boundary routes of web/boundaries.py."""
    level = {"name": "level", "in": "query", "required": False,
             "schema": {"enum": ["hour", "day", "month", "year"], "default": "day"},
             "description": "hour: the plant hour containing t (default the last complete "
                            "one); day: the plant-local day containing t (default "
                            "yesterday); month, year: the plant-local month or year "
                            "containing t (default the current one), its stored days"}
    t = {"name": "t", "in": "query", "required": False, "example": "2026-11-21",
         "schema": {"type": "string"},
         "description": "a time in the period, ISO 8601 with a UTC offset, or a plant-local "
                        "date: 2026-11-21 (day, month, year), 2026-11 (month, year), 2026 "
                        "(year)"}
    return {
        f"{api}/boundaries": {"get": _get(
            "CO2 and CO2e of the site, each process (accounting unit) and each facility "
            "over an hour, day, month or year, with each one's share of its parent and of "
            "the site",
            _json_response("the rolled-up tree (times plant local)", _ref("Boundaries")),
            params=[level, t], errors={**_BAD, **_NO_HISTORIAN}, tags=("history",))},
        f"{api}/boundaries/tree": {"get": _get(
            "The boundary tree: the site, its processes and their facilities and emission "
            "points", _json_response("the tree", _ref("BoundaryTree")), tags=("live",))},
    }


def _monitoring_plan_paths(api: str) -> dict[str, Json]:
    """The monitoring plan's routes of web/monitoring_plan_api.py."""
    row = {"type": "object", "additionalProperties": True}
    plan = _json_response("one row per monitored parameter: unit of measure, how it is "
                          "obtained, planned frequency, instrument and accuracy, missing-"
                          "data rule, owner", {"type": "object", "properties": {
                              "t": {"type": "string"},
                              "parameters": {"type": "array", "items": row}}})
    day = {"name": "day", "in": "query", "required": True, "example": "2026-12-01",
           "schema": {"type": "string", "format": "date"},
           "description": "a closed plant-local day, YYYY-MM-DD"}
    check = _json_response("per parameter: readings planned and received, capture rate, "
                           "instrument calibration, substituted hours, verdict and why",
                           {"type": "object", "properties": {
                               "day": {"type": "string"}, "conforms": {"type": "boolean"},
                               "deviations": _INT, "summary": {"type": "string"},
                               "parameters": {"type": "array", "items": row}}})
    none = {"503": _error("this server has no monitoring plan")}
    return {
        f"{api}/monitoring-plan": {"get": _get(
            "The monitoring plan generated from the configuration", plan, errors=none,
            tags=("monitoring plan",))},
        f"{api}/monitoring-plan/conformity": {"get": _get(
            "The check of one closed plant-local day against the monitoring plan", check,
            params=[day], errors={"400": _error("no date, or not one"),
                                  "404": _error("no such closed day stored"), **none},
            tags=("monitoring plan",))}}


def _report_paths(api: str) -> dict[str, Json]:
    """The report route of web/reports.py."""
    files = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
             "csv": "text/csv", "pdf": "application/pdf"}
    ok = {"description": "the report file (Content-Disposition: attachment)",
          "content": {files[f]: {"schema": {"type": "string", "format": "binary"}}
                      for f in REPORT_FORMATS}}
    kind = {"name": "kind", "in": "path", "required": True, "example": "daily",
            "description": f"{', '.join(REPORT_KINDS)} (the carbon-market platform's monthly "
                           "workbook), or the name of a custom definition "
                           "(reports.definitions)", "schema": {"type": "string"}}
    fmt = {"name": "format", "in": "query", "required": False, "example": "csv",
           "schema": {"enum": list(REPORT_FORMATS), "default": "xlsx"}}
    return {f"{api}/reports/{{kind}}": {"get": _get(
        "An emission report over whole plant-local days, months or years: site, units, "
        "sources (capture rate, substituted hours and their rule), streams (factor "
        "versions), allowance; Chinese and English headers, every column's unit in its name",
        ok, params=[kind, *_RANGE, fmt],
        errors={**_BAD, "404": _error("unknown report kind"),
                "503": _error("this server makes no reports")}, tags=("reports",))}}


def _record_paths(api: str) -> dict[str, Json]:
    """The entries routes of web/records.py."""
    keeper = {"503": _error("this server keeps no entries")}
    write = {**_BAD, **_LOGIN, **keeper,
             "409": _error("the entry would change a locked period")}
    return {
        f"{api}/entries": {
            "get": _get("Every entry people made (lab data, quantities, corrections, QA, "
                        "locks), oldest first",
                        _json_response("the entries", {"type": "array", "items": _ENTRY}),
                        params=[{"name": "kind", "in": "query", "required": False,
                                 "schema": {"enum": list(ROLE_OF_KIND)}}],
                        errors={**_BAD, **keeper}, tags=("records",)),
            "post": _change("Make one entry (engineer; locks admin): checked, kept in the "
                            "append-only ledger, audited, and the closed periods it changes "
                            "recalculated", _json_response("the entry and what it changed",
                                                           _APPLIED),
                            _ENTRY_BODY, errors=write, tags=("records",), status="201")},
        f"{api}/entries/import": {"post": _change(
            "Lab and manual data as CSV (engineer): rows of one kind, target, period, "
            "document and reason make one entry",
            _json_response("the entries made", _obj({"entries": {
                "type": "array", "items": _APPLIED}})),
            _CSV_BODY, errors={**write, "413": _error("too large")}, tags=("records",),
            status="201")},
        f"{api}/locks": {"get": _get("The locked periods in force",
                                     _json_response("the locks", {"type": "array",
                                                                  "items": _ENTRY}),
                                     errors=keeper, tags=("records",))},
        f"{api}/qa": {"get": _get(
            "CEMS quality assurance: out-of-control intervals per source, the latest zero / "
            "span checks and comparison tests with their verdicts",
            _json_response("the QA state", _obj({
                "out_of_control": {"type": "object"},
                "checks": {"type": "array", "items": _ENTRY},
                "comparison_tests": {"type": "array", "items": _ENTRY}})),
            errors=keeper, tags=("records",))},
        f"{api}/revisions": {"get": _get(
            "Every version of one stored value: the earlier rows, each with the entry that "
            "replaced it, and the current row",
            _json_response("the versions", _obj({
                "table": {"type": "string"}, "id": {"type": "string"},
                "t": {"type": "string"}, "versions": {"type": "array"},
                "current": {"type": ["object", "null"]}})),
            params=[{"name": "table", "in": "query", "required": True,
                     "schema": {"enum": list(REVISED_TABLES)}, "example": "source_hour"},
                    {"name": "id", "in": "query", "required": True,
                     "schema": {"type": "string"}, "example": "S1"},
                    _time_query("t", "start of the period", "2026-01-01T08:00:00+08:00")],
            errors={**_BAD, **keeper}, tags=("records",))},
    }


_NUM_OR_NULL: Final = {"type": ["number", "null"]}
_CARBON_ENTRY: Final = _obj({
    "id": _INT, "kind": {"enum": list(CARBON_KINDS)}, "t": {"type": "string"}, "year": _INT,
    "instrument": {"type": "string"}, "quantity_t": _NUM_OR_NULL, "side": {"type": "string"},
    "price_cny_t": _NUM_OR_NULL, "counterparty": {"type": "string"},
    "vintage": {"type": ["integer", "null"]}, "reverses": {"type": ["integer", "null"]},
    "document": {"type": "string"}, "user": {"type": "string"}, "reason": {"type": "string"},
    "reversed_by": {"type": ["integer", "null"]}},
    required=("id", "kind", "t", "year", "instrument", "quantity_t", "side", "user"))
_HOLDING: Final = _obj({k: {"type": "number"} for k in (
    "allocated_t", "bought_t", "sold_t", "transferred_in_t", "transferred_out_t",
    "surrendered_t", "held_t")} | {"instrument": {"type": "string"}})
_POSITION_NUMBERS: Final = (
    "allowances_t", "offsets_held_t", "offset_limit_pct", "offsets_eligible_t", "surplus_t",
    "deficit_t", "surrendered_t", "days_to_deadline_d", "reductions_t", "renewable_mwh",
    "renewable_avoided_t", "green_certificate_avoided_t", "ccus_t")
_POSITION_NULLABLE: Final = (
    "emissions_t", "price_cny_t", "deficit_cost_cny", "holdings_value_cny",
    "forecast_year_end_t", "forecast_low_t", "forecast_high_t", "forecast_deficit_t",
    "forecast_rate_t_d", "net_emissions_t")
_POSITION: Final = _obj({
    "year": _INT, "emissions_basis": {"enum": ["verified", "live"]},
    **{k: {"type": "number"} for k in _POSITION_NUMBERS},
    **{k: _NUM_OR_NULL for k in _POSITION_NULLABLE},
    "price_t": _STR_OR_NULL, "surrender_deadline": {"type": "string", "format": "date"},
    "holdings": {"type": "array", "items": _HOLDING}},
    required=("year", "emissions_t", "emissions_basis", "allowances_t", "offsets_eligible_t",
              "surplus_t", "deficit_t", "deficit_cost_cny"))
_MONTH_TREND: Final = _obj({
    **{k: {"type": "number"} for k in (
        "month", "emissions_t", "cumulative_t", "allowance_prorated_t", "gap_t", "days",
        "output_mwh")},
    **{k: _NUM for k in ("intensity_t_mwh", "intensity_target_t_mwh",
                         "intensity_gap_t_mwh")}})
_CARBON_BODY: Final = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["kind"],
    "properties": {"kind": {"enum": list(CARBON_KINDS)}},
    "description": (
        "One carbon-ledger entry; every kind takes t? (ISO 8601 with offset, default now), "
        "document?, reason?. allocation {year, instrument national_allowance|"
        "local_allowance, side pre|final|adjustment, quantity_t} · acquisition {year, "
        "instrument, quantity_t, price_cny_t?, counterparty?, vintage?} · trade {year, "
        "instrument, side buy|sell, quantity_t, price_cny_t, counterparty?, vintage?} · "
        "surrender {year, instrument, quantity_t} · transfer {year, instrument, side in|out, "
        "quantity_t, counterparty?} · price {price_cny_t, instrument?, year?} · reduction "
        "{year, side renewable_mwh|green_certificate_mwh|ccus_t, quantity_t (MWh or t)} · "
        "verified {year, quantity_t} · reversal {reverses, reason}. Instruments: "
        "national_allowance, local_allowance, ccer, other_offset.")}}}}


_PROGRESS_T: Final = (
    "co2_ytd_t", "co2_qtd_t", "baseline_co2_t", "normalised_baseline_ytd_t", "vs_baseline_t",
    "vs_baseline_pct", "target_year_t", "target_quarter_t", "target_ytd_t",
    "target_ytd_quarters_t", "target_qtd_t", "deviation_ytd_t", "deviation_ytd_pct",
    "deviation_ytd_quarters_t", "deviation_ytd_quarters_pct", "deviation_qtd_t",
    "deviation_qtd_pct", "intensity_deviation_pct", "target_used_pct")
# A power unit's outputs end in _mwh and intensities in _t_mwh, a product unit's in _t, _t_t.
_PROGRESS_VARIANT: Final = tuple(
    f"{k}{sfx}" for k, sfxs in (
        ("output_ytd", ("_mwh", "_t")), ("output_qtd", ("_mwh", "_t")),
        ("baseline_output", ("_mwh", "_t")), ("intensity_ytd", ("_t_mwh", "_t_t")),
        ("intensity_qtd", ("_t_mwh", "_t_t")), ("baseline_intensity", ("_t_mwh", "_t_t")),
        ("target_intensity", ("_t_mwh", "_t_t")), ("intensity_deviation", ("_t_mwh", "_t_t")))
    for sfx in sfxs)
_PROGRESS: Final = _obj({"unit": {"type": "string"}, "output_unit": {"enum": ["MWh", "t", ""]},
                         **{k: _NUM for k in (*_PROGRESS_T, *_PROGRESS_VARIANT)}},
                        required=("unit", "output_unit", *_PROGRESS_T))
_BENCHMARK_GAP: Final = _obj({
    "unit": {"type": "string"}, "indicator": {"enum": ["intensity_t_mwh", "intensity_t_t"]},
    "kind": {"enum": ["benchmark", "best_in_class", "advanced"]},
    **{f"{k}_{i}": _NUM for k in ("value", "actual", "gap")
       for i in ("intensity_t_mwh", "intensity_t_t")},
    "source": {"type": "string"}, "gap_pct": _NUM, "rank": _INT},
    required=("unit", "indicator", "kind", "source", "gap_pct", "rank"))
_PERFORMANCE: Final = _obj({
    "year": _INT, "as_of": {"type": "string", "format": "date"}, "days_in_year_d": _INT,
    "days_elapsed_d": _INT, "quarter": _INT, "quarter_days_d": _INT,
    "quarter_days_elapsed_d": _INT, "co2_basis": {"enum": ["accounted", "cems", "factor"]},
    "baseline_year": {"type": ["integer", "null"]}, "baseline_source": {"type": "string"},
    "target_source": {"type": "string"}, "units": {"type": "array", "items": _PROGRESS},
    "site": _PROGRESS, "benchmarks": {"type": "array", "items": _BENCHMARK_GAP}})


def _performance_paths(api: str) -> dict[str, Json]:
    """The carbon-performance route of web/performance.py."""
    year = [{"name": "year", "in": "query", "required": False, "example": 2026,
             "description": "plant-local calendar year; default the current one",
             "schema": {"type": "integer", "minimum": MIN_YEAR,
                        "maximum": MAX_YEAR}}]
    return {f"{api}/performance": {"get": _get(
        "Carbon performance of a year (closed days before today): per unit and for the site "
        "the baseline and the baseline normalised to the output, the targets (the year's, "
        "prorated by days and by the quarters' shares, the quarter's), the deviations (t, %) "
        "and the intensity against the configured benchmarks (gap t/MWh and %, ranked, with "
        "their sources)",
        _json_response("the performance", _PERFORMANCE), params=year,
        errors={**_BAD, "503": _error("no carbon performance here, or the historian cannot "
                                      "be read (the message names the file)")},
        tags=("performance",))}}


def _carbon_paths(api: str) -> dict[str, Json]:
    """The carbon-asset routes of web/assets.py."""
    keeper = {"503": _error("this server keeps no carbon assets")}
    year = [{"name": "year", "in": "query", "required": False, "example": 2026,
             "description": "compliance year (plant-local calendar year); default the "
                            "current one",
             "schema": {"type": "integer", "minimum": MIN_YEAR,
                        "maximum": MAX_YEAR}}]
    write = {**_BAD, **_LOGIN, **keeper}
    return {
        f"{api}/carbon/position": {"get": _get(
            "The compliance position of a year: emissions (verified or live) against the "
            "allowances held and the eligible offsets (CCER up to the limit), surplus or "
            "deficit and its cost at the latest price, the value of the holdings, the "
            "year-end forecast with its interval, the surrender deadline, reductions and net "
            "emissions (apart from compliance)",
            _json_response("the position", _POSITION), params=year,
            errors={**_BAD, **keeper}, tags=("carbon",))},
        f"{api}/carbon/trend": {"get": _get(
            "Emissions, cumulative emissions, the prorated allowance and the gap (prorated "
            "allowance − cumulative) per month of a year",
            _json_response("the twelve months", {"type": "array", "items": _MONTH_TREND}),
            params=year, errors={**_BAD, **keeper}, tags=("carbon",))},
        f"{api}/carbon/entries": {
            "get": _get("Every carbon-ledger entry (allocations, acquisitions, trades, "
                        "surrenders, transfers, prices, reductions, verified emissions, "
                        "reversals), oldest first",
                        _json_response("the entries", {"type": "array",
                                                       "items": _CARBON_ENTRY}),
                        params=[{"name": "kind", "in": "query", "required": False,
                                 "schema": {"enum": list(CARBON_KINDS)}}],
                        errors={**_BAD, **keeper}, tags=("carbon",)),
            "post": _change("Make one carbon-ledger entry (engineer): checked (no sale, "
                            "transfer out or surrender of more than is held), kept in the "
                            "append-only ledger and audited; a reversal is the only undo",
                            _json_response("the entry", _obj({"entry": _CARBON_ENTRY})),
                            _CARBON_BODY, errors=write, tags=("carbon",), status="201")},
        f"{api}/carbon/entries/import": {"post": _change(
            "Carbon-ledger entries as CSV (engineer), all rows or none; errors name the line "
            "and the column",
            _json_response("the entries made", _obj({"entries": {
                "type": "array", "items": _CARBON_ENTRY}})),
            {"required": True, "content": {"text/csv": {"schema": {
                "type": "string", "description": "header " + ",".join(CARBON_CSV_HEADER)
                + " (id and user are ignored)"}}}},
            errors={**write, "413": _error("too large")}, tags=("carbon",), status="201")},
        f"{api}/carbon/entries.csv": {"get": _get(
            "Every carbon-ledger entry as CSV (the header the import takes)",
            _text("the CSV", "text/csv"), errors=keeper, tags=("carbon",))},
    }


_CASE: Final = _obj({
    "id": _INT, "state": {"enum": ["open", "closed"]}, "overdue": {"type": "boolean"},
    "subject": {"type": "object", "required": ["kind"],
                "properties": {"kind": {"enum": ["period", "alarm", "entry", "other"]}},
                "description": "period {ref <table>:<id>:<ISO start>, found: the row's flag, "
                               "valid, substituted … when opened} · alarm {rule, t, found} · "
                               "entry {entry, found} · other {ref}"},
    "title": {"type": "string"}, "cause": {"type": "string"},
    "opened": {"type": "string", "format": "date-time"}, "opened_by": {"type": "string"},
    "owner": {"type": "string"}, "reviewer": _STR_OR_NULL,
    "due": {"type": "string", "format": "date-time"}, "closed": _TIME,
    "review": {"enum": ["accepted", "returned", None]}, "actions": _INT, "events": _INT,
    "updated": {"type": "string", "format": "date-time"}})
_CASE_EVENT: Final = {**_obj({
    "id": _INT, "case": _INT, "t": {"type": "string", "format": "date-time"},
    "user": {"type": "string"}, "event": {"enum": ["open", *CASE_ROLE_OF_EVENT]}}),
    "description": "with the event's own fields (open: subject, title, cause, due, owner; "
                   "action: note, cause?; assign: owner?, reviewer?, due?; review: finding, "
                   "reason; close: note; reopen: reason, due?)"}
_CASE_FULL: Final = {**_CASE, "properties": {**_CASE["properties"], "history": {
    "type": "array", "items": _CASE_EVENT}}, "required": [*_CASE["required"], "history"]}
_CASE_OPEN_BODY: Final = {"required": True, "content": {"application/json": {"schema": {
    **_obj({"event": {"const": "open"},
            "subject": {"type": "object", "required": ["kind"],
                        "properties": {"kind": {"enum": ["period", "alarm", "entry",
                                                         "other"]}}},
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "cause": {"type": "string"}, "due": {"type": "string", "format": "date-time"},
            "owner": {"type": "string"}}, required=("subject", "title", "due")),
    "description": "subject: period {ref source_hour:S1:2026-03-01T08:00:00Z (the stored "
                   "row must exist)} · alarm {rule, t (a journaled transition within 1 s)} · "
                   "entry {entry: a ledger entry id} · other {ref}; due after now; owner "
                   "default the user"}}}}
_CASE_EVENT_BODY: Final = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["event"],
    "properties": {"event": {"enum": list(CASE_ROLE_OF_EVENT)}},
    "description": "action {note, cause?} (operator) · assign {owner?, reviewer?, due?} · "
                   "review {finding accepted|returned, reason (needed when returned)} · "
                   "close {note} (only after an accepted review later than the last action) "
                   "· reopen {reason, due?} (engineer)"}}}}


def _case_paths(api: str) -> dict[str, Json]:
    """The case-ledger routes of web/cases.py."""
    keeper = {"503": _error("this server keeps no cases")}
    write = {**_BAD, **_LOGIN, **keeper}
    one = _json_response("the case with its history", _obj({"case": _CASE_FULL}))
    return {
        f"{api}/cases": {
            "get": _get("Every abnormal-data case, oldest first (overdue: open past its due "
                        "time)",
                        _json_response("the cases", {"type": "array", "items": _CASE}),
                        params=[{"name": "state", "in": "query", "required": False,
                                 "schema": {"enum": list(CASE_STATES)}}],
                        errors={**_BAD, **keeper}, tags=("cases",)),
            "post": _change("Open a case (operator) on a stored period, an alarm, a ledger "
                            "entry or anything else; checked, kept append-only and audited",
                            one, _CASE_OPEN_BODY, errors=write, tags=("cases",),
                            status="201")},
        f"{api}/cases/{{id}}": {"get": _get(
            "One case with its full history",
            _json_response("the case", _CASE_FULL), params=[_id("1")],
            errors={**_BAD, **_NOT_FOUND, **keeper}, tags=("cases",))},
        f"{api}/cases/{{id}}/events": {
            "parameters": [_id("1")],
            "post": _change("Record an event on a case: action (operator), assign, review, "
                            "close, reopen (engineer)", one, _CASE_EVENT_BODY,
                            errors={**write, **_NOT_FOUND}, tags=("cases",),
                            status="201")},
    }


def _user_paths(api: str) -> dict[str, Json]:
    """The account routes of web/admin.py (admin role)."""
    admin = {"401": _error("not logged in"),
             "403": _error("the role is below admin (or the CSRF token is missing or wrong)"),
             "503": _error("no user store")}
    role = {"enum": list(ROLES)}
    password = {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD,
                "description": "at least as long as the user store asks (8 characters)"}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "example": "operator"}
    refused_self = _error("an admin may not remove or demote themselves")
    return {
        f"{api}/users": {
            "get": _get("Every login account, by name (admin)",
                        _json_response("the accounts", _array("User")),
                        errors=admin, tags=("admin",), auth=True),
            "post": _change("Create a login account (admin); audited",
                            _json_response("the account", _ref("User")),
                            {"required": True, "content": {"application/json": {
                                "schema": _obj({"user": {"type": "string", "minLength": 1,
                                                         "maxLength": MAX_NAME},
                                                "role": role, "password": password})}}},
                            errors={**_BAD, **admin, "409": _error("the name exists")},
                            tags=("admin",), status="201")},
        f"{api}/users/{{name}}": {
            "parameters": [name],
            "put": _change("Change an account's role, password or both (admin); audited, and "
                           "the account's sessions end",
                           _json_response("the account now", _ref("User")),
                           {"required": True, "content": {"application/json": {
                               "schema": _obj({"role": role, "password": password},
                                              required=())}}},
                           errors={**_BAD, **admin, **_NOT_FOUND, "409": refused_self},
                           tags=("admin",)),
            "delete": _change("Remove an account (admin); audited, and its sessions end",
                              _json_response("removed", _ref("UserRemoved")), None,
                              errors={**admin, **_NOT_FOUND, "409": refused_self},
                              tags=("admin",))},
    }


def _paths() -> dict[str, Json]:
    api = "/api/v1"
    paths: dict[str, Json] = {
        "/": {"get": _get("The control-room HMI page", _text("HTML page", "text/html"),
                          tags=("page",))},
        "/static/{filename}": {"get": _get(
            "Files of the HMI page (scripts, styles, fonts)",
            {"description": "the file", "content": {"*/*": {"schema": {}}}},
            params=[{"name": "filename", "in": "path", "required": True,
                     "schema": {"type": "string"}}],
            # aiohttp's static files answer these with an empty body, not the error shape.
            errors={"403": {"description": "refused (empty body)"},
                    "404": {"description": "no such file (empty body)"}},
            tags=("page",))},
        "/ws": {"get": {
            "summary": "WebSocket of live values: a snapshot on connect, then every minute "
                       "and alarm as JSON messages; what the client sends is ignored",
            "tags": ["live"],
            "responses": {"101": {"description": "switching to the WebSocket protocol"},
                          "400": {"description": "not a WebSocket upgrade request"}}}},
        f"{api}/sources": {"get": _get("Latest minute of every source",
                                       _json_response("the sources", _array("Source")),
                                       tags=("live",))},
        f"{api}/sources/{{id}}": {"get": _get(
            "Latest minute of one source", _json_response("the source", _ref("Source")),
            params=[_ID], errors=_NOT_FOUND, tags=("live",))},
        f"{api}/units": {"get": _get("Latest minute of every unit",
                                     _json_response("the units", _array("Unit")),
                                     tags=("live",))},
        f"{api}/site": {"get": _get(
            "Site identity, time zone, latest totals and the allowance position (the same "
            "object as /allowance)", _json_response("the site", _ref("Site")),
            tags=("live",))},
        f"{api}/alarms": {"get": _get("Listed alarms: alarms, then warnings, then the rest; "
                                      "newest first in each",
                                      _json_response("the alarms", _array("ActiveAlarm")),
                                      tags=("alarms",))},
        f"{api}/allowance": {"get": _get(
            "The allowance position at the end of the latest closed hour",
            _json_response("the position", _ref("Allowance")), tags=("live",))},
        f"{api}/devices": {"get": _get("Every bus and its devices: state, errors, latency",
                                       _json_response("the buses", _ref("Devices")),
                                       tags=("live",))},
        f"{api}/devices/{{id}}/tags": {"get": _get(
            "The newest raw reading of each tag of one device: value, flag, quality, time",
            _json_response("the tags", _ref("DeviceTags")), params=[_id("cems1")],
            errors=_NOT_FOUND, tags=("live",))},
        f"{api}/instruments": {"get": _get(
            "The instrument register: every tag with its instrument, calibration due date "
            "and state, and each source's CO2 uncertainty from its instruments",
            _json_response("the register", _ref("InstrumentRegister")), tags=("live",))},
        f"{api}/uncertainty": {"get": _get(
            "The CO2 uncertainty of each unit's and the site's total of an hour, a day or "
            "the year to date, from the instruments and the stored masses",
            _json_response("the totals (times plant local)", _ref("Uncertainty")),
            params=[{"name": "level", "in": "query", "required": False,
                     "schema": {"enum": ["hour", "day", "year"], "default": "hour"},
                     "description": "hour: the plant hour containing t (default the last "
                                    "complete one); day: the plant-local day containing t "
                                    "(default yesterday); year: the year to date at t "
                                    "(default now), its complete days and hours"},
                    {"name": "t", "in": "query", "required": False, "example":
                     "2026-01-01T08:00:00+08:00", "schema": {"type": "string",
                                                             "format": "date-time"},
                     "description": "a time in the period: ISO 8601 with a UTC offset, from "
                                    "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"}],
            errors={**_BAD, **_NO_HISTORIAN}, tags=("history",))},
        f"{api}/openapi.json": {"get": _get(
            "This description", _json_response("OpenAPI 3.1", {"type": "object"}),
            tags=("docs",))},
        f"{api}/docs": {"get": _get("This description as a page",
                                    _text("HTML page", "text/html"), tags=("docs",))},
        f"{api}/docs.css": {"get": _get("The style of the description page",
                                        _text("CSS", "text/css"), tags=("docs",))},
        f"{api}/login": {"post": _change(
            "Log in; sets the session cookie and answers the CSRF token",
            _json_response("logged in", _ref("Session")),
            {"required": True, "content": {"application/json": {"schema": _obj(
                {"user": {"type": "string"}, "password": {"type": "string"}})}}},
            errors={**_BAD, "401": _error("wrong user name or password"),
                    "429": _error("too many failed logins; see Retry-After"),
                    "503": _error("no user store")}, tags=("session",), auth=False)},
        f"{api}/logout": {"post": _change(
            "Log out (ends the session if there is one)",
            _json_response("logged out", _ref("LoggedOut")), None,
            errors={"403": _error("CSRF token missing or wrong")}, tags=("session",))},
        f"{api}/session": {"get": _get("The current session",
                                       _json_response("the session", _ref("Session")),
                                       errors={"401": _error("not logged in")},
                                       tags=("session",), auth=True)},
        f"{api}/alarms/journal": {"get": _get(
            "Journaled alarm transitions, oldest first (at most 366 days, 10 000 rows)",
            _json_response("the events", _array("Alarm")),
            params=[*_RANGE, {"name": "rule", "in": "query", "required": False,
                              "schema": {"type": "string"}}],
            errors={**_BAD, **_NO_HISTORIAN}, tags=("alarms",))},
        f"{api}/alarm-rules": {
            "get": _get("The alarm rules in force (viewer or higher)",
                        _json_response("the rules", _array("AlarmRule")),
                        errors={**_LOGIN, "503": _error("no alarm engine")},
                        tags=("alarms",), auth=True),
            "put": _change("Replace every alarm rule (engineer)",
                           _json_response("the rules now", _array("AlarmRule")),
                           {"required": True, "content": {"application/json": {
                               "schema": _obj({"rules": _array("AlarmRule"),
                                               "comment": {"type": "string"}})}}},
                           errors={**_BAD, **_LOGIN, "409": _error("refused now")},
                           tags=("alarms",)),
            "post": _change("Add an alarm rule (engineer)",
                            _json_response("the rules now", _array("AlarmRule")),
                            {"required": True, "content": {"application/json": {
                                "schema": _obj({"rule": _ref("AlarmRule"),
                                                "comment": {"type": "string"}})}}},
                            errors={**_BAD, **_LOGIN, "409": _error("exists already")},
                            tags=("alarms",), status="201")},
        f"{api}/alarm-rules/{{id}}": {
            "parameters": [_id("s1_rate_high")],
            "put": _change("Change one alarm rule (engineer)",
                           _json_response("the rules now", _array("AlarmRule")),
                           {"required": True, "content": {"application/json": {
                               "schema": _obj({"rule": _ref("AlarmRule"),
                                               "comment": {"type": "string"}})}}},
                           errors={**_BAD, **_LOGIN, **_NOT_FOUND,
                                   "409": _error("refused now")}, tags=("alarms",)),
            "delete": _change("Delete one alarm rule (engineer)",
                              _json_response("the rules now", _array("AlarmRule")),
                              _COMMENT_BODY, errors={**_BAD, **_LOGIN, **_NOT_FOUND,
                                                     "409": _error("refused now")},
                              tags=("alarms",))},
        f"{api}/deliveries": {"get": _get(
            "Notification delivery log, oldest first (operator or higher)",
            _json_response("the deliveries", _array("Delivery")), params=_RANGE,
            errors={**_BAD, **_LOGIN, **_NO_HISTORIAN}, tags=("alarms",), auth=True)},
        f"{api}/audit": {"get": _get(
            "The audit log, oldest first (engineer or higher)",
            _json_response("the entries", _array("AuditEntry")), params=_RANGE,
            errors={**_BAD, **_LOGIN, "503": _error("no audit log")}, tags=("admin",),
            auth=True)},
        **_user_paths(api),
        **_record_paths(api),
        **_carbon_paths(api),
        **_performance_paths(api),
        **_case_paths(api),
        **_report_paths(api),
        **_boundary_paths(api),
        **_monitoring_plan_paths(api),  # web/monitoring_plan_api.py
        "/metrics": {"get": _get("Prometheus text exposition of the server's metrics",
                                 _text("metrics"), errors={"404": _text("no monitor")},
                                 tags=("monitoring",))},
        "/health": {"get": _get("Liveness: ok while the server runs",
                                _text("ok"), errors={"503": _text("what stopped")},
                                tags=("monitoring",))},
        "/ready": {"get": _get("Readiness: ready once the server serves everything",
                               _text("ready"), errors={"503": _text("what it waits for")},
                               tags=("monitoring",))},
    }
    for kind in ("source", "unit", "stream"):
        for level in ("hours", "days"):
            paths[f"{api}/{kind}s/{{id}}/{level}"] = {"get": _periods(kind, level)}
    for kind in ("source", "unit", "tag"):
        paths[f"{api}/{kind}s/{{id}}/minutes"] = {"get": _minutes(kind)}
    for kind in ("source", "unit"):
        paths[f"{api}/{kind}s/{{id}}/months"] = {"get": _months(kind)}
    actions = {"acknowledge": ("operator", None),
               "shelve": ("operator", {"minutes": {"type": "number", "exclusiveMinimum": 0},
                                       "until": {"type": "string", "format": "date-time"}}),
               "unshelve": ("operator", None), "out-of-service": ("engineer", None),
               "return-to-service": ("engineer", None)}
    for action, (role, more) in actions.items():
        schema = _obj({"comment": {"type": "string", "minLength": 1, "maxLength": 1000},
                       **(more or {})}, required=("comment",))
        paths[f"{api}/alarms/{{rule}}/{action}"] = {"post": {
            **_change(f"{action.replace('-', ' ').capitalize()} an alarm ({role} or higher)",
                      _json_response("the audit record and the alarm as listed now",
                                     _ref("AlarmActionResult")),
                      {"required": True, "content": {"application/json": {"schema": schema}}},
                      errors={**_BAD, **_LOGIN, "404": _error("unknown alarm rule"),
                              "409": _error("not possible in the alarm's state"),
                              "503": _error("no alarm engine")}, tags=("alarms",)),
            "parameters": [_RULE]}}
    return paths


def description() -> Json:
    """The OpenAPI 3.1 description of every route of the web sink."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "carbonscada web API", "version": VERSION,
                 "description": "Live values, stored minutes, hours, days and months, "
                                "alarms and their actions, the audit log and monitoring "
                                "of a carbon-emission monitoring server. Reading needs no "
                                "login; errors are {\"error\": message}."},
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                            "description": "set by POST /api/v1/login"},
                "csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER,
                         "description": "the csrf_token of the session, on every change"}},
        },
    }


# ------------------------------------------------------------------ the page

_CSS: Final = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#10161d;color:#dde3ea}
main{max-width:1100px;margin:auto;padding:1rem 1.5rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #2c3a48}
section.op{background:#18212b;border-radius:6px;padding:.6rem 1rem;margin:.7rem 0}
.m{display:inline-block;min-width:4.2rem;font-weight:600;text-transform:uppercase}
.get{color:#5fd38d}.post{color:#f0b64a}.put{color:#64a8ff}.delete{color:#ff6b6b}
code,pre{font:13px ui-monospace,monospace}pre{white-space:pre-wrap;background:#0c1117;
padding:.5rem;border-radius:4px;overflow-x:auto}
table{border-collapse:collapse;margin:.3rem 0}td,th{padding:.15rem .6rem;text-align:left;
border-bottom:1px solid #2c3a48;vertical-align:top}
a{color:#7cc4ff}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _schema_text(schema: Json) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_schema_text(schema['items'])}"
    return f"<code>{_e(dumps(schema))}</code>"


def _operation_html(path: str, method: str, op: Json, shared: list[Json]) -> str:
    rows = []
    for p in [*shared, *op.get("parameters", [])]:
        rows.append(f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                    f"<td>{'required' if p.get('required') else 'optional'}</td>"
                    f"<td>{_e(p.get('description', ''))}</td></tr>")
    params = f"<table><tr><th>parameter</th><th>in</th><th></th><th></th></tr>" \
             f"{''.join(rows)}</table>" if rows else ""
    body = ""
    if "requestBody" in op:
        schema = next(iter(op["requestBody"]["content"].values()))["schema"]
        body = f"<p>body: {_schema_text(schema)}</p>"
    answers = []
    for status, resp in op["responses"].items():
        content = resp.get("content", {})
        shown = ", ".join(f"{_e(ct)} {_schema_text(c.get('schema', {}))}"
                          for ct, c in content.items())
        answers.append(f"<tr><td>{_e(status)}</td><td>{_e(resp['description'])}</td>"
                       f"<td>{shown}</td></tr>")
    auth = " · needs a session" if "security" in op else ""
    return (f'<section class="op"><div><span class="m {method}">{method}</span> '
            f"<code>{_e(path)}</code></div><p>{_e(op['summary'])}{auth}</p>{params}{body}"
            f"<table><tr><th>status</th><th>answer</th><th>body</th></tr>"
            f"{''.join(answers)}</table></section>")


def render_html(spec: Json) -> str:
    """The description as a self-contained page: every operation, then every schema."""
    ops = [_operation_html(path, method, op, item.get("parameters", []))
           for path, item in spec["paths"].items()
           for method, op in item.items() if method in ("get", "post", "put", "delete")]
    schemas = [f'<h3 id="schema-{_e(name)}">{_e(name)}</h3><pre>{_e(dumps(s))}</pre>'
               for name, s in spec["components"]["schemas"].items()]
    info = spec["info"]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(info['title'])} {_e(info['version'])}</title>"
            "<link rel=\"stylesheet\" href=\"docs.css\"></head><body><main>"
            f"<h1>{_e(info['title'])} <small>{_e(info['version'])}</small></h1>"
            f"<p>{_e(info['description'])}</p>"
            "<p>Machine-readable: <a href=\"openapi.json\">openapi.json</a> (OpenAPI "
            f"{_e(spec['openapi'])})</p><h2>Operations</h2>{''.join(ops)}"
            f"<h2>Schemas</h2>{''.join(schemas)}</main></body></html>")


def add_openapi_routes(app: web.Application, prefix: str) -> None:
    """Add GET `prefix`/openapi.json, `prefix`/docs and its stylesheet `prefix`/docs.css."""
    spec = description()
    spec_text = dumps(spec)
    page = render_html(spec)

    async def spec_handler(_request: web.Request) -> web.Response:
        return web.Response(text=spec_text, content_type="application/json")

    async def docs_handler(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def css_handler(_request: web.Request) -> web.Response:
        return web.Response(text=_CSS, content_type="text/css")

    app.router.add_get(f"{prefix}/openapi.json", spec_handler)
    app.router.add_get(f"{prefix}/docs", docs_handler)
    app.router.add_get(f"{prefix}/docs.css", css_handler)
