"""The WhereClause of an EventFilter (OPC UA Part 4, 7.7), evaluated on an event's fields.

For HistoryRead of events, which asyncua leaves to the history manager: the journal's
transitions are rebuilt as events and only those the clause accepts are returned. The
operators are those clients send for typical filters (asyncua's read_event_history sends
InList on EventType, node-opcua's constructEventFilter OfType): Equals, IsNull, the four
comparisons, Like, Not, Between, InList, And, Or and OfType (with subtypes). A comparison
with a missing field is false (Part 4, 7.7.1: NULL); Cast, InView, RelatedTo and the
bitwise operators give BadFilterOperatorUnsupported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.common.events import Event
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from model.errors import CarbonScadaError

Op = ua.FilterOperator

#: Whether the first type is the second or one of its subtypes.
IsSubtype = Callable[[ua.NodeId, ua.NodeId], bool]


class FilterUnsupported(CarbonScadaError):
    """A WhereClause this server cannot evaluate; `code` is the StatusCode to answer."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(what)
        self.code = code


def _field(event: Event, path: list[str]) -> Any:
    # asyncua's Event keeps nested fields as attributes named by the path joined with "/".
    return getattr(event, "/".join(path), None)


def _plain(v: Any) -> Any:
    """Comparable form of a field: a LocalizedText compares by its text (Part 4, 7.7.3)."""
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, ua.Variant):
        return _plain(v.Value)
    return v


def _like(value: Any, pattern: Any) -> bool:
    """Part 4 Table 117 wildcards: % any, _ one, [..] a set, [^..] not in it."""
    if not isinstance(value, str) or not isinstance(pattern, str):
        return False
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                neg = body.startswith("^")
                body = body[1:] if neg else body
                out.append("[" + ("^" if neg else "") + re.escape(body).replace(r"\-", "-") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


class WhereClause:
    """A compiled ContentFilter: `matches(event)` tells whether the event passes."""

    def __init__(self, content: ua.ContentFilter | None, is_subtype: IsSubtype) -> None:
        self.elements = list(content.Elements) if content is not None else []
        self.is_subtype = is_subtype
        for el in self.elements:  # refuse what cannot be evaluated before reading
            if el.FilterOperator in (Op.Cast, Op.InView, Op.RelatedTo, Op.BitwiseAnd,
                                     Op.BitwiseOr):
                raise FilterUnsupported(StatusCodes.BadFilterOperatorUnsupported,
                                        f"filter operator {el.FilterOperator.name}")

    def matches(self, event: Event) -> bool:
        """True when the clause is empty or its first element is true for `event`."""
        if not self.elements:
            return True
        return self._element(0, event, depth=0) is True

    def _element(self, index: int, event: Event, depth: int) -> Any:
        if not 0 <= index < len(self.elements) or depth > len(self.elements):
            raise FilterUnsupported(StatusCodes.BadFilterOperandInvalid,
                                    f"element operand {index}")
        el = self.elements[index]
        op, operands = el.FilterOperator, el.FilterOperands

        def arg(i: int) -> Any:
            if i >= len(operands):
                raise FilterUnsupported(StatusCodes.BadFilterOperandCountMismatch,
                                        f"{op.name} needs more operands")
            return _plain(self._operand(operands[i], event, depth))

        if op == Op.And:
            return arg(0) is True and arg(1) is True
        if op == Op.Or:
            return arg(0) is True or arg(1) is True
        if op == Op.Not:
            value = arg(0)
            return None if value is None else not value
        if op == Op.IsNull:
            return arg(0) is None
        if op == Op.OfType:
            wanted = arg(0)
            etype = _field(event, ["EventType"])
            return (isinstance(wanted, ua.NodeId) and isinstance(etype, ua.NodeId)
                    and self.is_subtype(etype, wanted))
        if op == Op.InList:
            first = arg(0)
            return first is not None and any(first == arg(i) for i in range(1, len(operands)))
        if op == Op.Like:
            return _like(arg(0), arg(1))
        if op == Op.Between:
            v, lo, hi = arg(0), arg(1), arg(2)
            return _compare(lambda: bool(lo <= v <= hi), v, lo, hi)
        a, b = arg(0), arg(1)
        compare: dict[Op, Callable[[], bool]] = {
            Op.Equals: lambda: bool(a == b),
            Op.GreaterThan: lambda: bool(a > b),
            Op.LessThan: lambda: bool(a < b),
            Op.GreaterThanOrEqual: lambda: bool(a >= b),
            Op.LessThanOrEqual: lambda: bool(a <= b),
        }
        if op not in compare:
            raise FilterUnsupported(StatusCodes.BadFilterOperatorUnsupported,
                                    f"filter operator {op}")
        return _compare(compare[op], a, b)

    def _operand(self, operand: Any, event: Event, depth: int) -> Any:
        if isinstance(operand, ua.LiteralOperand):
            return operand.Value.Value if operand.Value is not None else None
        if isinstance(operand, ua.ElementOperand):
            return self._element(operand.Index, event, depth + 1)
        if isinstance(operand, ua.SimpleAttributeOperand):
            if operand.AttributeId not in (0, AttributeIds.Value):
                raise FilterUnsupported(StatusCodes.BadFilterOperandInvalid,
                                        f"attribute {operand.AttributeId}")
            if not operand.BrowsePath:  # the ConditionId (Part 9, 5.5.2)
                return _field(event, ["NodeId"])
            return _field(event, [q.Name for q in operand.BrowsePath])
        if isinstance(operand, ua.AttributeOperand):
            names = [e.TargetName.Name for e in operand.BrowsePath.Elements]
            return _field(event, names)
        raise FilterUnsupported(StatusCodes.BadFilterOperandInvalid, f"operand {operand!r}")


def _compare(fn: Callable[[], bool], *values: Any) -> bool | None:
    """A comparison; NULL (a missing field) or values of types that do not compare → false."""
    if any(v is None for v in values):
        return None
    try:
        return fn()
    except TypeError:
        return False
