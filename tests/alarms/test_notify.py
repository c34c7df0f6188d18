"""The Notifier against real HTTP receivers: isolation, retries, dedupe, rate limit,
routing, escalation, repeats, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import pytest
from aiohttp import web

from alarms.config import AlarmsConfig
from alarms.notify import Notifier, TokenBucket, in_window, utc_now
from model.records import AlarmEvent, DeliveryRecord
from tests.alarms.test_channels import SITE, TOKEN, MakeReceiver, alarm_event, receivers
from tests.conftest import free_port

T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)  # 11:00 in Asia/Shanghai


@pytest.fixture
async def receiver() -> AsyncIterator[MakeReceiver]:
    async with receivers() as make:
        yield make


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


def hook(cid: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"id": cid, "kind": "webhook", "url": url, "timeout_s": 5, **kw}


def make(channels: list[dict[str, Any]], routes: list[dict[str, Any]] | None = None,
         delivery: dict[str, Any] | None = None, **kw: Any) -> Notifier:
    alarms = AlarmsConfig.model_validate({
        "channels": channels,
        "routes": routes if routes is not None else [{"channels": [c["id"] for c in channels]}],
        "delivery": {"backoff_initial_s": 0.05, "backoff_max_s": 0.1, **(delivery or {})}})
    kw.setdefault("tick_s", 3600.0)  # the tests call tick() themselves
    return Notifier(alarms, SITE, origin="test.yaml", **kw)


def outcomes(n: Notifier, channel: str | None = None) -> list[tuple[str, str, str, int]]:
    return [(d.rule, d.kind, d.outcome, d.attempt) for d in n.deliveries
            if channel is None or d.channel == channel]


async def settle(n: Notifier, timeout: float = 5.0) -> None:
    """Wait until every queue is empty and no send is in flight."""
    deadline = time.monotonic() + timeout
    while any(not w.queue.empty() or w.current is not None for w in n._workers.values()):
        assert time.monotonic() < deadline, "notifier did not settle"
        await asyncio.sleep(0.01)


# ---- isolation ----------------------------------------------------------------------

async def test_slow_and_dead_channels_do_not_delay_others(receiver: MakeReceiver) -> None:
    slow = await receiver(delay_s=3.0)
    fast = await receiver()
    dead = f"http://127.0.0.1:{free_port()}/x"
    n = make([hook("slow", f"{slow.url}/s"), hook("dead", dead), hook("fast", f"{fast.url}/f")])
    await n.start()
    try:
        started = time.monotonic()
        for i in range(3):
            n.notify(alarm_event(rule=f"r{i}"))
        assert time.monotonic() - started < 0.05  # notify never waits on a channel
        got = await fast.wait_for(3, timeout=2.0)
        assert max(g.at for g in got) - started < 0.5
        assert [g.json()["rule"] for g in got] == ["r0", "r1", "r2"]
        assert len(slow.got) == 1  # still busy with the first one
    finally:
        t = time.monotonic()
        await n.stop(grace_s=0.2)
        assert time.monotonic() - t < 1.0
    assert outcomes(n, "slow") == [("r0", "event", "dropped", 0), ("r1", "event", "dropped", 0),
                                   ("r2", "event", "dropped", 0)]
    assert all(d.error == "not sent before stop" for d in n.deliveries if d.channel == "slow")
    assert [o for o in outcomes(n, "fast")] == [(f"r{i}", "event", "sent", 1) for i in range(3)]
    assert ("r0", "event", "retry", 1) in outcomes(n, "dead")


async def test_queue_full_drops_the_oldest(receiver: MakeReceiver,
                                           caplog: pytest.LogCaptureFixture) -> None:
    slow = await receiver(delay_s=1.0)
    n = make([hook("slow", f"{slow.url}/s")], delivery={"queue_size": 1})
    await n.start()
    try:
        n.notify(alarm_event(rule="r0"))
        await slow.wait_for(1)  # r0 in flight
        n.notify(alarm_event(rule="r1"))
        n.notify(alarm_event(rule="r2"))  # queue holds one: r1 goes
        assert outcomes(n) == [("r1", "event", "dropped", 0)]
        assert n.deliveries[0].error == "queue full (1): oldest dropped"
        await slow.wait_for(2, timeout=3)
        assert slow.got[1].json()["rule"] == "r2"
    finally:
        await n.stop(grace_s=0)
    assert "alarm channel slow: queue full, oldest notification dropped" in caplog.text


# ---- retries ------------------------------------------------------------------------

async def test_retries_with_capped_exponential_backoff(receiver: MakeReceiver) -> None:
    async def fail_three(k: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="busy") if k <= 3 else web.Response(text="ok")

    r = await receiver(fail_three)
    n = make([hook("h", f"{r.url}/h")],
             delivery={"retries": 4, "backoff_initial_s": 0.1, "backoff_max_s": 0.15})
    await n.start()
    try:
        n.notify(alarm_event())
        got = await r.wait_for(4, timeout=3)
        await settle(n)
    finally:
        await n.stop()
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    # 0.1, then 0.2 and 0.4 capped at 0.15.
    assert 0.09 <= gaps[0] < 0.5
    assert 0.14 <= gaps[1] < 0.5 and 0.14 <= gaps[2] < 0.5
    assert outcomes(n) == [("co2_high", "event", "retry", 1), ("co2_high", "event", "retry", 2),
                           ("co2_high", "event", "retry", 3), ("co2_high", "event", "sent", 4)]
    assert n.deliveries[0].error == f"webhook channel 'h': POST {r.url}/h: HTTP 500: busy"
    assert n.deliveries[0].t.tzinfo is UTC


async def test_gives_up_logs_once_and_recovers(receiver: MakeReceiver,
                                               caplog: pytest.LogCaptureFixture) -> None:
    broken = {"on": True}

    async def maybe(k: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="down") if broken["on"] else web.Response()

    r = await receiver(maybe)
    n = make([hook("h", f"{r.url}/h")], delivery={"retries": 1})
    caplog.set_level(logging.INFO, logger="alarms.notify")
    await n.start()
    try:
        n.notify(alarm_event(rule="a"))
        n.notify(alarm_event(rule="b"))
        await r.wait_for(4)
        await settle(n)
        broken["on"] = False
        n.notify(alarm_event(rule="c"))
        await r.wait_for(5)
        await settle(n)
    finally:
        await n.stop()
    assert outcomes(n) == [("a", "event", "retry", 1), ("a", "event", "failed", 2),
                           ("b", "event", "retry", 1), ("b", "event", "failed", 2),
                           ("c", "event", "sent", 1)]
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == [f"alarm channel h failed after 2 tries: webhook channel 'h': "
                      f"POST {r.url}/h: HTTP 502: down"]
    assert "alarm channel h works again" in caplog.text


# ---- dedupe and rate limit ----------------------------------------------------------

async def test_dedupe_same_rule_and_state_within_window(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock()
    n = make([hook("h", f"{r.url}/h")], delivery={"dedupe_window_s": 300}, clock=clock)
    await n.start()
    try:
        n.notify(alarm_event())
        clock.advance(seconds=10)
        n.notify(alarm_event())  # same rule, same state: a duplicate
        n.notify(alarm_event(state="normal", previous="alarm"))
        n.notify(alarm_event())  # alternation is never a duplicate
        clock.advance(seconds=301)
        n.notify(alarm_event())  # outside the window
        await r.wait_for(4)
        await settle(n)
    finally:
        await n.stop()
    assert [g.json()["state"] for g in r.got] == ["alarm", "normal", "alarm", "alarm"]
    # The duplicate is logged when notified, the sends when they are done.
    assert [(d.state, d.outcome) for d in n.deliveries] == [
        ("alarm", "deduplicated"), ("alarm", "sent"), ("normal", "sent"), ("alarm", "sent"),
        ("alarm", "sent")]
    assert n.deliveries[0].error == "same state notified within 300 s"


async def test_rate_limit_holds_then_summarises(receiver: MakeReceiver,
                                                caplog: pytest.LogCaptureFixture) -> None:
    r = await receiver()
    n = make([hook("h", f"{r.url}/h", rate_limit={"burst": 2, "per_minute": 120})])
    await n.start()
    try:
        for i in range(5):
            n.notify(alarm_event(rule=f"r{i}"))
        first = await r.wait_for(2)
        assert [g.json()["rule"] for g in first] == ["r0", "r1"]
        got = await r.wait_for(3, timeout=3.0)
        assert got[2].at - got[1].at >= 0.4  # one token every 0.5 s
        await asyncio.sleep(0.7)
        assert len(r.got) == 3  # the three held ones went out as one summary
    finally:
        await n.stop()
    summary = got[2].json()
    assert summary["rule"] == "r4"  # the latest held event carries the summary
    assert summary["message"].startswith(
        "[Rate limit summary] 3 notifications merged into this one: 08:03 r2 normal→alarm; "
        "08:03 r3 normal→alarm; 08:03 r4 normal→alarm. Latest: ")
    assert summary["message_zh"].startswith("【限流汇总】发送过于频繁，3 条通知合并为本条：")
    assert [(d.rule, d.kind, d.outcome) for d in n.deliveries] == [
        ("r0", "event", "sent"), ("r1", "event", "sent"), ("r2", "event", "rate_limited"),
        ("r3", "event", "rate_limited"), ("r4", "event", "rate_limited"),
        ("r4", "summary", "sent")]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rate limit reached" in warnings[0].getMessage()


async def test_reannouncement_is_not_a_duplicate(receiver: MakeReceiver) -> None:
    if "cause" not in AlarmEvent.__dataclass_fields__:
        pytest.skip("AlarmEvent has no 'cause' yet (alarms/state.py adds it)")
    r = await receiver()
    n = make([hook("h", f"{r.url}/h")])  # never started: notify starts the workers
    try:
        n.notify(alarm_event())
        n.notify(dataclasses.replace(alarm_event(), cause="unshelve"))
        await r.wait_for(2)
    finally:
        await n.stop()
    assert [d.outcome for d in n.deliveries] == ["sent", "sent"]


def test_token_bucket() -> None:
    now = [100.0]
    b = TokenBucket(2, 60.0, monotonic=lambda: now[0])
    assert b.take() and b.take() and not b.take()
    assert b.wait_s() == pytest.approx(1.0)
    now[0] += 0.5
    assert not b.take() and b.wait_s() == pytest.approx(0.5)
    now[0] += 0.5
    assert b.take()
    now[0] += 100
    assert b.take() and b.take() and not b.take()  # never more than the burst


# ---- routing ------------------------------------------------------------------------

def test_time_window() -> None:
    assert in_window("12:00", None, None)
    assert in_window("08:00", "08:00", "20:00") and not in_window("20:00", "08:00", "20:00")
    assert in_window("23:30", "20:00", "08:00") and in_window("07:59", "20:00", "08:00")
    assert not in_window("08:00", "20:00", "08:00") and not in_window("12:00", "20:00", "08:00")


async def test_routing_by_severity_area_and_time_of_day(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock(T0)  # 11:00 plant time
    n = make([hook("day", f"{r.url}/day"), hook("night", f"{r.url}/night"),
              hook("u1", f"{r.url}/u1"), hook("extra", f"{r.url}/extra")],
             routes=[{"name": "day shift", "start": "08:00", "end": "20:00",
                      "channels": ["day"]},
                     {"name": "night shift", "start": "20:00", "end": "08:00",
                      "channels": ["night"]},
                     {"name": "unit 1 alarms", "severities": ["alarm"], "areas": ["U1"],
                      "channels": ["u1"]}],
             clock=clock)
    await n.start()
    try:
        n.notify(alarm_event(rule="a1"), area="U1")  # day + u1
        n.notify(alarm_event(rule="w1", state="warning"), area="U1")  # day (not an alarm)
        n.notify(alarm_event(rule="a2"), area="U2", channels=["extra"])  # day + the rule's own
        clock.advance(hours=9, minutes=30)  # 20:30
        n.notify(alarm_event(rule="a3"), area="U1")  # night + u1
        clock.t = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)  # 08:00 sharp: the day begins
        n.notify(alarm_event(rule="a4"))  # day
        await settle(n)
    finally:
        await n.stop()

    def rules(path: str) -> list[str]:
        return [g.json()["rule"] for g in r.got if g.path == path]

    assert rules("/day") == ["a1", "w1", "a2", "a4"]
    assert rules("/night") == ["a3"]
    assert rules("/u1") == ["a1", "a3"]
    assert rules("/extra") == ["a2"]


# ---- escalation and repeats ---------------------------------------------------------

async def test_escalation_when_unacknowledged(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock()
    acked: dict[str, bool] = {}  # the acknowledgement interface: rule id → acknowledged
    n = make([hook("ops", f"{r.url}/ops"), hook("boss", f"{r.url}/boss")],
             routes=[{"channels": ["ops"], "escalate_after_min": 30, "escalate_to": ["boss"]}],
             clock=clock, is_acknowledged=lambda rule: acked.get(rule, False))
    await n.start()
    try:
        n.notify(alarm_event(rule="r1"))
        n.notify(alarm_event(rule="r2"))
        await r.wait_for(2, path="/ops")
        clock.advance(minutes=29)
        n.tick()
        acked["r2"] = True  # an operator acknowledges r2 in time
        clock.advance(minutes=1)
        n.tick()
        (esc,) = await r.wait_for(1, path="/boss")
        clock.advance(minutes=10)
        n.tick()  # escalated once only
        n.notify(alarm_event(rule="r1", state="normal", previous="alarm"))
        await settle(n)
    finally:
        await n.stop()
    body = esc.json()
    assert body["rule"] == "r1" and body["state"] == "alarm"
    assert body["message_zh"].startswith("【升级通知】已 30 分钟未确认。S1 co2_rate_t_h")
    assert body["message"].startswith("[Escalation] not acknowledged for 30 min. S1")
    # The recovery goes to ops and to whoever the alarm was escalated to.
    assert len(r.got) == 5
    assert sorted((g.path, g.json()["rule"], g.json()["state"]) for g in r.got[3:]) == [
        ("/boss", "r1", "normal"), ("/ops", "r1", "normal")]
    assert [(d.channel, d.rule, d.kind) for d in n.deliveries if d.outcome == "sent"
            and d.kind == "escalation"] == [("boss", "r1", "escalation")]


async def test_repeat_while_active_and_unacknowledged(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock()
    acked: dict[str, bool] = {}
    n = make([hook("ops", f"{r.url}/ops")],
             routes=[{"channels": ["ops"], "repeat_min": 10}],
             clock=clock, is_acknowledged=lambda rule: acked.get(rule, False))
    await n.start()
    try:
        n.notify(alarm_event())
        for minutes, expected in [(9, 1), (1, 2), (5, 2), (5, 3)]:  # at 9, 10, 15, 20 min
            clock.advance(minutes=minutes)
            n.tick()
            await settle(n)
            assert len(r.got) == expected, f"after {minutes} more min"
        acked["co2_high"] = True
        clock.advance(minutes=10)
        n.tick()
        n.notify(alarm_event(state="normal", previous="alarm"))
        acked.clear()
        clock.advance(minutes=30)
        n.tick()  # back to normal: nothing to repeat
        await settle(n)
    finally:
        await n.stop()
    assert r.got[1].json()["message_zh"].startswith("【重复通知】已 10 分钟未确认。S1 ")
    assert r.got[2].json()["message_zh"].startswith("【重复通知】已 20 分钟未确认。S1 ")
    assert r.got[2].json()["message"].startswith("[Repeat] not acknowledged for 20 min. S1 ")
    assert [d.kind for d in n.deliveries] == ["event", "repeat", "repeat", "event"]
    assert r.got[3].json()["state"] == "normal"


async def test_forgotten_rule_is_not_repeated_or_escalated(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock()
    n = make([hook("ops", f"{r.url}/ops"), hook("boss", f"{r.url}/boss")],
             routes=[{"channels": ["ops"], "repeat_min": 10, "escalate_after_min": 10,
                      "escalate_to": ["boss"]}], clock=clock)
    await n.start()
    try:
        n.notify(alarm_event(rule="r1"))
        n.notify(alarm_event(rule="r2"))
        await r.wait_for(2, path="/ops")
        n.forget("r1")  # the rule was deleted
        clock.advance(minutes=10)
        n.tick()
        await settle(n)
        # Its dedupe memory went too: a rule re-created with that id is heard at once.
        n.notify(alarm_event(rule="r1"))
        await settle(n)
    finally:
        await n.stop()
    assert [(d.channel, d.rule, d.kind, d.outcome) for d in n.deliveries] == [
        ("ops", "r1", "event", "sent"), ("ops", "r2", "event", "sent"),
        ("ops", "r2", "repeat", "sent"), ("boss", "r2", "escalation", "sent"),
        ("ops", "r1", "event", "sent")]


async def test_on_delivery_gets_every_record(receiver: MakeReceiver,
                                             caplog: pytest.LogCaptureFixture) -> None:
    r = await receiver()
    got: list[DeliveryRecord] = []
    fail = {"on": True}

    def keep(record: DeliveryRecord) -> None:
        if fail["on"]:
            raise OSError("historian busy")
        got.append(record)

    caplog.set_level(logging.INFO, logger="alarms.notify")
    n = make([hook("ops", f"{r.url}/ops")], on_delivery=keep)
    await n.start()
    try:
        n.notify(alarm_event(rule="r1"))
        n.notify(alarm_event(rule="r2"))
        await r.wait_for(2)
        await settle(n)
        fail["on"] = False
        n.notify(alarm_event(rule="r1"))  # deduplicated: logged, not sent
        n.notify(alarm_event(rule="r3"))
        await r.wait_for(3)
        await settle(n)
    finally:
        await n.stop()
    # A failing callback does not stop delivery, and is logged once until it works again.
    failures = [rec for rec in caplog.records if rec.name == "alarms.notify"
                and rec.getMessage().startswith("delivery log callback failed")]
    assert len(failures) == 1 and "OSError: historian busy" in caplog.text
    assert "delivery log callback works again" in caplog.text
    assert [(d.channel, d.rule, d.outcome) for d in got] == [
        ("ops", "r1", "deduplicated"), ("ops", "r3", "sent")]
    assert got == n.deliveries[2:]


async def test_failing_ack_check_counts_as_unacknowledged(
        receiver: MakeReceiver, caplog: pytest.LogCaptureFixture) -> None:
    r = await receiver()
    clock = ManualClock()

    def broken(rule: str) -> bool:
        raise KeyError(rule)

    n = make([hook("ops", f"{r.url}/ops")], routes=[{"channels": ["ops"], "repeat_min": 5}],
             clock=clock, is_acknowledged=broken)
    await n.start()
    try:
        n.notify(alarm_event())
        clock.advance(minutes=5)
        n.tick()
        await r.wait_for(2)
    finally:
        await n.stop()
    assert "acknowledgement check for rule co2_high failed (KeyError" in caplog.text


async def test_tick_runs_by_itself_once_started(receiver: MakeReceiver) -> None:
    r = await receiver()
    clock = ManualClock()
    n = make([hook("ops", f"{r.url}/ops")], routes=[{"channels": ["ops"], "repeat_min": 1}],
             clock=clock, tick_s=0.05)
    await n.start()
    try:
        n.notify(alarm_event())
        clock.advance(minutes=1)
        await r.wait_for(2, timeout=2)
    finally:
        await n.stop()


# ---- secrets and unknown channels ---------------------------------------------------

async def test_secrets_never_in_logs_or_delivery_log(receiver: MakeReceiver,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    secret = "Gw7+kQ/zz=SMSKEY"
    monkeypatch.setenv("CS_TEST_WECOM_KEY", TOKEN)
    monkeypatch.setenv("CS_TEST_SMS_KEY", secret)
    monkeypatch.setenv("CS_TEST_DING_TOKEN", TOKEN)

    async def echo(k: int, request: web.Request) -> web.StreamResponse:
        # A careless gateway that repeats the whole request in its error answer.
        return web.Response(status=400, text=f"bad {request.path_qs} {await request.text()}")

    r = await receiver(echo)
    caplog.set_level(logging.DEBUG)
    n = make([{"id": "wx", "kind": "wecom", "url": f"{r.url}/wx", "key_env": "CS_TEST_WECOM_KEY"},
              {"id": "sms", "kind": "sms", "url": f"{r.url}/sms", "numbers": ["1"],
               "template": {"key": "{secret}", "to": "{phone}", "text": "{text}"},
               "secret_env": "CS_TEST_SMS_KEY"},
              {"id": "ding", "kind": "dingtalk", "url": f"http://127.0.0.1:{free_port()}/d",
               "token_env": "CS_TEST_DING_TOKEN"}],
             delivery={"retries": 1})
    await n.start()
    try:
        n.notify(alarm_event())
        await r.wait_for(4)
        await settle(n)
    finally:
        await n.stop()
    failed = [d for d in n.deliveries if d.outcome == "failed"]
    assert sorted(d.channel for d in failed) == ["ding", "sms", "wx"]
    # Every log line but the receiver's own access log (that is the remote server's).
    texts = [rec.getMessage() for rec in caplog.records if rec.name != "aiohttp.access"]
    texts += [d.error for d in n.deliveries]
    assert any("alarms" in rec.name for rec in caplog.records)
    for value in (TOKEN, secret):
        for form in (value, quote_plus(value)):
            assert not any(form in t for t in texts), form
    wx = next(d for d in failed if d.channel == "wx")
    assert wx.error == f"wecom channel 'wx': POST {r.url}/wx?key=***: HTTP 400: bad /wx?key=*** " \
        '{"msgtype":"markdown",' + wx.error.split('{"msgtype":"markdown",', 1)[1]
    assert '"key":"***"' in next(d for d in failed if d.channel == "sms").error


async def test_unknown_channel_is_dropped_and_logged(receiver: MakeReceiver,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    r = await receiver()
    n = make([hook("h", f"{r.url}/h")])
    await n.start()
    try:
        n.notify(alarm_event(rule="a"), channels=["nope"])
        n.notify(alarm_event(rule="b"), channels=["nope"])
        await r.wait_for(2)
    finally:
        await n.stop()
    assert [(d.rule, d.channel, d.outcome) for d in n.deliveries if d.outcome == "dropped"] == [
        ("a", "nope", "dropped"), ("b", "nope", "dropped")]
    assert caplog.text.count("unknown channel 'nope'") == 1


def test_delivery_log_is_bounded() -> None:
    n = make([hook("h", "http://127.0.0.1:9/h")], delivery={"log_size": 3})
    for i in range(5):
        n.notify(alarm_event(rule=f"r{i}"), channels=["nope"])
    assert [d.rule for d in n.deliveries] == ["r2", "r3", "r4"]
    assert isinstance(n.deliveries[0], DeliveryRecord)
    assert utc_now().tzinfo is UTC
