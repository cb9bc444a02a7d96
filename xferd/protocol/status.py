"""Room status values (as the reference) and the rule for merging them."""
from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4

    @property
    def terminal(self) -> bool:
        return self in (Status.Failed, Status.Success)


def merge(current: Status | None, new: Status) -> Status:
    """A status only moves forward; Failed overrides everything but a finished Success."""
    if current is None:
        return new
    if current.terminal:
        return current
    if new == Status.Failed:
        return new
    return max(current, new)
