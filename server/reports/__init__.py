"""Emission reports out of the plant: daily, monthly, annual and custom (YAML) reports and
the carbon-market platform's monthly workbook, as XLSX, CSV or PDF, on demand and on a
schedule (e-mailed)."""
