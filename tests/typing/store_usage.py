"""Typed usage of customer_session.store; CI type-checks this file with mypy --strict."""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_type

from customer_session import (
    CustomerSession,
    ReopenableCustomerSession,
    State,
    TransitionRecord,
    Trigger,
)
from customer_session.store import (
    AsyncPostgresStore,
    DurableEffect,
    Effect,
    EffectHandler,
    JournalEntry,
    JournalKind,
    PostgresStore,
    SessionStore,
    SQLiteStore,
    StoreReplayer,
    open_store,
    rebuild,
)

if TYPE_CHECKING:
    from datetime import datetime


def close(session: CustomerSession) -> TransitionRecord:
    """Close a session; used as a store change."""
    return session.close()


def states(store: SessionStore[CustomerSession]) -> dict[State, int]:
    """Code that accepts any backend."""
    return store.counts()


def stale(store: SessionStore[CustomerSession], cutoff: datetime) -> tuple[str, ...]:
    """Open sessions not changed since ``cutoff``, on any backend."""
    return store.ids(state=[State.OPEN, "closed"], updated_before=cutoff, limit=100)


def housekeeping(store: SessionStore[CustomerSession], cutoff: datetime) -> int:
    """Purge delivered outbox rows and forget old keys, on any backend."""
    return store.purge_delivered(before=cutoff) + store.forget_keys(before=cutoff)


def send(effect: Effect) -> None:
    """A durable-effect handler."""
    assert isinstance(effect.key, str)
    assert effect.record.trigger is Trigger.CLOSE


handler: EffectHandler = send

with SQLiteStore(":memory:") as store:
    assert_type(store, SQLiteStore[CustomerSession])
    store.create(CustomerSession(integration_id="order-1"))
    record: TransitionRecord = store.update("order-1", close)
    assert_type(store.update("order-1", lambda s: s.state), State)
    with store.transaction("order-1", key="event-7", actor="support:ann") as session:
        assert_type(session, CustomerSession)
        if session.state is State.CLOSED:
            session.cancel()
    entries: tuple[JournalEntry, ...] = store.history("order-1")
    kind: JournalKind = entries[-1].kind
    actor: str | None = entries[-1].actor
    rebuilt: CustomerSession = rebuild(entries)
    effect: DurableEffect = store.on_commit("erp", trigger=Trigger.CLOSE)
    delivered: int = store.deliver(handler, limit=10, max_attempts=5)
    for poison in store.pending(limit=1):
        given_up: Effect = store.discard(poison.sequence, reason="refused for good")
        when: datetime | None = given_up.discarded_at
        why: str | None = given_up.discard_reason
    discarded: tuple[Effect, ...] = store.discarded(limit=10)
    total: dict[State, int] = states(store)

with SQLiteStore(":memory:", session_class=ReopenableCustomerSession) as reopenable:
    assert_type(reopenable, SQLiteStore[ReopenableCustomerSession])
    reopenable.create(ReopenableCustomerSession(integration_id="order-2", state=State.CLOSED))
    reopened: TransitionRecord = reopenable.update("order-2", lambda s: s.reopen())
    typed: ReopenableCustomerSession = reopenable.get("order-2")
    again: ReopenableCustomerSession = rebuild(
        reopenable.history("order-2"), session_class=ReopenableCustomerSession
    )

any_store: SessionStore[CustomerSession] = open_store(":memory:", actor="worker-1")
assert_type(any_store.actor, str | None)
any_store.create(CustomerSession(integration_id="order-1"), actor="api")
# A tool on any backend checks that it registers the effects the outbox holds.
unregistered = set(any_store.outbox_effects()) - {e.name for e in any_store.effects}
any_store.close()


def deploy(url: str) -> None:
    """A deploy step: migrate the schema, and say what was found."""
    with open_store(url) as store:
        found = store.migrate_schema()
    assert_type(found, int)


def worker(url: str) -> None:
    """A worker of a database migrated at deploy time: it only checks the schema."""
    checked: SessionStore[CustomerSession] = open_store(url, migrate=False, timeout=5.0)
    assert_type(checked.migrate, bool)
    sqlite: SQLiteStore[CustomerSession] = SQLiteStore(url, migrate=False)
    postgres_worker = PostgresStore(
        url, session_class=ReopenableCustomerSession, migrate=False, timeout=5.0
    )
    assert_type(postgres_worker, PostgresStore[ReopenableCustomerSession])
    for store in (checked, sqlite, postgres_worker):
        store.close()


postgres: type[PostgresStore[CustomerSession]] = PostgresStore
replayer = StoreReplayer(":memory:", log_id="orders-2026-03", actor="nightly-replay")
replayer.close()


async def close_later(session: CustomerSession) -> TransitionRecord:
    """An async change for the async store's update()."""
    return session.close()


async def async_store(url: str) -> None:
    """The async store keeps the session class it is opened with."""
    async with await AsyncPostgresStore.open(url, actor="worker-1", timeout=5.0) as opened:
        assert_type(opened, AsyncPostgresStore[CustomerSession])
        assert_type(await opened.migrate_schema(), int)
        await opened.create(CustomerSession(integration_id="order-1"), actor="api")
        assert_type(await opened.get("order-1"), CustomerSession)
        # update() takes a plain or an async change and returns what it returns (awaited).
        assert_type(await opened.update("order-1", close_later), TransitionRecord)
        assert_type(await opened.update("order-1", lambda s: s.state), State)
        assert_type(await opened.update("order-1", close), TransitionRecord)
        async with opened.transaction("order-1") as session:
            assert_type(session, CustomerSession)
        assert_type(await opened.history("order-1"), tuple[JournalEntry, ...])
    reopenable = await AsyncPostgresStore.open(url, session_class=ReopenableCustomerSession)
    assert_type(reopenable, AsyncPostgresStore[ReopenableCustomerSession])
    assert_type(await reopenable.get("order-2"), ReopenableCustomerSession)
    await reopenable.close()
