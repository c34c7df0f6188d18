"""Plant configuration: loads the YAML, composes the stages' schemas, checks across them.

Each stage owns its schema and its own checks (drivers/config.py, compute/config.py,
alarms/config.py, web/config.py, the sinks' next to them); this module only reads the
files, turns every problem into `file: key.path: problem`, and checks what spans stages
(a calculation input naming a tag no device has; demo accounts on a real plant).
The factor table the plant file names is read here and returned beside the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError

from alarms.config import performance_rule_problems, rule_problems
from compute.assets import CarbonConfig
from compute.config import (
    CalculationConfig,
    FactorFileConfig,
    calculation_problems,
    factor_table,
    stream_factor_problems,
)
from compute.entries import Records
from compute.factors import FactorTable
from compute.performance import PerformanceConfig, performance_problems
from compute.plan import CalculationPlan, build_plan
from drivers.config import DevicesConfig, device_problems
from model.errors import ConfigError
from model.schema import Problems, validation_problems
from server.backupconfig import BACKUP_DEVICE, BackupConfig, RetentionConfig
from server.calibration import calibration_device_ids
from server.cases import CasesConfig, case_problems
from server.conformity import monitoring_device_ids
from server.historian import HistorianConfig
from server.hj212.config import Hj212Config, uplink_device
from server.influx.config import OUTBOX_DEVICE, InfluxConfig
from server.opcua.config import OpcUaConfig
from server.reports.config import ReportsConfig, report_problems
from web.config import WebPlantConfig
from web.monitoring_plan import MonitoringConfig, monitoring_problems


class PlantConfig(WebPlantConfig):
    """The whole configuration of one site: every stage's section, and the sinks'."""

    opcua: OpcUaConfig = OpcUaConfig()
    historian: HistorianConfig = HistorianConfig()
    influx: InfluxConfig | None = None
    hj212: tuple[Hj212Config, ...] = ()  # HJ 212-2017 platforms (server/hj212/), one per MN
    backup: BackupConfig | None = None  # none: no scheduled backups (a warning at start)
    retention: RetentionConfig = RetentionConfig()
    reports: ReportsConfig = ReportsConfig()  # scheduled and custom reports
    carbon: CarbonConfig = CarbonConfig()  # carbon assets (server/assets.py)
    performance: PerformanceConfig = PerformanceConfig()  # baseline, targets, benchmarks
    cases: CasesConfig = CasesConfig()  # the abnormal-data case ledger (server/cases.py)
    monitoring: MonitoringConfig = MonitoringConfig()  # web/monitoring_plan.py

    def system_device_ids(self) -> tuple[str, ...]:
        """The InfluxDB outbox and the backups, when there are, report alarms as devices;
        so does each registered instrument's calibration (server/calibration.py) and each
        HJ 212 platform's uplink (server/hj212/uplink.py)."""
        return (*((OUTBOX_DEVICE,) if self.influx is not None else ()),
                *((BACKUP_DEVICE,) if self.backup is not None else ()),
                *calibration_device_ids(self, self.instruments),
                *(uplink_device(p.id) for p in self.hj212),
                *monitoring_device_ids(self.monitoring))  # server/conformity.py


class Plant(NamedTuple):
    """A loaded plant: its validated configuration and the factor table it names."""

    config: PlantConfig
    factors: FactorTable

    def plan(self, records: Records | None = None) -> CalculationPlan:
        """The calculation's plan: what compute/ takes, built from the configuration (and
        the entries people made, server/records.py)."""
        return build_plan(self.config, self.config.tag_ids(), self.factors, records)


def _cross_stage_problems(cfg: PlantConfig, tag_paths: dict[str, str]) -> Problems:
    """Checks that span stages; the stages' own checks run in their schemas' modules."""
    problems: Problems = [(path, f"unknown tag {tag!r}") for path, tag in cfg.input_tags()
                          if tag not in tag_paths]
    owner = {OUTBOX_DEVICE: "the InfluxDB outbox's", BACKUP_DEVICE: "the backups'"}
    system = set(cfg.system_device_ids())  # once: it walks every tag (the instruments)
    problems += [(f"devices[{i}].id", f"{d.id!r} is {owner.get(d.id, 'a system alarm’s')} id in "
                  "alarm rules: name the device otherwise")
                 for i, d in enumerate(cfg.devices) if d.id in system]
    real = [d.id for d in cfg.devices if not d.simulate]
    if cfg.web.demo_users and (real or not cfg.devices):
        problems.append(("web.demo_users", "demo accounts have known passwords and are only "
                         "for a demo plant whose devices are all simulated"
                         + (f"; real device(s): {', '.join(real)}" if real else "")
                         + ": create users with 'carbonscada user add'"))
    return problems


def _problems(cfg: PlantConfig) -> Problems:
    """Every check of every stage, in the order of the file's sections."""
    problems: Problems = []
    tag_paths = device_problems(cfg.devices, problems)
    problems.extend(calculation_problems(cfg))
    problems.extend(_cross_stage_problems(cfg, tag_paths))
    problems.extend(rule_problems(cfg))
    problems.extend(report_problems(cfg))  # server/reports/config.py
    problems.extend(performance_problems(cfg.performance,
                                         {u.id: u.output.unit for u in cfg.units}))
    problems.extend(performance_rule_problems(cfg.alarms.rules, cfg.performance))
    problems.extend(case_problems(cfg.cases, cfg.alarms.rules))  # server/cases.py
    problems.extend(monitoring_problems(cfg, cfg.monitoring))  # web/monitoring_plan.py
    return problems


def load_factor_table(path: Path) -> FactorTable:
    """Read and validate a factor table YAML; errors name that file and the key path."""
    data = _read_yaml(path)
    origin = str(path)
    if not isinstance(data, dict):
        raise ConfigError(origin, "(top level)", "expected a mapping of keys")
    try:
        parsed = FactorFileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.many(origin, validation_problems(exc, FactorFileConfig)) from None
    return factor_table(parsed, origin)


def parse_plant(data: Any, origin: str, base_dir: Path | None = None) -> Plant:
    """Validate already-loaded YAML data and read its factor table; `origin` names the file.

    `factor_table` is read relative to `base_dir` (default: the directory of `origin`).
    """
    if not isinstance(data, dict):
        raise ConfigError(origin, "(top level)", "expected a mapping of keys")
    try:
        cfg = PlantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.many(origin, validation_problems(exc, PlantConfig)) from None
    problems = _problems(cfg)
    if problems:
        raise ConfigError.many(origin, problems)
    if cfg.factor_table is None:
        return Plant(cfg, FactorTable(()))
    table_path = (base_dir if base_dir is not None else Path(origin).parent) / cfg.factor_table
    if not table_path.is_file():  # the plant file, its key and where it was looked for
        why = "not a file" if table_path.exists() else "No such file or directory"
        raise ConfigError(origin, "factor_table", f"cannot read {table_path.absolute()}: {why}")
    table = load_factor_table(table_path)
    problems = stream_factor_problems(cfg, table, table_path)
    if problems:
        raise ConfigError.many(origin, problems)
    return Plant(cfg, table)


def parse_config(data: Any, origin: str, base_dir: Path | None = None) -> PlantConfig:
    """`parse_plant` for callers that need only the configuration (all checks still run)."""
    return parse_plant(data, origin, base_dir).config


def _read_yaml(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), where, f"not valid YAML: {getattr(exc, 'problem', exc)}"
                          ) from None


def load_plant(path: str | os.PathLike[str]) -> Plant:
    """Read and validate a plant configuration file and the factor table it names."""
    p = Path(path)
    return parse_plant(_read_yaml(p), str(p))


def load_config(path: str | os.PathLike[str]) -> PlantConfig:
    """`load_plant` for callers that need only the configuration (all checks still run)."""
    return load_plant(path).config


__all__ = ["CalculationConfig", "DevicesConfig", "Plant", "PlantConfig", "load_config",
           "load_plant", "parse_config", "parse_plant"]
