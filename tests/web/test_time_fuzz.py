"""The REST API's time parameters, fuzzed (issue 11): every ?from=/&to= and the shelve body's
'until'/'minutes' through a real server on loopback with the real historian, audit log,
user store and alarm sink. Never a 5xx; bad input is a 400 naming the parameter (and the
allowed range 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z); good input returns exactly the
stored rows in the window.

Hypothesis drives synchronous test bodies, so the server and its HTTP clients live on an
event loop in a thread of their own and each example is one request handed to it.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from alarms.engine import AlarmSink
from model.records import AlarmEvent, DeliveryRecord
from server.audit import AuditLog
from server.historian import Historian
from server.users import UserStore
from tests.conftest import free_port
from tests.web.test_api import alarm_event, stored_hour
from tests.web.test_auth import Plant, plant, stop_plant
from web.app import WebSink
from web.serialize import iso_utc

pytestmark = pytest.mark.reliability

T = TypeVar("T")

# The rule, written out here rather than imported, so that the test checks it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
REQUIRED = "is required (ISO 8601 with offset, e.g. 2026-11-21T00:00:00+08:00)"

# Stored rows: at both ends of the range and around 2026-01-01.
SEEDED = [EARLIEST, EARLIEST + timedelta(hours=1), datetime(2026, 1, 1, 0, tzinfo=UTC),
          datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC),
          LATEST - timedelta(hours=1)]
DAYS = [EARLIEST, datetime(2026, 1, 1, tzinfo=UTC), LATEST - timedelta(days=1)]

EXAMPLES = 250  # per test: a few seconds each on a loaded 2-core machine


@dataclass(frozen=True)
class Endpoint:
    """A GET with ?from=&to=: its path, longest span and what the span message calls it."""

    path: str
    longest_days: int
    what: str


ENDPOINTS = [Endpoint("/api/v1/sources/S1/hours", 31, "hours"),
             Endpoint("/api/v1/sources/S1/days", 3660, "days"),
             Endpoint("/api/v1/alarms/journal", 366, "alarm journal"),
             Endpoint("/api/v1/deliveries", 366, "deliveries"),
             Endpoint("/api/v1/audit", 366, "audit log")]


class LoopThread:
    """An event loop running in its own thread; `run` waits for one coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Served:
    """The running plant, an engineer's logged-in client and the loop they live on."""

    lt: LoopThread
    plant: Plant
    client: aiohttp.ClientSession
    csrf: str

    def request(self, method: str, url: str, body: str | None = None) -> tuple[int, Any]:
        async def go() -> tuple[int, Any]:
            headers = {"X-CSRF-Token": self.csrf, "Content-Type": "application/json"}
            async with self.client.request(method, URL(url, encoded=True), data=body,
                                           headers=headers) as r:
                text = await r.text()
                assert r.content_type == "application/json", text
                return r.status, json.loads(text)
        return self.lt.run(go())


async def _seed(p: Plant) -> None:
    for i, t in enumerate(SEEDED):
        await p.historian.on_period(stored_hour(t, 100.0 + i))
        await p.historian.record_alarm(alarm_event("alarm", t))
        await p.historian.record_delivery(DeliveryRecord(t, "mail", "s1_rate", "alarm",
                                                         "event", "sent", 1))
        p.audit.append("op1", "acknowledge", "alarm:s1_rate", {"comment": "seen"}, t)
    for t in DAYS:
        hour = stored_hour(t, 2400.0)
        await p.historian.on_period(replace(hour, level="day", t_end=t + timedelta(days=1),
                                            allowance=None))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("time_fuzz")
    users = UserStore(tmp / "users.sqlite")
    users.ensure_demo_users()
    lt = LoopThread()
    port = free_port()

    async def start() -> Plant:
        # As tests/web/test_auth.py's plant, and with the historian for hours and days too.
        cfg = plant(port)
        historian = Historian(tmp / "h.sqlite")
        await historian.start()
        audit = AuditLog(tmp / "h.sqlite")
        alarms = AlarmSink(cfg)
        journal: list[AlarmEvent] = []
        sink = WebSink(cfg, history=historian, users=users, audit=audit, alarms=alarms,
                       journal=historian)
        alarms.subscribe(sink.on_alarm)
        alarms.subscribe(journal.append)
        await alarms.start()
        await sink.start()
        p = Plant(sink, alarms, audit, historian, journal)
        await _seed(p)
        return p

    async def login(client: aiohttp.ClientSession) -> str:
        async with client.post(f"{pl.base}/api/v1/login",
                               json={"user": "engineer", "password": "demo-engineer"}) as r:
            assert r.status == 200, await r.text()
            token: str = (await r.json())["csrf_token"]
            return token

    async def stop(client: aiohttp.ClientSession) -> None:
        await client.close()
        await stop_plant(pl)

    try:
        pl = lt.run(start())
        client = lt.run(_client())
        try:
            yield Served(lt, pl, client, lt.run(login(client)))
        finally:
            lt.run(stop(client))
    finally:
        lt.close()


async def _client() -> aiohttp.ClientSession:
    # Made on the server's loop: a session belongs to the loop it was made on.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=10))


# ------------------------------------------------------------------ what users type

# Fixed offsets up to ±23:59:59.999999, the most `timezone` (and ISO 8601 parsing) allows.
OFFSETS = st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=24) + timedelta.resolution,
                                            max_value=timedelta(hours=24) - timedelta.resolution))
NEAR = st.datetimes(min_value=datetime(2025, 12, 31), max_value=datetime(2026, 1, 2),
                    timezones=OFFSETS)
EDGES = (st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(1970, 1, 2),
                      timezones=OFFSETS)
         | st.datetimes(min_value=datetime(2199, 12, 30), max_value=datetime(2200, 1, 2),
                        timezones=OFFSETS))
ANYWHEN = st.datetimes(timezones=OFFSETS)  # years 1 to 9999, the extremes included
AWARE = NEAR | EDGES | ANYWHEN | st.sampled_from([
    datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=8))),
    datetime(9999, 12, 30, tzinfo=timezone(timedelta(hours=-14))),
    EARLIEST, LATEST])


def _write(draw: st.DrawFn, t: datetime) -> str:
    """`t` as a person or a script would write it."""
    text = t.isoformat(timespec=draw(st.sampled_from(
        ["auto", "minutes", "seconds", "milliseconds", "microseconds"])))
    if draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    if draw(st.integers(0, 5)) == 0:
        text = text.replace("T", " ")
    return text


@st.composite
def written(draw: st.DrawFn, times: st.SearchStrategy[datetime]) -> str:
    """A datetime of `times` as a person or a script would write it."""
    return _write(draw, draw(times))


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, str]:
    """A well-formed ?from=&to= pair inside the range, mostly around the stored rows,
    some too long or the wrong way round, each end in an offset of its own."""
    utc = st.just(UTC)
    start = draw(st.datetimes(min_value=datetime(2025, 12, 31), max_value=datetime(2026, 1, 2),
                              timezones=utc)
                 | st.datetimes(max_value=datetime(1970, 1, 2), min_value=datetime(1970, 1, 1),
                                timezones=utc)
                 | st.datetimes(min_value=datetime(2199, 12, 30), max_value=datetime(2200, 1, 1),
                                timezones=utc)
                 | st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                                timezones=utc)).astimezone(draw(OFFSETS))
    length = draw(st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=3))
                  | st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400))
                  | st.timedeltas(min_value=-timedelta(hours=1), max_value=timedelta(minutes=1))
                  | st.sampled_from([timedelta(days=d) for d in (31, 366, 3660)]))
    end = (start + length).astimezone(draw(OFFSETS))
    if end > LATEST:
        end = LATEST.astimezone(end.tzinfo)
    return _write(draw, start), _write(draw, end)


TIME_TEXT = (written(AWARE) | written(AWARE) | written(st.datetimes())  # no offset
             | st.text(alphabet="0123456789-:T+Z.,W ", max_size=32)
             | st.text(st.characters(exclude_categories=["Cs"]), max_size=32))


def judged(what: str, text: str) -> datetime | str:
    """What the server must make of a time the user wrote: the time in UTC, or the
    error message naming `what`."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return f"{what}: {text!r} is not an ISO 8601 time"
    if t.tzinfo is None:
        return f"{what}: {text!r} needs a UTC offset, e.g. {text}+08:00"
    if not EARLIEST <= t <= LATEST:  # aware comparison: no UTC conversion, no overflow
        return f"{what}: {text!r} is outside the allowed range {RANGE}"
    return t.astimezone(UTC)


def ms(t: datetime) -> int:
    # The historian and the audit log keep integer milliseconds (rounded).
    return round(t.timestamp() * 1000)


def expected_rows(s: Served, ep: Endpoint, start: datetime, end: datetime) -> list[str]:
    """The "t" of every stored row in [start, end), oldest first."""
    if ep.what == "audit log":  # also the logins and the shelving of the other test
        stored = [e.t for e in s.plant.audit.entries()]
    else:
        stored = DAYS if ep.what == "days" else SEEDED
    return [str(iso_utc(t)) for t in stored if ms(start) <= ms(t) < ms(end)]


def query(**params: str | None) -> str:
    parts = [f"{k}={quote(v, safe='')}" for k, v in params.items() if v is not None]
    return "?" + "&".join(parts) if parts else ""


# ------------------------------------------------------------------ the properties


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ep=st.sampled_from(ENDPOINTS),
       times=windows() | st.tuples(st.none() | TIME_TEXT, st.none() | TIME_TEXT))
def test_time_queries_never_fail_and_say_which_parameter(
        served: Served, ep: Endpoint, times: tuple[str | None, str | None]) -> None:
    start, end = times
    status, body = served.request(
        "GET", f"{served.plant.base}{ep.path}{query(**{'from': start, 'to': end})}")
    assert status < 500, body
    first = (f"query parameter 'from' {REQUIRED}" if not start
             else judged("query parameter 'from'", start))
    second = (f"query parameter 'to' {REQUIRED}" if not end
              else judged("query parameter 'to'", end))
    if isinstance(first, str):
        assert (status, body) == (400, {"error": first})
    elif isinstance(second, str):
        assert (status, body) == (400, {"error": second})
    elif second <= first:
        assert (status, body) == (400, {"error": "'to' must be after 'from'"})
    elif second - first > timedelta(days=ep.longest_days):
        assert (status, body) == (400, {
            "error": f"at most {ep.longest_days} days of {ep.what} per request"})
    else:
        assert status == 200, body
        assert [row["t"] for row in body] == expected_rows(served, ep, first, second)


MINUTES = (st.integers() | st.floats()  # NaN and ±Infinity too: not JSON, refused as such
           | st.floats(min_value=1e7, max_value=1e13) | st.floats(min_value=0, max_value=2000))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fields=st.sampled_from(["until", "minutes", "until", "minutes", "both", "neither"]),
       until_text=TIME_TEXT, minutes_number=MINUTES)
def test_shelve_times_never_fail_and_say_which_field(
        served: Served, fields: str, until_text: str, minutes_number: float) -> None:
    until = until_text if fields in ("until", "both") else None
    minutes = minutes_number if fields in ("minutes", "both") else None
    sent: dict[str, Any] = {"comment": "fuzz"}
    if until is not None:
        sent["until"] = until
    if minutes is not None:
        sent["minutes"] = minutes
    now = datetime.now(UTC)
    status, body = served.request("POST", f"{served.plant.base}/api/v1/alarms/s1_rate/shelve",
                                  json.dumps(sent))
    after = datetime.now(UTC)
    assert status < 500, body
    day = timedelta(days=1)
    if until is not None and minutes is not None:
        if isinstance(minutes, float) and not math.isfinite(minutes):
            assert (status, body) == (400, {"error": "request body is not valid JSON"})
        else:
            assert (status, body) == (400, {"error": "give 'minutes' or 'until', not both"})
        return
    if until is None and minutes is None:
        assert (status, body) == (400, {"error": "'minutes' or 'until' is required"})
        return
    if until is not None:
        judgement = judged("'until'", until)
        if isinstance(judgement, str):
            assert (status, body) == (400, {"error": judgement})
            return
        shelf = judgement
    else:
        assert minutes is not None
        if isinstance(minutes, float) and not math.isfinite(minutes):
            assert (status, body) == (400, {"error": "request body is not valid JSON"})
            return
        if not minutes > 0:
            assert (status, body) == (400, {"error": "'minutes' must be more than 0"})
            return
        try:
            length = timedelta(minutes=minutes)
        except OverflowError:
            assert (status, body) == (400, {"error": f"'minutes' is too large: {minutes}"})
            return
        if length > LATEST - now + day:
            assert status == 400 and body["error"].startswith("'minutes': "), body
            assert f"allowed range {RANGE}" in body["error"]
            return
        if length > LATEST - now - day:  # too near the end of the range to tell
            assert status in (400, 409), body
            return
        shelf = now + length
    # A time inside the range: the alarm engine decides (not after now, or > 24 h ahead).
    margin = timedelta(seconds=5)
    if shelf <= now - margin or shelf > after + day + margin:
        assert status == 409, body
        assert body["error"].startswith("shelve alarm rule 's1_rate': "), body
    elif now + margin < shelf <= now + day - margin:
        assert status == 200, body
        got = datetime.fromisoformat(body["audit"]["until"])  # to the millisecond
        # 'minutes' count from the server's now, somewhere between `now` and `after`
        slack = timedelta(milliseconds=1) + (after - now if until is None else timedelta(0))
        assert shelf - slack <= got <= shelf + slack, (got, shelf)
    else:
        assert status in (200, 409), body
