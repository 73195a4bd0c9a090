"""Drive a few sessions through their lifecycle and print their histories.

Run: ``python examples/lifecycle.py``
"""

from __future__ import annotations

from customer_session import (
    CartItem,
    CustomerSession,
    GuardRejected,
    IllegalTransition,
    ReturnedItem,
    TransitionEvent,
    Trigger,
    Workflow,
)

checkout = Workflow(name="examples.checkout")


@checkout.guard(trigger=Trigger.CLOSE)
def cart_not_empty(event: TransitionEvent) -> str | None:
    """An order needs something in the cart."""
    return None if event.session.cart_items else "the cart is empty"


@checkout.after_commit(trigger=Trigger.CLOSE)
def confirm(event: TransitionEvent) -> None:
    """Stand-in for an e-mail: runs only once the close has committed."""
    print(f"  (confirmation sent for {event.session.integration_id})")


def main() -> None:
    """Three orders: returned then cancelled, an empty cart, a session started closed."""
    socks = CartItem(sku="SOCK-TR-42", name="Trail Sock", quantity=3, price=7.5)
    jacket = CartItem(sku="JKT-RN-M", name="Rain Jacket", quantity=1, price=129.0)

    order = CustomerSession(
        integration_id="order-42", profile_id="cust-7", cart_items=[socks], workflow=checkout
    )
    order.add_item(jacket)
    order.set_coupon("WELCOME10")
    order.close()
    order.return_items([ReturnedItem(position=0, quantity=1)])
    order.return_items([ReturnedItem(position=1, quantity=1)])
    order.cancel()
    try:
        order.close()
    except IllegalTransition as error:
        print(f"refused: {error}")

    empty = CustomerSession(integration_id="order-43", workflow=checkout)
    try:
        empty.close()
    except GuardRejected as error:
        print(f"refused: {error}")

    legacy = CustomerSession(integration_id="order-44", state="closed", workflow=checkout)
    legacy.cancel()

    for session in (order, empty, legacy):
        print(f"\n{session.integration_id}: {session.state} (total {session.total:.2f})")
        for record in session.history:
            returned = f" {len(record.returned_items)} item(s)" if record.returned_items else ""
            print(
                f"  {record.timestamp:%H:%M:%S} {record.trigger}{returned}: "
                f"{record.source} -> {record.destination}"
            )


if __name__ == "__main__":
    main()
