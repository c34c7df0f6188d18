"""Reports over HTTP: GET /api/v1/reports/{kind}?from=&to=&format=xlsx|csv|pdf.

`kind`: daily, monthly, annual, platform (the carbon-market monthly workbook),
performance (the carbon performance of each year covered) or a custom definition's name.
The report covers the whole plant-local days, months or years from `from` to `to`; the
answer is the file (Content-Disposition: attachment). The report maker (server/reports/)
reads the historian and builds off the event loop; this module only speaks HTTP.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final
from urllib.parse import quote

from aiohttp import web

from model.errors import InvalidValueError
from web.auth import ApiError
from web.collaborators import ReportMaking
from web.params import span

REPORTS: Final[web.AppKey[ReportMaking | None]] = web.AppKey("reports")
FORMATS: Final = ("xlsx", "csv", "pdf")
KINDS: Final = ("daily", "monthly", "annual", "platform",  # built in; custom ones besides
                 "performance")
MAX_SPAN_DAYS: Final = 400 * 366  # the report maker limits the periods (400) itself


async def _get_report(request: web.Request) -> web.Response:
    maker = request.app.get(REPORTS)
    if maker is None:
        raise ApiError(503, "this server makes no reports (no report maker)")
    kind = request.match_info["kind"]
    if kind not in maker.kinds:
        raise ApiError(404, f"unknown report kind (known: {', '.join(maker.kinds)})")
    fmt = request.query.get("format", "xlsx")
    if fmt not in FORMATS:
        raise ApiError(400, f"query parameter 'format' must be one of {', '.join(FORMATS)}")
    start, end = span(request, timedelta(days=MAX_SPAN_DAYS), "reports")
    try:
        rep = await maker.make(kind, start, end, fmt)
    except InvalidValueError as exc:
        raise ApiError(400, str(exc)) from None
    return web.Response(body=rep.body, headers={
        "Content-Type": rep.content_type,
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(rep.filename)}"})


def add_report_routes(app: web.Application, api: str) -> None:
    """Add GET {api}/reports/{kind}."""
    app.router.add_get(f"{api}/reports/{{kind}}", _get_report)
