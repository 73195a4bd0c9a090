"""The fast replay path: verdicts from a table compiled from the specification.

:meth:`Replayer.run <customer_session.replay.Replayer.run>` takes this path when no
guard or hook is registered. It gives the same verdicts, reasons and final sessions
as the live path (``tests/test_fastreplay.py`` proves it on random logs) without
building a :class:`CustomerSession` per event:

* Each session is a :class:`SessionRecord`: its state, its cart as the request's
  JSON (text or decoded objects) with the units returned per position, its codes and
  timestamps, and its history as plain tuples; enough to decide every verdict and to
  rebuild the session losslessly (:meth:`SessionView.materialize`).
* Only *plain* events are applied here, each proved valid by a strict whitelist:
  creates and cart replacements whose items hold only ``sku``, ``name``,
  ``quantity``, ``price`` and ``category`` with exact JSON types inside the limits;
  updates whose only effects are that cart and a target state; returns of plain
  ``{position, quantity}`` entries that fit the cart; reopens. The moves come from
  a dict compiled from ``specification.edges``.
* Refusals decided here are those of plain events that depend on the state alone:
  a move the table forbids (:class:`IllegalTransition`), a cart edit of a session
  that is not open (:class:`SessionNotEditable`), a target no trigger leads to, an
  unknown session, a second create, a reopen without the reopen table. Each is
  worded by the same exception or builder the live path raises.
* Lines in the compact form ``json.dumps(..., separators=(",", ":"))`` writes, with
  keys in the order of the examples, are recognized by one compiled pattern, and
  their cart items are proved plain one by one (and remembered), so they are not
  decoded at all; a cart is decoded only when a return or a read of the session
  needs it. Other lines are decoded and checked.
* Every other line (malformed JSON, a body with other keys or odd values, an
  over-return...) goes to the live path for that one line: :meth:`Replayer.apply`
  runs it against a session built from the record, and the session goes back into
  a record afterwards. User guards and hooks never run here, which is why the path
  is only taken when none is registered.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import MutableMapping
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from customer_session._cart import (
    EMPTY_MAPPING,
    MAX_CART_ITEMS,
    MAX_CODE_LENGTH,
    MAX_INTEGRATION_ID_LENGTH,
    MAX_UNITS,
    CartItem,
    ReturnedItem,
    is_number,
    is_text,
    same,
)
from customer_session._records import TransitionRecord
from customer_session._spec import State, Trigger
from customer_session.exceptions import (
    CustomerSessionError,
    IllegalTransition,
    SessionNotEditable,
)
from customer_session.model import CustomerSession
from customer_session.replay import (
    _TARGETS,
    RefusedLine,
    ReplayReport,
    _already_exists,
    _decode,
    _not_text,
    _reason,
    _reopen_disabled,
    _staying,
    _timestamp,
    _unknown_session,
)
from customer_session.wire import _CANONICAL

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from customer_session.hooks import Workflow
    from customer_session.replay import Replayer


class _Live(Enum):
    """The verdict "let the live path decide this line"."""

    LINE = "live"


_LIVE: Final = _Live.LINE
_Outcome: TypeAlias = RefusedLine | Literal[_Live.LINE] | None
"""What deciding one line gives: applied (``None``), refused, or for the live path."""

_fromisoformat: Final = datetime.fromisoformat
# The form the wire format writes (``...T10:15:00Z``), which ``fromisoformat`` reads as is.
_canonical: Final = _CANONICAL.fullmatch
_OPEN: Final = State.OPEN.value
_STATE_VALUES: Final = frozenset(state.value for state in State)
# The model's name for a cart replacement in a refusal ("cannot set_cart_items() ...").
_SET_CART_ITEMS: Final = CustomerSession.set_cart_items.__name__
_RETURN: Final = Trigger.RETURN_ITEMS.value
_REOPEN: Final = Trigger.REOPEN.value


class SessionRecord:
    """A session as the fast path keeps it: enough to decide and to rebuild it.

    Attributes:
        state: The state's value.
        cart: The cart: the request's ``cartItems`` JSON text (not decoded yet), its
            decoded list of plain item objects, or ``CartItem`` objects for a cart
            the live path left that has more than plain items.
        returned: Units returned per position of a JSON cart (``None``: none yet).
        profile_id: As on the session.
        coupon: As on the session.
        referral: As on the session.
        identifiers: As on the session.
        attributes: As on the session.
        additional_costs: As on the session.
        created: As on the session.
        updated: As on the session.
        update_count: As on the session.
        history: ``(trigger, source, destination, timestamp, ((position, quantity),
            ...))`` tuples, or the live path's ``TransitionRecord`` objects.

    Every field holds strings, numbers, datetimes or tuples of those where it can:
    the garbage collector stops tracking such tuples, so a log of many sessions
    does not make each full collection slower.
    """

    __slots__ = (
        "additional_costs",
        "attributes",
        "cart",
        "coupon",
        "created",
        "history",
        "identifiers",
        "profile_id",
        "referral",
        "returned",
        "state",
        "update_count",
        "updated",
    )

    def __init__(
        self,
        state: str,
        cart: str | list[dict[str, Any]] | tuple[CartItem, ...],
        created: datetime,
        profile_id: str | None = None,
        coupon: str | None = None,
    ) -> None:
        """A record as a plain ``create`` leaves it."""
        self.state = state
        self.cart = cart
        self.returned: tuple[int, ...] | None = None
        self.profile_id = profile_id
        self.coupon = coupon
        self.referral: str | None = None
        self.identifiers: tuple[str, ...] = ()
        self.attributes: Mapping[str, Any] = EMPTY_MAPPING
        self.additional_costs: Mapping[str, Any] = EMPTY_MAPPING
        self.created = created
        self.updated = created
        self.update_count = 1
        self.history: tuple[tuple[Any, ...] | TransitionRecord, ...] = ()


# -- records <-> sessions -----------------------------------------------------------


def _transition(entry: tuple[Any, ...] | TransitionRecord) -> TransitionRecord:
    if isinstance(entry, TransitionRecord):
        return entry
    trigger, source, destination, timestamp, items = entry
    return TransitionRecord(
        Trigger(trigger),
        State(source),
        State(destination),
        timestamp,
        tuple(ReturnedItem(position, quantity) for position, quantity in items),
    )


def _cart_items(record: SessionRecord) -> tuple[CartItem, ...]:
    """The cart's items, with the units returned so far.

    A JSON cart on a record passed the whitelist, so its objects hold only the
    keys ``sku``, ``name``, ``quantity``, ``price`` and ``category`` with their
    exact JSON types: the constructor's own arguments, which the wire parser would
    pass through unchanged. Building the items directly keeps a line lent to the
    live path cheap; the equality with the wire parser's items is part of what
    ``tests/test_fastreplay.py`` proves.
    """
    cart = record.cart
    if type(cart) is tuple:
        return cart
    decoded = json.loads(cart) if type(cart) is str else cart
    returned = record.returned or itertools.repeat(0)
    return tuple(
        CartItem(**item, returned_quantity=units)
        for item, units in zip(decoded, returned, strict=False)
    )


def _same_cart(record: SessionRecord, cart: str | list[dict[str, Any]]) -> bool:
    """Whether the cart edit ``cart`` leaves the record's cart as it is.

    The live path's ``set_cart_items()`` is then no update (see ``_cart.same``).
    Two compact texts are compared piece by piece, and only the pieces whose
    texts differ are decoded (``7.5`` and ``7.50`` are the same price).
    """
    old = record.cart
    if record.returned is not None:
        return False  # units were returned; the edit's items have none
    if type(old) is str and type(cart) is str:
        if old == cart:
            return True
        # Both were proved plain, so "},{" separates their items exactly.
        before, after = old[2:-2].split("},{"), cart[2:-2].split("},{")
        return len(before) == len(after) and all(
            a == b or same(json.loads(f"{{{a}}}"), json.loads(f"{{{b}}}"))
            for a, b in zip(before, after, strict=True)
        )
    edited = SessionRecord(record.state, cart, record.created)
    return same(_cart_items(record), _cart_items(edited))


_PLAIN_FIELDS: Final = ("sku", "name", "quantity", "price", "category")


def _plain_cart(
    items: tuple[CartItem, ...],
) -> tuple[list[dict[str, Any]] | tuple[CartItem, ...], tuple[int, ...] | None]:
    """The cart as plain item objects and returned units, when every item is plain.

    Keeping plain items as JSON lets later returns stay on the fast path.
    """
    plain: list[dict[str, Any]] = []
    for item in items:
        fields = {name: getattr(item, name) for name in _PLAIN_FIELDS}
        if CartItem(**fields, returned_quantity=item.returned_quantity) != item:
            return items, None
        plain.append({name: value for name, value in fields.items() if value is not None})
    returned = tuple(item.returned_quantity for item in items)
    return plain, returned if any(returned) else None


class SessionView(MutableMapping[str, "CustomerSession"]):
    """:attr:`Replayer.sessions`: records become sessions when first read.

    A record read through the view is replaced by the session built from it, so
    the caller holds the one object that later events change (on the fast path,
    a line naming it then goes to the live path). While the fast path lends a line
    to the live path, :attr:`lent` notes every record it turned into a session and
    every session it added, so the engine can put them back as records.
    """

    __slots__ = ("entries", "lent", "session_class", "workflow")

    def __init__(self, session_class: type[CustomerSession], workflow: Workflow) -> None:
        """An empty view; sessions are built as ``session_class`` bound to ``workflow``.

        The view keeps no reference to its replayer, so a replayer and its records
        are freed as soon as the replayer is dropped (no reference cycle).
        """
        self.session_class = session_class
        self.workflow = workflow
        self.entries: dict[str, CustomerSession | SessionRecord] = {}
        self.lent: list[tuple[str, SessionRecord | None]] | None = None

    def __getitem__(self, key: str) -> CustomerSession:
        """The session ``key``, built from its record on first read."""
        entry = self.entries[key]
        if type(entry) is not SessionRecord:
            return entry  # type: ignore[return-value] # not a record, so a session
        session = self.materialize(key, entry)
        self.entries[key] = session
        if self.lent is not None:
            self.lent.append((key, entry))
        return session

    def __setitem__(self, key: str, session: CustomerSession) -> None:
        """Keep ``session`` as ``key``."""
        if self.lent is not None:
            self.lent.append((key, None))
        self.entries[key] = session

    def __delitem__(self, key: str) -> None:
        """Forget the session ``key``."""
        del self.entries[key]

    def __contains__(self, key: object) -> bool:
        """Whether there is a session ``key`` (nothing is built)."""
        return key in self.entries

    def __iter__(self) -> Iterator[str]:
        """The integration ids, in the order the sessions were created."""
        return iter(self.entries)

    def __len__(self) -> int:
        """How many sessions there are."""
        return len(self.entries)

    def __repr__(self) -> str:
        """Show the size, not the sessions (building them could take a while)."""
        return f"<sessions of a Replayer: {len(self.entries)}>"

    def state_counts(self) -> dict[str, int]:
        """Sessions per state value, without building any session."""
        return dict(Counter(str(entry.state) for entry in self.entries.values()))

    def materialize(self, integration_id: str, record: SessionRecord) -> CustomerSession:
        """The session ``record`` stands for, through :meth:`CustomerSession.restore`.

        ``restore`` checks every field and that the history is a chain of edges of
        the table ending in the record's state.
        """
        return self.session_class.restore(
            state=State(record.state),
            update_count=record.update_count,
            history=tuple(map(_transition, record.history)),
            integration_id=integration_id,
            workflow=self.workflow,
            profile_id=record.profile_id,
            coupon=record.coupon,
            referral=record.referral,
            cart_items=_cart_items(record),
            identifiers=record.identifiers,
            attributes=record.attributes,
            additional_costs=record.additional_costs,
            created=record.created,
            updated=record.updated,
        )

    def compact(self, session: CustomerSession) -> SessionRecord | CustomerSession:
        """``session`` as a record, or ``session`` itself when a record cannot hold it."""
        if (
            type(session) is not self.session_class
            or session.workflow is not self.workflow
            or session.first_session is not True
            or session.discounts
            or session.application_id != 0
        ):
            return session
        record = SessionRecord(session.state.value, (), session.created)
        record.cart, record.returned = _plain_cart(session.cart_items)
        record.profile_id = session.profile_id
        record.coupon = session.coupon
        record.referral = session.referral
        record.identifiers = session.identifiers
        record.attributes = session.attributes
        record.additional_costs = session.additional_costs
        record.updated = session.updated
        record.update_count = session.update_count
        record.history = session.history
        return record


# -- the compact form of the examples, recognized without decoding ------------------

# A character a JSON string may hold unescaped (what decodes to itself) and a session's
# text may hold: not NUL, not a lone surrogate (see ``customer_session._cart.is_text``).
_CHAR: Final = r'[^"\\\x00-\x1f\ud800-\udfff]'
# No exponent and at most 15 integer digits: always a finite int or float.
_NUMBER: Final = r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,17})?"
# One digit per quantity keeps a cart of MAX_CART_ITEMS within MAX_UNITS.
_MAX_DIGIT: Final = min(9, MAX_UNITS // MAX_CART_ITEMS)
if _MAX_DIGIT < 1:  # pragma: no cover - fails at import, never later
    raise ImportError("MAX_UNITS // MAX_CART_ITEMS must be at least 1 for the fast replay")
_WORD: Final = r"[a-z_]{1,32}"
_ITEM_BODY: Final = re.compile(
    rf'"sku":"{_CHAR}+"(?:,"name":"{_CHAR}*")?,"quantity":[1-{_MAX_DIGIT}]'
    rf'(?:,"price":{_NUMBER})?(?:,"category":"{_CHAR}*")?'
)
"""A plain cart item object in compact form, without its braces."""
# The cart's extent only ("[]" or "[{...}]" with no "]" inside): its items are proved
# plain one by one (FastReplay._plain_cart_text), which caches the items it has seen.
_CART: Final = r"\[(?:\{[^\]]*\})?\]"
_MAX_KNOWN_ITEMS: Final = 100_000
_RETURNED: Final = r'\{"position":(?:0|[1-9][0-9]{0,8}),"quantity":[1-9][0-9]{0,8}\}'
_COMPACT: Final = re.compile(
    rf'\{{"at":"(?P<at>{_CHAR}{{1,64}})","session":"(?P<session>{_CHAR}{{1,{MAX_INTEGRATION_ID_LENGTH}}})","op":"(?:'
    rf'(?P<create>create","customerSession":\{{"state":"(?P<initial>{_WORD})",'
    rf'"cartItems":(?P<created_cart>{_CART})(?:,"profileId":"(?P<profile>{_CHAR}*)")?'
    rf'(?:,"couponCodes":\[(?:"(?P<coupon>{_CHAR}{{1,{MAX_CODE_LENGTH}}})")?\])?\}})'
    rf'|(?P<update>update","customerSession":\{{(?:"cartItems":(?P<cart>{_CART})'
    rf'(?:,"state":"(?P<target>{_WORD})")?|"state":"(?P<target_only>{_WORD})")\}})'
    rf'|(?P<ret>return","return":\{{"returnedCartItems":\[(?P<items>{_RETURNED}(?:,{_RETURNED})*)\]\}})'
    rf'|(?P<reopen>reopen")'
    rf")\}}[ \t\n\r]*"
)
"""A line in compact form whose event is plain, once its cart's items are; the op's
group is ``lastindex``."""
# Positions in ``match.groups()``: one call that is cheaper than reading groups by name.
(
    _G_AT,
    _G_SESSION,
    _G_INITIAL,
    _G_CREATED_CART,
    _G_PROFILE,
    _G_COUPON,
    _G_CART,
    _G_TARGET,
    _G_TARGET_ONLY,
    _G_ITEMS,
) = (
    _COMPACT.groupindex[name] - 1
    for name in (
        "at",
        "session",
        "initial",
        "created_cart",
        "profile",
        "coupon",
        "cart",
        "target",
        "target_only",
        "items",
    )
)
_RETURNED_PAIR: Final = re.compile(r'"position":([0-9]+),"quantity":([0-9]+)')

# -- the whitelist of decoded events -------------------------------------------------

_ITEM_KEYS: Final = frozenset(_PLAIN_FIELDS)
_NUMBER_TYPES: Final = frozenset({int, float})
_CREATE_BODY: Final = frozenset({"state", "cartItems", "profileId", "couponCodes"})
_ABSENT: Final = object()


def _is_plain_cart(cart: object) -> bool:
    """Whether a decoded ``cartItems`` holds only plain, valid items within the limits."""
    if type(cart) is not list or len(cart) > MAX_CART_ITEMS:
        return False
    units = 0
    value = 0.0
    for item in cart:
        if type(item) is not dict or not item.keys() <= _ITEM_KEYS:
            return False
        sku, quantity = item.get("sku"), item.get("quantity")
        if type(sku) is not str or not sku or type(quantity) is not int or quantity < 1:
            return False
        if not is_text(sku) or not _plain_details(item):
            return False
        units += quantity
        price = item.get("price")
        if price is not None:
            line = price * quantity
            if not is_number(line):  # the live path names the item and its price
                return False
            value += line  # a finite float or an int a float holds: never raises
    # A total beyond the float range is refused by the live path, with its path.
    return units <= MAX_UNITS and math.isfinite(value)


def _plain_details(item: dict[str, Any]) -> bool:
    """Whether an item's optional name, price and category have their exact types.

    Texts must be valid (:func:`is_text`) and a price a finite float (an integer too
    large for one is not): what the live path refuses goes to it, to be worded there.
    """
    for key in ("name", "category"):
        if key in item and (type(item[key]) is not str or not is_text(item[key])):
            return False
    if "price" not in item:
        return True
    price = item["price"]
    return type(price) in _NUMBER_TYPES and is_number(price)


def _coupon(body: dict[str, Any]) -> str | Literal[_Live.LINE] | None:
    """The coupon of a create body's ``couponCodes`` (absent: none), or ``_LIVE``."""
    codes = body.get("couponCodes", _ABSENT)
    if codes is _ABSENT:
        return None
    if type(codes) is not list or len(codes) > 1:
        return _LIVE
    if not codes:
        return None
    code = codes[0]
    # An empty code is refused by the live path, which words why.
    return (
        code if type(code) is str and 0 < len(code) <= MAX_CODE_LENGTH and is_text(code) else _LIVE
    )


def _moment(text: str) -> datetime | None:
    """The event's timestamp as the live path reads it, or ``None`` when it is invalid."""
    try:
        if _canonical(text) is not None:
            return _fromisoformat(text)  # what ``_timestamp`` returns for it, read faster
        return _timestamp(text)
    except ValueError:  # an impossible date too (2026-02-30)
        return None


# -- the engine ---------------------------------------------------------------------


class FastReplay:
    """The fast path of one replayer: decides what it can, lends the rest to the live path.

    Args:
        replayer: The replayer whose sessions (records) and live path are used.
    """

    def __init__(self, replayer: Replayer) -> None:
        """Compile the table of ``replayer``'s specification."""
        spec = replayer.session_class.specification
        self._replayer = replayer
        self._view: SessionView = replayer._view  # noqa: SLF001 - the view is kept for this engine
        self._entries = self._view.entries
        self._spec = spec
        self._table: dict[tuple[str, str], str] = {
            (edge.source.value, edge.trigger.value): edge.destination.value for edge in spec.edges
        }
        # An update's target state names the trigger it fires.
        self._targets = {state.value: trigger.value for state, trigger in _TARGETS.items()}
        self._triggers = frozenset(trigger.value for trigger in spec.triggers)
        self._initial = frozenset(state.value for state in spec.initial_states)
        self._reopens = Trigger.REOPEN in spec.triggers
        self._known_items: set[str] = set()
        index = _COMPACT.groupindex
        self._compact_ops: Mapping[int, Callable[[int, re.Match[str]], _Outcome]] = {
            index["create"]: self._compact_create,
            index["update"]: self._compact_update,
            index["ret"]: self._compact_return,
            index["reopen"]: self._compact_reopen,
        }
        self._decoded_ops: Mapping[
            str, Callable[[int, str, datetime, dict[str, Any]], _Outcome]
        ] = {
            "create": self._decoded_create,
            "update": self._decoded_update,
            "return": self._decoded_return,
            "reopen": self._decoded_reopen,
        }

    def run(self, lines: Iterable[str]) -> ReplayReport:
        """Apply every line; return the same report as the live path."""
        report = ReplayReport()
        refused = report.refused
        applied = 0
        number = 0
        recognize = _COMPACT.fullmatch
        compact_ops = self._compact_ops
        for number, line in enumerate(lines, start=1):
            try:
                match = recognize(line)
            except TypeError:  # no str: the live path refuses it the same way
                refused.append(_not_text(number, line))
                continue
            if match is not None:
                outcome = compact_ops[match.lastindex](number, match)  # type: ignore[index] # an op group always matched
            elif not line or line.isspace():
                continue
            else:
                outcome = self._decoded(number, line)
            if outcome is _LIVE:
                outcome = self._lend(number, line)
            if outcome is None:
                applied += 1
            else:
                refused.append(outcome)
        report.lines = number
        report.applied = applied
        report.states = self._view.state_counts()
        return report

    # -- the live path, for one line --------------------------------------------------

    def _lend(self, number: int, line: str) -> RefusedLine | None:
        """Apply ``line`` on the live path; keep what it built as records again."""
        view = self._view
        lent: list[tuple[str, SessionRecord | None]] = []
        view.lent = lent
        try:
            refusal = self._replayer.apply(number, line)
        finally:
            view.lent = None
        entries = self._entries
        for key, record in lent:
            if refusal is None:
                entries[key] = view.compact(entries[key])  # type: ignore[arg-type] # lent entries are sessions
            elif record is not None:
                entries[key] = record  # a refused event changed nothing
        return refusal

    def _refusal(
        self, number: int, op: str, integration_id: str, error: CustomerSessionError
    ) -> RefusedLine:
        """The refused line, worded by the error the live path raises for it."""
        return RefusedLine(number, integration_id, op, _reason(error))

    def _illegal(
        self, number: int, op: str, integration_id: str, state: str, trigger: str
    ) -> RefusedLine:
        """The refusal of a move the table forbids, worded by ``IllegalTransition``."""
        source = State(state)
        error = IllegalTransition(
            trigger=Trigger(trigger),
            state=source,
            integration_id=integration_id,
            allowed=self._spec.allowed(source),
        )
        return self._refusal(number, op, integration_id, error)

    def _missing(self, number: int, op: str, integration_id: str, entry: object) -> _Outcome:
        """The verdict on an event whose session has no record: unknown, or a session object."""
        if entry is None:
            return self._refusal(number, op, integration_id, _unknown_session(integration_id))
        return _LIVE  # a session read through the view: the live path changes it in place

    # -- plain events ------------------------------------------------------------------

    def _create(  # noqa: PLR0917 - the hot path; keywords would cost
        self,
        number: int,
        integration_id: str,
        now: datetime,
        state: str,
        cart: str | list[dict[str, Any]],
        profile_id: str | None,
        coupon: str | None,
    ) -> _Outcome:
        if integration_id in self._entries:
            return self._refusal(number, "create", integration_id, _already_exists(integration_id))
        if state not in self._initial:
            return _LIVE
        self._entries[integration_id] = SessionRecord(state, cart, now, profile_id, coupon)
        return None

    def _update(
        self,
        number: int,
        integration_id: str,
        now: datetime,
        cart: str | list[dict[str, Any]] | None,
        target: str | None,
    ) -> _Outcome:
        record = self._entries.get(integration_id)
        if type(record) is not SessionRecord:
            return self._missing(number, "update", integration_id, record)
        state = record.state
        if target is None and cart is not None and state == _OPEN:
            # The most common event of all, a cart edit of an open session.
            if not _same_cart(record, cart):
                record.cart = cart
                record.returned = None
                record.update_count += 1
                record.updated = max(now, record.updated)
            return None
        move = self._move(number, integration_id, state, cart is not None, target)
        if not isinstance(move, tuple):
            return move
        trigger, destination = move
        if cart is None and destination is None:
            return None  # an empty update, or an open session staying open: no change
        # Like the session's clock: a change is never dated before the last one.
        stamp = max(now, record.updated)
        if cart is not None and not _same_cart(record, cart):
            record.cart = cart
            record.returned = None
            record.update_count += 1
        elif destination is None:
            return None  # a cart edit that changes nothing, and no move: no update
        if destination is not None:
            record.history += ((trigger, state, destination, stamp, ()),)
            record.state = destination
            record.update_count += 1
        record.updated = stamp
        return None

    def _move(  # noqa: PLR0911 - one return per verdict, in the live path's order
        self, number: int, integration_id: str, state: str, edits: bool, target: str | None
    ) -> tuple[str, str] | tuple[None, None] | RefusedLine | Literal[_Live.LINE]:
        """The trigger and destination of an update, or its refusal, or ``_LIVE``.

        The checks come in the live path's order: the target's spelling, the cart
        edit (open sessions only), then the move.
        """
        if target is not None and target not in _STATE_VALUES:
            return _LIVE  # the live path words the unknown state
        if edits and state != _OPEN:
            error = SessionNotEditable(
                operation=_SET_CART_ITEMS, state=State(state), integration_id=integration_id
            )
            return self._refusal(number, "update", integration_id, error)
        if target is None:
            return None, None
        trigger = self._targets.get(target)
        if trigger is None or target == state:
            refusal = _staying(State(state), State(target))
            if refusal is None:
                return None, None
            return self._refusal(number, "update", integration_id, refusal)
        if trigger not in self._triggers:
            return _LIVE  # the live path words the unknown trigger
        destination = self._table.get((state, trigger))
        if destination is None:
            return self._illegal(number, "update", integration_id, state, trigger)
        return trigger, destination

    def _return(
        self, number: int, integration_id: str, now: datetime, items: list[tuple[int, int]]
    ) -> _Outcome:
        record = self._entries.get(integration_id)
        if type(record) is not SessionRecord:
            return self._missing(number, "return", integration_id, record)
        if len(items) > 1 and len({position for position, _ in items}) != len(items):
            return _LIVE  # the live path's reader refuses a repeated position, state aside
        state = record.state
        destination = self._table.get((state, _RETURN))
        if destination is None:
            return self._illegal(number, "return", integration_id, state, _RETURN)
        returned = _returned_after(record, items)
        if returned is None:
            return _LIVE  # the live path lists what does not fit the cart
        stamp = max(now, record.updated)
        record.history += ((_RETURN, state, destination, stamp, tuple(items)),)
        record.returned = returned
        record.state = destination
        record.updated = stamp
        record.update_count += 1
        return None

    def _reopen(self, number: int, integration_id: str, now: datetime) -> _Outcome:
        record = self._entries.get(integration_id)
        if type(record) is not SessionRecord:
            return self._missing(number, "reopen", integration_id, record)
        if not self._reopens:
            return self._refusal(number, "reopen", integration_id, _reopen_disabled())
        state = record.state
        destination = self._table.get((state, _REOPEN))
        if destination is None:
            return self._illegal(number, "reopen", integration_id, state, _REOPEN)
        stamp = max(now, record.updated)
        record.history += ((_REOPEN, state, destination, stamp, ()),)
        record.state = destination
        record.updated = stamp
        record.update_count += 1
        return None

    # -- lines in compact form -------------------------------------------------------

    def _plain_cart_text(self, cart: str) -> bool:
        """Whether a compact ``cartItems`` text holds only plain items within the limits.

        ``cart`` is ``[]`` or ``[{`` + pieces joined by ``},{`` + ``}]``. When each
        ``{piece}`` is a plain item (it matches :data:`_ITEM_BODY` whole), the text is
        exactly an array of plain items; a string holding ``},{`` only makes some
        piece fail, and the line is then decoded instead. Items repeat from one
        cart edit to the next, so the pieces already proved are remembered.
        """
        if cart == "[]":
            return True
        pieces = cart[2:-2].split("},{")
        if len(pieces) > MAX_CART_ITEMS:
            return False
        known = self._known_items
        if known.issuperset(pieces):
            return True
        for piece in pieces:
            if piece not in known:
                if _ITEM_BODY.fullmatch(piece) is None:
                    return False
                if len(known) >= _MAX_KNOWN_ITEMS:
                    known.clear()
                known.add(piece)
        return True

    def _compact_create(self, number: int, match: re.Match[str]) -> _Outcome:
        groups = match.groups()
        now = _moment(groups[_G_AT])
        if now is None:
            return _LIVE
        if not self._plain_cart_text(groups[_G_CREATED_CART]):
            return self._decoded(number, match.string)
        return self._create(
            number,
            groups[_G_SESSION],
            now,
            groups[_G_INITIAL],
            groups[_G_CREATED_CART],
            groups[_G_PROFILE],
            groups[_G_COUPON],
        )

    def _compact_update(self, number: int, match: re.Match[str]) -> _Outcome:
        groups = match.groups()
        now = _moment(groups[_G_AT])
        if now is None:
            return _LIVE
        cart = groups[_G_CART]
        if cart is not None and not self._plain_cart_text(cart):
            return self._decoded(number, match.string)
        target = groups[_G_TARGET] or groups[_G_TARGET_ONLY]
        return self._update(number, groups[_G_SESSION], now, cart, target)

    def _compact_return(self, number: int, match: re.Match[str]) -> _Outcome:
        groups = match.groups()
        now = _moment(groups[_G_AT])
        if now is None:
            return _LIVE
        items = [(int(p), int(q)) for p, q in _RETURNED_PAIR.findall(groups[_G_ITEMS])]
        return self._return(number, groups[_G_SESSION], now, items)

    def _compact_reopen(self, number: int, match: re.Match[str]) -> _Outcome:
        groups = match.groups()
        now = _moment(groups[_G_AT])
        if now is None:
            return _LIVE
        return self._reopen(number, groups[_G_SESSION], now)

    # -- decoded lines ---------------------------------------------------------------

    def _decoded(self, number: int, line: str) -> _Outcome:
        """Decide a line that is not in compact form, from its decoded JSON.

        It is decoded as the live path decodes it (``replay._decode``), so a line
        that path refuses whole (malformed, a repeated key, nested too deep even in
        an envelope key no operation reads) is refused here alike.
        """
        event = _decode(number, line)
        if type(event) is RefusedLine:
            return event
        if type(event) is not dict:
            return _LIVE
        integration_id, op, at = event.get("session"), event.get("op"), event.get("at")
        if (
            type(integration_id) is not str
            or not integration_id
            or not is_text(integration_id)
            or type(at) is not str
        ):
            return _LIVE
        decide = self._decoded_ops.get(op) if type(op) is str else None
        now = _moment(at)
        if decide is None or now is None:
            return _LIVE
        return decide(number, integration_id, now, event)

    def _decoded_create(
        self, number: int, integration_id: str, now: datetime, event: dict[str, Any]
    ) -> _Outcome:
        body = event.get("customerSession")
        if type(body) is not dict or not body.keys() <= _CREATE_BODY:
            return _LIVE
        state = body.get("state", _OPEN)
        cart = body.get("cartItems", [])
        profile_id = body.get("profileId")
        coupon = _coupon(body)
        if (
            len(integration_id) > MAX_INTEGRATION_ID_LENGTH
            or type(state) is not str
            or not _is_plain_cart(cart)
            or ("profileId" in body and (type(profile_id) is not str or not is_text(profile_id)))
            or coupon is _LIVE
        ):
            return _LIVE
        return self._create(number, integration_id, now, state, cart, profile_id, coupon)

    def _decoded_update(
        self, number: int, integration_id: str, now: datetime, event: dict[str, Any]
    ) -> _Outcome:
        body = event.get("customerSession")
        if type(body) is not dict:
            return _LIVE
        cart = body.get("cartItems", _ABSENT)
        target = body.get("state", _ABSENT)
        if len(body) != (cart is not _ABSENT) + (target is not _ABSENT):
            return _LIVE  # another key: an edit the fast path leaves to the live one
        if cart is _ABSENT:
            cart = None
        elif not _is_plain_cart(cart):
            return _LIVE
        if target is _ABSENT:
            target = None
        elif type(target) is not str:
            return _LIVE
        return self._update(number, integration_id, now, cart, target)

    def _decoded_return(
        self, number: int, integration_id: str, now: datetime, event: dict[str, Any]
    ) -> _Outcome:
        body = event.get("return")
        if type(body) is not dict or len(body) != 1:
            return _LIVE
        entries = body.get("returnedCartItems")
        if type(entries) is not list or not entries:
            return _LIVE
        items: list[tuple[int, int]] = []
        for entry in entries:
            if type(entry) is not dict or len(entry) != 2:  # noqa: PLR2004 - position and quantity
                return _LIVE
            position, quantity = entry.get("position"), entry.get("quantity")
            if (
                type(position) is not int
                or position < 0
                or type(quantity) is not int
                or quantity < 1
            ):
                return _LIVE
            items.append((position, quantity))
        return self._return(number, integration_id, now, items)

    def _decoded_reopen(
        self, number: int, integration_id: str, now: datetime, _event: dict[str, Any]
    ) -> _Outcome:
        return self._reopen(number, integration_id, now)


def _returned_after(record: SessionRecord, items: list[tuple[int, int]]) -> tuple[int, ...] | None:
    """The units returned per position after ``items``, or ``None`` if they do not fit."""
    cart = record.cart
    if type(cart) is str:
        cart = json.loads(cart)  # not kept: a text is not tracked by the collector
    elif type(cart) is not list:
        return None  # CartItem objects: the live path checks those
    returned = list(record.returned) if record.returned is not None else [0] * len(cart)
    seen: set[int] = set()
    for position, quantity in items:
        if position >= len(cart) or position in seen:
            return None
        seen.add(position)
        if quantity > cart[position]["quantity"] - returned[position]:
            return None
        returned[position] += quantity
    return tuple(returned)
