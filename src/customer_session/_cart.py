"""Cart items, returned items and the checks and limits of the real API."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from attrs import define, field, fields, frozen, has, setters
from immutabledict import immutabledict

from customer_session._readonly import protect, public_repr
from customer_session._show import INT_LIMIT, counted, shown, shown_number, unreadable
from customer_session._times import in_utc
from customer_session.exceptions import Problem, ValidationError

if TYPE_CHECKING:
    from collections.abc import Sequence

# One string: pyright reads no implicitly concatenated string as a type (the alias was Unknown).
JSONValue: TypeAlias = """(
    str | int | float | bool | list[JSONValue] | tuple[JSONValue, ...]
    | Mapping[str, JSONValue] | None
)"""
"""A JSON value as Python holds it (the type of custom attributes).

Given as lists or tuples and dicts (any mapping); held, and read back, frozen:
arrays as tuples and objects as immutable mappings, all the way down.
"""

MAX_CART_ITEMS: Final = 1000
MAX_UNITS: Final = 10_000
MAX_IDENTIFIERS: Final = 5
MAX_CODE_LENGTH: Final = 100
MAX_INTEGRATION_ID_LENGTH: Final = 1000
MAX_NESTING: Final = 100
"""How many levels of arrays and objects a mapping of JSON values may nest (itself included).

Custom attributes nest at most this deep, so that every check, copy and writer
of them stays far from Python's recursion limit, whatever the caller's stack:
a session that can be built can be written, and what is written loads back. A
replay's event lines have the same limit (``replay.MAX_DEPTH``), which leaves
an event's attributes 98 of these levels.
"""
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**63 - 1
"""Integers (counts, positions, ids) are 64-bit signed, as in Talon.One's API."""


class FrozenDict(immutabledict[str, Any]):
    """An ``immutabledict`` whose values are immutable all the way down.

    The form of every JSON object a session holds (custom attributes, and the
    objects inside them) and of its other mappings. However one is made (the
    constructor, ``set()``, ``|``, ``copy()``, unpickling), its values are frozen by
    :func:`freeze` on the way in, so that freezing it again returns it at once.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> FrozenDict:
        """A frozen copy of ``dict(*args, **kwargs)``."""
        return _frozen_dict({key: freeze(item) for key, item in dict(*args, **kwargs).items()})


def _frozen_dict(values: dict[str, Any]) -> FrozenDict:
    """A :class:`FrozenDict` of ``values``, which are frozen already (they are not copied)."""
    # What immutabledict.__new__ does (4.x, pinned), without copying ``values`` again.
    frozen = object.__new__(FrozenDict)
    frozen._dict = values
    frozen._hash = None
    return frozen


EMPTY_MAPPING: Final[Mapping[str, Any]] = _frozen_dict({})

# Immutable values that hold no others: returned as they are, on the quickest test.
_ATOMS: Final = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Any:
    """``value`` immutable all the way down: the one way sessions take in JSON values.

    JSON arrays (lists, tuples) become tuples and objects (any mapping) become
    :class:`FrozenDict` (an ``immutabledict``), recursively; the caller's containers
    are copied, never kept. A frozen value comes back as the same object, with no
    copy: a :class:`FrozenDict` at once, a tuple after a look at its items. Anything
    else (scalars, and values that are not JSON, which validation then reports) is
    returned as it is.
    """
    kind = type(value)
    if kind in _ATOMS or kind is FrozenDict:
        return value
    if kind is tuple:
        return _freeze_tuple(value)
    if isinstance(value, Mapping):
        if not value:
            return EMPTY_MAPPING
        return _frozen_dict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def _freeze_tuple(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """``value`` itself when its items are frozen, else a frozen copy."""
    for index, item in enumerate(value):
        frozen = freeze(item)
        if frozen is not item:
            rest = (freeze(later) for later in value[index + 1 :])
            return (*value[:index], frozen, *rest)
    return value


def thaw(value: Any) -> Any:
    """A plain, independent copy of a JSON value: arrays as lists, objects as dicts.

    The inverse of :func:`freeze`, for writers: what it returns shares nothing
    with ``value``, so the caller may change it.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is FrozenDict:  # the common case: its plain dict, without Mapping's Python calls
        return {key: thaw(item) for key, item in value._dict.items()}
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value


def same(first: Any, second: Any) -> bool:  # noqa: C901, PLR0911, PLR0912 - one walk, in line (below)
    """Whether two values are equal and of the same types all the way down.

    ``==`` holds for ``1``, ``1.0`` and ``True``, and for ``0.0`` and ``-0.0``, but
    each is written differently (JSON ``1``, ``1.0``, ``true``): replacing one with
    another is a change, which an edit counts and a store's journal keeps. Mappings
    compare by key (their order is not part of a JSON object), sequences item by
    item, attrs instances (cart items, costs) field by field.
    """
    if first is second:
        return True
    kind = type(first)
    if kind is not type(second):
        return False
    if kind in PLAIN_ATOMS:
        return bool(first == second)
    if kind is float:
        return bool(first == second) and math.copysign(1.0, first) == math.copysign(1.0, second)
    # Plain members (most of a document's) are compared in line, in two written-out
    # loops: a call for each member, or a shared helper, costs twice the walk.
    if isinstance(first, Mapping):
        if len(first) != len(second):
            return False
        for key, item in first.items():
            other = second.get(key, _MISSING)
            if item is other:
                continue
            if type(item) in PLAIN_ATOMS and type(other) is type(item):
                if item != other:
                    return False
            elif not same(item, other):
                return False
        return True
    if isinstance(first, list | tuple):
        if len(first) != len(second):
            return False
        for item, other in zip(first, second, strict=True):
            if item is other:
                continue
            if type(item) in PLAIN_ATOMS and type(other) is type(item):
                if item != other:
                    return False
            elif not same(item, other):
                return False
        return True
    if has(kind):
        return all(same(getattr(first, a.name), getattr(second, a.name)) for a in fields(kind))
    return bool(first == second)


PLAIN_ATOMS: Final = frozenset({str, int, bool, type(None)})
"""Atoms whose ``==`` is :func:`same` when their types agree (floats have two zeros)."""
_MISSING: Final = object()


_INT_LIMIT: Final = INT_LIMIT
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
"""What text may not hold: NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8)."""


def freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A deeply immutable copy of the mapping ``value`` (see :func:`freeze`).

    ``None`` gives the empty mapping; what is not a mapping is returned as it is,
    for the validation that follows to report.
    """
    if type(value) is FrozenDict:
        return value  # the common case (a copy, a restore): no abstract-class check
    if value is None:
        return EMPTY_MAPPING
    if not isinstance(value, Mapping):
        return value  # type: ignore[unreachable] # reported by the validation that follows
    try:
        return freeze(value)  # type: ignore[no-any-return] # a mapping freezes to a FrozenDict
    except RecursionError:
        return value  # nested beyond MAX_NESTING: reported by the validation that follows


def frozen_document(value: Any, subject: str, path: str) -> Any:
    """:func:`freeze` for a record's document (an effect's, a journal entry's).

    A value nested too deep to walk is a :class:`ValidationError` naming the field
    (``subject`` and ``path``) instead of a ``RecursionError``.
    """
    try:
        return freeze(value)
    except RecursionError:
        raise ValidationError.single(subject, path, "is nested too deep") from None


def is_int(value: object) -> bool:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is an ``int`` or ``float`` (not a ``bool``) that is a finite float.

    An integer too large for a float is not one: every sum the library derives from
    prices is a float, and ``math.isfinite`` would raise ``OverflowError`` on it.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return -_INT_LIMIT < value < _INT_LIMIT
    return math.isfinite(value)


def int_problems(path: str, value: object, minimum: int = MIN_INTEGER) -> list[Problem]:
    """Problems of an integer field: not an ``int``, too small, or beyond 64 bits.

    ``bool`` is not an integer here; every integer of the real API (counts,
    positions, ids) is a 64-bit signed one.
    """
    if not is_int(value) or value < minimum:  # type: ignore[operator] # is_int narrows at run time
        lower = "" if minimum == MIN_INTEGER else f" >= {minimum}"
        return [Problem(path, f"must be an integer{lower}, got {shown(value)}")]
    if not value <= MAX_INTEGER:  # type: ignore[operator] # is_int narrows at run time
        return [Problem(path, f"must be at most {MAX_INTEGER} (64 bits), got {shown(value)}")]
    return []


def is_text(value: str) -> bool:
    r"""Whether the string ``value`` can be stored: valid UTF-8, and no NUL character.

    A lone surrogate (``"\ud800"``) has no UTF-8 encoding, so no file or database
    can hold it; PostgreSQL refuses NUL in text. This is the one rule for every
    text field of a session (ids, codes, SKUs, names, attribute keys and values).
    """
    if value.isascii():  # the common case, several times faster than the search
        return "\x00" not in value
    return _UNSTORABLE.search(value) is None


# Unicode's control characters (category Cc): a tab, a newline or an escape in a label
# (an actor, an effect's name) would break the lines of a log or a terminal showing it.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(value: object, longest: int) -> bool:
    """Whether ``value`` is text of 1 to ``longest`` characters that shows on one line."""
    return (
        type(value) is str
        and 0 < len(value) <= longest
        and not value.isspace()
        and is_text(value)  # no lone surrogate
        and _CONTROL.search(value) is None
    )


def text_problem(value: str) -> str:
    """Why ``value`` breaks the rule of :func:`is_text` (call it only when it does)."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return "is valid text"
    char, index = found.group(), found.start()
    if char == "\x00":
        what = f"a NUL character (U+0000) at index {index}, which PostgreSQL cannot store"
    else:
        what = f"a lone surrogate (U+{ord(char):04X}) at index {index}, which UTF-8 cannot encode"
    return f"holds {what}: {shown(value):.80}"


def storable(text: str) -> str:
    r"""``text`` with what :func:`is_text` refuses written as escapes (``\x00``, ``\ud800``).

    For messages that quote input (a refusal's reason is printed and stored).
    """
    if is_text(text):
        return text
    return _UNSTORABLE.sub(lambda found: repr(found.group())[1:-1], text)


def key_path(path: str, key: object) -> str:
    """``path`` extended by a mapping key; a key that is not printable text is shown escaped.

    Not printable covers what cannot be stored (NUL, a lone surrogate) and control
    characters: a path is printed, and a key's terminal escape sequence must not
    reach a terminal as one.
    """
    if isinstance(key, str) and key.isprintable():
        return f"{path}.{key}"
    return f"{path}[{shown(key)}]"


def finite_total(compute: Callable[[], float]) -> bool:
    """Whether ``compute()`` (a sum or product of valid numbers) gives a finite float.

    Adding an integer too large for a float to a float, and an overflowing
    ``math.fsum``, raise ``OverflowError`` instead of giving infinity.
    """
    try:
        return is_number(compute())
    except OverflowError:
        return False


TOO_DEEP: Final = f"nests arrays and objects more than {MAX_NESTING} levels deep"


def json_problems(  # noqa: PLR0911 - one return per JSON type reads best
    value: object, path: str, level: int = 1
) -> list[Problem]:
    """Problems that keep ``value`` from being a JSON value (finite numbers, text keys).

    Args:
        value: The value.
        path: Its path, for the problems.
        level: How deep ``value`` is: an array or object deeper than
            :data:`MAX_NESTING` is a problem (and not looked into).
    """
    if value is None or isinstance(value, bool) or is_number(value):
        return []
    if isinstance(value, int | float):
        return [Problem(path, f"must be a finite number, got {shown_number(value)}")]
    if isinstance(value, str):
        return [] if is_text(value) else [Problem(path, text_problem(value))]
    if isinstance(value, list | tuple | Mapping) and level > MAX_NESTING:
        return [Problem(path, TOO_DEEP)]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in json_problems(v, f"{path}[{i}]", level + 1)]
    if isinstance(value, Mapping):
        problems: list[Problem] = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem(path, f"key {shown(key)} is not a string"))
                continue
            where = key_path(path, key)
            if not is_text(key):
                problems.append(Problem(where, f"the key {text_problem(key)}"))
            problems.extend(json_problems(item, where, level + 1))
        return problems
    return [Problem(path, f"{type(value).__name__} {shown(value)} is not a JSON value")]


def key_problems(path: str, keys: Iterable[object]) -> list[Problem]:
    """Problems of the keys of a mapping whose keys are names (they must be text)."""
    return [
        Problem(key_path(path, key), f"the key {text_problem(key)}")
        for key in keys
        if isinstance(key, str) and not is_text(key)
    ]


def str_problems(path: str, value: object) -> list[Problem]:
    """Problems of a required text field: not a string, or not valid text."""
    if not isinstance(value, str):
        return [Problem(path, f"must be a string, got {shown(value):.80}")]
    return [] if is_text(value) else [Problem(path, text_problem(value))]


def _optional_number(problems: list[Problem], path: str, value: object) -> None:
    if value is not None and not is_number(value):
        problems.append(Problem(path, f"must be a finite number, got {shown_number(value)}"))


def _optional_str(problems: list[Problem], path: str, value: object) -> None:
    if value is not None:
        problems.extend(str_problems(path, value))


def _optional_aware(problems: list[Problem], path: str, value: object) -> None:
    if value is None:
        return
    moment = in_utc(value)  # the wire and the stores write it in UTC
    if not isinstance(moment, datetime):
        problems.append(Problem(path, moment.needed(value)))


def raise_problems(subject: str, problems: Sequence[Problem]) -> None:
    """Raise one :class:`ValidationError` listing ``problems``, if there are any."""
    if problems:
        raise ValidationError(subject, problems)


@frozen
class Product:
    """The product a cart item belongs to."""

    name: str

    def __attrs_post_init__(self) -> None:
        """Refuse a name that is not valid text."""
        raise_problems("product", str_problems("name", self.name))


@frozen
class AdditionalCost:
    """An additional cost (shipping, gift wrap) by its Campaign Manager name."""

    price: float

    def __attrs_post_init__(self) -> None:
        """Refuse a price that is not a finite number."""
        if not is_number(self.price):
            raise ValidationError.single(
                "additional cost",
                "price",
                f"must be a finite number, got {shown_number(self.price)}",
            )


def costs_problems(costs: object, path: str) -> list[Problem]:
    """Problems of a mapping of additional costs: its keys must be names, its values costs."""
    if not isinstance(costs, Mapping):
        return [Problem(path, f"must be a mapping of names to AdditionalCost, got {shown(costs)}")]
    return _typed_values_problems(costs, path, AdditionalCost)


def _typed_values_problems(values: Mapping[object, object], path: str, kind: type) -> list[Problem]:
    """Keys that are not valid text names, and values that are not ``kind``, each named."""
    problems: list[Problem] = []
    for key, value in values.items():
        if not isinstance(key, str):
            problems.append(Problem(path, f"key {shown(key)} is not a string"))
        elif not is_text(key):
            problems.append(Problem(key_path(path, key), f"the key {text_problem(key)}"))
        elif not isinstance(value, kind):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            problems.append(
                Problem(
                    key_path(path, key), f"must be {article} {kind.__name__}, got {shown(value)}"
                )
            )
    return problems


def costs_total(costs: Mapping[str, AdditionalCost]) -> float:
    """The sum of the prices of ``costs``."""
    return math.fsum(cost.price for cost in costs.values())


def cart_total(cart: Iterable[CartItem]) -> float:
    """The value of ``cart``: the sum of its lines' :attr:`CartItem.line_total`."""
    return sum((line.line_total for line in cart), 0.0)


def value_problems(cart: Sequence[CartItem], costs: Mapping[str, AdditionalCost]) -> list[Problem]:
    """Sums of a valid cart and additional costs that are not finite numbers.

    Each line's value is finite (a :class:`CartItem` checks its own), but a cart's
    total can still overflow to infinity, which JSON cannot hold: such a session
    could be kept in memory but never written, sent or stored.
    """
    if not finite_total(lambda: cart_total(cart)):
        return [Problem("cart_items", "the lines' values add up to more than a float can hold")]
    if not finite_total(lambda: costs_total(costs)):
        return [Problem("additional_costs", "the costs add up to more than a float can hold")]
    if not finite_total(lambda: cart_total(cart) + costs_total(costs)):
        return [
            Problem(
                "additional_costs",
                "the cart's value plus these costs is more than a float can hold",
            )
        ]
    return []


@frozen(kw_only=True)
class PriceDetail:
    """One price type of a cart item and the price adjustment behind it (read-only)."""

    price: float | None = None
    adjustment_context_id: str | None = None
    adjustment_reference_id: str | None = None
    adjustment_effective_from: datetime | None = None
    adjustment_effective_until: datetime | None = None

    def __attrs_post_init__(self) -> None:
        """Check every field's type."""
        problems: list[Problem] = []
        _optional_number(problems, "price", self.price)
        _optional_str(problems, "adjustment_context_id", self.adjustment_context_id)
        _optional_str(problems, "adjustment_reference_id", self.adjustment_reference_id)
        _optional_aware(problems, "adjustment_effective_from", self.adjustment_effective_from)
        _optional_aware(problems, "adjustment_effective_until", self.adjustment_effective_until)
        raise_problems("price detail", problems)


def _number_check(name: str, value: object) -> list[Problem]:
    problems: list[Problem] = []
    _optional_number(problems, name, value)
    return problems


def _str_check(name: str, value: object) -> list[Problem]:
    problems: list[Problem] = []
    _optional_str(problems, name, value)
    return problems


def _aware_check(name: str, value: object) -> list[Problem]:
    problems: list[Problem] = []
    _optional_aware(problems, name, value)
    return problems


def _instance_check(kind: type) -> Callable[[str, object], list[Problem]]:
    def check(name: str, value: object) -> list[Problem]:
        if value is None or isinstance(value, kind):
            return []
        return [Problem(name, f"must be a {kind.__name__}, got {shown(value)}")]

    return check


def _int_check(name: str, value: object) -> list[Problem]:
    return [] if value is None else int_problems(name, value)


def _attributes_check(name: str, value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [Problem(name, f"must be a mapping, got {shown(value)}")]
    return json_problems(value, name)


def _prices_check(name: str, value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [Problem(name, f"must be a mapping, got {shown(value)}")]
    return _typed_values_problems(value, name, PriceDetail)


_ITEM_CHECKS: Final[Mapping[str, Callable[[str, object], list[Problem]]]] = {
    "name": _str_check,
    "price": _number_check,
    "category": _str_check,
    "product": _instance_check(Product),
    "weight": _number_check,
    "height": _number_check,
    "width": _number_check,
    "length": _number_check,
    "attributes": _attributes_check,
    "additional_costs": lambda name, value: costs_problems(value, name),
    "catalog_item_id": _int_check,
    "selected_price_type": _str_check,
    "adjustment_reference_id": _str_check,
    "adjustment_effective_from": _aware_check,
    "adjustment_effective_until": _aware_check,
    "prices": _prices_check,
}


# Private slots behind read-only properties (see ``_readonly``), so that building an
# item, and copying one when a return changes it, is not slowed by a __setattr__.
# Each slot names its argument (``alias=``): attrs strips the underscore itself, but
# type checkers other than mypy's attrs plugin (pyright) read the alias, not attrs' rule.
@define(kw_only=True, unsafe_hash=True, repr=False, on_setattr=setters.NO_OP)
class CartItem:
    """One line of a cart, with the fields of Talon.One's ``CartItem``.

    ``sku`` and ``quantity`` are required; everything else is optional (``None``
    means "not sent"). ``returned_quantity`` is maintained by returns; the cart
    ``position`` is the item's index in ``session.cart_items`` and not stored.
    Items are immutable: ``attrs.evolve(item, quantity=3)`` gives a changed copy.

    Raises:
        ValidationError: Every field that breaks a rule, with its name.
    """

    _sku: str = field(alias="sku")
    _quantity: int = field(alias="quantity")
    _name: str | None = field(default=None, alias="name")
    _price: float | None = field(default=None, alias="price")
    _category: str | None = field(default=None, alias="category")
    _product: Product | None = field(default=None, alias="product")
    _weight: float | None = field(default=None, alias="weight")
    _height: float | None = field(default=None, alias="height")
    _width: float | None = field(default=None, alias="width")
    _length: float | None = field(default=None, alias="length")
    _attributes: Mapping[str, JSONValue] = field(
        default=EMPTY_MAPPING, converter=freeze_mapping, alias="attributes"
    )
    _additional_costs: Mapping[str, AdditionalCost] = field(
        default=EMPTY_MAPPING, converter=freeze_mapping, alias="additional_costs"
    )
    _returned_quantity: int = field(default=0, alias="returned_quantity")
    _catalog_item_id: int | None = field(default=None, alias="catalog_item_id")
    _selected_price_type: str | None = field(default=None, alias="selected_price_type")
    _adjustment_reference_id: str | None = field(default=None, alias="adjustment_reference_id")
    _adjustment_effective_from: datetime | None = field(
        default=None, alias="adjustment_effective_from"
    )
    _adjustment_effective_until: datetime | None = field(
        default=None, alias="adjustment_effective_until"
    )
    _prices: Mapping[str, PriceDetail] = field(
        default=EMPTY_MAPPING, converter=freeze_mapping, alias="prices"
    )

    def __attrs_post_init__(self) -> None:
        """Check every field and report all problems at once."""
        if not self._plainly_valid():
            raise_problems(f"cart item {shown(self._sku)}", self.problems())

    @property
    def sku(self) -> str:
        """The stock keeping unit (non-empty)."""
        return self._sku

    @property
    def quantity(self) -> int:
        """Units ordered (at least 1)."""
        return self._quantity

    @property
    def name(self) -> str | None:
        """The item's display name."""
        return self._name

    @property
    def price(self) -> float | None:
        """The unit price."""
        return self._price

    @property
    def category(self) -> str | None:
        """The product category."""
        return self._category

    @property
    def product(self) -> Product | None:
        """The product the item belongs to."""
        return self._product

    @property
    def weight(self) -> float | None:
        """The item's weight."""
        return self._weight

    @property
    def height(self) -> float | None:
        """The item's height."""
        return self._height

    @property
    def width(self) -> float | None:
        """The item's width."""
        return self._width

    @property
    def length(self) -> float | None:
        """The item's length."""
        return self._length

    @property
    def attributes(self) -> Mapping[str, JSONValue]:
        """Custom cart item attributes (JSON values), immutable all the way down.

        As :attr:`CustomerSession.attributes`: arrays are tuples, objects immutable
        mappings; ``attrs.evolve(item, attributes=...)`` gives a changed copy.
        """
        return self._attributes

    @property
    def additional_costs(self) -> Mapping[str, AdditionalCost]:
        """Item-level additional costs by name, an immutable mapping."""
        return self._additional_costs

    @property
    def returned_quantity(self) -> int:
        """Units returned so far (maintained by the session's returns)."""
        return self._returned_quantity

    @property
    def catalog_item_id(self) -> int | None:
        """The item's id in a Talon.One cart item catalog."""
        return self._catalog_item_id

    @property
    def selected_price_type(self) -> str | None:
        """The price type chosen for this item."""
        return self._selected_price_type

    @property
    def adjustment_reference_id(self) -> str | None:
        """The price adjustment applied to this item."""
        return self._adjustment_reference_id

    @property
    def adjustment_effective_from(self) -> datetime | None:
        """When the price adjustment starts to apply."""
        return self._adjustment_effective_from

    @property
    def adjustment_effective_until(self) -> datetime | None:
        """When the price adjustment stops applying."""
        return self._adjustment_effective_until

    @property
    def prices(self) -> Mapping[str, PriceDetail]:
        """The item's price types and their adjustments, an immutable mapping."""
        return self._prices

    def __repr__(self) -> str:
        """The class and every field, by constructor name."""
        return public_repr(self)

    def _plainly_valid(self) -> bool:
        """A quick yes for the common item; anything else gets the full check."""
        sku, quantity, price = self._sku, self._quantity, self._price
        name, category = self._name, self._category
        return (
            type(sku) is str
            and sku != ""
            and is_text(sku)
            and type(quantity) is int
            and 1 <= quantity <= MAX_INTEGER
            and type(self._returned_quantity) is int
            and 0 <= self._returned_quantity <= quantity
            # The line's value, not just the price, must be a finite float.
            and (
                price is None
                or (type(price) is float and math.isfinite(price * quantity))
                or (type(price) is int and -_INT_LIMIT < price * quantity < _INT_LIMIT)
            )
            and (name is None or (type(name) is str and is_text(name)))
            and (category is None or (type(category) is str and is_text(category)))
            and self._product is None
            and self._weight is None
            and self._height is None
            and self._width is None
            and self._length is None
            and self._attributes is EMPTY_MAPPING
            and self._additional_costs is EMPTY_MAPPING
            and self._catalog_item_id is None
            and self._selected_price_type is None
            and self._adjustment_reference_id is None
            and self._adjustment_effective_from is None
            and self._adjustment_effective_until is None
            and self._prices is EMPTY_MAPPING
        )

    def problems(self) -> list[Problem]:
        """Every rule this item breaks (empty for a valid item)."""
        values: dict[str, object] = {
            a.alias or a.name: getattr(self, a.name) for a in fields(CartItem)
        }
        problems: list[Problem] = []
        sku, quantity, returned = values["sku"], values["quantity"], values["returned_quantity"]
        if not isinstance(sku, str) or not sku:
            problems.append(Problem("sku", f"must be a non-empty string, got {shown(sku):.80}"))
        else:
            problems.extend(str_problems("sku", sku))
        quantity_problems = int_problems("quantity", quantity, 1)
        problems.extend(quantity_problems)
        if not quantity_problems and (not is_int(returned) or not 0 <= returned <= quantity):  # type: ignore[operator] # is_int narrows at run time
            problems.append(
                Problem(
                    "returned_quantity",
                    f"must be an integer from 0 to quantity ({quantity}), got {shown(returned)}",
                )
            )
        for name, check in _ITEM_CHECKS.items():
            problems.extend(check(name, values[name]))
        if not problems:  # the value of a line whose fields are all valid
            problems.extend(self._value_problems())
        return problems

    def _value_problems(self) -> list[Problem]:
        price, quantity = self._price, self._quantity
        if price is not None and not finite_total(lambda: price * quantity):
            return [
                Problem("price", f"{shown(price)} x {quantity} units is more than a float can hold")
            ]
        if not finite_total(lambda: self.line_total):
            return [
                Problem(
                    "additional_costs",
                    "the line's value plus these costs is more than a float can hold",
                )
            ]
        return []

    @property
    def remaining_quantity(self) -> int:
        """Units not returned yet (``quantity - returned_quantity``)."""
        return self.quantity - self.returned_quantity

    @property
    def line_total(self) -> float:
        """The line's value, ``price x quantity`` plus its additional costs (0 without a price).

        Item-level additional costs count once per line; this is the conservative
        reading, since the public docs do not say whether they apply per unit.
        """
        price, costs = self._price, self._additional_costs
        base = 0.0 if price is None else price * self._quantity
        # ``is`` first: the truth of an immutabledict is a Python-level ``__len__``.
        return base if costs is EMPTY_MAPPING or not costs else base + costs_total(costs)

    @property
    def returned_total(self) -> float:
        """The value of the returned units (``price x returned_quantity``)."""
        return 0.0 if self.price is None else self.price * self.returned_quantity


protect(CartItem, lambda _name: "cart items are immutable; attrs.evolve() makes a changed copy")


@frozen
class ReturnedItem:
    """A return of ``quantity`` units of the cart item at ``position``.

    Args:
        position: The index of the item in ``session.cart_items``.
        quantity: How many units are returned (at least 1).
        sku: Optionally, the item's SKU; when given it must match the item.
    """

    position: int
    quantity: int
    sku: str | None = None

    def __attrs_post_init__(self) -> None:
        """Check the types and ranges that do not depend on the cart."""
        problems: list[Problem] = []
        problems.extend(int_problems("position", self.position, 0))
        problems.extend(int_problems("quantity", self.quantity, 1))
        if self.sku is not None and (not isinstance(self.sku, str) or not self.sku):
            problems.append(
                Problem("sku", f"must be a non-empty string, got {shown(self.sku):.80}")
            )
        elif self.sku is not None:
            problems.extend(str_problems("sku", self.sku))
        raise_problems("returned item", problems)


_NOT_SEQUENCES: Final = (ReturnedItem, str, bytes, Mapping)


class Unreadable:
    """What :func:`read_entries` gives for an iterable whose reading raised.

    It stands in for the entries until the validation refuses it; messages show it
    with the error (``an iterable that cannot be read (ValueError: ...)``).
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        """Keep the error the iterable raised."""
        self.error = error

    def __repr__(self) -> str:
        """The iterable and why it could not be read, for messages."""
        return f"an iterable that {unreadable(self.error)}"


def read_entries(items: Iterable[object]) -> tuple[object, ...] | Unreadable:
    """The entries of the caller's iterable ``items``, or :class:`Unreadable` when it raised."""
    try:
        return tuple(items)
    except Exception as exc:  # noqa: BLE001 - the caller's iterable failed: refused, named
        return Unreadable(exc)


def return_problems(
    cart: Sequence[CartItem], items: Iterable[ReturnedItem], path: str = "items"
) -> tuple[tuple[ReturnedItem, ...], list[Problem]]:
    """Check a return against the cart; return the items as a tuple and the problems.

    Refused: an empty return, an entry that is not a :class:`ReturnedItem`, a
    position that does not exist, the same position twice, more units than remain,
    a SKU that does not match the item at that position.
    """
    # Tuples and lists skip the abstract-class checks, which cost more than the rest.
    if type(items) is tuple:
        returned = items
    elif type(items) is list:
        returned = tuple(items)
    elif isinstance(items, _NOT_SEQUENCES) or not isinstance(items, Iterable):
        return (), [Problem(path, f"must be a sequence of ReturnedItem, got {shown(items)}")]
    else:
        entries = read_entries(items)
        if isinstance(entries, Unreadable):
            return (), [Problem(path, unreadable(entries.error))]
        returned = cast("tuple[ReturnedItem, ...]", entries)  # each entry is checked below
    problems: list[Problem] = []
    if not returned:
        problems.append(Problem(path, "a return needs at least one item"))
    seen: set[int] = set()
    for index, item in enumerate(returned):
        if not _plainly_returnable(cart, item, seen):
            problems.extend(_returned_item_problems(cart, item, f"{path}[{index}]", seen))
    return returned, problems


def _plainly_returnable(cart: Sequence[CartItem], item: object, seen: set[int]) -> bool:
    """A quick yes for a valid entry (noting its position); the full check names problems."""
    if type(item) is not ReturnedItem or item.position >= len(cart) or item.position in seen:
        return False
    line = cart[item.position]
    if (item.sku is None or item.sku == line.sku) and item.quantity <= line.remaining_quantity:
        seen.add(item.position)
        return True
    return False


def returned_list_problems(items: tuple[object, ...], path: str) -> list[Problem]:
    """Entries of a list of returned items that are no ReturnedItem, or repeat a position.

    Whether the positions exist in a cart is for the caller, who knows the cart.
    """
    problems: list[Problem] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        if not isinstance(item, ReturnedItem):
            problems.append(
                Problem(f"{path}[{index}]", f"must be a ReturnedItem, got {shown(item):.80}")
            )
        elif item.position in seen:
            problems.append(
                Problem(
                    f"{path}[{index}].position",
                    f"position {item.position} appears more than once",
                )
            )
        else:
            seen.add(item.position)
    return problems


def _returned_item_problems(
    cart: Sequence[CartItem], item: object, where: str, seen: set[int]
) -> list[Problem]:
    if not isinstance(item, ReturnedItem):
        return [Problem(where, f"must be a ReturnedItem, got {shown(item)}")]
    if item.position >= len(cart):
        return [
            Problem(
                f"{where}.position",
                f"no cart item at position {item.position} (the cart has {len(cart)})",
            )
        ]
    if item.position in seen:
        return [Problem(f"{where}.position", f"position {item.position} appears more than once")]
    seen.add(item.position)
    line = cart[item.position]
    problems: list[Problem] = []
    if item.sku is not None and item.sku != line.sku:
        problems.append(
            Problem(
                f"{where}.sku",
                f"{item.sku!r} does not match {line.sku!r} at position {item.position}",
            )
        )
    if item.quantity > line.remaining_quantity:
        problems.append(
            Problem(
                f"{where}.quantity",
                f"{item.quantity} is more than the {counted(line.remaining_quantity, 'unit')} "
                f"of {line.sku!r} that {'remains' if line.remaining_quantity == 1 else 'remain'}",
            )
        )
    return problems


def apply_returns(cart: Sequence[CartItem], items: Iterable[ReturnedItem]) -> tuple[CartItem, ...]:
    """The cart after a return checked by :func:`return_problems`."""
    lines = list(cart)
    for item in items:
        line = lines[item.position]
        lines[item.position] = _with_returned(line, line.returned_quantity + item.quantity)
    return tuple(lines)


def _with_returned(line: CartItem, returned: int) -> CartItem:
    # ``attrs.evolve`` would build and validate the whole item again, and a loop of
    # setattr() costs 5x these plain stores; the caller has checked the one value
    # that changes. tests/test_cart.py checks that every field is copied.
    copy = object.__new__(CartItem)
    copy._sku = line._sku
    copy._quantity = line._quantity
    copy._name = line._name
    copy._price = line._price
    copy._category = line._category
    copy._product = line._product
    copy._weight = line._weight
    copy._height = line._height
    copy._width = line._width
    copy._length = line._length
    copy._attributes = line._attributes
    copy._additional_costs = line._additional_costs
    copy._returned_quantity = returned
    copy._catalog_item_id = line._catalog_item_id
    copy._selected_price_type = line._selected_price_type
    copy._adjustment_reference_id = line._adjustment_reference_id
    copy._adjustment_effective_from = line._adjustment_effective_from
    copy._adjustment_effective_until = line._adjustment_effective_until
    copy._prices = line._prices
    return copy


def cart_problems(cart: Sequence[object], path: str = "cart_items") -> list[Problem]:
    """The limits of the real API on a whole cart: item count, units, item types."""
    problems: list[Problem] = []
    units = 0
    for index, line in enumerate(cart):
        if not isinstance(line, CartItem):
            problems.append(Problem(f"{path}[{index}]", f"must be a CartItem, got {shown(line)}"))
        else:
            units += line.quantity
    if len(cart) > MAX_CART_ITEMS:
        problems.append(
            Problem(path, f"{len(cart)} items; a session holds at most {MAX_CART_ITEMS}")
        )
    if units > MAX_UNITS:
        problems.append(Problem(path, f"{units} units; a session holds at most {MAX_UNITS}"))
    return problems
