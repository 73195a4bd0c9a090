"""Code that runs in spawned worker processes of the store tests (importable by name).

The tests put this directory on ``sys.path`` (the ``importable_workers`` fixture),
so that a ``spawn``-ed child can import these functions.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from customer_session import (
    CartItem,
    ConcurrentUpdate,
    IllegalTransition,
    ReopenableCustomerSession,
    ReturnedItem,
    SessionNotEditable,
    ValidationError,
)
from customer_session.store import open_store

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier, Event

EFFECT = "notify"
TRIGGERS = ("close", "close", "reopen", "reopen", "return_items", "cancel")
# Without the dead ends (cancelled, fully returned), so a walk never runs out of moves.
CYCLING = ("close", "reopen")


# A worker that died before the barrier breaks it for the others after this long
# (BrokenBarrierError, a failed worker) instead of leaving them waiting for good.
BARRIER_TIMEOUT = 120.0


def open_reopenable(database: str) -> Any:
    store = open_store(database, session_class=ReopenableCustomerSession)
    store.on_commit(EFFECT)
    return store


def random_step(
    store: Any,
    rng: random.Random,
    ids: list[str],
    counts: Counter[str],
    triggers: tuple[str, ...] = TRIGGERS,
) -> None:
    """One random trigger or edit, legal or not; count what happened."""
    integration_id = rng.choice(ids)
    roll = rng.random()
    if roll < 0.15:
        item = CartItem(sku=f"SKU-{rng.randrange(100)}", quantity=1, price=1.0)
        change: Any = lambda s: s.add_item(item)  # noqa: E731 - one of several lambdas
        kind = "edit"
    else:
        trigger = rng.choice(triggers)
        items = [ReturnedItem(position=0, quantity=1)] if trigger == "return_items" else []
        change = lambda s: s.fire(trigger, items=items)  # noqa: E731 - same as above
        kind = "transition"
    try:
        store.update(integration_id, change, retries=50)
    except (IllegalTransition, SessionNotEditable, ValidationError):
        counts["refused"] += 1
    except ConcurrentUpdate:
        counts["gave_up"] += 1
    else:
        counts[kind] += 1


def random_walk(database: str, ids: list[str], steps: int, seed: int) -> dict[str, int]:
    """Drive ``steps`` random triggers and edits against the shared sessions."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    counts: Counter[str] = Counter()
    with open_reopenable(database) as store:
        for _ in range(steps):
            random_step(store, rng, ids, counts)
    return dict(counts)


def walk_until_killed(database: str, ids: list[str], seed: int, ready: Event) -> None:
    """Random steps forever, never cancelling; set ``ready`` once one committed."""
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    counts: Counter[str] = Counter()
    with open_reopenable(database) as store:
        while not (counts["transition"] + counts["edit"]):
            random_step(store, rng, ids, counts, CYCLING)
        ready.set()
        while True:
            random_step(store, rng, ids, counts, CYCLING)


def commit_and_hang(database: str, integration_id: str, ready: Event) -> None:
    """Start committing a close, and stop between the writes and the COMMIT (SQLite).

    Every statement of the transaction has run when SQLite is asked to COMMIT; the
    trace callback signals the parent, which kills this process right there.
    """
    store = open_reopenable(database)
    opened = store._open

    def open_traced() -> Any:
        connection = opened()

        def trace(statement: str) -> None:
            if statement.strip().upper() == "COMMIT":
                ready.set()
                time.sleep(600)

        connection.set_trace_callback(trace)
        return connection

    store._open = open_traced
    store.update(integration_id, lambda s: s.close())


def deliver_and_hang(database: str, journal: str, hang_at: int, ready: Event) -> None:
    """Deliver effects, writing each key to ``journal``; hang inside the ``hang_at``-th."""
    delivered = 0

    def handler(effect: Any) -> None:
        nonlocal delivered
        with open(journal, "a", encoding="utf-8") as out:  # noqa: PTH123 - a plain append
            out.write(effect.key + "\n")
            out.flush()
            os.fsync(out.fileno())
        delivered += 1
        if delivered == hang_at:
            ready.set()
            time.sleep(600)

    with open_reopenable(database) as store:
        store.deliver(handler)


def deliver_fork_and_hang(database: str, children: str, ready: Event) -> None:
    """Deliver, and in the handler fork a child that outlives this process; then hang.

    The child's pid is written to ``children`` (for the test to end it); it sleeps,
    touching nothing, as a worker pool started by a handler would.
    """

    def handler(effect: Any) -> None:
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        with open(children, "a", encoding="utf-8") as out:  # noqa: PTH123 - a plain append
            out.write(f"{pid}\n")
        ready.set()
        time.sleep(600)

    with open_reopenable(database) as store:
        store.deliver(handler)


def deliver_together(
    database: str, ready: Barrier, out: Queue[list[tuple[float, int, str, int]]]
) -> None:
    """Deliver every pending effect once all are ready; report what was handed over when.

    Each row is reported as (monotonic time, sequence, session, position).
    """
    handed: list[tuple[float, int, str, int]] = []

    def handler(effect: Any) -> None:
        at = time.monotonic()  # one clock for every process of the machine
        handed.append((at, effect.sequence, effect.integration_id, effect.position))
        time.sleep(0.002)  # long enough for a racing deliverer to pick the same row

    with open_reopenable(database) as store:
        ready.wait(BARRIER_TIMEOUT)
        store.deliver(handler)
    out.put(handed)


def commit_slowly(database: str, integration_id: str, ready: Event) -> None:
    """Commit a close on a server made slow by the test (PostgreSQL); signal first."""
    store = open_reopenable(database)
    store.get(integration_id)
    ready.set()
    store.update(integration_id, lambda s: s.close())


def first_use(databases: list[str], ready: Barrier, failures: Queue[str]) -> None:
    """On each database in turn, open a store and make a first call when all are ready."""
    for database in databases:
        ready.wait(BARRIER_TIMEOUT)
        try:
            with open_store(database) as store:
                store.exists("order-1")
        except Exception as exc:  # reported to the test, which fails on it
            failures.put(f"{database}: {type(exc).__name__}: {exc}")


def replay_and_hang(database: str, log: list[str], commits: int, ready: Event) -> None:
    """Replay ``log`` into the store, and hang once ``commits`` changes committed."""
    from customer_session.store import StoreReplayer  # noqa: PLC0415 - only this worker

    with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
        update = replayer.store._update
        committed = 0

        def update_then_hang(change: Any, expected: int) -> bool:
            nonlocal committed
            written = update(change, expected)
            committed += written
            if committed == commits:
                ready.set()
                time.sleep(600)
            return written

        replayer.store._update = update_then_hang
        replayer.run(log)


def migrate_and_hang(database: str, ready: Event) -> None:
    """Create the schema on first use, and hang after its first step, before the commit."""
    from customer_session.store import _base  # noqa: PLC0415 - only this worker

    steps_from = _base.steps_from

    def first_step_then_hang(*args: Any) -> list[Any]:
        steps = list(steps_from(*args))

        def hang() -> Any:
            ready.set()
            time.sleep(600)
            yield from ()

        return [steps[0], hang()]

    _base.steps_from = first_step_then_hang
    with open_store(database) as store:
        store.exists("order-1")
