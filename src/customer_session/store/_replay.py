"""Replaying an order-event log into a store, resumably.

The events are parsed, checked and applied by the same code as an in-memory
replay (:class:`~customer_session.replay.Replayer`); only where the sessions live
differs. Each line's idempotency key, ``replay:<log id>:<line number>``, is
recorded in the same database transaction as the change the line makes, and on
its own for a refused line, so running the same log again applies nothing twice
and goes on where an interrupted run stopped.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from customer_session.exceptions import ConcurrentUpdate, StoreError, ValidationError
from customer_session.model import CustomerSession
from customer_session.replay import Replayer
from customer_session.store._base import DEFAULT_RETRIES
from customer_session.store._open import open_store

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable
    from types import TracebackType

    from customer_session.replay import RefusedLine, ReplayReport


class _Abort(Exception):
    """A store failure that must stop the replay rather than refuse one line."""

    def __init__(self, error: StoreError | ConcurrentUpdate) -> None:
        super().__init__(str(error))
        self.error = error


class StoreReplayer(Replayer):
    """Applies an order-event log to the sessions of a store, resumably.

    Register guards and hooks on :attr:`workflow` before running, as for
    :class:`~customer_session.replay.Replayer`. A line that changes a session is
    applied with ``store.update``, and its key recorded in the same transaction;
    a refused line's key is recorded on its own. Lines whose key is recorded are
    skipped (counted in ``report.skipped``). A store failure (a corrupt row, the
    database unreachable, a change that kept losing races) stops the run with its
    error; running again resumes.

    Args:
        database: A ``postgresql://`` URL or an SQLite file (see ``open_store``).
        session_class: ``CustomerSession``, or ``ReopenableCustomerSession`` to
            accept ``reopen`` events.
        log_id: Names the log in the keys; by default a hash of its first line,
            so the same log (or a longer one it grew into) resumes wherever it is.
        retries: Re-runs of a change that lost a race to another writer.
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        session_class: type[CustomerSession] = CustomerSession,
        log_id: str | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        """Open the store, bound to the replay's workflow (whose clock is the log)."""
        super().__init__(session_class=session_class)
        self.store = open_store(
            database, session_class=session_class, workflow=self.workflow, retries=retries
        )
        self.log_id = log_id
        self._skipped = 0

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> StoreReplayer:
        """Return the replayer itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    def run(self, lines: Iterable[str], *, fast: bool | None = None) -> ReplayReport:
        """Apply every line not applied before; return the report.

        ``report.states`` counts every session in the store, and
        ``report.skipped`` the lines an earlier run had applied (or refused).
        ``fast`` is as for :meth:`Replayer.run`; the fast path never applies to a
        store (``fast=True`` is refused).

        Raises:
            StoreError: The store failed; what was applied stays applied.
            ConcurrentUpdate: A change kept losing races to other writers.
        """
        self._skipped = 0
        report = super().run(lines, fast=fast)
        # Replayer.run counts a skipped line as applied: it returned no refusal.
        report.applied -= self._skipped
        report.skipped = self._skipped
        return report

    def apply(self, number: int, line: str) -> RefusedLine | None:
        """Apply one line unless its key is recorded; return why it was refused.

        Raises:
            StoreError: The store failed.
            ConcurrentUpdate: The change kept losing races to other writers.
        """
        if self.log_id is None:
            self.log_id = hashlib.sha256(line.encode()).hexdigest()[:16]
        key = f"replay:{self.log_id}:{number}"
        if self.store.processed(key):
            self._skipped += 1
            return None
        try:
            refused = super().apply(number, line)
        except _Abort as abort:
            raise abort.error from abort.error.__cause__
        if refused is not None:
            self.store.mark_processed(key, integration_id=refused.session)
        return refused

    def _dispatch(self, number: int, integration_id: str, op: str, event: dict[str, Any]) -> None:
        key = f"replay:{self.log_id}:{number}"
        store = self.store
        try:
            if op == "create":
                session = self._new_session(integration_id, event)
                if store.exists(integration_id):
                    raise ValidationError.single(
                        "event", "$.session", f"session {integration_id!r} already exists"
                    )
                store.create(session, key=key)
                return
            if not store.exists(integration_id):
                raise ValidationError.single(
                    "event", "$.session", f"unknown session {integration_id!r} (no create event)"
                )
            store.update(
                integration_id, lambda s: self._change(s, op, event), key=key, operation=op
            )
        except (StoreError, ConcurrentUpdate) as error:
            raise _Abort(error) from error

    def _states(self) -> dict[str, int]:
        return {str(state): count for state, count in self.store.counts().items()}
