"""Web sink: REST API under /api/v1, live WebSocket /ws and the static control-room HMI.

The sink keeps the latest minute of every source and unit, the site totals and the
listed alarms, serves them as JSON and pushes every new minute and alarm to connected
WebSocket clients. Each client has its own bounded queue and sender task, so a slow or
dead client is dropped without delaying the minute cycle or the other clients
(web/hub.py). The routes are in web/handlers.py, the values shown in web/live.py.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from compute.co2e_today import CO2eToday
from model.errors import ConfigError, SinkError, os_error_text
from model.protocols import AlarmControl, Authenticator
from model.records import AlarmEvent, MinuteResult, PeriodRecords, SampleBlock
from web.assets import ASSETS
from web.auth import AuditLogLike, LoginThrottle, SessionStore
from web.cases import CASES
from web.collaborators import (
    AlarmHistory,
    CarbonAssets,
    CaseLedger,
    DeviceStatus,
    DeviceTags,
    MinuteHistory,
    PeriodHistory,
    RecordKeeping,
    ReportMaking,
)
from web.config import WebPlantConfig
from web.devices import DEVICE_TAGS
from web.handlers import build_app
from web.hub import Hub
from web.live import LiveState
from web.monitoring import MONITOR, Monitor
from web.monitoring_plan_api import MONITORING_PLAN, MonitoringPlanSource
from web.performance import PERFORMANCE, PerformanceSource
from web.records import RECORDS
from web.reports import REPORTS
from web.serialize import dumps

log = logging.getLogger(__name__)


class _BadRequestLog(logging.Filter):
    """aiohttp's report of a malformed request as one warning naming the client.

    aiohttp answers a request it cannot parse (a 9 KB URL, a broken header line) with a
    4xx itself, then logs "Error handling request" at ERROR with the parser's traceback:
    the client's fault, and nothing in the traceback helps anyone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite such a record in place; let every record through."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            args = record.args if isinstance(record.args, tuple) else ()
            client = args[0] if args else "unknown client"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "bad HTTP request from %s, answered %d: %s"
            record.args = (client, exc.code, " ".join(exc.message.split()))
            record.exc_info = record.exc_text = None
        return True


_BAD_REQUEST_LOG = _BadRequestLog()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files; ConfigError naming the file that is wrong."""
    for option, path, marker in (("web.tls_cert", cert, "CERTIFICATE-----"),
                                 ("web.tls_key", key, "PRIVATE KEY-----")):
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(path, option, f"cannot read it: {exc.strerror or exc}") from None
        if marker.encode() not in text:
            raise ConfigError(path, option, f"not a PEM file with a {marker.rstrip('-')}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(cert, "web.tls_cert / web.tls_key",
                          f"certificate and key {key} do not load together: {exc}") from None
    return ctx


class WebSink:
    """The web sink: REST API, WebSocket push and HMI page on config.web.host:port.

    Over HTTPS when config.web.tls_cert and tls_key are set. `alarms` is only acted on
    and read: alarm events reach the sink through `on_alarm`, which the runtime
    subscribes to the alarm sink.
    """

    name = "web"

    def __init__(self, config: WebPlantConfig, *, history: PeriodHistory | None = None,
                 devices: DeviceStatus | None = None, users: Authenticator | None = None,
                 audit: AuditLogLike | None = None, alarms: AlarmControl | None = None,
                 journal: AlarmHistory | None = None, monitor: Monitor | None = None,
                 minutes: MinuteHistory | None = None,
                 device_tags: DeviceTags | None = None,
                 records: RecordKeeping | None = None,
                 reports: ReportMaking | None = None,
                 assets: CarbonAssets | None = None,
                 cases: CaseLedger | None = None,
                 performance: PerformanceSource | None = None,
                 monitoring_plan: MonitoringPlanSource | None = None,
                 send_timeout_s: float = 5.0,
                 client_queue_size: int = 256, close_timeout_s: float = 2.0) -> None:
        self.config = config
        self.live = LiveState(config)
        self._history = history
        self._devices = devices
        self._users = users
        self._audit = audit
        self._alarms = alarms
        self._journal = journal
        self._monitor = monitor
        self._minutes = minutes
        self._device_tags = device_tags
        self._records = records
        self._reports = reports
        self._assets = assets
        self._cases = cases
        self._performance = performance
        self._monitoring_plan = monitoring_plan
        self.sessions = SessionStore(timedelta(minutes=config.web.session_idle_min),
                                     timedelta(hours=config.web.session_max_h))
        self.throttle = LoginThrottle()
        self._hub = Hub(send_timeout_s, client_queue_size, close_timeout_s)
        self._close_timeout_s = close_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0); only while started."""
        if self._port is None:
            raise RuntimeError("web sink is not started")
        return self._port

    @property
    def co2e_today(self) -> CO2eToday:
        """The units' CO2eToday sums the live JSON's co2e_today_t is of (runtime seeds it)."""
        return self.live.co2e_today

    @property
    def client_count(self) -> int:
        """How many WebSocket clients are connected."""
        return len(self._hub.clients)

    async def start(self) -> None:
        """List the alarms the engine has now, bind config.web.host:port and serve.

        Raises ConfigError naming the file if the TLS certificate or key is unusable,
        SinkError naming the address if it cannot listen there (e.g. port in use).
        """
        if self._runner is not None:
            return
        server_log = logging.getLogger("aiohttp.server")
        if _BAD_REQUEST_LOG not in server_log.filters:
            server_log.addFilter(_BAD_REQUEST_LOG)
        cfg = self.config.web
        ctx = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            ctx = tls_context(cfg.tls_cert, cfg.tls_key)
        if self._alarms is not None:
            self.live.set_alarms(self._alarms.alarm_list())
        app = build_app(self.live, self._hub, self._history, self._devices,
                        sessions=self.sessions, throttle=self.throttle, users=self._users,
                        audit=self._audit, alarms=self._alarms, journal=self._journal,
                        minutes=self._minutes, secure_cookies=ctx is not None)
        app[DEVICE_TAGS] = self._device_tags  # /api/v1/devices/{id}/tags answers from it
        app[RECORDS] = self._records  # /api/v1/entries, /locks, /qa, /revisions
        app[REPORTS] = self._reports  # /api/v1/reports/{kind}
        app[ASSETS] = self._assets  # /api/v1/carbon/…
        app[CASES] = self._cases  # /api/v1/cases
        app[PERFORMANCE] = self._performance  # /api/v1/performance
        app[MONITORING_PLAN] = self._monitoring_plan  # /api/v1/monitoring-plan
        if self._monitor is not None:  # /metrics, /health, /ready answer from it
            app[MONITOR] = self._monitor
        runner = web.AppRunner(app, shutdown_timeout=self._close_timeout_s)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ctx)
            await site.start()
        except OSError as exc:  # the port is taken, the address is not this host's …
            await runner.cleanup()
            raise SinkError(f"web HMI: cannot listen on {self._url(ctx, cfg.port)}: "
                            f"{os_error_text(exc)}") from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("web HMI on %s", self._url(ctx, self._port))

    def _url(self, ctx: ssl.SSLContext | None, port: int) -> str:
        """The HMI's address as an operator types it (IPv6 hosts in brackets)."""
        host = self.config.web.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if ctx else 'http'}://{host}:{port}/"

    async def on_samples(self, block: SampleBlock) -> None:
        """Raw samples are not shown by the HMI."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Keep the minute as the latest values and push it to every WebSocket client."""
        self.live.update(result)
        self._hub.broadcast(dumps(self.live.minute_message(result)))

    async def on_period(self, records: PeriodRecords) -> None:
        """Keep the latest allowance position (hours and days themselves are read back)."""
        self.live.update_period(records)

    def on_alarm(self, event: AlarmEvent) -> None:
        """Record an alarm transition and push it as {"type": "alarm", ...} (never blocks)."""
        shown = self.live.apply_alarm(event)
        self._hub.broadcast(dumps({"type": "alarm", **self.live.alarm_row_json(shown)}))

    def set_active_alarms(self, events: Iterable[AlarmEvent]) -> None:
        """Replace the active alarms and push them as {"type": "alarms", "alarms": [...]}."""
        self.live.set_alarms(events)
        self._hub.broadcast(dumps({"type": "alarms", "alarms": self.live.alarms_json()}))

    async def stop(self) -> None:
        """Stop listening, close every WebSocket ("going away"), then release everything."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()  # stops the site, then on_shutdown closes the WebSockets
        self._port = None
        await self.throttle.flush()  # summed-up failed logins reach the audit log
