"""Immutable records of transitions: what the history keeps and what hooks receive."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - attrs resolves field types at run time
from typing import TYPE_CHECKING

from attrs import define, field, setters

from customer_session._cart import ReturnedItem  # noqa: TC001 - cattrs resolves annotations at run time
from customer_session._readonly import protect, public_repr
from customer_session._spec import State, Trigger  # noqa: TC001 - same as above

if TYPE_CHECKING:
    from customer_session.model import CustomerSession


# Private slots behind read-only properties (see ``_readonly``): records are made on
# the hot path, and attrs' frozen or on_setattr ``__init__`` costs about 4x as much.
# Each slot names its argument (``alias=``) for type checkers (see ``CartItem``).
@define(unsafe_hash=True, repr=False, on_setattr=setters.NO_OP)
class TransitionRecord:
    """One committed transition, as kept in ``session.history``.

    Args:
        trigger: What was fired.
        source: The state before.
        destination: The state after (equal to ``source`` for an internal transition).
        timestamp: When it committed (aware, UTC).
        returned_items: The items of a ``return_items`` trigger; empty otherwise.
    """

    _trigger: Trigger = field(alias="trigger")
    _source: State = field(alias="source")
    _destination: State = field(alias="destination")
    _timestamp: datetime = field(alias="timestamp")
    _returned_items: tuple[ReturnedItem, ...] = field(default=(), alias="returned_items")

    @property
    def trigger(self) -> Trigger:
        """What was fired."""
        return self._trigger

    @property
    def source(self) -> State:
        """The state before."""
        return self._source

    @property
    def destination(self) -> State:
        """The state after (equal to ``source`` for an internal transition)."""
        return self._destination

    @property
    def timestamp(self) -> datetime:
        """When it committed (aware, UTC)."""
        return self._timestamp

    @property
    def returned_items(self) -> tuple[ReturnedItem, ...]:
        """The items of a ``return_items`` trigger; empty otherwise."""
        return self._returned_items

    def __repr__(self) -> str:
        """The class and every field, by constructor name."""
        return public_repr(self)


protect(TransitionRecord, lambda _name: "history records are immutable")


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
