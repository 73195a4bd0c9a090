"""Paths through a specification, for model-based testing.

Public through :mod:`customer_session.testing`: the shortest path to every state, a
set of paths that together take every edge (edge coverage), driving a session along
a path, and a pytest helper that parametrizes a test over paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from attrs import field, frozen

from customer_session._cart import (
    CartItem,
    ReturnedItem,
    Unreadable,
    is_int,
    raise_problems,
    read_entries,
)
from customer_session._show import shown
from customer_session._spec import CUSTOMER_SESSION, Edge, Specification, State, Trigger
from customer_session.exceptions import Problem, ValidationError
from customer_session.model import CustomerSession, _check_session_class

if TYPE_CHECKING:
    from collections.abc import Callable

    from customer_session.hooks import Workflow

_S = TypeVar("_S", bound=CustomerSession)
_F = TypeVar("_F", bound="Callable[..., Any]")

LARGEST_SIZE = 10_000
"""The largest size or count the test kit's functions take (Hypothesis draws far smaller)."""


def count(minimum: int, maximum: int = LARGEST_SIZE) -> tuple[Callable[[object], bool], str]:
    """The rule of a size or count argument: an integer from ``minimum`` to ``maximum``."""
    return (
        lambda value: is_int(value) and minimum <= value <= maximum,
        f"must be an integer from {minimum} to {maximum}",
    )


def instance(kind: type, *, optional: bool = False) -> tuple[Callable[[object], bool], str]:
    """The rule of an argument that must be a ``kind`` (or ``None``, if ``optional``)."""
    return (
        lambda value: isinstance(value, kind) or (optional and value is None),
        f"must be a {kind.__name__}{' or None' if optional else ''}",
    )


SPECIFICATION = instance(Specification)
NAME = "must be the name of a test argument (a Python identifier)"


def check_arguments(
    function: str, **arguments: tuple[object, tuple[Callable[[object], bool], str]]
) -> None:
    """Refuse the arguments of a test kit function that break their rule, all in one error.

    The one check of the arguments of :mod:`customer_session.testing`: a bad one is
    refused when the function is called, not as a bare error (or Hypothesis's own)
    from deep inside when a strategy is drawn from.

    Args:
        function: The function's name, for the message (``carts``).
        **arguments: Each argument's value and its rule (:func:`count`, :func:`instance`).

    Raises:
        ValidationError: Every argument that breaks its rule, by name.
    """
    raise_problems(
        f"{function}()",
        [
            Problem(name, f"{message}, got {shown(value):.80}")
            for name, (value, (ok, message)) in arguments.items()
            if not ok(value)
        ],
    )


def _edge_tuple(edges: Iterable[Edge]) -> tuple[Edge, ...]:
    # Kept as a tuple: a path is hashable, and its edges are read more than once (a
    # generator would be used up by the first). Anything else is left for the check.
    given: object = edges
    if isinstance(given, Iterable) and not isinstance(given, str | bytes):
        return read_entries(given)  # type: ignore[return-value] # an Unreadable is refused by the check
    return given  # type: ignore[return-value] # refused by the check


@frozen
class Path:
    """A walk through the table: consecutive edges from a start state.

    Attributes:
        start: The state the walk starts in (an initial state for generated paths).
        edges: The edges taken, in order (any iterable of them, kept as a tuple).

    Raises:
        ValidationError: ``start`` is not a :class:`State`, ``edges`` are not
            :class:`Edge` objects of states and triggers, or an edge does not leave
            the state the one before it entered (the first, ``start``).
    """

    start: State
    edges: tuple[Edge, ...] = field(default=(), converter=_edge_tuple)

    def __attrs_post_init__(self) -> None:
        """Refuse a start or edges that are no walk, as no table could follow them."""
        raise_problems("path", _walk_problems(self.start, self.edges))

    @property
    def end(self) -> State:
        """The state the walk ends in."""
        return self.edges[-1].destination if self.edges else self.start

    @property
    def triggers(self) -> tuple[Trigger, ...]:
        """The triggers to fire, in order."""
        return tuple(edge.trigger for edge in self.edges)

    def __str__(self) -> str:
        """Render as ``open --close--> closed --cancel--> cancelled``."""
        return str(self.start) + "".join(f" --{e.trigger}--> {e.destination}" for e in self.edges)


def _walk_problems(start: object, edges: object) -> list[Problem]:
    if type(start) is not State:
        return [Problem("start", f"must be a State, got {shown(start):.80}")]
    if not isinstance(edges, tuple):
        got = repr(edges) if isinstance(edges, Unreadable) else f"{shown(edges):.80}"
        return [Problem("edges", f"must be an iterable of Edges, got {got}")]
    state = start
    for index, edge in enumerate(edges):
        where = f"edges[{index}]"
        if not isinstance(edge, Edge):
            return [Problem(where, f"must be an Edge, got {shown(edge):.80}")]
        if not (
            type(edge.trigger) is Trigger
            and type(edge.source) is State
            and type(edge.destination) is State
        ):
            message = f"must be an Edge of State and Trigger members, got {shown(edge):.120}"
            return [Problem(where, message)]
        if edge.source is not state:
            return [Problem(where, f"{edge} leaves '{edge.source}', but the path is in '{state}'")]
        state = edge.destination
    return []


def shortest_paths(specification: Specification = CUSTOMER_SESSION) -> dict[State, Path]:
    """A shortest path from an initial state to every state, in table order."""
    check_arguments("shortest_paths", specification=(specification, SPECIFICATION))
    return {
        state: Path(edges[0].source if edges else state, edges)
        for state, edges in specification.shortest_paths().items()
    }


def covering_paths(specification: Specification = CUSTOMER_SESSION) -> tuple[Path, ...]:
    """Paths from initial states that together take every edge of the table.

    Each path reaches the first edge not yet taken by its shortest route, takes it,
    then keeps taking edges not yet taken while one leaves the current state. The
    result is deterministic and small (one path per uncovered branch).
    """
    check_arguments("covering_paths", specification=(specification, SPECIFICATION))
    to_state = specification.shortest_paths()
    taken: set[Edge] = set()
    paths: list[Path] = []
    for edge in specification.edges:
        if edge in taken:
            continue
        prefix = to_state[edge.source]
        walk = [*prefix, edge]
        taken.update(walk)
        state = edge.destination
        while True:
            fresh = [e for e in specification.edges_from(state) if e not in taken]
            if not fresh:
                break
            walk.append(fresh[0])
            taken.add(fresh[0])
            state = fresh[0].destination
        paths.append(Path(walk[0].source, tuple(walk)))
    return tuple(paths)


@overload
def follow(
    path: Path, *, workflow: Workflow | None = None, integration_id: str = "order-path"
) -> CustomerSession: ...


@overload
def follow(
    path: Path,
    *,
    session_class: type[_S],
    workflow: Workflow | None = None,
    integration_id: str = "order-path",
) -> _S: ...


def follow(
    path: Path,
    *,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
    integration_id: str = "order-path",
) -> CustomerSession:
    """A new session in ``path.start`` driven along ``path`` with its real triggers.

    The cart holds one item with enough units for every return on the path; each
    ``return_items`` returns one unit of it.

    Raises:
        ValidationError: ``path`` is not a :class:`Path`, starts in a state no
            session of ``session_class`` is created in, or takes an edge that
            ``session_class``'s table does not have (checked before the session is
            made: the session would end elsewhere than ``path.end``).
        WorkflowError: ``session_class`` is not a ``CustomerSession`` class.
        CustomerSessionError: Whatever the session raises (a guard of ``workflow``
            refusing a step, for instance).
    """
    check_arguments("follow", path=(path, instance(Path)))
    _check_session_class(session_class)
    spec = session_class.specification
    problems = [
        Problem(f"path.edges[{index}]", f"{edge} is no edge of {spec.name!r}")
        for index, edge in enumerate(path.edges)
        if spec.target(edge.source, edge.trigger) is not edge.destination
    ]
    if path.start not in spec.initial_states:
        # Named here: the constructor would blame the cart follow() made, and advise restore().
        allowed = " or ".join(sorted(spec.initial_states))
        problems.insert(
            0,
            Problem("path.start", f"a new session starts {allowed}, not '{path.start}'"),
        )
    raise_problems("follow()", problems)
    returns = sum(1 for t in path.triggers if t is Trigger.RETURN_ITEMS)
    session = session_class(
        integration_id=integration_id,
        state=path.start,
        cart_items=[CartItem(sku="PATH-1", quantity=max(returns, 1), price=1.0)],
        workflow=session_class.default_workflow if workflow is None else workflow,
    )
    for trigger in path.triggers:
        items = (ReturnedItem(position=0, quantity=1),) if trigger is Trigger.RETURN_ITEMS else ()
        session.fire(trigger, items=items)
    return session


def parametrize_paths(
    kind: Literal["edges", "states"] = "edges",
    specification: Specification = CUSTOMER_SESSION,
    *,
    argname: str = "path",
) -> Callable[[_F], _F]:
    """A ``pytest.mark.parametrize`` over paths of ``specification``.

    Args:
        kind: ``"edges"`` for :func:`covering_paths`, ``"states"`` for one
            shortest path per state.
        specification: The table.
        argname: The test argument that receives each :class:`Path`.

    Returns:
        The pytest mark, typed as the decorator it is used as (so a type checker
        keeps the test function's type).

    Raises:
        ValidationError: ``kind`` is neither ``"edges"`` nor ``"states"``,
            ``specification`` is not a :class:`Specification`, or ``argname`` is not
            a Python identifier.
    """
    check_arguments(
        "parametrize_paths",
        specification=(specification, SPECIFICATION),
        argname=(argname, (lambda name: isinstance(name, str) and name.isidentifier(), NAME)),
    )
    given: object = kind  # typed, but callers may pass anything
    if given == "edges":
        paths = list(covering_paths(specification))
    elif given == "states":
        paths = list(shortest_paths(specification).values())
    else:
        raise ValidationError.single(
            "parametrize_paths()", "kind", f"must be 'edges' or 'states', got {shown(kind):.80}"
        )
    import pytest  # noqa: PLC0415 - only test code calls this, and pytest may be absent

    return pytest.mark.parametrize(argname, paths, ids=[str(p) for p in paths])
