"""What the stores log: the ``customer_session.store`` logger and its events.

One logger for every store (sync and async), so an operator turns it on or off in
one place. Nothing is logged on the way of a call that goes as planned (a commit
that succeeds first time, a row delivered): only contention, failures, and the
changes an operator wants a trace of (the schema, housekeeping). Each record
carries its fields in ``extra`` for a JSON formatter, always an ``event`` naming
what happened (stable, unlike the message); the guide's "Observing a store"
section lists them. A record names the store by its ``repr()`` and the database
as messages name it: neither holds a password or other secret of a URL.

Each event is one record, without a traceback: the exception of a failure
propagates to the caller, who logs it if it wants to.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TYPE_CHECKING, Final

from customer_session._show import counted, shown
from customer_session.store._documents import subject

if TYPE_CHECKING:
    from datetime import datetime

    from customer_session.exceptions import StoreTimeout
    from customer_session.store._outbox import Effect

LOGGER_NAME: Final = "customer_session.store"
"""The name of the stores' logger (a child of the package's ``customer_session``)."""

logger: Final = logging.getLogger(LOGGER_NAME)

# logger.log -> _emit -> the event function here -> the code that logs: the record's
# function and line are those of the store code (or its shared helper) that logged.
_STACKLEVEL: Final = 3


def _emit(level: int, event: str, message: str, *args: object, **fields: object) -> None:
    """Log ``message % args`` at ``level``, with ``event`` and ``fields`` as ``extra``.

    The event functions below check ``logger.isEnabledFor(level)`` before they build
    anything (the store's ``repr()`` included), so a level that is off costs one check.

    A user's handler or filter that raises must not change a store call's outcome
    (many events are logged after the commit, or just before the call's own error
    is raised): its failure is shown as logging shows a handler's that fails
    (``Handler.handleError``), on stderr unless ``logging.raiseExceptions`` is off.
    """
    try:
        logger.log(level, message, *args, extra={"event": event, **fields}, stacklevel=_STACKLEVEL)
    except Exception:  # noqa: BLE001 - reported below, as logging reports its handlers'
        if logging.raiseExceptions:
            sys.stderr.write("--- Logging error ---\n")
            traceback.print_exc(file=sys.stderr)


# -- commits ----------------------------------------------------------------------------


def commit_retried(store: object, integration_id: str, version: int, attempt: int, of: int) -> None:
    """``update()`` lost a race from ``version``; its change runs again as ``attempt`` of ``of``."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    _emit(
        logging.DEBUG,
        "commit_retried",
        "session %r: lost a race (the row moved on from version %d); running the change "
        "again, attempt %d of %d",
        integration_id,
        version,
        attempt,
        of,
        store=repr(store),
        integration_id=integration_id,
        version=version,
        attempt=attempt,
        attempts=of,
    )


def commit_gave_up(store: object, integration_id: str, version: int, attempts: int) -> None:
    """``update()`` lost the race of its last attempt (from ``version``): ``ConcurrentUpdate``."""
    if not logger.isEnabledFor(logging.WARNING):
        return
    _emit(
        logging.WARNING,
        "commit_gave_up",
        "session %r: gave up after %s, each lost a race (the last from version %d); "
        "nothing was written (ConcurrentUpdate)",
        integration_id,
        counted(attempts, "attempt"),
        version,
        store=repr(store),
        integration_id=integration_id,
        version=version,
        attempt=attempts,
        attempts=attempts,
    )


def commit_conflict(store: object, integration_id: str, version: int) -> None:
    """A ``transaction()`` block's commit lost a race from ``version``: ``ConcurrentUpdate``.

    Debug, not a warning: a transaction makes one attempt by design, and its caller
    decides what a lost race means (an answer of 409, say).
    """
    if not logger.isEnabledFor(logging.DEBUG):
        return
    _emit(
        logging.DEBUG,
        "commit_conflict",
        "session %r: the transaction lost a race (the row moved on from version %d); "
        "nothing was written (ConcurrentUpdate)",
        integration_id,
        version,
        store=repr(store),
        integration_id=integration_id,
        version=version,
        attempt=1,
        attempts=1,
    )


def cache_stale(store: object, integration_id: str, version: int) -> None:
    """An attempt began on the store object's cached copy at ``version``, out of date: dropped."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    _emit(
        logging.DEBUG,
        "cache_stale",
        "session %r: the cached copy (version %d) was out of date and is dropped; running "
        "the change again on the stored row (not counted as a retry)",
        integration_id,
        version,
        store=repr(store),
        integration_id=integration_id,
        version=version,
    )


# -- durable effects --------------------------------------------------------------------


def delivery_failed(
    store: object, effect: Effect, error: str, discarded: bool | None, max_attempts: int | None
) -> None:
    """A handler raised ``error`` (the text recorded) for ``effect``; and the row's outcome.

    ``discarded`` as ``note_failure`` takes it: whether counting the failure
    discarded the row, or ``None`` when the row was discarded meanwhile (uncounted).
    """
    if not logger.isEnabledFor(logging.WARNING):
        return
    # The failures the row has now: the statement counted this one, unless it was discarded.
    attempts = effect.attempts if discarded is None else effect.attempts + 1
    failures = counted(attempts, "failed delivery", "failed deliveries")
    if discarded:
        event = "effect_discarded"
        outcome = f"discarded, as its {failures} reached {max_attempts=}"
    elif discarded is None:
        event = "delivery_failed"
        outcome = f"it was discarded meanwhile (this failure is not counted; {failures})"
    else:
        event = "delivery_failed"
        outcome = f"it stays pending ({failures} so far)"
    _emit(
        logging.WARNING,
        event,
        "outbox row %d (%s for session %r): the handler raised %s; %s",
        effect.sequence,
        shown(effect.name),
        effect.integration_id,
        error,
        outcome,
        store=repr(store),
        integration_id=effect.integration_id,
        sequence=effect.sequence,
        effect=effect.name,
        key=effect.key,
        attempts=attempts,
        max_attempts=max_attempts,
        error=error,
    )


# -- waits ------------------------------------------------------------------------------


def timed_out(error: StoreTimeout) -> StoreTimeout:
    """Log ``error``, a wait that ran out, in one line; return it (for ``raise``)."""
    if not logger.isEnabledFor(logging.WARNING):
        return error
    owner = _LIMIT_OWNERS.get(error.setting, "the server's")
    seconds = "" if error.timeout is None else f" of {error.timeout:g} second"
    seconds += "" if error.timeout in {None, 1} else "s"
    _emit(
        logging.WARNING,
        "store_timeout",
        "%s: gave up waiting for %s in %s (%s %s%s ran out); nothing was written (StoreTimeout)",
        subject(error.integration_id),
        error.waited_for,
        error.database,
        owner,
        error.setting,
        seconds,
        integration_id=error.integration_id,
        database=error.database,
        waited_for=error.waited_for,
        setting=error.setting,
        timeout=error.timeout,
    )
    return error


# Whose each limit of ``StoreTimeout.setting`` is (any other is the server's).
_LIMIT_OWNERS: Final = {"timeout": "the store's", "connect_timeout": "libpq's"}


# -- the schema and housekeeping ----------------------------------------------------------


def schema_changed(store: object, database: str, found: int, version: int) -> None:
    """The store created its tables (``found`` 0) or migrated them from ``found`` to ``version``."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = {
        "store": repr(store),
        "database": database,
        "from_version": found,
        "to_version": version,
    }
    if found == 0:
        _emit(
            logging.INFO,
            "schema_created",
            "%s: created the store's tables (schema version %d)",
            database,
            version,
            **fields,
        )
    else:
        _emit(
            logging.INFO,
            "schema_migrated",
            "%s: migrated the store's schema from version %d to %d",
            database,
            found,
            version,
            **fields,
        )


def purged(store: object, count: int, before: datetime) -> None:
    """``purge_delivered(before=...)`` deleted ``count`` outbox rows."""
    if not logger.isEnabledFor(logging.INFO):
        return
    shown_store = repr(store)
    _emit(
        logging.INFO,
        "outbox_purged",
        "%s: purged %s delivered or discarded before %s",
        shown_store,
        counted(count, "outbox row"),
        before.isoformat(),
        store=shown_store,
        count=count,
        before=before.isoformat(),
    )


def keys_forgotten(store: object, count: int, before: datetime) -> None:
    """``forget_keys(before=...)`` deleted ``count`` idempotency keys."""
    if not logger.isEnabledFor(logging.INFO):
        return
    shown_store = repr(store)
    _emit(
        logging.INFO,
        "keys_forgotten",
        "%s: forgot %s recorded before %s",
        shown_store,
        counted(count, "idempotency key"),
        before.isoformat(),
        store=shown_store,
        count=count,
        before=before.isoformat(),
    )
