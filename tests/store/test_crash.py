"""Workers killed with SIGKILL mid-transaction leave a consistent database, outbox whole."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from customer_session import CartItem, CustomerSession, ReopenableCustomerSession, State
from customer_session.store import StoreReplayer, open_store, rebuild
from customer_session.store._outbox import idempotency_key

IDS = [f"order-{n}" for n in range(10)]
EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "orders.jsonl"


def example(lines: int) -> list[str]:
    """The first ``lines`` lines of the example event log."""
    with EXAMPLE.open(encoding="utf-8") as log:
        return list(islice(log, lines))


def ids_of(log: list[str]) -> set[str]:
    """The sessions the lines of ``log`` that are JSON objects name."""
    named = (json.loads(line).get("session") for line in log if line.lstrip().startswith("{"))
    return {name for name in named if isinstance(name, str)}


ITEMS = (CartItem(sku="A", quantity=5, price=1.0),)


def populate(database: str) -> None:
    with open_store(database, session_class=ReopenableCustomerSession) as store:
        for integration_id in IDS:
            store.create(ReopenableCustomerSession(integration_id=integration_id, cart_items=ITEMS))


def assert_consistent(database: str) -> set[str]:
    """Rows, journals and outbox agree; return the outbox keys the journals call for."""
    expected: set[str] = set()
    with open_store(database, session_class=ReopenableCustomerSession) as store:
        for integration_id in IDS:
            history = store.history(integration_id)
            # No journal entry without its row change, and no row change without one.
            assert [e.version for e in history] == list(range(1, len(history) + 1))
            assert rebuild(history, session_class=ReopenableCustomerSession) == store.get(
                integration_id
            )
            positions = range(sum(len(e.records) for e in history))
            expected |= {idempotency_key(integration_id, p, "notify") for p in positions}
    return expected


def outbox_keys(sql) -> set[str]:
    return {key for (key,) in sql("SELECT idempotency_key FROM customer_session_outbox")}


# Statements other clients run on the PostgreSQL server, like a pattern.
RUNNING = (
    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE ? "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def wait_while_running(sql, pattern: str = "%") -> None:
    """Wait until no statement like ``pattern`` runs on the server (PostgreSQL).

    The server goes on with a statement a killed worker sent, and may commit it:
    a check that read the database before then would read it still changing.
    """
    deadline = time.monotonic() + 60
    while sql(RUNNING, pattern):
        assert time.monotonic() < deadline, "a killed worker's statement never ended"
        time.sleep(0.1)


def kill_when_ready(process, ready, *, timeout: float = 60.0) -> None:
    assert ready.wait(timeout), "the worker never got ready"
    process.kill()
    process.join(timeout)
    assert process.exitcode == -9


@pytest.fixture
def spawn():
    context = multiprocessing.get_context("spawn")
    started = []

    def start(target, *args):
        ready = context.Event()
        process = context.Process(target=target, args=(*args, ready), daemon=True)
        process.start()
        started.append(process)
        return process, ready

    yield start
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(10)


@pytest.mark.usefixtures("importable_workers")
class TestKilledWorkers:
    def test_kill_between_writes_and_commit_applies_nothing(self, database, backend, spawn, sql):
        """A worker killed after its writes, before they commit, leaves no trace of them."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        populate(database)
        if backend == "postgres":
            # Hold the commit statement on the server, in the outbox insert it makes:
            # far longer than the kill can take to land, however loaded the machine.
            sql(
                "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(20); RETURN NEW; END $$"
            )
            sql(
                "CREATE TRIGGER slow BEFORE INSERT ON customer_session_outbox "
                "FOR EACH ROW EXECUTE FUNCTION slow()"
            )
            # The server checks for a lost client while it sleeps, and then rolls back.
            watched = f"{database}%20-cclient_connection_check_interval%3D50"
            process, ready = spawn(store_workers.commit_slowly, watched, "order-0")
            assert ready.wait(60)
            # Kill the worker once its commit statement runs on the server, not before.
            deadline = time.monotonic() + 60
            while not sql(RUNNING, "%WITH moved%"):
                assert process.is_alive(), f"the worker ended first ({process.exitcode})"
                assert time.monotonic() < deadline, "the commit never reached the server"
                time.sleep(0.01)
            process.kill()
            process.join(10)
            # The server aborts the statement on its own once it sees the client gone.
            wait_while_running(sql, "%WITH moved%")
            sql("DROP TRIGGER slow ON customer_session_outbox")
        else:
            process, ready = spawn(store_workers.commit_and_hang, database, "order-0")
            kill_when_ready(process, ready)
        expected = assert_consistent(database)
        assert outbox_keys(sql) == expected
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            # Killed before the commit: nothing of the close was written.
            assert store.get("order-0").state is State.OPEN
            assert len(store.history("order-0")) == 1
            # The database is usable: the worker's locks died with it.
            store.update("order-0", lambda s: s.close())
            assert store.get("order-0").state is State.CLOSED

    def test_kills_at_random_moments_lose_no_outbox_row(self, database, backend, spawn, sql):
        """Workers killed at random points leave journals, rows and outbox in agreement."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        populate(database)
        rng = random.Random(7)  # noqa: S311 - test timing, not cryptography
        for round_ in range(3):
            process, ready = spawn(store_workers.walk_until_killed, database, IDS, round_)
            assert ready.wait(60), (round_, process.exitcode)
            time.sleep(rng.uniform(0.05, 0.3))
            process.kill()
            process.join(10)
        if backend == "postgres":
            wait_while_running(sql)
        expected = assert_consistent(database)
        assert expected  # the walks committed transitions
        assert outbox_keys(sql) == expected

    def test_killed_deliverer_loses_no_effect(self, database, spawn, sql, tmp_path):
        """A deliverer killed inside its handler: the row is delivered again, none lost."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        populate(database)
        with store_workers.open_reopenable(database) as store:
            for integration_id in IDS[:4]:
                store.update(integration_id, lambda s: s.close())
                store.update(integration_id, lambda s: s.reopen())
        handed = tmp_path / "handed.txt"
        process, ready = spawn(store_workers.deliver_and_hang, database, str(handed), 3)
        kill_when_ready(process, ready)
        first = handed.read_text().split()
        assert len(first) == 3
        again: list[str] = []
        with store_workers.open_reopenable(database) as store:
            assert store.deliver(lambda effect: again.append(effect.key)) == 6
            assert store.pending() == ()
        assert again[0] == first[2]  # handed over before the kill, never marked delivered
        assert set(first) | set(again) == outbox_keys(sql)

    def test_a_child_forked_by_a_killed_deliverer_does_not_hold_the_lock(
        self, database, spawn, tmp_path
    ):
        """A deliverer killed while a child its handler forked lives: others deliver at once.

        The child shares the lock's file (SQLite) or socket (PostgreSQL) unless it let
        go of it: the lock would outlive the deliverer until the child exits.
        """
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        populate(database)
        with store_workers.open_reopenable(database) as store:
            store.update(IDS[0], lambda s: s.close())
        children = tmp_path / "children.txt"
        process, ready = spawn(store_workers.deliver_fork_and_hang, database, str(children))
        try:
            assert ready.wait(60), "the worker never got ready"
            process.kill()
            # Not join(): it waits for the end of a pipe the child has a copy of too.
            deadline = time.monotonic() + 60
            while process.exitcode is None:
                assert time.monotonic() < deadline, "the killed worker never ended"
                time.sleep(0.01)
            assert process.exitcode == -9
            delivered: list[int] = []

            def deliver() -> None:
                with store_workers.open_reopenable(database) as store:
                    delivered.append(store.deliver(lambda effect: None))

            thread = threading.Thread(target=deliver, daemon=True)
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive(), "deliver() waits for the killed deliverer's child"
            assert delivered == [1]  # the row handed over before the kill, never marked
        finally:
            for pid in children.read_text().split() if children.exists() else ():
                os.kill(int(pid), signal.SIGKILL)

    def test_a_replay_killed_midway_resumes_to_what_one_run_gives(self, database, spawn, tmp_path):
        """A store replay killed between two commits, run again, ends as one run of the log."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        log = example(300)
        process, ready = spawn(store_workers.replay_and_hang, database, log, 40)
        kill_when_ready(process, ready)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            resumed = replayer.run(log)
            stored = {i: replayer.store.history(i) for i in ids_of(log)}
        assert resumed.skipped >= 40  # the killed run's changes are kept, not repeated
        with StoreReplayer(tmp_path / "one.db", session_class=ReopenableCustomerSession) as one:
            whole = one.run(log)
            expected = {i: one.store.history(i) for i in ids_of(log)}
        assert resumed.skipped + resumed.applied == whole.applied
        assert {i: [e.records for e in h] for i, h in stored.items()} == {
            i: [e.records for e in h] for i, h in expected.items()
        }

    def test_a_first_use_killed_while_creating_the_schema_leaves_none(self, database, spawn):
        """A worker killed midway through creating the schema: the next store creates it whole."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        process, ready = spawn(store_workers.migrate_and_hang, database)
        kill_when_ready(process, ready)
        populate(database)  # creates the schema, not waiting for the dead worker
        assert_consistent(database)


class TestInterruptedCommits:
    def test_an_interrupt_right_after_the_commit_is_neither_lost_nor_repeated(
        self, database, monkeypatch
    ):
        """A KeyboardInterrupt after the database commit: the next update builds on the commit.

        The caller sees the interrupt (the outcome unknown to it, the session object
        put back); the store's copy is a version behind, which the next update's
        compare-and-set finds out: it runs its change again on the stored row.
        """
        with open_store(database) as store:
            store.on_commit("notify")
            store.create(CustomerSession(integration_id="order-1", cart_items=ITEMS))
            update = store._update

            def interrupted(change, expected):
                assert update(change, expected)
                raise KeyboardInterrupt

            monkeypatch.setattr(store, "_update", interrupted)
            with pytest.raises(KeyboardInterrupt):
                store.update("order-1", lambda s: s.add_item(CartItem(sku="B", quantity=1)))
            monkeypatch.undo()
            seen = []
            store.update("order-1", lambda s: (seen.append(len(s.cart_items)), s.close()))
            assert seen == [1, 2]  # the stale copy first, then the stored row
            history = store.history("order-1")
            assert [(e.version, e.operation) for e in history] == [
                (1, "create"),
                (2, "edit"),
                (3, "close"),
            ]
            assert rebuild(history) == store.get("order-1")
            assert [e.version for e in store.pending()] == [3]
