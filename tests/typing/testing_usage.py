"""Typed usage of customer_session.testing; CI type-checks this file with mypy --strict."""

from __future__ import annotations

from typing import assert_type

from hypothesis import given
from hypothesis import strategies as st

from customer_session import CustomerSession, ReopenableCustomerSession, State
from customer_session.testing import (
    Path,
    covering_paths,
    follow,
    parametrize_paths,
    sessions,
    shortest_paths,
)

assert_type(sessions(), st.SearchStrategy[CustomerSession])
assert_type(
    sessions(state=State.CLOSED, session_class=ReopenableCustomerSession),
    st.SearchStrategy[ReopenableCustomerSession],
)
assert_type(follow(covering_paths()[0]), CustomerSession)
path: Path = shortest_paths()[State.CLOSED]
assert_type(follow(path, session_class=ReopenableCustomerSession), ReopenableCustomerSession)


@given(sessions(state=State.OPEN))
def check_open(session: CustomerSession) -> None:
    """A drawn session keeps its type in a typed property test."""
    assert session.state is State.OPEN


@parametrize_paths("edges")
def check_every_edge(path: Path) -> None:
    """The decorator keeps the test function's type (mypy --strict: no untyped decorator)."""
    assert follow(path).state is path.end
