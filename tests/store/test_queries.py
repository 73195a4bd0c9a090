"""The arguments of ids() and the SELECT built from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customer_session import CUSTOMER_SESSION, State, ValidationError
from customer_session.store._queries import Query, query, select_ids

MOMENTS = st.none() | st.datetimes(timezones=st.just(UTC))


def checked(**arguments):
    given_ = {"state": None, "updated_before": None, "updated_since": None, "limit": None}
    return query(CUSTOMER_SESSION, **(given_ | arguments))


class TestQuery:
    def test_states_are_kept_once_each_in_order(self):
        """Repeated states are asked for once; a single state may be a name or a member."""
        assert checked(state=["closed", State.OPEN, "closed"]).states == ("closed", "open")
        assert checked(state=State.CANCELLED).states == ("cancelled",)

    def test_bounds_are_taken_to_utc(self):
        """An aware bound in any zone is the same moment in UTC."""
        moment = datetime(2026, 3, 2, 5, 15, tzinfo=timezone(timedelta(hours=-5)))
        bound = checked(updated_before=moment).updated_before
        assert bound == moment
        assert bound is not None
        assert bound.tzinfo is UTC

    def test_an_unknown_state_is_refused_with_the_known_ones(self):
        """A state name the table does not have is refused, listing those it has."""
        with pytest.raises(
            ValidationError,
            match="state: must be one of open, closed, partially_returned, cancelled, got 'x'",
        ):
            checked(state="x")

    @pytest.mark.parametrize("state", [b"open", bytearray(b"open")])
    def test_bytes_are_refused_as_one_value(self, state):
        """A state given as bytes is one wrong value, not a sequence of numbers."""
        with pytest.raises(ValidationError) as caught:
            checked(state=state)
        (problem,) = caught.value.problems
        assert problem.path == "state"
        assert problem.message.endswith(f"got {state!r}")

    @pytest.mark.parametrize(
        ("arguments", "path"),
        [
            ({"state": 3}, "state"),
            ({"state": [None]}, "state"),
            ({"updated_since": "2026-03-02"}, "updated_since"),
            ({"limit": 1.5}, "limit"),
            ({"limit": True}, "limit"),
        ],
    )
    def test_values_of_the_wrong_type_are_refused(self, arguments, path):
        """A non-state, a text time, a non-integer limit are each refused by name."""
        with pytest.raises(ValidationError) as caught:
            checked(**arguments)
        assert [p.path for p in caught.value.problems] == [path]


class TestSelect:
    @given(
        st.none() | st.lists(st.sampled_from(["open", "closed", "cancelled"]), min_size=1),
        MOMENTS,
        MOMENTS,
        st.none() | st.integers(min_value=1),
    )
    def test_one_placeholder_per_parameter(self, states, before, since, limit):
        """Whatever the combination, the statement has as many placeholders as parameters."""
        q = Query(None if states is None else tuple(states), before, since, limit)
        for mark in ("?", "%s"):
            statement, params = select_ids(q, mark, by_id="integration_id")
            assert statement.count(mark) == len(params)
            assert params[-1] == limit
            assert statement.endswith(f"ORDER BY updated, integration_id LIMIT {mark}")

    def test_times_are_passed_as_the_dialect_stores_them(self):
        """SQLite gets ISO text for the bounds, PostgreSQL the datetimes themselves."""
        moment = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
        q = Query(None, moment, moment, None)
        assert select_ids(q, "?", datetime.isoformat, by_id="integration_id")[1] == [
            "2026-03-02T10:15:00+00:00",
            "2026-03-02T10:15:00+00:00",
            None,
        ]
        assert select_ids(q, "%s", by_id="integration_id")[1] == [moment, moment, None]


# A store of many sessions, nearly all of them finished long ago, and the few open
# carts the newest: what a sweeper of idle carts runs ids() against.
PLANNED_SESSIONS = 5_000
FILL = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO customer_sessions (integration_id, state, version, updated, document)
        SELECT 'order-' || i, CASE WHEN i > ? THEN 'open' ELSE 'closed' END, 1,
            strftime('%Y-%m-%dT%H:%M:%S+00:00', '2026-01-01', '+' || i || ' seconds'), '{}'
        FROM n""",
    "postgres": """
        INSERT INTO customer_sessions
            (integration_id, integration_id_digest, state, version, updated, document)
        SELECT 'order-' || i, sha256(convert_to('order-' || i, 'UTF8')),
            CASE WHEN i > ? THEN 'open' ELSE 'closed' END, 1,
            timestamptz '2026-01-01' + i * interval '1 second', '{}'
        FROM generate_series(1, ?) AS i""",
}


def plan_of(sql, backend: str, statement: str, params: list[object]) -> str:
    """The database's plan for ``statement`` (``?`` placeholders), as text."""
    if backend == "sqlite":
        return "\n".join(row[3] for row in sql(f"EXPLAIN QUERY PLAN {statement}", *params))
    return "\n".join(row[0] for row in sql(f"EXPLAIN {statement}", *params))


class TestPlans:
    def test_a_sweep_of_one_state_reads_only_the_sessions_in_it(self, backend, store, sql):
        """ids() of a state and a bound reads that state's rows by an index, not by a filter.

        Otherwise the oldest sessions of every other state are read and thrown away
        first, on every call: a million finished orders for ten idle carts.
        """
        store.counts()  # creates the schema
        few = PLANNED_SESSIONS // 20
        fill_params = (
            (PLANNED_SESSIONS, PLANNED_SESSIONS - few)
            if backend == "sqlite"
            else (PLANNED_SESSIONS - few, PLANNED_SESSIONS)
        )
        sql(FILL[backend], *fill_params)
        sql("ANALYZE")
        cutoff = datetime(2027, 1, 1, tzinfo=UTC)
        assert len(store.ids(state=State.OPEN, updated_before=cutoff, limit=10)) == 10
        q = checked(state=State.OPEN, updated_before=cutoff, limit=10)
        statement, params = select_ids(
            q,
            "?",
            datetime.isoformat if backend == "sqlite" else None,
            by_id=type(store)._sql.by_id,
        )
        plan = plan_of(sql, backend, statement, params)
        if backend == "sqlite":
            assert "(state=? AND updated<?)" in plan, plan
        else:
            assert "Index Cond: ((state = 'open'::text) AND (updated <" in plan, plan
