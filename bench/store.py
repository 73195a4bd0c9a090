"""Committed transitions per second of the session stores, against bare-UPDATE floors.

For SQLite (a file in WAL mode, ``synchronous=FULL``) and PostgreSQL (a server this
script starts, with its default durable settings), with 1 and 8 worker processes:

- *store*: transitions committed per second through ``store.update`` (load the
  session, fire the trigger, compare-and-set the row, append the journal entry);
- *floor*: a bare ``UPDATE ... SET state = ?, version = version + 1 WHERE id = ?
  AND version = ?`` loop on a three-column table of the same database, through the
  plain driver in autocommit mode (the least a store that compares versions does);
- *row floor*: the same bare compare-and-set, also writing what a store row holds
  (the session's JSON document and its ``updated`` time) to a copy of the store's
  own table, made from its schema (same columns, keys and indexes; on PostgreSQL the
  row found by the digest of its id, the store's primary key): the cost of
  persisting the session itself is then in the floor, and the ratio is the
  library's own overhead (loading, running the trigger, and the journal entry of
  the same transaction);
- *journal floor*: the row floor plus what the issue requires in the same
  transaction, a journal row (in a copy of the store's journal table), written
  the way the store writes it: on SQLite, BEGIN IMMEDIATE, the compare-and-set, the
  INSERT and COMMIT; on PostgreSQL, one data-modifying ``WITH`` statement in
  autocommit (one round trip). It is the least any store meeting the journal
  requirement writes, so the ratio against it is the library's own work (loading,
  the trigger, building the document and the journal entry), and its own ratio to
  the floor is what the issue's SQL costs before any Python runs;
- *skeleton*: the journal floor's statements on copies of the store's tables and
  rows, driven by the least Python any store meeting the issue runs: the row read
  and its JSON parsed the first time a worker sees a session, then per commit a
  lookup in a dict of the allowed moves, the parsed document changed in place, and
  the document, the journal records and the changed keys dumped to JSON. No
  engine, no validation, no hooks, no checks: the library's necessary work is
  above it, and its ratio to the floor is how much of the 1.5x budget is left
  for that work;
- the ratios store time / floor time (the target is at most 1.5).

Each worker owns its sessions (no conflicts) and takes each through close ->
return_items -> cancel. The sessions are created by the parent process, so each
worker's first commit on a session reads and validates the stored document, as a
worker of a real order workflow does. Each contender starts on a checkpointed
database (SQLite's WAL written back, a PostgreSQL ``CHECKPOINT``), so none pays
for the log another left. Rounds are repeated, each starting with another
contender (by default one round per contender, so each starts one), and the median
rate reported, since the machine is shared and noisy.
A default run takes a few minutes.

Run: ``python bench/store.py [--sessions N] [--rounds N] [--only sqlite|postgres]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customer_session import CartItem, CustomerSession, ReturnedItem, wire
from customer_session.store import open_store

# The server launcher is a test helper, not part of the package: it lives in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from pgserver import PostgresUnavailable, TemporaryPostgres

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.synchronize import Barrier

ITEMS = (CartItem(sku="SOCK-42", quantity=2, price=7.5), CartItem(sku="JKT", quantity=1, price=99))
RETURN = (ReturnedItem(position=0, quantity=1),)
STATES = ("closed", "partially_returned", "cancelled")  # one per transition
WORKERS = (1, 8)


def session_ids(worker: int, sessions: int) -> list[str]:
    return [f"w{worker}-order-{n}" for n in range(sessions)]


# -- the store ---------------------------------------------------------------------


def setup_store(database: str, workers: int, sessions: int) -> None:
    with open_store(database) as store:
        for worker in range(workers):
            for integration_id in session_ids(worker, sessions):
                store.create(CustomerSession(integration_id=integration_id, cart_items=ITEMS))


def store_worker(
    database: str, worker: int, sessions: int, barrier: Barrier
) -> tuple[float, float]:
    ids = session_ids(worker, sessions)
    # Named, as a worker of a shared store is: the floors write an actor too.
    with open_store(database, actor=f"bench-worker-{worker}") as store:
        store.exists(ids[0])  # connect and check the schema before the clock starts
        barrier.wait()
        start = time.monotonic()
        for integration_id in ids:
            store.update(integration_id, lambda s: s.close())
            store.update(integration_id, lambda s: s.return_items(RETURN))
            store.update(integration_id, lambda s: s.cancel())
        return start, time.monotonic()


# -- the floors --------------------------------------------------------------------


class Floor:
    """Bare statements through the plain driver, autocommit, the store's settings."""

    def __init__(self, database: str) -> None:
        if database.startswith("postgresql://"):
            import psycopg  # noqa: PLC0415 - optional dependency

            self.connection: Any = psycopg.connect(database, autocommit=True)
            self.mark = "%s"
            self.begin = "BEGIN"
            # The store's primary key is the id's digest (see its schema): rows are
            # found by it, as the store finds them.
            self.where_id = "integration_id_digest = sha256(convert_to(%s::text, 'UTF8'))"
        else:
            self.connection = sqlite3.connect(database, isolation_level=None, timeout=30)
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA synchronous = FULL")
            self.mark = "?"
            self.begin = "BEGIN IMMEDIATE"
            self.where_id = "integration_id = ?"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.connection.execute(sql.replace("?", self.mark), params)

    def copy_table(self, table: str, copy: str) -> None:
        """Create ``copy`` with the columns, keys and indexes of the store's ``table``."""
        if self.mark == "%s":
            self.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
            return
        # SQLite has no LIKE: the store's own statements, renamed (its indexes too).
        for (sql,) in self.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL"
            " ORDER BY type DESC",  # the table before its indexes
            (table,),
        ).fetchall():
            self.execute(sql.replace(table, copy))

    def now(self) -> Any:
        """An ``updated`` value as the store writes it (ISO text on SQLite)."""
        now = datetime.now(UTC)
        return now if self.mark == "%s" else now.isoformat()

    def close(self) -> None:
        self.connection.close()


def document_text() -> str:
    """A document as large as the store writes for these sessions."""
    session = CustomerSession(integration_id="w0-order-0", cart_items=ITEMS)
    session.close()
    session.return_items(RETURN)
    return wire.to_json(session, include_history=True)


def setup_floors(database: str, workers: int, sessions: int) -> None:
    """The floors' tables, after the store's (whose tables the row floors copy)."""
    floor = Floor(database)
    floor.execute("CREATE TABLE bench_floor (id text PRIMARY KEY, version integer, state text)")
    # Copies of the store's own tables, so that the row floors write what a store row
    # and a journal row cost in this schema version, digests and indexes included.
    for table, copy in (
        ("customer_sessions", "bench_rows"),
        ("customer_sessions", "bench_journal_rows"),
        ("customer_session_journal", "bench_journal"),
        ("customer_sessions", "bench_skeleton_rows"),
        ("customer_session_journal", "bench_skeleton_journal"),
    ):
        floor.copy_table(table, copy)
    # The skeleton starts from the documents the store wrote, as the store does.
    floor.execute("INSERT INTO bench_skeleton_rows SELECT * FROM customer_sessions")
    document = document_text()
    now = floor.now()
    digest = "sha256(convert_to(?::text, 'UTF8'))"
    columns, values = (
        ("integration_id, integration_id_digest", f"?, {digest}")
        if floor.mark == "%s"
        else ("integration_id", "?")
    )
    for worker in range(workers):
        for integration_id in session_ids(worker, sessions):
            floor.execute("INSERT INTO bench_floor VALUES (?, 1, 'open')", (integration_id,))
            ids = (integration_id,) * values.count("?")
            for table in ("bench_rows", "bench_journal_rows"):
                floor.execute(
                    f"INSERT INTO {table} ({columns}, state, version, updated, document)"  # noqa: S608 - our names
                    f" VALUES ({values}, 'open', 1, ?, ?)",
                    (*ids, now, document),
                )
    floor.close()


def timed(
    floor: Floor,
    worker: int,
    sessions: int,
    barrier: Barrier,
    commit: Callable[[str, int, str], None],
) -> tuple[float, float]:
    """Run ``commit(integration_id, version, state)`` for each transition of the worker."""
    barrier.wait()
    start = time.monotonic()
    for integration_id in session_ids(worker, sessions):
        for version, state in enumerate(STATES, start=1):
            commit(integration_id, version, state)
    end = time.monotonic()
    floor.close()
    return start, end


def floor_worker(
    database: str, worker: int, sessions: int, barrier: Barrier
) -> tuple[float, float]:
    floor = Floor(database)
    update = "UPDATE bench_floor SET state = ?, version = version + 1 WHERE id = ? AND version = ?"

    def commit(integration_id: str, version: int, state: str) -> None:
        assert floor.execute(update, (state, integration_id, version)).rowcount == 1

    return timed(floor, worker, sessions, barrier, commit)


def row_floor_worker(
    database: str, worker: int, sessions: int, barrier: Barrier
) -> tuple[float, float]:
    floor = Floor(database)
    document = document_text()
    update = (
        "UPDATE bench_rows SET state = ?, version = version + 1, updated = ?, document = ?"  # noqa: S608 - our names
        f" WHERE {floor.where_id} AND version = ?"
    )

    def commit(integration_id: str, version: int, state: str) -> None:
        row = (state, floor.now(), document, integration_id, version)
        assert floor.execute(update, row).rowcount == 1

    return timed(floor, worker, sessions, barrier, commit)


def journal_floor_worker(
    database: str, worker: int, sessions: int, barrier: Barrier
) -> tuple[float, float]:
    floor = Floor(database)
    document = document_text()
    records = '[{"trigger":"close","source":"open","destination":"closed"}]'
    # One round trip on PostgreSQL, as its store sends it: the journal row is inserted
    # from the updated row by a data-modifying WITH, in autocommit.
    with_statement = (
        "WITH moved AS (UPDATE bench_journal_rows SET state = %s, version = version + 1,"  # noqa: S608 - our names
        f" updated = %s, document = %s WHERE {floor.where_id} AND version = %s"
        " RETURNING integration_id, integration_id_digest, version),"
        " journal AS (INSERT INTO bench_journal (integration_id, integration_id_digest,"
        " version, kind, operation, actor, records, changes)"
        " SELECT integration_id, integration_id_digest, version, %s, %s, %s, %s, %s"
        " FROM moved) SELECT version FROM moved"
    )
    # On SQLite, as its store writes it: BEGIN IMMEDIATE, two statements, COMMIT.
    update = (
        "UPDATE bench_journal_rows SET state = ?, version = version + 1, updated = ?,"  # noqa: S608 - our names
        f" document = ? WHERE {floor.where_id} AND version = ?"
    )
    journal = (
        "INSERT INTO bench_journal (integration_id, version, kind, operation, event_key,"
        " actor, records, changes, recorded_at) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)"
    )

    def one_statement(integration_id: str, version: int, state: str) -> None:
        row = (state, floor.now(), document, integration_id, version)
        entry = ("transition", "close", "bench", records, "{}")
        assert floor.connection.execute(with_statement, row + entry).fetchone()

    def statements(integration_id: str, version: int, state: str) -> None:
        now = floor.now()
        floor.execute(floor.begin)
        row = (state, now, document, integration_id, version)
        assert floor.execute(update, row).rowcount == 1
        entry = (integration_id, version + 1, "transition", "close", "bench", records, "{}", now)
        floor.execute(journal, entry)
        floor.execute("COMMIT")

    commit = one_statement if floor.mark == "%s" else statements
    return timed(floor, worker, sessions, barrier, commit)


MOVES = {
    ("open", "close"): "closed",
    ("closed", "return_items"): "partially_returned",
    ("partially_returned", "cancel"): "cancelled",
}


def skeleton_worker(
    database: str, worker: int, sessions: int, barrier: Barrier
) -> tuple[float, float]:
    floor = Floor(database)
    fetch = f"SELECT version, document FROM bench_skeleton_rows WHERE {floor.where_id}"  # noqa: S608 - our names
    with_statement = (
        "WITH moved AS (UPDATE bench_skeleton_rows SET state = %s, version = version + 1,"  # noqa: S608 - our names
        f" updated = %s, document = %s WHERE {floor.where_id} AND version = %s"
        " RETURNING integration_id, integration_id_digest, version),"
        " journal AS (INSERT INTO bench_skeleton_journal (integration_id,"
        " integration_id_digest, version, kind, operation, actor, records, changes)"
        " SELECT integration_id, integration_id_digest, version, %s, %s, %s, %s, %s"
        " FROM moved) SELECT version FROM moved"
    )
    update = (
        "UPDATE bench_skeleton_rows SET state = ?, version = version + 1, updated = ?,"  # noqa: S608 - our names
        f" document = ? WHERE {floor.where_id} AND version = ?"
    )
    journal = (
        "INSERT INTO bench_skeleton_journal (integration_id, version, kind, operation,"
        " event_key, actor, records, changes, recorded_at)"
        " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)"
    )
    one_statement = floor.mark == "%s"
    barrier.wait()
    start = time.monotonic()
    for integration_id in session_ids(worker, sessions):
        version, text = floor.execute(fetch, (integration_id,)).fetchone()
        document = json.loads(text)
        history = document.setdefault("x-customerSession", {}).setdefault("history", [])
        for trigger in ("close", "return_items", "cancel"):
            state = MOVES[document["state"], trigger]
            now = datetime.now(UTC).isoformat()
            record = {"trigger": trigger, "source": document["state"], "destination": state}
            record["timestamp"] = now
            if trigger == "return_items":  # as RETURN does: one sock back
                record["returnedItems"] = [{"position": 0, "quantity": 1}]
                item = document["cartItems"][0]
                item["returnedQuantity"] += 1
                item["remainingQuantity"] -= 1
            document["state"] = state
            document["updated"] = now
            document["updateCount"] += 1
            history.append(record)
            row = (state, now, json.dumps(document), integration_id, version)
            records, changes = json.dumps([record]), json.dumps({"state": state, "updated": now})
            if one_statement:
                entry = ("transition", trigger, "bench", records, changes)
                assert floor.connection.execute(with_statement, row + entry).fetchone()
            else:
                floor.execute(floor.begin)
                assert floor.execute(update, row).rowcount == 1
                entry = (integration_id, version + 1, "transition", trigger, "bench")
                floor.execute(journal, (*entry, records, changes, now))
                floor.execute("COMMIT")
            version += 1
    end = time.monotonic()
    floor.close()
    return start, end


# -- running -----------------------------------------------------------------------

CONTENDERS: dict[str, Callable[..., tuple[float, float]]] = {
    "floor": floor_worker,
    "rows": row_floor_worker,
    "journal": journal_floor_worker,
    "skeleton": skeleton_worker,
    "store": store_worker,
}


def checkpoint(database: str) -> None:
    """Write back what earlier contenders left in the log, so none pays for another's."""
    floor = Floor(database)
    floor.execute("CHECKPOINT" if floor.mark == "%s" else "PRAGMA wal_checkpoint(RESTART)")
    floor.close()


def rate(worker: Callable[..., tuple[float, float]], database: str, workers: int, n: int) -> float:
    """Committed transitions per second over all workers (first start to last end)."""
    checkpoint(database)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(workers) as pool:
        barrier = manager.Barrier(workers)
        spans = pool.starmap(worker, [(database, w, n, barrier) for w in range(workers)])
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return workers * n * len(STATES) / elapsed


def measure(name: str, fresh: Callable[[], str], sessions: int, rounds: int) -> None:
    for workers in WORKERS:
        rates: dict[str, list[float]] = {key: [] for key in CONTENDERS}
        contenders = list(CONTENDERS.items())
        for round_ in range(rounds):
            database = fresh()
            setup_store(database, workers, sessions)
            setup_floors(database, workers, sessions)
            # Each round starts with another contender: none always runs on a cold
            # file or after the others have grown the WAL.
            shift = round_ % len(contenders)
            for key, worker in contenders[shift:] + contenders[:shift]:
                rates[key].append(rate(worker, database, workers, sessions))
        store, floor, rows, journal, skeleton = (
            statistics.median(rates[k]) for k in ("store", "floor", "rows", "journal", "skeleton")
        )
        print(
            f"{name:<26} {workers} worker(s): store {store:>6,.0f}/s | "
            f"floor {floor:>6,.0f}/s ({floor / store:4.2f}x) | "
            f"row floor {rows:>6,.0f}/s ({rows / store:4.2f}x) | "
            f"journal floor {journal:>6,.0f}/s ({journal / store:4.2f}x; "
            f"itself {floor / journal:4.2f}x the floor) | "
            f"skeleton {skeleton:>6,.0f}/s ({skeleton / store:4.2f}x; "
            f"itself {floor / skeleton:4.2f}x the floor)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Runs of a few hundred commits swing by 30% with the machine's load; 1,000
    # sessions (3,000 commits) per worker keep the ratios steady.
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per worker")
    # One round per contender: each round starts with another, so each starts one.
    parser.add_argument(
        "--rounds", type=int, default=len(CONTENDERS), help="rounds (the median is shown)"
    )
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    print(
        f"committed transitions per second, median of {args.rounds} rounds; "
        f"{args.sessions} sessions per worker, {len(STATES)} transitions each; "
        "(store time / floor time, target <= 1.5x)"
    )
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as directory:
            counter = iter(range(1_000_000))
            measure(
                "SQLite (file, WAL, FULL)",
                lambda: str(Path(directory) / f"bench-{next(counter)}.db"),
                args.sessions,
                args.rounds,
            )
    if args.only != "sqlite":
        try:
            server = TemporaryPostgres(durable=True).start()
        except PostgresUnavailable as exc:
            print(f"PostgreSQL skipped: {exc}")
            return
        try:
            measure("PostgreSQL (durable)", server.fresh_schema, args.sessions, args.rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
