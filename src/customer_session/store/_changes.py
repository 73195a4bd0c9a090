"""What one commit writes: the new row, its journal entry and its outbox rows.

Backends receive a :class:`Change` and write it in one database transaction; how
it is computed (the document, what changed, which durable effects apply) is the
same for every backend and lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from attrs import frozen

from customer_session import wire
from customer_session._cart import PLAIN_ATOMS, same
from customer_session.store._documents import HISTORY_KEY, dumps, history_of
from customer_session.store._journal import JournalKind
from customer_session.store._outbox import idempotency_key
from customer_session.wire import _document_after

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime

    from customer_session._records import TransitionRecord
    from customer_session.model import CustomerSession
    from customer_session.store._outbox import DurableEffect

_ABSENT: Final = object()


@frozen
class OutboxRow:
    """One durable effect to write with a change."""

    key: str
    effect: str
    position: int
    record: str


@frozen(kw_only=True)
class Change:
    """Everything one commit writes, ready for the SQL of a backend.

    Attributes:
        integration_id: The session.
        state: Its state after the change.
        updated: Its ``updated`` after the change.
        document: Its wire document (with history) as JSON text.
        data: The same document as a dict (kept to compare the next change with).
        kind: The journal entry's kind.
        operation: The journal entry's label.
        records: The history records added, as JSON text.
        changes: The changed top-level document keys, as JSON text.
        key: The idempotency key to record, if any.
        revises: Whether ``key`` may already be recorded as the key of a refused
            event (a replayed line refused by an earlier run, applied now): the
            record becomes the change's, in the same transaction, only while it is
            still a refusal; a key recorded as applied fails the commit with
            ``KeyAlreadyProcessed``, as any used key does.
        actor: Who made the change, for the journal entry (``None``: not given).
        outbox: The durable effects to write.

    It holds no time of the commit: that is read once the backend holds its write
    lock (SQLite) or by the database itself (PostgreSQL's ``now()``).
    """

    integration_id: str
    state: str
    updated: datetime
    document: str
    data: dict[str, Any]
    kind: JournalKind
    operation: str
    records: str
    changes: str
    key: str | None
    actor: str | None
    outbox: tuple[OutboxRow, ...]
    revises: bool = False


def created(
    session: CustomerSession,
    effects: Sequence[DurableEffect],
    *,
    key: str | None,
    operation: str | None,
    actor: str | None,
    revises: bool = False,
) -> Change:
    """The change that stores ``session`` for the first time."""
    after = wire.to_dict(session, include_history=True)
    changes = {name: value for name, value in after.items() if name != HISTORY_KEY}
    return _change(
        session,
        after,
        changes,
        history_of(after),
        0,
        effects,
        kind=JournalKind.CREATED,
        key=key,
        operation=operation or "create",
        actor=actor,
        revises=revises,
    )


def changed(
    before: Mapping[str, Any],
    session: CustomerSession,
    effects: Sequence[DurableEffect],
    *,
    key: str | None,
    operation: str | None,
    actor: str | None,
    written_for: CustomerSession | None = None,
    revises: bool = False,
) -> Change | None:
    """The change from the stored document ``before`` to ``session``; ``None`` if none.

    When ``before`` is this library's writing of the session ``written_for`` (the
    store's copy after its last commit), the new document reuses the parts of it
    for the fields ``session`` did not change.
    """
    after = (
        wire.to_dict(session, include_history=True)
        if written_for is None
        else _document_after(session, written_for, before)
    )
    # same(), not only !=: 1 == 1.0 == True, but a value changed from one to another
    # is written differently, and a journal without it would rebuild the old value.
    # Most fields are unchanged text or numbers, which == and their types settle.
    changes = {}
    for name, value in after.items():
        was = before.get(name, _ABSENT)
        if was is value or name == HISTORY_KEY:
            continue
        shape = type(value)
        if (
            was != value
            or type(was) is not shape
            # Empty containers of one type are the same: no walk.
            or (shape not in PLAIN_ATOMS and (value or shape is float) and not same(was, value))
        ):
            changes[name] = value
    changes.update({name: None for name in before if name not in after and name != HISTORY_KEY})
    old = len(history_of(before))
    added = history_of(after)[old:]
    if not changes and not added:
        return None
    kind = JournalKind.TRANSITION if added else JournalKind.EDIT
    label = operation or ("+".join(str(r.trigger) for r in session.history[old:]) or "edit")
    return _change(
        session,
        after,
        changes,
        added,
        old,
        effects,
        kind=kind,
        key=key,
        operation=label,
        actor=actor,
        revises=revises,
    )


def _change(  # noqa: PLR0917 - a private step shared by both constructors
    session: CustomerSession,
    after: dict[str, Any],
    changes: Mapping[str, Any],
    added: Sequence[Any],
    first: int,
    effects: Sequence[DurableEffect],
    *,
    kind: JournalKind,
    key: str | None,
    operation: str,
    actor: str | None,
    revises: bool,
) -> Change:
    records = session.history[first:]
    return Change(
        integration_id=session.integration_id,
        state=session.state.value,
        updated=session.updated,
        document=dumps(after, session.integration_id),
        data=after,
        kind=kind,
        operation=operation,
        records=dumps(added, session.integration_id),
        changes=dumps(changes, session.integration_id),
        key=key,
        actor=actor,
        outbox=tuple(_outbox(session.integration_id, records, added, first, effects)),
        revises=revises,
    )


def _outbox(
    integration_id: str,
    records: Iterable[TransitionRecord],
    written: Sequence[Any],
    first: int,
    effects: Sequence[DurableEffect],
) -> Iterable[OutboxRow]:
    if not effects:
        return
    for offset, record in enumerate(records):
        position = first + offset
        for effect in effects:
            if effect.matches(record.trigger):
                yield OutboxRow(
                    idempotency_key(integration_id, position, effect.name),
                    effect.name,
                    position,
                    dumps(written[offset], integration_id),
                )
