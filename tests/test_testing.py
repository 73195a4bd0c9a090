import importlib
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import TypeVar

import hypothesis
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CartItem,
    CustomerSession,
    GuardRejected,
    IllegalTransition,
    ProtectedFieldError,
    ReopenableCustomerSession,
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
)
from customer_session.testing import (
    SessionStateMachine,
    attribute_maps,
    bad_values,
    cart_items,
    carts,
    json_values,
    returned_items,
    sessions,
    trigger_sequences,
    triggers,
    wire_documents,
)
from customer_session.wire import from_dict, to_dict


class TestStrategies:
    @pytest.mark.parametrize("state", list(State))
    def test_sessions_only_yield_the_asked_state(self, state):
        """sessions(state=s) only yields sessions in s, with a history that leads there."""

        @given(sessions(state=state))
        def check(session):
            assert session.state is state
            if session.history:
                assert session.history[-1].destination is state

        check()

    def test_sessions_with_min_items_zero_may_have_an_empty_cart(self):
        """sessions(min_items=0) draws empty carts too, where no return is on the way."""
        session = find(sessions(min_items=0), lambda session: not session.cart_items)
        assert session.state in {State.OPEN, State.CLOSED, State.CANCELLED}

    @given(sessions(state=State.PARTIALLY_RETURNED, min_items=0))
    def test_sessions_after_a_return_keep_an_item(self, session):
        """sessions(min_items=0) still gives a session that returned items an item to return."""
        assert session.cart_items

    @given(sessions(session_class=ReopenableCustomerSession))
    def test_sessions_of_another_class(self, session):
        """sessions() builds instances of the class it is given."""
        assert isinstance(session, ReopenableCustomerSession)

    @pytest.mark.parametrize("session_class", [CustomerSession, ReopenableCustomerSession])
    @pytest.mark.parametrize("state", list(State))
    def test_sessions_shrink_to_a_shortest_walk_without_edits(self, session_class, state):
        """The smallest session sessions(state=s) draws took a shortest walk to s, unedited."""
        session = find(sessions(state=state, session_class=session_class), lambda _: True)
        shortest = session_class.specification.shortest_paths()[state]
        assert len(session.history) == len(shortest)
        assert session.update_count == 1 + len(shortest)  # its creation, then each transition

    def test_sessions_of_the_reopen_table_may_go_round_its_cycle(self):
        """sessions(state=closed) of the reopen table draws histories that reopened."""
        session = find(
            sessions(state=State.CLOSED, session_class=ReopenableCustomerSession),
            lambda session: Trigger.REOPEN in {r.trigger for r in session.history},
        )
        # The smallest such walk starts closed (an initial state) and goes round once.
        assert [r.trigger for r in session.history] == [Trigger.REOPEN, Trigger.CLOSE]

    def test_sessions_may_be_edited_between_transitions(self):
        """sessions() draws carts edited while the session was open, before it moved on."""
        session = find(
            sessions(state=State.CANCELLED),
            lambda session: session.update_count > 1 + len(session.history),
        )
        assert session.history[0].source is State.OPEN

    @given(st.data())
    def test_sessions_take_at_most_four_edges_more_than_a_shortest_walk(self, data):
        """A drawn walk is bounded: at most four edges longer than a shortest one."""
        session_class = data.draw(st.sampled_from([CustomerSession, ReopenableCustomerSession]))
        session = data.draw(sessions(session_class=session_class))
        shortest = session_class.specification.shortest_paths()[session.state]
        assert len(session.history) <= len(shortest) + 4

    @given(sessions(min_items=2))
    def test_sessions_keep_min_items_through_edits(self, session):
        """Edits on the way never leave a cart smaller than min_items."""
        assert len(session.cart_items) >= 2

    def test_sessions_skip_a_detour_the_workflow_refuses(self):
        """A workflow whose guard refuses reopen still gets closed sessions, none reopened."""
        workflow = Workflow(specification=REOPENABLE_SESSION)
        workflow.guard(lambda event: "no reopening", trigger=Trigger.REOPEN)

        @given(
            sessions(state=State.CLOSED, session_class=ReopenableCustomerSession, workflow=workflow)
        )
        def check(session):
            assert session.state is State.CLOSED
            assert Trigger.REOPEN not in {r.trigger for r in session.history}

        check()

    def test_sessions_draw_when_only_a_longer_walk_is_refused(self):
        """A guard refusing the way on after a detour or a farther start leaves a shortest walk.

        The shortest walk to open starts there; one from closed needs reopen, refused.
        The shortest walk to cancelled cancels from open; one through close cannot.
        """
        workflow = Workflow(specification=REOPENABLE_SESSION)
        workflow.guard(lambda event: "no reopening", trigger=Trigger.REOPEN)
        workflow.guard(
            lambda event: None if event.source is State.OPEN else "only an open order cancels",
            trigger=Trigger.CANCEL,
        )

        @given(
            st.sampled_from([State.OPEN, State.CANCELLED]).flatmap(
                lambda state: sessions(
                    state=state, session_class=ReopenableCustomerSession, workflow=workflow
                )
            )
        )
        def check(session):
            assert session.state in {State.OPEN, State.CANCELLED}
            assert Trigger.REOPEN not in {r.trigger for r in session.history}

        check()

    @given(cart_items())
    def test_cart_items_are_valid(self, item):
        """cart_items() yields valid items within the limits."""
        assert isinstance(item, CartItem)
        assert item.problems() == []

    @given(carts(min_size=1, max_size=3))
    def test_carts_respect_their_size(self, cart):
        """carts() yields tuples of the requested size."""
        assert 1 <= len(cart) <= 3

    @given(st.data())
    def test_returned_items_are_accepted(self, data):
        """returned_items(session) yields returns the session accepts."""
        session = data.draw(sessions(state=State.CLOSED))
        items = data.draw(returned_items(session))
        session.return_items(items)
        assert session.state is State.PARTIALLY_RETURNED

    @given(st.data())
    def test_refused_returned_items_are_refused(self, data):
        """returned_items(session, valid=False) yields returns the session refuses, unchanged."""
        session = data.draw(sessions(state=data.draw(st.sampled_from(list(State)))))
        items = data.draw(returned_items(session, valid=False))
        before = session.snapshot()
        assert session.why_not(Trigger.RETURN_ITEMS, items=items)
        if session.state in {State.CLOSED, State.PARTIALLY_RETURNED}:
            with pytest.raises(ValidationError):
                session.return_items(items)
        assert session.snapshot() == before

    @given(st.data())
    def test_returned_items_follow_the_cart_as_it_is_when_drawn(self, data):
        """A returned_items() strategy drawn from again after a return draws what remains."""
        session = data.draw(sessions(state=State.CLOSED))
        returns = returned_items(session)
        while any(line.remaining_quantity for line in session.cart_items):
            session.return_items(data.draw(returns))
        with pytest.raises(ValidationError, match="cart_items: has no units left to return"):
            data.draw(returns)

    def test_returned_items_of_a_session_with_nothing_left_is_refused(self):
        """returned_items() of a cart with no unit left to return is a ValidationError."""
        session = CustomerSession(integration_id="order-1")
        with pytest.raises(ValidationError, match="cart_items: has no units left to return"):
            returned_items(session)

    @pytest.mark.parametrize("spec", [CUSTOMER_SESSION, REOPENABLE_SESSION])
    def test_legal_sequences_follow_the_table(self, spec):
        """trigger_sequences(legal_only=True) only fires what the table allows."""

        @given(trigger_sequences(legal_only=True, specification=spec))
        def check(sequence):
            state = State.OPEN
            for trigger in sequence:
                target = spec.target(state, trigger)
                assert target is not None
                state = target

        check()

    @given(triggers())
    def test_triggers_belong_to_the_table(self, trigger):
        """triggers() draws from the table's triggers."""
        assert trigger in CUSTOMER_SESSION.triggers

    @given(json_values())
    def test_json_values_are_what_an_attribute_holds(self, value):
        """json_values() yields values a session takes as an attribute and writes back equal."""
        session = CustomerSession(integration_id="order-1", attributes={"value": value})
        assert to_dict(session)["attributes"] == {"value": value}

    @given(attribute_maps())
    def test_attribute_maps_are_accepted_as_attributes(self, attributes):
        """attribute_maps() yields attributes a session takes and writes back equal."""
        session = CustomerSession(integration_id="order-1", attributes=attributes)
        assert to_dict(session)["attributes"] == attributes

    def test_bad_values_are_new_in_every_example(self):
        """A container bad_values() gave, changed by the code under test, is never given again."""
        marker = object()

        def holds_marker(value: object) -> bool:
            if isinstance(value, list | tuple | set):
                return any(item is marker for item in value) or any(
                    isinstance(item, list) and marker in item for item in value
                )
            return isinstance(value, dict) and marker in value

        @settings(max_examples=300, database=None)
        @given(bad_values())
        def change_what_is_given(value):
            assert not holds_marker(value)
            for item in (value, *(value if isinstance(value, list | tuple) else ())):
                if isinstance(item, list):
                    item.append(marker)
                elif isinstance(item, set):
                    item.add(marker)
                elif isinstance(item, dict):
                    item[marker] = 1

        change_what_is_given()

    @given(wire_documents(valid=True))
    def test_valid_documents_load(self, document):
        """wire_documents(valid=True) yields documents from_dict accepts."""
        from_dict(document)

    @given(wire_documents(valid=False))
    def test_invalid_documents_are_refused(self, document):
        """wire_documents(valid=False) yields documents from_dict refuses."""
        with pytest.raises(ValidationError):
            from_dict(document)


_NO_EDGES = Specification("no_edges", (State.OPEN,), {State.OPEN}, ())
_OPEN_AND_CLOSED = Specification(
    "open_and_closed", (State.OPEN, State.CLOSED), {State.OPEN}, (CUSTOMER_SESSION.edges[0],)
)


class TestArguments:
    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda: cart_items(with_price="yes"), r"cart_items\(\): with_price: must be a bool"),
            (
                lambda: returned_items(CustomerSession(integration_id="o"), valid="no"),
                r"returned_items\(\): valid: must be a bool",
            ),
            (lambda: trigger_sequences(legal_only=1), r"legal_only: must be a bool"),
            (lambda: wire_documents(valid=None), r"wire_documents\(\): valid: must be a bool"),
            (lambda: wire_documents(include_history="yes"), r"include_history: must be a bool"),
            (lambda: wire_documents(session_costs=0), r"session_costs: must be a bool"),
        ],
    )
    def test_a_flag_that_is_no_bool_is_refused(self, call, message):
        """A flag given another value than True or False is a ValidationError naming it."""
        with pytest.raises(ValidationError, match=message):
            call()

    def test_a_start_outside_the_table_is_refused(self):
        """trigger_sequences() refuses a start its table lacks, instead of drawing only []."""
        with pytest.raises(
            ValidationError, match=r"start: must be a state of 'open_and_closed', got <State\.CANC"
        ):
            trigger_sequences(
                legal_only=True, start=State.CANCELLED, specification=_OPEN_AND_CLOSED
            )

    def test_triggers_of_a_table_without_edges_is_refused(self):
        """triggers() of a table with no edges is a ValidationError, not Hypothesis's own."""
        with pytest.raises(ValidationError, match="'no_edges' has no edges, so no triggers"):
            triggers(_NO_EDGES)

    @given(trigger_sequences(specification=_NO_EDGES))
    def test_trigger_sequences_of_a_table_without_edges_are_empty(self, sequence):
        """trigger_sequences() of a table with no edges draws the one sequence there is: []."""
        assert sequence == []

    def test_a_workflow_of_another_table_is_refused_when_called(self):
        """sessions() refuses a workflow of another table when called, not when drawn from."""
        with pytest.raises(WorkflowError, match="ReopenableCustomerSession follows"):
            sessions(session_class=ReopenableCustomerSession, workflow=Workflow())


class _Chaining(SessionStateMachine):
    """A workflow that cancels an order at once when it closes (an after-commit hook)."""

    def make_workflow(self) -> Workflow:
        """Cancel from an after-commit hook, as TransitionInProgress advises."""
        workflow = Workflow()
        workflow.after_commit(lambda event: event.session.cancel(), trigger=Trigger.CLOSE)
        return workflow


def _machine(
    machine_class: type[SessionStateMachine],
) -> tuple[SessionStateMachine, CustomerSession]:
    machine = machine_class()
    machine.create_first(state=State.OPEN, items=[CartItem(sku="A", quantity=1)])
    return machine, machine.sessions[0]


# -- sessions that break the library's promises, for the kit to catch ------------------

_WHEN = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _record(trigger: Trigger, source: State, destination: State) -> TransitionRecord:
    return TransitionRecord(trigger, source, destination, _WHEN)


class _Forged(CustomerSession):
    """Reports the state and history a test forged instead of its own, if any."""

    forged_state: object = None
    forged_history: tuple[TransitionRecord, ...] | None = None

    @property
    def state(self):
        return self._state if self.forged_state is None else self.forged_state

    @property
    def history(self):
        return self._history if self.forged_history is None else self.forged_history


class _ForgedMachine(SessionStateMachine):
    session_class = _Forged


class _ClosedByCoupon(CustomerSession):
    """Closes itself when given a coupon: a transition no trigger call returned."""

    def set_coupon(self, code):
        super().set_coupon(code)
        self.close()


class _ClosedByCouponMachine(SessionStateMachine):
    session_class = _ClosedByCoupon


class _GuardedClose(SessionStateMachine):
    """A workflow with a guard on close, and no after-commit hook."""

    def make_workflow(self) -> Workflow:
        """Register one guard that allows every close."""
        workflow = Workflow()
        workflow.guard(lambda event: None, trigger=Trigger.CLOSE)
        return workflow


class _IgnoresStateWrites(CustomerSession):
    """Accepts an assignment to its state, and ignores it."""

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        pass

    @state.deleter
    def state(self):
        raise ProtectedFieldError("state", "fire a trigger")


class _IgnoresStateDeletes(CustomerSession):
    """Refuses an assignment to its state, but accepts (and ignores) a deletion."""

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        raise ProtectedFieldError("state", "fire a trigger")

    @state.deleter
    def state(self):
        pass


class _WritesStateThenRefuses(CustomerSession):
    """Stores an assigned state, then refuses the assignment."""

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        self._state = value
        raise ProtectedFieldError("state", "fire a trigger")


class _PlainStateProperty(CustomerSession):
    """Redefines its state as a plain property, which refuses writes with AttributeError."""

    @property
    def state(self):
        return self._state


class _SkipsToCancelled(CustomerSession):
    """Closing an open session takes it straight to cancelled, recorded as a close."""

    def fire(self, trigger, *, items=()):
        if trigger is Trigger.CLOSE and self._state is State.OPEN:
            record = _record(Trigger.CLOSE, State.OPEN, State.CANCELLED)
            self._state, self._history = State.CANCELLED, (*self._history, record)
            return record
        return super().fire(trigger, items=items)


class _EditsBeforeFiring(CustomerSession):
    """Notes each trigger in an attribute before firing it, refused or not."""

    def fire(self, trigger, *, items=()):
        if self.state is State.OPEN:
            self.set_attribute("last trigger", str(trigger))
        return super().fire(trigger, items=items)


class _AlwaysCan(CustomerSession):
    """can() says yes to everything, whatever why_not() says."""

    def can(self, trigger, *, items=()):
        return True


class _EditsWhenAsked(CustomerSession):
    """Notes each question in an attribute."""

    def why_not(self, trigger, *, items=()):
        if self.state is State.OPEN:
            self.set_attribute("last question", str(trigger))
        return super().why_not(trigger, items=items)


class _LosesCouponInSnapshot(CustomerSession):
    """Its snapshot, and so its copies and reloads, forget the coupon."""

    def snapshot(self):
        return {**super().snapshot(), "coupon": None}


class _RefusesCoupons(CustomerSession):
    """Refuses every coupon, even while open."""

    def set_coupon(self, code):
        raise ValidationError.single(f"session {self.integration_id!r}", "coupon", "no coupons")


class _StoresCouponThenRefuses(CustomerSession):
    """Stores the coupon before the library's check, which refuses it unless open."""

    def set_coupon(self, code):
        self._coupon = code
        super().set_coupon(code)


class _TakesCouponsWhenClosed(CustomerSession):
    """Stores every coupon, open or not."""

    def set_coupon(self, code):
        self._coupon = code


# Until the first failure (no shrinking: the message is what the tests check), the
# same examples every run.
_UNTIL_IT_FAILS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[hypothesis.Phase.generate],
)


def _run_with(session_class: type[CustomerSession]) -> None:
    """Run the kit's machine, unchanged, against sessions of ``session_class``."""
    machine = type(
        f"{session_class.__name__}Machine", (SessionStateMachine,), {"session_class": session_class}
    )
    run_state_machine_as_test(machine, settings=_UNTIL_IT_FAILS)


class TestSessionStateMachine:
    def test_transitions_chained_by_after_commit_hooks_count_as_committed(self):
        """A trigger fired from an after-commit hook joins what the call committed."""
        machine, session = _machine(_Chaining)
        machine.attempt(session, session.close)
        assert [r.trigger for r in machine.committed[id(session)]] == [
            Trigger.CLOSE,
            Trigger.CANCEL,
        ]
        machine.history_is_what_was_committed()

    def test_more_than_the_returned_record_without_after_commit_hooks_fails(self):
        """Without after-commit hooks, a call may commit only the record it returns."""
        machine, session = _machine(SessionStateMachine)
        with pytest.raises(AssertionError, match="came with"):
            machine.attempt(session, lambda: (session.close(), session.cancel())[0])

    def test_an_undone_transition_fails(self):
        """A call that undoes a committed transition fails the check."""
        machine, session = _machine(SessionStateMachine)
        opened = session.snapshot()
        machine.attempt(session, session.close)

        def reload_and_close() -> TransitionRecord:
            session.__setstate__(opened)
            return session.close()

        with pytest.raises(AssertionError, match="undone"):
            machine.attempt(session, reload_and_close)

    def test_a_record_the_call_did_not_commit_fails(self):
        """A call that returns a record it did not commit fails the check."""
        machine, session = _machine(SessionStateMachine)
        record = _record(Trigger.CLOSE, State.OPEN, State.CLOSED)
        with pytest.raises(AssertionError, match="is not what the call committed"):
            machine.attempt(session, lambda: record)

    @pytest.mark.parametrize(
        "returned",
        [pytest.param(1, id="an edit's count"), pytest.param((), id="a tuple")],
    )
    def test_an_action_returning_no_record_is_refused_by_name(self, returned):
        """An action that returns neither a record nor None is a ValidationError naming it."""
        machine, session = _machine(SessionStateMachine)
        with pytest.raises(ValidationError, match=r"^attempt\(\): .*action: must return the"):
            machine.attempt(session, lambda: returned)

    def test_more_than_the_returned_record_with_only_a_guard_fails(self):
        """A call whose edge has a guard but no after-commit hook may commit only its record."""
        machine, session = _machine(_GuardedClose)
        with pytest.raises(AssertionError, match="came with"):
            machine.attempt(session, lambda: (session.close(), session.cancel())[0])

    def test_the_type_argument_is_the_session_class(self):
        """SessionStateMachine[C] makes sessions of C, which its rules may reopen."""

        class ReopenMachine(SessionStateMachine[ReopenableCustomerSession]):
            @rule()
            def reopen_first(self) -> None:
                self.attempt(self.sessions[0], self.sessions[0].reopen)

        machine, session = _machine(ReopenMachine)
        assert ReopenMachine.session_class is ReopenableCustomerSession
        assert type(session) is ReopenableCustomerSession
        machine.attempt(session, session.close)
        machine.reopen_first()
        assert session.state is State.OPEN
        run_state_machine_as_test(ReopenMachine, settings=settings(max_examples=10))

    def test_a_session_class_of_the_type_argument_s_subclass_is_kept(self):
        """A subclass may set session_class to a subclass of its type argument."""

        class ForgedMachine(SessionStateMachine[CustomerSession]):
            session_class = _Forged

        assert ForgedMachine.session_class is _Forged

    def test_a_session_class_that_is_not_the_type_argument_s_is_refused(self):
        """A session_class outside the type argument's classes is refused when declared."""
        with pytest.raises(
            WorkflowError,
            match=(
                r"^Mismatched: session_class must be ReopenableCustomerSession \(its type "
                r"argument\) or a subclass of it, got CustomerSession$"
            ),
        ):

            class Mismatched(SessionStateMachine[ReopenableCustomerSession]):
                session_class = CustomerSession

    @pytest.mark.parametrize(
        ("argument", "shown"),
        [(int, "int"), ("ReopenableCustomerSession", r"ForwardRef\('ReopenableCustomerSession'\)")],
    )
    def test_a_type_argument_that_is_no_session_class_is_refused(self, argument, shown):
        """A type argument that is not CustomerSession or a subclass is refused when declared."""
        with pytest.raises(
            WorkflowError,
            match=(
                r"^Odd: the type argument of SessionStateMachine must be CustomerSession or a "
                rf"subclass of it, got {shown}$"
            ),
        ):

            class Odd(SessionStateMachine[argument]):
                pass

    def test_a_subclass_keeps_the_session_class_of_its_base_s_type_argument(self):
        """A subclass of a parametrised machine that sets none keeps the argument's class."""

        class ReopenMachine(SessionStateMachine[ReopenableCustomerSession]):
            pass

        class Child(ReopenMachine):
            pass

        assert Child.session_class is ReopenableCustomerSession

    def test_a_subclass_s_session_class_is_checked_against_an_inherited_type_argument(self):
        """A subclass's session_class outside its base's type argument is refused, naming both."""

        class ReopenMachine(SessionStateMachine[ReopenableCustomerSession]):
            pass

        with pytest.raises(
            WorkflowError,
            match=(
                r"^Child: session_class must be ReopenableCustomerSession \(the type argument "
                r"of ReopenMachine\) or a subclass of it, got CustomerSession$"
            ),
        ):

            class Child(ReopenMachine):
                session_class = CustomerSession

    def test_a_session_class_that_is_no_session_class_is_refused(self):
        """Without a type argument, a session_class not of CustomerSession is refused."""
        with pytest.raises(
            WorkflowError,
            match=r"^Odd: session_class must be CustomerSession or a subclass of it, got int$",
        ):

            class Odd(SessionStateMachine):
                session_class = int

    def test_a_generic_subclass_takes_the_session_class_when_parametrised(self):
        """A subclass generic in its own type variable sets session_class once given a class."""
        session = TypeVar("session", bound=CustomerSession)

        class AnySession(SessionStateMachine[session]):
            pass

        class ReopenMachine(AnySession[ReopenableCustomerSession]):
            pass

        assert AnySession.session_class is CustomerSession
        assert ReopenMachine.session_class is ReopenableCustomerSession


# Each library error attempt() takes for a refusal (nothing changed), and each it does not.
_REFUSALS = {
    "IllegalTransition": lambda: IllegalTransition(
        trigger=Trigger.CLOSE, state=State.CLOSED, integration_id="x", allowed=frozenset()
    ),
    "GuardRejected": lambda: GuardRejected(
        trigger=Trigger.CLOSE, state=State.OPEN, integration_id="x", guard="g", reason="no"
    ),
    "TransitionInProgress": lambda: TransitionInProgress(
        trigger=Trigger.CLOSE, state=State.OPEN, integration_id="x", running=Trigger.CANCEL
    ),
    "SessionNotEditable": lambda: SessionNotEditable(
        operation="set_coupon", state=State.CLOSED, integration_id="x"
    ),
    "ValidationError": lambda: ValidationError.single("session 'x'", "coupon", "too long"),
}
_NOT_REFUSALS = {
    "ProtectedFieldError": lambda: ProtectedFieldError("state", "fire a trigger"),
    "UnknownTrigger": lambda: UnknownTrigger("ship", CUSTOMER_SESSION.triggers),
    "WorkflowError": lambda: WorkflowError("a workflow of another table"),
    "AssertionError": lambda: AssertionError("your own check failed"),
    "KeyError": lambda: KeyError("a bug in your rule"),
}


def _raise(error: BaseException) -> None:
    raise error


class TestAttemptRefusals:
    def test_an_atomic_block_refused_by_a_closed_session_is_a_refusal(self):
        """An atomic() block that edits, then fires, on a closed session is a refusal."""
        machine = SessionStateMachine()
        machine.create_first(state=State.CLOSED, items=[CartItem(sku="A", quantity=1)])
        session = machine.sessions[0]
        before = session.snapshot()

        def edit_then_cancel() -> TransitionRecord:
            with session.atomic():
                session.set_coupon("SPRING")
                return session.cancel()

        machine.attempt(session, edit_then_cancel)
        assert [type(e) for e in machine.refusals] == [SessionNotEditable]
        assert session.snapshot() == before

    @pytest.mark.parametrize("make", _REFUSALS.values(), ids=_REFUSALS.keys())
    def test_a_refusal_is_recorded(self, make):
        """Each error that means "refused, nothing changed" is recorded in refusals, not raised."""
        machine, session = _machine(SessionStateMachine)
        error = make()
        machine.attempt(session, lambda: _raise(error))
        assert machine.refusals == [error]

    @pytest.mark.parametrize("make", _REFUSALS.values(), ids=_REFUSALS.keys())
    def test_a_refusal_that_changed_the_session_fails(self, make):
        """A refusal after the action changed the session fails the check, whatever its kind."""
        machine, session = _machine(SessionStateMachine)

        def edit_then_refuse() -> None:
            session.set_coupon("SPRING")
            raise make()

        with pytest.raises(AssertionError, match=r"changed session 'order-0'"):
            machine.attempt(session, edit_then_refuse)

    @pytest.mark.parametrize("make", _NOT_REFUSALS.values(), ids=_NOT_REFUSALS.keys())
    def test_any_other_error_fails_the_run(self, make):
        """An error that is no refusal (a mistake in the rule, a failed check) propagates as is."""
        machine, session = _machine(SessionStateMachine)
        error = make()
        with pytest.raises(type(error)) as caught:
            machine.attempt(session, lambda: _raise(error))
        assert caught.value is error
        assert machine.refusals == []


class _NamedPerRun(SessionStateMachine):
    """Creates its named workflow in every run, so copies are pickled too."""

    def make_workflow(self) -> Workflow:
        """The same name in every run."""
        return Workflow(name="test_testing.per-run")


class _NamedPerRunNoCancel(_NamedPerRun):
    """Fails as soon as a session is cancelled."""

    @invariant()
    def never_cancelled(self) -> None:
        """No session is cancelled (false: the run fails)."""
        for session in self.sessions:
            assert session.state is not State.CANCELLED, "a session was cancelled"


class TestNamedWorkflowPerRun:
    def test_every_run_may_create_the_same_named_workflow(self):
        """make_workflow() may create a workflow of one name in every run."""
        run_state_machine_as_test(
            _NamedPerRun, settings=settings(max_examples=50, deadline=None, database=None)
        )

    def test_a_failing_run_reports_its_own_failure(self):
        """After a failing run, the next one creates the named workflow again: it fails alike."""
        with pytest.raises(AssertionError, match="a session was cancelled"):
            run_state_machine_as_test(_NamedPerRunNoCancel, settings=_UNTIL_IT_FAILS)

    def test_a_workflow_from_before_the_run_keeps_its_name(self):
        """A named workflow that existed before the run is still found by name after it."""
        shared = Workflow(name="test_testing.shared")
        machine = type("Shared", (SessionStateMachine,), {"make_workflow": lambda self: shared})()
        machine.teardown()
        with pytest.raises(WorkflowError, match="already exists"):
            Workflow(name="test_testing.shared")


class TestTheKitCatches:
    """Each built-in check fails a session that breaks the promise it checks."""

    def test_a_state_outside_the_table(self):
        """A session in a state its table does not have fails states_are_in_the_table."""
        machine, session = _machine(_ForgedMachine)
        session.forged_state = "shipped"
        with pytest.raises(
            AssertionError, match="'order-0' is in 'shipped', not a state of 'customer_session'"
        ):
            machine.states_are_in_the_table()

    @pytest.mark.parametrize(
        ("state", "history", "message"),
        [
            pytest.param(
                State.CANCELLED,
                (_record(Trigger.CLOSE, State.OPEN, State.CANCELLED),),
                r"'order-0': history\[0\] TransitionRecord\(trigger=<Trigger.CLOSE: 'close'>, "
                r"source=<State.OPEN: 'open'>, destination=<State.CANCELLED: 'cancelled'>.* "
                r"is no edge of 'customer_session'",
                id="no edge",
            ),
            pytest.param(
                State.CANCELLED,
                (
                    _record(Trigger.CLOSE, State.OPEN, State.CLOSED),
                    _record(Trigger.CANCEL, State.OPEN, State.CANCELLED),
                ),
                r"'order-0': history\[1\] leaves 'open', but history\[0\] entered 'closed'",
                id="broken chain",
            ),
            pytest.param(
                None,
                (_record(Trigger.CLOSE, State.OPEN, State.CLOSED),),
                "'order-0' is in 'open', but its history ends in 'closed'",
                id="wrong end",
            ),
        ],
    )
    def test_a_history_that_is_no_path(self, state, history, message):
        """A history with a record that is no edge, does not chain, or ends elsewhere fails."""
        machine, session = _machine(_ForgedMachine)
        session.forged_state, session.forged_history = state, history
        with pytest.raises(AssertionError, match=message):
            machine.histories_are_paths()

    def test_a_transition_no_trigger_call_returned(self):
        """A transition committed by an edit fails history_is_what_was_committed."""
        machine, session = _machine(_ClosedByCouponMachine)
        machine.attempt_edit(session, "ABC")
        with pytest.raises(
            AssertionError,
            match=r"'order-0': the history holds \[TransitionRecord\(trigger=<Trigger.CLOSE.*\)\], "
            r"but the triggers committed \[\]",
        ):
            machine.history_is_what_was_committed()

    def test_a_committed_transition_that_vanished(self):
        """A history that lost a committed record fails history_is_what_was_committed."""
        machine, session = _machine(_ForgedMachine)
        machine.attempt(session, session.close)
        session.forged_history = ()
        with pytest.raises(
            AssertionError, match=r"the history holds \[\], but the triggers committed \[Trans"
        ):
            machine.history_is_what_was_committed()

    def test_a_move_off_the_table_in_a_run(self):
        """A run fails a session whose close records a jump the table does not have."""
        with pytest.raises(AssertionError, match="is no edge of 'customer_session'"):
            _run_with(_SkipsToCancelled)

    @pytest.mark.parametrize(
        ("session_class", "message"),
        [
            pytest.param(
                _IgnoresStateWrites,
                r"state assignment of .* was accepted by session 'order-\d'",
                id="assignment accepted",
            ),
            pytest.param(
                _IgnoresStateDeletes,
                r"state deletion was accepted by session 'order-\d'",
                id="deletion accepted",
            ),
            pytest.param(
                _WritesStateThenRefuses,
                r"the refused state assignment of .* changed session 'order-\d'",
                id="refused write applied",
            ),
            pytest.param(
                _PlainStateProperty,
                r"state assignment of .* raised AttributeError\(.*\), not ProtectedFieldError, "
                r"in session 'order-\d'",
                id="refused with another error",
            ),
        ],
    )
    def test_a_state_that_can_be_written(self, session_class, message):
        """A run fails a session whose state takes a write or delete, or refuses it otherwise."""
        with pytest.raises(AssertionError, match=message):
            _run_with(session_class)

    def test_a_refused_trigger_that_changed_the_session(self):
        """A run fails a session that a refused trigger leaves changed."""
        # Refused for the table (return_items while open) or for items given to a
        # trigger that takes none: the run finds whichever it draws first.
        refused = r"(IllegalTransition|ValidationError)\(.* changed session 'order-\d'"
        with pytest.raises(AssertionError, match=refused):
            _run_with(_EditsBeforeFiring)

    def test_can_and_why_not_that_disagree(self):
        """A run fails a session whose can() says yes where why_not() gives reasons."""
        with pytest.raises(AssertionError, match=r"can\(.*\) is True, but why_not\(\) gives \(\w"):
            _run_with(_AlwaysCan)

    def test_asking_that_changes_the_session(self):
        """A run fails a session that why_not() changes."""
        with pytest.raises(AssertionError, match=r"asking about .* changed session 'order-\d'"):
            _run_with(_EditsWhenAsked)

    def test_a_copy_that_differs(self):
        """A run fails a session whose copies and reloads lose a field."""
        with pytest.raises(AssertionError, match=r"deepcopy\(\) gave .*coupon=None.*, not "):
            _run_with(_LosesCouponInSnapshot)

    def test_an_edit_refused_while_open(self):
        """A run fails a session that refuses an edit while open and idle."""
        with pytest.raises(
            AssertionError,
            match=r"set_coupon\(.*\) of open, idle session 'order-\d' raised ValidationError",
        ):
            _run_with(_RefusesCoupons)

    def test_a_refused_edit_that_changed_the_session(self):
        """A run fails a session that a refused edit leaves changed."""
        with pytest.raises(AssertionError, match=r"the refused set_coupon\(.*\) changed session"):
            _run_with(_StoresCouponThenRefuses)

    def test_an_edit_accepted_after_the_close(self):
        """A run fails a session that takes an edit when it is not open."""
        with pytest.raises(
            AssertionError, match=r"set_coupon\(.*\) was accepted by session 'order-\d' in '\w+'"
        ):
            _run_with(_TakesCouponsWhenClosed)

    def test_a_lying_session_under_optimisation(self):
        """Under ``python -O``, which strips assert statements, a run still fails."""
        script = textwrap.dedent(
            """
            import hypothesis
            from hypothesis.stateful import invariant, rule, run_state_machine_as_test
            from customer_session import CustomerSession
            from customer_session.testing import SessionStateMachine

            class AlwaysCan(CustomerSession):
                def can(self, trigger, *, items=()):
                    return True

            class Machine(SessionStateMachine):
                session_class = AlwaysCan

            run_state_machine_as_test(
                Machine,
                settings=hypothesis.settings(
                    max_examples=200, database=None, derandomize=True, deadline=None,
                    phases=[hypothesis.Phase.generate],
                ),
            )
            """
        )
        run = subprocess.run(
            [sys.executable, "-O", "-c", script], capture_output=True, text=True, check=False
        )
        assert run.returncode == 1
        assert "AssertionError: session 'order-" in run.stderr
        assert "but why_not() gives (" in run.stderr


class TestWithoutHypothesis:
    def test_import_names_the_extra(self, monkeypatch):
        """Without Hypothesis, importing the kit says which extra to install."""
        monkeypatch.setitem(sys.modules, "hypothesis", None)
        monkeypatch.delitem(sys.modules, "customer_session.testing")
        with pytest.raises(ModuleNotFoundError, match=r"customer-session\[testing\]") as caught:
            importlib.import_module("customer_session.testing")
        assert caught.value.name == "hypothesis"
