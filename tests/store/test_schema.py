"""Migrations (``_schema.py``): real databases at each older version, opened by this library.

Each database is built by the migrations of its version alone (as the library of
that version left it), filled with rows by plain SQL, then opened: every row must
read back the same and every operation must work after.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_session import CartItem, CustomerSession, State, StoreError, StoreTimeout
from customer_session.store import (
    SCHEMA_VERSION,
    ProcessedKey,
    _postgres,
    _sqlite,
    open_store,
    rebuild,
)
from customer_session.store._schema import MIGRATIONS

from .conftest import BACKENDS, COLUMNS
from .conftest import run_sql as run

OLDER = range(1, SCHEMA_VERSION)


def dialect(database: str) -> str:
    return "postgres" if database.startswith("postgresql://") else "sqlite"


def columns(table: str, version: int) -> tuple[str, ...]:
    """The columns of ``table`` a database of ``version`` has, of those this test writes."""
    more = ("refusal",) if table == "customer_session_keys" and version >= 3 else ()
    return COLUMNS[table] + more


def filled_at(version: int, database: str, scratch: str) -> None:
    """Make ``database`` a store of schema ``version`` holding ``scratch``'s rows.

    ``scratch`` is a database of the same backend that this library filled: its
    rows are copied with the columns ``version`` has (their sequence numbers given
    by the old database).
    """
    for step in MIGRATIONS[dialect(database)][:version]:
        for statement in step:
            run(database, statement)
    run(database, "INSERT INTO customer_session_schema (id, version) VALUES (1, ?)", version)
    for table in COLUMNS:
        names = [c for c in columns(table, version) if c != "sequence"]
        listed = ", ".join(names)
        marks = ", ".join("?" for _ in names)
        for row in run(scratch, f"SELECT {listed} FROM {table} ORDER BY 1, 2"):  # noqa: S608 - our own names
            run(database, f"INSERT INTO {table} ({listed}) VALUES ({marks})", *row)  # noqa: S608 - same as above


def rows(database: str, version: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, with the columns of ``version``, in a fixed order."""
    listed = {table: ", ".join(columns(table, version)) for table in COLUMNS}
    return {
        table: run(database, f"SELECT {listed[table]} FROM {table} ORDER BY 1, 2")  # noqa: S608 - our own names
        for table in COLUMNS
    }


def postgres_at_version_3(server: Any) -> tuple[str, dict[str, list[tuple[Any, ...]]]]:
    """A fresh PostgreSQL schema made a version 3 store holding :func:`fill`'s rows; its rows."""
    old, scratch = server.fresh_schema(), server.fresh_schema()
    with open_store(scratch) as store:
        fill(store)
    filled_at(3, old, scratch)
    return old, rows(old, 3)


def fill(store: Any) -> None:
    """Sessions, journal entries, outbox rows pending and delivered, keys applied and refused."""
    store.on_commit("erp", trigger="close")
    for n in range(1, 4):
        store.create(
            CustomerSession(
                integration_id=f"order-{n}", cart_items=(CartItem(sku="A", quantity=n),)
            ),
            key=f"create-{n}",
        )
    store.update("order-1", lambda s: s.close(), key="close-1")
    store.update("order-2", lambda s: s.close())
    assert store.deliver(lambda effect: None, limit=1) == 1  # order-1's delivered
    store.update("order-2", lambda s: s.cancel(), operation="cancel by support")


def effects_plan(database: str) -> str:
    """The plan of ``outbox_effects()``'s query (PostgreSQL's with sequential scans shunned).

    Rows are few in these tests, so PostgreSQL would read the table anyway: told to
    avoid that, it still does when no index fits the query.
    """
    if dialect(database) == "sqlite":
        rows = run(database, f"EXPLAIN QUERY PLAN {_sqlite._OUTBOX_EFFECTS}")
        return "\n".join(str(row[-1]) for row in rows)
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("SET enable_seqscan = off")
        rows = connection.execute(f"EXPLAIN {_postgres._OUTBOX_EFFECTS}").fetchall()
    return "\n".join(str(row[0]) for row in rows)


@pytest.fixture(params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, str]:
    """Two fresh databases of one backend: the old store to build, and a scratch one."""
    if request.param == "sqlite":
        return str(tmp_path / "old.db"), str(tmp_path / "scratch.db")
    server = request.getfixturevalue("pg_server")
    return server.fresh_schema(), server.fresh_schema()


@pytest.fixture
def scratch_store(databases: tuple[str, str]) -> Any:
    """The scratch database, filled by this library; the store on it."""
    with open_store(databases[1]) as store:
        fill(store)
        store.mark_processed("refused-1", integration_id="order-3", refusal="not yet")
        yield store


def indexes(database: str) -> list[str]:
    """The names of the indexes on the store's tables, sorted."""
    if dialect(database) == "postgres":
        found = run(
            database, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    else:
        found = run(database, "SELECT name FROM sqlite_master WHERE type = 'index'")
    return sorted(name for (name,) in found)


class TestEveryOlderVersion:
    @pytest.mark.parametrize("version", OLDER)
    def test_ends_with_the_indexes_of_a_new_store(self, version, databases, scratch_store):
        """A migrated database has exactly the indexes a store created at this version has."""
        old, scratch = databases
        filled_at(version, old, scratch)
        with open_store(old) as store:
            store.counts()  # migrates
        assert indexes(old) == indexes(scratch)

    @pytest.mark.parametrize("version", OLDER)
    def test_every_row_survives_and_reads_back_the_same(self, version, databases, scratch_store):
        """A database of each older version keeps every row; the store reads them as written."""
        old, scratch = databases
        filled_at(version, old, scratch)
        before = rows(old, version)
        with open_store(old) as store:
            for n in range(1, 4):
                assert store.get(f"order-{n}") == scratch_store.get(f"order-{n}")
                history = store.history(f"order-{n}")
                assert [(e.version, e.kind, e.operation, e.records) for e in history] == [
                    (e.version, e.kind, e.operation, e.records)
                    for e in scratch_store.history(f"order-{n}")
                ]
                assert rebuild(history) == store.get(f"order-{n}")
            assert [e.key for e in store.pending()] == [e.key for e in scratch_store.pending()]
            assert store.processed_key("close-1") == ProcessedKey("close-1", "order-1", None)
            refused = ProcessedKey("refused-1", "order-3", "not yet" if version >= 3 else None)
            assert store.processed_key("refused-1") == refused
        assert run(old, "SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        assert rows(old, version) == before

    @pytest.mark.parametrize("version", OLDER)
    def test_every_operation_works_after(self, version, databases, scratch_store):
        """After migrating, sessions change, keys and the outbox work, long ids are stored."""
        old, scratch = databases
        filled_at(version, old, scratch)
        with open_store(old) as store:
            assert store.outbox_effects() == ("erp",)  # from the index the step made
            store.on_commit("erp", trigger="close")
            store.update("order-3", lambda s: s.close(), key="close-3")
            assert store.processed("close-3")
            copied, pending = store.pending()
            assert (copied.integration_id, pending.integration_id) == ("order-2", "order-3")
            assert store.discard(copied.sequence, reason="gave up").discard_reason == "gave up"
            assert store.deliver(lambda effect: None) == 1
            store.update("order-1", lambda s: s.cancel(), actor="support")
            assert store.history("order-1")[-1].actor == "support"
            # 1,000 CJK characters, none twice: 3,000 bytes, past a btree entry's limit.
            wide = "".join(chr(0x4E00 + n * 7919 % 20_000) for n in range(1000))
            store.create(CustomerSession(integration_id=wide), key=wide)
            assert store.get(wide).state is State.OPEN
            assert store.processed_key(wide) == ProcessedKey(wide, wide, None)
            moment = datetime.now(UTC) + timedelta(seconds=5)
            assert store.purge_delivered(before=moment) == 3
            assert store.forget_keys(before=moment) >= 4
            assert sorted(store.ids()) == sorted(["order-1", "order-2", "order-3", wide])

    @pytest.mark.parametrize("version", OLDER)
    def test_outbox_effects_reads_the_index_of_names_the_migration_makes(
        self, version, databases, scratch_store
    ):
        """A migrated store, as a new one, finds the outbox's effect names by an index alone."""
        old, scratch = databases
        filled_at(version, old, scratch)
        with open_store(old) as store:
            assert store.outbox_effects() == ("erp",)
        for database in (old, scratch):
            plan = effects_plan(database)
            assert "customer_session_outbox_effect" in plan
            assert "Seq Scan" not in plan
            assert "SCAN customer_session_outbox\n" not in f"{plan}\n"


# What stops the step to version 4, per backend: a table of the name SQLite's step
# copies the outbox into; on PostgreSQL, a table of the user's whose foreign key
# needs the primary key on the id's text, which the step replaces by the digest's.
OBSTACLES = {
    "sqlite": "CREATE TABLE customer_session_outbox_v4 (x INTEGER)",
    "postgres": (
        "CREATE TABLE invoices (integration_id text REFERENCES customer_sessions (integration_id))"
    ),
}


class TestFailedMigration:
    def test_leaves_the_database_as_it_was_and_says_what_failed(self, databases, scratch_store):
        """A step the old database makes fail is rolled back whole, with an error naming it."""
        old, scratch = databases
        filled_at(3, old, scratch)
        run(old, OBSTACLES[dialect(old)])
        before = rows(old, 3)
        with open_store(old) as store, pytest.raises(StoreError) as caught:
            store.get("order-1")
        message = str(caught.value)
        assert message.startswith("session 'order-1': cannot migrate ")
        assert f"from schema version 3 to {SCHEMA_VERSION}" in message
        assert "it is still at version 3, unchanged" in message
        assert type(caught.value) is StoreError
        assert caught.value.integration_id == "order-1"
        assert run(old, "SELECT version FROM customer_session_schema") == [(3,)]
        assert rows(old, 3) == before

    @pytest.mark.postgres
    @pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
    def test_a_server_timeout_says_the_migration_failed_and_what_is_left(self, pg_server, setting):
        """A migration the server's lock or statement timeout stops is a StoreTimeout saying so."""
        import psycopg  # noqa: PLC0415 - optional dependency

        old, before = postgres_at_version_3(pg_server)
        with psycopg.connect(old) as blocker:
            # The step to version 4 alters the keys table last: it waits for this lock.
            blocker.execute("LOCK TABLE customer_session_keys IN ACCESS SHARE MODE")
            with (
                open_store(f"{old}%20-c{setting}%3D300") as store,
                pytest.raises(StoreTimeout) as caught,
            ):
                store.get("order-1")
            blocker.rollback()
        message = str(caught.value)
        assert message.startswith("session 'order-1': cannot migrate PostgreSQL database ")
        assert f"from schema version 3 to {SCHEMA_VERSION}: " in message
        assert f"the server's {setting}" in message
        assert message.endswith("it is still at version 3, unchanged")
        assert "so nothing was written" not in message  # said of one statement, not a migration
        assert (caught.value.setting, caught.value.timeout) == (setting, None)
        assert caught.value.integration_id == "order-1"
        assert run(old, "SELECT version FROM customer_session_schema") == [(3,)]
        assert rows(old, 3) == before


# A process that opens the store at argv[1] and waits for argv[2] to exist first.
OPENER = """
import os, sys, time
from customer_session.store import open_store
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
with open_store(sys.argv[1]) as store:
    print(store.get("order-1").state)
"""


def opener(database: str, go: str) -> subprocess.Popen[str]:
    """Start a process that opens ``database`` once ``go`` exists."""
    return subprocess.Popen(
        [sys.executable, "-c", OPENER, database, go], stdout=subprocess.PIPE, text=True
    )


class TestConcurrentAndInterrupted:
    @pytest.mark.parametrize("version", OLDER)
    def test_two_processes_migrating_at_once_both_work(
        self, version, databases, scratch_store, tmp_path
    ):
        """Two processes opening one old database together migrate it once; both read it."""
        old, scratch = databases
        filled_at(version, old, scratch)
        before = rows(old, version)
        go = str(tmp_path / "go")
        processes = [opener(old, go) for _ in range(2)]
        (tmp_path / "go").touch()
        for process in processes:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0
            assert out.strip() == "closed"
        assert run(old, "SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        assert rows(old, version) == before

    @pytest.mark.postgres
    def test_a_migration_killed_half_way_leaves_the_old_version_whole(self, pg_server, tmp_path):
        """A migration killed half-way leaves version 3 as it was; the next one works."""
        import psycopg  # noqa: PLC0415 - optional dependency

        old, before = postgres_at_version_3(pg_server)
        with psycopg.connect(old) as blocker:
            # The step to version 4 alters the keys table last: it waits here.
            blocker.execute("LOCK TABLE customer_session_keys IN ACCESS SHARE MODE")
            (tmp_path / "go").touch()
            process = opener(old, str(tmp_path / "go"))
            deadline = time.monotonic() + 60
            while not run(
                pg_server.url,
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'ALTER TABLE customer_session_keys%%'",
            ):
                assert time.monotonic() < deadline, "the migration never reached the keys"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=60)  # reaps it and closes its pipe
            blocker.rollback()
        assert run(old, "SELECT version FROM customer_session_schema") == [(3,)]
        assert rows(old, 3) == before
        names = run(
            old,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name LIKE '%%digest'",
        )
        assert names == []
        with open_store(old) as store:
            assert store.get("order-1").state is State.CLOSED
