"""AlarmSink (through the notifier it builds) and the email channel against a real SMTP
server (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alarms.config import EmailChannelConfig
from alarms.email import EmailChannel
from alarms.engine import AlarmSink
from alarms.notify import Notifier
from model.errors import ConfigError, SinkError
from model.records import AlarmEvent, DeliveryRecord
from server.config import PlantConfig, parse_config
from tests.alarms.test_rules import T0, minute_result
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.smtp import SmtpServer

SUBJECT = "[报警 ALARM] 测试电厂 Test Plant source S1 co2_rate_t_h"
TO = ["ops@example.com", "duty@example.com"]


def channel(cid: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"id": cid, "kind": "email", "host": "127.0.0.1", "port": port,
            "sender": "carbonscada@example.com", "to": TO, "timeout_s": 2.0, **kw}


def config(channels: list[dict[str, Any]], notify: list[str],
           delivery: dict[str, Any] | None = None) -> PlantConfig:
    data = plant_dict()
    data["alarms"] = {
        "rules": [{"id": "co2_high", "name": "High CO2 rate",
                   "target": {"source": "S1", "field": "co2_rate_t_h"},
                   "warning": 160.0, "alarm": 180.0, "deadband": 5.0, "notify": notify}],
        "channels": channels,
        "delivery": delivery or {},
    }
    return parse_config(data, "test_email")


def outcomes(records: list[DeliveryRecord], channel: str) -> list[tuple[str, str, str, int]]:
    return [(d.rule, d.state, d.outcome, d.attempt) for d in records if d.channel == channel]


async def test_one_alarm_sends_one_email(smtp_server: SmtpServer) -> None:
    sink = AlarmSink(config([channel("mail", smtp_server.port)], ["mail"]))
    seen: list[AlarmEvent] = []
    sink.subscribe(seen.append)
    await sink.start()
    try:
        await sink.on_minute(minute_result(196_960.0))  # 196.96 t/h ≥ alarm level 180
        assert [(e.rule, e.previous, e.state) for e in sink.events] == [
            ("co2_high", "normal", "alarm")]
        assert seen == sink.events
        assert sink.active() == sink.events

        (msg,) = await smtp_server.wait_for(1)
        assert msg["Subject"] == SUBJECT
        assert msg["From"] == "carbonscada@example.com"
        assert msg["To"] == "ops@example.com, duty@example.com"
        (rcv,) = smtp_server.received
        assert rcv.mail_from == "carbonscada@example.com" and rcv.rcpt_tos == TO
        text = msg.get_content()
        assert "数值：196.96" in text and "限值：180" in text
        assert "Value: 196.96" in text and "Level: 180" in text
        assert "S1 co2_rate_t_h = 196.96 ≥ 报警限值 180" in text
        assert "S1 co2_rate_t_h = 196.96 ≥ alarm level 180" in text
        # 00:03 UTC is 08:03 in Asia/Shanghai; Chinese comes before English.
        assert "UTC: 2024-05-01 00:03:00" in text
        assert "Plant time (Asia/Shanghai): 2024-05-01 08:03:00" in text
        assert text.index("状态：报警") < text.index("State: alarm")

        # Same state next minute: no event, no mail.
        await sink.on_minute(minute_result(190_000.0, datetime(2024, 5, 1, 0, 4, tzinfo=UTC)))
        assert len(sink.events) == 1
        await asyncio.sleep(0.3)
        assert len(smtp_server.messages) == 1

        # Back to normal: one more mail, and nothing active.
        await sink.on_minute(minute_result(100_000.0))
        (_, normal) = await smtp_server.wait_for(2)
        assert normal["Subject"] == "[恢复 NORMAL] 测试电厂 Test Plant source S1 co2_rate_t_h"
        assert sink.active() == []
    finally:
        await sink.stop()


async def test_dead_channel_does_not_block(smtp_server: SmtpServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    dead_port = free_port()
    cfg = config([channel("dead", dead_port), channel("mail", smtp_server.port)],
                 ["dead", "mail"],
                 delivery={"retries": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.05})
    delivered: list[DeliveryRecord] = []
    sink = AlarmSink(cfg, on_delivery=delivered.append)
    caplog.set_level(logging.DEBUG, logger="alarms.notify")
    try:
        started = time.monotonic()
        await sink.on_minute(minute_result(196_960.0))
        await sink.on_minute(minute_result(170_000.0))  # 170 < 180 − 5 → warning
        assert time.monotonic() - started < 0.1
        assert [e.state for e in sink.events] == ["alarm", "warning"]

        msgs = await smtp_server.wait_for(2)
        assert sorted(m["Subject"].split("]")[0] for m in msgs) == ["[报警 ALARM", "[预警 WARNING"]
        await sink.stop()  # the dead channel's tries are done within the grace period
    finally:
        await sink.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Two events failed on the dead channel, but its failure is logged once.
    assert len(errors) == 1
    assert errors[0].getMessage().startswith(
        f"alarm channel dead failed after 3 tries: email channel 'dead': cannot send via "
        f"127.0.0.1:{dead_port} (none): ")
    tries = [r for r in caplog.records if "channel dead try" in r.getMessage()]
    assert len(tries) == 4  # 2 events x 2 retried tries
    # The delivery log (handed to on_delivery) has every attempt.
    assert outcomes(delivered, "dead") == [
        ("co2_high", "alarm", "retry", 1), ("co2_high", "alarm", "retry", 2),
        ("co2_high", "alarm", "failed", 3), ("co2_high", "warning", "retry", 1),
        ("co2_high", "warning", "retry", 2), ("co2_high", "warning", "failed", 3)]
    assert outcomes(delivered, "mail") == [("co2_high", "alarm", "sent", 1),
                                           ("co2_high", "warning", "sent", 1)]


async def test_stop_cancels_a_hung_send() -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never greets; ends when the client hangs up
        hung_up.set()
        writer.close()

    hung = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    try:
        cfg = config([channel("slow", port, timeout_s=30.0)], ["slow"])
        delivered: list[DeliveryRecord] = []
        sink = AlarmSink(cfg, on_delivery=delivered.append)
        await sink.on_minute(minute_result(196_960.0))
        assert len(sink.events) == 1
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await sink.stop()
        # The notifier's stop grace is 2 s; the send would have waited 30 s.
        assert time.monotonic() - started < 3.0
        await asyncio.wait_for(hung_up.wait(), 1.0)  # the connection was given up
        assert [(d.channel, d.outcome, d.error) for d in delivered] == [
            ("slow", "dropped", "not sent before stop")]
    finally:
        hung.close()


async def test_listener_failure_does_not_stop_others(smtp_server: SmtpServer) -> None:
    sink = AlarmSink(config([channel("mail", smtp_server.port)], []))
    got: list[str] = []

    def bad(event: AlarmEvent) -> None:
        raise RuntimeError("boom")

    sink.subscribe(bad)
    unsubscribe = sink.subscribe(lambda e: got.append(e.state))
    await sink.on_minute(minute_result(196_960.0))
    unsubscribe()
    await sink.on_minute(minute_result(100_000.0))
    assert got == ["alarm"]
    assert [e.state for e in sink.events] == ["alarm", "normal"]
    await sink.stop()
    assert smtp_server.messages == []  # the rule notifies no channel


async def test_sink_builds_its_notifier_from_the_config(smtp_server: SmtpServer) -> None:
    delivered: list[DeliveryRecord] = []
    sink = AlarmSink(config([channel("mail", smtp_server.port)], ["mail"]),
                     on_delivery=delivered.append)
    assert isinstance(sink.notifier, Notifier)
    assert set(sink.notifier.channels) == {"mail"}
    await sink.start()
    try:
        await sink.on_minute(minute_result(196_960.0))
        (msg,) = await smtp_server.wait_for(1)
        assert msg["Subject"] == SUBJECT
        # The notifier asks the sink whether to repeat and escalate.
        assert sink.notifier.is_acknowledged("co2_high") is False
        sink.acknowledge("co2_high", "op", "seen")
        assert sink.notifier.is_acknowledged("co2_high") is True
    finally:
        await sink.stop()
    assert [(d.channel, d.rule, d.state, d.kind, d.outcome, d.attempt) for d in delivered] == [
        ("mail", "co2_high", "alarm", "event", "sent", 1)]


def test_notifier_secrets_are_checked_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARBONSCADA_TEST_SMTP_PW", raising=False)
    cfg = config([channel("auth", free_port(), username="ops",
                          password_env="CARBONSCADA_TEST_SMTP_PW")], ["auth"])
    with pytest.raises(ConfigError, match=r"^plant\.yaml: alarms\.channels\[0\]\.password_env: "):
        AlarmSink(cfg, origin="plant.yaml")


def test_on_delivery_needs_the_sinks_own_notifier() -> None:
    cfg = config([], [])
    with pytest.raises(ValueError, match="on_delivery is for the notifier the sink builds"):
        AlarmSink(cfg, notifier=Notifier(cfg.alarms, cfg.site), on_delivery=print)


def test_unknown_field_fails_before_construction() -> None:
    # The schema refuses it (so check-config does too), before any engine is built.
    data = plant_dict()
    data["alarms"] = {"rules": [{"id": "bad", "target": {"source": "S1", "field": "co2"},
                                 "alarm": 1.0}]}
    with pytest.raises(ConfigError, match="alarm rule 'bad': unknown source field 'co2'"):
        AlarmSink(parse_config(data, "test_email"))


def event() -> AlarmEvent:
    return AlarmEvent(rule="co2_high", t=T0, state="warning", previous="normal", value=165.0,
                      limit=160.0, target="source S1 co2_rate_t_h",
                      message="S1 co2_rate_t_h = 165 ≥ warning level 160",
                      message_zh="S1 co2_rate_t_h = 165 ≥ 预警限值 160")


async def test_send_failure_raises_sink_error() -> None:
    dead_port = free_port()
    ch = EmailChannel(EmailChannelConfig.model_validate(channel("dead", dead_port)))
    with pytest.raises(SinkError, match=rf"email channel 'dead': cannot send via "
                                        rf"127\.0\.0\.1:{dead_port} \(none\)"):
        await ch.send(event(), "Test Plant")


async def test_missing_password_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARBONSCADA_TEST_SMTP_PW", raising=False)
    ch = EmailChannel(EmailChannelConfig.model_validate(
        channel("auth", free_port(), username="ops", password_env="CARBONSCADA_TEST_SMTP_PW")))
    with pytest.raises(SinkError, match="environment variable 'CARBONSCADA_TEST_SMTP_PW' "
                                        "with the SMTP password is not set"):
        await ch.send(event(), "Test Plant")


class _Auth:
    def __init__(self) -> None:
        self.logins: list[tuple[bytes, bytes]] = []
        self.messages: list[bytes] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


async def test_login_uses_password_from_environment(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CARBONSCADA_TEST_SMTP_PW", "s3cret")
    caplog.set_level(logging.DEBUG)
    auth = _Auth()
    port = free_port()
    ctl = Controller(auth, hostname="127.0.0.1", port=port, authenticator=auth,
                     auth_require_tls=False)
    ctl.start()
    try:
        ch = EmailChannel(EmailChannelConfig.model_validate(
            channel("auth", port, username="ops", password_env="CARBONSCADA_TEST_SMTP_PW")))
        await ch.send(event(), "Test Plant")
        assert auth.logins == [(b"ops", b"s3cret")]
        assert len(auth.messages) == 1
        monkeypatch.setenv("CARBONSCADA_TEST_SMTP_PW", "wrong")
        # aiosmtpd leaves the client's fallback to AUTH LOGIN unanswered: keep the wait short.
        ch = EmailChannel(EmailChannelConfig.model_validate(
            channel("auth", port, username="ops", password_env="CARBONSCADA_TEST_SMTP_PW",
                    timeout_s=0.5)))
        with pytest.raises(SinkError, match="email channel 'auth'") as err:
            await ch.send(event(), "Test Plant")
        assert auth.logins[-1] == (b"ops", b"wrong")
        assert "wrong" not in str(err.value)
    finally:
        ctl.stop()
    assert "s3cret" not in caplog.text
