"""What every stage's configuration schema shares: the frozen base model, identifiers,
and turning pydantic's errors into (key path, problem) pairs an operator can act on.

Each stage owns its schema (drivers/config.py, compute/config.py, alarms/config.py,
web/config.py, the sinks'); server/config.py loads the YAML and composes them.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")]
Problems = list[tuple[str, str]]
"""(key path, problem) pairs, e.g. ("devices[0].port", "unknown key")."""


class ConfigModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _collect(tp: Any, out: set[str], seen: set[type], disc: str | None = None) -> None:
    """Add the names pydantic puts in an error's location for each union branch below `tp`."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        for m in meta:
            if isinstance(m, FieldInfo) and isinstance(m.discriminator, str):
                disc = m.discriminator
        _collect(base, out, seen, disc)
    elif origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) > 1:  # `X | None` is nullable, not a union: no branch in the path
            for m in members:
                if isinstance(m, type) and issubclass(m, BaseModel):
                    if disc is not None:  # a tagged union: the tag names the branch
                        out.update(str(v) for v in typing.get_args(
                            m.model_fields[disc].annotation))
                    else:  # a plain union of models: the class name does
                        out.add(m.__name__)
        for m in members:
            _collect(m, out, seen)
    elif origin is not None:  # list[...], dict[...], tuple[...]
        for a in typing.get_args(tp):
            _collect(a, out, seen)
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
        seen.add(tp)
        for f in tp.model_fields.values():
            _collect(f.annotation, out, seen,
                     f.discriminator if isinstance(f.discriminator, str) else None)


@functools.cache
def branch_names(root: Any) -> frozenset[str]:
    """Every union branch name (a tag such as 'modbus_tcp', or a class name) under `root`."""
    out: set[str] = set()
    _collect(root, out, set())
    return frozenset(out)


def _loc(loc: tuple[int | str, ...], branches: frozenset[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in branches:  # union branch names add nothing
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _path(err: Any, branches: frozenset[str]) -> str:
    loc = _loc(tuple(err["loc"]), branches)
    if err["type"] == "union_tag_invalid":
        return f"{loc}.{str(err['ctx']['discriminator']).strip(chr(39))}"
    return loc


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        return (f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} "
                f"{ctx.get('tag')!r} (known: {ctx.get('expected_tags')})")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def validation_problems(exc: ValidationError, root: Any, prefix: str = "") -> Problems:
    """(key path, problem) of each error of validating data as `root`; paths under `prefix`."""
    branches = branch_names(root)
    out: Problems = []
    for e in exc.errors():
        path = _path(e, branches)
        if prefix:
            path = prefix if path == "(top level)" else (
                f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}")
        out.append((path, _message(e)))
    return out
