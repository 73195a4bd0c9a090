"""AsyncPostgresStore: the async face, and optimistic concurrency between tasks.

The whole store contract runs on ``AsyncPostgresStore`` too, in ``test_contract.py``
(backend ``postgres-async``, through the ``SyncOverAsync`` face of the conftest).
These tests use the async API directly.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
import pytest_asyncio

from customer_session import (
    AfterCommitHookFailed,
    CartItem,
    ConcurrentUpdate,
    CorruptData,
    CustomerSession,
    GuardRejected,
    ReopenableCustomerSession,
    SchemaNotReady,
    SessionExists,
    SessionNotEditable,
    State,
    StoreError,
    TransitionInProgress,
    Trigger,
    UnsupportedSchema,
    Workflow,
    WorkflowError,
)
from customer_session.aio import AsyncSession
from customer_session.store import AsyncPostgresStore, Effect, JournalKind, ProcessedKey, rebuild
from customer_session.store import _forks as forks

from .conftest import blocks_another, waiting_for_an_advisory_lock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from customer_session._records import TransitionEvent
    from pgserver import TemporaryPostgres

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]
# How long to wait for the server or a task: only a safety net against a hang, long
# enough for a loaded machine, where a process may not run for seconds.
WAIT = 60


@pytest.fixture
def conninfo(pg_server: TemporaryPostgres) -> str:
    """A fresh, empty PostgreSQL schema."""
    return pg_server.fresh_schema()


@pytest_asyncio.fixture
async def store(conninfo: str) -> AsyncIterator[AsyncPostgresStore[CustomerSession]]:
    """An open store on a fresh schema."""
    async with await AsyncPostgresStore.open(conninfo) as opened:
        yield opened


def new_session(integration_id: str = "order-1") -> CustomerSession:
    return CustomerSession(
        integration_id=integration_id, cart_items=(CartItem(sku="SOCK", quantity=1),)
    )


async def closed_with_effects(
    store: AsyncPostgresStore[CustomerSession], *integration_ids: str
) -> None:
    """Register the durable effect "notify" on close; create and close the sessions.

    Each session closed leaves one pending outbox row; ``order-1`` when none is named.
    """
    store.on_commit("notify", trigger="close")
    for integration_id in integration_ids or ("order-1",):
        await store.create(new_session(integration_id))
        await store.update(integration_id, lambda s: s.close())


async def test_lifecycle_through_the_async_api(store: AsyncPostgresStore[CustomerSession]) -> None:
    """create, transaction, update, get, exists, counts and history are awaited."""
    await store.create(new_session())
    async with store.transaction("order-1", operation="coupon") as session:
        session.set_coupon("WELCOME")
    record = await store.update("order-1", lambda s: s.close())
    assert record.destination is State.CLOSED
    loaded = await store.get("order-1")
    assert (loaded.state, loaded.coupon) == (State.CLOSED, "WELCOME")
    assert await store.exists("order-1")
    assert not await store.exists("order-2")
    assert await store.counts() == {State.CLOSED: 1}
    history = await store.history("order-1")
    assert [(e.version, e.kind, e.operation) for e in history] == [
        (1, JournalKind.CREATED, "create"),
        (2, JournalKind.EDIT, "coupon"),
        (3, JournalKind.TRANSITION, "close"),
    ]
    assert rebuild(history) == loaded


async def test_async_with_opens_an_unopened_store(conninfo: str) -> None:
    """``async with AsyncPostgresStore(url)`` opens the pool and closes it after."""
    async with AsyncPostgresStore(conninfo) as store:
        await store.create(new_session())
        assert await store.mark_processed("k")
        assert await store.processed("k")
        assert not await store.mark_processed("k")


class TestAnotherEventLoop:
    async def test_a_call_from_another_event_loop_is_a_store_error(
        self, store: AsyncPostgresStore[CustomerSession]
    ) -> None:
        """Each call made in an event loop other than the store's raises StoreError, saying so.

        The store's pool and locks belong to the loop that opened it; the call
        changes nothing, and the store goes on serving its own loop.
        """
        await closed_with_effects(store)
        calls = {
            "get": lambda: store.get("order-1"),
            "counts": store.counts,
            "update": lambda: store.update("order-1", lambda s: s.cancel()),
            "deliver": lambda: store.deliver(lambda effect: None),
        }

        async def in_another_loop(call: Callable[[], Awaitable[object]]) -> str:
            with pytest.raises(StoreError) as caught:
                await call()
            return str(caught.value)

        for name, call in calls.items():
            message = await asyncio.to_thread(asyncio.run, in_another_loop(call))
            assert "opened in another event loop" in message, name
        assert (await store.get("order-1")).state is State.CLOSED
        assert await store.deliver(lambda effect: None) == 1

    async def test_a_store_opened_by_an_ended_loop_is_closed_by_a_later_one(
        self, named: tuple[str, Callable[[], int]]
    ) -> None:
        """close() under a later ``asyncio.run()`` ends the server sessions; the store is closed."""
        conninfo, server_sessions = named

        async def opened() -> AsyncPostgresStore[CustomerSession]:
            store = await AsyncPostgresStore.open(conninfo, min_connections=2)
            await store.create(new_session())
            return store

        store = await asyncio.to_thread(asyncio.run, opened())
        with pytest.raises(StoreError, match="opened in another event loop"):
            await store.counts()
        assert server_sessions() == 2
        await store.close()
        await until(lambda: server_sessions() == 0)
        with pytest.raises(StoreError, match="is closed: open a new store"):
            await store.counts()
        await store.close()  # closing a closed store does nothing

    async def test_close_from_another_loop_closes_the_store_in_its_own(
        self, named: tuple[str, Callable[[], int]]
    ) -> None:
        """close() from another thread's loop has the opening loop close the pool, while it runs."""
        conninfo, server_sessions = named
        store = await AsyncPostgresStore.open(conninfo, min_connections=2)
        await store.create(new_session())
        # This loop runs while the other thread's closes the store.
        await asyncio.to_thread(asyncio.run, store.close())
        await until(lambda: server_sessions() == 0)
        with pytest.raises(StoreError, match="is closed: open a new store"):
            await store.get("order-1")


@pytest.fixture
def named(conninfo: str, pg_server: TemporaryPostgres) -> tuple[str, Callable[[], int]]:
    """A fresh schema's URL with an application name, and a count of its server sessions."""
    name = f"cs-{time.monotonic_ns()}"

    def server_sessions() -> int:
        with psycopg.connect(pg_server.url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    return f"{conninfo}&application_name={name}", server_sessions


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (the server ends a session a moment after its client left)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


class AsyncWaitSpy:
    """An asyncio lock's stand-in that notes when a task starts to wait for it (held)."""

    def __init__(self, lock: asyncio.Lock) -> None:
        """Wrap ``lock``."""
        self.lock = lock
        self.waiting = asyncio.Event()

    async def __aenter__(self) -> None:
        """Note a wait for the held lock, then take it."""
        if self.lock.locked():  # nothing runs between this and the wait below
            self.waiting.set()
        await self.lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        """Release the lock."""
        self.lock.release()


async def test_async_with_on_a_closed_store_says_it_is_closed(conninfo: str) -> None:
    """``async with`` a store that was closed raises StoreError saying so, not "cannot connect"."""
    store = await AsyncPostgresStore.open(conninfo)
    await store.close()
    with pytest.raises(StoreError, match="is closed") as caught:
        async with store:
            pass
    assert "cannot connect" not in str(caught.value)


class TestNotOpen:
    async def test_a_store_used_before_it_is_opened_says_how(self, conninfo: str) -> None:
        """A call on a store made but not opened is a StoreError naming the ways to open it."""
        store = AsyncPostgresStore(conninfo)
        for call in (lambda: store.get("order-1"), store.counts, store.pending):
            with pytest.raises(StoreError) as caught:
                await call()
            message = str(caught.value)
            assert "is not open" in message
            assert "async with" in message
            assert "AsyncPostgresStore.open(" in message
            assert "pool" not in message  # psycopg's words, not the library's
        async with store:  # the store is unharmed: it opens as usual
            assert await store.counts() == {}

    async def test_a_closed_store_says_it_is_closed(self, conninfo: str) -> None:
        """A call on a closed store is a StoreError saying so, and that a new one is needed."""
        store = await AsyncPostgresStore.open(conninfo)
        await store.close()
        with pytest.raises(StoreError, match="is closed: open a new store") as caught:
            await store.get("order-1")
        assert "pool" not in str(caught.value)

    async def test_a_store_closed_while_a_block_runs_says_it_is_closed(self, conninfo: str) -> None:
        """A block whose store another task closed commits nothing and says the store is closed.

        Not psycopg's "the pool is already closed" as a PostgreSQL error: the
        server had nothing to do with it.
        """
        store = await AsyncPostgresStore.open(conninfo)
        await store.create(new_session())
        inside, closed = asyncio.Event(), asyncio.Event()

        async def close_it() -> None:
            await inside.wait()
            await store.close()
            closed.set()

        seen: list[CustomerSession] = []

        async def edit_meanwhile() -> None:
            async with store.transaction("order-1") as session:
                seen.append(session)
                session.set_coupon("LATE")
                inside.set()
                await closed.wait()

        closing = asyncio.create_task(close_it())
        with pytest.raises(StoreError, match="is closed: open a new store") as caught:
            await edit_meanwhile()
        await closing
        assert caught.value.integration_id == "order-1"
        assert "pool" not in str(caught.value)  # psycopg's words, not the library's
        assert seen[0].coupon is None  # put back: nothing was written

    async def test_a_delivery_waiting_for_another_when_the_store_closes_says_so(
        self, conninfo: str
    ) -> None:
        """A deliver() that waited for a running one, on a store closed meanwhile, says so."""
        store = await AsyncPostgresStore.open(conninfo)
        await closed_with_effects(store)
        inside, gate = asyncio.Event(), asyncio.Event()

        async def held(effect: Effect) -> None:
            del effect
            inside.set()
            await gate.wait()

        turns = AsyncWaitSpy(store._delivering)
        store._delivering = turns  # type: ignore[assignment]
        first = asyncio.create_task(store.deliver(held))
        await asyncio.wait_for(inside.wait(), WAIT)
        second = asyncio.create_task(store.deliver(lambda effect: None))
        await asyncio.wait_for(turns.waiting.wait(), WAIT)  # for the first delivery's turn
        closing = asyncio.create_task(store.close())
        await until(lambda: store._closed)
        gate.set()
        assert await first == 1
        with pytest.raises(StoreError, match="is closed: open a new store") as caught:
            await second
        assert "pool" not in str(caught.value)
        await closing

    async def test_a_call_waiting_for_a_connection_when_the_store_closes_says_so(
        self, conninfo: str
    ) -> None:
        """A call waiting for a pooled connection, on a store closed meanwhile, says it is closed.

        Not psycopg's "the pool ... is closed" (its PoolClosed) as a PostgreSQL error.
        """
        store = await AsyncPostgresStore.open(conninfo, max_connections=1)
        await closed_with_effects(store)
        inside, gate = asyncio.Event(), asyncio.Event()

        async def held(effect: Effect) -> None:
            del effect
            inside.set()
            await gate.wait()

        delivering = asyncio.create_task(store.deliver(held))  # holds the one connection
        await asyncio.wait_for(inside.wait(), WAIT)
        reading = asyncio.create_task(store.get("order-1"))
        await until(lambda: store._pool.get_stats().get("requests_waiting") == 1)
        await store.close()
        with pytest.raises(StoreError, match="is closed: open a new store") as caught:
            await reading
        gate.set()
        await delivering
        assert caught.value.integration_id == "order-1"
        assert "pool" not in str(caught.value)


async def test_unreachable_server_is_a_store_error() -> None:
    """Opening a store on a server that is not there raises StoreError."""
    with pytest.raises(StoreError, match="cannot connect"):
        await AsyncPostgresStore.open("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


async def test_a_cancelled_open_closes_the_pool_it_started(
    conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open() cancelled while its pool connects (a timeout around it) leaves no pool task."""
    connecting = asyncio.Event()

    async def stuck(self: object, connection: object) -> None:
        del self, connection
        connecting.set()
        await asyncio.sleep(0.5)  # the pool's first connection is slow to get ready

    monkeypatch.setattr(AsyncPostgresStore, "_track", stuck)
    store = AsyncPostgresStore(conninfo)
    opening = asyncio.create_task(store.__aenter__())
    await asyncio.wait_for(connecting.wait(), WAIT)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("customer-")]
    assert (store._pool.closed, left) == (True, [])


async def test_open_loads_sessions_into_the_class_given(conninfo: str) -> None:
    """open(session_class=...) passes the class and the other options on to the store."""
    async with await AsyncPostgresStore.open(
        conninfo, session_class=ReopenableCustomerSession, retries=3, max_connections=2
    ) as store:
        await store.create(ReopenableCustomerSession(integration_id="order-1", state=State.CLOSED))
        loaded = await store.get("order-1")
        assert type(loaded) is ReopenableCustomerSession
        assert (store.session_class, store.retries) == (ReopenableCustomerSession, 3)


async def test_the_actor_of_the_store_or_the_call_is_recorded(conninfo: str) -> None:
    """open(actor=...) names the store's entries; an awaited call's actor= wins over it."""
    async with await AsyncPostgresStore.open(conninfo, actor="worker-1") as store:
        await store.create(new_session(), actor="api")
        async with store.transaction("order-1", actor="support") as session:
            session.set_coupon("WELCOME")
        await store.update("order-1", lambda s: s.close())
        assert store.actor == "worker-1"
        assert [e.actor for e in await store.history("order-1")] == ["api", "support", "worker-1"]


async def test_async_change_is_awaited(store: AsyncPostgresStore[CustomerSession]) -> None:
    """update() awaits an async change and returns its result."""
    await store.create(new_session())

    async def change(session: CustomerSession) -> str:
        await asyncio.sleep(0)
        session.set_referral("FRIEND")
        return "done"

    assert await store.update("order-1", change) == "done"
    assert (await store.get("order-1")).referral == "FRIEND"


async def test_async_guards_and_hooks_through_async_session(conninfo: str) -> None:
    """In a block, AsyncSession(session) awaits async guards and hooks; a refusal writes nothing."""
    workflow = Workflow()
    seen: list[Trigger] = []
    allow = False

    @workflow.guard(trigger=Trigger.CLOSE)
    async def approved(event: TransitionEvent) -> str | None:
        await asyncio.sleep(0)
        return None if allow else "not approved yet"

    @workflow.after_commit(trigger=Trigger.CLOSE)
    def committed(event: TransitionEvent) -> None:
        seen.append(event.trigger)

    async with await AsyncPostgresStore.open(conninfo, workflow=workflow) as store:
        await store.create(new_session())
        with pytest.raises(GuardRejected):
            async with store.transaction("order-1") as session:
                await AsyncSession(session).close()
        assert (await store.get("order-1")).state is State.OPEN
        allow = True
        async with store.transaction("order-1") as session:
            await AsyncSession(session).close()
            assert seen == []  # the sync after-commit hook waits for the database commit
        assert seen == [Trigger.CLOSE]
        assert (await store.get("order-1")).state is State.CLOSED


async def test_async_handler_delivers(store: AsyncPostgresStore[CustomerSession]) -> None:
    """deliver() awaits an async handler for each pending row."""
    await closed_with_effects(store)
    delivered: list[Effect] = []

    async def handler(effect: Effect) -> None:
        await asyncio.sleep(0)
        delivered.append(effect)

    assert await store.deliver(handler) == 1
    assert [e.record.trigger for e in delivered] == [Trigger.CLOSE]
    assert await store.pending() == ()


async def test_a_child_forked_by_a_handler_lets_go_of_the_lock_connection(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """In a child forked while a delivery runs, the lock connection's socket is no socket.

    A child keeping it (alive after a kill of the deliverer) would keep the server's
    session, and the advisory lock, until it exits.
    """
    await closed_with_effects(store)
    held: list[int] = []
    reported: list[bytes] = []

    async def handler(effect: Effect) -> None:
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
        await asyncio.to_thread(os.waitpid, pid, 0)  # the child has written: it ends

    assert await store.deliver(handler) == 1
    assert len(held) == 1
    assert reported == [b"\x00"]  # the child's copy points elsewhere
    assert stat.S_ISSOCK(os.fstat(held[0]).st_mode)  # and the pool's connection still works
    assert await store.pending() == ()


async def _in_a_fork(call: Callable[[], Awaitable[object]]) -> str:
    """Run ``call`` in a new event loop of a forked child; return what it raised, or ``ok``."""
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running the parent's cleanup

        async def main() -> None:
            await call()

        try:
            asyncio.run(main())
            outcome = "ok"
        except BaseException as exc:  # reported to the parent
            outcome = f"{type(exc).__name__}: {exc}"
        os.write(writable, outcome.encode())
        os._exit(0)
    os.close(writable)
    with os.fdopen(readable, "rb") as reader:
        reported = await asyncio.to_thread(reader.read)
    await asyncio.to_thread(os.waitpid, pid, 0)
    return reported.decode()


async def test_a_forked_child_may_not_use_its_parents_store(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """A store used in a process forked from its opener is a StoreError saying to open one."""
    await store.create(new_session())
    outcome = await _in_a_fork(lambda: store.get("order-1"))
    assert outcome.startswith("StoreError: ")
    assert "is a fork of the process that opened it" in outcome


async def test_closing_the_store_in_a_forked_child_leaves_the_parents_open(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """close() in a forked child does not end the parent's connections."""
    await store.create(new_session())
    assert await _in_a_fork(store.close) == "ok"
    await store.update("order-1", lambda s: s.close())
    assert (await store.get("order-1")).state is State.CLOSED


async def test_an_async_handler_may_discard_the_row_it_was_handed(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """A handler that awaits discard() of its own row returns; the row stays discarded."""
    await closed_with_effects(store, "order-1", "order-2")
    handed: list[str] = []

    async def handler(effect: Effect) -> None:
        handed.append(effect.integration_id)
        if effect.integration_id == "order-1":
            await store.discard(effect.sequence, reason="the receiver answered 400")

    assert await asyncio.wait_for(store.deliver(handler), timeout=WAIT) == 1
    assert handed == ["order-1", "order-2"]
    assert [(e.integration_id, e.discard_reason) for e in await store.discarded()] == [
        ("order-1", "the receiver answered 400")
    ]
    assert await store.pending() == ()


async def test_a_task_discards_a_row_while_an_async_handler_has_it(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """Another task's discard does not wait for the handler; the delivery then marks nothing."""
    await closed_with_effects(store)
    (row,) = await store.pending()
    handing = asyncio.Event()
    resume = asyncio.Event()

    async def handler(effect: Effect) -> None:
        handing.set()
        await resume.wait()

    delivery = asyncio.create_task(store.deliver(handler))
    await asyncio.wait_for(handing.wait(), timeout=WAIT)
    discarded = await asyncio.wait_for(store.discard(row.sequence, reason="gave up"), WAIT)
    resume.set()
    assert await asyncio.wait_for(delivery, timeout=WAIT) == 0
    assert await store.discarded() == (discarded,)
    assert await store.pending() == ()


async def test_max_attempts_discards_with_an_async_handler(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """An awaited handler failing max_attempts times discards its row; the next goes on."""
    await closed_with_effects(store, "order-1", "order-2")

    async def handler(effect: Effect) -> None:
        if effect.integration_id == "order-1":
            raise ValueError("400 Bad Request")

    with pytest.raises(ValueError, match="400") as raised:
        await store.deliver(handler, max_attempts=1)
    assert raised.value.__notes__[-1].endswith("its failures reached max_attempts=1)")
    (effect,) = await store.discarded()
    assert (effect.integration_id, effect.discard_reason) == (
        "order-1",
        "ValueError: 400 Bad Request",
    )
    assert await store.deliver(handler, max_attempts=1) == 1


async def test_deliver_from_an_async_handler_of_the_same_store_is_refused(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """deliver() awaited by one of the store's own handlers raises WorkflowError, no hang."""
    await closed_with_effects(store)

    async def handler(effect: Effect) -> None:
        await store.deliver(lambda e: None)

    with pytest.raises(WorkflowError, match="from a handler of a delivery of the same outbox"):
        await asyncio.wait_for(store.deliver(handler), timeout=WAIT)
    assert [e.attempts for e in await store.pending()] == [1]
    assert await store.deliver(lambda e: None) == 1


async def test_deliver_from_an_async_handler_through_another_store_object_is_refused(
    store: AsyncPostgresStore[CustomerSession], conninfo: str
) -> None:
    """Another store object on the schema, awaited by a handler, raises WorkflowError, no hang.

    It would wait for the advisory lock the running delivery holds.
    """
    await closed_with_effects(store)
    async with await AsyncPostgresStore.open(conninfo) as other:

        async def handler(effect: Effect) -> None:
            await other.deliver(lambda e: None)

        with pytest.raises(WorkflowError, match="from a handler of a delivery of the same outbox"):
            await asyncio.wait_for(store.deliver(handler), timeout=WAIT)
        assert [e.attempts for e in await other.pending()] == [1]
        assert await other.deliver(lambda e: None) == 1


async def test_a_handlers_delivery_of_another_schema_leaves_that_schemas_lock_free(
    store: AsyncPostgresStore[CustomerSession], pg_server: TemporaryPostgres
) -> None:
    """Once an async handler's delivery of another schema is over, that schema's lock is free."""
    await closed_with_effects(store)
    busy = pg_server.fresh_schema()
    async with await AsyncPostgresStore.open(busy) as other:
        await closed_with_effects(other)

        async def handler(effect: Effect) -> None:
            assert await other.deliver(lambda e: None) == 1

        assert await asyncio.wait_for(store.deliver(handler), timeout=WAIT) == 1
        with psycopg.connect(busy, autocommit=True) as watcher:
            taken = "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.outbox'))"
            assert watcher.execute(taken).fetchone() == (True,)


async def test_another_task_delivering_through_another_store_object_waits(
    store: AsyncPostgresStore[CustomerSession], conninfo: str
) -> None:
    """A task that is no handler's, on another store object, waits for the delivery."""
    await closed_with_effects(store)
    handed: list[str] = []
    async with await AsyncPostgresStore.open(conninfo) as other:
        # Created before the delivery: the task's context has no delivery in it.
        go = asyncio.Event()

        async def racer() -> int:
            await go.wait()
            return await other.deliver(lambda e: handed.append("other"))

        racing = asyncio.create_task(racer())

        async def handler(effect: Effect) -> None:
            handed.append("store")
            go.set()
            # The racer must wait for this delivery, not find the row still pending.
            await until(lambda: waiting_for_an_advisory_lock(conninfo))

        assert await asyncio.wait_for(store.deliver(handler), timeout=WAIT) == 1
        assert await asyncio.wait_for(racing, timeout=WAIT) == 0
        assert handed == ["store"]


async def test_a_task_started_by_a_handler_may_deliver_once_the_delivery_ended(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """A task that inherited a handler's context is not refused after that delivery ended."""
    await closed_with_effects(store)
    started = asyncio.Event()
    later: list[asyncio.Task[int]] = []

    async def deliver_later() -> int:
        await started.wait()
        return await store.deliver(lambda e: None)

    def handler(effect: Effect) -> None:
        later.append(asyncio.create_task(deliver_later()))

    assert await store.deliver(handler) == 1
    await store.create(new_session("order-2"))
    await store.update("order-2", lambda s: s.close())
    started.set()
    assert await later[0] == 1


async def test_a_task_started_by_a_handler_takes_its_own_connection_once_the_delivery_ended(
    conninfo: str,
) -> None:
    """A handler's task that outlives the delivery does not keep using its connection.

    That connection went back to the pool, and another task has it: a commit of the
    handler's task cancelled there would stop the other task's statement.
    """
    async with await AsyncPostgresStore.open(conninfo, max_connections=1) as store:
        await closed_with_effects(store, "order-3")
        for integration_id in ("order-1", "order-2"):
            await store.create(new_session(integration_id))
        loaded, go = asyncio.Event(), asyncio.Event()

        async def later_change() -> None:
            async with store.transaction("order-1") as session:
                loaded.set()
                await go.wait()
                session.set_coupon("LATER")

        later: list[asyncio.Task[None]] = []

        def handler(effect: Effect) -> None:
            later.append(asyncio.create_task(later_change()))

        assert await asyncio.wait_for(store.deliver(handler), timeout=WAIT) == 1
        await asyncio.wait_for(loaded.wait(), timeout=WAIT)
        holder = lock_row(conninfo, "order-2")
        closing = asyncio.create_task(store.update("order-2", lambda s: s.close()))
        await blocked_by(holder, conninfo)  # the pool's one connection waits for the lock
        go.set()
        for _ in range(10):  # the handler's task reaches its commit, and waits there
            await asyncio.sleep(0)
        later[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(later[0], timeout=WAIT)
        holder.rollback()
        holder.close()
        await asyncio.wait_for(closing, timeout=WAIT)
        assert (await store.get("order-2")).state is State.CLOSED
        assert (await store.get("order-1")).coupon is None


async def test_a_task_of_an_ended_delivery_waits_for_the_next_one_on_its_connection(
    conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler's task that finds the lock held once that delivery ended waits, not refused.

    The pooled connection the ended delivery held the lock on holds it again for
    another delivery (a pool of one), which the task must wait for.
    """
    async with (
        await AsyncPostgresStore.open(conninfo, max_connections=1) as store,
        await AsyncPostgresStore.open(conninfo) as other,
    ):
        store.on_commit("notify", trigger="close")
        for integration_id in ("order-1", "order-2"):
            await store.create(new_session(integration_id))
        await store.update("order-1", lambda s: s.close())
        tried, resume = asyncio.Event(), asyncio.Event()
        advisory = other._advisory

        async def paused_after_the_try(connection: object, statement: str) -> object:
            result = await advisory(connection, statement)  # type: ignore[arg-type]
            if "pg_try_advisory_lock" in statement:
                tried.set()
                await resume.wait()  # the delivery ends, another takes the lock
            return result

        monkeypatch.setattr(other, "_advisory", paused_after_the_try)
        tasks: list[asyncio.Task[int]] = []

        async def handler(effect: Effect) -> None:
            tasks.append(asyncio.create_task(other.deliver(lambda e: None)))
            await tried.wait()  # the task found the lock held by this delivery

        assert await asyncio.wait_for(store.deliver(handler), timeout=WAIT) == 1
        await store.update("order-2", lambda s: s.close())
        holding, go = asyncio.Event(), asyncio.Event()

        async def slow(effect: Effect) -> None:
            holding.set()
            await go.wait()

        next_delivery = asyncio.create_task(store.deliver(slow))
        await asyncio.wait_for(holding.wait(), timeout=WAIT)
        resume.set()
        await until(lambda: waiting_for_an_advisory_lock(conninfo))  # not refused: it waits
        assert not tasks[0].done()
        go.set()
        assert await asyncio.wait_for(next_delivery, timeout=WAIT) == 1
        assert await asyncio.wait_for(tasks[0], timeout=WAIT) == 0


class TestRevisingARefusal:
    """The replay's ``_revising(key)`` (StoreCore's) on the async store, as on the sync ones."""

    async def test_a_change_takes_over_its_keys_refusal(
        self, store: AsyncPostgresStore[CustomerSession]
    ) -> None:
        """A change committed with a key recorded as refused records the key as applied."""
        await store.create(new_session())
        await store.mark_processed("k", integration_id="order-1", refusal="unknown session")
        with store._revising("k"):
            await store.update("order-1", lambda s: s.close(), key="k")
        assert await store.processed_key("k") == ProcessedKey("k", "order-1", None)
        assert [e.key for e in await store.history("order-1")] == [None, "k"]

    async def test_a_commit_of_no_change_takes_over_its_keys_refusal(
        self, store: AsyncPostgresStore[CustomerSession]
    ) -> None:
        """A commit that changes nothing, with a key recorded as refused, records it as applied."""
        await store.create(new_session())
        await store.mark_processed("k", integration_id="order-1", refusal="unknown session")
        with store._revising("k"):
            await store.update("order-1", lambda s: None, key="k")
        assert await store.processed_key("k") == ProcessedKey("k", "order-1", None)
        assert len(await store.history("order-1")) == 1

    async def test_a_create_of_a_stored_session_is_session_exists(
        self, store: AsyncPostgresStore[CustomerSession]
    ) -> None:
        """In its block, a refused key does not stop a create: a stored session is SessionExists."""
        await store.create(new_session())
        await store.mark_processed("k", integration_id="order-1", refusal="unknown session")
        with store._revising("k"), pytest.raises(SessionExists):
            await store.create(new_session(), key="k")
        assert await store.processed_key("k") == ProcessedKey("k", "order-1", "unknown session")


class TestOptimisticConcurrency:
    async def test_tasks_on_separate_connections_lose_no_update(self, conninfo: str) -> None:
        """Tasks adding items through separate stores (pools) lose none; versions add up."""
        tasks, per_task = 6, 8
        stores = [await AsyncPostgresStore.open(conninfo, retries=200) for _ in range(tasks)]
        try:
            await stores[0].create(new_session())

            async def work(worker: int) -> None:
                for n in range(per_task):
                    item = CartItem(sku=f"T{worker}-{n}", quantity=1)
                    await stores[worker].update("order-1", lambda s, i=item: s.add_item(i))

            await asyncio.gather(*(work(w) for w in range(tasks)))
            stored = await stores[0].get("order-1")
            history = await stores[0].history("order-1")
        finally:
            for store in stores:
                await store.close()
        assert len(stored.cart_items) == 1 + tasks * per_task
        assert [e.version for e in history] == list(range(1, 2 + tasks * per_task))
        assert rebuild(history) == stored

    async def test_tasks_sharing_one_store_lose_no_update(
        self, store: AsyncPostgresStore[CustomerSession]
    ) -> None:
        """Tasks sharing one store object (and its pool) lose no update either."""
        await store.create(new_session())

        async def work(worker: int) -> None:
            for n in range(5):
                item = CartItem(sku=f"S{worker}-{n}", quantity=1)
                await store.update("order-1", lambda s, i=item: s.add_item(i), retries=200)

        await asyncio.gather(*(work(w) for w in range(6)))
        history = await store.history("order-1")
        assert history[-1].version == 1 + 6 * 5
        assert len((await store.get("order-1")).cart_items) == 1 + 6 * 5

    async def test_conflict_after_the_retries_raises(self, conninfo: str) -> None:
        """A change that loses every race raises ConcurrentUpdate with the attempts made."""
        async with (
            await AsyncPostgresStore.open(conninfo) as store,
            await AsyncPostgresStore.open(conninfo) as other,
        ):
            await store.create(new_session())
            runs = 0

            async def change(session: CustomerSession) -> None:
                nonlocal runs
                runs += 1
                await other.update("order-1", lambda s: s.set_coupon(f"C{runs}"))
                session.set_referral("MINE")

            with pytest.raises(ConcurrentUpdate) as caught:
                await store.update("order-1", change, retries=2)
            assert caught.value.attempts == 3
            # A first run on the store's cached copy that turns out stale is not a
            # lost race: it is repeated on the stored row without counting.
            assert runs in {3, 4}
            stored = await store.get("order-1")
            assert (stored.referral, stored.coupon) == (None, f"C{runs}")
            assert (await store.history("order-1"))[-1].version == 1 + runs

    async def test_transaction_conflict_raises_at_once(self, conninfo: str) -> None:
        """A transaction block over a change made since its load raises ConcurrentUpdate."""
        async with (
            await AsyncPostgresStore.open(conninfo) as store,
            await AsyncPostgresStore.open(conninfo) as other,
        ):
            await store.create(new_session())
            with pytest.raises(ConcurrentUpdate) as caught:  # noqa: PT012 - the block is what is tested
                async with store.transaction("order-1") as session:
                    session.set_coupon("MINE")
                    await other.update("order-1", lambda s: s.set_coupon("THEIRS"))
            assert caught.value.attempts == 1
            assert session.coupon is None
            assert (await store.get("order-1")).coupon == "THEIRS"


async def test_a_task_of_the_block_cannot_change_the_session_during_the_write(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """A task the block created that fires while the store writes is refused.

    Its transition would exist only in memory: the write has already been sent.
    """
    await store.create(new_session())
    attempts: list[BaseException | None] = []

    async def cancel_later(session: CustomerSession) -> None:
        await asyncio.sleep(0)  # runs again once the block has ended: during the write
        try:
            session.cancel()
        except TransitionInProgress as exc:
            attempts.append(exc)
        else:
            attempts.append(None)

    async with store.transaction("order-1") as session:
        session.close()
        task = asyncio.create_task(cancel_later(session))
    await task
    assert len(attempts) == 1
    assert isinstance(attempts[0], TransitionInProgress)
    assert attempts[0].held
    assert "while the store commits" in str(attempts[0])
    assert session.state is State.CLOSED
    stored = await store.get("order-1")
    assert stored.state is State.CLOSED
    assert [entry.operation for entry in await store.history("order-1")] == ["create", "close"]


class TestAsyncAfterCommitHooks:
    @staticmethod
    async def _store(conninfo: str, seen: list[str]) -> AsyncPostgresStore[CustomerSession]:
        workflow = Workflow()

        async def publish(event: TransitionEvent) -> None:
            await asyncio.sleep(0)
            seen.append(event.session.integration_id)

        workflow.after_commit(publish, trigger="close")
        store = await AsyncPostgresStore.open(conninfo, workflow=workflow)
        await store.create(new_session())
        return store

    async def test_an_async_hook_waits_for_the_database_commit(self, conninfo: str) -> None:
        """An async after-commit hook of a trigger in the block is awaited after the commit."""
        seen: list[str] = []
        async with await self._store(conninfo, seen) as store:
            async with store.transaction("order-1") as session:
                await AsyncSession(session).close()
                assert seen == []
            assert seen == ["order-1"]

    async def test_an_async_hook_fired_after_the_block_is_awaited_at_once(
        self, conninfo: str
    ) -> None:
        """Fired after the block, an async after-commit hook is awaited at once."""
        seen: list[str] = []
        async with await self._store(conninfo, seen) as store:
            async with store.transaction("order-1") as session:
                pass
            await AsyncSession(session).close()
            assert seen == ["order-1"]

    async def test_an_async_hook_does_not_run_when_nothing_commits(self, conninfo: str) -> None:
        """An async after-commit hook of a block that raises never runs."""
        seen: list[str] = []
        async with await self._store(conninfo, seen) as store:
            with pytest.raises(RuntimeError):  # noqa: PT012 - the block is what is tested
                async with store.transaction("order-1") as session:
                    await AsyncSession(session).close()
                    raise RuntimeError
            assert seen == []
            assert (await store.get("order-1")).state is State.OPEN

    async def test_a_timeout_in_an_async_hook_says_what_committed(self, conninfo: str) -> None:
        """A cancellation in a hook run after the commit notes it, and keeps earlier failures."""
        workflow = Workflow()

        def mailer(event: TransitionEvent) -> None:
            raise ConnectionError("mail server down")

        async def crm(event: TransitionEvent) -> None:
            await asyncio.sleep(WAIT)  # the CRM does not answer

        workflow.after_commit(mailer, trigger="close", name="mailer")
        workflow.after_commit(crm, trigger="close", name="crm")
        async with await AsyncPostgresStore.open(conninfo, workflow=workflow) as store:
            await store.create(new_session())
            with pytest.raises(TimeoutError) as caught:
                async with asyncio.timeout(0.2):
                    await store.update("order-1", lambda s: AsyncSession(s).close())
            cancelled = caught.value.__context__
            assert isinstance(cancelled, asyncio.CancelledError)
            (note,) = cancelled.__notes__
            assert note == (
                "close() committed (open -> closed), then after-commit hook 'crm' was "
                "interrupted; 1 after-commit hook had raised before (the "
                "AfterCommitHookFailed in this exception's __context__)"
            )
            group = cancelled.__context__
            assert isinstance(group, AfterCommitHookFailed)
            assert [str(e) for e in group.exceptions] == ["mail server down"]
            assert (await store.get("order-1")).state is State.CLOSED


async def test_a_nested_block_still_open_when_the_block_ends_is_refused(
    store: AsyncPostgresStore[CustomerSession],
) -> None:
    """A block that ends inside an atomic() block it opened writes nothing, and raises.

    That nested block could still roll back, undoing in memory what was written.
    """
    await store.create(new_session())
    with pytest.raises(SessionNotEditable) as caught:  # noqa: PT012 - the block is what is tested
        async with store.transaction("order-1") as session:
            nested = session.atomic()
            nested.__enter__()
            session.close()
    assert caught.value.operation == "commit"
    nested.__exit__(None, None, None)
    assert session.state is State.OPEN
    assert (await store.get("order-1")).state is State.OPEN
    assert len(await store.history("order-1")) == 1


# -- while the store waits for the database ---------------------------------------------


def lock_row(
    conninfo: str, integration_id: str = "order-1"
) -> psycopg.Connection[tuple[object, ...]]:
    """Another connection's transaction holding the session's row: the store's writes wait."""
    holder = psycopg.connect(conninfo)
    holder.execute(
        "SELECT 1 FROM customer_sessions WHERE integration_id = %s FOR UPDATE", (integration_id,)
    )
    return holder


async def blocked_by(holder: psycopg.Connection[tuple[object, ...]], conninfo: str) -> None:
    """Wait until a statement of another connection waits for ``holder``'s locks."""
    deadline = time.monotonic() + WAIT
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            if blocks_another(watcher, holder):
                return
            await asyncio.sleep(0.01)
    raise AssertionError("no statement waited for the lock")


def committed_version(conninfo: str, version: int) -> None:
    """Wait, blocking the event loop, until the session row is at ``version``."""
    deadline = time.monotonic() + WAIT
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT version FROM customer_sessions WHERE integration_id = 'order-1'"
            ).fetchone()
            if row is not None and row[0] == version:
                return
            watcher.execute("SELECT pg_sleep(0.01)")
    raise AssertionError(f"the row never reached version {version}")


class TestWhileTheStoreWrites:
    async def test_an_edit_made_while_create_writes_does_not_reach_the_store(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """An edit of the session during create()'s write is the caller's alone.

        The store's copy is what was written: a later get() and the next commit
        do not see the edit.
        """
        await store.counts()  # creates the schema
        holder = psycopg.connect(conninfo)
        holder.execute(
            "INSERT INTO customer_sessions"
            " (integration_id, integration_id_digest, state, version, updated, document)"
            " VALUES ('order-1', sha256('order-1'), 'open', 1, now(), '{}')"
        )
        session = new_session()
        task = asyncio.create_task(store.create(session))
        await blocked_by(holder, conninfo)
        session.set_coupon("LATE")
        holder.rollback()
        holder.close()
        await task
        assert (await store.get("order-1")).coupon is None
        await store.update("order-1", lambda s: s.close())
        assert (await store.get("order-1")).coupon is None
        assert "coupon" not in (await store.history("order-1"))[-1].changes

    async def test_a_cancellation_during_the_commit_keeps_what_committed(
        self, conninfo: str
    ) -> None:
        """A task cancelled while its commit statement runs ends as the database did.

        Here the statement commits before the store sees the answer: the session
        keeps the change, the store's copy is the committed row, the after-commit
        hooks do not run, and the CancelledError propagates.
        """
        workflow = Workflow()
        seen: list[Trigger] = []
        workflow.after_commit(lambda event: seen.append(event.trigger))
        async with await AsyncPostgresStore.open(conninfo, workflow=workflow) as store:
            await store.create(new_session())
            blocks: list[CustomerSession] = []

            async def close() -> None:
                async with store.transaction("order-1") as session:
                    blocks.append(session)
                    session.close()

            holder = lock_row(conninfo)
            task = asyncio.create_task(close())
            await blocked_by(holder, conninfo)
            holder.commit()  # the store's statement goes on and commits...
            committed_version(conninfo, 2)  # ...while this task keeps the event loop
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            holder.close()
            session = blocks[0]
            assert session.state is State.CLOSED
            assert await store.get("order-1") == session
            assert seen == []
            # The next change starts from the store's copy, the committed one.
            await store.update("order-1", lambda s: s.cancel(), operation="refund")
            history = await store.history("order-1")
            assert [(e.version, e.operation) for e in history] == [
                (1, "create"),
                (2, "close"),
                (3, "refund"),
            ]
            assert rebuild(history) == await store.get("order-1")

    async def test_a_cancellation_as_the_commit_returns_its_connection_keeps_what_committed(
        self, conninfo: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task cancelled after its commit, while the pool takes the connection back, keeps it.

        The commit's outcome is known by then: the session and the store's copy keep
        the change, the after-commit hooks do not run, the CancelledError propagates.
        """
        workflow = Workflow()
        seen: list[Trigger] = []
        workflow.after_commit(lambda event: seen.append(event.trigger))
        async with await AsyncPostgresStore.open(conninfo, workflow=workflow) as store:
            await store.create(new_session())
            blocks: list[CustomerSession] = []
            armed = []
            putconn = store._pool.putconn

            async def cancelled_while_put_back(connection: object) -> None:
                await putconn(connection)  # type: ignore[arg-type]
                if armed:
                    armed.clear()
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()
                    await asyncio.sleep(0)  # where the pool may wait: the cancellation lands

            monkeypatch.setattr(store._pool, "putconn", cancelled_while_put_back)

            async def close() -> None:
                async with store.transaction("order-1") as session:
                    blocks.append(session)
                    session.close()
                    armed.append(True)  # the next connection put back is the commit's

            with pytest.raises(asyncio.CancelledError):
                await asyncio.create_task(close())
            committed_version(conninfo, 2)
            session = blocks[0]
            assert session.state is State.CLOSED
            assert await store.get("order-1") == session
            assert seen == []
            await store.update("order-1", lambda s: s.cancel(), operation="refund")
            history = await store.history("order-1")
            assert [(e.version, e.operation) for e in history] == [
                (1, "create"),
                (2, "close"),
                (3, "refund"),
            ]

    async def test_a_cancellation_while_the_commit_waits_commits_nothing(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """A task cancelled while its commit waits for a lock stops it: nothing is written."""
        await store.create(new_session())
        holder = lock_row(conninfo)
        task = asyncio.create_task(store.update("order-1", lambda s: s.close()))
        await blocked_by(holder, conninfo)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        holder.rollback()
        holder.close()
        assert (await store.get("order-1")).state is State.OPEN
        assert len(await store.history("order-1")) == 1
        await store.update("order-1", lambda s: s.set_coupon("AFTER"))
        assert (await store.get("order-1")).coupon == "AFTER"

    async def test_a_cancellation_during_create_keeps_what_committed(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """A create() cancelled after its insert committed leaves the store's copy right."""
        await store.counts()  # creates the schema
        holder = psycopg.connect(conninfo)
        holder.execute(
            "INSERT INTO customer_sessions"
            " (integration_id, integration_id_digest, state, version, updated, document)"
            " VALUES ('order-1', sha256('order-1'), 'open', 1, now(), '{}')"
        )
        task = asyncio.create_task(store.create(new_session()))
        await blocked_by(holder, conninfo)
        holder.rollback()  # the store's insert goes on and commits
        committed_version(conninfo, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.close()
        await store.update("order-1", lambda s: s.close())
        history = await store.history("order-1")
        assert [e.operation for e in history] == ["create", "close"]
        assert rebuild(history) == await store.get("order-1")

    async def test_a_delivery_cancelled_as_it_gets_the_lock_leaves_it_free(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """A delivery cancelled just as the server grants it the outbox lock does not keep it.

        Its pooled connection would otherwise hold the lock, and every other
        deliverer would wait for it forever.
        """
        await closed_with_effects(store)
        lock = "SELECT pg_advisory_lock(hashtext(current_schema() || '.outbox'))"
        with psycopg.connect(conninfo, autocommit=True) as holder:
            holder.execute(lock)
            task = asyncio.create_task(store.deliver(lambda effect: None))
            await blocked_by(holder, conninfo)
            holder.execute("SELECT pg_advisory_unlock(hashtext(current_schema() || '.outbox'))")
            granted = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            deadline = time.monotonic() + WAIT
            with psycopg.connect(conninfo, autocommit=True) as watcher:
                # The server grants the store the lock while this task keeps the event loop.
                while watcher.execute(granted).fetchone() != (1,):
                    assert time.monotonic() < deadline, "the store was never granted the lock"
                    watcher.execute("SELECT pg_sleep(0.01)")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The store closed the connection that holds the lock; its server process
            # ends, and the lock with it, a moment later (not within the close call).
            taken = "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.outbox'))"
            while holder.execute(taken).fetchone() != (True,):
                assert time.monotonic() < deadline, "the cancelled delivery kept the lock"
                holder.execute("SELECT pg_sleep(0.01)")
            holder.execute("SELECT pg_advisory_unlock(hashtext(current_schema() || '.outbox'))")
        assert await store.deliver(lambda effect: None) == 1


class TestDamagedRows:
    async def test_a_state_column_that_disagrees_with_the_document_is_corrupt(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """A state column that is not its document's state is CorruptData naming the session."""
        await store.create(new_session())
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("UPDATE customer_sessions SET state = 'cancelled'")
        with pytest.raises(CorruptData, match="session 'order-1': the stored state column says"):
            await store.get("order-1")

    async def test_tables_without_a_schema_version_are_refused_as_damaged(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """Tables whose version table was dropped: UnsupportedSchema saying so, nothing created."""
        await store.create(new_session())
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("DROP TABLE customer_session_schema")
        async with AsyncPostgresStore(conninfo) as later:
            with pytest.raises(UnsupportedSchema, match="tables but no schema version") as caught:
                await later.get("order-1")
        assert caught.value.found is None
        assert str(caught.value).startswith(f"{caught.value.database} has ")

    async def test_a_newer_schema_is_refused_naming_the_database(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """A schema of a newer version: UnsupportedSchema naming the database, without secrets."""
        await store.create(new_session())
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("UPDATE customer_session_schema SET version = 99")
        async with AsyncPostgresStore(conninfo) as later:
            with pytest.raises(UnsupportedSchema, match="upgrade the library") as caught:
                await later.get("order-1")
        database = caught.value.database
        assert database.startswith("PostgreSQL database ")
        assert "(schema 's_" in database
        assert "password" not in database
        assert str(caught.value).startswith(f"{database} has customer-session schema version 99")


def schema_tables(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
    return [name for (name,) in rows]


class TestWithoutMigrating:
    async def test_an_empty_schema_is_refused_and_left_empty(self, conninfo: str) -> None:
        """An async store opened with migrate=False on an empty schema creates no table."""
        async with await AsyncPostgresStore.open(conninfo, migrate=False) as worker:
            assert worker.migrate is False
            with pytest.raises(SchemaNotReady, match="holds no session store") as caught:
                await worker.create(new_session())
        assert caught.value.found == 0
        assert caught.value.database.startswith("PostgreSQL database ")
        assert "password" not in caught.value.database
        assert schema_tables(conninfo) == []

    async def test_an_older_schema_is_refused_and_not_migrated(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """An async store opened with migrate=False refuses version 3 and leaves it at 3."""
        await store.create(new_session())
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("UPDATE customer_session_schema SET version = 3")
        async with AsyncPostgresStore(conninfo, migrate=False) as worker:
            with pytest.raises(SchemaNotReady, match="schema version 3, this library needs"):
                await worker.get("order-1")
        with psycopg.connect(conninfo, autocommit=True) as connection:
            version = connection.execute("SELECT version FROM customer_session_schema").fetchall()
        assert version == [(3,)]

    async def test_a_current_schema_serves_concurrent_first_calls(
        self, store: AsyncPostgresStore[CustomerSession], conninfo: str
    ) -> None:
        """With migrate=False, concurrent first calls on a current schema all succeed."""
        await store.create(new_session())
        async with AsyncPostgresStore(conninfo, migrate=False) as worker:
            states = await asyncio.gather(*(worker.get("order-1") for _ in range(5)))
            assert {session.state for session in states} == {State.OPEN}
            await worker.update("order-1", lambda s: s.close())
        assert (await store.get("order-1")).state is State.CLOSED
