"""The alarm sink: evaluates every rule each minute and notifies the rules' channels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from alarms.email import EmailChannel
from alarms.rules import ThresholdRule, target_value
from server.config import PlantConfig
from server.records import AlarmEvent, MinuteResult, Sample

log = logging.getLogger(__name__)

RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0)
"""Waits between the tries of one notification: 3 tries in all."""

MAX_EVENTS = 1000
"""How many recent events `AlarmSink.events` keeps in memory (the historian keeps all)."""

Listener = Callable[[AlarmEvent], None]


class AlarmSink:
    """Sink that runs the threshold rules and sends their events to listeners and channels."""

    name = "alarms"

    def __init__(self, config: PlantConfig, *,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
                 stop_grace_s: float = 2.0) -> None:
        site = config.site
        self.site_name = f"{site.name_zh} {site.name}" if site.name_zh else site.name
        self.rules = [ThresholdRule(r) for r in config.alarms.rules]
        self.channels: dict[str, EmailChannel] = {
            c.id: EmailChannel(c, site.timezone) for c in config.alarms.channels}
        for rule in self.rules:
            for ch in rule.config.notify:
                if ch not in self.channels:
                    raise ValueError(f"alarm rule {rule.id!r}: unknown channel {ch!r}")
        self.events: list[AlarmEvent] = []
        self.retry_delays_s = tuple(retry_delays_s)
        self.stop_grace_s = stop_grace_s
        self._listeners: list[Listener] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._channel_error: dict[str, str] = {}  # last error logged per channel
        self._listener_error: dict[int, str] = {}

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call `callback` with every future event; returns a function that unsubscribes."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def active(self) -> list[AlarmEvent]:
        """The event that put each rule in its current state, for rules not in "normal"."""
        return [r.last_event for r in self.rules
                if r.state != "normal" and r.last_event is not None]

    async def start(self) -> None:
        """Nothing to open: channels connect per message."""

    async def on_samples(self, samples: Sequence[Sample]) -> None:
        """Raw samples are not used by threshold rules."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Evaluate every rule on one minute's results and dispatch the events."""
        for rule in self.rules:
            event = rule.evaluate(target_value(result, rule.target), result.t)
            if event is not None:
                self._dispatch(event, rule.config.notify)

    def _dispatch(self, event: AlarmEvent, notify: Sequence[str]) -> None:
        log.info("alarm %s: %s", event.state, event.message)
        self.events.append(event)
        if len(self.events) > MAX_EVENTS:
            del self.events[:-MAX_EVENTS]
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # one bad listener must not stop the others
                text = f"{type(exc).__name__}: {exc}"
                if self._listener_error.get(id(listener)) != text:
                    log.error("alarm listener %r failed: %s", listener, text)
                    self._listener_error[id(listener)] = text
        for ch in notify:
            task = asyncio.create_task(self._send(self.channels[ch], event),
                                       name=f"alarm-send:{ch}:{event.rule}")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, channel: EmailChannel, event: AlarmEvent) -> None:
        """Send with retries; log a channel's failure once until it recovers."""
        tries = len(self.retry_delays_s) + 1
        for attempt in range(tries):
            try:
                await channel.send(event, self.site_name)
            except Exception as exc:
                if attempt + 1 < tries:
                    log.debug("channel %s try %d failed: %s", channel.id, attempt + 1, exc)
                    await asyncio.sleep(self.retry_delays_s[attempt])
                    continue
                text = str(exc)
                if self._channel_error.get(channel.id) != text:
                    log.error("alarm channel %s failed after %d tries: %s",
                              channel.id, tries, text)
                    self._channel_error[channel.id] = text
                return
            if self._channel_error.pop(channel.id, None) is not None:
                log.info("alarm channel %s works again", channel.id)
            return

    async def stop(self) -> None:
        """Let in-flight sends finish for a short grace period, then cancel the rest."""
        pending = set(self._sends)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.stop_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
