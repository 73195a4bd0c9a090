"""Replaying an order-event log into a store, resumably.

The events are parsed, checked and applied by the same code as an in-memory
replay (:class:`~customer_session.replay.Replayer`); only where the sessions live
differs. Each line's idempotency key names its *event*, not its position (see
:class:`StoreReplayer`), and is recorded in the same database transaction as the
change the line makes, or on its own with the reason for a refused line, so
running the same log again applies nothing twice, reports the same refusals and
goes on where an interrupted run stopped; a log whose bad line was corrected has
the lines after it that it made fail evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

from customer_session._spec import Trigger
from customer_session.exceptions import (
    ConcurrentUpdate,
    KeyAlreadyProcessed,
    Problem,
    SessionExists,
    StoreError,
    ValidationError,
    WorkflowError,
)
from customer_session.model import CustomerSession
from customer_session.replay import (
    RefusedLine,
    Replayer,
    _already_exists,
    _decode,
    _named,
    _not_text,
    _too_deep,
)
from customer_session.store._arguments import check
from customer_session.store._base import DEFAULT_RETRIES
from customer_session.store._open import open_store

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable
    from contextlib import AbstractContextManager
    from datetime import datetime
    from types import TracebackType

    from customer_session.replay import ReplayReport
    from customer_session.store._base import BaseStore
    from customer_session.store._keys import ProcessedKey
    from customer_session.store._protocol import SessionStore


def _canonical(event: object) -> str:
    """The JSON text of a decoded event that keys it: keys sorted, no spaces, ASCII only."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


class _Abort(Exception):
    """A store failure (or a store of another table) that must stop the replay.

    Not the refusal of one line: nothing about the line is recorded, and running
    again once it is mended resumes.
    """

    def __init__(self, error: StoreError | ConcurrentUpdate | WorkflowError) -> None:
        super().__init__(str(error))
        self.error = error


class StoreReplayer(Replayer):
    """Applies an order-event log to the sessions of a store, resumably.

    Register guards and hooks on :attr:`workflow` before running, as for
    :class:`~customer_session.replay.Replayer`. A line that changes a session is
    applied with ``store.update``, and its key recorded in the same transaction;
    a refused line's key is recorded on its own, with the reason. A line whose key
    is recorded is not applied again: it counts in ``report.skipped`` when an
    earlier run applied it, and is reported as refused again (``refused by an
    earlier run: <reason>``) when an earlier run refused it. A store failure (a
    corrupt row, the database unreachable, a change that kept losing races) stops
    the run with its error; running again resumes.

    A log whose bad line was corrected (a malformed ``create``, say) is a log with a
    new event, applied by the next run; the lines after it that failed only for
    want of it are evaluated again. A session is *touched* by a line when the line
    was applied to it (by this run, or as an earlier run's change this run skips).
    A line an earlier run refused is evaluated again when a line read before it in
    this run touched its session after the refusal was recorded (the refusal did
    not see that change): applied if it applies now (its key's record turns from
    refused to applied in the same transaction as the change, and it counts in
    ``report.applied``), else refused with the current reason, which replaces the
    recorded one. Otherwise the recorded verdict holds, so a rerun of an unchanged
    log (its line 1 ``close A`` refused as A did not exist yet, line 2 ``create A``,
    say) ends as its first run did, and so does a refusal recorded by a replay of
    the log running at the same time. A line an earlier run applied is never
    applied again. A corrected line is applied to its session as the earlier runs
    left it: when lines after it had already changed that session, the result may
    differ from a replay of the corrected log into a new database.

    A line's key is ``replay:<digest>:<k>`` (``replay:<log id>:<digest>:<k>`` with
    ``log_id``). The digest is the SHA-256 of the event: of its JSON value written
    canonically (keys sorted, no spaces, non-ASCII escaped), or of the line's text
    without surrounding whitespace when it is not JSON the replay reads (a key
    repeated in an object included: earlier versions read such a line as
    ``json.loads`` does, its last value counting, and a line they applied is still
    skipped as that event, never refused by a later run). ``k``
    counts the identical events on earlier lines of the same run, so a log that
    holds one event twice applies it twice. The same event is therefore the same
    JSON value, however it is spaced, ordered or escaped, wherever it stands in
    the log: a log replayed again, or grown by more lines, or rewritten with other
    spacing, resumes exactly; a line that was still being written when it was read
    (refused as malformed) is applied once it is complete; and another log is
    applied except for the events it shares with logs replayed before (give each
    log its own ``log_id`` when identical events in two logs are distinct events).

    Args:
        database: A ``postgresql://`` URL or an SQLite file (see ``open_store``).
        session_class: ``CustomerSession``, or ``ReopenableCustomerSession`` to
            accept ``reopen`` events.
        log_id: An optional namespace for the keys: lines of logs replayed with
            different ``log_id`` never share a key.
        retries: Re-runs of a change that lost a race to another writer.
        actor: Who the journal entries of the replay's changes name (the store's
            ``actor``; default ``None``: nobody).
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        session_class: type[CustomerSession] = CustomerSession,
        log_id: str | None = None,
        retries: int = DEFAULT_RETRIES,
        actor: str | None = None,
    ) -> None:
        """Open the store, bound to the replay's workflow (whose clock is the log).

        Raises:
            ValidationError: A bad argument, each by name (``database`` as
                ``open_store`` refuses a target); nothing is opened.
        """
        check("StoreReplayer", log_id=log_id)  # it goes into every key: before any file
        super().__init__(session_class=session_class)
        try:
            self.store: SessionStore[CustomerSession] = open_store(
                database,
                session_class=session_class,
                workflow=self.workflow,
                retries=retries,
                actor=actor,
            )
        except ValidationError as exc:
            # Said in the caller's words: it called StoreReplayer, whose argument is database.
            raise ValidationError(
                "StoreReplayer()",
                [Problem("database", p.message) if p.path == "target" else p for p in exc.problems],
            ) from None
        self.log_id = log_id
        self._skipped = 0
        self._seen: Counter[bytes] = Counter()
        self._key = ""
        # For each session, the latest time a line read so far in this run was applied
        # to it (by the database's clock), and when this run began (taken at its first
        # line; the time given to the lines it applies): see "touched" in the class.
        self._touched: dict[str, datetime] = {}
        self._began: datetime | None = None

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

        ``report.states`` counts every session in the store, ``report.skipped``
        the lines an earlier run applied, ``report.applied`` the lines applied now
        (an earlier refusal evaluated again included, see the class),
        ``report.refused`` the lines refused now or by an earlier run, and
        ``report.outbox_rows`` the outbox rows the run's commits wrote (for the
        durable effects registered on :attr:`store`). ``fast`` is
        as for :meth:`Replayer.run`; the fast path never applies to a store
        (``fast=True`` is refused).

        Raises:
            StoreError: The store failed; what was applied stays applied.
            ConcurrentUpdate: A change kept losing races to other writers.
            WorkflowError: The store holds sessions of a larger table than
                ``session_class`` (replay with the class that wrote them).
        """
        self._skipped = 0
        self._seen = Counter()  # k of each key counts from the log's first line
        self._touched = {}
        self._began = None
        with self._backend._counting_outbox() as written:  # noqa: SLF001 - this run's rows
            report = super().run(lines, fast=fast)
        # Replayer.run counts a skipped line as applied: it returned no refusal.
        report.applied -= self._skipped
        report.skipped = self._skipped
        report.outbox_rows = written.rows
        return report

    def apply(self, number: int, line: str) -> RefusedLine | None:
        """Apply one line unless its key is recorded; return why it was refused.

        Lines are taken as the lines of one log, in order, since the last
        :meth:`run` began: the key of an event counts the identical events before it.

        Raises:
            StoreError: The store failed.
            ConcurrentUpdate: The change kept losing races to other writers.
            WorkflowError: The store holds sessions of a larger table.
        """
        given: object = line  # a caller may pass bytes, whatever the type says
        if not isinstance(given, str):
            # Not recorded: it says how the log was read, not what the log holds.
            return _not_text(number, given)
        event = _decode(number, line)
        self._key = key = self._key_of(line, event)
        self._start()  # before anything of this run is applied
        recorded = self._backend._key_recorded(key)  # noqa: SLF001 - with its time, see _again
        older = None
        if recorded is None and isinstance(event, RefusedLine):
            older = self._older_record(line)
        if older is not None:
            value, done = older
            # Applied then: skipped, as its event. Refused then: refused now for its
            # repeated key, and not recorded, so that every run counts it alike.
            return self._done_before(number, value, done) if done[0].refusal is None else event
        again = recorded is not None and self._again(event, *recorded)
        if recorded is not None and not again:
            return self._done_before(number, event, recorded)
        return self._evaluate(number, event, key, again=again)

    def _evaluate(self, number: int, event: object, key: str, *, again: bool) -> RefusedLine | None:
        """Apply a line whose key is not recorded, or is to be evaluated ``again``."""
        if isinstance(event, RefusedLine):
            refused: RefusedLine | None = event
        else:
            try:
                with self._revising(key) if again else nullcontext():
                    refused = self._apply_event(number, event)
            except _Abort as abort:
                if not isinstance(abort.error, KeyAlreadyProcessed):
                    raise abort.error from abort.error.__cause__
                # Another replay of the log applied this event after the check above.
                return self._done_before(number, event, self._recorded(key))
        if refused is None or not self._final(event):
            return refused
        if again:
            # The recorded refusal gets the current reason, unless another replay
            # applied the event meanwhile (a compare-and-set, as for the change).
            kept = self._backend._revise_key(key, refused.session, refused.reason)  # noqa: SLF001 - the replay's own record
        else:
            kept = self.store.mark_processed(
                key, integration_id=refused.session, refusal=refused.reason
            )
        if kept:
            return refused
        # Another replay recorded the event meanwhile; the refusal may be only
        # what its change left (a second close of the session, say): its verdict holds.
        return self._done_before(number, event, self._recorded(key))

    def _again(self, event: object, done: ProcessedKey, at: datetime) -> bool:
        """Whether a line whose key is recorded is evaluated again (see the class).

        Only a refusal recorded before a line read earlier in this run was applied to
        the same session: the refusal did not see that line's change.
        """
        if done.refusal is None:
            return False
        session, _ = _named(event)
        touched = None if session is None else self._touched.get(session)
        return touched is not None and at < touched

    def _touch(self, integration_id: str, at: datetime) -> None:
        """Note that a line read in this run was applied to the session at ``at``."""
        touched = self._touched.get(integration_id)
        if touched is None or touched < at:
            self._touched[integration_id] = at

    def _start(self) -> datetime:
        """When this run began (after every key recorded before it), taken at its first line."""
        if self._began is None:
            self._began = self._backend._after_every_key()  # noqa: SLF001 - the clock of the keys
        return self._began

    def _recorded(self, key: str) -> tuple[ProcessedKey, datetime] | None:
        """What is recorded with ``key``, and when."""
        return self._backend._key_recorded(key)  # noqa: SLF001 - the replay's own record

    def _revising(self, key: str) -> AbstractContextManager[None]:
        """Let the line's change take over the refusal recorded with ``key``."""
        return self._backend._revising(key)  # noqa: SLF001 - the replay's own record

    @property
    def _backend(self) -> BaseStore[CustomerSession]:
        """:attr:`store` with the steps of a sync backend, which ``open_store`` always makes."""
        return cast("BaseStore[CustomerSession]", self.store)

    def _done_before(
        self, number: int, event: object, recorded: tuple[ProcessedKey, datetime] | None
    ) -> RefusedLine | None:
        """The verdict an earlier (or concurrent) run recorded for the line's event."""
        if recorded is None:  # pragma: no cover - keys are forgotten only by forget_keys()
            raise StoreError(f"store: the key of line {number} was recorded, then forgotten")
        done, at = recorded
        session, op = _named(event)
        if done.refusal is None:
            self._skipped += 1
            if session is not None:
                self._touch(session, at)
            return None
        return RefusedLine(number, session, op, f"refused by an earlier run: {done.refusal}")

    def _final(self, event: object) -> bool:
        """Whether the refusal of ``event`` holds for any replay of the log.

        A ``reopen`` refused because this replay's table has none (no ``--reopen``)
        depends on how the log is replayed, not on the log: it is not recorded, so a
        replay with the reopen table applies it.
        """
        if not isinstance(event, dict) or event.get("op") != "reopen":
            return True
        return Trigger.REOPEN in self.session_class.specification.triggers

    def _key_of(self, line: str, event: object) -> str:
        """The key of the line's event (see the class): its digest and how many came before."""
        key, counted_as = self._next_key(line.strip() if isinstance(event, RefusedLine) else event)
        self._seen[counted_as] += 1
        return key

    def _next_key(self, event: object) -> tuple[str, bytes]:
        """The key the next line of ``event`` gets (a line's text: its own), and its count's."""
        # Canonical: the same JSON value always gives the same text (ASCII only, so a
        # lone surrogate in a string is written as its escape).
        text = event if isinstance(event, str) else _canonical(event)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        # Every event of the log stays counted until the run ends: half the digest
        # keeps that a third smaller. Two events sharing it (never seen for 128 bits)
        # would only share a count: their keys still differ by the whole digest.
        counted_as = digest[:16]
        namespace = "" if self.log_id is None else f"{self.log_id}:"
        return f"replay:{namespace}{digest.hex()}:{self._seen[counted_as]}", counted_as

    def _older_record(self, line: str) -> tuple[object, tuple[ProcessedKey, datetime]] | None:
        """The event and record of a refused line that earlier versions read as an event.

        They read a key repeated in an object as ``json.loads`` does (its last value
        counts), and keyed the line by that event; the replay now refuses such a line,
        keyed by its text. A store they filled must still skip what they applied. Only
        a line they read (the key of its text unknown, which it also is for a line
        this replay refuses for the first time) is looked up: of any other refused
        line they recorded the key of its text too. The count of the event's key is
        taken only when the key is recorded, as they took it, so that the keys of the
        event's later lines are theirs; a refusal of this replay takes none.
        """
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if _too_deep(line, value):
            return None
        key, counted_as = self._next_key(value)
        recorded = self._recorded(key)
        if recorded is None:
            return None
        self._seen[counted_as] += 1
        return value, recorded

    def _dispatch(self, integration_id: str, op: str, event: dict[str, Any]) -> None:
        try:
            super()._dispatch(integration_id, op, event)
        except (StoreError, ConcurrentUpdate, WorkflowError) as error:
            raise _Abort(error) from error

    def _has(self, integration_id: str) -> bool:
        return self.store.exists(integration_id)

    def _add(self, session: CustomerSession) -> None:
        try:
            self.store.create(session, key=self._key)
        except SessionExists:  # created by another writer since _has() said no
            # (by another replay of this event, create() raised KeyAlreadyProcessed
            # instead, which _evaluate counts as applied by that replay)
            raise _already_exists(session.integration_id) from None
        self._touch(session.integration_id, self._start())

    def _modify(self, integration_id: str, op: str, event: dict[str, Any]) -> None:
        if self.store.update(
            integration_id, lambda s: self._changes(s, op, event), key=self._key, operation=op
        ):
            self._touch(integration_id, self._start())

    def _changes(self, session: CustomerSession, op: str, event: dict[str, Any]) -> bool:
        """Apply the event to ``session``; return whether it changed it.

        ``update_count`` counts every edit and transition; an update that changes
        nothing (the same cart again, say) leaves it, and writes nothing.
        """
        before = session.update_count
        self._change(session, op, event)
        return session.update_count != before

    def _states(self) -> dict[str, int]:
        return {str(state): count for state, count in self.store.counts().items()}
