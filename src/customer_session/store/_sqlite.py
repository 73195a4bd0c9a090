"""The SQLite backend: the embedded default, a file in WAL mode (or ``:memory:``)."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import stat
import sys
import threading
import time
import uuid
import weakref
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, NamedTuple, TypeVar, overload
from urllib.parse import quote

from customer_session._cart import is_number
from customer_session._show import shown
from customer_session.exceptions import (
    CorruptData,
    KeyAlreadyProcessed,
    Problem,
    SchemaNotReady,
    StoreError,
    StoreTimeout,
)
from customer_session.model import CustomerSession
from customer_session.store import _forks as forks
from customer_session.store import _log
from customer_session.store._base import DEFAULT_RETRIES, BaseStore, Statements
from customer_session.store._documents import subject
from customer_session.store._outbox import EFFECT_COLUMNS
from customer_session.store._schema import SCHEMA_VERSION, TABLE_LIST

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from contextlib import AbstractContextManager

    from customer_session.hooks import Workflow
    from customer_session.store._changes import Change
    from customer_session.store._outbox import Delivery

_S = TypeVar("_S", bound=CustomerSession)

_FETCH: Final = "SELECT version, state, document FROM customer_sessions WHERE integration_id = ?"
_EXISTS: Final = "SELECT 1 FROM customer_sessions WHERE integration_id = ?"
_COUNTS: Final = "SELECT state, count(*) FROM customer_sessions GROUP BY state ORDER BY state"
_INSERT: Final = """
    INSERT INTO customer_sessions (integration_id, state, version, updated, document)
    VALUES (?, ?, 1, ?, ?) ON CONFLICT (integration_id) DO NOTHING"""
# The compare-and-set: one statement, and its row count says whether it won.
_UPDATE: Final = """
    UPDATE customer_sessions SET state = ?, version = version + 1, updated = ?, document = ?
    WHERE integration_id = ? AND version = ?"""
_JOURNAL: Final = """
    INSERT INTO customer_session_journal
        (integration_id, version, kind, operation, event_key, actor, records, changes,
         recorded_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_OUTBOX: Final = """
    INSERT INTO customer_session_outbox
        (idempotency_key, effect, integration_id, version, position, record, document,
         created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_KEY: Final = """
    INSERT INTO customer_session_keys (key, integration_id, recorded_at, refusal)
    VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"""
# A refused event's key taken over: by the change that applies the event now (refusal
# NULL), or by a newer reason. Only a refusal is replaced: the row count is 0, and
# nothing is written, for a key recorded as applied.
_REVISE_KEY: Final = """
    INSERT INTO customer_session_keys (key, integration_id, recorded_at, refusal)
    VALUES (?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET integration_id = excluded.integration_id,
        recorded_at = excluded.recorded_at, refusal = excluded.refusal
    WHERE customer_session_keys.refusal IS NOT NULL"""
_HAS_KEY: Final = "SELECT 1 FROM customer_session_keys WHERE key = ?"
_KEY_RECORD: Final = (
    "SELECT integration_id, refusal, recorded_at FROM customer_session_keys WHERE key = ?"
)
# On the index of recorded_at (ISO text in UTC, which sorts as the times do).
_LATEST_KEY: Final = (
    "SELECT key, recorded_at FROM customer_session_keys ORDER BY recorded_at DESC LIMIT 1"
)
# The step from the latest key's time when the clock is not past it: datetime's least.
_TICK: Final = timedelta(microseconds=1)
_HISTORY: Final = """
    SELECT sequence, integration_id, version, kind, operation, event_key, actor, records,
        changes, recorded_at
    FROM customer_session_journal WHERE integration_id = ? ORDER BY version"""
# The pending rows after a sequence number (0: from the first), by the partial index.
_PENDING: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE delivered_at IS NULL AND sequence > ? ORDER BY sequence LIMIT ?"""  # noqa: S608 - our own names
_PENDING_COUNT: Final = "SELECT count(*) FROM customer_session_outbox WHERE delivered_at IS NULL"
_STILL_PENDING: Final = """
    SELECT 1 FROM customer_session_outbox WHERE sequence = ? AND delivered_at IS NULL"""
# Only a pending row: a row discarded while its handler ran stays discarded.
_DELIVERED: Final = """
    UPDATE customer_session_outbox SET delivered_at = ?
    WHERE sequence = ? AND delivered_at IS NULL"""
# Times are ISO text in UTC (written by _now() and the commits), which sorts as the times do.
# Discarded rows have delivered_at too (see _schema.py): they are purged alike. Both
# delete one batch, the oldest rows first (see StoreCore._housekeeping_batch); the
# parameters are PostgreSQL's (who compares the time again on the row it deletes).
_PURGE: Final = """
    DELETE FROM customer_session_outbox WHERE sequence IN (
        SELECT sequence FROM customer_session_outbox
        WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?) AND delivered_at < ?"""
_FORGET: Final = """
    DELETE FROM customer_session_keys WHERE rowid IN (
        SELECT rowid FROM customer_session_keys
        WHERE recorded_at < ? ORDER BY recorded_at LIMIT ?) AND recorded_at < ?"""
# A failure counted and, at max_attempts (NULL: never), the row discarded: one statement.
# SET reads the old values, so attempts + 1 is the count with this failure. No
# RETURNING (SQLite 3.35; RHEL 9 and Debian 11 have 3.34): the status is read after
# it, in its transaction.
_FAILED: Final = """
    UPDATE customer_session_outbox SET attempts = attempts + 1, last_error = :error,
        delivered_at = CASE WHEN attempts + 1 >= :max_attempts THEN :now END,
        discarded_at = CASE WHEN attempts + 1 >= :max_attempts THEN :now END,
        discard_reason = CASE WHEN attempts + 1 >= :max_attempts THEN :error END
    WHERE sequence = :sequence AND delivered_at IS NULL"""
# The compare-and-set of discard(): it wins only while the row is pending. The row is
# read after it, in its transaction (no RETURNING, as for _FAILED).
_DISCARD: Final = """
    UPDATE customer_session_outbox
    SET delivered_at = :now, discarded_at = :now, discard_reason = :reason
    WHERE sequence = :sequence AND delivered_at IS NULL"""
_OUTBOX_ROW: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox WHERE sequence = ?"""  # noqa: S608 - our own names
_OUTBOX_STATUS: Final = """
    SELECT discarded_at IS NOT NULL FROM customer_session_outbox WHERE sequence = ?"""
_DISCARDED: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE discarded_at IS NOT NULL ORDER BY discarded_at, sequence LIMIT ?"""  # noqa: S608 - our own names
# The next page: the rows after the last one read, in the index's order (discard time,
# then sequence). The times compare as stored, ISO text that sorts as the times do.
_DISCARDED_AFTER: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE discarded_at IS NOT NULL AND (discarded_at, sequence) > (?, ?)
    ORDER BY discarded_at, sequence LIMIT ?"""  # noqa: S608 - our own names
_DISCARDED_COUNT: Final = (
    "SELECT count(*) FROM customer_session_outbox WHERE discarded_at IS NOT NULL"
)
# The names of the outbox's rows, each read once: a loose index scan on the effect's
# index (see _schema), one index seek from each name to the next, whatever the rows.
_OUTBOX_EFFECTS: Final = """
    WITH RECURSIVE names (name) AS (
        SELECT (SELECT effect FROM customer_session_outbox ORDER BY effect LIMIT 1)
        UNION ALL
        SELECT (SELECT effect FROM customer_session_outbox WHERE effect > names.name
                ORDER BY effect LIMIT 1)
        FROM names WHERE names.name IS NOT NULL)
    SELECT name FROM names WHERE name IS NOT NULL"""
_MAIN_FILE: Final = "SELECT file FROM pragma_database_list WHERE name = 'main'"
_HAS_SCHEMA: Final = (
    f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({TABLE_LIST})"  # noqa: S608 - the store's own table names
)
_SCHEMA_VERSION: Final = "SELECT version FROM customer_session_schema WHERE id = 1"
_SET_VERSION: Final = """
    INSERT INTO customer_session_schema (id, version) VALUES (1, ?)
    ON CONFLICT (id) DO UPDATE SET version = excluded.version"""

# The delivery turns of each shared-cache in-memory database of the process, by its
# name and VFS (see _shared_memory); weak: an entry lasts while a store object uses it.
_MEMORY_TURNS: weakref.WeakValueDictionary[tuple[bytes, bytes], threading.Lock] = (
    weakref.WeakValueDictionary()
)
_MEMORY_TURNS_LOCK: Final = threading.Lock()
# Two hex digits, the only escape SQLite decodes in a URI (an invalid one stays as it is).
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{2}")
# The parts of a file: URI as SQLite's parser goes through them, and what ends each.
_PATH, _NAME, _VALUE = range(3)
_ENDS: Final = {_PATH: b"?#", _NAME: b"=&#", _VALUE: b"&#"}


class SQLiteStore(BaseStore[_S]):
    """Sessions in an SQLite database: a file in WAL mode, or ``:memory:``.

    The schema is created (or migrated) on first use, unless ``migrate=False``. One
    store object may be
    shared by the threads of a process: each thread gets its own connection to a
    file (``:memory:`` has one connection, used under a lock). Processes open
    their own store on the same file; SQLite serializes their commits, and their
    deliveries take turns on a lock file beside the database (``<file>-deliver``).

    Args:
        path: The database file (a ``file:`` URI is opened as one), or ``":memory:"``
            for a private in-memory one (so are the URIs ``file::memory:`` and
            ``file:...?mode=memory``: the store's threads share one connection). With
            ``cache=shared`` (``file:name?mode=memory&cache=shared``), the store
            objects of the process that open the same name share one in-memory
            database, and their deliveries take turns.
        session_class: The class sessions are loaded into.
        workflow: The workflow whose guards and hooks apply to loaded sessions
            (default: the class's ``default_workflow``).
        retries: How many times :meth:`update` re-runs a change that lost a race.
        synchronous: ``"FULL"`` (default) makes every commit durable across power
            loss (an fsync per commit); ``"NORMAL"`` may lose the last commits on
            power loss, never consistency, and is several times faster.
        timeout: Seconds to wait for another connection's write lock (and, outside
            WAL mode, its readers); a call that waits longer raises
            :class:`~customer_session.StoreTimeout`.
        actor: Who the journal entries of this store object's commits name, unless
            a call gives its own ``actor=`` (default ``None``: nobody); at most 200
            characters, not only whitespace, without control characters.
        migrate: ``True`` (default): the first use creates the schema, or migrates an
            older one. ``False`` (a worker whose database is migrated at deploy
            time): it only checks it, and changes nothing in the file: a missing file
            is not created (a ``file:`` URI that gives its own ``mode`` is opened in
            it), nor is the file put in WAL mode (a store's file is, when the schema
            is created).

    Raises:
        ValidationError: Every bad option, each by name.
        WorkflowError: ``session_class`` or ``workflow`` does not fit.
        StoreError: The database cannot be opened (raised on first use).
        StoreTimeout: (Raised by a call.) Another connection or program held the
            write lock for longer than ``timeout``; nothing was written.
        SchemaNotReady: With ``migrate=False``, the database holds no store (or
            there is no such file), or an older schema (raised on first use).
    """

    dialect: ClassVar[str] = "sqlite"
    _sql: ClassVar[Statements] = Statements(
        mark="?",
        no_limit=-1,
        by_id="integration_id",  # SQLite's BINARY collation: code point order of UTF-8
        has_schema=_HAS_SCHEMA,
        schema_version=_SCHEMA_VERSION,
        set_version=_SET_VERSION,
        fetch=_FETCH,
        exists=_EXISTS,
        counts=_COUNTS,
        has_key=_HAS_KEY,
        key_record=_KEY_RECORD,
        history=_HISTORY,
        pending=_PENDING,
        pending_count=_PENDING_COUNT,
        still_pending=_STILL_PENDING,
        failed=_FAILED,
        discard=_DISCARD,
        outbox_status=_OUTBOX_STATUS,
        discarded=_DISCARDED,
        discarded_after=_DISCARDED_AFTER,
        discarded_count=_DISCARDED_COUNT,
        outbox_effects=_OUTBOX_EFFECTS,
        purge=_PURGE,
        forget=_FORGET,
    )

    @overload
    def __init__(
        self: SQLiteStore[CustomerSession],
        path: str | os.PathLike[str],
        *,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None: ...

    @overload
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        session_class: type[_S],
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None: ...

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        session_class: type[Any] = CustomerSession,
        workflow: Workflow | None = None,
        retries: int = DEFAULT_RETRIES,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        timeout: float = 30.0,
        actor: str | None = None,
        migrate: bool = True,
    ) -> None:
        """Remember where the database is; connections open on first use."""
        problems = []
        given: object = path  # typed, but callers may pass anything
        named = os.fspath(path) if isinstance(given, str | os.PathLike) else None
        # "" would be a private temporary database, gone with the connection; a
        # path-like may give bytes, which no text check below could read.
        if not isinstance(named, str) or not named:
            problems.append(
                Problem("path", f"must be a file path or ':memory:', got {shown(path)}")
            )
        elif (wrong := _path_problem(named)) is not None:
            problems.append(Problem("path", f"{wrong}, got {shown(path)}"))
        if synchronous not in ("FULL", "NORMAL"):  # a tuple: an unhashable value is just wrong
            problems.append(
                Problem("synchronous", f"must be 'FULL' or 'NORMAL', got {shown(synchronous)}")
            )
        if not is_number(timeout) or timeout < 0:
            problems.append(
                Problem("timeout", f"must be a number of seconds >= 0, got {shown(timeout)}")
            )
        super().__init__(
            session_class=session_class,
            workflow=workflow,
            retries=retries,
            actor=actor,
            migrate=migrate,
            problems=problems,
        )
        self._path = os.fspath(path)
        self._memory = _in_memory(self._path)
        self._shared_memory = _shared_memory(self._path) if self._memory else None
        # Held while this store object lives, so every store object on the database
        # finds the same lock.
        self._memory_turns = (
            None if self._shared_memory is None else _memory_turns(self._shared_memory)
        )
        self._synchronous = synchronous
        self._timeout = timeout
        self._local = threading.local()
        # Weak: a thread's connection is dropped, and closes (_Connection.__del__),
        # when the thread ends and its local goes.
        self._opened: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._opened_lock = threading.Lock()
        self._shared: _Connection | None = None
        # One connection for ``:memory:`` (each connection would be its own database).
        self._shared_lock = threading.RLock()
        self._delivering = threading.Lock()
        self._main_file: str | None = None  # the resolved file, once a delivery asked
        self._closed = False

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

    def __repr__(self) -> str:
        """Show the database file."""
        return f"<SQLiteStore {self._path!r}>"

    def close(self) -> None:
        """Close every connection this store opened; the store cannot be used after.

        A statement or write transaction another thread is running on one of them
        is waited for: it finishes (a commit is written whole), and that thread's
        next call finds the store closed. In a process forked from the one that
        opened the store, it closes nothing: the connections are the parent's.
        """
        if self._forked:
            # The connections are the parent's: SQLite forbids touching them here.
            self._closed = True
            return
        with self._opened_lock:
            self._closed = True
            opened = list(self._opened)
            self._opened = weakref.WeakSet()
            self._shared = None
        for connection in opened:
            # Closing a connection while another thread is inside one of its statements
            # crashes the interpreter: wait until it is not in use (see _connection).
            with connection.in_use:
                connection.close()

    # -- connections -------------------------------------------------------------------

    def _open(self) -> _Connection:
        uri = self._path.startswith("file:")
        target = self._path
        # A store that may not change the database does not create a missing file (a
        # mistyped path would leave an empty one behind): it is opened in mode rw.
        existing = None if self._migrates or self._memory else _without_creating(self._path)
        if existing is not None:
            target, uri = existing.target, True
        try:
            connection = sqlite3.connect(
                target,
                factory=_Connection,
                timeout=self._timeout,
                isolation_level=None,  # autocommit: transactions are explicit BEGIN/COMMIT
                check_same_thread=False,  # close() may run in another thread
                uri=uri,
            )
            # WAL mode is kept in the file: set when the store may create its schema,
            # not in another application's database that a reader was pointed at.
            if not self._memory and self._migrates:
                _use_wal(connection, self._timeout)
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            connection.opened = _file_identity(connection)
        # sqlite3 fails to decode a message quoting bytes that are no UTF-8 (vfs=%ff).
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            if existing is not None and not existing.file.exists():
                raise SchemaNotReady(self._path, 0, SCHEMA_VERSION, why="no such file") from exc
            if _busy(exc):  # waited for timeout (see _use_wal): _connection names the session
                raise
            # Path first, unquoted, as the CLI names every file it cannot use.
            why = _unwritable_directory(exc, self._path, switching=self._migrates)
            raise StoreError(
                f"{self._path}: cannot open as an SQLite database"
                + (f" ({exc})" if why is None else f": {why}")
            ) from exc
        with self._opened_lock:
            if self._closed:
                connection.close()
                raise StoreError(f"{shown(self)} is closed")
            self._opened.add(connection)
        return connection

    @contextmanager
    def _connection(self, integration_id: str | None) -> Iterator[sqlite3.Connection]:
        """This thread's connection; SQLite errors become ``StoreError`` naming the session."""
        self._refuse_in_a_fork(integration_id)
        if self._closed:
            raise StoreError(f"{shown(self)} is closed", integration_id)
        try:
            connection: _Connection | None
            if self._memory:
                with self._shared_lock:
                    if self._shared is None:
                        self._shared = self._open()
                    connection = self._shared
            else:
                connection = getattr(self._local, "connection", None)
                if connection is None:
                    connection = self._local.connection = self._open()
            with connection.in_use:
                # Checked again while close() cannot close it: it may have run since.
                if self._closed:
                    raise StoreError(f"{shown(self)} is closed", integration_id)
                if connection.opened is not None and connection.opened != _identity(
                    connection.opened.name
                ):
                    raise self._gone(integration_id)
                yield connection
        except sqlite3.Error as exc:
            if _busy(exc):
                raise self._gave_up(integration_id) from exc
            raise StoreError(
                f"{subject(integration_id)}: SQLite error in {shown(self._path)}: "
                f"{_unwritable_directory(exc, self._path, switching=False) or exc}",
                integration_id,
            ) from exc

    def _gave_up(self, integration_id: str | None) -> StoreTimeout:
        """The error of a call that waited ``timeout`` for another connection's lock (logged)."""
        error = StoreTimeout(
            f"{subject(integration_id)}: gave up waiting for the write lock of the SQLite "
            f"database {shown(self._path)}: another connection or program held it for longer "
            f"than the store's timeout of {self._timeout:g} seconds, so nothing was written; "
            "raise the store's timeout, or find the long writer (in WAL mode, reads go on "
            "while it writes)",
            database=self._path,
            waited_for="the write lock",
            setting="timeout",
            timeout=self._timeout,
            integration_id=integration_id,
        )
        return _log.timed_out(error)

    def _gone(self, integration_id: str | None) -> StoreError:
        """The refusal to use a file that was deleted or replaced since it was opened."""
        return StoreError(
            f"{subject(integration_id)}: the SQLite database {shown(self._path)} was deleted "
            "or replaced since this store object opened it; nothing was read or written (a "
            "change written now would go to the old file, which no other connection sees): "
            "open a new store object on the file",
            integration_id,
        )

    @contextmanager
    def _writing(self, integration_id: str | None) -> Iterator[sqlite3.Connection]:
        """A write transaction, taking the write lock at once (no upgrade deadlocks)."""
        with self._connection(integration_id) as connection:
            try:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
                if connection.in_transaction:
                    # A COMMIT that fails (outside WAL mode it waits for readers, up
                    # to timeout) leaves the transaction open: rolled back below, or
                    # it would hold the write lock and show this thread its change.
                    connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    # -- the steps BaseStore needs -------------------------------------------------------

    def _database_name(self, connection: sqlite3.Connection) -> str:
        del connection  # the path says it
        return self._path

    def _migrating(
        self, connection: sqlite3.Connection, integration_id: str | None
    ) -> AbstractContextManager[sqlite3.Connection]:
        # The write lock, taken at once: a second process waits, then sees the schema.
        del connection  # the same as this thread's, which _writing takes
        return self._writing(integration_id)

    def _moment(self, value: datetime) -> str:
        # Times are stored as ISO text in UTC, which sorts as the times do; a time in
        # another zone (a cursor's) compares as text only once it is in UTC too.
        return value.astimezone(UTC).isoformat()

    def _insert(self, change: Change) -> bool:
        return self._write(change, None)

    def _update(self, change: Change, expected: int) -> bool:
        return self._write(change, expected)

    def _write(self, change: Change, expected: int | None) -> bool:
        integration_id = change.integration_id
        # Every parameter is ready before the write lock is taken, so other writers
        # wait for as short a time as the statements take. All but the commit's time
        # (see below): the rows are lists with a slot for it, filled in place.
        updated = change.updated.isoformat()
        row: tuple[object, ...]
        if expected is None:
            statement, row = _INSERT, (integration_id, change.state, updated, change.document)
            version = 1
        else:
            statement = _UPDATE
            row = (change.state, updated, change.document, integration_id, expected)
            version = expected + 1
        journal: list[object] = [
            integration_id,
            version,
            change.kind.value,
            change.operation,
            change.key,
            change.actor,
            change.records,
            change.changes,
            None,  # recorded_at
        ]
        outbox = change.outbox and [
            [r.key, r.effect, integration_id, version, r.position, r.record, change.document, None]
            for r in change.outbox  # None: created_at
        ]
        with self._writing(integration_id) as connection:
            if connection.execute(statement, row).rowcount != 1:
                connection.execute("ROLLBACK")
                return False
            # Read with the write lock held: a commit that waited for another's is
            # recorded after it, so sequence order is recorded_at order (unless the
            # clock steps back).
            at = journal[-1] = _now()
            connection.execute(_JOURNAL, journal)
            if outbox:
                for r in outbox:
                    r[-1] = at
                connection.executemany(_OUTBOX, outbox)
            if change.key is not None:
                recording = _REVISE_KEY if change.revises else _KEY
                key = (change.key, integration_id, at, None)
                if connection.execute(recording, key).rowcount != 1:
                    # Raised in the transaction: the row change is rolled back with it.
                    raise KeyAlreadyProcessed(change.key, integration_id)
        return True

    def _record_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        with self._connection(integration_id) as connection:
            cursor = connection.execute(_KEY, (key, integration_id, _now(), refusal))
            return cursor.rowcount == 1

    def _revise_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        with self._connection(integration_id) as connection:
            cursor = connection.execute(_REVISE_KEY, (key, integration_id, _now(), refusal))
            return cursor.rowcount == 1

    def _after_every_key(self) -> datetime:
        self._ready(None)
        now = datetime.now(UTC)  # what _now() and the commits record
        with self._connection(None) as connection:
            latest = connection.execute(_LATEST_KEY).fetchone()
        if latest is None:
            return now
        key, recorded_at = latest
        return max(now, self._time_of(recorded_at, key) + _TICK)

    def _time_of(self, value: Any, key: str) -> datetime:
        # Written by _now() or a commit; a damaged column is no time this store wrote.
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            moment = None
        if moment is None or moment.tzinfo is None:
            raise CorruptData(
                f"store: idempotency key {shown(key):.80}: its recorded_at {shown(value):.60} "
                "is no time this store wrote; the row is corrupt"
            )
        return moment

    def _mark_delivered(self, sequence: int) -> bool:
        with self._connection(None) as connection:
            return connection.execute(_DELIVERED, (_now(), sequence)).rowcount == 1

    def _discard_row(self, sequence: int, reason: str) -> tuple[Sequence[Sequence[Any]], object]:
        with self._writing(None) as connection:
            if connection.execute(_DISCARD, self._discard_params(sequence, reason)).rowcount:
                return connection.execute(_OUTBOX_ROW, (sequence,)).fetchall(), None
            return [], connection.execute(_OUTBOX_STATUS, (sequence,)).fetchone()

    def _mark_failed(self, sequence: int, error: str, max_attempts: int | None) -> bool | None:
        with self._writing(None) as connection:
            params = self._failed_params(sequence, error, max_attempts)
            if not connection.execute(_FAILED, params).rowcount:
                return None  # no longer pending
            (discarded,) = connection.execute(_OUTBOX_STATUS, (sequence,)).fetchone()
        return bool(discarded)

    @contextmanager
    def _delivery_lock(self, delivery: Delivery) -> Iterator[None]:
        # The threads of this store object take turns on a thread lock; other store
        # objects and processes on the same file, on a lock file beside it, which
        # the system releases when its holder dies (as PostgreSQL's advisory lock).
        # A shared-cache in-memory database lives in this process only: its store
        # objects take turns on one thread lock of the process.
        del delivery  # nesting is refused by the outbox identity alone
        if self._memory_turns is not None:
            with self._memory_turns:
                yield
            return
        with self._delivering:
            outbox = self._outbox_identity()
            if outbox is self:  # a private database: this store object is its only user
                yield
                return
            with _file_lock(f"{outbox}-deliver"):
                yield

    def _outbox_identity(self) -> object:
        # The database as every store object on it names it: the file as SQLite
        # resolved it (they take the same lock file), or the name of a shared-cache
        # in-memory database. A handler of one may not deliver another.
        if self._memory:
            return self if self._shared_memory is None else self._shared_memory
        if self._main_file is None:
            with self._connection(None) as connection:
                (self._main_file,) = connection.execute(_MAIN_FILE).fetchone()
        return self._main_file


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if need be), waiting for it.

    A ``flock`` lock belongs to the open file, so it also excludes other store
    objects of this process, and it ends when the file is closed or the process
    dies; a forked child does not keep it (see ``_forks``).
    Windows has no ``flock``: there, only this store object's threads are
    serialized (run one deliverer per database).

    Raises:
        StoreError: The lock file cannot be opened or locked.
    """
    if sys.platform == "win32":
        yield
        return
    try:
        # Read-only and created if need be: flock needs no write access, so a lock
        # file another user created (mode 0644 under the usual umask) serves too.
        # Non-blocking: opened read-only, a FIFO would wait for a writer forever
        # (it is refused below); without a controlling-terminal grab for a device.
        # Noted before a fork can copy it (a fork waits for the guard).
        with forks.GUARD:
            descriptor = os.open(
                path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY, 0o666
            )
            forks.hold(descriptor)
    except OSError as exc:
        raise _lock_file_error(path, exc.strerror or str(exc)) from exc
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            # Only a regular file is one lock for every process: flock on a FIFO or a
            # device may fail, or lock something other processes never open.
            raise _lock_file_error(path, "not a regular file")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreError(f"cannot lock the delivery lock file {shown(path)}: {exc}") from exc
        yield
    finally:
        with forks.GUARD:  # no fork copies it between the two
            forks.let_go(descriptor)
            os.close(descriptor)  # and with it the lock


def _uri(path: str) -> tuple[bytes, dict[bytes, bytes]] | None:  # noqa: C901, PLR0912 - SQLite's parser, in its order
    """The decoded path and options of a ``file:`` URI as SQLite reads them; ``None`` if no URI.

    A transcription of SQLite's ``sqlite3ParseUri``, on the bytes SQLite is given
    (``os.fsencode``, as :func:`sqlite3.connect` encodes them): an authority other
    than none or ``localhost`` is refused; ``%HH`` escapes are decoded (not ``+``,
    not an invalid one such as ``%zz``), and ``%00`` drops the rest of its path,
    option name or value; ``#`` ends the URI; an option without a name is ignored,
    and the last value of a repeated option is the one used.

    Raises:
        ValueError: An authority SQLite refuses (saying which).
    """
    if not path.startswith("file:"):
        return None
    uri = os.fsencode(path)
    at = 5
    if uri.startswith(b"//", at):
        at = _until(uri, 7, b"/")
        if uri[7:at] not in {b"", b"localhost"}:
            authority = os.fsdecode(uri[7:at])
            raise ValueError(f"invalid uri authority: {shown(authority)} (only 'localhost')")
    # The parts, as SQLite writes them NUL-separated: the path, then names and values.
    parts: list[bytearray] = [bytearray()]
    part = _PATH
    while at < len(uri) and uri[at] != ord("#"):
        char = uri[at]
        at += 1
        if char == ord("%") and _HEX.fullmatch(uri[at : at + 2]):
            octet = int(uri[at : at + 2], 16)
            at += 2
            if octet:
                parts[-1].append(octet)
            else:  # the rest of this part is dropped, up to what ends it
                at = _until(uri, at, _ENDS[part])
        elif part == _NAME and char in b"&=":
            if not parts[-1]:  # no name: the option is ignored, up to the next '&'
                if char == ord("="):
                    at = _until(uri, at, b"&#")
                    at += uri.startswith(b"&", at)
            elif char == ord("&"):  # a name without a value: the value is empty
                parts += [bytearray(), bytearray()]
            else:
                part = _VALUE
                parts.append(bytearray())
        elif (part, char) in {(_PATH, ord("?")), (_VALUE, ord("&"))}:
            part = _NAME
            parts.append(bytearray())
        else:
            parts[-1].append(char)
    if part == _NAME:  # a last name has an empty value; no name (a last '&') is nothing
        parts.append(bytearray()) if parts[-1] else parts.pop()
    options = {
        bytes(name): bytes(value) for name, value in zip(parts[1::2], parts[2::2], strict=True)
    }
    return bytes(parts[0]), options


class _Existing(NamedTuple):
    """How a store that may not create its file opens it (see :func:`_without_creating`)."""

    target: str
    """The ``file:`` URI to open, in mode ``rw``."""
    file: Path
    """The file it names, whose absence the store reports as "no such file"."""


def _without_creating(path: str) -> _Existing | None:
    """How to open the file ``path`` (a path or ``file:`` URI) without creating it.

    A plain path becomes a URI in mode ``rw``; so does a URI that gives no ``mode``
    (SQLite's default for one is ``rwc``, which creates a missing file): ``mode=rw``
    is added to its options, before any ``#``, which ends the URI. ``None`` for a URI
    that gives its own ``mode``: it is opened as given.
    """
    parsed = _uri(path)
    if parsed is None:
        return _Existing(f"{Path(path).absolute().as_uri()}?mode=rw", Path(path))
    name, options = parsed
    if b"mode" in options:
        return None
    head, end, fragment = path.partition("#")
    target = f"{head}{'&' if '?' in head else '?'}mode=rw{end}{fragment}"
    return _Existing(target, Path(os.fsdecode(name)))


def _until(uri: bytes, at: int, stops: bytes) -> int:
    """The index of the first byte of ``stops`` in ``uri`` from ``at`` (its length if none)."""
    while at < len(uri) and uri[at] not in stops:
        at += 1
    return at


def _path_problem(path: str) -> str | None:
    """What SQLite would refuse in ``path``, or make a private temporary database of."""
    try:
        parsed = _uri(path)
    except ValueError as exc:
        return f"must be a path or file: URI SQLite can open ({exc})"
    if "\0" in path:
        return "must not contain a NUL character"
    if parsed is not None and not parsed[0] and not _in_memory(path):
        # As "": each connection (so each thread) would have a database of its own.
        return "must name a file: a file: URI with an empty path is a temporary database"
    return None


def _unwritable_directory(
    error: sqlite3.Error | UnicodeDecodeError, path: str, *, switching: bool
) -> str | None:
    """Why SQLite refused the database ``path`` when it is for want of its directory.

    ``None`` for any other ``error``. SQLite creates a database's journal files beside
    it, and says only "attempt to write a readonly database" (``SQLITE_READONLY_DIRECTORY``)
    when it may not, of a file that is writable: in WAL mode (a store's file is) no
    read is possible either. ``switching``: the store was putting the file in WAL mode.
    """
    if getattr(error, "sqlite_errorcode", None) != sqlite3.SQLITE_READONLY_DIRECTORY:
        return None
    parsed = _uri(path)
    # Where SQLite puts them: beside the file it opened, symbolic links resolved.
    file = Path(path if parsed is None else os.fsdecode(parsed[0])).resolve()
    if switching or _in_wal_mode(file):
        files = (
            f"-wal and -shm files there ({shown(f'{file.name}-wal')}, {shown(f'{file.name}-shm')})"
        )
        purpose = "to read or write it in WAL mode, as a store's file is"
    else:
        files = f"-journal file there ({shown(f'{file.name}-journal')})"
        purpose = "to write to it outside WAL mode"
    return (
        f"its directory {shown(str(file.parent))} is not writable by this process, and "
        f"SQLite must create the database's {files} {purpose}; make the directory "
        "writable by the process's user, or move the database to a directory it can write"
    )


def _in_wal_mode(file: Path) -> bool:
    """Whether the SQLite database ``file`` is in WAL mode, by its header (``False``: unread)."""
    try:
        with file.open("rb") as reader:
            header = reader.read(20)
    except OSError:
        return False
    # Bytes 18 and 19, the file format's write and read versions: 2 in WAL mode.
    return header[18:20] == b"\x02\x02"


def _lock_file_error(path: str, why: str) -> StoreError:
    """The refusal of ``path`` as the delivery lock file, saying why and what it needs."""
    # Path first, unquoted, as the CLI names every file it cannot use.
    return StoreError(
        f"{path}: cannot open as the delivery lock file ({why}); deliveries of the "
        "database take turns on it, so this process must be able to read it (a regular "
        "file), or to create it in the database's directory (create it once there)"
    )


def _in_memory(path: str) -> bool:
    """Whether ``path`` opens an in-memory database (one per connection, unless shared).

    ``:memory:``, and the URIs whose path is ``:memory:``, whose last ``mode`` is
    ``memory``, or whose VFS is ``memdb``: as SQLite decides, so that a URI SQLite
    opens as a file gets the file's WAL mode and delivery lock, and a database
    that lives in one connection is never opened once per thread.
    """
    if path == ":memory:":
        return True
    parsed = _uri(path)
    if parsed is None:
        return False
    name, options = parsed
    return (
        name == b":memory:" or options.get(b"mode") == b"memory" or options.get(b"vfs") == b"memdb"
    )


def _shared_memory(path: str) -> tuple[bytes, bytes] | None:
    r"""The name and VFS of an in-memory database the process's connections share.

    For an in-memory ``path`` (see :func:`_in_memory`); ``None`` when each
    connection has its own. Every connection of the process that opens an
    in-memory URI with ``cache=shared`` (the last ``cache`` option) and the same
    decoded name and VFS shares one database; so do those that open a name of
    two bytes or more starting with ``/`` or ``\`` on the ``memdb`` VFS. A VFS
    given by name is the default one when it is SQLite's default (see
    :func:`_default_vfs`). The name and VFS are bytes, as SQLite compares them
    (two names that are not UTF-8 differ).
    """
    parsed = _uri(path)
    if parsed is None or not parsed[0]:
        return None  # an empty name is a private database, never shared
    name, options = parsed
    vfs = options.get(b"vfs", b"")
    if vfs and _default_vfs(vfs):
        vfs = b""
    if options.get(b"cache") == b"shared":
        return name, vfs
    memory = name == b":memory:" or options.get(b"mode") == b"memory"
    if vfs == b"memdb" and not memory and len(name) > 1 and name[:1] in {b"/", b"\\"}:
        # memdb shares such a name itself (memdbOpen: longer than one byte and
        # starting with "/" or "\\"; a lone "/" is a database of each connection).
        # Conservative: it is taken for the same database as a shared-cache one of
        # that name on memdb (which it is only when both are opened with cache=shared).
        return name, vfs
    return None


@functools.cache
def _default_vfs(vfs: bytes) -> bool:
    """Whether ``vfs`` names SQLite's default VFS.

    A shared-cache database is one per name and VFS object, and ``vfs=unix`` names
    the one a URI without ``vfs`` uses (on most builds). SQLite is asked: a
    database of its own made on the default VFS is found through ``vfs``, or not.
    """
    probe = f"file:customer-session-vfs-{uuid.uuid4().hex}?mode=memory&cache=shared"
    try:
        with closing(sqlite3.connect(probe, uri=True)) as default:
            default.execute("CREATE TABLE probe (x)")
            named = f"{probe}&vfs={quote(vfs, safe='')}"
            with closing(sqlite3.connect(named, uri=True)) as other:
                return bool(other.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
    except (sqlite3.Error, UnicodeDecodeError):  # a message naming a VFS that is no UTF-8
        return False  # no such VFS: opening the store says so


def _memory_turns(shared: tuple[bytes, bytes]) -> threading.Lock:
    """The lock the store objects on a shared-cache in-memory database take turns on.

    ``shared`` is the database's name and VFS, from :func:`_shared_memory`.
    """
    with _MEMORY_TURNS_LOCK:
        turns = _MEMORY_TURNS.get(shared)
        if turns is None:
            turns = _MEMORY_TURNS[shared] = threading.Lock()
        return turns


def _busy(error: sqlite3.Error | UnicodeDecodeError) -> bool:
    """Whether ``error`` is SQLite's "database is locked": its busy code, extended ones too.

    SQLite returns it once its busy handler has waited the connection's timeout for
    another connection's lock (or at once, for what the handler does not wait for,
    such as the switch to WAL, which ``_use_wal`` retries for the timeout itself).
    """
    code = getattr(error, "sqlite_errorcode", None)  # set only on SQLite's own errors
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode (kept in the file: a no-op once any connection did).

    The switch needs the file to itself, and SQLite reports "database is locked" at
    once, without its busy handler, while another connection is using it (as when
    processes open a new file together). So it is retried for up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return


class _Connection(sqlite3.Connection):
    """A connection that can be referenced weakly (``sqlite3.Connection`` cannot).

    ``in_use`` is held while a thread uses it (see ``SQLiteStore._connection``), so
    that ``close()`` from another thread waits; reentrant, as the store's steps nest.
    ``opened`` is the file it opened (see :func:`_file_identity`). It closes itself
    when it is dropped, in the process that opened it: when its thread ends (the
    store's local lets it go) or with a store that was never closed.
    """

    # The process that opened it; None until __init__ did (a failed open leaves nothing
    # to close).
    _opener: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Open the connection (as ``sqlite3.Connection``)."""
        super().__init__(*args, **kwargs)
        self._opener = os.getpid()
        self.in_use = threading.RLock()
        self.opened: _FileIdentity | None = None

    def __del__(self) -> None:
        """Close the connection (no one else holds it, so nobody is inside a statement)."""
        # Dropping a thread's connection is how the store releases it, not a leak:
        # closing it here keeps Python 3.13+ from warning (ResourceWarning) that it
        # was never closed; sqlite3 closed it silently on dealloc before 3.13.
        # In a forked child it is the parent's, which SQLite forbids touching (as
        # SQLiteStore.close() there leaves it).
        if self._opener == os.getpid():
            self.close()


class _FileIdentity(NamedTuple):
    """A file by its name and the file system's identity of it (device and inode)."""

    name: str
    device: int
    inode: int


def _identity(name: str) -> _FileIdentity | None:
    """The file ``name`` names now; ``None`` when it names none."""
    try:
        found = os.stat(name)  # noqa: PTH116 - checked on every call: no Path built each time
    except OSError:
        return None
    return _FileIdentity(name, found.st_dev, found.st_ino)


def _file_identity(connection: sqlite3.Connection) -> _FileIdentity | None:
    """The database file ``connection`` opened; ``None`` for one in memory.

    SQLite goes on using the file it opened when its name is deleted, or given to
    another file: it would write to a file no other connection sees, which
    vanishes when it closes (a commit reported done, then lost). Comparing this
    with :func:`_identity` of the name before each use finds that out. Read from
    SQLite (``pragma_database_list``), which resolved the path or ``file:`` URI.
    """
    (name,) = connection.execute(_MAIN_FILE).fetchone()
    return _identity(name) if name else None


def _now() -> str:
    return datetime.now(UTC).isoformat()
