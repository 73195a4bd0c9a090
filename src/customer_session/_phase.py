"""The phases of a transition, in the order they run (the order is this data)."""

from __future__ import annotations

from enum import Enum
from typing import Final


class Phase(Enum):
    """The phases of a transition, in the order they run."""

    GUARD = "guard"
    BEFORE = "before"
    EXIT = "exit"
    ENTER = "enter"
    AFTER = "after"
    AFTER_COMMIT = "after_commit"

    @property
    def keyed_by_state(self) -> bool:
        """Whether hooks of this phase are registered per state (else per trigger)."""
        return self in (Phase.EXIT, Phase.ENTER)

    @property
    def before_commit(self) -> bool:
        """Whether a failure in this phase rolls the transition back."""
        return self is not Phase.AFTER_COMMIT


PRE_COMMIT_PHASES: Final = tuple(p for p in Phase if p.before_commit)
