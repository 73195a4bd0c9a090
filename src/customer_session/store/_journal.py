"""The audit journal: one immutable entry per committed change, and its replay.

Every change a store commits (a new session, a transition, a cart edit) appends
one :class:`JournalEntry` in the same database transaction as the change itself,
so the journal and the sessions can never disagree. An entry keeps what the
change did, not a copy of the whole session: the history records it added and
the top-level keys of the wire document it changed. :func:`rebuild` replays a
session's entries from its first one and gives back exactly the stored session.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime  # noqa: TC003 - attrs resolves field types at run time
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, overload

from attrs import field, frozen

from customer_session import wire
from customer_session._cart import frozen_document, thaw
from customer_session._records import TransitionRecord  # noqa: TC001 - attrs resolves field types at run time
from customer_session._show import shown
from customer_session.exceptions import (
    CorruptData,
    CustomerSessionError,
    ValidationError,
)
from customer_session.model import CustomerSession
from customer_session.store._documents import (
    HISTORY_KEY,
    foreign_triggers,
    parse,
    record_from_json,
    record_to_json,
    time_to_json,
    timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from customer_session.hooks import Workflow

_S = TypeVar("_S", bound=CustomerSession)


class JournalKind(StrEnum):
    """What a journal entry records."""

    CREATED = "created"
    """The session was stored for the first time; ``changes`` is its whole document."""
    TRANSITION = "transition"
    """One or more triggers committed (possibly with cart edits in the same change)."""
    EDIT = "edit"
    """Fields changed without a transition (a cart or code edit)."""


def _changes(value: Any) -> Any:
    return frozen_document(value, "JournalEntry", "changes")


@frozen(kw_only=True)
class JournalEntry:
    """One committed change of one session, as the journal keeps it.

    Attributes:
        sequence: The entry's number in the whole journal (increasing).
        integration_id: The session.
        version: The session's row version after this change (1 for the first).
        kind: What the change was.
        operation: A label: the caller's ``operation=``, else the triggers fired
            (``close``, ``close+cancel``), ``edit`` or ``create``.
        records: The history records the change added, in order.
        changes: The top-level keys of the wire document that changed, with their
            new values (deeply immutable); a key that disappeared maps to ``None``.
        key: The idempotency key the change was applied with, if any.
        actor: Who made the change: the ``actor=`` of the call that committed it,
            else the store's (``None`` when neither was given, and for entries
            written before schema version 4). :func:`rebuild` does not use it.
        recorded_at: When it was committed, in UTC (by the clock of the database
            server on PostgreSQL, of the committing process on SQLite). On SQLite
            it is read once the commit holds the write lock, so entries in
            ``sequence`` order have their ``recorded_at`` in order too (unless
            the clock steps back); on PostgreSQL it is when the committing
            statement began, and concurrent commits may take their ``sequence``
            numbers in another order.
    """

    sequence: int
    integration_id: str
    version: int
    kind: JournalKind
    operation: str
    records: tuple[TransitionRecord, ...]
    changes: Mapping[str, Any] = field(converter=_changes)
    key: str | None
    actor: str | None = None
    recorded_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data (``customer-session history --json``).

        Keys are camelCase; ``recordedAt`` is RFC 3339 in UTC with a ``Z``, and each
        of ``records`` is written as the wire format's history extension writes it
        (see :func:`customer_session.wire.to_dict`). The dict shares nothing with
        the entry.
        """
        return {
            "sequence": self.sequence,
            "integrationId": self.integration_id,
            "version": self.version,
            "kind": self.kind.value,
            "operation": self.operation,
            "key": self.key,
            "actor": self.actor,
            "recordedAt": time_to_json(self.recorded_at),
            "records": [record_to_json(record) for record in self.records],
            "changes": thaw(self.changes),
        }


@overload
def rebuild(
    entries: Iterable[JournalEntry], *, workflow: Workflow | None = None
) -> CustomerSession: ...


@overload
def rebuild(
    entries: Iterable[JournalEntry], *, session_class: type[_S], workflow: Workflow | None = None
) -> _S: ...


def rebuild(
    entries: Iterable[JournalEntry],
    *,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
) -> CustomerSession:
    """Replay a session's journal from its first entry; return the session it builds.

    Each entry's ``changes`` are applied to the document and its ``records``
    appended to the history, then the document is loaded through the validating
    restore path. The entries must be one session's, complete and in order (as
    ``store.history(id)`` returns them); the result equals ``store.get(id)``.

    Args:
        entries: The journal of one session.
        session_class: The class to load into.
        workflow: The workflow to bind the session to (default: the class's).

    Raises:
        CorruptData: The entries are not one session's complete journal, or the
            document they build does not load.
    """
    given: object = entries  # typed, but callers may pass anything
    if not isinstance(given, Iterable) or isinstance(given, str | bytes):
        raise ValidationError.single(
            "rebuild()", "entries", f"must be journal entries, got {shown(entries):.80}"
        )
    document: dict[str, Any] = {}
    history: list[TransitionRecord] = []
    first: JournalEntry | None = None
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, JournalEntry):
            raise ValidationError.single(
                "rebuild()",
                f"entries[{number - 1}]",
                f"must be a JournalEntry, got {shown(entry):.80}",
            )
        first = first or entry
        _check_order(first, entry, number)
        for key, value in entry.changes.items():
            if value is None:
                document.pop(key, None)
            else:
                document[key] = thaw(value)
        history.extend(entry.records)
    if first is None:
        raise CorruptData("cannot rebuild a session from an empty journal")
    document.pop(HISTORY_KEY, None)
    try:
        loaded = wire.from_dict(document, session_class=session_class, workflow=workflow)
        return session_class.restore(**{**loaded.snapshot(), "history": history})
    except CustomerSessionError as exc:
        raise CorruptData(
            f"session {first.integration_id!r}: its journal does not rebuild a valid "
            f"session: {exc}",
            first.integration_id,
        ) from exc


def _check_order(first: JournalEntry, entry: JournalEntry, number: int) -> None:
    where = f"session {first.integration_id!r}: journal entry {number}"
    if first.kind is not JournalKind.CREATED:
        raise CorruptData(
            f"{where} is a {first.kind} entry; a journal starts with the creation",
            first.integration_id,
        )
    if entry.integration_id != first.integration_id:
        raise CorruptData(
            f"{where} belongs to session {entry.integration_id!r}", first.integration_id
        )
    if entry.version != number:
        raise CorruptData(
            f"{where} has version {entry.version}; entries must be complete and in order",
            first.integration_id,
        )


def entry_from_row(
    row: Sequence[Any], session_class: type[CustomerSession] = CustomerSession
) -> JournalEntry:
    """A journal entry from its database row, its records moves of ``session_class``'s table.

    The columns are ``sequence, integration_id, version, kind, operation,
    event_key, actor, records, changes, recorded_at``.

    Raises:
        CorruptData: The row is corrupt (a record of a move the table lacks too).
        WorkflowError: A record's trigger is not in the table at all: the row was
            written through a class with a larger table (the reopen table).
    """
    (
        sequence,
        integration_id,
        version,
        kind,
        operation,
        key,
        actor,
        records,
        changes,
        recorded_at,
    ) = row
    try:
        known = JournalKind(kind)
    except ValueError:
        raise CorruptData(
            f"session {integration_id!r}: journal entry {sequence} has an unknown kind "
            f"{shown(kind)}; the row is corrupt",
            integration_id,
        ) from None
    parsed = parse(records, "journal records", integration_id)
    if not isinstance(parsed, list):
        raise CorruptData(
            f"session {integration_id!r}: journal entry {sequence} has no record list; "
            "the row is corrupt",
            integration_id,
        )
    if actor is not None and type(actor) is not str:
        # SQLite keeps whatever a column is given: a damaged one may hold a number.
        raise CorruptData(
            f"session {integration_id!r}: journal entry {sequence} has an actor that is no "
            f"text ({shown(actor):.60}); the row is corrupt",
            integration_id,
        )
    changed = parse(changes, "journal changes", integration_id)
    if not isinstance(changed, dict):
        # rebuild() applies them key by key: anything else would fail there, unexplained.
        raise CorruptData(
            f"session {integration_id!r}: journal entry {sequence} has no object of changes "
            f"(got {type(changed).__name__}); the row is corrupt",
            integration_id,
        )
    return JournalEntry(
        sequence=sequence,
        integration_id=integration_id,
        version=version,
        kind=known,
        operation=operation,
        records=_moves(
            tuple(record_from_json(r, integration_id) for r in parsed),
            session_class,
            integration_id,
            sequence,
        ),
        changes=changed,
        key=key,
        actor=actor,
        recorded_at=timestamp(recorded_at, f"time of journal entry {sequence}", integration_id),
    )


def _moves(
    records: tuple[TransitionRecord, ...],
    session_class: type[CustomerSession],
    integration_id: str,
    sequence: object,
) -> tuple[TransitionRecord, ...]:
    """``records``, each checked to be a move of ``session_class``'s table.

    A journal is what the audit trusts: a record of a move the table lacks would
    show a session taking a path no session can take.
    """
    specification = session_class.specification
    for record in records:
        if record.trigger not in specification.triggers:
            raise foreign_triggers(
                f"session {integration_id!r}: journal entry {sequence}",
                [str(record.trigger)],
                session_class,
            )
        if specification.target(record.source, record.trigger) is not record.destination:
            raise CorruptData(
                f"session {integration_id!r}: journal entry {sequence} records "
                f"{record.trigger}() from {str(record.source)!r} to "
                f"{str(record.destination)!r}, which is no move of "
                f"{session_class.__name__}'s table; the row is corrupt",
                integration_id,
            )
    return records
