"""The OpenAPI 3.1 description (/api/v1/openapi.json) and its page (/api/v1/docs): every
route of the app is described, nothing described is missing from the app, and the page is
self-contained (issue 14)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fixtures.plant import plant_config
from tests.web.test_api import get_json
from web.app import WebSink
from web.handlers import build_app
from web.hub import Hub
from web.live import LiveState
from web.openapi import description


def _app_routes() -> set[tuple[str, str]]:
    app = build_app(LiveState(plant_config(web_port=0)), Hub(1.0, 4, 1.0))
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one to every GET
            continue
        path = route.resource.canonical if route.resource is not None else ""
        if path == "/static":
            path = "/static/{filename}"
        routes.add((route.method.lower(), path))
    return routes


def test_every_route_is_described_and_nothing_more() -> None:
    spec = description()
    described = {(m, p) for p, item in spec["paths"].items() for m in item
                 if m in ("get", "post", "put", "delete")}
    routes = _app_routes()
    assert routes - described == set()
    assert described - routes == set()
    # The new history routes and the monitoring ones are among them.
    assert {("get", "/api/v1/tags/{id}/minutes"), ("get", "/api/v1/units/{id}/months"),
            ("get", "/metrics"), ("get", "/ready"), ("get", "/api/v1/docs")} <= routes


def test_description_is_openapi_3_1_with_resolvable_refs() -> None:
    spec = description()
    assert spec["openapi"] == "3.1.0"
    text = repr(spec)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in spec["components"]["schemas"], name
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["summary"] and op["responses"], (method, path)
            names = {p["name"] for p in [*op.get("parameters", []), *item.get("parameters", [])]
                     if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), (method, path)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in resp:
                    body = resp["content"].get("application/json", {}).get("schema")
                    if body is not None:
                        assert body == {"$ref": "#/components/schemas/Error"}, (path, status)


@pytest.fixture
async def sink(port: int) -> AsyncIterator[WebSink]:
    s = WebSink(plant_config(web_port=port))
    await s.start()
    yield s
    await s.stop()


async def test_served_description_and_page(sink: WebSink) -> None:
    base = f"http://127.0.0.1:{sink.port}/api/v1"
    async with aiohttp.ClientSession() as http:
        spec = await get_json(http, f"{base}/openapi.json")
        assert spec["info"]["title"] == "carbonscada web API"
        assert spec["paths"]["/api/v1/sources/{id}/minutes"]["get"]["parameters"][3][
            "schema"] == {"type": "integer", "minimum": 1, "maximum": 5000}
        async with http.get(f"{base}/docs") as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
        async with http.get(f"{base}/docs.css") as r:
            assert r.status == 200 and r.content_type == "text/css"
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in page, path
    assert 'id="schema-MinuteSeries"' in page and 'href="#schema-Error"' in page
    # Self-contained: no script and nothing loaded from another host.
    assert "<script" not in page
    assert re.findall(r'(?:src|href)="(?!#|docs\.css|openapi\.json)[^"]*"', page) == []
