"""Configuration schema of the InfluxDB sink (kept apart from influxdb-client's import cost)."""

from __future__ import annotations

from typing import Final, TypeVar

from pydantic import Field

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from model.schema import ConfigModel

OUTBOX_DEVICE: Final = "influx"
"""The device id under which the outbox reports its alarm (a DeviceEvent, as drivers do)."""
OUTBOX_RULE_ID: Final = "influx_outbox"
"""The comm_loss rule added for the outbox when the plant has none for OUTBOX_DEVICE."""


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
    # The outbox's alarm (a system alarm in the alarm list, web and OPC UA, under the
    # comm_loss rule OUTBOX_RULE_ID on device OUTBOX_DEVICE) rises once the outbox reaches
    # this percentage of either cap (its size of outbox_max_mb, or its oldest batch's age of
    # outbox_max_age_h): with the 80 % default, 1.4 days of a 7-day cap are left to act. It
    # clears once the outbox is back below half of it (a hysteresis: an outage's last
    # batches draining do not make it flap). A drop while it is active says what it dropped.
    outbox_warn_pct: float = Field(80.0, gt=0, le=100)


_P = TypeVar("_P", bound=AlarmPlantConfig)


def with_outbox_alarm(cfg: _P, influx: InfluxConfig | None) -> _P:
    """`cfg` with the outbox's comm_loss rule added, when there is an outbox and the plant's
    rules have none for OUTBOX_DEVICE (a plant's own rule for it sets delays or notify)."""
    rules = cfg.alarms.rules
    if influx is None or any(r.id == OUTBOX_RULE_ID or (
            isinstance(r, CommLossRuleConfig) and r.device == OUTBOX_DEVICE) for r in rules):
        return cfg
    rule = CommLossRuleConfig(id=OUTBOX_RULE_ID, kind="comm_loss", device=OUTBOX_DEVICE,
                              name="InfluxDB outbox near its cap", suppress_when_stopped=False)
    return cfg.model_copy(update={"alarms": cfg.alarms.model_copy(
        update={"rules": [*rules, rule]})})
