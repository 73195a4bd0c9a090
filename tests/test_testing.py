import importlib
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CartItem,
    CustomerSession,
    ReopenableCustomerSession,
    State,
    TransitionRecord,
    Trigger,
    ValidationError,
    Workflow,
)
from customer_session.testing import (
    SessionStateMachine,
    attribute_maps,
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

    @given(sessions(session_class=ReopenableCustomerSession))
    def test_sessions_of_another_class(self, session):
        """sessions() builds instances of the class it is given."""
        assert isinstance(session, ReopenableCustomerSession)

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

    @given(wire_documents(valid=True))
    def test_valid_documents_load(self, document):
        """wire_documents(valid=True) yields documents from_dict accepts."""
        from_dict(document)

    @given(wire_documents(valid=False))
    def test_invalid_documents_are_refused(self, document):
        """wire_documents(valid=False) yields documents from_dict refuses."""
        with pytest.raises(ValidationError):
            from_dict(document)


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


class TestWithoutHypothesis:
    def test_import_names_the_extra(self, monkeypatch):
        """Without Hypothesis, importing the kit says which extra to install."""
        monkeypatch.setitem(sys.modules, "hypothesis", None)
        monkeypatch.delitem(sys.modules, "customer_session.testing")
        with pytest.raises(ModuleNotFoundError, match=r"customer-session\[testing\]") as caught:
            importlib.import_module("customer_session.testing")
        assert caught.value.name == "hypothesis"
