"""Email notification channel (SMTP via aiosmtplib)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib

from alarms.config import EmailChannelConfig
from alarms.spec import fmt_number
from model.errors import SinkError
from model.records import AlarmEvent

_TAG = {"alarm": "[报警 ALARM]", "warning": "[预警 WARNING]", "normal": "[恢复 NORMAL]"}
_STATE_ZH = {"alarm": "报警", "warning": "预警", "normal": "正常"}


def subject(event: AlarmEvent, site_name: str) -> str:
    """The mail subject, e.g. "[报警 ALARM] Test Plant source S1 co2_rate_t_h"."""
    return f"{_TAG.get(event.state, '[' + event.state + ']')} {site_name} {event.target}"


def body(event: AlarmEvent, site_name: str, tz: ZoneInfo) -> str:
    """The mail body: Chinese first, then English."""
    utc = event.t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    local = event.t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    level = "-" if event.limit is None else fmt_number(event.limit)
    value = fmt_number(event.value)
    state_zh = _STATE_ZH.get(event.state, event.state)
    prev_zh = _STATE_ZH.get(event.previous, event.previous)
    return (
        f"{site_name} 碳排放监测{state_zh}通知\n"
        f"状态：{state_zh}（原状态：{prev_zh}）\n"
        f"规则：{event.rule}\n"
        f"监测对象：{event.target}\n"
        f"数值：{value}\n"
        f"限值：{level}\n"
        f"时间（厂区时间 {tz.key}）：{local}\n"
        f"时间（UTC）：{utc}\n"
        f"说明：{event.message_zh}\n"
        "\n"
        f"{site_name} carbon emission monitoring: {event.state.upper()}\n"
        f"State: {event.state} (was {event.previous})\n"
        f"Rule: {event.rule}\n"
        f"Target: {event.target}\n"
        f"Value: {value}\n"
        f"Level: {level}\n"
        f"Plant time ({tz.key}): {local}\n"
        f"UTC: {utc}\n"
        f"Details: {event.message}\n"
    )


class EmailChannel:
    """Sends alarm events as plain-text mail through one SMTP server."""

    def __init__(self, config: EmailChannelConfig, timezone: str = "Asia/Shanghai", *,
                 password: str | None = None) -> None:
        self.config = config
        self.id = config.id
        self.tz = ZoneInfo(timezone)
        self._given_password = password  # already resolved (alarms.channels); else read per send
        self.secrets: tuple[str, ...] = (password,) if password else ()  # for redaction

    def message(self, event: AlarmEvent, site_name: str) -> EmailMessage:
        """Build the mail for one event."""
        cfg = self.config
        msg = EmailMessage()
        msg["Subject"] = subject(event, site_name)
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(cfg.to)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(domain="carbonscada")
        msg.set_content(body(event, site_name, self.tz))
        return msg

    def _password(self) -> str | None:
        if self._given_password is not None:
            return self._given_password
        env, file = self.config.password_env, self.config.password_file
        if file is not None:
            try:
                return Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SinkError(f"email channel {self.id!r}: cannot read the SMTP password "
                                f"file {file!r}: {exc.strerror}") from None
        if env is None:
            return None
        password = os.environ.get(env)
        if password is None:
            raise SinkError(f"email channel {self.id!r}: environment variable {env!r} "
                            "with the SMTP password is not set")
        return password

    async def send(self, event: AlarmEvent, site_name: str) -> None:
        """Send one event; raise SinkError naming channel and server on any failure."""
        await self.send_message(self.message(event, site_name))

    async def send_message(self, msg: EmailMessage, recipients: list[str] | None = None,
                           ) -> None:
        """Send a ready mail (e.g. a scheduled report with its attachment, server/reports)
        through this channel's server, to `recipients` or else the channel's `to`; raise
        SinkError naming channel and server on any failure."""
        cfg = self.config
        username = cfg.username
        password = self._password() if username is not None else None
        try:
            await aiosmtplib.send(
                msg,
                sender=cfg.sender,
                recipients=recipients or cfg.to,
                hostname=cfg.host,
                port=cfg.port,
                username=username,
                password=password,
                timeout=cfg.timeout_s,
                use_tls=cfg.security == "ssl",
                start_tls=cfg.security == "starttls",
                cert_bundle=cfg.ca_file,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            if password:
                detail = detail.replace(password, "***")
            raise SinkError(f"email channel {self.id!r}: cannot send via "
                            f"{cfg.host}:{cfg.port} ({cfg.security}): {detail}") from None
