"""Cart items and the return bookkeeping of ``customer_session._cart``."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from customer_session import (
    AdditionalCost,
    CartItem,
    CustomerSession,
    PriceDetail,
    Product,
    ReturnedItem,
    State,
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
