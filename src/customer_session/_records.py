"""Immutable records of transitions: what the history keeps and what hooks receive."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - attrs resolves field types at run time
from typing import TYPE_CHECKING

from attrs import define, setters

from customer_session._cart import ReturnedItem  # noqa: TC001 - cattrs resolves annotations at run time
from customer_session._spec import State, Trigger  # noqa: TC001 - same as above

if TYPE_CHECKING:
    from customer_session.model import CustomerSession


# Immutable through on_setattr rather than frozen=True: records are made on the hot
# path, and attrs' frozen __init__ costs about twice as much.
@define(on_setattr=setters.frozen, unsafe_hash=True)
class TransitionRecord:
    """One committed transition, as kept in ``session.history``.

    Attributes:
        trigger: What was fired.
        source: The state before.
        destination: The state after (equal to ``source`` for an internal transition).
        timestamp: When it committed (aware, UTC).
        returned_items: The items of a ``return_items`` trigger; empty otherwise.
    """

    trigger: Trigger
    source: State
    destination: State
    timestamp: datetime
    returned_items: tuple[ReturnedItem, ...] = ()


@define(on_setattr=setters.frozen, unsafe_hash=True)
class TransitionEvent:
    """What guards and hooks receive: the session and the transition under way.

    Before the commit point ``session.state`` is still ``source``; the session moves
    to ``destination`` only when every pre-commit hook has returned.

    Attributes:
        session: The session the trigger was fired on.
        trigger: What was fired.
        source: The state the transition leaves.
        destination: The state it enters.
        timestamp: The time the transition will be recorded with.
        returned_items: The items of a ``return_items`` trigger; empty otherwise.
    """

    session: CustomerSession
    trigger: Trigger
    source: State
    destination: State
    timestamp: datetime
    returned_items: tuple[ReturnedItem, ...] = ()

    def record(self) -> TransitionRecord:
        """The history record this transition commits as."""
        return TransitionRecord(
            self.trigger, self.source, self.destination, self.timestamp, self.returned_items
        )
