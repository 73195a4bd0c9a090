"""Cart items and the return bookkeeping of ``customer_session._cart``."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

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
        session = CustomerSession(integration_id="o", cart_items=[item], state=State.CLOSED)
        session.return_items([ReturnedItem(position=0, quantity=3)])
        after = session.cart_items[0]
        assert after.returned_quantity == 4
        assert attrs.evolve(after, returned_quantity=1) == item
        assert item.returned_quantity == 1  # the original item is untouched


BAD_TEXTS = [
    pytest.param("A\x00B", "NUL character", id="nul"),
    pytest.param("\ud800", "lone surrogate", id="surrogate"),
]


class TestStorableValues:
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
