"""Durable effects: the outbox rows a commit writes and the records handlers receive.

An after-commit hook runs in the process that committed; if that process dies
right after the commit, the hook never runs. A *durable effect* is written to
the outbox table in the same transaction as the transition, so it exists exactly
when the transition does; ``store.deliver(handler)`` later hands each row to the
handler, at least once, and marks it delivered only once the handler returned.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime  # noqa: TC003 - attrs resolves field types at run time
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, overload

import attrs
from attrs import field, frozen

from customer_session import wire
from customer_session._cart import frozen_document, is_text, one_line, raise_problems, thaw
from customer_session._notes import add_note_once
from customer_session._records import TransitionRecord  # noqa: TC001 - attrs resolves field types at run time
from customer_session._show import shown
from customer_session._spec import Trigger  # noqa: TC001 - attrs resolves field types at run time
from customer_session.exceptions import CorruptData, Problem, StoreError, WorkflowError
from customer_session.model import CustomerSession
from customer_session.store import _log
from customer_session.store._documents import (
    parse,
    record_from_json,
    record_to_json,
    time_to_json,
    timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from customer_session.hooks import Workflow

_S = TypeVar("_S", bound=CustomerSession)

_KEY_NAMESPACE: Final = uuid.UUID("5f0b6b1e-4c1a-5d8e-9a57-0c3c8f1d2e64")


class Delivery:
    """One running ``deliver()`` call: the outbox it delivers, and whether it still runs.

    A task or thread context copied while the delivery ran keeps the entry; the
    flag says it is over, so a later ``deliver()`` from that context is not refused.
    """

    __slots__ = ("holder", "outbox", "running")

    def __init__(self, outbox: object) -> None:
        self.outbox = outbox
        self.running = True
        self.holder: object = None
        """What holds the delivery's lock in the database, once taken (see :func:`holders`)."""


# The deliveries whose handler this context is running, innermost last.
_DELIVERIES: ContextVar[tuple[Delivery, ...]] = ContextVar(
    "customer_session_deliveries", default=()
)


EFFECT_NAME_MAX_LENGTH: Final = 200
"""The most characters a durable effect's name may have: a label, stored in each row.

At most 800 bytes, so an index of the names fits every backend (a PostgreSQL btree
entry holds at most 2,704), with no hash of them in between (``md5()`` is refused
by a server in FIPS mode)."""


def check_effect_name(name: object) -> str:
    """``name`` if it can name a durable effect (stored in each of its outbox rows).

    A label on one line, as an actor is: it is shown on a line of ``outbox list``
    and of error messages, and given on the command line (``--effect NAME:TRIGGER``).

    Raises:
        WorkflowError: It is not a text of 1 to :data:`EFFECT_NAME_MAX_LENGTH`
            characters on one line.
    """
    if not isinstance(name, str) or not one_line(name, EFFECT_NAME_MAX_LENGTH):
        raise WorkflowError(
            f"a durable effect needs a name of 1 to {EFFECT_NAME_MAX_LENGTH} characters, not "
            "only whitespace, without control characters or lone surrogates (NUL, a newline), "
            f"got {shown(name):.80}"
        )
    return name


@contextmanager
def delivering(store: object, outbox: object) -> Iterator[Delivery]:
    """Mark ``outbox`` as delivered in this context; refuse a delivery nested in one of it.

    ``outbox`` names what the delivery lock covers: the store object, or the
    database when every store object on it is known to take the same lock (an
    SQLite file, the name of a shared-cache in-memory SQLite database). A handler
    that calls ``deliver()`` on the outbox running it would wait forever for the
    delivery lock its own caller holds (a thread lock, an asyncio lock, a lock file
    or an advisory lock on another connection). Where the store object cannot name
    its database (PostgreSQL: another store object may reach the same schema by
    another URL), the backend records the lock's ``holder`` on the yielded
    delivery, and checks :func:`holders` before it waits.

    Raises:
        WorkflowError: ``outbox`` is already being delivered in this context.
    """
    running = _DELIVERIES.get()
    if any(d.outbox == outbox and d.running for d in running):
        raise nested_delivery(store)
    delivery = Delivery(outbox)
    token = _DELIVERIES.set((*running, delivery))
    try:
        yield delivery
    finally:
        delivery.running = False
        _DELIVERIES.reset(token)


def holders() -> list[object]:
    """The lock holders recorded by the deliveries whose handler this context is running.

    A PostgreSQL store records the database session (server and backend) holding its
    advisory lock: a delivery nested in a handler that finds the lock held by one of
    these would wait for its own caller.
    """
    return [d.holder for d in _DELIVERIES.get() if d.running and d.holder is not None]


def nested_delivery(store: object) -> WorkflowError:
    """The refusal of ``store.deliver()`` called by a handler of a delivery of its outbox."""
    return WorkflowError(
        f"deliver() was called on {shown(store)} from a handler of a delivery of the same "
        "outbox; it would wait for that delivery (deliver after it returned)"
    )


def failure(error: Exception) -> str:
    """Why a delivery failed with ``error``, as the row stores it.

    The text is made storable (a handler's message may hold NUL or a lone
    surrogate), so recording the failure never fails in its place.
    """
    try:
        text = f"{type(error).__name__}: {error}"
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        text = f"{type(error).__name__} (its message cannot be shown)"
    if is_text(text):
        return text
    # A lone surrogate becomes \udc80, a NUL \x00: the message stays readable.
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def note_failure(
    store: object,
    effect: Effect,
    error: Exception,
    recorded: str,
    *,
    discarded: bool | None,
    max_attempts: int | None,
) -> None:
    """Note on ``error`` the row it failed, and what became of the row; and log it.

    The record (a warning on the stores' logger, see ``_log.delivery_failed``) is one
    line without a traceback: ``error`` propagates to the caller of ``deliver()``.

    Args:
        store: The store delivering (records name it).
        effect: The row handed over.
        error: What the handler raised.
        recorded: ``error`` as the row's ``last_error`` records it (``failure(error)``,
            computed once: an exception's text may differ from one call to the next).
        discarded: Whether recording the failure discarded the row (it reached
            ``max_attempts``); ``None`` when it was no longer pending (discarded
            while the handler ran).
        max_attempts: The delivery's ``max_attempts``.
    """
    if discarded is None:
        outcome = "it was discarded meanwhile"
    elif discarded:
        outcome = f"it is discarded (its failures reached max_attempts={max_attempts})"
    else:
        outcome = "it stays pending"
    add_note_once(error, f"while delivering {_row(effect)}; {outcome}")
    _log.delivery_failed(store, effect, recorded, discarded, max_attempts)


def note_interrupted(effect: Effect, interrupt: BaseException) -> None:
    """Note on an interrupt of the handler (Ctrl-C, a cancellation) the row it stopped.

    No failure is counted: an interrupt says nothing of the effect's target, so the
    row stays pending as it was, and the next delivery hands it over again.
    """
    add_note_once(
        interrupt,
        f"while delivering {_row(effect)}; interrupted, it stays pending "
        "(an interrupt is not counted as a failure)",
    )


@contextmanager
def unrecorded(effect: Effect, failed: Exception | None) -> Iterator[None]:
    """Note on a store error of the block what it stopped: recording ``effect``'s outcome.

    The block marks the row delivered, or counts its failure. When the database
    fails it (a lost connection, a full disk), the row is left as it was (pending,
    no failure counted), so the next delivery hands it over again; the database's
    error alone would say neither which row nor that the handler had run.

    Args:
        effect: The row handed over.
        failed: What the handler raised, or ``None`` when it returned.
    """
    try:
        yield
    except StoreError as exc:
        if failed is None:
            what = "the handler returned, but the row could not be marked delivered"
        else:
            what = f"the handler raised {failure(failed)}, and this failure is not counted"
        add_note_once(
            exc,
            f"while delivering {_row(effect)}: {what}; it stays pending, and the next "
            "delivery hands it over again",
        )
        raise


def _row(effect: Effect) -> str:
    """An outbox row, as notes name it."""
    return (
        f"outbox row {effect.sequence} ({shown(effect.name)} for session "
        f"{effect.integration_id!r}, key {effect.key})"
    )


def idempotency_key(integration_id: str, position: int, effect: str) -> str:
    """The stable key of ``effect`` for the ``position``-th transition of a session.

    A UUID (version 5) derived from what identifies the effect, so the same
    transition and effect always get the same key, whichever process wrote it.
    """
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{integration_id}\x00{position}\x00{effect}"))


@frozen(eq=False)
class DurableEffect:
    """A durable effect registered on a store with ``store.on_commit(name, ...)``.

    Attributes:
        name: The effect's name, stored in each outbox row (stable across processes).
        trigger: The trigger it is written for; ``None`` for every transition.
    """

    name: str
    trigger: Trigger | None
    _remove: Callable[[DurableEffect], None] = field(alias="remove", repr=False)

    def matches(self, trigger: Trigger) -> bool:
        """Whether a transition fired by ``trigger`` writes this effect."""
        return self.trigger is None or self.trigger is trigger

    def remove(self) -> None:
        """Stop writing this effect for new commits (rows already written stay)."""
        self._remove(self)


@frozen(repr=False)
class _Unread:
    """An outbox row's document as stored, not parsed yet (see :attr:`Effect.document`).

    Compared and hashed by its text: it stands for a document that is not JSON
    when an effect is compared, hashed or shown (see :func:`_read`).
    """

    text: str | bytes
    integration_id: str

    def __repr__(self) -> str:
        """What an effect's ``repr()`` shows for a stored document that is not JSON."""
        return f"<outbox document, not JSON: {shown(self.text):.80}>"

    def parse(self) -> Any:
        """The document as plain JSON values.

        Raises:
            CorruptData: The stored text is not JSON.
        """
        return parse_document(self.text, self.integration_id)


def parse_document(text: str | bytes, integration_id: str) -> dict[str, Any]:
    """An outbox row's stored document: the session's wire document, a JSON object.

    Raises:
        CorruptData: The text is not JSON, or JSON of another kind (``[1]``, ``null``):
            no handler may be handed that as a session's document.
    """
    document = parse(text, "outbox document", integration_id)
    if not isinstance(document, dict):
        raise CorruptData(
            f"session {integration_id!r}: the stored outbox document is no JSON object "
            f"(got {shown(document):.60}); the row is corrupt",
            integration_id,
        )
    return document


def _document(value: Any) -> Any:
    if isinstance(value, _Unread):
        return value
    return frozen_document(value, "Effect", "document")


def _read(value: Any) -> Any:
    """The document itself, parsed if it is not yet (for comparing, hashing and showing effects).

    A stored text that is not JSON stands for itself: an effect listed with a corrupt
    document must still compare, hash and show (an operator logs it, then discards
    it), and only reading its :attr:`Effect.document` is the ``CorruptData``.
    """
    if not isinstance(value, _Unread):
        return value
    try:
        return _document(value.parse())
    except CorruptData:
        return value


def _is_bool(value: object) -> bool:
    # Exactly a bool: a truthy string ("no") or number would be taken for a yes.
    return type(value) is bool


@frozen(kw_only=True, repr=False)
class Effect:
    """One outbox row: a durable effect of one committed transition.

    Attributes:
        sequence: The row's number in the outbox (delivery follows it).
        key: The idempotency key, a UUID string that is the same on every
            delivery of this row; pass it on so the receiver can drop repeats.
        name: The durable effect's name.
        integration_id: The session.
        version: The session's row version the transition committed as.
        position: The transition's index in ``session.history``.
        record: The committed transition.
        attempts: How many earlier deliveries of this row failed.
        last_error: Why the last of them failed (the exception's type and
            message), or ``None``.
        created_at: When the row was written, in UTC (by the clock of the
            database server on PostgreSQL, of the committing process on SQLite).
        discarded_at: When the row was given up on (``store.discard()``, or a
            delivery's ``max_attempts``), in UTC as ``created_at``; ``None`` for a
            row that was not. A discarded row is never handed over again.
        discard_reason: Why it was given up on: the reason ``discard()`` was
            given, or the row's last error when ``max_attempts`` discarded it.
    """

    sequence: int
    key: str
    name: str
    integration_id: str
    version: int
    position: int
    record: TransitionRecord
    # The row's document, or its text until it is first read (see ``document``).
    _document: Mapping[str, Any] = field(alias="document", converter=_document, eq=_read)
    attempts: int
    last_error: str | None = None
    created_at: datetime
    discarded_at: datetime | None = None
    discard_reason: str | None = None

    @property
    def document(self) -> Mapping[str, Any]:
        """The session's wire document right after the commit (deeply immutable; with history).

        A row read by ``store.pending()``, ``store.discarded()`` or ``store.discard()``
        parses it when it is first asked for (then keeps it), so listing rows costs
        no parsing of documents nobody reads.

        Raises:
            CorruptData: The row was listed with its document unread, and the
                stored document is not JSON.
        """
        value = self._document
        if isinstance(value, _Unread):
            value = _document(value.parse())
            # A cache of what never changes: the effect stays equal to what it was.
            object.__setattr__(self, "_document", value)
        return value

    def __repr__(self) -> str:
        """``Effect(sequence=..., ...)``, with the constructor's argument names."""
        # Named by the alias; the document as compared (a corrupt one shown, not raised).
        values = [
            (a.alias, _read(self._document) if a.name == "_document" else getattr(self, a.name))
            for a in attrs.fields(Effect)
        ]
        return f"Effect({', '.join(f'{name}={value!r}' for name, value in values)})"

    @overload
    def session(self, *, workflow: Workflow | None = None) -> CustomerSession: ...

    @overload
    def session(self, *, session_class: type[_S], workflow: Workflow | None = None) -> _S: ...

    def session(
        self,
        *,
        session_class: type[CustomerSession] = CustomerSession,
        workflow: Workflow | None = None,
    ) -> CustomerSession:
        """The session as it was right after the commit (loaded from :attr:`document`)."""
        return wire.from_dict(thaw(self.document), session_class=session_class, workflow=workflow)

    def to_dict(self, *, include_document: bool = True) -> dict[str, Any]:
        """The row as JSON-ready data (``customer-session outbox list --json``).

        Keys are camelCase; times are RFC 3339 in UTC with a ``Z`` (``discardedAt``
        is ``None`` for a row not discarded), and ``record`` is written as the wire
        format's history extension writes it (see
        :func:`customer_session.wire.to_dict`). The dict shares nothing with the row.

        Args:
            include_document: Whether the dict has the ``document`` (last); without
                it, a row listed with its document unread is written without
                parsing it.

        Raises:
            CorruptData: The document is included, unread, and not JSON.
            ValidationError: ``include_document`` is not a bool.
        """
        if not _is_bool(include_document):
            got = f"must be True or False, got {shown(include_document):.80}"
            raise_problems("to_dict()", [Problem("include_document", got)])
        data = {
            "sequence": self.sequence,
            "key": self.key,
            "name": self.name,
            "integrationId": self.integration_id,
            "version": self.version,
            "position": self.position,
            "record": record_to_json(self.record),
            "attempts": self.attempts,
            "lastError": self.last_error,
            "createdAt": time_to_json(self.created_at),
            "discardedAt": None if self.discarded_at is None else time_to_json(self.discarded_at),
            "discardReason": self.discard_reason,
        }
        if include_document:
            value = self._document
            # Text not parsed yet parses into values nothing else holds: no copy needed.
            data["document"] = value.parse() if isinstance(value, _Unread) else thaw(value)
        return data


class EffectHandler(Protocol):
    """Delivers one durable effect to the outside world; see ``store.deliver``.

    Return to mark the row delivered; raise to leave it pending (it is handed
    over again by the next delivery, with ``attempts`` counting the failures).
    """

    def __call__(self, effect: Effect, /) -> object:
        """Deliver ``effect``; its return value is ignored."""


EFFECT_COLUMNS: Final = (
    "sequence, idempotency_key, effect, integration_id, version, position, record,"
    " document, attempts, last_error, created_at, discarded_at, discard_reason"
)
"""The outbox columns :func:`effect_from_row` reads, in its order (both dialects)."""


def effect_from_row(row: Sequence[Any], *, unread: bool = False) -> Effect:
    """An effect from its outbox row (the columns of :data:`EFFECT_COLUMNS`).

    Args:
        row: The columns.
        unread: Keep the document's text, to parse when it is first read: a listing
            that shows no document then parses none (a document is most of a row).

    Raises:
        CorruptData: The row is corrupt (its document only when it is read).
    """
    (
        sequence,
        key,
        name,
        integration_id,
        version,
        position,
        record,
        document,
        attempts,
        error,
        at,
        discarded_at,
        reason,
    ) = row
    return Effect(
        sequence=sequence,
        key=key,
        name=name,
        integration_id=integration_id,
        version=version,
        position=position,
        record=record_from_json(parse(record, "outbox record", integration_id), integration_id),
        document=(
            _Unread(document, integration_id)
            if unread
            else parse_document(document, integration_id)
        ),
        attempts=attempts,
        last_error=error,
        created_at=timestamp(at, f"time of outbox row {sequence}", integration_id),
        discarded_at=(
            None
            if discarded_at is None
            else timestamp(discarded_at, f"discard time of outbox row {sequence}", integration_id)
        ),
        discard_reason=reason,
    )
