"""Hypothesis strategies for testing code built on customer-session.

Install with ``pip install customer-session[testing]``. The library's own test
suite uses these same strategies, so they are tested by real use.

Every strategy shrinks towards small, readable examples: short SKUs, quantity 1,
empty carts, short trigger sequences. Also here: :class:`SessionStateMachine`, a
stateful-test base with the library's invariants built in, and model-based paths
through the table (:func:`shortest_paths`, :func:`covering_paths`, :func:`follow`,
:func:`parametrize_paths`).
"""

from __future__ import annotations

import copy
import functools
from collections import deque
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar, overload

import attrs

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as _missing:
    if _missing.name != "hypothesis":
        raise
    # The bare "No module named 'hypothesis'" does not say which extra provides it.
    raise ModuleNotFoundError(
        "customer_session.testing needs Hypothesis: pip install 'customer-session[testing]'",
        name="hypothesis",
    ) from _missing

from customer_session._cart import (
    AdditionalCost,
    CartItem,
    JSONValue,
    PriceDetail,
    Product,
    ReturnedItem,
)
from customer_session._paths import (
    SPECIFICATION,
    Path,
    check_arguments,
    count,
    covering_paths,
    follow,
    instance,
    parametrize_paths,
    shortest_paths,
)
from customer_session._show import shown
from customer_session._spec import CUSTOMER_SESSION, Edge, Specification, State, Trigger
from customer_session._stateful import SessionStateMachine
from customer_session.exceptions import GuardRejected, ValidationError, WorkflowError
from customer_session.hooks import Workflow
from customer_session.model import CustomerSession, _check_session_class

_S = TypeVar("_S", bound=CustomerSession)
# The largest cart sessions() draws.
_MOST_ITEMS = 4

__all__ = [
    "Path",
    "SessionStateMachine",
    "attribute_maps",
    "bad_values",
    "cart_items",
    "carts",
    "covering_paths",
    "follow",
    "integration_ids",
    "json_values",
    "parametrize_paths",
    "returned_items",
    "sessions",
    "shortest_paths",
    "trigger_sequences",
    "triggers",
    "wire_documents",
]

_SKU_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-"
# Any character a session's text may hold: UTF-8 encodable (no lone surrogate), no NUL.
_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")


def _texts(*, max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Text any session field accepts (see ``customer_session._cart.is_text``)."""
    return st.text(_CHARACTERS, min_size=min_size, max_size=max_size)


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

    Raises:
        ValidationError: ``max_quantity`` is not an integer from 1 to 10,000.
    """
    check_arguments(
        "cart_items",
        max_quantity=(max_quantity, count(1)),
        with_price=(with_price, instance(bool, optional=True)),
    )
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
        name=st.none() | _texts(max_size=20),
        category=st.none() | st.sampled_from(["socks", "shoes", "jackets", "gift cards"]),
    )


def carts(
    *, min_size: int = 0, max_size: int = 5, max_quantity: int = 5
) -> st.SearchStrategy[tuple[CartItem, ...]]:
    """Valid carts (tuples of cart items) within the API's limits.

    Raises:
        ValidationError: A size is not an integer from 0 to 10,000 (``max_quantity``
            from 1), or ``min_size`` is above ``max_size``.
    """
    check_arguments(
        "carts",
        min_size=(min_size, count(0)),
        max_size=(max_size, count(0)),
        max_quantity=(max_quantity, count(1)),
    )
    if min_size > max_size:
        raise ValidationError.single(
            "carts()", "max_size", f"must be at least min_size ({min_size}), got {max_size}"
        )
    return st.lists(
        cart_items(max_quantity=max_quantity), min_size=min_size, max_size=max_size
    ).map(tuple)


def returned_items(
    session: CustomerSession, *, valid: bool = True
) -> st.SearchStrategy[tuple[ReturnedItem, ...]]:
    """Returns for ``session``'s cart; valid ones by default (distinct positions, units left).

    The cart is read at each draw, so a strategy drawn from again after a return
    draws returns of what remains.

    Args:
        session: The session whose cart the returns are for.
        valid: ``False`` gives returns the cart refuses, each with at least one defect:
            no item at all, a position past the cart, a position twice, more units
            than remain, or the SKU of another item. Any session has them.

    Raises:
        ValidationError: ``session`` is not a session, or ``valid`` and nothing in
            its cart can be returned any more (when called, and when drawn from).
    """
    check_arguments(
        "returned_items",
        session=(session, instance(CustomerSession)),
        valid=(valid, instance(bool)),
    )
    if not valid:
        return _refused_returns(session)
    _open_positions(session)  # refused now, not only when drawn from

    # The cart is read when drawing, not now: a return in between leaves fewer units.
    @st.composite
    def draw_return(draw: st.DrawFn) -> tuple[ReturnedItem, ...]:
        cart = session.cart_items
        positions = draw(
            st.lists(st.sampled_from(_open_positions(session)), min_size=1, unique=True, max_size=5)
        )
        return tuple(
            ReturnedItem(
                position=p,
                quantity=draw(st.integers(min_value=1, max_value=cart[p].remaining_quantity)),
            )
            for p in sorted(positions)
        )

    return draw_return()


def _open_positions(session: CustomerSession) -> list[int]:
    """The positions of ``session``'s cart with units left to return; refused if none."""
    positions = [i for i, line in enumerate(session.cart_items) if line.remaining_quantity]
    if not positions:
        raise ValidationError.single(
            f"returned_items(): session {session.integration_id!r}",
            "cart_items",
            "has no units left to return",
        )
    return positions


@st.composite
def _refused_returns(draw: st.DrawFn, session: CustomerSession) -> tuple[ReturnedItem, ...]:
    """A return ``session``'s cart, as it is when drawn, refuses: one defect."""
    cart = session.cart_items
    defects = ["empty", "past the cart"]
    if cart:
        defects += ["twice", "too many", "other sku"]
    defect = draw(st.sampled_from(defects))
    if defect == "empty":
        return ()
    if defect == "past the cart":
        position = draw(st.integers(min_value=len(cart), max_value=len(cart) + 3))
        return (ReturnedItem(position=position, quantity=1),)
    position = draw(st.integers(min_value=0, max_value=len(cart) - 1))
    line = cart[position]
    if defect == "twice":
        return (ReturnedItem(position=position, quantity=1),) * 2
    if defect == "too many":
        extra = draw(st.integers(min_value=1, max_value=3))
        return (ReturnedItem(position=position, quantity=line.remaining_quantity + extra),)
    return (ReturnedItem(position=position, quantity=1, sku=f"{line.sku}-X"),)


def triggers(specification: Specification = CUSTOMER_SESSION) -> st.SearchStrategy[Trigger]:
    """Any trigger of ``specification`` (legal or not in a given state).

    Raises:
        ValidationError: ``specification`` is not a specification, or has no edges
            (so no trigger to draw).
    """
    check_arguments("triggers", specification=(specification, SPECIFICATION))
    if not specification.triggers:
        raise ValidationError.single(
            "triggers()", "specification", f"{specification.name!r} has no edges, so no triggers"
        )
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

    Raises:
        ValidationError: An argument of the wrong kind, ``start`` not a state of
            ``specification``, or ``max_size`` not an integer from 0 to 10,000.
    """
    check_arguments(
        "trigger_sequences",
        legal_only=(legal_only, instance(bool)),
        start=(start, instance(State)),
        max_size=(max_size, count(0)),
        specification=(specification, SPECIFICATION),
    )
    if start not in specification.states:
        raise ValidationError.single(
            "trigger_sequences()",
            "start",
            f"must be a state of {specification.name!r}, got {shown(start)}",
        )
    if not specification.triggers:  # a table without edges: nothing to fire
        return st.builds(list)
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


@overload
def sessions(
    *,
    state: State | None = None,
    workflow: Workflow | None = None,
    min_items: int = 1,
    ids: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[CustomerSession]: ...


@overload
def sessions(
    *,
    state: State | None = None,
    session_class: type[_S],
    workflow: Workflow | None = None,
    min_items: int = 1,
    ids: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[_S]: ...


def sessions(
    *,
    state: State | None = None,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
    min_items: int = 1,
    ids: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[CustomerSession]:
    """Valid sessions in ``state`` (any state when ``None``), built through the API.

    Each session is created in an initial state with a cart, then driven along a
    random legal walk of the table that ends in its state, with real triggers, so
    its history is real: up to four edges longer than a shortest walk (a cycle such
    as the reopen table's ``close``/``reopen``, further returns), with random cart
    and coupon edits whenever it is open. Examples shrink towards a shortest walk
    with no edits.

    Args:
        state: The state every drawn session is in.
        session_class: The session class (e.g. ``ReopenableCustomerSession``).
        workflow: A workflow to bind the sessions to. Its guards must allow the
            transitions of a shortest walk, or drawing fails; a longer walk they
            refuse (a detour, a farther start, or the way on from either) is not
            taken.
        min_items: The smallest cart, also after edits; a session whose walk must
            take a return (to ``partially_returned``) has at least one item whatever
            it says.
        ids: Where integration ids are drawn from (default :func:`integration_ids`);
            a few fixed ones (``st.sampled_from``) give sessions that collide.

    Raises:
        ValidationError: An argument of the wrong kind, ``state`` not a state of
            ``session_class``'s table, or ``min_items`` not from 0 to 4.
        WorkflowError: ``session_class`` is not a ``CustomerSession`` class, or
            ``workflow`` drives another table than its.
    """
    _check_session_class(session_class)
    spec = session_class.specification
    check_arguments(
        "sessions",
        state=(
            state,
            (
                lambda value: value is None or value in spec.states,
                "must be a state of the table or None",
            ),
        ),
        workflow=(workflow, instance(Workflow, optional=True)),
        min_items=(min_items, count(0, _MOST_ITEMS)),
        ids=(ids, instance(st.SearchStrategy, optional=True)),
    )
    if workflow is not None and workflow.specification != spec:
        raise WorkflowError(
            f"{session_class.__name__} follows {spec.name!r}; {shown(workflow)} drives "
            "another specification"
        )
    drawn_ids = integration_ids() if ids is None else ids
    walks = [_Walks(spec, target) for target in (spec.states if state is None else [state])]
    # A state no walk reaches has no session to draw. The strategies a draw uses are
    # built here, once: building one costs more than drawing from it.
    drawn_walks = st.sampled_from([w for w in walks if w.starts])
    drawn_carts = {
        size: carts(min_size=size, max_size=_MOST_ITEMS) for size in {min_items, max(min_items, 1)}
    }

    @st.composite
    def build(draw: st.DrawFn) -> CustomerSession:
        walk = draw(drawn_walks)
        # Edges beyond a shortest walk; a start farther than the nearest takes its share.
        budget = draw(_BUDGETS)
        starts = walk.starts_within(budget)
        at = starts[draw(_index_below(len(starts))) if len(starts) > 1 else 0]
        budget -= walk.distance[at] - walk.distance[walk.starts[0]]
        session = started(draw, walk, at)
        if walk.take(draw, session, min_items, budget, detoured=at is not walk.starts[0]):
            return session
        # The workflow refused the way on from where a detour led: a shortest walk it
        # must allow (see workflow above).
        session = started(draw, walk, walk.starts[0])
        walk.take(draw, session, min_items, 0, detoured=False)
        return session

    def started(draw: st.DrawFn, walk: _Walks, at: State) -> CustomerSession:
        """A new session in initial state ``at`` of ``walk``, with a drawn id, profile and cart."""
        return session_class(
            integration_id=draw(drawn_ids),
            state=at,
            profile_id=draw(_PROFILE_IDS),
            cart_items=draw(drawn_carts[walk.fewest(at, min_items)]),
            workflow=session_class.default_workflow if workflow is None else workflow,
        )

    return build()


# The most edges a walk of sessions() takes beyond a shortest one, and the most edits
# it makes each time its session is open.
_MOST_DETOURS = 4
_MOST_EDITS = 2
# Built once: a walk draws from them at every step, and building a strategy costs
# more than drawing from it.
_BUDGETS = st.integers(min_value=0, max_value=_MOST_DETOURS)
_EDIT_COUNTS = st.integers(min_value=0, max_value=_MOST_EDITS)
_COUPONS = st.none() | st.text("ABC123", min_size=1, max_size=8)
_QUANTITIES = st.integers(min_value=1, max_value=5)
_ADDED_ITEMS = cart_items()
_PROFILE_IDS = st.none() | st.text("abcdef0123456789", min_size=1, max_size=8)


@functools.cache
def _index_below(choices: int) -> st.SearchStrategy[int]:
    """The index of one of ``choices`` options (shrinking to the first)."""
    return st.integers(min_value=0, max_value=choices - 1)


class _Walks:
    """The legal walks through a table that end in ``target``, as :func:`sessions` takes them.

    A walk is drawn edge by edge: at each state, the first choice (where it shrinks
    to) is the next edge of a shortest walk (stopping, in ``target``), the others
    the edges that still reach ``target`` within the detour budget drawn for it.
    """

    def __init__(self, spec: Specification, target: State) -> None:
        self.target = target
        # How many edges each state is from target (states that cannot reach it left out).
        self.distance = {target: 0}
        queue = deque([target])
        while queue:
            reached = queue.popleft()
            for edge in spec.edges:
                if edge.destination is reached and edge.source not in self.distance:
                    self.distance[edge.source] = self.distance[reached] + 1
                    queue.append(edge.source)
        # The edges that still reach target, by state.
        self.edges = {
            s: tuple(e for e in spec.edges_from(s) if e.destination in self.distance)
            for s in self.distance
        }
        # The first edge of a shortest walk on (the table's first), by state.
        self.onward: dict[State, Edge] = {}
        # The states whose shortest walk on takes a return: their cart needs an item.
        self.returning: set[State] = set()
        for s in sorted(self.distance, key=self.distance.__getitem__):
            if s is target:
                continue
            edge = next(
                e for e in self.edges[s] if self.distance.get(e.destination) == self.distance[s] - 1
            )
            self.onward[s] = edge
            if edge.trigger is Trigger.RETURN_ITEMS or edge.destination in self.returning:
                self.returning.add(s)
        order = {s: i for i, s in enumerate(spec.states)}
        # Nearest first: a shortest walk's start is where the draw shrinks to.
        self.starts = sorted(
            (s for s in spec.initial_states if s in self.distance),
            key=lambda s: (self.distance[s], order[s]),
        )

    def starts_within(self, budget: int) -> list[State]:
        """The initial states a walk with ``budget`` detour edges may start in, nearest first."""
        nearest = self.distance[self.starts[0]]
        return [s for s in self.starts if self.distance[s] - nearest <= budget]

    def fewest(self, state: State, min_items: int) -> int:
        """The smallest cart a session in ``state`` may have (see ``min_items``)."""
        return max(min_items, 1) if state in self.returning else min_items

    def take(
        self,
        draw: st.DrawFn,
        session: CustomerSession,
        min_items: int,
        budget: int,
        *,
        detoured: bool,
    ) -> bool:
        """Drive ``session`` along a drawn walk to the target, at most ``budget`` edges longer.

        Returns whether it got there: not when the workflow refused the way on once
        the walk had left a shortest one (``detoured``: it started farther than the
        nearest start, or took a detour), where the caller takes a shortest walk.
        """
        state = session.state
        while True:
            if state is State.OPEN:
                _edit(draw, session, self.fewest(state, min_items))
            onward = self.onward.get(state)  # None: stop, in the target
            detours = [
                (edge, cost)
                for edge in self.edges[state]
                if edge is not onward
                and (cost := 1 + self.distance[edge.destination] - self.distance[state]) <= budget
                and self._may_take(edge, session)
            ]
            choices = [(onward, 0), *detours]
            # Drawn by index: choice 0, the shortest walk's, is where it shrinks to.
            edge, cost = choices[draw(_index_below(len(choices))) if detours else 0]
            if edge is None:
                return True
            items = draw(returned_items(session)) if edge.trigger is Trigger.RETURN_ITEMS else ()
            budget -= cost
            try:
                session.fire(edge.trigger, items=items)
            except GuardRejected:
                if edge is not onward:
                    continue  # the workflow refuses this detour; nothing changed
                if detoured:
                    return False  # a way on that only a longer walk needed
                raise
            detoured = detoured or edge is not onward
            state = edge.destination

    def _may_take(self, edge: Edge, session: CustomerSession) -> bool:
        """Whether a detour may take ``edge``: a return needs a unit, and leaves none for later."""
        if edge.trigger is not Trigger.RETURN_ITEMS:
            return True
        # A return taken on the way might return what a later return needs.
        return edge.destination not in self.returning and any(
            line.remaining_quantity for line in session.cart_items
        )


def _edit(draw: st.DrawFn, session: CustomerSession, fewest: int) -> None:
    """Make a few drawn edits of open ``session``'s cart and coupon, keeping ``fewest`` items."""
    for _ in range(draw(_EDIT_COUNTS)):
        cart = session.cart_items
        # Lines with returned units stay as they are: their returns are history.
        untouched = [i for i, line in enumerate(cart) if not line.returned_quantity]
        edits = ["coupon"]
        if len(cart) < _MOST_ITEMS:
            edits.append("add")
        if untouched:
            edits.append("quantity")
            if len(cart) > fewest:
                edits.append("remove")
        edit = draw(st.sampled_from(edits))
        if edit == "coupon":
            session.set_coupon(draw(_COUPONS))
        elif edit == "add":
            session.add_item(draw(_ADDED_ITEMS))
        else:
            position = draw(st.sampled_from(untouched))
            if edit == "remove":
                session.remove_item(position)
            else:
                quantity = draw(_QUANTITIES)
                session.update_item(position, attrs.evolve(cart[position], quantity=quantity))


# -- wire documents --------------------------------------------------------------------

_JSON_SCALARS: st.SearchStrategy[JSONValue] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts(max_size=10)
)
_JSON_VALUES: st.SearchStrategy[JSONValue] = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_texts(max_size=5), inner, max_size=3)
    ),
    max_leaves=4,
)


def json_values() -> st.SearchStrategy[JSONValue]:
    """JSON values as callers give them: scalars, and lists and dicts of them, nested.

    What custom attributes hold; sessions and cart items keep frozen copies.
    """
    return _JSON_VALUES


def attribute_maps(*, max_size: int = 3) -> st.SearchStrategy[dict[str, JSONValue]]:
    """Custom attributes as callers give them: dicts of :func:`json_values`.

    Raises:
        ValidationError: ``max_size`` is not an integer from 0 to 10,000.
    """
    check_arguments("attribute_maps", max_size=(max_size, count(0)))
    return st.dictionaries(_texts(max_size=5), _JSON_VALUES, max_size=max_size)


class _Opaque:
    """An object of no type any parameter takes, with a stable ``repr``."""

    def __repr__(self) -> str:
        return "<opaque>"


class _BrokenZone(tzinfo):
    """A time zone whose ``utcoffset()`` raises: a datetime in it has no time in UTC."""

    def utcoffset(self, _dt: datetime | None) -> timedelta:
        raise RuntimeError("a broken time zone")

    def dst(self, _dt: datetime | None) -> timedelta:
        raise RuntimeError("a broken time zone")

    def tzname(self, _dt: datetime | None) -> str:
        raise RuntimeError("a broken time zone")

    def __repr__(self) -> str:
        return "<broken zone>"


class _DeeplyNested(list[Any]):
    """A list nested deeper than the recursion limit: walking it recursively fails.

    ``repr()`` of it fails too, as of any such list; Hypothesis's own printer is
    given a short name for it, to report a failing example.
    """

    def __init__(self) -> None:
        value: list[Any] = []
        for _ in range(5_000):
            value = [value]
        super().__init__(value)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        del cycle  # nothing holds it
        printer.text("<a list nested 5000 deep>")


_BAD_SCALARS: tuple[object, ...] = (
    None,
    True,
    -1,
    0,
    1.5,
    2**63,  # one past the largest SQL integer
    -(2**63) - 1,
    10**5000,  # more digits than int -> str converts; too large for a float
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "\x00",
    "\ud800",  # a lone surrogate: no UTF-8 for it
    b"x",
    bytearray(b"x"),
    datetime(2024, 1, 1),  # noqa: DTZ001 - naive on purpose: no time zone is a bad moment
    datetime(2024, 1, 1, tzinfo=_BrokenZone()),  # looks aware, but has no time in UTC
    _Opaque(),
    frozenset({1, 2}),
    (),
    [],
    {},
)
# A datetime in a broken zone cannot be hashed: hash() asks the zone for its offset.
_HASHABLE_BAD = [
    value
    for value in _BAD_SCALARS
    if value.__hash__ is not None
    and not (isinstance(value, datetime) and isinstance(value.tzinfo, _BrokenZone))
]


# Each example gets its own copy: the code under test may change a list or a dict it
# is given, which must not change what later examples (and later tests) are given.
def _bad_scalar(index: int) -> object:
    return copy.copy(_BAD_SCALARS[index])


def _hashable_bad(index: int) -> object:
    return copy.copy(_HASHABLE_BAD[index])


def _deeply_nested() -> list[Any]:
    return _DeeplyNested()


def bad_values() -> st.SearchStrategy[object]:
    """Values an argument should be refused for, to test that bad input gets a clear error.

    Odd scalars (``None``, booleans, ``-1``, a float, integers too large for SQL or for
    a float, ``nan`` and infinities, empty, blank, NUL and lone-surrogate text, bytes, a
    naive datetime, a datetime whose time zone raises, an object of no useful type, a
    frozenset, empty containers), containers holding them (lists, tuples, sets, dicts
    with them as keys or values) and a list nested too deep to walk recursively. Some
    are fine for some parameters (``None`` where a value is optional, ``""`` as a JSON
    value): a caller checks that each is either accepted or refused with the library's
    error, never that each is refused. Every example gets values of its own, so code
    that changes a list or dict it is given changes no other example.
    """
    # Drawn by index through named functions: a strategy's repr shows what it samples
    # (or the function it maps with), and repr() of these values fails.
    scalars = st.integers(0, len(_BAD_SCALARS) - 1).map(_bad_scalar)
    hashable = st.integers(0, len(_HASHABLE_BAD) - 1).map(_hashable_bad)
    return st.one_of(
        scalars,
        st.lists(scalars, min_size=1, max_size=2),
        st.lists(scalars, min_size=1, max_size=2).map(tuple),
        st.frozensets(hashable, min_size=1, max_size=2).map(set),
        st.dictionaries(st.sampled_from(["a", "sku", "price"]), scalars, min_size=1, max_size=2),
        st.dictionaries(hashable, st.just(1), min_size=1, max_size=1),
        st.builds(_deeply_nested),
    )


_NAMES = st.text("abcdefghijklmnopqrstuvwxyz _", min_size=1, max_size=10)
_AMOUNTS = st.integers(min_value=0, max_value=100_000).map(lambda cents: cents / 100)
_MOMENTS = st.datetimes(timezones=st.just(UTC))
_PRICE_DETAILS = st.builds(
    PriceDetail,
    price=st.none() | _AMOUNTS,
    adjustment_context_id=st.none() | _NAMES,
    adjustment_reference_id=st.none() | st.uuids().map(str),
    adjustment_effective_from=st.none() | _MOMENTS,
    adjustment_effective_until=st.none() | _MOMENTS,
)


@st.composite
def _with_item_details(draw: st.DrawFn, line: CartItem) -> CartItem:
    """``line`` with the optional cart item fields drawn (or as it is)."""
    if not draw(st.booleans()):
        return line
    maybe_size = st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False)
    return attrs.evolve(
        line,
        product=draw(st.none() | st.builds(Product, _NAMES)),
        weight=draw(maybe_size),
        height=draw(maybe_size),
        width=draw(maybe_size),
        length=draw(maybe_size),
        attributes=draw(st.dictionaries(_NAMES, _JSON_VALUES, max_size=2)),
        additional_costs=draw(
            st.dictionaries(_NAMES, st.builds(AdditionalCost, _AMOUNTS), max_size=2)
        ),
        catalog_item_id=draw(st.none() | st.integers(min_value=1, max_value=2**31)),
        selected_price_type=draw(st.none() | _NAMES),
        adjustment_reference_id=draw(st.none() | st.uuids().map(str)),
        adjustment_effective_from=draw(st.none() | _MOMENTS),
        adjustment_effective_until=draw(st.none() | _MOMENTS),
        prices=draw(st.dictionaries(_NAMES, _PRICE_DETAILS, max_size=1)),
    )


@st.composite
def _detailed_sessions(draw: st.DrawFn, *, session_costs: bool) -> CustomerSession:
    """Sessions of :func:`sessions` with every optional wire field drawn."""
    session = draw(sessions())
    fields = session.snapshot()
    codes = st.none() | _texts(min_size=1, max_size=12)  # "" is no code: None is
    fields.update(
        profile_id=draw(st.none() | _texts(max_size=12)),
        coupon=draw(codes),
        referral=draw(codes),
        cart_items=[draw(_with_item_details(line)) for line in session.cart_items],
        identifiers=draw(st.lists(_NAMES, max_size=5)),
        attributes=draw(st.dictionaries(_NAMES, _JSON_VALUES, max_size=3)),
        first_session=draw(st.booleans()),
        discounts=draw(st.dictionaries(_NAMES, _AMOUNTS, max_size=3)),
        application_id=draw(st.integers(min_value=0, max_value=2**31)),
        additional_costs=draw(
            st.dictionaries(_NAMES, st.builds(AdditionalCost, _AMOUNTS), max_size=2)
            if session_costs
            else st.just({})
        ),
    )
    return CustomerSession.restore(**fields)


_REQUIRED_KEYS = (
    "integrationId",
    "created",
    "applicationId",
    "firstSession",
    "discounts",
    "updated",
)
_WRONG_VALUES: dict[str, tuple[JSONValue, ...]] = {
    "integrationId": (42, "", None),
    "created": ("yesterday", "2026-03-02 10:15:00", 1_700_000_000),
    "applicationId": ("12", -1, 1.5, True),
    "firstSession": ("true", 1, None),
    "discounts": ([], {"Welcome 10%": "2.25"}),
    "updated": ("2026-13-01T00:00:00Z", False),
    "updateCount": (0, "4"),
    "state": ("shipped", "OPEN", None),
    "cartItems": ({}, "SOCK-TR-42", [None]),
    "coupon": ("C" * 101, 7),
    "identifiers": (["a", "b", "c", "d", "e", "f"], "a3f9c2e1", [1]),
    "attributes": ([], "ShippingCity"),
    "total": ("22.5", -1_000_000.0),
}
_WRONG_ITEM_VALUES: dict[str, tuple[JSONValue, ...]] = {
    "sku": ("", 42, None),
    "quantity": (0, -1, "3", 2.5),
    "price": ("7.5", None),
    "returnedQuantity": (-1, 10_001),
}


@st.composite
def _broken(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with one defect that every reader must refuse."""
    broken = copy.deepcopy(doc)
    items = broken["cartItems"]
    defect = draw(
        st.sampled_from(
            ["drop", "value", "item", "unknown"] if items else ["drop", "value", "unknown"]
        )
    )
    if defect == "drop":
        del broken[draw(st.sampled_from(_REQUIRED_KEYS))]
    elif defect == "value":
        key = draw(st.sampled_from(sorted(_WRONG_VALUES)))
        broken[key] = draw(st.sampled_from(_WRONG_VALUES[key]))
    elif defect == "item":
        item = items[draw(st.integers(min_value=0, max_value=len(items) - 1))]
        key = draw(st.sampled_from(sorted(_WRONG_ITEM_VALUES)))
        item[key] = draw(st.sampled_from(_WRONG_ITEM_VALUES[key]))
    else:
        broken[draw(st.sampled_from(["profileID", "integrationID", "cart_items", "x-other"]))] = 1
    return broken


def wire_documents(
    *, valid: bool = True, include_history: bool = False, session_costs: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    """v1 ``CustomerSession`` documents, as :func:`customer_session.wire.to_dict` writes them.

    The sessions behind them come from :func:`sessions`, with every optional field
    drawn (codes, identifiers, attributes, discounts, item details, costs).

    Args:
        valid: ``False`` gives documents with one certain defect each: a required
            key dropped, a value of the wrong type or out of range, an unknown
            state, an unknown key, a broken cart item. Every reader must refuse them.
        include_history: Write the history extension (``"x-customerSession"``).
        session_costs: Draw session-level ``additionalCosts`` (a key the v1 model
            of the official SDKs does not have).

    Raises:
        ValidationError: A flag is not a bool.
    """
    from customer_session.wire import to_dict  # noqa: PLC0415 - testing needs no wire import otherwise

    check_arguments(
        "wire_documents",
        valid=(valid, instance(bool)),
        include_history=(include_history, instance(bool)),
        session_costs=(session_costs, instance(bool)),
    )
    documents = _detailed_sessions(session_costs=session_costs).map(
        lambda session: to_dict(session, include_history=include_history)
    )
    return documents if valid else documents.flatmap(_broken)
