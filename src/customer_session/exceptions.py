"""The error tree of customer-session.

Every error the library raises derives from :class:`CustomerSessionError`. Each one
carries the data that explains it as attributes, and also subclasses the builtin
exception it really is (a write to a protected field is an :class:`AttributeError`,
bad input is a :class:`ValueError`), so code that catches builtins keeps working.

.. code-block:: text

    CustomerSessionError
    ├── SpecificationError (ValueError)    a transition table that cannot work
    ├── TransitionError                    a trigger that did not commit
    │   ├── IllegalTransition              the table forbids it from this state
    │   ├── GuardRejected                  a guard refused, with a reason
    │   ├── HookFailed                     a hook before the commit point raised
    │   └── TransitionInProgress           a trigger fired while the session is busy
    ├── AfterCommitHookFailed (ExceptionGroup)  committed, but after-commit hooks raised
    ├── ProtectedFieldError (AttributeError)    a direct write or delete
    ├── SessionNotEditable                 an edit outside the open state, or while busy
    ├── ValidationError (ValueError)       bad input, each problem with its path
    ├── UnknownTrigger (ValueError)        a trigger name the table does not know
    ├── WorkflowError (ValueError)         a workflow misused, or its clock failing
    ├── ConcurrentUpdate                   a store could not commit after its retries
    ├── StoreError                         a store's data cannot be read or written
    │   ├── SessionNotFound (KeyError)     no session with that integration id
    │   ├── SessionExists                  create() of an integration id already stored
    │   ├── KeyAlreadyProcessed            an idempotency key used a second time
    │   ├── EffectNotPending (KeyError)    discard() of an outbox row that is not pending
    │   ├── StoreTimeout (TimeoutError)    gave up waiting for a lock or a connection
    │   ├── CorruptData (ValueError)       a stored document or journal that does not load
    │   ├── UnsupportedSchema              a database written by a newer customer-session
    │   └── SchemaNotReady                 no store, or an older schema, and migrate=False
    ├── RenderingUnavailable (RuntimeError)     graphviz or dot is missing
    └── RenderingFailed (RuntimeError)          dot ran but gave no image
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from attrs import frozen

from customer_session._show import counted, shown, shown_name

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from customer_session._phase import Phase
    from customer_session._records import TransitionRecord
    from customer_session._spec import State, Trigger

__all__ = [
    "AfterCommitHookFailed",
    "ConcurrentUpdate",
    "CorruptData",
    "CustomerSessionError",
    "EffectNotPending",
    "GuardRejected",
    "HookFailed",
    "IllegalTransition",
    "KeyAlreadyProcessed",
    "Problem",
    "ProtectedFieldError",
    "RenderingFailed",
    "RenderingUnavailable",
    "SchemaNotReady",
    "SessionExists",
    "SessionNotEditable",
    "SessionNotFound",
    "SpecificationError",
    "StoreError",
    "StoreTimeout",
    "TransitionError",
    "TransitionInProgress",
    "UnknownTrigger",
    "UnsupportedSchema",
    "ValidationError",
    "WorkflowError",
]


def _rebuilt(cls: type[BaseException], args: tuple[object, ...]) -> BaseException:
    """An error of ``cls`` with ``args``, made without its ``__init__`` (for pickle and copy)."""
    error = cls.__new__(cls, *args)
    # OSError's __new__ leaves args to __init__ for a subclass with its own __init__.
    error.args = args
    return error


class CustomerSessionError(Exception):
    """The root of every error raised by customer-session.

    Errors pickle and copy with their message and attributes intact, so they can
    cross process boundaries (``multiprocessing``, ``concurrent.futures``).
    """

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuild from the message and the attributes, not from ``__init__``'s arguments.

        The builtin reduction calls ``cls(*self.args)``: that fails, or builds a
        different message, for errors whose ``__init__`` takes data, not a message.
        """
        return _rebuilt, (type(self), self.args), self.__dict__


class SpecificationError(CustomerSessionError, ValueError):
    """A specification (transition table) is inconsistent; raised when it is defined.

    Attributes:
        specification: The specification's name.
        reason: What is wrong with it.
    """

    def __init__(self, specification: str, reason: str) -> None:
        """Name the specification and what is wrong with it."""
        super().__init__(f"specification {shown(specification)}: {reason}")
        self.specification = specification
        self.reason = reason


def _names(triggers: Iterable[str]) -> str:
    ordered = sorted(str(t) for t in triggers)
    return ", ".join(f"{t}()" for t in ordered) if ordered else "none (terminal state)"


class TransitionError(CustomerSessionError):
    """A trigger did not commit; the session is exactly as it was before the call.

    Attributes:
        trigger: The trigger that was fired.
        state: The state of the session when it was fired (and still is).
        integration_id: The session's integration id.
    """

    def __init__(
        self, message: str, *, trigger: Trigger, state: State, integration_id: str
    ) -> None:
        """Store the data shared by all failed transitions."""
        super().__init__(message)
        self.trigger = trigger
        self.state = state
        self.integration_id = integration_id


class IllegalTransition(TransitionError):
    """The transition table has no edge for this trigger from the current state.

    Attributes:
        allowed: The triggers the table allows from ``state``.
    """

    def __init__(
        self, *, trigger: Trigger, state: State, integration_id: str, allowed: frozenset[Trigger]
    ) -> None:
        """Build the message from the trigger, the state and what is allowed."""
        super().__init__(
            f"session {integration_id!r}: cannot {trigger}() from state '{state}'; "
            f"allowed: {_names(allowed)}",
            trigger=trigger,
            state=state,
            integration_id=integration_id,
        )
        self.allowed = allowed


class GuardRejected(TransitionError):
    """A guard refused the transition.

    Attributes:
        guard: The guard's name.
        reason: The reason the guard gave.
    """

    def __init__(
        self, *, trigger: Trigger, state: State, integration_id: str, guard: str, reason: str
    ) -> None:
        """Name the guard and its reason in the message."""
        super().__init__(
            f"session {integration_id!r}: {trigger}() from '{state}' refused by guard "
            f"{shown(guard)}: {reason}",
            trigger=trigger,
            state=state,
            integration_id=integration_id,
        )
        self.guard = guard
        self.reason = reason


class HookFailed(TransitionError):
    """A guard or hook raised before the commit point; nothing was changed.

    The original exception is chained as ``__cause__``. ``can()`` and ``why_not()``
    raise it too, for a guard that raised while they asked it (``asking``); then
    nothing was fired.

    Attributes:
        phase: The phase whose callable raised.
        hook: The callable's name.
        asking: Whether ``can()`` or ``why_not()`` were asking the guards (rather
            than the trigger being fired and rolled back).
    """

    def __init__(
        self,
        *,
        trigger: Trigger,
        state: State,
        integration_id: str,
        phase: Phase,
        hook: str,
        asking: bool = False,
    ) -> None:
        """Name the phase and the hook in the message, and what was under way."""
        failed = f"{phase.value} hook {shown(hook)} raised"
        if asking:
            message = (
                f"session {integration_id!r}: can() or why_not() for {trigger}() from "
                f"'{state}' failed: {failed}; nothing was fired or changed"
            )
        else:
            message = (
                f"session {integration_id!r}: {trigger}() from '{state}' rolled back: {failed}"
            )
        super().__init__(message, trigger=trigger, state=state, integration_id=integration_id)
        self.phase = phase
        self.hook = hook
        self.asking = asking


class TransitionInProgress(TransitionError):
    """A trigger was fired on a session that is busy: nothing may change it yet.

    A session is busy while one of its transitions has not committed (hooks before
    the commit point must not fire triggers on the session they run for;
    after-commit hooks may), while ``can()`` or ``why_not()`` ask its guards, and,
    for every other task and thread, while an ``atomic()`` block holds it.

    Attributes:
        running: The trigger whose transition is in progress, or whose guards are
            being asked; ``None`` when the session is held by an ``atomic()`` block.
        asking: Whether ``can()`` or ``why_not()`` are asking ``running``'s guards
            (rather than a transition being in progress).
        held: Whether an ``atomic()`` block of another task or thread holds the
            session (then ``running`` is ``None``).
        elsewhere: Whether ``running`` is in progress in another task or thread
            (then the refused call should wait for it), rather than the call coming
            from one of its own hooks before the commit point (which should fire it
            from an after-commit hook instead).
    """

    def __init__(
        self,
        *,
        trigger: Trigger,
        state: State,
        integration_id: str,
        running: Trigger | None,
        asking: bool = False,
        held: bool = False,
        elsewhere: bool = False,
        why: str | None = None,
    ) -> None:
        """Name both triggers, or the block that holds the session (unless ``why`` says).

        ``why`` replaces the explanation, for a session that changed hands between
        the trigger's checks and its commit point.
        """
        if why is None:
            if held:
                why = _HELD
            elif asking:
                why = _asking(running)
            elif elsewhere:
                # Only an async trigger can be under way in another task of the loop
                # the call runs in, and a face waits for those.
                why = (
                    f"while {running}() is in progress in another task or thread; try again "
                    f"once it has finished, or, from a task of the event loop running it, "
                    f"await {trigger}() through AsyncSession, which waits for it"
                )
            else:
                why = f"while {running}() is in progress; fire it from an after-commit hook instead"
        super().__init__(
            f"session {integration_id!r}: cannot {trigger}() {why}",
            trigger=trigger,
            state=state,
            integration_id=integration_id,
        )
        self.running = running
        self.asking = asking
        self.held = held
        self.elsewhere = elsewhere


def _asking(running: Trigger | None) -> str:
    return (
        f"while can() or why_not() ask the guards of {running}(); "
        "nothing may change the session until they have answered"
    )


_HELD = (
    "while an atomic() block of another task or thread holds the session; "
    "only the block's own code (and the tasks it creates) may change it until it ends"
)


def _after_commit_message(record: TransitionRecord, errors: Sequence[Exception]) -> str:
    return (
        f"{record.trigger}() committed ({record.source} -> {record.destination}) "
        f"but {counted(len(errors), 'after-commit hook')} raised"
    )


class AfterCommitHookFailed(CustomerSessionError, ExceptionGroup[Exception]):
    """The transition committed, but one or more after-commit hooks raised.

    It is an :class:`ExceptionGroup` of the hooks' exceptions (``except*`` works),
    raised once every after-commit hook has run. The session is in its new state.

    Attributes:
        record: The committed transition.
    """

    record: TransitionRecord

    def __new__(cls, record: TransitionRecord, errors: Sequence[Exception]) -> Self:
        """Build the group and attach the committed record."""
        self = super().__new__(cls, _after_commit_message(record, errors), list(errors))
        self.record = record
        return self

    def __init__(self, record: TransitionRecord, errors: Sequence[Exception]) -> None:
        """Forward to :class:`ExceptionGroup` (the work is done in ``__new__``)."""
        super().__init__(_after_commit_message(record, errors), list(errors))

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuild from the record and the hooks' exceptions, as the group was built."""
        return type(self), (self.record, list(self.exceptions)), self.__dict__

    def derive(self, excs: Sequence[Exception]) -> AfterCommitHookFailed:  # type: ignore[override] # one exception type
        """Keep the record when ``except*`` splits the group."""
        return AfterCommitHookFailed(self.record, excs)


class ProtectedFieldError(CustomerSessionError, AttributeError):
    """A session field was assigned or deleted directly.

    Attributes:
        field: The field's name.
        hint: What to use instead.
    """

    def __init__(self, field: str, hint: str) -> None:
        """Name the field and what to use instead."""
        super().__init__(f"{shown(field)} cannot be assigned or deleted directly; {hint}")
        self.field = field
        self.hint = hint


_WHOLE: Final = frozenset({"__setstate__", "atomic", "commit"})
"""The operations on a whole session, which a trigger's own hooks may not do either."""


class SessionNotEditable(CustomerSessionError):
    """A cart or session edit was refused: the session is not open, or it is busy.

    Only open sessions can be edited. No session can be edited while ``can()`` or
    ``why_not()`` ask its guards, nor by another task or thread while a trigger on
    it is in progress (only that trigger's own guards and hooks may edit it until
    it has committed or rolled back) or an ``atomic()`` block holds it, nor
    reloaded (``__setstate__``) while a trigger on it is in progress or its guards
    are being asked (see :class:`TransitionInProgress`). An edit that a trigger or
    another edit overtook (the session changed after the edit was checked) is
    refused whole.
    An ``atomic()`` block cannot be opened on a
    session that is busy in any of these ways. A store refuses to commit (operation
    ``commit``, nothing written) a transaction whose block ended while a trigger it
    started was still running or an ``atomic()`` block it opened was still open.

    Attributes:
        operation: The refused operation.
        state: The session's state.
        integration_id: The session's integration id.
        running: The trigger that keeps the session busy; ``None`` when the edit
            was refused for the state, for an ``atomic()`` block, or because the
            session changed under it.
        asking: Whether ``can()`` or ``why_not()`` are asking ``running``'s guards.
        held: Whether an ``atomic()`` block of another task or thread holds the
            session.
        elsewhere: Whether ``running`` is in progress in another task or thread
            (then the refused call should wait for it), rather than the call coming
            from one of its own guards or hooks (which may edit, but not reload the
            session or open a block on it).
    """

    def __init__(
        self,
        *,
        operation: str,
        state: State,
        integration_id: str,
        running: Trigger | None = None,
        asking: bool = False,
        held: bool = False,
        elsewhere: bool = False,
        why: str | None = None,
    ) -> None:
        """Name the operation and the state, or what keeps the session busy.

        ``why`` replaces the explanation (a nested block refused in another task).
        """
        if why is None:
            if held:
                why = _HELD
            elif running is None:
                why = f"in state '{state}'; only open sessions can be edited"
            elif asking:
                why = _asking(running)
            elif elsewhere:
                why = f"while {running}() is in progress in another task or thread; try again "
                # Its hooks may edit (not reload the session, nor open a block on it).
                if operation in _WHOLE:
                    why += "once it has finished"
                else:
                    why += f"once it has finished, or make the edit in one of {running}()'s hooks"
            else:
                why = f"while {running}() is in progress"
        super().__init__(f"session {integration_id!r}: cannot {operation}() {why}")
        self.operation = operation
        self.state = state
        self.integration_id = integration_id
        self.running = running
        self.asking = asking
        self.held = held
        self.elsewhere = elsewhere


@frozen
class Problem:
    """One problem found in some input: where it is and what is wrong.

    Attributes:
        path: Where, e.g. ``cart_items[2].quantity`` or ``$.cartItems[2].quantity``.
        message: What is wrong there.
    """

    path: str
    message: str

    def __str__(self) -> str:
        """Render as ``path: message``."""
        return f"{self.path}: {self.message}"


class ValidationError(CustomerSessionError, ValueError):
    """Input was refused; every problem is listed with its path.

    Attributes:
        subject: What was being validated (e.g. ``session 'order-42'``).
        problems: Every problem found, in input order.
    """

    def __init__(self, subject: str, problems: Sequence[Problem]) -> None:
        """List every problem in the message, one per line when there are several."""
        self.subject = subject
        self.problems: tuple[Problem, ...] = tuple(problems)
        if len(self.problems) == 1:
            text = f"{subject}: {self.problems[0]}"
        else:
            lines = "".join(f"\n  {p}" for p in self.problems)
            text = f"{subject}: {counted(len(self.problems), 'problem')}:{lines}"
        super().__init__(text)

    @classmethod
    def single(cls, subject: str, path: str, message: str) -> ValidationError:
        """A validation error with one problem."""
        return cls(subject, [Problem(path, message)])


class UnknownTrigger(CustomerSessionError, ValueError):
    """A trigger name that the specification does not define.

    Attributes:
        trigger: The name that was given.
        known: The triggers that exist.
    """

    def __init__(self, trigger: object, known: Iterable[str]) -> None:
        """Name the unknown trigger and the known ones, and the table that has it, if one does."""
        self.trigger = trigger
        self.known: tuple[str, ...] = tuple(sorted(str(k) for k in known))
        super().__init__(
            f"unknown trigger {shown_name(trigger):.80}; known: {', '.join(self.known)}"
            + _elsewhere(trigger, self.known)
        )


def _elsewhere(trigger: object, known: Sequence[str]) -> str:
    """Where the library's other table has ``trigger`` (``reopen``), as advice; else ``""``."""
    # Imported here: the specification module raises this module's errors.
    from customer_session._spec import CUSTOMER_SESSION, REOPENABLE_SESSION  # noqa: PLC0415 - an import cycle

    name = str.__str__(trigger) if isinstance(trigger, str) else None
    reopen_only = set(REOPENABLE_SESSION.triggers).difference(CUSTOMER_SESSION.triggers)
    if name is None or name in known or name not in reopen_only:
        return ""
    return (
        f" (only the reopenable table has {name}(): use a ReopenableCustomerSession, "
        "and a Workflow of REOPENABLE_SESSION)"
    )


class WorkflowError(CustomerSessionError, ValueError):
    """A workflow was misused, or its clock failed.

    A wrong specification or session class, an unknown or duplicate name, a bad
    registration, a guard returning something other than ``None`` or a reason, or
    a clock that returned no aware datetime or raised (what it raised is the
    ``__cause__``).
    """


class ConcurrentUpdate(CustomerSessionError):
    """A store could not commit a change because other writers kept winning.

    Attributes:
        integration_id: The session.
        attempts: How many times the change was tried.
    """

    def __init__(self, integration_id: str, attempts: int) -> None:
        """Name the session and the number of attempts."""
        super().__init__(
            f"session {integration_id!r}: gave up after {counted(attempts, 'attempt')}; "
            "other writers changed it each time"
        )
        self.integration_id = integration_id
        self.attempts = attempts


class StoreError(CustomerSessionError):
    """A store's data could not be read or written.

    The base of the store's errors; raised as itself when the database cannot
    be reached or fails, the store object was closed or is used in a process
    forked from the one that opened it, or its SQLite file was deleted or replaced
    while it was open.

    Attributes:
        integration_id: The session concerned, when there is one.
    """

    def __init__(self, message: str, integration_id: str | None = None) -> None:
        """Keep the session the problem concerns."""
        super().__init__(message)
        self.integration_id = integration_id


class SessionNotFound(StoreError, KeyError):
    """No session with this integration id is stored.

    Attributes:
        integration_id: The session asked for.
    """

    def __init__(self, integration_id: str) -> None:
        """Name the session that is not stored."""
        super().__init__(f"session {integration_id!r} is not in the store", integration_id)

    def __str__(self) -> str:
        """The message (a ``KeyError`` would show its quoted repr)."""
        return str(self.args[0])


class SessionExists(StoreError):
    """``create()`` was given a session whose integration id is already stored.

    Nothing was written. A create whose idempotency key is recorded raises
    :class:`KeyAlreadyProcessed` instead (a redelivery of the create).

    Attributes:
        integration_id: The session.
    """

    def __init__(self, integration_id: str) -> None:
        """Name the session that is already stored."""
        super().__init__(f"session {integration_id!r} is already stored", integration_id)


class KeyAlreadyProcessed(StoreError):
    """A change carried an idempotency key that the store already recorded.

    Nothing of the change was written.

    Attributes:
        key: The idempotency key.
        integration_id: The session the change was for, when there is one.
    """

    def __init__(self, key: str, integration_id: str | None) -> None:
        """Name the key and the session."""
        where = "store" if integration_id is None else f"session {integration_id!r}"
        super().__init__(
            f"{where}: idempotency key {shown(key)} was already processed", integration_id
        )
        self.key = key


class EffectNotPending(StoreError, KeyError):
    """``discard()`` was given an outbox row that is not pending; nothing was changed.

    A ``KeyError``: no pending row has that sequence number.

    Attributes:
        sequence: The outbox row's sequence number.
        found: What the row is instead: ``"delivered"``, ``"discarded"``, or
            ``None`` when the outbox has no row of that number (never written, or
            purged).
        integration_id: ``None``: the row is named by its sequence number.
    """

    def __init__(self, sequence: int, found: str | None) -> None:
        """Name the row and what it is instead of pending."""
        what = "is not in the outbox" if found is None else f"was already {found}"
        super().__init__(f"outbox row {sequence} {what}; only a pending row can be discarded")
        self.sequence = sequence
        self.found = found

    def __str__(self) -> str:
        """The message (a ``KeyError`` would show its quoted repr)."""
        return str(self.args[0])


class StoreTimeout(StoreError, TimeoutError):
    """A store call gave up waiting: for a lock another connection held, or for a connection.

    The wait was the limit already (the store's ``timeout``, or the server's
    ``lock_timeout`` or ``statement_timeout``), so no store call retries it; in
    particular ``update()`` retries lost races only. The statement that waited
    did not run: a change the call was to commit was not written. Call again
    later, raise the limit, or find what holds the lock that long (a long
    transaction of another connection or program; with every pooled connection in
    use, a larger ``max_connections``).

    A ``TimeoutError``, so code that handles timeouts of any kind catches it too.

    Attributes:
        database: The database, as the store names it (an SQLite file; a PostgreSQL
            URL without its password or other secrets).
        waited_for: What the call waited for (``"the write lock"``, ``"a lock"``,
            ``"a connection"``, ``"its statement"``).
        setting: The setting whose limit ran out: ``"timeout"`` (the store's
            argument), libpq's ``"connect_timeout"`` (given in a PostgreSQL
            store's connection string or by ``PGCONNECT_TIMEOUT``), or the server's
            ``"lock_timeout"`` or ``"statement_timeout"``.
        timeout: The limit in seconds when it is the store's ``timeout`` or
            ``connect_timeout`` (``None`` for a ``connect_timeout`` of 0: no limit
            asked); ``None`` for a server setting (the store does not know its value).
        integration_id: The session concerned, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        database: str,
        waited_for: str,
        setting: str,
        timeout: float | None,
        integration_id: str | None = None,
    ) -> None:
        """Keep what was waited for, where, and the limit that ran out."""
        super().__init__(message, integration_id)
        self.database = database
        self.waited_for = waited_for
        self.setting = setting
        self.timeout = timeout


class CorruptData(StoreError, ValueError):
    """Stored data does not load: a session document, a journal entry, an outbox row or a key.

    Also raised by ``rebuild`` for a journal that does not rebuild a session.

    Attributes:
        integration_id: The session whose data it is, when known.
    """


class UnsupportedSchema(StoreError):
    """The database holds a schema version this library does not know.

    Usually a newer customer-session wrote it, and upgrading the library reads it.
    A version no library writes (the store's tables without one, a negative one)
    means the version table was damaged; the message says which.

    Attributes:
        found: The version the database records (``None`` when it records none).
        supported: The newest version this library reads and writes.
        database: The database, as the store names it (an SQLite file; a PostgreSQL
            URL without its password, and the schema), which the message starts
            with; ``None`` when not given (the message says "the database").
        integration_id: The session the caller was about to use, when there is one.
    """

    def __init__(
        self,
        found: object,
        supported: int,
        integration_id: str | None,
        *,
        database: str | None = None,
    ) -> None:
        """Say which database has which version, and which this library knows."""
        if isinstance(found, int) and not isinstance(found, bool) and found > supported:
            message = (
                f"has customer-session schema version {shown(found)}, but this "
                f"library knows versions up to {supported}; it was written by a newer "
                "customer-session: upgrade the library to use it"
            )
        else:
            # No library writes this: upgrading would not help, and migrating would fail.
            what = (
                "no schema version" if found is None else f"the schema version {shown(found):.60}"
            )
            message = (
                f"has customer-session tables but {what}, which no "
                f"customer-session writes (versions are 1 to {supported}); its table "
                "customer_session_schema is damaged: repair it, or use another database"
            )
        if database is None:
            where = "store" if integration_id is None else f"session {integration_id!r}"
            message = f"{where}: the database {message}"
        else:
            # Named first, as SchemaNotReady names it: the command line prints it as is.
            message = f"{database} {message}"
        super().__init__(message, integration_id)
        self.database = database
        self.found = found
        self.supported = supported


class SchemaNotReady(StoreError):
    """The database holds no session store, or an older schema, and may not be migrated.

    Raised on first use by a store opened with ``migrate=False`` (a worker whose
    database is migrated at deploy time), which neither creates the store's tables
    nor migrates them: nothing was written. Open the database once with
    ``migrate=True`` (the default) to create or migrate its schema.

    Attributes:
        database: The database, as the store names it (an SQLite file; a
            PostgreSQL URL without its password, and the schema).
        found: The schema version the database records (0: no session store at all).
        required: The schema version this library reads and writes.
        condition: What the database holds, as the message says it without its
            advice (``holds no session store (no customer_session tables)``), for
            callers that give their own (the command line names its command).
        integration_id: The session the caller was about to use, when there is one.
    """

    def __init__(
        self,
        database: str,
        found: int,
        required: int,
        integration_id: str | None = None,
        *,
        why: str = "no customer_session tables",
    ) -> None:
        """Say which database holds what, and how to get it ready.

        ``why`` says how a database of version 0 was found empty (``no such file``).
        """
        if found == 0:
            condition = f"holds no session store ({why})"
            advice = "; open it with migrate=True to create one"
        else:
            condition = (
                f"has customer-session schema version {found}, this library needs {required}"
            )
            advice = ": migrate it (open it with migrate=True once, at deploy time)"
        super().__init__(f"{database} {condition}{advice}", integration_id)
        self.condition = condition
        self.database = database
        self.found = found
        self.required = required


class RenderingUnavailable(CustomerSessionError, RuntimeError):
    """An image was requested but Graphviz (package or ``dot`` binary) is missing.

    Attributes:
        missing: What is missing.
        install: How to install it.
    """

    def __init__(self, missing: str, install: str) -> None:
        """Say what is missing and how to install it."""
        super().__init__(f"cannot render images: {missing} is missing; {install}")
        self.missing = missing
        self.install = install


class RenderingFailed(CustomerSessionError, RuntimeError):
    """Graphviz's ``dot`` is installed but did not produce the image.

    Attributes:
        command: The command that failed, e.g. ``dot -Tpng``.
        reason: Why: its exit status and the first line it printed on standard
            error, or why it could not be started.
    """

    def __init__(self, command: str, reason: str) -> None:
        """Name the command and why it failed."""
        super().__init__(f"cannot render images: {shown(command)} failed: {reason}")
        self.command = command
        self.reason = reason
