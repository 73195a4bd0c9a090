"""What only the SQLite backend does: WAL files, in-memory databases, thread connections."""

from __future__ import annotations

import gc
import logging
import os
import pwd
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
import weakref
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.conftest import unwritable, without_write_bits

from customer_session import (
    CustomerSession,
    SchemaNotReady,
    State,
    StoreError,
    StoreTimeout,
    WorkflowError,
)
from customer_session._show import shown
from customer_session.store import SQLiteStore, StoreReplayer
from customer_session.store._sqlite import _Connection, _use_wal

from .conftest import (
    DEFAULT_TIMEOUT,
    WaitSpy,
    deliveries_take_turns,
    flock_waiting,
    in_a_fork,
    nested_delivery_refusal,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def in_thread(function) -> None:
    thread = threading.Thread(target=function)
    thread.start()
    thread.join()


def closes_recorded(monkeypatch) -> list[int]:
    """The ids of the store connections closed from now on (they are still closed)."""
    closed: list[int] = []
    close = _Connection.close

    def recording(connection: _Connection) -> None:
        closed.append(id(connection))
        close(connection)

    monkeypatch.setattr(_Connection, "close", recording)
    return closed


def with_pending_row(store: SQLiteStore) -> None:
    """Commit a transition that writes one outbox row."""
    store.on_commit("notify")
    store.create(CustomerSession(integration_id="order-1"))
    store.update("order-1", lambda s: s.close())


# Who the child of ``as_another_user`` runs as, when the tests run as root: the
# PostgreSQL server's system user (see tests/support/pgserver.py), whom permission
# bits bind.
OTHER_USER = "postgres"


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory that the process ``as_another_user`` runs may read, not write.

    As root, a new directory of root's (0o755) that the other user may enter (the
    test's ``tmp_path`` is in root's private directory); else ``tmp_path``'s own
    subdirectory, its write bits taken away by the test (see ``without_write_bits``).
    """
    if os.geteuid() != 0:
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="customer-session-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def as_another_user(call: Callable[[], object]) -> str:
    """Run ``call`` where permission bits bind; return what it raised (``type: message``).

    In a forked child (see ``in_a_fork``), which as root (whom no permission bit
    stops) first becomes ``OTHER_USER`` (skipped without one). ``ok`` when it raised
    nothing.
    """
    if os.geteuid() != 0:
        return in_a_fork(call)
    try:
        user = pwd.getpwnam(OTHER_USER)
    except KeyError:
        pytest.skip(f"running as root without a {OTHER_USER!r} user to run as")

    def as_the_user() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        call()

    return in_a_fork(as_the_user)


class TestSQLiteStore:
    def test_file_database_uses_wal(self, tmp_path):
        """A file database is switched to WAL mode."""
        path = tmp_path / "sessions.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        connection.close()

    def test_a_path_that_is_no_database_is_named_first(self, tmp_path):
        """A path SQLite cannot open is a StoreError that starts with the path, unquoted."""
        with pytest.raises(StoreError) as caught, SQLiteStore(tmp_path) as store:
            store.get("order-1")
        assert str(caught.value) == (
            f"{tmp_path}: cannot open as an SQLite database (unable to open database file)"
        )

    def test_a_new_file_locked_by_another_connection_is_a_store_timeout_after_timeout(
        self, tmp_path
    ):
        """The switch to WAL waits for another connection's lock for ``timeout``, then gives up."""
        path = tmp_path / "x.db"
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            start = time.monotonic()
            with (
                pytest.raises(
                    StoreTimeout, match=r"^session 'order-1': gave up waiting for "
                ) as caught,
                SQLiteStore(path, timeout=0.2) as store,
            ):
                store.get("order-1")
            assert 0.2 <= time.monotonic() - start < DEFAULT_TIMEOUT
        assert caught.value.timeout == 0.2

    def test_a_write_waits_for_another_writer_for_timeout(self, tmp_path):
        """A write waits ``timeout`` seconds for another connection's write lock, then gives up."""
        path = tmp_path / "x.db"
        with SQLiteStore(path, timeout=0.2) as store:
            store.create(CustomerSession(integration_id="order-1"))
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                start = time.monotonic()
                with pytest.raises(StoreTimeout, match=r"timeout of 0\.2 seconds"):
                    store.update("order-1", lambda s: s.close())
                assert 0.2 <= time.monotonic() - start < DEFAULT_TIMEOUT

    def test_a_commit_that_fails_is_rolled_back(self, tmp_path):
        """A COMMIT refused (a reader's lock outlasts timeout) writes nothing and holds no lock.

        Outside WAL mode (a file migrate=False leaves as it is), a commit must wait
        for readers; when it gives up, the transaction must not stay open on the
        thread's connection, holding the write lock and showing its own reads the
        change that failed.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("PRAGMA journal_mode = DELETE")
            with SQLiteStore(path, migrate=False, timeout=0.1) as store:
                store.exists("order-1")
                other.execute("BEGIN")
                other.execute("SELECT count(*) FROM customer_sessions").fetchone()
                with pytest.raises(StoreTimeout, match="gave up waiting for the write lock"):
                    store.update("order-1", lambda s: s.set_coupon("FAILED"))
                other.execute("COMMIT")
                assert store.get("order-1").coupon is None
                other.execute("BEGIN IMMEDIATE")  # the write lock is free
                other.execute("ROLLBACK")
                store.update("order-1", lambda s: s.set_coupon("NEXT"))
            assert other.execute("SELECT document LIKE '%NEXT%' FROM customer_sessions").fetchone()[
                0
            ]

    def test_an_extended_busy_code_is_retried_when_switching_to_wal(self, tmp_path):
        """The switch to WAL is retried on any SQLITE_BUSY code, extended ones too."""
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = 261  # SQLITE_BUSY_RECOVERY: SQLITE_BUSY in its low byte
        # As the store opens it: the execute below makes a cycle, so the collector may
        # drop the connection (and _Connection.__del__ close it) in another thread.
        connection = sqlite3.connect(
            tmp_path / "x.db", factory=_Connection, check_same_thread=False
        )
        calls = []

        def execute(sql):
            calls.append(sql)
            if len(calls) == 1:
                raise busy
            return sqlite3.Connection.execute(connection, sql)

        connection.execute = execute
        with closing(connection):
            _use_wal(connection, timeout=5)
            assert calls == ["PRAGMA journal_mode = WAL"] * 2

    def test_synchronous_mode_is_applied(self, tmp_path):
        """synchronous= sets the durability of each connection."""
        store = SQLiteStore(tmp_path / "x.db", synchronous="NORMAL")
        with store, store._connection(None) as connection:
            assert connection.execute("PRAGMA synchronous").fetchone() == (1,)

    @pytest.mark.parametrize(
        "path",
        [
            ":memory:",
            "file::memory:",
            "file:%3Amemory%3A",  # SQLite decodes the path: ":memory:"
            "file:%3amemory%3a",  # in either case of hex digit
            "file:sessions?mode=memory&cache=shared",
            "file:sessions?mode=rwc&mode=memory",  # SQLite takes the last mode
            "file:sessions?vfs=memdb",  # one database per connection, as :memory:
        ],
    )
    def test_memory_database_is_shared_by_threads(self, path):
        """Threads using one in-memory store (a path or a URI) see one database."""
        with SQLiteStore(path) as store:
            in_thread(lambda: store.create(CustomerSession(integration_id="order-1")))
            in_thread(lambda: store.update("order-1", lambda s: s.close()))
            assert store.get("order-1").state is State.CLOSED

    def test_a_uri_whose_last_mode_is_not_memory_opens_a_file(self, tmp_path):
        """mode=memory followed by another mode is a file database, as SQLite opens it.

        In WAL mode, and its deliveries take turns on the lock file beside it.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(f"file:{path}?mode=memory&mode=rwc") as store:
            with_pending_row(store)
            with store._connection(None) as connection:
                assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert store.deliver(lambda e: None) == 1
        assert path.is_file()
        assert (tmp_path / "x.db-deliver").is_file()

    def test_a_question_mark_in_an_option_value_is_part_of_the_value(self, tmp_path):
        """A '?' in an option's value starts no option: 'x=a?mode=memory' opens a file.

        As SQLite reads it: the value of x is 'a?mode=memory', and the database
        is the file, in WAL mode.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(f"file:{path}?x=a?mode=memory") as store:
            store.create(CustomerSession(integration_id="order-1"))
            with store._connection(None) as connection:
                assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert path.is_file()

    def test_a_file_uri_path_is_decoded_for_the_lock_file(self, tmp_path):
        """A file: URI with escaped '?' and '#' in its path locks the file SQLite opened."""
        with SQLiteStore(f"file:{tmp_path}/a%3Fb%23c.db") as store:
            with_pending_row(store)
            assert store.deliver(lambda e: None) == 1
        assert sorted(p.name for p in tmp_path.glob("a*")) == [
            "a?b#c.db",
            "a?b#c.db-deliver",
        ]

    def test_close_waits_for_a_statement_another_thread_runs(self, tmp_path):
        """close() from one thread lets another's running write finish before it closes.

        Closing a connection while another thread is inside one of its statements
        crashes the interpreter (or fails the write half-way).
        """
        path = tmp_path / "x.db"
        store = SQLiteStore(path)
        store.create(CustomerSession(integration_id="order-1"))
        closer = threading.Thread(target=store.close)
        outcome: list[object] = []

        def on_statement(statement: str) -> None:
            if statement == "BEGIN IMMEDIATE" and not closer.is_alive():
                closer.start()
                closer.join(timeout=0.2)  # time for close() to get at the connection

        def update() -> None:
            store.exists("order-1")  # this thread's connection, opened
            store._local.connection.set_trace_callback(on_statement)
            outcome.append(store.update("order-1", lambda s: s.close()).destination)

        in_thread(update)
        closer.join(timeout=60)
        assert not closer.is_alive()
        assert outcome == [State.CLOSED]
        with closing(sqlite3.connect(path)) as connection:
            assert connection.execute("SELECT state FROM customer_sessions").fetchall() == [
                ("closed",)
            ]
        with pytest.raises(StoreError, match="is closed"):
            store.get("order-1")

    def test_a_thread_uses_one_connection(self, tmp_path):
        """A thread's calls share the connection it opened first."""
        store = SQLiteStore(tmp_path / "x.db")
        with store, store._connection(None) as first, store._connection(None) as second:
            assert first is second

    def test_connection_of_a_finished_thread_is_released(self, tmp_path):
        """Each thread gets its own connection, released when the thread ends."""
        with SQLiteStore(tmp_path / "x.db") as store:
            store.create(CustomerSession(integration_id="order-1"))
            in_thread(lambda: store.get("order-1"))
            gc.collect()
            assert len(store._opened) == 1

    def test_connection_of_a_finished_thread_is_closed(self, tmp_path, monkeypatch):
        """A finished thread's connection is closed, not left for sqlite3 to warn about."""
        closed = closes_recorded(monkeypatch)
        with SQLiteStore(tmp_path / "x.db") as store:
            store.create(CustomerSession(integration_id="order-1"))
            opened = []

            def read():
                store.get("order-1")
                opened.append(id(store._local.connection))

            in_thread(read)
            gc.collect()
            assert closed == opened

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
    def test_connection_dropped_in_a_forked_child_is_left_alone(self, monkeypatch):
        """A connection dropped in a process forked from its opener is not closed there."""
        closed = closes_recorded(monkeypatch)
        connections = [sqlite3.connect(":memory:", factory=_Connection, check_same_thread=False)]
        dropped = weakref.ref(connections[0])
        gc.collect()  # the child's collection below finds only what it drops

        def drop() -> None:
            connections.clear()
            gc.collect()
            assert dropped() is None, "the child did not drop the connection"
            assert closed == [], "the child closed its parent's connection"

        assert in_a_fork(drop) == "ok"

    def test_connection_that_fails_to_open_leaves_nothing_to_close(self, tmp_path):
        """A connection whose open failed is dropped without an error from its finalizer."""
        missing = (tmp_path / "missing.db").as_uri()
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            sqlite3.connect(f"{missing}?mode=rw", uri=True, factory=_Connection)
        gc.collect()
        assert not (tmp_path / "missing.db").exists()

    def test_store_objects_on_one_file_deliver_in_turn(self, tmp_path):
        """A second store object on the file waits for a running delivery; no row twice."""
        path = tmp_path / "x.db"
        with SQLiteStore(path) as first, SQLiteStore(path) as second:
            first.on_commit("notify")
            first.create(CustomerSession(integration_id="order-1"))
            first.update("order-1", lambda s: s.close())
            deliveries_take_turns(first, second, flock_waiting(tmp_path / "x.db-deliver"))

    def test_deliver_from_a_handler_through_another_store_object_is_refused(self, tmp_path):
        """A handler delivering the same file through another store object raises, no hang.

        Both take the file's delivery lock, which the running delivery holds.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as first, SQLiteStore(path) as second:
            first.on_commit("notify")
            first.create(CustomerSession(integration_id="order-1"))
            first.update("order-1", lambda s: s.close())
            error = nested_delivery_refusal(first, lambda: second.deliver(lambda e: None))
            assert isinstance(error, WorkflowError)
            assert "from a handler of a delivery of the same outbox" in str(error)
            assert second.deliver(lambda e: None) == 1


class TestReadOnlyDirectory:
    """A writable database file in a directory the process may not write."""

    @staticmethod
    def database_in(directory: Path, *, journal_mode: str = "wal") -> Path:
        """A store's file in ``directory``, writable by everyone, in ``journal_mode``."""
        path = directory / "x.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
        if journal_mode != "wal":
            with closing(sqlite3.connect(path)) as connection:
                connection.execute(f"PRAGMA journal_mode = {journal_mode}")
        path.chmod(0o666)
        assert sorted(directory.iterdir()) == [path]  # no -wal or -shm file left
        return path

    @pytest.mark.parametrize("migrate", [True, False])
    @pytest.mark.parametrize("call", ["get", "create"])
    def test_every_call_names_the_directory_and_the_wal_files(
        self, unwritable_directory, migrate, call
    ):
        """Reads too fail, with a StoreError naming the directory and the -wal/-shm files."""
        path = self.database_in(unwritable_directory)

        def use() -> None:
            with SQLiteStore(path, migrate=migrate) as store:
                if call == "get":
                    store.get("order-1")
                else:
                    store.create(CustomerSession(integration_id="order-2"))

        with without_write_bits(unwritable_directory):
            outcome = as_another_user(use)
        assert outcome == (
            f"StoreError: {path}: cannot open as an SQLite database: its directory "
            f"{shown(str(unwritable_directory))} is not writable by this process, and SQLite "
            f"must create the database's -wal and -shm files there ({shown('x.db-wal')}, "
            f"{shown('x.db-shm')}) to read or write it in WAL mode, as a store's file is; "
            "make the directory writable by the process's user, or move the database to a "
            "directory it can write"
        )
        assert sorted(unwritable_directory.iterdir()) == [path]

    def test_a_write_in_rollback_mode_names_the_journal_file(self, unwritable_directory):
        """Outside WAL mode reads work; a write names the -journal file, and writes nothing."""
        path = self.database_in(unwritable_directory, journal_mode="delete")

        def use() -> None:
            with SQLiteStore(path, migrate=False) as store:
                assert store.get("order-1").state is State.OPEN
                store.create(CustomerSession(integration_id="order-2"))

        with without_write_bits(unwritable_directory):
            outcome = as_another_user(use)
        assert outcome == (
            f"StoreError: session 'order-2': SQLite error in {shown(str(path))}: its "
            f"directory {shown(str(unwritable_directory))} is not writable by this process, "
            f"and SQLite must create the database's -journal file there ({shown('x.db-journal')}) "
            "to write to it outside WAL mode; make the directory writable by the process's "
            "user, or move the database to a directory it can write"
        )
        with SQLiteStore(path, migrate=False) as store:
            assert not store.exists("order-2")


class TestWithoutMigrating:
    def test_another_applications_file_is_not_changed_at_all(self, tmp_path):
        """migrate=False on a file of other tables leaves every byte, and its journal mode."""
        path = tmp_path / "shop.db"
        with closing(sqlite3.connect(path)) as connection:
            connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            connection.commit()
        before = path.read_bytes()
        with SQLiteStore(path, migrate=False) as store, pytest.raises(SchemaNotReady):
            store.counts()
        assert path.read_bytes() == before
        with closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)

    @pytest.mark.parametrize("name", ["a?b#c.db", "50%.db", "caf\u00e9 db"])
    def test_a_file_name_that_a_uri_escapes_is_opened(self, tmp_path, monkeypatch, name):
        """migrate=False opens a store's file whatever its name holds, relative paths too."""
        monkeypatch.chdir(tmp_path)
        with SQLiteStore(name) as store:
            store.create(CustomerSession(integration_id="order-1"))
        with SQLiteStore(name, migrate=False) as store:
            assert store.get("order-1").state is State.OPEN
        missing = SQLiteStore(f"missing {name}", migrate=False)
        with missing, pytest.raises(SchemaNotReady, match=r"no session store \(no such file\)"):
            missing.exists("order-1")
        assert sorted(
            p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))
        ) == [name]

    def test_a_file_uri_is_opened_as_given(self, tmp_path):
        """migrate=False leaves a file: URI's own options to it (a read-only mode, say)."""
        path = tmp_path / "sessions.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
        with SQLiteStore(f"{path.as_uri()}?mode=ro", migrate=False) as store:
            assert store.get("order-1").state is State.OPEN

    @pytest.mark.parametrize(
        "uri",
        [
            "file:missing.db",
            "file:missing.db?cache=private",
            "file:missing.db?cache=private#fragment",
            "file:missing%20db?",
            "file:./missing.db#?mode=rwc",  # after '#': no option
        ],
    )
    def test_a_file_uri_without_a_mode_creates_no_missing_file(self, tmp_path, monkeypatch, uri):
        """migrate=False with a file: URI that gives no mode leaves no empty file behind."""
        monkeypatch.chdir(tmp_path)
        missing = SQLiteStore(uri, migrate=False)
        with missing, pytest.raises(SchemaNotReady, match=r"no session store \(no such file\)"):
            missing.exists("order-1")
        assert list(tmp_path.iterdir()) == []

    def test_a_file_uri_without_a_mode_opens_an_existing_store(self, tmp_path, monkeypatch):
        """migrate=False with a file: URI that gives no mode reads and writes the store."""
        monkeypatch.chdir(tmp_path)
        with SQLiteStore("sessions.db") as store:
            store.create(CustomerSession(integration_id="order-1"))
        with SQLiteStore("file:sessions.db?cache=private#x", migrate=False) as store:
            store.update("order-1", lambda s: s.close())
            assert store.get("order-1").state is State.CLOSED


class TestCommitTimes:
    """A commit's journal and outbox time is read once it holds the write lock."""

    def test_a_commit_that_waited_for_the_lock_is_recorded_no_earlier(self, tmp_path):
        """A commit built before another's, then kept waiting by its lock, is recorded after it.

        So the journal's sequence order is its recorded_at order (on one clock), and
        each outbox row has its journal entry's time.
        """
        path = tmp_path / "x.db"
        waiting_built, holding = threading.Event(), threading.Event()
        with SQLiteStore(path, timeout=30) as store:
            store.on_commit("notify")
            for name in ("order-1", "order-2"):
                store.create(CustomerSession(integration_id=name))

            def paused_before_the_lock(statement: str) -> None:
                if statement == "BEGIN IMMEDIATE" and not waiting_built.is_set():
                    waiting_built.set()
                    holding.wait(10)

            def waiter() -> None:
                store.exists("order-2")  # opens this thread's connection
                store._local.connection.set_trace_callback(paused_before_the_lock)
                store.update("order-2", lambda s: s.close())

            def held(statement: str) -> None:
                if "INSERT INTO customer_session_journal" in statement:
                    holding.set()
                    time.sleep(0.2)  # the waiter asks for the lock meanwhile

            thread = threading.Thread(target=waiter)
            thread.start()
            assert waiting_built.wait(10)
            store.exists("order-1")
            store._local.connection.set_trace_callback(held)
            store.update("order-1", lambda s: s.close())
            store._local.connection.set_trace_callback(None)
            thread.join()
            first, second = (store.history(name)[-1] for name in ("order-1", "order-2"))
            effects = {effect.integration_id: effect for effect in store.pending()}
        assert first.sequence < second.sequence
        # Read after the lock was given up: after the pause inside the first commit.
        assert second.recorded_at - first.recorded_at >= timedelta(seconds=0.2)
        assert effects["order-1"].created_at == first.recorded_at
        assert effects["order-2"].created_at == second.recorded_at


class TestOutboxSequences:
    def test_a_version_3_outbox_is_kept_and_never_repeats_a_number(self, tmp_path):
        """Migrating a version 3 database keeps its outbox rows; purged numbers never return."""
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.on_commit("erp")
            for name in ("order-1", "order-2"):
                store.create(CustomerSession(integration_id=name))
                store.update(name, lambda s: s.close())
            assert store.deliver(lambda effect: None, limit=1) == 1
        connection = sqlite3.connect(path, isolation_level=None)
        # Back to version 3: the outbox without AUTOINCREMENT nor discards, the journal
        # without actor, sessions indexed by state alone.
        connection.executescript(
            """
            CREATE TABLE old_outbox AS SELECT sequence, idempotency_key, effect,
                integration_id, version, position, record, document, created_at, attempts,
                last_error, delivered_at
            FROM customer_session_outbox;
            DROP TABLE customer_session_outbox;
            CREATE TABLE customer_session_outbox (
                sequence INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE,
                effect TEXT NOT NULL, integration_id TEXT NOT NULL, version INTEGER NOT NULL,
                position INTEGER NOT NULL, record TEXT NOT NULL, document TEXT NOT NULL,
                created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT, delivered_at TEXT);
            INSERT INTO customer_session_outbox SELECT * FROM old_outbox;
            DROP TABLE old_outbox;
            ALTER TABLE customer_session_journal DROP COLUMN actor;
            DROP INDEX customer_sessions_state_updated;
            CREATE INDEX customer_sessions_state ON customer_sessions (state);
            UPDATE customer_session_schema SET version = 3;
            """
        )
        rows = connection.execute("SELECT * FROM customer_session_outbox").fetchall()
        assert len(rows) == 2
        with SQLiteStore(path) as store:
            store.on_commit("erp")
            assert [e.integration_id for e in store.pending()] == ["order-2"]
            assert connection.execute("SELECT * FROM customer_session_outbox").fetchall() == [
                (*row, None, None)
                for row in rows  # not discarded
            ]
            indexes = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name = 'customer_session_outbox'"
                " AND sql IS NOT NULL"
            ).fetchall()
            assert sorted(indexes) == [
                ("customer_session_outbox_delivered",),
                ("customer_session_outbox_discarded",),
                ("customer_session_outbox_effect",),
                ("customer_session_outbox_pending",),
            ]
            # Deliver and purge the last row: the next one still gets a new number.
            last = max(sequence for (sequence, *_) in rows)
            assert store.deliver(lambda effect: None) == 1
            assert store.purge_delivered(before=datetime.now(UTC) + timedelta(seconds=5)) == 2
            store.update("order-1", lambda s: s.cancel())
            (row,) = store.pending()
            assert row.sequence == last + 1
        connection.close()


class TestTheFileGoneFromUnderTheStore:
    """The database file is deleted or replaced while a store object has it open."""

    def test_a_deleted_file_is_a_store_error_not_a_lost_commit(self, tmp_path):
        """A commit to a file deleted since it was opened is refused, naming the file.

        SQLite would write it to the deleted file, which no other connection sees
        and which vanishes when the store closes: a commit reported done, then lost.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
            for name in ("x.db", "x.db-wal", "x.db-shm"):
                (tmp_path / name).unlink()
            with pytest.raises(StoreError, match="deleted or replaced") as caught:
                store.update("order-1", lambda s: s.close())
            assert str(path) in str(caught.value)
            assert caught.value.integration_id == "order-1"
            with pytest.raises(StoreError, match="deleted or replaced"):
                store.create(CustomerSession(integration_id="order-2"))

    def test_a_replaced_file_is_a_store_error_not_a_write_to_the_old_one(self, tmp_path):
        """A file replaced by another database is refused, as are reads: they would be stale."""
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))
            with closing(sqlite3.connect(tmp_path / "new.db")) as other:
                other.execute("CREATE TABLE unrelated (x)")
            (tmp_path / "new.db").replace(path)
            with pytest.raises(StoreError, match="deleted or replaced"):
                store.update("order-1", lambda s: s.close())
            with pytest.raises(StoreError, match="open a new store object"):
                store.get("order-1")


class TestGivingUpOnTheWriteLock:
    """Another connection holds SQLite's write lock for longer than the store's timeout."""

    def test_a_write_is_a_store_timeout_naming_the_file_the_timeout_and_the_session(self, tmp_path):
        """The error says who held what for longer than which timeout, and what to do."""
        path = tmp_path / "x.db"
        with SQLiteStore(path, timeout=0.2) as store:
            store.create(CustomerSession(integration_id="order-1"))
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StoreTimeout) as caught:
                    store.update("order-1", lambda s: s.close())
        error = caught.value
        assert str(error) == (
            f"session 'order-1': gave up waiting for the write lock of the SQLite database "
            f"'{path}': another connection or program held it for longer than the store's "
            "timeout of 0.2 seconds, so nothing was written; raise the store's timeout, or "
            "find the long writer (in WAL mode, reads go on while it writes)"
        )
        assert (error.database, error.waited_for, error.setting, error.timeout) == (
            str(path),
            "the write lock",
            "timeout",
            0.2,
        )
        assert error.integration_id == "order-1"
        assert isinstance(error.__cause__, sqlite3.OperationalError)

    def test_it_is_logged_as_one_warning(self, tmp_path, caplog):
        """Giving up is a warning on the stores' logger naming the session, file and timeout."""
        path = tmp_path / "x.db"
        caplog.set_level(logging.WARNING, logger="customer_session")
        with SQLiteStore(path, timeout=0.2) as store:
            store.create(CustomerSession(integration_id="order-1"))
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StoreTimeout):
                    store.update("order-1", lambda s: s.close())
        (record,) = caplog.records
        assert (record.name, record.levelno, record.exc_info) == (
            "customer_session.store",
            logging.WARNING,
            None,
        )
        assert record.getMessage() == (
            f"session 'order-1': gave up waiting for the write lock in {path} (the store's "
            "timeout of 0.2 seconds ran out); nothing was written (StoreTimeout)"
        )
        assert {
            name: getattr(record, name)
            for name in ("event", "integration_id", "database", "waited_for", "setting", "timeout")
        } == {
            "event": "store_timeout",
            "integration_id": "order-1",
            "database": str(path),
            "waited_for": "the write lock",
            "setting": "timeout",
            "timeout": 0.2,
        }

    def test_update_does_not_retry_it(self, tmp_path):
        """update() runs its change once: the timeout was the wait, retrying would double it."""
        path = tmp_path / "x.db"
        runs = []
        with SQLiteStore(path, timeout=0.1) as store:
            store.create(CustomerSession(integration_id="order-1"))
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StoreTimeout):
                    store.update("order-1", lambda s: runs.append(s.close()), retries=5)
        assert len(runs) == 1

    def test_another_sqlite_error_stays_a_plain_store_error(self, tmp_path):
        """Only SQLite's busy code is a timeout: a file that is no database is not."""
        path = tmp_path / "x.db"
        path.write_bytes(b"not a database" * 100)
        with pytest.raises(StoreError) as caught, SQLiteStore(path) as store:
            store.get("order-1")
        assert not isinstance(caught.value, StoreTimeout)


class TestRecordingADeliveryFails:
    """Another program holds the write lock when a delivery records what its handler did."""

    @pytest.mark.parametrize("fails", [False, True], ids=["returned", "raised"])
    def test_the_error_names_the_row_and_leaves_it_pending(self, tmp_path, fails):
        """The StoreError notes the row and what the handler did; the row stays pending."""
        path = tmp_path / "x.db"
        holder = sqlite3.connect(path, isolation_level=None)
        with closing(holder), SQLiteStore(path, timeout=0) as store:
            with_pending_row(store)

            def handler(effect: object) -> None:
                holder.execute("BEGIN IMMEDIATE")
                if fails:
                    raise ConnectionError("warehouse unreachable")

            with pytest.raises(StoreTimeout, match="gave up waiting for the write lock") as caught:
                store.deliver(handler)
            holder.execute("ROLLBACK")
            (note,) = caught.value.__notes__
            assert "outbox row 1 ('notify' for session 'order-1'" in note
            did = (
                "raised ConnectionError: warehouse unreachable, and this failure is not counted"
                if fails
                else "returned, but the row could not be marked delivered"
            )
            assert did in note
            assert [e.attempts for e in store.pending()] == [0]
            assert store.deliver(lambda e: None) == 1


class TestDeliveryLockFile:
    def test_deliver_with_nothing_pending_needs_no_lock_file(self, tmp_path):
        """With nothing pending, deliver() returns 0 even where no lock file can be created.

        Here the database is writable but its directory is not.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.create(CustomerSession(integration_id="order-1"))  # opens the WAL files
            with unwritable(tmp_path):
                assert store.deliver(lambda e: None) == 0
                store.update("order-1", lambda s: s.close())  # the database stays writable
        assert not (tmp_path / "x.db-deliver").exists()

    def test_a_private_memory_database_delivers_without_a_lock_file(self, tmp_path, monkeypatch):
        """A ``:memory:`` database has one user, its store object: no lock file anywhere."""
        monkeypatch.chdir(tmp_path)
        with SQLiteStore(":memory:") as store:
            with_pending_row(store)
            assert store.deliver(lambda e: None) == 1
        assert list(tmp_path.iterdir()) == []

    def test_a_lock_file_that_cannot_be_created_is_a_store_error_naming_it(self, tmp_path):
        """With rows pending, a lock file the process cannot create is a StoreError saying so.

        No row is handed over: nothing would keep another deliverer from the same rows.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            with_pending_row(store)
            handed = []
            with unwritable(tmp_path), pytest.raises(StoreError) as caught:
                store.deliver(handed.append)
            message = str(caught.value)
            assert message.startswith(f"{path}-deliver: cannot open as the delivery lock file")
            assert "create it in the database's directory" in message
            assert handed == []
            assert [e.attempts for e in store.pending()] == [0]

    def test_a_fifo_in_place_of_the_lock_file_is_a_store_error(self, tmp_path):
        """A FIFO named as the lock file is refused at once, not waited on for a writer."""
        path = tmp_path / "x.db"
        lock = tmp_path / "x.db-deliver"
        os.mkfifo(lock)
        raised: list[BaseException] = []
        with SQLiteStore(path) as store:
            with_pending_row(store)

            def deliver() -> None:
                try:
                    store.deliver(lambda e: None)
                except StoreError as exc:
                    raised.append(exc)

            thread = threading.Thread(target=deliver, daemon=True)
            thread.start()
            thread.join(timeout=30)
            if thread.is_alive():  # let the open go on, so the thread ends
                os.close(os.open(lock, os.O_WRONLY | os.O_NONBLOCK))
            assert not thread.is_alive(), "deliver() waits for a writer of the FIFO"
            (error,) = raised
            assert str(error).startswith(
                f"{lock}: cannot open as the delivery lock file (not a regular file)"
            )
            assert [e.attempts for e in store.pending()] == [0]

    def test_a_directory_in_place_of_the_lock_file_is_a_store_error(self, tmp_path):
        """A directory named as the lock file is a StoreError naming it."""
        path = tmp_path / "x.db"
        (tmp_path / "x.db-deliver").mkdir()
        with SQLiteStore(path) as store:
            with_pending_row(store)
            with pytest.raises(StoreError, match="cannot open as the delivery lock file"):
                store.deliver(lambda e: None)

    def test_a_child_forked_during_a_delivery_does_not_hold_its_lock(self, tmp_path):
        """A process forked by a handler leaves the lock to the deliveries after it.

        The child (a worker pool started by the handler, say) outlives the delivery;
        had it kept the lock file open, the next delivery would wait for it to exit.
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store, SQLiteStore(path) as other:
            with_pending_row(store)
            store.update("order-1", lambda s: s.cancel())
            wait_end, hold_end = os.pipe()
            children: list[int] = []
            delivered: list[int] = []
            thread = threading.Thread(
                target=lambda: delivered.append(other.deliver(lambda e: None)), daemon=True
            )

            def fork_a_child(effect: object) -> None:
                pid = os.fork()
                if pid == 0:  # the child: wait for the test to end it, touching nothing
                    os.close(hold_end)
                    os.read(wait_end, 1)
                    os._exit(0)
                children.append(pid)

            try:
                assert store.deliver(fork_a_child, limit=1) == 1
                thread.start()
                thread.join(timeout=30)
                assert not thread.is_alive(), "deliver() waits for the forked child"
                assert delivered == [1]
            finally:
                os.close(hold_end)  # the child reads the end of the pipe, and exits
                os.close(wait_end)
                for pid in children:
                    os.waitpid(pid, 0)
                if thread.ident is not None:
                    thread.join(timeout=30)

    def test_a_lock_file_the_process_may_only_read_serves(self, tmp_path):
        """An existing lock file that this process cannot write still serializes deliveries."""
        path = tmp_path / "x.db"
        lock = tmp_path / "x.db-deliver"
        lock.touch()
        with SQLiteStore(path) as store, unwritable(lock):
            with_pending_row(store)
            assert store.deliver(lambda e: None) == 1


class TestSharedMemoryDatabase:
    @staticmethod
    def uri() -> str:
        """A shared-cache in-memory database of its own (the name is the process's)."""
        return f"file:sessions-{uuid.uuid4().hex}?mode=memory&cache=shared"

    def test_store_objects_on_a_shared_memory_database_deliver_in_turn(self):
        """A second store object on the database waits for a running delivery; no row twice."""
        uri = self.uri()
        with SQLiteStore(uri) as first, SQLiteStore(uri) as second:
            with_pending_row(first)
            # The process's one thread lock of the database, which both objects share.
            turns = WaitSpy(second._memory_turns)
            assert turns.lock is first._memory_turns
            second._memory_turns = turns
            deliveries_take_turns(first, second, turns.waiting.is_set)

    @pytest.mark.parametrize(
        ("first_uri", "second_uri"),
        [
            ("file:{name}?mode=memory&cache=shared", "file:{name}?mode=memory&cache=shared"),
            # The same database, as SQLite finds it: by decoded name and VFS object.
            ("file:{name}?mode=memory&cache=shared", "file:{escaped}?cache=shared&mode=memory"),
            (
                "file:{name}?mode=memory&cache=shared",
                "file:{name}?mode=memory&cache=shared&vfs={vfs}",
            ),
            # memdb shares a name that starts with "/" (and there is no file to lock).
            ("file:/{name}?vfs=memdb", "file:/{name}?vfs=memdb"),
            # ... or with a backslash, as memdbOpen reads it.
            ("file:%5C{name}?vfs=memdb", "file:%5C{name}?vfs=memdb"),
            # A VFS other than the default keeps a shared cache of its own: the same one.
            (
                "file:{name}?mode=memory&cache=shared&vfs={other_vfs}",
                "file:{name}?cache=shared&vfs={other_vfs}&mode=memory",
            ),
            # An option without a value ('foo', empty) leaves the options after it.
            ("file:{name}?mode=memory&cache=shared", "file:{name}?foo&mode=memory&cache=shared"),
            # SQLite drops the rest of a path or value from an escaped NUL.
            ("file:{name}?mode=memory&cache=shared", "file:{name}%00x?mode=memory&cache=shared"),
            ("file:{name}?mode=memory&cache=shared", "file:{name}?mode=memory%00x&cache=shared"),
        ],
    )
    def test_deliver_from_a_handler_through_another_store_object_is_refused(
        self, first_uri, second_uri
    ):
        """A handler delivering the database through another store object raises WorkflowError.

        Whichever URI each store object was given for it.
        """
        # The default VFS by name: a URI without vfs= uses the same VFS object.
        tail = uuid.uuid4().hex
        names = {
            "name": f"s{tail}",
            "escaped": f"%73{tail}",  # the same name: %73 is "s"
            "vfs": "win32" if os.name == "nt" else "unix",
            "other_vfs": "win32-none" if os.name == "nt" else "unix-dotfile",
        }
        with (
            SQLiteStore(first_uri.format_map(names)) as first,
            SQLiteStore(second_uri.format_map(names)) as second,
        ):
            with_pending_row(first)
            error = nested_delivery_refusal(first, lambda: second.deliver(lambda e: None))
            assert isinstance(error, WorkflowError)
            assert "from a handler of a delivery of the same outbox" in str(error)
            assert [e.attempts for e in second.pending()] == [1]
            assert second.deliver(lambda e: None) == 1
        # No lock file beside a database that is no file (memdb's name starts with "/").
        assert not Path(f"/{names['name']}-deliver").exists()

    @pytest.mark.parametrize(
        ("first_uri", "second_uri"),
        [
            # Bytes that are no UTF-8 are names of their own (not both U+FFFD).
            ("file:{name}%ff?mode=memory&cache=shared", "file:{name}%fe?mode=memory&cache=shared"),
            # A tab is part of the name (urllib would drop it).
            ("file:{name}\tx?mode=memory&cache=shared", "file:{name}x?mode=memory&cache=shared"),
            # An empty name is a private database, whatever the cache option says.
            ("file:?mode=memory&cache=shared", "file:?mode=memory&cache=shared"),
            # memdb shares only a name of two bytes or more that starts with "/" or "\\".
            ("file:{name}?vfs=memdb", "file:{name}?vfs=memdb"),
            ("file:/?vfs=memdb", "file:/?vfs=memdb"),
        ],
    )
    def test_a_handler_may_deliver_what_sqlite_opens_as_another_database(
        self, first_uri, second_uri
    ):
        """Store objects on URIs SQLite opens as two databases deliver independently."""
        names = {"name": f"s{uuid.uuid4().hex}"}
        first_uri, second_uri = first_uri.format_map(names), second_uri.format_map(names)
        with SQLiteStore(first_uri) as first, SQLiteStore(second_uri) as second:
            for store in (first, second):
                with_pending_row(store)
            assert [e.attempts for e in second.pending()] == [0]  # not the first's row
            inner = []
            assert first.deliver(lambda e: inner.append(second.deliver(lambda e: None))) == 1
            assert inner == [1]

    def test_a_handler_may_deliver_another_memory_database(self):
        """Store objects on different in-memory databases deliver independently."""
        with SQLiteStore(self.uri()) as first, SQLiteStore(":memory:") as private:
            for store in (first, private):
                with_pending_row(store)
            inner = []
            assert first.deliver(lambda e: inner.append(private.deliver(lambda e: None))) == 1
            assert inner == [1]


@contextmanager
def intruder_at(monkeypatch, path: Path, select: str, write: str) -> Iterator[list[str]]:
    """Let another connection try ``write`` when a store starts a ``select``, once.

    Yields the outcome, filled as the store runs: ``"locked"`` when the store's
    transaction kept the other connection out, ``"written"`` when it got in.
    """
    outcomes: list[str] = []
    connect = sqlite3.connect

    def intrude(statement: str) -> None:
        if statement.lstrip().startswith(select) and not outcomes:
            try:
                other.execute(write)
            except sqlite3.OperationalError as exc:
                outcomes.append("locked" if "locked" in str(exc) else str(exc))
            else:
                outcomes.append("written")

    def tracing(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(intrude)
        return connection

    with closing(connect(path, timeout=0, isolation_level=None)) as other:
        monkeypatch.setattr(sqlite3, "connect", tracing)
        yield outcomes


class TestOutboxReadsInItsTransaction:
    def test_discard_reads_the_row_it_discarded_before_any_other_write(self, tmp_path, monkeypatch):
        """discard() reads its row back in its UPDATE's transaction: no writer comes between."""
        path = tmp_path / "sessions.db"
        with SQLiteStore(path) as store:
            store.on_commit("notify")
            store.create(CustomerSession(integration_id="order-1"))
            store.update("order-1", lambda session: session.close())
        write = "DELETE FROM customer_session_outbox"
        with (
            intruder_at(monkeypatch, path, "SELECT sequence", write) as outcomes,
            SQLiteStore(path) as store,
        ):
            discarded = store.discard(1, reason="poison")
        assert (discarded.sequence, discarded.discard_reason) == (1, "poison")
        assert outcomes == ["locked"]

    def test_a_failure_reads_the_rows_status_before_any_other_write(self, tmp_path, monkeypatch):
        """A counted failure reads whether it discarded the row in its UPDATE's transaction."""
        path = tmp_path / "sessions.db"
        with SQLiteStore(path) as store:
            store.on_commit("notify")
            store.create(CustomerSession(integration_id="order-1"))
            store.update("order-1", lambda session: session.close())
        write = "UPDATE customer_session_outbox SET delivered_at = 'x', discarded_at = 'x'"

        def refuse(effect):
            raise ConnectionError("receiver down")

        with (
            intruder_at(monkeypatch, path, "SELECT discarded_at IS NOT NULL", write) as outcomes,
            SQLiteStore(path) as store,
            pytest.raises(ConnectionError) as caught,
        ):
            store.deliver(refuse, max_attempts=5)
        assert caught.value.__notes__[-1].endswith("it stays pending")
        assert outcomes == ["locked"]


class TestSQLiteVersion:
    def test_no_statement_needs_sqlite_3_35(self, tmp_path, monkeypatch):
        """Every statement the store runs works on SQLite 3.34 (RHEL 9, Debian 11): no RETURNING.

        The statements are traced while the store runs its writes, deliveries (a
        failure counted, a row discarded at max_attempts and by hand), reads and
        housekeeping, and a replay that takes over a refused line's key.
        """
        traced: list[str] = []
        connect = sqlite3.connect

        def tracing(*args, **kwargs):
            connection = connect(*args, **kwargs)
            connection.set_trace_callback(traced.append)
            return connection

        monkeypatch.setattr(sqlite3, "connect", tracing)
        path = tmp_path / "sessions.db"
        with SQLiteStore(path) as store:
            store.on_commit("notify", trigger="close")
            for integration_id in ("order-1", "order-2", "order-3"):
                store.create(CustomerSession(integration_id=integration_id))
                store.update(integration_id, lambda s: s.close(), key=f"k-{integration_id}")

            def fails(effect):
                raise ConnectionError("down")

            for _ in range(2):
                with pytest.raises(ConnectionError):
                    store.deliver(fails, max_attempts=2)
            store.discard(store.pending()[0].sequence, reason="given up")
            assert len(store.discarded()) == 2
            assert store.deliver(lambda effect: None) == 1
            store.history("order-1")
            store.ids(state=State.CLOSED)
            store.counts()
            store.purge_delivered(before=datetime.now(UTC) + timedelta(seconds=1))
            store.forget_keys(before=datetime.now(UTC) - timedelta(days=1))
        create = (
            '{"op": "create", "session": "order-9", "at": "2026-03-02T10:00:00Z", '
            '"customerSession": {}}'
        )
        close = (
            '{"op": "update", "session": "order-9", "at": "2026-03-02T11:00:00Z", '
            '"customerSession": {"state": "closed"}}'
        )
        with StoreReplayer(path) as replayer:
            replayer.run([create[:20], close])
        with StoreReplayer(path) as replayer:
            assert replayer.run([create, close]).refused == []
        assert any("DO UPDATE" in statement for statement in traced)  # the key taken over
        assert any("discard_reason" in statement for statement in traced)
        assert [s for s in traced if "RETURNING" in s.upper()] == []
