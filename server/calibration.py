"""The overdue-calibration alarm of the instrument register, one system alarm per instrument.

Built as the backups' alarm is (server/backup.py, server/backupconfig.py): each tag with an
`instrument:` block gets a comm_loss rule (`CALIBRATION_RULE_PREFIX` + tag) on a system
device of its own (`calibration:<tag>`), added to the rules in force by the runtime, not
to the file's; `CalibrationMonitor` sends that device a DeviceEvent whose `fault` says the
calibration is overdue. An event goes out only when an instrument's state changes (and
once for each at start-up, which also clears an alarm restored from the journal once the
configuration carries a new calibration date): the alarm rises once, not every check.
The monitor checks at start, every `instruments.check_interval_h` and just after each
plant-local midnight (the instant a due date passes, web/register.overdue_from).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from model.records import DeviceEvent
from server.periodic import Periodic
from web.register import (
    InstrumentRegisterConfig,
    Registered,
    due_date,
    overdue_from,
    registered,
)

log = logging.getLogger(__name__)

OnDeviceEvent = Callable[[DeviceEvent], None]

CALIBRATION_DEVICE_PREFIX: Final = "calibration:"
"""System device ids of the instruments: this + the tag id (no field device has a ':')."""
CALIBRATION_RULE_PREFIX: Final = "calibration_"
MIDNIGHT_LAG_S: Final = 1.0  # checked this long after a plant-local midnight


def calibration_device(tag: str) -> str:
    """The system device under which the tag's instrument reports its calibration state."""
    return f"{CALIBRATION_DEVICE_PREFIX}{tag}"


def calibration_rule_id(tag: str) -> str:
    """The id of the rule added for the tag's instrument (an Identifier: ≤ 64 characters)."""
    rid = f"{CALIBRATION_RULE_PREFIX}{tag}"
    if len(rid) <= 64:
        return rid
    return f"{rid[:55]}_{hashlib.sha256(tag.encode()).hexdigest()[:8]}"


def calibration_device_ids(cfg: AlarmPlantConfig, register: InstrumentRegisterConfig,
                           ) -> tuple[str, ...]:
    """The system device ids of every registered instrument, when the alarm is on."""
    if not register.alarm:
        return ()
    return tuple(calibration_device(r.tag) for r in registered(cfg))


_P = TypeVar("_P", bound=AlarmPlantConfig)


def with_calibration_alarm(cfg: _P, register: InstrumentRegisterConfig) -> _P:
    """`cfg` with a comm_loss rule for each registered instrument the plant's rules do not
    already watch (a plant's own rule for `calibration:<tag>` sets its delays or notify)."""
    if not register.alarm:
        return cfg
    rules = cfg.alarms.rules
    ids = {r.id for r in rules}
    watched = {r.device for r in rules if isinstance(r, CommLossRuleConfig)}
    added = [CommLossRuleConfig(
        id=calibration_rule_id(r.tag), kind="comm_loss", device=calibration_device(r.tag),
        name=f"Calibration overdue / 校准逾期: {r.tag}"
             + (f" ({r.description})" if r.description else ""),
        suppress_when_stopped=False)
        for r in registered(cfg)
        if calibration_device(r.tag) not in watched and calibration_rule_id(r.tag) not in ids]
    if not added:
        return cfg
    return cfg.model_copy(update={"alarms": cfg.alarms.model_copy(
        update={"rules": [*rules, *added]})})


class CalibrationMonitor:
    """Sends each registered instrument's overdue state as a DeviceEvent when it changes."""

    def __init__(self, cfg: AlarmPlantConfig, register: InstrumentRegisterConfig,
                 on_event: OnDeviceEvent | None) -> None:
        self.instruments: list[Registered] = registered(cfg)
        self.tz = ZoneInfo(cfg.site.timezone)
        # UTC inside: the instant each becomes overdue, from its plant-local due date.
        self._overdue_at = [overdue_from(r.instrument, self.tz) for r in self.instruments]
        self.register = register
        self.on_event = on_event
        self._sent: dict[str, bool] = {}  # tag → overdue, as last sent
        self._periodic = Periodic("calibration-monitor", self.check,
                                 lambda: self._sleep_s(datetime.now(UTC)), log,
                                 "instrument calibration check failed")
        self.checks = 0

    async def start(self) -> None:
        """Start the task (the first check runs at once)."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop the task."""
        await self._periodic.stop()

    def _sleep_s(self, now: datetime) -> float:
        """Until the next check: the interval, or just after the next plant-local midnight."""
        local = now.astimezone(self.tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), self.tz)
        to_midnight = (midnight.astimezone(UTC) - now).total_seconds() + MIDNIGHT_LAG_S
        return max(min(self.register.check_interval_h * 3600.0, to_midnight), 0.0)

    def check(self, now: datetime | None = None) -> list[DeviceEvent]:
        """Send (and return) the events of the instruments whose overdue state changed."""
        t = now or datetime.now(UTC)
        self.checks += 1
        sent: list[DeviceEvent] = []
        for r, overdue_at in zip(self.instruments, self._overdue_at, strict=True):
            inst = r.instrument
            overdue = t >= overdue_at
            if self._sent.get(r.tag) == overdue:
                continue  # the same state: the alarm rises once, not every check
            due = due_date(inst).isoformat()
            where = f"{r.tag} (device {r.device}, serial {inst.serial})"
            message = (f"calibration overdue: {where}, calibrated "
                       f"{inst.calibrated_on.isoformat()}, due {due} (every "
                       f"{inst.calibration_interval_days} d)" if overdue else
                       f"calibration valid: {where}, due {due}")
            event = DeviceEvent(calibration_device(r.tag), "instrument register", t, overdue,
                                message)
            self._sent[r.tag] = overdue
            sent.append(event)
            if self.on_event is None:
                continue
            try:
                self.on_event(event)
            except Exception:  # the others must still be sent
                log.exception("calibration alarm not delivered: %s", message)
        return sent
