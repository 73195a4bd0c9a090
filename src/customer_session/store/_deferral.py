"""After-commit hooks that wait for the database commit.

A trigger fired inside a store transaction commits in memory first; the database
commit comes when the block ends, and may not happen at all (a conflict, an error
later in the block). The session's after-commit hooks must therefore not run at
the in-memory commit. The store binds the sessions it hands out to a *shadow* of
its workflow: the same guards and pre-commit hooks, and, in place of each
after-commit hook, a stand-in that queues the event while a store transaction is
open on this thread (or task) and calls the hook at once otherwise. The queue runs
after the database commit, and is dropped when the transaction does not commit.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from customer_session._phase import Phase
from customer_session.exceptions import AfterCommitHookFailed
from customer_session.hooks import Workflow

if TYPE_CHECKING:
    from collections.abc import Iterator

    from customer_session._records import TransitionEvent
    from customer_session.hooks import Registration

Queue = list[tuple["Registration", "TransitionEvent"]]

_QUEUE: ContextVar[Queue | None] = ContextVar("customer_session_store_queue", default=None)


class _Deferred:
    """Stands in for one after-commit hook on the shadow workflow."""

    __slots__ = ("entry",)

    def __init__(self, entry: Registration) -> None:
        self.entry = entry

    def __call__(self, event: TransitionEvent) -> None:
        queue = _QUEUE.get()
        if queue is None:
            # No store transaction is open: the in-memory commit is the only one.
            self.entry.func(event)
        else:
            queue.append((self.entry, event))


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
        func = entry.func
        if entry.phase is Phase.AFTER_COMMIT and not entry.is_async:
            func = _Deferred(entry)
        shadow.register(entry.phase, func, key=entry.key, name=entry.name)
    return shadow


@contextmanager
def deferring() -> Iterator[Queue]:
    """Queue the after-commit hooks of triggers fired in the block (this context only)."""
    queue: Queue = []
    token = _QUEUE.set(queue)
    try:
        yield queue
    finally:
        _QUEUE.reset(token)


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
            entry.func(event)
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            exc.add_note(f"after-commit hook {entry.name!r} ({event.trigger}())")
            errors.append(exc)
            failed = failed or event
    if failed is not None:
        raise AfterCommitHookFailed(failed.record(), errors)
