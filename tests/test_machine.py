import gc
import weakref
from types import SimpleNamespace

import pytest
from transitions import Machine

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CustomerSession,
    ReopenableCustomerSession,
    Specification,
    SpecificationError,
    Workflow,
)
from customer_session._machine import _Compiled, engine_for


def _machine_edges(machine: Machine) -> set[tuple[str, str, str]]:
    """Read the edges straight out of the transitions machine."""
    return {
        (source, name, transition.dest or source)
        for name, event in machine.events.items()
        for source, transitions in event.transitions.items()
        for transition in transitions
    }


class TestMachineMatchesTable:
    def test_same_states(self):
        """The machine holds exactly the table's states."""
        for spec in (CUSTOMER_SESSION, REOPENABLE_SESSION):
            machine = engine_for(spec).machine
            assert set(machine.states) == {s.value for s in spec.states}

    def test_same_edges(self):
        """The machine's transitions are exactly the table's edges."""
        for spec in (CUSTOMER_SESSION, REOPENABLE_SESSION):
            expected = {(e.source.value, e.trigger.value, e.destination.value) for e in spec.edges}
            assert _machine_edges(engine_for(spec).machine) == expected

    def test_no_auto_transitions(self):
        """No to_<state> events exist: the only events are the table's triggers."""
        machine = engine_for(CUSTOMER_SESSION).machine
        assert set(machine.events) == {t.value for t in CUSTOMER_SESSION.triggers}
        assert not any(name.startswith("to_") for name in machine.events)

    def test_one_machine_per_specification(self):
        """Every workflow of one specification shares one engine."""
        assert Workflow().engine is CustomerSession.default_workflow.engine
        assert ReopenableCustomerSession.default_workflow.engine is engine_for(REOPENABLE_SESSION)
        assert engine_for(CUSTOMER_SESSION) is not engine_for(REOPENABLE_SESSION)

    def test_no_trigger_methods_are_bound_to_sessions(self):
        """transitions binds nothing onto the session class or its instances."""
        session = CustomerSession(integration_id="order-1")
        assert not hasattr(session, "to_open")
        assert not hasattr(session, "trigger")
        assert not hasattr(session, "may_close")
        assert not hasattr(session, "__dict__")


class TestMachineHoldsNoSession:
    def test_machine_holds_no_model(self):
        """The machine's model list stays empty while sessions are driven."""
        sessions = [CustomerSession(integration_id=f"order-{i}") for i in range(50)]
        for session in sessions:
            session.close()
        assert engine_for(CUSTOMER_SESSION).machine.models == []

    def test_dropped_session_is_collected(self):
        """A session is garbage-collected once the user drops it, after transitions."""
        session = CustomerSession(integration_id="order-1")
        session.close()
        session.cancel()
        ref = weakref.ref(session)
        del session
        gc.collect()
        assert ref() is None

    def test_dropped_session_is_freed_by_refcount(self):
        """No reference cycle keeps a session alive: it is freed without the collector."""
        gc.disable()
        try:
            session = CustomerSession(integration_id="order-1")
            session.close()
            ref = weakref.ref(session)
            del session
            assert ref() is None
        finally:
            gc.enable()


def _machine_of(spec: Specification, *, extra_state: bool = False, **options: object) -> Machine:
    """A ``transitions`` machine of ``spec``'s table, built by hand (to feed the check)."""
    states = [s.value for s in spec.states] + (["elsewhere"] if extra_state else [])
    edges = [
        {"trigger": e.trigger.value, "source": e.source.value, "dest": e.destination.value}
        for e in spec.edges
    ]
    # No "initial" state of its own (transitions adds one unless told which).
    options.setdefault("initial", None)
    return Machine(states=states, transitions=edges, auto_transitions=False, **options)


class TestMachineIsChecked:
    def test_a_machine_with_a_state_the_table_lacks_is_refused(self):
        """An engine refuses a machine whose states differ from the table's."""
        machine = _machine_of(CUSTOMER_SESSION, extra_state=True, model=None)
        with pytest.raises(SpecificationError, match="the machine's states differ"):
            _Compiled(CUSTOMER_SESSION, machine)

    def test_a_machine_with_an_edge_the_table_lacks_is_refused(self):
        """An engine refuses a machine whose transitions differ from the table's edges."""
        machine = _machine_of(REOPENABLE_SESSION, model=None)  # with closed -> open
        with pytest.raises(SpecificationError, match="the machine's transitions differ"):
            _Compiled(CUSTOMER_SESSION, machine)

    def test_a_machine_holding_a_model_is_refused(self):
        """An engine refuses a machine that holds a model (it would keep sessions alive)."""
        machine = _machine_of(CUSTOMER_SESSION, model=SimpleNamespace(), initial="open")
        with pytest.raises(SpecificationError, match="must not hold any model"):
            _Compiled(CUSTOMER_SESSION, machine)
