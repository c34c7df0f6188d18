"""What the web sink reads from the rest of the server (historian, devices), as seen by it."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from compute.assets import CompliancePosition
from model.accounts import User
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


@dataclass(frozen=True, slots=True)
class RawTags:
    """The newest raw reading of each tag of one device, as columns (a copy of the tag
    store's slice of that device, not of the whole store)."""

    device: str
    ids: tuple[str, ...]
    names: tuple[str, ...]  # description_zh, else description, else ""
    names_en: tuple[str, ...]  # description, else ""
    units: tuple[str, ...]
    times_s: npt.NDArray[np.float64]  # epoch seconds, -inf: never read
    values: npt.NDArray[np.float64]  # NaN: no value
    flags: npt.NDArray[np.uint8]  # DataFlag integers


class DeviceTags(Protocol):
    """Where the newest raw reading of a device's tags comes from (the runtime's store)."""

    def device_tags(self, device: str) -> RawTags | None:
        """The device's tags and their newest readings; None for an unknown device."""
        ...


@runtime_checkable
class UserAccounts(Protocol):
    """Where an admin manages the login accounts (server.users.UserStore fits it).

    Synchronous and slow (SQLite, and scrypt when a password is set): call it in a worker
    thread. Each call raises model.errors.UserError naming the user and what is wrong.
    """

    def add(self, name: str, role: str, password: str) -> User:
        """Create an account (refuses a bad name, unknown role, short password, duplicate)."""
        ...

    def set_password(self, name: str, password: str) -> None:
        """Replace an account's password."""
        ...

    def set_role(self, name: str, role: str) -> None:
        """Change an account's role."""
        ...

    def remove(self, name: str) -> None:
        """Delete an account."""
        ...

    def get(self, name: str) -> User | None:
        """The account of that name (without regard to case), None if there is none."""
        ...

    def list(self) -> builtins.list[User]:
        """Every account, by name."""
        ...


class RecordKeeping(Protocol):
    """The record keeper (server/records.py): entries people make, and the versions of
    stored values they changed."""

    async def enter(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep, audit and apply one entry; InvalidValueError (LockedPeriodError)
        naming what is wrong."""
        ...

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every entry (of one kind), oldest first."""
        ...

    def locks(self) -> list[dict[str, Any]]:
        """The locks in force."""
        ...

    def out_of_control(self) -> dict[str, list[dict[str, str | None]]]:
        """Per source, the intervals its analyser was out of control."""
        ...

    async def history(self, table: str, ident: str, t: datetime) -> dict[str, Any]:
        """Every version of one stored row."""
        ...


class ReportFile(Protocol):
    """A written report (server/reports/engine.py RenderedReport)."""

    @property
    def body(self) -> bytes:
        """The file's bytes."""
        ...

    @property
    def content_type(self) -> str:
        """Its media type."""
        ...

    @property
    def filename(self) -> str:
        """A file name for it."""
        ...


class ReportMaking(Protocol):
    """Where reports come from (server/reports/engine.py ReportMaker): it reads the
    historian and builds and writes off the event loop."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The report kinds it makes (daily, monthly, annual, platform, custom names)."""
        ...

    async def make(self, kind: str, start: datetime, end: datetime, fmt: str) -> ReportFile:
        """The report of `kind` over the whole periods from `start` to `end`, in `fmt`
        (xlsx, csv, pdf); InvalidValueError naming what is wrong."""
        ...


class CarbonAssets(Protocol):
    """The carbon-asset keeper (server/assets.py AssetKeeper): the ledger of allocations,
    trades, offsets, surrenders, prices and reductions, and the compliance position."""

    async def position(self, year: int | None = None) -> CompliancePosition:
        """The compliance position of `year` (default: the current plant year)."""
        ...

    async def trend(self, year: int | None = None) -> list[dict[str, float]]:
        """Emissions, prorated allowance and the gap per month of `year`."""
        ...

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every ledger entry (of one kind), oldest first."""
        ...

    async def enter(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep and audit one entry; InvalidValueError naming the field."""
        ...

    async def import_csv(self, user: str, text: str) -> dict[str, Any]:
        """Enter every row of a CSV (all or none); InvalidValueError naming line and
        column."""
        ...

    def csv_export(self) -> str:
        """Every entry as CSV."""
        ...


class CaseLedger(Protocol):
    """The case keeper (server/cases.py CaseKeeper): abnormal-data cases opened on a
    period, an alarm or an entry, and what was done, reviewed and closed."""

    async def record(self, user: str, body: Any) -> dict[str, Any]:
        """Check, keep and audit one event (open, action, assign, review, close, reopen);
        InvalidValueError naming the field, a LookupError for an unknown case."""
        ...

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every case (open, closed, overdue; None: all), oldest first."""
        ...

    def case(self, case_id: int) -> dict[str, Any] | None:
        """One case with its full history, None if there is none."""
        ...
