"""Typed usage of the public API; CI type-checks this file with mypy --strict."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import assert_type

import attrs

from customer_session import (
    CartItem,
    CustomerSession,
    GuardRejected,
    IllegalTransition,
    JSONValue,
    Problem,
    Refusal,
    Registration,
    ReopenableCustomerSession,
    ReturnedItem,
    State,
    TransitionEvent,
    TransitionRecord,
    Trigger,
    UnknownTrigger,
    ValidationError,
    Workflow,
)

workflow = Workflow(clock=lambda: datetime(2026, 3, 2, tzinfo=UTC))


@workflow.guard(trigger=Trigger.CLOSE)
def cart_not_empty(event: TransitionEvent) -> str | None:
    """Refuse to close an empty cart."""
    return None if event.session.cart_items else "the cart is empty"


def audit(event: TransitionEvent) -> None:
    """Print every committed transition."""
    print(event.trigger, event.source, "->", event.destination)  # noqa: T201


registration: Registration = workflow.after_commit(audit)

session = CustomerSession(
    integration_id="order-42",
    profile_id="cust-7",
    cart_items=[CartItem(sku="SOCK-42", quantity=2, price=7.5)],
    workflow=workflow,
)
state: State = session.state
allowed: frozenset[Trigger] = session.allowed_triggers
reasons: tuple[Refusal, ...] = session.why_not(Trigger.CLOSE)
closed: TransitionRecord = session.close()
returned: TransitionRecord = session.return_items([ReturnedItem(position=0, quantity=1)])
total: float = session.total
try:
    session.close()
except IllegalTransition as error:
    current: State = error.state
    options: frozenset[Trigger] = error.allowed
except GuardRejected as error:
    reason: str = error.reason
registration.remove()

reopenable = ReopenableCustomerSession(integration_id="order-43", state=State.CLOSED)
reopened: TransitionRecord = reopenable.reopen()
restored: CustomerSession = CustomerSession.restore(integration_id="o", state="cancelled")


# Guards and hooks of the wrong shape are flagged where they are registered.
workflow.guard(lambda event: True, trigger="cancel")  # type: ignore[call-overload] # a bool, not a reason


@workflow.guard(trigger=Trigger.CANCEL)  # type: ignore[type-var] # a bool, not a reason
def boolean_guard(event: TransitionEvent) -> bool:
    """Return a bool where a reason or None is expected."""
    return event.session.total > 0


@workflow.after_commit  # type: ignore[call-overload] # a hook receives the event
def no_event() -> None:
    """Take no event."""


printed: Registration = workflow.on_enter(print, state=State.CLOSED)


# Constructors take the argument names, not the private slots' (pyright reads the
# fields' aliases; mypy's attrs plugin strips the underscore).
item = CartItem(sku="SOCK-42", quantity=2, price=7.5, attributes={"sizes": [42, "EU"]})
assert_type(item.attributes, Mapping[str, JSONValue])
assert_type(session.attributes, Mapping[str, JSONValue])
record = TransitionRecord(
    trigger=Trigger.CLOSE,
    source=State.OPEN,
    destination=State.CLOSED,
    timestamp=datetime(2026, 3, 2, tzinfo=UTC),
)


@attrs.define(kw_only=True, repr=False, on_setattr=attrs.setters.NO_OP)
class GiftSession(CustomerSession):
    """A subclass whose attrs-generated __init__ takes the parent's arguments by name."""

    gift_note: str = ""


gift = GiftSession(integration_id="order-44", cart_items=(item,), gift_note="Happy birthday")
# A subclass's own fields are no SessionFields: it restores from a snapshot's dict.
assert_type(GiftSession.restore(**gift.snapshot()), GiftSession)
assert_type(
    ReopenableCustomerSession.restore(integration_id="o", state="closed"), ReopenableCustomerSession
)


def refused_arguments() -> None:
    """Arguments both checkers refuse (never called: pytest imports this file)."""
    CartItem(_sku="SOCK-42", quantity=1)  # type: ignore[call-arg] # a slot, not an argument
    GiftSession(integration_id=44)  # type: ignore[arg-type] # an id is a string
    # A JSON value is checked all the way down (the alias was Unknown to pyright).
    CustomerSession(integration_id="o", attributes={"at": [datetime.now(UTC)]})  # type: ignore[list-item] # not JSON
    # restore() takes the constructor's arguments and its own, each with its type.
    CustomerSession.restore(integration_id="o", state="closed", cupon="X")  # type: ignore[call-arg] # misspelled
    CustomerSession.restore(integration_id="o", state="closed", coupon=10)  # type: ignore[arg-type] # a str
    ReopenableCustomerSession.restore(integration_id="o", stat="closed")  # type: ignore[call-arg] # misspelled


# Errors' attributes are declared, so every checker reads the same types.
try:
    session.fire("reopen")
except UnknownTrigger as error:
    assert_type(error.known, tuple[str, ...])
    assert_type(error.trigger, object)
except ValidationError as error:
    assert_type(error.problems, tuple[Problem, ...])
    assert_type(error.subject, str)
