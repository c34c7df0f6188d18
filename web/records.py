"""Entries people make, over HTTP: lab data, quantities, corrections, CEMS QA, locks.

- GET  /api/v1/entries[?kind=]      every entry, oldest first (viewer)
- POST /api/v1/entries              one entry, JSON (kinds and fields: server/records.py);
                                    201 with what it recalculated; 400 naming the field,
                                    409 when it would change a locked period
- POST /api/v1/entries/import       lab and manual data as CSV (text/csv), one value a row:
                                    kind,target,level,t,name,value,unit,document,reason;
                                    rows of one kind, target, period, document and reason
                                    make one entry
- GET  /api/v1/locks                the locks in force (viewer)
- GET  /api/v1/qa                   out-of-control intervals per source (viewer)
- GET  /api/v1/revisions?table=&id=&t=  every version of one stored value (viewer)

Lab data, quantities, corrections and QA need the engineer role, locks and unlocks the
admin role. The record keeper checks, keeps, audits and applies; this module only speaks
HTTP. A recalculation after an entry runs inside the request (it is awaited off the event
loop), so the answer says what changed.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Final

from aiohttp import web

from model.errors import InvalidValueError, LockedPeriodError
from web.auth import ApiError, require
from web.collaborators import RecordKeeping
from web.params import csv_body, json_body, time_param
from web.serialize import dumps

RECORDS: Final[web.AppKey[RecordKeeping | None]] = web.AppKey("records")

ROLE_OF_KIND: Final = {"factor": "engineer", "quantity": "engineer", "correction": "engineer",
                       "qa_check": "engineer", "ra_test": "engineer", "lock": "admin",
                       "unlock": "admin"}
LEAST_ROLE: Final = "engineer"  # the lowest of ROLE_OF_KIND's
CSV_COLUMNS: Final = ("kind", "target", "level", "t", "name", "value", "unit", "document",
                      "reason")
CSV_KINDS: Final = ("factor", "quantity", "correction")
REVISED_TABLES: Final = ("source_minute", "unit_minute", "source_hour", "source_day",
                         "stream_hour", "stream_day", "unit_hour", "unit_day", "period")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


def _keeper(request: web.Request) -> RecordKeeping:
    keeper = request.app.get(RECORDS)
    if keeper is None:
        raise ApiError(503, "this server keeps no entries (no record keeper)")
    return keeper


async def _enter(keeper: RecordKeeping, user: str, body: Any) -> dict[str, Any]:
    try:
        return await keeper.enter(user, body)
    except LockedPeriodError as exc:
        raise ApiError(409, str(exc)) from None
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None


async def _get_entries(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind is not None and kind not in ROLE_OF_KIND:
        raise ApiError(400, f"'kind' must be one of {', '.join(ROLE_OF_KIND)}, not {kind!r}")
    return _json(_keeper(request).entries(kind))


async def _post_entry(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    # Who may post at all, before the body is read: a visitor without a session gets 401,
    # not a lesson on the body's syntax (nor does a 1 MB body get parsed for them).
    require(request, LEAST_ROLE)
    body = await json_body(request)
    kind = body.get("kind")
    if kind not in ROLE_OF_KIND:
        raise ApiError(400, f"'kind' must be one of {', '.join(ROLE_OF_KIND)}, not {kind!r}")
    session = require(request, ROLE_OF_KIND[str(kind)])
    return _json(await _enter(keeper, session.user, body), status=201)


def csv_bodies(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(first line, entry body) of each entry a CSV of lab and manual data makes."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
        raise ApiError(400, f"line 1: the header must be {','.join(CSV_COLUMNS)}")
    groups: dict[tuple[str, ...], tuple[int, dict[str, Any]]] = {}
    for row in reader:
        line = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(CSV_COLUMNS):
            raise ApiError(400, f"line {line}: expected {len(CSV_COLUMNS)} columns, "
                                f"got {len(row)}")
        kind, target, level, t, name, value, unit, document, reason = (c.strip() for c in row)
        if kind not in CSV_KINDS:
            raise ApiError(400, f"line {line}: kind must be one of {', '.join(CSV_KINDS)}, "
                                f"not {kind!r}")
        try:
            number = float(value)
        except ValueError:
            raise ApiError(400, f"line {line}: value {value!r} is not a number") from None
        key = (kind, target, level, t, unit if kind == "quantity" else "", document, reason)
        if key in groups and kind == "quantity":
            raise ApiError(400, f"line {line}: a second quantity for {target} {level} {t}")
        _, body = groups.setdefault(key, (line, _body(kind, target, level, t, unit,
                                                      document, reason)))
        if kind == "quantity":
            body["value"] = number
        else:
            values = body["values"]
            if name in values:
                raise ApiError(400, f"line {line}: {name!r} given twice for {target} {t}")
            values[name] = number
            if kind == "factor" and unit:
                body["units"][name] = unit
    return list(groups.values())


def _body(kind: str, target: str, level: str, t: str, unit: str, document: str,
          reason: str) -> dict[str, Any]:
    if kind == "factor":
        return {"kind": kind, "factors": target, "effective_from": t, "values": {},
                "units": {}, "document": document, "reason": reason}
    if kind == "quantity":
        return {"kind": kind, "target": target, "level": level, "t": t, "unit": unit,
                "document": document, "reason": reason}
    return {"kind": kind, "target": target, "level": level, "t": t, "values": {},
            "reason": reason, "document": document}


async def _import_csv(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    session = require(request, "engineer")
    text = await csv_body(request)
    bodies = csv_bodies(text)
    if not bodies:
        raise ApiError(400, "the CSV has no rows")
    done: list[dict[str, Any]] = []
    for line, body in bodies:
        try:
            done.append(await _enter(keeper, session.user, body))
        except ApiError as exc:  # what went in before stays in, and the answer says so
            raise ApiError(exc.status, f"line {line}: {exc.message}",
                           extra={"entered": [d["entry"]["id"] for d in done]}) from None
    return _json({"entries": done}, status=201)


async def _get_locks(request: web.Request) -> web.Response:
    return _json(_keeper(request).locks())


async def _get_qa(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    return _json({"out_of_control": keeper.out_of_control(),
                  "checks": keeper.entries("qa_check")[-200:],
                  "comparison_tests": keeper.entries("ra_test")[-50:]})


async def _get_revisions(request: web.Request) -> web.Response:
    keeper = _keeper(request)
    table = request.query.get("table", "")
    if table not in REVISED_TABLES:
        raise ApiError(400, f"'table' must be one of {', '.join(REVISED_TABLES)}")
    ident = request.query.get("id", "")
    if not ident:
        raise ApiError(400, "query parameter 'id' is required (a source, stream or unit id, "
                            "or the level for table period)")
    return _json(await keeper.history(table, ident, time_param(request, "t")))


def add_record_routes(app: web.Application, api: str) -> None:
    """Add the entries, locks, QA and revisions routes under `api`."""
    app.router.add_get(f"{api}/entries", _get_entries)
    app.router.add_post(f"{api}/entries", _post_entry)
    app.router.add_post(f"{api}/entries/import", _import_csv)
    app.router.add_get(f"{api}/locks", _get_locks)
    app.router.add_get(f"{api}/qa", _get_qa)
    app.router.add_get(f"{api}/revisions", _get_revisions)
