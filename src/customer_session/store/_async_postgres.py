"""The async PostgreSQL backend: psycopg 3's ``AsyncConnection`` and ``AsyncConnectionPool``.

Everything except the I/O is the sync store's: the SQL statements and their
parameters (:mod:`._postgres`), the schema and its migrations, the documents,
the journal and outbox rows, the change computation and the after-commit
deferral (:mod:`._base`, :class:`~._base.StoreCore`). Only the database calls are
awaited. psycopg is imported when a store is opened.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Self, TypeVar, cast, overload

from customer_session._secrets import redacted
from customer_session._transaction import writing
from customer_session.exceptions import (
    ConcurrentUpdate,
    KeyAlreadyProcessed,
    StoreError,
    StoreTimeout,
    WorkflowError,
)
from customer_session.model import CustomerSession
from customer_session.store import _forks as forks
from customer_session.store import _log
from customer_session.store._arguments import check
from customer_session.store._base import (
    _DELIVERY_BATCH,
    DEFAULT_RETRIES,
    StoreCore,
    _Conflict,
    _Loaded,
    _Stale,
    migration_failed,
    pause_before,
)
from customer_session.store._deferral import deferring, run_queued_async
from customer_session.store._documents import state_from_row
from customer_session.store._journal import JournalEntry, entry_from_row
from customer_session.store._keys import ProcessedKey, processed_key_from_row
from customer_session.store._outbox import (
    Delivery,
    Effect,
    delivering,
    effect_from_row,
    failure,
    holders,
    nested_delivery,
    note_failure,
    note_interrupted,
    unrecorded,
)
from customer_session.store._postgres import (
    _COUNTS,
    _DELIVERED,
    _DISCARD,
    _DISCARDED,
    _DISCARDED_AFTER,
    _DISCARDED_COUNT,
    _EXISTS,
    _FAILED,
    _FETCH,
    _FORGET,
    _HAS_KEY,
    _HAS_SCHEMA,
    _HISTORY,
    _KEY,
    _KEY_RECORD,
    _LOCK_OUTBOX,
    _LOCK_SCHEMA,
    _OUTBOX_EFFECTS,
    _OUTBOX_HOLDER,
    _OUTBOX_STATUS,
    _PENDING,
    _PENDING_COUNT,
    _PURGE,
    _REVISE_KEY,
    _SCHEMA_VERSION,
    _SET_VERSION,
    _STILL_PENDING,
    _TRY_LOCK_OUTBOX,
    _UNLOCK_OUTBOX,
    BY_ID,
    CONNECTION_OPTIONS,
    CURRENT_SCHEMA,
    DROPPED,
    SCHEMA_PLACE,
    SESSION_SETTINGS,
    UNUSABLE_SCHEMAS,
    _import_psycopg,
    connect_limit,
    database_name,
    dropped,
    duplicate_key,
    failure_reason,
    insert_statement,
    no_schema,
    opening_error,
    option_problems,
    schema_names,
    store_error,
    update_statement,
    write_params,
)
from customer_session.store._queries import select_ids
from customer_session.store._schema import (
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    found_version,
    steps_from,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
    from datetime import datetime
    from types import TracebackType

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from customer_session._spec import State
    from customer_session.hooks import Workflow
    from customer_session.store._changes import Change

_S = TypeVar("_S", bound=CustomerSession)
_O = TypeVar("_O", bound=CustomerSession)  # the session class open() is given
_T = TypeVar("_T")

# Seconds a cancelled commit waits for the server to take its cancel request.
_CANCEL_TIMEOUT: Final = 5.0
# Seconds close() from another loop waits for the opening loop to close the pool (its
# own wait for the pool's tasks is 5 s): a loop that stops first never answers.
_CLOSE_TIMEOUT: Final = 30.0


class _Pin:
    """The connection a running delivery holds the outbox lock on (see ``_delivery_lock``)."""

    __slots__ = ("connection", "running", "store")

    def __init__(self, store: object, connection: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        self.store = store
        self.connection = connection
        # Cleared when the delivery ends: a task its handler created keeps the pin in
        # its copy of the context, and must not use the connection once it is back
        # in the pool (another task has it then).
        self.running = True


# The delivery this task's store calls run in (its handler's), if any.
_PINNED: ContextVar[_Pin | None] = ContextVar("customer_session_pinned_async", default=None)


class AsyncPostgresStore(StoreCore[_S]):
    """Sessions in a PostgreSQL database, for asyncio code: the async face of the store.

    The same tables, rules and guarantees as
    :class:`~customer_session.store.PostgresStore` (both may work on one database
    at the same time), with the database calls awaited. Connections come from a
    ``psycopg_pool.AsyncConnectionPool`` in autocommit mode (at read committed, as
    ``PostgresStore``'s); tasks of one event loop may share a store object, and a
    call made in another event loop (a later ``asyncio.run()``, another thread's
    loop) raises
    :class:`~customer_session.StoreError`: open a store in each loop. Open it with
    :meth:`open` (or ``async with await AsyncPostgresStore.open(...) as store:``)
    and close it with :meth:`close`, which works in any loop, even once the one that
    opened the store has ended. Needs the ``[postgres]`` extra.

    The session a :meth:`transaction` block or an :meth:`update` change receives
    is a plain :class:`~customer_session.CustomerSession` (of ``session_class``):
    its sync triggers and edits work as usual. For ``async def`` guards and hooks,
    fire the triggers through :class:`customer_session.aio.AsyncSession` inside the
    block (``await AsyncSession(session).close()``). After-commit hooks, sync and
    async, run after the database commit (async ones awaited), in the order their
    triggers fired, and not at all when it does not happen.

    A task cancelled while its commit statement runs waits for the statement's
    outcome (the server is asked to stop it): a commit that happened is kept by the
    session object and the store's copy, and the ``CancelledError`` then propagates
    without the after-commit hooks; otherwise nothing was written and the session
    is put back.

    Args:
        conninfo: A libpq connection string or ``postgresql://`` URL.
        session_class: The class sessions are loaded into.
        workflow: The workflow whose guards and hooks apply to loaded sessions
            (default: the class's ``default_workflow``).
        retries: How many times :meth:`update` re-runs a change that lost a race.
        min_connections: Connections the pool keeps open.
        max_connections: Connections the pool may open.
        timeout: Seconds a call waits for a connection from the pool (all in use,
            or none can be made: the server is down), and :meth:`open` for the
            pool's first ``min_connections``; then it raises
            :class:`~customer_session.StoreTimeout`. It bounds each attempt to
            connect too (a server that does not answer), as libpq's
            ``connect_timeout``: in whole seconds, rounded up, at least 2; a
            ``connect_timeout`` in ``conninfo`` (or ``PGCONNECT_TIMEOUT``) is kept.
        actor: Who the journal entries of this store object's commits name, unless
            a call gives its own ``actor=`` (default ``None``: nobody); at most 200
            characters, not only whitespace, without control characters.
        migrate: ``True`` (default): the first use creates the schema, or migrates an
            older one. ``False`` (a worker whose database is migrated at deploy
            time): it only checks it, and creates or changes no table.

    Raises:
        ValidationError: Every bad option, each by name.
        WorkflowError: ``session_class`` or ``workflow`` does not fit.
        StoreError: psycopg is not installed; or (raised by a call) the store is
            not open (made with the constructor and not opened by ``async with``,
            or closed), or the call runs in another event loop than the one that
            opened the store.
        StoreTimeout: (Raised by a call.) It gave up waiting: no pooled connection
            in time, or a lock or statement past the server's ``lock_timeout`` or
            ``statement_timeout``; nothing was written. Or (raised by :meth:`open`)
            the server did not answer the first connection in time, or the pool did
            not open ``min_connections`` within ``timeout``.
        SchemaNotReady: With ``migrate=False``, the database holds no store or an
            older schema (raised on first use).
    """

    dialect: ClassVar[str] = "postgres"

    @overload
    def __init__(
        self: AsyncPostgresStore[CustomerSession],
        conninfo: str,
        *,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None: ...

    @overload
    def __init__(
        self,
        conninfo: str,
        *,
        session_class: type[_S],
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None: ...

    def __init__(
        self,
        conninfo: str,
        *,
        session_class: type[Any] = CustomerSession,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None:
        """Check the arguments and make the (closed) pool; :meth:`open` opens it."""
        super().__init__(
            session_class=session_class,
            workflow=workflow,
            retries=retries,
            actor=actor,
            migrate=migrate,
            problems=option_problems(conninfo, min_connections, max_connections, timeout),
        )
        pg, pool = _import_psycopg()
        self._pg = pg
        self._pool_errors = (pg.Error, pool.PoolTimeout)
        self._errors = pg.errors
        self._psycopg_error: type[Exception] = pg.Error
        self._pool_closed: type[Exception] = pool.PoolClosed
        self._conninfo = conninfo
        self._limit = connect_limit(conninfo, timeout)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            pool.AsyncConnectionPool(
                conninfo,
                min_size=min_connections,
                max_size=max_connections,
                kwargs={**CONNECTION_OPTIONS, **self._limit.options},
                open=False,
                name="customer-session-async",
                configure=self._track,
                check=self._check,
                timeout=timeout,
            )
        )
        # Every connection the pool made and still holds (weakly: the pool drops one it
        # closed), so that close() can end them without the event loop that opened it.
        self._connections: weakref.WeakSet[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            weakref.WeakSet()
        )
        self._ready_lock = asyncio.Lock()
        self._delivering = asyncio.Lock()
        self._is_ready = False
        # The event loop that opened the pool: its tasks and locks belong to it.
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._closed = False  # by close(): psycopg's pool cannot be opened again

    # The overloads of __init__, repeated: with ``**options`` the session class was
    # lost, and the store came back as AsyncPostgresStore[Any].
    @overload
    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,  # noqa: ASYNC109 - the pool's wait, not open()'s deadline
        actor: str | None = None,
        migrate: bool = True,
    ) -> AsyncPostgresStore[CustomerSession]: ...

    @overload
    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        session_class: type[_O],
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,  # noqa: ASYNC109 - the pool's wait, not open()'s deadline
        actor: str | None = None,
        migrate: bool = True,
    ) -> AsyncPostgresStore[_O]: ...

    @classmethod
    async def open(
        cls,
        conninfo: str,
        *,
        session_class: type[Any] = CustomerSession,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,  # noqa: ASYNC109 - the pool's wait, not open()'s deadline
        actor: str | None = None,
        migrate: bool = True,
    ) -> AsyncPostgresStore[Any]:
        """Create a store and open its pool (arguments as for the class).

        Raises:
            StoreError: psycopg is not installed, or the server cannot be reached.
            StoreTimeout: The server did not answer the first connection in time, or
                the pool did not open ``min_connections`` within ``timeout``.
            ValidationError: An option is bad (each by name).
            WorkflowError: ``session_class`` or ``workflow`` does not fit.
        """
        store = cls(
            conninfo,
            session_class=session_class,
            workflow=workflow,
            retries=retries,
            min_connections=min_connections,
            max_connections=max_connections,
            timeout=timeout,
            actor=actor,
            migrate=migrate,
        )
        await store._open()
        return store

    async def _open(self) -> None:
        try:
            # One plain connection first: a wrong URL or a server that is down fails
            # now with libpq's reason, instead of after the pool's reconnection attempts.
            connection = await self._pg.AsyncConnection.connect(
                self._conninfo, **self._limit.options
            )
            await connection.close()
            await self._pool.open(wait=True, timeout=self._pool.timeout)
            self._loop = weakref.ref(asyncio.get_running_loop())
        except self._pool_errors as exc:
            await self._pool.close()
            raise opening_error(
                exc, self._conninfo, self._pool.min_size, self._pool.timeout, self._limit
            ) from exc
        except BaseException:
            # Cancelled (a timeout around open()) or interrupted: the pool's tasks and
            # connections would outlive the store nobody can close, one set per attempt.
            await self._pool.close()
            raise

    def __repr__(self) -> str:
        """Show the server (without its password or any other secret option)."""
        return f"<AsyncPostgresStore {redacted(self._conninfo)}>"

    async def close(self) -> None:
        """Close the connection pool; the store cannot be used after.

        It may be called in any event loop. The pool's tasks belong to the loop
        that opened the store: while that loop runs (in another thread), it is
        asked to close the pool and awaited. When it has ended (a store opened by
        an earlier ``asyncio.run()``) or stopped, the store's connections are
        closed from here: their server sessions end, and with them any lock they
        held; the pool's tasks ended with their loop, or never run again. A
        call on a closed store raises :class:`~customer_session.StoreError`;
        closing it again does nothing. In a process forked from the one that opened
        the store, it closes nothing: the connections are the parent's, and closing
        one would end its server session for the parent too.
        """
        self._closed = True  # first: a call made while it closes is refused
        if self._forked:
            return
        opener = None if self._loop is None else self._loop()
        if self._loop is None or opener is asyncio.get_running_loop():
            await self._pool.close()  # never opened (nothing to do), or in its own loop
            return
        if opener is not None and opener.is_running():
            closing = asyncio.run_coroutine_threadsafe(self._pool.close(), opener)
            try:
                # Bounded: a loop that stops before it runs the request never answers.
                await asyncio.wait_for(asyncio.wrap_future(closing), _CLOSE_TIMEOUT)
            except TimeoutError:
                closing.cancel()
            else:
                return
        # Not run again by this store: running a stopped loop would run its other tasks.
        self._close_connections()

    def _close_connections(self) -> None:
        """Close the store's connections without their event loop (see :meth:`close`)."""
        for connection in list(self._connections):
            # libpq's own close: it needs no event loop, and ends the server session.
            connection.pgconn.finish()
        self._connections.clear()

    async def _track(self, connection: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        """Set up a connection the pool made: read committed, ISO times, as ``PostgresStore``'s.

        And note it, for :meth:`close` without its event loop.
        """
        await connection.execute(SESSION_SETTINGS)
        self._connections.add(connection)

    async def _check(self, connection: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        """The pool's check: refuse a connection whose session the server ended.

        As ``PostgresStore``'s (see ``_postgres._IdleCheck``): one ``poll`` with no
        wait; a dropped connection is closed, so the pool makes another, and the
        pool's other idle connections are checked, once.

        Raises:
            psycopg.OperationalError: The server ended the connection's session.
        """
        if not dropped(connection):
            return
        await connection.close()
        await self._pool.check()
        raise connection.OperationalError(DROPPED)

    def _check_loop(self) -> None:
        """Refuse a call made in another event loop than the one that opened the pool.

        The pool's tasks and the store's locks belong to that loop: from another
        one, a call would share connections with it across threads, hang, or fail
        with asyncio's ``RuntimeError``, depending on the moment.

        Raises:
            StoreError: The running loop is not the store's.
        """
        if self._loop is not None and self._loop() is not asyncio.get_running_loop():
            raise StoreError(
                f"{self!r} was opened in another event loop: a store serves the tasks "
                "of the event loop that opened it (open a store in each event loop)"
            )

    async def __aenter__(self) -> Self:
        """Open the pool if it is not open yet; return the store.

        Raises:
            StoreError: The store was closed, or the server cannot be reached.
        """
        if self._closed:
            raise self._not_open()
        if self._pool.closed:
            await self._open()
        return self

    def _not_open(self, integration_id: str | None = None) -> StoreError:
        """The error of a call on a store that is not open: never opened, or closed."""
        if self._closed:  # psycopg's pool cannot be opened again
            return StoreError(f"{self!r} is closed: open a new store", integration_id)
        return StoreError(
            f"{self!r} is not open: open it with 'async with store:', or make it open with "
            "'await AsyncPostgresStore.open(...)'",
            integration_id,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        await self.close()

    # -- sessions ----------------------------------------------------------------------

    async def create(
        self,
        session: _S,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Store a new session (row version 1) with its first journal entry.

        As :meth:`PostgresStore.create <customer_session.store.PostgresStore.create>`.

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
        await self._ready(integration_id)
        change = self._created(session, key, operation, actor)
        kept = self._keep(session)
        written, interrupted = await self._write(insert_statement(change), change, None)
        if written:
            self._remember(change, kept, 1)
        if interrupted is not None:
            raise interrupted
        if not written:
            recorded = None
            if key is not None:
                row = await self._fetchone(integration_id, _KEY_RECORD, (key,))
                recorded = processed_key_from_row(key, row)
            raise self._not_created(integration_id, key, recorded)

    async def get(self, integration_id: str) -> _S:
        """The stored session, bound to :attr:`workflow`.

        Raises:
            SessionNotFound: No such session.
            CorruptData: Its stored document does not load.
            WorkflowError: It holds a trigger the store's table lacks.
        """
        check("get", integration_id=integration_id)
        return (await self._load(integration_id, self.workflow)).session

    async def exists(self, integration_id: str) -> bool:
        """Whether a session with this integration id is stored."""
        check("exists", integration_id=integration_id)
        await self._ready(integration_id)
        return await self._fetchone(integration_id, _EXISTS, (integration_id,)) is not None

    async def counts(self) -> dict[State, int]:
        """How many sessions are stored in each state (states with none are left out)."""
        await self._ready(None)
        rows = await self._fetchall(None, _COUNTS, ())
        return {state_from_row(row[0]): row[1] for row in rows}

    async def ids(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        updated_before: datetime | None = None,
        updated_since: datetime | None = None,
        limit: int | None = None,
    ) -> tuple[str, ...]:
        """The integration ids of the stored sessions that match, least recently updated first.

        As :meth:`PostgresStore.ids <customer_session.store.PostgresStore.ids>`.

        Raises:
            ValidationError: Every bad argument, each by name.
        """
        checked = self._query(state, updated_before, updated_since, limit)
        await self._ready(None)
        statement, params = select_ids(checked, "%s", by_id=BY_ID)  # LIMIT NULL: no limit
        return tuple(row[0] for row in await self._fetchall(None, statement, params))

    @asynccontextmanager
    async def transaction(
        self,
        integration_id: str,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> AsyncIterator[_S]:
        """Load a session, let the ``async with`` block change it, commit atomically.

        One attempt, as :meth:`PostgresStore.transaction
        <customer_session.store.PostgresStore.transaction>`: a change committed by
        another writer since the load raises
        :class:`~customer_session.exceptions.ConcurrentUpdate` and writes nothing.
        The block may await; fire triggers with async guards or hooks through
        ``customer_session.aio.AsyncSession(session)``.

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
            async with self._attempt(integration_id, key, operation, actor) as session:
                yield session
        except _Conflict as conflict:
            _log.commit_conflict(self, integration_id, conflict.version)
            raise ConcurrentUpdate(integration_id, 1) from None

    # Overloads, the awaitable first: with one parameter typed as the union of both
    # kinds of callable, mypy refused an ``async def`` change and typed a lambda's
    # result as Any.
    @overload
    async def update(
        self,
        integration_id: str,
        change: Callable[[_S], Awaitable[_T]],
        *,
        retries: int | None = None,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> _T: ...

    @overload
    async def update(
        self,
        integration_id: str,
        change: Callable[[_S], _T],
        *,
        retries: int | None = None,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> _T: ...

    async def update(
        self,
        integration_id: str,
        change: Callable[[_S], Awaitable[_T]] | Callable[[_S], _T],
        *,
        retries: int | None = None,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> _T:
        """Apply ``change`` and commit, re-running it on fresh state after a lost race.

        ``change`` is a plain function or an ``async def`` function (its result
        is awaited); otherwise as :meth:`PostgresStore.update
        <customer_session.store.PostgresStore.update>`. Pauses between attempts
        are ``asyncio.sleep``.

        Returns:
            What ``change`` returned (awaited) on the attempt that committed.

        Raises:
            ConcurrentUpdate: Every attempt lost a race.
            StoreTimeout: It gave up waiting for a lock (or, on PostgreSQL, a
                connection); not retried, as the wait was the timeout already.
            SessionNotFound: No such session.
            CorruptData: Its stored document does not load.
            WorkflowError: It holds a trigger the store's table lacks.
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
                async with self._attempt(
                    integration_id, key, operation, actor, optimistic
                ) as session:
                    result = change(session)
                    if inspect.isawaitable(result):
                        result = await result
            except _Stale as stale:
                _log.cache_stale(self, integration_id, stale.version)
                optimistic = False  # not a lost race: the next attempt reads the row
                continue
            except _Conflict as conflict:
                attempt += 1
                self._retry_or_give_up(integration_id, conflict.version, attempt, attempts)
                await asyncio.sleep(pause_before(attempt))
                continue
            return result

    @asynccontextmanager
    async def _attempt(
        self,
        integration_id: str,
        key: str | None,
        operation: str | None,
        actor: str | None,
        optimistic: bool = False,
    ) -> AsyncIterator[_S]:
        """One attempt, as ``BaseStore._attempt``, with the database calls awaited."""
        await self._ready(integration_id)  # also before a change made on the cached copy
        workflow = self._shadow.get()
        loaded = self._cached(integration_id, workflow) if optimistic else None
        if loaded is None:
            optimistic = False
            loaded = await self._load(integration_id, workflow)
        session = loaded.session
        # A cancellation that arrived while the commit statement ran, raised once the
        # outcome is recorded: outside the atomic() block when the commit happened.
        interrupted: asyncio.CancelledError | None = None
        with deferring(session, awaits=True) as queue, session.atomic():
            try:
                yield session
            except Exception:
                if optimistic and not await self._current(integration_id, loaded.version):
                    raise _Stale(loaded.version) from None
                raise
            with writing(session):
                change = self._changed(loaded, key, operation, actor)
                if change is not None:
                    statement = update_statement(change)
                    written, interrupted = await self._write(statement, change, loaded.version)
                    if not written:
                        self._forget_stale(integration_id, loaded.version)
                        if interrupted is not None:
                            raise interrupted  # nothing committed: roll back and stop
                        raise _Stale(loaded.version) if optimistic else _Conflict(loaded.version)
                    self._remember(change, self._keep(session), loaded.version + 1)
                else:
                    if optimistic and not await self._current(integration_id, loaded.version):
                        raise _Stale(loaded.version)
                    if key is not None and not await self._record_key_alone(key, integration_id):
                        raise KeyAlreadyProcessed(key, integration_id)
        if interrupted is not None:
            # Committed: the session keeps the change; the after-commit hooks do not
            # run, as for a cancellation that arrives while they run.
            raise interrupted
        await run_queued_async(queue)

    # -- the journal, keys and the outbox ------------------------------------------------

    async def history(self, integration_id: str) -> tuple[JournalEntry, ...]:
        """The session's journal: every committed change, oldest first.

        Raises:
            CorruptData: A journal row is corrupt, or records a move the store's
                table lacks.
            WorkflowError: A record's trigger is not in the store's table (written
                through a class with a larger one, such as the reopen table).
        """
        check("history", integration_id=integration_id)
        await self._ready(integration_id)
        rows = await self._fetchall(integration_id, _HISTORY, (integration_id,))
        return tuple(entry_from_row(row, self._session_class) for row in rows)

    async def processed(self, key: str) -> bool:
        """Whether a change (or :meth:`mark_processed`) already recorded ``key``."""
        check("processed", key=key)
        await self._ready(None)
        return await self._fetchone(None, _HAS_KEY, (key,)) is not None

    async def purge_delivered(self, *, before: datetime) -> int:
        """Delete the outbox rows delivered or discarded before ``before``; return how many.

        As :meth:`PostgresStore.purge_delivered
        <customer_session.store.PostgresStore.purge_delivered>`.

        Raises:
            ValidationError: ``before`` is not an aware ``datetime``.
        """
        check("purge_delivered", before=before)
        await self._ready(None)
        moment = before.astimezone(UTC)
        count = await self._delete_in_batches(_PURGE, moment)
        _log.purged(self, count, moment)
        return count

    async def forget_keys(self, *, before: datetime) -> int:
        """Delete the idempotency keys recorded before ``before``; return how many.

        As :meth:`PostgresStore.forget_keys
        <customer_session.store.PostgresStore.forget_keys>`: a forgotten key no
        longer guards against its change being applied twice.

        Raises:
            ValidationError: ``before`` is not an aware ``datetime``.
        """
        check("forget_keys", before=before)
        await self._ready(None)
        moment = before.astimezone(UTC)
        count = await self._delete_in_batches(_FORGET, moment)
        _log.keys_forgotten(self, count, moment)
        return count

    async def migrate_schema(self) -> int:
        """Create or migrate the schema now, not on first use; return the version it was at.

        As :meth:`PostgresStore.migrate_schema
        <customer_session.store.PostgresStore.migrate_schema>`: 0 when this call
        created the store, :data:`~customer_session.store.SCHEMA_VERSION` when it
        was current, else the version this call migrated it from.

        Raises:
            UnsupportedSchema: The database is of a newer library (or has the
                store's tables without a version); nothing is changed.
            SchemaNotReady: With ``migrate=False``, the database holds no store
                or an older schema.
            StoreError: The store is not open, or a statement failed; the
                migration is rolled back whole, the database is still at the
                version it was.
            StoreTimeout: A statement waited for a lock for too long (the server's
                ``lock_timeout`` or ``statement_timeout``); rolled back as well.
        """
        self._usable(None)
        async with self._ready_lock:
            found = await self._migrate(None)
            self._is_ready = True
        return found

    async def _delete_in_batches(self, statement: str, before: datetime) -> int:
        """Run a housekeeping ``DELETE`` batch by batch, as the sync stores do; how many."""
        moment = before.astimezone(UTC)
        batch = self._housekeeping_batch
        total = 0
        while True:
            count = await self._execute(None, statement, (moment, batch, moment))
            total += count
            if count < batch:
                return total

    async def processed_key(self, key: str) -> ProcessedKey | None:
        """What was recorded with ``key``, or ``None``.

        As :meth:`PostgresStore.processed_key
        <customer_session.store.PostgresStore.processed_key>`.
        """
        check("processed_key", key=key)
        await self._ready(None)
        return processed_key_from_row(key, await self._fetchone(None, _KEY_RECORD, (key,)))

    async def mark_processed(
        self, key: str, *, integration_id: str | None = None, refusal: str | None = None
    ) -> bool:
        """Record ``key`` without a change; ``True`` if recorded now, ``False`` if it was.

        ``refusal`` is why the event was refused, kept for :meth:`processed_key`.
        """
        check(
            "mark_processed",
            key=key,
            optional_integration_id=integration_id,
            refusal=refusal,
        )
        await self._ready(integration_id)
        return await self._record_key(key, integration_id, refusal)

    async def pending(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The outbox rows not delivered (nor discarded) yet, in delivery order.

        As :meth:`PostgresStore.pending <customer_session.store.PostgresStore.pending>`:
        page by page with ``after`` (the last row of the page before), documents
        parsed when first read.
        """
        check("pending", limit=limit, after=after)
        await self._ready(None)
        params = (0 if after is None else after.sequence, limit)
        rows = await self._fetchall(None, _PENDING, params)
        return tuple(effect_from_row(row, unread=True) for row in rows)

    async def pending_count(self) -> int:
        """How many outbox rows are pending, counted on their index."""
        return await self._count(_PENDING_COUNT)

    async def _count(self, statement: str) -> int:
        """The count a ``SELECT count(*)`` of the outbox gives."""
        await self._ready(None)
        ((count,),) = await self._fetchall(None, statement, ())
        return int(count)

    async def discard(self, sequence: int, *, reason: str) -> Effect:
        """Give up on the pending outbox row ``sequence``: it is never handed over again.

        As :meth:`PostgresStore.discard <customer_session.store.PostgresStore.discard>`:
        one compare-and-set on the row being pending, which does not wait for a
        running delivery; a handler that has the row already goes on, and the row
        stays discarded.

        Returns:
            The row as discarded.

        Raises:
            EffectNotPending: No pending row has that sequence number; nothing changed.
            ValidationError: A bad argument, each by name; nothing changed.
        """
        check("discard", sequence=sequence, reason=reason)
        await self._ready(None)
        async with self._connection(None) as connection:
            cursor = await connection.execute(_DISCARD, self._discard_params(sequence, reason))
            rows = await cursor.fetchall()
            found = (
                None
                if rows
                else await (await connection.execute(_OUTBOX_STATUS, (sequence,))).fetchone()
            )
        return self._discarded(sequence, rows, found)

    async def discarded(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The discarded outbox rows, in the order they were discarded (oldest first).

        As :meth:`PostgresStore.discarded
        <customer_session.store.PostgresStore.discarded>`: page by page with
        ``after`` (the last row of the page before), documents parsed when first read.
        """
        check("discarded", limit=limit, discarded_after=after)
        await self._ready(None)
        if after is None or after.discarded_at is None:  # checked: a discarded row
            rows = await self._fetchall(None, _DISCARDED, (limit,))
        else:
            params = (after.discarded_at, after.sequence, limit)
            rows = await self._fetchall(None, _DISCARDED_AFTER, params)
        return tuple(effect_from_row(row, unread=True) for row in rows)

    async def discarded_count(self) -> int:
        """How many outbox rows are discarded (until purged), counted on their index."""
        return await self._count(_DISCARDED_COUNT)

    async def outbox_effects(self) -> tuple[str, ...]:
        """The names of the durable effects the outbox holds rows of, sorted.

        As :meth:`PostgresStore.outbox_effects
        <customer_session.store.PostgresStore.outbox_effects>`: every row, pending,
        delivered or discarded, until purged; read from an index, one step per name.
        """
        await self._ready(None)
        rows = await self._fetchall(None, _OUTBOX_EFFECTS, ())
        return tuple(sorted(name for (name,) in rows))

    async def deliver(
        self,
        handler: Callable[[Effect], object],
        *,
        limit: int | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Hand each pending outbox row to ``handler``, in commit order; return how many.

        ``handler`` is a plain or an ``async def`` function (its result is
        awaited); otherwise as :meth:`PostgresStore.deliver
        <customer_session.store.PostgresStore.deliver>`: at least once, a row is
        marked delivered after the handler returned, a failure stops the delivery
        and propagates (with a note naming the row), and with ``max_attempts`` a
        row whose failures reach it is discarded. Deliverers are serialized by an
        advisory lock; with nothing pending, it returns 0 at once.

        Raises:
            WorkflowError: ``handler`` called ``deliver()`` on this store, or on
                another store object (sync or async) on the same database and
                schema (it would wait for itself); the row stays pending, its
                failure counted.
        """
        check("deliver", handler=handler, limit=limit, max_attempts=max_attempts)
        await self._ready(None)
        delivered = 0
        with delivering(self, self) as delivery:
            if not await self._fetchall(None, _PENDING, (0, 1)):
                return 0  # nothing to deliver needs no turn (as PostgresStore.deliver)
            async with self._delivery_lock(delivery):
                while limit is None or delivered < limit:
                    batch = (
                        _DELIVERY_BATCH
                        if limit is None
                        else min(_DELIVERY_BATCH, limit - delivered)
                    )
                    rows = await self._fetchall(None, _PENDING, (0, batch))
                    if not rows:
                        break
                    for index, row in enumerate(rows):
                        effect = effect_from_row(row)
                        if index and not await self._fetchone(
                            None, _STILL_PENDING, (effect.sequence,)
                        ):
                            continue  # discarded since the batch was read
                        try:
                            result = handler(effect)
                            if inspect.isawaitable(result):
                                await result
                        except Exception as exc:
                            error = failure(exc)
                            params = self._failed_params(effect.sequence, error, max_attempts)
                            with unrecorded(effect, exc):
                                counted = await self._fetchall(None, _FAILED, params)
                            discarded = None if not counted else bool(counted[0][0])
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
                            marked = await self._execute(None, _DELIVERED, (effect.sequence,))
                        if marked == 1:
                            delivered += 1
        return delivered

    # -- database steps ------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(
        self, integration_id: str | None
    ) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
        """A pooled connection; database errors become ``StoreError`` naming the session."""
        try:
            pinned = _PINNED.get()
            if pinned is not None and pinned.store is self and pinned.running:
                yield pinned.connection
                return
            if self._closed:
                # Closed by another task since the call began (_ready let it in): else
                # psycopg's "the pool is already closed", said as a database error.
                raise self._not_open(integration_id)
            async with self._pool.connection() as connection:
                yield connection
        except self._psycopg_error as exc:
            # As in PostgresStore._connection: the pool's check (_check) finds the idle
            # connections the server dropped with this one.
            raise self._pool_error(exc, integration_id) from exc

    def _pool_error(self, error: Exception, integration_id: str | None) -> StoreError:
        """The library's error for psycopg's ``error`` while getting or using a connection.

        A call that was waiting for a connection when another task closed the store
        gets psycopg's ``PoolClosed`` ("the pool ... is closed"): that is the store
        being closed, as a call made after ``close()`` is told, not a database error.
        """
        if self._closed and isinstance(error, self._pool_closed):
            return self._not_open(integration_id)
        return store_error(error, self._conninfo, self._pool, integration_id)

    async def _fetchone(
        self, integration_id: str | None, statement: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        async with self._connection(integration_id) as connection:
            return await (await connection.execute(statement, params)).fetchone()

    async def _fetchall(
        self, integration_id: str | None, statement: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        async with self._connection(integration_id) as connection:
            return await (await connection.execute(statement, params)).fetchall()

    async def _execute(
        self, integration_id: str | None, statement: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> int:
        async with self._connection(integration_id) as connection:
            return (await connection.execute(statement, params)).rowcount

    async def _ready(self, integration_id: str | None) -> None:
        """Create or migrate (or, with ``migrate=False``, check) the schema on first use.

        Every call of the store comes here first, and is refused here when the store
        is not open, when it runs in another event loop than the store's, or in a
        process forked from the one that opened it.
        """
        self._usable(integration_id)
        if self._is_ready:
            return
        async with self._ready_lock:
            if not self._is_ready:
                await self._migrate(integration_id)
                self._is_ready = True

    def _usable(self, integration_id: str | None) -> None:
        """Refuse a call when the store is not open, in another loop, or in a fork."""
        self._refuse_in_a_fork(integration_id)
        if self._closed or self._pool.closed:  # not opened yet, or closed (see close())
            raise self._not_open(integration_id)
        self._check_loop()

    async def _migrate(self, integration_id: str | None) -> int:
        migrating: tuple[str, object] | None = None  # as in BaseStore._migrate, which returns alike
        try:
            async with self._connection(integration_id) as connection:
                found = await _schema_version(connection, self._conninfo, integration_id)
                if found == SCHEMA_VERSION:
                    return SCHEMA_VERSION
                cursor = await connection.execute(CURRENT_SCHEMA)
                (schema,) = await cursor.fetchall()
                where = database_name(self._conninfo, schema[0])
                self._check_known(found, where, integration_id)
                if not self._migrates:  # checked, never changed: it is migrated at deploy time
                    raise self._not_ready(where, found, integration_id)
                async with connection.transaction():
                    # Two processes starting together must not both create the tables.
                    await connection.execute(_LOCK_SCHEMA)
                    found = await _schema_version(connection, self._conninfo, integration_id)
                    steps = steps_from(self.dialect, found, integration_id, where)
                    migrating = (where, found)
                    for step in steps:
                        for statement in step:
                            await connection.execute(statement)
                    if steps:
                        await connection.execute(_SET_VERSION, (SCHEMA_VERSION,))
                if steps:  # committed: the block is over
                    self._migrated(where, found)
                return cast("int", found)  # steps_from refused any other
        except StoreError as exc:
            if migrating is None or type(exc) not in {StoreError, StoreTimeout}:
                raise
            reason = self._failure_reason(exc)
            raise migration_failed(*migrating, exc, reason, integration_id) from exc

    @staticmethod
    def _failure_reason(error: StoreError) -> str:
        # The server's words in one line, a read-only transaction said so (as the sync one).
        return failure_reason(error.__cause__ or error)

    async def _load(self, integration_id: str, workflow: Workflow) -> _Loaded[_S]:
        await self._ready(integration_id)
        row = await self._fetchone(integration_id, _FETCH, (integration_id,))
        return self._from_row(
            integration_id, None if row is None else (row[0], row[1], row[2]), workflow
        )

    async def _current(self, integration_id: str, version: int) -> bool:
        row = await self._fetchone(integration_id, _FETCH, (integration_id,))
        return row is not None and row[0] == version

    async def _write(self, statement: str, change: Change, expected: int | None) -> _Written:
        """Run a commit statement to its outcome: whether it wrote, and a cancellation meanwhile.

        A cancellation that arrives while the statement runs does not abandon it
        (psycopg would wait for the server, then drop its answer): the server is
        asked to stop the statement, which it does unless it has committed, and its
        answer is awaited. The caller records a commit and then raises the
        cancellation; when the statement did not write, or failed, the
        cancellation is raised here, as if nothing had been sent. A cancellation
        that arrives once the outcome is known (while the pool takes the connection
        back) is handed to the caller with it in the same way.
        """
        params = write_params(statement, change, expected)
        outcome: _Written | None = None
        try:
            async with self._connection(change.integration_id) as connection:
                outcome = await _to_the_end(connection, statement, params)
        except asyncio.CancelledError as exc:
            if outcome is None:
                raise
            # Raised, the commit would be lost to the session and the store's copy.
            if outcome.interrupted is None:
                outcome = outcome._replace(interrupted=exc)
        except StoreError as exc:
            duplicate = duplicate_key(exc, change, self._errors)
            if duplicate is None:
                raise
            raise duplicate from None
        return outcome

    async def _record_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        return await self._execute(integration_id, _KEY, (key, integration_id, refusal)) == 1

    async def _record_key_alone(self, key: str, integration_id: str) -> bool:
        """Record the key of a commit that changed nothing (see ``_record_key_or_fail``)."""
        statement = _REVISE_KEY if self._revises(key) else _KEY
        return await self._execute(integration_id, statement, (key, integration_id, None)) == 1

    @asynccontextmanager
    async def _delivery_lock(self, delivery: Delivery) -> AsyncIterator[None]:
        # As PostgresStore._delivery_lock: a session-level advisory lock on a
        # connection kept out of the pool while the handler runs, which delivery's
        # own queries use too.
        async with self._delivering:
            if self._closed:  # while this delivery waited for another one (see _connection)
                raise self._not_open()
            try:
                connection = await self._pool.getconn()
            except self._psycopg_error as exc:
                raise self._pool_error(exc, None) from exc
            # Whether the connection may hold the lock: a lock or unlock that failed,
            # or was interrupted, may have been done by the server all the same.
            # Closing the connection then releases the lock for sure; back in the
            # pool, it would keep every other deliverer waiting.
            held = True
            socket = None
            try:
                # A child forked while the lock is held must not keep the session alive.
                socket = self._socket(connection)
                forks.hold(socket)
                try:
                    delivery.holder = await self._lock_outbox(connection)
                except WorkflowError:
                    held = False  # refused before waiting: the lock was not taken
                    raise
                pin = _Pin(self, connection)
                pinned = _PINNED.set(pin)
                try:
                    yield
                finally:
                    pin.running = False
                    _PINNED.reset(pinned)
                    # Before the unlock: a nested delivery that finds this backend holding the
                    # lock from now on finds another delivery on the pooled connection.
                    delivery.holder = None
                    # An unlock that fails (the server dropped the connection: the
                    # error the delivery met already says so) must not replace the
                    # delivery's outcome: the connection is closed below, which ends
                    # its server session and the lock for sure.
                    with suppress(StoreError):
                        await self._advisory(connection, _UNLOCK_OUTBOX)
                        held = False
            finally:
                if socket is not None:
                    # Before the close, which tells the server to end the session (and a
                    # child forked meanwhile keeps a socket the server no longer serves).
                    forks.let_go(socket)
                if held:
                    await connection.close()
                await self._pool.putconn(connection)

    async def _lock_outbox(self, connection: psycopg.AsyncConnection[tuple[Any, ...]]) -> object:
        """Take the delivery lock on ``connection``, waiting for it; return its holder.

        As ``PostgresStore._lock_outbox``.

        Raises:
            WorkflowError: A delivery whose handler runs this one holds the lock.
        """
        enclosing = holders()
        if enclosing:
            # Called by a handler: the delivery running it may hold the lock, through
            # another store object on this schema, and would wait for this one.
            ((taken, *session),) = await self._advisory(connection, _TRY_LOCK_OUTBOX)
            if taken:
                return tuple(session)
            held_by = await self._advisory(connection, _OUTBOX_HOLDER)
            # Asked again, as in PostgresStore._lock_outbox.
            if any(holder in holders() for holder in held_by):
                raise nested_delivery(self)
        ((_, *session),) = await self._advisory(connection, _LOCK_OUTBOX)
        return tuple(session)

    async def _advisory(
        self, connection: psycopg.AsyncConnection[tuple[Any, ...]], statement: str
    ) -> list[tuple[Any, ...]]:
        try:
            return await (await connection.execute(statement)).fetchall()
        except self._psycopg_error as exc:  # the lock's wait may run out (lock_timeout)
            raise store_error(exc, self._conninfo, self._pool, None) from exc

    def _socket(self, connection: psycopg.AsyncConnection[tuple[Any, ...]]) -> int:
        """The descriptor of ``connection``'s socket (see ``_forks``)."""
        try:
            return connection.fileno()
        except self._psycopg_error as exc:
            raise store_error(exc, self._conninfo, self._pool, None) from exc


class _Written(NamedTuple):
    """The outcome of a commit statement (see ``AsyncPostgresStore._write``)."""

    written: bool
    """Whether the statement wrote (a row inserted, or the compare-and-set won)."""
    interrupted: asyncio.CancelledError | None
    """The cancellation that arrived while it ran, for the caller to raise."""


async def _to_the_end(
    connection: psycopg.AsyncConnection[tuple[Any, ...]],
    statement: str,
    params: Mapping[str, Any],
) -> _Written:
    """Run ``statement`` on ``connection`` and wait for its outcome, even when cancelled."""
    running = asyncio.ensure_future(_first_row(connection, statement, params))
    interrupted: asyncio.CancelledError | None = None
    stopping: asyncio.Future[None] | None = None
    # The cancel request is awaited too: one still on its way could stop the
    # connection's next statement instead.
    while waiting := [f for f in (running, stopping) if f is not None and not f.done()]:
        try:
            await asyncio.wait(waiting)
        except asyncio.CancelledError as exc:
            if interrupted is None:
                interrupted = exc
                stopping = asyncio.ensure_future(connection.cancel_safe(timeout=_CANCEL_TIMEOUT))
    if interrupted is None:
        return _Written(running.result() is not None, None)
    assert stopping is not None  # noqa: S101 - asked as the cancellation arrived
    if not stopping.cancelled():
        stopping.exception()  # a failed request changes nothing: the statement's answer decides
    if running.exception() is not None:
        # Stopped by the request (nothing written), or failed as any commit may (the
        # outcome unknown, which the next compare-and-set finds out): stop here.
        raise interrupted
    return _Written(running.result() is not None, interrupted)


async def _first_row(
    connection: psycopg.AsyncConnection[tuple[Any, ...]],
    statement: str,
    params: Mapping[str, Any],
) -> tuple[Any, ...] | None:
    return await (await connection.execute(statement, params)).fetchone()


async def _schema_version(
    connection: psycopg.AsyncConnection[tuple[Any, ...]],
    conninfo: str,
    integration_id: str | None,
) -> object:
    """As ``PostgresStore._schema_version``: a search_path without a schema is refused."""
    names = {name for (name,) in await (await connection.execute(_HAS_SCHEMA)).fetchall()}
    row = (
        await (await connection.execute(_SCHEMA_VERSION)).fetchone()
        if SCHEMA_TABLE in names
        else None
    )
    found = found_version(names, lambda: None if row is None else row[0])
    if found == 0:  # no store's table found: maybe no schema to look in
        ((missing, search_path),) = await (await connection.execute(SCHEMA_PLACE)).fetchall()
        if missing:
            cursor = await connection.execute(UNUSABLE_SCHEMAS, (schema_names(search_path),))
            ((role, unusable),) = await cursor.fetchall()
            raise no_schema(conninfo, search_path, integration_id, role=role, unusable=unusable)
    return found
