"""Report writers: CSV, XLSX (openpyxl) and PDF (fpdf2 with an embedded CJK font).

openpyxl and fpdf2 are well-kept libraries: a hand-written XLSX (zip of XML parts) or PDF
would be ours to keep right against every reader's quirks, and openpyxl also reads the
workbooks back in the tests. Both are pure Python: nothing here needs a browser.

- CSV: UTF-8 with a byte-order mark (so that Excel shows the Chinese); each table a
  section: a title line, one header line "中文 English (unit)", its rows, a blank line.
- XLSX: a sheet "说明 About" (site, period, notes), then a sheet per table with two header
  rows (Chinese, English), numbers as numbers, an empty cell where there is no value.
- PDF: A4 landscape, every table in turn, the same two header rows.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

from model.errors import InvalidValueError
from server.reports.tables import Cell, Report, Table

CONTENT_TYPES = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                 "csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}
# Fonts with Chinese glyphs looked for when reports.pdf_font is not set (Debian, RHEL).
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
             "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/truetype/arphic/uming.ttc")


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "1" if cell else "0"
    if isinstance(cell, float):
        return repr(cell)
    return str(cell)


def _about(report: Report, generated: datetime) -> list[tuple[str, str]]:
    return [("报表 Report", f"{report.zh} {report.en}"),
            ("厂区 Site", f"{report.site_name} ({report.site_id})"),
            ("开始 From (UTC)", report.start.isoformat()),
            ("结束 To (UTC, exclusive)", report.end.isoformat()),
            ("时区 Plant time zone", report.timezone),
            ("生成时间 Generated (UTC)", generated.isoformat(timespec="seconds"))]


def to_csv(report: Report, generated: datetime | None = None) -> bytes:
    """The report as CSV sections (UTF-8 with BOM)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for key, value in _about(report, generated or datetime.now(UTC)):
        w.writerow((f"# {key}", value))
    for note in report.notes:
        w.writerow((f"# {note}",))
    for table in report.tables:
        w.writerow(())
        w.writerow((f"# {table.zh} {table.en}",))
        w.writerow([c.header for c in table.columns])
        w.writerows([_text(c) for c in row] for row in table.rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _sheet_title(table: Table, taken: set[str]) -> str:
    title = f"{table.zh} {table.key}"
    for ch in "[]:*?/\\":
        title = title.replace(ch, " ")
    title = title[:31].strip()
    base, n = title, 2
    while title in taken:
        title = f"{base[:28]} {n}"
        n += 1
    taken.add(title)
    return title


def to_xlsx(report: Report, generated: datetime | None = None) -> bytes:
    """The report as an XLSX workbook (openpyxl)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    about = wb.active
    assert about is not None
    about.title = "说明 About"
    for row in _about(report, generated or datetime.now(UTC)):
        about.append(row)
    for note in report.notes:
        about.append((note,))
    about.column_dimensions["A"].width = 26
    about.column_dimensions["B"].width = 60
    bold = Font(bold=True)
    taken = {about.title}
    for table in report.tables:
        ws = wb.create_sheet(_sheet_title(table, taken))
        ws.append([c.zh for c in table.columns])
        ws.append([c.en for c in table.columns])
        for cell in (*ws[1], *ws[2]):
            cell.font = bold
        for cells in table.rows:
            ws.append(list(cells))
        ws.freeze_panes = "A3"
        for i, col in enumerate(table.columns, start=1):
            width = max(len(col.en), 2 * len(col.zh), 10)
            ws.column_dimensions[ws.cell(1, i).column_letter].width = min(width + 2, 40)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def cjk_font(configured: str | None) -> Path:
    """The font the PDF embeds: reports.pdf_font, else the first CJK font found."""
    if configured is not None:
        path = Path(configured)
        if not path.is_file():
            raise InvalidValueError(f"reports.pdf_font: {configured}: no such font file")
        return path
    for candidate in CJK_FONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise InvalidValueError("PDF needs a font with Chinese glyphs: install fonts-wqy-microhei "
                            "(or set reports.pdf_font to a TrueType/TTC file)")


def _pdf_cell(cell: Cell) -> str:
    if isinstance(cell, float):
        return f"{cell:.6g}" if abs(cell) < 1e6 else f"{cell:.1f}"
    return _text(cell)


def to_pdf(report: Report, font: Path, generated: datetime | None = None) -> bytes:
    """The report as a PDF (fpdf2), the font embedded (subset) for the Chinese text."""
    from fpdf import FPDF

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=10)
    # A .ttc holds several faces; the first is the regular one of the fonts above.
    pdf.add_font("cjk", "", str(font), collection_font_number=0)
    pdf.add_page()
    pdf.set_font("cjk", size=12)
    pdf.cell(text=f"{report.zh} {report.en}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", size=8)
    for key, value in _about(report, generated or datetime.now(UTC)):
        pdf.cell(text=f"{key}: {value}", new_x="LMARGIN", new_y="NEXT")
    for note in report.notes:
        pdf.multi_cell(0, text=note, new_x="LMARGIN", new_y="NEXT")
    for table in report.tables:
        pdf.ln(3)
        pdf.set_font("cjk", size=9)
        pdf.cell(text=f"{table.zh} {table.en}", new_x="LMARGIN", new_y="NEXT")
        size = 6 if len(table.columns) <= 12 else 5
        pdf.set_font("cjk", size=size)
        with pdf.table(first_row_as_headings=False, line_height=size * 0.5) as t:
            for header in ([c.zh for c in table.columns], [c.en for c in table.columns]):
                t.row(header)
            for row in table.rows:
                t.row([_pdf_cell(c) for c in row])
    return bytes(pdf.output())


def render(report: Report, fmt: str, pdf_font: str | None = None) -> bytes:
    """The report in `fmt` (xlsx, csv or pdf)."""
    if fmt == "xlsx":
        return to_xlsx(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "pdf":
        return to_pdf(report, cjk_font(pdf_font))
    raise InvalidValueError(f"format must be one of xlsx, csv, pdf, not {fmt!r}")
