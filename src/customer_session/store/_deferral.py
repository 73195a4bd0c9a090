"""After-commit hooks that wait for the database commit.

A trigger fired inside a store transaction commits in memory first; the database
commit comes when the block ends, and may not happen at all (a conflict, an error
later in the block). The session's after-commit hooks must therefore not run at
the in-memory commit. The store binds the sessions it hands out to a *shadow* of
its workflow: the same guards and pre-commit hooks, and, in place of each
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
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

from customer_session._phase import Phase
from customer_session._transaction import refuse_awaitable
from customer_session.exceptions import AfterCommitHookFailed, WorkflowError
from customer_session.hooks import Workflow

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from customer_session._records import TransitionEvent
    from customer_session.hooks import Registration
    from customer_session.model import CustomerSession


class Queue(list[tuple["Registration", "TransitionEvent"]]):
    """The after-commit hooks one store transaction holds back, in firing order."""

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
        deferral.queue.append((self.entry, event))
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
            deferral.queue.append((entry, event))
        else:
            refused = WorkflowError(
                f"after-commit hook {entry.name!r} is async; a sync store cannot await it "
                "after its commit: use AsyncPostgresStore, or a sync hook"
            )
            deferral.queue.refused = refused
            raise refused


class Shadow:
    """The store-side copy of a workflow, rebuilt whenever its registrations change.

    Args:
        workflow: The workflow whose guards and hooks apply to stored sessions.
    """

    def __init__(self, workflow: Workflow) -> None:
        """Build nothing yet: the first :meth:`get` builds the copy."""
        self.workflow = workflow
        self._lock = threading.Lock()
        self._source: tuple[Registration, ...] | None = None
        self._shadow = workflow

    def get(self) -> Workflow:
        """The shadow workflow, current with the workflow's registrations."""
        # A workflow replaces its tuple on every change, so identity says "unchanged".
        entries = self.workflow.registrations
        if entries is self._source:
            return self._shadow
        with self._lock:
            if entries is not self._source:
                self._shadow = _copy(self.workflow, entries)
                self._source = entries
            return self._shadow


def _copy(workflow: Workflow, entries: tuple[Registration, ...]) -> Workflow:
    if not any(entry.phase is Phase.AFTER_COMMIT for entry in entries):
        return workflow  # nothing to defer: the workflow itself will do
    shadow = Workflow(workflow.specification, clock=workflow.clock)
    for entry in entries:
        func: Callable[[TransitionEvent], object] = entry.func
        if entry.phase is Phase.AFTER_COMMIT:
            func = _AsyncDeferred(entry) if entry.is_async else _Deferred(entry)
        shadow.register(entry.phase, func, key=entry.key, name=entry.name)
    return shadow


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


def run_queued(queue: Queue) -> None:
    """Run queued after-commit hooks, in the order their triggers fired.

    Every hook runs; failures are grouped in one
    :class:`~customer_session.exceptions.AfterCommitHookFailed` whose ``record``
    is the transition of the first hook that failed.
    """
    errors: list[Exception] = []
    failed: TransitionEvent | None = None
    for entry, event in queue:
        try:
            result = entry.func(event)
            if result is not None:
                refuse_awaitable(entry, result)  # as the sync face does: never dropped unrun
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            failed = failed or event
            errors.append(_named(exc, entry, event))
    _raise_failed(failed, errors)


async def run_queued_async(queue: Queue) -> None:
    """As :func:`run_queued`, awaiting the async hooks."""
    errors: list[Exception] = []
    failed: TransitionEvent | None = None
    for entry, event in queue:
        try:
            result = entry.func(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            failed = failed or event
            errors.append(_named(exc, entry, event))
    _raise_failed(failed, errors)


def _named(exc: Exception, entry: Registration, event: TransitionEvent) -> Exception:
    exc.add_note(f"after-commit hook {entry.name!r} ({event.trigger}())")
    return exc


def _raise_failed(failed: TransitionEvent | None, errors: list[Exception]) -> None:
    if failed is not None:
        raise AfterCommitHookFailed(failed.record(), errors)
