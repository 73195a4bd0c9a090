"""After-commit hooks that wait for the database commit.

A trigger fired inside a store transaction commits in memory first; the database
commit comes when the block ends, and may not happen at all (a conflict, an error
later in the block). The session's after-commit hooks must therefore not run at
the in-memory commit. The store binds the sessions it hands out to a *shadow* of
its workflow: the same guards and pre-commit hooks (kept current as they are
registered and removed, also while a block is open), and, in place of each
after-commit hook, a stand-in that queues the event while the store transaction
that loaded the event's session is open, and calls the hook at once otherwise
(the in-memory commit is then the only one). The queue runs after the database
commit, and is dropped when the transaction does not commit.

The queue is found through the running code's context (a thread or task of the
block carries it) and by the session: a trigger fired on one transaction's
session inside another transaction nested in it waits for its own.
"""

from __future__ import annotations

import inspect
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from customer_session._notes import add_note_once
from customer_session._phase import Phase
from customer_session._transaction import interrupted_after_commit, refuse_awaitable
from customer_session.exceptions import AfterCommitHookFailed, WorkflowError
from customer_session.hooks import Registration, Workflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    from customer_session._records import TransitionEvent, TransitionRecord
    from customer_session._spec import State, Trigger
    from customer_session.hooks import _Plan
    from customer_session.model import CustomerSession


class Queue(list[tuple["Registration", "TransitionEvent", "TransitionRecord"]]):
    """The after-commit hooks one store transaction holds back, in firing order.

    Each with the record its transition committed in memory: an ``atomic()`` block
    in the transaction may roll that back, and then it is not written, and its
    hook does not run (see :func:`run_queued`).
    """

    __slots__ = ("refused",)

    def __init__(self) -> None:
        """Start empty, with nothing refused."""
        super().__init__()
        # An async hook a sync store refused in the block: the block may have
        # caught the refusal, but its transition must not be written then.
        self.refused: WorkflowError | None = None


class _Deferral:
    """The after-commit hooks one store transaction holds back until its commit."""

    __slots__ = ("awaits", "open", "outer", "queue", "session")

    def __init__(self, session: CustomerSession, awaits: bool, outer: _Deferral | None) -> None:
        self.session = session
        # Whether the store awaits the queue (an async store): only then may it
        # hold async hooks.
        self.awaits = awaits
        self.open = True
        # The transaction this one was opened in (of another session), if any.
        self.outer = outer
        self.queue = Queue()


_DEFERRAL: ContextVar[_Deferral | None] = ContextVar("customer_session_store_queue", default=None)


def _open_for(session: CustomerSession) -> _Deferral | None:
    """The open transaction of the running code that loaded ``session``, if any."""
    deferral = _DEFERRAL.get()
    while deferral is not None:
        if deferral.session is session:
            # Over (a thread or task of the block fires after it): nothing to wait for.
            return deferral if deferral.open else None
        deferral = deferral.outer
    return None


class _Deferred:
    """Stands in for one after-commit hook on the shadow workflow."""

    __slots__ = ("entry",)

    def __init__(self, entry: Registration) -> None:
        self.entry = entry

    def __call__(self, event: TransitionEvent) -> object:
        deferral = _open_for(event.session)
        if deferral is None:
            # No store transaction waits for it: the in-memory commit is the only one.
            # What it returns goes to the face, which awaits an awaitable or refuses it.
            return self.entry.func(event)
        deferral.queue.append((self.entry, event, _committed(event)))
        return None


class _AsyncDeferred:
    """Stands in for one async after-commit hook (only the async face calls it)."""

    __slots__ = ("entry",)

    def __init__(self, entry: Registration) -> None:
        self.entry = entry

    async def __call__(self, event: TransitionEvent) -> None:
        entry = self.entry
        deferral = _open_for(event.session)
        if deferral is None:
            await entry.func(event)
        elif deferral.awaits:
            deferral.queue.append((entry, event, _committed(event)))
        else:
            refused = WorkflowError(
                f"after-commit hook {entry.name!r} is async; a sync store cannot await it "
                "after its commit: use AsyncPostgresStore, or a sync hook"
            )
            deferral.queue.refused = refused
            raise refused


class Shadow:
    """The store-side copy of a workflow, which the sessions a store hands out are bound to.

    Args:
        workflow: The workflow whose guards and hooks apply to stored sessions.
    """

    def __init__(self, workflow: Workflow) -> None:
        """Make the copy; it follows the workflow's registrations as they change."""
        self.workflow = workflow
        self._copy = _StoreWorkflow(workflow)

    def get(self) -> Workflow:
        """The copy: the same guards and hooks as the workflow, after-commit ones deferred."""
        return self._copy


class _StoreWorkflow(Workflow):
    """A workflow's store-side copy: its registrations, each after-commit hook deferred.

    One object for the store's lifetime, whose tables are rebuilt from the
    workflow's registrations whenever they changed: a session loaded in an open
    block then follows a registration or a removal at once, as a session bound to
    the workflow does. Registering through it registers on the workflow, and it
    pickles, shows and is named as the workflow is.
    """

    __slots__ = ("_origin", "_synced")

    def __init__(self, origin: Workflow) -> None:
        super().__init__(origin.specification, clock=origin.clock)
        self._origin = origin
        # The workflow's registrations the tables were built from (a workflow replaces
        # its tuple on every change, so identity says "unchanged").
        self._synced: tuple[Registration, ...] = ()
        # Not registered by name (the workflow is): pickled by it, so a loaded session
        # is bound to the workflow itself.
        self._name = origin.name

    def _sync(self) -> None:
        """Rebuild the tables if the workflow's registrations changed since."""
        origin = self._origin
        if origin.registrations is self._synced:
            return
        with self._lock:
            entries = origin.registrations
            if entries is not self._synced:
                self._rebuild(_deferred(self, entries))
                self._synced = entries

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """The workflow's registrations."""
        return self._origin.registrations

    def entries(self, phase: Phase, key: Trigger | State) -> tuple[Registration, ...]:
        """As :meth:`Workflow.entries`, current with the workflow's registrations."""
        self._sync()
        return super().entries(phase, key)

    def plan(self, source: State, trigger: Trigger) -> _Plan | None:
        """As :meth:`Workflow.plan`, current with the workflow's registrations."""
        self._sync()
        return super().plan(source, trigger)

    def plain_destination(self, source: State, trigger: Trigger) -> State | None:
        """As :meth:`Workflow.plain_destination`, current with the workflow's registrations."""
        self._sync()
        return super().plain_destination(source, trigger)

    def register(
        self,
        phase: Phase,
        func: Callable[[TransitionEvent], Any],
        *,
        key: Trigger | State | str | None = None,
        name: str | None = None,
    ) -> Registration:
        """Register on the workflow (a registration here would be lost at the next change)."""
        return self._origin.register(phase, func, key=key, name=name)

    def remove(self, func: Callable[..., Any]) -> int:
        """Remove ``func``'s registrations from the workflow."""
        return self._origin.remove(func)

    def clear(self) -> None:
        """Remove every guard and hook of the workflow."""
        self._origin.clear()

    def __repr__(self) -> str:
        """Show the workflow (errors name the one the user made)."""
        return repr(self._origin)


def _deferred(copy: Workflow, entries: tuple[Registration, ...]) -> Iterator[Registration]:
    """``entries`` registered on ``copy``, with a stand-in for each after-commit hook."""
    for entry in entries:
        if entry.phase is Phase.AFTER_COMMIT:
            func: Callable[[TransitionEvent], Any] = (
                _AsyncDeferred(entry) if entry.is_async else _Deferred(entry)
            )
            entry = Registration(copy, entry.phase, entry.key, func, entry.name, entry.is_async)  # noqa: PLW2901 - the stand-in takes its place
        yield entry


def deferring(session: CustomerSession, *, awaits: bool = False) -> AbstractContextManager[Queue]:
    """Queue the after-commit hooks of triggers on ``session`` fired in the block.

    For the transaction that loaded ``session``, in this context (and the threads
    and tasks that copy it); with ``awaits``, async hooks are queued too (the
    store runs the queue with :func:`run_queued_async`).
    """
    return _Deferring(_Deferral(session, awaits, _DEFERRAL.get()))


class _Deferring:
    """What :func:`deferring` returns (a class: stores enter it on every commit)."""

    __slots__ = ("deferral", "token")

    def __init__(self, deferral: _Deferral) -> None:
        self.deferral = deferral

    def __enter__(self) -> Queue:
        self.token = _DEFERRAL.set(self.deferral)
        return self.deferral.queue

    def __exit__(self, *exc_info: object) -> None:
        self.deferral.open = False
        _DEFERRAL.reset(self.token)


def _committed(event: TransitionEvent) -> TransitionRecord:
    """The record ``event``'s transition just committed in memory (an after-commit hook runs).

    The last one of the session's history equal to it: the session is held by the
    transaction's block, so the transition is among the last ones committed.
    """
    record = event.record()
    return next((r for r in reversed(event.session.history) if r == record), record)


def _written(queue: Queue) -> list[tuple[Registration, TransitionEvent]]:
    """The queued hooks whose transitions the commit wrote, in firing order.

    A transition an ``atomic()`` block in the transaction rolled back is not in its
    session's history, so not written: its hook never runs, as for a transaction
    that does not commit. Records are told apart by identity (two transitions may
    be equal).
    """
    histories: dict[int, set[int]] = {}
    written = []
    for entry, event, record in queue:
        session = event.session
        kept = histories.get(id(session))
        if kept is None:
            kept = histories[id(session)] = {id(r) for r in session.history}
        if id(record) in kept:
            written.append((entry, event))
    return written


def run_queued(queue: Queue) -> None:
    """Run queued after-commit hooks, in the order their triggers fired.

    Every hook of a transition the commit wrote runs (see :func:`_written`);
    failures are grouped in one
    :class:`~customer_session.exceptions.AfterCommitHookFailed` whose ``record``
    is the transition of the first hook that failed.
    """
    errors: list[Exception] = []
    failed: TransitionEvent | None = None
    written = _written(queue)
    for index, (entry, event) in enumerate(written):
        try:
            result = entry.func(event)
            if result is not None:
                refuse_awaitable(entry, result)  # as the sync face does: never dropped unrun
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            failed = failed or event
            errors.append(_named(exc, entry, event))
        except BaseException as stop:
            _interrupted(stop, written, index, failed, errors)
            raise
    _raise_failed(failed, errors)


async def run_queued_async(queue: Queue) -> None:
    """As :func:`run_queued`, awaiting the async hooks."""
    errors: list[Exception] = []
    failed: TransitionEvent | None = None
    written = _written(queue)
    for index, (entry, event) in enumerate(written):
        try:
            result = entry.func(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            failed = failed or event
            errors.append(_named(exc, entry, event))
        except BaseException as stop:
            # A cancellation (a timeout) stops the hooks; it says what it left undone.
            _interrupted(stop, written, index, failed, errors)
            raise
    _raise_failed(failed, errors)


def _interrupted(
    stop: BaseException,
    written: list[tuple[Registration, TransitionEvent]],
    index: int,
    failed: TransitionEvent | None,
    errors: list[Exception],
) -> None:
    """Note on ``stop`` what it cut short, as an interrupt after a session's own commit does.

    The hooks not run may be those of later transitions of the transaction: those
    name their trigger.
    """
    entry, event = written[index]
    skipped = [
        repr(later.name) if after is event else f"{later.name!r} ({after.trigger}())"
        for later, after in written[index + 1 :]
    ]
    group = None if failed is None else AfterCommitHookFailed(failed.record(), errors)
    interrupted_after_commit(stop, event.record(), entry.name, skipped, group)


def _named(exc: Exception, entry: Registration, event: TransitionEvent) -> Exception:
    add_note_once(exc, f"after-commit hook {entry.name!r} ({event.trigger}())")
    return exc


def _raise_failed(failed: TransitionEvent | None, errors: list[Exception]) -> None:
    if failed is not None:
        raise AfterCommitHookFailed(failed.record(), errors)
