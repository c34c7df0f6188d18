"""Notification channels: one protocol, a registry keyed by config `kind`, the channels.

Every channel sends one alarm event per call and raises SinkError on failure; the
notifier (alarms.notify) queues, retries and rate-limits. Secrets are read once, when
the channel is built, from the environment or a file; they never appear in an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo

import aiohttp
import aiomqtt
from yarl import URL

from alarms.config import (
    AlarmsConfig,
    DingtalkChannelConfig,
    EmailChannelConfig,
    FeishuChannelConfig,
    MqttChannelConfig,
    SmsChannelConfig,
    WebhookChannelConfig,
    WecomChannelConfig,
)
from alarms.email import EmailChannel, body, subject
from alarms.spec import fmt_number
from compute.config import SiteConfig
from model.errors import ConfigError, SinkError
from model.records import AlarmEvent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Carbonscada-Signature"
TIMESTAMP_HEADER = "X-Carbonscada-Timestamp"


class Channel(Protocol):
    """A notification channel."""

    id: str

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """Deliver one event; raise SinkError (never showing a secret) on failure."""


class Secret:
    """A secret value that shows as *** in repr, str and f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: use it, never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_secret(cfg: Any, name: str, path: str, origin: str) -> Secret | None:
    """The secret `name` of a config from `<name>_env` or `<name>_file`; None if neither.

    A variable that is not set or a file that cannot be read is a ConfigError naming
    the key (e.g. alarms.channels[2].secret_env), never the value.
    """
    env = getattr(cfg, f"{name}_env", None)
    file = getattr(cfg, f"{name}_file", None)
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(origin, f"{path}.{name}_env",
                              f"environment variable {env!r} is not set or empty")
        return Secret(value)
    if file is None:
        return None
    try:
        mode = os.stat(file).st_mode
        value = Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(origin, f"{path}.{name}_file",
                          f"cannot read secret file {file!r}: {exc.strerror}") from None
    if not value:
        raise ConfigError(origin, f"{path}.{name}_file", f"secret file {file!r} is empty")
    if mode & 0o077:
        log.warning("secret file %s can be read by other users (mode %o): chmod 600 it",
                    file, mode & 0o777)
    return Secret(value)


@dataclass(frozen=True)
class ChannelContext:
    """What a channel factory gets besides its config."""

    site: SiteConfig
    path: str = "alarms.channels[0]"  # key path of the channel's config, for errors
    origin: str = "configuration"  # the configuration file, for errors

    def secret(self, cfg: Any, name: str) -> Secret | None:
        """Read the channel's secret `name` (see read_secret)."""
        return read_secret(cfg, name, self.path, self.origin)


Factory = Callable[[Any, ChannelContext], Channel]
F = TypeVar("F", bound=Factory)
_FACTORIES: dict[str, Factory] = {}


def register(kind: str) -> Callable[[F], F]:
    """Decorator: build channels of config `kind` with the decorated factory or class."""
    def deco(factory: F) -> F:
        _FACTORIES[kind] = factory
        return factory
    return deco


def factories() -> Mapping[str, Factory]:
    """The registered channel factories by config kind."""
    return dict(_FACTORIES)


def build_channels(alarms: AlarmsConfig, site: SiteConfig,
                   origin: str = "configuration") -> dict[str, Channel]:
    """One channel per configured channel, by id; ConfigError for a missing secret."""
    out: dict[str, Channel] = {}
    for i, cfg in enumerate(alarms.channels):
        ctx = ChannelContext(site, f"alarms.channels[{i}]", origin)
        out[cfg.id] = _FACTORIES[cfg.kind](cfg, ctx)
    return out


def _secret_pattern(secret: str) -> str:
    """A regex matching the secret however a URL encoder wrote each of its characters."""
    parts = []
    for ch in secret:
        forms = [re.escape(ch), "".join(f"%{b:02x}" for b in ch.encode())]
        if ch == " ":
            forms.append(r"\+")
        parts.append(f"(?:{'|'.join(forms)})")
    return "".join(parts)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret, plain or URL-encoded in any way, replaced by ***."""
    for s in secrets:
        if s:
            text = re.sub(_secret_pattern(s), "***", text, flags=re.IGNORECASE)
    return text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---- message texts -------------------------------------------------------------------

_TAG = {"alarm": "[报警 ALARM]", "warning": "[预警 WARNING]", "normal": "[恢复 NORMAL]"}
_STATE_ZH = {"alarm": "报警", "warning": "预警", "normal": "正常"}


def _utc_iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def event_json(event: AlarmEvent, site_id: str, site_name: str) -> dict[str, Any]:
    """The event as a JSON object (webhook, MQTT); non-finite numbers become null."""
    return {
        "site": site_id, "site_name": site_name, "rule": event.rule,
        "state": event.state, "previous": event.previous,
        "value": _finite(event.value), "limit": _finite(event.limit),
        "target": event.target, "t": _utc_iso(event.t),
        "message_zh": event.message_zh, "message": event.message,
    }


def markdown(event: AlarmEvent, site_name: str, tz: ZoneInfo) -> str:
    """Robot markdown: Chinese first, then English."""
    local = event.t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    utc = event.t.astimezone(UTC).strftime("%H:%M:%S")
    value = fmt_number(event.value)
    level = "-" if event.limit is None else fmt_number(event.limit)
    zh, prev_zh = (_STATE_ZH.get(s, s) for s in (event.state, event.previous))
    return (
        f"### {subject(event, site_name)}\n"
        f"**状态**：{zh}（原状态：{prev_zh}）\n"
        f"**数值**：{value}　**限值**：{level}\n"
        f"**时间**：{local}（{tz.key}）\n"
        f"**说明**：{event.message_zh}\n\n"
        f"**State**: {event.state} (was {event.previous})\n"
        f"**Value**: {value}  **Level**: {level}\n"
        f"**Time**: {local} ({tz.key}), {utc} UTC\n"
        f"**Details**: {event.message}\n"
    )


def short_text(event: AlarmEvent, site_name: str, tz: ZoneInfo) -> str:
    """One-paragraph text for SMS: Chinese first, then English."""
    local = event.t.astimezone(tz).strftime("%m-%d %H:%M")
    return f"{_TAG.get(event.state, event.state)} {site_name} {local} " \
           f"{event.message_zh} / {event.message}"


def _clip(text: str, max_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes - 3].decode(errors="ignore") + "..."


# ---- email ---------------------------------------------------------------------------

@register("email")
def email_channel(cfg: EmailChannelConfig, ctx: ChannelContext) -> EmailChannel:
    """The SMTP channel of alarms.email, its password checked and read now."""
    password = ctx.secret(cfg, "password")
    return EmailChannel(cfg, ctx.site.timezone,
                        password=None if password is None else password.reveal())


# ---- HTTP channels -------------------------------------------------------------------

class _HttpChannel:
    """Shared by the HTTP channels: one aiohttp request with a total timeout."""

    kind = ""

    def __init__(self, timeout_s: float, cid: str, site: SiteConfig) -> None:
        self.id = cid
        self.site = site
        self.tz = ZoneInfo(site.timezone)
        self.timeout_s = timeout_s
        self.secrets: tuple[str, ...] = ()

    def _fail(self, what: str) -> SinkError:
        return SinkError(redact(f"{self.kind} channel {self.id!r}: {what}", self.secrets))

    async def _request(self, method: str, url: str | URL, shown_url: str, *,
                       data: Any = None, params: Mapping[str, str] | None = None,
                       headers: Mapping[str, str] | None = None) -> bytes:
        """Send; return the reply body of a 2xx answer, else raise SinkError."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.request(method, url, data=data, params=params,
                                    headers=headers) as resp:
                reply = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # `from None`: aiohttp's own exceptions may carry the URL with a key in it.
            raise self._fail(f"{method} {shown_url}: {_describe(exc)}") from None
        if not 200 <= resp.status < 300:
            raise self._fail(f"{method} {shown_url}: HTTP {resp.status}: "
                             f"{reply[:200].decode(errors='replace')}")
        return reply

    def _json_reply(self, reply: bytes, shown_url: str) -> dict[str, Any]:
        try:
            data = json.loads(reply)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._fail(f"POST {shown_url}: reply is not a JSON object: "
                             f"{reply[:200].decode(errors='replace')}")
        return data


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


_JSON = {"Content-Type": "application/json; charset=utf-8"}


@register("webhook")
class WebhookChannel(_HttpChannel):
    """POSTs the event as JSON; `X-Carbonscada-Signature: sha256=<hex HMAC of the body>`."""

    kind = "webhook"

    def __init__(self, config: WebhookChannelConfig, ctx: ChannelContext) -> None:
        super().__init__(config.timeout_s, config.id, ctx.site)
        self.config = config
        self._secret = ctx.secret(config, "secret")
        if self._secret is not None:
            self.secrets = (self._secret.reveal(),)

    def request(self, event: AlarmEvent, site_name: str,
                now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST for one event."""
        now = time.time() if now is None else now
        payload = event_json(event, self.site.id, site_name)
        payload["sent_at"] = _utc_iso(datetime.fromtimestamp(now, UTC))
        raw = _dumps(payload)
        headers = {**self.config.headers, **_JSON, TIMESTAMP_HEADER: str(int(now))}
        if self._secret is not None:
            mac = hmac.new(self._secret.reveal().encode(), raw, hashlib.sha256)
            headers[SIGNATURE_HEADER] = f"sha256={mac.hexdigest()}"
        return raw, headers

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """POST the event."""
        raw, headers = self.request(event, site_name)
        await self._request("POST", self.config.url, self.config.url, data=raw, headers=headers)


@register("wecom")
class WecomChannel(_HttpChannel):
    """WeCom group robot: POST {url}?key=<key> with a markdown or text message."""

    kind = "wecom"

    def __init__(self, config: WecomChannelConfig, ctx: ChannelContext) -> None:
        super().__init__(config.timeout_s, config.id, ctx.site)
        self.config = config
        key = ctx.secret(config, "key")
        assert key is not None  # the config requires it
        self._key = key
        self.secrets = (key.reveal(),)

    def payload(self, event: AlarmEvent, site_name: str) -> dict[str, Any]:
        """The robot message for one event."""
        if self.config.msgtype == "markdown":
            return {"msgtype": "markdown",
                    "markdown": {"content": _clip(markdown(event, site_name, self.tz), 4096)}}
        text: dict[str, Any] = {"content": _clip(body(event, site_name, self.tz), 2048)}
        if self.config.mentioned_mobiles:
            text["mentioned_mobile_list"] = list(self.config.mentioned_mobiles)
        return {"msgtype": "text", "text": text}

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """POST the message; WeCom answers errcode 0 on success."""
        url = URL(f"{self.config.url}?key={quote_plus(self._key.reveal())}", encoded=True)
        shown = f"{self.config.url}?key=***"
        reply = await self._request("POST", url, shown,
                                    data=_dumps(self.payload(event, site_name)), headers=_JSON)
        answer = self._json_reply(reply, shown)
        if answer.get("errcode") != 0:
            raise self._fail(f"POST {shown}: errcode {answer.get('errcode')}: "
                             f"{answer.get('errmsg')}")


def dingtalk_sign(timestamp_ms: str, secret: str) -> str:
    """DingTalk 加签: base64(HMAC-SHA256(key=secret, timestamp + "\\n" + secret))."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(timestamp_s: str, secret: str) -> str:
    """Feishu 签名校验: base64(HMAC-SHA256(key=timestamp + "\\n" + secret, empty message))."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class _SignedRobot(_HttpChannel):
    """A group robot reached with an access token and, optionally, signed with a secret."""

    def __init__(self, config: DingtalkChannelConfig | FeishuChannelConfig,
                 ctx: ChannelContext) -> None:
        super().__init__(config.timeout_s, config.id, ctx.site)
        token = ctx.secret(config, "token")
        assert token is not None  # the config requires it
        self._token = token
        self._secret = ctx.secret(config, "secret")
        self.secrets = tuple(s.reveal() for s in (token, self._secret) if s is not None)


@register("dingtalk")
class DingtalkChannel(_SignedRobot):
    """DingTalk group robot: POST {url}?access_token=..&timestamp=..&sign=.. (signed)."""

    kind = "dingtalk"

    def __init__(self, config: DingtalkChannelConfig, ctx: ChannelContext) -> None:
        super().__init__(config, ctx)
        self.config = config

    def payload(self, event: AlarmEvent, site_name: str) -> dict[str, Any]:
        """The robot message for one event."""
        cfg = self.config
        at = {"atMobiles": list(cfg.at_mobiles), "isAtAll": cfg.at_all}
        if cfg.msgtype == "text":
            return {"msgtype": "text", "text": {"content": body(event, site_name, self.tz)},
                    "at": at}
        text = markdown(event, site_name, self.tz)
        if cfg.at_mobiles:  # DingTalk only notifies the @-ed numbers written in the text
            text += "\n" + " ".join(f"@{m}" for m in cfg.at_mobiles)
        return {"msgtype": "markdown",
                "markdown": {"title": subject(event, site_name), "text": text}, "at": at}

    def url(self, now: float | None = None) -> URL:
        """The signed URL (the sign is URL-encoded once, as DingTalk documents)."""
        query = f"access_token={quote_plus(self._token.reveal())}"
        if self._secret is not None:
            ts = str(int((time.time() if now is None else now) * 1000))
            query += f"&timestamp={ts}&sign={quote_plus(dingtalk_sign(ts, self._secret.reveal()))}"
        return URL(f"{self.config.url}?{query}", encoded=True)

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """POST the message; DingTalk answers errcode 0 on success."""
        shown = f"{self.config.url}?access_token=***"
        reply = await self._request("POST", self.url(), shown,
                                    data=_dumps(self.payload(event, site_name)), headers=_JSON)
        answer = self._json_reply(reply, shown)
        if answer.get("errcode") != 0:
            raise self._fail(f"POST {shown}: errcode {answer.get('errcode')}: "
                             f"{answer.get('errmsg')}")


@register("feishu")
class FeishuChannel(_SignedRobot):
    """Feishu group robot: POST {url}/<token>, `timestamp` and `sign` in the JSON body."""

    kind = "feishu"

    def __init__(self, config: FeishuChannelConfig, ctx: ChannelContext) -> None:
        super().__init__(config, ctx)
        self.config = config

    def payload(self, event: AlarmEvent, site_name: str,
                now: float | None = None) -> dict[str, Any]:
        """The robot message for one event, signed when a secret is configured."""
        msg: dict[str, Any] = {}
        if self._secret is not None:
            ts = str(int(time.time() if now is None else now))
            msg = {"timestamp": ts, "sign": feishu_sign(ts, self._secret.reveal())}
        msg.update({"msg_type": "text", "content": {"text": body(event, site_name, self.tz)}})
        return msg

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """POST the message; Feishu answers code 0 (older servers: StatusCode 0)."""
        url = f"{self.config.url}/{quote(self._token.reveal(), safe='')}"
        shown = f"{self.config.url}/***"
        reply = await self._request("POST", url, shown,
                                    data=_dumps(self.payload(event, site_name)), headers=_JSON)
        answer = self._json_reply(reply, shown)
        code = answer.get("code", answer.get("StatusCode"))
        if code != 0:
            raise self._fail(f"POST {shown}: code {code}: "
                             f"{answer.get('msg', answer.get('StatusMessage'))}")


def _fill(template: Any, values: Mapping[str, str]) -> Any:
    """The template with {placeholders} in its strings replaced."""
    if isinstance(template, str):
        return template.format_map(values)
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    return template


@register("sms")
class SmsChannel(_HttpChannel):
    """SMS via an HTTP gateway: one request per number, all numbers at once."""

    kind = "sms"
    _REMEMBER = 256  # events whose delivered numbers are remembered, so a retry skips them

    def __init__(self, config: SmsChannelConfig, ctx: ChannelContext) -> None:
        super().__init__(config.timeout_s, config.id, ctx.site)
        self.config = config
        self._secret = ctx.secret(config, "secret")
        if self._secret is not None:
            self.secrets = (self._secret.reveal(),)
        self._done: OrderedDict[tuple[str, datetime, str, str], set[str]] = OrderedDict()

    def request_for(self, phone: str, text: str) -> dict[str, Any]:
        """Keyword arguments of the gateway request for one number."""
        cfg = self.config
        values = {"phone": phone, "text": text,
                  "secret": "" if self._secret is None else self._secret.reveal()}
        filled = _fill(cfg.template, values)
        headers = {k: v.format_map(values) for k, v in cfg.headers.items()}
        if cfg.method == "GET":
            return {"params": {k: str(v) for k, v in filled.items()}, "headers": headers}
        if cfg.encoding == "form":
            return {"data": {k: str(v) for k, v in filled.items()}, "headers": headers}
        return {"data": _dumps(filled), "headers": {**_JSON, **headers}}

    async def _one(self, phone: str, text: str) -> None:
        cfg = self.config
        reply = await self._request(cfg.method, cfg.url, cfg.url, **self.request_for(phone, text))
        if cfg.success_text and cfg.success_text not in reply.decode(errors="replace"):
            raise self._fail(f"{cfg.method} {cfg.url}: gateway refused {phone}: "
                             f"{reply[:200].decode(errors='replace')}")

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """Text every number; a retry of the same event skips numbers already reached."""
        key = (event.rule, event.t, event.state, event.message)
        done = self._done.setdefault(key, set())
        self._done.move_to_end(key)
        while len(self._done) > self._REMEMBER:
            self._done.popitem(last=False)
        text = short_text(event, site_name, self.tz)
        todo = [n for n in self.config.numbers if n not in done]
        results = await asyncio.gather(*(self._one(n, text) for n in todo),
                                       return_exceptions=True)
        errors = []
        for phone, res in zip(todo, results, strict=True):
            if isinstance(res, BaseException):
                errors.append(str(res).removeprefix(f"sms channel {self.id!r}: "))
            else:
                done.add(phone)
        if errors:
            raise self._fail(f"{len(errors)} of {len(todo)} number(s) failed: "
                             + "; ".join(errors))


# ---- MQTT ----------------------------------------------------------------------------

@register("mqtt")
class MqttChannel:
    """Publishes the event as JSON (QoS 1 by default); connects for each message."""

    kind = "mqtt"

    def __init__(self, config: MqttChannelConfig, ctx: ChannelContext) -> None:
        self.config = config
        self.id = config.id
        self.site = ctx.site
        self._password = ctx.secret(config, "password")
        self.secrets = () if self._password is None else (self._password.reveal(),)
        self.client_id = config.client_id or f"carbonscada-{ctx.site.id}-{config.id}"

    def topic(self, event: AlarmEvent) -> str:
        """The topic of one event's message."""
        return self.config.topic.format(site=self.site.id, rule=event.rule, state=event.state)

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """Connect, publish and wait for the broker's acknowledgement (QoS ≥ 1)."""
        cfg = self.config
        topic = self.topic(event)
        payload = _dumps(event_json(event, self.site.id, site_name))
        try:
            async with aiomqtt.Client(
                    cfg.host, cfg.port, username=cfg.username,
                    password=None if self._password is None else self._password.reveal(),
                    identifier=self.client_id, timeout=cfg.timeout_s) as client:
                await client.publish(topic, payload, qos=cfg.qos, retain=cfg.retain,
                                     timeout=cfg.timeout_s)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise SinkError(redact(f"mqtt channel {self.id!r}: publish to {cfg.host}:"
                                   f"{cfg.port} topic {topic!r}: {_describe(exc)}",
                                   self.secrets)) from None
