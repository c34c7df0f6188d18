"""Scheduled reports: made at `at` plant time for the period that just ended, e-mailed
through an e-mail channel of the alarms (alarms/email.py: its SMTP server and login).

A daily report runs every day, a monthly one (and the platform workbook) on the 1st, an
annual one on 1 January. The loop wakes at least once a minute, so a changed wall clock
delays a report by a minute at most; a report that fails is logged and not retried (the
next period's comes as planned; `carbonscada report` makes any one again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

from model.errors import CarbonScadaError
from server.reports.config import ScheduleConfig
from server.reports.engine import RenderedReport, ReportMaker

log = logging.getLogger(__name__)
_WAKE_S = 60.0


class MailChannel(Protocol):
    """An e-mail channel (alarms/email.py EmailChannel)."""

    async def send_message(self, msg: EmailMessage, recipients: list[str] | None = None,
                           ) -> None:
        """Send a ready mail; SinkError on failure."""
        ...


def email_channels(cfg: Any, origin: str = "configuration") -> dict[str, MailChannel]:
    """The e-mail channels the schedule names, built (their passwords read) now."""
    from alarms.channels import ChannelContext, email_channel

    wanted = {s.channel for s in cfg.reports.schedule}
    out: dict[str, MailChannel] = {}
    for i, ch in enumerate(cfg.alarms.channels):
        if ch.kind == "email" and ch.id in wanted:
            out[ch.id] = email_channel(ch, ChannelContext(cfg.site, f"alarms.channels[{i}]",
                                                          origin))
    return out


def mail(report: RenderedReport, entry: ScheduleConfig, site_name: str, sender: str,
         start: datetime, end: datetime, tz: str) -> EmailMessage:
    """The mail of one scheduled report, the file attached; Chinese first, then English."""
    msg = EmailMessage()
    msg["Subject"] = f"[报表 REPORT] {site_name} {entry.kind} {report.filename}"
    msg["From"] = sender
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="carbonscada")
    msg.set_content(
        f"{site_name} 定时报表：{entry.kind}\n"
        f"周期：{start.isoformat()} 至 {end.isoformat()}（UTC，厂区时区 {tz}）\n"
        f"附件：{report.filename}\n\n"
        f"{site_name} scheduled report: {entry.kind}\n"
        f"Period: {start.isoformat()} to {end.isoformat()} (UTC; plant time zone {tz})\n"
        f"Attached: {report.filename}\n")
    main, _, sub = report.content_type.split(";")[0].partition("/")
    msg.add_attachment(report.body, maintype=main, subtype=sub, filename=report.filename)
    return msg


class ReportScheduler:
    """Runs the plant file's `reports.schedule` while the server runs."""

    def __init__(self, schedule: list[ScheduleConfig], maker: ReportMaker,
                 channels: Mapping[str, MailChannel], senders: Mapping[str, str],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.schedule = schedule
        self.maker = maker
        self.channels = channels
        self.senders = senders  # channel id → its From address
        self._now = now
        self._task: asyncio.Task[None] | None = None
        # Besides the cancel: Python 3.11's asyncio.wait_for (inside aiosmtplib) can lose a
        # cancellation that meets the reply it waited for; the loop then ends on this.
        self._stopping = asyncio.Event()
        self.sent = 0  # reports mailed by this scheduler
        self.failed = 0

    def next_run(self, entry: ScheduleConfig, after: datetime) -> datetime:
        """The first time after `after` (UTC) that `entry` is due."""
        clock = self.maker.clock
        level = self.maker.level(entry.kind)
        offset = timedelta(seconds=entry.minutes_after_midnight * clock.minute_seconds)
        day = clock.day_start(after)
        for _ in range(800):  # 1 January is at most 366 days away
            loc = clock.scaled_local(day)
            due_day = (level == "day" or (level == "month" and loc.day == 1)
                       or (loc.month == 1 and loc.day == 1))
            if due_day and day + offset > after:
                return day + offset
            day = clock.next_day(day)
        raise CarbonScadaError(f"report {entry.kind}: no run found after {after.isoformat()}")

    async def run(self, entry: ScheduleConfig, at: datetime) -> RenderedReport:
        """Make the report due at `at` (the period before it) and mail it."""
        start, end = self.maker.previous_period(entry.kind, at)
        report = await self.maker.make(entry.kind, start, end, entry.format)
        cfg = self.maker.config
        msg = mail(report, entry, cfg.site.name_zh or cfg.site.name,
                   self.senders.get(entry.channel, "carbonscada"), start, end,
                   cfg.site.timezone)
        channel = self.channels[entry.channel]
        await channel.send_message(msg, list(entry.email) or None)
        self.sent += 1
        log.info("scheduled report %s (%s) sent through channel %s", entry.kind,
                 report.filename, entry.channel)
        return report

    async def start(self) -> None:
        """Start the schedule's task."""
        if self.schedule:
            self._task = asyncio.create_task(self._loop(), name="report-schedule")

    async def stop(self) -> None:
        """Stop the task (a report being made is abandoned)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        start = self._now()
        due = [self.next_run(e, start) for e in self.schedule]
        while not self._stopping.is_set():
            now = self._now()
            for i, entry in enumerate(self.schedule):
                if now < due[i]:
                    continue
                try:
                    await self.run(entry, due[i])
                except CarbonScadaError as exc:
                    self.failed += 1
                    log.error("scheduled report %s: %s", entry.kind, exc)
                except Exception:  # the schedule goes on whatever one report does
                    self.failed += 1
                    log.exception("scheduled report %s failed", entry.kind)
                due[i] = self.next_run(entry, due[i])
            wait = min((d - self._now()).total_seconds() for d in due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(max(wait, 0.0), _WAKE_S))
