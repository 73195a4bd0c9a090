"""Fixtures of the store tests: one contract, every backend, real databases.

The PostgreSQL server is the suite's ``pg_server`` (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.conftest import unavailable

from customer_session.store import AsyncPostgresStore, open_store

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from pgserver import TemporaryPostgres

HERE = Path(__file__).parent
# A store whose wait ends before this did not fall back on its default timeout. A
# bound this far from the one given holds on the busiest machine: the tests compare
# a wait with it, never with a guess of how long the wait takes.
DEFAULT_TIMEOUT: float = inspect.signature(open_store).parameters["timeout"].default
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def nested_delivery_refusal(deliverer: Any, inner: Callable[[], object]) -> BaseException:
    """What ``deliverer.deliver()`` raises when its handler calls ``inner()``.

    The delivery runs in a daemon thread: a nested delivery that hangs fails the
    test (after 60 s) instead of hanging the run.
    """
    raised: list[BaseException] = []

    def outer() -> None:
        try:
            deliverer.deliver(lambda effect: inner())
        except Exception as exc:  # the test checks what it was
            raised.append(exc)

    thread = threading.Thread(target=outer, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "deliver() from a handler hangs"
    (error,) = raised
    return error


def blocks_another(watcher: Any, holder: Any) -> bool:
    """Whether another connection's statement waits for ``holder``'s locks (asks ``watcher``)."""
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
        (holder.info.backend_pid,),
    ).fetchone()
    return row is not None and row[0] > 0


def waiting_for_an_advisory_lock(conninfo: str) -> bool:
    """Whether a statement on the server waits for an advisory lock (a delivery's turn)."""
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(conninfo, autocommit=True) as watcher:
        row = watcher.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return row is not None and row[0] > 0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait (up to 60 s) until ``condition()`` holds: another thread got where ``what`` says."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def flock_waiting(path: Path) -> Callable[[], bool]:
    """Whether a thread of this process waits for an ``flock`` lock on the file ``path``.

    The kernel lists a waiting lock in ``/proc/locks`` as a line with ``->``, naming
    the process and the file's inode (the file must exist when it is asked).
    """
    locks = Path("/proc/locks")
    if not locks.exists():
        unavailable("/proc/locks, to see a thread wait for a lock file")
    pid = str(os.getpid())

    def waiting() -> bool:
        inode = str(path.stat().st_ino)
        # A line reads: "1: -> FLOCK ADVISORY WRITE", the pid, then "major:minor:inode".
        return any(
            fields[1:3] == ["->", "FLOCK"]
            and fields[5] == pid
            and fields[6].rsplit(":", 1)[-1] == inode
            for fields in (line.split() for line in locks.read_text().splitlines())
        )

    return waiting


class WaitSpy:
    """A thread lock's stand-in that notes when a caller starts to wait for it."""

    def __init__(self, lock: threading.Lock) -> None:
        """Wrap ``lock``."""
        self.lock = lock
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        """Note the wait, then take the lock."""
        self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        """Release the lock."""
        self.lock.release()


def deliveries_take_turns(first: Any, second: Any, waiting: Callable[[], bool]) -> None:
    """Check that ``second.deliver()``, run by a thread while ``first`` delivers, waits.

    ``first`` must hold one pending row. From the handler, a racer thread starts
    ``second.deliver()``; the handler returns only once ``waiting()`` sees the racer
    wait for its turn (a racer that has not got there yet would find nothing pending
    and pass without waiting). The racer must get its turn once ``first`` is done,
    and then find nothing: no row reaches two handlers.
    """
    handed: list[tuple[str, int]] = []
    racers: list[threading.Thread] = []
    # Apart from the thread: the racer may report as soon as the lock is free,
    # before or after this thread gets back from deliver().
    raced: list[int] = []

    def handler(effect: Any) -> None:
        handed.append(("first", effect.sequence))
        racer = threading.Thread(
            target=lambda: raced.append(
                second.deliver(lambda e: handed.append(("second", e.sequence)))
            ),
            daemon=True,  # a racer that never gets its turn fails the test, not the run
        )
        racers.append(racer)
        racer.start()
        wait_until(
            lambda: waiting() or not racer.is_alive(), "the second deliver() waited or ended"
        )
        assert racer.is_alive(), f"the second deliver() did not wait: {raced}, {handed}"

    assert first.deliver(handler) == 1
    (racer,) = racers
    racer.join(timeout=60)
    assert not racer.is_alive(), "the second deliver() never got its turn"
    assert raced == [0]
    assert handed == [("first", 1)]


def in_a_fork(call: Callable[[], object]) -> str:
    """Run ``call`` in a forked child; return what it raised (``type: message``), or ``ok``.

    The child reports through a pipe and leaves with ``os._exit`` whatever happens:
    it never goes back to pytest, nor runs the parent's cleanup.
    """
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        outcome = "the child failed to report"
        try:
            call()
            outcome = "ok"
        except BaseException as exc:  # reported to the parent
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(writable, outcome.encode())
            os._exit(0)
    os.close(writable)
    with os.fdopen(readable, "rb") as reader:
        reported = reader.read().decode()
    os.waitpid(pid, 0)
    return reported


class SyncOverAsync:
    """A sync face over an ``AsyncPostgresStore``, so the contract tests run on it.

    The store lives on an event loop in a thread of its own; each method runs the
    store's coroutine there and waits. Threads may share one face (their calls are
    concurrent tasks on the loop), and a change run by the store may call another
    face (it has its own loop).
    """

    def __init__(self, conninfo: str, **options: Any) -> None:
        """Open the store on a new event loop thread."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.store: AsyncPostgresStore[Any] = self._run(
            AsyncPostgresStore.open(conninfo, **options)
        )

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        """The store's sync attributes."""
        return getattr(self.store, name)

    def create(self, session: Any, **options: Any) -> None:
        """As ``store.create``."""
        self._run(self.store.create(session, **options))

    def get(self, integration_id: str) -> Any:
        """As ``store.get``."""
        return self._run(self.store.get(integration_id))

    def exists(self, integration_id: str) -> bool:
        """As ``store.exists``."""
        return bool(self._run(self.store.exists(integration_id)))

    def counts(self) -> Any:
        """As ``store.counts``."""
        return self._run(self.store.counts())

    def ids(self, **query: Any) -> Any:
        """As ``store.ids``."""
        return self._run(self.store.ids(**query))

    def purge_delivered(self, **options: Any) -> Any:
        """As ``store.purge_delivered``."""
        return self._run(self.store.purge_delivered(**options))

    def forget_keys(self, **options: Any) -> Any:
        """As ``store.forget_keys``."""
        return self._run(self.store.forget_keys(**options))

    def update(self, integration_id: str, change: Any, **options: Any) -> Any:
        """As ``store.update``."""
        return self._run(self.store.update(integration_id, change, **options))

    def history(self, integration_id: str) -> Any:
        """As ``store.history``."""
        return self._run(self.store.history(integration_id))

    def processed(self, key: str) -> bool:
        """As ``store.processed``."""
        return bool(self._run(self.store.processed(key)))

    def processed_key(self, key: str) -> Any:
        """As ``store.processed_key``."""
        return self._run(self.store.processed_key(key))

    def mark_processed(self, key: str, **options: Any) -> bool:
        """As ``store.mark_processed``."""
        return bool(self._run(self.store.mark_processed(key, **options)))

    def pending(self, **options: Any) -> Any:
        """As ``store.pending``."""
        return self._run(self.store.pending(**options))

    def deliver(self, handler: Any, **options: Any) -> int:
        """As ``store.deliver``."""
        return int(self._run(self.store.deliver(handler, **options)))

    def discard(self, sequence: int, **options: Any) -> Any:
        """As ``store.discard``."""
        return self._run(self.store.discard(sequence, **options))

    def discarded(self, **options: Any) -> Any:
        """As ``store.discarded``."""
        return self._run(self.store.discarded(**options))

    def pending_count(self) -> Any:
        """As ``store.pending_count``."""
        return self._run(self.store.pending_count())

    def discarded_count(self) -> Any:
        """As ``store.discarded_count``."""
        return self._run(self.store.discarded_count())

    def outbox_effects(self) -> Any:
        """As ``store.outbox_effects``."""
        return self._run(self.store.outbox_effects())

    def migrate_schema(self) -> Any:
        """As ``store.migrate_schema``."""
        return self._run(self.store.migrate_schema())

    @contextmanager
    def transaction(self, integration_id: str, **options: Any) -> Iterator[Any]:
        """Run the ``async with`` in one task that waits while the caller runs the block."""
        entered: concurrent.futures.Future[Any] = concurrent.futures.Future()
        body: concurrent.futures.Future[BaseException | None] = concurrent.futures.Future()

        async def run() -> None:
            async with self.store.transaction(integration_id, **options) as session:
                # The block runs in the caller's thread, as if in this task: it must
                # queue after-commit hooks in the task's queue, and belong to the
                # session's atomic() block, both carried by the task's context.
                entered.set_result((session, contextvars.copy_context()))
                error = await asyncio.wrap_future(body)
                if error is not None:
                    raise error

        outcome = asyncio.run_coroutine_threadsafe(run(), self._loop)
        concurrent.futures.wait([entered, outcome], return_when=concurrent.futures.FIRST_COMPLETED)
        if not entered.done():
            outcome.result()  # loading failed: raise why
        session, context = entered.result()
        tokens = [(var, var.set(value)) for var, value in context.items()]
        try:
            yield session
        except BaseException as exc:
            _reset(tokens)
            body.set_result(exc)
            outcome.result()
            raise
        _reset(tokens)
        body.set_result(None)
        outcome.result()

    def close(self) -> None:
        """Close the store and stop its loop."""
        try:
            self._run(self.store.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


def _reset(tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]]) -> None:
    """Undo the context variables set from a task's context, last first."""
    for var, token in reversed(tokens):
        var.reset(token)


@pytest.fixture(scope="session")
def collated_schemas(pg_server: TemporaryPostgres) -> Callable[[], str]:
    """New, empty schemas of a database that sorts text by a language (ICU ``en-US``).

    The server's own databases sort text by code point (``--no-locale``), as SQLite
    does; most production databases sort by a language, which puts ``"Order-2"``
    between ``"order-1"`` and ``"order-3"``.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    name = f"d_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as connection:
        connection.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE 'C' "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        )
    url = f"{pg_server.url.rsplit('/', 1)[0]}/{name}"

    def fresh_schema() -> str:
        schema = f"s_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return f"{url}?options=-csearch_path%3D{schema}"

    return fresh_schema


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of the backend: an SQLite file or a PostgreSQL schema."""
    if backend == "sqlite":
        return str(tmp_path / "sessions.db")
    server: TemporaryPostgres = request.getfixturevalue("pg_server")
    return server.fresh_schema()


@pytest.fixture
def open_db(backend: str, database: str) -> Iterator[Callable[..., Any]]:
    """Open more store objects on the database; all are closed at the end."""
    opened: list[Any] = []

    def open_(**options: Any) -> Any:
        if backend == "postgres-async":
            store: Any = SyncOverAsync(database, **options)
        else:
            store = open_store(database, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_db: Callable[..., Any]) -> Any:
    """A store on a fresh database."""
    return open_db()


# The columns every version has, per table (later versions only add columns).
COLUMNS = {
    "customer_sessions": ("integration_id", "state", "version", "updated", "document"),
    "customer_session_journal": (
        "sequence",
        "integration_id",
        "version",
        "kind",
        "operation",
        "event_key",
        "records",
        "changes",
        "recorded_at",
    ),
    "customer_session_outbox": (
        "sequence",
        "idempotency_key",
        "effect",
        "integration_id",
        "version",
        "position",
        "record",
        "document",
        "created_at",
        "attempts",
        "last_error",
        "delivered_at",
    ),
    "customer_session_keys": ("key", "integration_id", "recorded_at"),
}


def run_sql(database: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on ``database`` in autocommit mode (``?`` placeholders)."""
    if database.startswith("postgresql://"):
        import psycopg  # noqa: PLC0415 - optional dependency

        with psycopg.connect(database, autocommit=True) as connection:
            cursor = connection.execute(statement.replace("?", "%s"), params)
            return list(cursor.fetchall()) if cursor.description else []
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        return connection.execute(statement, params).fetchall()
    finally:
        connection.close()


@pytest.fixture
def sql(database: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run raw SQL on the database (``?`` placeholders), to inspect or damage it."""
    return functools.partial(run_sql, database)


@pytest.fixture
def importable_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``store_workers`` importable in spawned worker processes."""
    monkeypatch.syspath_prepend(str(HERE))
