"""HJ 212-2017 data flags: the quality every sample and result carries."""

from __future__ import annotations

import enum


class DataFlag(enum.IntEnum):
    """HJ 212-2017 data flag of a sample or result; the integer is its precedence.

    When a period has too few valid samples, the flag of highest precedence among
    its samples becomes the period's flag (a stopped unit explains more than a
    communication fault does).
    """

    N = 0  # normal
    S = 1  # manually set
    T = 2  # over range
    B = 3  # communication failure
    D = 4  # instrument fault
    C = 5  # calibration
    M = 6  # maintenance
    F = 7  # unit stopped

    @property
    def valid(self) -> bool:
        """Whether a value with this flag counts towards validity."""
        return self is DataFlag.N
