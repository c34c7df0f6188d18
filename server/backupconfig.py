"""Configuration schemas of the historian's backups and retention (kept apart from their work).

Backups: the standard asks for the data to be backed up at least every 7 days (seed 000
§5.4c), so `backup.interval_h` may not exceed 168. Retention: results are kept at least
5 years (same section); the raw-sample archive a configurable number of days.
"""

from __future__ import annotations

from typing import Final, TypeVar

from pydantic import Field, field_validator

from alarms.config import AlarmPlantConfig, CommLossRuleConfig
from model.schema import ConfigModel

BACKUP_DEVICE: Final = "backup"
"""The device id under which the backup scheduler reports its alarm (a DeviceEvent)."""
BACKUP_RULE_ID: Final = "historian_backup"
"""The comm_loss rule added for the backups when the plant has none for BACKUP_DEVICE."""
MAX_INTERVAL_H: Final = 168.0  # 7 days: the standard's longest time between two backups
MIN_RESULTS_YEARS: Final = 5


class BackupConfig(ConfigModel):
    """Online backups of the historian file to a directory, on a schedule."""

    dir: str  # where the copies go, e.g. var/backups (better: another disk)
    interval_h: float = Field(24.0, gt=0)
    keep: int = Field(7, ge=1, le=10_000)  # newest generations kept in `dir`
    # Overdue (the alarm rises) once the newest verified backup is older than
    # interval_h + overdue_grace_h (a backup of a big file takes a while).
    overdue_grace_h: float = Field(1.0, ge=0)
    retry_s: float = Field(900.0, gt=0)  # after a failed backup, try again this much later
    check_interval_s: float = Field(60.0, gt=0)  # how often the scheduler looks
    # The copy is made in steps of this many pages with a sleep between them, in a
    # worker thread, inside one read transaction of its own: in WAL mode the server's
    # writes go on meanwhile (a reader never blocks a writer).
    pages_per_step: int = Field(1024, ge=1)
    step_sleep_s: float = Field(0.005, ge=0, le=1)

    @field_validator("interval_h")
    @classmethod
    def _at_least_weekly(cls, v: float) -> float:
        if v > MAX_INTERVAL_H:
            raise ValueError(f"{v:g} h is more than {MAX_INTERVAL_H:g} h: the standard asks "
                             "for a backup at least every 7 days")
        return v


class RetentionConfig(ConfigModel):
    """How long the historian keeps what; pruning runs after each scheduled backup."""

    # Minute, hour and day results, the allowance ledger, the alarm journal and the
    # delivery log. Factor versions, saved alarm rules and the audit log are never pruned
    # (the audit chain is proven from its first entry; its triggers refuse DELETE).
    results_years: float = MIN_RESULTS_YEARS
    raw_days: float = Field(400.0, gt=0)  # the raw-sample archive (raw_window)
    chunk_rows: int = Field(500, ge=1, le=100_000)  # rows per DELETE transaction
    chunk_sleep_s: float = Field(0.005, ge=0, le=1)

    @field_validator("results_years")
    @classmethod
    def _five_years(cls, v: float) -> float:
        if v < MIN_RESULTS_YEARS:
            raise ValueError(f"{v:g} years is less than {MIN_RESULTS_YEARS}: the standard asks "
                             "for the data to be kept at least 5 years")
        return v


_P = TypeVar("_P", bound=AlarmPlantConfig)


def with_backup_alarm(cfg: _P, backup: BackupConfig | None) -> _P:
    """`cfg` with the backups' comm_loss rule added, when backups are configured and the
    plant's rules have none for BACKUP_DEVICE (as server.influx.config.with_outbox_alarm)."""
    rules = cfg.alarms.rules
    if backup is None or any(r.id == BACKUP_RULE_ID or (
            isinstance(r, CommLossRuleConfig) and r.device == BACKUP_DEVICE) for r in rules):
        return cfg
    rule = CommLossRuleConfig(id=BACKUP_RULE_ID, kind="comm_loss", device=BACKUP_DEVICE,
                              name="Historian backup failed or overdue",
                              suppress_when_stopped=False)
    return cfg.model_copy(update={"alarms": cfg.alarms.model_copy(
        update={"rules": [*rules, rule]})})
