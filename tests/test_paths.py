from collections import deque

import pytest

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CustomerSession,
    Edge,
    ReopenableCustomerSession,
    State,
    Trigger,
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

    @pytest.mark.parametrize("argname", ["", "a path", 5])
    def test_an_argname_that_is_no_identifier_is_refused(self, argname):
        """parametrize_paths() refuses an argname no test argument can have."""
        with pytest.raises(ValidationError, match="argname: must be the name of a test argument"):
            parametrize_paths(argname=argname)

    def test_follow_builds_the_given_class(self):
        """follow() drives a session of the class it is given."""
        path = shortest_paths(REOPENABLE_SESSION)[State.CANCELLED]
        session = follow(path, session_class=ReopenableCustomerSession)
        assert type(session) is ReopenableCustomerSession

    def test_path_reads_like_the_table(self):
        """A path renders as states joined by triggers."""
        path = shortest_paths()[State.CANCELLED]
        assert str(path) == "open --cancel--> cancelled"


_CLOSE = Edge(Trigger.CLOSE, State.OPEN, State.CLOSED)
_CANCEL_CLOSED = Edge(Trigger.CANCEL, State.CLOSED, State.CANCELLED)


class TestPath:
    def test_edges_given_as_any_iterable_are_kept_as_a_tuple(self):
        """Edges given as a list or a generator are kept as a tuple: following takes every one."""
        path = Path(State.OPEN, iter([_CLOSE, _CANCEL_CLOSED]))
        assert path.edges == (_CLOSE, _CANCEL_CLOSED)
        assert follow(path).state is State.CANCELLED
        assert hash(Path(State.OPEN, [_CLOSE])) == hash(Path(State.OPEN, (_CLOSE,)))

    @pytest.mark.parametrize(
        ("start", "edges", "message"),
        [
            pytest.param("open", (), r"start: must be a State, got 'open'", id="text start"),
            pytest.param(
                State.OPEN, 7, r"edges: must be an iterable of Edges, got 7", id="no iterable"
            ),
            pytest.param(
                State.OPEN, (_CLOSE, 2), r"edges\[1\]: must be an Edge, got 2", id="no edge"
            ),
            pytest.param(
                State.OPEN,
                (Edge("close", "open", "closed"),),  # type: ignore[arg-type]
                r"edges\[0\]: must be an Edge of State and Trigger members, got Edge\(",
                id="edge of text",
            ),
            pytest.param(
                State.CLOSED,
                (_CLOSE,),
                r"edges\[0\]: open --close--> closed leaves 'open', but the path is in 'closed'",
                id="broken chain",
            ),
        ],
    )
    def test_a_malformed_path_is_refused(self, start, edges, message):
        """A start that is no state, or edges that are no edges or do not chain: ValidationError."""
        with pytest.raises(ValidationError, match=message):
            Path(start, edges)

    def test_an_edge_the_table_lacks_is_refused_before_any_trigger(self):
        """follow() refuses, by name, an edge its table lacks, instead of ending elsewhere."""
        path = Path(State.OPEN, (Edge(Trigger.CANCEL, State.OPEN, State.CLOSED),))
        with pytest.raises(
            ValidationError,
            match=r"follow\(\): path\.edges\[0\]: open --cancel--> closed is no edge of "
            r"'customer_session'",
        ):
            follow(path)

    @pytest.mark.parametrize(
        "path",
        [
            Path(State.CANCELLED),
            Path(
                State.PARTIALLY_RETURNED,
                (Edge(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED),),
            ),
        ],
        ids=str,
    )
    def test_a_start_no_session_is_created_in_is_refused_by_name(self, path):
        """follow() refuses a path.start outside the initial states, naming path.start alone."""
        with pytest.raises(ValidationError) as caught:
            follow(path)
        assert [problem.path for problem in caught.value.problems] == ["path.start"]
        assert "a new session starts closed or open" in str(caught.value)
        assert str(caught.value).startswith("follow(): ")

    def test_a_trigger_the_table_lacks_is_refused(self):
        """follow() refuses a reopen for a session class without reopen: a ValidationError."""
        path = shortest_paths(REOPENABLE_SESSION)[State.OPEN]
        reopen = Path(State.CLOSED, (Edge(Trigger.REOPEN, State.CLOSED, State.OPEN),))
        assert follow(path).state is State.OPEN
        with pytest.raises(ValidationError, match=r"is no edge of 'customer_session'"):
            follow(reopen)
