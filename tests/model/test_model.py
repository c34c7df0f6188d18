"""What model/ promises the stages: one error hierarchy, states equal to their stored text,
and key paths that name the file's keys, not pydantic's union branches."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import pytest
from pydantic import ValidationError

from drivers.base import _DRIVERS
from model.errors import (
    AlarmActionError,
    CarbonScadaError,
    InvalidValueError,
    NotFoundError,
    UnknownRuleError,
)
from model.schema import branch_names, validation_problems
from model.states import AckState, Condition
from server.config import PlantConfig
from tests.fixtures.plant import plant_dict

PACKAGES = ("model", "drivers", "compute", "alarms", "web", "server")


def _project_modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, f"{pkg}."):
            names.append(info.name)
    return names


def test_every_error_class_of_the_project_derives_from_the_base() -> None:
    found = []
    for name in _project_modules():
        mod = importlib.import_module(name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                found.append(cls)
                assert issubclass(cls, CarbonScadaError), f"{name}.{cls.__name__}"
    assert len(found) >= 10  # the hierarchy, and the stages' own (LinkDown, ApiError …)


def test_errors_keep_the_builtin_kinds_old_callers_catch() -> None:
    assert issubclass(InvalidValueError, ValueError)
    assert issubclass(UnknownRuleError, KeyError) and issubclass(UnknownRuleError, NotFoundError)
    # An operator reads the message, not KeyError's repr with its extra quotes.
    assert str(UnknownRuleError("no alarm rule 'x'")) == "no alarm rule 'x'"
    assert not issubclass(AlarmActionError, ValueError)  # no longer caught as a bad value


def test_states_are_their_stored_text() -> None:
    assert AckState.UNACK == "active-unacknowledged"
    assert json.dumps({"s": AckState.RTN_UNACK}) == '{"s": "returned-unacknowledged"}'
    assert f"{Condition.WARNING}" == "warning"
    assert [Condition.of_level(i) for i in range(3)] == ["normal", "warning", "alarm"]
    assert [c.level for c in Condition] == [0, 1, 2]
    assert AckState.ACKED.acknowledged is True and AckState.UNACK.acknowledged is False
    assert AckState.SHELVED.acknowledged is None


def test_branch_names_come_from_the_unions_tags() -> None:
    names = branch_names(PlantConfig)
    assert set(_DRIVERS) <= names  # every registered protocol is a device branch
    assert {"threshold", "stale", "email", "mqtt", "mrr_mean_2sigma", "SerialLinkConfig",
            "TcpLinkConfig"} <= names
    assert "devices" not in names and "site" not in names


def test_key_paths_skip_union_branches() -> None:
    d = plant_dict()
    d["devices"][0]["tags"][0]["register"] = -1
    with pytest.raises(ValidationError) as err:
        PlantConfig.model_validate(d)
    assert validation_problems(err.value, PlantConfig) == [
        ("devices[0].tags[0].register", "Input should be greater than or equal to 0")]
    assert validation_problems(err.value, PlantConfig, "plant") == [
        ("plant.devices[0].tags[0].register", "Input should be greater than or equal to 0")]

