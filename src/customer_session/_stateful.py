"""A Hypothesis ``RuleBasedStateMachine`` base for testing workflows built on sessions.

Public as :class:`customer_session.testing.SessionStateMachine`.
"""

from __future__ import annotations

import copy
import pickle
import typing
from typing import TYPE_CHECKING, Any, Final, Generic, cast, get_args, get_origin

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

# typing's own TypeVar takes a default only from Python 3.13 on.
from typing_extensions import TypeVar

from customer_session._cart import CartItem, ReturnedItem
from customer_session._records import TransitionRecord
from customer_session._show import shown, shown_name
from customer_session._spec import State, Trigger
from customer_session.exceptions import (
    AfterCommitHookFailed,
    ProtectedFieldError,
    SessionNotEditable,
    TransitionError,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import _release_name, _taken_names
from customer_session.model import CustomerSession

if TYPE_CHECKING:
    from collections.abc import Callable

    from customer_session.hooks import Workflow

# The session class of a machine; unsubscripted, SessionStateMachine is one of
# CustomerSession, as it was before it took a type argument.
_S = TypeVar("_S", bound=CustomerSession, default=CustomerSession)

_SKUS = st.sampled_from(["SOCK-42", "JKT-RN-M", "CAP-01"])
_MAX_SESSIONS = 4  # a few sessions are enough to mix their histories
# One draw in six: often enough to reach a refusal, seldom enough to leave the rest.
_SELDOM = st.sampled_from([False, False, False, False, False, True])
# Returns of any positions and quantities, valid or not for the cart they meet.
_ANY_RETURNS = st.lists(
    st.builds(ReturnedItem, position=st.integers(0, 3), quantity=st.integers(1, 4)), max_size=3
).map(tuple)
# What attempt() takes for "refused, nothing changed": the errors whose promise (see
# docs/errors.md) is that the session is as it was, and that another state or input
# could have avoided. The rest (ProtectedFieldError, UnknownTrigger, WorkflowError:
# mistakes in the calling code; a failed check; any other error) fail the run.
_REFUSALS: Final = (TransitionError, SessionNotEditable, ValidationError)


class SessionStateMachine(RuleBasedStateMachine, Generic[_S]):
    """Random legal and illegal triggers against sessions bound to *your* workflow.

    Subclass it, override :meth:`make_workflow` to return a workflow with your
    guards and hooks registered, add ``@invariant()`` or ``@rule()`` methods for
    your own properties, and expose it to pytest with ``TestX = MyMachine.TestCase``.

    It is generic over the session class: subclass
    ``SessionStateMachine[ReopenableCustomerSession]`` to test sessions of that
    class, which then is :attr:`session_class`, and :attr:`sessions` and the
    sessions your rules are given have that type for a type checker
    (``SessionStateMachine`` alone is ``SessionStateMachine[CustomerSession]``).

    Built-in invariants, checked after every step:

    - every session's state is a state of its table;
    - every session's history is a path through the table ending in its state;
    - a refused or failed trigger changed nothing (checked inside each rule;
      :meth:`attempt` says which errors are refusals);
    - ``can()`` and ``why_not()`` change nothing and agree (the ``ask`` rule);
    - a trigger that commits adds its record to the history, followed only by the
      transitions its after-commit hooks fired (as ``TransitionInProgress``
      advises), and no committed transition is ever undone;
    - the history holds exactly those records.

    Each rule checks its own promise too: assigning or deleting the state raises
    ``ProtectedFieldError`` and changes nothing (``write_state``), an edit succeeds
    exactly while the session is open and idle (``edit``), copies and reloads equal
    their original (``copy_and_reload``). A failed check raises ``AssertionError``
    naming the session and what broke.

    Attributes:
        sessions: The sessions created so far (at least one after initialization).
        committed: Every committed record, per session: each record a trigger
            returned, followed by those its after-commit hooks committed.
        edits: How many edits the built-in ``edit`` rule made, per session.
        refusals: Every error a trigger raised, in order (for your invariants).
    """

    # Not a ClassVar, which may not hold a type variable; the cast is the default of
    # the type argument (_S), which __init_subclass__ sets from a subclass's own.
    session_class: type[_S] = cast("type[_S]", CustomerSession)
    """The session class under test: the type argument, or set it in your subclass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take :attr:`session_class` from the type argument of a subclass's base.

        A ``session_class`` set in the class body must be the class of the type
        argument, its own or the nearest base's (``CustomerSession`` when none
        has one), or a subclass of it.

        Raises:
            WorkflowError: The type argument is not ``CustomerSession`` or a
                subclass of it, or ``session_class`` is not the class of the type
                argument nor a subclass of it (naming both).
        """
        super().__init_subclass__(**kwargs)
        argument = _session_argument(cls)
        if "session_class" not in cls.__dict__:
            if argument is not None:
                cls.session_class = cast("type[_S]", argument)
            return
        own: object = cls.__dict__["session_class"]
        bound, whose = _bound_of(cls)
        if not (isinstance(own, type) and issubclass(own, bound)):
            raise WorkflowError(
                f"{cls.__name__}: session_class must be {bound.__name__}{whose} or a "
                f"subclass of it, got {_shown_class(own)}"
            )

    def __init__(self) -> None:
        """Create the workflow once per run."""
        super().__init__()
        taken = _taken_names()
        self.workflow: Workflow = self.make_workflow()
        # Only a workflow this run created gives its name up when the run ends.
        self._made_named_workflow = self.workflow.name not in taken | {None}
        self.sessions: list[_S] = []
        self.committed: dict[int, list[TransitionRecord]] = {}
        self.edits: dict[int, int] = {}
        self.refusals: list[Exception] = []

    def make_workflow(self) -> Workflow:
        """The workflow sessions are bound to; override to register your hooks.

        It is called once per run. A workflow it creates with a name (so that the
        ``copy_and_reload`` rule pickles sessions too) gives the name up when the
        run ends, so the next run may create it again; one that existed before the
        run keeps its name.
        """
        return self.session_class.default_workflow

    def teardown(self) -> None:
        """End the run: a named workflow ``make_workflow()`` created gives up its name.

        Hypothesis may keep a finished run's machine and sessions (a failing run's
        traceback holds them), so the name would stay taken and the next run's
        ``Workflow(name=...)`` be refused. If you override this, call it too.
        """
        super().teardown()
        if self._made_named_workflow:
            _release_name(self.workflow)

    # -- creation -------------------------------------------------------------

    @initialize(
        state=st.sampled_from([State.OPEN, State.CLOSED]),
        items=st.lists(
            st.builds(
                CartItem,
                sku=_SKUS,
                quantity=st.integers(1, 4),
                price=st.integers(0, 5000).map(lambda c: c / 100),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def create_first(self, state: State, items: list[CartItem]) -> None:
        """Start every run with one session."""
        self._create(state, items)

    @rule(
        state=st.sampled_from([State.OPEN, State.CLOSED]),
        items=st.lists(
            st.builds(CartItem, sku=_SKUS, quantity=st.integers(1, 4)), min_size=1, max_size=3
        ),
    )
    def create(self, state: State, items: list[CartItem]) -> None:
        """Create another session, open or closed."""
        if len(self.sessions) < _MAX_SESSIONS:
            self._create(state, items)

    def _create(self, state: State, items: list[CartItem]) -> None:
        session = self.session_class(
            integration_id=f"order-{len(self.sessions)}",
            state=state,
            cart_items=items,
            workflow=self.workflow,
        )
        self.sessions.append(session)
        self.committed[id(session)] = []
        self.edits[id(session)] = 0

    # -- triggers ---------------------------------------------------------------

    @rule(data=st.data())
    def fire(self, data: st.DataObject) -> None:
        """Fire any trigger (legal or not) with valid or invalid items.

        Now and then a trigger that takes no items is given some, which it refuses.
        """
        session = data.draw(st.sampled_from(self.sessions), label="session")
        trigger = data.draw(st.sampled_from(session.specification.triggers), label="trigger")
        items = self._draw_items(data, trigger)
        self.attempt(session, lambda: session.fire(trigger, items=items))

    def _draw_items(self, data: st.DataObject, trigger: Trigger) -> tuple[ReturnedItem, ...]:
        """Items for ``trigger``: any returns for a return, now and then for another trigger."""
        if trigger is Trigger.RETURN_ITEMS or data.draw(_SELDOM, label="items anyway"):
            return data.draw(_ANY_RETURNS, label="items")
        return ()

    def attempt(self, session: _S, action: Callable[[], TransitionRecord | None]) -> None:
        """Run ``action``; a refusal must leave ``session`` exactly as it was.

        Use it in your own rules for anything that may fire a trigger, alone or in
        an ``atomic()`` block with edits. A refusal is one of the library's errors
        that promise the session did not change:

        - ``TransitionError``: ``IllegalTransition``, ``GuardRejected``,
          ``HookFailed``, ``TransitionInProgress``;
        - ``SessionNotEditable`` (an edit of a session that is not open, or busy);
        - ``ValidationError`` (bad input, such as a return the cart refuses).

        A refusal is appended to ``refusals``, and fails the run if ``session``
        changed. ``AfterCommitHookFailed`` counts what the trigger committed. Any
        other error propagates and fails the run: an ``AssertionError`` of a check,
        and the errors no state of the session would avoid, which are mistakes in
        the calling code (``ProtectedFieldError``, ``UnknownTrigger``,
        ``WorkflowError``).

        ``action`` returns the record of the trigger it fired (``session.close``
        does), or ``None`` when it fires none or commits in an ``atomic()`` block.

        Raises:
            ValidationError: ``action`` returned anything else (an edit's count,
                a tuple of records): what it committed could not be checked.
        """
        before = session.snapshot()
        try:
            record = action()
        except AfterCommitHookFailed as error:
            self.refusals.append(error)
            self._note_commit(session, before["history"], error.record)
        except _REFUSALS as error:
            self.refusals.append(error)
            after = session.snapshot()
            if after != before:
                message = f"{error!r} changed session {session.integration_id!r}"
                raise AssertionError(message) from error
        else:
            if record is None:
                return
            if not isinstance(record, TransitionRecord):
                raise ValidationError.single(
                    "attempt()",
                    "action",
                    "must return the TransitionRecord of the trigger it fired, or None "
                    f"(an edit, an atomic() block); got {shown(record):.80}",
                )
            self._note_commit(session, before["history"], record)

    def _note_commit(
        self,
        session: _S,
        before: tuple[TransitionRecord, ...],
        record: TransitionRecord,
    ) -> None:
        """Add to ``committed`` what the call that returned ``record`` committed.

        That is ``record`` itself, then whatever its after-commit hooks fired (they
        run after the commit, so their records follow it); nothing committed before
        may have been undone.
        """
        history = session.history
        if history[: len(before)] != before:
            raise AssertionError("a committed transition was undone")
        gained = history[len(before) :]
        if gained[:1] != (record,):
            raise AssertionError(f"{record!r} is not what the call committed")
        if len(gained) > 1:
            # Only after-commit hooks may commit more within the same call.
            plan = session.workflow.plan(record.source, record.trigger)
            if plan is None:
                raise AssertionError(f"{record!r} came with {gained[1:]!r}")
            if not plan.after_commit:
                raise AssertionError(f"{record!r} came with {gained[1:]!r}")
        self.committed[id(session)].extend(gained)

    @rule(data=st.data())
    def ask(self, data: st.DataObject) -> None:
        """``can()`` and ``why_not()`` change nothing and give the same answer."""
        session = data.draw(st.sampled_from(self.sessions), label="session")
        trigger = data.draw(st.sampled_from(session.specification.triggers), label="trigger")
        items: tuple[ReturnedItem, ...] = ()
        if trigger is Trigger.RETURN_ITEMS:
            items = (ReturnedItem(position=0, quantity=1),)
        before = session.snapshot()
        try:
            refusals = session.why_not(trigger, items=items)
            allowed = session.can(trigger, items=items)
        except TransitionError as error:  # a guard raised: HookFailed
            self.refusals.append(error)
        else:
            if allowed != (not refusals):
                raise AssertionError(
                    f"session {session.integration_id!r}: can({shown_name(trigger)}) is {allowed}, "
                    f"but why_not() gives {refusals!r}"
                )
        if session.snapshot() != before:
            raise AssertionError(
                f"asking about {shown_name(trigger)} changed session {session.integration_id!r}"
            )

    # -- attempts to go around the table --------------------------------------------

    @rule(data=st.data(), value=st.sampled_from([*State, "bogus"]))
    def write_state(self, data: st.DataObject, value: object) -> None:
        """Assigning or deleting the state raises ProtectedFieldError and changes nothing."""
        session = data.draw(st.sampled_from(self.sessions), label="session")
        name = session.integration_id

        def refused(what: str, write: Callable[[], None]) -> None:
            before = session.snapshot()
            try:
                write()
            except ProtectedFieldError:
                pass
            except Exception as error:  # any other outcome fails the check
                raise AssertionError(
                    f"state {what} raised {error!r}, not ProtectedFieldError, in session {name!r}"
                ) from error
            else:
                raise AssertionError(f"state {what} was accepted by session {name!r}")
            # Checked after each write: a refusal that got through must not go unseen.
            if session.snapshot() != before:
                raise AssertionError(f"the refused state {what} changed session {name!r}")

        refused(f"assignment of {value!r}", lambda: setattr(session, "state", value))
        refused("deletion", lambda: delattr(session, "state"))

    @rule(data=st.data())
    def copy_and_reload(self, data: st.DataObject) -> None:
        """A session survives deepcopy, restore and (for named workflows) pickle."""
        index = data.draw(st.integers(0, len(self.sessions) - 1), label="session")
        session = self.sessions[index]
        clones = {
            "deepcopy()": copy.deepcopy(session),
            "restore(**snapshot())": type(session).restore(**session.snapshot()),
        }
        if self.workflow.name is not None:
            clones["pickle"] = pickle.loads(pickle.dumps(session))  # noqa: S301 - our own data
        for how, clone in clones.items():
            if clone != session:
                raise AssertionError(f"{how} gave {clone!r}, not {session!r}")
        # Continue with a copy, so later steps also exercise reloaded sessions.
        replacement = list(clones.values())[-1]
        self.committed[id(replacement)] = self.committed.pop(id(session))
        self.edits[id(replacement)] = self.edits.pop(id(session))
        self.sessions[index] = replacement

    @rule(data=st.data(), coupon=st.text("ABC123", min_size=1, max_size=8))
    def edit(self, data: st.DataObject, coupon: str) -> None:
        """Edits succeed only while open; elsewhere they change nothing."""
        session = data.draw(st.sampled_from(self.sessions), label="session")
        self.attempt_edit(session, coupon)

    def attempt_edit(self, session: _S, coupon: str) -> None:
        """Set the coupon; it must succeed if the session is open and not busy.

        Refused (a closed session, one whose guards ``can()``/``why_not()`` are
        asking, or one another task's ``atomic()`` block holds), it must change
        nothing. Use it in your own rules to edit; an edit counts (in
        ``update_count``) only when it changes the coupon.
        """
        before, state = session.snapshot(), session.state
        name = session.integration_id
        try:
            session.set_coupon(coupon)
        except Exception as error:  # checked right below
            busy = isinstance(error, SessionNotEditable) and (
                error.running is not None or error.held
            )
            if not busy and session.state is State.OPEN:
                message = f"set_coupon({coupon!r}) of open, idle session {name!r} raised {error!r}"
                raise AssertionError(message) from error
            if session.snapshot() != before:
                message = f"the refused set_coupon({coupon!r}) changed session {name!r}"
                raise AssertionError(message) from error
        else:
            # Only an open session takes edits (an atomic() block's own included).
            if state is not State.OPEN:
                raise AssertionError(
                    f"set_coupon({coupon!r}) was accepted by session {name!r} in '{state}'; "
                    "only an open session takes edits"
                )
            # Setting the coupon the session has changes nothing, so it is no update.
            self.edits[id(session)] += before["coupon"] != coupon

    # -- the library's invariants -----------------------------------------------------

    @invariant()
    def states_are_in_the_table(self) -> None:
        """Every session is in a state of its table."""
        for session in self.sessions:
            spec = session.specification
            if session.state not in spec.states:
                raise AssertionError(
                    f"session {session.integration_id!r} is in {shown_name(session.state)}, "
                    f"not a state of {spec.name!r}"
                )

    @invariant()
    def histories_are_paths(self) -> None:
        """Every history is a chain of table edges that ends in the current state."""
        for session in self.sessions:
            spec, name = session.specification, session.integration_id
            previous: TransitionRecord | None = None
            for index, record in enumerate(session.history):
                if spec.target(record.source, record.trigger) is not record.destination:
                    raise AssertionError(
                        f"session {name!r}: history[{index}] {record!r} is no edge of {spec.name!r}"
                    )
                if previous is not None and previous.destination is not record.source:
                    raise AssertionError(
                        f"session {name!r}: history[{index}] leaves '{record.source}', "
                        f"but history[{index - 1}] entered '{previous.destination}'"
                    )
                previous = record
            if previous is not None and previous.destination is not session.state:
                raise AssertionError(
                    f"session {name!r} is in '{session.state}', "
                    f"but its history ends in '{previous.destination}'"
                )

    @invariant()
    def history_is_what_was_committed(self) -> None:
        """The history holds exactly the records the triggers returned."""
        for session in self.sessions:
            committed = self.committed[id(session)]
            if list(session.history) != committed:
                raise AssertionError(
                    f"session {session.integration_id!r}: the history holds "
                    f"{list(session.history)!r}, but the triggers committed {committed!r}"
                )


def _session_argument(cls: type) -> type[CustomerSession] | None:
    """The session class a subclass of :class:`SessionStateMachine` gives as type argument.

    ``None`` when its bases take none (``SessionStateMachine`` unsubscripted), or a
    type variable (a generic subclass of its own).

    Raises:
        WorkflowError: The argument is neither a type variable nor
            ``CustomerSession`` or a subclass of it (``int``, a string naming a
            class): ignored, the machine would test another class.
    """
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, SessionStateMachine)):
            continue
        for argument in get_args(base):
            if isinstance(argument, TypeVar | typing.TypeVar):
                continue
            if not (isinstance(argument, type) and issubclass(argument, CustomerSession)):
                raise WorkflowError(
                    f"{cls.__name__}: the type argument of {origin.__name__} must be "
                    f"CustomerSession or a subclass of it, got {_shown_class(argument)}"
                )
            return argument
    return None


def _bound_of(cls: type) -> tuple[type[CustomerSession], str]:
    """The class ``cls``'s ``session_class`` must be or subclass, and whose type argument it is.

    The type argument of ``cls`` or of its nearest base that gives one (checked
    when that base was created), said as `` (its type argument)`` or `` (the type
    argument of Base)``; else ``CustomerSession``, which no class gave (``""``).
    """
    for klass in cls.__mro__:
        argument = _session_argument(klass)
        if argument is not None:
            whose = (
                "its type argument" if klass is cls else f"the type argument of {klass.__name__}"
            )
            return argument, f" ({whose})"
    return CustomerSession, ""


def _shown_class(value: object) -> str:
    """A class by its name (as messages name classes), anything else as :func:`shown` does."""
    return value.__qualname__ if isinstance(value, type) else f"{shown(value):.80}"
