"""What the web sink reads from the rest of the server (historian, devices), as seen by it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from model.records import AlarmEvent, DeliveryRecord


class PeriodHistory(Protocol):
    """Where stored hours and days come from (the historian)."""

    async def period_rows(self, kind: str, level: str, ident: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """Stored rows of one source, stream or unit with start ≤ t < end, oldest first."""
        ...


@runtime_checkable
class MinuteHistory(Protocol):
    """Where stored minutes come from (the historian): source_minute, unit_minute and
    tag_minute rows."""

    async def history_rows(self, table: str, ident: str, start: datetime, end: datetime, *,
                           time_column: str = "t_ms", limit: int | None = None,
                           newest_first: bool = False) -> list[dict[str, Any]]:
        """Rows of one source, unit or tag of `table` with start ≤ t < end, oldest first, at
        most `limit`; the time in "t" (UTC datetime), "flag" as a DataFlag."""
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
