import contextvars
import itertools
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import ClassVar, NamedTuple

import pytest
from hypothesis import given

from customer_session import (
    CUSTOMER_SESSION,
    AfterCommitHookFailed,
    CartItem,
    CustomerSession,
    Edge,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    Phase,
    ProtectedFieldError,
    ReturnedItem,
    SessionNotEditable,
    Specification,
    State,
    TransitionInProgress,
    TransitionRecord,
    Trigger,
    UnknownTrigger,
    ValidationError,
    Workflow,
    WorkflowError,
    _transaction,
)
from customer_session._transaction import twin
from customer_session.testing import sessions

from .conftest import edit_every_field

ITEM = CartItem(sku="SOCK", quantity=100, price=1.0)
ONE = (ReturnedItem(position=0, quantity=1),)
# How long a thread waits for another: only a safety net against a hang, long enough
# for a loaded machine, where a thread may not run for seconds. No verdict relies on it.
WAIT = 60


def _fire(session: CustomerSession, trigger: Trigger):
    return session.fire(trigger, items=ONE if trigger is Trigger.RETURN_ITEMS else ())


def _session(workflow: Workflow | None = None, state: State = State.OPEN) -> CustomerSession:
    return CustomerSession(
        integration_id="order-1",
        state=state,
        cart_items=[ITEM],
        workflow=workflow or CustomerSession.default_workflow,
    )


def _nested_block(session: CustomerSession):
    """A block nested in the running code's block, left open while the generator is suspended."""
    with session.atomic():
        yield


class TestTable:
    def test_issue_walkthrough(self):
        """The lifecycle of the issue's example works and records every step."""
        s = _session()
        assert s.allowed_triggers == frozenset({"close", "cancel"})
        s.close()
        s.return_items(ONE)
        s.cancel()
        assert [(r.source, r.destination) for r in s.history] == [
            (State.OPEN, State.CLOSED),
            (State.CLOSED, State.PARTIALLY_RETURNED),
            (State.PARTIALLY_RETURNED, State.CANCELLED),
        ]
        with pytest.raises(IllegalTransition) as info:
            s.close()
        assert info.value.trigger is Trigger.CLOSE
        assert info.value.state is State.CANCELLED
        assert info.value.allowed == frozenset()
        assert "close()" in str(info.value)
        assert "cancelled" in str(info.value)

    def test_illegal_message_lists_allowed_triggers(self):
        """An illegal trigger's message says what is allowed instead."""
        with pytest.raises(IllegalTransition, match=r"allowed: cancel\(\), close\(\)"):
            _session().return_items(ONE)

    @pytest.mark.parametrize("start", sorted(CUSTOMER_SESSION.initial_states))
    def test_every_sequence_up_to_eight_follows_the_table(self, start):
        """Every trigger sequence up to length 8 matches the table step by step."""
        triggers = CUSTOMER_SESSION.triggers
        checked = 0
        for length in range(1, 9):
            for sequence in itertools.product(triggers, repeat=length):
                session = _session(state=start)
                for trigger in sequence:
                    before = session.state
                    expected = CUSTOMER_SESSION.target(before, trigger)
                    if expected is None:
                        with pytest.raises(IllegalTransition):
                            _fire(session, trigger)
                        assert session.state is before
                    else:
                        record = _fire(session, trigger)
                        assert session.state is expected
                        assert record.source is before
                        assert record.destination is expected
                checked += 1
        assert checked == sum(3**n for n in range(1, 9))

    def test_unknown_trigger_by_name(self):
        """Firing a name the table does not know is an UnknownTrigger (a ValueError)."""
        with pytest.raises(UnknownTrigger, match="ship") as info:
            _session().fire("ship")
        assert isinstance(info.value, ValueError)

    def test_close_takes_no_items(self):
        """close() given items is refused: only return_items takes items."""
        with pytest.raises(ValidationError, match="takes no items"):
            _session().fire(Trigger.CLOSE, items=ONE)

    @pytest.mark.parametrize("registered", [False, True])
    def test_a_refused_return_from_an_iterator_names_its_problems(self, registered):
        """A return given as an iterator is refused for its own problems, read once."""
        workflow = Workflow()
        if registered:
            workflow.before(lambda event: None)
        s = _session(workflow, State.CLOSED)
        with pytest.raises(ValidationError) as info:
            s.return_items(iter([ReturnedItem(position=7, quantity=1)]))
        assert [p.path for p in info.value.problems] == ["items[0].position"]
        assert (s.state, s.history) == (State.CLOSED, ())


def _entries(read: list[int], count: int):
    """A generator of ``count`` returned items that notes each one it hands out."""
    for n in range(count):
        read.append(n)
        yield ReturnedItem(position=0, quantity=1)


class _Unreadable:
    """An iterable whose iteration fails."""

    def __iter__(self):
        raise OSError("gone")


class TestItemsForATriggerThatTakesNone:
    @pytest.mark.parametrize("registered", [False, True])
    def test_an_empty_generator_is_no_items(self, registered):
        """An empty generator given to close() by name is accepted, as an empty list is."""
        workflow = Workflow()
        if registered:
            workflow.before(lambda event: None)
        s = _session(workflow)
        record = s.fire(Trigger.CLOSE, items=iter(()))
        assert (record.destination, s.state) == (State.CLOSED, State.CLOSED)

    @pytest.mark.parametrize("registered", [False, True])
    def test_a_generator_with_items_is_refused_after_one_read(self, registered):
        """A non-empty generator given to close() is refused, having been read once only."""
        workflow = Workflow()
        if registered:
            workflow.before(lambda event: None)
        s = _session(workflow)
        read: list[int] = []
        with pytest.raises(ValidationError, match=r"close\(\) takes no items"):
            s.fire(Trigger.CLOSE, items=_entries(read, 3))
        assert read == [0]
        assert (s.state, s.history) == (State.OPEN, ())

    def test_a_generator_of_one_item_is_refused(self):
        """A generator of exactly one item is refused: the entry read to decide is not lost."""
        s = _session()
        with pytest.raises(ValidationError, match="takes no items"):
            s.fire(Trigger.CANCEL, items=_entries([], 1))
        assert s.state is State.OPEN

    def test_can_and_why_not_take_an_empty_generator_as_no_items(self):
        """can() and why_not() accept an empty generator for close() and name no problem."""
        s = _session()
        assert s.can(Trigger.CLOSE, items=iter(()))
        assert s.why_not(Trigger.CLOSE, items=(n for n in ())) == ()

    def test_why_not_refuses_a_generator_with_items(self):
        """why_not() reports items given as a non-empty generator to a trigger taking none."""
        (refusal,) = _session().why_not(Trigger.CLOSE, items=_entries([], 2))
        assert "close() takes no items" in refusal.reason

    def test_an_iterable_that_cannot_be_read_is_refused(self):
        """An iterable whose iteration raises is refused with its error, not taken as empty."""
        s = _session()
        with pytest.raises(ValidationError, match=r"items: cannot be read \(OSError: gone\)"):
            s.fire(Trigger.CLOSE, items=_Unreadable())
        assert s.state is State.OPEN

    def test_a_true_value_that_is_not_iterable_is_still_refused(self):
        """A value that is no iterable and is true (a number) is refused as before."""
        with pytest.raises(ValidationError, match="takes no items"):
            _session().fire(Trigger.CLOSE, items=5)  # type: ignore[arg-type]


class TestGuards:
    def test_refusal_names_trigger_guard_and_reason(self):
        """A refusing guard raises GuardRejected naming trigger, source, guard and reason."""
        workflow = Workflow()

        @workflow.guard(trigger=Trigger.CLOSE)
        def cart_not_empty(event):
            return None if event.session.cart_items else "the cart is empty"

        s = CustomerSession(integration_id="o", workflow=workflow)
        before = s.snapshot()
        with pytest.raises(GuardRejected) as info:
            s.close()
        assert info.value.trigger is Trigger.CLOSE
        assert info.value.state is State.OPEN
        assert info.value.guard.endswith("cart_not_empty")
        assert info.value.reason == "the cart is empty"
        assert s.snapshot() == before

    def test_can_and_why_not_change_nothing(self):
        """can() and why_not() run every guard and change nothing."""
        workflow = Workflow()
        workflow.guard(lambda event: "no closing today", trigger=Trigger.CLOSE, name="calendar")
        workflow.guard(lambda event: "budget exhausted", trigger=Trigger.CLOSE, name="budget")
        s = CustomerSession(integration_id="o", workflow=workflow)
        before = s.snapshot()
        assert not s.can(Trigger.CLOSE)
        assert [str(r) for r in s.why_not(Trigger.CLOSE)] == [
            "calendar: no closing today",
            "budget: budget exhausted",
        ]
        assert s.can("cancel")
        assert s.why_not("cancel") == ()
        assert s.snapshot() == before

    def test_why_not_reports_the_table(self):
        """why_not() explains a trigger the table forbids."""
        (refusal,) = _session().why_not(Trigger.RETURN_ITEMS, items=ONE)
        assert refusal.guard is None
        assert "not" in refusal.reason or "cannot" in refusal.reason

    def test_why_not_reports_invalid_items(self):
        """why_not() lists what is wrong with the items of a return."""
        s = _session(state=State.CLOSED)
        reasons = [r.reason for r in s.why_not(Trigger.RETURN_ITEMS, items=[ReturnedItem(9, 1)])]
        assert any("position 9" in r for r in reasons)

    def test_guard_sees_the_returned_items(self):
        """A guard of return_items receives the items in its event."""
        workflow = Workflow()
        seen = []
        workflow.guard(lambda event: seen.append(event.returned_items), trigger="return_items")
        _session(workflow, State.CLOSED).return_items(ONE)
        assert seen == [ONE]

    def test_guard_returning_a_bool_is_an_error(self):
        """A guard must return None or a reason; True is reported, not taken as a yes."""
        workflow = Workflow()
        workflow.guard(lambda event: True, trigger=Trigger.CLOSE)  # type: ignore[arg-type,return-value]
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert info.value.phase is Phase.GUARD
        assert "return None" in str(info.value.__cause__)
        assert s.state is State.OPEN

    def test_guard_that_raises_rolls_back(self):
        """A guard that raises becomes HookFailed with the original chained."""
        workflow = Workflow()

        def broken(event):
            raise KeyError("missing")

        workflow.guard(broken)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert isinstance(info.value.__cause__, KeyError)
        assert s.state is State.OPEN

    def test_guards_after_a_refusal_are_not_asked(self):
        """Firing stops at the first guard that refuses: the guards after it do not run."""
        workflow = Workflow()
        asked: list[str] = []

        def first(event):
            asked.append("first")
            return "no"

        workflow.guard(first, trigger=Trigger.CLOSE, name="first")
        workflow.guard(lambda event: asked.append("second"), trigger=Trigger.CLOSE)
        with pytest.raises(GuardRejected, match="guard 'first': no"):
            _session(workflow).close()
        assert asked == ["first"]

    def test_guard_returning_an_empty_reason_is_an_error(self):
        """A refusal needs a reason: a guard returning "" is reported, not taken as one."""
        workflow = Workflow()
        workflow.guard(lambda event: "", trigger=Trigger.CLOSE, name="silent")
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert (info.value.phase, info.value.hook) == (Phase.GUARD, "silent")
        assert "non-empty reason" in str(info.value.__cause__)
        assert s.state is State.OPEN

    def test_a_guard_raising_while_asked_is_named_with_its_phase(self):
        """A guard that raises while why_not() asks is a HookFailed of the guard phase naming it."""
        workflow = Workflow()

        def broken(event):
            raise KeyError("missing")

        workflow.guard(lambda event: None, name="fine")
        workflow.guard(broken, name="broken")
        with pytest.raises(HookFailed) as info:
            _session(workflow).why_not(Trigger.CLOSE)
        assert (info.value.phase, info.value.hook) == (Phase.GUARD, "broken")
        assert isinstance(info.value.__cause__, KeyError)

    def test_a_guard_raising_while_asked_says_nothing_was_fired(self):
        """The HookFailed of a guard raising while can() asks says it asked, not rolled back."""
        workflow = Workflow()
        workflow.guard(lambda event: 1 / 0, name="broken")
        with pytest.raises(HookFailed) as info:
            _session(workflow).can(Trigger.CLOSE)
        assert info.value.asking
        assert str(info.value) == (
            "session 'order-1': can() or why_not() for close() from 'open' failed: "
            "guard hook 'broken' raised; nothing was fired or changed"
        )

    def test_guard_that_edits_then_refuses_rolls_back(self):
        """A guard's edit made before it refuses is undone with the refusal."""
        workflow = Workflow()

        def edit_then_refuse(event):
            event.session.set_attribute("touched", True)
            return "not today"

        workflow.guard(edit_then_refuse)
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(GuardRejected):
            s.close()
        assert s.snapshot() == before


class TestHookOrder:
    def test_phases_run_in_order_with_the_commit_between(self):
        """Guards, before, exit, enter, after run before the commit; after-commit after it."""
        workflow = Workflow()
        calls: list[tuple[str, State, int]] = []

        def spy(name):
            def hook(event):
                calls.append((name, event.session.state, len(event.session.history)))

            return hook

        workflow.guard(spy("guard"))
        workflow.before(spy("before"))
        workflow.on_exit(spy("exit"), state=State.OPEN)
        workflow.on_enter(spy("enter"), state=State.CLOSED)
        workflow.after(spy("after"))
        workflow.after_commit(spy("after_commit"))
        _session(workflow).close()
        assert calls == [
            ("guard", State.OPEN, 0),
            ("before", State.OPEN, 0),
            ("exit", State.OPEN, 0),
            ("enter", State.OPEN, 0),
            ("after", State.OPEN, 0),
            ("after_commit", State.CLOSED, 1),
        ]

    def test_event_record_describes_the_transition(self):
        """Hooks receive one event with session, trigger, source, destination and time."""
        workflow = Workflow(clock=lambda: datetime(2026, 3, 2, tzinfo=UTC))
        events = []
        workflow.after_commit(events.append)
        s = _session(workflow)
        record = s.close()
        (event,) = events
        assert event.session is s
        assert (event.trigger, event.source, event.destination) == (
            Trigger.CLOSE,
            State.OPEN,
            State.CLOSED,
        )
        assert event.timestamp == record.timestamp
        assert event.record() == record

    def test_internal_transition_skips_exit_and_enter(self):
        """A further return runs before/after hooks but no exit/enter hooks."""
        workflow = Workflow()
        calls: list[str] = []
        workflow.on_exit(lambda event: calls.append("exit"))
        workflow.on_enter(lambda event: calls.append("enter"))
        workflow.before(lambda event: calls.append("before"), trigger=Trigger.RETURN_ITEMS)
        workflow.after(lambda event: calls.append("after"), trigger=Trigger.RETURN_ITEMS)
        s = _session(workflow, State.CLOSED)
        s.return_items(ONE)
        calls.clear()
        s.return_items(ONE)
        assert calls == ["before", "after"]


@pytest.mark.parametrize("phase", [Phase.GUARD, Phase.BEFORE, Phase.EXIT, Phase.ENTER, Phase.AFTER])
class TestFailureBeforeCommit:
    def test_session_is_left_exactly_as_it_was(self, phase):
        """A hook raising in a pre-commit phase leaves every field and the history as they were."""
        workflow = Workflow()

        def edit_then_fail(event):
            event.session.set_attribute("touched", True)
            raise RuntimeError(phase.value)

        workflow.register(phase, edit_then_fail)
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(HookFailed) as info:
            s.close()
        assert info.value.phase is phase
        assert isinstance(info.value.__cause__, RuntimeError)
        assert s.snapshot() == before

    def test_the_error_names_the_hook_that_raised(self, phase):
        """HookFailed names the guard or hook that raised, not one that ran before it."""
        workflow = Workflow()

        def broken(event):
            raise RuntimeError(phase.value)

        workflow.register(phase, lambda event: None, name="fine")
        workflow.register(phase, broken, name="broken")
        with pytest.raises(HookFailed) as info:
            _session(workflow).close()
        assert (info.value.hook, info.value.phase, info.value.state) == (
            "broken",
            phase,
            State.OPEN,
        )

    def test_every_field_a_hook_edited_is_put_back(self, phase):
        """A hook that edits every editable field and then raises leaves each as it was."""
        workflow = Workflow()

        def edit_everything_then_fail(event):
            edit_every_field(event.session)
            raise RuntimeError(phase.value)

        workflow.register(phase, edit_everything_then_fail)
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(HookFailed):
            s.close()
        assert s.snapshot() == before

    def test_base_exceptions_roll_back_and_pass_through(self, phase):
        """KeyboardInterrupt-like exceptions roll back and are re-raised unwrapped."""
        workflow = Workflow()

        def edit_then_interrupt(event):
            event.session.set_attribute("touched", True)
            raise KeyboardInterrupt

        workflow.register(phase, edit_then_interrupt)
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(KeyboardInterrupt):
            s.close()
        assert s.snapshot() == before


# A table where a return leaves the session open, so a hook may edit the cart under it.
OPEN_RETURNS = CUSTOMER_SESSION.extend(
    "open_returns", Edge(Trigger.RETURN_ITEMS, State.OPEN, State.OPEN)
)


class OpenReturns(CustomerSession):
    specification: ClassVar[Specification] = OPEN_RETURNS
    default_workflow: ClassVar[Workflow] = Workflow(OPEN_RETURNS, name="tests.open_returns")


class TestReturnUnderAnEditedCart:
    @pytest.mark.parametrize(
        "edit",
        [lambda s: s.set_cart_items([]), lambda s: s.update_item(0, CartItem(sku="A", quantity=1))],
        ids=["emptied", "fewer-units"],
    )
    def test_a_return_the_hooks_left_no_room_for_is_refused_and_rolled_back(self, edit):
        """A before hook that changes the cart under a return's items: refused, nothing kept."""
        workflow = Workflow(OPEN_RETURNS)
        workflow.before(lambda event: edit(event.session), trigger=Trigger.RETURN_ITEMS)
        s = OpenReturns(
            integration_id="a", cart_items=[CartItem(sku="A", quantity=5)], workflow=workflow
        )
        before = s.snapshot()
        with pytest.raises(ValidationError, match="once its pre-commit hooks had changed the cart"):
            s.return_items([ReturnedItem(position=0, quantity=3)])
        assert s.snapshot() == before


class TestAfterCommit:
    def test_failure_never_undoes_the_commit(self):
        """After-commit failures are grouped and raised; the transition stays committed."""
        workflow = Workflow()
        ran: list[str] = []

        def first(event):
            ran.append("first")
            raise ValueError("mail server down")

        def second(event):
            ran.append("second")
            raise OSError("queue full")

        workflow.after_commit(first)
        workflow.after_commit(second)
        s = _session(workflow)
        with pytest.raises(AfterCommitHookFailed) as info:
            s.close()
        assert s.state is State.CLOSED
        assert ran == ["first", "second"]
        assert info.value.record == s.history[-1]
        assert [type(e) for e in info.value.exceptions] == [ValueError, OSError]
        assert isinstance(info.value, ExceptionGroup)

    def test_each_failure_names_its_hook(self):
        """Each exception in the group has a note naming the after-commit hook that raised it."""
        workflow = Workflow()

        def fail(event):
            raise ValueError("mail server down")

        workflow.after_commit(lambda event: None, name="fine")
        workflow.after_commit(fail, name="mailer")
        with pytest.raises(AfterCommitHookFailed) as info:
            _session(workflow).close()
        (error,) = info.value.exceptions
        assert error.__notes__ == ["after-commit hook 'mailer'"]

    def test_an_exception_raised_again_is_noted_once(self):
        """A hook raising one exception object on each failure leaves one note on it."""
        workflow = Workflow()
        down = ValueError("mail server down")  # a circuit breaker's stored error

        def fail(event):
            raise down

        workflow.after_commit(fail, name="mailer")
        for _ in range(3):
            with pytest.raises(AfterCommitHookFailed):
                _session(workflow).close()
        assert down.__notes__ == ["after-commit hook 'mailer'"]

    def test_except_star_keeps_the_record(self):
        """Splitting the group with except* keeps the committed record."""
        workflow = Workflow()
        workflow.after_commit(lambda event: (_ for _ in ()).throw(ValueError("x")))
        s = _session(workflow)
        caught = []
        try:
            s.close()
        except* ValueError as group:
            caught.append(group)
        assert caught[0].record == s.history[-1]

    def test_after_commit_may_fire_the_next_trigger(self):
        """An after-commit hook may fire a trigger on the same session."""
        workflow = Workflow()
        workflow.after_commit(lambda event: event.session.cancel(), trigger=Trigger.CLOSE)
        s = _session(workflow)
        s.close()
        assert s.state is State.CANCELLED

    def test_an_interrupt_keeps_the_failures_before_it(self):
        """An interrupt in an after-commit hook carries the failures of the hooks before it."""
        workflow = Workflow()

        def interrupt(event):
            raise KeyboardInterrupt

        workflow.after_commit(lambda event: (_ for _ in ()).throw(ValueError("x")), name="mail")
        workflow.after_commit(interrupt, name="crm")
        s = _session(workflow)
        with pytest.raises(KeyboardInterrupt) as info:
            s.close()
        group = info.value.__context__
        assert isinstance(group, AfterCommitHookFailed)
        assert group.record == s.history[-1]
        assert [str(e) for e in group.exceptions] == ["x"]

    def test_an_interrupt_says_what_committed_and_what_did_not_run(self):
        """An interrupt in an after-commit hook notes the commit, its hook and those skipped."""
        workflow = Workflow()

        def interrupt(event):
            raise KeyboardInterrupt

        workflow.after_commit(interrupt, name="crm")
        workflow.after_commit(lambda event: None, name="audit")
        workflow.after_commit(lambda event: None, name="stats")
        with pytest.raises(KeyboardInterrupt) as info:
            _session(workflow).close()
        (note,) = info.value.__notes__
        assert note == (
            "close() committed (open -> closed), then after-commit hook 'crm' was "
            "interrupted; 'audit', 'stats' did not run"
        )
        assert info.value.__context__ is None


async def _published(event):
    return None


def _wrapped(event):
    """A decorator's plain wrapper around an async hook: nothing marks it as async."""
    return _published(event)


class TestPlainCallableReturningAnAwaitable:
    @pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.AFTER_COMMIT])
    def test_before_the_commit_it_is_refused_and_rolled_back(self, phase):
        """A plain guard or hook that returns an awaitable fails the trigger; nothing changes."""
        workflow = Workflow()
        workflow.register(phase, _wrapped, name="publish")
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(HookFailed) as info:
            s.close()
        kind = "guard" if phase is Phase.GUARD else "hook"
        assert str(info.value.__cause__) == (
            f"{kind} 'publish' returned an awaitable (coroutine), so it is async; "
            "fire triggers through the async face"
        )
        assert s.snapshot() == before

    def test_after_the_commit_it_is_reported_not_dropped(self):
        """A plain after-commit hook returning an awaitable fails after the commit, not dropped."""
        workflow = Workflow()
        workflow.after_commit(_wrapped, name="publish")
        s = _session(workflow)
        with pytest.raises(AfterCommitHookFailed) as info:
            s.close()
        (error,) = info.value.exceptions
        assert isinstance(error, WorkflowError)
        assert "returned an awaitable" in str(error)
        assert s.state is State.CLOSED

    def test_asking_refuses_it_too(self):
        """why_not() refuses a plain guard that returns an awaitable, naming the async face."""
        workflow = Workflow()
        workflow.guard(_wrapped, name="publish")
        with pytest.raises(HookFailed) as info:
            _session(workflow).why_not(Trigger.CLOSE)
        assert "async face" in str(info.value.__cause__)


class TestReentrancy:
    def test_trigger_inside_a_pre_commit_hook_is_refused(self):
        """Firing a trigger from a before hook fails the outer transition cleanly."""
        workflow = Workflow()
        workflow.before(lambda event: event.session.cancel(), trigger=Trigger.CLOSE)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert isinstance(info.value.__cause__, TransitionInProgress)
        assert s.state is State.OPEN
        assert s.history == ()

    def test_a_trigger_from_its_own_hook_is_told_to_use_an_after_commit_hook(self):
        """A trigger refused inside a pre-commit hook is told to fire from an after-commit one."""
        workflow = Workflow()
        workflow.before(lambda event: event.session.cancel(), trigger=Trigger.CLOSE)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        refused = info.value.__cause__
        assert isinstance(refused, TransitionInProgress)
        assert refused.elsewhere is False
        assert str(refused) == (
            "session 'order-1': cannot cancel() while close() is in progress; "
            "fire it from an after-commit hook instead"
        )

    def test_a_trigger_from_another_thread_is_told_to_wait(self):
        """A trigger refused while another thread's trigger runs is told to try again after it."""
        in_hook, go_on = threading.Event(), threading.Event()

        def slow_before(event) -> None:
            in_hook.set()
            go_on.wait(WAIT)

        workflow = Workflow()
        workflow.before(slow_before, trigger=Trigger.CLOSE)
        s = _session(workflow)
        closing = threading.Thread(target=s.close)
        closing.start()
        try:
            assert in_hook.wait(WAIT)
            with pytest.raises(TransitionInProgress) as info:
                s.cancel()
        finally:
            go_on.set()
            closing.join(WAIT)
        assert info.value.elsewhere is True
        assert str(info.value).startswith(
            "session 'order-1': cannot cancel() while close() is in progress in another task or "
            "thread; try again once it has finished"
        )
        assert "after-commit" not in str(info.value)
        assert [r.trigger for r in s.history] == [Trigger.CLOSE]

    def test_a_hook_of_a_trigger_fired_from_a_hook_may_edit_the_outer_session(self):
        """A hook of another session's trigger, fired from a hook, still edits the outer session."""
        workflow = Workflow()

        def stamp_outer(event) -> None:
            if event.session is inner:
                outer.set_coupon("FROM-INNER")

        def close_inner(event) -> None:
            if event.session is outer:
                inner.close()

        workflow.before(stamp_outer, trigger=Trigger.CLOSE)
        workflow.before(close_inner, trigger=Trigger.CLOSE)
        outer = _session(workflow)
        inner = CustomerSession(integration_id="order-2", workflow=workflow)
        outer.close()
        assert (outer.state, outer.coupon, inner.state) == (
            State.CLOSED,
            "FROM-INNER",
            State.CLOSED,
        )

    def test_async_hook_is_refused_on_the_sync_face(self):
        """An async hook cannot run from a sync trigger; the error says so."""
        workflow = Workflow()

        async def notify(event):
            return None

        workflow.before(notify)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert "async" in str(info.value.__cause__)


class _HeldInPhase:
    """A guard or hook that says when a thread is in it and waits until the test lets it go on."""

    def __init__(self) -> None:
        """Closed until the test releases it."""
        self.entered, self.release = threading.Event(), threading.Event()
        self.carts: list[tuple[CartItem, ...]] = []

    def __call__(self, event) -> None:
        """Note the cart it sees, say so, then wait for the release."""
        self.carts.append(event.session.cart_items)
        self.entered.set()
        self.release.wait(WAIT)


def _closing_in_thread(
    s: CustomerSession,
) -> tuple[threading.Thread, list[object]]:
    """Start ``s.close()`` in a thread; the list gets its record or its error."""
    outcome: list[object] = []

    def close() -> None:
        try:
            outcome.append(s.close())
        except Exception as exc:
            outcome.append(exc)

    closing = threading.Thread(target=close)
    closing.start()
    return closing, outcome


class _Closing(NamedTuple):
    """A close() held in one of its guards or hooks, in a thread of its own."""

    session: CustomerSession
    held: _HeldInPhase
    outcome: list[object]
    before: dict[str, object]


@contextmanager
def _closing_held_in(phase: Phase = Phase.BEFORE) -> Iterator[_Closing]:
    """A session whose close() runs in a thread, held in a ``phase`` guard or hook meanwhile.

    The block runs while the trigger waits in it; on leaving, the trigger goes on and
    its thread is joined. ``before`` is the session's snapshot from before the close.
    """
    held = _HeldInPhase()
    workflow = Workflow()
    workflow.register(phase, held, key=Trigger.CLOSE)
    s = _session(workflow)
    before = s.snapshot()
    closing, outcome = _closing_in_thread(s)
    try:
        assert held.entered.wait(WAIT)
        yield _Closing(s, held, outcome, before)
    finally:
        held.release.set()
        closing.join(WAIT)


class TestEditsWhileATriggerRuns:
    """Only the trigger under way may change its session until it has committed or rolled back."""

    @pytest.mark.parametrize("phase", [Phase.GUARD, Phase.BEFORE], ids=["guard", "before"])
    def test_an_edit_from_another_thread_is_refused_whole(self, phase):
        """An edit from another thread while a trigger's guard or hook runs changes nothing."""
        with _closing_held_in(phase) as closing:
            s = closing.session
            with pytest.raises(SessionNotEditable) as info:
                s.add_item(CartItem(sku="HAT", quantity=1, price=2.0))
            assert s.snapshot() == closing.before
        assert (info.value.running, info.value.asking, info.value.held) == (
            Trigger.CLOSE,
            False,
            False,
        )
        assert info.value.elsewhere is True
        record = closing.outcome[0]
        assert isinstance(record, TransitionRecord)
        # The transition committed with the cart its guard or hook saw.
        assert s.history == (record,)
        assert s.cart_items == closing.held.carts[0] == (ITEM,)
        assert s.update_count == 2

    def test_the_refusal_says_what_runs_and_what_to_do(self):
        """An edit refused for another thread's trigger names it and says to wait or use a hook."""
        with _closing_held_in() as closing, pytest.raises(SessionNotEditable) as info:
            closing.session.set_coupon("SAVE10")
        assert str(info.value) == (
            "session 'order-1': cannot set_coupon() while close() is in progress in another "
            "task or thread; try again once it has finished, or make the edit in one of "
            "close()'s hooks"
        )

    def test_every_edit_is_refused(self):
        """Each edit method is refused from another thread while a trigger runs."""
        with _closing_held_in() as closing:
            s = closing.session
            for edit in (
                lambda: s.set_cart_items([]),
                lambda: s.update_item(0, CartItem(sku="HAT", quantity=1)),
                lambda: s.remove_item(0),
                edit_every_field,
            ):
                with pytest.raises(SessionNotEditable):
                    edit(s) if edit is edit_every_field else edit()
            assert s.snapshot() == closing.before
        assert s.state is State.CLOSED

    def test_reloading_or_holding_from_another_thread_is_refused_as_elsewhere(self):
        """A reload or an atomic() block from another thread is refused with ``elsewhere`` set."""
        errors: list[SessionNotEditable] = []
        with _closing_held_in() as closing:
            s = closing.session
            with pytest.raises(SessionNotEditable) as reload:
                s.__setstate__(closing.before)
            errors.append(reload.value)
            with pytest.raises(SessionNotEditable) as block, s.atomic():
                pass  # pragma: no cover - refused before the block runs
            errors.append(block.value)
        assert [(e.operation, e.running, e.elsewhere) for e in errors] == [
            ("__setstate__", Trigger.CLOSE, True),
            ("atomic", Trigger.CLOSE, True),
        ]

    def test_asking_from_another_thread_answers_and_changes_nothing(self):
        """can()/why_not() from another thread while a trigger's guard runs only report it."""
        with _closing_held_in(Phase.GUARD) as closing:
            s = closing.session
            assert s.can("cancel") is False
            (refusal,) = s.why_not("cancel")
        assert "while close() is in progress in another task or thread" in refusal.reason
        assert len(closing.held.carts) == 1  # the other thread's question asked no guard
        assert [r.trigger for r in s.history] == [Trigger.CLOSE]

    def test_a_thread_of_the_block_is_elsewhere_for_the_blocks_trigger(self):
        """A thread of an atomic() block may not edit while the block's trigger runs a hook."""
        held = _HeldInPhase()
        workflow = Workflow()
        workflow.before(held, trigger=Trigger.CLOSE)
        s = _session(workflow)
        errors: list[Exception] = []

        def edit() -> None:
            assert held.entered.wait(WAIT)
            try:
                s.set_coupon("BLOCK")
            except SessionNotEditable as exc:
                errors.append(exc)
            finally:
                held.release.set()

        with s.atomic():
            # A copy of the block's context (not the hook's): it belongs to the block.
            helper = threading.Thread(target=contextvars.copy_context().run, args=(edit,))
            helper.start()
            s.close()
            helper.join(WAIT)
        (refusal,) = errors
        assert isinstance(refusal, SessionNotEditable)
        assert (refusal.running, refusal.held, refusal.elsewhere) == (Trigger.CLOSE, False, True)
        assert (s.coupon, s.state) == (None, State.CLOSED)

    def test_its_own_hook_may_still_edit(self):
        """A before hook's edit is made, and commits with the trigger."""
        workflow = Workflow()
        workflow.before(lambda event: event.session.set_coupon("HOOK"), trigger=Trigger.CLOSE)
        s = _session(workflow)
        s.close()
        assert (s.coupon, s.state, s.update_count) == ("HOOK", State.CLOSED, 3)

    def test_a_thread_carrying_the_hooks_context_may_edit(self):
        """A hook's helper thread run in a copy of its context edits as the hook would."""

        def edit_in_a_thread(event) -> None:
            helper = threading.Thread(
                target=contextvars.copy_context().run,
                args=(event.session.set_coupon, "HELPER"),
            )
            helper.start()
            helper.join(WAIT)

        workflow = Workflow()
        workflow.before(edit_in_a_thread, trigger=Trigger.CLOSE)
        s = _session(workflow)
        s.close()
        assert (s.coupon, s.state) == ("HELPER", State.CLOSED)

    def test_a_thread_without_the_hooks_context_is_elsewhere(self):
        """A hook's helper thread without its context is refused, and so is the trigger."""

        def edit_in_a_thread(event) -> None:
            errors: list[Exception] = []

            def edit() -> None:
                try:
                    event.session.set_coupon("HELPER")
                except SessionNotEditable as exc:
                    errors.append(exc)

            helper = threading.Thread(target=edit)
            helper.start()
            helper.join(WAIT)
            raise errors[0]

        workflow = Workflow()
        workflow.before(edit_in_a_thread, trigger=Trigger.CLOSE)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert isinstance(info.value.__cause__, SessionNotEditable)
        assert info.value.__cause__.elsewhere is True
        assert (s.coupon, s.state, s.update_count) == (None, State.OPEN, 1)

    def test_the_context_of_a_finished_trigger_lets_no_edit_into_a_later_one(self):
        """Code still in an earlier trigger's context is refused while another thread's runs."""
        kept: list[contextvars.Context] = []
        held = _HeldInPhase()

        def first_fails_second_waits(event) -> None:
            if not kept:
                kept.append(contextvars.copy_context())
                raise RuntimeError("the first close fails")
            held(event)

        workflow = Workflow()
        workflow.before(first_fails_second_waits, trigger=Trigger.CLOSE)
        s = _session(workflow)
        with pytest.raises(HookFailed):
            s.close()
        closing, _ = _closing_in_thread(s)
        try:
            assert held.entered.wait(WAIT)
            with pytest.raises(SessionNotEditable) as info:
                kept[0].run(s.set_coupon, "STALE")
        finally:
            held.release.set()
            closing.join(WAIT)
        assert info.value.elsewhere is True
        assert (s.coupon, s.state) == (None, State.CLOSED)

    def test_a_thread_cannot_edit_between_the_last_hook_and_the_commit(self, monkeypatch):
        """The session stays busy after the hooks until the commit: another thread's edit waits."""
        # Where the hooks are done and the commit is next: CPython may switch threads.
        at_commit, go_on = _pausing(monkeypatch, "recheck_returns")
        seen: list[tuple[CartItem, ...]] = []
        workflow = Workflow()
        workflow.guard(lambda event: seen.append(event.session.cart_items), trigger=Trigger.CLOSE)
        s = _session(workflow)
        closing, outcome = _closing_in_thread(s)
        try:
            assert at_commit.wait(WAIT)
            with pytest.raises(SessionNotEditable):
                s.set_cart_items([])
        finally:
            go_on.set()
            closing.join(WAIT)
        assert isinstance(outcome[0], TransitionRecord)
        assert s.cart_items == seen[0] == (ITEM,)

    def test_a_guard_refusal_never_undoes_another_threads_change(self, monkeypatch):
        """A refused trigger rolls back while the session is still busy: nothing else is lost."""
        at_rollback, go_on = _pausing(monkeypatch, "undo")
        workflow = Workflow()
        workflow.guard(lambda event: "not yet", trigger=Trigger.CLOSE)
        s = _session(workflow)
        closing, outcome = _closing_in_thread(s)
        try:
            assert at_rollback.wait(WAIT)
            with pytest.raises(SessionNotEditable):
                s.set_coupon("SAVE10")
        finally:
            go_on.set()
            closing.join(WAIT)
        assert isinstance(outcome[0], GuardRejected)
        s.set_coupon("SAVE10")  # free again once the trigger is over
        assert (s.coupon, s.state, s.update_count) == ("SAVE10", State.OPEN, 2)


def _pausing(monkeypatch, step: str) -> tuple[threading.Event, threading.Event]:
    """Make the trigger's ``step`` (a function of _transaction) wait to be let go on.

    Returns:
        The event set when a trigger reaches the step, and the one that lets it go on.
    """
    reached, go_on = threading.Event(), threading.Event()
    original = getattr(_transaction, step)

    def pause(run, saved) -> None:
        reached.set()
        go_on.wait(WAIT)
        original(run, saved)

    monkeypatch.setattr(_transaction, step, pause)
    return reached, go_on


# A table in which cancel leads elsewhere from closed than from open, so a cancel whose
# destination was looked up while open must never commit once the session is closed.
CANCEL_DEPENDS = Specification(
    name="cancel_depends",
    states=tuple(State),
    initial_states={State.OPEN},
    edges=[
        Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
        Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),
        Edge(Trigger.CANCEL, State.CLOSED, State.PARTIALLY_RETURNED),
    ],
)


class CancelDepends(CustomerSession):
    specification: ClassVar[Specification] = CANCEL_DEPENDS
    default_workflow: ClassVar[Workflow] = Workflow(CANCEL_DEPENDS, name="tests.cancel_depends")


def _clock_firing(trigger: Trigger) -> tuple[Workflow, list[CustomerSession]]:
    """A workflow whose clock fires ``trigger`` once on the session put in the list."""
    target: list[CustomerSession] = []

    def clock() -> datetime:
        if target:
            _fire(target.pop(), trigger)  # popped first: the inner trigger reads the clock too
        return datetime(2026, 3, 2, tzinfo=UTC)

    return Workflow(CANCEL_DEPENDS, clock=clock), target


class TestTriggerFiredWhileTheClockRuns:
    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    def test_the_outer_trigger_is_refused_and_the_history_follows_the_table(self, registered):
        """The clock's trigger wins; the outer one runs no hook and changes nothing."""
        workflow, target = _clock_firing(Trigger.CLOSE)
        ran: list[Trigger] = []
        if registered:
            workflow.before(lambda event: ran.append(event.trigger), name="spy")
        s = CancelDepends(integration_id="o", workflow=workflow)
        target.append(s)
        with pytest.raises(TransitionInProgress, match="changed hands"):
            s.cancel()
        assert [(r.source, r.destination) for r in s.history] == [(State.OPEN, State.CLOSED)]
        assert s.state is State.CLOSED
        assert ran == ([Trigger.CLOSE] if registered else [])  # the clock's close only

    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    def test_a_further_return_committed_meanwhile_refuses_the_outer_one(self, registered):
        """A return committed while another return reads the clock wins; no unit is returned twice.

        Further returns stay in their state, so the state alone cannot tell that the
        session moved on under the outer return, whose items were checked against a
        cart that no longer has those units.
        """
        moment = [datetime(2026, 3, 2, 10, tzinfo=UTC)]
        inner: list[CustomerSession] = []
        two = [ReturnedItem(position=0, quantity=2)]

        def clock() -> datetime:
            if inner:
                inner.pop().return_items(two)  # popped first: it reads the clock too
            return moment[0]

        workflow = Workflow(clock=clock)
        if registered:
            workflow.before(lambda event: None, name="spy")
        s = CustomerSession(
            integration_id="o",
            state=State.CLOSED,
            cart_items=[CartItem(sku="SOCK", quantity=3, price=1.0)],
            workflow=workflow,
        )
        s.return_items([ReturnedItem(position=0, quantity=1)])
        moment[0] -= timedelta(minutes=1)  # the inner return reads the clock later
        inner.append(s)
        with pytest.raises(TransitionInProgress, match="changed hands"):
            s.return_items(two)
        assert s.cart_items[0].returned_quantity == 3
        assert len(s.history) == 2
        assert CustomerSession.restore(**s.snapshot()) == s

    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "after-commit"])
    def test_a_cart_edited_while_a_return_reads_the_clock_refuses_the_return(self, registered):
        """A return whose cart the clock's edit emptied is refused; nothing is returned."""
        armed: list[CustomerSession] = []

        def clock() -> datetime:
            if armed:
                armed.pop().set_cart_items([])  # popped first: the edit reads the clock too
            return datetime(2026, 3, 2, tzinfo=UTC)

        workflow = Workflow(OPEN_RETURNS, clock=clock)
        if registered:  # no pre-commit hook: nothing checks the cart again before the commit
            workflow.after_commit(lambda event: None, name="spy")
        s = OpenReturns(
            integration_id="o", cart_items=[CartItem(sku="A", quantity=5)], workflow=workflow
        )
        armed.append(s)
        with pytest.raises(TransitionInProgress, match="changed hands"):
            s.return_items([ReturnedItem(position=0, quantity=3)])
        assert (s.cart_items, s.history) == ((), ())

    def test_asking_reports_the_change_and_asks_no_guard(self):
        """why_not() whose clock moves the session answers that it changed, not the guards."""
        workflow, target = _clock_firing(Trigger.CLOSE)
        asked: list[State] = []
        workflow.guard(lambda event: asked.append(event.source), trigger=Trigger.CANCEL)
        s = CancelDepends(integration_id="o", workflow=workflow)
        target.append(s)
        (refusal,) = s.why_not(Trigger.CANCEL)
        assert "changed hands" in refusal.reason
        assert asked == []
        assert s.state is State.CLOSED


class TestHistory:
    def test_updated_follows_the_history(self):
        """updated is the timestamp of the last committed transition."""
        ticks = iter(datetime(2026, 3, 2, tzinfo=UTC) + timedelta(minutes=n) for n in range(10))
        s = _session(Workflow(clock=lambda: next(ticks)))
        s.close()
        s.cancel()
        assert s.updated == s.history[-1].timestamp
        assert s.update_count == 3

    def test_clock_going_backwards_never_moves_updated_back(self):
        """A clock that goes back does not make updated earlier than before."""
        times = iter([datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC)])
        s = _session(Workflow(clock=lambda: next(times)))
        s.close()
        assert s.updated == s.created

    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    def test_a_clock_going_back_never_dates_a_transition_before_the_last_change(self, registered):
        """Under a clock that went back, a transition is dated at the last change, not before."""
        times = iter([datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC)])
        workflow = Workflow(clock=lambda: next(times))
        if registered:
            workflow.before(lambda event: None)
        s = _session(workflow)
        record = s.close()
        assert record.timestamp == s.created

    def test_a_clock_going_back_never_moves_updated_back_on_an_edit(self):
        """An edit under a clock that went back keeps updated where it was, and still counts."""
        times = iter([datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 2, 11, tzinfo=UTC)])
        s = _session(Workflow(clock=lambda: next(times)))
        s.set_coupon("X")
        assert (s.updated, s.update_count) == (s.created, 2)

    def test_records_are_immutable(self):
        """History records cannot be changed."""
        s = _session()
        record = s.close()
        for name in ("trigger", "source", "destination", "timestamp", "returned_items"):
            with pytest.raises(ProtectedFieldError, match="immutable"):
                setattr(record, name, State.OPEN)
            with pytest.raises(ProtectedFieldError, match="immutable"):
                delattr(record, name)
        assert s.history == (record,)
        assert record.destination is State.CLOSED


class TestAskingChangesNothing:
    def test_guard_editing_while_asked_is_refused(self):
        """A guard that edits the session while can()/why_not() ask fails; nothing changed."""
        workflow = Workflow()

        def meddling(event):
            event.session.set_coupon("SURPRISE")
            return "no"

        workflow.guard(meddling, trigger=Trigger.CLOSE)
        s = _session(workflow)
        before = s.snapshot()
        with pytest.raises(HookFailed) as info:
            s.can(Trigger.CLOSE)
        refused = info.value.__cause__
        assert isinstance(refused, SessionNotEditable)
        # Asking is not a trigger in progress elsewhere (that flag advises waiting for one).
        assert (refused.operation, refused.running, refused.asking, refused.elsewhere) == (
            "set_coupon",
            Trigger.CLOSE,
            True,
            False,
        )
        assert s.snapshot() == before
        assert s._running is None

    def test_guard_firing_while_asked_is_refused(self):
        """A guard that fires a trigger while asked is refused, as under fire(); nothing commits."""
        workflow = Workflow()
        effects = []
        workflow.after_commit(lambda event: effects.append("charged"), trigger=Trigger.CLOSE)
        workflow.guard(lambda event: event.session.close(), trigger=Trigger.CANCEL, name="closer")
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.why_not(Trigger.CANCEL)
        refused = info.value.__cause__
        assert isinstance(refused, TransitionInProgress)
        assert (refused.trigger, refused.running, refused.asking) == (
            Trigger.CLOSE,
            Trigger.CANCEL,
            True,
        )
        assert "can() or why_not()" in str(refused)
        assert (s.state, s.history, effects) == (State.OPEN, (), [])
        assert s._running is None

    def test_asking_from_a_guard_while_asked_reports_the_asking(self):
        """why_not() from inside a guard that why_not() is asking answers with the refusal."""
        workflow = Workflow()
        inner = []
        workflow.guard(
            lambda event: inner.extend(event.session.why_not(Trigger.CLOSE)), trigger=Trigger.CANCEL
        )
        s = _session(workflow)
        assert s.why_not(Trigger.CANCEL) == ()
        (refusal,) = inner
        assert refusal.guard is None
        assert "while can() or why_not() ask the guards of cancel()" in refusal.reason
        assert s._running is None

    def test_setstate_from_a_guard_while_asked_is_refused(self):
        """A guard cannot reload the session it is asked about."""
        workflow = Workflow()
        workflow.guard(
            lambda event: event.session.__setstate__(event.session.snapshot()),
            trigger=Trigger.CLOSE,
        )
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.can(Trigger.CLOSE)
        assert isinstance(info.value.__cause__, SessionNotEditable)
        assert info.value.__cause__.operation == "__setstate__"
        assert s._running is None

    def test_edits_and_triggers_work_again_once_answered(self):
        """The busy mark of asking is gone once the answer is given, even after a raise."""
        workflow = Workflow()
        workflow.guard(lambda event: event.session.set_coupon("X"), trigger=Trigger.CLOSE)
        s = _session(workflow)
        with pytest.raises(HookFailed):
            s.why_not(Trigger.CLOSE)
        s.set_coupon("AFTER")
        s.cancel()
        assert (s.coupon, s.state) == ("AFTER", State.CANCELLED)

    def test_async_after_commit_hook_is_refused_before_the_commit(self):
        """An async after-commit hook on the sync face is refused before anything commits."""
        workflow = Workflow()

        async def notify(event):
            return None

        workflow.after_commit(notify)
        s = _session(workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        assert "async" in str(info.value.__cause__)
        assert s.state is State.OPEN
        assert s.history == ()

    def test_hook_edit_keeps_updated_from_moving_back(self):
        """A hook's edit during a trigger is not followed by an older updated."""
        ticks = iter(datetime(2026, 3, 2, tzinfo=UTC) + timedelta(minutes=n) for n in range(10))
        workflow = Workflow(clock=lambda: next(ticks))
        workflow.before(lambda event: event.session.set_coupon("X"), trigger=Trigger.CLOSE)
        s = _session(workflow)
        s.close()
        assert s.updated >= s.history[-1].timestamp
        assert s.updated == datetime(2026, 3, 2, 0, 2, tzinfo=UTC)


class TestAskingWhileAnotherThreadFires:
    def test_why_not_never_frees_a_trigger_another_thread_runs(self):
        """A trigger begun while why_not() reads the clock stays busy after why_not() is done."""
        in_clock, go_on, in_hook, hook_go = (threading.Event() for _ in range(4))

        def clock() -> datetime:
            if threading.current_thread().name == "asking":
                in_clock.set()
                go_on.wait(WAIT)
            return datetime.now(UTC)

        def slow_before(event) -> None:
            in_hook.set()
            hook_go.wait(WAIT)

        workflow = Workflow(clock=clock)
        workflow.guard(lambda event: None, trigger=Trigger.CLOSE)
        workflow.before(slow_before, trigger=Trigger.CLOSE)
        s = CustomerSession(integration_id="o", workflow=workflow)
        asking = threading.Thread(target=lambda: s.why_not("close"), name="asking")
        asking.start()
        assert in_clock.wait(WAIT)
        closing = threading.Thread(target=s.close)
        closing.start()
        assert in_hook.wait(WAIT)
        go_on.set()
        asking.join(WAIT)
        assert not asking.is_alive()
        with pytest.raises(TransitionInProgress):
            s.cancel()  # the close is still running
        hook_go.set()
        closing.join(WAIT)
        assert [r.trigger for r in s.history] == [Trigger.CLOSE]


class TestTwin:
    def test_twin_equals_the_session_and_is_bound_to_the_workflow(self):
        """A twin has every field of the session and the workflow it was given."""
        session = _session()
        session.close()
        workflow = Workflow(CUSTOMER_SESSION)
        copy = twin(session, workflow)
        assert copy == session
        assert copy.history == session.history
        assert copy.workflow is workflow

    def test_changing_a_twin_leaves_the_session_alone(self):
        """Firing a trigger on the twin does not touch the session it was made from."""
        session = _session()
        copy = twin(session, session.workflow)
        copy.close()
        assert session.state is State.OPEN
        assert session.history == ()

    def test_twin_of_a_session_under_way_is_idle(self):
        """A twin made while a trigger runs is not itself running one."""
        workflow = Workflow(CUSTOMER_SESSION)
        copies: list[CustomerSession] = []
        workflow.before(
            lambda event: copies.append(twin(event.session, workflow)), trigger=Trigger.CLOSE
        )
        _session(workflow).close()
        assert copies[0].close().destination is State.CLOSED


class TestOwner:
    def test_a_block_opens_while_another_thread_imports_asyncio(self, monkeypatch):
        """While asyncio is half imported (no names bound yet), a block's owner is its thread."""
        # What another thread's import leaves in sys.modules until asyncio's names are bound.
        monkeypatch.setitem(sys.modules, "asyncio", types.ModuleType("asyncio"))
        session = _session()
        with session.atomic():
            session.set_coupon("OUTER")
            with session.atomic():  # a nested block checks that its owner is the outer one's
                session.set_coupon("INNER")
        assert session.coupon == "INNER"


class TestBlocks:
    @given(session=sessions(), other=sessions())
    def test_a_failed_block_puts_back_every_field_it_replaced(self, session, other):
        """A block that loads every field of another session and fails leaves each as it was."""
        before = session.snapshot()
        with pytest.raises(RuntimeError), session.atomic():  # noqa: PT012 - the block is what is tested
            session.__setstate__(other.snapshot())
            raise RuntimeError
        assert session.snapshot() == before

    def test_a_block_opens_on_a_session_freed_while_it_looked(self, monkeypatch):
        """A block whose session another thread frees between its two looks opens, no assert.

        The first look finds a trigger under way; by the second, that trigger has ended
        (here its end is played where the thread switch would happen).
        """
        session = _session()
        session._running = Trigger.CLOSE  # another thread's close() is under way
        checked = _transaction._free

        def free_meanwhile(running):
            session._running = None  # that close() ends right now
            return checked(running)

        monkeypatch.setattr(_transaction, "_free", free_meanwhile)
        with session.atomic():
            session.set_coupon("X")
        assert session.coupon == "X"
        assert session._running is None

    def test_no_block_opens_from_a_hook_inside_a_block(self):
        """Inside a block, a hook before the commit point cannot open a nested block either."""
        workflow = Workflow()

        def nested_block(event):
            with event.session.atomic():
                event.session.set_coupon("X")  # pragma: no cover - refused before

        workflow.before(nested_block, trigger=Trigger.CLOSE)
        s = _session(workflow)
        with s.atomic():
            with pytest.raises(HookFailed) as info:
                s.close()
            refused = info.value.__cause__
            assert isinstance(refused, SessionNotEditable)
            assert (refused.operation, refused.running) == ("atomic", Trigger.CLOSE)
            s.cancel()
        assert (s.state, s.coupon, s._running) == (State.CANCELLED, None, None)

    def test_blocks_left_open_never_restore_what_the_outer_rollback_undid(self):
        """Blocks nested in a block that rolled back, closed later, bring nothing back."""
        s = _session()
        with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
            s.set_coupon("OUTER")
            first = _nested_block(s)
            next(first)
            s.set_coupon("FIRST")
            second = _nested_block(s)
            next(second)
            s.set_coupon("SECOND")
            raise RuntimeError
        second.close()
        assert s.coupon is None
        first.close()
        assert (s.coupon, s._running) == (None, None)

    def test_code_after_a_block_is_outside_a_nested_block_left_open(self):
        """Once a block has ended, its code is refused while a block nested in it is still open."""
        s = _session()
        with s.atomic():
            nested = _nested_block(s)
            next(nested)
        with pytest.raises(TransitionInProgress) as info:
            s.close()
        assert info.value.held
        nested.close()
        s.close()  # free once the nested block has closed
        assert s.state is State.CLOSED

    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    def test_a_thread_of_the_block_is_refused_while_the_block_fires(self, registered):
        """A block thread's trigger that read the clock while the block's own ran is refused."""
        in_clock, go_on = threading.Event(), threading.Event()

        def clock() -> datetime:
            if threading.current_thread().name == "late":
                in_clock.set()
                go_on.wait(WAIT)
            return datetime.now(UTC)

        workflow = Workflow(clock=clock)
        if registered:
            workflow.before(lambda event: None, trigger=Trigger.CANCEL)
        outcome: list[object] = []

        def cancel() -> None:
            try:
                outcome.append(s.cancel())
            except TransitionInProgress as exc:
                outcome.append(exc)

        def let_it_go_on(event) -> None:
            go_on.set()
            late.join(WAIT)

        workflow.before(let_it_go_on, trigger=Trigger.CLOSE)
        s = CustomerSession(integration_id="o", workflow=workflow)
        with s.atomic():
            # A copy of the block's context: the thread belongs to the block.
            late = threading.Thread(
                target=contextvars.copy_context().run, args=(cancel,), name="late"
            )
            late.start()
            assert in_clock.wait(WAIT)
            s.close()
        assert not late.is_alive()
        assert isinstance(outcome[0], TransitionInProgress)
        assert [r.trigger for r in s.history] == [Trigger.CLOSE]
