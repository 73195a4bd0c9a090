"""Hypothesis strategies for testing code built on customer-session.

Install with ``pip install customer-session[testing]``. The library's own test
suite uses these same strategies, so they are tested by real use.

Every strategy shrinks towards small, readable examples: short SKUs, quantity 1,
empty carts, short trigger sequences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from hypothesis import strategies as st

from customer_session._cart import CartItem, ReturnedItem
from customer_session._spec import CUSTOMER_SESSION, Specification, State, Trigger
from customer_session.model import CustomerSession

if TYPE_CHECKING:
    from customer_session.hooks import Workflow

_S = TypeVar("_S", bound=CustomerSession)

__all__ = [
    "cart_items",
    "carts",
    "integration_ids",
    "returned_items",
    "sessions",
    "trigger_sequences",
    "triggers",
]

_SKU_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-"


def integration_ids() -> st.SearchStrategy[str]:
    """Integration ids such as ``order-17``."""
    return st.integers(min_value=0, max_value=10**9).map(lambda n: f"order-{n}")


def cart_items(
    *, max_quantity: int = 5, with_price: bool | None = None
) -> st.SearchStrategy[CartItem]:
    """Valid cart items; shrinks to ``CartItem(sku="A", quantity=1)``.

    Args:
        max_quantity: The largest quantity drawn.
        with_price: ``True`` always sets a price, ``False`` never, ``None`` either.
    """
    prices: st.SearchStrategy[float | None] = st.integers(min_value=0, max_value=100_000).map(
        lambda cents: cents / 100
    )
    if with_price is None:
        prices = st.none() | prices
    elif not with_price:
        prices = st.none()
    return st.builds(
        CartItem,
        sku=st.text(_SKU_ALPHABET, min_size=1, max_size=12),
        quantity=st.integers(min_value=1, max_value=max_quantity),
        price=prices,
        name=st.none() | st.text(max_size=20),
        category=st.none() | st.sampled_from(["socks", "shoes", "jackets", "gift cards"]),
    )


def carts(
    *, min_size: int = 0, max_size: int = 5, max_quantity: int = 5
) -> st.SearchStrategy[tuple[CartItem, ...]]:
    """Valid carts (tuples of cart items) within the API's limits."""
    return st.lists(
        cart_items(max_quantity=max_quantity), min_size=min_size, max_size=max_size
    ).map(tuple)


def returned_items(session: CustomerSession) -> st.SearchStrategy[tuple[ReturnedItem, ...]]:
    """Valid returns for ``session``'s cart: distinct positions, units that remain.

    Raises:
        ValueError: Nothing in the cart can be returned any more.
    """
    open_positions = [i for i, line in enumerate(session.cart_items) if line.remaining_quantity]
    if not open_positions:
        msg = f"session {session.integration_id!r} has no units left to return"
        raise ValueError(msg)

    @st.composite
    def draw_return(draw: st.DrawFn) -> tuple[ReturnedItem, ...]:
        positions = draw(
            st.lists(st.sampled_from(open_positions), min_size=1, unique=True, max_size=5)
        )
        return tuple(
            ReturnedItem(
                position=p,
                quantity=draw(
                    st.integers(min_value=1, max_value=session.cart_items[p].remaining_quantity)
                ),
            )
            for p in sorted(positions)
        )

    return draw_return()


def triggers(specification: Specification = CUSTOMER_SESSION) -> st.SearchStrategy[Trigger]:
    """Any trigger of ``specification`` (legal or not in a given state)."""
    return st.sampled_from(specification.triggers)


def trigger_sequences(
    *,
    legal_only: bool = False,
    start: State = State.OPEN,
    max_size: int = 8,
    specification: Specification = CUSTOMER_SESSION,
) -> st.SearchStrategy[list[Trigger]]:
    """Sequences of triggers from ``start``.

    With ``legal_only`` every trigger is allowed by the table where it is fired
    (the walk stops early in a terminal state); otherwise any trigger may appear.
    """
    if not legal_only:
        return st.lists(triggers(specification), max_size=max_size)

    @st.composite
    def walk(draw: st.DrawFn) -> list[Trigger]:
        state = start
        sequence: list[Trigger] = []
        for _ in range(draw(st.integers(min_value=0, max_value=max_size))):
            allowed = sorted(specification.allowed(state))
            if not allowed:
                break
            trigger = draw(st.sampled_from(allowed))
            sequence.append(trigger)
            target = specification.target(state, trigger)
            assert target is not None  # noqa: S101 - drawn from the allowed triggers
            state = target
        return sequence

    return walk()


def sessions(
    *,
    state: State | None = None,
    session_class: type[_S] = CustomerSession,  # type: ignore[assignment] # the default class is an _S
    workflow: Workflow | None = None,
    min_items: int = 1,
) -> st.SearchStrategy[_S]:
    """Valid sessions in ``state`` (any state when ``None``), built through the API.

    Each session is created open with a cart, then driven along a path of the
    table to its state with real triggers, so its history is real.

    Args:
        state: The state every drawn session is in.
        session_class: The session class (e.g. ``ReopenableCustomerSession``).
        workflow: A workflow to bind the sessions to (its guards must allow the
            path, or drawing fails).
        min_items: The smallest cart (returns need at least one item).
    """
    spec = session_class.specification
    targets = list(spec.states) if state is None else [state]
    paths = spec.shortest_paths()

    @st.composite
    def build(draw: st.DrawFn) -> _S:
        target = draw(st.sampled_from(targets))
        path = paths[target]
        session = session_class(
            integration_id=draw(integration_ids()),
            state=path[0].source if path else target,
            profile_id=draw(st.none() | st.text("abcdef0123456789", min_size=1, max_size=8)),
            cart_items=draw(carts(min_size=max(min_items, 1), max_size=4)),
            workflow=session_class.default_workflow if workflow is None else workflow,
        )
        for edge in path:
            if edge.trigger is Trigger.RETURN_ITEMS:
                session.return_items(draw(returned_items(session)))
            else:
                session.fire(edge.trigger)
        return session

    return build()
