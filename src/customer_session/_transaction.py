"""One trigger as a transaction: table, arguments, guards, hooks, commit, after-commit.

The session is written in exactly one place, :func:`commit`, after every phase
before the commit point has returned. Anything raised before that restores the
session from a snapshot taken when the trigger started (taken only when the
workflow has guards or pre-commit hooks, since nothing else can change it).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import attrs

from customer_session._cart import apply_returns, raise_problems, return_problems
from customer_session._phase import Phase
from customer_session._records import TransitionEvent, TransitionRecord
from customer_session._spec import State, Trigger
from customer_session.exceptions import (
    AfterCommitHookFailed,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    Problem,
    TransitionInProgress,
    WorkflowError,
)
from customer_session.hooks import Refusal

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from customer_session._cart import ReturnedItem
    from customer_session.hooks import Registration, Workflow
    from customer_session.model import CustomerSession

_set = object.__setattr__


class _Run:
    """The model the machine drives for one trigger (it never sees the session)."""

    __slots__ = (
        "_event",
        "current",
        "destination",
        "items",
        "phase",
        "refusal",
        "session",
        "source",
        "state",
        "timestamp",
        "trigger",
        "workflow",
    )

    def __init__(
        self,
        session: CustomerSession,
        workflow: Workflow,
        trigger: Trigger,
        destination: State,
        timestamp: datetime,
        items: tuple[ReturnedItem, ...],
    ) -> None:
        self.session = session
        self.workflow = workflow
        self.trigger = trigger
        self.source = self.state = session.state
        self.destination = destination
        self.timestamp = timestamp
        self.items = items
        self._event: TransitionEvent | None = None
        self.refusal: Refusal | None = None
        self.phase = Phase.GUARD
        self.current: Registration | None = None

    def event(self) -> TransitionEvent:
        """The event hooks receive, built on first use."""
        if self._event is None:
            self._event = TransitionEvent(
                self.session, self.trigger, self.source, self.destination, self.timestamp, self.items
            )
        return self._event

    def run_guards(self) -> bool:
        """Run the guards in order; stop at the first refusal."""
        entries = self.workflow.entries(Phase.GUARD, self.trigger)
        if entries:
            event = self.event()
            for entry in entries:
                self.current = entry
                reason = call_guard(entry, event)
                if reason is not None:
                    self.refusal = Refusal(entry.name, reason)
                    return False
        return True

    def run_hooks(self, phase: Phase) -> None:
        """Run the hooks of ``phase`` for this transition's trigger or state."""
        self.phase = phase
        key: Trigger | State
        if phase is Phase.EXIT:
            key = self.source
        elif phase is Phase.ENTER:
            key = self.destination
        else:
            key = self.trigger
        entries = self.workflow.entries(phase, key)
        if entries:
            event = self.event()
            for entry in entries:
                self.current = entry
                call_hook(entry, event)


def call_guard(entry: Registration, event: TransitionEvent) -> str | None:
    """Run one guard; ``None`` allows, a non-empty string is the refusal's reason."""
    if entry.is_async:
        raise WorkflowError(f"guard {entry.name!r} is async; fire triggers through the async face")
    verdict = entry.func(event)
    if verdict is None or (isinstance(verdict, str) and verdict):
        return verdict
    raise WorkflowError(
        f"guard {entry.name!r} returned {verdict!r}; return None to allow "
        "or a non-empty reason to refuse"
    )


def call_hook(entry: Registration, event: TransitionEvent) -> None:
    """Run one hook (sync face: async hooks are refused with a clear error)."""
    if entry.is_async:
        raise WorkflowError(f"hook {entry.name!r} is async; fire triggers through the async face")
    entry.func(event)


@cache
def _field_names(cls: type[CustomerSession]) -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(cls) if a.eq)


def snapshot(session: CustomerSession) -> tuple[Any, ...]:
    """Every field of ``session`` (fields hold immutable values, so this is a copy)."""
    return tuple(getattr(session, name) for name in _field_names(type(session)))


def rollback(session: CustomerSession, values: tuple[Any, ...] | None) -> None:
    """Put back what :func:`snapshot` took."""
    if values is not None:
        for name, value in zip(_field_names(type(session)), values, strict=True):
            _set(session, name, value)


def allowed(session: CustomerSession) -> frozenset[Trigger]:
    """The triggers the machine accepts from the session's state."""
    return session.workflow.engine.allowed(session.state)


def _timestamp(session: CustomerSession, workflow: Workflow) -> datetime:
    # Never before the last change, so ``updated`` cannot go backwards.
    return max(workflow.now(), session.updated)


def _check_call(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[State, tuple[ReturnedItem, ...], list[Problem]]:
    """Table and argument checks; raises for the table, returns argument problems."""
    workflow = session.workflow
    source = session.state
    if session._running is not None:  # noqa: SLF001 - the transaction owns this flag
        raise TransitionInProgress(
            trigger=trigger,
            state=source,
            integration_id=session.integration_id,
            running=session._running,  # noqa: SLF001
        )
    destination = workflow.engine.destination(source, trigger)
    if destination is None:
        raise IllegalTransition(
            trigger=trigger,
            state=source,
            integration_id=session.integration_id,
            allowed=workflow.engine.allowed(source),
        )
    if trigger is Trigger.RETURN_ITEMS:
        returned, problems = return_problems(session.cart_items, items)
        return destination, returned, problems
    if items:
        return destination, (), [Problem("items", f"{trigger}() takes no items")]
    return destination, (), []


def fire(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> TransitionRecord:
    """Run ``trigger`` on ``session`` as one transaction and return its record."""
    destination, returned, problems = _check_call(session, trigger, items)
    raise_problems(f"session {session.integration_id!r}: {trigger}()", problems)
    workflow = session.workflow
    run = _Run(session, workflow, trigger, destination, _timestamp(session, workflow), returned)
    saved = snapshot(session) if workflow.has_pre_commit_work else None
    _set(session, "_running", trigger)
    try:
        accepted = workflow.engine.run(run, trigger)
    except Exception as exc:
        rollback(session, saved)
        raise HookFailed(
            trigger=trigger,
            state=run.source,
            integration_id=session.integration_id,
            phase=run.phase,
            hook=run.current.name if run.current is not None else "?",
        ) from exc
    except BaseException:
        rollback(session, saved)
        raise
    finally:
        _set(session, "_running", None)
    if not accepted:
        rollback(session, saved)
        refusal = run.refusal
        assert refusal is not None  # noqa: S101 - the engine only refuses through a guard
        raise GuardRejected(
            trigger=trigger,
            state=run.source,
            integration_id=session.integration_id,
            guard=refusal.guard or "?",
            reason=refusal.reason,
        )
    record = TransitionRecord(trigger, run.source, destination, run.timestamp, returned)
    commit(session, record)
    entries = workflow.entries(Phase.AFTER_COMMIT, trigger)
    if entries:
        _after_commit(run, entries, record)
    return record


def commit(session: CustomerSession, record: TransitionRecord) -> None:
    """The commit point: state, cart returns, history, ``updated`` and count together."""
    if record.returned_items:
        _set(session, "cart_items", apply_returns(session.cart_items, record.returned_items))
    _set(session, "state", record.destination)
    _set(session, "history", (*session.history, record))
    _set(session, "updated", record.timestamp)
    _set(session, "update_count", session.update_count + 1)


def touch(session: CustomerSession) -> None:
    """Record a change that is not a transition (a cart edit)."""
    _set(session, "updated", _timestamp(session, session.workflow))
    _set(session, "update_count", session.update_count + 1)


def _after_commit(run: _Run, entries: tuple[Registration, ...], record: TransitionRecord) -> None:
    run.phase = Phase.AFTER_COMMIT
    event = run.event()
    errors: list[Exception] = []
    for entry in entries:
        try:
            call_hook(entry, event)
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            exc.add_note(f"after-commit hook {entry.name!r}")
            errors.append(exc)
    if errors:
        raise AfterCommitHookFailed(record, errors)


def why_not(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[Refusal, ...]:
    """Every reason ``trigger`` would be refused now; nothing is changed."""
    try:
        destination, returned, problems = _check_call(session, trigger, items)
    except (IllegalTransition, TransitionInProgress) as exc:
        return (Refusal(None, str(exc)),)
    if problems:
        return tuple(Refusal(None, str(p)) for p in problems)
    workflow = session.workflow
    entries = workflow.entries(Phase.GUARD, trigger)
    if not entries:
        return ()
    run = _Run(session, workflow, trigger, destination, _timestamp(session, workflow), returned)
    event = run.event()
    refusals: list[Refusal] = []
    for entry in entries:
        try:
            reason = call_guard(entry, event)
        except Exception as exc:
            raise HookFailed(
                trigger=trigger,
                state=run.source,
                integration_id=session.integration_id,
                phase=Phase.GUARD,
                hook=entry.name,
            ) from exc
        if reason is not None:
            refusals.append(Refusal(entry.name, reason))
    return tuple(refusals)
