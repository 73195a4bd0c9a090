"""PostgreSQL specifics of the sync and async stores: the connection pool."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from customer_session import CartItem, CustomerSession, StoreError
from customer_session.store import AsyncPostgresStore, PostgresStore

from .conftest import SyncOverAsync

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres


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


def test_the_call_after_a_lost_connection_gets_a_working_one(open_pool, database):
    """When the server drops the pool's connections, one call fails and the next works.

    The failing call raises StoreError naming its session; the pool's other idle
    connections, dropped too, are replaced instead of failing the calls after it.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    store = open_pool(min_connections=4, max_connections=4)
    store.create(CustomerSession(integration_id="order-1"))
    with psycopg.connect(database, autocommit=True) as admin:
        for _ in range(500):
            # The pool fills its minimum in the background.
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchone()
            if row is not None and row[0] >= 4:
                break
            admin.execute("SELECT pg_sleep(0.01)")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
    with pytest.raises(StoreError, match="order-1") as caught:
        store.get("order-1")
    assert caught.value.integration_id == "order-1"
    for _ in range(4):
        assert store.get("order-1").integration_id == "order-1"
