"""The specification: states, triggers and the transition table, as immutable data.

This module is the only place the paths of a customer session are written down.
Everything else (the ``transitions`` machine, diagrams, the replay fast path, the
docs tables, the test oracles) is derived from a :class:`Specification`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, TypeVar

from attrs import field, frozen

from customer_session._show import shown
from customer_session.exceptions import SpecificationError

if TYPE_CHECKING:
    from collections.abc import Mapping


class State(StrEnum):
    """The state of a customer session; each member equals its wire value."""

    OPEN = "open"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    PARTIALLY_RETURNED = "partially_returned"


class Trigger(StrEnum):
    """A trigger: the name of a session method that may change its state."""

    CLOSE = "close"
    CANCEL = "cancel"
    RETURN_ITEMS = "return_items"
    REOPEN = "reopen"


_Member = TypeVar("_Member", State, Trigger)


def member(kind: type[_Member], value: object) -> _Member | None:
    """The member of ``kind`` (``State``, ``Trigger``) ``value`` names; ``None`` for anything else.

    The one lookup of text given for a state or a trigger. Only text can name one
    (their values are text); looking up anything else would put its ``repr()`` in
    the enum's ``ValueError``, which fails (``RecursionError``) for a list nested
    too deep to show.
    """
    if not isinstance(value, str):
        return None
    try:
        return kind(value)
    except ValueError:
        return None


@frozen
class Edge:
    """One row of the transition table: ``trigger`` moves ``source`` to ``destination``.

    An edge whose destination equals its source is an *internal* transition: it is
    recorded in the history but neither exits nor enters a state.
    """

    trigger: Trigger
    source: State
    destination: State

    @property
    def internal(self) -> bool:
        """Whether this edge stays in its state (no exit, no enter)."""
        return self.source is self.destination

    def __str__(self) -> str:
        """Render as ``source --trigger--> destination``."""
        return f"{self.source} --{self.trigger}--> {self.destination}"


# Converters: a specification keeps its own immutable copy of what it is given, so
# a list or set the caller still holds cannot change the table after it was checked
# (and the specification stays hashable). A string or a non-iterable is kept as it
# is for _check_types to refuse: a string would otherwise become its characters. So
# is a set of states or edges: their order is the display order, which a set's
# iteration (by string hashes, different in every process) would make random.
def _edge_tuple(edges: Iterable[Edge]) -> tuple[Edge, ...]:
    return tuple(edges) if _sequence(edges) else edges  # type: ignore[return-value] # refused by _check_types


def _state_tuple(states: Iterable[State]) -> tuple[State, ...]:
    return tuple(states) if _sequence(states) else states  # type: ignore[return-value] # refused by _check_types


def _state_set(states: Iterable[State]) -> frozenset[State]:
    if not _collection(states):
        return states  # type: ignore[return-value] # refused by _check_types
    items = tuple(states)
    try:
        return frozenset(items)
    # An unhashable member, or one whose hash raises (a datetime in a broken time
    # zone): _check_types names it.
    except Exception:  # noqa: BLE001 - any failure of a member's hash is the member's
        return items  # type: ignore[return-value] # its unhashable member is refused by _check_types


def _collection(value: object) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, str | bytes)


def _sequence(value: object) -> bool:
    """Whether ``value`` is a collection with an order of its own (not a set)."""
    return _collection(value) and not isinstance(value, AbstractSet)


_UNQUOTABLE: Final = re.compile(r'(?<!\\)(?:\\\\)*\\(?:"|\Z)')
"""An odd run of backslashes before a quote or at the end: DOT's scanner reads a
quoted identifier's ``\\"`` as a quote and keeps ``\\\\`` as two backslashes, so no
quoted identifier holds such text."""


@frozen
class Specification:
    """A complete, validated state machine definition.

    Definition errors (a duplicate ``(source, trigger)`` pair, an unknown state, an
    unreachable state) raise :class:`~customer_session.exceptions.SpecificationError`
    when the specification is created, never later.

    Args:
        name: A short identifier, used in diagrams and error messages: printable,
            and not ending in an odd number of backslashes or holding one right
            before a double quote (no DOT identifier can).
        states: Every state, in display order (kept as a tuple; a set, which has no
            order, is refused).
        initial_states: The states a new session may be created in (kept as a
            frozenset).
        edges: The transition table, in display order (kept as a tuple; a set is
            refused).

    Each collection may be given as any iterable (a list; a set for the initial
    states, whose order does not matter); the specification keeps its own
    immutable copy, so changing the caller's list afterwards cannot change a table
    that was already checked.
    """

    name: str
    states: tuple[State, ...] = field(converter=_state_tuple)
    initial_states: frozenset[State] = field(converter=_state_set)
    edges: tuple[Edge, ...] = field(converter=_edge_tuple)
    _targets: Mapping[tuple[State, Trigger], State] = field(
        init=False, repr=False, eq=False, hash=False
    )
    _allowed: Mapping[State, frozenset[Trigger]] = field(
        init=False, repr=False, eq=False, hash=False
    )
    _with_returns: frozenset[State] = field(init=False, repr=False, eq=False, hash=False)
    _after_returns: frozenset[State] = field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        """Check the table and derive the look-ups once."""
        self._check_types()
        targets: dict[tuple[State, Trigger], State] = {}
        known = set(self.states)
        if len(known) != len(self.states):
            raise SpecificationError(self.name, "a state is listed twice")
        if not self.initial_states:
            raise SpecificationError(self.name, "there must be at least one initial state")
        for state in self.initial_states - known:
            raise SpecificationError(self.name, f"initial state '{state}' is not a state")
        for edge in self.edges:
            for end in (edge.source, edge.destination):
                if end not in known:
                    raise SpecificationError(self.name, f"{edge}: '{end}' is not a state")
            key = (edge.source, edge.trigger)
            if key in targets:
                raise SpecificationError(
                    self.name, f"{edge}: {edge.trigger}() from '{edge.source}' is already defined"
                )
            targets[key] = edge.destination
        allowed = {state: frozenset(t for (s, t) in targets if s is state) for state in self.states}
        object.__setattr__(self, "_targets", MappingProxyType(targets))
        object.__setattr__(self, "_allowed", MappingProxyType(allowed))
        object.__setattr__(self, "_with_returns", self._reachable_after(Trigger.RETURN_ITEMS))
        object.__setattr__(self, "_after_returns", self._only_after_returns())
        unreachable = known - set(self.shortest_paths())
        if unreachable:
            names = ", ".join(sorted(unreachable))
            raise SpecificationError(self.name, f"unreachable from the initial states: {names}")

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle and deep-copy by the constructor's arguments, which are checked again.

        The derived look-ups are read-only mapping views, which pickle cannot hold;
        the constructor derives them anew.
        """
        return type(self), (self.name, self.states, self.initial_states, self.edges)

    def _check_types(self) -> None:
        """Refuse what the annotations forbid but an untyped caller can pass.

        A plain string equals its ``State`` member, so it would pass the checks
        below and then fail identity look-ups; a name or label with control
        characters (or lone surrogates) breaks the diagrams and cannot be encoded.
        """
        name: object = self.name
        if not isinstance(name, str) or not name or not name.isprintable():
            raise SpecificationError(
                name if isinstance(name, str) else shown(name),
                f"the name must be a non-empty printable string, got {shown(name):.80}",
            )
        if _UNQUOTABLE.search(name):
            raise SpecificationError(
                name,
                "the name must not end in an odd number of backslashes or have one right "
                "before a double quote: a DOT diagram (Graphviz) cannot hold such a name",
            )
        # What the converters left as it was: a string, or no collection at all.
        for what, given in (
            ("states", self.states),
            ("initial_states", self.initial_states),
            ("edges", self.edges),
        ):
            if not _collection(given):
                raise SpecificationError(name, f"{what} must be a collection, got {shown(given)}")
            if what != "initial_states" and not _sequence(given):
                raise SpecificationError(
                    name,
                    f"{what} must be in order (a tuple or a list), got a "
                    f"{type(given).__name__}: their order is the order diagrams show",
                )
        values: list[tuple[str, object, type]] = [
            *(("state", state, State) for state in self.states),
            *(("initial state", state, State) for state in self.initial_states),
        ]
        for edge in self.edges:
            edge_object: object = edge
            if not isinstance(edge_object, Edge):
                raise SpecificationError(name, f"{shown(edge_object)} is not an Edge")
            values.extend(
                (
                    (f"{edge}: its trigger", edge.trigger, Trigger),
                    (f"{edge}: its source", edge.source, State),
                    (f"{edge}: its destination", edge.destination, State),
                )
            )
        for what, value, kind in values:
            if type(value) is not kind:
                raise SpecificationError(
                    name, f"{what}: {shown(value)} is not a {kind.__name__} member"
                )

    @property
    def triggers(self) -> tuple[Trigger, ...]:
        """The triggers used by the table, in declaration order of :class:`Trigger`."""
        used = {edge.trigger for edge in self.edges}
        return tuple(t for t in Trigger if t in used)

    @property
    def terminal_states(self) -> frozenset[State]:
        """States with no way out (``cancelled`` in the Talon.One table)."""
        return frozenset(s for s in self.states if not self._allowed[s])

    @property
    def states_with_returns(self) -> frozenset[State]:
        """The states a session can be in once items were returned.

        Every state a ``return_items`` edge leads to, and every state reachable
        from those. A session in any other state has no returned units.
        """
        return self._with_returns

    @property
    def states_after_returns(self) -> frozenset[State]:
        """The states a session is in only once some of its units were returned.

        Every path from an initial state to such a state takes a ``return_items``
        edge, and passes no ``open`` state after it (where an edit could remove the
        returned lines): ``partially_returned`` in the Talon.One table. A session
        in one of these states has at least one returned unit.
        """
        return self._after_returns

    def _only_after_returns(self) -> frozenset[State]:
        # Walk (state, whether units are surely returned): a return makes them sure,
        # entering ``open`` (editable) makes them unsure again.
        start = {(s, False) for s in self.initial_states}
        seen = set(start)
        queue = deque(start)
        while queue:
            state, sure = queue.popleft()
            for edge in self.edges_from(state):
                after = edge.destination is not State.OPEN and (
                    sure or edge.trigger is Trigger.RETURN_ITEMS
                )
                if (edge.destination, after) not in seen:
                    seen.add((edge.destination, after))
                    queue.append((edge.destination, after))
        unsure = {state for state, sure in seen if not sure}
        return frozenset(s for s in self.states if s not in unsure)

    def _reachable_after(self, trigger: Trigger) -> frozenset[State]:
        found = {edge.destination for edge in self.edges if edge.trigger is trigger}
        queue = deque(found)
        while queue:
            for edge in self.edges_from(queue.popleft()):
                if edge.destination not in found:
                    found.add(edge.destination)
                    queue.append(edge.destination)
        return frozenset(found)

    def allowed(self, state: State) -> frozenset[Trigger]:
        """The triggers the table allows from ``state``; none for a state the table lacks."""
        try:
            return self._allowed.get(state, frozenset())
        except Exception:  # noqa: BLE001 - unhashable, or its hash raises: no state of any table
            return frozenset()

    def target(self, state: State, trigger: Trigger) -> State | None:
        """Where ``trigger`` leads from ``state``, or ``None`` when the table forbids it.

        ``None`` too for anything that is no state or trigger of the table.
        """
        try:
            return self._targets.get((state, trigger))
        except Exception:  # noqa: BLE001 - unhashable, or its hash raises: no state or trigger
            return None

    def edges_from(self, state: State) -> tuple[Edge, ...]:
        """The edges leaving ``state`` (internal ones included)."""
        return tuple(edge for edge in self.edges if edge.source is state)

    def shortest_paths(self) -> dict[State, tuple[Edge, ...]]:
        """A shortest path of edges from some initial state to every reachable state.

        Initial states map to the empty path. Ties are broken by table order, so the
        result is deterministic.
        """
        paths: dict[State, tuple[Edge, ...]] = {
            s: () for s in self.states if s in self.initial_states
        }
        queue = deque(paths)
        while queue:
            state = queue.popleft()
            for edge in self.edges_from(state):
                if edge.destination not in paths:
                    paths[edge.destination] = (*paths[state], edge)
                    queue.append(edge.destination)
        return paths

    def extend(self, name: str, *edges: Edge) -> Specification:
        """A new specification: this table plus ``edges``."""
        return Specification(
            name=name,
            states=self.states,
            initial_states=self.initial_states,
            edges=(*self.edges, *edges),
        )


CUSTOMER_SESSION: Final = Specification(
    name="customer_session",
    states=(State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED, State.CANCELLED),
    initial_states=frozenset({State.OPEN, State.CLOSED}),
    edges=(
        Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
        Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),
        Edge(Trigger.CANCEL, State.CLOSED, State.CANCELLED),
        Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
        Edge(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED),
        # Further returns: an internal transition, recorded but not a new path.
        Edge(Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED, State.PARTIALLY_RETURNED),
    ),
)
"""The Talon.One table of the seed: the four documented paths (and further returns)."""

REOPENABLE_SESSION: Final = CUSTOMER_SESSION.extend(
    "reopenable_session", Edge(Trigger.REOPEN, State.CLOSED, State.OPEN)
)
"""The opt-in table with Talon.One's reopen endpoint: ``closed -> open``."""
