"""JSON in and out of the database: session documents and history records.

Sessions are stored as their v1 wire document with history (``wire.to_dict(...,
include_history=True)``) and loaded back through ``wire.from_dict``, the
validating restore path. Anything stored that does not load is reported as a
:class:`~customer_session.exceptions.CorruptData` naming the session, never as a
crash in the caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from customer_session import wire
from customer_session._cart import ReturnedItem, is_number, is_text, text_problem
from customer_session._records import TransitionRecord
from customer_session._show import shown
from customer_session._spec import REOPENABLE_SESSION, State, Trigger
from customer_session.exceptions import (
    CorruptData,
    CustomerSessionError,
    StoreError,
    WorkflowError,
)

if TYPE_CHECKING:
    from customer_session.hooks import Workflow
    from customer_session.model import CustomerSession

_S = TypeVar("_S", bound="CustomerSession")

HISTORY_KEY: Final = wire.EXTENSION_KEY
"""The document key whose ``history`` holds the transition records."""


def dumps(value: Any, integration_id: str | None = None) -> str:
    """Compact JSON text (Unicode kept), as stored in every text column.

    ``value`` comes from the wire writer of a validated session, so it should hold
    only JSON values with finite numbers and valid text; frozen values (tuples,
    immutable mappings) are written as arrays and objects too. orjson writes it about
    fifteen times faster than the standard library (a commit writes three such
    texts); what orjson refuses and JSON allows (integers beyond 64 bits, possible
    in ``attributes``) is written by the standard library. (orjson also refuses
    nesting deeper than 254 levels, which a valid session never reaches: its
    attributes nest at most ``MAX_NESTING`` levels.)

    Args:
        value: The JSON value.
        integration_id: The session it belongs to, for the error message.

    Raises:
        StoreError: ``value`` would not read back as itself: it holds a number
            that is not finite (orjson would write ``null``), text that is not
            valid UTF-8, or an integer too long for JSON readers. Nothing is written.
    """
    try:
        written = orjson.dumps(value, default=_plain)
    except orjson.JSONEncodeError:
        return _standard_dumps(value, integration_id)
    # orjson writes NaN and the infinities as null, which reads back as another
    # value: a text with a null in it is written again by the standard library,
    # which refuses them (nulls are rare in documents, so this costs little).
    if b"null" in written:
        return _standard_dumps(value, integration_id)
    return written.decode()


def _standard_dumps(value: Any, integration_id: str | None) -> str:
    """:func:`dumps` by the standard library, which refuses what would not read back."""
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain
        )
        text.encode()  # a lone surrogate has no UTF-8 encoding: no column can hold it
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        where = _unwritable(value, "$") or f"{type(exc).__name__}: {exc}"
        raise StoreError(
            f"{subject(integration_id)}: refusing to write JSON that would not read back "
            f"({where}); nothing was written",
            integration_id,
        ) from exc
    return text


def _plain(value: object) -> dict[str, Any]:
    """A frozen JSON object as both writers take it (they write tuples as arrays already)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _unwritable(value: Any, path: str) -> str | None:
    """The first part of ``value`` that JSON cannot hold as itself, with its path."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {shown(value)}, not a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and not is_number(value):
        return f"{path} is {shown(value)}"
    if isinstance(value, str) and not is_text(value):
        return f"{path} {text_problem(value)}"
    items: Any = ()
    if isinstance(value, Mapping):
        for key in value:
            if isinstance(key, str) and not is_text(key):
                return f"a key of {path} {text_problem(key)}"
        items = ((f"{path}[{shown(key)}]", item) for key, item in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    for where, item in items:
        found = _unwritable(item, where)
        if found is not None:
            return found
    return None


def history_of(document: Mapping[str, Any]) -> list[Any]:
    """The history records (as JSON) of a stored document."""
    extension = document.get(HISTORY_KEY)
    if isinstance(extension, Mapping):
        history = extension.get("history")
        if isinstance(history, list):
            return history
    return []


def parse(text: str | bytes, what: str, integration_id: str | None) -> Any:
    """``text`` as JSON.

    Raises:
        CorruptData: ``text`` is not JSON (the message names the session).
    """
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CorruptData(
            f"{subject(integration_id)}: the stored {what} is not valid JSON ({exc}); "
            "the row is corrupt",
            integration_id,
        ) from exc


def load_session(
    text: str,
    integration_id: str,
    *,
    session_class: type[_S],
    workflow: Workflow,
) -> tuple[dict[str, Any], _S]:
    """The parsed document and the session it restores.

    Raises:
        CorruptData: The document is not JSON, does not restore (every problem of
            the validation is in the message, the ``ValidationError`` chained), or
            belongs to another session.
        WorkflowError: Its history holds triggers ``session_class``'s table lacks
            (a session of a class with a larger table, such as the reopen table).
    """
    data = parse(text, "document", integration_id)
    try:
        session = wire.from_dict(data, session_class=session_class, workflow=workflow)
    except CustomerSessionError as exc:
        foreign = _foreign_triggers(data, session_class)
        if foreign:
            raise foreign_triggers(
                f"{subject(integration_id)}: its stored history", foreign, session_class
            ) from exc
        raise CorruptData(
            f"{subject(integration_id)}: the stored document cannot be loaded; the row "
            f"is corrupt: {exc}",
            integration_id,
        ) from exc
    if session.integration_id != integration_id:
        raise CorruptData(
            f"{subject(integration_id)}: the stored document belongs to session "
            f"{session.integration_id!r}; the row is corrupt",
            integration_id,
        )
    return data, session


_REOPEN_TABLE: Final = frozenset(str(trigger) for trigger in REOPENABLE_SESSION.triggers)


def foreign_triggers(
    where: str, foreign: list[str], session_class: type[CustomerSession]
) -> WorkflowError:
    """The refusal of stored history (at ``where``) holding triggers the class's table lacks.

    Not damage: the row was written through a class with a larger table. The advice
    names the library's class that has them, when it has one; every command that
    loads stored sessions (``show``, ``history``, ``replay``) reads the reopen table
    with its own ``--reopen``, so the advice fits whichever of them meets this.
    """
    hint = (
        " (ReopenableCustomerSession; on the command line: --reopen)"
        if _REOPEN_TABLE.issuperset(foreign)
        else ""
    )
    return WorkflowError(
        f"{where} holds {', '.join(map(repr, foreign))}, which {session_class.__name__}'s "
        f"table does not have; open the store with the session class that wrote it{hint}"
    )


def _foreign_triggers(data: Any, session_class: type[CustomerSession]) -> list[str]:
    """Triggers the document's history names that ``session_class``'s table lacks."""
    if not isinstance(data, Mapping):
        return []
    known = {str(trigger) for trigger in session_class.specification.triggers}
    named = {record.get("trigger") for record in history_of(data) if isinstance(record, Mapping)}
    return sorted(t for t in named if isinstance(t, str) and t not in known)


def subject(integration_id: str | None) -> str:
    """How messages name the session concerned (or the store, when there is none)."""
    return "store" if integration_id is None else f"session {integration_id!r}"


def record_from_json(data: Any, integration_id: str) -> TransitionRecord:
    """A history record as the wire writes it (``returnedItems`` only when there are any).

    Raises:
        CorruptData: The record is not one.
    """
    try:
        items = tuple(
            ReturnedItem(position=item["position"], quantity=item["quantity"], sku=item.get("sku"))
            for item in data.get("returnedItems", ())
        )
        moment = datetime.fromisoformat(data["timestamp"])
        trigger, source, destination = (
            Trigger(data["trigger"]),
            State(data["source"]),
            State(data["destination"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad_record(integration_id, f"{type(exc).__name__}: {exc}") from exc
    if moment.utcoffset() is None:
        raise _bad_record(integration_id, f"timestamp {data['timestamp']!r} has no time zone")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01 at +01:00: no time in UTC
        raise _bad_record(
            integration_id, f"timestamp {data['timestamp']!r} is outside the years 1 to 9999 in UTC"
        ) from None
    return TransitionRecord(trigger, source, destination, moment, items)


def record_to_json(record: TransitionRecord) -> dict[str, Any]:
    """A history record as the wire writes it (the inverse of :func:`record_from_json`)."""
    return wire._WRITER.record(record)  # noqa: SLF001 - the wire format's one writer of records


def time_to_json(moment: datetime) -> str:
    """A time as the wire writes one: RFC 3339 in UTC with a ``Z``."""
    return wire._format_timestamp(moment)  # noqa: SLF001 - the wire format's one writer of times


def _bad_record(integration_id: str, reason: str) -> CorruptData:
    return CorruptData(
        f"{subject(integration_id)}: a stored history record cannot be read ({reason}); "
        "the row is corrupt",
        integration_id,
    )


def timestamp(value: str | datetime, what: str, integration_id: str | None) -> datetime:
    """A stored time (ISO text in SQLite, ``timestamptz`` in PostgreSQL) in UTC.

    Raises:
        CorruptData: ``value`` is not an aware time (the message names ``what`` and
            the session).
    """
    problem = None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        if moment.utcoffset() is None:
            problem = "it has no time zone"
        else:
            return moment.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as exc:
        problem = str(exc)
    raise CorruptData(
        f"{subject(integration_id)}: the stored {what} {shown(value):.60} is not a time "
        f"({problem}); the row is corrupt",
        integration_id,
    )


def state_from_row(value: str) -> State:
    """A stored ``state`` column as a state.

    Raises:
        CorruptData: It names no state (the message quotes it).
    """
    try:
        return State(value)
    except ValueError:
        raise CorruptData(
            f"store: a stored session has the state {shown(value):.60}, which is none; "
            "the row is corrupt"
        ) from None
