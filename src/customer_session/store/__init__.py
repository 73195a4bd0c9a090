"""Sessions in a shared database: SQLite by default, PostgreSQL for many workers.

>>> from customer_session import CustomerSession, State
>>> from customer_session.store import SQLiteStore
>>> store = SQLiteStore(":memory:")  # or a file; PostgresStore("postgresql://...")
>>> store.create(CustomerSession(integration_id="order-42"))
>>> with store.transaction("order-42") as session:  # load, change, commit atomically
...     _ = session.close()
>>> store.get("order-42").state
<State.CLOSED: 'closed'>
>>> [entry.operation for entry in store.history("order-42")]
['create', 'close']
>>> store.close()

A store keeps each session as its wire document with history, plus indexed
columns (state, version, updated). Every commit is a compare-and-set of the row
version (optimistic concurrency): :meth:`~SQLiteStore.update` re-runs a change
that lost a race on the fresh state, :meth:`~SQLiteStore.transaction` makes one
attempt. Each commit appends a :class:`JournalEntry` and the outbox rows of the
durable effects (:meth:`~SQLiteStore.on_commit`, :meth:`~SQLiteStore.deliver`) in
the same database transaction. See the "Embedding in an order workflow" guide.

``PostgresStore`` needs the ``[postgres]`` extra; psycopg is imported only when
one is created. ``AsyncPostgresStore`` is the same store for asyncio code, with
the methods awaited (``await AsyncPostgresStore.open(url)``).
"""

from customer_session.store._async_postgres import AsyncPostgresStore
from customer_session.store._base import DEFAULT_RETRIES
from customer_session.store._journal import JournalEntry, JournalKind, rebuild
from customer_session.store._keys import ProcessedKey
from customer_session.store._open import open_store
from customer_session.store._outbox import DurableEffect, Effect, EffectHandler
from customer_session.store._postgres import PostgresStore
from customer_session.store._protocol import SessionStore
from customer_session.store._replay import StoreReplayer
from customer_session.store._schema import SCHEMA_VERSION
from customer_session.store._sqlite import SQLiteStore

__all__ = [
    "DEFAULT_RETRIES",
    "SCHEMA_VERSION",
    "AsyncPostgresStore",
    "DurableEffect",
    "Effect",
    "EffectHandler",
    "JournalEntry",
    "JournalKind",
    "PostgresStore",
    "ProcessedKey",
    "SQLiteStore",
    "SessionStore",
    "StoreReplayer",
    "open_store",
    "rebuild",
]
