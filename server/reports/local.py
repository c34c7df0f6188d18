"""Reports from the plant's files, for `carbonscada report` (the server need not run): the
historian read, the ledger's lab entries and quantities applied as the server applies them,
the carbon-asset ledger of the same file for the monthly and annual reports' sheets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from model.errors import CarbonScadaError
from server.assets import AssetKeeper
from server.audit import AuditLog
from server.cases import CaseKeeper
from server.config import Plant
from server.conformity import ConformityReader
from server.historian import Historian
from server.ledger import Ledger
from server.performance import PerformanceKeeper
from server.records import qa_limits, records_of
from server.reports.definition import load_definitions
from server.reports.engine import RenderedReport, ReportMaker


async def make_from_files(plant: Plant, origin: str, kind: str, start: datetime,
                          end: datetime, fmt: str) -> RenderedReport:
    """The report of `kind` made from the historian file of `plant` (CarbonScadaError
    naming the file when there is none)."""
    cfg = plant.config
    path = Path(cfg.historian.path)
    if not path.is_file():
        raise CarbonScadaError(f"{path}: no historian file here")
    definitions = load_definitions(cfg.reports.definitions, origin, cfg)
    entries = Ledger(path).entries()
    factors = plant.plan(records_of(entries, qa_limits(cfg))).factors
    historian = Historian(path)
    await historian.start()
    try:
        assets = AssetKeeper(plant, historian, AuditLog(path))  # reads only: no entry made
        await assets.load()
        maker = ReportMaker(cfg, historian, lambda: factors,
                            lambda: [e.as_json() for e in entries], definitions, assets)
        cases = CaseKeeper(path, historian, AuditLog(path))  # reads only
        await cases.load()
        maker.cases = cases
        # The monitoring plan's daily checks: the daily report's conformity sheet.
        maker.conformity = ConformityReader(cfg, cfg.monitoring, historian, lambda: factors,
                                            path)
        maker.performance = PerformanceKeeper(cfg, path)  # reads only
        return await maker.make(kind, start, end, fmt)
    finally:
        await historian.stop()
