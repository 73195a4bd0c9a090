"""One trigger as a transaction, with guards and hooks awaited (the async face).

The steps and rules are those of ``_transaction``, which this module calls for
everything but the awaiting: the same table and argument checks, the same
snapshot, rollback and commit point, the same errors. Guards and hooks may be
``async def`` or plain functions in every phase.

Cancellation is an exception like any other before the commit point: the session
is rolled back, and the ``CancelledError`` propagates unchanged (so
``asyncio.timeout()`` around a trigger works). The commit point itself does not
await, so it happens entirely or not at all. A cancellation during the
after-commit hooks propagates at once; the transition stays committed and the
remaining after-commit hooks do not run (it says so in a note, and carries the
failures of the hooks before it: see ``after_commit_interrupted``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from customer_session._phase import Phase
from customer_session._transaction import (
    Run,
    after_commit_failure,
    after_commit_interrupted,
    ask,
    begin,
    done_asking,
    end,
    finish,
    guard_failed,
    hook_failed,
    prepare,
    recheck_returns,
    refused,
    taken_refusal,
    undo,
    verdict,
    why_not_before_guards,
)
from customer_session.exceptions import AfterCommitHookFailed
from customer_session.hooks import Refusal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from customer_session._cart import ReturnedItem
    from customer_session._records import TransitionEvent, TransitionRecord
    from customer_session._spec import Trigger
    from customer_session.hooks import Registration
    from customer_session.model import CustomerSession


async def call_guard(entry: Registration, event: TransitionEvent) -> str | None:
    """Run one guard, awaiting it if it is async; its verdict as in the sync face."""
    value = entry.func(event)
    if inspect.isawaitable(value):
        value = await value
    return verdict(entry, value)


async def call_hook(entry: Registration, event: TransitionEvent) -> None:
    """Run one hook, awaiting it if it is async."""
    result = entry.func(event)
    if inspect.isawaitable(result):
        await result


class _AsyncRun(Run):
    """The run the async machine drives: each phase awaits its guards or hooks."""

    __slots__ = ()

    async def guards(self) -> bool:
        """Run the guards in order; stop at the first refusal."""
        if self.plan is None or not self.plan.guards:
            return True
        event = self.event()
        for entry in self.plan.guards:
            self.current = entry
            reason = await call_guard(entry, event)
            if reason is not None:
                self.refusal = Refusal(entry.name, reason)
                return False
        return True

    async def _hooks(self, phase: Phase, entries: tuple[Registration, ...]) -> None:
        self.phase = phase
        if entries:
            event = self.event()
            for entry in entries:
                self.current = entry
                await call_hook(entry, event)

    async def before(self) -> None:
        """Run the ``BEFORE`` hooks."""
        if self.plan is not None:
            await self._hooks(Phase.BEFORE, self.plan.before)

    async def exit(self) -> None:
        """Run the ``EXIT`` hooks of the source state."""
        if self.plan is not None:
            await self._hooks(Phase.EXIT, self.plan.exit)

    async def enter(self) -> None:
        """Run the ``ENTER`` hooks of the destination state."""
        if self.plan is not None:
            await self._hooks(Phase.ENTER, self.plan.enter)

    async def after(self) -> None:
        """Run the ``AFTER`` hooks."""
        if self.plan is not None:
            await self._hooks(Phase.AFTER, self.plan.after)


async def fire(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> TransitionRecord:
    """Run ``trigger`` on ``session`` as one transaction and return its record.

    The caller serializes triggers on one session (the face's lock); this
    function only guarantees that a trigger which does not commit changes nothing.
    """
    run = prepare(_AsyncRun, session, trigger, items)
    plan = run.plan
    engine = session.workflow.engine.asynchronous
    if plan is None:
        await engine.run(run, trigger)
        record = finish(run)
    else:
        saved = begin(run, plan)
        try:
            accepted = await engine.run(run, trigger)
        except Exception as exc:
            raise hook_failed(run, saved) from exc
        except BaseException:
            # CancelledError (a timeout, a cancelled task) and the like: undo, pass it on.
            undo(run, saved)
            raise
        else:
            # Still busy until committed or rolled back (see the sync face's
            # _run_hooked); no await from here to the commit: a cancellation
            # cannot split it.
            if not accepted:
                raise refused(run, saved)
            recheck_returns(run, saved)
            record = finish(run)
        finally:
            end(run)
    if plan is not None and plan.after_commit:
        await _after_commit(run, plan.after_commit, record)
    return record


async def _after_commit(
    run: _AsyncRun, entries: tuple[Registration, ...], record: TransitionRecord
) -> None:
    run.phase = Phase.AFTER_COMMIT
    event = run.event()
    errors: list[Exception] = []
    for index, entry in enumerate(entries):
        try:
            await call_hook(entry, event)
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            errors.append(after_commit_failure(entry, exc))
        except BaseException as stop:
            # A cancellation (a timeout) stops the hooks; it says what it left undone.
            after_commit_interrupted(stop, record, entries, index, errors)
            raise
    if errors:
        raise AfterCommitHookFailed(record, errors)


async def why_not(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[Refusal, ...]:
    """Every reason ``trigger`` would be refused now; nothing is changed."""
    seen = session._running  # as the checks find it
    refusals, event, entries = why_not_before_guards(session, trigger, items)
    if event is None:
        return refusals
    found: list[Refusal] = []
    # Busy while the guards are awaited: a trigger or edit from another task (or a
    # guard) is refused, so nothing changes the session and nothing is restored.
    marker = ask(session, trigger, seen, event.source)
    if marker is None:
        return taken_refusal(session, trigger)
    try:
        for entry in entries:
            try:
                reason = await call_guard(entry, event)
            except Exception as exc:
                raise guard_failed(event, entry) from exc
            if reason is not None:
                found.append(Refusal(entry.name, reason))
    finally:
        done_asking(session, marker)
    return tuple(found)
