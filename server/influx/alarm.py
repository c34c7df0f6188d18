"""The InfluxDB outbox's system alarm: raised before its caps drop anything, and cleared.

The outbox reports as a device does (a DeviceEvent with device OUTBOX_DEVICE, handed to
the runtime's device-event path and so to the alarm engine's comm_loss rules): its alarm
is the comm_loss rule OUTBOX_RULE_ID that the runtime adds to the rules in force of a plant
with an outbox (server.influx.config.with_outbox_alarm) unless a rule names that device,
and it shows in the alarm list of the web API and as an OPC UA condition like any device's
communication alarm, with journal, acknowledgement and notifications.

It is raised when the outbox passes `outbox_warn_pct` of either cap and cleared when it is
back below half of that (InfluxSink._enforce_caps decides). Its message says how full the
outbox is and, once the caps have dropped batches, what they dropped (lines, batches, the
time range of the points). The alarm engine announces a transition, not a new message of
an alarm already active, so a drop during an active alarm is said in the log (an error
line each) and becomes the alarm's note; an alarm that rises at the same check as a drop
says both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from model.records import DeviceEvent
from server.influx.config import OUTBOX_DEVICE, InfluxConfig

log = logging.getLogger(__name__)

OnDeviceEvent = Callable[[DeviceEvent], None]


class DropLike(Protocol):
    """What OutboxAlarm reads of a drop (server.influx.sink.Drop)."""

    def describe(self) -> str:
        """What was dropped."""
        ...


def alarm_message(config: InfluxConfig, stats: Mapping[str, float],
                  drops: Mapping[str, Sequence[DropLike]]) -> str:
    """The alarm's text: how full the outbox is, and what its caps dropped so far."""
    text = (f"InfluxDB outbox at {stats['outbox_fill_pct']:.0f}% of its cap "
            f"({stats['outbox_bytes'] / 1e6:.1f} of {config.outbox_max_mb:g} MB, oldest "
            f"batch {stats['outbox_oldest_age_s'] / 3600:.1f} of {config.outbox_max_age_h:g} h)"
            f" while {config.url} is not taking writes")
    dropped = [f"{reason} cap: {d.describe()}" for reason, ds in drops.items() for d in ds]
    if dropped:
        return f"{text}; DROPPED {'; '.join(dropped)}"
    return f"{text}; the oldest batches are dropped at 100%"


class OutboxAlarm:
    """Sends the outbox's alarm state as DeviceEvents when it changes (or its text does)."""

    def __init__(self, config: InfluxConfig, on_event: OnDeviceEvent | None) -> None:
        self.config = config
        self.on_event = on_event
        self.active: bool | None = None  # as last sent; None: nothing sent since start
        self.message = ""

    def update(self, warned: bool, stats: Mapping[str, float],
               drops: Mapping[str, Sequence[DropLike]]) -> None:
        """Send the state if it differs from what was sent: the first call after start
        always sends (a restored alarm of the last run is cleared or confirmed)."""
        if self.on_event is None:
            return
        message = (alarm_message(self.config, stats, drops) if warned else
                   f"InfluxDB outbox back to {stats['outbox_fill_pct']:.0f}% of its cap")
        if warned == self.active and (not warned or message.split(";")[1:] ==
                                      self.message.split(";")[1:]):
            return  # the same state, and no new drop to say (the fill changes all the time)
        self.active, self.message = warned, message
        event = DeviceEvent(OUTBOX_DEVICE, self.config.url, datetime.now(UTC), warned, message)
        try:
            self.on_event(event)
        except Exception:  # the outbox goes on whatever the alarm path does
            log.exception("InfluxDB outbox alarm not delivered: %s", message)
