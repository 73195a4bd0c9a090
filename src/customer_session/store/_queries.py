"""Finding stored sessions by the indexed columns: the arguments of ``ids()`` and its SQL.

Both dialects run the same ``SELECT``; it is built from fixed fragments, one
placeholder per value, so each combination of arguments is one statement with
its own plan (a catch-all ``(? IS NULL OR ...)`` would keep a database from using
the indexes on ``state`` and ``updated``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from customer_session._cart import raise_problems
from customer_session._show import shown
from customer_session._spec import State
from customer_session.exceptions import Problem
from customer_session.store._arguments import problems

if TYPE_CHECKING:
    from collections.abc import Callable

    from customer_session._spec import Specification

SUBJECT = "ids()"
"""How a refused query is named in its ``ValidationError``: by its method, as all are."""


class Query(NamedTuple):
    """The checked arguments of ``ids()``: states by value, bounds in UTC."""

    states: tuple[str, ...] | None
    updated_before: datetime | None
    updated_since: datetime | None
    limit: int | None


def query(
    specification: Specification,
    *,
    state: State | str | Iterable[State | str] | None,
    updated_before: datetime | None,
    updated_since: datetime | None,
    limit: int | None,
) -> Query:
    """Check the arguments of ``ids()``; every bad one is listed in one error.

    Raises:
        ValidationError: A state the table does not have (or none at all), a
            bound that is not an aware ``datetime``, a limit below 1.
    """
    found: list[Problem] = []
    states = None if state is None else _states(specification, state, found)
    found += problems(updated_before=updated_before, updated_since=updated_since, limit=limit)
    raise_problems(SUBJECT, found)
    return Query(
        states,
        None if updated_before is None else updated_before.astimezone(UTC),
        None if updated_since is None else updated_since.astimezone(UTC),
        limit,
    )


def _states(
    specification: Specification,
    state: State | str | Iterable[State | str],
    problems: list[Problem],
) -> tuple[str, ...]:
    # Bytes are iterable too, but of numbers: one wrong value, as a message shows it.
    single = isinstance(state, str | bytes | bytearray) or not isinstance(state, Iterable)
    given: tuple[object, ...] = (state,) if single else tuple(state)
    if not given:
        problems.append(Problem("state", "must name at least one state"))
    chosen: dict[str, None] = {}
    for value in given:
        member = _state(value)
        if member is None or member not in specification.states:
            names = ", ".join(specification.states)
            problems.append(Problem("state", f"must be one of {names}, got {shown(value)}"))
        else:
            chosen[member.value] = None
    return tuple(chosen)


def _state(value: object) -> State | None:
    if not isinstance(value, str):
        return None
    try:
        return State(value)
    except ValueError:
        return None


def select_ids(
    checked: Query,
    mark: str,
    moment: Callable[[datetime], Any] | None = None,
    *,
    by_id: str,
) -> tuple[str, list[Any]]:
    """The ``SELECT`` of matching integration ids, least recently updated first.

    Args:
        checked: The query.
        mark: The dialect's placeholder (``?`` or ``%s``).
        moment: How the dialect passes a time (ISO text in SQLite, as it is
            stored); a ``datetime`` as it is when ``None``.
        by_id: What ties in ``updated`` are ordered by: the integration id in
            code point order, in the dialect's words (SQLite compares text so;
            PostgreSQL by the database's collation unless told ``COLLATE "C"``).

    Returns:
        The statement and its parameters; a ``None`` limit is passed as ``None``
        (the caller maps it to its dialect's "no limit").
    """
    conditions: list[str] = []
    params: list[Any] = []
    if checked.states is not None:
        conditions.append(f"state IN ({', '.join([mark] * len(checked.states))})")
        params.extend(checked.states)
    if checked.updated_before is not None:
        conditions.append(f"updated < {mark}")
        params.append(_passed(checked.updated_before, moment))
    if checked.updated_since is not None:
        conditions.append(f"updated >= {mark}")
        params.append(_passed(checked.updated_since, moment))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    params.append(checked.limit)
    statement = (
        f"SELECT integration_id FROM customer_sessions{where}"  # noqa: S608 - fixed fragments; values are parameters
        f" ORDER BY updated, {by_id} LIMIT {mark}"
    )
    return statement, params


def _passed(value: datetime, moment: Callable[[datetime], Any] | None) -> Any:
    return value if moment is None else moment(value)
