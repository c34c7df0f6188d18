"""schemathesis against the running web sink (issue 14): every GET operation of
/api/v1/openapi.json, with generated and example parameters, on a real server on loopback
with a real historian holding known minutes, hours, days and alarms, as a logged-in
operator. No 5xx; every status code, content type and body is one the description gives.

The server lives on an event loop in a thread of its own (schemathesis calls it with
`requests` from the synchronous test body).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from alarms.engine import AlarmSink
from compute.minute import MinuteCalculator
from compute.periods import PeriodCycle
from model.flags import DataFlag
from model.records import DeliveryRecord, MinuteResult, SiteMinute, TagMinute, UnitMinute
from server.assets import AssetKeeper
from server.audit import AuditLog
from server.cases import CaseKeeper
from server.config import Plant, load_plant
from server.historian import Historian, HistorianConfig
from server.records import RecordKeeper
from server.reports.engine import ReportMaker
from server.users import UserStore
from tests.conftest import free_port
from tests.web.test_api import alarm_event, source_minute, stored_hour
from tests.web.test_auth import plant
from tests.web.test_time_fuzz import LoopThread
from web.app import WebSink
from web.openapi import description
from web.serialize import dumps

REPO = Path(__file__).resolve().parents[2]
T = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 local, the description's example
EXAMPLES = 12  # per operation: ~30 GET operations in well under a minute


@dataclass
class Live:
    """The running server's address and an operator's logged-in HTTP session."""

    base: str
    session: requests.Session


def _minute(i: int) -> MinuteResult:
    t = T + timedelta(minutes=i)
    bad = i % 17 == 5  # now and then an invalid minute (flag D), one with NaN
    kg = math.nan if i == 22 else 1000.0 + i
    src = source_minute(t, co2_kg=kg, valid=not bad, flag=DataFlag.D if bad else DataFlag.N)
    unit = UnitMinute("U1", t, 10.0, kg, kg / 1e4, not bad, DataFlag.N)
    tag = TagMinute("s1_co2", t, 12.0, 11.0, 13.0, 0 if i == 7 else 60, DataFlag.N)
    site = SiteMinute(t=t, co2_kg=kg, co2_today_t=1.0, co2_ytd_t=2.0,
                      allowance_annual_t=4e6, allowance_used_pct=0.0021,
                      allowance_headroom_t=4e6)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=site, tags=(tag,))


async def _seed(sink: WebSink, h: Historian) -> None:
    for i in range(120):
        m = _minute(i)
        await h.on_minute(m)
        await sink.on_minute(m)
    for i in range(3):
        rec = stored_hour(T + timedelta(hours=i), 196.96223, substituted=i == 1)
        await h.on_period(rec)
        await sink.on_period(rec)
    day = stored_hour(T - timedelta(hours=8), 4000.0)
    await h.on_period(replace(day, level="day", t_end=day.t + timedelta(days=1), allowance=None))
    await h.record_alarm(alarm_event("alarm", T + timedelta(minutes=3)))
    await h.record_delivery(DeliveryRecord(T, "mail", "s1_rate_high", "alarm", "event",
                                           "sent", 1))
    sink.on_alarm(alarm_event("alarm", T + timedelta(minutes=3)))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    users = UserStore(tmp / "users.sqlite")
    users.ensure_demo_users()
    lt = LoopThread()
    port = free_port()
    loaded = Plant(plant(port).model_copy(update={"historian": HistorianConfig(
        path=str(tmp / "h.sqlite"))}),
                   load_plant(REPO / "config" / "demo-plant.yaml").factors)
    cfg = loaded.config
    historian = Historian(tmp / "h.sqlite")
    alarms = AlarmSink(cfg)
    audit = AuditLog(tmp / "h.sqlite")
    plan = loaded.plan()
    keeper = RecordKeeper(loaded, historian, audit, PeriodCycle(plan), MinuteCalculator(plan),
                          lambda rec: None)
    assets = AssetKeeper(loaded, historian, audit)
    cases = CaseKeeper(tmp / "h.sqlite", historian, audit)
    sink = WebSink(cfg, history=historian, users=users, audit=audit, alarms=alarms,
                   journal=historian, records=keeper, assets=assets, cases=cases,
                   reports=ReportMaker(cfg, historian, lambda: keeper.factors, keeper.entries))

    async def start() -> None:
        await historian.start()
        await alarms.start()
        await sink.start()
        await _seed(sink, historian)
        await keeper.load()
        # an entry of each kind that has no period to recalculate here
        await keeper.enter("engineer", {
            "kind": "qa_check", "source": "S1", "t": T.isoformat(), "check": "span",
            "parameter": "co2", "reference_value": 10.0, "measured_value": 10.3,
            "full_scale": 20.0, "unit": "%"})
        await keeper.enter("admin", {"kind": "lock", "start": T.isoformat(),
                                     "end": (T + timedelta(days=1)).isoformat(),
                                     "reason": "reported"})
        await assets.load()  # a carbon ledger with an allocation, a trade and a price
        for body in ({"kind": "allocation", "year": 2026, "side": "final",
                      "quantity_t": 4e6},
                     {"kind": "trade", "year": 2026, "instrument": "national_allowance",
                      "side": "buy", "quantity_t": 1000.0, "price_cny_t": 80.0},
                     {"kind": "price", "price_cny_t": 85.0, "t": T.isoformat()}):
            await assets.enter("engineer", body)
        await cases.load()  # case 1 (the description's example), with an action
        await cases.record("operator", {"event": "open", "subject": {"kind": "other",
                                                                     "ref": "S1 analyser"},
                                        "title": "drift", "due": "2100-01-01T00:00:00Z"})
        await cases.record("operator", {"event": "action", "case": 1, "note": "re-spanned"})

    async def stop() -> None:
        await sink.stop()
        await alarms.stop()
        await historian.stop()

    try:
        lt.run(start())
        base = f"http://127.0.0.1:{port}"
        session = requests.Session()
        r = session.post(f"{base}/api/v1/login",
                         json={"user": "operator", "password": "demo-operator"}, timeout=10)
        assert r.status_code == 200, r.text
        assert session.get(f"{base}/api/v1/session", timeout=10).json()["role"] == "operator"
        yield Live(base, session)
        session.close()
    finally:
        try:
            lt.run(stop())
        finally:
            lt.close()


# The description the server serves (test_served_description_is_this_one checks that).
# Loaded eagerly: schemathesis's lazy `from_fixture` needs a pytest internal (`_nodeid`)
# that pytest 9 no longer has. The WebSocket needs an upgrade handshake, which
# schemathesis does not make.
schema = schemathesis.openapi.from_dict(description()).include(method="GET").exclude(path="/ws")

CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_get_operations_match_the_description(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(base_url=live.base, session=live.session, checks=CHECKS, timeout=10)


def test_served_description_is_this_one(live: Live) -> None:
    served = live.session.get(f"{live.base}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == json.loads(dumps(description()))


def test_the_examples_hit_stored_data(live: Live) -> None:
    """The description's examples are real requests: schemathesis checks filled answers."""
    q = "from=2026-01-01T08:00:00%2B08:00&to=2026-01-01T10:00:00%2B08:00&points=4"
    got = live.session.get(f"{live.base}/api/v1/sources/S1/minutes?{q}", timeout=10).json()
    # Bucket 0: minutes 0..29, 1000 + i, minute 22 NaN: max 1029, min 1000.
    assert [b["n"] for b in got["buckets"]] == [30, 30, 30, 30]
    assert got["buckets"][0]["co2_kg"]["max"] == 1029.0
    assert got["buckets"][0]["co2_kg"]["min"] == 1000.0
    site = live.session.get(f"{live.base}/api/v1/site", timeout=10).json()
    assert site["allowance"] == live.session.get(f"{live.base}/api/v1/allowance",
                                                 timeout=10).json()
    assert site["allowance_used_pct"] == 0.4973296  # not the minute's 0.0021


def test_posting_an_entry_without_a_session_is_401_whatever_the_body(live: Live) -> None:
    # Who may post is checked before the body is read: not a lesson on JSON syntax (or a
    # parse of a large body) for a visitor without a session.
    for body in (b"{not json", b'{"kind": "correction"}', b"[]"):
        r = requests.post(f"{live.base}/api/v1/entries", data=body, timeout=10,
                          headers={"Content-Type": "application/json",
                                   "Origin": live.base})
        assert r.status_code == 401, (body, r.status_code, r.text)
        assert r.json()["error"] == "not logged in"
