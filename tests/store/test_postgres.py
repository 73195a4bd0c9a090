"""PostgreSQL specifics of the sync and async stores: the connection pool, the delivery lock."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pytest

from customer_session import (
    CartItem,
    ConcurrentUpdate,
    CustomerSession,
    KeyAlreadyProcessed,
    StoreError,
    StoreTimeout,
    ValidationError,
    WorkflowError,
)
from customer_session._secrets import redacted
from customer_session.store import (
    AsyncPostgresStore,
    PostgresStore,
    ProcessedKey,
    _postgres,
    open_store,
)
from customer_session.store import _forks as forks
from customer_session.store._outbox import idempotency_key
from customer_session.store._postgres import database_name

from .conftest import (
    DEFAULT_TIMEOUT,
    SyncOverAsync,
    blocks_another,
    deliveries_take_turns,
    nested_delivery_refusal,
    run_sql,
    wait_until,
    waiting_for_an_advisory_lock,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from customer_session.store import Effect
    from pgserver import TemporaryPostgres

pytestmark = pytest.mark.postgres
MOMENT = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
# Takes the delivery lock of the connection's schema, if it is free.
TRY_LOCK = "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.outbox'))"


@pytest.fixture(params=["postgres", "postgres-async"])
def backend(request: pytest.FixtureRequest) -> str:
    """``PostgresStore``, and ``AsyncPostgresStore`` behind ``SyncOverAsync``."""
    return str(request.param)


@pytest.fixture
def open_pool(backend: str, database: str) -> Iterator[Callable[..., Any]]:
    """Open stores with pool options on a fresh schema; all are closed at the end."""
    opened: list[Any] = []

    def open_(**options: Any) -> Any:
        store_class = PostgresStore if backend == "postgres" else SyncOverAsync
        store = store_class(database, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_ids_ties_are_ordered_by_code_point_whatever_the_collation(backend, collated_schemas):
    """ids() orders sessions updated together by id in code point order, as SQLite does.

    The database sorts text by a language (en-US), which would put "Order-2"
    between "order-1" and "order-3".
    """
    store_class = PostgresStore if backend == "postgres" else SyncOverAsync
    store = store_class(collated_schemas())
    try:
        for integration_id in ("order-3", "Order-2", "order-1"):
            store.create(CustomerSession(integration_id=integration_id, created=MOMENT))
        assert store.ids() == ("Order-2", "order-1", "order-3")
    finally:
        store.close()


def test_outbox_effects_are_in_code_point_order_whatever_the_collation(backend, collated_schemas):
    """outbox_effects() sorts names by code point, as SQLite does, in a database that does not.

    The database sorts text by a language (en-US), which puts "alpha" before "Zeta".
    """
    store_class = PostgresStore if backend == "postgres" else SyncOverAsync
    store = store_class(collated_schemas())
    try:
        for name in ("zeta", "Zeta", "alpha"):
            store.on_commit(name)
        store.create(CustomerSession(integration_id="order-1"))
        store.update("order-1", lambda s: s.close())
        assert store.outbox_effects() == ("Zeta", "alpha", "zeta")
    finally:
        store.close()


def closed_session(store: Any, integration_id: str) -> None:
    item = CartItem(sku="A", quantity=1)
    store.create(CustomerSession(integration_id=integration_id, cart_items=(item,)))
    store.update(integration_id, lambda s: s.close())


def test_a_pool_of_one_connection_delivers(open_pool):
    """deliver() runs its queries on the connection holding its lock, so one is enough."""
    store = open_pool(min_connections=1, max_connections=1)
    store.on_commit("notify", trigger="close")
    for integration_id in ("a", "b"):
        closed_session(store, integration_id)
    delivered: list[str] = []
    assert store.deliver(lambda effect: delivered.append(effect.integration_id)) == 2
    assert delivered == ["a", "b"]
    assert store.pending() == ()


def test_a_handler_may_use_the_store_it_is_called_by(pg_server):
    """With a pool of one connection, a handler's own store calls do not wait for a second.

    (The sync store only: a sync handler cannot wait for the async store calling it.)
    """
    with PostgresStore(pg_server.fresh_schema(), min_connections=1, max_connections=1) as store:
        store.on_commit("notify", trigger="close")
        closed_session(store, "a")
        states: list[str] = []
        assert store.deliver(lambda e: states.append(store.get(e.integration_id).state)) == 1
        assert states == ["closed"]


def test_another_unique_violation_of_a_keyed_commit_is_no_reused_key(open_pool, sql):
    """A keyed commit refused by another unique constraint is a StoreError, not the key's reuse.

    Here the outbox row the commit writes exists already (only damage can do that):
    the key was never used, and the error says what the database refused.
    """
    store = open_pool()
    store.on_commit("notify", trigger="close")
    store.create(CustomerSession(integration_id="a", cart_items=(CartItem(sku="A", quantity=1),)))
    sql(
        "INSERT INTO customer_session_outbox (idempotency_key, effect, integration_id, version,"
        " position, record, document) VALUES (?, 'notify', 'a', 9, 0, '{}', '{}')",
        idempotency_key("a", 0, "notify"),
    )
    with pytest.raises(StoreError, match="customer_session_outbox") as caught:
        store.update("a", lambda s: s.close(), key="event-1")
    assert not isinstance(caught.value, KeyAlreadyProcessed)
    assert not store.processed("event-1")
    assert store.get("a").state == "open"


@pytest.mark.parametrize("isolation", ["serializable", "repeatable read"])
def test_a_lost_race_is_retried_whatever_isolation_the_database_defaults_to(
    backend, database, isolation
):
    """update() re-runs a change that lost a race on a database defaulting to a stricter level.

    There the compare-and-set that waited for a rival's commit would fail ("could
    not serialize access"), where read committed, which the store's statements
    are written for, finds the row moved on.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    escaped = isolation.replace(" ", "%5C%20")  # libpq's options: a backslash keeps the space
    strict = f"{database}%20-cdefault_transaction_isolation%3D{escaped}"
    store = (PostgresStore if backend == "postgres" else SyncOverAsync)(strict)
    try:
        store.create(CustomerSession(integration_id="order-1"))
        with psycopg.connect(strict) as rival:  # a transaction, held open
            rival.execute(
                "UPDATE customer_sessions SET version = version + 1"
                " WHERE integration_id = 'order-1'"
            )
            raised: list[StoreError] = []

            def close() -> None:
                try:
                    store.update("order-1", lambda s: s.close())
                except StoreError as exc:
                    raised.append(exc)

            closing = threading.Thread(target=close)
            closing.start()
            wait_until_blocked_by(rival, strict)
            rival.commit()
            closing.join(timeout=60)
        assert raised == []
        assert store.get("order-1").state == "closed"
    finally:
        store.close()


@pytest.mark.parametrize(
    "given", ["client_encoding=LATIN1", "options=-cclient_encoding%3DSQL_ASCII"]
)
def test_any_text_is_stored_whatever_client_encoding_the_connection_string_asks_for(
    backend, database, given
):
    """Ids and values in any script round-trip on a connection string asking for another encoding.

    The store's text is Unicode: a connection encoding that cannot spell it (LATIN1
    has no snowman) would make psycopg fail to send the id, with a
    UnicodeEncodeError from outside the library's error tree.
    """
    if given.startswith("options="):  # one options parameter: the search_path's
        asked = f"{database}%20{given.removeprefix('options=')}"
    else:
        asked = f"{database}&{given}"
    integration_id = "order-\u202e\u2603"
    store = (PostgresStore if backend == "postgres" else SyncOverAsync)(asked)
    try:
        store.create(
            CustomerSession(
                integration_id=integration_id, cart_items=[CartItem(sku="\u96ea", quantity=1)]
            )
        )
        assert store.get(integration_id).cart_items[0].sku == "\u96ea"
        assert store.exists(f"{integration_id}-\u2604") is False
        assert store.ids() == (integration_id,)
    finally:
        store.close()


@pytest.mark.parametrize("date_style", ["SQL,DMY", "German", "Postgres,MDY"])
def test_times_are_read_whatever_date_style_the_connection_string_asks_for(
    backend, database, date_style
):
    """The journal's and the outbox's times read back on a connection asking for a DateStyle.

    psycopg reads times only in the ISO style; in another one (a European
    database's ``SQL, DMY``) it raised NotImplementedError, outside the library's
    error tree.
    """
    asked = f"{database}%20-cDateStyle%3D{date_style}"
    store = (PostgresStore if backend == "postgres" else SyncOverAsync)(asked)
    try:
        store.on_commit("notify")
        store.create(CustomerSession(integration_id="order-1"))
        store.update("order-1", lambda session: session.close())
        entries = store.history("order-1")
        assert [entry.version for entry in entries] == [1, 2]
        assert entries[0].recorded_at.tzinfo is not None
        assert [row.created_at.tzinfo is not None for row in store.pending()] == [True]
    finally:
        store.close()


def test_deliver_on_a_closed_store_is_a_store_error(database, backend):
    """deliver() after close() raises StoreError, as every other method does."""
    if backend == "postgres":
        store = PostgresStore(database)
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.deliver(lambda effect: None)
        return

    async def deliver_after_close() -> None:
        store = await AsyncPostgresStore.open(database)
        await store.close()
        await store.deliver(lambda effect: None)

    with pytest.raises(StoreError, match="closed"):
        asyncio.run(deliver_after_close())


def test_a_store_closed_as_a_delivery_begins_says_it_is_closed(pg_server, monkeypatch):
    """A store closed (by another thread) just before deliver() takes its lock says it is closed.

    Not psycopg's "the pool is already closed", said as a PostgreSQL error.
    """
    store = PostgresStore(pg_server.fresh_schema())
    store.on_commit("notify", trigger="close")
    closed_session(store, "order-1")
    found = store._pending_rows

    def then_closed(limit: int) -> Any:
        rows = found(limit)
        store.close()  # after the check for pending rows, before the lock
        return rows

    monkeypatch.setattr(store, "_pending_rows", then_closed)
    with pytest.raises(StoreError, match=r"^<PostgresStore .*> is closed$") as caught:
        store.deliver(lambda effect: None)
    assert "error" not in str(caught.value)


def test_a_call_waiting_for_a_connection_when_the_store_closes_says_so(
    pg_server: TemporaryPostgres,
) -> None:
    """A call waiting for a pooled connection, on a store closed by another thread, says so.

    Not psycopg's "the pool ... is closed" (its PoolClosed) as a PostgreSQL error.
    """
    store = PostgresStore(pg_server.fresh_schema(), max_connections=1)
    store.on_commit("notify", trigger="close")
    closed_session(store, "order-1")
    inside, gate = threading.Event(), threading.Event()

    def held(effect: Effect) -> None:
        del effect
        inside.set()
        gate.wait(60)

    delivering = threading.Thread(target=store.deliver, args=(held,))  # holds the connection
    delivering.start()
    assert inside.wait(60)
    caught: list[BaseException] = []

    def read() -> None:
        try:
            store.get("order-1")
        except BaseException as exc:  # checked below, in the test's thread
            caught.append(exc)

    reading = threading.Thread(target=read)
    reading.start()
    wait_until(
        lambda: store._pool.get_stats().get("requests_waiting") == 1,
        "waited for the pool's connection",
    )
    store.close()
    reading.join(60)
    gate.set()
    delivering.join(60)
    (error,) = caught
    assert type(error) is StoreError
    assert "is closed" in str(error)
    assert "pool" not in str(error)
    assert error.integration_id == "order-1"


def _named(database: str) -> tuple[str, str]:
    """``database`` with an application name of its own, and that name (to find its sessions)."""
    name = f"cs-{uuid.uuid4().hex[:12]}"
    return f"{database}&application_name={name}", name


def _backends(admin: Any, name: str) -> list[int]:
    """The pids of the server sessions of the connections named ``name``."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid", (name,)
    ).fetchall()
    return [pid for (pid,) in rows]


def _end_the_sessions_of(url: str, name: str, count: int) -> list[int]:
    """Once ``count`` connections named ``name`` are open, have the server end them all.

    Returns their pids, once the server has ended them: each connection has been
    sent its FATAL message and closed.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(url, autocommit=True) as admin:
        wait_until(lambda: len(_backends(admin, name)) >= count, f"opened {count} connections")
        ended = _backends(admin, name)
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))
        wait_until(lambda: not set(ended) & set(_backends(admin, name)), "ended them")
    return ended


@contextmanager
def _named_store(backend: str, database: str, *, connections: int) -> Iterator[tuple[Any, str]]:
    """A store of ``backend`` with a pool of ``connections`` named apart, and their name."""
    url, name = _named(database)
    store_class = PostgresStore if backend == "postgres" else SyncOverAsync
    store = store_class(url, min_connections=connections, max_connections=connections)
    try:
        yield store, name
    finally:
        store.close()


class TestConnectionsTheServerEnded:
    """The pool's check refuses an idle connection whose session the server ended."""

    def test_the_next_call_gets_a_working_connection_at_once(self, backend, database):
        """After the server ended every idle connection of the pool, the next call works, at once.

        Not after the pool's wait between retries of refused connections (a second,
        then two, doubling): the first one refused has the pool check the others.
        """
        with _named_store(backend, database, connections=4) as (store, name):
            store.create(CustomerSession(integration_id="order-1"))
            _end_the_sessions_of(database, name, 4)
            start = time.monotonic()
            assert store.get("order-1").integration_id == "order-1"
            # Less than psycopg_pool's first wait between retries: 1 s, less its 10% jitter.
            assert time.monotonic() - start < 0.9
            for _ in range(4):
                assert store.get("order-1").integration_id == "order-1"

    def test_a_commit_after_gets_a_working_connection(self, backend, database):
        """A commit whose pooled connection the server ended is written on another one."""
        with _named_store(backend, database, connections=1) as (store, name):
            store.create(CustomerSession(integration_id="order-1"))
            _end_the_sessions_of(database, name, 1)
            store.update("order-1", lambda session: session.close())
            assert store.get("order-1").state == "closed"

    def test_a_delivery_after_gets_a_working_connection(self, backend, database):
        """deliver(), which takes a connection out of the pool for its lock, gets a working one."""
        with _named_store(backend, database, connections=1) as (store, name):
            store.on_commit("notify", trigger="close")
            closed_session(store, "order-1")
            _end_the_sessions_of(database, name, 1)
            handed: list[str] = []
            assert store.deliver(lambda effect: handed.append(effect.integration_id)) == 1
            assert handed == ["order-1"]

    def test_a_healthy_idle_connection_is_reused(self, backend, database):
        """The check keeps a connection the server still serves: no call replaces it."""
        import psycopg  # noqa: PLC0415 - optional dependency

        with _named_store(backend, database, connections=1) as (store, name):
            store.create(CustomerSession(integration_id="order-1"))
            with psycopg.connect(database, autocommit=True) as admin:
                before = _backends(admin, name)
                for _ in range(5):
                    store.get("order-1")
                    store.update("order-1", lambda session: session.set_coupon("SPRING"))
                assert _backends(admin, name) == before
            assert len(before) == 1

    def test_after_a_restart_the_next_call_works(self):
        """After the server restarted (ending every session), either store's next call works."""
        from pgserver import TemporaryPostgres  # noqa: PLC0415 - the tests' own launcher

        with TemporaryPostgres() as server:
            stores: list[Any] = [
                PostgresStore(server.url, min_connections=2),
                SyncOverAsync(server.url, min_connections=2),
            ]
            try:
                stores[0].create(CustomerSession(integration_id="order-1"))
                assert stores[1].exists("order-1")
                server.restart()
                for store in stores:
                    assert store.get("order-1").integration_id == "order-1"
            finally:
                for store in stores:
                    store.close()


class TestDropped:
    """_postgres.dropped, the pool's check: one poll of the connection's socket."""

    def test_a_healthy_idle_connection_is_not_dropped(self, pg_server):
        """A connection idle after its last statement has nothing to read: it is kept."""
        import psycopg  # noqa: PLC0415 - optional dependency

        with psycopg.connect(pg_server.url, autocommit=True) as connection:
            connection.execute("SELECT 1")
            assert not _postgres.dropped(connection)

    def test_a_connection_whose_session_the_server_ended_is_dropped(self, pg_server):
        """The server's FATAL message and the end of the socket are seen without a statement."""
        import psycopg  # noqa: PLC0415 - optional dependency

        url, name = _named(pg_server.fresh_schema())
        with psycopg.connect(url, autocommit=True) as connection:
            _end_the_sessions_of(pg_server.url, name, 1)
            assert _postgres.dropped(connection)
            assert not connection.closed  # psycopg does not know yet

    def test_a_closed_connection_is_dropped(self, pg_server):
        """A connection closed on this side (it has no socket any more) is dropped."""
        import psycopg  # noqa: PLC0415 - optional dependency

        connection = psycopg.connect(pg_server.url, autocommit=True)
        connection.close()
        assert _postgres.dropped(connection)


def drop_the_connections_of(database: str) -> None:
    """Have the server end every other client session on ``database`` (an administrator's kill)."""
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )


def _no_connection_in_time(backend: str, database: str) -> StoreTimeout:
    """The error of a get() that waits 0.2 s for the pool's one connection, which is taken.

    The store's URL carries the password ``s3cret``, which nothing may show.
    """
    conninfo = database.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    if backend == "postgres":
        store: Any = PostgresStore(conninfo, min_connections=1, max_connections=1)
        pool, run = store._pool, lambda result: result
    else:
        store = SyncOverAsync(conninfo, min_connections=1, max_connections=1)
        pool, run = store.store._pool, store._run
    try:
        store.create(CustomerSession(integration_id="order-1"))
        pool.timeout = 0.2
        taken = run(pool.getconn())
        try:
            with pytest.raises(StoreTimeout) as caught:
                store.get("order-1")
        finally:
            run(pool.putconn(taken))
    finally:
        store.close()
    return caught.value


def test_no_connection_in_time_names_the_database_and_the_likely_causes(backend, database):
    """A call that gets no pooled connection in time says from which database, and why.

    psycopg's own words ("couldn't get a connection after 30.00 sec") name neither.
    Here the pool's one connection is taken; a server that is down or unreachable
    ends the same way.
    """
    timeout = _no_connection_in_time(backend, database)
    assert (timeout.waited_for, timeout.setting) == ("a connection", "timeout")
    assert timeout.timeout == 0.2
    message = str(timeout)
    assert message.startswith("session 'order-1': no connection to PostgreSQL database ")
    assert "within 0.2 seconds (the store's timeout)" in message
    assert "all max_connections=1 of them were in use" in message
    assert "is the server up and reachable" in message
    assert "s3cret" not in message


def test_no_connection_in_time_is_one_warning_without_the_password(backend, database, caplog):
    """A pool that gives no connection in time is logged once, naming the database, no secret."""
    caplog.set_level(logging.WARNING, logger="customer_session")
    timeout = _no_connection_in_time(backend, database)
    (record,) = caplog.records
    assert (record.name, record.levelno, record.exc_info) == (
        "customer_session.store",
        logging.WARNING,
        None,
    )
    assert record.getMessage() == (
        f"session 'order-1': gave up waiting for a connection in {timeout.database} "
        "(the store's timeout of 0.2 seconds ran out); nothing was written (StoreTimeout)"
    )
    assert (record.event, record.database, record.setting, record.timeout) == (
        "store_timeout",
        timeout.database,
        "timeout",
        0.2,
    )
    assert "s3cret" not in f"{record.getMessage()} {vars(record)}"


def test_no_record_shows_the_password(backend, database, caplog):
    """Every event a store logs names its database without the password of the URL."""
    caplog.set_level(logging.DEBUG, logger="customer_session")
    conninfo = database.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    store_class = PostgresStore if backend == "postgres" else SyncOverAsync
    store, other = store_class(conninfo), store_class(conninfo)
    try:
        store.on_commit("erp", trigger="close")
        store.create(CustomerSession(integration_id="order-1"))
        other.update("order-1", lambda s: s.set_coupon("THEIRS"))  # store's copy is stale

        def change(session: Any) -> None:
            other.update("order-1", lambda s: s.set_referral(uuid.uuid4().hex[:8]))
            session.set_coupon("MINE")

        with pytest.raises(ConcurrentUpdate):
            store.update("order-1", change, retries=1)
        store.update("order-1", lambda s: s.close())

        def down(effect: Any) -> None:
            raise ConnectionError("ERP unreachable")

        with pytest.raises(ConnectionError):
            store.deliver(down, max_attempts=1)
        store.purge_delivered(before=datetime.now(UTC))
        store.forget_keys(before=datetime.now(UTC))
    finally:
        store.close()
        other.close()
    events = {record.event for record in caplog.records if record.name.startswith("customer_")}
    assert events == {
        "schema_created",
        "cache_stale",
        "commit_retried",
        "commit_gave_up",
        "effect_discarded",
        "outbox_purged",
        "keys_forgotten",
    }
    for record in caplog.records:
        assert "s3cret" not in f"{record.getMessage()} {vars(record)}"


@pytest.mark.parametrize("opener", ["PostgresStore", "AsyncPostgresStore", "open_store"])
def test_a_stopped_server_fails_a_call_within_the_stores_timeout(opener):
    """With the server stopped, a call waits the store's timeout for a connection, then says so."""
    from pgserver import TemporaryPostgres  # noqa: PLC0415 - the tests' own launcher

    server = TemporaryPostgres().start()
    try:
        options: dict[str, Any] = {"timeout": 1.0}
        if opener == "AsyncPostgresStore":
            store: Any = SyncOverAsync(server.url, **options)
        else:
            store = (PostgresStore if opener == "PostgresStore" else open_store)(
                server.url, **options
            )
        try:
            store.create(CustomerSession(integration_id="order-1"))
            server.stop()
            # The pool's check refuses its connection, which the server ended as it
            # stopped; then the call waits for a new one.
            start = time.monotonic()
            with pytest.raises(StoreTimeout) as caught:
                store.get("order-1")
            waited = time.monotonic() - start
        finally:
            store.close()
    finally:
        server.stop()
    error = caught.value
    assert 1.0 <= waited < DEFAULT_TIMEOUT
    assert error.timeout == 1.0
    assert "within 1 seconds (the store's timeout)" in str(error)


def test_a_pool_that_cannot_open_in_time_fails_opening_within_the_timeout(backend, pg_server):
    """Opening waits the store's timeout for min_connections, then says what it waited for."""
    import psycopg  # noqa: PLC0415 - optional dependency

    role = f"limited_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        url = pg_server.url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        store_class = PostgresStore if backend == "postgres" else SyncOverAsync
        start = time.monotonic()
        with pytest.raises(StoreTimeout) as caught:
            store_class(url, min_connections=2, max_connections=2, timeout=0.5)
        waited = time.monotonic() - start
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
    assert 0.5 <= waited < DEFAULT_TIMEOUT
    assert str(caught.value).startswith("cannot connect to PostgreSQL (")
    assert "min_connections=2 connections within 0.5 seconds (the store's timeout)" in str(
        caught.value
    )
    assert (caught.value.setting, caught.value.timeout) == ("timeout", 0.5)


class TestAServerThatNeverAnswers:
    """Opening a store on a server that never answers gives up in time, with a StoreTimeout."""

    @pytest.mark.parametrize("opener", ["PostgresStore", "AsyncPostgresStore", "open_store"])
    def test_the_first_connection_is_bounded_by_the_stores_timeout(self, opener, silent_server):
        """Without connect_timeout, the store's timeout (whole seconds, at least 2) bounds it."""
        url = f"postgresql://postgres:s3cret@127.0.0.1:{silent_server}/store"
        open_it = {
            "PostgresStore": PostgresStore,
            "AsyncPostgresStore": SyncOverAsync,
            "open_store": open_store,
        }[opener]
        start = time.monotonic()
        with pytest.raises(StoreTimeout) as caught:
            open_it(url, timeout=1.0)
        waited = time.monotonic() - start
        error = caught.value
        assert 1.0 <= waited < DEFAULT_TIMEOUT
        assert (error.waited_for, error.setting, error.timeout) == ("a connection", "timeout", 1.0)
        assert "host=127.0.0.1" in error.database
        assert f"port={silent_server}" in error.database
        message = str(error)
        assert message.startswith(f"cannot connect to PostgreSQL ({error.database}): ")
        assert "no answer from the server within 2 seconds" in message
        assert "the store's timeout=1" in message
        assert "s3cret" not in message

    def test_it_is_logged_without_the_password(self, silent_server, caplog):
        """Giving up opening is one warning naming the server and the limit, not the password."""
        caplog.set_level(logging.WARNING, logger="customer_session")
        url = f"postgresql://postgres:s3cret@127.0.0.1:{silent_server}/store"
        with pytest.raises(StoreTimeout) as caught:
            PostgresStore(url, timeout=1.0)
        (record,) = caplog.records
        assert (record.levelno, record.event, record.database) == (
            logging.WARNING,
            "store_timeout",
            caught.value.database,
        )
        assert record.getMessage() == (
            f"store: gave up waiting for a connection in {caught.value.database} (the store's "
            "timeout of 1 second ran out); nothing was written (StoreTimeout)"
        )
        assert "s3cret" not in f"{record.getMessage()} {vars(record)}"

    @pytest.mark.parametrize("backend", ["postgres", "postgres-async"])
    @pytest.mark.parametrize("where", ["conninfo", "environment"])
    def test_a_connect_timeout_given_is_kept(self, backend, where, silent_server, monkeypatch):
        """A connect_timeout in the URL or PGCONNECT_TIMEOUT bounds it instead, and is named."""
        url = f"postgresql://postgres@127.0.0.1:{silent_server}/store"
        if where == "conninfo":
            url += "?connect_timeout=2"
        else:
            monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
        start = time.monotonic()
        with pytest.raises(StoreTimeout) as caught:
            (PostgresStore if backend == "postgres" else SyncOverAsync)(url, timeout=60)
        waited = time.monotonic() - start
        assert 2 <= waited < 60  # the store's timeout, which it did not wait for
        error = caught.value
        assert (error.setting, error.timeout) == ("connect_timeout", 2)
        named = "connect_timeout=2" if where == "conninfo" else "PGCONNECT_TIMEOUT=2"
        assert f"no answer from the server within 2 seconds ({named})" in str(error)


class TestConnectLimit:
    """What bounds each attempt of a store to connect, from its options (no server needed)."""

    @pytest.fixture(autouse=True)
    def _no_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)

    @pytest.mark.parametrize(("timeout", "seconds"), [(0.5, 2), (2.0, 2), (2.5, 3), (30.0, 30)])
    def test_the_stores_timeout_is_whole_seconds_rounded_up_at_least_2(self, timeout, seconds):
        """Without a connect_timeout given, libpq's is the store's, rounded up, at least 2."""
        limit = _postgres.connect_limit("host=db.example", timeout)
        assert (limit.options, limit.seconds) == ({"connect_timeout": seconds}, seconds)

    @pytest.mark.parametrize("given", ["0", "-1"])
    def test_a_connect_timeout_of_zero_or_less_asks_for_no_limit(self, given):
        """A connect_timeout of 0 or less is kept as given and said as libpq takes it: no limit."""
        limit = _postgres.connect_limit(f"host=db.example connect_timeout={given}", 30.0)
        assert (limit.options, limit.seconds) == ({}, None)
        assert limit.named == f"connect_timeout={given}, which asks for no limit"


class TestGivingUpWaitingOnTheServer:
    """The server's lock_timeout or statement_timeout ends a wait for another connection's lock."""

    @staticmethod
    def with_setting(database: str, setting: str) -> str:
        """``database``'s URL with a server setting for its sessions (as one set on the role)."""
        return f"{database}%20-c{setting}%3D200"

    @staticmethod
    def locking_the_row(database: str) -> Any:
        """A connection whose open transaction holds the lock of session order-1's row."""
        import psycopg  # noqa: PLC0415 - optional dependency

        holder = psycopg.connect(database)
        holder.execute("SELECT 1 FROM customer_sessions FOR UPDATE").fetchall()
        return holder

    @pytest.mark.parametrize(
        ("setting", "waited_for"),
        [("lock_timeout", "a lock"), ("statement_timeout", "its statement")],
    )
    def test_a_commit_is_a_store_timeout_naming_the_setting(
        self, backend, database, setting, waited_for
    ):
        """A commit that waited for a row lock longer than the server allows gives up clearly."""
        store_class = PostgresStore if backend == "postgres" else SyncOverAsync
        store = store_class(self.with_setting(database, setting))
        try:
            store.create(CustomerSession(integration_id="order-1"))
            with self.locking_the_row(database), pytest.raises(StoreTimeout) as caught:
                store.update("order-1", lambda s: s.close())
            assert store.get("order-1").state == "open"
        finally:
            store.close()
        error = caught.value
        assert (error.setting, error.waited_for, error.timeout) == (setting, waited_for, None)
        assert error.integration_id == "order-1"
        message = str(error)
        assert message.startswith("session 'order-1': ")
        assert f"longer than the server's {setting}" in message
        assert "nothing was written" in message
        assert error.database in message

    def test_a_delivery_waiting_for_the_outbox_lock_is_a_store_timeout(self, backend, database):
        """deliver() that waits for another deliverer's lock past lock_timeout gives up clearly."""
        import psycopg  # noqa: PLC0415 - optional dependency

        store_class = PostgresStore if backend == "postgres" else SyncOverAsync
        store = store_class(self.with_setting(database, "lock_timeout"))
        try:
            store.on_commit("notify")
            closed_session(store, "order-1")
            with psycopg.connect(database, autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox'))")
                with pytest.raises(StoreTimeout, match="lock_timeout") as caught:
                    store.deliver(lambda effect: None)
            assert caught.value.setting == "lock_timeout"
            assert store.deliver(lambda effect: None) == 1
        finally:
            store.close()

    def test_a_cancelled_statement_is_no_timeout(self, backend, database):
        """A statement an administrator cancels (pg_cancel_backend) stays a plain StoreError."""
        import psycopg  # noqa: PLC0415 - optional dependency

        store_class = PostgresStore if backend == "postgres" else SyncOverAsync
        store = store_class(database, max_connections=1)
        try:
            store.create(CustomerSession(integration_id="order-1"))
            with self.locking_the_row(database) as holder:

                def cancel() -> None:
                    with psycopg.connect(database, autocommit=True) as admin:
                        wait_until_blocked_by(holder, database)
                        admin.execute(
                            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                            "WHERE %s = ANY(pg_blocking_pids(pid))",
                            (holder.info.backend_pid,),
                        )

                canceller = threading.Thread(target=cancel)
                canceller.start()
                with pytest.raises(StoreError) as caught:
                    store.update("order-1", lambda s: s.close())
                canceller.join(timeout=60)
        finally:
            store.close()
        assert not isinstance(caught.value, StoreTimeout)


def test_a_delivery_gives_its_connection_back_to_the_pool_open(open_pool):
    """A delivery's connection, its lock released, serves the next calls: none is made anew."""
    store = open_pool(min_connections=1, max_connections=1)
    store.on_commit("notify", trigger="close")
    for integration_id in ("a", "b"):
        closed_session(store, integration_id)
        assert store.deliver(lambda effect: None) == 1
    assert store._pool.get_stats()["connections_num"] == 1


def test_a_delivery_interrupted_as_it_gets_the_lock_leaves_it_free(pg_server, monkeypatch):
    """A delivery interrupted (Ctrl-C) as the server grants it the outbox lock does not keep it.

    Its pooled connection would otherwise hold the lock, and every other
    deliverer would wait for it forever.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    conninfo = pg_server.fresh_schema()
    with PostgresStore(conninfo) as store:
        store.on_commit("notify", trigger="close")
        closed_session(store, "order-1")
        take = store._lock_outbox

        def interrupted(connection: Any) -> object:
            take(connection)  # granted; then the interrupt arrives
            raise KeyboardInterrupt

        monkeypatch.setattr(store, "_lock_outbox", interrupted)
        with pytest.raises(KeyboardInterrupt):
            store.deliver(lambda effect: None)
        # The store closed the connection that holds the lock; its server process
        # ends, and the lock with it, a moment later (not within the close call).
        deadline = time.monotonic() + 60
        with psycopg.connect(conninfo, autocommit=True) as watcher:
            while watcher.execute(TRY_LOCK).fetchone() != (True,):
                assert time.monotonic() < deadline, "the interrupted delivery kept the lock"
                time.sleep(0.01)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_by_a_handler_lets_go_of_the_lock_connection(pg_server):
    """In a child forked while a delivery runs, the lock connection's socket is no socket.

    A child keeping it (alive after a kill of the deliverer) would keep the server's
    session, and the advisory lock, until it exits.
    """
    held: list[int] = []
    reported: list[bytes] = []

    def handler(effect: Any) -> None:
        held.extend(forks._HELD)
        readable, writable = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: say whether each is still a socket, touching nothing else
            modes = [os.fstat(descriptor).st_mode for descriptor in held]
            os.write(writable, bytes(int(stat.S_ISSOCK(mode)) for mode in modes))
            os._exit(0)
        os.close(writable)
        reported.append(os.read(readable, 64))
        os.close(readable)
        os.waitpid(pid, 0)

    with PostgresStore(pg_server.fresh_schema()) as store:
        store.on_commit("notify", trigger="close")
        closed_session(store, "order-1")
        assert store.deliver(handler) == 1
        assert len(held) == 1
        assert reported == [b"\x00"]  # the child's copy points elsewhere
        assert stat.S_ISSOCK(os.fstat(held[0]).st_mode)  # and the pool's connection still works
        assert store.pending() == ()


class TestLosingTheDeliveryConnection:
    """The server drops the connection a delivery holds its lock on, while a handler runs."""

    def test_the_error_is_the_statement_that_met_the_loss_not_the_unlock(self, open_pool, database):
        """deliver() raises the failure of marking the row, not the failed unlock after it.

        The lock ended with the server session; the connection is closed, and the
        row, handed over but not marked delivered, is handed over again next time.
        """
        store = open_pool(min_connections=1, max_connections=2)
        store.on_commit("notify", trigger="close")
        closed_session(store, "order-1")
        with pytest.raises(StoreError, match="terminating connection") as caught:
            store.deliver(lambda effect: drop_the_connections_of(database))
        assert "the connection is closed" not in str(caught.value)
        (note,) = caught.value.__notes__
        assert "outbox row 1 ('notify' for session 'order-1'" in note
        assert "it stays pending" in note
        handed: list[str] = []
        assert store.deliver(lambda effect: handed.append(effect.integration_id)) == 1
        assert handed == ["order-1"]

    def test_a_handler_that_raises_is_not_hidden_by_the_unlock(self, open_pool, database):
        """When the handler failed too, the error raised is not the unlock's, and names it.

        Counting the failure met the lost connection: the row stays pending, its
        failure not counted, as the note on the error says.
        """
        store = open_pool(min_connections=1, max_connections=2)
        store.on_commit("notify", trigger="close")
        closed_session(store, "order-1")

        def handler(effect: Any) -> None:
            drop_the_connections_of(database)
            raise ConnectionError("warehouse unreachable")

        with pytest.raises(StoreError, match="terminating connection") as caught:
            store.deliver(handler)
        (note,) = caught.value.__notes__
        assert "ConnectionError: warehouse unreachable" in note
        assert "not counted; it stays pending" in note
        assert [(e.integration_id, e.attempts) for e in store.pending()] == [("order-1", 0)]


# Every statement that finds rows by an integration id or a key, by name in _postgres.
LOOKUPS = (
    "_FETCH",
    "_EXISTS",
    "_HISTORY",
    "_HAS_KEY",
    "_KEY_RECORD",
    "_KEY",
    "_REVISE_KEY",
    "_INSERT",
    "_INSERT_REVISING",
    "_UPDATE_PLAIN",
    "_UPDATE",
    "_UPDATE_REVISING",
)


def scans(plan: Any) -> Iterator[tuple[str, str]]:
    """Each node of an ``EXPLAIN (FORMAT JSON)`` plan that reads a table: its type and table."""
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", ()):
        yield from scans(child)


@pytest.mark.parametrize("name", LOOKUPS)
def test_a_lookup_by_id_or_key_reads_an_index(pg_server, name):
    """Each statement that finds rows by an integration id or a key reads them by an index.

    Sequential scans are disabled, which the planner still chooses when no index
    serves the statement (as it may for a table this small).
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    conninfo = pg_server.fresh_schema()
    with PostgresStore(conninfo) as store:
        store.exists("order-1")  # creates the schema
    statement: str = getattr(_postgres, name)
    named = statement.count("%(") > 0
    params: Any = (
        defaultdict(lambda: None, id="order-1", key="event-1", expected=1)
        if named
        else ("event-1",) * statement.count("%s")
    )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        ((plan,),) = connection.execute(f"EXPLAIN (FORMAT JSON) {statement}", params).fetchall()
    read = list(scans(plan[0]["Plan"]))
    assert read
    assert [node for node in read if node[0] == "Seq Scan"] == []


def test_a_query_written_by_hand_finds_a_session_by_its_id_through_an_index(pg_server):
    """WHERE integration_id = ... reads an index, for any id length (the key is a digest)."""
    import psycopg  # noqa: PLC0415 - optional dependency

    conninfo = pg_server.fresh_schema()
    long_id = "订单" * 500  # 1,000 characters, 3,000 bytes: past a btree entry's limit
    with PostgresStore(conninfo) as store:
        store.create(CustomerSession(integration_id=long_id))
    query = "SELECT state FROM customer_sessions WHERE integration_id = %s"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        assert connection.execute(query, (long_id,)).fetchall() == [("open",)]
        connection.execute("SET enable_seqscan = off")
        ((plan,),) = connection.execute(f"EXPLAIN (FORMAT JSON) {query}", (long_id,)).fetchall()
    assert [node for node in scans(plan[0]["Plan"]) if node[0] == "Seq Scan"] == []
    assert '"Index Name": "customer_sessions_integration_id"' in json.dumps(plan)


# The housekeeping deletes, and how to fill their table with old rows (many more than
# a batch holds, most of them past the time: the planner then knows the table is large).
HOUSEKEEPING = {
    "_PURGE": """
        INSERT INTO customer_session_outbox (idempotency_key, effect, integration_id,
            version, position, record, document, delivered_at)
        SELECT 'row-' || i, 'erp', 'order-1', 1, 0, '{}', '{}',
            timestamptz '2026-01-01' + i * interval '1 second'
        FROM generate_series(1, 20000) AS i""",
    "_FORGET": """
        INSERT INTO customer_session_keys (key, key_digest, integration_id, recorded_at)
        SELECT 'key-' || i, sha256(convert_to('key-' || i, 'UTF8')), 'order-1',
            timestamptz '2026-01-01' + i * interval '1 second'
        FROM generate_series(1, 20000) AS i""",
}


@pytest.mark.parametrize("name", HOUSEKEEPING)
def test_each_housekeeping_batch_reads_only_its_rows(pg_server, name):
    """A batch of purge_delivered()/forget_keys() reads its rows by index, not the table.

    A purge deletes a large backlog batch by batch: a batch that read the whole
    table would make the purge quadratic in it.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    conninfo = pg_server.fresh_schema()
    with PostgresStore(conninfo) as store:
        store.exists("order-1")  # creates the schema
    statement: str = getattr(_postgres, name)
    moment = datetime(2027, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(HOUSEKEEPING[name])
        connection.execute("ANALYZE")
        ((plan,),) = connection.execute(
            f"EXPLAIN (FORMAT JSON) {statement}", (moment, 1000, moment)
        ).fetchall()
    read = list(scans(plan[0]["Plan"]))
    assert read
    assert [node for node in read if node[0] == "Seq Scan"] == []


def test_a_key_revised_while_a_forget_waits_for_it_is_kept(open_pool, database):
    """forget_keys() spares a key that is recorded anew while its delete waits for the row.

    The forget found the key recorded before its time; another connection (a replay
    taking over the key's refusal) records it again, after that time, and commits
    while the forget's delete waits for that row's lock.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    store = open_pool()
    store.mark_processed("event-1", integration_id="order-1", refusal="unknown session")
    ((before,),) = run_sql(database, "SELECT clock_timestamp()")
    with psycopg.connect(database) as reviser:  # a transaction, held open
        revised = reviser.execute(_postgres._REVISE_KEY, ("event-1", "order-2", None))
        assert revised.rowcount == 1
        forgotten: list[int] = []
        forget = threading.Thread(target=lambda: forgotten.append(store.forget_keys(before=before)))
        forget.start()
        wait_until_blocked_by(reviser, database)
        reviser.commit()
        forget.join(timeout=60)
    assert forgotten == [0]
    assert store.processed_key("event-1") == ProcessedKey("event-1", "order-2", None)


# -- the delivery lock, across store objects --------------------------------------------


def schema_whose_key_is(server: TemporaryPostgres, *, negative: bool) -> str:
    """A URL of a new schema whose delivery lock key (a 32-bit hash) has the sign asked.

    ``pg_locks`` shows a key as two unsigned halves: both signs must be found there.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(server.url, autocommit=True) as connection:
        while True:
            name = f"s_{uuid.uuid4().hex[:12]}"
            row = connection.execute("SELECT hashtext(%s || '.outbox') < 0", (name,)).fetchone()
            if row is not None and row[0] is negative:
                connection.execute(f"CREATE SCHEMA {name}")
                return f"{server.url}?options=-csearch_path%3D{name}"


def wait_until_blocked_by(holder: Any, conninfo: str) -> None:
    """Wait until a statement of another connection waits for ``holder``'s locks."""
    import psycopg  # noqa: PLC0415 - optional dependency

    deadline = time.monotonic() + 60
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            if blocks_another(watcher, holder):
                return
            time.sleep(0.01)
    raise AssertionError("no statement waited for the lock")


class TestDeliveryAcrossStoreObjects:
    @pytest.mark.parametrize("negative", [False, True], ids=["key>0", "key<0"])
    def test_deliver_from_a_handler_through_another_store_object_is_refused(
        self, pg_server, negative
    ):
        """A handler delivering the same schema through another store object raises, no hang.

        The other store would wait for the advisory lock the running delivery holds.
        """
        conninfo = schema_whose_key_is(pg_server, negative=negative)
        with PostgresStore(conninfo) as first, PostgresStore(conninfo) as second:
            first.on_commit("notify")
            closed_session(first, "order-1")
            error = nested_delivery_refusal(first, lambda: second.deliver(lambda e: None))
            assert isinstance(error, WorkflowError)
            assert "from a handler of a delivery of the same outbox" in str(error)
            assert [e.attempts for e in second.pending()] == [1]
            assert second.deliver(lambda e: None) == 1

    def test_an_async_delivery_from_a_sync_handler_on_the_schema_is_refused(self, pg_server):
        """An AsyncPostgresStore delivering the schema a PostgresStore is delivering raises."""
        conninfo = pg_server.fresh_schema()

        async def deliver_async() -> int:
            async with await AsyncPostgresStore.open(conninfo) as other:
                return await other.deliver(lambda e: None)

        with PostgresStore(conninfo) as store:
            store.on_commit("notify")
            closed_session(store, "order-1")
            error = nested_delivery_refusal(store, lambda: asyncio.run(deliver_async()))
            assert isinstance(error, WorkflowError)
            assert "from a handler of a delivery of the same outbox" in str(error)

    def test_another_thread_delivering_through_another_store_object_waits(self, pg_server):
        """A deliverer in another thread waits for the running delivery; no row twice."""
        conninfo = pg_server.fresh_schema()
        with PostgresStore(conninfo) as first, PostgresStore(conninfo) as second:
            first.on_commit("notify")
            closed_session(first, "order-1")
            deliveries_take_turns(first, second, lambda: waiting_for_an_advisory_lock(conninfo))

    def test_a_handler_may_deliver_another_schema(self, pg_server):
        """A handler delivering another schema's outbox is not refused: its lock is another."""
        with (
            PostgresStore(pg_server.fresh_schema()) as first,
            PostgresStore(pg_server.fresh_schema()) as other,
        ):
            for store in (first, other):
                store.on_commit("notify")
                closed_session(store, "order-1")
            inner: list[int] = []
            assert first.deliver(lambda e: inner.append(other.deliver(lambda e: None))) == 1
            assert inner == [1]

    def test_a_handlers_delivery_of_another_schema_leaves_that_schemas_lock_free(self, pg_server):
        """Once a handler's delivery of another schema is over, that schema's lock is free."""
        import psycopg  # noqa: PLC0415 - optional dependency

        busy = pg_server.fresh_schema()
        with PostgresStore(pg_server.fresh_schema()) as first, PostgresStore(busy) as other:
            for store in (first, other):
                store.on_commit("notify")
                closed_session(store, "order-1")
            assert first.deliver(lambda e: other.deliver(lambda e: None)) == 1
            with psycopg.connect(busy, autocommit=True) as watcher:
                assert watcher.execute(TRY_LOCK).fetchone() == (True,)

    def test_a_handler_waits_for_a_lock_another_connection_holds(self, pg_server):
        """A handler delivering a schema whose lock another connection holds waits for it."""
        import psycopg  # noqa: PLC0415 - optional dependency

        busy = pg_server.fresh_schema()
        with (
            PostgresStore(pg_server.fresh_schema()) as first,
            PostgresStore(busy) as other,
            psycopg.connect(busy, autocommit=True) as holder,
        ):
            for store in (first, other):
                store.on_commit("notify")
                closed_session(store, "order-1")
            holder.execute("SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox'))")

            def release() -> None:
                wait_until_blocked_by(holder, busy)
                holder.execute("SELECT pg_advisory_unlock_all()")

            releaser = threading.Thread(target=release)
            releaser.start()
            inner: list[int] = []
            assert first.deliver(lambda e: inner.append(other.deliver(lambda e: None))) == 1
            releaser.join(timeout=60)
            assert inner == [1]

    def test_a_thread_of_an_ended_delivery_waits_for_the_next_one_on_its_connection(
        self, pg_server, monkeypatch
    ):
        """A handler's thread that finds the lock held once that delivery ended waits.

        The thread runs in a copy of the handler's context; the pooled connection the
        ended delivery held the lock on holds it again for another delivery (a pool of
        one), which the thread must wait for rather than be refused.
        """
        conninfo = pg_server.fresh_schema()
        with (
            PostgresStore(conninfo, max_connections=1) as store,
            PostgresStore(conninfo) as other,
        ):
            store.on_commit("notify", trigger="close")
            for integration_id in ("order-1", "order-2"):
                store.create(CustomerSession(integration_id=integration_id))
            store.update("order-1", lambda s: s.close())
            tried, resume = threading.Event(), threading.Event()
            advisory = other._advisory

            def paused_after_the_try(connection: Any, statement: str) -> Any:
                result = advisory(connection, statement)
                if "pg_try_advisory_lock" in statement:
                    tried.set()
                    resume.wait(timeout=60)  # the delivery ends, another takes the lock
                return result

            monkeypatch.setattr(other, "_advisory", paused_after_the_try)
            outcome: list[object] = []

            def deliver_other() -> None:
                try:
                    outcome.append(other.deliver(lambda e: None))
                except WorkflowError as exc:
                    outcome.append(exc)

            threads: list[threading.Thread] = []

            def handler(effect: Any) -> None:
                context = contextvars.copy_context()
                thread = threading.Thread(target=context.run, args=(deliver_other,))
                threads.append(thread)
                thread.start()
                assert tried.wait(timeout=60)  # it found the lock held by this delivery

            assert store.deliver(handler) == 1
            store.update("order-2", lambda s: s.close())
            holding, go = threading.Event(), threading.Event()

            def slow(effect: Any) -> None:
                holding.set()
                go.wait(timeout=60)

            delivered: list[int] = []
            next_delivery = threading.Thread(target=lambda: delivered.append(store.deliver(slow)))
            next_delivery.start()
            assert holding.wait(timeout=60)
            resume.set()
            wait_until(
                lambda: waiting_for_an_advisory_lock(conninfo), "waited for the delivery's turn"
            )
            assert outcome == []
            go.set()
            next_delivery.join(timeout=60)
            threads[0].join(timeout=60)
            assert delivered == [1]
            assert outcome == [0]

    def test_a_thread_of_a_delivery_ending_waits_for_the_next_one_on_its_connection(
        self, pg_server, monkeypatch
    ):
        """A handler's thread that finds the lock held as that delivery ends waits for it.

        The delivery has given its connection back to the pool, where another
        delivery took it and the lock; the ended one must no longer count as holding
        it, though its handler's context has not seen it end yet.
        """
        conninfo = pg_server.fresh_schema()
        with (
            PostgresStore(conninfo, max_connections=1) as store,
            PostgresStore(conninfo) as other,
        ):
            store.on_commit("notify", trigger="close")
            for integration_id in ("order-1", "order-2"):
                closed_session(store, integration_id)
            given_back, resume, holding, go = (threading.Event() for _ in range(4))
            pausing: list[bool] = []
            putconn = store._pool.putconn

            def paused_after_giving_back(connection: Any) -> None:
                putconn(connection)
                if pausing:  # the first delivery's: it has not ended for its handler yet
                    pausing.clear()
                    given_back.set()
                    resume.wait(timeout=60)

            monkeypatch.setattr(store._pool, "putconn", paused_after_giving_back)
            outcome: list[object] = []

            def deliver_other() -> None:
                holding.wait(timeout=60)  # the next delivery holds the lock now
                try:
                    outcome.append(other.deliver(lambda e: None))
                except WorkflowError as exc:
                    outcome.append(exc)

            threads: list[threading.Thread] = []

            def handler(effect: Any) -> None:
                thread = threading.Thread(
                    target=contextvars.copy_context().run, args=(deliver_other,)
                )
                threads.append(thread)
                thread.start()
                pausing.append(True)

            def slow(effect: Any) -> None:
                holding.set()
                go.wait(timeout=60)

            first = threading.Thread(target=store.deliver, args=(handler,), kwargs={"limit": 1})
            first.start()
            assert given_back.wait(timeout=60)
            delivered: list[int] = []
            next_delivery = threading.Thread(target=lambda: delivered.append(store.deliver(slow)))
            next_delivery.start()
            assert holding.wait(timeout=60)
            wait_until(
                lambda: waiting_for_an_advisory_lock(conninfo), "waited for the delivery's turn"
            )
            assert outcome == []
            resume.set()
            go.set()
            for thread in (first, next_delivery, *threads):
                thread.join(timeout=60)
            assert delivered == [1]
            assert outcome == [0]


class TestThreadsOfAHandler:
    """A thread a handler starts in a copy of its context (``copy_context().run``)."""

    def test_a_thread_running_during_the_delivery_takes_its_own_connection(self, pg_server):
        """A handler's thread does not run its store calls on the delivery's connection.

        There they would run among the handler's own, from another thread. With a
        pool of one connection, the thread waits for the delivery to end instead.
        """
        with PostgresStore(pg_server.fresh_schema(), max_connections=1) as store:
            store.on_commit("notify", trigger="close")
            closed_session(store, "order-1")
            threads: list[threading.Thread] = []
            read: list[str] = []
            done_during: list[bool] = []

            def handler(effect: Any) -> None:
                context = contextvars.copy_context()
                thread = threading.Thread(
                    target=context.run, args=(lambda: read.append(store.get("order-1").state),)
                )
                threads.append(thread)
                thread.start()
                thread.join(timeout=0.5)  # time enough to read on a shared connection
                done_during.append(not thread.is_alive())

            assert store.deliver(handler) == 1
            threads[0].join(timeout=60)
            assert done_during == [False]
            assert read == ["closed"]

    def test_a_thread_outliving_the_delivery_takes_its_own_connection(self, pg_server):
        """A handler's thread that runs on once the delivery ended does not use its connection.

        That connection is back in the pool, and here another delivery holds it (a
        pool of one): the thread waits for that delivery to end, rather than run
        its store calls on a connection the pool gave to someone else.
        """
        with PostgresStore(pg_server.fresh_schema(), max_connections=1) as store:
            store.on_commit("notify", trigger="close")
            closed_session(store, "order-1")
            go = threading.Event()
            threads: list[threading.Thread] = []
            read: list[str] = []

            def later() -> None:
                go.wait(timeout=60)
                read.append(store.get("order-1").state)

            def handler(effect: Any) -> None:
                thread = threading.Thread(target=contextvars.copy_context().run, args=(later,))
                threads.append(thread)
                thread.start()

            assert store.deliver(handler) == 1
            closed_session(store, "order-2")
            done_during: list[bool] = []

            def next_handler(effect: Any) -> None:
                go.set()
                threads[0].join(timeout=0.5)  # time enough to read on a shared connection
                done_during.append(not threads[0].is_alive())

            assert store.deliver(next_handler) == 1
            threads[0].join(timeout=60)
            assert done_during == [False]
            assert read == ["closed"]

    def test_a_context_run_by_the_delivering_thread_after_the_delivery_takes_its_own(
        self, pg_server
    ):
        """A context a handler copied, run later by the thread that delivered, waits for the pool.

        The delivery's connection is back in the pool, and here another delivery, in
        another thread, holds it (a pool of one): the call waits for that delivery
        to end, rather than run on a connection the pool gave to someone else.
        """
        with PostgresStore(pg_server.fresh_schema(), max_connections=1) as store:
            store.on_commit("notify", trigger="close")
            closed_session(store, "order-1")
            copied: list[contextvars.Context] = []
            assert store.deliver(lambda effect: copied.append(contextvars.copy_context())) == 1
            closed_session(store, "order-2")
            holding, released = threading.Event(), threading.Event()

            def next_handler(effect: Any) -> None:
                holding.set()
                released.wait(timeout=60)

            next_delivery = threading.Thread(target=store.deliver, args=(next_handler,))
            next_delivery.start()
            assert holding.wait(timeout=60)
            release = threading.Timer(0.5, released.set)  # time enough to read meanwhile
            release.start()
            assert copied[0].run(store.get, "order-1").state == "closed"
            assert released.is_set()  # it waited for the delivery holding the connection
            next_delivery.join(timeout=60)
            release.join()


class TestDatabaseName:
    def test_names_the_schema_and_hides_the_password(self):
        """A database in messages (SchemaNotReady) names its schema, never the password."""
        named = database_name("postgresql://shop:hunter2@db.example:5432/orders", "public")
        assert "hunter2" not in named
        assert named.startswith("PostgreSQL database ")
        assert named.endswith("(schema 'public')")

    @pytest.mark.parametrize(
        "option", ["sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"]
    )
    def test_hides_every_secret_option_not_only_the_password(self, option):
        """A secret option other than the password (sslpassword, ...) is never shown either."""
        named = database_name(f"postgresql://db.example/orders?{option}=hunter2", "public")
        assert "hunter2" not in named

    @pytest.mark.postgres
    def test_a_stores_repr_hides_the_ssl_keys_password(self, pg_server):
        """repr() of a store given sslpassword (unused without a client key) does not show it."""
        with PostgresStore(f"{pg_server.url}?sslpassword=hunter2") as store:
            assert "hunter2" not in repr(store)
            assert "sslpassword=***" in repr(store)

    def test_a_search_path_without_an_existing_schema_is_said(self):
        """A connection whose current_schema() is None is named as having no schema."""
        named = database_name("postgresql://db.example/orders", None)
        assert named.endswith("(no schema: none of the search_path exists)")


def _first_call_error(backend: str, url: str, *, migrate: bool) -> StoreError:
    """The StoreError a store on ``url`` raises at its first call (``get``); it is closed."""
    store = (PostgresStore if backend == "postgres" else SyncOverAsync)(url, migrate=migrate)
    try:
        with pytest.raises(StoreError) as caught:
            store.get("order-1")
    finally:
        store.close()
    return caught.value


class TestSearchPathWithoutASchema:
    @pytest.mark.parametrize("migrate", [True, False])
    def test_the_error_names_the_search_path_and_what_to_do(self, pg_server, backend, migrate):
        """A search_path naming no existing schema is a StoreError naming it, with the cure."""
        url = f"{pg_server.url}?options=-csearch_path%3Dnope_{uuid.uuid4().hex[:8]}%2Cnope_b"
        missing = url.rsplit("%3D", 1)[1].split("%2C", maxsplit=1)[0]
        error = _first_call_error(backend, url, migrate=migrate)
        message = str(error)
        assert message.startswith("session 'order-1': PostgreSQL database ")
        assert f"no schema of its search_path ({missing}, nope_b) exists" in message
        assert f"create one (CREATE SCHEMA {missing})" in message
        assert "options=-csearch_path=" in message
        assert "no schema has been selected" not in message
        assert "migrate=True" not in message  # it would not help
        assert error.integration_id == "order-1"

    @pytest.mark.parametrize("migrate", [True, False])
    def test_a_schema_the_role_may_not_use_is_named_with_the_grant(
        self, pg_server, backend, migrate
    ):
        """A search_path schema that exists without USAGE for the role is said so, not missing."""
        import psycopg  # noqa: PLC0415 - optional dependency

        suffix = uuid.uuid4().hex[:8]
        role, schema = f"app_{suffix}", f"Shop {suffix}"
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
            admin.execute(f"CREATE ROLE {role} LOGIN")
        url = pg_server.url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        url += f"?options=-csearch_path%3D%22Shop%5C%20{suffix}%22"
        try:
            error = _first_call_error(backend, url, migrate=migrate)
        finally:
            with psycopg.connect(pg_server.url, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}"')
                admin.execute(f"DROP ROLE {role}")
        message = str(error)
        assert message.startswith("session 'order-1': PostgreSQL database ")
        assert f'it has no USAGE privilege on "{schema}"' in message
        assert f'(GRANT USAGE ON SCHEMA "{schema}" TO {role})' in message
        assert "CREATE SCHEMA" not in message  # it exists: creating it would fail
        assert "exists;" not in message
        assert error.integration_id == "order-1"

    def test_schema_names_are_read_as_postgresql_reads_a_search_path(self):
        """Quoted entries keep their case and quotes; unquoted ones fold ASCII to lower case."""
        names = _postgres.schema_names('"$user", Public, "A""b c", \u00c9T\u00c9, "x,y"')
        assert names == ["$user", "public", 'A"b c', "\u00c9t\u00c9", "x,y"]

    def test_the_user_schema_is_not_offered_and_the_password_never_shown(self):
        """The '"$user"' entry is not offered as the schema to create; no password shown."""
        error = _postgres.no_schema(
            "postgresql://shop:hunter2@db.example/orders", '"$user", public', None
        )
        assert str(error).startswith("store: PostgreSQL database ")
        assert 'search_path ("$user", public)' in str(error)
        assert "(CREATE SCHEMA public)" in str(error)
        assert "hunter2" not in str(error)

    def test_an_empty_search_path_is_said(self):
        """An empty search_path is called empty, and a schema name left to the reader."""
        message = str(_postgres.no_schema("postgresql://db.example/orders", "", "order-1"))
        assert "no schema of its search_path (empty) exists" in message
        assert "(CREATE SCHEMA <name>)" in message


# Connection strings libpq refuses without connecting, and a word of its reason.
MALFORMED = [
    ("postgresql://db.example:notaport/orders", "invalid port 'notaport'"),
    ("postgresql://db.example:70000/orders", "invalid port '70000'"),
    ("postgresql://db.example/orders?port=x5432", "invalid port 'x5432'"),
    ("host=db.example port=x5432", "invalid port 'x5432'"),
    ("postgresql://a:1,b:2,c:3/orders?host=d,e", "3 ports for 2 hosts"),
    ("host=a,b port=1,2,3", "3 ports for 2 hosts"),
    ("postgresql://db.example/orders?foo=bar", "invalid URI query parameter"),
    ("host=db.example bogus=1", 'invalid connection option "bogus"'),
    ("host=db.example dbname", 'missing "=" after "dbname"'),
    ("postgresql://db.example/orders?connect_timeout=abc", "invalid connect_timeout 'abc'"),
    ("postgresql://db.example/orders?connect_timeout=", "invalid connect_timeout ''"),
    ("postgresql://db.example/orders?keepalives_idle=-x", "invalid keepalives_idle '-x'"),
    ("host=db.example keepalives=yes", "invalid keepalives 'yes'"),
    ("host=db.example keepalives_interval=1.5", "invalid keepalives_interval '1.5'"),
    ("host=db.example keepalives_count=9999999999", "invalid keepalives_count '9999999999'"),
    ("postgresql://db.example/orders?tcp_user_timeout=10s", "invalid tcp_user_timeout '10s'"),
]
# Values of libpq's numeric options that it (or psycopg, for connect_timeout) takes.
NUMERIC_TAKEN = [
    "connect_timeout=2.5",  # psycopg reads the timeout itself, as a float
    "connect_timeout=-1",  # no timeout
    "keepalives_idle= 30 ",
    "keepalives=+0",
    "tcp_user_timeout=-2147483648",
    "port=",  # the default port
]
# Each malformed in a way whose libpq message quotes the password ("hunter2").
SECRET = [
    "postgresql://shop:hunter2%zz@db.example/orders",
    "postgresql://shop:hunter2@[::1/orders",
    "host=db.example password=hun ter2",
    "host=db.example password='hunter2",
    "postgresql://db.example/orders?password=hunter2%zz",
    "postgresql://db.example/orders?sslpassword=hunter2%zz",
    "host=db.example sslpassword=hun ter2",
    # libpq decodes a URL parameter's name as it does its value.
    "postgresql://db.example/orders?pass%77ord=hunter2%zz",
    "postgresql://db.example/orders?%73sl%70assword=hunter2%zz",
]


# Each way of making a PostgreSQL store, and how its refusal names the argument.
ARGUMENTS = {
    "PostgresStore": "PostgresStore: conninfo: ",
    "AsyncPostgresStore": "AsyncPostgresStore: conninfo: ",
    "open_store": "open_store(): target: ",
}


def made(kind: str, conninfo: str) -> object:
    """Make a store of ``kind`` on ``conninfo`` (an async one is made, not opened)."""
    if kind == "open_store":
        return open_store(conninfo)
    store_class = PostgresStore if kind == "PostgresStore" else AsyncPostgresStore
    return store_class(conninfo)


def each_maker(conninfos: list[Any]) -> list[Any]:
    """``(kind, case)`` for each maker and case; open_store takes only the URLs."""
    return [
        pytest.param(kind, case, id=f"{kind}-{n}")
        for kind in ARGUMENTS
        for n, case in enumerate(conninfos)
        if kind != "open_store" or "://" in (case if isinstance(case, str) else case[0])
    ]


@pytest.fixture
def as_role(database: str, pg_server: TemporaryPostgres) -> Iterator[Callable[..., str]]:
    """Make a login role, run ``grants`` for it; its URL on the test's schema.

    ``grants`` are statements run as the server's superuser, ``{role}`` and
    ``{schema}`` in them replaced; the roles are dropped at the end.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    made: list[str] = []
    schema = database.rsplit("%3D", 1)[1]

    def make(*grants: str) -> str:
        role = f"app_{uuid.uuid4().hex[:8]}"
        made.append(role)
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN")
            for grant in grants:
                admin.execute(grant.format(role=role, schema=schema))
        return database.replace("postgresql://postgres@", f"postgresql://{role}@", 1)

    yield make
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        for role in made:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@contextmanager
def role_store(backend: str, url: str, **options: Any) -> Iterator[Any]:
    """A store of ``backend`` on ``url``, closed at the end."""
    store = (PostgresStore if backend == "postgres" else SyncOverAsync)(url, **options)
    try:
        yield store
    finally:
        store.close()


# A role that may read and write the store's tables, whose transactions are read-only
# (as every transaction on a hot standby is).
READ_ONLY_ROLE: Final = (
    "GRANT USAGE ON SCHEMA {schema} TO {role}",
    "GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}",
    "GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    "ALTER ROLE {role} SET default_transaction_read_only = on",
)


class TestReadOnlyTransactions:
    @pytest.mark.parametrize("call", ["create", "update"])
    def test_a_write_says_the_database_accepts_no_writes(self, backend, database, as_role, call):
        """A write in a read-only transaction is said so (a hot standby, or a setting)."""
        with role_store(backend, database) as owner:
            owner.create(CustomerSession(integration_id="order-1"))
        url = as_role(*READ_ONLY_ROLE)
        with role_store(backend, url) as store:
            assert store.exists("order-1")  # reads are served
            write = {
                "create": lambda: store.create(CustomerSession(integration_id="order-2")),
                "update": lambda: store.update("order-1", lambda s: s.close()),
            }[call]
            with pytest.raises(StoreError) as caught:
                write()
        name = "order-2" if call == "create" else "order-1"
        assert type(caught.value) is StoreError
        assert str(caught.value) == (
            f"session {name!r}: PostgreSQL database {redacted(url)} accepts no writes on "
            "this connection (a read-only transaction: a hot standby, or "
            "default_transaction_read_only set for the role or the database), so nothing "
            "was written (cannot execute SELECT in a read-only transaction)"
        )
        assert caught.value.integration_id == name
        with role_store(backend, database) as owner:
            assert not owner.exists("order-2")
            assert owner.history("order-1")[-1].version == 1

    def test_creating_the_tables_says_so_too(self, backend, database, as_role):
        """migrate=True on a read-only connection says why nothing was created."""
        url = as_role("GRANT ALL ON SCHEMA {schema} TO {role}", *READ_ONLY_ROLE[-1:])
        with role_store(backend, url) as store, pytest.raises(StoreError) as caught:
            store.get("order-1")
        message = str(caught.value)
        assert message.startswith("session 'order-1': cannot create the store's tables in ")
        assert message.endswith(
            ": it accepts no writes on this connection (a read-only transaction: a hot "
            "standby, or default_transaction_read_only set for the role or the database) "
            "(cannot execute CREATE TABLE in a read-only transaction); nothing was created"
        )


class TestServerErrorsOnOneLine:
    def test_a_role_without_create_on_the_schema_is_one_line(self, backend, database, as_role):
        """migrate=True without CREATE on the schema: the server's message, no statement."""
        url = as_role("GRANT USAGE ON SCHEMA {schema} TO {role}")
        schema = database.rsplit("%3D", 1)[1]
        with role_store(backend, url) as store, pytest.raises(StoreError) as caught:
            store.get("order-1")
        message = str(caught.value)
        assert "\n" not in message
        assert "LINE 1" not in message
        assert message.startswith("session 'order-1': cannot create the store's tables in ")
        assert message.endswith(f": permission denied for schema {schema}; nothing was created")

    def test_the_detail_and_hint_are_kept_on_the_line(self):
        """A server error's detail and hint follow its primary message, on one line."""
        from psycopg import errors  # noqa: PLC0415 - optional dependency

        error = _postgres.server_reason(
            _diagnosed(errors.UniqueViolation, "duplicate key", "Key (k)=(1)\nexists.", "Try.")
        )
        assert error == "duplicate key (Key (k)=(1) exists.; hint: Try.)"

    def test_a_client_error_on_several_lines_is_one(self):
        """libpq's own message (no server's) has its lines joined."""
        from psycopg import OperationalError  # noqa: PLC0415 - optional dependency

        error = OperationalError("server closed the connection\n\tThis probably means...\n")
        reason = _postgres.server_reason(error)
        assert reason == "server closed the connection; This probably means..."


def _diagnosed(kind: type[Exception], primary: str, detail: str, hint: str) -> Exception:
    """A psycopg error of ``kind`` whose diagnostics say ``primary``, ``detail``, ``hint``."""

    class Diagnostic:
        message_primary = primary
        message_detail = detail
        message_hint = hint

    class Diagnosed(kind):  # type: ignore[misc, valid-type]
        diag = Diagnostic()

    return Diagnosed(f"{primary}\nLINE 1: ...")


class TestMalformedConninfo:
    @pytest.mark.parametrize(("kind", "case"), each_maker(MALFORMED))
    def test_is_refused_when_the_store_is_made(self, kind, case):
        """A connection string libpq cannot use is a ValidationError naming the argument."""
        conninfo, reason = case
        with pytest.raises(ValidationError) as caught:
            made(kind, conninfo)
        assert str(caught.value).startswith(ARGUMENTS[kind] + "is not a valid connection string")
        assert reason in str(caught.value)

    @pytest.mark.parametrize(("kind", "conninfo"), each_maker(SECRET))
    def test_never_shows_the_password(self, kind, conninfo):
        """The reason libpq gives is shown without the password, even where libpq quotes it."""
        with pytest.raises(ValidationError) as caught:
            made(kind, conninfo)
        assert str(caught.value).startswith(ARGUMENTS[kind])
        assert "hunter2" not in str(caught.value)
        assert "ter2" not in str(caught.value)

    def test_a_reason_showing_the_password_unquoted_is_withheld(self):
        """A reason that would show the password outside quotes is withheld whole."""
        reason = _postgres._without_secrets(
            "bad token hunter2 here", "postgresql://shop:hunter2@db.example/orders"
        )
        assert "hunter2" not in reason
        assert "withheld" in reason


class TestNumericOptions:
    @pytest.mark.parametrize("option", NUMERIC_TAKEN)
    def test_a_value_libpq_takes_is_not_refused(self, option):
        """A numeric option libpq (or psycopg) reads as a number passes the check."""
        assert _postgres.conninfo_problems(f"host=db.example {option}", "conninfo") == []

    @pytest.mark.parametrize("kind", list(ARGUMENTS))
    @pytest.mark.parametrize(
        ("variable", "value", "reason"),
        [
            ("PGPORT", "abc", "a port is a number from 1 to 65535"),
            ("PGPORT", "99999", "a port is a number from 1 to 65535"),
            ("PGCONNECT_TIMEOUT", "soon", "a number of seconds"),
            ("PGCONNECT_TIMEOUT", "", "a number of seconds"),
        ],
    )
    def test_a_bad_environment_variable_is_refused_naming_it(
        self, monkeypatch, kind, variable, value, reason
    ):
        """A bad PGPORT or PGCONNECT_TIMEOUT is a ValidationError naming the variable and value."""
        monkeypatch.setenv(variable, value)
        with pytest.raises(ValidationError) as caught:
            made(kind, "postgresql://shop:hunter2@db.example/orders")
        message = str(caught.value)
        assert message.startswith(ARGUMENTS[kind] + f"the environment variable {variable}=")
        assert f"{variable}={value!r}" in message
        assert reason in message
        assert "hunter2" not in message

    def test_the_connection_string_wins_over_the_environment(self, monkeypatch):
        """An environment variable the connection string overrides is not checked."""
        monkeypatch.setenv("PGPORT", "abc")
        monkeypatch.setenv("PGCONNECT_TIMEOUT", "soon")
        conninfo = "host=db.example port=5433 connect_timeout=5"
        assert _postgres.conninfo_problems(conninfo, "conninfo") == []

    def test_ports_from_the_environment_are_counted_against_the_hosts(self, monkeypatch):
        """PGPORT's list of ports must match the hosts, as psycopg requires when connecting."""
        monkeypatch.setenv("PGPORT", "1,2,3")
        (problem,) = _postgres.conninfo_problems("host=a,b", "conninfo")
        assert "3 ports for 2 hosts" in problem.message
        assert "PGPORT" in problem.message

    def test_every_bad_option_is_listed(self):
        """Several bad numeric options are each a problem of the argument."""
        conninfo = "host=db.example connect_timeout=x keepalives_idle=y"
        problems = _postgres.conninfo_problems(conninfo, "conninfo")
        assert [problem.path for problem in problems] == ["conninfo", "conninfo"]
        assert "connect_timeout 'x'" in problems[0].message
        assert "keepalives_idle 'y'" in problems[1].message


@pytest.mark.asyncio
async def test_an_unreachable_well_formed_url_stays_a_store_error_on_opening():
    """A URL libpq takes but whose server is not there is a StoreError when opened."""
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    store = AsyncPostgresStore(url)  # made: nothing to refuse yet
    with pytest.raises(StoreError, match="cannot connect"):
        await store.__aenter__()
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(url)
    with pytest.raises(StoreError, match="cannot connect"):
        open_store(url)
