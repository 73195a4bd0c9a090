import contextlib
import copy
import pickle
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from immutabledict import immutabledict

from customer_session import (
    CUSTOMER_SESSION,
    AdditionalCost,
    CartItem,
    CustomerSession,
    Edge,
    HookFailed,
    ProtectedFieldError,
    ReopenableCustomerSession,
    ReturnedItem,
    SessionNotEditable,
    Specification,
    State,
    TransitionInProgress,
    TransitionRecord,
    Trigger,
    ValidationError,
    Workflow,
    WorkflowError,
)
from customer_session._cart import MAX_NESTING
from customer_session.testing import attribute_maps, sessions, wire_documents
from customer_session.wire import from_dict, to_dict

from .conftest import BEYOND_UTC_TIMES, BROKEN_ZONE_TIMES

T0 = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
# How long a thread waits for another: only a safety net against a hang, long enough
# for a loaded machine, where a thread may not run for seconds. No verdict relies on it.
WAIT = 60


def fixed_clock(start: datetime = T0, step: timedelta = timedelta(seconds=1)):
    """A clock that ticks one step per call."""
    now = [start - step]

    def clock() -> datetime:
        now[0] += step
        return now[0]

    return clock


class TestCreation:
    def test_defaults(self):
        """A new session is open, empty, first, with update count 1 and no history."""
        s = CustomerSession(integration_id="order-42")
        assert s.state is State.OPEN
        assert s.cart_items == ()
        assert s.update_count == 1
        assert s.history == ()
        assert s.first_session is True
        assert s.total == 0.0

    def test_may_start_closed(self):
        """A session may be created closed."""
        assert CustomerSession(integration_id="o", state=State.CLOSED).state is State.CLOSED

    def test_state_given_as_string_becomes_the_enum(self):
        """A state given by its wire value is stored as the State member."""
        assert CustomerSession(integration_id="o", state="closed").state is State.CLOSED

    @pytest.mark.parametrize("state", [State.CANCELLED, State.PARTIALLY_RETURNED])
    def test_may_not_start_elsewhere(self, state):
        """Creating a session in a non-initial state is refused with the restore hint."""
        with pytest.raises(ValidationError, match="restore"):
            CustomerSession(integration_id="o", state=state)

    def test_unknown_state_is_refused(self):
        """An unknown state is refused, naming the field."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", state="bogus")
        assert [p.path for p in info.value.problems] == ["state"]

    def test_every_problem_is_listed(self):
        """Construction lists every invalid field at once, each with its path."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(
                integration_id="",
                coupon="C" * 101,
                identifiers=["a", "b", "c", "d", "e", "f"],
                application_id=-1,
            )
        paths = {p.path for p in info.value.problems}
        assert paths == {"integration_id", "coupon", "identifiers", "application_id"}

    def test_cart_limits(self):
        """More than 10,000 units in a cart is refused."""
        with pytest.raises(ValidationError, match="10000"):
            CustomerSession(integration_id="o", cart_items=[CartItem(sku="A", quantity=10_001)])

    def test_lists_are_stored_as_tuples(self):
        """A list passed in is copied to a tuple, so the caller's list cannot change it."""
        cart = [CartItem(sku="A", quantity=1)]
        s = CustomerSession(integration_id="o", cart_items=cart)
        cart.append(CartItem(sku="B", quantity=1))
        assert s.cart_items == (CartItem(sku="A", quantity=1),)  # a tuple: no list equals it

    def test_discounts_are_copied(self):
        """A discounts dict passed in is copied, so the caller's dict cannot change it."""
        discounts = {"10%": 1.5}
        s = CustomerSession(integration_id="o", discounts=discounts)
        discounts["10%"] = 99.0
        assert s.discounts == {"10%": 1.5}

    def test_clock_sets_created_and_updated(self):
        """created and updated come from the workflow's clock."""
        s = CustomerSession(integration_id="o", workflow=Workflow(clock=fixed_clock()))
        assert s.created == s.updated == T0

    def test_timestamps_are_normalized_to_utc(self):
        """An aware timestamp in another zone is stored in UTC."""
        cet = timezone(timedelta(hours=1))
        s = CustomerSession(integration_id="o", created=datetime(2026, 1, 1, 12, tzinfo=cet))
        assert s.created.tzinfo is UTC
        assert s.created.hour == 11

    def test_updated_is_normalized_to_utc(self):
        """An aware ``updated`` in another zone is stored in UTC, as ``created`` is."""
        cet = timezone(timedelta(hours=1))
        s = CustomerSession(
            integration_id="o", created=T0, updated=datetime(2026, 3, 2, 12, tzinfo=cet)
        )
        assert s.updated.tzinfo is UTC
        assert s.updated.hour == 11

    def test_naive_timestamp_is_refused(self):
        """A naive created timestamp is refused."""
        with pytest.raises(ValidationError, match="aware"):
            CustomerSession(integration_id="o", created=datetime(2026, 1, 1))  # noqa: DTZ001

    def test_workflow_of_another_specification_is_refused(self):
        """A session cannot be bound to a workflow of another table."""
        with pytest.raises(WorkflowError, match="drives another specification"):
            CustomerSession(integration_id="o", workflow=ReopenableCustomerSession.default_workflow)


class TestLimits:
    """Each limit holds at its boundary, on the quick check of a new session as on the full one."""

    @pytest.mark.parametrize(
        ("field", "largest", "beyond"),
        [
            ("integration_id", "i" * 1000, "i" * 1001),
            ("coupon", "C" * 100, "C" * 101),
            ("referral", "R" * 100, "R" * 101),
            (
                "cart_items",
                [CartItem(sku="A", quantity=1)] * 1000,
                [CartItem(sku="A", quantity=1)] * 1001,
            ),
        ],
        ids=["integration_id", "coupon", "referral", "cart_items"],
    )
    def test_a_value_one_beyond_its_limit_is_refused(self, field, largest, beyond):
        """A field at its limit is accepted and one beyond it is refused, naming the field."""
        fields = {"integration_id": "o"}
        assert getattr(CustomerSession(**{**fields, field: largest}), field) is not None
        with pytest.raises(ValidationError) as info:
            CustomerSession(**{**fields, field: beyond})
        assert [p.path for p in info.value.problems] == [field]

    @pytest.mark.parametrize(
        ("field", "value"),
        [("first_session", 1), ("first_session", None), ("application_id", True)],
        ids=["first_session-int", "first_session-none", "application_id-bool"],
    )
    def test_a_value_of_a_look_alike_type_is_refused(self, field, value):
        """An int for the bool ``first_session`` or a bool for ``application_id`` is refused."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", **{field: value})
        assert [p.path for p in info.value.problems] == [field]

    def test_updated_before_created_is_refused(self):
        """A new session whose ``updated`` is earlier than ``created`` is refused."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", created=T0, updated=T0 - timedelta(seconds=1))
        assert [p.path for p in info.value.problems] == ["updated"]

    def test_updated_equal_to_created_is_accepted(self):
        """``updated`` may equal ``created``."""
        assert CustomerSession(integration_id="o", created=T0, updated=T0).updated == T0


class TestTimesBeyondUTC:
    @pytest.mark.parametrize("field", ["created", "updated"])
    @pytest.mark.parametrize("moment", BEYOND_UTC_TIMES)
    def test_a_time_that_utc_cannot_hold_is_refused_by_name(self, field, moment):
        """An aware time outside the years 1 to 9999 once in UTC is a ValidationError at it."""
        values = {"created": moment} if field == "created" else {"updated": moment}
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", **values)
        assert field in [p.path for p in info.value.problems]
        assert "within the years 1 to 9999 in UTC" in str(info.value)

    @pytest.mark.parametrize("field", ["created", "updated"])
    @pytest.mark.parametrize("moment", BROKEN_ZONE_TIMES)
    def test_a_time_whose_zone_fails_is_refused_by_name(self, field, moment):
        """A time whose time zone fails is refused at its field as a naive one is."""
        values = {"created": moment} if field == "created" else {"updated": moment}
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", **values)
        messages = {p.path: p.message for p in info.value.problems}
        assert messages[field].startswith("must be an aware datetime, got ")
        assert "whose time zone failed" in messages[field]

    @pytest.mark.parametrize("moment", BROKEN_ZONE_TIMES)
    def test_a_history_time_whose_zone_fails_is_refused(self, moment):
        """restore() with a record at a time whose zone fails names the record's timestamp."""
        record = TransitionRecord(Trigger.CLOSE, State.OPEN, State.CLOSED, moment)
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o", state="closed", created=T0, history=[record]
            )
        assert "history[0].timestamp" in [p.path for p in info.value.problems]

    @pytest.mark.parametrize("moment", BEYOND_UTC_TIMES)
    def test_a_history_time_that_utc_cannot_hold_is_refused(self, moment):
        """restore() with a record at such a time names the record's timestamp."""
        s = CustomerSession(integration_id="o")
        s.close()
        snapshot = s.snapshot()
        (record,) = snapshot["history"]
        snapshot["history"] = (attrs.evolve(record, timestamp=moment),)
        with pytest.raises(ValidationError, match=r"history\[0\]\.timestamp"):
            CustomerSession.restore(**snapshot)


class TestRestore:
    @pytest.mark.parametrize("state", list(State))
    def test_any_state_can_be_restored(self, state):
        """restore() accepts each of the four states."""
        cart = [CartItem(sku="A", quantity=1, returned_quantity=1)]
        if state in CustomerSession.specification.states_with_returns:
            assert (
                CustomerSession.restore(integration_id="o", state=state, cart_items=cart).state
                is state
            )
        if state not in CustomerSession.specification.states_after_returns:
            assert CustomerSession.restore(integration_id="o", state=state).state is state

    def test_code_restore_runs_cannot_create_a_session_in_any_state(self):
        """A session the clock creates while restore() runs must start open or closed too."""
        outcome: list[object] = []

        def clock() -> datetime:
            if not outcome:
                try:
                    outcome.append(CustomerSession(integration_id="n", state=State.CANCELLED))
                except ValidationError as error:
                    outcome.append(error)
            return T0

        CustomerSession.restore(
            integration_id="o", state=State.CLOSED, workflow=Workflow(clock=clock)
        )
        assert isinstance(outcome[0], ValidationError)
        assert "a new session starts closed or open" in str(outcome[0])

    def test_unknown_state_is_refused(self):
        """restore() refuses anything that is not a state of the table, naming the field."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", state="reopened")
        ((path, message),) = [(p.path, p.message) for p in info.value.problems]
        assert path == "state"
        assert message.endswith("got 'reopened'")

    def test_an_unknown_keyword_is_a_validation_error_naming_it(self):
        """A keyword that is no field is a ValidationError naming it (and a near field)."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", state=State.OPEN, bogus=1, cupon="X")
        assert info.value.subject == "CustomerSession.restore()"
        assert [str(p) for p in info.value.problems] == [
            "bogus: is not a field of CustomerSession",
            "cupon: is not a field of CustomerSession; did you mean 'coupon'?",
        ]

    def test_a_missing_integration_id_is_a_validation_error(self):
        """restore() without integration_id is a ValidationError naming it, with the others."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(state=State.OPEN, update_count=0)
        assert [p.path for p in info.value.problems] == ["integration_id", "update_count"]

    @pytest.mark.parametrize("session_class", [CustomerSession, ReopenableCustomerSession])
    def test_a_missing_state_is_a_validation_error_naming_it(self, session_class):
        """restore() without state is a ValidationError naming it, not a TypeError."""
        with pytest.raises(ValidationError) as info:
            session_class.restore(integration_id="o")
        assert info.value.subject == f"{session_class.__name__}.restore()"
        assert [str(p) for p in info.value.problems] == ["state: is required"]

    def test_every_missing_argument_is_named_with_the_other_problems(self):
        """restore() with no argument names both required ones, and the other problems too."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(update_count=0)
        assert [str(p) for p in info.value.problems] == [
            "integration_id: is required",
            "state: is required",
            "update_count: must be an integer >= 1, got 0",
        ]

    def test_a_history_is_not_compared_with_a_missing_state(self):
        """Without a state, a history's records are checked, but not where they end."""
        history = [
            TransitionRecord(Trigger.CLOSE, State.OPEN, State.CLOSED, T0),
            TransitionRecord(Trigger.CLOSE, State.CLOSED, State.OPEN, T0),
        ]
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", history=history)
        assert [p.path for p in info.value.problems] == ["state", "history[1]"]

    def test_history_must_end_in_the_state(self):
        """A restored history that ends in another state than the session's is refused."""
        s = CustomerSession(integration_id="o")
        s.close()
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", state=State.OPEN, history=s.history)
        assert [(p.path, p.message) for p in info.value.problems] == [
            ("history", "ends in 'closed' but the state is 'open'")
        ]

    @given(
        session_class=st.sampled_from([CustomerSession, ReopenableCustomerSession]),
        data=st.data(),
    )
    def test_history_is_accepted_exactly_when_its_records_chain(self, session_class, data):
        """restore() refuses a history whose record starts elsewhere than the previous one ended."""
        # Edges that neither return nor pass a state only a return leads to, so nothing
        # but the chain can make restore() refuse the history.
        spec = session_class.specification
        edges = [
            e
            for e in spec.edges
            if e.trigger is not Trigger.RETURN_ITEMS and e.source not in spec.states_after_returns
        ]
        drawn = data.draw(st.lists(st.sampled_from(edges), min_size=1, max_size=6))
        history = [TransitionRecord(e.trigger, e.source, e.destination, T0) for e in drawn]
        breaks = [
            f"history[{i}].source"
            for i in range(1, len(drawn))
            if drawn[i - 1].destination is not drawn[i].source
        ]
        fields = {
            "integration_id": "o",
            "state": drawn[-1].destination,
            "history": history,
            "update_count": len(history) + 1,
            "created": T0,
        }
        if not breaks:
            assert session_class.restore(**fields).history == tuple(history)
            return
        with pytest.raises(ValidationError) as info:
            session_class.restore(**fields)
        assert [p.path for p in info.value.problems] == breaks

    @given(sessions())
    def test_snapshot_round_trips(self, session):
        """restore(**snapshot()) gives an equal session."""
        assert type(session).restore(**session.snapshot()) == session


class TestProtectedFields:
    def test_state_cannot_be_assigned(self):
        """Assigning state raises a library error that is also an AttributeError."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ProtectedFieldError, match="trigger") as info:
            s.state = State.CLOSED  # type: ignore[misc]
        assert isinstance(info.value, AttributeError)
        assert s.state is State.OPEN

    def test_state_cannot_be_deleted(self):
        """Deleting state is refused."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ProtectedFieldError, match=r"^'state' cannot be assigned or deleted"):
            del s.state
        assert s.state is State.OPEN

    @pytest.mark.parametrize(
        ("name", "edit"),
        [
            ("cart_items", "add_item(), update_item(), remove_item() or set_cart_items()"),
            ("coupon", "set_coupon()"),
            ("referral", "set_referral()"),
            ("profile_id", "set_profile_id()"),
            ("identifiers", "set_identifiers()"),
            ("attributes", "set_attribute() or remove_attribute()"),
            ("additional_costs", "set_additional_cost()"),
        ],
    )
    def test_an_editable_field_names_its_edit(self, name, edit):
        """Writing an editable field says which edit method changes it."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ProtectedFieldError) as info:
            setattr(s, name, getattr(s, name))
        assert str(info.value).endswith(f"; use {edit} (only while the session is open)")

    @pytest.mark.parametrize("name", ["history", "update_count"])
    def test_a_field_no_edit_changes_says_the_library_maintains_it(self, name):
        """Writing a field no edit method changes says the library maintains it."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ProtectedFieldError) as info:
            setattr(s, name, getattr(s, name))
        assert str(info.value) == (
            f"{name!r} cannot be assigned or deleted directly; it is maintained by the library"
        )

    @pytest.mark.parametrize(
        "name",
        [a.alias for a in attrs.fields(CustomerSession) if a.eq]
        + ["workflow", "total", "allowed_triggers"],
    )
    def test_every_field_and_derived_value_refuses_writes_and_deletes(self, name):
        """Each public field and derived value refuses assignment and deletion alike."""
        s = CustomerSession(integration_id="o")
        before = s.snapshot()
        with pytest.raises(ProtectedFieldError, match=repr(name)):
            setattr(s, name, None)
        with pytest.raises(ProtectedFieldError, match=repr(name)):
            delattr(s, name)
        assert s.snapshot() == before

    def test_repr_uses_the_constructor_names(self):
        """repr() shows the public names a session is built with, not its slots."""
        text = repr(CustomerSession(integration_id="o"))
        assert text.startswith("CustomerSession(integration_id='o', state=")
        assert "_state" not in text
        assert "workflow" not in text

    def test_evolve_cannot_reach_a_non_initial_state(self):
        """attrs.evolve builds a new session, so it cannot jump to cancelled."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError, match="a new session starts closed or open, not 'canc"):
            attrs.evolve(s, state=State.CANCELLED)

    def test_setstate_cannot_load_an_unknown_state(self):
        """__setstate__ validates like restore and leaves the session unchanged."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError, match=r"state: must be one of .*, got 'bogus'$"):
            s.__setstate__({**s.snapshot(), "state": "bogus"})
        assert s.state is State.OPEN

    @pytest.mark.parametrize("name", [a.alias for a in attrs.fields(CartItem)])
    def test_cart_item_is_immutable(self, name):
        """Every field of a cart item refuses writes and deletes with a library error."""
        item = CartItem(sku="A", quantity=1)
        with pytest.raises(ProtectedFieldError, match="immutable"):
            setattr(item, name, None)
        with pytest.raises(ProtectedFieldError, match="immutable"):
            delattr(item, name)
        assert item == CartItem(sku="A", quantity=1)

    def test_equal_cart_items_hash_alike(self):
        """Equal cart items (attributes included) have equal hashes."""
        item = CartItem(sku="A", quantity=1, attributes={"gift": True})
        assert hash(item) == hash(CartItem(sku="A", quantity=1, attributes={"gift": True}))

    def test_a_cart_item_evolves_into_a_changed_copy(self):
        """attrs.evolve() gives a copy with the field changed, the item itself unchanged."""
        item = CartItem(sku="A", quantity=1)
        assert attrs.evolve(item, quantity=2) == CartItem(sku="A", quantity=2)
        assert item.quantity == 1

    def test_a_cart_items_repr_shows_its_constructor_arguments(self):
        """repr() of a cart item shows the arguments it is built with, in their order."""
        item = CartItem(sku="A", quantity=1, attributes={"gift": True})
        assert repr(item).startswith("CartItem(sku='A', quantity=1, name=None")

    def test_attributes_cannot_be_mutated_in_place(self):
        """The attributes mapping is immutable."""
        s = CustomerSession(integration_id="o", attributes={"a": 1})
        with pytest.raises(TypeError):
            s.attributes["b"] = 2  # type: ignore[index]


_FROZEN_TYPES = (str, int, float, bool, type(None), tuple, immutabledict)


def _mutable_parts(value: object) -> list[object]:
    """Every value reachable from ``value`` that could be changed in place."""
    if not isinstance(value, _FROZEN_TYPES):
        return [value]
    if isinstance(value, immutabledict):
        return [p for item in value.values() for p in _mutable_parts(item)]
    if isinstance(value, tuple):
        return [p for item in value for p in _mutable_parts(item)]
    return []


def _held_values(session: CustomerSession) -> list[object]:
    """The session's attributes and those of its cart items."""
    return [session.attributes, *(line.attributes for line in session.cart_items)]


class TestFrozenAttributes:
    def test_nested_values_read_back_frozen(self):
        """Arrays in attributes read back as tuples and objects as immutable mappings."""
        s = CustomerSession(integration_id="o", attributes={"tags": ["vip"], "to": {"l": [1]}})
        assert s.attributes["tags"] == ("vip",)
        assert s.attributes["to"] == {"l": (1,)}
        with pytest.raises(AttributeError):
            s.attributes["tags"].append("x")  # type: ignore[union-attr]
        with pytest.raises(TypeError):
            s.attributes["to"]["l"] = 2  # type: ignore[index]

    @pytest.mark.parametrize("depth", [MAX_NESTING, 5_000])
    def test_values_nested_too_deep_are_refused(self, depth):
        """Too deep a value is a ValidationError (not a RecursionError), and nothing is set."""
        value: list[object] = []
        for _ in range(depth - 1):
            value = [value]
        with pytest.raises(ValidationError, match=f"more than {MAX_NESTING} levels"):
            CustomerSession(integration_id="o", attributes={"a": value})
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError, match=f"more than {MAX_NESTING} levels"):
            s.set_attribute("a", value)
        assert s.attributes == {}

    def test_constructor_keeps_a_copy_of_the_callers_values(self):
        """Changing the dict given to the constructor afterwards changes nothing."""
        given_value = {"tags": ["vip"]}
        s = CustomerSession(integration_id="o", attributes=given_value)
        given_value["tags"].append("x")
        assert s.attributes == {"tags": ("vip",)}

    def test_set_attribute_keeps_a_copy_of_the_value(self):
        """Changing the value given to set_attribute() afterwards changes nothing."""
        s = CustomerSession(integration_id="o")
        tags = ["vip"]
        s.set_attribute("tags", tags)
        tags.append("x")
        assert s.attributes == {"tags": ("vip",)}

    def test_nested_value_changes_by_setting_the_attribute_again(self):
        """The documented way to change a nested value: set the attribute to a new one."""
        s = CustomerSession(integration_id="o", attributes={"tags": ["vip"]})
        s.set_attribute("tags", [*s.attributes["tags"], "gift"])  # type: ignore[misc]
        assert s.attributes["tags"] == ("vip", "gift")

    def test_rolled_back_block_puts_nested_values_back(self):
        """atomic() puts back an attribute whose nested value a failed block replaced."""
        s = CustomerSession(integration_id="o", attributes={"tags": ["vip"]})
        with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
            s.set_attribute("tags", [*s.attributes["tags"], "fraud-check"])  # type: ignore[misc]
            raise RuntimeError
        assert s.attributes == {"tags": ("vip",)}

    def test_copies_share_no_mutable_values(self):
        """A restored copy holds the same frozen values: nothing to change in either."""
        s = CustomerSession(integration_id="o", attributes={"tags": ["vip"]})
        copied = type(s).restore(**s.snapshot())
        assert copied.attributes is s.attributes
        assert _mutable_parts(copied.attributes) == []

    def test_attributes_that_are_not_a_mapping_are_refused(self):
        """An empty list is refused as attributes, not taken as no attributes."""
        with pytest.raises(ValidationError, match="attributes: must be a mapping"):
            CustomerSession(integration_id="o", attributes=[])  # type: ignore[arg-type]

    @given(attribute_maps(), attribute_maps())
    def test_nothing_reachable_from_attributes_is_mutable(self, attributes, item_attributes):
        """Whichever way attributes come in, nothing reachable from them can change in place."""
        item = CartItem(sku="A", quantity=1, attributes=item_attributes)
        built = CustomerSession(integration_id="o", attributes=attributes, cart_items=[item])
        edited = CustomerSession(integration_id="o")
        for name, value in attributes.items():
            edited.set_attribute(name, value)
        edited.add_item(attrs.evolve(item))
        read = from_dict(to_dict(built))
        for session in (built, edited, read):
            assert all(_mutable_parts(held) == [] for held in _held_values(session))

    @given(wire_documents())
    def test_nothing_reachable_from_read_attributes_is_mutable(self, document):
        """A session read from a wire document holds no mutable value in its attributes."""
        session = from_dict(document)
        assert all(_mutable_parts(held) == [] for held in _held_values(session))


class TestCopies:
    @given(sessions())
    def test_pickle_round_trips_in_any_state(self, session):
        """A pickled session loads equal, bound to the same workflow."""
        loaded = pickle.loads(pickle.dumps(session))  # noqa: S301 - our own data
        assert loaded == session
        assert loaded.workflow is session.workflow

    @given(sessions())
    def test_deepcopy_keeps_working(self, session):
        """A deep copy is equal and independent, and its triggers still work."""
        clone = copy.deepcopy(session)
        assert clone == session
        if Trigger.CANCEL in clone.allowed_triggers:
            clone.cancel()
            assert clone.state is State.CANCELLED
            assert session.state is not State.CANCELLED

    def test_unnamed_workflow_cannot_be_pickled(self):
        """Pickling a session of an unnamed workflow says how to fix it."""
        s = CustomerSession(integration_id="o", workflow=Workflow())
        with pytest.raises(WorkflowError, match="name"):
            pickle.dumps(s)

    def test_named_workflow_survives_pickling(self):
        """A session of a named workflow is re-bound to it when loaded."""
        workflow = Workflow(name="test_model.pickled")
        s = CustomerSession(integration_id="o", workflow=workflow)
        assert pickle.loads(pickle.dumps(s)).workflow is workflow  # noqa: S301 - our own data

    def test_setstate_inside_a_hook_is_refused(self):
        """Reloading a session in its own trigger's hook fails; it cannot go cancelled -> closed."""
        workflow = Workflow()

        def reload_then_cancel(event):
            event.session.__setstate__(event.session.snapshot())
            event.session.cancel()

        workflow.before(reload_then_cancel, trigger=Trigger.CLOSE)
        s = CustomerSession(integration_id="o", workflow=workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        refused = info.value.__cause__
        assert isinstance(refused, SessionNotEditable)
        assert (refused.operation, refused.running, refused.asking) == (
            "__setstate__",
            Trigger.CLOSE,
            False,
        )
        assert "while close() is in progress" in str(refused)
        assert (s.state, s.history, s._running) == (State.OPEN, (), None)

    def test_setstate_after_commit_is_allowed(self):
        """An after-commit hook may reload the session: its trigger is no longer running."""
        workflow = Workflow()
        workflow.after_commit(
            lambda event: event.session.__setstate__(event.session.snapshot()),
            trigger=Trigger.CLOSE,
        )
        s = CustomerSession(integration_id="o", workflow=workflow)
        record = s.close()
        assert (s.state, s.history, s._running) == (State.CLOSED, (record,), None)

    def test_setstate_names_unknown_and_missing_values(self):
        """__setstate__ with a value of no field, or without the state, is a ValidationError."""
        s = CustomerSession(integration_id="o")
        before = s.snapshot()
        values = {"integration_id": "o", "colour": "red", 7: None}
        with pytest.raises(ValidationError) as info:
            s.__setstate__(values)
        assert {p.path: p.message for p in info.value.problems} == {
            "colour": "is not a field of CustomerSession",
            "7": "is not a field of CustomerSession",
            "state": "is missing",
        }
        assert s.snapshot() == before

    def test_setstate_loads_an_uninitialized_object(self):
        """__setstate__ on a bare object (as a pickle protocol may make) fills it in."""
        s = CustomerSession(integration_id="o", coupon="C")
        bare = object.__new__(CustomerSession)
        bare.__setstate__(s.snapshot())
        assert bare == s
        bare.close()
        assert bare.state is State.CLOSED


def _in_thread(action):
    """Run ``action`` in a new thread (outside any block); what it returned or raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


class TestAtomic:
    def test_closing_a_nested_block_from_another_thread_gives_it_no_hold(self):
        """A thread that finalizes a block nested in another thread's block is still outside it."""
        s, other = CustomerSession(integration_id="o"), CustomerSession(integration_id="p")

        def nested():
            with other.atomic():
                yield

        errors: list[BaseException] = []

        def outsider(block) -> None:
            block.close()  # finalizes the nested block from this thread
            try:
                s.cancel()
            except TransitionInProgress as exc:
                errors.append(exc)

        with s.atomic():
            block = nested()
            next(block)
            thread = threading.Thread(target=outsider, args=(block,))
            thread.start()
            thread.join()
        assert len(errors) == 1
        assert errors[0].held
        assert s.state is State.OPEN

    def test_a_block_closed_in_another_thread_frees_the_session(self):
        """A block a generator holds, finalized from another thread, still frees the session."""
        s = CustomerSession(integration_id="o")

        def holding():
            with s.atomic():
                yield

        block = holding()
        next(block)
        closer = threading.Thread(target=block.close)
        closer.start()
        closer.join()
        s.set_coupon("X")
        assert s.coupon == "X"

    @pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooked"])
    def test_a_session_taken_while_a_trigger_reads_the_clock_is_left_alone(self, hooked):
        """Another thread's block taking the session during a trigger's clock call wins."""
        entered, go_on = threading.Event(), threading.Event()

        def clock() -> datetime:
            if threading.current_thread().name == "trigger":
                entered.set()
                go_on.wait(WAIT)
            return datetime.now(UTC)

        workflow = Workflow(clock=clock)
        if hooked:
            workflow.after_commit(lambda event: None)
        s = CustomerSession(integration_id="o", workflow=workflow)
        outcome: list[object] = []

        def close() -> None:
            try:
                outcome.append(s.close())
            except TransitionInProgress as exc:
                outcome.append(exc)

        trigger = threading.Thread(target=close, name="trigger")
        trigger.start()
        assert entered.wait(WAIT)

        def failing_block() -> None:
            with s.atomic():
                go_on.set()  # the trigger goes on while this block holds the session
                trigger.join(WAIT)
                assert not trigger.is_alive()
                raise RuntimeError

        with pytest.raises(RuntimeError):
            failing_block()
        assert isinstance(outcome[0], TransitionInProgress)
        assert (s.state, s.history) == (State.OPEN, ())

    def test_a_failed_block_puts_edits_and_triggers_back(self):
        """A block that raises leaves no trace of its edits and transitions."""
        s = CustomerSession(integration_id="o", cart_items=[CartItem(sku="A", quantity=2)])
        before = s.snapshot()
        with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
            s.set_coupon("X")
            s.close()
            s.return_items([ReturnedItem(position=0, quantity=1)])
            raise RuntimeError
        assert s.snapshot() == before
        assert s._running is None

    def test_trigger_from_another_thread_is_refused(self):
        """Another thread's trigger on a held session is refused; a rollback cannot undo it."""
        effects: list[str] = []
        workflow = Workflow()
        workflow.after_commit(lambda event: effects.append("charged"), trigger=Trigger.CLOSE)
        s = CustomerSession(integration_id="o", workflow=workflow)
        with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
            s.set_coupon("X")
            refused = _in_thread(s.close)
            raise RuntimeError
        assert isinstance(refused, TransitionInProgress)
        assert (refused.held, refused.running, refused.trigger) == (True, None, Trigger.CLOSE)
        assert (s.state, s.coupon, effects) == (State.OPEN, None, [])

    def test_edit_reload_and_block_from_another_thread_are_refused(self):
        """Another thread can neither edit, reload nor open a block on a held session."""
        s = CustomerSession(integration_id="o")

        def block() -> None:
            with s.atomic():
                pass

        attempts = {
            "add_item": lambda: s.add_item(CartItem(sku="B", quantity=1)),
            "__setstate__": lambda: s.__setstate__(s.snapshot()),
            "atomic": block,
        }
        with s.atomic():
            s.set_coupon("X")
            refused = {name: _in_thread(attempt) for name, attempt in attempts.items()}
        for name, error in refused.items():
            assert isinstance(error, SessionNotEditable), name
            assert (error.operation, error.held, error.running) == (name, True, None)
            assert "atomic() block of another task or thread" in str(error)
        assert (s.coupon, s.cart_items) == ("X", ())

    def test_the_session_is_released_when_the_block_ends(self):
        """Once the outermost block has ended, committed or not, any thread may change it."""
        s = CustomerSession(integration_id="o")
        with s.atomic():
            s.set_coupon("X")
        with pytest.raises(RuntimeError), s.atomic():
            raise RuntimeError
        record = _in_thread(s.close)
        assert s.history == (record,)
        assert s._running is None

    def test_a_nested_block_rolls_back_to_its_own_start(self):
        """An inner block that fails undoes only its changes; the outer block still holds."""
        s = CustomerSession(integration_id="o")
        with s.atomic():
            s.set_coupon("OUTER")
            with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
                s.set_coupon("INNER")
                s.close()
                raise RuntimeError
            assert (s.state, s.coupon) == (State.OPEN, "OUTER")
            assert isinstance(_in_thread(s.cancel), TransitionInProgress)
            s.cancel()
        assert (s.state, s.coupon, s._running) == (State.CANCELLED, "OUTER", None)

    def test_blocks_on_two_sessions_nest(self):
        """Inside a block on another session, the outer block's session is still its own."""
        first, second = CustomerSession(integration_id="a"), CustomerSession(integration_id="b")
        with first.atomic(), second.atomic():
            first.set_coupon("A")
            second.close()
            first.close()
        assert (first.state, first.coupon, second.state) == (State.CLOSED, "A", State.CLOSED)

    def test_hooked_triggers_and_asking_inside_the_block_keep_the_hold(self):
        """A trigger with hooks, or can() with guards, in a block leave the session held."""
        workflow = Workflow()
        workflow.guard(lambda event: None, trigger=Trigger.CANCEL)
        workflow.before(lambda event: event.session.set_attribute("seen", True))
        s = CustomerSession(integration_id="o", workflow=workflow)
        with s.atomic():
            s.close()
            assert s.can(Trigger.CANCEL)
            assert isinstance(_in_thread(s.cancel), TransitionInProgress)
        assert (s.state, s.attributes, s._running) == (State.CLOSED, {"seen": True}, None)

    def test_no_block_opens_while_a_trigger_runs(self):
        """A hook before the commit point cannot open a block on its own session."""
        workflow = Workflow()

        def nested_block(event):
            with event.session.atomic():
                event.session.set_coupon("X")

        workflow.before(nested_block, trigger=Trigger.CLOSE)
        s = CustomerSession(integration_id="o", workflow=workflow)
        with pytest.raises(HookFailed) as info:
            s.close()
        refused = info.value.__cause__
        assert isinstance(refused, SessionNotEditable)
        assert (refused.operation, refused.running) == ("atomic", Trigger.CLOSE)
        assert not refused.held
        assert (s.state, s.coupon, s._running) == (State.OPEN, None, None)

    def test_the_block_may_reload_its_session(self):
        """__setstate__ in the block keeps the hold, and a rollback undoes it (workflow too)."""
        workflow, other = Workflow(), Workflow()
        s = CustomerSession(integration_id="o", workflow=workflow)
        replacement = CustomerSession(integration_id="o", coupon="NEW", workflow=other)
        with pytest.raises(RuntimeError), s.atomic():  # noqa: PT012 - the block is what is tested
            s.__setstate__(replacement.snapshot())
            assert (s.coupon, s.workflow) == ("NEW", other)
            assert isinstance(_in_thread(s.close), TransitionInProgress)
            raise RuntimeError
        assert (s.coupon, s.workflow, s._running) == (None, workflow, None)


class TestEdits:
    def test_remove_attribute_removes_it(self):
        """``remove_attribute`` removes a set attribute, keeps the others, and is an update."""
        s = CustomerSession(integration_id="o", attributes={"a": 1, "b": 2})
        s.remove_attribute("a")
        assert s.attributes == {"b": 2}
        assert s.update_count == 2

    @pytest.mark.parametrize("operation", ["update_item", "remove_item"])
    def test_a_bool_is_no_position(self, operation):
        """``True`` is refused as a position rather than read as 1; nothing changes."""
        cart = [CartItem(sku="A", quantity=1), CartItem(sku="B", quantity=1)]
        s = CustomerSession(integration_id="o", cart_items=cart)
        args = (True, CartItem(sku="C", quantity=1)) if operation == "update_item" else (True,)
        with pytest.raises(ValidationError, match="no cart item at position True"):
            getattr(s, operation)(*args)
        assert s.cart_items == tuple(cart)

    @pytest.mark.parametrize("operation", ["update_item", "remove_item"])
    def test_a_negative_position_is_refused(self, operation):
        """A negative position names no cart item (no counting from the end); nothing changes."""
        item = CartItem(sku="A", quantity=1)
        s = CustomerSession(integration_id="o", cart_items=[item])
        args = (-1, CartItem(sku="B", quantity=1)) if operation == "update_item" else (-1,)
        with pytest.raises(ValidationError, match="no cart item at position -1"):
            getattr(s, operation)(*args)
        assert s.cart_items == (item,)
        assert s.update_count == 1

    def test_add_update_remove_item(self):
        """Cart edits work while open and keep the total consistent."""
        s = CustomerSession(integration_id="o")
        position = s.add_item(CartItem(sku="A", quantity=2, price=5.0))
        s.add_item(CartItem(sku="B", quantity=1, price=1.0))
        s.update_item(position, CartItem(sku="A", quantity=3, price=5.0))
        assert s.total == 16.0
        removed = s.remove_item(0)
        assert removed.sku == "A"
        assert [i.sku for i in s.cart_items] == ["B"]
        assert s.total == 1.0

    def test_edits_count_as_updates(self):
        """Every edit raises update_count and moves updated."""
        s = CustomerSession(integration_id="o", workflow=Workflow(clock=fixed_clock()))
        s.set_coupon("WELCOME10")
        s.set_attribute("ShippingCity", "Leipzig")
        assert s.update_count == 3
        assert s.updated > s.created

    @pytest.mark.parametrize(
        "edit",
        [
            lambda s: s.remove_attribute("absent"),
            lambda s: s.set_attribute("tags", ["gift", {"wrap": True}]),
            lambda s: s.set_coupon("WELCOME10"),
            lambda s: s.set_referral(None),
            lambda s: s.set_profile_id("cust-1"),
            lambda s: s.set_identifiers(["ip-1"]),
            lambda s: s.set_cart_items([CartItem(sku="A", quantity=2, price=5.0)]),
            lambda s: s.update_item(0, CartItem(sku="A", quantity=2, price=5.0)),
            lambda s: s.set_additional_cost("shipping", 4.9),
            lambda s: s.set_additional_cost("giftwrap", None),
        ],
        ids=[
            "remove_attribute",
            "set_attribute",
            "set_coupon",
            "set_referral",
            "set_profile_id",
            "set_identifiers",
            "set_cart_items",
            "update_item",
            "set_additional_cost",
            "remove_additional_cost",
        ],
    )
    def test_an_edit_that_changes_nothing_is_no_update(self, edit):
        """An edit that leaves every field as it was keeps update_count and updated."""
        s = CustomerSession(
            integration_id="o",
            profile_id="cust-1",
            coupon="WELCOME10",
            identifiers=["ip-1"],
            cart_items=[CartItem(sku="A", quantity=2, price=5.0)],
            attributes={"tags": ["gift", {"wrap": True}]},
            additional_costs={"shipping": AdditionalCost(4.9)},
            workflow=Workflow(clock=fixed_clock()),
        )
        before = s.snapshot()
        edit(s)
        assert s.snapshot() == before
        assert (s.update_count, s.updated) == (1, s.created)

    @pytest.mark.parametrize(
        ("start", "edit"),
        [
            ({"attributes": {"n": 1}}, lambda s: s.set_attribute("n", True)),
            ({"attributes": {"n": 1.0}}, lambda s: s.set_attribute("n", 1)),
            ({"attributes": {"n": [0.0]}}, lambda s: s.set_attribute("n", [-0.0])),
            (
                {"cart_items": [CartItem(sku="A", quantity=1, price=5.0)]},
                lambda s: s.update_item(0, CartItem(sku="A", quantity=1, price=5)),
            ),
            (
                {"additional_costs": {"shipping": AdditionalCost(4.0)}},
                lambda s: s.set_additional_cost("shipping", 4),
            ),
        ],
        ids=["int-to-bool", "float-to-int", "zero-to-negative-zero", "item-price", "cost"],
    )
    def test_a_value_of_another_type_is_a_change(self, start, edit):
        """An equal value of another type (1, 1.0, True) is written differently: an update."""
        s = CustomerSession(integration_id="o", **start)
        edit(s)
        assert s.update_count == 2

    @pytest.mark.parametrize("price", [float("nan"), "4.9", True])
    def test_a_bad_additional_cost_names_the_cost(self, price):
        """set_additional_cost() with a bad price names the session, the edit and the cost."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError) as info:
            s.set_additional_cost("shipping", price)
        assert info.value.subject == "session 'o': set_additional_cost()"
        assert [p.path for p in info.value.problems] == ["additional_costs.shipping.price"]
        assert (s.additional_costs, s.update_count) == ({}, 1)

    @pytest.mark.parametrize("field", ["coupon", "referral"])
    def test_an_empty_code_is_refused_by_the_edit(self, field):
        """set_coupon("") and set_referral("") are refused at the field: None means no code."""
        s = CustomerSession(integration_id="o", **{field: "WELCOME10"})
        with pytest.raises(ValidationError) as info:
            getattr(s, f"set_{field}")("")
        assert [p.path for p in info.value.problems] == [field]
        assert "None means no code" in info.value.problems[0].message
        assert (getattr(s, field), s.update_count) == ("WELCOME10", 1)

    @pytest.mark.parametrize("field", ["coupon", "referral"])
    def test_none_removes_a_code(self, field):
        """set_coupon(None) and set_referral(None) remove the code, as an update."""
        s = CustomerSession(integration_id="o", **{field: "WELCOME10"})
        getattr(s, f"set_{field}")(None)
        assert (getattr(s, field), s.update_count) == (None, 2)

    @pytest.mark.parametrize("field", ["coupon", "referral"])
    def test_an_empty_code_is_refused_when_created_or_restored(self, field):
        """The constructor and restore() refuse an empty code, naming the field."""
        for make in (CustomerSession, CustomerSession.restore):
            with pytest.raises(ValidationError) as info:
                make(integration_id="o", state="open", **{field: ""})
            assert [p.path for p in info.value.problems] == [field]

    @pytest.mark.parametrize("name", [1, None, ["a"]])
    def test_remove_attribute_needs_a_string_name(self, name):
        """remove_attribute() of a name that is no string is refused, not ignored."""
        s = CustomerSession(integration_id="o", attributes={"a": 1})
        with pytest.raises(ValidationError) as info:
            s.remove_attribute(name)
        assert [p.path for p in info.value.problems] == ["name"]
        assert s.attributes == {"a": 1}

    @pytest.mark.parametrize("state", [State.CLOSED, State.CANCELLED, State.PARTIALLY_RETURNED])
    def test_edits_refused_unless_open(self, state):
        """No edit is accepted outside the open state, and nothing changes."""
        returned = int(state is State.PARTIALLY_RETURNED)
        s = CustomerSession.restore(
            integration_id="o",
            state=state,
            cart_items=[CartItem(sku="A", quantity=1, returned_quantity=returned)],
        )
        before = s.snapshot()
        for edit in (
            lambda: s.add_item(CartItem(sku="B", quantity=1)),
            lambda: s.update_item(0, CartItem(sku="B", quantity=1)),
            lambda: s.remove_item(0),
            lambda: s.set_coupon("X"),
            lambda: s.set_referral("X"),
            lambda: s.set_profile_id("X"),
            lambda: s.set_identifiers(["X"]),
            lambda: s.set_attribute("a", 1),
            lambda: s.remove_attribute("a"),
            lambda: s.set_additional_cost("shipping", 4.9),
        ):
            with pytest.raises(SessionNotEditable, match=str(state)):
                edit()
        assert s.snapshot() == before

    def test_edit_breaking_a_limit_changes_nothing(self):
        """An edit that breaks a limit is refused and leaves the session as it was."""
        s = CustomerSession(integration_id="o", identifiers=["1", "2", "3", "4", "5"])
        before = s.snapshot()
        with pytest.raises(ValidationError, match="identifiers"):
            s.set_identifiers(["1", "2", "3", "4", "5", "6"])
        assert s.snapshot() == before

    def test_an_edit_whose_clock_fails_changes_nothing(self):
        """An edit whose timestamp the clock cannot give is refused whole: nothing changes."""
        times = iter([T0])
        naive = datetime(2026, 3, 2)  # noqa: DTZ001 - the clock's failure under test
        workflow = Workflow(clock=lambda: next(times, naive))
        s = CustomerSession(integration_id="o", workflow=workflow)
        before = s.snapshot()
        with pytest.raises(WorkflowError, match="naive"):
            s.set_coupon("WELCOME10")
        assert s.snapshot() == before

    def test_bad_position_is_refused(self):
        """Editing a position that does not exist is refused with the cart size."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError, match="position"):
            s.remove_item(0)


# Every edit method, each with arguments that change the session built by _edited().
_EDITS = {
    "add_item": lambda s: s.add_item(CartItem(sku="HAT", quantity=1, price=2.0)),
    "update_item": lambda s: s.update_item(0, CartItem(sku="HAT", quantity=1, price=2.0)),
    "remove_item": lambda s: s.remove_item(0),
    "set_cart_items": lambda s: s.set_cart_items([CartItem(sku="HAT", quantity=1)]),
    "set_coupon": lambda s: s.set_coupon("WELCOME10"),
    "set_referral": lambda s: s.set_referral("FRIEND"),
    "set_profile_id": lambda s: s.set_profile_id("cust-2"),
    "set_identifiers": lambda s: s.set_identifiers(["ip-2"]),
    "set_attribute": lambda s: s.set_attribute("gift", True),
    "remove_attribute": lambda s: s.remove_attribute("city"),
    "set_additional_cost": lambda s: s.set_additional_cost("shipping", 4.9),
}


def _edited(workflow: Workflow) -> CustomerSession:
    """An open session that every edit of :data:`_EDITS` changes."""
    return CustomerSession(
        integration_id="o",
        cart_items=[CartItem(sku="SOCK", quantity=2, price=7.5)],
        attributes={"city": "Leipzig"},
        workflow=workflow,
    )


def _clock_that(action: list[Callable[[], object]]) -> Workflow:
    """A workflow whose clock runs the action put in ``action`` once, then gives T0."""

    def clock() -> datetime:
        if action:
            action.pop()()  # popped first: the action reads the clock too
        return T0

    return Workflow(clock=clock)


class TestEditsRacingTriggers:
    @pytest.mark.parametrize("edit", _EDITS.values(), ids=_EDITS.keys())
    @pytest.mark.parametrize("registered", [False, True], ids=["plain", "hooked"])
    def test_an_edit_that_a_close_overtook_is_refused_whole(self, edit, registered):
        """A close committed while an edit reads its clock wins; the edit changes nothing.

        The close never sees the edit's values, and the closed session stays one that
        restore() accepts.
        """
        action: list[Callable[[], object]] = []
        workflow = _clock_that(action)
        seen: list[dict[str, object]] = []
        if registered:
            workflow.before(lambda event: seen.append(event.session.snapshot()), name="spy")
        s = _edited(workflow)
        before = s.snapshot()
        action.append(s.close)
        with pytest.raises(SessionNotEditable, match="in state 'closed'") as info:
            edit(s)
        assert (info.value.state, info.value.running) == (State.CLOSED, None)
        assert [r.trigger for r in s.history] == [Trigger.CLOSE]
        after = s.snapshot()
        unchanged = ("state", "update_count", "history", "updated")
        assert {k: v for k, v in after.items() if k not in unchanged} == {
            k: v for k, v in before.items() if k not in unchanged
        }
        assert s.update_count == 2  # the creation and the close
        assert seen == ([before] if registered else [])
        assert CustomerSession.restore(**after) == s

    @pytest.mark.parametrize("edit", _EDITS.values(), ids=_EDITS.keys())
    def test_an_edit_that_another_edit_overtook_is_refused_whole(self, edit):
        """An edit made while another edit reads its clock wins; the outer one changes nothing.

        The outer edit was built on values that are no longer the session's: applying
        it would undo the inner one.
        """
        action: list[Callable[[], object]] = []
        s = _edited(_clock_that(action))
        action.append(lambda: s.set_attribute("note", "inner"))
        with pytest.raises(SessionNotEditable, match="changed") as info:
            edit(s)
        assert (info.value.state, info.value.running) == (State.OPEN, None)
        assert s.attributes == {"city": "Leipzig", "note": "inner"}
        assert s.update_count == 2
        assert s.cart_items == (CartItem(sku="SOCK", quantity=2, price=7.5),)
        assert (s.coupon, s.referral, s.profile_id, s.identifiers) == (None, None, None, ())
        assert s.additional_costs == {}

    def test_an_edit_that_a_trigger_of_another_thread_overtook_is_refused(self):
        """An edit checked while idle is refused once another thread's trigger took the session.

        The trigger's guards and hooks judged the session without the edit, so it must
        not slip in before the commit; the close then commits what they saw.
        """
        in_clock, go_on, in_hook, hook_go = (threading.Event() for _ in range(4))

        def clock() -> datetime:
            if threading.current_thread().name == "editing":
                in_clock.set()
                go_on.wait(WAIT)
            return T0

        def slow_before(event) -> None:
            in_hook.set()
            hook_go.wait(WAIT)

        workflow = Workflow(clock=clock)
        workflow.before(slow_before, trigger=Trigger.CLOSE)
        s = _edited(workflow)
        refused: list[BaseException] = []

        def edit() -> None:
            try:
                s.set_coupon("WELCOME10")
            except SessionNotEditable as error:
                refused.append(error)

        editing = threading.Thread(target=edit, name="editing")
        editing.start()
        assert in_clock.wait(WAIT)
        closing = threading.Thread(target=s.close)
        closing.start()
        assert in_hook.wait(WAIT)  # the close is under way: it has the session
        go_on.set()
        editing.join(WAIT)
        hook_go.set()
        closing.join(WAIT)
        assert not editing.is_alive()
        assert not closing.is_alive()
        assert len(refused) == 1
        assert (s.state, s.coupon, s.update_count) == (State.CLOSED, None, 2)
        assert CustomerSession.restore(**s.snapshot()) == s

    def test_an_edit_made_by_the_triggers_own_hook_still_applies(self):
        """A hook of the trigger under way edits the session; the trigger commits the edit."""
        workflow = Workflow(clock=fixed_clock())
        workflow.before(lambda event: event.session.set_coupon("LAST"), trigger=Trigger.CLOSE)
        s = _edited(workflow)
        s.close()
        assert (s.state, s.coupon, s.update_count) == (State.CLOSED, "LAST", 3)
        assert s.updated >= s.history[-1].timestamp
        assert CustomerSession.restore(**s.snapshot()) == s

    def test_threads_editing_while_one_closes_lose_nothing(self):
        """Threads adding items while another closes: each add is in the cart or refused whole.

        No thread ever sees a value an edit had not validated, and the session stays
        one that restore() accepts.
        """
        crowd = _Crowd(CustomerSession(integration_id="o", identifiers=["1", "2", "3", "4", "5"]))
        crowd.run(adders=3)
        s = crowd.session
        assert s.state is State.CLOSED
        assert sorted(line.sku for line in s.cart_items) == sorted(crowd.added)
        assert s.update_count == 1 + len(crowd.added) + 1  # creation, each add, the close
        assert crowd.invalid == []
        assert CustomerSession.restore(**s.snapshot()) == s


class _Crowd:
    """Threads at one session: adders, one breaking a limit, a reader, and a closer."""

    def __init__(self, session: CustomerSession) -> None:
        self.session = session
        self.added: list[str] = []  # the SKUs whose add_item() returned
        self.invalid: list[object] = []  # values the reader saw beyond the limit
        self.halfway, self.done = threading.Event(), threading.Event()

    def add(self, thread: int) -> None:
        try:
            for i in range(150):
                if i == 75:
                    self.halfway.set()
                sku = f"{thread}-{i}"
                with contextlib.suppress(SessionNotEditable):
                    self.session.add_item(CartItem(sku=sku, quantity=1))
                    self.added.append(sku)
        finally:
            self.halfway.set()  # an adder that failed must not keep the close waiting

    def break_a_limit(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(SessionNotEditable, ValidationError):
                self.session.set_identifiers(["1", "2", "3", "4", "5", "6"])

    def read(self) -> None:
        while not self.done.is_set():
            identifiers = self.session.identifiers
            if len(identifiers) > 5:
                self.invalid.append(identifiers)

    def close(self) -> None:
        self.halfway.wait(WAIT)
        self.session.close()

    def run(self, adders: int) -> None:
        workers = [threading.Thread(target=self.add, args=(i,)) for i in range(adders)]
        workers.append(threading.Thread(target=self.close))
        others = [threading.Thread(target=f) for f in (self.break_a_limit, self.read)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often, as a loaded server may
        try:
            for thread in [*workers, *others]:
                thread.start()
            for thread in workers:
                thread.join(WAIT)
        finally:
            self.done.set()
            sys.setswitchinterval(interval)
            for thread in others:
                thread.join(WAIT)


class TestReturns:
    def _closed(self) -> CustomerSession:
        return CustomerSession(
            integration_id="o",
            state=State.CLOSED,
            cart_items=[
                CartItem(sku="SOCK", quantity=3, price=7.5),
                CartItem(sku="JKT", quantity=1, price=129.0),
            ],
        )

    def test_items_that_cannot_be_read_are_refused_with_their_error(self):
        """Returned items from an iterable that raises are refused, naming the error."""
        s = self._closed()

        def items():
            yield ReturnedItem(position=0, quantity=1)
            raise OSError("gone")

        with pytest.raises(ValidationError, match=r"items: cannot be read \(OSError: gone\)"):
            s.return_items(items())
        assert s.state is State.CLOSED
        assert s.cart_items[0].returned_quantity == 0

    def test_return_updates_quantities_not_total(self):
        """A return raises returned_quantity; total keeps the ordered value."""
        s = self._closed()
        s.return_items([ReturnedItem(position=0, quantity=1)])
        assert s.cart_items[0].returned_quantity == 1
        assert s.cart_items[0].remaining_quantity == 2
        assert s.total == 151.5
        assert s.returned_total == 7.5

    def test_further_returns_stay_partially_returned(self):
        """A second return is an internal transition recorded in the history."""
        s = self._closed()
        s.return_items([ReturnedItem(position=0, quantity=1)])
        record = s.return_items([ReturnedItem(position=1, quantity=1)])
        assert s.state is State.PARTIALLY_RETURNED
        assert record.source is record.destination is State.PARTIALLY_RETURNED
        assert len(s.history) == 2

    def test_returning_everything_stays_partially_returned(self):
        """Returning every unit does not leave partially_returned."""
        s = self._closed()
        s.return_items([ReturnedItem(0, 3), ReturnedItem(1, 1)])
        assert s.state is State.PARTIALLY_RETURNED
        assert all(line.remaining_quantity == 0 for line in s.cart_items)

    @pytest.mark.parametrize(
        ("items", "path"),
        [
            ([], "items"),
            ([ReturnedItem(5, 1)], "items[0].position"),
            ([ReturnedItem(0, 4)], "items[0].quantity"),
            ([ReturnedItem(0, 1), ReturnedItem(0, 1)], "items[1].position"),
            ([ReturnedItem(0, 1, sku="OTHER")], "items[0].sku"),
        ],
    )
    def test_invalid_returns_are_refused(self, items, path):
        """Each invalid return is refused with the path of the problem; nothing changes."""
        s = self._closed()
        before = s.snapshot()
        with pytest.raises(ValidationError) as info:
            s.return_items(items)
        assert path in [p.path for p in info.value.problems]
        assert s.snapshot() == before

    @pytest.mark.parametrize(
        ("returned", "remain"),
        [(1, "the 2 units of 'SOCK' that remain"), (2, "the 1 unit of 'SOCK' that remains")],
    )
    def test_an_over_return_counts_the_units_that_remain(self, returned, remain):
        """Returning more units than remain names them, in the singular for one."""
        s = self._closed()
        s.return_items([ReturnedItem(position=0, quantity=returned)])
        with pytest.raises(ValidationError) as info:
            s.return_items([ReturnedItem(position=0, quantity=3)])
        assert info.value.problems[0].message == f"3 is more than {remain}"

    def test_returned_item_needs_quantity_of_one(self):
        """A returned item with quantity below 1 cannot even be built."""
        with pytest.raises(ValidationError, match="quantity"):
            ReturnedItem(position=0, quantity=0)


def _returned_session() -> CustomerSession:
    """open -> closed -> partially_returned -> partially_returned on a two-line cart."""
    s = CustomerSession(
        integration_id="r",
        cart_items=[CartItem(sku="A", quantity=3, price=2.0), CartItem(sku="B", quantity=1)],
        workflow=Workflow(clock=fixed_clock()),
    )
    s.close()
    s.return_items([ReturnedItem(position=0, quantity=1)])
    s.return_items([ReturnedItem(position=0, quantity=1), ReturnedItem(position=1, quantity=1)])
    return s


def _record(trigger, source, destination, timestamp=T0, items=()):
    return TransitionRecord(trigger, source, destination, timestamp, tuple(items))


def _restore_problems(**changes) -> dict[str, str]:
    """The problems restore() reports for the snapshot of _returned_session() with changes."""
    snapshot = {**_returned_session().snapshot(), **changes}
    with pytest.raises(ValidationError) as info:
        CustomerSession.restore(**snapshot)
    return {p.path: p.message for p in info.value.problems}


def _replaced(history, index, **fields):
    record = history[index]
    values = {
        "trigger": record.trigger,
        "source": record.source,
        "destination": record.destination,
        "timestamp": record.timestamp,
        "items": record.returned_items,
        **fields,
    }
    changed = _record(**values)
    return (*history[:index], changed, *history[index + 1 :])


def _problems_restoring(session, **changes) -> list[tuple[str, str]]:
    """The problems (path, message) restore() reports for ``session``'s snapshot with changes."""
    with pytest.raises(ValidationError) as info:
        type(session).restore(**{**session.snapshot(), **changes})
    return [(p.path, p.message) for p in info.value.problems]


def _returned_units_problems(session, changes: dict[int, int]) -> list[tuple[str, str]]:
    """The problems of ``session``'s cart lines whose history returns ``changes`` more units.

    ``changes`` maps a cart position to how many more (or, negative, fewer) units
    the history returns than the line shows returned.
    """
    return [
        (
            f"cart_items[{position}].returned_quantity",
            (
                f"is {line.returned_quantity}, but the history's returns of {line.sku!r} "
                f"add up to {line.returned_quantity + change}"
            ),
        )
        for position, change in sorted(changes.items())
        for line in [session.cart_items[position]]
    ]


class TestRestoredHistory:
    def test_records_need_enum_members_and_an_aware_timestamp(self):
        """A record with string trigger and state and a text timestamp is refused field by field."""
        record = TransitionRecord("close", "open", State.CLOSED, "yesterday")  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", state="closed", history=[record])
        assert {p.path for p in info.value.problems} == {
            "history[0].trigger",
            "history[0].source",
            "history[0].timestamp",
        }

    def test_text_naming_a_member_is_refused_with_the_member_to_write(self):
        """A record's trigger or state given as text that names a member says which member."""
        record = TransitionRecord("close", "open", State.CLOSED, T0)  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o", state="closed", created=T0, history=[record]
            )
        messages = {p.path: p.message for p in info.value.problems}
        assert messages == {
            "history[0].trigger": (
                "must be a Trigger member, got the text 'close': use Trigger.CLOSE"
            ),
            "history[0].source": "must be a State member, got the text 'open': use State.OPEN",
        }

    def test_a_record_after_an_unreadable_one_is_checked_on_its_own(self):
        """The chain restarts after a record that is no TransitionRecord: only it is reported."""
        close = _record(Trigger.CLOSE, State.OPEN, State.CLOSED, T0)
        cancel = _record(Trigger.CANCEL, State.OPEN, State.CANCELLED, T0)
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o", state="cancelled", created=T0, history=[close, "junk", cancel]
            )
        assert [p.path for p in info.value.problems] == ["history[1]"]

    def test_a_naive_timestamp_is_refused(self):
        """A naive history timestamp is refused rather than taken as UTC."""
        naive = _record(Trigger.CLOSE, State.OPEN, State.CLOSED, datetime(2026, 3, 2, 11))  # noqa: DTZ001 - naive on purpose
        with pytest.raises(ValidationError, match=r"history\[0\]\.timestamp: must be an aware"):
            CustomerSession.restore(integration_id="o", state="closed", created=T0, history=[naive])

    def test_an_aware_timestamp_is_kept_in_utc(self):
        """A history timestamp in another zone is stored as the same instant in UTC."""
        berlin = T0.astimezone(timezone(timedelta(hours=1)))
        record = _record(Trigger.CLOSE, State.OPEN, State.CLOSED, berlin)
        s = CustomerSession.restore(
            integration_id="o", state="closed", created=T0, update_count=2, history=[record]
        )
        assert s.history[0].timestamp == T0
        assert s.history[0].timestamp.tzinfo is UTC

    def test_timestamps_never_go_back(self):
        """A record earlier than the one before it is refused."""
        history = _returned_session().history
        problems = _restore_problems(history=_replaced(history, 2, timestamp=T0))
        assert "the history never goes back" in problems["history[2].timestamp"]

    def test_history_is_within_created_and_updated(self):
        """Records before created or after updated are refused."""
        s = _returned_session()
        late = s.updated + timedelta(days=1)
        assert (
            "earlier than created" in _restore_problems(created=s.updated)["history[0].timestamp"]
        )
        history = _replaced(s.history, 2, timestamp=late)
        assert "later than updated" in _restore_problems(history=history)["history[2].timestamp"]

    def test_update_count_counts_creation_and_every_transition(self):
        """An update_count below one plus the number of records is refused."""
        problems = _restore_problems(update_count=3)
        assert problems == {
            "update_count": "is 3, but the creation and the 3 transitions of the history count 4"
        }

    def test_update_count_counts_one_transition_in_the_singular(self):
        """The update_count problem of a one-record history counts 1 transition."""
        s = CustomerSession(integration_id="o")
        s.close()
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(**{**s.snapshot(), "update_count": 1})
        assert info.value.problems[0].message == (
            "is 1, but the creation and the 1 transition of the history count 2"
        )

    def test_update_count_may_count_edits_too(self):
        """An update_count above what the history implies is accepted (edits count as well)."""
        s = _returned_session()
        restored = CustomerSession.restore(**{**s.snapshot(), "update_count": 40})
        assert restored.update_count == 40

    def test_a_return_of_a_missing_position_is_refused(self):
        """A returned item whose position is not in the cart is refused with its path."""
        history = _replaced(
            _returned_session().history, 1, items=[ReturnedItem(position=7, quantity=99)]
        )
        problems = _restore_problems(history=history)
        assert problems["history[1].returned_items[0].position"] == (
            "no cart item at position 7 (the cart has 2)"
        )

    def test_a_return_naming_another_sku_is_refused(self):
        """A returned item whose SKU differs from the cart item's is refused."""
        history = _replaced(
            _returned_session().history, 1, items=[ReturnedItem(position=0, quantity=1, sku="B")]
        )
        assert (
            "does not match 'A'"
            in _restore_problems(history=history)["history[1].returned_items[0].sku"]
        )

    def test_a_return_naming_the_position_after_the_last_is_refused(self):
        """A returned item at the position just past the cart's end is refused by path."""
        history = _replaced(
            _returned_session().history, 1, items=[ReturnedItem(position=2, quantity=1)]
        )
        assert (
            "no cart item at position 2"
            in (_restore_problems(history=history)["history[1].returned_items[0].position"])
        )

    def test_returned_units_must_add_up_to_the_history(self):
        """With a history from before any return, the cart's returned units equal its returns."""
        s = _returned_session()
        cart = (attrs.evolve(s.cart_items[0], returned_quantity=3), s.cart_items[1])
        assert _restore_problems(cart_items=cart) == {
            "cart_items[0].returned_quantity": "is 3, but the history's returns of 'A' add up to 2"
        }

    def test_a_history_that_starts_after_a_return_may_list_fewer_units(self):
        """A history starting in partially_returned explains part of the returned units."""
        s = _returned_session()
        restored = CustomerSession.restore(**{**s.snapshot(), "history": s.history[2:]})
        assert restored.history == s.history[2:]

    def test_a_history_that_starts_after_a_return_lists_no_more_than_returned(self):
        """A partial history that returns more units than the cart shows returned is refused."""
        s = _returned_session()
        cart = (s.cart_items[0], attrs.evolve(s.cart_items[1], returned_quantity=0))
        problems = _restore_problems(history=s.history[2:], cart_items=cart)
        assert "at least that many" in problems["cart_items[1].returned_quantity"]

    @pytest.mark.parametrize(
        ("index", "items", "message"),
        [
            (1, [], "a return needs at least one item"),
            (
                0,
                [ReturnedItem(position=0, quantity=1)],
                "only a return_items record returns items, not 'close'",
            ),
        ],
    )
    def test_only_returns_list_returned_items(self, index, items, message):
        """A return record lists items, and no other record does."""
        history = _replaced(_returned_session().history, index, items=items)
        assert message in _restore_problems(history=history)[f"history[{index}].returned_items"]

    def test_every_problem_is_listed_at_once(self):
        """Field, count and history problems come in one ValidationError."""
        record = TransitionRecord("close", State.OPEN, State.CLOSED, T0)  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o", state="closed", coupon=3, update_count=0, history=[record]
            )
        assert {p.path for p in info.value.problems} == {
            "coupon",
            "update_count",
            "history[0].trigger",
        }

    @given(sessions())
    def test_an_update_count_that_misses_a_record_is_refused(self, session):
        """An update_count that does not count every record of the history is refused."""
        if not session.history:  # in an initial state, from which a cancel leads
            session.cancel()
        n = len(session.history)
        problems = _problems_restoring(session, update_count=n)
        transitions = "transition" if n == 1 else "transitions"
        assert problems == [
            (
                "update_count",
                f"is {n}, but the creation and the {n} {transitions} of the history count {n + 1}",
            )
        ]

    @given(sessions(state=State.PARTIALLY_RETURNED), st.booleans(), st.data())
    def test_a_history_that_lost_a_later_record_is_refused(self, session, cancel, data):
        """A history without one of its later records is refused where it no longer adds up.

        A later record: the first may be where loading began.
        """
        if cancel or len(session.history) < 2:
            session.cancel()
        history = session.history
        index = data.draw(st.integers(1, len(history) - 1), label="dropped")
        lost = history[index]
        problems = _problems_restoring(session, history=history[:index] + history[index + 1 :])
        if lost.source is lost.destination:  # a further return: the chain still holds
            units: dict[int, int] = {}
            for item in lost.returned_items:
                units[item.position] = units.get(item.position, 0) - item.quantity
            assert problems == _returned_units_problems(session, units)
        elif index == len(history) - 1:
            assert problems == [
                ("history", f"ends in '{lost.source}' but the state is '{session.state}'")
            ]
        else:
            assert problems == [
                (
                    f"history[{index}].source",
                    (
                        f"starts in '{lost.destination}' but the previous record ended in "
                        f"'{lost.source}'"
                    ),
                )
            ]

    @given(sessions(state=State.PARTIALLY_RETURNED), st.booleans(), st.data())
    def test_a_return_of_one_more_unit_is_refused(self, session, cancel, data):
        """A return listing one unit more than the cart shows returned is refused at that line."""
        if cancel:
            session.cancel()
        history = session.history
        returns = [i for i, r in enumerate(history) if r.returned_items]
        index = data.draw(st.sampled_from(returns), label="return")
        first, *rest = history[index].returned_items
        more = attrs.evolve(first, quantity=first.quantity + 1)
        problems = _problems_restoring(
            session, history=_replaced(history, index, items=[more, *rest])
        )
        assert problems == _returned_units_problems(session, {first.position: 1})


class TestReturnedUnits:
    def test_a_new_session_has_nothing_returned(self):
        """A new session whose cart shows returned units is refused."""
        item = CartItem(sku="A", quantity=2, price=5.0, returned_quantity=2)
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", cart_items=[item])
        assert [p.path for p in info.value.problems] == ["cart_items[0].returned_quantity"]

    def test_an_open_cart_takes_no_returned_units(self):
        """add_item() refuses an item with returned units; nothing changes."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError, match="returned_quantity"):
            s.add_item(CartItem(sku="A", quantity=2, returned_quantity=1))
        assert s.cart_items == ()

    @pytest.mark.parametrize("state", [State.OPEN, State.CLOSED])
    def test_no_restored_session_before_a_return_has_returned_units(self, state):
        """restore() refuses returned units in a state no return leads to, even without history."""
        item = CartItem(sku="A", quantity=2, returned_quantity=1)
        with pytest.raises(ValidationError, match="no return leads to"):
            CustomerSession.restore(integration_id="o", state=state, cart_items=[item])

    @pytest.mark.parametrize("state", [State.PARTIALLY_RETURNED, State.CANCELLED])
    def test_without_history_returned_units_are_taken_as_they_are(self, state):
        """Without history, returned units in a state a return leads to cannot be checked."""
        item = CartItem(sku="A", quantity=2, returned_quantity=1)
        s = CustomerSession.restore(integration_id="o", state=state, cart_items=[item])
        assert s.returned_total == 0.0
        assert s.cart_items[0].remaining_quantity == 1

    def test_a_session_only_a_return_leads_to_has_returned_units(self):
        """restore() refuses a partially_returned session with nothing returned."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o",
                state=State.PARTIALLY_RETURNED,
                cart_items=[CartItem(sku="A", quantity=2)],
            )
        assert [(p.path, p.message) for p in info.value.problems] == [
            (
                "cart_items",
                (
                    "no unit is returned, but the session is 'partially_returned', "
                    "which only return_items() leads to"
                ),
            )
        ]

    def test_a_history_through_partially_returned_needs_returned_units(self):
        """restore() refuses a history that passes partially_returned with nothing returned."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(
                integration_id="o",
                state=State.CANCELLED,
                cart_items=[CartItem(sku="A", quantity=2)],
                history=[_record(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED)],
                created=T0,
                update_count=2,
            )
        assert [(p.path, p.message) for p in info.value.problems] == [
            (
                "cart_items",
                (
                    "no unit is returned, but the history passes 'partially_returned', "
                    "which only return_items() leads to"
                ),
            )
        ]

    def test_a_session_cancelled_before_any_return_needs_no_returned_units(self):
        """A cancelled session may have nothing returned: open and closed lead there too."""
        s = CustomerSession.restore(
            integration_id="o", state=State.CANCELLED, cart_items=[CartItem(sku="A", quantity=2)]
        )
        assert s.returned_total == 0.0


_STRICT = Specification(
    name="strict",
    states=(State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED, State.CANCELLED),
    initial_states=frozenset({State.OPEN}),
    edges=(
        Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
        Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),
        Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
    ),
)


_RETURN_THEN_REOPEN = CUSTOMER_SESSION.extend(
    "return_then_reopen", Edge(Trigger.REOPEN, State.PARTIALLY_RETURNED, State.OPEN)
)


class TestSubclasses:
    def test_a_history_back_to_open_after_a_return_needs_no_returned_units(self):
        """A session restored open after a return and a reopen may have no returned unit left."""

        @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
        class ReturnThenReopen(CustomerSession):
            specification: ClassVar[Specification] = _RETURN_THEN_REOPEN
            default_workflow: ClassVar[Workflow] = Workflow(_RETURN_THEN_REOPEN)

        history = [
            _record(Trigger.CLOSE, State.OPEN, State.CLOSED),
            _record(
                Trigger.RETURN_ITEMS,
                State.CLOSED,
                State.PARTIALLY_RETURNED,
                items=[ReturnedItem(position=0, quantity=1)],
            ),
            _record(Trigger.REOPEN, State.PARTIALLY_RETURNED, State.OPEN),
        ]
        s = ReturnThenReopen.restore(
            integration_id="o", state="open", created=T0, update_count=5, history=history
        )
        assert s.state is State.OPEN

    def test_own_table_without_own_workflow_is_refused_when_defined(self):
        """A subclass with its own table that inherits the default workflow cannot be defined."""
        with pytest.raises(WorkflowError, match="StrictSession follows 'strict' but inherits"):

            @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
            class StrictSession(CustomerSession):
                specification: ClassVar[Specification] = _STRICT

    def test_a_state_outside_the_table_is_named_by_its_text(self):
        """Restoring a session in a state its table lacks names the state as 'cancelled'."""
        two_states = Specification(
            name="two_states",
            states=(State.OPEN, State.CLOSED),
            initial_states=frozenset({State.OPEN}),
            edges=(Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),),
        )

        @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
        class TwoStates(CustomerSession):
            specification: ClassVar[Specification] = two_states
            default_workflow: ClassVar[Workflow] = Workflow(two_states)

        with pytest.raises(
            ValidationError, match="state: must be one of open, closed, got 'cancelled'"
        ):
            TwoStates.restore(integration_id="o", state=State.CANCELLED, created=T0)

    def test_own_table_with_own_workflow_follows_it(self):
        """A subclass with its own table and default workflow follows its own table."""

        @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
        class StrictSession(CustomerSession):
            specification: ClassVar[Specification] = _STRICT
            default_workflow: ClassVar[Workflow] = Workflow(_STRICT)

        s = StrictSession(integration_id="o")
        s.close()
        assert s.allowed_triggers == {Trigger.RETURN_ITEMS}

    def test_a_subclass_keeping_the_table_shares_the_workflow(self):
        """A subclass that keeps its parent's table keeps its parent's default workflow."""

        @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
        class Tagged(CustomerSession):
            pass

        assert Tagged(integration_id="o").workflow is CustomerSession.default_workflow

    def test_a_subclass_with_its_own_field_converts_as_the_class_does(self):
        """attrs' generated __init__ of a subclass takes a list cart, a state name, a new field."""

        @attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
        class Tagged(CustomerSession):
            _tag: str = "none"

        item = CartItem(sku="A", quantity=1)
        s = Tagged(
            integration_id="o", state="closed", cart_items=[item], identifiers=["i"], tag="gift"
        )
        assert (s.state, s.cart_items, s.identifiers, s._tag) == (
            State.CLOSED,
            (item,),
            ("i",),
            "gift",
        )
        assert type(s.state) is State
        assert s.workflow is CustomerSession.default_workflow
        assert s.updated == s.created

    def test_a_reassigned_default_workflow_of_another_table_is_refused(self, monkeypatch):
        """A default workflow replaced by one of another table is refused on construction."""
        monkeypatch.setattr(
            ReopenableCustomerSession, "default_workflow", CustomerSession.default_workflow
        )
        with pytest.raises(WorkflowError, match="drives another specification"):
            ReopenableCustomerSession(integration_id="o")

    @pytest.mark.parametrize("workflow", [None, 1, "customer_session", {}])
    def test_a_workflow_that_is_no_workflow_is_refused(self, workflow):
        """A workflow argument that is no Workflow is a WorkflowError naming it."""
        with pytest.raises(WorkflowError, match=r"^CustomerSession: workflow must be a Workflow"):
            CustomerSession(integration_id="o", workflow=workflow)


class TestEditOrder:
    @pytest.mark.parametrize(
        "edit",
        [
            lambda s: s.update_item(9, CartItem(sku="B", quantity=1)),
            lambda s: s.remove_item(9),
            lambda s: s.remove_item(10**5000),
            lambda s: s.set_additional_cost("x", float("nan")),
            lambda s: s.set_additional_cost(1, 2.0),
            lambda s: s.set_attribute(["not", "a", "name"], 1),
        ],
    )
    def test_the_state_is_checked_before_the_arguments(self, edit):
        """An edit of a closed session is SessionNotEditable, whatever its arguments."""
        s = CustomerSession(
            integration_id="c", state="closed", cart_items=[CartItem(sku="A", quantity=1)]
        )
        with pytest.raises(SessionNotEditable):
            edit(s)

    @pytest.mark.parametrize("edit", ["set_additional_cost", "set_attribute"])
    def test_a_name_must_be_a_string(self, edit):
        """A cost or attribute name that is not a string is named as the problem."""
        s = CustomerSession(integration_id="o")
        with pytest.raises(ValidationError) as info:
            getattr(s, edit)(1, 2.0)
        assert [str(p) for p in info.value.problems] == ["name: must be a string, got 1"]
        assert s.update_count == 1


class TestIntegerBounds:
    @pytest.mark.parametrize("value", [2**63, 10**5000], ids=["2**63", "10**5000"])
    def test_application_id_is_64_bits(self, value):
        """An application id beyond 64 bits is a ValidationError naming the field."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id="o", application_id=value)
        assert [p.path for p in info.value.problems] == ["application_id"]

    def test_update_count_is_64_bits(self):
        """restore() refuses an update count beyond 64 bits, and its message can be printed."""
        with pytest.raises(ValidationError) as info:
            CustomerSession.restore(integration_id="o", state="open", update_count=10**5000)
        assert "update_count: must be at most 9223372036854775807" in str(info.value)

    def test_largest_values_are_accepted(self):
        """The largest 64-bit integer is a valid application id and update count."""
        s = CustomerSession.restore(
            integration_id="o", state="open", application_id=2**63 - 1, update_count=2**63 - 1
        )
        assert "9223372036854775807" in repr(s)

    def test_a_huge_integer_anywhere_gives_a_printable_error(self):
        """A huge integer in place of a cart or an id is reported, not a crash of the message."""
        with pytest.raises(ValidationError) as info:
            CustomerSession(integration_id=10**5000, cart_items=(10**5000,))  # type: ignore[arg-type]
        assert "cannot be shown" in str(info.value) or "bits" in str(info.value)


class TestReopenable:
    def test_reopen_then_edit_and_close_again(self):
        """A reopened session is open: editable and closable again."""
        s = ReopenableCustomerSession(integration_id="o")
        s.close()
        s.reopen()
        s.set_coupon("AGAIN")
        s.close()
        assert [r.trigger for r in s.history] == [Trigger.CLOSE, Trigger.REOPEN, Trigger.CLOSE]

    def test_default_session_has_no_reopen(self):
        """The default table knows no reopen trigger."""
        s = CustomerSession(integration_id="o", state=State.CLOSED)
        assert not hasattr(s, "reopen")
        assert Trigger.REOPEN not in s.allowed_triggers


class TestStorableValues:
    def test_a_cart_whose_total_overflows_is_refused(self):
        """Lines each finite but adding up beyond a float are refused at ``cart_items``."""
        huge = CartItem(sku="A", quantity=1, price=1e308)
        with pytest.raises(ValidationError) as error:
            CustomerSession(integration_id="o", cart_items=[huge, huge])
        assert [p.path for p in error.value.problems] == ["cart_items"]
        assert "more than a float can hold" in error.value.problems[0].message

    def test_item_costs_whose_sum_overflows_are_refused(self):
        """Cheap lines whose item costs add up beyond a float are refused at ``cart_items``."""
        line = CartItem(
            sku="A", quantity=1, price=0.0, additional_costs={"x": AdditionalCost(1e308)}
        )
        with pytest.raises(ValidationError) as error:
            CustomerSession(integration_id="o", cart_items=[line, line])
        assert [p.path for p in error.value.problems] == ["cart_items"]

    def test_an_item_that_would_overflow_the_cart_is_not_added(self):
        """``add_item`` refuses a line that makes the total infinite; the cart is unchanged."""
        huge = CartItem(sku="A", quantity=1, price=1e308)
        s = CustomerSession(integration_id="o", cart_items=[huge])
        with pytest.raises(ValidationError, match="cart_items"):
            s.add_item(huge)
        assert s.cart_items == (huge,)
        assert s.update_count == 1

    def test_costs_that_overflow_the_total_are_not_set(self):
        """An additional cost that makes the total infinite is refused; the costs are unchanged."""
        s = CustomerSession(
            integration_id="o", cart_items=[CartItem(sku="A", quantity=1, price=1e308)]
        )
        with pytest.raises(ValidationError) as error:
            s.set_additional_cost("shipping", 1e308)
        assert [p.path for p in error.value.problems] == ["additional_costs"]
        assert s.additional_costs == {}
        assert s.total == 1e308

    def test_costs_that_overflow_among_themselves_are_refused(self):
        """Session costs adding up beyond a float are refused, not left to crash ``total``."""
        with pytest.raises(ValidationError, match="additional_costs"):
            CustomerSession(
                integration_id="o",
                additional_costs={"a": AdditionalCost(1e308), "b": AdditionalCost(1e308)},
            )

    @pytest.mark.parametrize(
        ("key", "path"),
        [(5, "discounts[5]"), (10**5000, "discounts[an integer of 16610 bits]")],
        ids=["number", "huge number"],
    )
    def test_a_discount_label_that_is_no_text_is_refused_at_its_key(self, key, path):
        """A discount keyed by a number, however large, is refused with the key in its path."""
        with pytest.raises(ValidationError) as error:
            CustomerSession(integration_id="o", discounts={key: 1.0})
        assert [p.path for p in error.value.problems] == [path]

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [("o\x00", "NUL character"), ("o\udfff", "lone surrogate")],
        ids=["nul", "surrogate"],
    )
    @pytest.mark.parametrize(
        ("field", "value", "path"),
        [
            ("integration_id", None, "integration_id"),
            ("profile_id", None, "profile_id"),
            ("coupon", None, "coupon"),
            ("referral", None, "referral"),
            ("identifiers", "list", "identifiers[0]"),
            ("attributes", "value", "attributes.note"),
            ("discounts", "key", "discounts[{text!r}]"),
            ("additional_costs", "key", "additional_costs[{text!r}]"),
        ],
    )
    def test_text_that_cannot_be_stored_is_refused(self, field, value, path, text, fragment):
        """Every text field (ids, codes, names, keys) refuses NUL and lone surrogates, by path."""
        given = {
            None: text,
            "list": [text],
            "value": {"note": text},
            "key": {text: AdditionalCost(1.0) if field == "additional_costs" else 1.0},
        }[value]
        fields = {"integration_id": "o", field: given}
        with pytest.raises(ValidationError) as error:
            CustomerSession(**fields)
        (problem,) = error.value.problems
        assert problem.path == path.format(text=text)
        assert fragment in problem.message

    def test_an_edit_with_text_that_cannot_be_stored_changes_nothing(self):
        """``set_profile_id`` with a NUL is refused and the session keeps its profile."""
        s = CustomerSession(integration_id="o", profile_id="cust-1")
        with pytest.raises(ValidationError, match="profile_id"):
            s.set_profile_id("cust\x00")
        assert s.profile_id == "cust-1"


def _cart_that_fails():
    yield CartItem(sku="A", quantity=1, price=1.0)
    raise OSError("gone")


class TestUnreadableIterables:
    def test_a_new_session_refuses_a_cart_that_cannot_be_read(self):
        """A cart given as an iterable that raises is refused, naming the error."""
        with pytest.raises(
            ValidationError, match=r"cart_items: .*cannot be read \(OSError: gone\)"
        ):
            CustomerSession(integration_id="o", cart_items=_cart_that_fails())

    def test_set_cart_items_refuses_a_cart_that_cannot_be_read_and_keeps_the_cart(self):
        """set_cart_items() with an iterable that raises is refused; the cart is unchanged."""
        s = CustomerSession(integration_id="o", cart_items=[CartItem(sku="B", quantity=2)])
        with pytest.raises(ValidationError, match=r"cannot be read \(OSError: gone\)"):
            s.set_cart_items(_cart_that_fails())
        assert [item.sku for item in s.cart_items] == ["B"]
        assert s.update_count == 1

    def test_a_new_session_refuses_identifiers_that_cannot_be_read(self):
        """Identifiers given as an iterable that raises are refused, naming the error."""

        def identifiers():
            yield "a"
            raise OSError("gone")

        with pytest.raises(ValidationError, match=r"identifiers: .*cannot be read \(OSError"):
            CustomerSession(integration_id="o", identifiers=identifiers())

    def test_restore_refuses_a_history_that_cannot_be_read(self):
        """restore() with a history iterable that raises is a ValidationError naming the error."""

        def history():
            yield TransitionRecord(
                Trigger.CLOSE, State.OPEN, State.CLOSED, datetime(2026, 3, 2, tzinfo=UTC)
            )
            raise OSError("gone")

        with pytest.raises(ValidationError, match=r"history: .*cannot be read \(OSError: gone\)"):
            CustomerSession.restore(integration_id="o", state="closed", history=history())
