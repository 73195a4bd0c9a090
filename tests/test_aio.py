import asyncio
import contextlib
import contextvars
import gc
import subprocess
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from transitions.extensions.asyncio import AsyncMachine

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    AfterCommitHookFailed,
    CartItem,
    CustomerSession,
    Edge,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    Phase,
    ReopenableCustomerSession,
    ReturnedItem,
    SessionNotEditable,
    Specification,
    State,
    TransitionInProgress,
    Trigger,
    UnknownTrigger,
    ValidationError,
    Workflow,
    WorkflowError,
    aio,
)
from customer_session._machine import engine_for
from customer_session.aio import AsyncReopenableSession, AsyncSession

from .conftest import edit_every_field

ITEM = CartItem(sku="SOCK", quantity=100, price=1.0)
ONE = (ReturnedItem(position=0, quantity=1),)
PRE_COMMIT = [Phase.GUARD, Phase.BEFORE, Phase.EXIT, Phase.ENTER, Phase.AFTER]
# Only a safety net against a hang if serialization ever deadlocks; no test relies on
# it for its verdict. Long enough for a loaded machine, where a task may not run for seconds.
HANG = 60


def _session(workflow: Workflow | None = None, state: State = State.OPEN) -> CustomerSession:
    return CustomerSession(
        integration_id="order-1",
        state=state,
        cart_items=[ITEM],
        workflow=workflow or CustomerSession.default_workflow,
    )


def _unchanged(session: CustomerSession, before: dict) -> bool:
    return session.snapshot() == before and session._running is None


async def _forever(event):
    """A guard or hook that never returns on its own."""
    await asyncio.Event().wait()


class Gate:
    """A hook that says when it started and waits until the test lets it go on."""

    def __init__(self) -> None:
        """Closed until the test releases it."""
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, event) -> None:
        """Say so, then wait for the release."""
        self.entered.set()
        await self.release.wait()


async def _spin(times: int = 20) -> None:
    """Give every other ready task many chances to run."""
    for _ in range(times):
        await asyncio.sleep(0)


@pytest.mark.asyncio
class TestFace:
    async def test_lifecycle(self):
        """The issue's lifecycle runs through the face and lands in the session."""
        session = _session()
        face = AsyncSession(session)
        assert face.session is session
        assert face.allowed_triggers == frozenset({Trigger.CLOSE, Trigger.CANCEL})
        closed = await face.close()
        returned = await face.return_items(ONE)
        cancelled = await face.cancel()
        assert face.state is State.CANCELLED
        assert session.history == (closed, returned, cancelled)
        assert session.cart_items[0].returned_quantity == 1

    async def test_reopen(self):
        """The reopenable face reopens a closed session."""
        session = ReopenableCustomerSession(integration_id="order-1", state=State.CLOSED)
        face = AsyncReopenableSession(session)
        record = await face.reopen()
        assert (record.source, record.destination) == (State.CLOSED, State.OPEN)
        assert face.session.state is State.OPEN

    async def test_fire_by_name(self):
        """fire() takes a trigger name and refuses names the table does not know."""
        face = AsyncSession(_session())
        await face.fire("close")
        assert face.state is State.CLOSED
        with pytest.raises(UnknownTrigger):
            await face.fire("reopen")

    async def test_illegal_transition_changes_nothing(self):
        """A trigger the table forbids raises IllegalTransition and changes nothing."""
        session = _session()
        before = session.snapshot()
        with pytest.raises(IllegalTransition, match=r"allowed: cancel\(\), close\(\)"):
            await AsyncSession(session).return_items(ONE)
        assert _unchanged(session, before)

    async def test_invalid_items_change_nothing(self):
        """Invalid returned items raise ValidationError and change nothing."""
        session = _session(state=State.CLOSED)
        before = session.snapshot()
        with pytest.raises(ValidationError, match="position 9"):
            await AsyncSession(session).return_items([ReturnedItem(9, 1)])
        assert _unchanged(session, before)

    async def test_an_empty_generator_is_no_items(self):
        """fire(), can() and why_not() take an empty generator for close() as no items."""
        face = AsyncSession(_session())
        assert await face.can("close", items=iter(()))
        assert await face.why_not("close", items=iter(())) == ()
        record = await face.fire("close", items=(n for n in ()))
        assert record.destination is State.CLOSED

    async def test_a_generator_with_items_is_refused_after_one_read(self):
        """A non-empty generator for close() is refused, having been read once only."""
        session = _session()
        before = session.snapshot()
        read: list[int] = []

        def entries():
            for n in range(3):
                read.append(n)
                yield ReturnedItem(position=0, quantity=1)

        with pytest.raises(ValidationError, match=r"close\(\) takes no items"):
            await AsyncSession(session).fire("close", items=entries())
        assert read == [0]
        assert _unchanged(session, before)

    async def test_sync_and_async_faces_drive_one_session(self):
        """The sync methods and the face change the same session and history."""
        session = _session()
        await AsyncSession(session).close()
        session.cancel()
        assert [r.trigger for r in session.history] == [Trigger.CLOSE, Trigger.CANCEL]

    async def test_repr(self):
        """The face shows its session's id and state."""
        assert repr(AsyncSession(_session())) == "<AsyncSession 'order-1' open>"


class TestFaceConstruction:
    def test_reopenable_face_needs_the_reopen_table(self):
        """A reopenable face over a session without reopen is refused."""
        with pytest.raises(UnknownTrigger, match="reopen") as info:
            AsyncReopenableSession(_session())  # type: ignore[type-var]
        assert str(info.value).startswith("unknown trigger 'reopen'; known: cancel, close")
        assert "use a ReopenableCustomerSession" in str(info.value)

    def test_face_needs_a_session(self):
        """Anything but a customer session is a ValidationError naming the argument."""
        with pytest.raises(
            ValidationError, match="AsyncSession: session: must be a CustomerSession, got 'order-1'"
        ):
            AsyncSession("order-1")  # type: ignore[type-var]

    def test_importing_the_package_does_not_load_the_async_machine(self):
        """Sync-only programs do not import transitions' asyncio extension."""
        code = (
            "import sys, customer_session; "
            "sys.exit('transitions.extensions.asyncio' in sys.modules)"
        )
        run = subprocess.run([sys.executable, "-c", code], check=False)
        assert run.returncode == 0


@pytest.mark.asyncio
class TestGuards:
    async def test_async_guard_refuses(self):
        """An async guard's refusal raises GuardRejected with the source, its name and reason."""
        workflow = Workflow()

        @workflow.guard(trigger=Trigger.CLOSE)
        async def stock_reserved(event):
            await asyncio.sleep(0)
            return "the warehouse said no"

        session = _session(workflow)
        before = session.snapshot()
        with pytest.raises(GuardRejected) as info:
            await AsyncSession(session).close()
        assert info.value.state is State.OPEN
        assert info.value.guard.endswith("stock_reserved")
        assert info.value.reason == "the warehouse said no"
        assert _unchanged(session, before)

    async def test_can_and_why_not_await_every_guard(self):
        """can() and why_not() ask sync and async guards in order and change nothing."""
        workflow = Workflow()

        async def remote(event):
            await asyncio.sleep(0)
            return "fraud check pending"

        workflow.guard(lambda event: "no closing today", trigger=Trigger.CLOSE, name="calendar")
        workflow.guard(remote, trigger=Trigger.CLOSE, name="fraud")
        session = _session(workflow)
        face = AsyncSession(session)
        before = session.snapshot()
        assert not await face.can(Trigger.CLOSE)
        assert [str(r) for r in await face.why_not(Trigger.CLOSE)] == [
            "calendar: no closing today",
            "fraud: fraud check pending",
        ]
        assert await face.can("cancel")
        assert _unchanged(session, before)

    async def test_guards_after_a_refusal_are_not_awaited(self):
        """Firing stops at the first guard that refuses: the guards after it do not run."""
        workflow = Workflow()
        asked: list[str] = []

        async def first(event):
            asked.append("first")
            return "no"

        async def second(event):
            asked.append("second")  # pragma: no cover - never asked

        workflow.guard(first, trigger=Trigger.CLOSE, name="first")
        workflow.guard(second, trigger=Trigger.CLOSE)
        with pytest.raises(GuardRejected, match="guard 'first': no"):
            await AsyncSession(_session(workflow)).close()
        assert asked == ["first"]

    async def test_async_guard_returning_an_empty_reason_is_an_error(self):
        """A refusal needs a reason: an async guard returning "" is reported, not taken as one."""
        workflow = Workflow()

        async def silent(event):
            return ""

        workflow.guard(silent, name="silent")
        session = _session(workflow)
        with pytest.raises(HookFailed) as info:
            await AsyncSession(session).close()
        assert (info.value.phase, info.value.hook) == (Phase.GUARD, "silent")
        assert "non-empty reason" in str(info.value.__cause__)
        assert session.state is State.OPEN

    async def test_why_not_reports_the_table_and_the_items(self):
        """why_not() explains the table's refusal and invalid items without guards."""
        face = AsyncSession(_session(state=State.CLOSED))
        (table,) = await face.why_not(Trigger.CLOSE)
        assert table.guard is None
        assert "cannot close()" in table.reason
        reasons = [r.reason for r in await face.why_not("return_items", items=[ReturnedItem(9, 1)])]
        assert any("position 9" in r for r in reasons)

    async def test_async_guard_returning_a_bool_is_an_error(self):
        """An async guard must return None or a reason, as a sync one must."""
        workflow = Workflow()

        async def yes(event):
            return True

        workflow.guard(yes)
        session = _session(workflow)
        with pytest.raises(HookFailed) as info:
            await AsyncSession(session).close()
        assert info.value.phase is Phase.GUARD
        assert isinstance(info.value.__cause__, WorkflowError)
        assert session.state is State.OPEN

    async def test_why_not_with_a_raising_guard(self):
        """A guard that raises while asked why not is a HookFailed of the guard phase naming it."""
        workflow = Workflow()

        async def broken(event):
            raise KeyError("missing")

        workflow.guard(broken, name="broken")
        with pytest.raises(HookFailed, match="broken") as info:
            await AsyncSession(_session(workflow)).why_not("close")
        assert (info.value.phase, info.value.hook) == (Phase.GUARD, "broken")
        assert isinstance(info.value.__cause__, KeyError)

    async def test_a_guard_raising_while_asked_says_nothing_was_fired(self):
        """The HookFailed of an async guard raising while can() asks says it asked."""
        workflow = Workflow()

        async def broken(event):
            raise KeyError("missing")

        workflow.guard(broken, name="broken")
        with pytest.raises(HookFailed) as info:
            await AsyncSession(_session(workflow)).can("close")
        assert info.value.asking
        assert "rolled back" not in str(info.value)
        assert str(info.value).endswith("nothing was fired or changed")

    async def test_the_sync_face_still_refuses_async_guards(self):
        """Firing or asking the sync methods with an async guard fails with a clear error."""
        workflow = Workflow()

        async def remote(event):
            return None

        workflow.guard(remote)
        session = _session(workflow)
        for attempt in (session.close, lambda: session.why_not("close")):
            with pytest.raises(HookFailed) as info:
                attempt()
            assert "async face" in str(info.value.__cause__)
        assert session.state is State.OPEN

    async def test_what_a_plain_callable_returns_is_awaited(self):
        """A plain guard or hook returning an awaitable is awaited (the sync methods refuse it)."""
        workflow = Workflow()
        seen = []

        async def remote(event, phase):
            await asyncio.sleep(0)
            seen.append(phase)
            return "the payment service says no" if event.trigger is Trigger.CANCEL else None

        for phase in Phase:
            workflow.register(phase, lambda event, phase=phase: remote(event, phase))
        face = AsyncSession(_session(workflow))
        await face.close()
        assert seen == list(Phase)
        with pytest.raises(GuardRejected, match="the payment service says no"):
            await face.cancel()
        with pytest.raises(HookFailed) as info:
            face.session.cancel()
        assert "returned an awaitable" in str(info.value.__cause__)


@pytest.mark.asyncio
class TestHookOrder:
    async def test_phases_run_in_order_with_the_commit_between(self):
        """Sync and async callables of every phase run in order; the commit is between."""
        workflow = Workflow()
        calls: list[tuple[str, State, int]] = []

        def spy(name):
            def hook(event):
                calls.append((name, event.session.state, len(event.session.history)))

            async def async_hook(event):
                await asyncio.sleep(0)
                hook(event)

            return async_hook, hook

        for phase in Phase:
            first, second = spy(phase.value)
            workflow.register(phase, first)
            workflow.register(phase, second)
        await AsyncSession(_session(workflow)).close()
        before_commit = [(p.value, State.OPEN, 0) for p in PRE_COMMIT for _ in range(2)]
        after_commit = [("after_commit", State.CLOSED, 1)] * 2
        assert calls == before_commit + after_commit

    async def test_internal_transition_skips_exit_and_enter(self):
        """A further return awaits before/after hooks but no exit/enter hooks."""
        workflow = Workflow()
        calls: list[str] = []

        async def record(event, name):
            calls.append(name)

        workflow.on_exit(lambda event: record(event, "exit"))
        workflow.on_enter(lambda event: record(event, "enter"))
        workflow.before(lambda event: record(event, "before"), trigger=Trigger.RETURN_ITEMS)
        face = AsyncSession(_session(workflow, State.CLOSED))
        await face.return_items(ONE)
        calls.clear()
        await face.return_items(ONE)
        assert calls == ["before"]

    async def test_hooks_run_in_the_callers_task(self):
        """Hooks run in the task that fired, so its context and cancellation reach them."""
        workflow = Workflow()
        request_id = contextvars.ContextVar("request_id")
        seen = []

        async def hook(event):
            seen.append((asyncio.current_task(), request_id.get()))

        for phase in Phase:
            workflow.register(phase, hook)
        request_id.set("req-7")
        await AsyncSession(_session(workflow)).close()
        assert seen == [(asyncio.current_task(), "req-7")] * len(Phase)


@pytest.mark.asyncio
@pytest.mark.parametrize("phase", PRE_COMMIT)
class TestFailureBeforeCommit:
    async def test_session_is_left_exactly_as_it_was(self, phase):
        """An async hook that edits and then raises leaves every field as it was."""
        workflow = Workflow()

        async def edit_then_fail(event):
            event.session.set_attribute("touched", True)
            await asyncio.sleep(0)
            raise RuntimeError(phase.value)

        workflow.register(phase, edit_then_fail)
        session = _session(workflow)
        before = session.snapshot()
        with pytest.raises(HookFailed) as info:
            await AsyncSession(session).close()
        assert info.value.phase is phase
        assert isinstance(info.value.__cause__, RuntimeError)
        assert _unchanged(session, before)

    async def test_the_error_names_the_hook_that_raised(self, phase):
        """HookFailed names the async guard or hook that raised, not one awaited before it."""
        workflow = Workflow()

        async def broken(event):
            await asyncio.sleep(0)
            raise RuntimeError(phase.value)

        workflow.register(phase, lambda event: None, name="fine")
        workflow.register(phase, broken, name="broken")
        with pytest.raises(HookFailed) as info:
            await AsyncSession(_session(workflow)).close()
        assert (info.value.hook, info.value.phase, info.value.state) == (
            "broken",
            phase,
            State.OPEN,
        )

    async def test_every_field_a_hook_edited_is_put_back(self, phase):
        """An async hook that edits every editable field and then raises leaves each as it was."""
        workflow = Workflow()

        async def edit_everything_then_fail(event):
            edit_every_field(event.session)
            await asyncio.sleep(0)
            raise RuntimeError(phase.value)

        workflow.register(phase, edit_everything_then_fail)
        session = _session(workflow)
        before = session.snapshot()
        with pytest.raises(HookFailed):
            await AsyncSession(session).close()
        assert _unchanged(session, before)


@pytest.mark.asyncio
class TestTriggerFiredWhileTheClockRuns:
    async def test_the_awaited_trigger_is_refused_and_changes_nothing(self):
        """A trigger the clock commits while a face's trigger takes its timestamp wins."""
        target: list[CustomerSession] = []

        def clock() -> datetime:
            if target:
                target.pop().cancel()  # popped first: the inner trigger reads the clock too
            return datetime(2026, 3, 2, tzinfo=UTC)

        workflow = Workflow(clock=clock)
        ran: list[Trigger] = []
        workflow.before(lambda event: ran.append(event.trigger), name="spy")
        session = _session(workflow)
        target.append(session)
        with pytest.raises(TransitionInProgress, match="changed hands"):
            await AsyncSession(session).close()
        assert [r.trigger for r in session.history] == [Trigger.CANCEL]
        assert session._running is None
        assert ran == [Trigger.CANCEL]  # the clock's cancel only: the close ran no hook

    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    async def test_a_clock_going_back_never_dates_a_transition_before_the_last_change(
        self, registered
    ):
        """Under a clock that went back, an awaited transition is dated at the last change."""
        times = iter([datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC)])
        workflow = Workflow(clock=lambda: next(times))
        if registered:
            workflow.before(lambda event: None)
        session = _session(workflow)
        record = await AsyncSession(session).close()
        assert record.timestamp == session.created


# A table where a return leaves the session open, so a hook may edit the cart under it.
# At module level: its named workflow, made in a test, would be registered again
# when the test runs twice in one process (the class lives on until a collection).
OPEN_RETURNS = CUSTOMER_SESSION.extend(
    "aio_open_returns", Edge(Trigger.RETURN_ITEMS, State.OPEN, State.OPEN)
)


class OpenReturns(CustomerSession):
    specification: ClassVar[Specification] = OPEN_RETURNS
    default_workflow: ClassVar[Workflow] = Workflow(OPEN_RETURNS, name="tests.aio_open_returns")


@pytest.mark.asyncio
class TestReturnUnderAnEditedCart:
    async def test_a_return_an_async_hook_left_no_room_for_is_refused(self):
        """An async before hook emptying the cart under a return: refused, nothing kept."""
        workflow = Workflow(OPEN_RETURNS)

        async def empty_the_cart(event):
            await asyncio.sleep(0)
            event.session.set_cart_items([])

        workflow.before(empty_the_cart, trigger=Trigger.RETURN_ITEMS)
        session = OpenReturns(integration_id="a", cart_items=[ITEM], workflow=workflow)
        before = session.snapshot()
        with pytest.raises(ValidationError, match="once its pre-commit hooks had changed the cart"):
            await AsyncSession(session).return_items(ONE)
        assert _unchanged(session, before)


@pytest.mark.asyncio
class TestCancellation:
    @pytest.mark.parametrize("phase", PRE_COMMIT)
    async def test_timeout_before_the_commit_changes_nothing(self, phase):
        """A timeout around the trigger rolls it back; TimeoutError reaches the caller."""
        workflow = Workflow()

        async def edit_then_hang(event):
            event.session.set_attribute("touched", True)
            await _forever(event)

        registration = workflow.register(phase, edit_then_hang)
        session = _session(workflow)
        face = AsyncSession(session)
        before = session.snapshot()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await face.close()
        assert _unchanged(session, before)
        registration.remove()
        await face.close()  # the lock was released
        assert face.state is State.CLOSED

    @pytest.mark.parametrize("phase", PRE_COMMIT)
    async def test_cancelled_task_changes_nothing(self, phase):
        """Cancelling the task mid-hook rolls back and the CancelledError propagates."""
        workflow = Workflow()
        gate = Gate()

        async def edit_then_wait(event):
            event.session.set_attribute("touched", True)
            await gate(event)

        workflow.register(phase, edit_then_wait)
        session = _session(workflow)
        before = session.snapshot()
        task = asyncio.create_task(AsyncSession(session).close())
        await gate.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _unchanged(session, before)

    async def test_cancelled_while_waiting_for_the_lock(self):
        """A trigger cancelled while waiting its turn never runs; the running one commits."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)
        face = AsyncSession(session)
        first = asyncio.create_task(face.close())
        await gate.entered.wait()
        waiting = asyncio.create_task(face.cancel())
        await _spin()
        waiting.cancel()
        gate.release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await first
        assert [r.trigger for r in session.history] == [Trigger.CLOSE]

    async def test_cancelled_after_the_commit_keeps_the_commit(self):
        """A timeout during after-commit hooks propagates; the transition stays committed."""
        workflow = Workflow()
        ran: list[str] = []
        workflow.after_commit(_forever)
        workflow.after_commit(lambda event: ran.append("second"))
        session = _session(workflow)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await AsyncSession(session).close()
        assert session.state is State.CLOSED
        assert len(session.history) == 1
        assert session._running is None
        assert ran == []

    async def test_a_cancellation_after_the_commit_keeps_the_failures_before_it(self):
        """A cancelled after-commit hook passes on the failures of the hooks before it."""
        workflow = Workflow()

        def fail(event):
            raise ValueError("mail server down")

        workflow.after_commit(fail, name="mail")
        workflow.after_commit(_forever, name="crm")
        workflow.after_commit(lambda event: None, name="audit")
        session = _session(workflow)
        task = asyncio.create_task(AsyncSession(session).close())
        await _spin()
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        (note,) = info.value.__notes__
        assert note == (
            "close() committed (open -> closed), then after-commit hook 'crm' was "
            "interrupted; 'audit' did not run; 1 after-commit hook had raised before "
            "(the AfterCommitHookFailed in this exception's __context__)"
        )
        group = info.value.__context__
        assert isinstance(group, AfterCommitHookFailed)
        assert group.record == session.history[-1]
        assert [str(e) for e in group.exceptions] == ["mail server down"]

    async def test_cancel_requested_by_the_last_hook_lands_after_the_commit(self):
        """The commit point does not yield, so a cancellation cannot split it."""
        workflow = Workflow()
        workflow.after(lambda event: asyncio.current_task().cancel())
        face = AsyncSession(_session(workflow))
        record = await face.close()
        assert face.session.history == (record,)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(0)  # the request is delivered at the next suspension
        asyncio.current_task().uncancel()

    async def test_timeout_in_why_not_changes_nothing(self):
        """A timeout while a guard is asked why not propagates and changes nothing."""
        workflow = Workflow()
        workflow.guard(_forever)
        session = _session(workflow)
        before = session.snapshot()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await AsyncSession(session).can("close")
        assert _unchanged(session, before)


@pytest.mark.asyncio
class TestAfterCommit:
    async def test_failures_never_undo_the_commit(self):
        """Sync and async after-commit failures are grouped; the commit stands."""
        workflow = Workflow()

        async def mail(event):
            await asyncio.sleep(0)
            raise ValueError("mail server down")

        def queue(event):
            raise OSError("queue full")

        workflow.after_commit(mail)
        workflow.after_commit(queue)
        session = _session(workflow)
        with pytest.raises(AfterCommitHookFailed) as info:
            await AsyncSession(session).close()
        assert session.state is State.CLOSED
        assert info.value.record == session.history[-1]
        assert [type(e) for e in info.value.exceptions] == [ValueError, OSError]

    async def test_each_failure_names_its_hook(self):
        """Each exception in the group has a note naming the after-commit hook that raised it."""
        workflow = Workflow()

        async def fail(event):
            await asyncio.sleep(0)
            raise ValueError("mail server down")

        workflow.after_commit(lambda event: None, name="fine")
        workflow.after_commit(fail, name="mailer")
        with pytest.raises(AfterCommitHookFailed) as info:
            await AsyncSession(_session(workflow)).close()
        (error,) = info.value.exceptions
        assert error.__notes__ == ["after-commit hook 'mailer'"]

    async def test_after_commit_may_await_a_trigger_on_its_session(self):
        """An async after-commit hook may fire the next trigger through a face."""
        workflow = Workflow()

        async def cancel_right_away(event):
            await AsyncSession(event.session).cancel()

        workflow.after_commit(cancel_right_away, trigger=Trigger.CLOSE)
        session = _session(workflow)
        async with asyncio.timeout(HANG):
            await AsyncSession(session).close()
        assert [r.trigger for r in session.history] == [Trigger.CLOSE, Trigger.CANCEL]

    async def test_trigger_inside_a_pre_commit_hook_is_refused(self):
        """Awaiting a trigger on its own session before the commit fails cleanly."""
        workflow = Workflow()

        async def cancel_too_early(event):
            await AsyncSession(event.session).cancel()

        workflow.before(cancel_too_early, trigger=Trigger.CLOSE)
        session = _session(workflow)
        before = session.snapshot()
        with pytest.raises(HookFailed) as info:
            async with asyncio.timeout(HANG):
                await AsyncSession(session).close()
        assert isinstance(info.value.__cause__, TransitionInProgress)
        assert _unchanged(session, before)


@pytest.mark.asyncio
class TestSerialization:
    @staticmethod
    def _bracketing(workflow: Workflow, log: list[tuple[str, int]], gate: Gate) -> None:
        """Log the start and the end of every transition, held open by ``gate``."""

        async def start(event):
            log.append(("start", len(event.session.history)))
            await gate(event)

        async def end(event):
            await asyncio.sleep(0)
            log.append(("end", len(event.session.history)))

        workflow.guard(start)
        workflow.after_commit(end)

    async def test_a_task_whose_trigger_failed_waits_its_turn_next_time(self):
        """After a task's trigger raised, its next trigger still holds off another task's."""
        workflow, gate = Workflow(), Gate()
        failures = [RuntimeError("once")]

        def fail_once(event):
            if failures:
                raise failures.pop()

        workflow.before(fail_once, trigger=Trigger.CLOSE)
        workflow.before(gate, trigger=Trigger.CLOSE)
        face = AsyncSession(_session(workflow))
        with pytest.raises(HookFailed):
            await face.close()

        async def cancel_meanwhile():
            await gate.entered.wait()
            return await face.cancel()

        async def open_the_gate():
            await gate.entered.wait()
            await _spin()
            gate.release.set()

        cancelling = asyncio.create_task(cancel_meanwhile())
        opening = asyncio.create_task(open_the_gate())
        async with asyncio.timeout(HANG):
            await face.close()
            await cancelling
            await opening
        assert [r.trigger for r in face.session.history] == [Trigger.CLOSE, Trigger.CANCEL]

    @pytest.mark.parametrize("shared_face", [True, False])
    async def test_triggers_on_one_session_never_interleave(self, shared_face):
        """Two tasks firing on one session take turns: the second starts after the first ends."""
        workflow = Workflow()
        log: list[tuple[str, int]] = []
        gate = Gate()
        self._bracketing(workflow, log, gate)
        session = _session(workflow, State.CLOSED)
        face = AsyncSession(session)
        faces = (face, face) if shared_face else (face, AsyncSession(session))
        first = asyncio.create_task(faces[0].return_items(ONE))
        await gate.entered.wait()
        second = asyncio.create_task(faces[1].return_items(ONE))
        await _spin()
        assert log == [("start", 0)]  # the second waits while the first is in a hook
        gate.release.set()
        async with asyncio.timeout(HANG):
            records = await asyncio.gather(first, second)
        assert log == [("start", 0), ("end", 1), ("start", 1), ("end", 2)]
        assert session.history == tuple(records)

    async def test_different_sessions_run_concurrently(self):
        """Slow hooks on two sessions overlap: each waits for the other to have started."""
        workflow = Workflow()
        started = {"a": asyncio.Event(), "b": asyncio.Event()}
        log: list[str] = []

        async def meet(event):
            me = event.session.integration_id
            other = "b" if me == "a" else "a"
            log.append(f"start {me}")
            started[me].set()
            await started[other].wait()  # only returns if the other hook runs meanwhile
            log.append(f"end {me}")

        workflow.before(meet)
        a = AsyncSession(CustomerSession(integration_id="a", workflow=workflow))
        b = AsyncSession(CustomerSession(integration_id="b", workflow=workflow))
        async with asyncio.timeout(HANG):
            await asyncio.gather(a.close(), b.close())
        assert sorted(log[:2]) == ["start a", "start b"]
        assert sorted(log[2:]) == ["end a", "end b"]

    async def test_why_not_waits_for_the_trigger_in_progress(self):
        """why_not() during a trigger answers for the state that trigger leaves."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        face = AsyncSession(_session(workflow))
        closing = asyncio.create_task(face.close())
        await gate.entered.wait()
        asking = asyncio.create_task(face.can(Trigger.CLOSE))
        await _spin()
        assert not asking.done()
        gate.release.set()
        await closing
        assert await asking is False
        assert face.state is State.CLOSED

    async def test_sync_trigger_from_another_task_while_asked_is_refused(self):
        """A sync trigger while a face awaits why_not()'s guards is refused, never undone."""
        workflow = Workflow()
        gate = Gate()
        effects = []
        workflow.guard(gate, trigger=Trigger.CANCEL)
        workflow.after_commit(lambda event: effects.append("mailed"), trigger=Trigger.CLOSE)
        session = _session(workflow)
        asking = asyncio.create_task(AsyncSession(session).why_not(Trigger.CANCEL))
        await gate.entered.wait()
        with pytest.raises(TransitionInProgress) as info:
            session.close()
        assert (info.value.running, info.value.asking) == (Trigger.CANCEL, True)
        gate.release.set()
        assert await asking == ()
        assert (session.state, session.history, effects) == (State.OPEN, (), [])
        record = session.close()
        assert (session.history, effects) == ((record,), ["mailed"])

    async def test_sync_edit_from_another_task_while_asked_is_refused(self):
        """An edit while a face awaits why_not()'s guards is refused, never silently lost."""
        workflow = Workflow()
        gate = Gate()
        workflow.guard(gate, trigger=Trigger.CANCEL)
        session = _session(workflow)
        asking = asyncio.create_task(AsyncSession(session).can(Trigger.CANCEL))
        await gate.entered.wait()
        for edit in (
            lambda: session.set_coupon("SAVE10"),
            lambda: session.__setstate__(session.snapshot()),
        ):
            with pytest.raises(SessionNotEditable) as info:
                edit()
            assert (info.value.running, info.value.asking) == (Trigger.CANCEL, True)
        gate.release.set()
        assert await asking is True
        assert (session.coupon, session.update_count, session._running) == (None, 1, None)
        session.set_coupon("SAVE10")
        assert session.coupon == "SAVE10"

    async def test_sync_edit_from_another_task_during_a_trigger_is_refused(self):
        """An edit from another task while an async trigger awaits its hook changes nothing."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)
        before = session.snapshot()
        closing = asyncio.create_task(AsyncSession(session).close())
        await gate.entered.wait()
        with pytest.raises(SessionNotEditable) as info:
            session.set_cart_items([])
        assert (info.value.running, info.value.elsewhere) == (Trigger.CLOSE, True)
        assert session.snapshot() == before
        gate.release.set()
        record = await closing
        assert (session.history, session.cart_items) == ((record,), (ITEM,))

    async def test_a_task_or_thread_its_hook_awaits_may_edit(self):
        """A hook's own tasks and asyncio.to_thread() helpers carry its context: they edit."""
        workflow = Workflow()

        async def edit_in_helpers(event):
            await asyncio.create_task(_edit(event.session.set_coupon, "TASK"))
            await asyncio.to_thread(event.session.set_referral, "THREAD")

        async def _edit(edit, value):
            edit(value)

        workflow.before(edit_in_helpers, trigger=Trigger.CLOSE)
        session = _session(workflow)
        await AsyncSession(session).close()
        assert (session.coupon, session.referral, session.state) == ("TASK", "THREAD", State.CLOSED)

    async def test_an_executor_thread_without_the_hooks_context_is_refused(self):
        """run_in_executor() does not copy the hook's context: its edit is from elsewhere."""
        workflow = Workflow()

        async def edit_in_executor(event):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, event.session.set_coupon, "POOL")

        workflow.before(edit_in_executor, trigger=Trigger.CLOSE)
        session = _session(workflow)
        with pytest.raises(HookFailed) as info:
            await AsyncSession(session).close()
        assert isinstance(info.value.__cause__, SessionNotEditable)
        assert info.value.__cause__.elsewhere is True
        assert (session.coupon, session.state, session.update_count) == (None, State.OPEN, 1)

    async def test_async_guard_firing_on_its_session_while_asked_is_refused(self):
        """A guard that awaits a trigger on the session it is asked about is refused."""
        workflow = Workflow()

        async def closer(event):
            await AsyncSession(event.session).close()

        workflow.guard(closer, trigger=Trigger.CANCEL)
        session = _session(workflow)
        async with asyncio.timeout(HANG):
            with pytest.raises(HookFailed) as info:
                await AsyncSession(session).why_not(Trigger.CANCEL)
        assert isinstance(info.value.__cause__, TransitionInProgress)
        assert (session.state, session.history, session._running) == (State.OPEN, (), None)

    async def test_setstate_from_another_task_during_a_trigger_is_refused(self):
        """A reload from another task while an async trigger awaits its hooks is refused."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)
        closing = asyncio.create_task(AsyncSession(session).close())
        await gate.entered.wait()
        with pytest.raises(SessionNotEditable) as info:
            session.__setstate__(session.snapshot())
        assert (info.value.running, info.value.asking) == (Trigger.CLOSE, False)
        gate.release.set()
        record = await closing
        assert session.history == (record,)

    @staticmethod
    async def _cancel_during_async_close() -> tuple[CustomerSession, TransitionInProgress]:
        """A sync cancel() from this task while another task's async close() awaits a hook."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)
        closing = asyncio.create_task(AsyncSession(session).close())
        await gate.entered.wait()
        with pytest.raises(TransitionInProgress) as info:
            session.cancel()
        gate.release.set()
        await closing
        return session, info.value

    async def test_sync_trigger_during_an_async_one_is_refused(self):
        """A sync trigger while an async one is under way raises TransitionInProgress."""
        session, _ = await self._cancel_during_async_close()
        assert [r.trigger for r in session.history] == [Trigger.CLOSE]

    async def test_a_sync_trigger_from_another_task_is_told_to_await_it(self):
        """A sync trigger refused for another task's async one is advised to use the face."""
        _, refusal = await self._cancel_during_async_close()
        assert refusal.elsewhere is True
        assert "in progress in another task or thread" in str(refusal)
        assert "await cancel() through AsyncSession, which waits for it" in str(refusal)

    async def test_a_trigger_from_an_async_hook_is_told_to_use_an_after_commit_hook(self):
        """A trigger refused inside an async pre-commit hook is advised as in the sync face."""
        workflow = Workflow()

        async def cancel_instead(event):
            await AsyncSession(event.session).cancel()

        workflow.before(cancel_instead, trigger=Trigger.CLOSE)
        session = _session(workflow)
        with pytest.raises(HookFailed) as info:
            await AsyncSession(session).close()
        refused = info.value.__cause__
        assert isinstance(refused, TransitionInProgress)
        assert refused.elsewhere is False
        assert str(refused).endswith("fire it from an after-commit hook instead")


@pytest.mark.asyncio
class TestAtomicAcrossAwaits:
    """An atomic() block that awaits holds its session against every other task."""

    @staticmethod
    def _mailing(effects: list[str]) -> Workflow:
        workflow = Workflow()
        workflow.after_commit(lambda event: effects.append(f"mailed {event.trigger}"))
        return workflow

    @staticmethod
    def _slow_close() -> tuple[Workflow, asyncio.Event]:
        workflow, started = Workflow(), asyncio.Event()

        async def slow(event):
            started.set()
            await asyncio.sleep(0.01)

        workflow.before(slow, trigger=Trigger.CLOSE)
        return workflow, started

    async def test_a_trigger_running_when_the_block_ends_keeps_the_session(self):
        """A block ending while its task's trigger runs leaves the session to that trigger."""
        workflow, started = self._slow_close()
        session = _session(workflow)
        with session.atomic():
            closing = asyncio.create_task(AsyncSession(session).close())
            await started.wait()
        with pytest.raises(TransitionInProgress):
            session.cancel()  # an outsider: the close is still in progress
        await closing
        assert [r.destination for r in session.history] == [State.CLOSED]

    async def test_a_trigger_running_when_the_block_rolls_back_does_not_commit(self):
        """A block rolling back under its task's trigger: that trigger is refused, nothing moves."""
        workflow, started = self._slow_close()
        session = _session(workflow)
        tasks: list[asyncio.Task[object]] = []

        async def failing_block() -> None:
            with session.atomic():
                session.set_coupon("IN-BLOCK")
                tasks.append(asyncio.create_task(AsyncSession(session).close()))
                await started.wait()
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await failing_block()
        (closing,) = tasks
        with pytest.raises(SessionNotEditable):
            session.set_referral("OUTSIDER")  # busy until the orphaned close ends
        with pytest.raises(TransitionInProgress, match="rolled back before it committed"):
            await closing
        assert (session.state, session.history, session.coupon) == (State.OPEN, (), None)
        session.set_referral("OUTSIDER")  # free again
        assert session.referral == "OUTSIDER"

    async def test_the_refusal_of_a_trigger_the_block_rolled_back_under_says_why(self):
        """The refused trigger's message gives the rollback as the reason, in one sentence."""
        workflow, started = self._slow_close()
        session = _session(workflow)
        tasks: list[asyncio.Task[object]] = []

        async def failing_block() -> None:
            with session.atomic():
                tasks.append(asyncio.create_task(AsyncSession(session).close()))
                await started.wait()
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await failing_block()
        with pytest.raises(TransitionInProgress) as caught:
            await tasks[0]
        assert str(caught.value) == (
            f"session {session.integration_id!r}: cannot close() because the atomic() block "
            "it was fired in rolled back before it committed"
        )

    @pytest.mark.parametrize("phase", [Phase.GUARD, Phase.BEFORE], ids=["guard", "hook"])
    async def test_an_orphaned_trigger_that_fails_restores_nothing(self, phase):
        """A trigger orphaned by a rolled-back block, whose guard or hook fails, restores none."""
        workflow = Workflow()

        async def slow_failure(event):
            await asyncio.sleep(0.01)
            if phase is Phase.GUARD:
                return "not now"
            raise RuntimeError("too late")

        workflow.register(phase, slow_failure, key=Trigger.CANCEL)
        session = _session(workflow)
        tasks: list[asyncio.Task[object]] = []

        async def failing_block() -> None:
            with session.atomic():
                session.close()
                tasks.append(asyncio.create_task(AsyncSession(session).cancel()))
                await asyncio.sleep(0)
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await failing_block()
        with pytest.raises(GuardRejected if phase is Phase.GUARD else HookFailed):
            await tasks[0]
        assert (session.state, session.history) == (State.OPEN, ())
        session.set_coupon("FREE")  # the session is free again

    @pytest.mark.parametrize("asking", [False, True], ids=["trigger", "asking"])
    async def test_the_block_fires_again_after_a_nested_rollback_under_its_task(self, asking):
        """After a nested block rolled back under a task's trigger or asking, the block fires."""
        workflow, started = Workflow(), asyncio.Event()

        async def slow(event):
            started.set()
            await asyncio.sleep(0.01)

        workflow.register(Phase.GUARD if asking else Phase.BEFORE, slow, key=Trigger.CLOSE)
        session = _session(workflow)
        face = AsyncSession(session)
        with session.atomic():
            with pytest.raises(RuntimeError), session.atomic():  # noqa: PT012 - the block is what is tested
                task = asyncio.create_task(face.can(Trigger.CLOSE) if asking else face.close())
                await started.wait()
                raise RuntimeError
            with contextlib.suppress(TransitionInProgress):  # the orphaned close
                await task
            await face.close()
        assert [r.trigger for r in session.history] == [Trigger.CLOSE]

    async def test_asking_under_way_when_the_block_ends_frees_the_session_once_answered(self):
        """A block ending while its task's can() awaits a guard frees the session once answered."""
        workflow, started = Workflow(), asyncio.Event()

        async def slow(event):
            started.set()
            await asyncio.sleep(0.01)

        workflow.guard(slow, trigger=Trigger.CLOSE)
        session = _session(workflow)
        with session.atomic():
            asking = asyncio.create_task(AsyncSession(session).can(Trigger.CLOSE))
            await started.wait()
        assert await asking
        session.set_coupon("FREE")  # the session is free again
        assert session._running is None

    async def test_a_task_of_the_block_cannot_nest_a_block_on_its_session(self):
        """Blocks of several tasks would roll back over each other: a child task's is refused."""
        session = _session()

        async def child() -> None:
            with session.atomic():
                pass  # pragma: no cover - refused before

        with session.atomic():
            with pytest.raises(SessionNotEditable, match="nest blocks in the task") as refused:
                await asyncio.create_task(child())
            session.set_coupon("OWN")  # the block's own task still may
        assert refused.value.held
        assert session.coupon == "OWN"
        session.close()  # free after the block

    async def test_a_task_of_the_block_waits_out_a_nested_block(self):
        """While the block's task has a nested block open, its other tasks are refused."""
        session = _session()
        nested_open, tried = asyncio.Event(), asyncio.Event()
        outcome: list[BaseException] = []

        async def child() -> None:
            await nested_open.wait()
            try:
                session.close()
            except TransitionInProgress as exc:
                outcome.append(exc)
            tried.set()

        with session.atomic():
            task = asyncio.create_task(child())
            with contextlib.suppress(RuntimeError), session.atomic():
                nested_open.set()
                await tried.wait()
                raise RuntimeError
            await task
        assert len(outcome) == 1
        assert (session.state, session.history) == (State.OPEN, ())

    async def test_an_orphaned_trigger_cannot_edit_from_its_hooks(self):
        """After its block rolled back, a running trigger's hook edit is refused, none kept."""
        workflow, started = Workflow(), asyncio.Event()

        async def slow_then_edit(event):
            started.set()
            await asyncio.sleep(0.01)
            event.session.set_coupon("LEAK")

        workflow.before(slow_then_edit, trigger=Trigger.CLOSE)
        session = _session(workflow)
        tasks: list[asyncio.Task[object]] = []

        async def failing_block() -> None:
            with session.atomic():
                tasks.append(asyncio.create_task(AsyncSession(session).close()))
                await started.wait()
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await failing_block()
        with pytest.raises(HookFailed):
            await tasks[0]
        assert (session.state, session.coupon, session.history) == (State.OPEN, None, ())

    async def test_trigger_of_another_task_is_refused_and_nothing_is_undone(self):
        """B's close while A's block awaits is refused; A's rollback undoes only A's edit."""
        effects: list[str] = []
        session = _session(self._mailing(effects))
        inside, failing = asyncio.Event(), asyncio.Event()

        async def block():
            with session.atomic():
                session.set_coupon("A")
                inside.set()
                await failing.wait()
                raise RuntimeError("A fails")

        holder = asyncio.create_task(block())
        await inside.wait()
        with pytest.raises(TransitionInProgress) as info:
            await AsyncSession(session).close()
        assert (info.value.held, info.value.running, info.value.asking) == (True, None, False)
        assert "atomic() block of another task or thread" in str(info.value)
        failing.set()
        with pytest.raises(RuntimeError, match="A fails"):
            await holder
        assert (session.state, session.coupon, session.history, effects) == (
            State.OPEN,
            None,
            (),
            [],
        )
        assert session._running is None
        record = await AsyncSession(session).close()
        assert (session.history, effects) == ((record,), ["mailed close"])

    async def test_edit_reload_and_block_of_another_task_are_refused(self):
        """Another task's edit, __setstate__ and atomic() on a held session change nothing."""
        session = _session()
        inside, done = asyncio.Event(), asyncio.Event()

        async def block():
            with session.atomic():
                session.set_coupon("A")
                inside.set()
                await done.wait()

        holder = asyncio.create_task(block())
        await inside.wait()
        before = session.snapshot()

        def reopen_block() -> None:
            with session.atomic():
                pass

        for operation, attempt in (
            ("set_coupon", lambda: session.set_coupon("B")),
            ("__setstate__", lambda: session.__setstate__(session.snapshot())),
            ("atomic", reopen_block),
        ):
            with pytest.raises(SessionNotEditable) as info:
                attempt()
            assert (info.value.operation, info.value.held, info.value.running) == (
                operation,
                True,
                None,
            )
        assert session.snapshot() == before
        done.set()
        await holder
        assert (session.coupon, session._running) == ("A", None)

    async def test_edit_of_another_task_while_the_blocks_trigger_awaits_is_refused(self):
        """While a trigger of the block awaits its hook, another task still cannot edit."""
        workflow = Workflow()
        gate = Gate()
        workflow.before(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)

        async def block():
            with session.atomic():
                await AsyncSession(session).close()
                raise RuntimeError("undo the close")

        holder = asyncio.create_task(block())
        await gate.entered.wait()
        with pytest.raises(SessionNotEditable) as info:
            session.set_profile_id("someone")
        assert info.value.held
        gate.release.set()
        with pytest.raises(RuntimeError):
            await holder
        assert (session.state, session.profile_id, session._running) == (State.OPEN, None, None)

    async def test_tasks_the_block_creates_may_change_the_session(self):
        """A task created inside the block carries its context, and so may fire and edit."""
        session = _session()

        async def child():
            session.set_coupon("CHILD")
            return await AsyncSession(session).close()

        with session.atomic():
            async with asyncio.TaskGroup() as group:
                closing = group.create_task(child())
        assert (session.coupon, session.history) == ("CHILD", (closing.result(),))
        assert session._running is None

    async def test_work_handed_to_a_thread_by_the_block_belongs_to_it(self):
        """asyncio.to_thread() copies the block's context: the thread may fire."""
        session = _session()
        with session.atomic():
            record = await asyncio.to_thread(session.close)
        assert session.history == (record,)

    async def test_a_block_of_the_blocks_task_holds_against_its_siblings(self):
        """Two tasks of one block: a block one opens on another session excludes the other."""
        outer, other = _session(), CustomerSession(integration_id="order-2")
        inside, done = asyncio.Event(), asyncio.Event()

        async def first():
            with other.atomic():
                inside.set()
                await done.wait()

        async def second():
            await inside.wait()
            try:
                other.close()
            finally:
                done.set()

        with outer.atomic():
            results = await asyncio.gather(first(), second(), return_exceptions=True)
        assert isinstance(results[1], TransitionInProgress)
        assert results[1].held
        assert (other.state, other._running) == (State.OPEN, None)

    async def test_nested_blocks_across_awaits_roll_back_to_their_own_start(self):
        """An inner block that fails undoes its own changes; the outer block's stand."""
        session = _session()
        with session.atomic():
            session.set_coupon("OUTER")
            with pytest.raises(RuntimeError), session.atomic():  # noqa: PT012 - the block is what is tested
                await AsyncSession(session).close()
                await asyncio.sleep(0)
                raise RuntimeError("inner fails")
            assert (session.state, session.coupon) == (State.OPEN, "OUTER")
            await AsyncSession(session).cancel()
        assert (session.state, session.coupon, session._running) == (
            State.CANCELLED,
            "OUTER",
            None,
        )

    async def test_asking_inside_the_block_awaits_its_guards_and_keeps_the_hold(self):
        """can() in the block awaits the guards; afterwards the block still holds the session."""
        workflow = Workflow()
        gate = Gate()
        workflow.guard(gate, trigger=Trigger.CLOSE)
        session = _session(workflow)
        with session.atomic():
            asking = asyncio.create_task(AsyncSession(session).can(Trigger.CLOSE))
            await gate.entered.wait()
            with pytest.raises(SessionNotEditable) as info:
                session.set_coupon("MEANWHILE")  # the block's own code, but asked meanwhile
            assert (info.value.asking, info.value.held) == (True, False)
            gate.release.set()
            assert await asking is True
            # run_in_executor() does not copy the context: that thread is outside.
            loop = asyncio.get_running_loop()
            with pytest.raises(TransitionInProgress):
                await loop.run_in_executor(None, session.cancel)
        assert (session.state, session._running) == (State.OPEN, None)


class TestLocks:
    def test_the_lock_goes_with_the_session(self):
        """A session's lock entry is dropped when the session is collected."""
        session = _session()
        asyncio.run(AsyncSession(session).close())
        key = id(session)
        assert key in aio._TURNS
        ref = weakref.ref(session)
        del session
        gc.collect()
        assert ref() is None
        assert key not in aio._TURNS

    def test_a_session_outlives_its_event_loop(self):
        """A session contended under one event loop can be contended under the next."""
        workflow = Workflow()

        async def pause(event):
            await asyncio.sleep(0)

        workflow.before(pause)
        session = _session(workflow, State.CLOSED)

        async def two_returns():
            await asyncio.gather(
                AsyncSession(session).return_items(ONE), AsyncSession(session).return_items(ONE)
            )

        asyncio.run(two_returns())
        asyncio.run(two_returns())
        assert len(session.history) == 4

    def test_another_loop_using_the_session_does_not_split_a_loops_turns(self):
        """Tasks of one loop still take turns after a loop in another thread used the session."""
        workflow = Workflow()
        session = _session(workflow)

        async def ask_from_another_loop():
            return await AsyncSession(session).can(Trigger.CANCEL)

        async def close_then_cancel():
            gate = Gate()
            workflow.before(gate, trigger=Trigger.CLOSE)
            closing = asyncio.create_task(AsyncSession(session).close())
            await gate.entered.wait()
            # Another thread's loop asks meanwhile (refused: the session is busy).
            with ThreadPoolExecutor(1) as pool:
                assert not pool.submit(asyncio.run, ask_from_another_loop()).result(HANG)
            cancelling = asyncio.create_task(AsyncSession(session).cancel())
            await _spin()
            gate.release.set()
            async with asyncio.timeout(HANG):
                return await closing, await cancelling

        closed, cancelled = asyncio.run(close_then_cancel())
        assert (closed.destination, cancelled.source) == (State.CLOSED, State.CLOSED)
        assert session.state is State.CANCELLED


@pytest.mark.asyncio
class TestAsyncEngine:
    async def test_machine_matches_the_table(self):
        """The async machine holds exactly the table's states and edges."""
        for spec in (CUSTOMER_SESSION, REOPENABLE_SESSION):
            engine = engine_for(spec).asynchronous
            assert isinstance(engine.machine, AsyncMachine)
            assert set(engine.machine.states) == {s.value for s in spec.states}
            assert engine.edges() == frozenset(spec.edges)
            assert not any(name.startswith("to_") for name in engine.machine.events)

    async def test_built_once_per_specification(self):
        """Every workflow of one specification shares one async machine."""
        assert Workflow().engine.asynchronous is engine_for(CUSTOMER_SESSION).asynchronous
        assert engine_for(CUSTOMER_SESSION).asynchronous is not (
            engine_for(REOPENABLE_SESSION).asynchronous
        )

    async def test_holds_no_model_and_tracks_no_task(self):
        """Driving sessions leaves no model and no task in the machine's registries."""
        workflow = Workflow()
        workflow.before(lambda event: None)
        for _ in range(5):
            await AsyncSession(_session(workflow)).close()
        assert workflow.engine.asynchronous.machine.models == []
        assert AsyncMachine.async_tasks == {}
