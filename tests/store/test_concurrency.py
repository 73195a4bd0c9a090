"""Worker processes racing on shared sessions lose no update and break no invariant."""

from __future__ import annotations

import multiprocessing

import pytest

from customer_session import REOPENABLE_SESSION, CartItem, ReopenableCustomerSession
from customer_session.store import JournalKind, open_store, rebuild

WORKERS = 8
SESSIONS = 50
STEPS = 60


def check_consistent(store, ids) -> dict[str, int]:
    """Every journal is a path of the table that rebuilds its row; count what it holds."""
    totals = {"transitions": 0, "edits": 0}
    for integration_id in ids:
        history = store.history(integration_id)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        records = [r for entry in history for r in entry.records]
        state = history[0].changes["state"]
        for record in records:
            assert record.source == state
            assert REOPENABLE_SESSION.target(record.source, record.trigger) is record.destination
            state = record.destination
        stored = store.get(integration_id)
        assert stored.state == state
        assert rebuild(history, session_class=ReopenableCustomerSession) == stored
        totals["transitions"] += len(records)
        totals["edits"] += sum(1 for e in history if e.kind is JournalKind.EDIT)
    return totals


@pytest.mark.usefixtures("importable_workers")
class TestWorkerProcesses:
    def test_workers_opening_an_empty_database_together_all_start(
        self, backend, database, tmp_path, request
    ):
        """12 processes making their first call at once on empty databases: none fails."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        if backend == "sqlite":
            databases = [database, *(str(tmp_path / f"more-{n}.db") for n in range(3))]
        else:
            server = request.getfixturevalue("pg_server")
            databases = [database, *(server.fresh_schema() for _ in range(3))]
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(12)
        failures = context.Queue()
        workers = [
            context.Process(target=store_workers.first_use, args=(databases, ready, failures))
            for _ in range(12)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0] * 12
        assert [failures.get() for _ in range(failures.qsize())] == []

    def test_racing_workers_commit_exactly_what_they_counted(self, database):
        """8 processes firing random triggers on 50 sessions: journals agree with the counts."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        ids = [f"order-{n}" for n in range(SESSIONS)]
        items = (CartItem(sku="A", quantity=5, price=1.0),)
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            for integration_id in ids:
                store.create(
                    ReopenableCustomerSession(integration_id=integration_id, cart_items=items)
                )
        context = multiprocessing.get_context("spawn")
        with context.Pool(WORKERS) as pool:
            results = pool.starmap(
                store_workers.random_walk,
                [(database, ids, STEPS, seed) for seed in range(WORKERS)],
            )
        counted = {
            key: sum(r.get(key, 0) for r in results)
            for key in ("transition", "edit", "refused", "gave_up")
        }
        assert sum(counted.values()) == WORKERS * STEPS
        assert counted["transition"] > WORKERS * STEPS // 5  # the walk is not all refusals
        assert counted["refused"] > 0  # and it does try illegal triggers
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            totals = check_consistent(store, ids)
            assert totals == {"transitions": counted["transition"], "edits": counted["edit"]}
            # Every committed transition wrote its durable effect, exactly once.
            assert len(store.pending()) == counted["transition"]

    def test_deliverers_in_several_processes_take_turns(self, database):
        """4 processes delivering one outbox at once: each row once, each session in order."""
        import store_workers  # noqa: PLC0415 - importable once the fixture ran

        ids = [f"order-{n}" for n in range(10)]
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            store.on_commit(store_workers.EFFECT)
            for integration_id in ids:
                store.create(ReopenableCustomerSession(integration_id=integration_id))
                for trigger in ("close", "reopen", "close"):
                    store.update(integration_id, lambda s, t=trigger: s.fire(t))
            rows = len(store.pending())
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(4)
        out = context.Queue()
        workers = [
            context.Process(target=store_workers.deliver_together, args=(database, ready, out))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        handed = [row for _ in workers for row in out.get(timeout=120)]
        for worker in workers:
            worker.join(timeout=120)
        sequences = [sequence for _, sequence, _, _ in handed]
        assert sorted(sequences) == sorted(set(sequences))  # none handed over twice
        assert len(handed) == rows == 30
        for integration_id in ids:
            positions = [p for _, _, i, p in sorted(handed) if i == integration_id]
            assert positions == [0, 1, 2]  # in commit order
