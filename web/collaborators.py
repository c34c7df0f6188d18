"""What the web sink reads from the rest of the server (historian, devices), as seen by it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from model.records import AlarmEvent, DeliveryRecord


class PeriodHistory(Protocol):
    """Where stored hours and days come from (the historian)."""

    async def period_rows(self, kind: str, level: str, ident: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """Stored rows of one source, stream or unit with start ≤ t < end, oldest first."""
        ...


class AlarmHistory(Protocol):
    """Where the alarm journal and the notification delivery log come from (historian)."""

    async def alarm_journal(self, start: datetime, end: datetime, rule: str | None = None,
                            limit: int = 10_000) -> list[AlarmEvent]:
        """Alarm events with start ≤ t < end, oldest first."""
        ...

    async def deliveries(self, start: datetime, end: datetime,
                         limit: int = 10_000) -> list[DeliveryRecord]:
        """Delivery log lines with start ≤ t < end, oldest first."""
        ...


# The bus status of the drivers, one dict per bus.
DeviceStatus = Callable[[], list[dict[str, Any]]]
