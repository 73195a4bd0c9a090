from collections import deque

import pytest

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CustomerSession,
    ReopenableCustomerSession,
    State,
    ValidationError,
)
from customer_session._paths import (
    Path,
    covering_paths,
    follow,
    parametrize_paths,
    shortest_paths,
)

TABLES = [(CUSTOMER_SESSION, CustomerSession), (REOPENABLE_SESSION, ReopenableCustomerSession)]


def _distance(spec, state):
    """Breadth-first distance from the initial states, computed independently."""
    seen = dict.fromkeys(spec.initial_states, 0)
    queue = deque(seen)
    while queue:
        current = queue.popleft()
        for edge in spec.edges:
            if edge.source is current and edge.destination not in seen:
                seen[edge.destination] = seen[current] + 1
                queue.append(edge.destination)
    return seen[state]


@pytest.mark.parametrize(("spec", "session_class"), TABLES)
class TestGeneratedPaths:
    def test_covering_paths_take_every_edge(self, spec, session_class):
        """Together the covering paths take every edge of the table."""
        taken = {edge for path in covering_paths(spec) for edge in path.edges}
        assert taken == set(spec.edges)

    def test_paths_start_in_initial_states_and_chain(self, spec, session_class):
        """Every generated path starts in an initial state and its edges chain."""
        for path in (*covering_paths(spec), *shortest_paths(spec).values()):
            assert path.start in spec.initial_states
            state = path.start
            for edge in path.edges:
                assert edge.source is state
                state = edge.destination
            assert state is path.end

    def test_shortest_paths_are_shortest(self, spec, session_class):
        """The path to each state is as short as a breadth-first search says."""
        for state, path in shortest_paths(spec).items():
            assert path.end is state
            assert len(path.edges) == _distance(spec, state)

    def test_following_a_path_ends_where_it_says(self, spec, session_class):
        """A session driven along a path ends in the path's end state with that history."""
        for path in covering_paths(spec):
            session = follow(path, session_class=session_class)
            assert session.state is path.end
            assert [r.trigger for r in session.history] == list(path.triggers)


class TestParametrize:
    @parametrize_paths("states")
    def test_helper_parametrizes_over_states(self, path):
        """The pytest helper hands each shortest path to the test."""
        assert isinstance(path, Path)
        assert follow(path).state is path.end

    def test_unknown_kind_is_refused(self):
        """Only 'edges' and 'states' paths exist; another kind is a ValidationError naming it."""
        with pytest.raises(ValidationError, match="kind: must be 'edges' or 'states', got 'loops'"):
            parametrize_paths("loops")  # type: ignore[arg-type]

    def test_follow_builds_the_given_class(self):
        """follow() drives a session of the class it is given."""
        path = shortest_paths(REOPENABLE_SESSION)[State.CANCELLED]
        session = follow(path, session_class=ReopenableCustomerSession)
        assert type(session) is ReopenableCustomerSession

    def test_path_reads_like_the_table(self):
        """A path renders as states joined by triggers."""
        path = shortest_paths()[State.CANCELLED]
        assert str(path) == "open --cancel--> cancelled"
