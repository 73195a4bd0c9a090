"""The PostgreSQL backend, for many workers: psycopg 3 and a connection pool.

psycopg is imported when a :class:`PostgresStore` is created, never when the
package is imported, so ``customer_session.store`` works without the
``[postgres]`` extra.

Each commit is one statement: a data-modifying ``WITH`` query whose first part is
the compare-and-set ``UPDATE ... WHERE integration_id_digest = sha256($1) AND version = $2`` and
whose other parts insert the journal entry, the outbox rows and the idempotency
key *from the updated row*, so they are written exactly when the update wins.
Run in autocommit mode, the statement is its own transaction: one round trip.
"""

from __future__ import annotations

import functools
import math
import os
import re
import select
import string
import sys
import threading
import weakref
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, TypeVar, cast, overload

from customer_session._cart import is_text
from customer_session._secrets import redacted as _redact
from customer_session._secrets import secret_spans
from customer_session._show import shown
from customer_session.exceptions import (
    KeyAlreadyProcessed,
    Problem,
    StoreError,
    StoreTimeout,
    WorkflowError,
)
from customer_session.model import CustomerSession
from customer_session.store import _forks as forks
from customer_session.store import _log
from customer_session.store._arguments import problems as argument_problems
from customer_session.store._base import DEFAULT_RETRIES, BaseStore, Statements
from customer_session.store._documents import subject
from customer_session.store._outbox import EFFECT_COLUMNS, holders, nested_delivery
from customer_session.store._schema import KEYS_TABLE, TABLE_LIST

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from datetime import datetime

    import psycopg
    from psycopg_pool import ConnectionPool

    from customer_session.hooks import Workflow
    from customer_session.store._changes import Change
    from customer_session.store._outbox import Delivery

_S = TypeVar("_S", bound=CustomerSession)


class _Pin:
    """The connection a running delivery holds the outbox lock on (see ``_delivery_lock``)."""

    __slots__ = ("connection", "running", "store", "thread")

    def __init__(self, store: object, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.store = store
        self.connection = connection
        # A thread started in a copy of the handler's context carries the pin too
        # (copy_context().run, asyncio.to_thread, tracing's context propagation): only
        # the delivering thread may use the connection, and only while its delivery
        # runs. An ident is reused only once its thread ended, after the delivery did.
        self.thread = threading.get_ident()
        self.running = True

    def serves(self, store: object) -> bool:
        """Whether ``store``'s calls made here run on the pinned connection."""
        return self.store is store and self.running and self.thread == threading.get_ident()


# The delivery whose handler this context runs, and its connection (see _delivery_lock).
_PINNED: ContextVar[_Pin | None] = ContextVar("customer_session_pinned", default=None)

INSTALL_HINT: Final = "pip install 'customer-session[postgres]'"


# Rows are found by the SHA-256 of the integration id's or key's UTF-8 bytes, which
# the indexes hold instead of the text (see _schema._POSTGRES_DIGESTS): each statement
# computes it from the value it is given, sha256(convert_to(%s::text, 'UTF8')).
#
# Both statements write the session row in ``moved`` first; the journal entry, the
# outbox rows and the key are selected from ``moved``, so they exist exactly when the
# row was written. Their later parts are shared tails.
_EFFECTS_TAIL: Final = """), journal AS (
    INSERT INTO customer_session_journal
        (integration_id, integration_id_digest, version, kind, operation, event_key, actor,
         records, changes)
    SELECT integration_id, integration_id_digest, version, %(kind)s, %(operation)s, %(key)s,
        %(actor)s, %(records)s, %(changes)s
    FROM moved
), outbox AS (
    INSERT INTO customer_session_outbox
        (idempotency_key, effect, integration_id, version, position, record, document)
    SELECT e.key, e.effect, m.integration_id, m.version, e.position, e.record, %(document)s
    FROM moved AS m,
        unnest(%(e_keys)s::text[], %(e_effects)s::text[], %(e_positions)s::int[],
               %(e_records)s::text[]) WITH ORDINALITY AS e(key, effect, position, record, n)
    ORDER BY e.n
"""
_KEY_TAIL: Final = """), processed AS (
    INSERT INTO customer_session_keys (key, key_digest, integration_id)
    SELECT %(key)s, sha256(convert_to(%(key)s::text, 'UTF8')), integration_id FROM moved
    WHERE %(key)s::text IS NOT NULL
)
SELECT version FROM moved"""
_WRITE_TAIL: Final = _EFFECTS_TAIL + _KEY_TAIL
# A change that takes over its key's refusal (Change.revises): ``processed`` turns a
# refused key into the change's (or records a key not recorded); a key recorded as
# applied is left alone, and ``taken`` then inserts it again, whose unique violation
# fails the whole statement, row change included (reported as KeyAlreadyProcessed).
_REVISING_KEY_TAIL: Final = """), processed AS (
    INSERT INTO customer_session_keys (key, key_digest, integration_id)
    SELECT %(key)s, sha256(convert_to(%(key)s::text, 'UTF8')), integration_id FROM moved
    ON CONFLICT (key_digest) DO UPDATE
    SET integration_id = excluded.integration_id, recorded_at = now(), refusal = NULL
    WHERE customer_session_keys.refusal IS NOT NULL
    RETURNING key
), taken AS (
    INSERT INTO customer_session_keys (key, key_digest, integration_id)
    SELECT %(key)s, sha256(convert_to(%(key)s::text, 'UTF8')), integration_id FROM moved
    WHERE NOT EXISTS (SELECT FROM processed)
)
SELECT version FROM moved"""
_REVISING_TAIL: Final = _EFFECTS_TAIL + _REVISING_KEY_TAIL
_UPDATE_HEAD: Final = """
WITH moved AS (
    UPDATE customer_sessions
    SET state = %(state)s, version = version + 1, updated = %(updated)s, document = %(document)s
    WHERE integration_id_digest = sha256(convert_to(%(id)s::text, 'UTF8'))
        AND version = %(expected)s
    RETURNING integration_id, integration_id_digest, version
"""
_UPDATE: Final = _UPDATE_HEAD + _WRITE_TAIL
_UPDATE_REVISING: Final = _UPDATE_HEAD + _REVISING_TAIL
# The common commit, with neither outbox rows nor a key: fewer parameters to send.
_UPDATE_PLAIN: Final = """
WITH moved AS (
    UPDATE customer_sessions
    SET state = %(state)s, version = version + 1, updated = %(updated)s, document = %(document)s
    WHERE integration_id_digest = sha256(convert_to(%(id)s::text, 'UTF8'))
        AND version = %(expected)s
    RETURNING integration_id, integration_id_digest, version
), journal AS (
    INSERT INTO customer_session_journal
        (integration_id, integration_id_digest, version, kind, operation, actor, records,
         changes)
    SELECT integration_id, integration_id_digest, version, %(kind)s, %(operation)s, %(actor)s,
        %(records)s, %(changes)s
    FROM moved
)
SELECT version FROM moved"""
_INSERT_HEAD: Final = """
WITH moved AS (
    INSERT INTO customer_sessions
        (integration_id, integration_id_digest, state, version, updated, document)
    VALUES (%(id)s, sha256(convert_to(%(id)s::text, 'UTF8')), %(state)s, 1, %(updated)s,
        %(document)s)
    ON CONFLICT (integration_id_digest) DO NOTHING
    RETURNING integration_id, integration_id_digest, version
"""
_INSERT: Final = _INSERT_HEAD + _WRITE_TAIL
_INSERT_REVISING: Final = _INSERT_HEAD + _REVISING_TAIL
# The database's collation may sort text by a language (en_US puts "Order-2" before
# "order-3" and "order-1" before "Order-2" alike): ids() breaks ties by code point,
# as SQLite does, whatever the database's collation.
BY_ID: Final = 'integration_id COLLATE "C"'
_FETCH: Final = """
    SELECT version, state, document FROM customer_sessions
    WHERE integration_id_digest = sha256(convert_to(%s::text, 'UTF8'))"""
_EXISTS: Final = """
    SELECT 1 FROM customer_sessions
    WHERE integration_id_digest = sha256(convert_to(%s::text, 'UTF8'))"""
_COUNTS: Final = "SELECT state, count(*) FROM customer_sessions GROUP BY state ORDER BY state"
_KEY: Final = """
    INSERT INTO customer_session_keys (key, key_digest, integration_id, refusal)
    SELECT key, sha256(convert_to(key, 'UTF8')), integration_id, refusal
    FROM (VALUES (%s::text, %s::text, %s::text)) AS given(key, integration_id, refusal)
    ON CONFLICT (key_digest) DO NOTHING"""
# As SQLite's: a refusal is replaced, a key recorded as applied is not (row count 0).
_REVISE_KEY: Final = """
    INSERT INTO customer_session_keys (key, key_digest, integration_id, refusal)
    SELECT key, sha256(convert_to(key, 'UTF8')), integration_id, refusal
    FROM (VALUES (%s::text, %s::text, %s::text)) AS given(key, integration_id, refusal)
    ON CONFLICT (key_digest) DO UPDATE SET integration_id = excluded.integration_id,
        recorded_at = now(), refusal = excluded.refusal
    WHERE customer_session_keys.refusal IS NOT NULL"""
_HAS_KEY: Final = """
    SELECT 1 FROM customer_session_keys WHERE key_digest = sha256(convert_to(%s::text, 'UTF8'))"""
_KEY_RECORD: Final = """
    SELECT integration_id, refusal, recorded_at FROM customer_session_keys
    WHERE key_digest = sha256(convert_to(%s::text, 'UTF8'))"""
# The clock keys are recorded by (recorded_at's default), or just after the latest key
# when that clock is behind it (see _after_every_key); greatest() skips a NULL max.
_AFTER_EVERY_KEY: Final = """
    SELECT greatest(now(), max(recorded_at) + interval '1 microsecond')
    FROM customer_session_keys"""
_HISTORY: Final = """
    SELECT sequence, integration_id, version, kind, operation, event_key, actor, records,
        changes, recorded_at
    FROM customer_session_journal WHERE integration_id_digest = sha256(convert_to(%s::text, 'UTF8'))
    ORDER BY version"""
# As in SQLite (see there).
_PENDING: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE delivered_at IS NULL AND sequence > %s ORDER BY sequence LIMIT %s"""  # noqa: S608 - our own names
_PENDING_COUNT: Final = "SELECT count(*) FROM customer_session_outbox WHERE delivered_at IS NULL"
_STILL_PENDING: Final = """
    SELECT 1 FROM customer_session_outbox WHERE sequence = %s AND delivered_at IS NULL"""
# As in SQLite (see there); times are the server's, as created_at's.
_DELIVERED: Final = """
    UPDATE customer_session_outbox SET delivered_at = now()
    WHERE sequence = %s AND delivered_at IS NULL"""
# One batch each, the oldest rows first, as SQLite's (see StoreCore._housekeeping_batch).
# "= ANY(ARRAY(...))" finds the batch's rows by the primary key (IN (SELECT ...) may be
# planned as a hash join over the whole table, for every batch). The time is compared
# again on the row deleted: a key revised meanwhile (recorded_at = now()) stays.
_PURGE: Final = """
    DELETE FROM customer_session_outbox WHERE sequence = ANY(ARRAY(
        SELECT sequence FROM customer_session_outbox
        WHERE delivered_at < %s ORDER BY delivered_at LIMIT %s)) AND delivered_at < %s"""
_FORGET: Final = """
    DELETE FROM customer_session_keys WHERE key_digest = ANY(ARRAY(
        SELECT key_digest FROM customer_session_keys
        WHERE recorded_at < %s ORDER BY recorded_at LIMIT %s)) AND recorded_at < %s"""
# The parameter "now" (see StoreCore._failed_params) is SQLite's and goes unused here.
# max_attempts is a bigint: deliver() takes up to 2**63 - 1, and as an integer a
# larger one would fail the statement, so the failure would go uncounted.
_FAILED: Final = """
    UPDATE customer_session_outbox SET attempts = attempts + 1, last_error = %(error)s,
        delivered_at = CASE WHEN attempts + 1 >= %(max_attempts)s::bigint THEN now() END,
        discarded_at = CASE WHEN attempts + 1 >= %(max_attempts)s::bigint THEN now() END,
        discard_reason = CASE WHEN attempts + 1 >= %(max_attempts)s::bigint THEN %(error)s END
    WHERE sequence = %(sequence)s AND delivered_at IS NULL
    RETURNING discarded_at IS NOT NULL"""
_DISCARD: Final = f"""
    UPDATE customer_session_outbox
    SET delivered_at = now(), discarded_at = now(), discard_reason = %(reason)s
    WHERE sequence = %(sequence)s AND delivered_at IS NULL
    RETURNING {EFFECT_COLUMNS}"""  # noqa: S608 - our own names
_OUTBOX_STATUS: Final = """
    SELECT discarded_at IS NOT NULL FROM customer_session_outbox WHERE sequence = %s"""
_DISCARDED: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE discarded_at IS NOT NULL ORDER BY discarded_at, sequence LIMIT %s"""  # noqa: S608 - our own names
# As in SQLite (see there): a row comparison, which the index on (discarded_at, sequence)
# answers from the cursor on.
_DISCARDED_AFTER: Final = f"""
    SELECT {EFFECT_COLUMNS} FROM customer_session_outbox
    WHERE discarded_at IS NOT NULL AND (discarded_at, sequence) > (%s, %s)
    ORDER BY discarded_at, sequence LIMIT %s"""  # noqa: S608 - our own names
_DISCARDED_COUNT: Final = (
    "SELECT count(*) FROM customer_session_outbox WHERE discarded_at IS NOT NULL"
)
# The names of the outbox's rows, each read once: a loose index scan on the index of the
# names (see _schema), one index seek from each name to the next.
_OUTBOX_EFFECTS: Final = """
    WITH RECURSIVE found (name) AS (
        (SELECT effect FROM customer_session_outbox ORDER BY effect LIMIT 1)
        UNION ALL
        SELECT next.name FROM found, LATERAL (
            SELECT effect AS name FROM customer_session_outbox
            WHERE effect > found.name ORDER BY effect LIMIT 1) AS next)
    SELECT name FROM found"""
# Advisory locks are per schema, so stores in different schemas do not wait for each other.
_LOCK_SCHEMA: Final = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.schema'))"
_OUTBOX_KEY: Final = "hashtext(current_schema() || '.outbox')"
# Taking the delivery lock also names its holder: the database session, as the server
# (its start time) and the backend serving the connection. A nested delivery compares
# it with the holder that _OUTBOX_HOLDER finds (see PostgresStore._lock_outbox).
_LOCK_OUTBOX: Final = (
    f"SELECT pg_advisory_lock({_OUTBOX_KEY}), pg_postmaster_start_time(), pg_backend_pid()"
)
_TRY_LOCK_OUTBOX: Final = (
    f"SELECT pg_try_advisory_lock({_OUTBOX_KEY}), pg_postmaster_start_time(), pg_backend_pid()"
)
_UNLOCK_OUTBOX: Final = f"SELECT pg_advisory_unlock({_OUTBOX_KEY})"
# Who holds the delivery lock: pg_locks shows a one-bigint advisory key as its high
# and low 32 bits (classid, objid) with objsubid 1, per database.
_OUTBOX_HOLDER: Final = f"""
    SELECT pg_postmaster_start_time(), held.pid
    FROM pg_catalog.pg_locks AS held, (SELECT {_OUTBOX_KEY}::bigint AS k) AS outbox
    WHERE held.locktype = 'advisory' AND held.granted AND held.objsubid = 1
        AND held.database = (SELECT oid FROM pg_catalog.pg_database
                             WHERE datname = current_database())
        AND held.classid = ((outbox.k >> 32) & 4294967295)::oid
        AND held.objid = (outbox.k & 4294967295)::oid"""  # noqa: S608 - no outside input
# The catalog itself, read under the statement's snapshot: to_regclass() looks in the
# backend's name cache, which may still say "no such table" after the schema lock
# was granted to a process whose creator has committed meanwhile.
_HAS_SCHEMA: Final = f"""
    SELECT tablename FROM pg_catalog.pg_tables
    WHERE schemaname = current_schema() AND tablename IN ({TABLE_LIST})"""  # noqa: S608 - the store's own table names
_SCHEMA_VERSION: Final = "SELECT version FROM customer_session_schema WHERE id = 1"
# Each pooled connection's statements run at read committed, whatever the database's
# default (default_transaction_isolation, set on a role or a database): the
# compare-and-sets are written for it. At repeatable read or serializable, one that
# waited for a rival's commit fails ("could not serialize access") instead of finding
# the row moved on, so update() would not re-run a lost race, a discard racing a
# delivery would fail one of them, and a housekeeping delete would fail on a key revised.
# And they write times in the ISO style, whatever DateStyle the database, the role, the
# connection string or PGDATESTYLE asks for: psycopg reads times in no other style (in
# "SQL, DMY" reading a journal entry raised NotImplementedError). One statement, so
# that a new connection costs one round trip.
SESSION_SETTINGS: Final = (
    "SELECT set_config('default_transaction_isolation', 'read committed', false),"
    " set_config('DateStyle', 'ISO', false)"
)
# What the pool's connections are opened with: autocommit (each statement commits, or
# the store's own transactions), and UTF-8 whatever encoding the connection string,
# PGCLIENTENCODING or the database's default asks for (a parameter of the connection
# overrides them all). The store's text is Unicode, ids, keys and documents in any
# script: under LATIN1 psycopg could not send an id with a snowman (UnicodeEncodeError),
# and under SQL_ASCII it would read every text column back as bytes.
CONNECTION_OPTIONS: Final[dict[str, Any]] = {"autocommit": True, "client_encoding": "UTF8"}
# Where the store's tables are (or would be created): for messages.
CURRENT_SCHEMA: Final = "SELECT current_schema()"
# Whether the search_path names no existing schema, and what it names (see no_schema).
SCHEMA_PLACE: Final = "SELECT current_schema() IS NULL, current_setting('search_path')"
# The role, and the schemas of its search_path (their names, see schema_names) that exist
# but that it may not use: current_schema() skips a schema without USAGE as if it did not
# exist, and the cure then is a GRANT, not a CREATE SCHEMA (see no_schema). In the
# search_path's order, quoted as SQL needs them.
UNUSABLE_SCHEMAS: Final = """
    SELECT quote_ident(current_user), ARRAY(
        SELECT quote_ident(n.nspname)
        FROM unnest(array_replace(%s::text[], '$user', current_user::text))
            WITH ORDINALITY AS named(name, at)
        JOIN pg_catalog.pg_namespace AS n ON n.nspname = named.name
        WHERE NOT has_schema_privilege(n.oid, 'USAGE')
        ORDER BY named.at)"""
_SET_VERSION: Final = """
    INSERT INTO customer_session_schema (id, version) VALUES (1, %s)
    ON CONFLICT (id) DO UPDATE SET version = excluded.version"""


def _import_psycopg() -> tuple[Any, Any]:
    """``psycopg`` and ``psycopg_pool``, or a :class:`StoreError` saying how to get them."""
    try:
        import psycopg  # noqa: PLC0415 - optional dependency, imported on use
        import psycopg_pool  # noqa: PLC0415 - same as above
    except ImportError as exc:
        raise StoreError(
            f"PostgreSQL support needs psycopg 3 and psycopg-pool ({exc.name} is missing): "
            f"{INSTALL_HINT}"
        ) from exc
    return psycopg, psycopg_pool


class PostgresStore(BaseStore[_S]):
    """Sessions in a PostgreSQL database, shared by many worker processes.

    The schema is created (or migrated) on first use, unless ``migrate=False``, in the
    connection's current schema (``current_schema()``): the first schema of its
    ``search_path`` that exists and that the role may use, which may not be the first
    one listed. Connections come from a
    ``psycopg_pool.ConnectionPool`` in autocommit mode, at read committed whatever
    the database's default isolation level; a store object may be shared by
    threads. Needs the ``[postgres]`` extra (``pip install 'customer-session[postgres]'``).

    Args:
        conninfo: A libpq connection string or ``postgresql://`` URL.
        session_class: The class sessions are loaded into.
        workflow: The workflow whose guards and hooks apply to loaded sessions
            (default: the class's ``default_workflow``).
        retries: How many times :meth:`update` re-runs a change that lost a race.
        min_connections: Connections the pool keeps open.
        max_connections: Connections the pool may open.
        timeout: Seconds a call waits for a connection from the pool (all in use,
            or none can be made: the server is down), and opening the store for the
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
        StoreError: psycopg is not installed, or the server cannot be reached.
        StoreTimeout: The server did not answer the first connection in time, or
            the pool did not open ``min_connections`` within ``timeout``. (Raised by
            a call.) It gave up waiting: no pooled connection in time, or a lock or
            statement past the server's ``lock_timeout`` or ``statement_timeout``;
            nothing was written.
        SchemaNotReady: With ``migrate=False``, the database holds no store or an
            older schema (raised on first use).
    """

    dialect: ClassVar[str] = "postgres"
    _sql: ClassVar[Statements] = Statements(
        mark="%s",
        no_limit=None,  # LIMIT NULL
        by_id=BY_ID,
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
        self: PostgresStore[CustomerSession],
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
        """Open the connection pool (psycopg is imported here)."""
        super().__init__(
            session_class=session_class,
            workflow=workflow,
            retries=retries,
            actor=actor,
            migrate=migrate,
            problems=option_problems(conninfo, min_connections, max_connections, timeout),
        )
        pg, pool = _import_psycopg()
        self._errors = pg.errors
        self._psycopg_error: type[Exception] = pg.Error
        self._pool_closed: type[Exception] = pool.PoolClosed
        self._conninfo = conninfo
        self._closed = False
        limit = connect_limit(conninfo, timeout)
        try:
            # One plain connection first: a wrong URL or a server that is down fails
            # now with libpq's reason, instead of after the pool's reconnection attempts.
            pg.connect(conninfo, **limit.options).close()
            check = _IdleCheck()
            self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = pool.ConnectionPool(
                conninfo,
                min_size=min_connections,
                max_size=max_connections,
                kwargs={**CONNECTION_OPTIONS, **limit.options},
                configure=_configure,
                check=check,
                open=True,
                name="customer-session",
                timeout=timeout,
            )
            check.pool = weakref.ref(self._pool)
            self._pool.wait(timeout=timeout)
        except (pg.Error, pool.PoolTimeout) as exc:
            if hasattr(self, "_pool"):
                self._pool.close()
            raise opening_error(exc, conninfo, min_connections, timeout, limit) from exc

    def __repr__(self) -> str:
        """Show the server (without its password or any other secret option)."""
        return f"<PostgresStore {_redact(self._conninfo)}>"

    def close(self) -> None:
        """Close the connection pool; the store cannot be used after.

        In a process forked from the one that opened the store, it closes nothing:
        the connections are the parent's, and closing one would end its server
        session for the parent too.
        """
        self._closed = True  # first: a call made while it closes says so
        if not self._forked:
            self._pool.close()

    @contextmanager
    def _connection(
        self, integration_id: str | None
    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection; database errors become ``StoreError`` naming the session."""
        self._refuse_in_a_fork(integration_id)
        try:
            pinned = _PINNED.get()
            if pinned is not None and pinned.serves(self):
                yield pinned.connection
                return
            if self._closed:  # else psycopg's "the pool is already closed", a database error
                raise StoreError(f"{shown(self)} is closed", integration_id)
            with self._pool.connection() as connection:
                yield connection
        except self._psycopg_error as exc:
            # A connection the server dropped goes back closed, and the pool replaces
            # it; the pool's check (_IdleCheck) finds the idle ones dropped with it.
            raise self._pool_error(exc, integration_id) from exc

    def _pool_error(self, error: Exception, integration_id: str | None) -> StoreError:
        """The library's error for psycopg's ``error`` while getting or using a connection.

        A call that was waiting for a connection when another thread closed the store
        gets psycopg's ``PoolClosed`` ("the pool ... is closed"): that is the store
        being closed, as a call made after ``close()`` is told, not a database error.
        """
        if self._closed and isinstance(error, self._pool_closed):
            return StoreError(f"{shown(self)} is closed", integration_id)
        return store_error(error, self._conninfo, self._pool, integration_id)

    # -- the steps BaseStore needs -------------------------------------------------------

    def _schema_version(
        self, connection: psycopg.Connection[tuple[Any, ...]], integration_id: str | None
    ) -> object:
        found = super()._schema_version(connection, integration_id)
        if found == 0:  # no store's table found: maybe no schema to look in
            ((missing, search_path),) = connection.execute(SCHEMA_PLACE).fetchall()
            if missing:
                listed = (schema_names(search_path),)
                ((role, unusable),) = connection.execute(UNUSABLE_SCHEMAS, listed).fetchall()
                raise no_schema(
                    self._conninfo, search_path, integration_id, role=role, unusable=unusable
                )
        return found

    @staticmethod
    def _failure_reason(error: StoreError) -> str:
        # The server's words in one line, a read-only transaction said so.
        return failure_reason(error.__cause__ or error)

    def _database_name(self, connection: psycopg.Connection[tuple[Any, ...]]) -> str:
        (schema,) = connection.execute(CURRENT_SCHEMA).fetchall()
        return database_name(self._conninfo, schema[0])

    @contextmanager
    def _migrating(
        self, connection: psycopg.Connection[tuple[Any, ...]], integration_id: str | None
    ) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        del integration_id  # errors are named by the connection already taken
        with connection.transaction():
            # Two processes starting together must not both create the tables.
            connection.execute(_LOCK_SCHEMA)
            yield connection

    def _insert(self, change: Change) -> bool:
        return self._write(insert_statement(change), change, None)

    def _update(self, change: Change, expected: int) -> bool:
        return self._write(update_statement(change), change, expected)

    def _write(self, statement: str, change: Change, expected: int | None) -> bool:
        try:
            with self._connection(change.integration_id) as connection:
                row = connection.execute(statement, write_params(statement, change, expected))
                return row.fetchone() is not None
        except StoreError as exc:
            duplicate = duplicate_key(exc, change, self._errors)
            if duplicate is None:
                raise
            raise duplicate from None

    def _record_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        with self._connection(integration_id) as connection:
            return connection.execute(_KEY, (key, integration_id, refusal)).rowcount == 1

    def _revise_key(self, key: str, integration_id: str | None, refusal: str | None) -> bool:
        with self._connection(integration_id) as connection:
            return connection.execute(_REVISE_KEY, (key, integration_id, refusal)).rowcount == 1

    def _after_every_key(self) -> datetime:
        self._ready(None)
        with self._connection(None) as connection:
            (now,) = connection.execute(_AFTER_EVERY_KEY).fetchall()
        return cast("datetime", now[0])

    def _mark_delivered(self, sequence: int) -> bool:
        with self._connection(None) as connection:
            return connection.execute(_DELIVERED, (sequence,)).rowcount == 1

    @contextmanager
    def _delivery_lock(self, delivery: Delivery) -> Iterator[None]:
        # A session-level advisory lock, released when its connection closes, so a
        # deliverer that dies never blocks the others. The connection stays out of
        # the pool while the handler runs, and the handler's own database errors are
        # not reported as the store's. Delivery's own queries (and the handler's
        # calls to this store) run on it too: a pool of one connection still delivers.
        self._refuse_in_a_fork(None)
        if self._closed:
            raise StoreError(f"{shown(self)} is closed")
        try:
            connection = self._pool.getconn()
        except self._psycopg_error as exc:
            raise self._pool_error(exc, None) from exc
        # Whether the connection may hold the lock: a lock or unlock that failed, or
        # was interrupted, may have been done by the server all the same. Closing the
        # connection then releases the lock for sure; back in the pool, it would keep
        # every other deliverer waiting.
        held = True
        socket = None
        try:
            # A child forked while the lock is held must not keep the session alive.
            socket = self._socket(connection)
            forks.hold(socket)
            try:
                delivery.holder = self._lock_outbox(connection)
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
                # An unlock that fails (the server dropped the connection: the error
                # the delivery met already says so) must not replace the delivery's
                # outcome: the connection is closed below, which ends its server
                # session and the lock for sure.
                with suppress(StoreError):
                    self._advisory(connection, _UNLOCK_OUTBOX)
                    held = False
        finally:
            if socket is not None:
                # Before the close, which tells the server to end the session (and a
                # child forked meanwhile keeps a socket the server no longer serves).
                forks.let_go(socket)
            if held:
                connection.close()
            self._pool.putconn(connection)

    def _lock_outbox(self, connection: psycopg.Connection[tuple[Any, ...]]) -> object:
        """Take the delivery lock on ``connection``, waiting for it; return its holder.

        Raises:
            WorkflowError: A delivery whose handler runs this one holds the lock.
        """
        enclosing = holders()
        if enclosing:
            # Called by a handler: the delivery running it may hold the lock, through
            # another store object on this schema, and would wait for this one.
            ((taken, *session),) = self._advisory(connection, _TRY_LOCK_OUTBOX)
            if taken:
                return tuple(session)
            held_by = self._advisory(connection, _OUTBOX_HOLDER)
            # Asked again: an enclosing delivery that has ended meanwhile (this runs in a
            # task or thread a handler started) no longer holds what pg_locks shows,
            # and its pooled connection may hold the lock for another delivery now.
            if any(holder in holders() for holder in held_by):
                raise nested_delivery(self)
        ((_, *session),) = self._advisory(connection, _LOCK_OUTBOX)
        return tuple(session)

    def _advisory(
        self, connection: psycopg.Connection[tuple[Any, ...]], statement: str
    ) -> list[tuple[Any, ...]]:
        try:
            return connection.execute(statement).fetchall()
        except self._psycopg_error as exc:  # the lock's wait may run out (lock_timeout)
            raise store_error(exc, self._conninfo, self._pool, None) from exc

    def _socket(self, connection: psycopg.Connection[tuple[Any, ...]]) -> int:
        """The descriptor of ``connection``'s socket (see ``_forks``)."""
        try:
            return connection.fileno()
        except self._psycopg_error as exc:
            raise store_error(exc, self._conninfo, self._pool, None) from exc


def _configure(connection: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Set up a connection the pool made: read committed, ISO times (see ``SESSION_SETTINGS``)."""
    connection.execute(SESSION_SETTINGS)


# Why the pool's check refused a connection (psycopg_pool logs it, at INFO).
DROPPED: Final = (
    "the server ended this idle connection's session (a restart, a failover, "
    "pg_terminate_backend, idle_session_timeout): discarded, another one is used"
)


def dropped(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server has ended the session of ``connection``, idle in the pool.

    The pool's connections are idle in autocommit and never LISTEN, so the server
    sends them nothing until they send a query; but before it ends a session (a
    shutdown or restart, ``pg_terminate_backend``, ``idle_session_timeout``) it
    sends a FATAL error, then closes the socket. A socket with something to read
    (or hung up) is one of those. One ``poll`` with no wait, no round trip: a
    commit, one statement, would otherwise pay a second round trip for the check.
    A session dropped without a word (a network partition, a host gone) is not
    seen here: the statement meets it, and fails.
    """
    if connection.closed:
        return True
    try:
        socket = connection.pgconn.socket
    except connection.OperationalError:  # libpq has no socket for it any more
        return True
    return _readable(socket)


if sys.platform == "win32":  # no poll(); select() takes any socket there

    def _readable(socket: int) -> bool:
        """Whether ``socket`` has something to read, or an error or hang-up, now."""
        readable, _, failed = select.select([socket], [], [socket], 0)
        return bool(readable or failed)

else:

    def _readable(socket: int) -> bool:
        """Whether ``socket`` has something to read, or an error or hang-up, now."""
        # poll(), not select(): select() refuses a descriptor past FD_SETSIZE (1024).
        poller = select.poll()
        poller.register(socket, select.POLLIN)
        return bool(poller.poll(0))


class _IdleCheck:
    """The pool's ``check``: refuse a connection whose session the server ended.

    The pool closes nothing itself when a check fails (a connection it finds still
    open goes back to it): this closes the connection, so the pool makes another.
    And it has the pool check its other idle connections (likely dropped as well,
    by a restart), once: the pool retries a refused connection at once, but waits
    a second before the next retry, then two, doubling.
    """

    __slots__ = ("pool",)

    def __init__(self) -> None:
        # Weak: the pool holds this check, and a store dropped unclosed drops its pool.
        self.pool: weakref.ref[ConnectionPool[psycopg.Connection[tuple[Any, ...]]]] | None = None

    def __call__(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Return if ``connection`` may be used; else close it and raise.

        Raises:
            psycopg.OperationalError: The server ended the connection's session.
        """
        if not dropped(connection):
            return
        connection.close()
        pool = None if self.pool is None else self.pool()
        if pool is not None:
            pool.check()
        raise connection.OperationalError(DROPPED)


def option_problems(
    conninfo: object, smallest: object, largest: object, timeout: object
) -> list[Problem]:
    """The bad options of a PostgreSQL store, each by name (see ``StoreCore``).

    Args:
        conninfo: The connection string given.
        smallest: The ``min_connections`` given.
        largest: The ``max_connections`` given.
        timeout: The ``timeout`` given.
    """
    problems = []
    # libpq takes UTF-8 without NUL: a lone surrogate or a NUL would fail in its encoder.
    if not isinstance(conninfo, str) or not is_text(conninfo):
        problems.append(
            Problem("conninfo", f"must be a connection string or URL, got {shown(conninfo)}")
        )
    else:
        problems += conninfo_problems(conninfo, "conninfo")
    if not isinstance(smallest, int) or isinstance(smallest, bool) or smallest < 0:
        problems.append(
            Problem("min_connections", f"must be an integer >= 0, got {shown(smallest)}")
        )
        smallest = 0
    if not isinstance(largest, int) or isinstance(largest, bool) or largest < 1:
        problems.append(
            Problem("max_connections", f"must be an integer >= 1, got {shown(largest)}")
        )
    elif largest < smallest:
        problems.append(
            Problem(
                "max_connections",
                f"must be at least min_connections ({shown(smallest)}), got {shown(largest)}",
            )
        )
    return problems + argument_problems(pool_timeout=timeout)


# A port libpq reads (strtol, then a range check): spaces and a sign allowed.
_PORT: Final = re.compile(r"\s*[+-]?[0-9]+\s*")
# libpq's other options it reads as integers (pqParseIntParam: strtol into a C int,
# blanks around it allowed); a value it cannot read fails only when connecting.
# connect_timeout is not here: psycopg, which connects, reads it (as a float).
_INTEGER_OPTIONS: Final = (
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_INTEGER: Final = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*")
_C_INT: Final = range(-(2**31), 2**31)
# The options whose values are checked, and the hosts the ports are counted against.
_CHECKED: Final = ("host", "hostaddr", "port", "connect_timeout", *_INTEGER_OPTIONS)
# What libpq quotes in its reasons.
_QUOTED: Final = re.compile(r'"([^"]*)"')


def conninfo_problems(conninfo: str, argument: str) -> list[Problem]:
    """What libpq refuses in ``conninfo`` without connecting, as problems of ``argument``.

    libpq parses a connection string without connecting (its syntax, the
    parameters it knows), but reads the values of its numeric options (``port``,
    ``connect_timeout``, ``keepalives`` and the like) only when it connects, from
    the string or, for those it leaves out, from their environment variables
    (``PGPORT``, ``PGCONNECT_TIMEOUT``). A store refuses a string it cannot use
    when it is made, instead of failing to connect with it; each problem names
    the option, its value and where it came from. The password, or any other
    secret option (``sslpassword``), is never shown, even where libpq's reason
    quotes it.

    Returns:
        Nothing when libpq takes it (or psycopg, which the store then asks for, is
        missing).
    """
    try:
        import psycopg  # noqa: PLC0415 - optional dependency
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - same as above
    except ImportError:
        return []
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        reason = _without_secrets(str(exc).strip(), conninfo)
        return [Problem(argument, f"is not a valid connection string or URL: {reason}")]
    settings = _settings(parts)
    reasons = [_timeout_problem(settings), _port_problem(settings)]
    reasons += [_integer_problem(settings, keyword) for keyword in _INTEGER_OPTIONS]
    return [Problem(argument, reason) for reason in reasons if reason is not None]


class _Setting:
    """The value libpq uses for an option, and the environment variable it came from."""

    __slots__ = ("value", "variable")

    def __init__(self, value: str, variable: str | None) -> None:
        self.value = value
        self.variable = variable  # None: from the connection string


def _settings(parts: dict[str, Any]) -> dict[str, _Setting]:
    """The checked options' values, each from ``parts`` or else its environment variable.

    As psycopg reads them when it connects (``_conninfo_utils.get_param``): a
    value in the connection string, even empty, wins over the environment.
    """
    found: dict[str, _Setting] = {}
    variables = _environment_variables()
    for keyword in _CHECKED:
        if keyword in parts:
            found[keyword] = _Setting(str(parts[keyword]), None)
        elif (variable := variables.get(keyword)) and variable in os.environ:
            found[keyword] = _Setting(os.environ[variable], variable)
    return found


@functools.cache
def _environment_variables() -> dict[str, str]:
    """Each libpq option's environment variable, as libpq names them (``port``: ``PGPORT``)."""
    from psycopg import pq  # noqa: PLC0415 - optional dependency, there when this is called

    return {
        option.keyword.decode(): option.envvar.decode()
        for option in pq.Conninfo.get_defaults()
        if option.envvar
    }


def _invalid(keyword: str, setting: _Setting, rule: str) -> str:
    """Why ``setting`` of ``keyword`` is refused, saying where it came from."""
    if setting.variable is None:
        given = f"is not a valid connection string or URL: invalid {keyword} {shown(setting.value)}"
        return f"{given}: {rule}"
    return (
        f"the environment variable {setting.variable}={shown(setting.value)}, libpq's "
        f"{keyword} where the connection string gives none, is invalid: {rule}"
    )


def _timeout_problem(settings: dict[str, _Setting]) -> str | None:
    """Why psycopg, which reads ``connect_timeout`` itself, would refuse it when connecting."""
    from psycopg import Error  # noqa: PLC0415 - optional dependency, there when this is called
    from psycopg.conninfo import timeout_from_conninfo  # noqa: PLC0415 - same as above

    setting = settings.get("connect_timeout")
    if setting is None:
        return None
    try:
        timeout_from_conninfo({"connect_timeout": setting.value})
    except Error:
        return _invalid("connect_timeout", setting, "libpq takes a number of seconds")
    return None


def _integer_problem(settings: dict[str, _Setting], keyword: str) -> str | None:
    """Why libpq would refuse the integer option ``keyword`` when it connects."""
    setting = settings.get(keyword)
    if setting is None:
        return None
    value = setting.value
    if _INTEGER.fullmatch(value) and int(value) in _C_INT:
        return None
    rule = f"libpq takes a whole number from {_C_INT.start} to {_C_INT.stop - 1}"
    return _invalid(keyword, setting, rule)


def _port_problem(settings: dict[str, _Setting]) -> str | None:
    """Why libpq would refuse the ports, or psycopg their number, before connecting."""
    port = settings.get("port")
    if port is None:
        return None
    ports = port.value.split(",")
    for item in ports:
        # An empty item is the default port (5432), as an empty port is.
        if item.strip() and not (_PORT.fullmatch(item) and 1 <= int(item) <= 65535):  # noqa: PLR2004 - the TCP port range
            rule = "a port is a number from 1 to 65535"
            if port.variable is not None and len(ports) > 1:  # say which of them
                rule = f"{shown(item)} is not a port: {rule}"
            return _invalid("port", _Setting(item, None) if port.variable is None else port, rule)
    hosts = settings.get("hostaddr") or settings.get("host")
    count = len(hosts.value.split(",")) if hosts and hosts.value else 1
    if len(ports) == 1 or len(ports) == count:
        return None
    counted_ = f"{len(ports)} ports for {count} hosts: give one port, or one per host"
    if port.variable is None and (hosts is None or hosts.variable is None):
        return f"is not a valid connection string or URL: {counted_}"
    given = [f"{s.variable}={shown(s.value)}" for s in (port, hosts) if s and s.variable]
    return f"{counted_} ({' and '.join(given)} from the environment)"


def _without_secrets(reason: str, conninfo: str) -> str:
    """The reason libpq gave for refusing ``conninfo``, the secrets quoted in it hidden."""
    secrets = [conninfo[start:end] for start, end in secret_spans(conninfo)]

    def hide(quoted: re.Match[str]) -> str:
        text = quoted.group(1)
        touches = any(text in secret or secret in text for secret in secrets)
        return '"***"' if touches else quoted.group(0)

    hidden = _QUOTED.sub(hide, reason)
    if any(secret in hidden for secret in secrets):  # unquoted: say less rather than leak
        return "libpq refuses it (its reason is withheld: it shows a secret)"
    return hidden


def update_statement(change: Change) -> str:
    """The compare-and-set statement for ``change`` (the plain one when it can be)."""
    if change.revises:
        return _UPDATE_REVISING
    return _UPDATE if change.outbox or change.key is not None else _UPDATE_PLAIN


def insert_statement(change: Change) -> str:
    """The statement that writes ``change`` as a new row."""
    return _INSERT_REVISING if change.revises else _INSERT


def write_params(statement: str, change: Change, expected: int | None) -> dict[str, Any]:
    """The parameters of ``statement`` (from ``insert_statement`` or ``update_statement``)."""
    params: dict[str, Any] = {
        "id": change.integration_id,
        "state": change.state,
        "updated": change.updated,
        "document": change.document,
        "expected": expected,
        "kind": change.kind.value,
        "operation": change.operation,
        "actor": change.actor,
        "records": change.records,
        "changes": change.changes,
    }
    if statement is not _UPDATE_PLAIN:
        outbox = change.outbox
        params.update(
            key=change.key,
            e_keys=[row.key for row in outbox],
            e_effects=[row.effect for row in outbox],
            e_positions=[row.position for row in outbox],
            e_records=[row.record for row in outbox],
        )
    return params


def duplicate_key(exc: StoreError, change: Change, errors: Any) -> StoreError | None:
    """The "already processed" error when ``exc`` is a write's reused idempotency key.

    ``errors`` is ``psycopg.errors``; ``None`` means ``exc`` is another error.
    """
    cause = exc.__cause__
    if (
        change.key is not None
        and isinstance(cause, errors.UniqueViolation)
        and cause.diag.table_name == KEYS_TABLE
    ):
        return KeyAlreadyProcessed(change.key, change.integration_id)
    return None


# A connection whose transactions may not write (SQLSTATE 25006, read_only_sql_transaction):
# on a hot standby, or with default_transaction_read_only set. PostgreSQL's own words
# name the statement ("cannot execute SELECT in a read-only transaction", of a commit
# that is one WITH ... SELECT), not the connection.
_READ_ONLY_SQLSTATE: Final = "25006"
_READ_ONLY: Final = (
    "accepts no writes on this connection (a read-only transaction: a hot standby, or "
    "default_transaction_read_only set for the role or the database)"
)
# How much of a server error's detail a message quotes: a row that fails a constraint
# is shown whole by the server ("Failing row contains (...)"), its document included.
_DETAIL_LENGTH: Final = 300


def server_reason(error: BaseException) -> str:
    """The one-line text of psycopg's ``error``, for a message: the server's words, or libpq's.

    ``str()`` of a server's error adds lines of its own: the statement's line with a
    caret under the position ("LINE 1: CREATE TABLE ..."), the detail, the hint. Here
    the server's primary message is followed by its detail and hint, in parentheses;
    an error without one (libpq's own, a connection lost) has its lines joined by ``; ``.
    """
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return _joined(str(error), "; ")
    detail = _joined(getattr(diag, "message_detail", None) or "", " ")
    hint = _joined(getattr(diag, "message_hint", None) or "", " ")
    if len(detail) > _DETAIL_LENGTH:
        detail = f"{detail[: _DETAIL_LENGTH - 3]}..."
    more = [detail] if detail else []
    more += [f"hint: {hint}"] if hint else []
    said = _joined(primary, " ")
    return f"{said} ({'; '.join(more)})" if more else said


def _joined(text: str, separator: str) -> str:
    """The non-blank lines of ``text``, stripped, joined by ``separator``."""
    return separator.join(line.strip() for line in text.splitlines() if line.strip())


def failure_reason(error: BaseException) -> str:
    """Why a statement failed, for a message that names the database before it.

    A read-only transaction is said as the database's (see :func:`store_error`), then
    the server's words; any other error is :func:`server_reason`.
    """
    if getattr(error, "sqlstate", None) == _READ_ONLY_SQLSTATE:
        return f"it {_READ_ONLY} ({server_reason(error)})"
    return server_reason(error)


# What PostgreSQL says when statement_timeout cancels a statement: the same SQLSTATE
# (57014, query_canceled) as a cancel request (pg_cancel_backend) has, which is no
# timeout. A server whose lc_messages is another language says it in that language:
# the error then stays a plain StoreError with the server's words.
_STATEMENT_TIMEOUT: Final = "canceling statement due to statement timeout"


def store_error(
    error: Exception, conninfo: str, pool: Any, integration_id: str | None
) -> StoreError:
    """The store error of ``error``, a psycopg error met using ``pool``, for ``integration_id``.

    A wait that ran out (see :class:`StoreTimeout`) is said as one: the pool's timeout,
    whose own words ("couldn't get a connection after 30.00 sec") name neither the
    database nor why no connection came, and the server's ``lock_timeout`` and
    ``statement_timeout``. A read-only transaction is said as the database's. Any
    other error is a ``StoreError`` quoting the server in one line (see
    :func:`server_reason`).
    """
    from psycopg import errors  # noqa: PLC0415 - optional dependency, there when used
    from psycopg_pool import PoolTimeout  # noqa: PLC0415 - same as above

    where = subject(integration_id)
    database = _redact(conninfo)
    if isinstance(error, PoolTimeout):
        return _log.timed_out(
            StoreTimeout(
                f"{where}: no connection to PostgreSQL database {database} within "
                f"{pool.timeout:g} seconds (the store's timeout): all max_connections="
                f"{pool.max_size} of them were in use, or no new one could be made (is the "
                "server up and reachable?)",
                database=database,
                waited_for="a connection",
                setting="timeout",
                timeout=pool.timeout,
                integration_id=integration_id,
            )
        )
    if isinstance(error, errors.LockNotAvailable):
        setting, waited_for, what = "lock_timeout", "a lock", "held a lock it needed"
    elif (
        isinstance(error, errors.QueryCanceled) and error.diag.message_primary == _STATEMENT_TIMEOUT
    ):
        setting, waited_for = "statement_timeout", "its statement"
        what = "made its statement wait (for a lock, or on a busy server)"
    elif getattr(error, "sqlstate", None) == _READ_ONLY_SQLSTATE:
        return StoreError(
            f"{where}: PostgreSQL database {database} {_READ_ONLY}, so nothing was written "
            f"({server_reason(error)})",
            integration_id,
        )
    else:
        # Named where SQLite's errors name their file ("SQLite error in 'x.db'").
        return StoreError(
            f"{where}: PostgreSQL error in {shown(database)}: {server_reason(error)}",
            integration_id,
        )
    return _log.timed_out(
        StoreTimeout(
            f"{where}: gave up waiting in PostgreSQL database {database}: another connection "
            f"{what} for longer than the server's {setting}, so nothing was written; raise "
            f"{setting} (set on the role or the database), or find the long transaction "
            "(pg_stat_activity, pg_locks)",
            database=database,
            waited_for=waited_for,
            setting=setting,
            timeout=None,
            integration_id=integration_id,
        )
    )


class ConnectLimit(NamedTuple):
    """What bounds each attempt to connect to the server (see :func:`connect_limit`)."""

    options: dict[str, int]
    """The connection options to add: a ``connect_timeout``, or none (one is given)."""
    seconds: int | None
    """How long an attempt waits, as libpq reads it (``None``: no limit asked)."""
    setting: str
    """``StoreTimeout.setting`` when it runs out: ``"timeout"`` or ``"connect_timeout"``."""
    named: str
    """The limit as messages name it (``connect_timeout=5``)."""


# libpq waits at least 2 seconds for a server (a smaller connect_timeout is taken as
# 2), in whole seconds; psycopg, which connects, reads it in the same way.
_SHORTEST_CONNECT: Final = 2


def connect_limit(conninfo: str, timeout: float) -> ConnectLimit:
    """What bounds each attempt of a store to connect: its ``timeout``, unless one is given.

    Without a limit, an attempt on a server that never answers (a host that drops
    packets, a process that accepts and hangs) waits as long as psycopg's default
    (130 seconds per address) or the kernel lets it. A ``connect_timeout`` in
    ``conninfo`` or ``PGCONNECT_TIMEOUT`` (psycopg reads both) is kept as given.

    Args:
        conninfo: The connection string (a valid one: the store checked it).
        timeout: The store's ``timeout`` (a valid one).
    """
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - optional dependency

    given = conninfo_to_dict(conninfo).get("connect_timeout")
    where = "connect_timeout"
    if given is None:
        given, where = os.environ.get("PGCONNECT_TIMEOUT"), "PGCONNECT_TIMEOUT"
    if given is None:
        seconds = max(_SHORTEST_CONNECT, math.ceil(timeout))
        return ConnectLimit(
            {"connect_timeout": seconds},
            seconds,
            "timeout",
            f"the store's timeout={timeout:g}, as libpq's connect_timeout: whole seconds, "
            f"at least {_SHORTEST_CONNECT}",
        )
    try:
        asked: int | None = int(float(given))
    except (ValueError, OverflowError):  # refused by the store's check of conninfo first
        asked = None
    if asked is not None:
        asked = None if asked <= 0 else max(_SHORTEST_CONNECT, asked)
    named = f"{where}={given}" if asked else f"{where}={given}, which asks for no limit"
    return ConnectLimit({}, asked, "connect_timeout", named)


def opening_error(
    error: Exception, conninfo: str, smallest: int, timeout: float, limit: ConnectLimit
) -> StoreError:
    """The error of a store whose pool did not open: ``error``, psycopg's, said for its database.

    The pool's own words for a wait that ran out ("pool initialization incomplete
    after 30.0 sec") say neither how many connections it waited for nor which limit;
    psycopg's for a connection attempt that ran out of time ("connection timeout
    expired") say neither how long it waited nor which setting made it wait so long.
    """
    from psycopg import errors  # noqa: PLC0415 - optional dependency, there when used
    from psycopg_pool import PoolTimeout  # noqa: PLC0415 - same as above

    database = _redact(conninfo)
    # psycopg's error for a connect_timeout that ran out (an OperationalError).
    if isinstance(error, getattr(errors, "ConnectionTimeout", ())):
        within = "in time" if limit.seconds is None else f"within {limit.seconds} seconds"
        return _log.timed_out(
            StoreTimeout(
                f"cannot connect to PostgreSQL ({database}): no answer from the server "
                f"{within} ({limit.named}): is the server up, and reachable at that "
                "host and port?",
                database=database,
                waited_for="a connection",
                setting=limit.setting,
                timeout=timeout if limit.setting == "timeout" else limit.seconds,
            )
        )
    if isinstance(error, PoolTimeout):
        return _log.timed_out(
            StoreTimeout(
                f"cannot connect to PostgreSQL ({database}): the pool did not open its "
                f"min_connections={smallest} connections within {timeout:g} seconds (the "
                "store's timeout): is the server slow, or at its max_connections?",
                database=database,
                waited_for="a connection",
                setting="timeout",
                timeout=timeout,
            )
        )
    return StoreError(f"cannot connect to PostgreSQL ({database}): {server_reason(error)}")


def database_name(conninfo: str, schema: object) -> str:
    """A PostgreSQL database as messages name it: the server and database, and the schema.

    Args:
        conninfo: The connection string (shown without its password).
        schema: The connection's ``current_schema()`` (``None``: no schema of its
            ``search_path`` exists).
    """
    where = (
        "no schema: none of the search_path exists" if schema is None else f"schema {shown(schema)}"
    )
    return f"PostgreSQL database {_redact(conninfo)} ({where})"


# An entry of a search_path: a quoted identifier (its quotes doubled inside) or a name.
_SEARCH_PATH_ENTRY: Final = re.compile(r'"(?:[^"]|"")*"|[^,\s]+')


def schema_names(search_path: str) -> list[str]:
    """The schema names a ``search_path`` setting lists, as PostgreSQL reads them.

    A quoted entry is its text (its doubled quotes single); an unquoted one is folded
    to lower case (ASCII letters only, as PostgreSQL folds identifiers in UTF-8);
    ``$user`` stays as it is (it stands for the role's own schema).
    """
    names = []
    for entry in _SEARCH_PATH_ENTRY.findall(search_path):
        if entry.startswith('"'):
            names.append(entry[1:-1].replace('""', '"'))
        else:
            names.append(entry.translate(_ASCII_LOWER))
    return names


_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def no_schema(
    conninfo: str,
    search_path: str,
    integration_id: str | None,
    *,
    role: str | None = None,
    unusable: Sequence[str] = (),
) -> StoreError:
    """The error of a connection whose ``search_path`` names no schema it may use.

    PostgreSQL then has nowhere to look for the store's tables nor to create them
    (its own words: "no schema has been selected to create in"); with
    ``migrate=False`` too, opening it with ``migrate=True`` would not help. Either
    no schema of the ``search_path`` exists, or those that do are not the role's
    to use (no ``USAGE`` privilege), which the message tells apart: the cure of
    one is ``CREATE SCHEMA``, of the other a ``GRANT``.

    Args:
        conninfo: The connection string (shown without its password).
        search_path: The connection's ``search_path`` setting, as the server has it.
        integration_id: The session the caller was about to use, for the message.
        role: The connection's role, quoted as SQL needs it (see ``UNUSABLE_SCHEMAS``).
        unusable: The schemas of the ``search_path`` that exist but that ``role``
            may not use, quoted as SQL needs them.
    """
    entries = _SEARCH_PATH_ENTRY.findall(search_path)
    listed = ", ".join(entries) or "empty"
    database = f"{subject(integration_id)}: PostgreSQL database {_redact(conninfo)}"
    if unusable:
        return StoreError(
            f"{database} has no schema to hold the store: its role {role} may use no schema "
            f"of its search_path ({listed}): it has no USAGE privilege on "
            f"{', '.join(unusable)}; grant it (GRANT USAGE ON SCHEMA {unusable[0]} TO "
            f"{role}), or name a schema the role may use in the connection string "
            "(options=-csearch_path=<schema>)",
            integration_id,
        )
    # "$user" stands for a schema named as the user, when there is one.
    named = [entry for entry in entries if entry.strip('"') != "$user"]
    create = f"CREATE SCHEMA {named[0]}" if named else "CREATE SCHEMA <name>"
    return StoreError(
        f"{database} has no schema "
        f"to hold the store: no schema of its search_path ({listed}) "
        f"exists; create one ({create}), or name an existing schema in the connection "
        "string (options=-csearch_path=<schema>)",
        integration_id,
    )
