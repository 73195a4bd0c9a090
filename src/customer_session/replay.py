"""Replay of order-event logs (JSON Lines) through the public session API.

Each line is one event: a JSON object with the session's integration id
(``session``), the operation (``op``), a timestamp (``at``) and the operation's
body, shaped like the Talon.One request it stands for::

    {
        "at": "2026-03-02T10:15:00Z",
        "session": "order-42",
        "op": "create",
        "customerSession": {"state": "open", "cartItems": [{"sku": "SOCK-42", "quantity": 2}]},
    }
    {
        "at": "...",
        "session": "order-42",
        "op": "update",
        "customerSession": {"cartItems": [...], "couponCodes": ["WELCOME10"], "state": "closed"},
    }
    {
        "at": "...",
        "session": "order-42",
        "op": "return",
        "return": {"returnedCartItems": [{"position": 0, "quantity": 1}]},
    }
    {"at": "...", "session": "order-42", "op": "reopen"}

The JSON Schema is ``schemas/order-event.schema.json`` in the package. Every event is applied
with the session's own methods (guards, hooks and domain rules included) as one
atomic change: an update that edits the cart and closes the session does both or
neither. A refused or malformed line is reported with its number and reason and the
replay goes on. Timestamps come from the log: the replayer's workflow clock reads
the current event's ``at``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from attrs import define, field, frozen

from customer_session import wire
from customer_session._cart import is_text, key_path, storable, text_problem
from customer_session._show import counted, shown
from customer_session._spec import State, Trigger
from customer_session.exceptions import (
    CustomerSessionError,
    Problem,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Workflow
from customer_session.model import CustomerSession, ReopenableCustomerSession, _check_session_class

# The wire format's readers: an event's time is read as a session document's is, and
# a key repeated in an object is named with the same path and words.
from customer_session.wire import (
    _json_problem,
    _outside_years,
    _parse_timestamp,
    _Repeated,
    _repeated_keys,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping

__all__ = ["MAX_DEPTH", "OPERATIONS", "RefusedLine", "ReplayReport", "Replayer", "with_progress"]

OPERATIONS: Final = ("create", "update", "return", "reopen")
"""The operations an event may carry."""

_EDITABLE: Final = frozenset(
    {
        "cartItems",
        "couponCodes",
        "referralCode",
        "profileId",
        "identifiers",
        "attributes",
        "additionalCosts",
    }
)
_CREATE_KEYS: Final = _EDITABLE | {"state"}
_TARGETS: Final = {State.CLOSED: Trigger.CLOSE, State.CANCELLED: Trigger.CANCEL}


def _reason_text(value: str) -> str:
    """A refusal's reason, made storable; it must be text."""
    if not isinstance(value, str):
        raise ValidationError.single("RefusedLine", "reason", f"must be text, got {shown(value)}")
    return storable(value)


def _printable(value: str) -> str:
    """``value`` as it is when it is printable, else by its ``repr`` (one line, no escapes)."""
    return value if value.isprintable() else shown(value)


@frozen
class RefusedLine:
    """A line that was not applied, and why.

    Attributes:
        line: The 1-based line number.
        session: The event's session, when the line named one.
        op: The event's operation, when the line named one.
        reason: Why it was refused, on one line.
    """

    line: int
    session: str | None
    op: str | None
    reason: str = field(converter=_reason_text)

    def __str__(self) -> str:
        """Render as ``line N: session op: reason``, on one line.

        A session or op that is not printable (a newline, a terminal's escape
        character) is shown by its ``repr``: written as it is, it would break the
        line, or start what reads as another refusal.
        """
        where = " ".join(_printable(part) for part in (self.session, self.op) if part)
        return f"line {self.line}: {where + ': ' if where else ''}{self.reason}"


@define
class ReplayReport:
    """What a replay did.

    Attributes:
        lines: Lines read (blank lines included, not counted as events).
        applied: Events applied.
        refused: Every refused or malformed line, in order.
        states: Sessions per final state (for a store: every stored session).
        skipped: Events a store had already applied in an earlier run (those an
            earlier run refused are in ``refused`` again).
        outbox_rows: The outbox rows a replay into a store wrote (one per durable
            effect registered on the store, for each transition it matches);
            ``None`` for a replay in memory, which has no outbox.
    """

    lines: int = 0
    applied: int = 0
    refused: list[RefusedLine] = field(factory=list)
    states: dict[str, int] = field(factory=dict)
    skipped: int = 0
    outbox_rows: int | None = None

    @property
    def sessions(self) -> int:
        """How many sessions the log created."""
        return sum(self.states.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``customer-session replay --json``).

        ``outboxRows`` is there for a replay into a store only.
        """
        data: dict[str, Any] = {
            "lines": self.lines,
            "applied": self.applied,
            "refusedCount": len(self.refused),
            "sessions": self.sessions,
            "states": dict(sorted(self.states.items())),
            "skipped": self.skipped,
        }
        if self.outbox_rows is not None:
            data["outboxRows"] = self.outbox_rows
        data["refused"] = [
            {"line": r.line, "session": r.session, "op": r.op, "reason": r.reason}
            for r in self.refused
        ]
        return data

    def to_text(self, *, max_refusals: int | None = 20) -> str:
        """A readable summary; lists at most ``max_refusals`` refused lines.

        Args:
            max_refusals: How many refused lines to list (``0``: none, only their
                count; ``None``: all).

        Raises:
            ValidationError: ``max_refusals`` is not ``None`` or an integer >= 0 (a
                negative slice would silently list all but the last few).
        """
        if max_refusals is not None and (type(max_refusals) is not int or max_refusals < 0):
            raise ValidationError.single(
                "to_text()",
                "max_refusals",
                f"must be an integer >= 0 or None, got {shown(max_refusals)}",
            )
        skipped = f", {self.skipped} applied by an earlier run" if self.skipped else ""
        # No colon after the count of sessions when there are none to list.
        out = [
            f"{counted(self.lines, 'line')}: {counted(self.applied, 'event')} applied, "
            f"{len(self.refused)} refused" + skipped,
            *(
                []
                if self.outbox_rows is None
                else [f"{counted(self.outbox_rows, 'outbox row')} written"]
            ),
            f"{counted(self.sessions, 'session')}{':' if self.states else ''}",
            *(f"  {state:<20} {count}" for state, count in sorted(self.states.items())),
        ]
        if self.refused:
            listed = self.refused if max_refusals is None else self.refused[:max_refusals]
            out.append("refused:")
            out.extend(f"  {refused}" for refused in listed)
            if len(listed) < len(self.refused):
                more = len(self.refused) - len(listed)
                out.append(f"  ... and {more} more (--max-refusals N or --json lists them)")
        return "\n".join(out) + "\n"


class _LogClock:
    """The replay's clock: the timestamp of the event being applied."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = datetime(1970, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Replayer:
    """Applies events to sessions it keeps in memory (``sessions``).

    Register guards and hooks on :attr:`workflow` before running: they apply to
    every replayed session, exactly as in a live service.

    :meth:`run` has two paths that give the same verdicts and the same sessions
    (see ``docs/replay.md``). The *live* path applies every line with :meth:`apply`,
    through the sessions' public methods; it is the only one that runs guards and
    hooks. The *fast* path (``customer_session._fastreplay``) decides the common
    events with a table compiled from the specification, keeps each session as a
    compact record, and hands every other line to :meth:`apply`. It is taken when
    nothing is registered on :attr:`workflow`.

    Attributes:
        sessions: The sessions by integration id. Sessions kept as compact records
            become :class:`CustomerSession` objects when first read, and stay those
            objects (later events change them in place); ``in``, ``len()`` and the
            keys build nothing.

    Args:
        session_class: ``CustomerSession``, or ``ReopenableCustomerSession`` to
            accept ``reopen`` events.

    Raises:
        WorkflowError: ``session_class`` is no ``CustomerSession`` class.
    """

    def __init__(self, *, session_class: type[CustomerSession] = CustomerSession) -> None:
        """Start with no sessions and a workflow whose clock is the log."""
        from customer_session._fastreplay import SessionView  # noqa: PLC0415 - it imports this module

        _check_session_class(session_class)
        self.session_class = session_class
        self._clock = _LogClock()
        self.workflow: Workflow = Workflow(session_class.specification, clock=self._clock)
        self._view = SessionView(session_class, self.workflow)
        self.sessions: MutableMapping[str, CustomerSession] = self._view

    def run(self, lines: Iterable[str], *, fast: bool | None = None) -> ReplayReport:
        """Apply every line; return the report (sessions stay in :attr:`sessions`).

        Args:
            lines: The log's lines (trailing newlines are fine).
            fast: ``None`` (the default) takes the fast path when no guard or hook is
                registered on :attr:`workflow` and ``session_class`` is one of the
                library's; ``True`` forces it, ``False`` forces the live path.

        A line that is no text (``bytes`` from a log opened in binary mode, say) is
        refused, like a malformed one.

        Raises:
            WorkflowError: ``fast=True`` while guards or hooks are registered (the
                fast path would skip them), or on a replayer that keeps its sessions
                elsewhere than in memory.
            ValidationError: ``lines`` is not an iterable of lines: a ``str`` or
                ``bytes`` (which iterate characters), or no iterable at all.
        """
        _check_lines(lines)
        if self._fast(fast):
            from customer_session._fastreplay import FastReplay  # noqa: PLC0415 - it imports this module

            return FastReplay(self).run(lines)
        report = ReplayReport()
        for number, line in enumerate(lines, start=1):
            report.lines = number
            if isinstance(line, str) and not line.strip():
                continue
            refused = self.apply(number, line)
            if refused is None:
                report.applied += 1
            else:
                report.refused.append(refused)
        report.states = self._states()
        return report

    def apply(self, number: int, line: str) -> RefusedLine | None:
        """Apply one line; return why it was refused, or ``None`` when it was applied."""
        given: object = line  # a caller may pass bytes, whatever the type says
        if not isinstance(given, str):
            return _not_text(number, given)
        event = _decode(number, line)
        if isinstance(event, RefusedLine):
            return event
        return self._apply_event(number, event)

    def _apply_event(self, number: int, event: object) -> RefusedLine | None:
        """Apply a decoded line (any JSON value); return why it was refused, or ``None``."""
        if not isinstance(event, dict):
            return RefusedLine(number, None, None, "an event must be a JSON object")
        try:
            self._clock.now = _envelope_time(event)
            # The envelope check made both strings.
            self._dispatch(event["session"], event["op"], event)
        except CustomerSessionError as error:
            return RefusedLine(number, *_named(event), _reason(error))
        return None

    def _fast(self, fast: bool | None) -> bool:
        """Whether :meth:`run` takes the fast path."""
        in_memory = type(self)._dispatch is Replayer._dispatch  # noqa: SLF001 - a store replay overrides it
        registered = bool(self.workflow.registrations)
        if fast is None:
            return in_memory and not registered and self.session_class in _LIBRARY_CLASSES
        if fast and (registered or not in_memory):
            why = "guards or hooks are registered" if registered else "sessions are not in memory"
            raise WorkflowError(f"the fast replay path cannot run: {why}; use fast=False")
        return fast

    # -- operations ------------------------------------------------------------------

    def _dispatch(self, integration_id: str, op: str, event: dict[str, Any]) -> None:
        """Apply a checked event, wherever the sessions live.

        The checks and their order are the same for every replayer, so a line gets
        the same reason in memory and in a store; where sessions live is up to
        :meth:`_has`, :meth:`_add` and :meth:`_modify`.
        """
        if op == "create":
            if self._has(integration_id):
                raise _already_exists(integration_id)
            self._add(self._new_session(integration_id, event))
        elif not self._has(integration_id):
            raise _unknown_session(integration_id)
        else:
            self._modify(integration_id, op, event)

    def _has(self, integration_id: str) -> bool:
        """Whether the session exists (a store replay overrides it, as the two below)."""
        return integration_id in self.sessions

    def _add(self, session: CustomerSession) -> None:
        """Keep a session a ``create`` made."""
        self.sessions[session.integration_id] = session

    def _modify(self, integration_id: str, op: str, event: dict[str, Any]) -> None:
        """Apply an ``update``, ``return`` or ``reopen`` event to an existing session."""
        self._change(self.sessions[integration_id], op, event)

    def _new_session(self, integration_id: str, event: dict[str, Any]) -> CustomerSession:
        """The session a ``create`` event makes (not stored anywhere yet)."""
        body = _object(event, "customerSession")
        _refuse_unknown(body, _CREATE_KEYS, "$.customerSession")
        fields = wire.new_session_fields(body, path="$.customerSession")
        return self.session_class(
            integration_id=integration_id,
            workflow=self.workflow,
            created=self._clock.now,
            **fields,
        )

    @staticmethod
    def _change(session: CustomerSession, op: str, event: dict[str, Any]) -> None:
        """Apply an ``update``, ``return`` or ``reopen`` event to ``session``.

        The one place events change sessions, wherever they live (in memory here,
        in a store for a store replay).
        """
        _CHANGES[op](session, event)

    def _states(self) -> dict[str, int]:
        """Sessions per state, for the report (compact records are not built)."""
        return self._view.state_counts()


_LIBRARY_CLASSES: Final = (CustomerSession, ReopenableCustomerSession)


MAX_DEPTH: Final = 100
"""How deeply an event's arrays and objects may nest (the event object is level 1).

Real events nest a few levels. The limit keeps every line well inside what the
parser, the session's checks and the store's writer can handle without running out
of stack, so a pathological line is refused like any other, on every path.
"""


def _check_lines(lines: object, subject: str = "run()") -> None:
    """Refuse ``lines`` that are no iterable of lines, before any line is applied."""
    if isinstance(lines, (str, bytes, bytearray)):
        hint = "; split it into lines first (text.splitlines())"
        problem = f"must be an iterable of lines, not one {type(lines).__name__}{hint}"
    elif not hasattr(lines, "__iter__"):
        problem = f"must be an iterable of lines (a file, a list), got {shown(lines):.80}"
    else:
        return
    raise ValidationError.single(subject, "lines", problem)


def _not_text(number: int, line: object) -> RefusedLine:
    """The refusal of line ``number``, which is no ``str``."""
    hint = " (open the log in text mode)" if isinstance(line, (bytes, bytearray)) else ""
    return RefusedLine(
        number, None, None, f"not text: a line must be a str, got {type(line).__name__}{hint}"
    )


class _RepeatedKey(Exception):
    """Raised by :func:`_read_json` at the first JSON object that repeats a key."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; a repeated key raises :class:`_RepeatedKey`."""
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _RepeatedKey
    return members


_read_json: Final = json.JSONDecoder(object_pairs_hook=_unique_members).decode
"""``json.loads`` of a line, raising :class:`_RepeatedKey` for a key repeated in an object.

``json.loads`` keeps a repeated key's last value, other JSON readers its first (RFC
8259 leaves it open): such an event means different things to different readers,
so the replay refuses it, as ``wire.from_json`` refuses such a document. The check
costs a call per object; the fast path's compact lines, whose pattern fixes every
key, are never decoded.
"""


def _keeping_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; one that repeats a key is kept with its counts (wire)."""
    members = dict(pairs)
    return members if len(members) == len(pairs) else _Repeated(pairs)


def _decode(number: int, line: str) -> Any | RefusedLine:
    """The JSON value of line ``number``, or its refusal when it is not JSON the replay reads.

    Besides malformed JSON, the standard parser raises for two kinds of valid JSON:
    an integer with more digits than ``sys.get_int_max_str_digits()`` (``ValueError``)
    and nesting deeper than the interpreter's recursion limit (``RecursionError``).
    Both are refused like malformed lines, as is nesting deeper than
    :data:`MAX_DEPTH`, so no line stops the replay. A key repeated in an object is
    refused at its path (see :data:`_read_json`).
    """
    repeated: list[Problem] = []
    try:
        try:
            value = _read_json(line)
        except _RepeatedKey:
            # Rare: read it again, whole (it may be malformed further on), to name
            # every repeated key at its path.
            value = json.loads(line, object_pairs_hook=_keeping_repeats)
            repeated = [Problem(path, message) for path, message in _repeated_keys(value)]
    except json.JSONDecodeError as error:
        # Counted in the line itself: the parser's position may lie past its newline
        # (a line cut short while it was written), which it would call column 1.
        end = len(line.rstrip("\r\n"))
        where = "the end of the line" if error.pos >= end else f"column {error.pos + 1}"
        reason = f"malformed JSON: {_json_problem(error)} ({where})"
    except ValueError:
        # The only other ValueError json.loads raises: int()'s limit on digits.
        reason = f"unsupported JSON: a number has more than {sys.get_int_max_str_digits()} digits"
    except RecursionError:
        reason = _TOO_DEEP
    else:
        if _too_deep(line, value):
            reason = _TOO_DEEP
        elif repeated:
            reason = _reason(ValidationError("event", repeated))
        else:
            return value
    return RefusedLine(number, None, None, reason)


_TOO_DEEP: Final = f"unsupported JSON: arrays and objects nested more than {MAX_DEPTH} levels deep"


def _too_deep(line: str, value: object) -> bool:
    """Whether ``value`` (decoded from ``line``) nests deeper than :data:`MAX_DEPTH`."""
    # Counting brackets runs at C speed: only a line with that many can nest that deep.
    if line.count("[") + line.count("{") <= MAX_DEPTH:
        return False
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:  # iterative: a recursive walk is what must not run out of stack
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _named(event: object) -> tuple[str | None, str | None]:
    """The session and the operation a decoded line names, as its refusal shows them."""
    if not isinstance(event, dict):
        return None, None
    session, op = event.get("session"), event.get("op")
    # Only a valid id goes into the report, which is printed and stored.
    return (
        session if isinstance(session, str) and session and is_text(session) else None,
        op if isinstance(op, str) and op and is_text(op) else None,
    )


def _reason(error: CustomerSessionError) -> str:
    """A refused line's reason: the error's message on one line.

    A message of several problems has one per line: they are kept apart by `` | ``
    (a problem's own words may hold a semicolon).
    """
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    return f"{lines[0]} {' | '.join(lines[1:])}" if len(lines) > 1 else "".join(lines)


# The refusals below are built here once, for this module and the fast path alike.


def _already_exists(integration_id: str) -> ValidationError:
    """The refusal of a ``create`` for a session that exists."""
    return ValidationError.single(
        "event", "$.session", f"session {integration_id!r} already exists"
    )


def _unknown_session(integration_id: str) -> ValidationError:
    """The refusal of an event for a session no ``create`` made."""
    return ValidationError.single(
        "event", "$.session", f"unknown session {integration_id!r} (no create event)"
    )


def _reopen_disabled() -> ValidationError:
    """The refusal of a ``reopen`` when the table has no reopen."""
    return ValidationError.single("event", "$.op", "reopen is not enabled (replay with --reopen)")


def _update(session: CustomerSession, event: dict[str, Any]) -> None:
    body = _object(event, "customerSession")
    _refuse_unknown(body, _CREATE_KEYS, "$.customerSession")
    edits = wire.new_session_fields(
        {k: v for k, v in body.items() if k != "state"}, path="$.customerSession"
    )
    target = _target(body)
    with session.atomic():
        if edits:
            _apply_edits(session, edits)
        if target is not None:
            _move(session, target)


def _return(session: CustomerSession, event: dict[str, Any]) -> None:
    items = wire.returned_items_from_json(_object(event, "return"), path="$.return")
    session.return_items(items)


def _reopen(session: CustomerSession, _event: dict[str, Any]) -> None:
    if Trigger.REOPEN not in session.specification.triggers:
        raise _reopen_disabled()
    session.fire(Trigger.REOPEN)


_CHANGES: Final[Mapping[str, Callable[[CustomerSession, dict[str, Any]], None]]] = {
    "update": _update,
    "return": _return,
    "reopen": _reopen,
}


def _envelope_time(event: Mapping[str, Any]) -> datetime:
    """The event's time, once ``session``, ``op`` and ``at`` are checked (all problems)."""
    problems: list[Problem] = []
    moment: datetime | None = None
    session, op, at = event.get("session"), event.get("op"), event.get("at")
    if not isinstance(session, str) or not session:
        problems.append(
            Problem("$.session", f"must be a non-empty string, got {shown(session):.80}")
        )
    elif not is_text(session):
        problems.append(Problem("$.session", text_problem(session)))
    if op not in OPERATIONS:
        problems.append(Problem("$.op", f"must be one of {', '.join(OPERATIONS)}, got {shown(op)}"))
    if not isinstance(at, str):
        problems.append(Problem("$.at", f"must be an RFC 3339 timestamp, got {shown(at)}"))
    else:
        try:
            moment = _timestamp(at)
        except ValueError as error:
            problems.append(Problem("$.at", str(error)))
    if problems or moment is None:
        raise ValidationError("event", problems)
    return moment


def _timestamp(text: str) -> datetime:
    """``text`` (an RFC 3339 date-time, as the wire format reads it) as an aware UTC datetime.

    Raises:
        ValueError: ``text`` is not such a timestamp (or has no time zone), or its
            time in UTC falls outside the years 1 to 9999 that ``datetime`` holds.
    """
    try:
        return _parse_timestamp(text)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        msg = _outside_years(text)
    except ValueError as error:
        msg = f"{shown(text)} is not a valid date-time: {error}"
        if _has_no_zone(text):
            msg = f"{shown(text)} has no time zone"
    raise ValueError(msg) from None


def _has_no_zone(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 date-time but for its missing time zone."""
    try:
        _parse_timestamp(f"{text}Z")
    except (ValueError, OverflowError):
        return False
    return True


def _object(event: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = event.get(key)
    if not isinstance(value, dict):
        raise ValidationError.single(
            "event", f"$.{key}", f"must be an object, got {shown(value):.60}"
        )
    return value


def _refuse_unknown(body: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            "event",
            [Problem(key_path(path, key), "is not supported by this replay") for key in unknown],
        )


def _target(body: Mapping[str, Any]) -> State | None:
    if "state" not in body:
        return None
    value = body["state"]
    try:
        return State(value)
    except ValueError:
        raise ValidationError.single(
            "event", "$.customerSession.state", f"unknown state {shown(value)}"
        ) from None


def _apply_edits(session: CustomerSession, edits: Mapping[str, Any]) -> None:
    setters: Mapping[str, Callable[[Any], None]] = {
        "cart_items": session.set_cart_items,
        "coupon": session.set_coupon,
        "referral": session.set_referral,
        "profile_id": session.set_profile_id,
        "identifiers": session.set_identifiers,
    }
    for name, value in edits.items():
        if name in setters:
            setters[name](value)
        elif name == "attributes":
            for key in set(session.attributes) - set(value):
                session.remove_attribute(key)
            for key, item in value.items():
                session.set_attribute(key, item)
        elif name == "additional_costs":
            for key in set(session.additional_costs) - set(value):
                session.set_additional_cost(key, None)
            for key, cost in value.items():
                session.set_additional_cost(key, cost.price)


def _move(session: CustomerSession, target: State) -> None:
    """Fire the trigger an update to ``target`` stands for (conservatively)."""
    trigger = _TARGETS.get(target)
    if trigger is not None and target is not session.state:
        session.fire(trigger)
        return
    refusal = _staying(session.state, target)
    if refusal is not None:
        raise refusal


def _staying(state: State, target: State) -> ValidationError | None:
    """Why an update may not ask a ``state`` session for ``target`` when no trigger fires.

    ``None`` for the one such request that is fine: an open session staying open.
    """
    if target is State.OPEN and state is State.OPEN:
        return None  # an ordinary update of an open session
    if target is State.PARTIALLY_RETURNED:
        reason = "partially_returned is reached through a return, never through an update"
    elif target is State.OPEN:
        reason = f"an update cannot move a {state} session to open (use reopen)"
    else:
        reason = f"the session is already {target}; a repeated state change is refused"
    return ValidationError.single("event", "$.customerSession.state", reason)


def with_progress(
    lines: Iterable[str], *, total_bytes: int | None, stream: TextIO
) -> Iterable[str]:
    """``lines`` with a progress bar on ``stream`` when it is a terminal (tqdm).

    The bar counts each line's UTF-8 bytes (a character UTF-8 cannot encode counts
    as one), so it reaches ``total_bytes`` when the lines are a file's, as read
    with ``newline=""`` (and ``errors="surrogateescape"`` for a file that may hold
    bytes that are not UTF-8).

    Raises:
        ValidationError: ``lines`` is no iterable of lines, ``total_bytes`` no
            integer >= 0 or ``None``, or ``stream`` no text stream; each by name.
    """
    _check_lines(lines, "with_progress()")
    problems: list[Problem] = []
    if total_bytes is not None and (type(total_bytes) is not int or total_bytes < 0):
        problems.append(
            Problem("total_bytes", f"must be an integer >= 0 or None, got {shown(total_bytes):.80}")
        )
    if not all(callable(getattr(stream, method, None)) for method in ("isatty", "write")):
        problems.append(
            Problem("stream", f"must be a text stream (a file), got {shown(stream):.80}")
        )
    if problems:
        raise ValidationError("with_progress()", problems)
    if not stream.isatty():
        return lines
    from tqdm import tqdm  # noqa: PLC0415 - only needed for interactive runs

    def counted() -> Iterator[str]:
        with tqdm(total=total_bytes, unit="B", unit_scale=True, file=stream) as bar:
            for line in lines:
                # A character UTF-8 cannot encode (surrogateescape's stand-in for a byte
                # that was not UTF-8, a lone surrogate) counts as one byte, never raises.
                bar.update(len(line.encode("utf-8", "replace")))
                yield line

    return counted()
