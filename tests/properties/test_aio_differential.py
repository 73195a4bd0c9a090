"""The async face and the sync methods, driven in lockstep, agree on everything observable.

A Hypothesis state machine keeps pairs of equal sessions: one fired through its
sync methods, its twin through an ``AsyncSession`` (an ``AsyncReopenableSession``
for the reopen table), awaited on one event loop for the whole run. The two sides'
workflows hold the same registrations, added, switched and removed as the run goes:
guards that allow, refuse, raise, return a bad verdict, edit the session or fire a
trigger on it, and hooks in every phase that succeed, raise, edit or fire another
trigger on their own session (an after-commit hook firing ``cancel``, say). Both
sides get the very same plain callables, or, in some runs, the async side gets
``async def`` twins of them (which yield to the loop, and fire through a face).

The operations: every trigger by its method and by name (legal, illegal, of
another table, unknown; with valid and invalid returned items in a tuple, a list or
a generator, and items given to triggers that take none), ``can()``, ``why_not()``
and ``allowed_triggers``, edits (valid and invalid) and ``atomic()`` blocks of
those that commit, raise, or let an error of their own escape.

After each step it compares what the sides returned (records, refusals, edits'
results) or raised (class, message, public attributes, notes, cause, exception
groups member by member), each pair's snapshot and wire document with history, and
the guard and hook calls each side made, in order, with the state and
``update_count`` each saw. Messages are normalised only where they show an object's
address. Any difference is a bug in one face (or a difference that ``docs/async.md``
must state and a test encode).

The one documented difference is left out: a plain guard or hook that *returns an
awaitable* is awaited by the async face and refused by the sync methods
(``test_aio.py`` and ``test_transaction.py`` pin both), so the callables here
return plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from customer_session import (
    CustomerSession,
    Phase,
    ReopenableCustomerSession,
    Trigger,
    Workflow,
    wire,
)
from customer_session.aio import AsyncReopenableSession, AsyncSession
from customer_session.testing import cart_items, json_values, returned_items, sessions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from customer_session import TransitionEvent

# What a guard does when it runs, and what a hook does.
GUARD_MODES = ("allow", "refuse", "raise", "bad verdict", "edit", "fire", "ask", "hold")
HOOK_MODES = ("succeed", "raise", "edit", "fire", "ask", "hold")
# Trigger names as callers give them: every member, and names no table has.
NAMES: tuple[Any, ...] = (*Trigger, "close", "ship", "CLOSE", "", 42, None)
CODES = st.sampled_from([None, "WELCOME", "", "C" * 101, 7])
MAX_PAIRS = 3
MAX_REGISTRATIONS = 8
MAX_DEPTH = 2  # hooks that fire triggers fire at most this deep


class HookError(Exception):
    """What a guard or hook raises when its cell says ``raise``."""


class BlockFailed(Exception):
    """What an ``atomic()`` block raises when it is to roll back."""


class Clock:
    """The workflows' clock, shared by both sides: each step ticks it."""

    def __init__(self) -> None:
        """Start a day ahead of the sessions drawn (their history used the real clock)."""
        self.now = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)

    def __call__(self) -> datetime:
        """The time of the current step."""
        return self.now


@attrs.define
class Cell:
    """What one registration does now; both sides' callables read the same cell."""

    mode: str
    fires: Trigger


@attrs.define
class Side:
    """One face's sessions and what its guards and hooks saw, in order."""

    name: str
    sessions: list[CustomerSession] = attrs.Factory(list)
    calls: list[tuple[Any, ...]] = attrs.Factory(list)
    depth: int = 0


@attrs.frozen
class Items:
    """Returned items as drawn, and the container each side receives them in."""

    entries: tuple[Any, ...]
    shape: str

    def make(self) -> Iterable[Any]:
        """A fresh container of the entries (a new generator for each side)."""
        if self.shape == "list":
            return list(self.entries)
        if self.shape == "generator":
            return (entry for entry in self.entries)
        return self.entries


def _normalised(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", text)


def comparable(value: Any) -> Any:
    """``value`` as the comparison sees it (exceptions as data, sessions as documents)."""
    if isinstance(value, BaseException):
        members = value.exceptions if isinstance(value, BaseExceptionGroup) else ()
        attributes = {k: v for k, v in vars(value).items() if not k.startswith("_")}
        return (
            type(value),
            _normalised(str(value)),
            comparable(attributes),
            tuple(_normalised(n) for n in getattr(value, "__notes__", ())),
            comparable(value.__cause__),
            tuple(comparable(member) for member in members),
        )
    if isinstance(value, CustomerSession):
        return (type(value), wire.to_dict(value, include_history=True))
    if isinstance(value, str):
        return _normalised(value)
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return tuple(comparable(item) for item in value)
    return value


def outcome(call: Callable[[], Any]) -> Any:
    """What ``call()`` returned, or the exception it raised."""
    try:
        return call()
    except Exception as exc:  # compared with the other side's outcome
        return exc


async def async_outcome(call: Callable[[], Any]) -> Any:
    """What awaiting ``call()`` gave, or the exception it raised."""
    try:
        return await call()
    except Exception as exc:  # compared with the other side's outcome
        return exc


def edits() -> st.SearchStrategy[tuple[Any, ...]]:
    """An edit as ``("edit", method, args)``: valid or not, of any edit method."""
    positions = st.integers(min_value=-1, max_value=4)
    names: st.SearchStrategy[Any] = st.sampled_from(["channel", "gift", 7])
    return st.one_of(
        st.tuples(st.just("add_item"), st.tuples(cart_items())),
        st.tuples(st.just("update_item"), st.tuples(positions, cart_items())),
        st.tuples(st.just("remove_item"), st.tuples(positions)),
        st.tuples(st.just("set_coupon"), st.tuples(CODES)),
        st.tuples(st.just("set_referral"), st.tuples(CODES)),
        st.tuples(st.just("set_attribute"), st.tuples(names, json_values())),
        st.tuples(st.just("remove_attribute"), st.tuples(names)),
        st.tuples(
            st.just("set_additional_cost"),
            st.tuples(names, st.sampled_from([None, 4.5, -1.0, "free"])),
        ),
        st.tuples(
            st.just("set_identifiers"),
            st.tuples(st.lists(st.sampled_from(["a", "b", "c"]), max_size=6)),
        ),
    ).map(lambda edit: ("edit", *edit))


class Lockstep(RuleBasedStateMachine):
    """Pairs of equal sessions, one fired through its sync methods, one through a face."""

    def __init__(self) -> None:
        """Create the run's clock, sides and event loop."""
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = Clock()
        self.sync = Side("sync")
        self.aio = Side("async")
        self.side_of: dict[int, Side] = {}
        self.cells: list[tuple[Cell, Any, Any]] = []
        self.session_class: type[CustomerSession] = CustomerSession
        self.face_class: type[AsyncSession[Any]] = AsyncSession
        self.twins = False
        self.workflows: dict[str, Workflow] = {}
        self.created = 0

    def teardown(self) -> None:
        """Close the run's event loop."""
        self.runner.close()

    # -- set-up and sessions --------------------------------------------------

    @initialize(reopenable=st.booleans(), twins=st.booleans(), data=st.data())
    def start(self, reopenable: bool, twins: bool, data: st.DataObject) -> None:
        """Choose the table and whether the async side gets async twins; make one pair."""
        if reopenable:
            self.session_class, self.face_class = ReopenableCustomerSession, AsyncReopenableSession
        self.twins = twins
        spec = self.session_class.specification
        self.workflows = {
            side.name: Workflow(spec, clock=self.clock) for side in (self.sync, self.aio)
        }
        self._add_pair(data)
        for phase in data.draw(st.lists(st.sampled_from(list(Phase)), max_size=4), label="phases"):
            self.register(data, phase)

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        """Add another pair of equal sessions, or replace one (the terminal ones get stuck)."""
        if len(self.sync.sessions) >= MAX_PAIRS:
            index = data.draw(st.integers(0, MAX_PAIRS - 1), label="replaced")
            del self.sync.sessions[index], self.aio.sessions[index]
        self._add_pair(data)

    def _add_pair(self, data: st.DataObject) -> None:
        spec = self.session_class.specification
        # Mostly sessions that can still move: open and closed ones.
        state = data.draw(st.sampled_from(["open", "open", "closed", *spec.states]), label="state")
        drawn = data.draw(sessions(state=state, session_class=self.session_class), label="session")
        values = drawn.snapshot()
        values["integration_id"] = f"order-{self.created}"
        self.created += 1
        for side in (self.sync, self.aio):
            twin = self.session_class.restore(**{**values, "workflow": self.workflows[side.name]})
            side.sessions.append(twin)
            self.side_of[id(twin)] = side

    # -- registrations ----------------------------------------------------------

    @rule(data=st.data(), phase=st.sampled_from(list(Phase)))
    def register(self, data: st.DataObject, phase: Phase) -> None:
        """Register the same guard or hook on both sides' workflows."""
        if len(self.cells) >= MAX_REGISTRATIONS:
            return
        spec = self.session_class.specification
        keys: tuple[Any, ...] = spec.states if phase.keyed_by_state else spec.triggers
        key = data.draw(st.none() | st.sampled_from(keys), label="key")
        modes = GUARD_MODES if phase is Phase.GUARD else HOOK_MODES
        cell = Cell(
            data.draw(st.sampled_from(modes), label="mode"),
            # Mostly cancel, which most states allow (so after-commit chains commit).
            data.draw(st.just(Trigger.CANCEL) | st.sampled_from(spec.triggers), label="fires"),
        )
        name = f"{phase.value}-{len(self.cells)}"
        func = self._callable(name, phase, cell)
        twin = self._async_callable(name, phase, cell) if self.twins else func
        self.cells.append(
            (
                cell,
                self.workflows["sync"].register(phase, func, key=key, name=name),
                self.workflows["async"].register(phase, twin, key=key, name=name),
            )
        )

    @rule(data=st.data())
    def switch(self, data: st.DataObject) -> None:
        """Change what one registration does (on both sides at once: they share its cell)."""
        if self.cells:
            cell, sync_entry, _ = data.draw(st.sampled_from(self.cells), label="registration")
            modes = GUARD_MODES if sync_entry.phase is Phase.GUARD else HOOK_MODES
            cell.mode = data.draw(st.sampled_from(modes), label="mode")

    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        """Remove one registration from both sides."""
        if self.cells:
            entry = data.draw(st.sampled_from(self.cells), label="registration")
            self.cells.remove(entry)
            entry[1].remove()
            entry[2].remove()

    def _log(self, name: str, phase: Phase, event: TransitionEvent) -> Side:
        session = event.session
        side = self.side_of[id(session)]
        side.calls.append(
            (
                name,
                phase,
                event.trigger,
                event.source,
                event.destination,
                event.returned_items,
                event.timestamp,
                session.state,
                session.update_count,
                len(session.history),
                side.depth,
            )
        )
        return side

    def _callable(self, name: str, phase: Phase, cell: Cell) -> Callable[[TransitionEvent], Any]:
        """A plain guard or hook that does what ``cell`` says (both sides may get it)."""

        def func(event: TransitionEvent) -> str | None:
            side = self._log(name, phase, event)
            verdict, fire = self._act(side, name, cell, event)
            if cell.mode == "ask":
                side.calls.append(("asked", outcome(lambda: event.session.why_not(cell.fires))))
            elif fire:
                side.depth += 1
                try:
                    event.session.fire(cell.fires)
                finally:
                    side.depth -= 1
            return verdict

        return func

    def _async_callable(
        self, name: str, phase: Phase, cell: Cell
    ) -> Callable[[TransitionEvent], Any]:
        """The ``async def`` twin of :meth:`_callable`: it yields and fires through a face."""

        async def func(event: TransitionEvent) -> str | None:
            await asyncio.sleep(0)
            side = self._log(name, phase, event)
            verdict, fire = self._act(side, name, cell, event)
            face = self.face_class(event.session)
            if cell.mode == "ask":
                side.calls.append(("asked", await async_outcome(lambda: face.why_not(cell.fires))))
            elif fire:
                side.depth += 1
                try:
                    await face.fire(cell.fires)
                finally:
                    side.depth -= 1
            return verdict

        return func

    @staticmethod
    def _act(side: Side, name: str, cell: Cell, event: TransitionEvent) -> tuple[Any, bool]:
        """Do what ``cell`` says: the verdict to return, and whether to fire ``cell.fires``."""
        session = event.session
        if cell.mode == "raise":
            raise HookError(f"{name} failed on {event.trigger}")
        if cell.mode == "refuse":
            return f"{name} refuses {event.trigger}", False
        if cell.mode == "bad verdict":
            return False, False
        if cell.mode in {"edit", "hold"} and session.state == "open":
            with session.atomic() if cell.mode == "hold" else contextlib.nullcontext():
                session.set_attribute(name, f"{event.trigger}-{session.update_count}")
        elif cell.mode == "hold":
            with session.atomic():
                pass
        return None, cell.mode == "fire" and side.depth < MAX_DEPTH

    # -- operations ---------------------------------------------------------------

    def _items(self, data: st.DataObject, session: CustomerSession) -> Items:
        if session.state in {"closed", "partially_returned"} and any(
            line.remaining_quantity for line in session.cart_items
        ):
            valid = data.draw(st.booleans(), label="valid items")
        else:
            valid = False
        entries: tuple[Any, ...] = data.draw(
            returned_items(session, valid=valid) | st.just(("not an item",)), label="items"
        )
        shape = data.draw(st.sampled_from(["tuple", "list", "generator"]), label="shape")
        return Items(entries, shape)

    def _operation(self, data: st.DataObject, session: CustomerSession) -> tuple[Any, ...]:
        kind = data.draw(
            st.sampled_from(["method", "fire", "can", "why_not", "allowed", "edit"]), label="kind"
        )
        if kind == "edit":
            return data.draw(edits(), label="edit")
        if kind == "allowed":
            return ("allowed",)
        if kind == "method":
            # Mostly a trigger the table allows, so that sessions move and hooks run.
            allowed = sorted(session.allowed_triggers) or list(session.specification.triggers)
            triggers = st.sampled_from(allowed) | st.sampled_from(session.specification.triggers)
            trigger = data.draw(triggers, label="trigger")
            items = self._items(data, session) if trigger is Trigger.RETURN_ITEMS else None
            return ("method", trigger, items)
        name = data.draw(st.sampled_from(NAMES), label="trigger")
        items = None
        if data.draw(st.booleans(), label="with items"):
            items = self._items(data, session)
        return (kind, name, items)

    def _sync_op(self, session: CustomerSession, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        if kind == "edit":
            return getattr(session, op[1])(*op[2])
        if kind == "allowed":
            return session.allowed_triggers
        _, trigger, items = op
        if kind == "method":
            if trigger is Trigger.RETURN_ITEMS:
                return session.return_items(items.make())
            return getattr(session, trigger.value)()
        options = {} if items is None else {"items": items.make()}
        return getattr(session, kind)(trigger, **options)

    async def _async_op(self, session: CustomerSession, op: tuple[Any, ...]) -> Any:
        face = self.face_class(session)
        kind = op[0]
        if kind == "edit":
            return getattr(session, op[1])(*op[2])
        if kind == "allowed":
            return face.allowed_triggers
        _, trigger, items = op
        if kind == "method":
            if trigger is Trigger.RETURN_ITEMS:
                return await face.return_items(items.make())
            return await getattr(face, trigger.value)()
        options = {} if items is None else {"items": items.make()}
        return await getattr(face, kind)(trigger, **options)

    @rule(data=st.data())
    def act(self, data: st.DataObject) -> None:
        """One trigger, question or edit on one pair."""
        index = data.draw(st.integers(0, len(self.sync.sessions) - 1), label="pair")
        op = self._operation(data, self.sync.sessions[index])
        self.clock.now += timedelta(seconds=1)
        sync = outcome(lambda: self._sync_op(self.sync.sessions[index], op))
        aio = self.runner.run(async_outcome(lambda: self._async_op(self.aio.sessions[index], op)))
        self._agree(op, sync, aio)

    @rule(data=st.data(), ending=st.sampled_from(["commit", "raise", "escape"]))
    def block(self, data: st.DataObject, ending: str) -> None:
        """An atomic() block of a few operations that commits, raises, or lets an error escape."""
        index = data.draw(st.integers(0, len(self.sync.sessions) - 1), label="pair")
        session = self.sync.sessions[index]
        ops = [
            self._operation(data, session)
            for _ in range(data.draw(st.integers(1, 3), label="steps"))
        ]
        self.clock.now += timedelta(seconds=1)
        sync_results: list[Any] = []
        aio_results: list[Any] = []

        def sync_block() -> None:
            with session.atomic():
                for op in ops:
                    result = outcome(lambda op=op: self._sync_op(session, op))
                    sync_results.append(result)
                    if ending == "escape" and isinstance(result, Exception):
                        raise result
                if ending == "raise":
                    raise BlockFailed

        twin = self.aio.sessions[index]

        async def async_block() -> None:
            with twin.atomic():
                for op in ops:
                    result = await async_outcome(lambda op=op: self._async_op(twin, op))
                    aio_results.append(result)
                    if ending == "escape" and isinstance(result, Exception):
                        raise result
                if ending == "raise":
                    raise BlockFailed

        sync = outcome(sync_block)
        aio = self.runner.run(async_outcome(async_block))
        self._agree(("atomic", ops, ending), (sync_results, sync), (aio_results, aio))

    def _agree(self, op: tuple[Any, ...], sync: Any, aio: Any) -> None:
        assert comparable(sync) == comparable(aio), (op, sync, aio)
        assert comparable(self.sync.calls) == comparable(self.aio.calls), (
            op,
            self.sync.calls,
            self.aio.calls,
        )
        self.sync.calls.clear()
        self.aio.calls.clear()

    @invariant()
    def pairs_are_equal(self) -> None:
        """Each pair's sessions hold the same values, history and update count."""
        for ours, theirs in zip(self.sync.sessions, self.aio.sessions, strict=True):
            mine = {k: v for k, v in ours.snapshot().items() if k != "workflow"}
            other = {k: v for k, v in theirs.snapshot().items() if k != "workflow"}
            assert mine == other, (mine, other)
            assert comparable(ours) == comparable(theirs)
            assert ours._running is None
            assert theirs._running is None


def test_the_faces_agree() -> None:
    """Random operations give the same results, errors, sessions and hook calls on both faces."""
    run_state_machine_as_test(
        Lockstep,
        # A modest count keeps the test within seconds under every profile.
        settings=settings(
            settings.default,
            max_examples=min(settings.default.max_examples, 60),
            stateful_step_count=min(settings.default.stateful_step_count, 25),
        ),
    )
