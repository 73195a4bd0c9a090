"""What every backend shares: loading, optimistic commits, retries, journal, outbox.

A backend (:mod:`._sqlite`, :mod:`._postgres`) supplies a handful of database
steps (fetch a row, insert, compare-and-set, read the journal and the outbox);
everything that decides *what* to write and *when* is here, so both backends
follow one set of rules and pass one contract test suite.
"""

from __future__ import annotations

import inspect
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, NamedTuple, Self, TypeVar, cast

from customer_session._cart import raise_problems
from customer_session._show import shown
from customer_session._spec import State, Trigger, member
from customer_session._transaction import twin, writing
from customer_session.exceptions import (
    ConcurrentUpdate,
    CorruptData,
    EffectNotPending,
    KeyAlreadyProcessed,
    Problem,
    SchemaNotReady,
    SessionExists,
    SessionNotFound,
    StoreError,
    StoreTimeout,
    UnknownTrigger,
    WorkflowError,
)
from customer_session.hooks import Workflow
from customer_session.model import CustomerSession, _check_session_class
from customer_session.store import _changes, _log
from customer_session.store._arguments import check
from customer_session.store._arguments import problems as argument_problems
from customer_session.store._deferral import Shadow, deferring, run_queued
from customer_session.store._documents import load_session, state_from_row, subject
from customer_session.store._journal import JournalEntry, entry_from_row
from customer_session.store._keys import ProcessedKey, processed_key_from_row
from customer_session.store._outbox import (
    DurableEffect,
    Effect,
    check_effect_name,
    delivering,
    effect_from_row,
    failure,
    note_failure,
    note_interrupted,
    unrecorded,
)
from customer_session.store._queries import Query, query, select_ids
from customer_session.store._schema import SCHEMA_VERSION, found_version, steps_from

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
    from types import TracebackType

    from customer_session.store._changes import Change
    from customer_session.store._outbox import Delivery, EffectHandler

_S = TypeVar("_S", bound=CustomerSession)
_T = TypeVar("_T")

DEFAULT_RETRIES: Final = 8
"""How many times ``update`` re-runs a change that lost a race, by default."""

_CACHE_SIZE: Final = 4096
# The cache's bound in characters of stored documents: sessions have no size limit
# (custom attributes), and a cached session costs several times its document (the
# text, its parsed data, the session), so 4,096 of a megabyte each would be gigabytes.
_CACHE_CHARACTERS: Final = 8 * 2**20
_DELIVERY_BATCH: Final = 100

# The store object and the key whose refusal the commits in this context may replace
# (see StoreCore._revising); a context variable, so other threads and tasks writing
# through the same store object are not affected.
_REVISING: ContextVar[tuple[object, str] | None] = ContextVar(
    "customer_session_revising", default=None
)


class _OutboxTally:
    """The outbox rows the commits of a :meth:`StoreCore._counting_outbox` block wrote."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.rows = 0
        # Its thread's commits only, unless code in the block runs others in a copy
        # of its context (copy_context().run in a pool): those may add at once.
        self._lock = threading.Lock()

    def add(self, rows: int) -> None:
        """Count ``rows`` more rows."""
        with self._lock:
            self.rows += rows


# The tallies open in this context (see StoreCore._counting_outbox): a context variable,
# so a commit counts only in the blocks of its own thread or task, never in those of
# other threads writing through the same store object at the same time.
_TALLIES: ContextVar[tuple[_OutboxTally, ...]] = ContextVar(
    "customer_session_outbox_tallies", default=()
)


Row = tuple[object, object, str]
"""A fetched session row: its ``version``, ``state`` and ``document`` columns.

The version and the state are checked (a damaged SQLite column may hold anything).
"""


class _Conflict(Exception):
    """The row changed since it was loaded; the attempt did not commit."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version
        """The row version the attempt loaded (and its compare-and-set expected)."""


class _Stale(Exception):
    """The cached copy an attempt started from was out of date; nothing was written."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version
        """The version of the cached copy."""


class _Cached(NamedTuple):
    """A session as this store object last read or wrote it.

    ``session`` is the store's own copy, never handed out: attempts start from
    twins of it. ``written`` says whether ``data`` is this library's writing of
    that session (after a commit), which the next document may reuse parts of.
    """

    text: str
    data: dict[str, Any]
    session: CustomerSession
    version: int
    written: bool


class _SessionCache:
    """The sessions a store object last read or wrote, by integration id (see ``_Cached``).

    At most :data:`_CACHE_SIZE` of them, and :data:`_CACHE_CHARACTERS` characters of
    their documents (the newest is kept whatever its size); the oldest entry goes
    first. Shared by the store object's threads, so its steps run under a lock.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Cached] = {}
        self._characters = 0
        self._lock = threading.Lock()

    def get(self, integration_id: str) -> _Cached | None:
        """The cached copy of the session, or ``None``."""
        return self._entries.get(integration_id)

    def put(self, integration_id: str, cached: _Cached) -> None:
        """Cache ``cached`` as the newest entry, evicting the oldest beyond the bounds."""
        entries = self._entries
        with self._lock:
            self._drop(integration_id)
            entries[integration_id] = cached
            self._characters += len(cached.text)
            while len(entries) > 1 and (
                len(entries) > _CACHE_SIZE or self._characters > _CACHE_CHARACTERS
            ):
                self._drop(next(iter(entries)))

    def pop(self, integration_id: str, older_than: int | None = None) -> None:
        """Drop the session's copy (only a copy of ``older_than`` or an older version, if given)."""
        with self._lock:
            cached = self._entries.get(integration_id)
            if cached is not None and (older_than is None or cached.version <= older_than):
                self._drop(integration_id)

    def _drop(self, integration_id: str) -> None:
        cached = self._entries.pop(integration_id, None)
        if cached is not None:
            self._characters -= len(cached.text)


class _Loaded(NamedTuple, Generic[_S]):
    """A session as one attempt loaded it, and the stored copy it started from."""

    session: _S
    version: int
    data: dict[str, Any]
    before: CustomerSession | None
    """The stored session, when ``data`` is the library's writing of it."""


class StoreCore(Generic[_S]):
    """What sync and async stores share that does no I/O (see ``SessionStore``).

    Configuration, durable-effect registrations, turning a fetched row into a
    session, and the cache of sessions last read or written.

    Args:
        session_class: The class sessions are loaded into.
        workflow: The workflow whose guards and hooks apply to loaded sessions.
        retries: How many times ``update`` re-runs a change that lost a race.
        actor: Who the journal entries of this store object's commits name, unless
            a call gives its own ``actor=`` (``None``: nobody).
        migrate: Whether the first use creates or migrates the schema; with
            ``False`` it only checks it, and refuses any but the current one.
    """

    dialect: ClassVar[str]
    """The SQL dialect of the backend (its migrations are looked up by it)."""

    _housekeeping_batch: ClassVar[int] = 1000
    """How many rows each statement of ``purge_delivered``/``forget_keys`` deletes.

    Each batch is its own transaction, so the commits of other writers wait for one
    batch at most (SQLite has one write lock per database), not for the deletion of
    a backlog of a million rows, and no transaction holds a million row locks.
    """

    def __init__(
        self,
        *,
        session_class: type[_S],
        workflow: Workflow | None,
        retries: int,
        actor: str | None = None,
        migrate: bool = True,
        problems: Sequence[Problem] = (),
    ) -> None:
        """Check the arguments; the database is touched only on first use.

        ``problems`` are the backend's own bad options, refused with these.

        Raises:
            WorkflowError: ``session_class`` or ``workflow`` does not fit.
            ValidationError: Every bad option, each by name.
        """
        _check_session_class(session_class)
        chosen = session_class.default_workflow if workflow is None else workflow
        if not isinstance(chosen, Workflow):
            raise WorkflowError(f"workflow must be a Workflow or None, got {shown(workflow):.80}")
        if chosen.specification != session_class.specification:
            raise WorkflowError(
                f"{session_class.__name__} follows {shown(session_class.specification.name)}; "
                f"{shown(chosen)} drives another specification"
            )
        raise_problems(
            type(self).__name__,
            [
                *problems,
                *argument_problems(default_retries=retries, actor=actor, migrate=migrate),
            ],
        )
        self._session_class = session_class
        self._shadow = Shadow(chosen)
        self._retries = retries
        self._actor = actor
        self._migrates = migrate
        self._effects: tuple[DurableEffect, ...] = ()
        self._effects_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ready = threading.Event()
        self._cache = _SessionCache()
        # A forked child inherits the store object, and with it the parent's open
        # connections (see _refuse_in_a_fork).
        self._opener = os.getpid()

    # -- processes ---------------------------------------------------------------------

    @property
    def _forked(self) -> bool:
        """Whether this process is not the one that opened the store (a fork of it)."""
        return os.getpid() != self._opener

    def _refuse_in_a_fork(self, integration_id: str | None) -> None:
        """Refuse a call in a process forked from the one that opened the store.

        The child holds copies of the parent's connections: on PostgreSQL their
        sockets, on which the two processes would read each other's answers (or wait
        forever for one the other read), and on SQLite connections that SQLite
        forbids using across a fork, since they may corrupt the database.

        Raises:
            StoreError: This process is a fork of the store's.
        """
        if self._forked:
            raise StoreError(
                f"{shown(self)} was opened by process {self._opener}, and this process "
                f"({os.getpid()}) is a fork of the process that opened it: it would share "
                "that process's connections; open a store in each process",
                integration_id,
            )

    # -- configuration ---------------------------------------------------------------

    @property
    def session_class(self) -> type[_S]:
        """The class sessions are loaded into."""
        return self._session_class

    @property
    def workflow(self) -> Workflow:
        """The workflow whose guards and hooks apply to the sessions this store loads."""
        return self._shadow.workflow

    @property
    def retries(self) -> int:
        """How many times :meth:`update` re-runs a change that lost a race, by default."""
        return self._retries

    @property
    def actor(self) -> str | None:
        """Who the journal entries of this store object's commits name, by default."""
        return self._actor

    @property
    def migrate(self) -> bool:
        """Whether this store object creates or migrates the schema on first use.

        ``False``: it only checks that the database is at :data:`SCHEMA_VERSION`,
        and raises :class:`~customer_session.exceptions.SchemaNotReady` when it holds
        no store or an older schema (migrations are run at deploy time).
        """
        return self._migrates

    @property
    def effects(self) -> tuple[DurableEffect, ...]:
        """The durable effects registered on this store object, in registration order."""
        return self._effects

    # -- durable effects -------------------------------------------------------------------

    def on_commit(self, name: str, *, trigger: Trigger | str | None = None) -> DurableEffect:
        """Register a durable effect: an outbox row for each matching transition.

        From now on, every commit through this store object that adds a transition
        fired by ``trigger`` (any trigger when ``None``) also writes an outbox row
        named ``name``, in the same database transaction. Register the same
        effects in every process that writes, e.g. right after opening the store.

        Args:
            name: The effect's name; stored in each row, so keep it stable: 1 to
                200 characters on one line.
            trigger: The trigger it is written for; ``None`` for every transition.

        Returns:
            The registration; its ``remove()`` stops writing the effect.

        Raises:
            WorkflowError: ``name`` is not 1 to 200 characters on one line (no
                control character, not only whitespace, no lone surrogate), or is
                already registered.
            UnknownTrigger: ``trigger`` is not a trigger of the store's table.
        """
        check_effect_name(name)
        checked = None if trigger is None else self._trigger(trigger)
        effect = DurableEffect(name, checked, remove=self._remove_effect)
        with self._effects_lock:
            if any(e.name == name for e in self._effects):
                raise WorkflowError(f"a durable effect named {shown(name)} is already registered")
            self._effects = (*self._effects, effect)
        return effect

    def _remove_effect(self, effect: DurableEffect) -> None:
        with self._effects_lock:
            self._effects = tuple(e for e in self._effects if e is not effect)

    def _trigger(self, trigger: Trigger | str) -> Trigger:
        triggers = self._session_class.specification.triggers
        known = member(Trigger, trigger)
        if known is None or known not in triggers:
            raise UnknownTrigger(trigger, triggers)
        return known

    # -- the schema ------------------------------------------------------------------------

    def _check_known(self, found: object, database: str, integration_id: str | None) -> None:
        """Refuse a database whose version ``found`` is not this library's nor an older one.

        Args:
            found: The version the database records, not this library's.
            database: The database, as messages name it (see ``_database_name``).
            integration_id: The session the caller was about to use.

        Raises:
            UnsupportedSchema: ``found`` is newer than this library, or none (damaged).
        """
        steps_from(self.dialect, found, integration_id, database)

    def _migrated(self, database: str, found: object) -> None:
        """Log that the schema of ``database`` was created (``found``: 0) or migrated."""
        _log.schema_changed(self, database, cast("int", found), SCHEMA_VERSION)

    @staticmethod
    def _failure_reason(error: StoreError) -> str:
        """Why the statement of ``error`` (a store's error, the database's chained) failed.

        For a message that names the database before it (see :func:`migration_failed`):
        the database's own words, which a backend says in one line.
        """
        return str(error.__cause__ or error)

    @staticmethod
    def _not_ready(database: str, found: object, integration_id: str | None) -> SchemaNotReady:
        """The refusal of a store opened with ``migrate=False`` to migrate an older database.

        Args:
            database: The database, as messages name it (see ``_database_name``).
            found: Its schema version, older than this library's (0: no store at all).
            integration_id: The session the caller was about to use.
        """
        return SchemaNotReady(database, cast("int", found), SCHEMA_VERSION, integration_id)

    # -- rows and the cache ----------------------------------------------------------------

    def _query(
        self,
        state: State | str | Iterable[State | str] | None,
        updated_before: datetime | None,
        updated_since: datetime | None,
        limit: int | None,
    ) -> Query:
        """The checked arguments of ``ids()``, for this store's transition table."""
        return query(
            self._session_class.specification,
            state=state,
            updated_before=updated_before,
            updated_since=updated_since,
            limit=limit,
        )

    def _check_transaction(
        self, integration_id: str, key: str | None, operation: str | None, actor: str | None
    ) -> None:
        """Refuse bad arguments of ``transaction`` (sync and async alike)."""
        check(
            "transaction",
            integration_id=integration_id,
            optional_key=key,
            operation=operation,
            actor=actor,
        )

    def _attempts(  # noqa: PLR0917 - the arguments of update(), checked as one
        self,
        method: str,
        integration_id: str,
        change: object,
        retries: int | None,
        key: str | None,
        operation: str | None,
        actor: str | None,
    ) -> int:
        """How many attempts ``update`` may make, once its arguments are checked."""
        check(
            method,
            integration_id=integration_id,
            change=change,
            retries=retries,
            optional_key=key,
            operation=operation,
            actor=actor,
        )
        return 1 + (self._retries if retries is None else retries)

    def _check_new(
        self, session: _S, key: str | None, operation: str | None, actor: str | None
    ) -> None:
        """Refuse bad arguments of ``create`` and a session of another transition table."""
        check("create", session=session, optional_key=key, operation=operation, actor=actor)
        if session.specification != self._session_class.specification:
            raise WorkflowError(
                f"a store of {self._session_class.__name__} cannot hold a "
                f"{type(session).__name__} (it follows another transition table)"
            )

    # -- the outbox's writes, shared by the sync and async stores -------------------------

    def _moment(self, value: datetime) -> Any:
        """A time as the backend's driver passes it (a ``datetime`` unless overridden)."""
        return value

    def _failed_params(self, sequence: int, error: str, max_attempts: int | None) -> dict[str, Any]:
        """The parameters of the statement that counts a failed delivery (``failed``).

        The row is discarded in the same statement when its failures reach
        ``max_attempts``, with ``error`` as the reason; ``now`` is the time a dialect
        that does not ask the server for it stores.
        """
        return {
            "sequence": sequence,
            "error": error,
            "max_attempts": max_attempts,
            "now": self._moment(datetime.now(UTC)),
        }

    def _discard_params(self, sequence: int, reason: str) -> dict[str, Any]:
        """The parameters of the compare-and-set that discards a pending row (``discard``)."""
        return {"sequence": sequence, "reason": reason, "now": self._moment(datetime.now(UTC))}

    def _discarded(self, sequence: int, rows: Sequence[Sequence[Any]], found: object) -> Effect:
        """The effect ``discard`` returns, from what its compare-and-set returned.

        Args:
            sequence: The row asked for.
            rows: The rows the compare-and-set discarded (one, or none).
            found: When none, the row's ``(discarded,)`` status, or ``None``: no such row.

        Raises:
            EffectNotPending: The row was not pending (delivered, discarded, or none).
        """
        if rows:
            # Its document unread: the row is discarded already, and a corrupt document
            # (a reason to discard it) must not turn the discard into an error.
            return effect_from_row(rows[0], unread=True)
        if found is None:
            raise EffectNotPending(sequence, None)
        (discarded,) = cast("Sequence[object]", found)
        raise EffectNotPending(sequence, "discarded" if discarded else "delivered")

    def _from_row(self, integration_id: str, row: Row | None, workflow: Workflow) -> _Loaded[_S]:
        """The session a fetched row holds (``None``: not stored), bound to ``workflow``.

        Raises:
            SessionNotFound: ``row`` is ``None``.
            CorruptData: The row's document does not load, or its version or state
                column does not fit it (they are written together, so never by the store).
        """
        if row is None:
            raise SessionNotFound(integration_id)
        version, state, text = row
        if type(version) is not int:
            raise CorruptData(
                f"session {integration_id!r}: the stored row version {shown(version):.60} is no "
                "integer; the row is corrupt",
                integration_id,
            )
        cached = self._cache.get(integration_id)
        if cached is not None and cached.text == text:
            # The stored copy needs no parsing or validating again.
            loaded = self._loaded(cached, version, workflow)
        else:
            data, session = load_session(
                text, integration_id, session_class=self._session_class, workflow=workflow
            )
            loaded = _Loaded(session, version, data, None)
            cached = None
        if state != loaded.session.state:
            # ids() and counts() read the column: they would disagree with get(). Not
            # cached either, or update() would start from the copy and never see it.
            self._cache.pop(integration_id)
            raise CorruptData(
                f"session {integration_id!r}: the stored state column says {shown(state):.60} "
                f"but its document says {shown(loaded.session.state.value)}; the row is corrupt",
                integration_id,
            )
        if cached is None:
            kept = twin(loaded.session, workflow)
            self._cache.put(
                integration_id, _Cached(text, loaded.data, kept, version, written=False)
            )
        return loaded

    def _cached(self, integration_id: str, workflow: Workflow) -> _Loaded[_S] | None:
        """The session as this store object last read or wrote it, without reading the row."""
        cached = self._cache.get(integration_id)
        return None if cached is None else self._loaded(cached, cached.version, workflow)

    def _loaded(self, cached: _Cached, version: int, workflow: Workflow) -> _Loaded[_S]:
        session = cast("_S", twin(cached.session, workflow))
        return _Loaded(session, version, cached.data, cached.session if cached.written else None)

    def _changed(
        self, loaded: _Loaded[_S], key: str | None, operation: str | None, actor: str | None
    ) -> Change | None:
        """What the attempt that loaded ``loaded`` writes; ``None`` if nothing changed."""
        return _changes.changed(
            loaded.data,
            loaded.session,
            self._effects,
            key=key,
            operation=operation,
            actor=self._actor if actor is None else actor,
            written_for=loaded.before,
            revises=self._revises(key),
        )

    def _created(
        self, session: _S, key: str | None, operation: str | None, actor: str | None
    ) -> Change:
        """What ``create`` writes for ``session``."""
        return _changes.created(
            session,
            self._effects,
            key=key,
            operation=operation,
            actor=self._actor if actor is None else actor,
            revises=self._revises(key),
        )

    # -- revising a refusal (a replay's re-evaluated line) -----------------------------

    @contextmanager
    def _revising(self, key: str) -> Iterator[None]:
        """Let the commits of this context with ``key`` take over its recorded refusal.

        For ``StoreReplayer``, which re-evaluates a line an earlier run refused: a
        change (or a change of nothing) committed with ``key`` in the block turns
        the key's record from refused to applied in its own database transaction, a
        compare-and-set that fails with ``KeyAlreadyProcessed`` when the key is
        recorded as applied (by another replay, meanwhile). A key that is not
        recorded at all is recorded as usual.
        """
        token = _REVISING.set((self, key))
        try:
            yield
        finally:
            _REVISING.reset(token)

    def _revises(self, key: str | None) -> bool:
        """Whether a commit with ``key`` may take over its refusal (see :meth:`_revising`)."""
        revising = _REVISING.get()
        return key is not None and revising is not None and revising == (self, key)

    def _not_created(
        self, integration_id: str, key: str | None, recorded: ProcessedKey | None
    ) -> StoreError:
        """Why ``create`` wrote nothing: its session is stored already.

        ``recorded`` is ``key``'s record, read after the insert failed. A recorded
        key wins, as it does for ``update``: the create is a redelivery, and a
        consumer needs no racy ``processed(key)`` check first. A session and its
        key are committed together, so a redelivery that finds the one finds the
        other. A refusal the create may take over (see :meth:`_revising`) does not
        stop it: that create is refused as ``SessionExists``.
        """
        if key is None or recorded is None or (recorded.refusal is not None and self._revises(key)):
            return SessionExists(integration_id)
        return KeyAlreadyProcessed(key, integration_id)

    def _keep(self, session: CustomerSession) -> CustomerSession | None:
        """The store's own copy of ``session`` as it is now, for :meth:`_remember`.

        A twin: the caller keeps ``session`` and may go on changing it. ``create()``
        takes it before its write, since nothing holds the caller's session
        meanwhile: an edit made while the write runs is not what was written.
        ``None`` for a subclass given to ``create()`` (loads must give the store's class).
        """
        if type(session) is not self._session_class:
            return None
        return twin(session, session.workflow)

    @contextmanager
    def _counting_outbox(self) -> Iterator[_OutboxTally]:
        """Count the outbox rows this store object's commits in the block write.

        Only the commits of the block's own thread (or task) count, whatever other
        threads write through the same store object meanwhile: ``StoreReplayer``
        reports the rows of its run. Blocks may nest; each counts its own commits.
        """
        tally = _OutboxTally(self)
        token = _TALLIES.set((*_TALLIES.get(), tally))
        try:
            yield tally
        finally:
            _TALLIES.reset(token)

    def _remember(self, change: Change, kept: CustomerSession | None, version: int) -> None:
        """Cache what was just written (``kept``, from :meth:`_keep`), so the next load is cheap.

        Called once per commit, right after it: the outbox rows it wrote are counted
        in the open :meth:`_counting_outbox` blocks of this store object.
        """
        for tally in _TALLIES.get():
            if tally.store is self:
                tally.add(len(change.outbox))
        if kept is None:
            self._cache.pop(change.integration_id)
            return
        self._cache.put(
            change.integration_id,
            _Cached(change.document, change.data, kept, version, written=True),
        )

    def _forget_stale(self, integration_id: str, version: int) -> None:
        """Drop the cached copy of a session whose row moved on from ``version``.

        A compare-and-set from ``version`` lost: a copy that old is known to be out
        of date, and the next attempt must load the row rather than run the change
        on it again. A newer copy (another thread's commit) is kept.
        """
        self._cache.pop(integration_id, older_than=version)

    def _retry_or_give_up(
        self, integration_id: str, version: int, lost: int, attempts: int
    ) -> None:
        """Log ``update()``'s ``lost``-th lost race (from ``version``), or give up at the last.

        Raises:
            ConcurrentUpdate: ``lost`` is ``attempts``: every attempt lost a race.
        """
        if lost >= attempts:
            _log.commit_gave_up(self, integration_id, version, attempts)
            raise ConcurrentUpdate(integration_id, attempts) from None
        _log.commit_retried(self, integration_id, version, lost + 1, attempts)


class BaseStore(StoreCore[_S], ABC):
    """The backend-independent part of a sync session store (see ``SessionStore``).

    A backend supplies the database steps (the abstract methods below); the
    rules of loading, committing, retrying and delivering are here.
    """

    # Set by the backend: False when made, True from the start of close() on.
    _closed: bool

    # -- sessions ----------------------------------------------------------------------

    def create(
        self,
        session: _S,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Store a new session (row version 1) with its first journal entry.

        Durable effects registered for transitions already in ``session.history``
        are written too. The session object stays the caller's: later changes go
        through :meth:`transaction` or :meth:`update`.

        Args:
            session: The session, in any state.
            key: An idempotency key recorded in the same database transaction.
            operation: The journal entry's label (default ``create``).
            actor: Who the journal entry names (default: the store's :attr:`actor`).

        Raises:
            SessionExists: The session is already stored (and ``key``, if given,
                is not recorded: nothing is written, the key included).
            KeyAlreadyProcessed: ``key`` was already used; this error wins when
                the session is stored too (a redelivered create).
            WorkflowError: The session follows another table than the store's class.
            ValidationError: A bad argument (``actor`` included), each by name;
                nothing is written.
        """
        self._check_new(session, key, operation, actor)
        integration_id = session.integration_id
        self._ready(integration_id)
        change = self._created(session, key, operation, actor)
        kept = self._keep(session)
        if not self._insert(change):
            recorded = None if key is None else self._key_record(key)
            raise self._not_created(integration_id, key, recorded)
        self._remember(change, kept, 1)

    def get(self, integration_id: str) -> _S:
        """The stored session, bound to :attr:`workflow`.

        Changing the returned object changes nothing in the store; use
        :meth:`transaction` or :meth:`update` for that.

        Raises:
            SessionNotFound: No such session.
            CorruptData: Its stored document does not load.
            WorkflowError: It holds a trigger the store's table lacks.
        """
        check("get", integration_id=integration_id)
        return self._load(integration_id, self.workflow).session

    def exists(self, integration_id: str) -> bool:
        """Whether a session with this integration id is stored."""
        check("exists", integration_id=integration_id)
        self._ready(integration_id)
        return self._exists(integration_id)

    def counts(self) -> dict[State, int]:
        """How many sessions are stored in each state (states with none are left out)."""
        self._ready(None)
        return {state_from_row(state): count for state, count in self._counts()}

    def ids(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        updated_before: datetime | None = None,
        updated_since: datetime | None = None,
        limit: int | None = None,
    ) -> tuple[str, ...]:
        """The integration ids of the stored sessions that match, least recently updated first.

        The query runs on the indexed ``state`` and ``updated`` columns, without
        loading a session; ties in ``updated`` are ordered by integration id, in code
        point order (on every backend, whatever the database's collation). A
        sweeper that cancels carts left open for two hours, say, may take a batch
        at a time: a session it changes leaves the result (one it could not
        change stays in it).

        Args:
            state: Only sessions in this state, or in any of these states.
            updated_before: Only sessions last changed before this time (exclusive).
            updated_since: Only sessions last changed at or after this time.
            limit: At most this many ids (default: all).

        Raises:
            ValidationError: Every bad argument (a state the table does not have,
                a naive or non-datetime bound, a limit below 1), each by name.
        """
        checked = self._query(state, updated_before, updated_since, limit)
        self._ready(None)
        return tuple(self._ids(checked))

    @contextmanager
    def transaction(
        self,
        integration_id: str,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> Iterator[_S]:
        """Load a session, let the block change it, and commit the change atomically.

        One attempt, no re-run (a ``with`` block cannot run its body twice): if
        another writer committed a change to the session after it was loaded,
        nothing is written, the session object is rolled back, and
        :class:`~customer_session.exceptions.ConcurrentUpdate` is raised. Use
        :meth:`update` to re-run the change on the fresh state instead.

        The block runs inside ``session.atomic()``: if it raises, the session is
        put back and nothing is written. Its changes (transitions and edits) are
        written with one compare-and-set of the row version, one journal entry and
        the outbox rows of the durable effects, all in one database transaction.
        After-commit hooks of triggers fired in the block run after the database
        commit, and not at all when it does not happen; an async one (fired
        through ``customer_session.aio``) is refused: the trigger raises
        ``AfterCommitHookFailed`` holding a ``WorkflowError``, and nothing is
        written. A block that changes nothing writes nothing (but ``key``).

        Args:
            integration_id: The session to change.
            key: An idempotency key recorded in the same database transaction; a
                key already recorded makes the commit fail with ``KeyAlreadyProcessed``.
            operation: The journal entry's label (default: the triggers fired,
                or ``edit``).
            actor: Who the journal entry names (default: the store's :attr:`actor`).

        Yields:
            The session, bound to the store's copy of :attr:`workflow`.

        Raises:
            ConcurrentUpdate: The session changed since it was loaded.
            SessionNotFound: No such session.
            CorruptData: Its stored document does not load.
            WorkflowError: It holds a trigger the store's table lacks.
            KeyAlreadyProcessed: ``key`` was already used.
            AfterCommitHookFailed: Committed, but after-commit hooks raised.
            SessionNotEditable: The block ended while a trigger it started (in a
                thread or task of its own) was still running, or an ``atomic()``
                block it opened was still open; nothing is written, and that
                trigger does not commit.
        """
        self._check_transaction(integration_id, key, operation, actor)
        try:
            with self._attempt(integration_id, key, operation, actor) as session:
                yield session
        except _Conflict as conflict:
            _log.commit_conflict(self, integration_id, conflict.version)
            raise ConcurrentUpdate(integration_id, 1) from None

    def update(
        self,
        integration_id: str,
        change: Callable[[_S], _T],
        *,
        retries: int | None = None,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> _T:
        """Apply ``change`` to a session and commit it, re-running it if it lost a race.

        ``change(session)`` runs as the body of :meth:`transaction`. When another
        writer committed first, the session is loaded afresh and ``change`` runs
        again on it (after a short random pause), up to ``retries`` more times. A
        trigger that became illegal on the fresh state raises
        :class:`~customer_session.exceptions.IllegalTransition` as usual, and an
        exception from ``change`` propagates without a retry (but see below). No
        update is ever lost.

        An attempt starts from the session as this store object last read or
        wrote it, when it has one, without reading the row; if that copy was out
        of date, nothing is written and the attempt is repeated on the stored row,
        without counting as a retry, also when ``change`` raised.

        Args:
            integration_id: The session to change.
            change: Called with the session; may fire triggers and edit it.
            retries: Re-runs after the first attempt (default: :attr:`retries`).
            key: An idempotency key, as for :meth:`transaction`.
            operation: The journal entry's label, as for :meth:`transaction`.
            actor: Who the journal entry names, as for :meth:`transaction`.

        Returns:
            What ``change`` returned on the attempt that committed.

        Raises:
            ConcurrentUpdate: Every attempt lost a race.
            StoreTimeout: It gave up waiting for a lock (or, on PostgreSQL, a
                connection); not retried, as the wait was the timeout already.
            SessionNotFound: No such session.
            CorruptData: Its stored document does not load.
            WorkflowError: It holds a trigger the store's table lacks, or
                ``change`` returned an awaitable (an ``async def`` function): a
                sync store cannot await it; nothing is written.
            KeyAlreadyProcessed: ``key`` was already used.
            AfterCommitHookFailed: Committed, but after-commit hooks raised.
            SessionNotEditable: As for :meth:`transaction`: ``change`` left a
                trigger running or an ``atomic()`` block open.
        """
        attempts = self._attempts("update", integration_id, change, retries, key, operation, actor)
        attempt = 0
        optimistic = True  # from the cached copy, if any: see _attempt
        while True:
            try:
                with self._attempt(integration_id, key, operation, actor, optimistic) as session:
                    result = change(session)
                    if inspect.isawaitable(result):
                        raise _awaitable_refused(
                            result, f"update(): the change {shown(change):.80}"
                        )
            except _Stale as stale:
                _log.cache_stale(self, integration_id, stale.version)
                optimistic = False  # not a lost race: the next attempt reads the row
                continue
            except _Conflict as conflict:
                attempt += 1
                self._retry_or_give_up(integration_id, conflict.version, attempt, attempts)
                _pause(attempt)
                continue
            return result

    @contextmanager
    def _attempt(
        self,
        integration_id: str,
        key: str | None,
        operation: str | None,
        actor: str | None,
        optimistic: bool = False,
    ) -> Iterator[_S]:
        """One attempt: load, let the caller change the session, commit.

        With ``optimistic``, a session cached by this store object is used without
        reading the row (a query saved, and on a server a round trip). The
        compare-and-set still decides; when the copy was out of date, nothing is
        written and ``_Stale`` asks for another attempt, also when the body raised
        or changed nothing, since that may have been decided on old data.
        """
        workflow = self._shadow.get()
        loaded = self._cached(integration_id, workflow) if optimistic else None
        if loaded is None:
            optimistic = False
            loaded = self._load(integration_id, workflow)
        session = loaded.session
        with deferring(session) as queue, session.atomic():
            try:
                yield session
            except Exception:
                if optimistic and not self._current(integration_id, loaded.version):
                    raise _Stale(loaded.version) from None
                raise
            if queue.refused is not None:
                # The block caught it: written, that transition would never get its hook.
                raise WorkflowError(f"{queue.refused}. Nothing was written")
            with writing(session):
                change = self._changed(loaded, key, operation, actor)
                if change is not None:
                    if not self._update(change, loaded.version):
                        self._forget_stale(integration_id, loaded.version)
                        raise _Stale(loaded.version) if optimistic else _Conflict(loaded.version)
                    self._remember(change, self._keep(session), loaded.version + 1)
                else:
                    if optimistic and not self._current(integration_id, loaded.version):
                        raise _Stale(loaded.version)
                    if key is not None:
                        self._record_key_or_fail(key, integration_id)
        run_queued(queue)

    # -- the journal ---------------------------------------------------------------------

    def history(self, integration_id: str) -> tuple[JournalEntry, ...]:
        """The session's journal: every committed change, oldest first.

        Raises:
            CorruptData: A journal row is corrupt, or records a move the store's
                table lacks.
            WorkflowError: A record's trigger is not in the store's table (written
                through a class with a larger one, such as the reopen table).
        """
        check("history", integration_id=integration_id)
        self._ready(integration_id)
        rows = self._journal_rows(integration_id)
        return tuple(entry_from_row(row, self._session_class) for row in rows)

    # -- idempotency keys ----------------------------------------------------------------

    def processed(self, key: str) -> bool:
        """Whether a change (or :meth:`mark_processed`) already recorded ``key``."""
        check("processed", key=key)
        self._ready(None)
        return self._has_key(key)

    def processed_key(self, key: str) -> ProcessedKey | None:
        """What was recorded with ``key`` (its session, and why a refused event was refused).

        Returns:
            The record, or ``None`` when ``key`` is not recorded.
        """
        check("processed_key", key=key)
        self._ready(None)
        return self._key_record(key)

    def mark_processed(
        self, key: str, *, integration_id: str | None = None, refusal: str | None = None
    ) -> bool:
        """Record ``key`` without a change (e.g. for an event that was refused).

        Args:
            key: The idempotency key.
            integration_id: The session the event concerned, when known.
            refusal: Why the event was refused, kept for :meth:`processed_key`.

        Returns:
            ``True`` if it was recorded now, ``False`` if it already was (the
            record, refusal included, is then left as it was).
        """
        check(
            "mark_processed",
            key=key,
            optional_integration_id=integration_id,
            refusal=refusal,
        )
        self._ready(integration_id)
        return self._record_key(key, integration_id, refusal)

    # -- durable effects -------------------------------------------------------------------

    def pending(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The outbox rows not delivered (nor discarded) yet, in delivery order.

        A backlog is read page by page: pass the last row of a page as ``after``
        to read the next one. Each page is one query on an index, from the row
        after ``after`` on, however many rows the outbox holds; a row delivered or
        discarded between pages is not in the next. A row written meanwhile is in
        one of the pages still to come on SQLite, whose commits take their numbers
        in turn; on PostgreSQL, where concurrent commits may finish out of sequence
        order, one committed while the pages are read may have a number below the
        last row read and is then left out of this listing (not of the next one,
        nor of :meth:`deliver`, which starts from the oldest pending row)::

            page = store.pending(limit=1000)
            while page:
                ...
                page = store.pending(limit=1000, after=page[-1])

        Each row's :attr:`~Effect.document` is parsed when it is first read (a
        listing that shows no document parses none); a stored document that is not
        JSON is then a :class:`~customer_session.exceptions.CorruptData`.

        Args:
            limit: At most this many rows (default: every one).
            after: Only the rows after this one (by :attr:`Effect.sequence`, which
                delivery follows); it need not be pending still.

        Raises:
            ValidationError: A bad argument, each by name.
        """
        check("pending", limit=limit, after=after)
        self._ready(None)
        rows = self._pending_rows(limit, 0 if after is None else after.sequence)
        return tuple(effect_from_row(row, unread=True) for row in rows)

    def pending_count(self) -> int:
        """How many outbox rows are pending (not delivered nor discarded).

        Counted on the index of the pending rows, without reading the rows.
        """
        return self._count(self._sql.pending_count)

    def discard(self, sequence: int, *, reason: str) -> Effect:
        """Give up on the pending outbox row ``sequence``: it is never handed over again.

        For a row the receiver refuses for good (a *poison* row), which would
        otherwise stop every delivery at it. The row is kept, marked discarded with
        ``reason`` and the time (:meth:`discarded` lists it), until
        :meth:`purge_delivered` deletes it; deliveries go on with the next rows.

        The discard is one compare-and-set on the row being pending; it does not
        wait for a running delivery. A handler that has the row already (it was
        handed over just before) goes on with it, and when it returns, the row stays
        discarded: it is not marked delivered, nor is a failure counted on it. A
        handler may discard the row it was handed (and then return).

        Args:
            sequence: The row's :attr:`Effect.sequence`.
            reason: Why it is given up on, for the operator (1 to 1000 characters,
                not only whitespace, without control characters).

        Returns:
            The row as discarded (with :attr:`Effect.discarded_at` and
            :attr:`Effect.discard_reason`); its document is parsed when first read,
            so a row discarded for a corrupt document is discarded without an error.

        Raises:
            EffectNotPending: No pending row has that sequence number (it was
                delivered, discarded already, or never written or purged); nothing
                is changed.
            ValidationError: A bad argument, each by name; nothing is changed.
        """
        check("discard", sequence=sequence, reason=reason)
        self._ready(None)
        return self._discarded(sequence, *self._discard_row(sequence, reason))

    def discarded(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The discarded outbox rows, in the order they were discarded (oldest first).

        They stay until :meth:`purge_delivered` deletes them (by the time they were
        discarded). Rows discarded at the same time are in sequence order. Read page
        by page as :meth:`pending` is: the last row of a page, as ``after``, starts
        the next one after its discard time and sequence (a cursor that outlives the
        row, if it is purged between pages). Documents are parsed when first read,
        as :meth:`pending`'s.

        Args:
            limit: At most this many rows (default: every one).
            after: Only the rows discarded after this discarded row.

        Raises:
            ValidationError: A bad argument, each by name (``after`` a row that is
                not discarded).
        """
        check("discarded", limit=limit, discarded_after=after)
        self._ready(None)
        given = self._sql.no_limit if limit is None else limit
        params: tuple[Any, ...]
        if after is None or after.discarded_at is None:  # checked: a discarded row
            statement, params = self._sql.discarded, (given,)
        else:
            statement = self._sql.discarded_after
            params = (self._moment(after.discarded_at), after.sequence, given)
        with self._connection(None) as connection:
            rows = connection.execute(statement, params).fetchall()
        return tuple(effect_from_row(row, unread=True) for row in rows)

    def discarded_count(self) -> int:
        """How many outbox rows are discarded (until purged).

        Counted on the index of the discarded rows, without reading the rows.
        """
        return self._count(self._sql.discarded_count)

    def _count(self, statement: str) -> int:
        """The count ``statement`` (a ``SELECT count(*)`` without parameters) gives."""
        self._ready(None)
        with self._connection(None) as connection:
            (count,) = connection.execute(statement).fetchone()
        return int(count)

    def outbox_effects(self) -> tuple[str, ...]:
        """The names of the durable effects the outbox holds rows of, sorted.

        Every row counts, pending, delivered or discarded, until
        :meth:`purge_delivered` deletes it: the effects some process has
        registered on this database, which every process that writes should
        register too (``customer-session replay --db`` refuses to run without
        them). Read from an index, one step per name, however many rows the
        outbox holds. Sorted by code point, whatever the database's collation.
        """
        self._ready(None)
        with self._connection(None) as connection:
            rows = connection.execute(self._sql.outbox_effects).fetchall()
        return tuple(sorted(name for (name,) in rows))

    def deliver(
        self,
        handler: EffectHandler,
        *,
        limit: int | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Hand each pending outbox row to ``handler``, in commit order; return how many.

        A row is marked delivered only after ``handler`` returned, so every row
        reaches the handler at least once, even across crashes (a row handed over
        just before a crash is handed over again). Rows are delivered in outbox
        order, which is commit order for each session. If ``handler`` raises, the
        row stays pending with its failure counted, delivery stops (so later rows
        of the session are not delivered before it), and the exception propagates.
        With ``max_attempts``, a row whose failures reach it is discarded instead
        (see :meth:`discard`), in the statement that counts the failure, with its
        last error as the reason: the exception still propagates, and the next
        delivery goes on with the next rows. Discarded rows are skipped.

        Deliveries run one at a time: through one store object, and across store
        objects and processes on PostgreSQL (an advisory lock) and on an SQLite
        file (a lock on the file ``<database>-deliver`` beside it, except on
        Windows), and across the store objects of a process on a shared-cache
        in-memory SQLite database (``file:name?mode=memory&cache=shared``). With
        nothing pending, it returns 0 at once, without waiting for its turn.

        Args:
            handler: Called with each :class:`Effect`.
            limit: Deliver at most this many rows (default: until none is pending).
            max_attempts: Discard a row once this many deliveries of it failed
                (default ``None``: never; it stays pending).

        Returns:
            The number of rows delivered (not those discarded while their handler ran).

        Raises:
            WorkflowError: ``handler`` returned an awaitable (an ``async def``
                function, which a sync store cannot await), or called
                ``deliver()`` on this store or on another store object whose
                deliveries would wait for this one (the same database, and schema
                on PostgreSQL); the row stays pending, its failure counted.
            StoreError: The delivery lock cannot be taken (on SQLite, the lock
                file cannot be created or opened: its name and why are given).
            Exception: What ``handler`` raised, with a note naming the row.
        """
        check("deliver", handler=handler, limit=limit, max_attempts=max_attempts)
        self._ready(None)
        delivered = 0
        with delivering(self, self._outbox_identity()) as delivery:
            if not self._pending_rows(1):
                # Nothing to deliver needs no turn: an idle deliverer neither waits for
                # a running one nor needs the lock at all (an SQLite lock file that
                # cannot be created beside a database in a read-only directory).
                return 0
            with self._delivery_lock(delivery):
                while limit is None or delivered < limit:
                    batch = (
                        _DELIVERY_BATCH
                        if limit is None
                        else min(_DELIVERY_BATCH, limit - delivered)
                    )
                    rows = self._pending_rows(batch)
                    if not rows:
                        break
                    for index, row in enumerate(rows):
                        effect = effect_from_row(row)
                        if index and not self._still_pending(effect.sequence):
                            continue  # discarded since the batch was read
                        try:
                            _hand_over(handler, effect)
                        except Exception as exc:
                            error = failure(exc)
                            with unrecorded(effect, exc):
                                discarded = self._mark_failed(effect.sequence, error, max_attempts)
                            note_failure(
                                self,
                                effect,
                                exc,
                                error,
                                discarded=discarded,
                                max_attempts=max_attempts,
                            )
                            raise
                        except BaseException as exc:
                            note_interrupted(effect, exc)
                            raise
                        with unrecorded(effect, None):
                            marked = self._mark_delivered(effect.sequence)
                        if marked:
                            delivered += 1
        return delivered

    # -- housekeeping ----------------------------------------------------------------------

    def purge_delivered(self, *, before: datetime) -> int:
        """Delete the outbox rows delivered or discarded before ``before``; return how many.

        Delivered and discarded rows are kept until purged (each holds the
        session's document as it was committed), so a long-running service purges
        them from time to time, e.g. daily. Pending rows are never deleted.

        The oldest rows go first, in batches of 1,000, each its own transaction, so
        commits of other writers wait for one batch at most, however large the
        backlog. A purge that stops part way (an error, an interrupt) has deleted
        whole batches of the oldest rows; running it again deletes the rest.

        Raises:
            ValidationError: ``before`` is not an aware ``datetime``.
        """
        check("purge_delivered", before=before)
        self._ready(None)
        moment = before.astimezone(UTC)
        count = self._purge_delivered(moment)
        _log.purged(self, count, moment)
        return count

    def forget_keys(self, *, before: datetime) -> int:
        """Delete the idempotency keys recorded before ``before``; return how many.

        A forgotten key no longer guards against its change being applied a
        second time: forget only keys older than any message could be
        redelivered (Talon.One keeps its own for 24 hours), and never those of an
        event log that may still be replayed from its start. Keys are deleted
        oldest first, in batches, as :meth:`purge_delivered` deletes rows.

        Raises:
            ValidationError: ``before`` is not an aware ``datetime``.
        """
        check("forget_keys", before=before)
        self._ready(None)
        moment = before.astimezone(UTC)
        count = self._forget_keys(moment)
        _log.keys_forgotten(self, count, moment)
        return count

    # -- the schema ------------------------------------------------------------------------

    def migrate_schema(self) -> int:
        """Create or migrate the schema now, not on first use; return the version it was at.

        For a deploy step that logs what it did (``customer-session migrate`` is one).
        The version is read again under the lock a migration takes, in its
        transaction: of processes that run this together, one creates or migrates
        the schema and the others find it current, and each says so.

        With ``migrate=False``, the store only checks the schema, as its first use
        would: it changes nothing, and returns :data:`SCHEMA_VERSION` or raises.

        Returns:
            The schema version this call found: 0 when the database held no
            store (this call created it), :data:`SCHEMA_VERSION` when it was
            current (nothing was written), else the version this call migrated
            it from.

        Raises:
            UnsupportedSchema: The database is of a newer library (or has the
                store's tables without a version); nothing is changed.
            SchemaNotReady: With ``migrate=False``, the database holds no store
                or an older schema.
            StoreError: A statement failed; the migration is rolled back whole,
                the database is still at the version it was.
            StoreTimeout: A statement waited for a lock for too long; rolled back
                as well.
        """
        with self._schema_lock:
            found = self._migrate(None)
            self._schema_ready.set()
        return found

    # -- lifecycle -------------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Close every database connection this store opened."""

    def __enter__(self) -> Self:
        """Return the store itself.

        Raises:
            StoreError: The store was closed (a closed store is not opened again).
        """
        if self._closed:
            raise StoreError(f"{shown(self)} is closed: open a new store")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    # -- loading ---------------------------------------------------------------------------

    def _ready(self, integration_id: str | None) -> None:
        """Create or migrate (or, with ``migrate=False``, check) the schema on first use.

        Once per store object: later calls cost one check of an event.
        """
        if self._schema_ready.is_set():
            return
        with self._schema_lock:
            if self._schema_ready.is_set():
                return
            self._migrate(integration_id)
            self._schema_ready.set()

    def _load(self, integration_id: str, workflow: Workflow) -> _Loaded[_S]:
        self._ready(integration_id)
        return self._from_row(integration_id, self._fetch(integration_id), workflow)

    def _current(self, integration_id: str, version: int) -> bool:
        """Whether the row is still at ``version``."""
        row = self._fetch(integration_id)
        return row is not None and row[0] == version

    def _record_key_or_fail(self, key: str, integration_id: str) -> None:
        if self._revises(key):
            recorded = self._revise_key(key, integration_id, None)
        else:
            recorded = self._record_key(key, integration_id, None)
        if not recorded:
            raise KeyAlreadyProcessed(key, integration_id)

    def _key_recorded(self, key: str) -> tuple[ProcessedKey, datetime] | None:
        """What was recorded with ``key`` and when (by the database's clock), or ``None``."""
        self._ready(None)
        with self._connection(None) as connection:
            row = connection.execute(self._sql.key_record, (key,)).fetchone()
        record = processed_key_from_row(key, row)
        return None if record is None else (record, self._time_of(row[2], key))

    def _time_of(self, value: Any, key: str) -> datetime:
        """The time ``key`` was recorded, as the backend's driver returns it, made aware."""
        del key  # a driver that reads times gives them whole
        return cast("datetime", value)

    @abstractmethod
    def _after_every_key(self) -> datetime:
        """A time after every key recorded so far, by the clock the database records keys with.

        The clock's time, unless that is not after the latest key's (the clock went
        back since, or has not ticked): then a microsecond after that key. A replay run
        begins at it, so that every refusal recorded before the run is older than what
        the run applies, whatever the clock did (see ``StoreReplayer``).
        """

    # -- the plain queries, in the backend's SQL ------------------------------------------

    def _migrate(self, integration_id: str | None) -> int:
        """Create or migrate the schema, unless ``migrate=False`` (see ``_check_known``).

        ``integration_id`` is the session the caller is about to use (for messages).
        Returns the version found, under the lock when it was not current (see
        :meth:`migrate_schema`).
        """
        migrating: tuple[str, object] | None = None  # the database and its version, while migrating
        try:
            with self._connection(integration_id) as connection:
                found = self._schema_version(connection, integration_id)
                if found == SCHEMA_VERSION:
                    return SCHEMA_VERSION
                # Read only now: on PostgreSQL naming the database costs a query.
                database = self._database_name(connection)
                self._check_known(found, database, integration_id)
                if not self._migrates:  # checked, never changed: it is migrated at deploy time
                    raise self._not_ready(database, found, integration_id)
                with self._migrating(connection, integration_id) as locked:
                    # Read again under the lock: another process may have migrated meanwhile.
                    found = self._schema_version(locked, integration_id)
                    steps = steps_from(self.dialect, found, integration_id, database)
                    migrating = (database, found)
                    for step in steps:
                        for statement in step:
                            locked.execute(statement)
                    if steps:
                        locked.execute(self._sql.set_version, (SCHEMA_VERSION,))
                if steps:  # committed: the block is over
                    self._migrated(database, found)
                return cast("int", found)  # steps_from refused any other
        except StoreError as exc:
            if migrating is None or type(exc) not in {StoreError, StoreTimeout}:
                raise
            reason = self._failure_reason(exc)
            raise migration_failed(*migrating, exc, reason, integration_id) from exc

    def _schema_version(self, connection: Any, integration_id: str | None) -> object:
        """The version the database records (0 when it has no schema yet, see ``found_version``).

        ``integration_id`` names the session the caller is about to use in the
        errors of a backend that finds no place for the store (see PostgresStore).
        """
        del integration_id  # a backend that checks more needs it
        tables = [name for (name,) in connection.execute(self._sql.has_schema).fetchall()]

        def read() -> object:
            row = connection.execute(self._sql.schema_version).fetchone()
            return None if row is None else row[0]

        return found_version(tables, read)

    def _fetch(self, integration_id: str) -> Row | None:
        """The row's version, state and document, or ``None``."""
        with self._connection(integration_id) as connection:
            row = connection.execute(self._sql.fetch, (integration_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _exists(self, integration_id: str) -> bool:
        """Whether the row exists."""
        with self._connection(integration_id) as connection:
            return connection.execute(self._sql.exists, (integration_id,)).fetchone() is not None

    def _counts(self) -> Sequence[tuple[str, int]]:
        """Rows per state."""
        with self._connection(None) as connection:
            return [(row[0], row[1]) for row in connection.execute(self._sql.counts).fetchall()]

    def _ids(self, checked: Query) -> Sequence[str]:
        """Integration ids matching ``checked``, by ``updated`` then integration id."""
        statement, params = select_ids(checked, self._sql.mark, self._moment, by_id=self._sql.by_id)
        if params[-1] is None:
            params[-1] = self._sql.no_limit
        with self._connection(None) as connection:
            return [row[0] for row in connection.execute(statement, params)]

    def _has_key(self, key: str) -> bool:
        """Whether ``key`` is recorded."""
        with self._connection(None) as connection:
            return connection.execute(self._sql.has_key, (key,)).fetchone() is not None

    def _key_record(self, key: str) -> ProcessedKey | None:
        """What was recorded with ``key``, or ``None``."""
        with self._connection(None) as connection:
            row = connection.execute(self._sql.key_record, (key,)).fetchone()
        return processed_key_from_row(key, row)

    def _journal_rows(self, integration_id: str) -> Sequence[Sequence[Any]]:
        """Journal rows of a session by version (columns as ``entry_from_row`` reads them)."""
        with self._connection(integration_id) as connection:
            rows: Sequence[Sequence[Any]] = connection.execute(
                self._sql.history, (integration_id,)
            ).fetchall()
            return rows

    def _pending_rows(self, limit: int | None, after: int = 0) -> Sequence[Sequence[Any]]:
        """Undelivered outbox rows by sequence, from the one after ``after`` (0: the first).

        The columns as ``effect_from_row`` reads them.
        """
        given = self._sql.no_limit if limit is None else limit
        with self._connection(None) as connection:
            rows: Sequence[Sequence[Any]] = connection.execute(
                self._sql.pending, (after, given)
            ).fetchall()
            return rows

    def _still_pending(self, sequence: int) -> bool:
        """Whether the outbox row is still pending (not discarded since it was read)."""
        with self._connection(None) as connection:
            return connection.execute(self._sql.still_pending, (sequence,)).fetchone() is not None

    def _discard_row(self, sequence: int, reason: str) -> tuple[Sequence[Sequence[Any]], object]:
        """Discard the row if it is pending: the rows discarded, and else its status.

        What :meth:`StoreCore._discarded` takes: the row (one, or none), and when
        none, the row's ``(discarded,)`` status or ``None`` if there is no such row.
        """
        with self._connection(None) as connection:
            rows = connection.execute(
                self._sql.discard, self._discard_params(sequence, reason)
            ).fetchall()
            if rows:
                return rows, None
            return rows, connection.execute(self._sql.outbox_status, (sequence,)).fetchone()

    def _mark_failed(self, sequence: int, error: str, max_attempts: int | None) -> bool | None:
        """Count a failed delivery of a pending outbox row; whether that discarded it.

        ``None`` when the row was no longer pending (discarded while it was handed over).
        """
        with self._connection(None) as connection:
            rows = connection.execute(
                self._sql.failed, self._failed_params(sequence, error, max_attempts)
            ).fetchall()
        return None if not rows else bool(rows[0][0])

    def _purge_delivered(self, before: datetime) -> int:
        """Delete outbox rows delivered before ``before`` (UTC); how many."""
        return self._delete_in_batches(self._sql.purge, before)

    def _forget_keys(self, before: datetime) -> int:
        """Delete idempotency keys recorded before ``before`` (UTC); how many."""
        return self._delete_in_batches(self._sql.forget, before)

    def _delete_in_batches(self, statement: str, before: datetime) -> int:
        """Run a housekeeping ``DELETE`` until a batch finds fewer rows; how many it deleted.

        ``statement`` deletes at most ``limit`` rows older than ``before`` (its
        parameters: the time, the limit, the time again), in a transaction of its
        own. The connection is taken per batch, so other threads of the store (one
        ``:memory:`` connection) get it between batches.
        """
        moment = self._moment(before)
        batch = self._housekeeping_batch
        total = 0
        while True:
            with self._connection(None) as connection:
                count: int = connection.execute(statement, (moment, batch, moment)).rowcount
            total += count
            if count < batch:
                return total

    # -- what a backend provides ---------------------------------------------------------

    _sql: ClassVar[Statements]
    """The SQL of the plain queries above, in the backend's dialect."""

    @abstractmethod
    def _connection(self, integration_id: str | None) -> AbstractContextManager[Any]:
        """A connection whose database errors become ``StoreError`` naming the session."""

    @abstractmethod
    def _database_name(self, connection: Any) -> str:
        """The database, for messages, without a password (read on ``connection``)."""

    @abstractmethod
    def _migrating(
        self, connection: Any, integration_id: str | None
    ) -> AbstractContextManager[Any]:
        """A transaction on ``connection`` that one process at a time may migrate in."""

    @abstractmethod
    def _insert(self, change: Change) -> bool:
        """Write a new row (version 1) with its journal, outbox and key; ``False`` if it exists."""

    @abstractmethod
    def _update(self, change: Change, expected: int) -> bool:
        """Compare-and-set the row from version ``expected``; ``False`` if it moved on."""

    @abstractmethod
    def _record_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        """Record ``key`` alone (with why its event was refused); ``False`` if it already was."""

    @abstractmethod
    def _revise_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        """Record ``key`` alone, replacing a refusal recorded with it.

        A compare-and-set: a key recorded as refused gets ``refusal`` (``None``: its
        event was applied now, with no change to write) and the current time; a key
        not recorded is recorded. ``False``, writing nothing, when the key is
        recorded as applied.
        """

    @abstractmethod
    def _mark_delivered(self, sequence: int) -> bool:
        """Mark a pending outbox row delivered; ``False`` if it was discarded meanwhile."""

    def _outbox_identity(self) -> object:
        """What :meth:`_delivery_lock` covers: deliveries of equal identities take turns."""
        return self

    @abstractmethod
    def _delivery_lock(self, delivery: Delivery) -> AbstractContextManager[None]:
        """Serialize deliverers; ``delivery`` is the one taking its turn (see ``delivering``).

        Raises:
            WorkflowError: The lock is held by a delivery whose handler is the caller.
        """


class Statements(NamedTuple):
    """A backend's SQL for the plain queries of :class:`BaseStore`.

    Each takes its parameters in the order the query methods pass them, in the
    dialect's placeholder style ``mark``.
    """

    mark: str
    no_limit: int | None
    """What the dialect's ``LIMIT`` takes for "no limit"."""
    by_id: str
    """The integration id in code point order, to order ``ids()`` ties alike everywhere."""
    has_schema: str
    """The names of the store's tables (``_schema.TABLES``) that exist, one a row."""
    schema_version: str
    set_version: str
    fetch: str
    exists: str
    counts: str
    has_key: str
    key_record: str
    """The ``integration_id``, ``refusal`` and ``recorded_at`` recorded with a key."""
    history: str
    pending: str
    """The pending rows with a sequence number above the first parameter, by sequence."""
    pending_count: str
    still_pending: str
    """``1`` if the row ``sequence`` is pending, else no row."""
    failed: str
    """Counts a failure of a pending row, discarding it at ``max_attempts`` (named
    parameters, see ``StoreCore._failed_params``); returns whether it discarded it."""
    discard: str
    """The compare-and-set of a discard (named parameters, see
    ``StoreCore._discard_params``); returns the row's ``EFFECT_COLUMNS``."""
    outbox_status: str
    """Whether the row ``sequence`` is discarded, or no row when there is none."""
    discarded: str
    discarded_after: str
    """The discarded rows after a discard time and sequence (the parameters), in order."""
    discarded_count: str
    outbox_effects: str
    """The distinct effect names of the outbox's rows, one a row, by an index."""
    purge: str
    forget: str


def pause_before(attempt: int) -> float:
    """A random pause (seconds) before a re-run, growing with the attempts, so racers spread out."""
    return random.uniform(0, min(0.05, 0.001 * 2**attempt))  # noqa: S311 - jitter, not cryptography


def _hand_over(handler: EffectHandler, effect: Effect) -> None:
    """Run a sync store's ``handler`` on ``effect``; refuse one it would have to await."""
    result = handler(effect)
    if inspect.isawaitable(result):
        raise _awaitable_refused(result, f"deliver(): the handler {shown(handler):.80}")


def _awaitable_refused(result: Awaitable[object], what: str) -> WorkflowError:
    """The refusal of ``what`` (a callable and its method) that a sync store would await.

    ``result`` is closed: a coroutine never awaited, so nothing more is said of it.
    """
    close = getattr(result, "close", None)
    if callable(close):
        close()
    return WorkflowError(
        f"{what} is async; a sync store cannot await it "
        "(use AsyncPostgresStore, or a plain function)"
    )


def _pause(attempt: int) -> None:
    time.sleep(pause_before(attempt))


def migration_failed(
    database: str, found: object, error: StoreError, reason: str, integration_id: str | None
) -> StoreError:
    """The error of a migration a statement failed, which the transaction rolled back.

    A statement the server's ``lock_timeout`` or ``statement_timeout`` stopped stays a
    :class:`StoreTimeout` (with its ``setting``), said of the migration: its own
    words are said of one change ("another connection ... so nothing was written"),
    where a migration's statement may just be long (it reads every row of a table).

    Args:
        database: The database, as messages name it.
        found: The version it is at (still: every step runs in one transaction).
        error: The store's error of the failed statement (the database's chained).
        reason: Why the statement failed, in one line (see ``_failure_reason``); a
            timeout is said by the setting that stopped it instead.
        integration_id: The session the caller was about to use, for the message.
    """
    if found == 0:
        what = f"cannot create the store's tables in {database}"
        after = "nothing was created"
    else:
        what = f"cannot migrate {database} from schema version {found} to {SCHEMA_VERSION}"
        after = f"it is still at version {found}, unchanged"
    if isinstance(error, StoreTimeout):
        waited = _MIGRATION_WAITS.get(error.setting, f"it gave up waiting for {error.waited_for}")
        return StoreTimeout(
            f"{subject(integration_id)}: {what}: {waited}; {after}",
            database=error.database,
            waited_for=error.waited_for,
            setting=error.setting,
            timeout=error.timeout,
            integration_id=integration_id,
        )
    return StoreError(f"{subject(integration_id)}: {what}: {reason}; {after}", integration_id)


# Why a migration's statement gave up, by the server's setting that stopped it.
_MIGRATION_WAITS: Final = {
    "lock_timeout": (
        "it waited for a lock another connection held (a worker using the store, say) for "
        "longer than the server's lock_timeout; run it again when they let go, or raise "
        "lock_timeout for the role that migrates"
    ),
    "statement_timeout": (
        "a statement of it ran longer than the server's statement_timeout (waiting for a "
        "lock another connection held, or rewriting every row of a large table); raise "
        "statement_timeout for the role that migrates (customer-session migrate at deploy "
        "time, say)"
    ),
}
