"""Async sessions: await triggers whose guards and hooks may be coroutines.

:class:`AsyncSession` is a thin face over one
:class:`~customer_session.CustomerSession`: the same specification, the same
session object, the same workflow and the same transactional rules, with the
triggers awaited. Guards and hooks registered on the workflow may be ``async def``
or plain functions, in every phase.

- A refusal, or an exception before the commit point, leaves the session exactly
  as it was. So does a cancellation (a cancelled task, an ``asyncio.timeout()``
  around the trigger); the ``CancelledError`` propagates.
- After-commit failures never undo the commit (``AfterCommitHookFailed``).
- Triggers on one session are serialized: a trigger, ``can()`` or ``why_not()``
  waits until the one in progress on that session has finished, after-commit
  hooks included. Every face over a session shares its lock, so tasks may share
  a face or make their own; the lock is per event loop (a task of a loop in
  another thread is refused as a sync trigger is, below). Triggers on different
  sessions run concurrently.
  The session's sync methods do not take the lock: a sync trigger during an
  async one, or while ``can()``/``why_not()`` await its guards, raises
  ``TransitionInProgress``; an edit from another task is refused while they
  ask, and while an async trigger is under way (``SessionNotEditable``, with
  ``elsewhere`` set): only that trigger's own guards and hooks, and the tasks
  and ``asyncio.to_thread()`` helpers that carry their context, may edit it.
- A ``session.atomic()`` block may await: it holds the session meanwhile, so a
  trigger (through a face or not) or edit from any task but the block's own and
  those it creates is refused, not made to wait, and never undone by the block.

An after-commit hook may await a trigger on its own session (it runs at once, in
the hook's task, as in the sync face). A hook must not *wait for another task*
that fires on its own session (``gather()``, ``shield()`` and, on Python 3.11,
``wait_for()`` make one): that task waits for the hook's trigger to finish.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from customer_session import _async_transaction
from customer_session._show import shown
from customer_session._spec import Trigger
from customer_session.exceptions import UnknownTrigger, ValidationError
from customer_session.model import CustomerSession, ReopenableCustomerSession

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from customer_session._cart import ReturnedItem
    from customer_session._records import TransitionRecord
    from customer_session._spec import State
    from customer_session.hooks import Refusal

__all__ = ["AsyncReopenableSession", "AsyncSession"]

_S = TypeVar("_S", bound=CustomerSession)
_R = TypeVar("_R", bound=ReopenableCustomerSession)
_T = TypeVar("_T")


class _Turn:
    """Whose turn it is on one session, within one event loop."""

    __slots__ = ("lock", "owner")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.owner: asyncio.Task[Any] | None = None


# The turns of each live session, one per event loop, shared by every face over it.
# Sessions compare by value and are not hashable, so the key is id(session), guarded
# by a weak reference whose callback drops the entry when the session is collected.
# An asyncio.Lock belongs to one event loop, so each loop that uses the session
# (asyncio.run() again, a loop in another thread) gets its own turn, and keeps it
# while other loops use the session: replacing it would let the loop's next task
# in while one of its tasks still holds the old turn.
_Loops = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn]
_TURNS: dict[int, tuple[weakref.ref[CustomerSession], _Loops]] = {}
# Threads running their own loops may reach a session's first turn at once.
_TURNS_LOCK = threading.Lock()


def _forget(key: int, ref: weakref.ref[CustomerSession]) -> None:
    entry = _TURNS.get(key)
    if entry is not None and entry[0] is ref:  # not a newer session at the same address
        del _TURNS[key]


def _turn(session: CustomerSession) -> _Turn:
    loop = asyncio.get_running_loop()
    key = id(session)
    entry = _TURNS.get(key)
    if entry is None or entry[0]() is not session:
        with _TURNS_LOCK:
            entry = _TURNS.get(key)
            if entry is None or entry[0]() is not session:
                entry = (weakref.ref(session, partial(_forget, key)), _Loops())
                _TURNS[key] = entry
    loops = entry[1]
    turn = loops.get(loop)
    if turn is None:
        # Only this loop's thread adds this loop's turn.
        turn = loops[loop] = _Turn()
    return turn


async def _in_turn(session: CustomerSession, action: Callable[[], Awaitable[_T]]) -> _T:
    """Await ``action()`` once no other task is in a trigger on ``session``."""
    turn = _turn(session)
    task = asyncio.current_task()
    if task is not None and turn.owner is task:
        # This task's own trigger is in progress: a hook is calling back in. Waiting
        # would deadlock; the transaction refuses it before the commit point
        # (TransitionInProgress) and allows it after-commit, as in the sync face.
        return await action()
    async with turn.lock:
        turn.owner = task
        try:
            return await action()
        finally:
            turn.owner = None


class AsyncSession(Generic[_S]):
    """An async face over one session: the same session, with its triggers awaited.

    Args:
        session: The session to drive; any number of faces may share it.

    Raises:
        ValidationError: ``session`` is not a customer session.
    """

    __slots__ = ("_session",)

    def __init__(self, session: _S) -> None:
        """Wrap ``session``."""
        if not isinstance(session, CustomerSession):
            raise ValidationError.single(
                type(self).__name__,
                "session",
                f"must be a CustomerSession, got {shown(session):.80}",
            )
        self._session = session

    @property
    def session(self) -> _S:
        """The session this face drives (read it freely; fire through the face)."""
        return self._session

    @property
    def state(self) -> State:
        """The session's state."""
        return self._session.state

    @property
    def allowed_triggers(self) -> frozenset[Trigger]:
        """The triggers the table allows from the current state (guards not run)."""
        return self._session.allowed_triggers

    def __repr__(self) -> str:
        """Show the class, the integration id and the state."""
        session = self._session
        return f"<{type(self).__name__} {session.integration_id!r} {session.state}>"

    async def can(self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()) -> bool:
        """Whether ``trigger`` would be accepted now (table, arguments and guards).

        Nothing changes; guards run (and are awaited) with the event the trigger
        would have.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
            HookFailed: A guard raised.
        """
        return not await self.why_not(trigger, items=items)

    async def why_not(
        self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()
    ) -> tuple[Refusal, ...]:
        """Why ``trigger`` would be refused now; empty when it would be accepted.

        As :meth:`CustomerSession.why_not`, with async guards awaited. It waits
        for a trigger in progress on the session, then answers for the state that
        trigger left.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
            HookFailed: A guard raised.
        """
        session = self._session
        known = session._trigger(trigger)  # noqa: SLF001 - one parser of trigger names
        return await _in_turn(session, partial(_async_transaction.why_not, session, known, items))

    async def fire(
        self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()
    ) -> TransitionRecord:
        """Fire ``trigger`` by name (as a log replay does); same as awaiting its method.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
        """
        known = self._session._trigger(trigger)  # noqa: SLF001 - one parser of trigger names
        return await self._fire(known, items)

    async def close(self) -> TransitionRecord:
        """``open -> closed``: the order is placed; the cart becomes read-only.

        Returns:
            The committed history record.

        Raises:
            IllegalTransition: The session is not open.
            GuardRejected: A guard refused; nothing changed.
            HookFailed: A hook before the commit point raised; nothing changed.
            AfterCommitHookFailed: Committed, but an after-commit hook raised.
            asyncio.CancelledError: Cancelled; nothing changed unless the
                cancellation came during the after-commit hooks.
        """
        return await self._fire(Trigger.CLOSE, ())

    async def cancel(self) -> TransitionRecord:
        """``open|closed|partially_returned -> cancelled``: the terminal state.

        Raises the same errors as :meth:`close`.
        """
        return await self._fire(Trigger.CANCEL, ())

    async def return_items(self, items: Iterable[ReturnedItem]) -> TransitionRecord:
        """Return cart items: ``closed -> partially_returned``, then further returns.

        As :meth:`CustomerSession.return_items`.

        Raises:
            ValidationError: The items are invalid for this cart; nothing changed.
            IllegalTransition: The session is neither closed nor partially returned.
        """
        return await self._fire(Trigger.RETURN_ITEMS, items)

    async def _fire(self, trigger: Trigger, items: Iterable[ReturnedItem]) -> TransitionRecord:
        session = self._session
        return await _in_turn(session, partial(_async_transaction.fire, session, trigger, items))


class AsyncReopenableSession(AsyncSession[_R]):
    """An async face over a session whose table has Talon.One's reopen endpoint.

    Args:
        session: A :class:`~customer_session.ReopenableCustomerSession`.

    Raises:
        ValidationError: ``session`` is not a customer session.
        UnknownTrigger: The session's table has no ``reopen``.
    """

    __slots__ = ()

    def __init__(self, session: _R) -> None:
        """Wrap ``session``, whose table must allow ``reopen``."""
        super().__init__(session)
        triggers = session.specification.triggers
        if Trigger.REOPEN not in triggers:
            raise UnknownTrigger(Trigger.REOPEN, triggers)

    async def reopen(self) -> TransitionRecord:
        """``closed -> open``: Talon.One rolls back the effects of the close.

        Raises the same errors as :meth:`AsyncSession.close`.
        """
        return await self._fire(Trigger.REOPEN, ())
