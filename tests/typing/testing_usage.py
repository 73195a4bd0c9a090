"""Typed usage of customer_session.testing; CI type-checks this file with mypy --strict."""

from __future__ import annotations

from typing import assert_type

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import rule

from customer_session import CustomerSession, ReopenableCustomerSession, State
from customer_session.testing import (
    Path,
    SessionStateMachine,
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


class ReopenMachine(SessionStateMachine[ReopenableCustomerSession]):
    """A machine of the reopen table: its sessions have that type, reopen() included."""

    @rule()
    def reopen_first(self) -> None:
        """The sessions and the session class are the type argument's."""
        session = self.sessions[0]
        assert_type(session, ReopenableCustomerSession)
        self.attempt(session, session.reopen)
        assert_type(self.session_class, type[ReopenableCustomerSession])


class PlainMachine(SessionStateMachine):
    """Without a type argument, as before it took one: sessions of CustomerSession."""

    @rule()
    def close_first(self) -> None:
        """The sessions are CustomerSession objects."""
        assert_type(self.sessions[0], CustomerSession)


def mismatched_machine() -> None:
    """Never run: the class would be refused when created (WorkflowError)."""

    class Mismatched(SessionStateMachine[ReopenableCustomerSession]):
        session_class = CustomerSession  # type: ignore[assignment]

    del Mismatched
