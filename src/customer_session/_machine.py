"""The engine: a ``transitions`` machine built from a specification.

This is the only module that imports ``transitions``. One machine is built per
specification (so once per session class), with auto transitions off, no model
registered and no callback that names anything by string. The machine never sees a
session: each trigger runs on a short-lived *run* object (see ``_transaction``)
whose ``state`` attribute the machine reads and writes; the session changes only
at the commit point, outside the machine.

``transitions`` is built to be extended through its ``state_cls``,
``transition_cls`` and ``event_cls``. The lean classes below keep its structure
(events hold transitions per source state, transitions hold conditions and
callbacks, states hold enter/exit callbacks) and its order of callbacks, and skip
only the work that is always empty for this machine: string callback resolution,
queue handling, ``prepare``/``finalize`` lists and per-step debug logging.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast

from transitions import Event, EventData, Machine, Transition
from transitions import State as MachineState

from customer_session._spec import Edge, Specification, State, Trigger
from customer_session.exceptions import SpecificationError

if TYPE_CHECKING:
    from collections.abc import Mapping


class EngineModel(Protocol):
    """What the machine drives: a run of one trigger, never a session."""

    state: str
    """The machine reads the source and writes the destination here."""

    @property
    def plan(self) -> object:
        """``None`` when no guard or hook is registered for this run."""

    def guards(self) -> bool:
        """Run the guards; ``False`` when one refused."""

    def before(self) -> None:
        """Run the hooks before the transition."""

    def exit(self) -> None:
        """Run the hooks of the state being left."""

    def enter(self) -> None:
        """Run the hooks of the state being entered."""

    def after(self) -> None:
        """Run the hooks after the transition."""


# Callbacks registered on the machine: plain callables, never strings. They forward
# to the run, which holds the guards and hooks of its own workflow.
def _guards(event_data: EventData) -> bool:
    model = cast("EngineModel", event_data.model)
    return model.guards()


def _before(event_data: EventData) -> None:
    model = cast("EngineModel", event_data.model)
    model.before()


def _exit(event_data: EventData) -> None:
    model = cast("EngineModel", event_data.model)
    model.exit()


def _enter(event_data: EventData) -> None:
    model = cast("EngineModel", event_data.model)
    model.enter()


def _after(event_data: EventData) -> None:
    model = cast("EngineModel", event_data.model)
    model.after()


_Callback = Callable[[EventData], Any]


def _callables(callbacks: object) -> list[_Callback]:
    # Every callback this module registers is a callable, never a name to resolve.
    return cast("list[_Callback]", callbacks)


class _LeanState(MachineState):
    """A state whose enter/exit run the callbacks without logging."""

    def enter(self, event_data: EventData) -> None:
        """Run the enter callbacks."""
        for callback in _callables(self.on_enter):
            callback(event_data)

    def exit(self, event_data: EventData) -> None:
        """Run the exit callbacks."""
        for callback in _callables(self.on_exit):
            callback(event_data)


class _LeanTransition(Transition):
    """``Transition.execute`` in the stock order, minus string resolution and logging."""

    def execute(self, event_data: EventData) -> bool:
        """Check conditions, then before -> exit -> set state -> enter -> after."""
        machine = event_data.machine
        for condition in self.conditions:
            if not cast("_Callback", condition.func)(event_data):
                return False
        for callback in _callables(machine.before_state_change):
            callback(event_data)
        for callback in _callables(self.before):
            callback(event_data)
        if self.dest is not None:  # None marks an internal transition: no exit, no enter
            states = machine.states
            states[self.source].exit(event_data)
            cast("EngineModel", event_data.model).state = self.dest
            event_data.state = destination = states[self.dest]
            destination.enter(event_data)
        for callback in _callables(self.after):
            callback(event_data)
        for callback in _callables(machine.after_state_change):
            callback(event_data)
        return True


class _LeanEvent(Event):
    """``Event.trigger`` without the queue, prepare/finalize lists and logging.

    The machine is never queued and registers no ``prepare_event``,
    ``finalize_event`` or ``on_exception`` callbacks, so ``_process`` and the
    ``try/finally`` around it would only run empty loops.
    """

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        """Run the first transition from the model's state whose conditions pass."""
        if model.plan is None:
            # Nothing is registered for this run, so every condition passes and every
            # callback would return at once: move along the first transition.
            transition = self.transitions[model.state][0]
            if transition.dest is not None:
                model.state = transition.dest
            return True
        machine = self.machine
        event_data = EventData(machine.states[model.state], self, machine, model, args, kwargs)
        for transition in self.transitions[model.state]:
            event_data.transition = transition
            if transition.execute(event_data):
                event_data.result = True
                break
        return bool(event_data.result)


class _LeanMachine(Machine):
    state_cls = _LeanState
    transition_cls = _LeanTransition
    event_cls = _LeanEvent


class Engine:
    """The machine for one specification, verified against it when built.

    Raises:
        SpecificationError: The machine and the table disagree (checked once, at
            build time, which for the built-in tables is import time).
    """

    __slots__ = ("_allowed", "_events", "_machine", "_targets", "specification")

    def __init__(self, specification: Specification) -> None:
        """Build the machine from the table, then read the table back out of it."""
        self.specification = specification
        transitions = [
            {
                "trigger": edge.trigger.value,
                "source": edge.source.value,
                # transitions encodes "stay, without exit/enter" as dest=None
                "dest": None if edge.internal else edge.destination.value,
                "conditions": [_guards],
            }
            for edge in specification.edges
        ]
        self._machine = _LeanMachine(
            model=None,
            states=[
                _LeanState(s.value, on_enter=[_enter], on_exit=[_exit])
                for s in specification.states
            ],
            initial=None,
            transitions=transitions,
            auto_transitions=False,
            send_event=True,
            before_state_change=[_before],
            after_state_change=[_after],
            name=specification.name,
        )
        self._events = cast("Mapping[str, _LeanEvent]", dict(self._machine.events))
        targets: dict[tuple[State, Trigger], State] = {}
        for name, event in self._events.items():
            for source, candidates in event.transitions.items():
                for transition in candidates:
                    dest = source if transition.dest is None else transition.dest
                    targets[State(source), Trigger(name)] = State(dest)
        self._targets = targets
        self._allowed = {
            state: frozenset(t for (s, t) in targets if s is state)
            for state in specification.states
        }
        self._verify()

    def _verify(self) -> None:
        spec = self.specification
        if set(self._machine.states) != {s.value for s in spec.states}:
            raise SpecificationError(spec.name, "the machine's states differ from the table")
        if self.edges() != frozenset(spec.edges):
            raise SpecificationError(spec.name, "the machine's transitions differ from the table")
        if self._machine.models:
            raise SpecificationError(spec.name, "the machine must not hold any model")

    @property
    def machine(self) -> Machine:
        """The underlying ``transitions`` machine (read it, never drive it directly)."""
        return self._machine

    def edges(self) -> frozenset[Edge]:
        """The edges as the machine holds them (to compare with the table)."""
        return frozenset(Edge(t, s, d) for (s, t), d in self._targets.items())

    def allowed(self, state: State) -> frozenset[Trigger]:
        """The triggers the machine accepts from ``state``."""
        return self._allowed[state]

    def destination(self, state: State, trigger: Trigger) -> State | None:
        """Where ``trigger`` leads from ``state``, or ``None`` when it is not allowed."""
        return self._targets.get((state, trigger))

    def run(self, model: EngineModel, trigger: Trigger) -> bool:
        """Fire ``trigger`` on ``model`` through the machine.

        Returns:
            ``False`` when a guard refused; ``True`` when every phase up to the
            commit point ran (the caller commits).
        """
        return self._events[trigger].trigger(model)


@cache
def engine_for(specification: Specification) -> Engine:
    """The one engine of ``specification``, built on first use."""
    return Engine(specification)
