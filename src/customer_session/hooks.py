"""Guards, hooks and the workflow that holds them.

A :class:`Workflow` is a registry of guards and hooks for one specification. Every
session is bound to one workflow: by default the ``default_workflow`` of its class
(hooks registered there apply to every session of the class); a session created
with ``workflow=`` uses that one instead, so two workflows with different hooks
coexist in one process.

The phases of a transition run in the order of :class:`~customer_session.Phase`:

1. ``GUARD`` - guards decide; a refusal raises ``GuardRejected``.
2. ``BEFORE`` - hooks for the trigger, the session still in the source state.
3. ``EXIT`` - hooks for the source state (skipped by internal transitions).
4. ``ENTER`` - hooks for the destination state (skipped by internal transitions).
5. ``AFTER`` - hooks for the trigger.
6. *commit point* - the state, history, ``updated`` and ``update_count`` change
   together.
7. ``AFTER_COMMIT`` - hooks for the trigger; their failures never undo the commit.

An exception from phases 1-5 rolls the session back to exactly what it was and is
re-raised as ``HookFailed`` with the original chained.
"""

from __future__ import annotations

import gc
import inspect
import threading
import types
import weakref
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, overload

from attrs import frozen

from customer_session._machine import Engine, engine_for
from customer_session._phase import Phase
from customer_session._show import described, shown, shown_name
from customer_session._spec import CUSTOMER_SESSION, Specification, State, Trigger, member
from customer_session._times import Fault, in_utc
from customer_session.exceptions import UnknownTrigger, WorkflowError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from customer_session._records import TransitionEvent

__all__ = ["Clock", "Guard", "Hook", "Refusal", "Registration", "Workflow", "utc_now"]


class Guard(Protocol):
    """A guard: return ``None`` to allow, or a non-empty reason to refuse.

    Guards should not change the session; a guard may be a plain function or an
    ``async def`` function (the latter only for the async face).
    """

    def __call__(self, event: TransitionEvent, /) -> str | Awaitable[str | None] | None:
        """Decide on the transition described by ``event`` (an async guard returns an awaitable)."""


class Hook(Protocol):
    """A hook: called with the event; its return value is ignored."""

    def __call__(self, event: TransitionEvent, /) -> object:
        """React to the transition described by ``event``."""


class Clock(Protocol):
    """A source of aware timestamps; the library normalizes them to UTC."""

    def __call__(self) -> datetime:
        """Return the current time."""


def utc_now() -> datetime:
    """The default clock: the current time, aware, in UTC."""
    return datetime.now(UTC)


_UTC_NOW: Final = partial(datetime.now, UTC)


@frozen
class Refusal:
    """Why a trigger cannot be fired now.

    Attributes:
        guard: The refusing guard's name; ``None`` when the table itself forbids it.
        reason: The reason.
    """

    guard: str | None
    reason: str

    def __str__(self) -> str:
        """Render as ``guard: reason`` (or the reason alone for the table)."""
        return self.reason if self.guard is None else f"{self.guard}: {self.reason}"


def _callable_name(func: Callable[..., object]) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else repr(func)


def _check_name(what: str, name: object) -> None:
    """Refuse a name that is given but is no non-empty string (it shows in errors)."""
    if name is not None and (not isinstance(name, str) or not name):
        raise WorkflowError(f"{what} must be a non-empty string or None, got {shown(name):.80}")


def _clock_name(clock: Clock) -> str:
    """The clock's name for errors, with its module when it has one (``time.time``)."""
    name = _callable_name(clock)
    module = getattr(clock, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module != "builtins" else name


def _same_callable(registered: Callable[..., object], func: Callable[..., object]) -> bool:
    """Whether ``registered`` is ``func``, or the same method bound to the same object.

    Bound methods compare their object by identity, so no user ``__eq__`` runs;
    any other callable is matched by identity alone.
    """
    if registered is func:
        return True
    return type(func) in _BOUND_METHODS and type(registered) is type(func) and registered == func


# Method objects that ``obj.name`` makes anew on each access (Python and builtin methods).
_BOUND_METHODS: Final = frozenset({types.MethodType, types.BuiltinMethodType})


def _is_async(func: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


@frozen(eq=False)
class Registration:
    """A registered guard or hook; :meth:`remove` undoes the registration.

    Also a context manager that removes the registration on exit.

    Attributes:
        workflow: Where it is registered.
        phase: Its phase.
        key: The trigger or state it is registered for; ``None`` for all.
        func: The callable.
        name: Its name in errors and refusals.
        is_async: Whether it must be awaited (async face only).
    """

    workflow: Workflow
    phase: Phase
    key: Trigger | State | None
    func: Callable[[TransitionEvent], Any]
    name: str
    is_async: bool

    def remove(self) -> None:
        """Unregister; removing twice is harmless."""
        self.workflow._remove(self)  # noqa: SLF001 - the workflow owns its table

    def __enter__(self) -> Registration:
        """Return the registration itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Remove the registration."""
        self.remove()


class _Plan:
    """The guards and hooks of one edge, per phase, resolved when registrations change.

    Private: the transaction's lookup table, shaped for its speed (``pre_commit``,
    ``first_async``), not a promise to users; :attr:`Workflow.registrations` is theirs.
    """

    __slots__ = (
        "after",
        "after_commit",
        "before",
        "enter",
        "exit",
        "first_async",
        "guards",
        "pre_commit",
    )

    def __init__(
        self,
        *,
        guards: tuple[Registration, ...],
        before: tuple[Registration, ...],
        exit: tuple[Registration, ...],  # noqa: A002 - the phase's name
        enter: tuple[Registration, ...],
        after: tuple[Registration, ...],
        after_commit: tuple[Registration, ...],
    ) -> None:
        """Keep each phase's registrations; note whether anything runs pre-commit."""
        self.guards: tuple[Registration, ...] = guards
        self.before: tuple[Registration, ...] = before
        self.exit: tuple[Registration, ...] = exit
        self.enter: tuple[Registration, ...] = enter
        self.after: tuple[Registration, ...] = after
        self.after_commit: tuple[Registration, ...] = after_commit
        self.pre_commit: bool = bool(guards or before or exit or enter or after)
        everything = (*guards, *before, *exit, *enter, *after, *after_commit)
        self.first_async: Registration | None = next((e for e in everything if e.is_async), None)


_F = TypeVar("_F", bound="Callable[..., Any]")
# What the registration methods accept, so a type checker flags a guard that
# returns a bool or a hook that takes no event where it is registered, not when it
# first runs: the protocols, which users annotate their own guards and hooks with.
_GuardFunc = TypeVar("_GuardFunc", bound=Guard)
_HookFunc = TypeVar("_HookFunc", bound=Hook)

_NAMED: weakref.WeakValueDictionary[str, Workflow] = weakref.WeakValueDictionary()
_NAMED_LOCK = threading.Lock()


def _lookup(name: str) -> Workflow:
    """Find a named workflow (used when a pickled session is loaded)."""
    workflow = _NAMED.get(name)
    if workflow is None:
        raise WorkflowError(
            f"no workflow named {shown(name)} exists in this process; create it before "
            "unpickling sessions bound to it"
        )
    return workflow


def _claim(name: str, workflow: Workflow) -> None:
    """Register ``workflow`` under ``name``, unless a live workflow has it."""
    with _NAMED_LOCK:
        if name not in _NAMED:
            _NAMED[name] = workflow
            return
    # The holder may be garbage that only the cycle collector frees: a hook that refers
    # to its own workflow is enough.
    # Collected outside the lock: a finalizer it runs may create a workflow itself.
    gc.collect()
    with _NAMED_LOCK:
        if name in _NAMED:
            raise WorkflowError(f"a workflow named {shown(name)} already exists")
        _NAMED[name] = workflow


def _taken_names() -> frozenset[str]:
    """The names of the named workflows alive now (for the test kit)."""
    with _NAMED_LOCK:
        return frozenset(_NAMED.keys())


def _release_name(workflow: Workflow) -> None:
    """Free ``workflow``'s name for a new workflow while it may still be alive.

    For the test kit: a finished run's workflow gives its name to the next run's.
    """
    with _NAMED_LOCK:
        if workflow.name is not None and _NAMED.get(workflow.name) is workflow:
            del _NAMED[workflow.name]


class Workflow:
    """A registry of guards and hooks for one specification, and the clock.

    Args:
        specification: The transition table; it must be the one of the session
            classes bound to this workflow.
        name: A process-wide unique name, free again once its workflow is garbage
            (a workflow no longer referenced, even from a reference cycle). Sessions
            bound to a named workflow can be pickled (they are re-bound by name when
            loaded).
        clock: Where ``created``, ``updated`` and transition timestamps come from.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_engine",
        "_entries",
        "_lock",
        "_name",
        "_plans",
        "_specification",
        "_table",
        "_tick",
    )

    def __init__(
        self,
        specification: Specification = CUSTOMER_SESSION,
        *,
        name: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        """Create an empty workflow; register it by name when it has one.

        Raises:
            WorkflowError: ``specification`` is not a :class:`Specification`,
                ``name`` is not a non-empty string (or ``None``) or is taken, or
                ``clock`` is not callable.
        """
        spec: object = specification
        if not isinstance(spec, Specification):
            raise WorkflowError(f"specification must be a Specification, got {shown(spec):.80}")
        _check_name("a workflow's name", name)
        if not callable(clock):
            raise WorkflowError(
                f"clock must be a callable that returns an aware datetime, got {shown(clock):.80}"
            )
        self._specification = specification
        self._engine = engine_for(specification)
        self._name = name
        self._clock = clock
        # The default clock read without its Python frame: timestamps are taken on
        # every trigger and every new session.
        self._tick: Clock = _UTC_NOW if clock is utc_now else clock
        self._entries: tuple[Registration, ...] = ()
        # Registrations change by read, rebuild, swap: without it, two threads that
        # register (or remove) at once lose one change, or bring a removed guard back.
        self._lock = threading.Lock()
        self._table: dict[tuple[Phase, Trigger | State], tuple[Registration, ...]] = {}
        self._rebuild(())
        if name is not None:
            _claim(name, self)

    @property
    def specification(self) -> Specification:
        """The transition table this workflow drives."""
        return self._specification

    @property
    def engine(self) -> Engine:
        """The compiled machine of the specification (shared by every workflow of it)."""
        return self._engine

    @property
    def name(self) -> str | None:
        """The workflow's name, or ``None``."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock used for timestamps."""
        return self._clock

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """Every registered guard and hook, in registration order."""
        return self._entries

    def now(self) -> datetime:
        """The clock's current time, as an aware UTC datetime.

        Raises:
            WorkflowError: The clock raised (the error chained as the cause), or
                returned something other than an aware datetime.
        """
        try:
            now = self._tick()
        except Exception as exc:
            raise self._clock_failed(exc) from exc
        if type(now) is datetime and now.tzinfo is UTC:
            return now
        return self._checked_time(now)

    def _clock_failed(self, error: Exception) -> WorkflowError:
        """The error for the clock having raised ``error`` (which the caller chains).

        User code, like a guard or a hook: what it raised is named in the library's
        error tree, not let out bare from whichever call happened to read the time.
        """
        return WorkflowError(
            f"the clock {_clock_name(self._clock)} of {shown(self)} raised {described(error)}"
        )

    def _checked_time(self, now: object) -> datetime:
        """``now``, a time the clock gave, as an aware UTC datetime (see ``now()``).

        Raises:
            WorkflowError: ``now`` is not an aware datetime, or has no time in UTC
                (its time zone fails, or it is outside the years 1 to 9999 there).
        """
        moment = in_utc(now)
        if isinstance(moment, datetime):
            return moment
        clock = f"the clock {_clock_name(self._clock)} of {shown(self)}"
        if moment.fault is Fault.NOT_A_DATETIME:
            raise WorkflowError(
                f"{clock} returned {shown(now):.80}, not a datetime; "
                "a clock must return an aware datetime"
            )
        if moment.fault is Fault.OUTSIDE_YEARS:
            raise WorkflowError(
                f"{clock} returned {shown(now)}, which is outside the years 1 to 9999 in UTC"
            )
        if moment.zone_error is not None:
            raise WorkflowError(
                f"{clock} returned {shown(now)}{moment.zone_failure()}; "
                "a clock must return an aware datetime"
            ) from moment.zone_error
        raise WorkflowError(f"{clock} returned a naive datetime: {shown(now)}")

    def __repr__(self) -> str:
        """Show the name and the specification."""
        return f"<Workflow {self._name or hex(id(self))} for {self._specification.name!r}>"

    def __reduce__(self) -> tuple[Callable[[str], Workflow], tuple[str]]:
        """Pickle by name, so a loaded session is re-bound to the same workflow."""
        if self._name is None:
            raise WorkflowError(
                "sessions bound to an unnamed workflow cannot be pickled; "
                "create the workflow with name=..."
            )
        return (_lookup, (self._name,))

    def __copy__(self) -> Workflow:
        """A workflow is shared, never copied."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Workflow:
        """A workflow is shared, never copied."""
        return self

    # -- registration -------------------------------------------------------

    def register(
        self,
        phase: Phase,
        func: Callable[[TransitionEvent], Any],
        *,
        key: Trigger | State | str | None = None,
        name: str | None = None,
    ) -> Registration:
        """Register ``func`` for ``phase``; the general form of the named methods.

        Args:
            phase: When it runs.
            func: The guard or hook.
            key: A trigger (a state for ``EXIT``/``ENTER``); ``None`` for all.
            name: The name used in errors and refusals (default: its qualified name).

        Returns:
            The registration, whose ``remove()`` undoes it.

        Raises:
            WorkflowError: ``phase`` is not a :class:`Phase`, ``func`` is not
                callable, ``key`` is not in the table, or ``name`` is not a non-empty
                string.
            UnknownTrigger: ``key`` names no trigger.
        """
        given: object = phase
        if not isinstance(given, Phase):
            phases = ", ".join(f"Phase.{p.name}" for p in Phase)
            raise WorkflowError(f"phase must be a Phase ({phases}), got {shown(given):.80}")
        if not callable(func):
            raise WorkflowError(f"{phase.value} hooks must be callable, got {shown(func)}")
        _check_name("a registration's name", name)
        checked = self._check_key(phase, key)
        entry = Registration(
            self, phase, checked, func, name or _callable_name(func), _is_async(func)
        )
        with self._lock:
            self._rebuild((*self._entries, entry))
        return entry

    def remove(self, func: Callable[..., Any]) -> int:
        """Remove every registration of ``func``; return how many there were.

        A bound method (``workflow.remove(mailer.send)``) matches the registrations
        of the same method of the same object, though each attribute access makes
        a new method object.
        """
        with self._lock:
            entries = self._entries
            kept = tuple(e for e in entries if not _same_callable(e.func, func))
            self._rebuild(kept)
        return len(entries) - len(kept)

    def clear(self) -> None:
        """Remove every guard and hook."""
        with self._lock:
            self._rebuild(())

    @overload
    def guard(
        self, func: _GuardFunc, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def guard(
        self, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Callable[[_GuardFunc], _GuardFunc]: ...
    def guard(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        trigger: Trigger | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_GuardFunc], _GuardFunc]:
        """Register a guard for ``trigger`` (all triggers when ``None``).

        Called with a function it returns the :class:`Registration`; called without
        one it is a decorator that registers and returns the function unchanged.
        """
        return self._register_or_decorate(Phase.GUARD, func, trigger, name)

    @overload
    def before(
        self, func: _HookFunc, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def before(
        self, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Callable[[_HookFunc], _HookFunc]: ...
    def before(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        trigger: Trigger | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_HookFunc], _HookFunc]:
        """Register a hook run before ``trigger``'s transition (all triggers when ``None``)."""
        return self._register_or_decorate(Phase.BEFORE, func, trigger, name)

    @overload
    def on_exit(
        self, func: _HookFunc, /, *, state: State | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def on_exit(
        self, /, *, state: State | str | None = ..., name: str | None = ...
    ) -> Callable[[_HookFunc], _HookFunc]: ...
    def on_exit(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        state: State | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_HookFunc], _HookFunc]:
        """Register a hook run when a session leaves ``state`` (any state when ``None``)."""
        return self._register_or_decorate(Phase.EXIT, func, state, name)

    @overload
    def on_enter(
        self, func: _HookFunc, /, *, state: State | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def on_enter(
        self, /, *, state: State | str | None = ..., name: str | None = ...
    ) -> Callable[[_HookFunc], _HookFunc]: ...
    def on_enter(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        state: State | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_HookFunc], _HookFunc]:
        """Register a hook run when a session enters ``state`` (any state when ``None``)."""
        return self._register_or_decorate(Phase.ENTER, func, state, name)

    @overload
    def after(
        self, func: _HookFunc, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def after(
        self, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Callable[[_HookFunc], _HookFunc]: ...
    def after(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        trigger: Trigger | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_HookFunc], _HookFunc]:
        """Register a hook run after ``trigger``'s transition, still before the commit."""
        return self._register_or_decorate(Phase.AFTER, func, trigger, name)

    @overload
    def after_commit(
        self, func: _HookFunc, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Registration: ...
    @overload
    def after_commit(
        self, /, *, trigger: Trigger | str | None = ..., name: str | None = ...
    ) -> Callable[[_HookFunc], _HookFunc]: ...
    def after_commit(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        trigger: Trigger | str | None = None,
        name: str | None = None,
    ) -> Registration | Callable[[_HookFunc], _HookFunc]:
        """Register a hook run once ``trigger``'s transition has committed."""
        return self._register_or_decorate(Phase.AFTER_COMMIT, func, trigger, name)

    # -- internals used by the transaction ----------------------------------

    def entries(self, phase: Phase, key: Trigger | State) -> tuple[Registration, ...]:
        """The registrations that run for ``phase`` and ``key``, in registration order.

        Empty for a pair the table has no registrations for, as :meth:`plan` answers
        ``None`` for an edge the table lacks: asking is never an error.
        """
        try:
            return self._table.get((phase, key), ())
        except Exception:  # noqa: BLE001 - unhashable, or its hash raises: no key of any table
            return ()

    def plan(self, source: State, trigger: Trigger) -> _Plan | None:
        """What runs for ``trigger`` from ``source``, for the transaction (not documented API).

        The registrations of that edge per phase, in the order they run, as the
        attributes ``guards``, ``before``, ``exit``, ``enter``, ``after`` and
        ``after_commit`` (tuples of :class:`Registration`); ``exit`` and ``enter``
        are empty for an internal transition. Its class is private: to see what a
        workflow holds, read :attr:`registrations`.

        Returns:
            ``None`` when nothing is registered for the edge, or when the table has
            no such transition (which the machine then reports).
        """
        try:
            return self._plans.get((source, trigger))
        except Exception:  # noqa: BLE001 - unhashable, or its hash raises: no state or trigger
            return None

    def plain_destination(self, source: State, trigger: Trigger) -> State | None:
        """Where ``trigger`` leads from ``source`` when nothing is registered for it.

        ``None`` when a guard or hook is registered for that edge (the caller then
        runs the full transaction), or when the table has no such transition.
        """
        try:
            if self._plans.get((source, trigger)) is not None:
                return None
        except Exception:  # noqa: BLE001 - unhashable, or its hash raises: no state or trigger
            return None
        try:
            return self._engine.move(source, trigger)
        except (KeyError, TypeError):  # a trigger the table lacks, or none at all
            return None

    def _register_or_decorate(
        self,
        phase: Phase,
        func: Callable[..., Any] | None,
        key: Trigger | State | str | None,
        name: str | None,
    ) -> Registration | Callable[[_F], _F]:
        if func is not None:
            return self.register(phase, func, key=key, name=name)

        def decorate(f: _F) -> _F:
            self.register(phase, f, key=key, name=name)
            return f

        return decorate

    def _check_key(self, phase: Phase, key: Trigger | State | str | None) -> Trigger | State | None:
        spec = self._specification
        if key is None:
            return None
        if phase.keyed_by_state:
            state = member(State, key)
            if state is None:
                raise WorkflowError(
                    f"{shown_name(key)} is not a state; states: {', '.join(spec.states)}"
                )
            if state not in spec.states:
                raise WorkflowError(f"'{state}' is not a state of {spec.name!r}")
            return state
        trigger = member(Trigger, key)
        if trigger is None or trigger not in spec.triggers:
            raise UnknownTrigger(key, spec.triggers)
        return trigger

    def _remove(self, entry: Registration) -> None:
        with self._lock:
            self._rebuild(tuple(e for e in self._entries if e is not entry))

    def _rebuild(self, entries: Iterable[Registration]) -> None:
        entries = tuple(entries)
        spec = self._specification
        table: dict[tuple[Phase, Trigger | State], tuple[Registration, ...]] = {}
        for phase in Phase:
            keys: tuple[Trigger | State, ...] = (
                spec.states if phase.keyed_by_state else spec.triggers
            )
            for key in keys:
                table[phase, key] = tuple(
                    e for e in entries if e.phase is phase and e.key in (None, key)
                )
        plans: dict[tuple[State, Trigger], _Plan | None] = {}
        for edge in spec.edges:
            plan = _Plan(
                guards=table[Phase.GUARD, edge.trigger],
                before=table[Phase.BEFORE, edge.trigger],
                exit=() if edge.internal else table[Phase.EXIT, edge.source],
                enter=() if edge.internal else table[Phase.ENTER, edge.destination],
                after=table[Phase.AFTER, edge.trigger],
                after_commit=table[Phase.AFTER_COMMIT, edge.trigger],
            )
            plans[edge.source, edge.trigger] = (
                plan if plan.pre_commit or plan.after_commit else None
            )
        # Swap together so a concurrent trigger sees either the old or the new tables.
        self._entries, self._table, self._plans = entries, table, plans
