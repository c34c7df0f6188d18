"""Configuration schema of the InfluxDB sink (kept apart from influxdb-client's import cost)."""

from __future__ import annotations

from pydantic import Field

from model.schema import ConfigModel


class InfluxConfig(ConfigModel):
    """An InfluxDB v2 write-API server (InfluxDB 2/3, Cloud, VictoriaMetrics)."""

    url: str
    org: str = "carbonscada"
    bucket: str = "carbonscada"
    token_env: str | None = None  # environment variable holding the token
    batch_lines: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(5.0, gt=0)
    outbox_path: str = "var/influx-outbox.sqlite"
    raw_samples: bool = True
    # Caps of the outbox during a long outage: past either, the oldest batches are dropped
    # (logged as an error, with what was dropped, and kept in the outbox's `dropped` table)
    # so that the disk of the system of record never fills up.
    outbox_max_mb: float = Field(2048.0, gt=0)
    outbox_max_age_h: float = Field(7 * 24.0, gt=0)  # since the batch entered the outbox
    outbox_warn_pct: float = Field(80.0, gt=0, le=100)  # warn once the outbox reaches this
