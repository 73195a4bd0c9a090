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

The async face uses a second machine of the same specification, an
``AsyncMachine`` with the same lean treatment (see :func:`_lean_async_machine`),
built on first use and checked against the table the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar, cast

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


class AsyncEngineModel(Protocol):
    """What the async machine drives: the same run, with phases to await."""

    state: str
    """The machine reads the source and writes the destination here."""

    @property
    def plan(self) -> object:
        """``None`` when no guard or hook is registered for this run."""

    async def guards(self) -> bool:
        """Run the guards; ``False`` when one refused."""

    async def before(self) -> None:
        """Run the hooks before the transition."""

    async def exit(self) -> None:
        """Run the hooks of the state being left."""

    async def enter(self) -> None:
        """Run the hooks of the state being entered."""

    async def after(self) -> None:
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


# The async machine's callbacks hand back the run's coroutine for the machine to
# await, rather than wrapping it in one more coroutine of their own.
def _async_guards(event_data: EventData) -> Awaitable[bool]:
    return cast("AsyncEngineModel", event_data.model).guards()


def _async_before(event_data: EventData) -> Awaitable[None]:
    return cast("AsyncEngineModel", event_data.model).before()


def _async_exit(event_data: EventData) -> Awaitable[None]:
    return cast("AsyncEngineModel", event_data.model).exit()


def _async_enter(event_data: EventData) -> Awaitable[None]:
    return cast("AsyncEngineModel", event_data.model).enter()


def _async_after(event_data: EventData) -> Awaitable[None]:
    return cast("AsyncEngineModel", event_data.model).after()


_Callback = Callable[[EventData], Any]
_AsyncCallback = Callable[[EventData], Awaitable[Any]]


class _Callbacks(NamedTuple):
    guards: _Callback
    before: _Callback
    exit: _Callback
    enter: _Callback
    after: _Callback


_SYNC_CALLBACKS = _Callbacks(_guards, _before, _exit, _enter, _after)
_ASYNC_CALLBACKS = _Callbacks(_async_guards, _async_before, _async_exit, _async_enter, _async_after)


def _callables(callbacks: object) -> list[_Callback]:
    # Every callback this module registers is a callable, never a name to resolve.
    return cast("list[_Callback]", callbacks)


def _awaitables(callbacks: object) -> list[_AsyncCallback]:
    # The async machine's callbacks are the ``_async_*`` functions above.
    return cast("list[_AsyncCallback]", callbacks)


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

    def move(self, state: str) -> str | None:
        """Where this event leads from ``state`` when nothing is registered for it.

        Every condition passes and every callback would return at once, so the
        first transition from ``state`` is taken; ``None`` when there is none.
        """
        candidates = self.transitions.get(state)
        if not candidates:
            return None
        destination: str | None = candidates[0].dest
        return state if destination is None else destination

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        """Run the first transition from the model's state whose conditions pass."""
        if model.plan is None:
            destination = self.move(model.state)
            if destination is None:
                return False
            model.state = destination
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


@cache
def _lean_async_machine() -> type[Machine]:  # noqa: C901 - four small classes
    """The lean ``AsyncMachine`` class, defined on first use.

    ``transitions.extensions.asyncio`` imports ``asyncio`` (tens of milliseconds), which
    programs that never use the async face should not pay for when they import
    the package; so its subclasses are defined here, when the first async engine
    is built.

    Beyond what the sync classes skip, the stock async classes do work that is
    empty or harmful for a machine whose every model is a fresh run:

    - ``AsyncMachine.process_context`` records the running task under
      ``id(model)`` so that a *later* event on the same model can cancel it
      (``cancel_running_transitions``). A run receives exactly one event, so
      that list only ever holds the running task and nothing is ever cancelled.
      It also catches ``asyncio.CancelledError`` and returns ``False``, which the
      transaction would read as a guard's refusal while the cancellation (and an
      ``asyncio.timeout()`` around the trigger) silently vanished: skipping it
      lets the cancellation reach the rollback and the caller.
    - ``AsyncMachine.callbacks`` and the condition check run callbacks through
      ``asyncio.gather``, each in a new task with a copied context. Each list
      holds one callback here; awaiting it directly keeps guards and hooks in
      the caller's task, in order, where cancellation and ``current_task()``
      behave as in plain code.
    - ``on_final``: no state is final.
    """
    from transitions.extensions.asyncio import (  # noqa: PLC0415 - deferred, see the docstring
        AsyncEvent,
        AsyncEventData,
        AsyncMachine,
        AsyncState,
        AsyncTransition,
    )

    class LeanAsyncState(AsyncState):
        """A state whose enter/exit await the callbacks without logging."""

        async def enter(self, event_data: AsyncEventData) -> None:  # type: ignore[override] # async, as in the stubs
            """Await the enter callbacks."""
            for callback in _awaitables(self.on_enter):
                await callback(event_data)

        async def exit(self, event_data: AsyncEventData) -> None:  # type: ignore[override] # async, as in the stubs
            """Await the exit callbacks."""
            for callback in _awaitables(self.on_exit):
                await callback(event_data)

    class LeanAsyncTransition(AsyncTransition):
        """``AsyncTransition.execute`` in the stock order, each callback awaited in turn."""

        async def execute(self, event_data: AsyncEventData) -> bool:  # type: ignore[override] # async, as in the stubs
            """Check conditions, then before -> exit -> set state -> enter -> after."""
            machine = event_data.machine
            for condition in self.conditions:
                if not await cast("_AsyncCallback", condition.func)(event_data):
                    return False
            for callback in _awaitables(machine.before_state_change):
                await callback(event_data)
            for callback in _awaitables(self.before):
                await callback(event_data)
            if self.dest is not None:  # an internal transition: no exit, no enter
                states = cast("Mapping[str, LeanAsyncState]", machine.states)
                await states[self.source].exit(event_data)
                cast("AsyncEngineModel", event_data.model).state = self.dest
                event_data.state = destination = states[self.dest]
                await destination.enter(event_data)
            for callback in _awaitables(self.after):
                await callback(event_data)
            for callback in _awaitables(machine.after_state_change):
                await callback(event_data)
            return True

    class LeanAsyncEvent(AsyncEvent):
        """``AsyncEvent.trigger`` without ``process_context``, the queue and logging."""

        async def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:  # type: ignore[override] # async, as in the stubs
            """Run the first transition from the model's state whose conditions pass."""
            if model.plan is None:
                # As in the sync event: nothing registered, nothing to await.
                transition = self.transitions[model.state][0]
                if transition.dest is not None:
                    model.state = transition.dest
                return True
            machine = self.machine
            event_data = AsyncEventData(
                machine.states[model.state], self, machine, model, args, kwargs
            )
            for transition in self.transitions[model.state]:
                event_data.transition = transition
                if await transition.execute(event_data):
                    event_data.result = True
                    break
            return bool(event_data.result)

    class LeanAsyncMachine(AsyncMachine):
        state_cls = LeanAsyncState  # type: ignore[assignment] # the stub names the nested state
        transition_cls = LeanAsyncTransition
        event_cls = LeanAsyncEvent

    return LeanAsyncMachine


def _build(machine_cls: type[Machine], specification: Specification, calls: _Callbacks) -> Machine:
    """A machine of ``machine_cls`` holding the table of ``specification``."""
    transitions = [
        {
            "trigger": edge.trigger.value,
            "source": edge.source.value,
            # transitions encodes "stay, without exit/enter" as dest=None
            "dest": None if edge.internal else edge.destination.value,
            "conditions": [calls.guards],
        }
        for edge in specification.edges
    ]
    return machine_cls(
        model=None,
        states=[
            machine_cls.state_cls(s.value, on_enter=[calls.enter], on_exit=[calls.exit])
            for s in specification.states
        ],
        initial=None,
        transitions=transitions,
        auto_transitions=False,
        send_event=True,
        before_state_change=[calls.before],
        after_state_change=[calls.after],
        name=specification.name,
    )


_E = TypeVar("_E")


class _Compiled(Generic[_E]):
    """A machine built from a specification, with the table read back out of it."""

    __slots__ = ("_allowed", "_events", "_machine", "_members", "_targets", "specification")

    def __init__(self, specification: Specification, machine: Machine) -> None:
        """Read the table back out of ``machine`` and check it against ``specification``."""
        self.specification: Specification = specification
        self._machine = machine
        self._events = cast("Mapping[str, _E]", dict(machine.events))
        # The machine names states by value; a run reads its new state back as the member.
        self._members = {s.value: s for s in specification.states}
        targets: dict[tuple[State, Trigger], State] = {}
        for name, event in machine.events.items():
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


class _AsyncTrigger(Protocol):
    def trigger(self, model: AsyncEngineModel) -> Awaitable[bool]: ...


class AsyncEngine(_Compiled[_AsyncTrigger]):
    """The ``AsyncMachine`` for one specification, verified against it when built.

    Get it from :attr:`Engine.asynchronous`, which builds it once per specification.

    Raises:
        SpecificationError: The machine and the table disagree.
    """

    __slots__ = ()

    def __init__(self, specification: Specification) -> None:
        """Build the async machine from the table, then read the table back out of it."""
        super().__init__(
            specification, _build(_lean_async_machine(), specification, _ASYNC_CALLBACKS)
        )

    async def run(self, model: AsyncEngineModel, trigger: Trigger) -> bool:
        """Fire ``trigger`` on ``model`` through the async machine.

        Returns:
            ``False`` when a guard refused; ``True`` when every phase up to the
            commit point ran (the caller commits).
        """
        return await self._events[trigger].trigger(model)


class Engine(_Compiled[_LeanEvent]):
    """The machine for one specification, verified against it when built.

    Raises:
        SpecificationError: The machine and the table disagree (checked once, at
            build time, which for the built-in tables is import time).
    """

    __slots__ = ("_asynchronous",)

    def __init__(self, specification: Specification) -> None:
        """Build the machine from the table, then read the table back out of it."""
        super().__init__(specification, _build(_LeanMachine, specification, _SYNC_CALLBACKS))
        self._asynchronous: AsyncEngine | None = None

    @property
    def asynchronous(self) -> AsyncEngine:
        """The async machine of the same specification, built on first use."""
        if self._asynchronous is None:
            self._asynchronous = AsyncEngine(self.specification)
        return self._asynchronous

    def move(self, state: State, trigger: Trigger) -> State | None:
        """Fire ``trigger`` from ``state`` when no guard or hook is registered for it.

        Returns:
            The state the machine moved to, or ``None`` when it has no transition
            for ``trigger`` from ``state``.
        """
        destination = self._events[trigger].move(state)
        return None if destination is None else self._members[destination]

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
