"""``SessionStore``: what every backend offers, as a ``typing.Protocol``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from customer_session.model import CustomerSession

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from contextlib import AbstractContextManager
    from datetime import datetime
    from types import TracebackType

    from customer_session._spec import State, Trigger
    from customer_session.hooks import Workflow
    from customer_session.store._journal import JournalEntry
    from customer_session.store._keys import ProcessedKey
    from customer_session.store._outbox import DurableEffect, Effect, EffectHandler

_S = TypeVar("_S", bound=CustomerSession)
_T = TypeVar("_T")


class SessionStore(Protocol[_S]):
    """Sessions in a shared database, changed by optimistic, journaled transactions.

    :class:`~customer_session.store.SQLiteStore` and
    :class:`~customer_session.store.PostgresStore` implement it; code that only
    needs a store should accept a ``SessionStore``. The methods are documented on
    the backends, which share one implementation of them. Every method refuses
    bad arguments with a :class:`~customer_session.exceptions.ValidationError`
    naming each, before touching the database (but :meth:`on_commit`, a
    registration, which refuses a bad name with a
    :class:`~customer_session.exceptions.WorkflowError` and a bad trigger with an
    :class:`~customer_session.exceptions.UnknownTrigger`, as a workflow's
    registrations do), and reports a database that fails or cannot be reached as a
    :class:`~customer_session.exceptions.StoreError`.
    """

    @property
    def session_class(self) -> type[_S]:
        """The class sessions are loaded into."""

    @property
    def workflow(self) -> Workflow:
        """The workflow whose guards and hooks apply to the sessions the store loads."""

    @property
    def retries(self) -> int:
        """How many times ``update`` re-runs a change that lost a race, by default."""

    @property
    def actor(self) -> str | None:
        """Who the journal entries of the store's commits name, by default."""

    @property
    def migrate(self) -> bool:
        """Whether the store creates or migrates the schema on first use (else only checks it)."""

    @property
    def effects(self) -> tuple[DurableEffect, ...]:
        """The durable effects registered on this store object, in registration order."""

    def create(
        self,
        session: _S,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Store a new session with its first journal entry."""

    def get(self, integration_id: str) -> _S:
        """The stored session."""

    def exists(self, integration_id: str) -> bool:
        """Whether the session is stored."""

    def counts(self) -> dict[State, int]:
        """How many sessions are stored in each state."""

    def ids(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        updated_before: datetime | None = None,
        updated_since: datetime | None = None,
        limit: int | None = None,
    ) -> tuple[str, ...]:
        """Integration ids of matching sessions, least recently updated first."""

    def transaction(
        self,
        integration_id: str,
        *,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> AbstractContextManager[_S]:
        """Load, change in the block, commit atomically; one attempt."""

    def update(
        self,
        integration_id: str,
        change: Callable[[_S], _T],
        *,
        retries: int | None = None,
        key: str | None = None,
        operation: str | None = None,
        actor: str | None = None,
    ) -> _T:
        """Apply ``change`` and commit, re-running it on fresh state after a lost race."""

    def history(self, integration_id: str) -> tuple[JournalEntry, ...]:
        """The session's journal, oldest first."""

    def processed(self, key: str) -> bool:
        """Whether the idempotency key is recorded."""

    def processed_key(self, key: str) -> ProcessedKey | None:
        """What was recorded with an idempotency key (``None``: not recorded)."""

    def mark_processed(
        self, key: str, *, integration_id: str | None = None, refusal: str | None = None
    ) -> bool:
        """Record an idempotency key without a change (with why its event was refused)."""

    def on_commit(self, name: str, *, trigger: Trigger | str | None = None) -> DurableEffect:
        """Register a durable effect."""

    def pending(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The outbox rows not delivered (nor discarded) yet, after ``after``, in delivery order."""

    def pending_count(self) -> int:
        """How many outbox rows are pending."""

    def deliver(
        self,
        handler: EffectHandler,
        *,
        limit: int | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Hand pending outbox rows to ``handler``, at least once, in commit order."""

    def discard(self, sequence: int, *, reason: str) -> Effect:
        """Give up on a pending outbox row; it is never handed over again."""

    def discarded(
        self, *, limit: int | None = None, after: Effect | None = None
    ) -> tuple[Effect, ...]:
        """The discarded outbox rows, after ``after``, in the order they were discarded."""

    def discarded_count(self) -> int:
        """How many outbox rows are discarded (until purged)."""

    def outbox_effects(self) -> tuple[str, ...]:
        """The names of the durable effects the outbox holds rows of, sorted."""

    def purge_delivered(self, *, before: datetime) -> int:
        """Delete outbox rows delivered or discarded before ``before``; how many."""

    def forget_keys(self, *, before: datetime) -> int:
        """Delete idempotency keys recorded before ``before``; how many."""

    def migrate_schema(self) -> int:
        """Create or migrate the schema now (or check it); the version this call found."""

    def close(self) -> None:
        """Close the store's connections."""

    def __enter__(self) -> SessionStore[_S]:
        """Return the store."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
