"""Shared helpers of the stateful proofs."""

from customer_session import CustomerSession, State, Trigger

# The moves of the two tables, written out by hand: the oracle the stateful proofs check
# every history against. Derived from nothing in the package (the machines' own
# invariants follow ``session.specification``), so a table that grows an edge fails them.
SEED_MOVES = frozenset(
    {
        (State.OPEN, Trigger.CLOSE, State.CLOSED),
        (State.OPEN, Trigger.CANCEL, State.CANCELLED),
        (State.CLOSED, Trigger.CANCEL, State.CANCELLED),
        (State.CLOSED, Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED),
        (State.PARTIALLY_RETURNED, Trigger.CANCEL, State.CANCELLED),
        (State.PARTIALLY_RETURNED, Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED),
    }
)
REOPEN_MOVES = SEED_MOVES | {(State.CLOSED, Trigger.REOPEN, State.OPEN)}


def assert_seed_moves(sessions: list[CustomerSession]) -> None:
    """Every session was created open or closed and took only moves of its hand-written table."""
    for session in sessions:
        allowed = REOPEN_MOVES if Trigger.REOPEN in session.specification.triggers else SEED_MOVES
        history = session.history
        start = history[0].source if history else session.state
        assert start in {State.OPEN, State.CLOSED}, f"{session!r} was created {start}"
        for record in history:
            move = (record.source, record.trigger, record.destination)
            assert move in allowed, f"{session.integration_id}: {record!r} is no move of the seed"
