"""Cart items and the return bookkeeping of ``customer_session._cart``."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from immutabledict import immutabledict

from customer_session import (
    AdditionalCost,
    CartItem,
    CustomerSession,
    PriceDetail,
    Product,
    ReturnedItem,
    State,
    ValidationError,
)
from customer_session._cart import (
    MAX_NESTING,
    MAX_UNITS,
    Unreadable,
    freeze,
    is_text,
    one_line,
    read_entries,
    same,
    storable,
    thaw,
)
from customer_session.testing import json_values

from .conftest import BEYOND_UTC_TIMES, BROKEN_ZONE_TIMES


def _item_with_every_field() -> CartItem:
    moment = datetime(2026, 3, 2, 12, tzinfo=UTC)
    return CartItem(
        sku="SOCK-42",
        quantity=5,
        name="Sock",
        price=7.5,
        category="clothing",
        product=Product("socks"),
        weight=0.1,
        height=1.0,
        width=2.0,
        length=3.0,
        attributes={"colour": "red"},
        additional_costs={"wrap": AdditionalCost(1.0)},
        returned_quantity=1,
        catalog_item_id=7,
        selected_price_type="member",
        adjustment_reference_id="1b7e0bb3-5a0e-4d5f-9c8e-7a4f2a9f3c11",
        adjustment_effective_from=moment,
        adjustment_effective_until=moment,
        prices={"member": PriceDetail(price=7.0)},
    )


class TestReturnBookkeeping:
    def test_the_fixture_sets_every_field(self):
        """The fixture item differs from the defaults in every field (so copies are checked)."""
        item = _item_with_every_field()
        defaults = CartItem(sku="other", quantity=1)
        for a in attrs.fields(CartItem):
            assert getattr(item, a.name) != getattr(defaults, a.name), a.alias

    def test_a_return_copies_every_other_field(self):
        """A return changes only returned_quantity; every other field is kept."""
        item = _item_with_every_field()
        # A unit is returned already, so the session is loaded where a return leads.
        session = CustomerSession.restore(
            integration_id="o", cart_items=[item], state=State.PARTIALLY_RETURNED
        )
        session.return_items([ReturnedItem(position=0, quantity=3)])
        after = session.cart_items[0]
        assert after.returned_quantity == 4
        assert attrs.evolve(after, returned_quantity=1) == item
        assert item.returned_quantity == 1  # the original item is untouched

    def test_more_returned_units_than_ordered_are_refused(self):
        """An item with one unit more returned than ordered is refused at returned_quantity."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=2, returned_quantity=3)
        assert [p.path for p in error.value.problems] == ["returned_quantity"]

    def test_a_return_just_past_the_cart_is_refused(self):
        """A return at the position right after the last item names the position."""
        session = _returnable(CartItem(sku="A", quantity=1))
        with pytest.raises(ValidationError) as error:
            session.return_items([ReturnedItem(position=1, quantity=1)])
        assert [str(p) for p in error.value.problems] == [
            "items[0].position: no cart item at position 1 (the cart has 1)"
        ]

    def test_a_wrong_sku_is_the_only_problem_of_a_return_of_every_unit(self):
        """Returning every remaining unit under another SKU is refused for the SKU alone."""
        session = _returnable(CartItem(sku="A", quantity=2, returned_quantity=1))
        with pytest.raises(ValidationError) as error:
            session.return_items([ReturnedItem(position=0, quantity=1, sku="B")])
        assert [p.path for p in error.value.problems] == ["items[0].sku"]


def _returnable(*cart: CartItem) -> CustomerSession:
    """A session that takes returns holding ``cart``: partially returned if a unit came back."""
    returned = any(line.returned_quantity for line in cart)
    state = State.PARTIALLY_RETURNED if returned else State.CLOSED
    return CustomerSession.restore(integration_id="o", cart_items=cart, state=state)


class TestFreeze:
    def test_arrays_become_tuples_and_objects_immutable_mappings(self):
        """freeze() turns every list into a tuple and every dict into an immutabledict."""
        frozen = freeze({"tags": ["vip", {"since": [2024]}], "address": {"lines": ["1 Main St"]}})
        assert frozen == {"tags": ("vip", {"since": (2024,)}), "address": {"lines": ("1 Main St",)}}
        assert isinstance(frozen, immutabledict)
        assert isinstance(frozen["tags"][1], immutabledict)

    def test_callers_containers_are_copied(self):
        """Changing the value given to freeze() afterwards changes nothing frozen."""
        given_value = {"tags": ["vip"], "inner": {"n": [1]}}
        frozen = freeze(given_value)
        given_value["tags"].append("x")
        given_value["inner"]["n"].append(2)
        assert frozen == {"tags": ("vip",), "inner": {"n": (1,)}}

    def test_frozen_value_is_returned_as_it_is(self):
        """Freezing a frozen value gives the same object back, without a copy."""
        frozen = freeze({"tags": ["vip", {"a": [1]}], "n": 1})
        assert freeze(frozen) is frozen
        assert freeze(frozen["tags"]) is frozen["tags"]

    def test_tuple_holding_a_list_is_copied(self):
        """A tuple is kept only when everything in it is frozen already."""
        assert freeze(("a", ["b"], ("c", ["d"]))) == ("a", ("b",), ("c", ("d",)))

    @pytest.mark.parametrize(
        "make",
        [
            lambda f: f.set("more", ["x"]),
            lambda f: f | {"more": ["x"]},
            lambda f: f.update({"more": ["x"]}),
            lambda f: type(f)(f, more=["x"]),
            lambda f: pickle.loads(pickle.dumps(f.set("more", ["x"]))),  # noqa: S301 - our own data
        ],
        ids=["set", "or", "update", "constructor", "pickle"],
    )
    def test_frozen_mapping_stays_frozen_however_it_is_made(self, make):
        """Mappings derived from a frozen one freeze what is added to them."""
        derived = make(freeze({"tags": ["vip"]}))
        assert derived["more"] == ("x",)
        assert freeze(derived) is derived

    def test_values_that_are_not_json_are_left_for_validation(self):
        """freeze() keeps what is not JSON as it is, for the validation to name."""
        odd = {1, 2}
        assert freeze({"odd": odd})["odd"] is odd

    def test_empty_mappings_are_the_one_empty_mapping(self):
        """An empty object freezes to the shared empty mapping (the quick checks test it)."""
        assert freeze({}) is freeze(immutabledict()) is CartItem(sku="A", quantity=1).attributes

    @given(json_values())
    def test_thaw_undoes_freeze(self, value):
        """thaw(freeze(v)) is v again, as plain lists and dicts."""
        assert thaw(freeze(value)) == value
        assert freeze(thaw(freeze(value))) == freeze(value)

    def test_thaw_shares_nothing(self):
        """What thaw() returns can be changed without changing the frozen value."""
        frozen = freeze({"tags": ["vip"]})
        plain = thaw(frozen)
        plain["tags"].append("x")
        assert frozen == {"tags": ("vip",)}


class TestSame:
    @given(json_values())
    def test_a_value_is_the_same_as_its_frozen_copy(self, value):
        """A JSON value and its frozen copy are the same, as are two frozen copies."""
        assert same(freeze(value), freeze(thaw(freeze(value))))

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (1, True),
            (1, 1.0),
            (0.0, -0.0),
            ({"a": [1]}, {"a": [1.0]}),
            ((1,), [1]),
            ({"a": 1}, {"a": 1, "b": 2}),
            ({"a": None}, {"b": None}),
            (CartItem(sku="A", quantity=1, price=5.0), CartItem(sku="A", quantity=1, price=5)),
        ],
        ids=[
            "bool",
            "float",
            "negative-zero",
            "nested",
            "tuple-list",
            "keys",
            "other-key",
            "cart-item",
        ],
    )
    def test_equal_values_of_other_types_differ(self, first, second):
        """Values == calls equal but written differently in JSON are not the same."""
        assert not same(first, second)
        assert not same(second, first)

    def test_key_order_does_not_matter(self):
        """Two objects with the same members in another order are the same."""
        assert same({"a": 1, "b": 2}, {"b": 2, "a": 1})


class TestItemAttributes:
    def test_item_attributes_are_frozen_copies(self):
        """A cart item keeps a frozen copy of its attributes; the caller's dict can change."""
        given_value = {"options": ["red"]}
        item = CartItem(sku="A", quantity=1, attributes=given_value)
        given_value["options"].append("blue")
        assert item.attributes == {"options": ("red",)}

    def test_item_with_nested_attributes_is_hashable(self):
        """Frozen attributes make any valid cart item hashable."""
        item = CartItem(sku="A", quantity=1, attributes={"options": ["red"], "size": {"eu": 42}})
        assert hash(item) == hash(attrs.evolve(item))

    def test_attributes_may_nest_up_to_the_limit(self):
        """Attributes nested MAX_NESTING levels deep (the mapping itself included) are kept."""
        item = CartItem(sku="A", quantity=1, attributes={"a": nested(MAX_NESTING - 1)})
        assert thaw(item.attributes) == {"a": nested(MAX_NESTING - 1)}

    @pytest.mark.parametrize("depth", [MAX_NESTING, 5_000])
    def test_attributes_nested_deeper_are_refused(self, depth):
        """Deeper attributes are a ValidationError at the level too deep, never a RecursionError."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=1, attributes={"a": nested(depth)})
        (problem,) = error.value.problems
        assert problem.path == "attributes.a" + "[0]" * (MAX_NESTING - 1)
        assert f"more than {MAX_NESTING} levels" in problem.message

    def test_a_key_with_a_control_character_is_escaped_in_the_path(self):
        """A key holding a terminal escape sequence is shown escaped in a path, never raw."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=1, attributes={"a\x1b]0;x\x07\u202e": float("nan")})
        (problem,) = error.value.problems
        assert problem.path == "attributes['a\\x1b]0;x\\x07\\u202e']"

    def test_attributes_that_are_not_a_mapping_are_refused(self):
        """An empty list is refused as attributes, not taken as no attributes."""
        with pytest.raises(ValidationError, match="attributes: must be a mapping"):
            CartItem(sku="A", quantity=1, attributes=[])  # type: ignore[arg-type]


# What holds adjustment times: a cart item and a price detail, each built with one.
_ADJUSTED = [
    pytest.param(lambda **time: CartItem(sku="A", quantity=1, **time), id="item"),
    pytest.param(lambda **time: PriceDetail(price=1.0, **time), id="price-detail"),
]


class TestAdjustmentTimes:
    @pytest.mark.parametrize("build", _ADJUSTED)
    @pytest.mark.parametrize("field", ["adjustment_effective_from", "adjustment_effective_until"])
    @pytest.mark.parametrize("moment", BEYOND_UTC_TIMES)
    def test_a_time_that_utc_cannot_hold_is_refused_by_name(self, build, field, moment):
        """An adjustment time outside the years 1 to 9999 once in UTC is refused at its field."""
        with pytest.raises(ValidationError) as error:
            build(**{field: moment})
        (problem,) = error.value.problems
        assert problem.path == field
        assert "within the years 1 to 9999 in UTC" in problem.message

    @pytest.mark.parametrize("build", _ADJUSTED)
    @pytest.mark.parametrize("field", ["adjustment_effective_from", "adjustment_effective_until"])
    @pytest.mark.parametrize("moment", BROKEN_ZONE_TIMES)
    def test_a_time_whose_zone_fails_is_refused_by_name(self, build, field, moment):
        """An adjustment time whose time zone fails is refused at its field as a naive one is."""
        with pytest.raises(ValidationError) as error:
            build(**{field: moment})
        (problem,) = error.value.problems
        assert problem.path == field
        assert "must be an aware datetime" in problem.message

    def test_an_item_time_at_an_offset_is_kept_as_given(self):
        """An item's time at another offset, in range in UTC, is kept with its offset."""
        moment = datetime(1, 1, 1, 3, tzinfo=timezone(timedelta(hours=2, minutes=45)))
        item = CartItem(sku="A", quantity=1, adjustment_effective_from=moment)
        assert item.adjustment_effective_from == moment
        assert item.adjustment_effective_from.utcoffset() == moment.utcoffset()


def nested(depth: int) -> list[object]:
    """An array ``depth`` levels deep: ``nested(1) == []``, ``nested(2) == [[]]``."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_TEXTS = [
    pytest.param("A\x00B", "NUL character", id="nul"),
    pytest.param("\ud800", "lone surrogate", id="surrogate"),
]


class TestStorableValues:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [("plain", "plain"), ("a\x00b", "a\\x00b"), ("\ud800!", "\\ud800!")],
    )
    def test_storable_escapes_what_text_may_not_hold(self, text, shown):
        """storable() writes NUL and lone surrogates as escapes and leaves the rest."""
        assert storable(text) == shown
        assert is_text(storable(text))

    @pytest.mark.parametrize(
        "label",
        [" ", "\u3000", "a\tb", "a\x7fb", "a\x85b", "a\x9bb", "\ud800", "", "x" * 11],
        ids=[
            "space",
            "ideographic-space",
            "tab",
            "del",
            "c1-nel",
            "c1-csi",
            "surrogate",
            "empty",
            "long",
        ],
    )
    def test_a_label_that_does_not_show_on_one_line_is_refused(self, label):
        """one_line() refuses blank text, C0 and C1 controls, DEL, a lone surrogate, and length."""
        assert one_line("label ok", 10)
        assert not one_line(label, 10)

    def test_an_integer_price_too_large_for_a_float_is_refused(self):
        """A price of 400 digits is a ValidationError naming the price, not an OverflowError."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=1, price=10**400)
        assert [p.path for p in error.value.problems] == ["price"]
        assert "too large for a float" in error.value.problems[0].message

    @pytest.mark.parametrize("price", [1e308, 10**308])
    def test_a_line_value_beyond_a_float_is_refused(self, price):
        """A finite price whose line value (price x quantity) overflows is refused at the price."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=2, price=price)
        assert [p.path for p in error.value.problems] == ["price"]
        assert "more than a float can hold" in error.value.problems[0].message

    def test_item_costs_that_overflow_the_line_are_refused(self):
        """A line whose price plus its own additional costs overflows is refused at the costs."""
        with pytest.raises(ValidationError) as error:
            CartItem(
                sku="A", quantity=1, price=1e308, additional_costs={"wrap": AdditionalCost(1e308)}
            )
        assert [p.path for p in error.value.problems] == ["additional_costs"]

    @pytest.mark.parametrize(("text", "fragment"), BAD_TEXTS)
    @pytest.mark.parametrize(
        ("field", "path"),
        [
            ("sku", "sku"),
            ("name", "name"),
            ("category", "category"),
            ("selected_price_type", "selected_price_type"),
            ("attributes", "attributes.colour"),
        ],
    )
    def test_text_that_cannot_be_stored_is_refused(self, field, path, text, fragment):
        """A NUL or a lone surrogate in any text of an item is refused with the field's path."""
        value = {"colour": text} if field == "attributes" else text
        with pytest.raises(ValidationError) as error:
            CartItem(**{"sku": "A", "quantity": 1, field: value})
        (problem,) = error.value.problems
        assert problem.path == path
        assert fragment in problem.message

    @pytest.mark.parametrize(("text", "fragment"), BAD_TEXTS)
    def test_an_attribute_key_that_cannot_be_stored_is_refused(self, text, fragment):
        """An attribute key with a NUL or a lone surrogate is refused, its path escaped."""
        with pytest.raises(ValidationError) as error:
            CartItem(sku="A", quantity=1, attributes={text: 1})
        (problem,) = error.value.problems
        assert problem.path == f"attributes[{text!r}]"
        assert fragment in problem.message
        problem.path.encode()  # the path itself is valid text, so a report can print it

    @pytest.mark.parametrize(("text", "fragment"), BAD_TEXTS)
    def test_a_returned_sku_or_product_name_that_cannot_be_stored_is_refused(self, text, fragment):
        """The rule holds for the other value classes' text too."""
        for build in (
            lambda: ReturnedItem(position=0, quantity=1, sku=text),
            lambda: Product(text),
        ):
            with pytest.raises(ValidationError, match=fragment):
                build()


class TestIntegerBounds:
    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"quantity": 2**63}, "quantity"),
            ({"quantity": 10**5000}, "quantity"),
            ({"quantity": -(10**5000)}, "quantity"),
            ({"quantity": 2**1024, "price": 1.0}, "quantity"),
            ({"quantity": 1, "returned_quantity": 10**5000}, "returned_quantity"),
            ({"quantity": 1, "catalog_item_id": 10**5000}, "catalog_item_id"),
        ],
        ids=["2**63", "10**5000", "-10**5000", "2**1024 priced", "returned", "catalog id"],
    )
    def test_cart_item_integers_are_64_bits(self, fields, path):
        """A cart item integer beyond 64 bits is a ValidationError naming the field."""
        with pytest.raises(ValidationError) as info:
            CartItem(sku="A", **fields)
        assert [p.path for p in info.value.problems] == [path]
        assert "bits" in str(info.value)

    @pytest.mark.parametrize("field", ["position", "quantity"])
    @pytest.mark.parametrize("value", [10**5000, -(10**5000)], ids=["huge", "-huge"])
    def test_returned_item_integers_are_64_bits(self, field, value):
        """A returned item position or quantity beyond 64 bits is a ValidationError."""
        values = {"position": 0, "quantity": 1, field: value}
        with pytest.raises(ValidationError) as info:
            ReturnedItem(**values)
        assert [p.path for p in info.value.problems] == [field]

    def test_the_largest_quantity_is_an_integer_of_64_bits(self):
        """2**63 - 1 units are a valid cart item on their own (the session limits the cart)."""
        assert CartItem(sku="A", quantity=2**63 - 1, price=1.0).line_total == float(2**63 - 1)


class TestCartLimits:
    @pytest.mark.parametrize("returned", [0, 1], ids=["new", "returned"])
    def test_a_cart_may_hold_the_most_units(self, returned):
        """A session's cart may hold exactly MAX_UNITS units, some of them returned or not."""
        item = CartItem(sku="A", quantity=MAX_UNITS, returned_quantity=returned)
        assert _returnable(item).cart_items == (item,)


class TestAdditionalCosts:
    def test_a_key_that_is_not_a_string_is_named(self):
        """An additional cost keyed by a non-string is reported as a key problem."""
        with pytest.raises(ValidationError) as info:
            CartItem(sku="A", quantity=1, additional_costs={1: AdditionalCost(2.0)})  # type: ignore[dict-item]
        assert [str(p) for p in info.value.problems] == ["additional_costs: key 1 is not a string"]

    def test_a_value_that_is_not_a_cost_is_named(self):
        """An additional cost that is not an AdditionalCost is reported at its name."""
        with pytest.raises(ValidationError) as info:
            CartItem(sku="A", quantity=1, additional_costs={"wrap": 2.0})  # type: ignore[dict-item]
        assert [str(p) for p in info.value.problems] == [
            "additional_costs.wrap: must be an AdditionalCost, got 2.0"
        ]


def _failing_after_one():
    yield 1
    raise OSError("gone")


class TestReadEntries:
    def test_an_iterable_is_read_into_a_tuple(self):
        """The entries of an iterable that reads are returned as a tuple, in order."""
        assert read_entries(iter([3, 1, 2])) == (3, 1, 2)

    def test_an_iterable_that_raises_gives_its_error(self):
        """An iterable that raises part-way gives an Unreadable holding that error."""
        read = read_entries(_failing_after_one())
        assert isinstance(read, Unreadable)
        assert isinstance(read.error, OSError)
        assert repr(read) == "an iterable that cannot be read (OSError: gone)"
