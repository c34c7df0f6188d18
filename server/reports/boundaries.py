"""The boundaries sheet of the daily, monthly and annual reports: pure, no I/O.

Per report period (a plant-local day, month or year, from its stored days) the site, each
process (accounting unit) and each of its facilities, rolled up by compute/boundaries.py:
CO2 and CO2e, output, the share of the parent and of the site, the children valid and
invalid in every day, and whether the figures are complete (a facility without a value on
a stored day leaves every node above it incomplete: its total is what is known, the shares
are empty).
"""

from __future__ import annotations

from collections.abc import Sequence

from compute.boundaries import FACILITY, PROCESS, SITE, Node, rollup, tree_of
from compute.config import CalculationConfig
from model.records import PeriodRecords
from server.reports.tables import PERIOD_COLUMNS, Cell, Column, Periods, Table
from server.reports.tables import cell_num as _num

_LEVEL_TEXT = {SITE: "厂区 site", PROCESS: "工序 process", FACILITY: "设施 facility"}


BOUNDARY_COLUMNS = (
    *PERIOD_COLUMNS,
    Column("level", "层级", "Level"),
    Column("process", "工序(核算单元)", "Process (accounting unit)"),
    Column("facility", "设施", "Facility"),
    Column("name", "名称", "Name"),
    Column("kind", "类别", "Kind"),
    Column("co2_t", "二氧化碳排放量(t)", "CO2 (t)"),
    Column("co2e_t", "二氧化碳当量(t)", "CO2e (t)"),
    Column("output_mwh", "产出电量(MWh)", "Output (MWh)"),
    Column("output_t", "产品产量(t)", "Output (t)"),
    Column("share_of_parent_pct", "占上级比例(%)", "Share of parent (%)"),
    Column("share_of_site_pct", "占全厂比例(%)", "Share of site (%)"),
    Column("co2e_share_of_site_pct", "当量占全厂比例(%)", "CO2e share of site (%)"),
    Column("valid_children", "有效下级数", "Children valid"),
    Column("invalid_children", "无效下级数", "Children invalid"),
    Column("complete", "数据完整", "Complete"),
    Column("missing", "缺数据设施", "Facilities without data"))


def _row(head: tuple[Cell, Cell], node: Node, process: str | None) -> tuple[Cell, ...]:
    name = node.name_zh or node.name
    if node.name_zh and node.name and node.name_zh != node.name:
        name = f"{node.name_zh} {node.name}"
    return (*head, _LEVEL_TEXT[node.level], process,
            node.id if node.level == FACILITY else None, name, node.kind or None,
            _num(node.co2_t), _num(node.co2e_t), _num(node.output_mwh), _num(node.output_t),
            _num(node.share_of_parent_pct), _num(node.share_of_site_pct),
            _num(node.co2e_share_of_site_pct), node.n_valid, node.n_invalid, node.complete,
            ",".join(node.missing) or None)


def boundary_table(cfg: CalculationConfig, per: Periods,
                   days: Sequence[PeriodRecords]) -> Table:
    """Per period: the site row, then each process row followed by its facilities' rows."""
    tree = tree_of(cfg)
    rows: list[tuple[Cell, ...]] = []
    for i, group in enumerate(per.group(days)):
        head = per.head(i)
        site = rollup(tree, group)
        rows.append(_row(head, site, None))
        for proc in site.children:
            rows.append(_row(head, proc, proc.id))
            rows.extend(_row(head, fac, proc.id) for fac in proc.children)
    return Table("boundaries", "核算边界", "Boundaries: site, processes, facilities",
                 BOUNDARY_COLUMNS, rows)
