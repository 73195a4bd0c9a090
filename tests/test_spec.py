import copy
import itertools
import pickle
import sys

import pytest

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    Edge,
    Specification,
    SpecificationError,
    State,
    Trigger,
)
from customer_session._spec import member

from .conftest import UNHASHABLE_TIME

# The seed's four paths, written out once here as the test oracle.
SEED_EDGES = {
    (State.OPEN, Trigger.CLOSE, State.CLOSED),
    (State.OPEN, Trigger.CANCEL, State.CANCELLED),
    (State.CLOSED, Trigger.CANCEL, State.CANCELLED),
    (State.CLOSED, Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED),
    (State.PARTIALLY_RETURNED, Trigger.CANCEL, State.CANCELLED),
}


class TestTheTable:
    def test_state_values_are_the_wire_values(self):
        """Each state equals its Talon.One wire value."""
        assert [s.value for s in State] == ["open", "closed", "cancelled", "partially_returned"]
        assert State.OPEN == "open"

    def test_state_changing_edges_are_the_seed_paths(self):
        """The edges that change state are exactly the four paths of the seed."""
        changing = {
            (e.source, e.trigger, e.destination) for e in CUSTOMER_SESSION.edges if not e.internal
        }
        assert changing == SEED_EDGES

    def test_further_returns_are_the_only_internal_edge(self):
        """Further returns stay in partially_returned and are the only internal edge."""
        internal = [e for e in CUSTOMER_SESSION.edges if e.internal]
        assert internal == [
            Edge(Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED, State.PARTIALLY_RETURNED)
        ]

    def test_initial_states(self):
        """A session may start open or closed, nothing else."""
        assert CUSTOMER_SESSION.initial_states == {State.OPEN, State.CLOSED}

    def test_cancelled_is_terminal(self):
        """Cancelled is the one state with no way out."""
        assert CUSTOMER_SESSION.terminal_states == {State.CANCELLED}

    def test_reopen_is_only_in_the_reopenable_table(self):
        """The reopenable table is the seed's table plus closed -> open."""
        extra = set(REOPENABLE_SESSION.edges) - set(CUSTOMER_SESSION.edges)
        assert extra == {Edge(Trigger.REOPEN, State.CLOSED, State.OPEN)}
        assert Trigger.REOPEN not in CUSTOMER_SESSION.triggers

    def test_allowed_and_target_agree_with_edges(self):
        """allowed() and target() are derived from the edges and nothing else."""
        for state in State:
            allowed = CUSTOMER_SESSION.allowed(state)
            for trigger in Trigger:
                target = CUSTOMER_SESSION.target(state, trigger)
                assert (trigger in allowed) == (target is not None)
                if target is not None:
                    assert Edge(trigger, state, target) in CUSTOMER_SESSION.edges

    @pytest.mark.parametrize("value", [["open"], UNHASHABLE_TIME], ids=["list", "time"])
    def test_a_value_whose_hash_fails_has_no_edges(self, value):
        """allowed() and target() of a value whose hash fails are empty and None."""
        assert CUSTOMER_SESSION.allowed(value) == frozenset()
        assert CUSTOMER_SESSION.target(value, Trigger.CLOSE) is None
        assert CUSTOMER_SESSION.target(State.OPEN, value) is None

    def test_shortest_paths_reach_every_state(self):
        """Every state has a shortest path from an initial state, and it follows edges."""
        paths = CUSTOMER_SESSION.shortest_paths()
        assert set(paths) == set(State)
        for state, path in paths.items():
            if not path:
                assert state in CUSTOMER_SESSION.initial_states
                continue
            assert path[0].source in CUSTOMER_SESSION.initial_states
            assert path[-1].destination is state
            for before, after in itertools.pairwise(path):
                assert before.destination is after.source


class TestDerivedSets:
    def test_states_with_returns_of_the_built_in_tables(self):
        """Returned units exist only where a return leads: partially_returned and cancelled."""
        expected = {State.PARTIALLY_RETURNED, State.CANCELLED}
        assert CUSTOMER_SESSION.states_with_returns == expected
        assert REOPENABLE_SESSION.states_with_returns == expected

    def test_states_with_returns_follow_the_edges_after_a_return(self):
        """Every state reachable after a return_items edge may hold returned units."""
        spec = Specification(
            name="loop",
            states=(State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED),
            initial_states=frozenset({State.OPEN}),
            edges=(
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
                Edge(Trigger.REOPEN, State.PARTIALLY_RETURNED, State.OPEN),
            ),
        )
        assert spec.states_with_returns == {State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED}

    def test_states_after_returns_of_the_built_in_tables(self):
        """Only partially_returned is reached by a return alone; cancelled also by a cancel."""
        assert CUSTOMER_SESSION.states_after_returns == {State.PARTIALLY_RETURNED}
        assert REOPENABLE_SESSION.states_after_returns == {State.PARTIALLY_RETURNED}

    def test_states_after_returns_exclude_those_past_an_open_state(self):
        """A state reached through an open state after the return may have lost its returns."""
        spec = Specification(
            name="loop",
            states=(State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED, State.CANCELLED),
            initial_states=frozenset({State.CLOSED}),
            edges=(
                Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
                Edge(Trigger.REOPEN, State.PARTIALLY_RETURNED, State.OPEN),
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),
            ),
        )
        # Every path to cancelled takes a return, then passes open.
        assert spec.states_after_returns == {State.PARTIALLY_RETURNED}

    def test_states_after_returns_include_those_past_a_later_edge(self):
        """A state reached only by an edge after a return (not open) is one after returns."""
        spec = Specification(
            name="strict",
            states=(State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED, State.CANCELLED),
            initial_states=frozenset({State.OPEN}),
            edges=(
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
                Edge(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED),
            ),
        )
        # The only way into cancelled is a cancel after a return.
        assert spec.states_after_returns == {State.PARTIALLY_RETURNED, State.CANCELLED}

    def _spec(self, *edges: Edge, initial=frozenset({State.OPEN})) -> Specification:
        return Specification(name="t", states=tuple(State), initial_states=initial, edges=edges)

    def test_duplicate_source_and_trigger_is_refused(self):
        """Two edges for one (state, trigger) pair are refused when declared."""
        with pytest.raises(SpecificationError, match="already defined"):
            self._spec(
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.CLOSE, State.OPEN, State.CANCELLED),
            )

    def test_unreachable_state_is_refused(self):
        """A state no path reaches is refused, by name."""
        with pytest.raises(SpecificationError, match="partially_returned"):
            self._spec(
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.CANCEL, State.CLOSED, State.CANCELLED),
            )

    def test_unknown_state_in_an_edge_is_refused(self):
        """An edge to a state outside the specification is refused."""
        with pytest.raises(SpecificationError, match="not a state"):
            Specification(
                name="t",
                states=(State.OPEN, State.CLOSED),
                initial_states=frozenset({State.OPEN}),
                edges=(Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),),
            )

    def test_triggers_follow_the_declaration_order_of_trigger(self):
        """triggers lists the table's triggers in Trigger's order, whatever the edges' order."""
        spec = self._spec(
            Edge(Trigger.REOPEN, State.CLOSED, State.OPEN),
            Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
            Edge(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED),
            Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
        )
        assert spec.triggers == (
            Trigger.CLOSE,
            Trigger.CANCEL,
            Trigger.RETURN_ITEMS,
            Trigger.REOPEN,
        )

    def test_a_value_nested_too_deep_to_show_names_no_member(self):
        """member() of a list nested too deep for repr() is None, not a RecursionError."""
        value: object = []
        for _ in range(sys.getrecursionlimit() * 2):
            value = [value]
        assert member(State, value) is None
        assert member(Trigger, value) is None

    def test_an_initial_state_that_is_not_listed_is_refused(self):
        """An initial state missing from the states is refused, by name."""
        with pytest.raises(SpecificationError, match="initial state 'open' is not a state"):
            Specification(
                name="t",
                states=(State.CLOSED,),
                initial_states=frozenset({State.OPEN, State.CLOSED}),
                edges=(),
            )

    def test_a_state_with_one_way_out_is_not_terminal(self):
        """Only a state without any edge out is terminal, not one with a single edge."""
        spec = self._spec(
            Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
            Edge(Trigger.RETURN_ITEMS, State.CLOSED, State.PARTIALLY_RETURNED),
            Edge(Trigger.CANCEL, State.PARTIALLY_RETURNED, State.CANCELLED),
        )
        assert spec.terminal_states == {State.CANCELLED}

    def test_no_initial_state_is_refused(self):
        """A specification needs an initial state."""
        with pytest.raises(SpecificationError, match="there must be at least one initial state"):
            self._spec(initial=frozenset())

    def test_a_state_listed_twice_is_refused(self):
        """Each state is listed once: a repeated one is refused when declared."""
        with pytest.raises(SpecificationError, match="a state is listed twice"):
            _like_the_seed(states=(*CUSTOMER_SESSION.states, State.OPEN))

    def test_specification_error_is_a_value_error(self):
        """Definition errors are also ValueErrors."""
        assert issubclass(SpecificationError, ValueError)


def _like_the_seed(**changes: object) -> Specification:
    """CUSTOMER_SESSION's arguments with ``changes``, passed untyped as a caller could."""
    arguments: dict[str, object] = {
        "name": CUSTOMER_SESSION.name,
        "states": CUSTOMER_SESSION.states,
        "initial_states": CUSTOMER_SESSION.initial_states,
        "edges": CUSTOMER_SESSION.edges,
        **changes,
    }
    return Specification(**arguments)  # type: ignore[arg-type]


class TestTypesAtDefinition:
    @pytest.mark.parametrize(
        "name",
        ["", "two\nlines", "tab\there", "\ud800", "nul\x00", 42, 10**5000],
        ids=["empty", "newline", "tab", "surrogate", "nul", "number", "huge number"],
    )
    def test_name_that_is_not_printable_text_is_refused(self, name):
        """A name that is empty, not a string or has control characters or surrogates is refused."""
        with pytest.raises(SpecificationError, match="non-empty printable string"):
            _like_the_seed(name=name)

    @pytest.mark.parametrize("name", ["ends in \\", 'a \\" b', 'odd \\\\\\" run', "\\\\\\"])
    def test_name_no_dot_identifier_can_hold_is_refused(self, name):
        """A name with an odd run of backslashes before a quote or at its end is refused."""
        with pytest.raises(SpecificationError, match="odd number of backslashes"):
            _like_the_seed(name=name)

    @pytest.mark.parametrize(
        "name", ['a "quoted" name', "ünïcödé 😀", "<b>graph</b>", "end", "C:\\x", 'a \\\\" b']
    )
    def test_printable_name_is_kept(self, name):
        """Any printable name is kept as given (diagrams quote it)."""
        assert _like_the_seed(name=name).name == name

    def test_plain_string_state_is_refused(self):
        """A string equal to a state is not a State and is refused, naming it."""
        with pytest.raises(SpecificationError, match="state: 'open' is not a State member"):
            _like_the_seed(states=("open", *CUSTOMER_SESSION.states[1:]))

    def test_plain_string_initial_state_is_refused(self):
        """An initial state given as a plain string is refused."""
        with pytest.raises(SpecificationError, match="initial state: 'open'"):
            _like_the_seed(initial_states=frozenset({"open"}))

    def test_plain_string_trigger_is_refused(self):
        """An edge whose trigger is a plain string is refused, naming the edge."""
        edge = Edge('a "trigger"', State.OPEN, State.CLOSED)  # type: ignore[arg-type]
        with pytest.raises(SpecificationError, match=r"its trigger: .* is not a Trigger member"):
            _like_the_seed(edges=(edge,))

    def test_plain_string_destination_is_refused(self):
        """An edge to a plain string is refused, naming the edge."""
        edge = Edge(Trigger.CLOSE, State.OPEN, "graph")  # type: ignore[arg-type]
        with pytest.raises(SpecificationError, match="its destination: 'graph'"):
            _like_the_seed(edges=(edge,))

    def test_edge_that_is_not_an_edge_is_refused(self):
        """A row that is not an Edge is refused."""
        with pytest.raises(SpecificationError, match="is not an Edge"):
            _like_the_seed(edges=(*CUSTOMER_SESSION.edges, ("open", "close", "closed")))


class TestOwnCopies:
    def test_lists_and_sets_become_a_tuple_and_a_frozenset(self):
        """States given as a list and initial states as a set are kept as tuple and frozenset."""
        spec = _like_the_seed(
            states=list(CUSTOMER_SESSION.states),
            initial_states=set(CUSTOMER_SESSION.initial_states),
            edges=list(CUSTOMER_SESSION.edges),
        )
        assert spec == CUSTOMER_SESSION
        assert type(spec.states) is tuple
        assert type(spec.initial_states) is frozenset
        assert hash(spec) == hash(CUSTOMER_SESSION)

    def test_changing_the_given_list_afterwards_does_not_change_the_table(self):
        """A caller's list changed after the definition leaves the checked table as it was."""
        states = list(CUSTOMER_SESSION.states)
        spec = _like_the_seed(states=states)
        states.pop()
        assert spec.states == CUSTOMER_SESSION.states

    @pytest.mark.parametrize("field", ["states", "initial_states", "edges"])
    @pytest.mark.parametrize("value", [None, 3, "open"])
    def test_value_that_is_not_a_collection_is_refused(self, field, value):
        """States, initial states or edges given as no collection (or a string) are refused."""
        with pytest.raises(SpecificationError, match=f"{field} must be a collection, got"):
            _like_the_seed(**{field: value})

    @pytest.mark.parametrize(
        "copied",
        [lambda s: pickle.loads(pickle.dumps(s)), copy.copy, copy.deepcopy],  # noqa: S301 - our own data
        ids=["pickle", "copy", "deepcopy"],
    )
    @pytest.mark.parametrize("spec", [CUSTOMER_SESSION, REOPENABLE_SESSION], ids=["seed", "reopen"])
    def test_a_pickled_or_copied_specification_is_equal_and_works(self, copied, spec):
        """A pickled or copied specification equals the original and looks its table up."""
        again = copied(spec)
        assert again == spec
        assert hash(again) == hash(spec)
        assert again.target(State.OPEN, Trigger.CLOSE) is State.CLOSED
        assert again.allowed(State.CLOSED) == spec.allowed(State.CLOSED)

    @pytest.mark.parametrize("field", ["states", "edges"])
    @pytest.mark.parametrize("kind", [set, frozenset])
    def test_states_or_edges_given_as_a_set_are_refused(self, field, kind):
        """States or edges given as a set (no order, so no display order) are refused."""
        given = kind(getattr(CUSTOMER_SESSION, field))
        with pytest.raises(SpecificationError, match=f"{field} must be in order"):
            _like_the_seed(**{field: given})

    def test_unhashable_initial_state_is_refused(self):
        """An initial state that cannot be in a set is refused as not a State member."""
        with pytest.raises(SpecificationError, match=r"initial state: \['open'\] is not a State"):
            _like_the_seed(initial_states=[["open"]])

    def test_an_initial_state_whose_hash_raises_is_refused(self):
        """An initial state whose hash raises (not TypeError) is refused as not a State member."""
        with pytest.raises(SpecificationError, match=r"initial state: datetime.* is not a State"):
            _like_the_seed(initial_states=[UNHASHABLE_TIME])
