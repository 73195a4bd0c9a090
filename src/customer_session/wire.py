"""Talon.One JSON for customer sessions: the v1 document, v2 request bodies, v2 responses.

* :func:`to_dict` / :func:`to_json` write a session as Talon.One's v1
  ``CustomerSession`` (camelCase keys, RFC 3339 timestamps in UTC with a ``Z``);
  :func:`from_dict` / :func:`from_json` read one back through
  :meth:`CustomerSession.restore`, so a document in any state loads and nothing
  invalid does. With ``include_history=True`` the transition history travels in
  the ``"x-customerSession"`` extension, and the round trip is lossless.
* :func:`update_request` and :func:`return_request` build the bodies of
  ``PUT /v2/customer_sessions/{id}`` and ``POST /v2/customer_sessions/{id}/returns``.
* :func:`from_v2_response` reads the ``CustomerSessionV2`` that Talon.One answers with.

Every reader raises one :class:`~customer_session.exceptions.ValidationError`
listing every problem with its JSON path (``$.cartItems[2].quantity``), and no
other exception, whatever the input.

The plumbing is a ``cattrs`` converter with strict hooks: a JSON value is never
coerced (``"3"`` is not a quantity, ``1.0`` is not an integer, ``null`` is not a
string), and ``cattrs``' detailed validation collects every problem at once.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import NoneType, UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    overload,
)
from uuid import UUID

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from customer_session._cart import (
    EMPTY_MAPPING,
    MAX_CODE_LENGTH,
    MAX_IDENTIFIERS,
    MAX_INTEGER,
    MAX_INTEGRATION_ID_LENGTH,
    MAX_NESTING,
    MIN_INTEGER,
    TOO_DEEP,
    AdditionalCost,
    CartItem,
    PriceDetail,
    Product,
    ReturnedItem,
    Unreadable,
    cart_problems,
    cart_total,
    costs_total,
    freeze_mapping,
    is_int,
    is_number,
    is_text,
    read_entries,
    returned_list_problems,
    text_problem,
    thaw,
)
from customer_session._records import TransitionRecord
from customer_session._show import shown, shown_number, unreadable
from customer_session._spec import State, Trigger
from customer_session.exceptions import Problem, ValidationError
from customer_session.model import CustomerSession, _check_session_class

if TYPE_CHECKING:
    from customer_session.hooks import Workflow

__all__ = [
    "EXTENSION_KEY",
    "RETURN_RESPONSE_CONTENT",
    "TOTAL_TOLERANCE",
    "UPDATE_RESPONSE_CONTENT",
    "from_dict",
    "from_json",
    "from_v2_response",
    "new_session_fields",
    "return_request",
    "returned_items_from_json",
    "to_dict",
    "to_json",
    "update_request",
]

_S = TypeVar("_S", bound=CustomerSession)
_Hook = Callable[[Any, Any], Any]

EXTENSION_KEY: Final = "x-customerSession"
"""The key of this library's extension in a v1 document (it holds ``history``).

Talon.One and the official SDKs ignore it; only :func:`to_dict` with
``include_history=True`` writes it.
"""

TOTAL_TOLERANCE: Final = 0.005
"""How far a document's ``total`` (and v2 sub-totals) may be from the cart's value."""

UPDATE_RESPONSE_CONTENT: Final = frozenset(
    {
        "customerSession",
        "customerProfile",
        "coupons",
        "triggeredCampaigns",
        "referral",
        "loyalty",
        "event",
        "awardedGiveaways",
        "ruleFailureReasons",
        "previousReturns",
    }
)
"""The ``responseContent`` values a session update accepts."""

RETURN_RESPONSE_CONTENT: Final = frozenset(
    {
        "customerSession",
        "customerProfile",
        "coupons",
        "triggeredCampaigns",
        "referral",
        "loyalty",
        "event",
        "previousReturns",
    }
)
"""The ``responseContent`` values a return accepts."""


# -- JSON paths -------------------------------------------------------------------

_SHORTHAND: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _member(path: str, key: object) -> str:
    """``path`` extended by an object member, in RFC 9535 notation."""
    if isinstance(key, str) and _SHORTHAND.fullmatch(key):
        return f"{path}.{key}"
    if isinstance(key, str) and is_text(key):
        escaped = key.replace("\\", "\\\\").replace("'", "\\'")
        if not escaped.isprintable():  # a control character must not reach a terminal raw
            escaped = "".join(map(_escaped_character, escaped))
        return f"{path}['{escaped}']"
    return f"{path}[{shown(key)}]"


# RFC 9535's short escapes; every other character that is not printable is \uXXXX.
_SHORT_ESCAPES: Final = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped_character(character: str) -> str:
    """``character`` in an RFC 9535 string literal: as it is if printable, else escaped."""
    if character.isprintable():
        return character
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if code < 0x10000:  # noqa: PLR2004 - the Basic Multilingual Plane, one \u escape
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes such a character
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _element(path: str, index: int) -> str:
    return f"{path}[{index}]"


# -- strict scalar hooks -----------------------------------------------------------


class _Invalid(ValueError):
    """Values the wire format does not allow, with paths relative to where it is raised."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems

    @classmethod
    def here(cls, message: str) -> _Invalid:
        return cls([("", message)])


def _describe(value: object) -> str:  # noqa: PLR0911 - one return per JSON type reads best
    """A JSON-flavoured description of ``value`` for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return (
            f"number {shown(value)}"
            if is_number(value) or isinstance(value, float)
            else shown(value)
        )
    if isinstance(value, str):
        return f"string {shown(value):.60}"
    if isinstance(value, list | tuple):
        return f"array of {len(value)}"
    if isinstance(value, Mapping):
        return "object"
    return f"{type(value).__name__} {shown(value):.60}"


def _text(
    *, min_length: int = 0, max_length: int | None = None, empty: str = "must not be empty"
) -> _Hook:
    """A hook for strings of ``min_length`` to ``max_length`` characters.

    ``empty`` is the problem of a string shorter than ``min_length``.
    """

    def structure(value: object, _: object) -> str:
        if not isinstance(value, str):
            raise _Invalid.here(f"must be a string, got {_describe(value)}")
        if len(value) < min_length:
            raise _Invalid.here(empty)
        if max_length is not None and len(value) > max_length:
            raise _Invalid.here(f"{len(value)} characters; at most {max_length} are allowed")
        if not is_text(value):
            raise _Invalid.here(text_problem(value))
        return value

    return structure


def _integer(*, minimum: int = MIN_INTEGER) -> _Hook:
    """A hook for 64-bit integers (not booleans, not ``1.0``) of at least ``minimum``."""

    def structure(value: object, _: object) -> int:
        if not is_int(value):
            raise _Invalid.here(f"must be an integer, got {_describe(value)}")
        assert isinstance(value, int)  # noqa: S101 - narrowed by is_int
        if value < minimum:
            lower = "" if minimum == MIN_INTEGER else f" >= {minimum}"
            raise _Invalid.here(f"must be an integer{lower}, got {shown(value)}")
        if value > MAX_INTEGER:
            raise _Invalid.here(f"must be at most {MAX_INTEGER} (64 bits), got {shown(value)}")
        return value

    return structure


def _number(value: object, _: object) -> float:
    # Integers stay integers, so a document's ``3`` is written back as ``3``.
    if not is_number(value):
        got = shown_number(value) if is_int(value) else _describe(value)
        raise _Invalid.here(f"must be a finite number, got {got}")
    return value  # type: ignore[return-value] # is_number narrows at run time


def _boolean(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid.here(f"must be a boolean, got {_describe(value)}")
    return value


_ANY_TEXT: Final = _text()


def _uuid_text(value: object, _: object) -> str:
    # The official SDK's to_dict() gives UUID objects where the wire has strings.
    if isinstance(value, UUID):
        return str(value)
    return _ANY_TEXT(value, None)  # type: ignore[no-any-return] # _text returns str


_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    # An offset's hour is 00-23 and its minute 00-59 (RFC 3339's time-numoffset).
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)


# What this library writes; ``datetime.fromisoformat`` reads it 15 times faster.
_CANONICAL: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z"
)


def _parse_timestamp(text: str) -> datetime:
    """An RFC 3339 ``date-time`` as an aware UTC datetime (digits past µs are cut).

    Raises:
        ValueError: ``text`` is not an RFC 3339 date-time Python can represent.
        OverflowError: ``text`` is one, but its offset moves it out of the years 1
            to 9999 in UTC (see :func:`_outside_years`).
    """
    if _CANONICAL.fullmatch(text):
        return datetime.fromisoformat(text)
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 date-time (e.g. 2026-03-02T10:15:00Z)")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    zone: timezone = UTC
    if sign is not None:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, zone
    )
    return moment if zone is UTC else moment.astimezone(UTC)


def _format_timestamp(moment: datetime) -> str:
    """``moment`` as RFC 3339 in UTC with a ``Z`` (microseconds only when set)."""
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def _outside_years(value: object) -> str:
    """Why a date-time ``value`` is refused whose time in UTC ``datetime`` cannot hold.

    Valid as written (an offset moves it past year 1 or year 9999), so it is named
    as such, not as an invalid date-time nor in ``OverflowError``'s own words.
    """
    return f"{shown(value)} is outside the years 1 to 9999 once converted to UTC"


def _timestamp(value: object, _: object) -> datetime:
    if isinstance(value, str):
        try:
            return _parse_timestamp(value)
        except OverflowError:
            raise _Invalid.here(_outside_years(value)) from None
        except ValueError as exc:
            raise _Invalid.here(f"{shown(value):.60} is not a valid date-time: {exc}") from None
    # The official SDK's to_dict() gives datetime objects; accept them when aware.
    if isinstance(value, datetime) and value.utcoffset() is not None:
        try:
            return value if value.tzinfo is UTC else value.astimezone(UTC)
        except OverflowError:
            raise _Invalid.here(_outside_years(value)) from None
    raise _Invalid.here(f"must be an RFC 3339 date-time string, got {_describe(value)}")


def _enum(kind: type[State | Trigger]) -> _Hook:
    choices = ", ".join(member.value for member in kind)

    def structure(value: object, _: object) -> State | Trigger:
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise _Invalid.here(f"must be one of {choices}, got {_describe(value)}")

    return structure


def _json_copy(  # noqa: PLR0911 - one return per JSON type reads best
    value: object, path: str, problems: list[tuple[str, str]], level: int = 1
) -> Any:
    """A plain copy of a JSON value; what is not JSON goes to ``problems``.

    ``level`` is how deep ``value`` is: an array or object deeper than
    ``MAX_NESTING`` is a problem (and not copied), as it is for the model.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not is_text(value):
            problems.append((path, text_problem(value)))
        return value
    if isinstance(value, int | float):
        if not is_number(value):
            problems.append((path, f"must be a finite number, got {shown_number(value)}"))
        return value
    if isinstance(value, list | tuple | Mapping) and level > MAX_NESTING:
        problems.append((path, TOO_DEEP))
        return None
    if isinstance(value, list | tuple):
        return [
            _json_copy(item, _element(path, i), problems, level + 1) for i, item in enumerate(value)
        ]
    if isinstance(value, Mapping):
        return _json_members(value, path, problems, level)
    problems.append((path, f"{_describe(value)} is not a JSON value"))
    return None


def _json_members(
    value: Mapping[Any, Any], path: str, problems: list[tuple[str, str]], level: int
) -> Any:
    """A plain copy of a JSON object at ``level`` (see :func:`_json_copy`); keys must be text."""
    copy: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, str):
            if not is_text(key):
                problems.append((_member(path, key), f"the key {text_problem(key)}"))
            copy[key] = _json_copy(item, _member(path, key), problems, level + 1)
        else:
            problems.append((path, f"key {shown(key)} is not a string"))
    return copy


def _json_object(value: object, _: object) -> dict[str, Any]:
    if not _is_object(value):
        raise _Invalid.here(f"must be an object, got {_describe(value)}")
    problems: list[tuple[str, str]] = []
    copy = _json_copy(value, "", problems)
    if problems:
        raise _Invalid(problems)
    return copy  # type: ignore[no-any-return] # a Mapping copies to a dict


def _non_null(hook: _Hook) -> _Hook:
    """``hook`` for an optional field: absent means ``None``, ``null`` is refused."""

    def structure(value: object, kind: object) -> Any:
        if value is None:
            raise _Invalid.here("must not be null (no field is nullable; leave the key out)")
        return hook(value, kind)

    return structure


# -- the converters ----------------------------------------------------------------

_WIRE_NAMES: Final = {
    "catalog_item_id": "catalogItemID",
    "internal_id": "id",
    "extension": EXTENSION_KEY,
}
_DERIVED_ITEM_KEYS: Final = ("position", "remainingQuantity")
# Cart item fields the server computes: never sent in requests, refused when read in one.
_READ_ONLY_ITEM_FIELDS: Final = (
    "returned_quantity",
    "catalog_item_id",
    "selected_price_type",
    "adjustment_reference_id",
    "adjustment_effective_from",
    "adjustment_effective_until",
    "prices",
)
# Keys of Talon.One's models that a CustomerSession has no field for.
_UNMODELLED_KEYS: Final = frozenset(
    {"storeIntegrationId", "evaluableCampaignIds", "loyaltyCards", "experimentVariantAllocations"}
)


def _wire_name(name: str) -> str:
    """The camelCase key of attribute ``name`` (``catalog_item_id`` -> ``catalogItemID``).

    A private slot (``_quantity``) is keyed by its public name.
    """
    name = name.removeprefix("_")
    special = _WIRE_NAMES.get(name)
    if special is not None:
        return special
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_READ_ONLY_ITEM_KEYS: Final = (
    *(_wire_name(name) for name in _READ_ONLY_ITEM_FIELDS),
    *_DERIVED_ITEM_KEYS,
)


def _is_object(value: object) -> bool:
    # ``isinstance(value, Mapping)`` goes through the ABC machinery; JSON gives dicts.
    return type(value) is dict or isinstance(value, Mapping)


def _object_hook(cls: type, generated: _Hook, allowed: frozenset[str] | None) -> _Hook:
    """A class hook that checks it was given an object with only ``allowed`` keys.

    Unknown keys are checked here rather than by ``cattrs`` so that a cart item may
    carry the keys :class:`_CartHook` checks (``position``, ``remainingQuantity``).
    """

    def structure(value: Any, kind: object) -> Any:
        if not _is_object(value):
            raise _Invalid.here(f"must be an object, got {_describe(value)}")
        extra = None if allowed is None else value.keys() - allowed
        if not extra:
            return generated(value, kind)
        unknown = ForbiddenExtraKeysError("", cls, extra)
        try:
            generated(value, kind)
        except ClassValidationError as exc:
            raise ClassValidationError(exc.message, [*exc.exceptions, unknown], cls) from None
        raise ClassValidationError(f"While structuring {cls.__name__}", [unknown], cls)

    return structure


def _is_optional(kind: object) -> bool:
    return get_origin(kind) in {Union, UnionType} and NoneType in get_args(kind)


@attrs.frozen(kw_only=True)
class _Extension:
    """This library's extension of a v1 document (``"x-customerSession"``)."""

    history: tuple[TransitionRecord, ...] = ()


@attrs.frozen(kw_only=True)
class _SessionV1:
    """Talon.One's v1 ``CustomerSession`` as it is read (required keys first)."""

    integration_id: str
    created: datetime
    application_id: int
    first_session: bool
    discounts: Mapping[str, float]
    updated: datetime
    update_count: int = 1  # seed-era documents lack it
    profile_id: str | None = None
    coupon: str | None = None
    referral: str | None = None
    state: State = State.OPEN
    cart_items: tuple[CartItem, ...] = ()
    identifiers: tuple[str, ...] = ()
    total: float | None = None
    attributes: Mapping[str, Any] = EMPTY_MAPPING
    additional_costs: Mapping[str, AdditionalCost] = EMPTY_MAPPING
    extension: _Extension | None = None


@attrs.frozen(kw_only=True)
class _SessionV2:
    """Talon.One's ``CustomerSessionV2`` response (required keys first)."""

    internal_id: int
    created: datetime
    integration_id: str
    application_id: int
    first_session: bool
    update_count: int
    total: float
    cart_item_total: float
    additional_cost_total: float
    updated: datetime
    profile_id: str | None = None
    store_integration_id: str | None = None
    evaluable_campaign_ids: tuple[int, ...] = ()
    coupon_codes: tuple[str, ...] = ()
    referral_code: str | None = None
    loyalty_cards: tuple[str, ...] = ()
    state: State = State.OPEN
    cart_items: tuple[CartItem, ...] = ()
    additional_costs: Mapping[str, AdditionalCost] = EMPTY_MAPPING
    identifiers: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = EMPTY_MAPPING
    cart_item_additional_cost_total: float | None = None


@attrs.frozen(kw_only=True)
class _NewSessionV2:
    """The ``customerSession`` of a session update request (``NewCustomerSessionV2``)."""

    profile_id: str | None = None
    state: State | None = None
    cart_items: tuple[CartItem, ...] = ()
    coupon_codes: tuple[str, ...] = ()
    referral_code: str | None = None
    additional_costs: Mapping[str, AdditionalCost] = EMPTY_MAPPING
    identifiers: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = EMPTY_MAPPING


@attrs.frozen(kw_only=True)
class _NewReturn:
    """The ``return`` of a return request (``NewReturn``)."""

    returned_cart_items: tuple[ReturnedItem, ...]


class _Reader:
    """A ``cattrs`` converter with strict hooks for every document class of this module.

    Args:
        forbid_extra_keys: Whether unknown keys are problems (v1 documents and
            requests) or ignored (v2 responses, which gain keys as the API evolves).
    """

    def __init__(self, *, forbid_extra_keys: bool) -> None:
        conv = cattrs.Converter(detailed_validation=True)
        self.converter = conv
        self._strict = forbid_extra_keys
        for kind, hook in (
            (str, _text()),
            (int, _integer()),
            (float, _number),
            (bool, _boolean),
            (datetime, _timestamp),
            (State, _enum(State)),
            (Trigger, _enum(Trigger)),
        ):
            conv.register_structure_hook(kind, hook)
        conv.register_structure_hook_factory(
            _is_optional, lambda kind: _non_null(conv.get_structure_hook(_other(kind)))
        )
        self._register(Product, {})
        self._register(AdditionalCost, {})
        self._register(PriceDetail, {"adjustment_reference_id": _non_null(_uuid_text)})
        self._register(CartItem, self._item_hooks(), also_allowed=_DERIVED_ITEM_KEYS)
        self._register(
            ReturnedItem,
            {
                "position": _integer(minimum=0),
                "quantity": _integer(minimum=1),
                "sku": _non_null(_text(min_length=1)),
            },
        )
        self._register(TransitionRecord, {"returned_items": self._array(tuple[ReturnedItem, ...])})
        self._register(_Extension, {"history": self._array(tuple[TransitionRecord, ...])})
        self._register(_SessionV1, self._v1_hooks())
        self._register(_SessionV2, self._v2_hooks())
        self._register(_NewSessionV2, self._request_hooks())
        self._register(_NewReturn, {"returned_cart_items": self._array(tuple[ReturnedItem, ...])})

    def _item_hooks(self) -> dict[str, _Hook]:
        return {
            "sku": _text(min_length=1),
            "quantity": _integer(minimum=1),
            "returned_quantity": _integer(minimum=0),
            "attributes": _json_object,
            "additional_costs": self._object(dict[str, AdditionalCost]),
            "adjustment_reference_id": _non_null(_uuid_text),
            "prices": self._object(dict[str, PriceDetail]),
        }

    def _session_hooks(self) -> dict[str, _Hook]:
        return {
            "integration_id": _text(min_length=1, max_length=MAX_INTEGRATION_ID_LENGTH),
            "application_id": _integer(minimum=0),
            "update_count": _integer(minimum=1),
            "cart_items": _CartHook(self._array(tuple[CartItem, ...]), _derived_problems),
            "identifiers": self._array(tuple[str, ...], max_items=MAX_IDENTIFIERS),
            "attributes": _json_object,
            "additional_costs": self._object(dict[str, AdditionalCost]),
        }

    def _code_list(self) -> _Hook:
        """``couponCodes``: ``[]`` is "no code"; an entry is a code of 1 to 100 characters."""
        entry = _text(
            min_length=1,
            max_length=MAX_CODE_LENGTH,
            empty="must not be empty: an empty string is no code ([] means none)",
        )
        return _each(self._array(tuple[str, ...]), entry)

    def _v1_hooks(self) -> dict[str, _Hook]:
        code = _non_null(_text(max_length=MAX_CODE_LENGTH))
        return {
            **self._session_hooks(),
            "discounts": self._object(dict[str, float]),
            "coupon": code,
            "referral": code,
        }

    def _request_hooks(self) -> dict[str, _Hook]:
        return {
            **self._session_hooks(),
            # A request has no restore() to apply the API's per-request cart limits.
            "cart_items": _CartHook(
                self._array(tuple[CartItem, ...]), _read_only_problems, limits=True
            ),
            "coupon_codes": self._code_list(),
            "referral_code": _non_null(_text(max_length=MAX_CODE_LENGTH)),
        }

    def _v2_hooks(self) -> dict[str, _Hook]:
        return {
            **self._session_hooks(),
            "coupon_codes": self._code_list(),
            "referral_code": _non_null(_text(max_length=MAX_CODE_LENGTH)),
            "store_integration_id": _non_null(
                _text(min_length=1, max_length=MAX_INTEGRATION_ID_LENGTH)
            ),
            "evaluable_campaign_ids": self._array(tuple[int, ...]),
            "loyalty_cards": self._array(tuple[str, ...], max_items=1),
        }

    def _register(
        self, cls: type, hooks: Mapping[str, _Hook], also_allowed: Iterable[str] = ()
    ) -> None:
        # Keyed by attribute name; the wire name and the hook go by the constructor's
        # argument name, which differs for the private slots of the value classes.
        overrides = {
            a.name: override(rename=_wire_name(a.alias), struct_hook=hooks.get(a.alias))
            for a in attrs.fields(cls)
            if a.init
        }
        generated: _Hook = make_dict_structure_fn(cls, self.converter, **overrides)  # type: ignore[arg-type] # overrides are keyword arguments of any name
        allowed = None
        if self._strict:
            allowed = frozenset(
                {o.rename for o in overrides.values() if o.rename} | {*also_allowed}
            )
        self.converter.register_structure_hook(cls, _object_hook(cls, generated, allowed))

    def _array(self, kind: Any, *, max_items: int | None = None) -> _Hook:
        """A hook for a JSON array of ``kind``'s element type, read into a tuple."""
        elements = list_structure_factory(list[get_args(kind)[0]], self.converter)  # type: ignore[arg-type,misc] # a type built at run time

        def structure(value: object, _: object) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise _Invalid.here(f"must be an array, got {_describe(value)}")
            if max_items is not None and len(value) > max_items:
                verb = "is" if max_items == 1 else "are"
                raise _Invalid.here(f"{len(value)} entries; at most {max_items} {verb} allowed")
            return tuple(elements(value, kind))

        return structure

    def _object(self, kind: Any) -> _Hook:
        """A hook for a JSON object whose values are ``kind``'s value type."""
        members = mapping_structure_factory(kind, self.converter)

        def structure(value: Any, _: object) -> Any:
            if not _is_object(value):
                raise _Invalid.here(f"must be an object, got {_describe(value)}")
            return members(value, kind)

        return structure

    def read(self, data: object, cls: type[Any], root: str = "$") -> Any:
        """``data`` structured as ``cls``; problems are raised as :class:`_Invalid`.

        Args:
            data: The JSON value.
            cls: The document class.
            root: The JSON path of ``data`` (problem paths start with it).
        """
        try:
            return self.converter.structure(data, cls)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a listed problem
            raise _Invalid(_problems(exc, root, cls)) from None


def _other(kind: Any) -> Any:
    """The type an optional ``kind`` holds when it is not ``None``."""
    others = tuple(arg for arg in get_args(kind) if arg is not NoneType)
    return others[0] if len(others) == 1 else Union[others]  # noqa: UP007 - a Union built at run time


def _each(hook: _Hook, check: _Hook) -> _Hook:
    """``hook`` for an array, then ``check`` on each element (constraints cattrs lacks)."""

    def structure(value: object, kind: object) -> tuple[Any, ...]:
        elements: tuple[Any, ...] = hook(value, kind)
        problems: list[tuple[str, str]] = []
        for index, element in enumerate(elements):
            try:
                check(element, None)
            except _Invalid as exc:
                problems.extend((_element(rel, index), msg) for rel, msg in exc.problems)
        if problems:
            raise _Invalid(problems)
        return elements

    return structure


class _CartHook:
    """The ``cartItems`` hook: the items, then ``check`` on the raw entries.

    For documents, ``check`` verifies the keys the server derives and this library
    does not store (``position``, ``remainingQuantity``); for requests, it refuses
    the read-only keys. With ``limits``, the items read are also held to the API's
    cart limits (items and units), as the model holds a session's cart; documents
    leave that to the session they are restored into.
    """

    def __init__(
        self,
        items: _Hook,
        check: Callable[[Any], list[tuple[str, str]]],
        *,
        limits: bool = False,
    ) -> None:
        self._items = items
        self._check = check
        self._limits = limits

    def __call__(self, value: object, kind: object) -> tuple[CartItem, ...]:
        derived = self._check(value) if isinstance(value, list | tuple) else []
        try:
            items: tuple[CartItem, ...] = self._items(value, kind)
        except IterableValidationError as exc:
            if not derived:
                raise
            raise IterableValidationError(
                exc.message, [*exc.exceptions, _Invalid(derived)], exc.cl
            ) from None
        if derived:
            raise _Invalid(derived)
        if self._limits and (over := cart_problems(items, "")):
            raise _Invalid([(p.path, p.message) for p in over])
        return items


def _read_only_problems(items: list[Any] | tuple[Any, ...]) -> list[tuple[str, str]]:
    """Read-only keys in the cart items of a request (the server computes them)."""
    return [
        (_member(_element("", index), key), "is read-only (Talon.One computes it); leave it out")
        for index, item in enumerate(items)
        if _is_object(item)
        for key in _READ_ONLY_ITEM_KEYS
        if key in item
    ]


def _derived_problems(items: list[Any] | tuple[Any, ...]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        if type(item) is dict and _derived_agree(item, index):
            continue
        if not _is_object(item):
            continue  # reported by the item hook
        where = _element("", index)
        position = item.get("position", index)
        if not is_number(position) or position != index:
            problems.append(
                (
                    _member(where, "position"),
                    f"must be {index}, the item's index in cartItems, got {_describe(position)}",
                )
            )
        if "remainingQuantity" in item:
            problems.extend(_remaining_problems(item, where))
    return problems


def _derived_agree(item: dict[str, Any], index: int) -> bool:
    """A quick yes for an item whose derived keys are absent or as written by us."""
    position = item.get("position", index)
    if type(position) is not int or position != index:
        return False
    if "remainingQuantity" not in item:
        return True
    remaining, quantity = item["remainingQuantity"], item.get("quantity")
    returned = item.get("returnedQuantity", 0)
    return (
        type(remaining) is int
        and type(quantity) is int
        and type(returned) is int
        and remaining == quantity - returned
    )


def _remaining_problems(item: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    remaining = item["remainingQuantity"]
    quantity, returned = item.get("quantity"), item.get("returnedQuantity", 0)
    path = _member(where, "remainingQuantity")
    if not is_int(remaining):
        return [(path, f"must be an integer, got {_describe(remaining)}")]
    if not (type(quantity) is int and type(returned) is int and 0 <= returned <= quantity > 0):
        return []  # the item's own problems say what is wrong
    if remaining != quantity - returned:
        return [
            (
                path,
                f"must be quantity - returnedQuantity = {quantity - returned}, got {remaining}",
            )
        ]
    return []


# -- from cattrs' errors to problems with JSON paths -------------------------------


def _problems(exc: BaseException, path: str, owner: Any) -> list[tuple[str, str]]:  # noqa: PLR0911 - one return per kind of error
    """Every problem inside ``exc`` (raised at ``path`` while reading ``owner``)."""
    if isinstance(exc, BaseValidationError):
        found: list[tuple[str, str]] = []
        for inner in exc.exceptions:
            found.extend(_problems(inner, _located(inner, path, exc.cl), exc.cl))
        return found
    if isinstance(exc, _Invalid):
        return [(path + rel, message) for rel, message in exc.problems]
    if isinstance(exc, KeyError):
        return [(path, "is required")]
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            (_member(path, key), _unknown_key_message(key, owner))
            # Keys the way messages show them: str() of a huge integer key raises.
            for key in sorted(exc.extra_fields, key=_key_order)
        ]
    if isinstance(exc, ValidationError):
        # A model class refused the values in its __attrs_post_init__.
        return [(_model_path(path, p.path), p.message) for p in exc.problems]
    if isinstance(exc, RecursionError):
        return [(path, "is nested too deeply")]
    return [(path, unreadable(exc))]


def _key_order(key: object) -> str:
    """How unknown keys are sorted in a report: text as it is, anything else as shown."""
    return key if isinstance(key, str) else shown(key)


def _located(inner: BaseException, path: str, container: Any) -> str:
    """Where ``inner`` happened, from the note ``cattrs`` attached to it."""
    for note in reversed(getattr(inner, "__notes__", ())):
        if isinstance(note, AttributeValidationNote):
            return _member(path, _wire_name(note.name))
        if isinstance(note, IterableValidationNote):
            if get_origin(container) in {list, tuple}:
                return _element(path, note.index)  # type: ignore[arg-type] # list indices are ints
            return _member(path, note.index)
    return path


_MODEL_PATH: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(.*)", re.DOTALL)
_ELEMENT_FIELD: Final = re.compile(r"(\[\d+\])\.([A-Za-z_][A-Za-z0-9_]*)")
# Session fields whose elements are model objects: their field names become keys too.
_OBJECT_ARRAYS: Final = frozenset({"cart_items", "history"})


def _model_path(path: str, model_path: str, moved: Mapping[str, str] | None = None) -> str:
    """A model problem's path (``cart_items[0].sku``) as a JSON path under ``path``.

    Args:
        path: Where the model object was read.
        model_path: The path in the model's problem (Python attribute names).
        moved: Fragments for attributes whose key is not their camelCase name
            (``{"coupon": ".couponCodes"}``).
    """
    match = _MODEL_PATH.fullmatch(model_path)
    if match is None:
        return path
    head, rest = match.groups()
    if head in _OBJECT_ARRAYS:
        rest = _element_keys(rest)
    if moved is not None and head in moved:
        return path + moved[head] + rest
    return _member(path, _wire_name(head)) + rest


def _element_keys(rest: str) -> str:
    """``[1].returned_items[0].position`` as ``[1].returnedItems[0].position``.

    Only the field names that follow an element are renamed: what follows a
    mapping (``[0].attributes.my_key``) is a key, kept as it is.
    """
    renamed = ""
    while (found := _ELEMENT_FIELD.match(rest)) is not None:
        renamed += f"{found[1]}.{_wire_name(found[2])}"
        rest = rest[found.end() :]
    return renamed + rest


def _unknown_key_message(key: object, owner: Any) -> str:
    if key in _UNMODELLED_KEYS:
        return "is not modelled by CustomerSession, so it cannot be kept"
    keys = [_wire_name(a.alias) for a in attrs.fields(owner) if a.init] if attrs.has(owner) else []
    if owner is CartItem:
        keys.extend(_DERIVED_ITEM_KEYS)
    # Letter case, or the snake_case of the official SDK's to_dict() (catalog_item_id).
    folded = key.replace("_", "").lower() if isinstance(key, str) else None
    near = [k for k in keys if k.lower() == folded]
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key{hint}"


# -- writing -----------------------------------------------------------------------


def _code(text: str | None) -> str | None:
    """A coupon or referral code as read from a string key: ``""`` is no code (``None``).

    Talon.One writes ``""`` for a v1 session without a code, and an update's
    ``referralCode: ""`` discards the code; a session holds no empty code.
    """
    return text or None


def _enum_value(member: State | Trigger) -> str:
    return member.value


def _leaving_out_empty(
    unstructure: Callable[[Any], dict[str, Any]], keys: tuple[str, ...]
) -> Callable[[Any], dict[str, Any]]:
    """``unstructure``, then the empty values of ``keys`` left out."""
    if not keys:
        return unstructure

    def without_empty(instance: Any) -> dict[str, Any]:
        written = unstructure(instance)
        for key in keys:
            if not written[key]:
                del written[key]
        return written

    return without_empty


class _Writer:
    """``cattrs`` unstructure functions with camelCase keys; ``None`` is left out."""

    def __init__(self) -> None:
        conv = cattrs.Converter()
        self.converter = conv
        conv.register_unstructure_hook(datetime, _format_timestamp)
        # Plain strings, not the StrEnum members (serializers such as orjson refuse those).
        conv.register_unstructure_hook(State, _enum_value)
        conv.register_unstructure_hook(Trigger, _enum_value)
        for cls in (Product, AdditionalCost, PriceDetail, ReturnedItem):
            conv.register_unstructure_hook(cls, self._generate(cls))
        self.item: Callable[[CartItem], dict[str, Any]] = self._generate(
            CartItem, returned_quantity=override(omit_if_default=False)
        )
        self.request_item: Callable[[CartItem], dict[str, Any]] = self._generate(
            CartItem, **{name: override(omit=True) for name in _READ_ONLY_ITEM_FIELDS}
        )
        self.record: Callable[[TransitionRecord], dict[str, Any]] = self._generate(TransitionRecord)
        self.costs = conv.get_unstructure_hook(Mapping[str, AdditionalCost])

    def _generate(self, cls: type[Any], **overrides: Any) -> Any:
        # ``overrides`` come by argument name; cattrs wants them by attribute name.
        by_name: dict[str, Any] = {}
        empty_mappings: list[str] = []
        for a in attrs.fields(cls):
            given = overrides.get(a.alias)
            if given is None:
                given = override(rename=_wire_name(a.alias))
            elif given.rename is None and not given.omit:
                given = attrs.evolve(given, rename=_wire_name(a.alias))
            if a.alias == "attributes" and not given.omit:
                given = attrs.evolve(given, unstruct_hook=thaw)
            if isinstance(a.default, Mapping) and not a.default and not given.omit:
                # Left out when empty, as any default, but tested by truth: the
                # generated ``!=`` against an empty immutabledict is a slow
                # Python-level Mapping comparison, paid per field and item.
                given = attrs.evolve(given, omit_if_default=False)
                empty_mappings.append(given.rename or _wire_name(a.alias))
            by_name[a.name] = given
        unstructure = make_dict_unstructure_fn(
            cls, self.converter, _cattrs_omit_if_default=True, **by_name
        )
        return _leaving_out_empty(unstructure, tuple(empty_mappings))

    def cart(self, items: Iterable[CartItem]) -> list[dict[str, Any]]:
        """The v1 ``cartItems``, with the server-derived position and remaining units."""
        written = []
        for index, line in enumerate(items):
            item = self.item(line)
            item["position"] = index
            item["remainingQuantity"] = line.remaining_quantity
            written.append(item)
        return written


_STRICT: Final = _Reader(forbid_extra_keys=True)
_LENIENT: Final = _Reader(forbid_extra_keys=False)
_WRITER: Final = _Writer()


# -- v1 documents --------------------------------------------------------------------


_MAX_INDENT: Final = 1000
"""The widest ``to_json()`` indent: json would make any width, to the memory's end."""


def _check_session(subject: str, session: object) -> None:
    """Refuse a writer's ``session`` that is none, which would fail inside as a bare error."""
    if not isinstance(session, CustomerSession):
        raise ValidationError.single(
            subject, "session", f"must be a CustomerSession, got {shown(session):.80}"
        )


def to_dict(session: CustomerSession, *, include_history: bool = False) -> dict[str, Any]:
    """``session`` as Talon.One's v1 ``CustomerSession`` (a JSON-ready dict).

    Keys are camelCase; timestamps are RFC 3339 strings in UTC with a ``Z``; unset
    optional fields are left out (no field is nullable on the wire). ``total`` is
    the derived :attr:`CustomerSession.total`; each cart item carries its
    ``position`` (its index) and ``remainingQuantity``. Session-level
    ``additionalCosts`` (Talon.One's v2 name) is written when there are any.

    Args:
        session: The session to write.
        include_history: Also write ``session.history`` under
            :data:`EXTENSION_KEY`, so that :func:`from_dict` restores it.

    Returns:
        A new dict that shares nothing with the session.

    Raises:
        ValidationError: ``session`` is not a :class:`CustomerSession`.
    """
    _check_session("to_dict()", session)
    history = [_WRITER.record(r) for r in session.history] if include_history else None
    return _assemble(
        session, _format_timestamp(session.created), _WRITER.cart(session.cart_items), history
    )


def _document_after(
    session: CustomerSession, before: CustomerSession, written: Mapping[str, Any]
) -> dict[str, Any]:
    """``to_dict(session, include_history=True)``, reusing parts of ``written``.

    For the store, which writes a session again after each change: ``written``
    must be ``to_dict(before, include_history=True)``. Fields hold immutable
    values, so a field ``session`` still shares with ``before`` (the same object)
    writes as it did, and the history writes as before plus its new records.
    The result shares those parts with ``written``: neither may be changed.
    """
    created = (
        written["created"]
        if session.created is before.created
        else _format_timestamp(session.created)
    )
    cart = (
        written["cartItems"]
        if session.cart_items is before.cart_items
        else _WRITER.cart(session.cart_items)
    )
    old, new = before.history, session.history
    if new[: len(old)] == old:
        history = written[EXTENSION_KEY]["history"] + [_WRITER.record(r) for r in new[len(old) :]]
    else:
        history = [_WRITER.record(r) for r in new]
    return _assemble(session, created, cart, history)


def _assemble(
    session: CustomerSession,
    created: str,
    cart: list[dict[str, Any]],
    history: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The v1 document of ``session``, its slow parts written already."""
    doc: dict[str, Any] = {
        "integrationId": session.integration_id,
        "created": created,
        "applicationId": session.application_id,
    }
    codes = {
        "profileId": session.profile_id,
        "coupon": session.coupon,
        "referral": session.referral,
    }
    doc.update({key: value for key, value in codes.items() if value is not None})
    doc["state"] = session.state.value
    doc["cartItems"] = cart
    if session.identifiers:
        doc["identifiers"] = list(session.identifiers)
    doc["total"] = session.total
    doc["attributes"] = thaw(session.attributes)
    if session.additional_costs:
        doc["additionalCosts"] = _WRITER.costs(session.additional_costs)
    doc["firstSession"] = session.first_session
    doc["discounts"] = dict(session.discounts)
    doc["updated"] = _format_timestamp(session.updated)
    doc["updateCount"] = session.update_count
    if history is not None:
        doc[EXTENSION_KEY] = {"history": history}
    return doc


def to_json(
    session: CustomerSession, *, include_history: bool = False, indent: int | None = None
) -> str:
    """``session`` as v1 ``CustomerSession`` JSON text; see :func:`to_dict`.

    Args:
        session: The session to write.
        include_history: Also write the history (see :func:`to_dict`).
        indent: Pretty-print with this many spaces per level, 0 to 1000 (compact
            when ``None``).

    Raises:
        ValidationError: ``session`` is not a :class:`CustomerSession`, or
            ``indent`` is not ``None`` or an integer from 0 to 1000.
    """
    _check_session("to_json()", session)
    if indent is not None and (type(indent) is not int or not 0 <= indent <= _MAX_INDENT):
        raise ValidationError.single(
            "to_json()",
            "indent",
            f"must be None or an integer from 0 to {_MAX_INDENT}, got {shown(indent):.80}",
        )
    return json.dumps(
        to_dict(session, include_history=include_history),
        ensure_ascii=False,
        allow_nan=False,
        indent=indent,
    )


@overload
def from_dict(data: object, *, workflow: Workflow | None = None) -> CustomerSession: ...


@overload
def from_dict(data: object, *, session_class: type[_S], workflow: Workflow | None = None) -> _S: ...


def from_dict(
    data: object,
    *,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
) -> CustomerSession:
    """Load a session from a v1 ``CustomerSession`` dict (as :func:`to_dict` writes).

    Any of the four states loads (through :meth:`CustomerSession.restore`).
    Required keys: ``integrationId``, ``created``, ``applicationId``,
    ``firstSession``, ``discounts``, ``updated``; ``updateCount`` defaults to 1
    for seed-era documents. Unknown keys are refused (a typo such as
    ``catalogItemId`` would otherwise lose data silently). ``total``, a cart
    item's ``position`` and ``remainingQuantity`` are derived; they are checked
    against the cart, ``total`` to within :data:`TOTAL_TOLERANCE`.

    Args:
        data: The document, as ``json.loads`` gives it. Timestamps may also be
            aware ``datetime`` objects (as the official SDK's ``to_dict()`` gives).
        session_class: The class to load into (e.g. ``ReopenableCustomerSession``).
        workflow: The workflow to bind the session to (default: the class's).

    Raises:
        ValidationError: Every problem, each with its JSON path, e.g.
            ``$.cartItems[2].quantity``.
        WorkflowError: ``workflow`` drives another specification than ``session_class``,
            or ``session_class`` is no ``CustomerSession`` class.
    """
    _check_session_class(session_class)
    subject = _subject("customer session document", data)
    try:
        doc: _SessionV1 = _STRICT.read(data, _SessionV1)
    except _Invalid as exc:
        raise _validation_error(subject, exc.problems) from None
    problems = _total_problems(
        "$.total",
        doc.total,
        lambda: _cart_value(doc) + costs_total(doc.additional_costs),
        "the cart's total",
    )
    fields = _session_fields(doc)
    fields.update(
        coupon=_code(doc.coupon),
        referral=_code(doc.referral),
        discounts=freeze_mapping(doc.discounts),
    )
    history = () if doc.extension is None else doc.extension.history
    moved = {"history": _member(_member("", EXTENSION_KEY), "history")}
    return _restore(session_class, workflow, subject, fields, history, problems, moved, data)


@overload
def from_json(
    text: str | bytes | bytearray, *, workflow: Workflow | None = None
) -> CustomerSession: ...


@overload
def from_json(
    text: str | bytes | bytearray, *, session_class: type[_S], workflow: Workflow | None = None
) -> _S: ...


def from_json(
    text: str | bytes | bytearray,
    *,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
) -> CustomerSession:
    """Load a session from v1 ``CustomerSession`` JSON text; see :func:`from_dict`.

    Raises:
        ValidationError: Malformed JSON (with line and column), keys repeated in
            one object, or every problem of the document, each with its JSON path.
        WorkflowError: ``workflow`` drives another specification than ``session_class``.
    """
    data = _loads(text, "customer session document")
    return from_dict(data, session_class=session_class, workflow=workflow)


# -- v2 requests and responses ------------------------------------------------------------


def update_request(
    session: CustomerSession,
    *,
    response_content: Iterable[str] | None = None,
    discard_unset_codes: bool = False,
) -> dict[str, Any]:
    """The body of ``PUT /v2/customer_sessions/{id}`` that brings Talon.One to ``session``.

    The ``customerSession`` is a ``NewCustomerSessionV2``: ``state`` is always
    explicit (the SDKs' default would otherwise ask for ``open``), cart items
    leave out every read-only field, and unset optional fields are left out. The
    integration id is not part of the body: it goes, URL-encoded, into the path.
    An update cannot reopen a closed session: after ``reopen()``, call Talon.One's
    ``PUT /v2/customer_sessions/{id}/reopen`` first.

    Args:
        session: The session to send.
        response_content: What the response should include (see
            :data:`UPDATE_RESPONSE_CONTENT`).
        discard_unset_codes: Send ``couponCodes: []`` and ``referralCode: ""``
            when the session has none, which makes Talon.One discard codes sent
            earlier. By default these keys are left out, which keeps them.

    Raises:
        ValidationError: The session is ``partially_returned`` (only the returns
            endpoint produces that state; see :func:`return_request`), or a
            ``response_content`` value is unknown, or ``session`` is not a
            :class:`CustomerSession`.
    """
    _check_session("update_request()", session)
    subject = f"session {session.integration_id!r}: update request"
    if session.state is State.PARTIALLY_RETURNED:
        raise ValidationError.single(
            subject,
            "state",
            "'partially_returned' cannot be sent as a target state: returns go through "
            "POST /v2/customer_sessions/{id}/returns (return_request()), and a partially "
            "returned session can only be cancelled",
        )
    content = _response_content(subject, response_content, UPDATE_RESPONSE_CONTENT)
    body: dict[str, Any] = {}
    if session.profile_id is not None:
        body["profileId"] = session.profile_id
    if session.coupon is not None or discard_unset_codes:
        body["couponCodes"] = [] if session.coupon is None else [session.coupon]
    if session.referral is not None or discard_unset_codes:
        body["referralCode"] = session.referral or ""
    body["state"] = session.state.value
    body["cartItems"] = [_WRITER.request_item(line) for line in session.cart_items]
    if session.additional_costs:
        body["additionalCosts"] = _WRITER.costs(session.additional_costs)
    if session.identifiers:
        body["identifiers"] = list(session.identifiers)
    if session.attributes:
        body["attributes"] = thaw(session.attributes)
    return _with_content({"customerSession": body}, content)


def return_request(
    items: Iterable[ReturnedItem], *, response_content: Iterable[str] | None = None
) -> dict[str, Any]:
    """The body of ``POST /v2/customer_sessions/{id}/returns`` for ``items``.

    Each item becomes ``{"position", "quantity"}`` plus ``"sku"`` when it has one.
    Pass the same items to :meth:`CustomerSession.return_items` (or the record's
    ``returned_items``) to keep the local session in step.

    Args:
        items: What is returned: at least one item, each position once.
        response_content: What the response should include (see
            :data:`RETURN_RESPONSE_CONTENT`).

    Raises:
        ValidationError: No items, an entry that is not a :class:`ReturnedItem`, a
            position listed twice, or an unknown ``response_content`` value.
    """
    subject = "return request"
    problems: list[Problem] = []
    returned: tuple[Any, ...] = ()
    if isinstance(items, str | bytes | Mapping | ReturnedItem) or not isinstance(items, Iterable):
        problems.append(Problem("items", f"must be a sequence of ReturnedItem, got {shown(items)}"))
    else:
        read = read_entries(items)
        if isinstance(read, Unreadable):
            problems.append(Problem("items", unreadable(read.error)))
        else:
            returned = read
            problems.extend(_returned_problems(returned))
    content: list[str] | None = None
    try:
        content = _response_content(subject, response_content, RETURN_RESPONSE_CONTENT)
    except ValidationError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ValidationError(subject, problems)
    entries = [_WRITER.converter.unstructure(item, ReturnedItem) for item in returned]
    return _with_content({"return": {"returnedCartItems": entries}}, content)


@overload
def from_v2_response(data: object, *, workflow: Workflow | None = None) -> CustomerSession: ...


@overload
def from_v2_response(
    data: object, *, session_class: type[_S], workflow: Workflow | None = None
) -> _S: ...


def from_v2_response(
    data: object,
    *,
    session_class: type[CustomerSession] = CustomerSession,
    workflow: Workflow | None = None,
) -> CustomerSession:
    """Load a session from a ``CustomerSessionV2`` (``response["customerSession"]``).

    ``couponCodes`` becomes ``coupon`` (a session holds at most one code here; more
    is a problem), ``referralCode`` becomes ``referral``. ``total``,
    ``cartItemTotal`` and ``additionalCostTotal`` are checked against the cart to
    within :data:`TOTAL_TOLERANCE`. Keys this library does not model (``id``,
    ``storeIntegrationId``, ``evaluableCampaignIds``, ``loyaltyCards``) are
    type-checked and dropped; unknown keys are ignored, as newer API versions add
    some. The response has no history, so the session's history is empty.

    Args:
        data: The ``CustomerSessionV2`` object, as ``json.loads`` gives it.
        session_class: The class to load into.
        workflow: The workflow to bind the session to (default: the class's).

    Raises:
        ValidationError: Every problem, each with its JSON path.
        WorkflowError: ``workflow`` drives another specification than ``session_class``,
            or ``session_class`` is no ``CustomerSession`` class.
    """
    _check_session_class(session_class)
    subject = _subject("CustomerSessionV2 document", data)
    try:
        doc: _SessionV2 = _LENIENT.read(data, _SessionV2)
    except _Invalid as exc:
        raise _validation_error(subject, exc.problems) from None

    def items() -> float:
        return _cart_value(doc)

    def costs() -> float:
        return costs_total(doc.additional_costs)

    problems = [
        *_total_problems("$.total", doc.total, lambda: items() + costs(), "the cart's total"),
        *_total_problems("$.cartItemTotal", doc.cart_item_total, items, "the items' value"),
        *_total_problems(
            "$.additionalCostTotal", doc.additional_cost_total, costs, "the additional costs"
        ),
    ]
    if len(doc.coupon_codes) > 1:
        problems.append(
            Problem(
                "$.couponCodes",
                f"{len(doc.coupon_codes)} codes; a CustomerSession holds one coupon code",
            )
        )
    fields = _session_fields(doc)
    fields.update(
        coupon=doc.coupon_codes[0] if doc.coupon_codes else None, referral=_code(doc.referral_code)
    )
    moved = {"coupon": ".couponCodes", "referral": ".referralCode"}
    return _restore(session_class, workflow, subject, fields, (), problems, moved, data)


def new_session_fields(body: object, *, path: str = "$") -> dict[str, Any]:
    """The session fields a ``NewCustomerSessionV2`` (an update's ``customerSession``) sets.

    Only the keys present in ``body`` appear in the result, as constructor and
    :meth:`CustomerSession.restore` argument names (``cart_items``, ``coupon``,
    ``referral``, ``profile_id``, ``identifiers``, ``attributes``,
    ``additional_costs``, ``state``). As in Talon.One, ``couponCodes: []`` and
    ``referralCode: ""`` mean "no code" (``None``). Read-only cart item keys, keys
    a session cannot hold (``storeIntegrationId``, ``loyaltyCards``, ...) and a
    cart beyond Talon.One's limits per request (1000 items, 10,000 units) are
    problems, as are unknown keys.

    Args:
        body: The ``customerSession`` object of a request.
        path: The JSON path of ``body`` in its document (problem paths start with it).

    Raises:
        ValidationError: Every problem, each with its JSON path.
    """
    subject = "customer session request"
    _check_path(subject, path)
    try:
        doc: _NewSessionV2 = _STRICT.read(body, _NewSessionV2, path)
    except _Invalid as exc:
        raise _validation_error(subject, exc.problems) from None
    assert isinstance(body, Mapping)  # noqa: S101 - the reader accepted an object
    if len(doc.coupon_codes) > 1:
        raise ValidationError.single(
            subject,
            _member(path, "couponCodes"),
            f"{len(doc.coupon_codes)} codes; a CustomerSession holds one coupon code",
        )
    values = {
        "profile_id": doc.profile_id,
        "state": doc.state,
        "cart_items": doc.cart_items,
        "coupon": doc.coupon_codes[0] if doc.coupon_codes else None,
        "referral": _code(doc.referral_code),
        "additional_costs": doc.additional_costs,
        "identifiers": doc.identifiers,
        "attributes": doc.attributes,
    }
    keys = {"coupon": "couponCodes", "referral": "referralCode"}
    return {
        name: value for name, value in values.items() if keys.get(name, _wire_name(name)) in body
    }


def returned_items_from_json(data: object, *, path: str = "$") -> tuple[ReturnedItem, ...]:
    """The items of a ``NewReturn`` (a return request's ``return`` object).

    This library identifies a returned item by ``position``, so ``position`` and
    ``quantity`` are required in each entry; ``sku`` is optional. As
    :func:`return_request` writes them, there is at least one item, each position
    once. Whether the items fit the cart is checked by
    :meth:`CustomerSession.return_items`.

    Args:
        data: The ``{"returnedCartItems": [...]}`` object.
        path: The JSON path of ``data`` in its document.

    Raises:
        ValidationError: Every problem, each with its JSON path.
    """
    _check_path("return request", path)
    try:
        doc: _NewReturn = _STRICT.read(data, _NewReturn, path)
    except _Invalid as exc:
        raise _validation_error("return request", exc.problems) from None
    items = doc.returned_cart_items
    problems = _returned_problems(items, _member(path, "returnedCartItems"))
    if problems:
        raise ValidationError("return request", problems)
    return items


# -- helpers of the public functions ----------------------------------------------------


def _check_path(subject: str, path: object) -> None:
    """Refuse a ``path=`` argument that is no JSON path text (it prefixes every problem)."""
    if not isinstance(path, str) or not path:
        raise ValidationError.single(
            subject, "path", f"must be a non-empty JSON path such as '$', got {shown(path):.80}"
        )


def _subject(kind: str, data: object) -> str:
    if isinstance(data, Mapping):
        try:
            integration_id = data.get("integrationId")
        except Exception:  # noqa: BLE001 - the reader reports what cannot be read, at its path
            return kind
        if isinstance(integration_id, str):
            return f"{kind} {shown(integration_id):.80}"
    return kind


def _validation_error(subject: str, problems: Iterable[tuple[str, str]]) -> ValidationError:
    return ValidationError(subject, [Problem(path, message) for path, message in problems])


class _Repeated(dict[str, Any]):
    """A JSON object whose text repeats keys: which value counts is undefined (RFC 8259)."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.counts = {
            key: count for key, count in Counter(k for k, _ in pairs).items() if count > 1
        }


_BOM: Final = "\ufeff"
"""The byte order mark: JSON text may hold it only inside a string."""


def _json_problem(error: json.JSONDecodeError) -> str:
    """The parser's message, unless the text holds a byte order mark where it stopped.

    The parser's own words for one (``Unexpected UTF-8 BOM (decode using
    utf-8-sig)``, or ``Expecting value`` and ``Extra data`` for one it meets later)
    either say nothing of it, invisible as it is, or give Python's advice on
    decoding, which says nothing to whoever wrote the JSON.
    """
    if error.doc[error.pos : error.pos + 1] == _BOM:
        return f"a byte order mark (U+{ord(_BOM):04X}), which JSON allows only inside a string"
    return error.msg


def _loads(text: object, subject: str) -> Any:
    """``text`` parsed as JSON; malformed text is one problem at ``$``.

    A key repeated in one object is a problem at its path: ``json.loads`` would
    keep the last value silently, and other readers keep the first.
    """
    if not isinstance(text, str | bytes | bytearray):
        raise ValidationError.single(
            subject, "$", f"must be JSON text (str or bytes), got {type(text).__name__}"
        )
    repeated = False

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        found = dict(pairs)
        if len(found) == len(pairs):
            return found
        repeated = True
        return _Repeated(pairs)

    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=members)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON: {_json_problem(exc)} (line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        message = "malformed JSON: nested too deeply"
    except (UnicodeDecodeError, _RefusedConstant) as exc:  # invalid UTF-8, NaN
        message = f"malformed JSON: {exc}"
    except ValueError:
        # The only other ValueError json.loads raises: int()'s limit on digits, whose
        # own words ("use sys.set_int_max_str_digits()") are advice for Python code.
        message = f"unsupported JSON: a number has more than {sys.get_int_max_str_digits()} digits"
    else:
        if repeated:
            raise _validation_error(subject, _repeated_keys(data))
        return data
    raise ValidationError.single(subject, "$", message)


def _repeated_keys(data: Any) -> list[tuple[str, str]]:
    """Where the objects in ``data`` repeat a key (a walk with a stack: data may be deep)."""
    problems: list[tuple[str, str]] = []
    pending: list[tuple[Any, str]] = [(data, "$")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeated):
                problems.extend(
                    (
                        _member(path, key),
                        f"appears {count} times in one object; a key must be unique",
                    )
                    for key, count in value.counts.items()
                )
            pending.extend((item, _member(path, key)) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend((item, _element(path, i)) for i, item in enumerate(value))
    return sorted(problems)


class _RefusedConstant(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``, which Python's reader takes and JSON has not."""


def _refuse_constant(name: str) -> Any:
    raise _RefusedConstant(f"{name} is not a JSON number")


def _cart_value(doc: _SessionV1 | _SessionV2) -> float:
    """The value of the parsed items, as ``CustomerSession.cart_item_total`` sums it."""
    return cart_total(doc.cart_items)


def _total_problems(
    path: str, given: float | None, derived: Callable[[], float], what: str
) -> list[Problem]:
    """``given`` compared with the ``derived`` total, when that is a finite number.

    A sum that overflows (or, for costs, raises ``OverflowError``) is the
    restored session's problem, reported with the field it comes from.
    """
    try:
        value = derived()
    except OverflowError:
        return []
    if given is None or not is_number(value) or abs(given - value) <= TOTAL_TOLERANCE:
        return []
    return [Problem(path, f"{shown(given)} disagrees with {what}, {shown(value)}")]


def _session_fields(doc: _SessionV1 | _SessionV2) -> dict[str, Any]:
    """The constructor arguments both document families carry."""
    return {
        "integration_id": doc.integration_id,
        "state": doc.state,
        "update_count": doc.update_count,
        "profile_id": doc.profile_id,
        "cart_items": doc.cart_items,
        "identifiers": doc.identifiers,
        # Frozen here (as the model would) so that the model's quick validity
        # check, which wants its immutable mappings, recognizes a plain session.
        "attributes": freeze_mapping(doc.attributes),
        "first_session": doc.first_session,
        "application_id": doc.application_id,
        "additional_costs": freeze_mapping(doc.additional_costs),
        "created": doc.created,
        "updated": doc.updated,
    }


def _restore(  # noqa: PLR0917 - a private step shared by both readers
    session_class: type[_S],
    workflow: Workflow | None,
    subject: str,
    fields: dict[str, Any],
    history: tuple[TransitionRecord, ...],
    problems: list[Problem],
    moved: Mapping[str, str],
    data: object,
) -> _S:
    """Restore the session; the model's problems join ``problems`` with JSON paths.

    ``data`` is the document read, for a hint where its cart says nothing of returns.
    """
    if workflow is not None:
        fields["workflow"] = workflow
    try:
        session = session_class.restore(history=history, **fields)
    except ValidationError as exc:
        problems.extend(Problem(_model_path("$", p.path, moved), p.message) for p in exc.problems)
        if _returns_left_out(data, fields):
            problems.append(Problem("$.cartItems", _DROPPED_RETURNS))
        raise ValidationError(subject, problems) from None
    if problems:
        raise ValidationError(subject, problems)
    return session


_DROPPED_RETURNS: Final = (
    "no cart item has a returnedQuantity, though the session is past a return: a "
    "document from the Talon.One SDK's to_dict(), which leaves read-only fields out? "
    "Load the response's JSON as received"
)


def _returns_left_out(data: object, fields: Mapping[str, Any]) -> bool:
    """Whether a session after a return has a cart that says nothing of returns."""
    if fields.get("state") != State.PARTIALLY_RETURNED or not isinstance(data, Mapping):
        return False
    items = data.get("cartItems")
    return (
        isinstance(items, list)
        and bool(items)
        and all(isinstance(item, Mapping) and "returnedQuantity" not in item for item in items)
    )


def _response_content(
    subject: str, values: Iterable[str] | None, allowed: frozenset[str]
) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Iterable):
        raise ValidationError.single(
            subject, "response_content", f"must be a sequence of names, got {shown(values)}"
        )
    content = read_entries(values)
    if isinstance(content, Unreadable):
        raise ValidationError.single(subject, "response_content", unreadable(content.error))
    # The type first: ``in`` on a frozenset raises TypeError for a list or a dict.
    problems = [
        Problem(
            f"response_content[{i}]",
            f"must be one of {', '.join(sorted(allowed))}, got {shown(value):.80}",
        )
        for i, value in enumerate(content)
        if not (isinstance(value, str) and value in allowed)
    ]
    if problems:
        raise ValidationError(subject, problems)
    return cast("list[str]", list(content))  # every entry is a known name, checked above


def _with_content(body: dict[str, Any], content: list[str] | None) -> dict[str, Any]:
    if content is not None:
        body["responseContent"] = content
    return body


def _returned_problems(items: tuple[Any, ...], path: str = "items") -> list[Problem]:
    if not items:
        return [Problem(path, "a return needs at least one item")]
    return returned_list_problems(items, path)
