"""Self-monitoring routes: Prometheus /metrics, liveness /health, readiness /ready.

What they report comes from the server through the `Monitor` protocol (the runtime's
server/metrics.py fits it): the web layer renders nothing itself and imports nothing
from the server. Like the latest values, they need no login: scrapers and load
balancers have no session, and nothing here is secret or changes anything.
"""

from __future__ import annotations

from typing import Final, Protocol

from aiohttp import web


class Monitor(Protocol):
    """What the monitoring routes ask of the server."""

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        ...

    def health(self) -> str | None:
        """None while the server runs; otherwise what stopped."""
        ...

    def readiness(self) -> str | None:
        """None once the server serves everything; otherwise what it still waits for."""
        ...


MONITOR: Final = web.AppKey("monitor", Monitor)


def _plain(status: int, text: str) -> web.Response:
    # No caching: a load balancer must see the state now, not a proxy's copy.
    return web.Response(status=status, text=text + "\n",
                        headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    monitor = request.app.get(MONITOR)
    if monitor is None:
        return _plain(404, "no metrics: this web server runs without a monitor")
    body, content_type = monitor.metrics_text()
    return web.Response(body=body, headers={"Content-Type": content_type,
                                            "Cache-Control": "no-store"})


async def _health(request: web.Request) -> web.Response:
    # This handler running at all shows that the event loop runs.
    monitor = request.app.get(MONITOR)
    problem = None if monitor is None else monitor.health()
    return _plain(200, "ok") if problem is None else _plain(503, problem)


async def _ready(request: web.Request) -> web.Response:
    monitor = request.app.get(MONITOR)
    if monitor is None:
        return _plain(200, "ready")
    problem = monitor.readiness()
    return _plain(200, "ready") if problem is None else _plain(503, problem)


def add_monitoring_routes(app: web.Application) -> None:
    """Add GET /metrics, /health and /ready; they answer from `app[MONITOR]` if it is set."""
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
