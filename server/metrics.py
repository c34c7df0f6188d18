"""Self-monitoring: Prometheus /metrics, liveness and readiness, read from the live server.

Nothing here keeps a copy of the server's counters: a custom collector reads the
drivers' and sinks' own counters at every scrape, so /metrics can never drift from
`/api/v1/devices`. Only what has no other home is kept here: the minute cycle's
duration and the event-loop lag probe. The web sink serves it through the
`web.monitoring.Monitor` protocol; the web never imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from drivers.base import Driver
from server.looplag import LAG_BUCKETS_S, LoopLagProbe
from server.sinks import QueuedSink

PREFIX = "carbonscada"
# The minute cycle (calculation and hand-off to the sinks) takes milliseconds; the
# buckets reach far enough to show one that eats into the minute's grace time.
MINUTE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@runtime_checkable
class _Outbox(Protocol):
    """A sink with a durable outbox (the InfluxDB sink)."""

    def pending_batches(self) -> int:
        """Batches stored and not yet accepted by the server."""
        ...


@runtime_checkable
class _Throttled(Protocol):
    """A sink with a login throttle (the web sink)."""

    throttle: Any


@runtime_checkable
class _Notifying(Protocol):
    """A sink with a notifier (the alarm sink)."""

    notifier: Any


class Monitor:
    """What /metrics, /health and /ready report, for one runtime (web.monitoring.Monitor)."""

    def __init__(self, *, drivers: Callable[[], Sequence[Driver]],
                 sinks: Callable[[], Sequence[QueuedSink]],
                 tasks: Callable[[], Sequence[Any]],
                 started: Callable[[], bool],
                 probe: LoopLagProbe | None = None) -> None:
        self._drivers = drivers
        self._sinks = sinks
        self._tasks = tasks
        self._started = started
        self.probe = probe if probe is not None else LoopLagProbe()
        self.minutes_published = 0
        self.last_minute_end_s = 0.0  # UNIX time of the end of the last minute published
        # Not registered anywhere but in our registry, through the collector below.
        self.minute_duration = Histogram(
            f"{PREFIX}_minute_cycle_duration_seconds",
            "Time to calculate one minute and hand it to every sink", buckets=MINUTE_BUCKETS_S,
            registry=None)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServerCollector(self))
        # CPU, memory, open files of this process, as every exporter has them.
        ProcessCollector(registry=self.registry)

    def minute_published(self, end_s: float, duration_s: float) -> None:
        """A minute result (the minute ending at UNIX time `end_s`) went to every sink."""
        self.minutes_published += 1
        self.last_minute_end_s = end_s
        self.minute_duration.observe(duration_s)

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def health(self) -> str | None:
        """None while the server runs; otherwise what stopped (liveness)."""
        if self._started() and not self.probe.running:
            return "event-loop probe is not running"
        for task in self._tasks():
            if task.done():  # the buses and the minute cycle run until stop()
                return f"task {task.get_name()} ended"
        return None

    def readiness(self) -> str | None:
        """None once every stage started and the first minute was published; else why not."""
        if not self._started():
            return "starting: not every stage has started yet"
        if self.minutes_published == 0:
            return "started; waiting for the first minute to be published"
        return self.health()

    @property
    def drivers(self) -> Sequence[Driver]:
        """The drivers now running."""
        return self._drivers()

    @property
    def sinks(self) -> Sequence[QueuedSink]:
        """The sinks now running, each behind its queue."""
        return self._sinks()


def _fields(obj: object) -> dict[str, Any]:
    """A stats record as a dict (a dataclass or a mapping); {} for anything else."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return obj
    return {}


_Family = CounterMetricFamily | GaugeMetricFamily


def _sink_figure(families: dict[str, _Family], key: str) -> _Family:
    """The family of one figure a sink reports: `*_total` a counter, else a gauge; `_s`
    becomes `_seconds` as Prometheus names units."""
    if key not in families:
        doc = f"The sink's {key.replace('_', ' ')}"
        if key.endswith("_total"):
            families[key] = CounterMetricFamily(f"{PREFIX}_sink_{key[:-6]}", doc,
                                                labels=["sink"])
        else:
            name = key[:-2] + "_seconds" if key.endswith("_s") else key
            families[key] = GaugeMetricFamily(f"{PREFIX}_sink_{name}", doc, labels=["sink"])
    return families[key]


class _ServerCollector(Collector):
    """Reads the live drivers, sinks, notifier and throttle at each scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor

    def collect(self) -> Iterable[Metric]:
        """Every carbonscada_* metric, as of now."""
        yield from self._devices()
        yield from self._sink_metrics()
        yield from self._minute()
        yield from self._loop_lag()

    def _devices(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)

        dl = ["device", "bus"]
        polls = counter("device_polls", "Polls of the device (answered or not)", dl)
        requests = counter("device_requests", "Requests sent to the device", dl)
        errors = counter("device_errors", "Failed requests and polls of the device", dl)
        latency = gauge("device_latency_seconds", "Reply time of the last answered request", dl)
        online = gauge("device_online", "1 while the device answers", dl)
        bl = ["bus"]
        b_requests = counter("bus_requests", "Requests sent on the bus", bl)
        b_errors = counter("bus_errors", "Failed requests and connection attempts on the bus", bl)
        b_connects = counter("bus_connects", "Connections (re)established on the bus", bl)
        b_out = counter("bus_bytes_out", "Bytes sent on the bus", bl)
        b_in = counter("bus_bytes_in", "Bytes received on the bus", bl)
        b_up = gauge("bus_connected", "1 while the bus's port or connection is open", bl)
        for driver in self.m.drivers:
            b = driver.bus_stats()
            b_requests.add_metric([b.bus], b.requests)
            b_errors.add_metric([b.bus], b.errors)
            b_connects.add_metric([b.bus], b.connects)
            b_out.add_metric([b.bus], b.bytes_out)
            b_in.add_metric([b.bus], b.bytes_in)
            b_up.add_metric([b.bus], float(b.connected))
            for d in driver.stats():
                labels = [d.device, d.bus or b.bus]
                polls.add_metric(labels, d.polls)
                requests.add_metric(labels, d.requests)
                errors.add_metric(labels, d.errors)
                latency.add_metric(labels, d.last_latency_s)
                online.add_metric(labels, float(d.online))
        yield from (polls, requests, errors, latency, online,
                    b_requests, b_errors, b_connects, b_out, b_in, b_up)

    def _sink_metrics(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(f"{PREFIX}_sink_queue_depth",
                                  "Items waiting in the sink's queue", labels=["sink"])
        capacity = GaugeMetricFamily(f"{PREFIX}_sink_queue_capacity",
                                     "Size of the sink's queue", labels=["sink"])
        dropped = CounterMetricFamily(
            f"{PREFIX}_sink_dropped_sample_batches",
            "Raw-sample batches the sink dropped because its queue was full", labels=["sink"])
        outbox: dict[str, _Family] = {}  # the sinks' own figures: name → family
        sent = CounterMetricFamily(f"{PREFIX}_notifications",
                                   "Alarm notification outcomes (sent, failed, retry, dropped, "
                                   "...) per channel", labels=["channel", "outcome"])
        refused = CounterMetricFamily(f"{PREFIX}_logins_refused",
                                      "Logins refused: wrong password, or throttled",
                                      labels=["sink", "reason"])
        for q in self.m.sinks:
            sink, name = q.sink, q.sink.name
            depth.add_metric([name], q.queue_depth)
            capacity.add_metric([name], q.queue_capacity)
            dropped.add_metric([name], q.dropped_sample_batches)
            if isinstance(sink, _Outbox):
                # What the sink reports of its outbox (InfluxSink.stats(): size, age, drops,
                # sends); at least the batches waiting.
                stats = getattr(sink, "stats", None)
                figures = _fields(stats()) if callable(stats) else {}
                figures.setdefault("outbox_batches", sink.pending_batches())
                for key, value in figures.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        _sink_figure(outbox, key).add_metric([name], float(value))
            if isinstance(sink, _Notifying):
                counts = getattr(sink.notifier, "outcome_counts", {})
                for (channel, outcome), n in sorted(counts.items()):
                    sent.add_metric([channel, outcome], n)
            if isinstance(sink, _Throttled):
                throttle = sink.throttle
                refused.add_metric([name, "wrong_password"],
                                   getattr(throttle, "failed_total", 0))
                refused.add_metric([name, "throttled"], getattr(throttle, "refused_total", 0))
        yield from (depth, capacity, dropped, *outbox.values(), sent, refused)

    def _minute(self) -> Iterator[Metric]:
        yield from self.m.minute_duration.collect()
        yield CounterMetricFamily(f"{PREFIX}_minutes_published", "Minute results published",
                                  value=self.m.minutes_published)
        yield GaugeMetricFamily(f"{PREFIX}_last_minute_end_timestamp_seconds",
                                "End of the last minute published (UNIX time)",
                                value=self.m.last_minute_end_s)

    def _loop_lag(self) -> Iterator[Metric]:
        p = self.m.probe
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_max_seconds",
            "Longest event-loop stall in the last full minute or the one running now",
            value=p.max_stall_s)
        h = HistogramMetricFamily(f"{PREFIX}_event_loop_lag_seconds",
                                  f"Event-loop lag, measured every {p.interval_s:g} s")
        cumulative, buckets = 0, []
        for le, n in zip((*LAG_BUCKETS_S, float("inf")), p.bucket_counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if le == float("inf") else f"{le:g}", cumulative))
        h.add_metric([], buckets, p.sum_s)
        yield h
