"""Damaged databases and missing drivers give clear library errors, never crashes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from tests.conftest import require_module

from customer_session import (
    CartItem,
    CorruptData,
    CustomerSession,
    KeyAlreadyProcessed,
    ReopenableCustomerSession,
    SessionExists,
    State,
    StoreError,
    UnsupportedSchema,
    ValidationError,
    WorkflowError,
)
from customer_session.store import (
    SCHEMA_VERSION,
    AsyncPostgresStore,
    PostgresStore,
    ProcessedKey,
    SQLiteStore,
    StoreReplayer,
    open_store,
    rebuild,
)
from customer_session.store._schema import MIGRATIONS

from .conftest import COLUMNS

if TYPE_CHECKING:
    from pathlib import Path


def stored(store, integration_id: str = "order-1") -> None:
    session = CustomerSession(
        integration_id=integration_id, cart_items=(CartItem(sku="A", quantity=2),)
    )
    store.create(session)


class TestCorruptRows:
    def test_document_that_is_not_json(self, store, sql, open_db):
        """A document that is not JSON is CorruptData naming the session."""
        stored(store)
        sql(
            "UPDATE customer_sessions SET document = ? WHERE integration_id = ?",
            '{"id": ',
            "order-1",
        )
        with pytest.raises(
            CorruptData, match=r"session 'order-1': the stored document is not valid JSON"
        ) as caught:
            open_db().get("order-1")
        assert caught.value.integration_id == "order-1"

    def test_document_that_does_not_restore(self, store, sql, open_db):
        """A document the restore path refuses lists its problems, the ValidationError chained."""
        stored(store)
        ((text,),) = sql("SELECT document FROM customer_sessions")
        sql(
            "UPDATE customer_sessions SET document = ?",
            text.replace('"quantity":2', '"quantity":"2"'),
        )
        with pytest.raises(
            CorruptData, match=r"session 'order-1'.*corrupt.*\$\.cartItems\[0\]\.quantity"
        ) as caught:
            open_db().update("order-1", lambda s: s.close())
        assert isinstance(caught.value.__cause__, ValidationError)

    def test_document_of_another_session(self, store, sql, open_db):
        """A row holding another session's document is refused."""
        stored(store, "a")
        stored(store, "b")
        ((text,),) = sql("SELECT document FROM customer_sessions WHERE integration_id = 'b'")
        sql("UPDATE customer_sessions SET document = ? WHERE integration_id = 'a'", text)
        with pytest.raises(
            CorruptData, match="session 'a': the stored document belongs to session 'b'"
        ):
            open_db().get("a")

    def test_document_changed_behind_the_cache(self, store, sql):
        """A row changed outside the store is read again, not served from the cache."""
        stored(store)
        store.get("order-1")
        sql("UPDATE customer_sessions SET document = 'garbage'")
        with pytest.raises(CorruptData, match="not valid JSON"):
            store.get("order-1")

    def test_corrupt_journal_row(self, store, sql):
        """A journal row whose records are not JSON is CorruptData naming the session."""
        stored(store)
        sql("UPDATE customer_session_journal SET records = '[{' WHERE integration_id = 'order-1'")
        with pytest.raises(CorruptData, match="session 'order-1': the stored journal records"):
            store.history("order-1")

    def test_journal_record_that_is_not_a_record(self, store, sql):
        """A journal record with an unknown trigger is CorruptData naming the session."""
        stored(store)
        store.update("order-1", lambda s: s.close())
        sql(
            "UPDATE customer_session_journal SET records = ? WHERE version = 2",
            '[{"trigger": "explode"}]',
        )
        with pytest.raises(CorruptData, match="session 'order-1': a stored history record"):
            store.history("order-1")

    def test_journal_record_of_a_move_the_table_lacks(self, store, sql):
        """A journal record of a move that is no edge of the table is CorruptData naming it."""
        stored(store)
        store.update("order-1", lambda s: s.close())
        sql(
            "UPDATE customer_session_journal SET records = ? WHERE version = 2",
            '[{"trigger": "close", "source": "closed", "destination": "open",'
            ' "timestamp": "2026-03-02T10:15:00Z"}]',
        )
        with pytest.raises(
            CorruptData,
            match=r"session 'order-1': journal entry \d+ records close\(\) from 'closed' to "
            r"'open', which is no move of CustomerSession's table; the row is corrupt",
        ):
            store.history("order-1")

    def test_journal_record_of_a_trigger_of_a_larger_table(self, store, sql):
        """A reopen record in a plain store is a WorkflowError advising the class that has it."""
        stored(store)
        store.update("order-1", lambda s: s.cancel())
        sql(
            "UPDATE customer_session_journal SET records = ? WHERE version = 2",
            '[{"trigger": "reopen", "source": "cancelled", "destination": "open",'
            ' "timestamp": "2026-03-02T10:15:00Z"}]',
        )
        with pytest.raises(WorkflowError, match=r"'reopen'.*ReopenableCustomerSession"):
            store.history("order-1")

    @pytest.mark.parametrize(
        ("column", "value", "message"),
        [
            ("kind", "teleport", "journal entry .* has an unknown kind 'teleport'"),
            ("records", '{"not": "a list"}', "journal entry .* has no record list"),
            (
                "records",
                (
                    '[{"trigger": "close", "source": "open", "destination": "closed",'
                    ' "timestamp": "2026-03-02T10:15:00"}]'
                ),
                "a stored history record .*has no time zone",
            ),
        ],
    )
    def test_journal_row_that_does_not_read(self, store, sql, column, value, message):
        """An unknown kind, records that are no list, a naive time: CorruptData naming it."""
        stored(store)
        sql(f"UPDATE customer_session_journal SET {column} = ?", value)  # noqa: S608 - test's own column names
        with pytest.raises(CorruptData, match=f"session 'order-1': {message}"):
            store.history("order-1")

    @pytest.mark.parametrize(
        "read",
        [lambda store: store.history("order-1"), lambda store: store.pending()],
        ids=["journal", "outbox"],
    )
    def test_stored_record_time_beyond_utc_is_corrupt_data(self, store, sql, read):
        """A stored record's time that has no UTC equivalent is CorruptData, not OverflowError."""
        store.on_commit("notify")
        stored(store)
        store.update("order-1", lambda s: s.close())
        record = (
            '{"trigger": "close", "source": "open", "destination": "closed",'
            ' "timestamp": "0001-01-01T00:30:00+01:00"}'
        )
        sql("UPDATE customer_session_journal SET records = ? WHERE version = 2", f"[{record}]")
        sql("UPDATE customer_session_outbox SET record = ?", record)
        with pytest.raises(
            CorruptData, match=r"session 'order-1': a stored history record .*0001-01-01"
        ):
            read(store)

    @pytest.mark.parametrize("value", ["[1]", "null", '"order-1"', "7"])
    def test_outbox_document_that_is_no_object(self, store, sql, value):
        """An outbox document of JSON but no object is CorruptData; no handler is handed it."""
        store.on_commit("notify")
        stored(store)
        store.update("order-1", lambda s: s.close())
        sql("UPDATE customer_session_outbox SET document = ?", value)
        handed: list[object] = []
        with pytest.raises(CorruptData, match=r"session 'order-1': .*outbox document is no JSON"):
            store.deliver(lambda effect: handed.append(effect.document))
        assert handed == []
        (row,) = store.pending()  # still listed, for the operator to discard
        with pytest.raises(CorruptData, match="outbox document is no JSON object"):
            _ = row.document

    @pytest.mark.parametrize("value", ["[1, 2]", "null", '"cartItems"', "7"])
    def test_journal_changes_that_are_no_object(self, store, sql, value):
        """Journal changes that are no JSON object are CorruptData naming the entry, not a crash."""
        stored(store)
        store.update("order-1", lambda s: s.close())
        sql("UPDATE customer_session_journal SET changes = ? WHERE version = 2", value)
        with pytest.raises(
            CorruptData, match=r"session 'order-1': journal entry .* has no object of changes"
        ) as caught:
            store.history("order-1")
        assert caught.value.integration_id == "order-1"

    @pytest.mark.parametrize("cached", [True, False], ids=["cached", "fresh"])
    def test_state_column_that_disagrees_with_the_document(self, store, sql, open_db, cached):
        """A state column that is not its document's state is CorruptData, cached or not."""
        stored(store)
        sql("UPDATE customer_sessions SET state = 'cancelled'")
        reader = store if cached else open_db()
        with pytest.raises(
            CorruptData,
            match=(
                "session 'order-1': the stored state column says 'cancelled' but its "
                "document says 'open'; the row is corrupt"
            ),
        ) as caught:
            reader.get("order-1")
        assert caught.value.integration_id == "order-1"

    def test_a_damaged_state_column_once_seen_is_not_written_over(self, store, sql):
        """After a read found the state column damaged, update() refuses too; nothing written.

        The store's own copy of the session is dropped with the refusal, so the next
        change reads the row again instead of writing over what it found.
        """
        stored(store)
        sql("UPDATE customer_sessions SET state = 'cancelled'")
        with pytest.raises(CorruptData):
            store.get("order-1")
        with pytest.raises(CorruptData, match="the stored state column says 'cancelled'"):
            store.update("order-1", lambda s: s.close())
        assert sql("SELECT state, version FROM customer_sessions") == [("cancelled", 1)]

    def test_row_version_that_is_no_integer(self, tmp_path):
        """A row version that is no integer is CorruptData naming the session, not a crash.

        (SQLite only: PostgreSQL's bigint column holds nothing else.)
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            stored(store)
            with closing(sqlite3.connect(path)) as connection, connection:
                connection.execute("UPDATE customer_sessions SET version = 'two'")
            with pytest.raises(
                CorruptData, match="session 'order-1': the stored row version 'two' is no"
            ):
                store.update("order-1", lambda s: s.close())

    def test_a_session_of_a_larger_table_is_a_workflow_error(self, open_db):
        """A reopened session read through a store of the base table: WorkflowError, not corrupt."""
        writer = open_db(session_class=ReopenableCustomerSession)
        writer.create(ReopenableCustomerSession(integration_id="order-1"))
        writer.update("order-1", lambda s: s.close())
        writer.update("order-1", lambda s: s.reopen())
        with pytest.raises(WorkflowError, match="history holds 'reopen', which CustomerSession"):
            open_db().get("order-1")

    def test_a_session_of_the_reopen_table_names_the_class_that_reads_it(self, open_db):
        """The WorkflowError of a reopened session names ReopenableCustomerSession and --reopen."""
        writer = open_db(session_class=ReopenableCustomerSession)
        writer.create(ReopenableCustomerSession(integration_id="order-1"))
        writer.update("order-1", lambda s: s.close())
        writer.update("order-1", lambda s: s.reopen())
        with pytest.raises(WorkflowError) as raised:
            open_db().get("order-1")
        assert str(raised.value).endswith(
            "(ReopenableCustomerSession; on the command line: --reopen)"
        )

    def test_journal_actor_that_is_no_text(self, tmp_path):
        """A journal actor that is no text is CorruptData naming the session and the entry.

        (SQLite only: PostgreSQL's text column holds nothing else.)
        """
        path = tmp_path / "x.db"
        with SQLiteStore(path, actor="worker-1") as store:
            stored(store)
            with closing(sqlite3.connect(path)) as connection, connection:
                # A TEXT column turns a number into text, but keeps a blob as it is.
                connection.execute("UPDATE customer_session_journal SET actor = x'6869'")
            with pytest.raises(
                CorruptData,
                match=r"session 'order-1': journal entry 1 has an actor that is no text \(b'hi'\)",
            ) as caught:
                store.history("order-1")
        assert caught.value.integration_id == "order-1"

    def test_state_column_that_names_no_state(self, store, sql):
        """counts() over a row whose state column names no state is CorruptData quoting it."""
        stored(store)
        sql("UPDATE customer_sessions SET state = 'teleported'")
        with pytest.raises(CorruptData, match="a stored session has the state 'teleported'"):
            store.counts()

    @pytest.mark.parametrize(
        "where",
        [
            ("customer_session_journal", "recorded_at", lambda store: store.history("order-1")),
            ("customer_session_outbox", "created_at", lambda store: store.pending()),
        ],
    )
    @pytest.mark.parametrize("value", ["yesterday", "2026-03-02T10:15:00"])
    def test_stored_time_that_does_not_read(self, tmp_path, where, value):
        """A journal or outbox time that is no aware time is CorruptData naming the session.

        (SQLite only: PostgreSQL's timestamptz columns hold nothing else.)
        """
        table, column, read = where
        path = tmp_path / "x.db"
        with SQLiteStore(path) as store:
            store.on_commit("notify")
            stored(store)
            store.update("order-1", lambda s: s.close())
            with closing(sqlite3.connect(path)) as connection, connection:
                connection.execute(f"UPDATE {table} SET {column} = ?", (value,))  # noqa: S608 - the test's own names
            with pytest.raises(
                CorruptData,
                match=f"session 'order-1': the stored time of .* '{value}' is not a time",
            ):
                read(store)

    @pytest.mark.parametrize("value", ["yesterday", "2026-03-02T10:15:00"])
    def test_key_time_that_does_not_read(self, tmp_path, value):
        """A replay that meets a key whose recorded_at is no aware time stops with CorruptData.

        (SQLite only, as above.)
        """
        path = tmp_path / "x.db"
        with StoreReplayer(path) as replayer:
            replayer.run(["{"])  # a malformed line: its key is recorded with the refusal
        with closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("UPDATE customer_session_keys SET recorded_at = ?", (value,))
        with (
            StoreReplayer(path) as replayer,
            pytest.raises(
                CorruptData,
                match=(
                    r"store: idempotency key 'replay:[0-9a-f]{64}:0': its "
                    f"recorded_at '{value}' is no time this store wrote"
                ),
            ),
        ):
            replayer.run(["{"])


class TestSchemaVersion:
    def test_newer_schema_is_refused_naming_the_database(
        self, store, sql, open_db, backend, database
    ):
        """A database of a newer schema version is UnsupportedSchema naming the database first."""
        stored(store)
        sql("UPDATE customer_session_schema SET version = ?", SCHEMA_VERSION + 1)
        with pytest.raises(UnsupportedSchema) as caught:
            open_db().get("order-1")
        error = caught.value
        assert error.integration_id == "order-1"
        assert (error.found, error.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
        if backend == "sqlite":
            assert error.database == database
        else:
            assert error.database.startswith("PostgreSQL database ")
            assert "(schema 's_" in error.database
        assert str(error) == (
            f"{error.database} has customer-session schema version {SCHEMA_VERSION + 1}, but "
            f"this library knows versions up to {SCHEMA_VERSION}; it was written by a newer "
            "customer-session: upgrade the library to use it"
        )

    def test_newer_schema_is_refused_naming_the_database_for_store_wide_calls(
        self, store, sql, open_db
    ):
        """Calls that concern no session name the database too."""
        stored(store)
        sql("UPDATE customer_session_schema SET version = 99")
        with pytest.raises(UnsupportedSchema) as caught:
            open_db().pending()
        assert caught.value.integration_id is None
        assert str(caught.value).startswith(
            f"{caught.value.database} has customer-session schema version 99"
        )

    @pytest.mark.parametrize(
        ("damage", "found"),
        [
            ("DELETE FROM customer_session_schema", "no schema version"),
            ("UPDATE customer_session_schema SET version = -1", "the schema version -1"),
            ("DROP TABLE customer_session_schema", "no schema version"),
        ],
    )
    def test_damaged_schema_version_is_refused_as_damaged(self, store, sql, open_db, damage, found):
        """A missing or impossible schema version is refused as damage, not as a newer schema."""
        stored(store)
        sql(damage)
        with pytest.raises(
            UnsupportedSchema,
            match=(f"has customer-session tables but {found}, which no customer-session writes"),
        ) as caught:
            open_db().get("order-1")
        assert str(caught.value).startswith(f"{caught.value.database} has ")
        assert "upgrade" not in str(caught.value)
        assert sql("SELECT count(*) FROM customer_sessions") == [(1,)]

    def test_schema_is_created_once(self, store, open_db, sql):
        """A second store object on the same database reuses the schema and its data."""
        stored(store)
        assert open_db().get("order-1").integration_id == "order-1"
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]

    def test_a_version_1_database_is_migrated_on_first_use(self, store, open_db, sql, database):
        """A database an older library left at version 1 gains the version 2 indexes, data kept."""
        stored(store)
        store.on_commit("erp")
        store.update("order-1", lambda s: s.close(), key="event-1")
        store.deliver(lambda effect: None)
        sql("ALTER TABLE customer_session_keys DROP COLUMN refusal")  # added by version 3
        _undo_version_4(sql, database)
        for index in V2_INDEXES:
            sql(f"DROP INDEX {index}")
        sql("UPDATE customer_session_schema SET version = 1")
        assert not _indexes(sql, database) & set(V2_INDEXES)

        later = open_db()
        assert later.get("order-1").state is State.CLOSED
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        assert _indexes(sql, database) >= set(V2_INDEXES)
        assert later.processed("event-1")
        assert len(later.history("order-1")) == 2
        moment = datetime.now(UTC) + timedelta(seconds=5)
        assert later.purge_delivered(before=moment) == 1
        assert later.forget_keys(before=moment) == 1

    def test_a_version_2_database_gains_the_refusal_column(self, store, open_db, sql, database):
        """A version 2 database's keys read as applied; refusals are recorded after migrating."""
        stored(store)
        store.update("order-1", lambda s: s.close(), key="event-1")
        sql("ALTER TABLE customer_session_keys DROP COLUMN refusal")
        _undo_version_4(sql, database)
        sql("UPDATE customer_session_schema SET version = 2")

        later = open_db()
        assert later.processed_key("event-1") == ProcessedKey("event-1", "order-1", None)
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        later.mark_processed("event-2", integration_id="order-1", refusal="already closed")
        assert later.processed_key("event-2").refusal == "already closed"

    def test_a_version_3_database_gains_the_actor_column(self, store, open_db, sql, database):
        """A version 3 database's journal reads with no actor; new entries record theirs."""
        stored(store)
        store.update("order-1", lambda s: s.close(), key="event-1")
        _undo_version_4(sql, database)
        sql("UPDATE customer_session_schema SET version = 3")

        later = open_db(actor="worker-2")
        assert [entry.actor for entry in later.history("order-1")] == [None, None]
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        later.update("order-1", lambda s: s.cancel())
        history = later.history("order-1")
        assert [entry.actor for entry in history] == [None, None, "worker-2"]
        assert rebuild(history) == later.get("order-1")
        assert later.processed("event-1")

    def test_a_version_3_database_indexes_sessions_by_state_and_time(
        self, store, open_db, sql, database
    ):
        """Migrating version 3 replaces the state index by (state, updated), for ids() by state."""
        stored(store)
        _undo_version_4(sql, database)
        sql("UPDATE customer_session_schema SET version = 3")
        assert "customer_sessions_state" in _indexes(sql, database)

        later = open_db()
        assert later.ids(state=State.OPEN, limit=1) == ("order-1",)
        indexes = _indexes(sql, database)
        assert "customer_sessions_state_updated" in indexes
        assert "customer_sessions_state" not in indexes

    def test_a_version_3_outbox_keeps_its_rows_and_can_discard(self, store, open_db, sql, database):
        """A version 3 outbox keeps every row, none discarded; a pending one can be discarded."""
        stored(store)
        store.create(CustomerSession(integration_id="order-2"))
        store.on_commit("erp")
        for integration_id in ("order-1", "order-2"):
            store.update(integration_id, lambda s: s.close())
        assert store.deliver(lambda effect: None, limit=1) == 1
        _undo_version_4(sql, database)
        sql("UPDATE customer_session_schema SET version = 3")
        rows = sql("SELECT sequence, delivered_at FROM customer_session_outbox ORDER BY sequence")

        later = open_db()
        (pending,) = later.pending()
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        assert (pending.integration_id, pending.discarded_at) == ("order-2", None)
        assert later.discarded() == ()
        assert (
            sql("SELECT sequence, delivered_at FROM customer_session_outbox ORDER BY sequence")
            == rows
        )
        assert later.discard(pending.sequence, reason="gave up").discard_reason == "gave up"
        assert [e.integration_id for e in later.discarded()] == ["order-2"]
        assert later.pending() == ()

    @pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
    def test_a_version_3_postgres_database_is_keyed_by_digests(self, store, open_db, sql, database):
        """Migrating version 3 keys PostgreSQL's rows by digest, every row kept as it was."""
        stored(store)
        store.create(CustomerSession(integration_id="order-2"))
        store.on_commit("erp")
        store.update("order-1", lambda s: s.close(), key="event-1")
        store.mark_processed("event-2", integration_id="order-2", refusal="not yet")
        _undo_version_4(sql, database)
        sql("UPDATE customer_session_schema SET version = 3")
        before = {table: _rows(sql, table) for table in V3_TABLES}
        assert _unique_keys(sql) == {*OTHER_KEYS, *TEXT_KEYS}

        later = open_db()
        assert later.get("order-1").state is State.CLOSED
        assert sql("SELECT version FROM customer_session_schema") == [(SCHEMA_VERSION,)]
        assert _unique_keys(sql) == {*OTHER_KEYS, *DIGEST_KEYS}
        assert "customer_sessions_integration_id" in _indexes(sql, database)
        assert {table: _rows(sql, table) for table in V3_TABLES} == before
        with pytest.raises(SessionExists):
            later.create(CustomerSession(integration_id="order-1"))
        with pytest.raises(KeyAlreadyProcessed):
            later.update("order-2", lambda s: s.close(), key="event-1")
        # 1,000 CJK characters, none twice (text that repeats would compress): 3,000 bytes.
        wide = "".join(chr(0x4E00 + n * 7919 % 20_000) for n in range(1000))
        later.create(CustomerSession(integration_id=wide), key=wide)
        assert later.processed_key(wide) == ProcessedKey(wide, wide, None)
        assert later.processed_key("event-2") == ProcessedKey("event-2", "order-2", "not yet")

    def test_every_version_has_its_migration_step(self):
        """Each dialect has one step per version, so every older database can be brought up."""
        for steps in MIGRATIONS.values():
            assert len(steps) == SCHEMA_VERSION
            assert all(steps)


V2_INDEXES = ("customer_session_outbox_delivered", "customer_session_keys_recorded")


# The tables whose version 3 columns version 4 keeps as they were, with those columns.
V3_TABLES = {
    **COLUMNS,
    "customer_session_keys": (*COLUMNS["customer_session_keys"], "refusal"),
}
# The unique keys of version 3, on the text of ids and keys; and those of version 4.
TEXT_KEYS = (
    ("customer_sessions", ("integration_id",)),
    ("customer_session_journal", ("integration_id", "version")),
    ("customer_session_keys", ("key",)),
)
DIGEST_KEYS = (
    ("customer_sessions", ("integration_id_digest",)),
    ("customer_session_journal", ("integration_id_digest", "version")),
    ("customer_session_keys", ("key_digest",)),
)
OTHER_KEYS = (
    ("customer_session_schema", ("id",)),
    ("customer_session_journal", ("sequence",)),
    ("customer_session_outbox", ("sequence",)),
    ("customer_session_outbox", ("idempotency_key",)),
)


def _rows(sql, table: str) -> list[tuple[object, ...]]:
    """The rows of ``table``, its version 3 columns only, in the order of the first two."""
    return sql(f"SELECT {', '.join(V3_TABLES[table])} FROM {table} ORDER BY 1, 2")  # noqa: S608 - our own names


def _unique_keys(sql) -> set[tuple[str, tuple[str, ...]]]:
    """The primary and unique keys of the store's PostgreSQL tables: each table and columns."""
    rows = sql(
        "SELECT rel.relname, array_agg(att.attname::text ORDER BY k.n) FROM pg_constraint AS con"
        " JOIN pg_class AS rel ON rel.oid = con.conrelid"
        " CROSS JOIN unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute AS att ON att.attrelid = rel.oid AND att.attnum = k.attnum"
        " WHERE con.contype IN ('p', 'u')"
        " AND rel.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        " GROUP BY con.oid, rel.relname"
    )
    return {(table, tuple(columns)) for table, columns in rows}


def _undo_version_4(sql, database: str) -> None:
    """Take away what version 4 added: the actor, the discards, two indexes.

    The indexes: of the outbox's effects, and of the sessions by (state, updated).

    On PostgreSQL also the digests: the text is the key again, as in version 3.
    """
    sql("ALTER TABLE customer_session_journal DROP COLUMN actor")
    sql("DROP INDEX customer_session_outbox_effect")
    sql("DROP INDEX customer_sessions_state_updated")
    sql("CREATE INDEX customer_sessions_state ON customer_sessions (state)")
    sql("DROP INDEX customer_session_outbox_discarded")  # SQLite drops no indexed column
    sql("ALTER TABLE customer_session_outbox DROP COLUMN discarded_at")
    sql("ALTER TABLE customer_session_outbox DROP COLUMN discard_reason")
    if database.startswith("postgresql://"):
        for statement in (
            "DROP INDEX customer_sessions_integration_id",
            # Dropping a digest column drops the primary key or unique key on it.
            "ALTER TABLE customer_sessions DROP COLUMN integration_id_digest",
            "ALTER TABLE customer_sessions ADD PRIMARY KEY (integration_id)",
            "ALTER TABLE customer_session_journal DROP COLUMN integration_id_digest",
            "ALTER TABLE customer_session_journal ADD UNIQUE (integration_id, version)",
            "ALTER TABLE customer_session_keys DROP COLUMN key_digest",
            "ALTER TABLE customer_session_keys ADD PRIMARY KEY (key)",
        ):
            sql(statement)


def _indexes(sql, database: str) -> set[str]:
    if database.startswith("postgresql://"):
        rows = sql("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    else:
        rows = sql("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {name for (name,) in rows}


class _BytesPath:
    """A path-like object whose path is bytes, which the stores do not take."""

    def __fspath__(self) -> bytes:
        return b"x.db"


class TestOpening:
    def test_open_store_picks_the_backend(self, tmp_path):
        """A path opens SQLite; a postgresql:// URL opens PostgreSQL."""
        with open_store(tmp_path / "x.db") as store:
            assert isinstance(store, SQLiteStore)
            assert store.path == str(tmp_path / "x.db")

    @pytest.mark.postgres
    def test_open_store_opens_postgres_urls(self, pg_server):
        """A postgresql:// URL gives a PostgresStore."""
        with open_store(pg_server.fresh_schema()) as store:
            assert isinstance(store, PostgresStore)
            assert "***" not in repr(store)

    def test_unreadable_sqlite_file_is_a_store_error(self, tmp_path):
        """A path that cannot hold a database gives StoreError, not sqlite3's error."""
        with SQLiteStore(tmp_path) as store, pytest.raises(StoreError, match="SQLite"):
            store.get("order-1")

    def test_closed_store_refuses_work(self, tmp_path):
        """A closed store raises StoreError."""
        store = SQLiteStore(tmp_path / "x.db")
        store.close()
        with pytest.raises(StoreError, match="is closed"):
            store.exists("order-1")

    def test_invalid_options_are_refused(self, tmp_path):
        """Negative retries and unknown (even unhashable) synchronous modes are refused."""
        with pytest.raises(ValueError, match="retries"):
            SQLiteStore(tmp_path / "x.db", retries=-1)
        for mode in ("OFF", ["FULL"], {"FULL": 1}):
            with pytest.raises(ValidationError, match="synchronous: must be 'FULL' or 'NORMAL'"):
                SQLiteStore(tmp_path / "x.db", synchronous=mode)  # type: ignore[arg-type]

    def test_every_bad_sqlite_option_is_listed(self):
        """A bad path, mode, timeout and retry count are refused together, by name."""
        with pytest.raises(ValidationError) as caught:
            SQLiteStore(3, synchronous="OFF", timeout=-1, retries=True)  # type: ignore[arg-type]
        assert caught.value.subject == "SQLiteStore"
        assert [p.path for p in caught.value.problems] == [
            "path",
            "synchronous",
            "timeout",
            "retries",
        ]

    def test_session_class_must_be_a_session_class(self, tmp_path):
        """A class that is not a CustomerSession is refused when the store is made."""
        with pytest.raises(WorkflowError, match="session_class must be a CustomerSession class"):
            SQLiteStore(tmp_path / "x.db", session_class=dict)  # type: ignore[type-var]

    def test_workflow_must_be_a_workflow(self, tmp_path):
        """A workflow argument that is no Workflow is refused when the store is made."""
        with pytest.raises(WorkflowError, match="workflow must be a Workflow or None, got 3"):
            SQLiteStore(tmp_path / "x.db", workflow=3)  # type: ignore[arg-type]

    def test_workflow_of_another_table_is_refused(self, tmp_path):
        """A workflow that drives another table than the session class is refused."""
        with pytest.raises(WorkflowError, match="drives another specification"):
            SQLiteStore(tmp_path / "x.db", workflow=ReopenableCustomerSession.default_workflow)

    @pytest.mark.parametrize("target", ["", 123, None, b"x.db", _BytesPath()])
    def test_an_empty_or_missing_target_is_refused(self, target):
        """open_store("") would be a throwaway database; it and non-paths are refused."""
        with pytest.raises(ValidationError, match=r"open_store\(\): target: must be"):
            open_store(target)
        with pytest.raises(ValidationError, match="path: must be a file path or ':memory:'"):
            SQLiteStore(target)

    @pytest.mark.parametrize(
        ("path", "why"),
        [
            ("file:", "a file: URI with an empty path is a temporary database"),
            ("file://localhost", "a file: URI with an empty path is a temporary database"),
            # SQLite drops the rest of the path from an escaped NUL.
            ("file:%00x.db?mode=rwc", "a file: URI with an empty path is a temporary database"),
            ("file://otherhost/x.db", "invalid uri authority: 'otherhost'"),
            ("file://[x/y.db", r"invalid uri authority: '\[x'"),
            # The authority ends at "/" only, as SQLite parses it.
            ("file://localhost?mode=memory", "invalid uri authority: 'localhost\\?mode=memory'"),
            ("x\x00.db", "must not contain a NUL character"),
        ],
    )
    def test_a_path_sqlite_refuses_or_opens_per_connection_is_refused(self, path, why):
        """A path SQLite cannot open, or opens as a database per thread, is refused by name."""
        with pytest.raises(ValidationError, match=f"path: .*{why}") as caught:
            SQLiteStore(path)
        assert repr(path) in str(caught.value)

    @pytest.mark.parametrize("path", ["file:x?mode=memory&vfs=%ff", "file:x.db?vfs=%ff"])
    def test_a_vfs_named_in_bytes_that_are_no_utf8_is_a_store_error(self, path):
        """SQLite's refusal of such a VFS (a message sqlite3 cannot decode) is a StoreError."""
        with pytest.raises(StoreError, match="cannot open as an SQLite database"):
            SQLiteStore(path).exists("order-1")

    @pytest.mark.parametrize(
        ("target", "scheme"),
        [
            ("mysql://user:secret@host/db", "mysql"),
            ("POSTGRESQL://user@host/db", "POSTGRESQL"),
            ("postgresql+psycopg://user@host/db", "postgresql+psycopg"),
            ("sqlite:///tmp/sessions.db", "sqlite"),
        ],
    )
    def test_a_url_of_another_scheme_is_refused(self, tmp_path, monkeypatch, target, scheme):
        """A URL open_store cannot open is refused as such, not opened as an SQLite file."""
        refused = _refused_target(target, tmp_path, monkeypatch)
        assert f"unsupported URL scheme '{scheme}'" in str(refused)

    @pytest.mark.parametrize(
        "target",
        [
            " postgresql://user:secret@host/db",
            "postgresql:/user:secret@host/db",
            "postgres:user:secret@host",
            "\tmysql://user:secret@host/db",
        ],
        ids=["leading space", "one slash", "no slash", "leading tab, another scheme"],
    )
    def test_a_mistyped_url_is_refused_without_its_password(self, tmp_path, monkeypatch, target):
        """A mistyped URL is refused without its password, not opened as an SQLite file."""
        refused = _refused_target(target, tmp_path, monkeypatch)
        assert str(refused).startswith("open_store(): target: ")

    @pytest.mark.parametrize(
        "target",
        [
            "host=db.example password=secret dbname=orders",
            "dbname = orders password=secret",
            " user=app password='secret' host=db",
            "service=orders",
        ],
        ids=["host first", "spaces around =", "leading space, quoted", "a service"],
    )
    def test_a_keyword_value_connection_string_is_refused(self, tmp_path, monkeypatch, target):
        """A libpq keyword/value string is refused without its secrets, not made an SQLite file."""
        refused = _refused_target(target, tmp_path, monkeypatch)
        assert str(refused).startswith("open_store(): target: ")
        assert "keyword/value connection string" in str(refused)

    def test_a_keyword_value_string_of_any_option_libpq_knows_is_refused(
        self, tmp_path, monkeypatch
    ):
        """A keyword/value string is refused whichever of this libpq's options comes first."""
        pq = require_module("psycopg.pq", "postgres")
        monkeypatch.chdir(tmp_path)
        keywords = [option.keyword.decode() for option in pq.Conninfo.get_defaults()]
        opened = []
        for keyword in keywords:
            try:
                open_store(f"{keyword}=x password=secret").close()
            except ValidationError:
                continue
            opened.append(keyword)
        assert opened == []
        assert list(tmp_path.iterdir()) == []

    def test_a_file_named_like_an_option_is_opened_by_its_relative_path(self, tmp_path):
        """A file whose name starts like a libpq option opens when named as ``./name``."""
        with open_store(str(tmp_path / "dbname=orders.db")) as store:
            store.create(CustomerSession(integration_id="a"))
        assert (tmp_path / "dbname=orders.db").exists()

    def test_an_sqlite_file_uri_with_an_authority_is_opened(self, tmp_path):
        """A ``file:///`` URI (the form with an empty authority) is an SQLite file, not refused."""
        uri = f"{tmp_path.as_uri()}/x.db?mode=rwc"
        assert uri.startswith("file:///")
        with open_store(uri) as store:
            assert isinstance(store, SQLiteStore)
            store.create(CustomerSession(integration_id="a"))
        assert (tmp_path / "x.db").exists()

    @pytest.mark.parametrize(
        ("entries", "path"),
        [(None, "entries"), ("abc", "entries"), ([1], "entries[0]"), ([10**5000], "entries[0]")],
        ids=["None", "text", "a number", "a huge number"],
    )
    def test_rebuild_of_something_else_than_entries_is_refused(self, entries, path):
        """rebuild() names what it was given instead of journal entries."""
        with pytest.raises(ValidationError) as caught:
            rebuild(entries)
        assert [p.path for p in caught.value.problems] == [path]

    @pytest.mark.parametrize("store_class", [PostgresStore, AsyncPostgresStore])
    def test_bad_pool_sizes_are_refused_before_connecting(self, store_class):
        """Pool sizes that cannot work are refused by name; no server is contacted."""
        with pytest.raises(ValidationError) as caught:
            store_class("postgresql://nowhere.invalid/x", min_connections=-1, max_connections=0)
        assert [p.path for p in caught.value.problems] == ["min_connections", "max_connections"]
        with pytest.raises(ValidationError, match="at least min_connections \\(4\\), got 2"):
            store_class("postgresql://nowhere.invalid/x", min_connections=4, max_connections=2)

    @pytest.mark.parametrize(
        "opener",
        [PostgresStore, AsyncPostgresStore, open_store],
        ids=["PostgresStore", "AsyncPostgresStore", "open_store"],
    )
    @pytest.mark.parametrize("timeout", [0, -1, "5", None, True, float("nan"), float("inf"), 1e10])
    def test_a_bad_pool_timeout_is_refused_before_connecting(self, opener, timeout):
        """A wait for a pooled connection must be seconds the pool can wait; else named."""
        with pytest.raises(ValidationError) as caught:
            opener("postgresql://nowhere.invalid/x", timeout=timeout)
        (problem,) = caught.value.problems
        assert problem.path == "timeout"
        assert problem.message.startswith("must be a number of seconds > 0 and at most ")

    def test_unreachable_server_is_a_store_error(self):
        """A server that does not answer gives StoreError without the password."""
        with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
            PostgresStore("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=1")
        assert "secret" not in str(caught.value)


class TestWithoutPsycopg:
    def test_package_imports_and_postgres_says_how_to_install(self):
        """Without psycopg the package imports, and PostgresStore names the extra to install."""
        script = textwrap.dedent(
            """
            import sys
            sys.modules["psycopg"] = None  # as if it were not installed
            sys.modules["psycopg_pool"] = None
            import customer_session.store as store
            try:
                store.open_store("postgresql://localhost/db")
            except store.StoreError as exc:
                print(exc)
            else:
                print("no error")
            """
        ).replace("store.StoreError", "__import__('customer_session').StoreError")
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "pip install 'customer-session[postgres]'" in result.stdout
        assert "psycopg" in result.stdout


def _refused_target(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ValidationError:
    """open_store's refusal of ``target``: it shows no secret and leaves no file behind."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError) as info:
        open_store(target)
    assert "secret" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    return info.value
