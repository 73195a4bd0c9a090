"""Tests of customer_session.wire: v1 documents, v2 requests and responses, strict parsing."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customer_session import (
    AdditionalCost,
    CartItem,
    CustomerSession,
    CustomerSessionError,
    PriceDetail,
    Problem,
    Product,
    ReopenableCustomerSession,
    ReturnedItem,
    State,
    Trigger,
    ValidationError,
    Workflow,
    WorkflowError,
)
from customer_session._cart import MAX_NESTING
from customer_session._show import shown
from customer_session._transaction import twin
from customer_session.testing import returned_items, sessions, wire_documents
from customer_session.wire import (
    EXTENSION_KEY,
    RETURN_RESPONSE_CONTENT,
    UPDATE_RESPONSE_CONTENT,
    _document_after,
    from_dict,
    from_json,
    from_v2_response,
    new_session_fields,
    return_request,
    returned_items_from_json,
    to_dict,
    to_json,
    update_request,
)

DATA = Path(__file__).parent / "data"
CREATED = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
CLOSED_AT = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)


def load(name: str) -> Any:
    """A sample document from ``tests/data``."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def fixed(moment: datetime = CLOSED_AT) -> Workflow:
    """A workflow whose clock always says ``moment``."""
    return Workflow(clock=lambda: moment)


def order(**changes: Any) -> CustomerSession:
    """The session of the domain reference's examples, open, with ``changes``."""
    fields: dict[str, Any] = {
        "integration_id": "order-2026-000871",
        "profile_id": "cust-4711",
        "coupon": "WELCOME10",
        "identifiers": ["a3f9c2e1"],
        "cart_items": [
            CartItem(name="Trail Sock", sku="SOCK-TR-42", quantity=3, price=7.5, category="socks"),
            CartItem(
                name="Rain Jacket",
                sku="JKT-RN-M",
                quantity=1,
                price=129.0,
                attributes={"color": "teal"},
                additional_costs={"giftwrap": AdditionalCost(2.0)},
            ),
        ],
        "additional_costs": {"shipping": AdditionalCost(4.9)},
        "attributes": {"ShippingCity": "Leipzig"},
        "application_id": 12,
        "created": CREATED,
        "workflow": fixed(),
    }
    fields.update(changes)
    return CustomerSession(**fields)


def problems_of(error: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    """The problems of a raised error, by path."""
    return {p.path: p.message for p in error.value.problems}


def refused(data: object, reader: Any = from_dict) -> dict[str, str]:
    """The problems ``reader`` reports for ``data`` (it must refuse it)."""
    with pytest.raises(ValidationError) as error:
        reader(data)
    return problems_of(error)


def assert_plain_json(value: object) -> None:
    """``value`` is made of exactly the JSON types (no str or int subclasses)."""
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif type(value) is list:
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or type(value) in {str, int, float, bool}, repr(value)


def nested(depth: int) -> list[object]:
    """An array ``depth`` levels deep: ``nested(1) == []``, ``nested(2) == [[]]``."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def without_history(session: CustomerSession) -> CustomerSession:
    """``session`` as a document without the history extension loads it."""
    return type(session).restore(**{**session.snapshot(), "history": ()})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
V1_KEYS = st.sampled_from(
    [
        "integrationId",
        "created",
        "applicationId",
        "firstSession",
        "discounts",
        "updated",
        "updateCount",
        "state",
        "cartItems",
        "total",
        "attributes",
        EXTENSION_KEY,
    ]
)


class TestModule:
    """The public face of customer_session.wire."""

    def test_all_is_sorted_and_documented(self):
        """__all__ lists constants then functions, sorted, each function documented."""
        from customer_session import wire  # noqa: PLC0415 - the module itself is under test

        def kind(name: str) -> tuple[int, str]:
            return (0 if name.isupper() else 2), name

        assert wire.__all__ == sorted(wire.__all__, key=kind)
        for name in wire.__all__:
            obj = getattr(wire, name)
            assert not callable(obj) or obj.__doc__, name

    def test_documented_constants(self):
        """The extension key and the total tolerance are the documented ones."""
        from customer_session import wire  # noqa: PLC0415 - the module itself is under test

        assert (wire.EXTENSION_KEY, wire.TOTAL_TOLERANCE) == ("x-customerSession", 0.005)


class TestTimestamps:
    """RFC 3339 timestamps on the wire, UTC in the session."""

    def test_written_in_utc_with_z(self):
        """Timestamps are written in UTC with a ``Z`` suffix."""
        doc = to_dict(
            order(created=datetime(2026, 3, 2, 11, 15, tzinfo=timezone(timedelta(hours=1))))
        )
        assert doc["created"] == "2026-03-02T10:15:00Z"

    def test_microseconds_are_kept(self):
        """Microseconds are written when set, so the round trip is exact."""
        moment = datetime(2020, 6, 10, 9, 5, 27, 993483, tzinfo=UTC)
        doc = to_dict(order(created=moment, workflow=fixed(moment)))
        assert doc["created"] == "2020-06-10T09:05:27.993483Z"
        assert from_dict(doc).created == moment

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-03-02T10:15:00Z", datetime(2026, 3, 2, 10, 15, tzinfo=UTC)),
            ("2026-03-02t10:15:00z", datetime(2026, 3, 2, 10, 15, tzinfo=UTC)),
            ("2026-03-02T11:15:00+01:00", datetime(2026, 3, 2, 10, 15, tzinfo=UTC)),
            ("2026-03-02T10:15:00.5Z", datetime(2026, 3, 2, 10, 15, 0, 500000, tzinfo=UTC)),
            ("2026-03-02T10:15:00.123456789Z", datetime(2026, 3, 2, 10, 15, 0, 123456, tzinfo=UTC)),
        ],
    )
    def test_any_rfc3339_offset_is_read_as_utc(self, text, expected):
        """Any RFC 3339 date-time is read, as UTC (digits past microseconds are cut)."""
        doc = to_dict(order())
        doc["created"] = doc["updated"] = text
        session = from_dict(doc)
        assert session.created == expected
        assert session.created.tzinfo is UTC

    @pytest.mark.parametrize(
        "text",
        [
            "2026-03-02",
            "2026-03-02T10:15:00",
            "2026-03-02 10:15:00Z",
            "20260302T101500Z",
            "2026-13-02T10:15:00Z",
            "2026-03-02T24:00:00Z",
            "2026-03-02T10:15:00+24:00",
            "2026-03-02T10:15:00+05:60",
            "2026-03-02T10:15:00-01:99",
            "2026-03-02T10:15:00+2:00",
            "0001-01-01T00:00:00+01:00",
            "yesterday",
        ],
    )
    def test_anything_else_is_refused(self, text):
        """Strings that are not RFC 3339 date-times (or not representable) are refused."""
        doc = to_dict(order())
        doc["created"] = text
        assert "$.created" in refused(doc)

    @pytest.mark.parametrize(
        "value",
        [
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:30:00-01:00",
            datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),
        ],
        ids=["text-year-0", "text-year-10000", "datetime-year-0", "datetime-year-10000"],
    )
    def test_a_time_outside_the_years_datetime_holds_is_named_as_such(self, value):
        """A valid date-time that falls outside the years 1 to 9999 in UTC is refused as that."""
        doc = to_dict(order())
        doc["created"] = value
        assert refused(doc)["$.created"] == (
            f"{shown(value)} is outside the years 1 to 9999 once converted to UTC"
        )


def _containers(value: Any, kinds: tuple[type, ...], *, exclude: bool = False) -> list[Any]:
    """The containers in ``value`` that are ``kinds`` (with ``exclude``: that are not)."""
    if not isinstance(value, list | tuple | Mapping):
        return []
    found = [value] if isinstance(value, kinds) != exclude else []
    items = value.values() if isinstance(value, Mapping) else value
    return found + [c for item in items for c in _containers(item, kinds, exclude=exclude)]


def _scribble(value: Any) -> None:
    """Add a marker to every list and dict in ``value``, the nested ones first."""
    for container in reversed(_containers(value, (list, dict))):
        if isinstance(container, list):
            container.append("SCRIBBLED")
        else:
            container["scribbled"] = True


class TestToDict:
    """Writing a session as Talon.One's v1 CustomerSession."""

    @pytest.mark.parametrize(
        ("writer", "name"),
        [(to_dict, "to_dict()"), (to_json, "to_json()"), (update_request, "update_request()")],
    )
    @pytest.mark.parametrize("value", ["order-1", None, {"integrationId": "order-1"}])
    def test_writer_refuses_what_is_not_a_session(self, writer, name, value):
        """A writer given anything but a CustomerSession raises a ValidationError naming it."""
        with pytest.raises(ValidationError, match=rf"^{re.escape(name)}: session: must be a "):
            writer(value)

    def test_sample_document_is_written_back_with_derived_keys(self):
        """A seed-era document is written back with updateCount, position and remainingQuantity.

        Its ``"referral": ""`` (no code) is left out, as any unset code is.
        """
        doc = load("session_v1.json")
        written = to_dict(from_dict(doc))
        doc["updateCount"] = 1
        del doc["referral"]
        doc["cartItems"][0].update(returnedQuantity=0, position=0, remainingQuantity=3)
        assert written == doc

    def test_keys_are_camel_case_with_catalog_item_id(self):
        """Keys are camelCase; the catalog item id is spelled ``catalogItemID``."""
        line = CartItem(sku="A", quantity=1, catalog_item_id=7, selected_price_type="member")
        doc = to_dict(order(cart_items=[line]))
        assert doc["cartItems"][0]["catalogItemID"] == 7
        assert doc["cartItems"][0]["selectedPriceType"] == "member"
        assert {"integrationId", "applicationId", "firstSession", "updateCount"} <= doc.keys()

    def test_required_keys_are_always_written(self):
        """The v1 model's required keys are written even for an empty session."""
        doc = to_dict(CustomerSession(integration_id="order-1"))
        required = {"integrationId", "created", "applicationId", "firstSession"}
        assert required | {"updateCount", "discounts", "updated", "state"} <= doc.keys()

    def test_unset_fields_are_left_out(self):
        """``None`` fields are left out rather than written as null."""
        doc = to_dict(
            CustomerSession(integration_id="order-1", cart_items=[CartItem(sku="A", quantity=1)])
        )
        assert "profileId" not in doc
        assert "coupon" not in doc
        assert doc["cartItems"][0] == {
            "sku": "A",
            "quantity": 1,
            "returnedQuantity": 0,
            "position": 0,
            "remainingQuantity": 1,
        }
        assert None not in json.loads(json.dumps(doc)).values()

    def test_total_is_the_derived_total(self):
        """``total`` is the session's derived total: items, item costs and session costs."""
        doc = to_dict(order())
        assert doc["total"] == pytest.approx(3 * 7.5 + 129.0 + 2.0 + 4.9)

    def test_returns_show_in_returned_and_remaining_quantity(self):
        """A return shows as returnedQuantity and remainingQuantity of the item."""
        session = order()
        session.close()
        session.return_items([ReturnedItem(position=0, quantity=1)])
        item = to_dict(session)["cartItems"][0]
        assert (item["returnedQuantity"], item["remainingQuantity"]) == (1, 2)

    def test_history_only_when_asked_for(self):
        """The history extension is written only with ``include_history=True``."""
        session = order()
        session.close()
        assert EXTENSION_KEY not in to_dict(session)
        history = to_dict(session, include_history=True)[EXTENSION_KEY]["history"]
        assert history == [
            {
                "trigger": "close",
                "source": "open",
                "destination": "closed",
                "timestamp": "2026-03-02T10:20:00Z",
            }
        ]

    def test_document_shares_nothing_with_the_session(self):
        """Changing the written document leaves the session's attributes alone."""
        session = order(attributes={"tags": ["a"]})
        doc = to_dict(session)
        doc["attributes"]["tags"].append("b")
        assert session.attributes["tags"] == ("a",)

    @given(wire_documents(include_history=True))
    def test_changing_any_part_of_the_document_leaves_the_session_alone(self, document):
        """Every list and dict to_dict() returns is new: changing one changes nothing."""
        session = from_dict(document)
        before = to_dict(session, include_history=True)
        _scribble(to_dict(session, include_history=True))
        assert to_dict(session, include_history=True) == before

    @given(wire_documents(include_history=True))
    def test_document_holds_only_plain_lists_and_dicts(self, document):
        """Frozen values are written back as lists and dicts, the JSON types."""
        written = to_dict(from_dict(document), include_history=True)
        assert not _containers(written, (list, dict), exclude=True)

    def test_to_json_is_compact_json_of_to_dict(self):
        """``to_json`` is the JSON text of ``to_dict``."""
        session = order()
        assert json.loads(to_json(session, indent=2)) == to_dict(session)

    @pytest.mark.parametrize(
        "indent", [-1, 1001, 10**5000, 2.0, True, "  ", [2]], ids=lambda v: type(v).__name__
    )
    def test_to_json_refuses_an_indent_that_is_no_width(self, indent):
        """An indent that is not None or an integer from 0 to 1000 is a ValidationError."""
        with pytest.raises(ValidationError) as caught:
            to_json(order(), indent=indent)
        assert [p.path for p in caught.value.problems] == ["indent"]
        assert caught.value.subject == "to_json()"

    @pytest.mark.parametrize("indent", [0, 1000])
    def test_to_json_takes_an_indent_from_0_to_1000(self, indent):
        """Indents 0 and 1000 pretty-print the same document."""
        session = order()
        text = to_json(session, indent=indent)
        assert json.loads(text) == to_dict(session)
        assert "\n" + " " * indent + '"' in text


class TestDocumentAfter:
    """The store's writer of a session's next document, reusing the previous one."""

    @given(sessions(), st.data())
    def test_equals_a_full_writing_after_any_change(self, before, data):
        """Whatever one step changes, the document equals ``to_dict`` of the session."""
        written = to_dict(before, include_history=True)
        session = twin(before, before.workflow)
        step = data.draw(st.sampled_from(_STEPS))
        with contextlib.suppress(CustomerSessionError):
            step(session, data)
        assert _document_after(session, before, written) == to_dict(session, include_history=True)

    @given(sessions(state=State.OPEN, min_items=2), st.data())
    def test_chained_documents_equal_full_writings(self, session, data):
        """A document written from one written from another is still the full writing."""
        written = to_dict(session, include_history=True)
        for step in data.draw(st.lists(st.sampled_from(_STEPS), max_size=5)):
            before = twin(session, session.workflow)
            with contextlib.suppress(CustomerSessionError):
                step(session, data)
            written = _document_after(session, before, written)
            assert written == to_dict(session, include_history=True)

    def test_another_history_is_written_in_full(self):
        """A session whose history does not continue ``before``'s is written from scratch."""
        before = order()
        before.close()
        session = order()
        session.cancel()
        written = to_dict(before, include_history=True)
        assert _document_after(session, before, written) == to_dict(session, include_history=True)


def _return_some(session: CustomerSession, data: st.DataObject) -> None:
    if session.can(Trigger.RETURN_ITEMS, items=[ReturnedItem(position=0, quantity=1)]):
        session.return_items(data.draw(returned_items(session)))


_STEPS = (
    lambda session, _: session.close(),
    lambda session, _: session.cancel(),
    _return_some,
    lambda session, _: session.set_coupon("SPRING"),
    lambda session, _: session.set_attribute("tags", ["a", {"b": 1}]),
    lambda session, _: session.add_item(CartItem(sku="HAT", quantity=2, price=4.5)),
    lambda session, _: session.set_additional_cost("shipping", 4.9),
    lambda _session, _: None,
)


class TestFromDict:
    """Reading a v1 document into a session through restore()."""

    def test_seed_era_document_loads_with_update_count_one(self):
        """A document without updateCount (seed era) loads with update_count 1."""
        session = from_dict(load("session_v1.json"))
        assert session.update_count == 1
        assert session.state is State.CLOSED
        assert session.discounts == {"Welcome 10%": 2.25}

    @pytest.mark.parametrize("key", ["coupon", "referral"])
    def test_an_empty_code_is_no_code(self, key):
        """``"coupon": ""`` or ``"referral": ""`` (as Talon.One writes "none") loads as None."""
        doc = load("session_v1.json")
        doc[key] = ""
        assert getattr(from_dict(doc), key) is None

    def test_history_extension_is_restored(self):
        """The history extension becomes the session's history."""
        session = from_dict(load("session_v1_history.json"))
        assert [r.trigger for r in session.history] == [Trigger.CLOSE, Trigger.RETURN_ITEMS]
        assert session.history[1].returned_items == (ReturnedItem(position=0, quantity=1),)

    def test_a_value_whose_reading_raises_is_refused_with_the_error(self):
        """A mapping that raises when a key is read is refused at that key, naming the error."""

        class Broken(dict):
            def __getitem__(self, key):
                if key == "sku":
                    raise OSError("gone")
                return super().__getitem__(key)

        doc = to_dict(order())
        doc["cartItems"] = [Broken(doc["cartItems"][0])]
        with pytest.raises(ValidationError) as error:
            from_dict(doc)
        assert problems_of(error) == {"$.cartItems[0].sku": "cannot be read (OSError: gone)"}

    @pytest.mark.parametrize("state", list(State))
    def test_every_state_loads(self, state):
        """A document in any of the four states loads (restore, not the constructor)."""
        doc = to_dict(order())
        doc["state"] = state.value
        if state is State.PARTIALLY_RETURNED:  # only a return leads there
            line = doc["cartItems"][0]
            line.update(returnedQuantity=1, remainingQuantity=line["quantity"] - 1)
        assert from_dict(doc).state is state

    @pytest.mark.parametrize("spelling", ["OPEN", "Closed", " cancelled", "shipped"])
    def test_a_state_not_spelled_as_on_the_wire_is_refused(self, spelling):
        """Only the exact wire value names a state: another case or a stray space is refused."""
        doc = to_dict(order())
        doc["state"] = spelling
        assert "$.state" in refused(doc)

    @pytest.mark.parametrize("spelling", ["CLOSE", "Close", "shut"])
    def test_a_history_trigger_not_spelled_as_on_the_wire_is_refused(self, spelling):
        """Only the exact wire value names a trigger in the history extension."""
        session = order()
        session.close()
        doc = to_dict(session, include_history=True)
        doc[EXTENSION_KEY]["history"][0]["trigger"] = spelling
        assert any(path.endswith("history[0].trigger") for path in refused(doc))

    def test_loaded_closed_session_is_read_only(self):
        """A loaded closed session follows the table: it can be cancelled, not closed."""
        session = from_dict(load("session_v1.json"))
        assert session.allowed_triggers == {Trigger.CANCEL, Trigger.RETURN_ITEMS}

    def test_session_class_and_workflow_are_used(self):
        """``session_class`` and ``workflow`` choose the class and the binding."""
        workflow = Workflow(ReopenableCustomerSession.specification)
        session = from_dict(
            load("session_v1.json"), session_class=ReopenableCustomerSession, workflow=workflow
        )
        assert type(session) is ReopenableCustomerSession
        assert session.workflow is workflow

    def test_workflow_of_another_table_is_a_workflow_error(self):
        """A workflow of another specification is a programming error, not a document problem."""
        with pytest.raises(WorkflowError, match="drives another specification"):
            from_dict(
                load("session_v1.json"), workflow=Workflow(ReopenableCustomerSession.specification)
            )

    def test_reopen_in_history_needs_the_reopenable_class(self):
        """A history with reopen is refused by the plain class, at its JSON path."""
        session = ReopenableCustomerSession(
            integration_id="order-1", workflow=Workflow(ReopenableCustomerSession.specification)
        )
        session.close()
        session.reopen()
        doc = to_dict(session, include_history=True)
        assert "$['x-customerSession'].history[1]" in refused(doc)
        assert from_dict(doc, session_class=ReopenableCustomerSession) == session

    def test_missing_required_keys_are_listed(self):
        """Every missing required key is a problem of its own."""
        problems = refused({"integrationId": "order-1"})
        assert problems.keys() == {
            "$.created",
            "$.applicationId",
            "$.firstSession",
            "$.discounts",
            "$.updated",
        }
        assert set(problems.values()) == {"is required"}

    def test_every_problem_is_listed_with_its_path(self):
        """One error lists every problem, each at its JSON path."""
        doc = to_dict(order())
        doc["cartItems"][0]["quantity"] = -1
        doc["cartItems"][1]["sku"] = 42
        doc["state"] = "shipped"
        doc["applicationId"] = "12"
        doc["attributes"]["when"] = float("inf")
        del doc["updated"]
        problems = refused(doc)
        assert problems.keys() == {
            "$.cartItems[0].quantity",
            "$.cartItems[1].sku",
            "$.state",
            "$.applicationId",
            "$.attributes.when",
            "$.updated",
        }

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("3", "must be an integer, got string '3'"),
            (2.0, "must be an integer, got number 2.0"),
            (True, "must be an integer, got boolean true"),
            (0, "must be an integer >= 1, got 0"),
        ],
    )
    def test_quantities_are_not_coerced(self, value, message):
        """A quantity must be a JSON integer of at least 1; nothing is coerced."""
        doc = to_dict(order())
        doc["cartItems"][1]["quantity"] = value
        assert refused(doc) == {"$.cartItems[1].quantity": message}

    def test_null_is_refused(self):
        """``null`` is refused even for optional keys: no field is nullable."""
        doc = to_dict(order())
        doc["coupon"] = None
        assert "must not be null" in refused(doc)["$.coupon"]

    def test_unknown_keys_are_refused_with_a_hint(self):
        """An unknown key is a problem; a wrongly cased one gets a suggestion."""
        doc = to_dict(order(cart_items=[CartItem(sku="A", quantity=1)]))
        doc["cartItems"][0]["catalogItemId"] = 7
        doc["profileID"] = "cust-4711"
        assert refused(doc) == {
            "$.cartItems[0].catalogItemId": "unknown key; did you mean 'catalogItemID'?",
            "$.profileID": "unknown key; did you mean 'profileId'?",
        }

    def test_snake_case_keys_get_the_wire_name_as_a_hint(self):
        """A key in the snake_case of the official SDK's ``to_dict()`` gets its wire name."""
        doc = to_dict(order(cart_items=[CartItem(sku="A", quantity=1)]))
        doc["cartItems"][0]["catalog_item_id"] = 7
        doc["profile_id"] = doc.pop("profileId", "cust-4711")
        assert refused(doc) == {
            "$.cartItems[0].catalog_item_id": "unknown key; did you mean 'catalogItemID'?",
            "$.profile_id": "unknown key; did you mean 'profileId'?",
        }

    def test_keys_that_are_not_identifiers_are_quoted(self):
        """Paths quote keys that are not identifiers, in RFC 9535 notation."""
        doc = to_dict(order())
        doc["discounts"] = {"Welcome 10%": "2.25", "it's": True}
        assert refused(doc).keys() == {"$.discounts['Welcome 10%']", "$.discounts['it\\'s']"}

    def test_control_characters_in_keys_are_escaped(self):
        """A key's control characters (a terminal escape sequence) are escaped in its path."""
        doc = to_dict(order())
        doc["discounts"] = {"a\x1b]0;x\x07\u202e\n": "2.25"}
        doc["zz\x9b"] = 1
        assert refused(doc).keys() == {
            "$.discounts['a\\u001b]0;x\\u0007\\u202e\\n']",
            "$['zz\\u009b']",
        }

    def test_control_characters_with_a_short_escape_take_it(self):
        """Backspace, form feed, newline, carriage return and tab take RFC 9535's short escapes."""
        doc = to_dict(order())
        doc["\b\f\n\r\t"] = 1
        assert refused(doc).keys() == {"$['\\b\\f\\n\\r\\t']"}

    def test_a_character_beyond_the_basic_plane_is_a_surrogate_pair(self):
        """A character past U+FFFF that is not printable is escaped as a UTF-16 pair, as in JSON."""
        doc = to_dict(order())
        doc["tag\U000e0001"] = 1  # LANGUAGE TAG: a format character, not printable
        assert refused(doc).keys() == {"$['tag\\udb40\\udc01']"}

    def test_total_far_from_the_cart_is_refused(self):
        """A total more than 0.005 away from the cart's value is a problem at $.total."""
        doc = to_dict(order())
        doc["total"] += 0.01
        assert refused(doc).keys() == {"$.total"}

    def test_total_within_the_tolerance_is_accepted(self):
        """A total within 0.005 of the cart's value (rounded by a server) is accepted."""
        doc = to_dict(order())
        doc["total"] = round(doc["total"], 2) + 0.004
        assert from_dict(doc).total == pytest.approx(doc["total"], abs=0.005)

    def test_position_must_be_the_index(self):
        """A cart item's position must be its index (a float such as 1.0 is fine)."""
        doc = to_dict(order())
        doc["cartItems"][1]["position"] = 1.0
        from_dict(doc)
        doc["cartItems"][1]["position"] = 0
        assert refused(doc).keys() == {"$.cartItems[1].position"}

    @pytest.mark.parametrize("remaining", [1, 4], ids=["fewer", "more"])
    def test_remaining_quantity_must_agree(self, remaining):
        """remainingQuantity must be quantity minus returnedQuantity, neither less nor more."""
        doc = to_dict(order())
        doc["cartItems"][0]["remainingQuantity"] = remaining
        assert refused(doc) == {
            "$.cartItems[0].remainingQuantity": (
                f"must be quantity - returnedQuantity = 3, got {remaining}"
            )
        }

    def test_returned_quantity_above_quantity_is_refused(self):
        """The model's own rules report at JSON paths (returnedQuantity <= quantity)."""
        doc = to_dict(order())
        doc["cartItems"][0]["returnedQuantity"] = 4
        del doc["cartItems"][0]["remainingQuantity"]
        assert refused(doc).keys() == {"$.cartItems[0].returnedQuantity"}

    def test_updated_before_created_is_refused(self):
        """Session rules report at JSON paths too (updated not before created)."""
        doc = to_dict(order())
        doc["updated"] = "2026-03-01T00:00:00Z"
        assert refused(doc).keys() == {"$.updated"}

    def test_cart_limits_are_checked(self):
        """The API's cart limits are problems at $.cartItems."""
        doc = to_dict(order(cart_items=[]))
        doc["cartItems"] = [{"sku": "A", "quantity": 10_000}, {"sku": "B", "quantity": 1}]
        del doc["total"]
        assert refused(doc).keys() == {"$.cartItems"}

    def test_history_must_end_in_the_state(self):
        """A history that does not end in the document's state is refused."""
        doc = load("session_v1_history.json")
        doc["state"] = "cancelled"
        assert refused(doc).keys() == {"$['x-customerSession'].history"}

    def test_sdk_style_datetimes_and_uuids_are_accepted(self):
        """Aware datetime and UUID objects (as an SDK's to_dict gives them) are accepted."""
        import uuid  # noqa: PLC0415 - only this test needs it

        reference = uuid.uuid4()
        doc = to_dict(
            order(
                cart_items=[CartItem(sku="A", quantity=1, adjustment_reference_id=str(reference))]
            )
        )
        doc["created"] = CREATED
        doc["cartItems"][0]["adjustmentReferenceId"] = reference
        session = from_dict(doc)
        assert session.created == CREATED
        assert session.cart_items[0].adjustment_reference_id == str(reference)

    def test_naive_datetimes_are_refused(self):
        """A naive datetime object has no place on the wire."""
        doc = to_dict(order())
        doc["created"] = datetime(2026, 3, 2, 10, 15)  # noqa: DTZ001 - the naive value under test
        assert refused(doc).keys() == {"$.created"}

    def test_not_an_object(self):
        """A document that is not an object is one problem at $."""
        assert refused([1, 2]) == {"$": "must be an object, got array of 2"}


class TestHistoryAgainstTheDocument:
    """The history extension must explain the rest of the document."""

    def test_returns_must_add_up_to_the_returned_units(self):
        """A history return that disagrees with returnedQuantity is refused at JSON paths."""
        doc = load("session_v1_history.json")
        doc["x-customerSession"]["history"][1]["returnedItems"][0]["quantity"] = 2
        assert refused(doc) == {
            "$.cartItems[0].returnedQuantity": "is 1, but the history's returns of "
            "'SOCK-TR-42' add up to 2"
        }

    def test_a_return_must_name_a_cart_position(self):
        """A history return of a position the cart lacks is refused with its camelCase path."""
        doc = load("session_v1_history.json")
        doc["x-customerSession"]["history"][1]["returnedItems"][0]["position"] = 7
        problems = refused(doc)
        assert problems["$['x-customerSession'].history[1].returnedItems[0].position"] == (
            "no cart item at position 7 (the cart has 1)"
        )

    def test_update_count_must_cover_the_history(self):
        """An updateCount lower than the creation plus the transitions is refused."""
        doc = load("session_v1_history.json")
        doc["updateCount"] = 2
        assert refused(doc).keys() == {"$.updateCount"}

    def test_a_document_without_history_is_not_cross_checked(self):
        """Without the extension, returned units in a state a return leads to load as they are."""
        doc = load("session_v1_history.json")
        del doc["x-customerSession"]
        doc["updateCount"] = 1
        assert from_dict(doc).cart_items[0].returned_quantity == 1

    def test_a_closed_document_has_nothing_returned(self):
        """A closed document whose cart shows returned units is refused, with or without history."""
        doc = load("session_v1_history.json")
        del doc["x-customerSession"]
        doc["state"] = "closed"
        assert refused(doc).keys() == {"$.cartItems[0].returnedQuantity"}


class TestIntegerBounds:
    @pytest.mark.parametrize("key", ["updateCount", "applicationId"])
    def test_integers_beyond_64_bits_are_refused(self, key):
        """A count or id beyond 64 bits is refused at its path, with a printable message."""
        doc = load("session_v1_history.json")
        doc[key] = 10**5000
        assert refused(doc)[f"$.{key}"].startswith("must be at most 9223372036854775807")

    def test_a_quantity_too_large_for_a_float_names_the_quantity(self):
        """A cart quantity of 2**1024 with a price is refused as a quantity, not unreadable."""
        doc = load("session_v1_history.json")
        doc["cartItems"][0]["quantity"] = 2**1024
        assert "$.cartItems[0].quantity" in refused(doc)


class TestRoundTrip:
    """Lossless round trips through the v1 document."""

    @given(sessions())
    def test_session_round_trip_with_history(self, session):
        """A session survives to_dict(include_history=True) and from_dict unchanged."""
        assert from_dict(to_dict(session, include_history=True)) == session

    @given(sessions())
    def test_session_round_trip_without_history(self, session):
        """Without the extension everything but the history survives."""
        assert from_dict(to_dict(session)) == without_history(session)

    @given(sessions(session_class=ReopenableCustomerSession))
    def test_reopenable_round_trip(self, session):
        """Reopenable sessions round-trip when read back into their class."""
        doc = to_dict(session, include_history=True)
        assert from_dict(doc, session_class=ReopenableCustomerSession) == session

    @given(wire_documents(include_history=True))
    def test_document_round_trip(self, doc):
        """A document with every optional field survives from_dict and to_dict unchanged."""
        assert to_dict(from_dict(doc), include_history=True) == doc

    @given(wire_documents(include_history=True))
    def test_json_text_round_trip(self, doc):
        """The JSON text round trip is as lossless as the dict one."""
        session = from_dict(doc)
        assert from_json(to_json(session, include_history=True)) == session

    @given(wire_documents(include_history=True).map(from_dict))
    def test_output_is_plain_json(self, session):
        """Documents and request bodies hold only plain JSON types (no enum members)."""
        assert_plain_json(to_dict(session, include_history=True))
        if session.state is not State.PARTIALLY_RETURNED:
            assert_plain_json(update_request(session, response_content=["customerSession"]))
        assert_plain_json(return_request([ReturnedItem(0, 1, "A")]))

    @given(sessions())
    def test_derived_values_survive(self, session):
        """Derived values (total, remaining units) are the same after the round trip."""
        loaded = from_dict(to_dict(session))
        assert loaded.total == session.total
        assert [i.remaining_quantity for i in loaded.cart_items] == [
            i.remaining_quantity for i in session.cart_items
        ]


class TestFromJson:
    """Reading JSON text."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "malformed JSON: Expecting value (line 1, column 1)"),
            ('{"integrationId": "order-1",}', "malformed JSON: "),
            ('{"total": NaN}', "malformed JSON: NaN is not a JSON number"),
            (b"\xff", "malformed JSON: 'utf-8' codec can't decode byte 0xff"),
            ("[" * 100_000, "malformed JSON: nested too deeply"),
        ],
    )
    def test_malformed_json_is_one_problem_at_the_root(self, text, message):
        """Malformed JSON is a ValidationError with one problem at $."""
        problems = refused(text, from_json)
        assert problems.keys() == {"$"}
        assert problems["$"].startswith(message)

    def test_an_integer_beyond_pythons_digit_limit_is_said_to_be_one(self):
        """An integer of more digits than Python converts is named, without Python's advice."""
        limit = sys.get_int_max_str_digits()
        problems = refused('{"total": 1' + "0" * limit + "}", from_json)
        assert problems == {"$": f"unsupported JSON: a number has more than {limit} digits"}

    @pytest.mark.parametrize(
        ("text", "where"),
        [
            ("\ufeff{}", "line 1, column 1"),
            ("{\n\ufeff}", "line 2, column 1"),
            (b"\xef\xbb\xbf\xef\xbb\xbf{}", "line 1, column 1"),  # bytes: one is dropped
        ],
    )
    def test_a_byte_order_mark_outside_a_string_is_named(self, text, where):
        """A byte order mark outside a string is named, not given Python's decoding advice."""
        problems = refused(text, from_json)
        assert problems == {
            "$": (
                "malformed JSON: a byte order mark (U+FEFF), which JSON allows only inside "
                f"a string ({where})"
            )
        }

    def test_text_is_required(self):
        """Only str, bytes or bytearray are JSON text."""
        assert refused(42, from_json) == {"$": "must be JSON text (str or bytes), got int"}

    def test_a_repeated_key_is_refused_at_its_path(self):
        """A key written twice in one object is refused at its path, not read as the last."""
        text = to_json(order())
        text = text.replace('"state": "open"', '"state": "open", "state": "cancelled"')
        text = text.replace('"color": "teal"', '"color": "teal", "color": "red", "color": "x"')
        problems = refused(text, from_json)
        assert problems.keys() == {"$.state", "$.cartItems[1].attributes.color"}
        assert problems["$.cartItems[1].attributes.color"].startswith("appears 3 times")

    def test_the_same_key_in_different_objects_is_fine(self):
        """Keys repeat freely across objects (each cart item has its own sku)."""
        session = order()
        assert from_json(to_json(session)) == session

    def test_bytes_are_read(self):
        """UTF-8 bytes are read like text."""
        raw = (DATA / "session_v1.json").read_bytes()
        assert from_json(raw) == from_dict(load("session_v1.json"))


class TestUpdateRequest:
    """The body of PUT /v2/customer_sessions/{id}."""

    def test_sample_request(self):
        """The domain reference's update request is what a closed session produces."""
        session = order()
        session.close()
        body = update_request(session, response_content=["customerSession", "customerProfile"])
        assert body == load("update_request.json")

    @pytest.mark.parametrize("state", [State.OPEN, State.CLOSED, State.CANCELLED])
    def test_state_is_always_explicit(self, state):
        """The target state is always sent (an SDK's default would be open)."""
        session = CustomerSession.restore(integration_id="order-1", state=state)
        assert update_request(session)["customerSession"]["state"] == state.value

    def test_read_only_item_fields_are_left_out(self):
        """Returned quantities, positions, catalog ids and prices are never sent."""
        line = CartItem(
            sku="A",
            quantity=2,
            returned_quantity=1,
            catalog_item_id=7,
            selected_price_type="member",
            adjustment_reference_id="7c1e4c8e-1f3b-4c2a-9d5e-1a2b3c4d5e6f",
            adjustment_effective_from=CREATED,
            prices={"member": PriceDetail(price=1.0)},
            product=Product("socks"),
        )
        session = CustomerSession.restore(
            integration_id="order-1", state=State.CANCELLED, cart_items=[line]
        )
        assert update_request(session)["customerSession"]["cartItems"] == [
            {"sku": "A", "quantity": 2, "product": {"name": "socks"}}
        ]

    def test_partially_returned_is_never_a_target(self):
        """A partially returned session cannot be sent as an update: returns have their endpoint."""
        session = from_dict(load("session_v1_history.json"))
        with pytest.raises(ValidationError) as error:
            update_request(session)
        assert "returns" in problems_of(error)["state"]

    def test_codes_are_left_out_when_unset(self):
        """Unset codes are left out, which keeps the ones Talon.One already has."""
        body = update_request(CustomerSession(integration_id="order-1"))["customerSession"]
        assert body == {"state": "open", "cartItems": []}

    def test_unset_codes_can_be_discarded(self):
        """``discard_unset_codes`` sends the empty values that discard earlier codes."""
        body = update_request(CustomerSession(integration_id="order-1"), discard_unset_codes=True)
        assert body["customerSession"]["couponCodes"] == []
        assert body["customerSession"]["referralCode"] == ""

    def test_a_document_with_an_empty_code_is_sent_without_it(self):
        """An empty code read from a document (no code) is left out, or sent as discarded."""
        doc = load("session_v1.json")
        doc["state"] = "open"
        session = from_dict(doc)
        assert "referralCode" not in update_request(session)["customerSession"]
        body = update_request(session, discard_unset_codes=True)["customerSession"]
        assert (body["couponCodes"], body["referralCode"]) == (["WELCOME10"], "")

    def test_unknown_response_content_is_refused(self):
        """responseContent values must be ones the endpoint knows."""
        with pytest.raises(ValidationError) as error:
            update_request(order(), response_content=["customerSession", "everything"])
        assert problems_of(error).keys() == {"response_content[1]"}

    @pytest.mark.parametrize("entry", [["customerSession"], {"customerSession": 1}, 7, None])
    def test_response_content_entries_that_are_not_names_are_refused(self, entry):
        """A responseContent entry that is no string (even an unhashable one) is refused."""
        with pytest.raises(ValidationError) as error:
            update_request(order(), response_content=["customerSession", entry])
        assert problems_of(error).keys() == {"response_content[1]"}

    def test_returned_items_that_cannot_be_read_are_refused(self):
        """A return request's items from an iterable that raises are refused with the error."""

        def items():
            yield ReturnedItem(0, 1)
            raise OSError("gone")

        with pytest.raises(ValidationError, match=r"cannot be read \(OSError: gone\)") as error:
            return_request(items())
        assert problems_of(error).keys() == {"items"}

    def test_response_content_that_cannot_be_read_is_refused(self):
        """responseContent from an iterable that raises is refused with the error, by both."""

        def content():
            yield "customerSession"
            raise OSError("gone")

        with pytest.raises(ValidationError, match=r"cannot be read \(OSError: gone\)") as error:
            update_request(order(), response_content=content())
        assert problems_of(error).keys() == {"response_content"}
        with pytest.raises(ValidationError, match=r"cannot be read \(OSError: gone\)") as error:
            return_request([ReturnedItem(0, 1)], response_content=content())
        assert problems_of(error).keys() == {"response_content"}

    def test_response_content_as_bytes_is_refused(self):
        """Bytes are no sequence of names, as a string is not."""
        with pytest.raises(ValidationError) as error:
            return_request([ReturnedItem(0, 1)], response_content=b"coupons")
        assert problems_of(error).keys() == {"response_content"}

    def test_every_known_response_content_is_accepted(self):
        """Every documented responseContent value is accepted, in the order given."""
        content = sorted(UPDATE_RESPONSE_CONTENT)
        assert update_request(order(), response_content=content)["responseContent"] == content

    @given(sessions(state=State.OPEN))
    def test_request_reads_back_as_the_same_fields(self, session):
        """new_session_fields reads an update body back into the session's fields."""
        body = update_request(session)["customerSession"]
        fields = new_session_fields(body)
        assert fields["cart_items"] == tuple(
            CartItem(
                sku=i.sku, quantity=i.quantity, name=i.name, price=i.price, category=i.category
            )
            for i in session.cart_items
        )
        assert fields.get("profile_id") == session.profile_id
        assert fields["state"] is State.OPEN


class TestNewSessionFields:
    """Reading the customerSession of an update request (as a replay does)."""

    def test_only_present_keys_are_returned(self):
        """Only the keys present in the body become fields."""
        assert new_session_fields({"profileId": "cust-4711"}) == {"profile_id": "cust-4711"}

    def test_empty_codes_mean_no_code(self):
        """``couponCodes: []`` and ``referralCode: ""`` mean no code, as in Talon.One."""
        fields = new_session_fields({"couponCodes": [], "referralCode": ""})
        assert fields == {"coupon": None, "referral": None}

    def test_an_empty_coupon_code_is_refused(self):
        """``couponCodes: [""]`` is no list of codes ([] is "none"): refused at its entry."""
        problems = refused({"couponCodes": [""]}, new_session_fields)
        assert problems.keys() == {"$.couponCodes[0]"}
        assert "[] means none" in problems["$.couponCodes[0]"]

    def test_read_only_and_unmodelled_keys_are_refused(self):
        """Read-only item keys and keys a session cannot hold are problems under ``path``."""
        body = {
            "cartItems": [{"sku": "A", "quantity": 2, "returnedQuantity": 1}],
            "loyaltyCards": ["card-1"],
            "couponCodes": ["A", "B"],
        }
        problems = refused(body, lambda b: new_session_fields(b, path="$.customerSession"))
        assert problems.keys() == {
            "$.customerSession.cartItems[0].returnedQuantity",
            "$.customerSession.loyaltyCards",
        }

    def test_more_than_one_coupon_is_refused(self):
        """A session holds one coupon code, so two are refused."""
        problems = refused({"couponCodes": ["A", "B"]}, new_session_fields)
        assert problems.keys() == {"$.couponCodes"}

    def test_a_cart_at_the_api_limits_is_read(self):
        """1000 items and 10,000 units, Talon.One's limits per request, are read."""
        items = [{"sku": f"S{i}", "quantity": 10} for i in range(1000)]
        assert len(new_session_fields({"cartItems": items})["cart_items"]) == 1000

    @pytest.mark.parametrize(
        ("items", "message"),
        [
            ([{"sku": f"S{i}", "quantity": 1} for i in range(1001)], "1001 items"),
            ([{"sku": "A", "quantity": 10_000}, {"sku": "B", "quantity": 1}], "10001 units"),
        ],
    )
    def test_a_cart_beyond_the_api_limits_is_refused(self, items, message):
        """A request over 1000 items or 10,000 units, which Talon.One refuses, is refused."""
        problems = refused(
            {"cartItems": items}, lambda b: new_session_fields(b, path="$.customerSession")
        )
        assert problems.keys() == {"$.customerSession.cartItems"}
        assert message in problems["$.customerSession.cartItems"]


class TestReturnRequest:
    """The body of POST /v2/customer_sessions/{id}/returns."""

    def test_sample_request(self):
        """The domain reference's return request is what one returned unit produces."""
        body = return_request(
            [ReturnedItem(position=0, quantity=1)], response_content=["customerSession"]
        )
        assert body == load("return_request.json")

    def test_sku_is_sent_when_known(self):
        """An item's SKU is sent when the returned item carries one."""
        body = return_request([ReturnedItem(position=1, quantity=2, sku="JKT-RN-M")])
        assert body == {
            "return": {"returnedCartItems": [{"position": 1, "quantity": 2, "sku": "JKT-RN-M"}]}
        }

    def test_record_items_can_be_sent(self):
        """The returned items of a committed record make a request."""
        session = order()
        session.close()
        record = session.return_items([ReturnedItem(position=0, quantity=2)])
        assert return_request(record.returned_items)["return"]["returnedCartItems"] == [
            {"position": 0, "quantity": 2}
        ]

    @pytest.mark.parametrize(
        ("items", "path"),
        [
            ([], "items"),
            ("items", "items"),
            ([ReturnedItem(0, 1), {"position": 1}], "items[1]"),
            ([ReturnedItem(0, 1), ReturnedItem(0, 2)], "items[1].position"),
            ({ReturnedItem(0, 1): 1}, "items"),
        ],
        ids=["empty", "text", "not-an-item", "repeated", "mapping"],
    )
    def test_bad_items_are_refused(self, items, path):
        """Empty returns, entries that are not ReturnedItem and repeated positions are refused."""
        with pytest.raises(ValidationError) as error:
            return_request(items)
        assert path in problems_of(error)

    def test_response_content_of_returns_is_checked(self):
        """A return accepts only its own responseContent values."""
        assert "awardedGiveaways" not in RETURN_RESPONSE_CONTENT
        with pytest.raises(ValidationError) as error:
            return_request([ReturnedItem(0, 1)], response_content=["awardedGiveaways"])
        assert list(problems_of(error)) == ["response_content[0]"]

    def test_request_reads_back_as_the_same_items(self):
        """returned_items_from_json reads a return body back into the items."""
        items = (ReturnedItem(0, 1), ReturnedItem(1, 1, "JKT-RN-M"))
        assert returned_items_from_json(return_request(items)["return"]) == items

    def test_position_is_required_when_reading(self):
        """Reading a return needs each item's position (this library's identifier)."""
        problems = refused(
            {"returnedCartItems": [{"sku": "A", "quantity": 1}]},
            lambda d: returned_items_from_json(d, path="$.return"),
        )
        assert problems == {"$.return.returnedCartItems[0].position": "is required"}

    def test_an_empty_return_is_refused_when_reading(self):
        """Reading a return with no item is refused at its list, as return_request refuses it."""
        problems = refused(
            {"returnedCartItems": []}, lambda d: returned_items_from_json(d, path="$.return")
        )
        assert problems == {"$.return.returnedCartItems": "a return needs at least one item"}

    def test_a_repeated_position_is_refused_when_reading(self):
        """Reading a return that names a position twice is refused at the second entry."""
        entry = {"position": 1, "quantity": 1}
        problems = refused({"returnedCartItems": [entry, entry]}, returned_items_from_json)
        assert problems == {"$.returnedCartItems[1].position": "position 1 appears more than once"}


class TestStorableValues:
    """Values a session could hold in memory but never write are refused by every reader."""

    def test_a_cart_whose_total_overflows_is_refused_at_the_cart(self):
        """Two lines of 1e308 are one problem at ``$.cartItems``, not a total of inf."""
        doc = to_dict(order(cart_items=[CartItem(sku="A", quantity=1, price=1e308)]))
        doc["cartItems"].append({**doc["cartItems"][0], "position": 1})
        assert refused(doc) == {
            "$.cartItems": "the lines' values add up to more than a float can hold"
        }

    def test_an_integer_price_too_large_for_a_float_is_refused(self):
        """A price of 400 digits is refused at its path, with a short description."""
        doc = to_dict(order())
        doc["cartItems"][0]["price"] = 10**400
        problems = refused(doc)
        assert list(problems) == ["$.cartItems[0].price"]
        assert "too large for a float" in problems["$.cartItems[0].price"]

    @pytest.mark.parametrize("reader", [from_dict, from_v2_response], ids=["v1", "v2"])
    def test_costs_that_overflow_are_refused_not_raised(self, reader):
        """Session costs adding up beyond a float are a problem, not an OverflowError."""
        doc = to_dict(order())
        if reader is from_v2_response:
            doc = load("session_v2_response.json")
        doc["additionalCosts"] = {"a": {"price": 1e308}, "b": {"price": 1e308}}
        assert "$.additionalCosts" in refused(doc, reader)

    @pytest.mark.parametrize(
        ("key", "path"),
        [
            ("integrationId", "$.integrationId"),
            ("profileId", "$.profileId"),
            ("coupon", "$.coupon"),
            ("identifiers", "$.identifiers[0]"),
            ("attributes", "$.attributes.note"),
        ],
    )
    @pytest.mark.parametrize("text", ["x\x00", "x\ud800"], ids=["nul", "surrogate"])
    def test_text_that_cannot_be_stored_is_refused(self, key, path, text):
        """A NUL or lone surrogate in any text is refused with its JSON path."""
        doc = to_dict(order())
        doc[key] = {"identifiers": [text], "attributes": {"note": text}}.get(key, text)
        assert list(refused(doc)) == [path]

    @pytest.mark.parametrize("where", ["session", "item"])
    def test_attributes_nested_to_the_limit_load_back(self, where):
        """A session whose attributes nest MAX_NESTING levels is written and loads back."""
        deepest = {"a": nested(MAX_NESTING - 1)}
        if where == "session":
            session = order(attributes=deepest)
        else:
            session = order(cart_items=[CartItem(sku="A", quantity=1, attributes=deepest)])
        assert from_json(to_json(session, include_history=True)) == session
        assert from_dict(to_dict(session, include_history=True)) == session

    @pytest.mark.parametrize("depth", [MAX_NESTING, 5_000])
    def test_attributes_nested_deeper_are_refused_at_the_level_too_deep(self, depth):
        """Deeper attributes are one problem where the limit is passed, not a RecursionError."""
        doc = to_dict(order())
        doc["attributes"] = {"a": nested(depth)}
        doc["cartItems"][0]["attributes"] = {"a": nested(depth)}
        problems = refused(doc)
        too_deep = ".attributes.a" + "[0]" * (MAX_NESTING - 1)
        assert problems.keys() == {f"${too_deep}", f"$.cartItems[0]{too_deep}"}
        assert f"more than {MAX_NESTING} levels" in problems[f"${too_deep}"]

    def test_attributes_nested_deeper_in_json_text_are_refused(self):
        """The same holds for JSON text, from_json's nesting limit aside."""
        doc = to_dict(order())
        doc["attributes"] = {"a": nested(MAX_NESTING)}
        assert list(refused(json.dumps(doc), from_json)) == [
            "$.attributes.a" + "[0]" * (MAX_NESTING - 1)
        ]

    def test_an_object_key_that_cannot_be_stored_is_refused_with_an_escaped_path(self):
        """An attribute key holding a lone surrogate is named in a path that is valid text."""
        doc = to_dict(order())
        doc["attributes"] = {"\ud800": 1}
        (path,) = refused(doc)
        assert path == "$.attributes['\\ud800']"
        path.encode()

    def test_text_from_json_is_checked_after_unescaping(self):
        """An escaped NUL (backslash, u0000) in JSON text is the NUL it stands for, and refused."""
        text = to_json(order()).replace('"cust-4711"', '"cust\\u0000"')
        with pytest.raises(ValidationError, match="NUL character"):
            from_json(text)


class TestFromV2Response:
    """Reading the CustomerSessionV2 of a response."""

    def test_sample_response(self):
        """The domain reference's response loads, codes and counts mapped."""
        session = from_v2_response(load("session_v2_response.json"))
        assert session.state is State.PARTIALLY_RETURNED
        assert session.coupon == "WELCOME10"
        assert session.update_count == 4
        assert session.cart_items[0].returned_quantity == 1
        assert session.total == pytest.approx(27.4)
        assert session.history == ()

    def test_unknown_keys_are_ignored(self):
        """Keys newer API versions add are ignored, and unmodelled ones dropped."""
        doc = load("session_v2_response.json")
        doc.update(
            cartItemAdditionalCostTotal=0, storeIntegrationId="store-1", somethingNew={"a": 1}
        )
        assert from_v2_response(doc) == from_v2_response(load("session_v2_response.json"))

    def test_unmodelled_keys_are_still_type_checked(self):
        """Known keys the session does not keep must still have their documented types."""
        doc = load("session_v2_response.json")
        doc.update(id="9120", loyaltyCards=["a", "b"])
        problems = refused(doc, from_v2_response)
        assert problems.keys() == {"$.id", "$.loyaltyCards"}
        assert problems["$.loyaltyCards"] == "2 entries; at most 1 is allowed"

    def test_a_cart_without_returned_quantities_after_a_return_says_why(self):
        """A returned session whose cart has no returnedQuantity at all is refused with a hint.

        The Talon.One SDK's to_dict() leaves read-only fields out: the hint says so.
        """
        doc = load("session_v2_response.json")
        for item in doc["cartItems"]:
            del item["returnedQuantity"]
            item.pop("remainingQuantity", None)
        with pytest.raises(ValidationError) as caught:
            from_v2_response(doc)
        messages = [p.message for p in caught.value.problems if p.path == "$.cartItems"]
        assert len(messages) == 2
        assert "no unit is returned" in messages[0]
        assert "SDK's to_dict(), which leaves read-only fields out" in messages[1]

    def test_a_cart_that_returned_nothing_gets_no_hint(self):
        """Where the cart says how many units came back (none), no hint is added."""
        doc = load("session_v2_response.json")
        for item in doc["cartItems"]:
            item["returnedQuantity"] = 0
            item.pop("remainingQuantity", None)
        message = refused(doc, from_v2_response)["$.cartItems"]
        assert "no unit is returned" in message
        assert "to_dict()" not in message

    def test_empty_codes_are_no_code_or_refused(self):
        """``referralCode: ""`` is no referral; ``couponCodes: [""]`` is refused at its entry."""
        doc = load("session_v2_response.json")
        doc["referralCode"] = ""
        assert from_v2_response(doc).referral is None
        doc["couponCodes"] = [""]
        assert refused(doc, from_v2_response).keys() == {"$.couponCodes[0]"}

    def test_referral_code_becomes_referral(self):
        """``referralCode`` becomes the session's referral."""
        doc = load("session_v2_response.json")
        doc["referralCode"] = "FRIEND-1"
        assert from_v2_response(doc).referral == "FRIEND-1"

    def test_sub_totals_are_checked(self):
        """total, cartItemTotal and additionalCostTotal must agree with the cart."""
        doc = load("session_v2_response.json")
        doc.update(total=30.0, cartItemTotal=20.0, additionalCostTotal=5.0)
        assert refused(doc, from_v2_response).keys() == {
            "$.total",
            "$.cartItemTotal",
            "$.additionalCostTotal",
        }

    def test_more_than_one_coupon_is_refused(self):
        """Two coupon codes cannot be held by one session, so they are refused, not dropped."""
        doc = load("session_v2_response.json")
        doc["couponCodes"] = ["WELCOME10", "SPRING5"]
        assert refused(doc, from_v2_response).keys() == {"$.couponCodes"}

    def test_required_keys(self):
        """The response's required keys are required."""
        problems = refused({"integrationId": "order-1"}, from_v2_response)
        assert problems.keys() == {
            "$.id",
            "$.created",
            "$.applicationId",
            "$.firstSession",
            "$.updateCount",
            "$.total",
            "$.cartItemTotal",
            "$.additionalCostTotal",
            "$.updated",
        }

    def test_model_problems_use_v2_keys(self):
        """A model problem about the coupon is reported at couponCodes."""
        doc = load("session_v2_response.json")
        doc["couponCodes"] = ["x" * 101]
        assert refused(doc, from_v2_response).keys() == {"$.couponCodes[0]"}


class TestArguments:
    @pytest.mark.parametrize("session_class", [dict, 5, None], ids=["dict", "number", "None"])
    @pytest.mark.parametrize(
        ("reader", "document"),
        [(from_dict, "session_v1.json"), (from_v2_response, "session_v2_response.json")],
        ids=["v1", "v2"],
    )
    def test_a_session_class_that_is_none_is_refused(self, reader, document, session_class):
        """A session_class that is no CustomerSession class is a WorkflowError, not a crash."""
        with pytest.raises(WorkflowError, match="session_class must be a CustomerSession class"):
            reader(load(document), session_class=session_class)

    @pytest.mark.parametrize("path", ["", 7, None], ids=["empty", "number", "None"])
    @pytest.mark.parametrize(
        "reader", [new_session_fields, returned_items_from_json], ids=["session", "return"]
    )
    def test_a_path_that_is_no_json_path_is_refused(self, reader, path):
        """A path= that is no non-empty text is a ValidationError naming the argument."""
        with pytest.raises(ValidationError) as caught:
            reader({}, path=path)
        assert [p.path for p in caught.value.problems] == ["path"]


class TestNothingButValidationError:
    """No input makes a reader raise anything but ValidationError."""

    @given(JSON_VALUES | st.dictionaries(V1_KEYS, JSON_VALUES))
    def test_arbitrary_json_values(self, value):
        """Arbitrary JSON values are loaded or refused with ValidationError, nothing else."""
        for reader in (from_dict, from_v2_response, new_session_fields, returned_items_from_json):
            problems = outcome(reader, value)
            assert all(p.path.startswith("$") for p in problems)

    def test_a_document_whose_id_cannot_be_read(self):
        """A document that raises when its integrationId is read is refused, by both readers."""

        class Broken(dict):
            def get(self, key, default=None):
                raise OSError("gone")

            def __getitem__(self, key):
                raise OSError("gone")

        for reader in (from_dict, from_v2_response):
            assert outcome(reader, Broken(to_dict(order())))

    @given(JSON_VALUES)
    def test_arbitrary_json_text(self, value):
        """Arbitrary JSON text (NaN included) is loaded or refused with ValidationError."""
        outcome(from_json, json.dumps(value))

    @given(wire_documents(valid=False))
    def test_broken_documents_are_refused(self, doc):
        """Every document with a certain defect is refused with ValidationError."""
        with pytest.raises(ValidationError):
            from_dict(doc)

    @given(wire_documents(), st.data())
    def test_mutated_documents(self, doc, data):
        """A valid document with any one value replaced loads or is refused, nothing else."""
        mutated = copy.deepcopy(doc)
        target, key = _pick_slot(mutated, data)
        if key is None:
            mutated = data.draw(JSON_VALUES)
        elif data.draw(st.booleans()):
            target[key] = data.draw(JSON_VALUES)
        elif isinstance(target, dict):
            del target[key]
        else:
            target.pop(key)
        outcome(from_dict, mutated)


def outcome(reader: Any, data: object) -> tuple[Problem, ...]:
    """The problems ``reader`` refuses ``data`` with (none when it loads it).

    Any exception but ValidationError propagates and fails the test; a
    ValidationError must list at least one problem.
    """
    try:
        reader(data)
    except ValidationError as error:
        problems = error.problems
        if not problems:
            pytest.fail(f"{reader.__name__} raised a ValidationError without problems")
        return problems
    return ()


def _pick_slot(doc: Any, data: st.DataObject) -> tuple[Any, Any]:
    """A container in ``doc`` and one of its keys (``(doc, None)`` for the root)."""
    slots: list[tuple[Any, Any]] = [(doc, None)]
    stack = [doc]
    while stack:
        node = stack.pop()
        keys = (
            list(node)
            if isinstance(node, dict)
            else range(len(node))
            if isinstance(node, list)
            else []
        )
        for key in keys:
            slots.append((node, key))
            stack.append(node[key])
    return data.draw(st.sampled_from(slots))
