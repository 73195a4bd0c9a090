"""One trigger as a transaction: table, arguments, guards, hooks, commit, after-commit.

The session is written in exactly one place, :func:`commit`, after every phase
before the commit point has returned. Anything raised before that restores the
session from a snapshot taken when the trigger started (taken only when the
workflow has guards or pre-commit hooks, since nothing else can change it).
An edit has a commit point of its own, :func:`commit_edit`: both are a
check-and-set against what the trigger or edit was checked on, so neither ever
lands on a session that the other changed meanwhile.

While a trigger runs its guards and hooks, and on until it has committed or
rolled back, and while ``can()``/``why_not()`` ask the guards, the session is busy
(its ``_running`` marker is set): a trigger fired meanwhile, from a guard or hook
or from another task, is refused with ``TransitionInProgress``, so no rollback can
ever undo a transition that committed in between. Edits are refused meanwhile too
(``SessionNotEditable``), except those of the trigger's own guards and hooks
(code whose context carries the run: see ``_HOOKED``), which commit or roll back
with it: so the transition commits with the session its guards and hooks saw,
and its rollback never undoes another task's edit. Asking refuses every edit and
``__setstate__`` (one made while asking could only be lost), so asking changes
nothing and has nothing to restore.

An ``atomic()`` block holds its session the same way, for code outside the block:
the marker is a :class:`Held` naming the block, and only code whose context
carries that block (the block's own code, the tasks it creates, blocks nested in
it) may fire, edit or ask; everything else is refused before it changes anything,
so the block's rollback can only ever undo the block's own changes. Inside the
block, a trigger or asking marks the :class:`Held` busy instead of the slot, so
the hold outlives them.

The async face (``_async_transaction``) runs the same steps with the phases
awaited: it shares :func:`prepare`, :func:`begin`, :func:`hook_failed`,
:func:`refused`, :func:`end`, :func:`finish` and the guard and why-not checks
below, so both faces follow one set of rules.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Coroutine, Iterable, Sized
from contextlib import suppress
from contextvars import ContextVar, Token
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from customer_session._cart import apply_returns, return_problems
from customer_session._notes import add_note_once
from customer_session._phase import Phase
from customer_session._records import TransitionEvent, TransitionRecord
from customer_session._show import counted, shown, unreadable
from customer_session._spec import State, Trigger
from customer_session.exceptions import (
    AfterCommitHookFailed,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    Problem,
    SessionNotEditable,
    TransitionInProgress,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager
    from datetime import datetime

    from customer_session._cart import AdditionalCost, CartItem, JSONValue, ReturnedItem
    from customer_session._machine import Engine
    from customer_session.hooks import Registration, Workflow, _Plan
    from customer_session.model import CustomerSession

# Enum members bound once: looking a member up on its class costs a Python call.
_GUARD, _BEFORE, _EXIT, _ENTER, _AFTER, _AFTER_COMMIT = (
    Phase.GUARD,
    Phase.BEFORE,
    Phase.EXIT,
    Phase.ENTER,
    Phase.AFTER,
    Phase.AFTER_COMMIT,
)
_RETURN_ITEMS = Trigger.RETURN_ITEMS
_OPEN = State.OPEN


class Asking:
    """The busy marker of a session whose guards ``can()``/``why_not()`` are asking.

    It stands in the session's ``_running`` where a trigger under way puts the
    trigger itself, so the same check refuses triggers meanwhile; edits and
    ``__setstate__`` are refused as well.
    """

    __slots__ = ("trigger",)

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger


class Block:
    """One open ``atomic()`` block: the owner token carried by its context.

    A context var holds the innermost open block; ``outer`` is the block it was
    opened in (any session's), so code in a nested block is also in the outer one.
    Tasks created in a block copy the context, and so belong to it.
    """

    __slots__ = ("outer",)

    def __init__(self, outer: Block | None) -> None:
        self.outer = outer


_BLOCK: ContextVar[Block | None] = ContextVar("customer_session_atomic_block", default=None)

_HOOKED: ContextVar[tuple[Run, ...]] = ContextVar("customer_session_hooked", default=())
"""The triggers under way whose pre-commit guards and hooks the running code is in.

Set from a trigger's start until it has committed or rolled back, in its thread
or task, and so in what carries a copy of that context: the tasks its hooks
create, the threads of ``asyncio.to_thread()``. Code in it may edit the session
(its edits commit or roll back with the trigger); a trigger refused there came
from the trigger's own hooks. Anything else is another task or thread: its edits
are refused, and its refusals get other advice (see :func:`_in_progress`). A
copy that outlives the run (a task left running) no longer counts: the run's
``token`` is gone.
"""


def _owner() -> object:
    """The running asyncio task, else the running thread (who opens a block)."""
    # No task can run before asyncio is imported, and importing it costs about a
    # third of the package's import time: only a program that uses it pays.
    asyncio = sys.modules.get("asyncio")
    # sys.modules holds asyncio from the start of its import, before its names are
    # bound: while another thread imports it, a block here finds no
    # _get_running_loop, and no task can be running here yet.
    # _get_running_loop (in asyncio's __all__) answers None where current_task()
    # would raise: in sync code, on every block, an exception saved.
    running_loop = getattr(asyncio, "_get_running_loop", None)
    if asyncio is None or running_loop is None:
        return threading.current_thread()
    loop = running_loop()
    task = None if loop is None else asyncio.current_task(loop)
    return task if task is not None else threading.current_thread()


class Rolling:
    """The busy marker of a hold while its block rolls back, or its store writes.

    Put there while the block puts the session back, or while a store writes what
    the block did. A thread or task of the block could otherwise commit between two of the fields
    restored (a state without its history record), or while the store writes (a
    transition in memory that the database never gets).
    """

    __slots__ = ()


ROLLING: Final = Rolling()
WRITING: Final = Rolling()
_WRITING_WHY: Final = (
    "while the store commits what the transaction block did; change the session "
    "inside the block (and wait for what the block starts), or in another transaction"
)


class Held:
    """The busy marker of a session an ``atomic()`` block holds.

    It stands in the session's ``_running``, so the checks that refuse triggers and
    edits while the session is busy see it; they let through only code in its
    innermost open block.
    ``busy`` is what that code is doing with the session now (a trigger under way,
    or an :class:`Asking`), which the session's own slot would hold otherwise.
    """

    __slots__ = ("blocks", "busy", "ended", "owner", "rolled_back", "stale")

    def __init__(self, block: Block) -> None:
        # The open blocks on the session, outermost first: code may change the
        # session only from inside the innermost (a nested block's rollback would
        # otherwise undo what the outer block's other tasks did meanwhile). The
        # outermost stays first after it has ended (``ended``), until the session
        # is free: when no nested block and nothing ``busy`` is left.
        self.blocks = [block]
        self.ended = False
        # The task (or thread) that opened the block: only it may nest blocks in it.
        self.owner = _owner()
        self.busy: Trigger | Asking | Rolling | None = None
        # Set when a block on the session rolled back while ``busy`` was still under
        # way: that trigger must neither commit nor roll back onto the restored session.
        self.rolled_back = False
        # Open blocks whose snapshot an older block's rollback made stale: restoring
        # it would bring back what that rollback undid.
        self.stale: set[Block] = set()

    def settle(self, session: CustomerSession) -> None:
        """Free ``session`` if the block has ended and nothing of it is left."""
        if self.ended and len(self.blocks) == 1 and self.busy is None and session._running is self:
            session._running = None


def _in_block(block: Block) -> bool:
    """Whether the running code is inside ``block`` (or a block nested in it)."""
    current = _BLOCK.get()
    while current is not None:
        if current is block:
            return True
        current = current.outer
    return False


def _free(running: Trigger | Asking | Held) -> bool:
    """Whether the running code may change a session whose marker is ``running``.

    Only when an ``atomic()`` block the code is in holds it, and nothing runs in it.
    """
    return type(running) is Held and running.busy is None and _in_block(running.blocks[-1])


class Run:
    """One trigger under way: the model a machine drives (it never sees the session).

    This base holds what both faces share; :class:`_Run` adds the sync phases and
    ``_async_transaction`` the awaited ones.
    """

    __slots__ = (
        "_event",
        "cart",
        "current",
        "destination",
        "history",
        "items",
        "phase",
        "plan",
        "refusal",
        "seen",
        "session",
        "source",
        "state",
        "timestamp",
        "token",
        "trigger",
    )

    def __init__(  # noqa: PLR0917 - built on the hot path; keywords would cost
        self,
        session: CustomerSession,
        plan: _Plan | None,
        trigger: Trigger,
        source: State,
        destination: State,
        timestamp: datetime,
        items: tuple[ReturnedItem, ...],
    ) -> None:
        self.session = session
        # The busy marker when the trigger was checked; nobody else may have taken
        # the session by the time it begins (see ``begin``); from then on, the one
        # the run put there, which it must still find when it commits (see ``commit``).
        self.seen = session._running
        # The history when the trigger was checked: every commit replaces it, so a
        # transition committed meanwhile shows even when the state stayed the same.
        self.history = session._history
        # The cart the returned items were checked against (see ``commit``).
        self.cart = session._cart_items
        self.plan = plan
        self.trigger = trigger
        # The state the checks judged, read before the clock ran: the clock (user
        # code) or another thread may have moved the session since (see ``begin``).
        self.source = source
        # The machine's states are keyed by the plain values. A StrEnum member hashes
        # and compares as its value, so it finds them without the ``.value`` descriptor
        # call (the lean events only look states up by key, never by ``get_state``).
        self.state: str = source
        self.destination = destination
        self.timestamp = timestamp
        self.items = items
        self._event: TransitionEvent | None = None
        self.refusal: Refusal | None = None
        self.phase = _GUARD
        self.current: Registration | None = None
        # Set while the run is under way: from ``begin`` (its user code may run)
        # to ``end`` (committed or rolled back).
        self.token: Token[tuple[Run, ...]] | None = None

    def event(self) -> TransitionEvent:
        """The event hooks receive, built on first use."""
        if self._event is None:
            self._event = TransitionEvent(
                self.session,
                self.trigger,
                self.source,
                self.destination,
                self.timestamp,
                self.items,
            )
        return self._event


class _Run(Run):
    """The run the sync machine drives: each phase calls its guards or hooks."""

    __slots__ = ()

    def guards(self) -> bool:
        """Run the guards in order; stop at the first refusal."""
        if self.plan is None or not self.plan.guards:
            return True
        event = self.event()
        for entry in self.plan.guards:
            self.current = entry
            reason = call_guard(entry, event)
            if reason is not None:
                self.refusal = Refusal(entry.name, reason)
                return False
        return True

    def _hooks(self, phase: Phase, entries: tuple[Registration, ...]) -> None:
        self.phase = phase
        if entries:
            event = self.event()
            for entry in entries:
                self.current = entry
                call_hook(entry, event)

    def before(self) -> None:
        """Run the ``BEFORE`` hooks."""
        if self.plan is not None:
            self._hooks(_BEFORE, self.plan.before)

    def exit(self) -> None:
        """Run the ``EXIT`` hooks of the source state."""
        if self.plan is not None:
            self._hooks(_EXIT, self.plan.exit)

    def enter(self) -> None:
        """Run the ``ENTER`` hooks of the destination state."""
        if self.plan is not None:
            self._hooks(_ENTER, self.plan.enter)

    def after(self) -> None:
        """Run the ``AFTER`` hooks."""
        if self.plan is not None:
            self._hooks(_AFTER, self.plan.after)


def call_guard(entry: Registration, event: TransitionEvent) -> str | None:
    """Run one guard; ``None`` allows, a non-empty string is the refusal's reason."""
    if entry.is_async:
        raise WorkflowError(f"guard {entry.name!r} is async; fire triggers through the async face")
    value = entry.func(event)
    if value is not None and type(value) is not str:
        refuse_awaitable(entry, value)
    return verdict(entry, value)


def verdict(entry: Registration, value: object) -> str | None:
    """Check what a guard returned: ``None`` or a non-empty reason, nothing else."""
    if value is None or (isinstance(value, str) and value):
        return value
    raise WorkflowError(
        f"guard {entry.name!r} returned {shown(value)}; return None to allow "
        "or a non-empty reason to refuse"
    )


def call_hook(entry: Registration, event: TransitionEvent) -> None:
    """Run one hook (sync face: async hooks are refused with a clear error)."""
    if entry.is_async:
        raise WorkflowError(f"hook {entry.name!r} is async; fire triggers through the async face")
    result = entry.func(event)
    if result is not None:
        refuse_awaitable(entry, result)


def refuse_awaitable(entry: Registration, value: object) -> None:
    """Refuse an awaitable that a plain guard or hook returned: the sync face cannot await it.

    A plain function may still be async in effect (one that returns an async
    function's call, a decorator's wrapper): the async face awaits what it returns,
    so the sync face must not drop it unawaited, as if it had run.

    Raises:
        WorkflowError: ``value`` is awaitable (a coroutine is closed first, unrun).
    """
    if inspect.isawaitable(value):
        if isinstance(value, Coroutine):
            value.close()  # never started: closing it keeps it from warning unawaited
        kind = "guard" if entry.phase is _GUARD else "hook"
        raise WorkflowError(
            f"{kind} {entry.name!r} returned an awaitable ({type(value).__name__}), so it is "
            "async; fire triggers through the async face"
        )


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[CustomerSession]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(a.name for a in attrs.fields(cls) if a.eq)
    return names


_GETTERS: dict[type, Callable[[CustomerSession], tuple[Any, ...]]] = {}


def snapshot(session: CustomerSession) -> tuple[Any, ...]:
    """Every field of ``session`` (fields hold immutable values, so this is a copy)."""
    getter = _GETTERS.get(type(session))
    if getter is None:
        # One C call per snapshot (every session has several fields, so a tuple).
        getter = _GETTERS[type(session)] = attrgetter(*_field_names(type(session)))
    return getter(session)


def undo(run: Run, saved: tuple[Any, ...] | None) -> None:
    """Put back what ``run`` changed before its commit point failed.

    Not when the ``atomic()`` block it was fired in rolled back under it: the
    session is already back where the block started, and ``saved`` is newer.
    The run is still under way, so nothing else changed the session meanwhile.
    """
    running = run.session._running
    if not (type(running) is Held and running.rolled_back):
        rollback(run.session, saved)


def rollback(session: CustomerSession, values: tuple[Any, ...] | None) -> None:
    """Put back what :func:`snapshot` took."""
    if values is not None:
        for name, value in zip(_field_names(type(session)), values, strict=True):
            setattr(session, name, value)


_Session = TypeVar("_Session", bound="CustomerSession")
_ALL_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def twin(session: _Session, workflow: Workflow) -> _Session:
    """An unchecked copy of the valid ``session``, bound to ``workflow``.

    Fields hold immutable values, so sharing them copies them. For the store, which
    keeps its own copy of each session it read or wrote and starts each attempt
    from a twin of it, without parsing or validating the stored document again.
    ``workflow`` must drive the session's specification.
    """
    cls = type(session)
    names = _ALL_FIELD_NAMES.get(cls)
    if names is None:
        names = _ALL_FIELD_NAMES[cls] = tuple(a.name for a in attrs.fields(cls))
    copy = object.__new__(cls)
    for name in names:
        setattr(copy, name, getattr(session, name))
    copy._workflow = workflow
    copy._running = None
    return copy


def allowed(session: CustomerSession) -> frozenset[Trigger]:
    """The triggers the machine accepts from the session's state."""
    return session.workflow.engine.allowed(session.state)


def _timestamp(session: CustomerSession, workflow: Workflow) -> datetime:
    now = workflow.now()
    # Never before the last change, so ``updated`` cannot go backwards.
    return max(now, session._updated)


def _busy(session: CustomerSession) -> tuple[Trigger | None, bool, bool] | None:
    """What keeps ``session`` busy for the running code, or ``None`` if nothing does.

    Returns:
        ``(running, asking, held)``: the trigger under way or asked about, whether it
        is only asked, and whether an ``atomic()`` block the code is not in holds the
        session (then ``running`` is ``None``).
    """
    marker = session._running
    if isinstance(marker, Held):
        return _held_busy(marker.busy, marker.blocks[-1])
    return _running_busy(marker)


def _held_busy(
    busy: Trigger | Asking | Rolling | None, inner: Block
) -> tuple[Trigger | None, bool, bool] | None:
    """:func:`_busy` for a hold whose code does ``busy`` and whose innermost block is ``inner``."""
    if isinstance(busy, Rolling) or not _in_block(inner):
        return None, False, True
    return _running_busy(busy)


def _running_busy(
    running: Trigger | Asking | Rolling | None,
) -> tuple[Trigger | None, bool, bool] | None:
    """:func:`_busy` of a session (or a block's code) doing ``running``."""
    if running is None or isinstance(running, Rolling):
        return None
    if isinstance(running, Asking):
        return running.trigger, True, False
    return running, False, False


def _not_editable(
    session: CustomerSession, operation: str, busy: tuple[Trigger | None, bool, bool]
) -> SessionNotEditable:
    """The refusal of ``operation`` on ``session``, busy as ``busy`` says."""
    running, asking, held = busy
    return SessionNotEditable(
        operation=operation,
        state=session.state,
        integration_id=session.integration_id,
        running=running,
        asking=asking,
        held=held,
        elsewhere=running is not None and not asking and not _hooked(session),
        why=_writing_why(session),
    )


def _writing_why(session: CustomerSession) -> str | None:
    """The explanation of a refusal while a store writes the block's changes, if it is."""
    marker = session._running
    return _WRITING_WHY if type(marker) is Held and marker.busy is WRITING else None


class Edit:
    """What an edit was checked on: the busy marker, and the fields an edit may change.

    :func:`check_edit` takes it, the edit builds its new values on it, and
    :func:`commit_edit` applies them only to a session that still holds all of it.
    """

    __slots__ = (
        "additional_costs",
        "attributes",
        "busy",
        "cart_items",
        "count",
        "coupon",
        "held",
        "history",
        "identifiers",
        "inner",
        "profile_id",
        "referral",
        "rolled_back",
        "running",
    )

    running: Trigger | Asking | Held | None
    held: Held | None  # ``running`` if it is a hold
    # Of a held session only: what its block's code was doing and its innermost block.
    busy: Trigger | Asking | Rolling | None
    inner: Block
    # Whether a block rolled back under the trigger under way (never, unless held).
    rolled_back: bool
    history: tuple[TransitionRecord, ...]
    count: int
    profile_id: str | None
    coupon: str | None
    referral: str | None
    cart_items: tuple[CartItem, ...]
    identifiers: tuple[str, ...]
    attributes: Mapping[str, JSONValue]
    additional_costs: Mapping[str, AdditionalCost]

    def fields(self) -> dict[str, Any]:
        """The editable fields as they were, by constructor name."""
        return {
            "profile_id": self.profile_id,
            "coupon": self.coupon,
            "referral": self.referral,
            "cart_items": self.cart_items,
            "identifiers": self.identifiers,
            "attributes": self.attributes,
            "additional_costs": self.additional_costs,
        }


def check_edit(session: CustomerSession, operation: str) -> Edit:
    """Check that ``session`` may be edited now; what the edit is to be built on.

    Only an open session can be edited. An edit made while a trigger is under way
    by its own guards and hooks commits or rolls back with it; one from another
    task or thread meanwhile would change the session under the guards that
    checked it (the transition would commit with values no guard saw) or be undone
    by its rollback, and one made while ``can()``/``why_not()`` ask, or from
    outside an ``atomic()`` block that holds the session, could be undone by a
    rollback it had no part in.

    Raises:
        SessionNotEditable: The session is not open, a trigger the running code is
            not in the guards or hooks of is under way (``elsewhere``), ``can()`` or
            ``why_not()`` are asking the guards, or an ``atomic()`` block the
            running code is not in holds the session.
    """
    seen = Edit()
    # Read before any check: the checks judge these values, not the session, and
    # commit_edit() applies the edit only to a session that still holds every one
    # of them (so another thread may run between two of these reads).
    running = seen.running = session._running
    state = session._state
    seen.history = session._history
    seen.count = session._update_count
    seen.profile_id = session._profile_id
    seen.coupon = session._coupon
    seen.referral = session._referral
    seen.cart_items = session._cart_items
    seen.identifiers = session._identifiers
    seen.attributes = session._attributes
    seen.additional_costs = session._additional_costs
    if type(running) is Held:
        seen.held = running
        seen.busy, seen.inner, seen.rolled_back = (
            running.busy,
            running.blocks[-1],
            running.rolled_back,
        )
    else:
        seen.held = None
        seen.rolled_back = False
    if state is not _OPEN:
        raise SessionNotEditable(
            operation=operation, state=state, integration_id=session.integration_id
        )
    if running is not None:
        if isinstance(running, Held):
            busy = _held_busy(seen.busy, seen.inner)
        else:
            busy = _running_busy(running)
        # A trigger whose block rolled back under it: nothing of it is kept or undone,
        # so the edits of its hooks would outlive the rollback. A trigger the code is
        # not a guard or hook of: its guards checked the session as it is.
        if busy is not None and (busy[1] or busy[2] or seen.rolled_back or not _hooked(session)):
            raise _not_editable(session, operation, busy)
    return seen


def commit_edit(
    session: CustomerSession,
    seen: Edit,
    operation: str,
    values: Mapping[str, Any],
    timestamp: datetime,
) -> None:
    """The edit's commit point: the editable fields, ``updated`` and the count together.

    ``values`` are every editable field (constructor names) as the edit leaves them,
    built on ``seen`` and validated. They are applied only if the session still
    holds all of ``seen`` (the busy marker, the state, the history, the update count
    and every editable field), so an edit never lands on a session that a trigger
    took or committed on since it was checked, nor undoes another edit; and no other
    thread ever sees a value of it before it is whole and valid.

    Raises:
        SessionNotEditable: The session changed since the check; nothing was changed.
    """
    profile_id = values["profile_id"]
    coupon = values["coupon"]
    referral = values["referral"]
    cart_items = values["cart_items"]
    identifiers = values["identifiers"]
    attributes = values["attributes"]
    additional_costs = values["additional_costs"]
    held = seen.held  # the session's marker too, as long as it is still seen's
    # From this test to the last store: no call, where CPython could switch threads.
    running = session._running
    if (
        running is not seen.running
        or session._state is not _OPEN
        or session._history is not seen.history
        or session._update_count != seen.count
        or session._profile_id is not seen.profile_id
        or session._coupon is not seen.coupon
        or session._referral is not seen.referral
        or session._cart_items is not seen.cart_items
        or session._identifiers is not seen.identifiers
        or session._attributes is not seen.attributes
        or session._additional_costs is not seen.additional_costs
        or (
            held is not None
            and (
                held.busy is not seen.busy
                or held.blocks[-1] is not seen.inner
                or held.rolled_back is not seen.rolled_back
            )
        )
    ):
        raise _edit_overtaken(session, operation)
    session._profile_id = profile_id
    session._coupon = coupon
    session._referral = referral
    session._cart_items = cart_items
    session._identifiers = identifiers
    session._attributes = attributes
    session._additional_costs = additional_costs
    if timestamp > session._updated:  # noqa: PLR1730 - max() is a call: see above
        session._updated = timestamp
    session._update_count += 1


_OVERTAKEN: Final = (
    "because the session changed hands after the edit was checked (a trigger or "
    "another edit, from another task or thread or from the workflow's clock); "
    "nothing was changed"
)


def _edit_overtaken(session: CustomerSession, operation: str) -> SessionNotEditable:
    """The refusal of an edit that something else changed the session under."""
    state = session._state
    # A trigger committed first: refused as the edit would be now, for the state.
    why = None if state is not _OPEN else _OVERTAKEN
    return SessionNotEditable(
        operation=operation, state=state, integration_id=session.integration_id, why=why
    )


def check_idle(session: CustomerSession, operation: str) -> None:
    """Refuse to replace ``session`` as a whole (``__setstate__``) while it is busy.

    A trigger under way would commit onto whatever was loaded (a cancelled session
    could become closed), and its busy marker would be lost. Inside an ``atomic()``
    block that holds the session (and runs nothing), replacing it is an edit like
    any other, undone if the block rolls back.

    Raises:
        SessionNotEditable: A trigger is in progress, its guards are being asked, or
            an ``atomic()`` block the running code is not in holds the session.
    """
    # getattr: __setstate__ may run on an object that was never initialized.
    if getattr(session, "_running", None) is not None:
        busy = _busy(session)
        if busy is not None:
            raise _not_editable(session, operation, busy)


Opened = tuple[Held, Block, Token[Block | None]]
"""What :func:`hold` gives :func:`release`: the hold, the block, its context token."""


def hold(session: CustomerSession) -> Opened:
    """Open an ``atomic()`` block on ``session`` in the running code's context.

    The session is held for the new block unless a block the code is already in
    holds it (a nested block); the block's token is set in the context either way.

    Returns:
        The hold (this block's, or the one of the block it is nested in), the
        block and its context token.

    Raises:
        SessionNotEditable: The session is busy for the running code: a trigger is
            in progress, its guards are being asked, or another block holds it.
    """
    block = Block(_BLOCK.get())
    held = Held(block)
    while True:
        # Test and take with no call in between, where CPython could switch threads.
        running = session._running
        if running is None:
            session._running = held
            break
        if _free(running):
            # Nested: the block it is opened in keeps holding the session, until this
            # one has closed too.
            assert type(running) is Held  # noqa: S101 - only a hold is free
            if running.owner is not _owner():
                # Blocks of several tasks would roll back over each other's changes.
                raise SessionNotEditable(
                    operation="atomic",
                    state=session.state,
                    integration_id=session.integration_id,
                    held=True,
                    why=(
                        "in another task or thread than the atomic() block that holds the "
                        "session; nest blocks in the task that opened it"
                    ),
                )
            held = running
            held.blocks.append(block)
            break
        busy = _busy(session)
        if busy is not None:
            raise _not_editable(session, "atomic", busy)
        # Another thread freed the session between the two looks: test and take again.
    return held, block, _BLOCK.set(block)


def may_restore(opened: Opened) -> bool:
    """Whether the block's snapshot may be put back (no older block rolled back since)."""
    held, block, _ = opened
    return block not in held.stale


def rolling(opened: Opened) -> bool:
    """Mark the hold busy while its block rolls back; whether it was (for :func:`rolled`)."""
    held = opened[0]
    if held.busy is None:
        held.busy = ROLLING
        return True
    return False  # a trigger is under way: it is orphaned, nothing else may run


def rolled(opened: Opened, marked: bool) -> None:
    """The block has put the session back: drop :func:`rolling`'s mark."""
    if marked and opened[0].busy is ROLLING:
        opened[0].busy = None


def writing(session: CustomerSession) -> AbstractContextManager[None]:
    """Keep the block's own code off ``session`` while a store writes what it did.

    A store calls it when the body of its transaction block has returned, inside the
    ``atomic()`` block it opened. A thread or task of the block that fired a trigger
    or edited the session meanwhile would change it in memory only: the write would
    miss it, and the store's copy would no longer be what the database holds.

    Raises:
        SessionNotEditable: A trigger the block started is still in progress (or its
            guards are still being asked), or an ``atomic()`` block it opened is
            still open: the block ended too early; nothing is written, and the
            block's rollback keeps that trigger from committing and that nested
            block from restoring its snapshot.
    """
    return _Writing(session)


class _Writing:
    """What :func:`writing` returns (a class: stores enter it on every commit)."""

    __slots__ = ("marker", "session")

    def __init__(self, session: CustomerSession) -> None:
        self.session = session

    def __enter__(self) -> None:
        session = self.session
        marker = session._running
        if type(marker) is not Held:  # pragma: no cover - the store's own block holds it
            raise AssertionError("writing() needs the session held by an atomic() block")
        self.marker = marker
        # Only the block's own code (this thread or task) opens nested blocks, so their
        # count is read first: from the test of ``busy`` to the mark, no call where
        # CPython could switch threads.
        nested = len(marker.blocks) > 1
        busy = marker.busy
        if busy is None and not nested:
            marker.busy = WRITING
        elif busy is None:
            # Only the block's own code nests blocks: it left one open (a generator
            # suspended in it, say), which could still roll back what is written.
            raise SessionNotEditable(
                operation="commit",
                state=session.state,
                integration_id=session.integration_id,
                why=(
                    "while an atomic() block opened in the transaction block is still open; "
                    "close it inside the block. Nothing was written"
                ),
            )
        else:
            # Only the block's own rollback marks ROLLING, and only its body WRITING.
            assert not isinstance(busy, Rolling)  # noqa: S101
            asking = isinstance(busy, Asking)
            running = busy.trigger if isinstance(busy, Asking) else busy
            doing = (
                f"can() or why_not() ask {running}()'s guards" if asking else f"{running}() runs"
            )
            raise SessionNotEditable(
                operation="commit",
                state=session.state,
                integration_id=session.integration_id,
                running=running,
                asking=asking,
                why=(
                    f"while {doing}, started in the transaction block and not over when it "
                    "ended; wait for it inside the block. Nothing was written"
                ),
            )

    def __exit__(self, *exc_info: object) -> None:
        if self.marker.busy is WRITING:
            self.marker.busy = None


def release(session: CustomerSession, opened: Opened, *, failed: bool) -> None:
    """Close the ``atomic()`` block :func:`hold` opened; the outermost frees the session.

    What the block's tasks still have under way keeps the session held until it is
    over: a trigger or an asking (after a rollback, that trigger may neither commit
    nor roll back onto the restored session), and blocks nested in it.
    """
    held, block, token = opened
    if session._running is held:  # never touch a mark it did not set
        blocks = held.blocks
        if failed:
            if held.busy is not None:
                held.rolled_back = True  # its end (or done_asking) settles it
            # Blocks opened after this one and still open would restore a snapshot
            # newer than the state this rollback put back.
            held.stale.update(blocks[blocks.index(block) + 1 :])
        held.stale.discard(block)
        if block is blocks[0]:
            held.ended = True
        else:
            blocks.remove(block)
        held.settle(session)
    # Closed in another context (a generator finalized elsewhere), the token does
    # not reset: that context never entered the block, so it is left as it is.
    with suppress(ValueError):
        _BLOCK.reset(token)


def _check_call(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[State, State, tuple[ReturnedItem, ...], list[Problem]]:
    """Table and argument checks; raises for the table, returns argument problems.

    Returns:
        ``(source, destination, returned items, problems)``: the state the table was
        asked about, where ``trigger`` leads from it, and the checked items.
    """
    workflow = session._workflow
    source = session.state
    if session._running is not None:
        busy = _busy(session)
        if busy is not None:
            raise _in_progress(session, trigger, source, busy)
    destination = workflow.engine.destination(source, trigger)
    if destination is None:
        raise IllegalTransition(
            trigger=trigger,
            state=source,
            integration_id=session.integration_id,
            allowed=workflow.engine.allowed(source),
        )
    if trigger is _RETURN_ITEMS:
        returned, problems = return_problems(session.cart_items, items)
        return source, destination, returned, problems
    return source, destination, (), _unwanted_items(trigger, items)


def _unwanted_items(trigger: Trigger, items: object) -> list[Problem]:
    """The refusal of items given to ``trigger``, which takes none; empty ones are none.

    An iterator is always true, so its emptiness is decided by reading its first
    entry (no more: one is enough to refuse); one that fails to read is refused
    with why. Anything else goes by its truth value, as a list or a tuple does.
    """
    # A tuple (what the trigger methods pass) skips the abstract-class checks.
    if type(items) is not tuple and isinstance(items, Iterable) and not isinstance(items, Sized):
        try:
            given = next(iter(items), _NOTHING) is not _NOTHING
        except Exception as exc:  # noqa: BLE001 - the caller's iterable failed: refused, named
            return [Problem("items", unreadable(exc))]
    else:
        given = bool(items)
    return [Problem("items", f"{trigger}() takes no items")] if given else []


_NOTHING: Final = object()


_R = TypeVar("_R", bound=Run)


def prepare(
    run_class: type[_R], session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> _R:
    """Table and argument checks, then the run to drive; nothing has run or changed yet."""
    seen = session._running  # as the check finds it: the clock below may take long
    history, cart = session._history, session._cart_items
    source, destination, returned, problems = _check_call(session, trigger, items)
    if problems:
        raise _bad_items(session, trigger, problems)
    workflow = session._workflow
    plan = workflow.plan(source, trigger)
    timestamp = _timestamp(session, workflow)
    run = run_class(session, plan, trigger, source, destination, timestamp, returned)
    run.seen, run.history, run.cart = seen, history, cart
    return run


def _bad_items(
    session: CustomerSession, trigger: Trigger, problems: list[Problem]
) -> ValidationError:
    """The refusal of ``trigger``'s arguments (its items), before anything ran."""
    return ValidationError(f"session {session.integration_id!r}: {trigger}()", problems)


def fire(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> TransitionRecord:
    """Run ``trigger`` on ``session`` as one transaction and return its record."""
    workflow = session._workflow
    source = session._state
    destination = workflow.plain_destination(source, trigger)
    seen = session._running
    history, cart = session._history, session._cart_items
    if destination is not None and (seen is None or _free(seen)):
        # Nothing registered for this edge: no user code can run before the commit
        # point, so there is nothing to snapshot and no run to keep. Anything unusual
        # (hooks, no transition, a busy session) takes the full path.
        problems: list[Problem] | None
        if trigger is _RETURN_ITEMS:
            returned, problems = return_problems(cart, items)
        elif type(items) is tuple and not items:  # what close() and cancel() pass: no call
            returned, problems = (), None
        else:
            returned, problems = (), _unwanted_items(trigger, items)
        if problems:
            # Refused here, as the full path would: ``items`` may be an iterator these
            # checks read from, which the full path would find with fewer entries.
            raise _bad_items(session, trigger, problems)
        timestamp = _timestamp(session, workflow)
        record = TransitionRecord(trigger, source, destination, timestamp, returned)
        commit(session, record, seen, history, cart)
        return record
    return _fire(session, trigger, items)


def _fire(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> TransitionRecord:
    """:func:`fire` with every check, guard and hook."""
    run = prepare(_Run, session, trigger, items)
    plan = run.plan
    engine = session._workflow.engine
    if plan is None:
        # Nothing registered: no user code runs before the commit point.
        engine.run(run, trigger)
        record = finish(run)
    else:
        if plan.first_async is not None:
            # Refuse before anything runs: an async after-commit hook found only
            # after the commit would leave a committed transition half-reported.
            raise _async_refused(run, plan.first_async)
        record = _run_hooked(run, plan, engine)
    if plan is not None and plan.after_commit:
        _after_commit(run, plan.after_commit, record)
    return record


def _async_refused(run: _Run, entry: Registration) -> HookFailed:
    run.phase, run.current = entry.phase, entry
    error = hook_failed(run, None)
    kind = "guard" if entry.phase is Phase.GUARD else "hook"
    error.__cause__ = WorkflowError(
        f"{kind} {entry.name!r} is async; fire triggers through the async face"
    )
    return error


def _run_hooked(run: _Run, plan: _Plan, engine: Engine) -> TransitionRecord:
    """Run the machine with user code in it and commit; restore the session if anything fails.

    The session stays busy until it has committed or rolled back: another thread
    could otherwise change it between the last hook and the commit (the record
    would not be what the guards checked) or before the rollback (which would
    undo that change).
    """
    saved = begin(run, plan)
    try:
        accepted = engine.run(run, run.trigger)
    except Exception as exc:
        raise hook_failed(run, saved) from exc
    except BaseException:
        undo(run, saved)
        raise
    else:
        if not accepted:
            raise refused(run, saved)
        recheck_returns(run, saved)
        return finish(run)
    finally:
        end(run)


def recheck_returns(run: Run, saved: tuple[Any, ...] | None) -> None:
    """Refuse a return whose cart the pre-commit hooks changed under its items.

    The items were checked against the cart before the hooks ran, and the commit
    applies them to the cart the hooks left (a table may allow returns from a
    state in which the cart can be edited).

    Raises:
        ValidationError: The items no longer fit the cart; the session is rolled back.
    """
    if not run.items or saved is None:  # no return, or no hook that could edit
        return
    session = run.session
    cart = session._cart_items
    _, problems = return_problems(cart, run.items)
    if problems:
        undo(run, saved)
        raise ValidationError(
            f"session {session.integration_id!r}: {run.trigger}(), once its pre-commit "
            "hooks had changed the cart",
            problems,
        )
    run.cart = cart


def begin(run: Run, plan: _Plan) -> tuple[Any, ...] | None:
    """Mark the session busy with ``run``; return the snapshot to roll back to.

    Only pre-commit guards and hooks can change the session before the commit
    point, so without them there is nothing to snapshot.
    """
    session = run.session
    saved = snapshot(session) if plan.pre_commit else None
    # No call from this test to the mark, where CPython could switch threads.
    running = session._running
    # A trigger that committed since the checks (fired by the clock, or by another
    # thread while the clock ran) leaves the marker free but moves the state (the
    # run's destination was looked up for the old one), or at least the history (a
    # further return: the run's items were checked against the old cart).
    if (
        running is not run.seen
        or session._state is not run.source
        or session._history is not run.history
    ):
        raise _taken(run)
    if type(running) is Held:  # the running code's own atomic() block holds it
        if running.busy is not None:  # another thread in the same block is at it
            raise _taken(run)
        running.busy = run.trigger
    else:
        session._running = running = run.trigger
    run.seen = running  # what the commit must still find
    run.token = _HOOKED.set((*_HOOKED.get(), run))
    return saved


def end(run: Run) -> None:
    """The session is no longer busy with ``run`` (committed or rolled back)."""
    session = run.session
    if run.token is not None:
        _HOOKED.reset(run.token)
        run.token = None
    running = session._running
    if type(running) is Held:
        running.busy = None
        running.rolled_back = False  # the run, which it kept from committing, is over
        running.settle(session)
    else:
        session._running = None


def hook_failed(run: Run, saved: tuple[Any, ...] | None) -> HookFailed:
    """Roll back after a guard or hook raised; the error that says which one."""
    session = run.session
    undo(run, saved)
    return HookFailed(
        trigger=run.trigger,
        state=run.source,
        integration_id=session.integration_id,
        phase=run.phase,
        hook=run.current.name if run.current is not None else "?",
    )


def refused(run: Run, saved: tuple[Any, ...] | None) -> GuardRejected:
    """Roll back after a guard refused; the error that names it."""
    session = run.session
    undo(run, saved)
    refusal = run.refusal
    assert refusal is not None  # noqa: S101 - the engine only refuses through a guard
    return GuardRejected(
        trigger=run.trigger,
        state=run.source,
        integration_id=session.integration_id,
        guard=refusal.guard or "?",
        reason=refusal.reason,
    )


def finish(run: Run) -> TransitionRecord:
    """Commit ``run`` (every phase before the commit point has returned).

    A run with guards or hooks commits before :func:`end`, while it still keeps
    the session busy.
    """
    running = run.session._running
    if type(running) is Held and running.rolled_back and run.token is not None:
        raise _taken(
            run, "because the atomic() block it was fired in rolled back before it committed"
        )
    record = TransitionRecord(run.trigger, run.source, run.destination, run.timestamp, run.items)
    # Under way (begun, not ended), the run's own trigger keeps a hold busy.
    busy = run.trigger if run.token is not None else None
    commit(run.session, record, run.seen, run.history, run.cart, busy)
    return record


def commit(  # noqa: PLR0917 - the commit point's whole test; keywords would cost
    session: CustomerSession,
    record: TransitionRecord,
    seen: object,
    history: tuple[TransitionRecord, ...],
    cart: tuple[CartItem, ...],
    busy: Trigger | None = None,
) -> None:
    """The commit point: state, cart returns, history, ``updated`` and count together.

    ``seen`` is the busy marker the caller found free (or, for a run under way,
    the one it put there), ``history`` the history it checked the trigger on and
    ``cart`` the cart it checked the returned items against; ``busy`` is what an
    ``atomic()`` block's hold must be busy with (the run's trigger, or nothing).
    The commit happens only if all of them are still there and the session
    is still in the record's source state, so a session that changed hands
    meanwhile (another thread took it or committed a transition, even one that
    stays in its state, a block rolled back under the trigger) never gets an edge
    its table does not have, a unit returned twice or a history that goes back.

    Raises:
        TransitionInProgress: The session changed hands; nothing was changed.
    """
    returned = record._returned_items
    returned_cart = apply_returns(cart, returned) if returned else None
    timestamp = record._timestamp
    # From this test to the last store: no call, where CPython could switch threads.
    running = session._running
    if (
        running is not seen
        or (type(running) is Held and (running.busy is not busy or running.rolled_back))
        or session._state is not record._source
        or session._history is not history
        or (returned_cart is not None and session._cart_items is not cart)
    ):
        raise _changed_hands(session, record._trigger, record._source)
    if returned_cart is not None:
        session._cart_items = returned_cart
    session._state = record._destination
    session._history = (*session._history, record)
    # A pre-commit hook may have edited the session after the run's timestamp was
    # taken; ``updated`` never moves back.
    if timestamp > session._updated:  # noqa: PLR1730 - max() is a call: see above
        session._updated = timestamp
    session._update_count += 1


def _taken(run: Run, why: str | None = None) -> TransitionInProgress:
    """The refusal of a trigger whose session another task or thread took meanwhile."""
    return _in_progress(run.session, run.trigger, run.source, _busy(run.session), why)


def _in_progress(
    session: CustomerSession,
    trigger: Trigger,
    state: State,
    busy: tuple[Trigger | None, bool, bool] | None,
    why: str | None = None,
) -> TransitionInProgress:
    """The refusal of ``trigger`` on ``session``, busy as ``busy`` says (``None``: taken).

    ``why`` replaces the explanation the busy marker gives.
    """
    running, asking, held = busy if busy is not None else (None, False, False)
    if why is None:
        why = _CHANGED_HANDS if busy is None else _writing_why(session)
    return TransitionInProgress(
        trigger=trigger,
        state=state,
        integration_id=session.integration_id,
        running=running,
        asking=asking,
        held=held,
        elsewhere=running is not None and not asking and not _hooked(session),
        why=why,
    )


def _hooked(session: CustomerSession) -> bool:
    """Whether the running code is in a guard or hook of the trigger under way on ``session``.

    One trigger at most is under way on a session, so a run of the context that
    is on ``session`` and not over (its token is set until :func:`end`) is that one.
    """
    return any(run.session is session and run.token is not None for run in _HOOKED.get())


_CHANGED_HANDS: Final = (
    "because the session changed hands before it could commit (another task or thread "
    "took it); nothing was changed"
)


def _changed_hands(
    session: CustomerSession, trigger: Trigger, state: State
) -> TransitionInProgress:
    """The refusal of ``trigger`` on a session another task or thread took meanwhile."""
    return _in_progress(session, trigger, state, None)


def edit_timestamp(session: CustomerSession) -> datetime:
    """When an edit of ``session`` happens: the clock's time, never before ``updated``."""
    return _timestamp(session, session._workflow)


def _after_commit(run: _Run, entries: tuple[Registration, ...], record: TransitionRecord) -> None:
    run.phase = _AFTER_COMMIT
    event = run.event()
    errors: list[Exception] = []
    for index, entry in enumerate(entries):
        try:
            call_hook(entry, event)
        except Exception as exc:  # noqa: BLE001 - every hook runs; failures are grouped
            errors.append(after_commit_failure(entry, exc))
        except BaseException as stop:
            after_commit_interrupted(stop, record, entries, index, errors)
            raise
    if errors:
        raise AfterCommitHookFailed(record, errors)


def after_commit_interrupted(
    stop: BaseException,
    record: TransitionRecord,
    entries: tuple[Registration, ...],
    index: int,
    errors: list[Exception],
) -> None:
    """Tell on ``stop`` (an interrupt, a cancellation) what it cut short after the commit.

    ``entries[index]`` is the hook it interrupted, ``errors`` the failures of the
    hooks before it; see :func:`interrupted_after_commit`.
    """
    interrupted_after_commit(
        stop,
        record,
        entries[index].name,
        [repr(entry.name) for entry in entries[index + 1 :]],
        AfterCommitHookFailed(record, errors) if errors else None,
    )


def interrupted_after_commit(
    stop: BaseException,
    record: TransitionRecord,
    hook: str,
    skipped: Iterable[str],
    group: AfterCommitHookFailed | None,
) -> None:
    """Note on ``stop`` that ``record`` committed and after-commit hook ``hook`` was cut short.

    It propagates as it is, but not silently: a note says that ``record`` committed,
    which after-commit hook it interrupted and which did not run (``skipped``, as
    shown); ``group``, the failures of the hooks before it, which would have been
    raised as an :class:`AfterCommitHookFailed`, goes in ``stop``'s ``__context__``
    (the context it had moves onto the group), so a traceback shows them and a
    handler can find them. Shared by the session's faces and the stores, which run
    the hooks of a transaction's triggers after its database commit.
    """
    note = (
        f"{record.trigger}() committed ({record.source} -> {record.destination}), then "
        f"after-commit hook {hook!r} was interrupted"
    )
    not_run = ", ".join(skipped)
    if not_run:
        note += f"; {not_run} did not run"
    if group is not None:
        group.__context__ = stop.__context__
        stop.__context__ = group
        note += (
            f"; {counted(len(group.exceptions), 'after-commit hook')} had raised before (the "
            "AfterCommitHookFailed in this exception's __context__)"
        )
    add_note_once(stop, note)


def after_commit_failure(entry: Registration, exc: Exception) -> Exception:
    """Name the after-commit hook in ``exc``, which joins the group raised at the end."""
    add_note_once(exc, f"after-commit hook {entry.name!r}")
    return exc


def why_not(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[Refusal, ...]:
    """Every reason ``trigger`` would be refused now; nothing is changed."""
    seen = session._running  # as the checks find it
    refusals, event, entries = why_not_before_guards(session, trigger, items)
    if event is None:
        return refusals
    found: list[Refusal] = []
    # Busy while the guards run: nothing can change the session, so nothing is restored.
    marker = ask(session, trigger, seen, event.source)
    if marker is None:
        return taken_refusal(session, trigger)
    try:
        for entry in entries:
            try:
                reason = call_guard(entry, event)
            except Exception as exc:
                raise guard_failed(event, entry) from exc
            if reason is not None:
                found.append(Refusal(entry.name, reason))
    finally:
        done_asking(session, marker)
    return tuple(found)


def ask(session: CustomerSession, trigger: Trigger, seen: object, source: State) -> Asking | None:
    """Mark ``session`` busy while ``trigger``'s guards are asked; ``None`` if it was taken.

    ``seen`` is the busy marker the checks found free and ``source`` the state they
    judged; another thread (or the clock) may have taken or moved the session since
    (the clock ran in between).
    """
    marker = Asking(trigger)
    # No call from this test to the mark, where CPython could switch threads.
    running = session._running
    if running is not seen or session._state is not source:
        return None
    if type(running) is Held:  # the running code's own atomic() block holds it
        if running.busy is not None:  # another thread in the same block is at it
            return None
        running.busy = marker
    else:
        session._running = marker
    return marker


def taken_refusal(session: CustomerSession, trigger: Trigger) -> tuple[Refusal]:
    """What ``why_not`` answers when the session was taken while it got ready to ask."""
    return (Refusal(None, str(_changed_hands(session, trigger, session._state))),)


def done_asking(session: CustomerSession, marker: Asking) -> None:
    """The session is no longer busy with the asking that ``marker`` stands for."""
    # Never clear a mark this asking did not set.
    running = session._running
    if running is marker:
        session._running = None
    elif type(running) is Held and running.busy is marker:
        running.busy = None
        running.rolled_back = False  # asking changed nothing to keep or undo
        running.settle(session)


def why_not_before_guards(
    session: CustomerSession, trigger: Trigger, items: Iterable[ReturnedItem]
) -> tuple[tuple[Refusal, ...], TransitionEvent | None, tuple[Registration, ...]]:
    """The refusals of the table and the arguments, else the guards to ask.

    Returns:
        ``(refusals, None, ())`` when the answer is known without guards (empty
        refusals: accepted); otherwise ``((), event, guards)``, to ask every guard.
    """
    try:
        source, destination, returned, problems = _check_call(session, trigger, items)
    except (IllegalTransition, TransitionInProgress) as exc:
        return (Refusal(None, str(exc)),), None, ()
    if problems:
        return tuple(Refusal(None, str(p)) for p in problems), None, ()
    workflow = session.workflow
    entries = workflow.entries(Phase.GUARD, trigger)
    if not entries:
        return (), None, ()
    timestamp = _timestamp(session, workflow)
    event = TransitionEvent(session, trigger, source, destination, timestamp, returned)
    return (), event, entries


def guard_failed(event: TransitionEvent, entry: Registration) -> HookFailed:
    """The error for a guard that raised while asked why not (nothing to roll back)."""
    return HookFailed(
        trigger=event.trigger,
        state=event.source,
        integration_id=event.session.integration_id,
        phase=Phase.GUARD,
        hook=entry.name,
        asking=True,
    )
