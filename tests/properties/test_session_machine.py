"""The stateful proof: nothing outside the table is reachable through the public API."""

from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from customer_session import Phase, ReopenableCustomerSession, ReturnedItem, Trigger, Workflow
from customer_session._stateful import SessionStateMachine

from .conftest import assert_seed_moves


class OracleMachine(SessionStateMachine):
    """The base machine, whose invariants also hold against the hand-written tables."""

    @invariant()
    def moves_are_the_seeds(self):
        """Every session starts open or closed and takes only the moves written out by hand."""
        assert_seed_moves(self.sessions)


class ChaosMachine(OracleMachine):
    """Random guards that refuse and hooks that raise in every phase, switched by rules."""

    def make_workflow(self) -> Workflow:
        """A workflow whose guard and hooks obey the switches set by the rules."""
        self.failing: set[Phase] = set()
        self.refusing: set[Trigger] = set()
        workflow = Workflow()

        def guard(event):
            return "refused by the test" if event.trigger in self.refusing else None

        workflow.guard(guard)
        for phase in Phase:
            if phase is not Phase.GUARD:
                workflow.register(phase, self._hook(phase))
        return workflow

    def _hook(self, phase):
        def hook(event):
            if phase in self.failing:
                if event.session.state == "open":  # change something the rollback must undo
                    event.session.set_attribute("chaos", phase.value)
                raise RuntimeError(f"{phase.value} failed")

        return hook

    @rule(phase=st.sampled_from(list(Phase)), on=st.booleans())
    def switch_failure(self, phase, on):
        """Make the hooks of one phase raise, or stop raising."""
        (self.failing.add if on else self.failing.discard)(phase)

    @rule(trigger=st.sampled_from(list(Trigger)), on=st.booleans())
    def switch_refusal(self, trigger, on):
        """Make the guard refuse one trigger, or stop refusing it."""
        (self.refusing.add if on else self.refusing.discard)(trigger)

    @invariant()
    def update_count_counts_changes(self):
        """update_count is 1 plus every committed transition and edit."""
        for session in self.sessions:
            assert session.update_count == 1 + len(session.history) + self.edits[id(session)]


class ReopenableMachine(OracleMachine):
    """The same invariants on the opt-in reopen table."""

    session_class = ReopenableCustomerSession


class NamedWorkflowMachine(OracleMachine):
    """Sessions of a named workflow, so the pickle round trip runs too."""

    def make_workflow(self) -> Workflow:
        """A fresh named workflow per run, of the same name (a run frees it when it ends)."""
        return Workflow(name="stateful-named")


class ChainingMachine(OracleMachine):
    """After-commit hooks that fire the next trigger, as TransitionInProgress advises."""

    def make_workflow(self) -> Workflow:
        """Cancel an order that closes with nothing to pay; return one unit of a big one."""
        workflow = Workflow()

        @workflow.after_commit(trigger=Trigger.CLOSE)
        def settle(event):
            session = event.session
            if session.total == 0:
                session.cancel()
            elif session.units > 5:
                session.return_items([ReturnedItem(position=0, quantity=1)])

        return workflow


TestChaos = ChaosMachine.TestCase
TestReopenable = ReopenableMachine.TestCase
TestNamedWorkflow = NamedWorkflowMachine.TestCase
TestChaining = ChainingMachine.TestCase
