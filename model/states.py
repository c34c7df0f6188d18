"""Alarm states shared by the rule engine, the web and OPC UA (ISA-18.2).

Both enums are `StrEnum`s: a member is its text, as stored in the historian's journal
and shown in JSON, so records keep plain strings and compare equal to the members.
"""

from __future__ import annotations

import enum


class Condition(enum.StrEnum):
    """How far a rule's value is past its limits: the condition an AlarmEvent reports."""

    NORMAL = "normal"
    WARNING = "warning"  # 预警
    ALARM = "alarm"  # 报警

    @property
    def level(self) -> int:
        """0 normal, 1 warning, 2 alarm."""
        return _LEVEL[self]

    @classmethod
    def of_level(cls, level: int) -> Condition:
        """The condition of a level 0, 1 or 2."""
        return _BY_LEVEL[level]


_BY_LEVEL = (Condition.NORMAL, Condition.WARNING, Condition.ALARM)
_LEVEL = {c: i for i, c in enumerate(_BY_LEVEL)}


class AckState(enum.StrEnum):
    """The ISA-18.2 alarm state of a rule (AlarmEvent.ack_state)."""

    NORMAL = "normal"
    UNACK = "active-unacknowledged"
    ACKED = "active-acknowledged"
    RTN_UNACK = "returned-unacknowledged"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out-of-service"

    @property
    def acknowledged(self) -> bool | None:
        """Whether nothing awaits acknowledgement; None for the masking states."""
        return _ACKED_BY_STATE.get(self)


_ACKED_BY_STATE = {AckState.NORMAL: True, AckState.ACKED: True,
                   AckState.UNACK: False, AckState.RTN_UNACK: False}
