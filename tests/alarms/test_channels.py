"""Notification channels against real servers on loopback.

aiohttp receivers for the webhook, WeCom, DingTalk, Feishu and SMS formats (payloads and
signatures checked against the documented algorithms, recomputed here), aiosmtpd with
STARTTLS / SSL and AUTH for email, mosquitto for MQTT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote

import aiomqtt
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alarms.channels import (
    Channel,
    ChannelContext,
    Secret,
    build_channels,
    factories,
)
from alarms.config import AlarmsConfig
from compute.config import SiteConfig
from model.errors import ConfigError, SinkError
from model.records import AlarmEvent
from server.config import parse_config
from tests.conftest import free_port
from tests.fixtures.mqtt import Broker, run_mosquitto
from tests.fixtures.plant import plant_dict

T0 = dt.datetime(2024, 5, 1, 0, 3, tzinfo=dt.UTC)
SITE = SiteConfig(id="plant1", name="Test Plant", name_zh="测试电厂")
SITE_NAME = "测试电厂 Test Plant"
SECRET = "SECs3cr3t+/=value"  # has characters that base64 / URL encoding would change
TOKEN = "tok+en/0123=abc"


def alarm_event(rule: str = "co2_high", state: str = "alarm", previous: str = "normal",
                t: dt.datetime = T0) -> AlarmEvent:
    return AlarmEvent(rule=rule, t=t, state=state, previous=previous, value=196.96,
                      limit=180.0, target="source S1 co2_rate_t_h",
                      message=f"S1 co2_rate_t_h = 196.96 ≥ alarm level 180 [rule {rule}]",
                      message_zh=f"S1 co2_rate_t_h = 196.96 ≥ 报警限值 180［规则 {rule}］")


# ---- an HTTP receiver ---------------------------------------------------------------

@dataclass
class Got:
    """One request a receiver got."""

    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


Reply = Callable[[int, web.Request], Awaitable[web.StreamResponse]]


async def ok_reply(n: int, request: web.Request) -> web.StreamResponse:
    return web.json_response({"errcode": 0, "errmsg": "ok", "code": 0, "msg": "success"})


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 recording every request."""

    reply: Reply = ok_reply
    delay_s: float = 0.0
    got: list[Got] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.got.append(Got(request.method, request.path, dict(request.query),
                            request.query_string, dict(request.headers), body,
                            time.monotonic()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await self.reply(len(self.got), request)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, n: int, timeout: float = 5.0, path: str | None = None) -> list[Got]:
        deadline = time.monotonic() + timeout
        while True:
            got = [g for g in self.got if path is None or g.path == path]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} request(s) on {path or 'any path'} "
                                     f"within {timeout} s, got {len(got)}")
            await asyncio.sleep(0.01)


MakeReceiver = Callable[..., Awaitable[Receiver]]


@contextlib.asynccontextmanager
async def receivers() -> AsyncIterator[MakeReceiver]:
    """Make receivers; all are closed at the end."""
    made: list[Receiver] = []

    async def make(reply: Reply = ok_reply, delay_s: float = 0.0) -> Receiver:
        r = await Receiver(reply, delay_s).start()
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            await r.close()


@pytest.fixture
async def receiver() -> AsyncIterator[MakeReceiver]:
    async with receivers() as make:
        yield make


def channel(cfg: dict[str, Any], site: SiteConfig = SITE) -> Channel:
    alarms = AlarmsConfig.model_validate({"channels": [cfg]})
    return build_channels(alarms, site, "test.yaml")[cfg["id"]]


# ---- registry and secrets -----------------------------------------------------------

def test_registry_has_every_kind() -> None:
    assert set(factories()) == {"email", "webhook", "wecom", "dingtalk", "feishu", "sms",
                                "mqtt"}


def test_secret_never_prints() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r} {[s]}"
    assert s.reveal() == "hunter2"


def test_missing_env_is_config_error_naming_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CS_TEST_NOPE", raising=False)
    alarms = AlarmsConfig.model_validate({"channels": [
        {"id": "mail", "kind": "email", "host": "h", "sender": "a@b", "to": ["c@d"]},
        {"id": "hook", "kind": "webhook", "url": "http://127.0.0.1:1/x",
         "secret_env": "CS_TEST_NOPE"}]})
    with pytest.raises(ConfigError) as err:
        build_channels(alarms, SITE, "plant.yaml")
    assert str(err.value) == ("plant.yaml: alarms.channels[1].secret_env: environment "
                              "variable 'CS_TEST_NOPE' is not set or empty")


def test_missing_file_is_config_error_naming_key(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    alarms = AlarmsConfig.model_validate({"channels": [
        {"id": "wx", "kind": "wecom", "key_file": str(missing)}]})
    with pytest.raises(ConfigError) as err:
        build_channels(alarms, SITE, "plant.yaml")
    assert str(err.value) == (f"plant.yaml: alarms.channels[0].key_file: cannot read secret "
                              f"file '{missing}': No such file or directory")


def test_email_password_env_checked_at_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CS_TEST_NOPE", raising=False)
    alarms = AlarmsConfig.model_validate({"channels": [
        {"id": "mail", "kind": "email", "host": "h", "sender": "a@b", "to": ["c@d"],
         "username": "u", "password_env": "CS_TEST_NOPE"}]})
    with pytest.raises(ConfigError, match=r"alarms\.channels\[0\]\.password_env"):
        build_channels(alarms, SITE, "plant.yaml")


def _problems(channels: list[dict[str, Any]],
              routes: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    data = plant_dict()
    data["alarms"] = {"channels": channels, "routes": routes or []}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "plant.yaml")
    return err.value.problems


def test_config_errors_name_the_key() -> None:
    assert _problems([{"id": "h", "kind": "webhook", "url": "ftp://x"}]) == [
        ("alarms.channels[0].url", "String should match pattern '^https?://[^\\s?#]+$'")]
    assert _problems([{"id": "d", "kind": "dingtalk"}]) == [
        ("alarms.channels[0]", "give 'token_env' (an environment variable) or 'token_file' "
                               "(a file) holding the token")]
    assert _problems([{"id": "h", "kind": "webhook", "url": "http://x/y", "secret": "inline"}]
                     ) == [("alarms.channels[0].secret", "unknown key")]
    assert _problems([{"id": "f", "kind": "feishu", "token_env": "A", "token_file": "/b"}]) == [
        ("alarms.channels[0]", "give either 'token_env' or 'token_file', not both")]
    assert _problems([{"id": "s", "kind": "sms", "url": "http://x/y", "numbers": ["1"],
                       "template": {"to": "{phone}", "m": "{txt}"}}]) == [
        ("alarms.channels[0]", "unknown placeholder(s) ['txt']; known: {phone}, {text}, "
                               "{secret}")]
    assert _problems([{"id": "m", "kind": "mqtt", "host": "h", "topic": "a/#"}]) == [
        ("alarms.channels[0]", "topic: a publish topic has no wildcards (+ #) and is not empty")]
    assert _problems([{"id": "x", "kind": "pager"}]) == [
        ("alarms.channels[0].kind", "unknown kind 'pager' (known: 'email', 'webhook', "
                                    "'wecom', 'dingtalk', 'feishu', 'sms', 'mqtt')")]


def test_route_config_errors() -> None:
    hook = {"id": "h", "kind": "webhook", "url": "http://x/y"}
    assert _problems([hook], [{"channels": ["h", "nope"]}]) == [
        ("alarms", "routes[0].channels[1]: unknown channel 'nope'")]
    assert _problems([hook, hook]) == [("alarms", "channels[1].id: duplicate channel id 'h'")]
    # What YAML makes of an unquoted 20:00 (sexagesimal 1200).
    assert _problems([hook], [{"channels": ["h"], "start": 1200, "end": "08:00"}]) == [
        ("alarms.routes[0].start", "write the time of day quoted, e.g. '20:00'")]
    assert _problems([hook], [{"channels": ["h"], "escalate_to": ["h"]}]) == [
        ("alarms.routes[0]", "give both 'escalate_to' and 'escalate_after_min', or neither")]
    assert _problems([hook], [{"channels": ["h"], "severities": ["critical"]}])[0][0] == \
        "alarms.routes[0].severities[0]"


# ---- webhook ------------------------------------------------------------------------

def _expected_json(event: AlarmEvent) -> dict[str, Any]:
    return {"site": "plant1", "site_name": SITE_NAME, "rule": event.rule,
            "state": event.state, "previous": event.previous, "value": 196.96,
            "limit": 180.0, "target": "source S1 co2_rate_t_h", "t": "2024-05-01T00:03:00Z",
            "message_zh": event.message_zh, "message": event.message}


async def test_webhook_posts_signed_json(receiver: MakeReceiver,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_HOOK_SECRET", SECRET)
    r = await receiver()
    ch = channel({"id": "hook", "kind": "webhook", "url": f"{r.url}/alarms",
                  "secret_env": "CS_TEST_HOOK_SECRET", "headers": {"X-Plant": "p1"}})
    before = time.time()
    await ch.send(alarm_event(), SITE_NAME)
    (got,) = r.got
    assert got.method == "POST" and got.path == "/alarms"
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.headers["X-Plant"] == "p1"
    ts = int(got.headers["X-Carbonscada-Timestamp"])
    assert before - 1 <= ts <= time.time() + 1
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Carbonscada-Signature"] == f"sha256={expected}"
    payload = got.json()
    sent_at = payload.pop("sent_at")
    assert abs(dt.datetime.fromisoformat(sent_at).timestamp() - ts) < 1
    assert payload == _expected_json(alarm_event())


async def test_webhook_secret_from_file_and_http_error(receiver: MakeReceiver,
                                                       tmp_path: Path) -> None:
    secret_file = tmp_path / "hook.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)

    async def refuse(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance")

    r = await receiver(refuse)
    ch = channel({"id": "hook", "kind": "webhook", "url": f"{r.url}/a",
                  "secret_file": str(secret_file)})
    with pytest.raises(SinkError) as err:
        await ch.send(alarm_event(), SITE_NAME)
    assert str(err.value) == f"webhook channel 'hook': POST {r.url}/a: HTTP 503: maintenance"
    (got,) = r.got
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Carbonscada-Signature"] == f"sha256={expected}"


async def test_webhook_unreachable_names_channel() -> None:
    port = free_port()
    ch = channel({"id": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{port}/x",
                  "timeout_s": 2})
    with pytest.raises(SinkError, match=rf"webhook channel 'hook': POST "
                                        rf"http://127\.0\.0\.1:{port}/x: ClientConnectorError"):
        await ch.send(alarm_event(), SITE_NAME)


# ---- WeCom --------------------------------------------------------------------------

async def test_wecom_markdown(receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_WECOM_KEY", TOKEN)
    r = await receiver()
    ch = channel({"id": "wx", "kind": "wecom", "url": f"{r.url}/cgi-bin/webhook/send",
                  "key_env": "CS_TEST_WECOM_KEY"})
    await ch.send(alarm_event(), SITE_NAME)
    (got,) = r.got
    assert got.path == "/cgi-bin/webhook/send" and got.query == {"key": TOKEN}
    body = got.json()
    assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert content.startswith("### [报警 ALARM] 测试电厂 Test Plant source S1 co2_rate_t_h\n")
    assert "**数值**：196.96" in content and "**Value**: 196.96" in content
    assert "2024-05-01 08:03:00（Asia/Shanghai）" in content
    assert content.index("**状态**：报警") < content.index("**State**: alarm")


async def test_wecom_text_and_errcode(receiver: MakeReceiver,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_WECOM_KEY", TOKEN)

    async def bad_key(n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            return web.json_response({"errcode": 0, "errmsg": "ok"})
        return web.json_response({"errcode": 93000, "errmsg": f"invalid webhook url, "
                                  f"hint: key={request.query['key']}"})

    r = await receiver(bad_key)
    ch = channel({"id": "wx", "kind": "wecom", "url": f"{r.url}/send", "msgtype": "text",
                  "key_env": "CS_TEST_WECOM_KEY", "mentioned_mobiles": ["13800000000"]})
    await ch.send(alarm_event(), SITE_NAME)
    body = r.got[0].json()
    assert body["msgtype"] == "text"
    assert body["text"]["mentioned_mobile_list"] == ["13800000000"]
    assert body["text"]["content"].startswith("测试电厂 Test Plant 碳排放监测报警通知\n")
    with pytest.raises(SinkError) as err:
        await ch.send(alarm_event(), SITE_NAME)
    assert str(err.value) == (f"wecom channel 'wx': POST {r.url}/send?key=***: errcode 93000: "
                              "invalid webhook url, hint: key=***")


# ---- DingTalk -----------------------------------------------------------------------

def dingtalk_sign_reference(timestamp: str, secret: str) -> str:
    """DingTalk's documented Python sample: HMAC-SHA256 keyed with the secret."""
    string_to_sign = f"{timestamp}\n{secret}"
    code = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"),
                    digestmod=hashlib.sha256).digest()
    return base64.b64encode(code).decode()


async def test_dingtalk_signed_markdown(receiver: MakeReceiver, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_DING_TOKEN", TOKEN)
    (tmp_path / "ding.sec").write_text(SECRET)
    r = await receiver()
    ch = channel({"id": "ding", "kind": "dingtalk", "url": f"{r.url}/robot/send",
                  "token_env": "CS_TEST_DING_TOKEN", "secret_file": str(tmp_path / "ding.sec"),
                  "at_mobiles": ["13900000000"]})
    before_ms = time.time() * 1000
    await ch.send(alarm_event(), SITE_NAME)
    (got,) = r.got
    assert got.path == "/robot/send"
    assert set(got.query) == {"access_token", "timestamp", "sign"}
    assert got.query["access_token"] == TOKEN
    ts = got.query["timestamp"]
    assert before_ms - 1000 <= int(ts) <= time.time() * 1000 + 1000  # milliseconds
    sign = dingtalk_sign_reference(ts, SECRET)
    assert got.query["sign"] == sign
    # URL-encoded exactly once: a bare '+' would arrive as a space.
    raw_sign = got.raw_query.split("&sign=")[1]
    assert "+" not in raw_sign and unquote(raw_sign) == sign
    body = got.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "[报警 ALARM] 测试电厂 Test Plant source S1 co2_rate_t_h"
    assert body["markdown"]["text"].endswith("\n@13900000000")
    assert body["at"] == {"atMobiles": ["13900000000"], "isAtAll": False}


async def test_dingtalk_errcode_is_an_error(receiver: MakeReceiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_DING_TOKEN", TOKEN)
    monkeypatch.setenv("CS_TEST_DING_SECRET", SECRET)

    async def refuse(n: int, request: web.Request) -> web.StreamResponse:
        return web.json_response({"errcode": 310000, "errmsg": "sign not match"})

    r = await receiver(refuse)
    ch = channel({"id": "ding", "kind": "dingtalk", "url": f"{r.url}/robot/send",
                  "msgtype": "text", "token_env": "CS_TEST_DING_TOKEN",
                  "secret_env": "CS_TEST_DING_SECRET"})
    with pytest.raises(SinkError, match="errcode 310000: sign not match") as err:
        await ch.send(alarm_event(), SITE_NAME)
    assert TOKEN not in str(err.value) and quote_plus(TOKEN) not in str(err.value)
    body = r.got[0].json()
    assert body["msgtype"] == "text" and body["text"]["content"].startswith("测试电厂")


# ---- Feishu -------------------------------------------------------------------------

def feishu_sign_reference(timestamp: str, secret: str) -> str:
    """Feishu's documented sample: "timestamp\\nsecret" is the HMAC key, the message empty."""
    string_to_sign = f"{timestamp}\n{secret}"
    code = hmac.new(string_to_sign.encode("utf-8"), digestmod=hashlib.sha256).digest()
    return base64.b64encode(code).decode("utf-8")


async def test_feishu_signed_text(receiver: MakeReceiver,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_FEISHU_TOKEN", "5e3d587e-d78e-4a07")
    monkeypatch.setenv("CS_TEST_FEISHU_SECRET", SECRET)
    r = await receiver()
    ch = channel({"id": "fs", "kind": "feishu", "url": f"{r.url}/open-apis/bot/v2/hook",
                  "token_env": "CS_TEST_FEISHU_TOKEN", "secret_env": "CS_TEST_FEISHU_SECRET"})
    before = time.time()
    await ch.send(alarm_event(state="normal", previous="alarm"), SITE_NAME)
    (got,) = r.got
    assert got.path == "/open-apis/bot/v2/hook/5e3d587e-d78e-4a07" and got.query == {}
    body = got.json()
    assert set(body) == {"timestamp", "sign", "msg_type", "content"}
    assert isinstance(body["timestamp"], str)
    assert before - 1 <= int(body["timestamp"]) <= time.time() + 1  # seconds
    assert body["sign"] == feishu_sign_reference(body["timestamp"], SECRET)
    assert body["msg_type"] == "text"
    text = body["content"]["text"]
    assert text.startswith("测试电厂 Test Plant 碳排放监测正常通知\n状态：正常（原状态：报警）")
    assert "State: normal (was alarm)" in text


async def test_feishu_error_code_hides_token(receiver: MakeReceiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_FEISHU_TOKEN", TOKEN)

    async def echo_url(n: int, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text=f"no hook at {request.path_qs}")

    r = await receiver(echo_url)
    ch = channel({"id": "fs", "kind": "feishu", "url": f"{r.url}/hook",
                  "token_env": "CS_TEST_FEISHU_TOKEN"})
    with pytest.raises(SinkError) as err:
        await ch.send(alarm_event(), SITE_NAME)
    assert str(err.value) == f"feishu channel 'fs': POST {r.url}/hook/***: HTTP 404: " \
                             "no hook at /hook/***"
    assert "sign" not in r.got[0].json()  # no secret configured: unsigned


# ---- SMS gateway --------------------------------------------------------------------

async def test_sms_json_gateway(receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_SMS_KEY", SECRET)
    r = await receiver()
    ch = channel({"id": "sms", "kind": "sms", "url": f"{r.url}/sms/send",
                  "numbers": ["13800000001", "13800000002"],
                  "template": {"apikey": "{secret}", "mobile": "{phone}",
                               "content": {"text": "【碳监测】{text}"}},
                  "headers": {"Authorization": "Bearer {secret}"},
                  "secret_env": "CS_TEST_SMS_KEY"})
    await ch.send(alarm_event(), SITE_NAME)
    got = sorted(r.got, key=lambda g: g.json()["mobile"])
    assert [g.json()["mobile"] for g in got] == ["13800000001", "13800000002"]
    for g in got:
        assert g.method == "POST" and g.path == "/sms/send"
        assert g.headers["Authorization"] == f"Bearer {SECRET}"
        body = g.json()
        assert body["apikey"] == SECRET
        assert body["content"]["text"] == (
            "【碳监测】[报警 ALARM] 测试电厂 Test Plant 05-01 08:03 "
            "S1 co2_rate_t_h = 196.96 ≥ 报警限值 180［规则 co2_high］ / "
            "S1 co2_rate_t_h = 196.96 ≥ alarm level 180 [rule co2_high]")


async def test_sms_form_get_and_retry_skips_reached_numbers(receiver: MakeReceiver) -> None:
    async def flaky(n: int, request: web.Request) -> web.StreamResponse:
        phone = request.query.get("to") or (await request.post()).get("to")
        if phone == "2" and n <= 2:  # the first request for number 2 fails
            return web.Response(text="ERR quota")
        return web.Response(text="OK 1 sent")

    r = await receiver(flaky)
    form = channel({"id": "sf", "kind": "sms", "url": f"{r.url}/form", "encoding": "form",
                    "numbers": ["1", "2"], "template": {"to": "{phone}", "msg": "{text}"},
                    "success_text": "OK"})
    with pytest.raises(SinkError, match=r"sms channel 'sf': 1 of 2 number\(s\) failed: "
                                        r"POST .*/form: gateway refused 2: ERR quota"):
        await form.send(alarm_event(), SITE_NAME)
    assert len(r.got) == 2
    assert all(g.headers["Content-Type"] == "application/x-www-form-urlencoded"
               for g in r.got)
    await form.send(alarm_event(), SITE_NAME)  # the retry: number 2 only
    assert len(r.got) == 3 and b"to=2" in r.got[2].body

    get = channel({"id": "sg", "kind": "sms", "url": f"{r.url}/get", "method": "GET",
                   "numbers": ["3"], "template": {"to": "{phone}", "msg": "{text}"}})
    await get.send(alarm_event(), SITE_NAME)
    assert r.got[3].method == "GET" and r.got[3].query["to"] == "3"
    assert r.got[3].query["msg"].startswith("[报警 ALARM] 测试电厂 Test Plant")


# ---- MQTT ---------------------------------------------------------------------------

@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with run_mosquitto(tmp_path) as b:
        yield b


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    with run_mosquitto(tmp_path, "carbon", "mq-pass-123") as b:
        yield b


async def _publish_and_receive(ch: Channel, b: Broker, event: AlarmEvent
                               ) -> aiomqtt.Message:
    async with aiomqtt.Client(b.host, b.port, username=b.username, password=b.password,
                              identifier="test-sub") as sub:
        await sub.subscribe("carbonscada/#", qos=1)
        await ch.send(event, SITE_NAME)
        async with asyncio.timeout(5):
            async for msg in sub.messages:
                return msg
    raise AssertionError("no message")


async def test_mqtt_publishes_json(broker: Broker) -> None:
    ch = channel({"id": "mq", "kind": "mqtt", "host": broker.host, "port": broker.port,
                  "timeout_s": 3})
    msg = await _publish_and_receive(ch, broker, alarm_event())
    assert str(msg.topic) == "carbonscada/plant1/alarms/co2_high"
    assert msg.qos == 1
    assert isinstance(msg.payload, bytes)
    assert json.loads(msg.payload) == _expected_json(alarm_event())


async def test_mqtt_with_password(auth_broker: Broker, tmp_path: Path) -> None:
    pw = tmp_path / "mq.pw"
    pw.write_text("mq-pass-123\n")
    pw.chmod(0o600)
    ch = channel({"id": "mq", "kind": "mqtt", "host": auth_broker.host,
                  "port": auth_broker.port, "username": "carbon", "password_file": str(pw),
                  "topic": "carbonscada/{site}/{state}/{rule}", "timeout_s": 3})
    msg = await _publish_and_receive(ch, auth_broker, alarm_event(state="warning"))
    assert str(msg.topic) == "carbonscada/plant1/warning/co2_high"

    pw.write_text("wrong-pass-456")
    bad = channel({"id": "mq", "kind": "mqtt", "host": auth_broker.host,
                   "port": auth_broker.port, "username": "carbon", "password_file": str(pw),
                   "timeout_s": 3})
    with pytest.raises(SinkError, match=rf"mqtt channel 'mq': publish to 127\.0\.0\.1:"
                                        rf"{auth_broker.port} topic ") as err:
        await bad.send(alarm_event(), SITE_NAME)
    assert "wrong-pass-456" not in str(err.value)


async def test_mqtt_broker_down() -> None:
    port = free_port()
    ch = channel({"id": "mq", "kind": "mqtt", "host": "127.0.0.1", "port": port,
                  "timeout_s": 2})
    with pytest.raises(SinkError, match=rf"mqtt channel 'mq': publish to 127\.0\.0\.1:{port}"):
        await ch.send(alarm_event(), SITE_NAME)


# ---- email with STARTTLS / SSL and AUTH ---------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carbonscada test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _TlsAuthHandler:
    """Accepts ops / s3cret, and records whether each mail came over TLS."""

    def __init__(self) -> None:
        self.logins: list[tuple[bytes, bytes]] = []
        self.mails: list[tuple[bool, bytes]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=(data.login, data.password) == (b"ops", b"s3cret"))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = (session.ssl is not None  # after STARTTLS
               or server.transport.get_extra_info("ssl_object") is not None)  # SMTPS
        self.mails.append((tls, envelope.content))
        return "250 OK"


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_files)
    return ctx


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_email_tls_and_auth(security: str, tls_files: tuple[Path, Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_SMTP_PW", "s3cret")
    handler = _TlsAuthHandler()
    port = free_port()
    server_ctx = _server_context(tls_files)
    if security == "starttls":
        ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=handler,
                         tls_context=server_ctx, require_starttls=True, auth_require_tls=True)
    else:
        # aiosmtpd's auth_require_tls only knows STARTTLS; this connection is TLS throughout.
        ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=handler,
                         ssl_context=server_ctx, auth_require_tls=False)
    ctl.start()
    try:
        cfg = {"id": "mail", "kind": "email", "host": "127.0.0.1", "port": port,
               "security": security, "ca_file": str(tls_files[0]), "username": "ops",
               "password_env": "CS_TEST_SMTP_PW", "sender": "cs@example.com",
               "to": ["ops@example.com"], "timeout_s": 3}
        await channel(cfg).send(alarm_event(), SITE_NAME)
        assert handler.logins == [(b"ops", b"s3cret")]
        (over_tls, content) = handler.mails[0]
        assert over_tls
        assert b"Subject:" in content

        # Without the CA the self-signed server is refused: certificates are verified.
        unverified = channel({**cfg, "ca_file": None})
        with pytest.raises(SinkError, match="email channel 'mail': cannot send via"):
            await unverified.send(alarm_event(), SITE_NAME)
        assert len(handler.mails) == 1
    finally:
        ctl.stop()


async def test_channel_context_defaults() -> None:
    ctx = ChannelContext(SITE)
    assert ctx.secret(object(), "secret") is None
