"""The customer session: an attrs class whose state only its triggers can change."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

import attrs
from attrs import Factory, define, field, setters

from customer_session import _transaction
from customer_session._cart import (
    EMPTY_MAPPING,
    MAX_CART_ITEMS,
    MAX_CODE_LENGTH,
    MAX_IDENTIFIERS,
    MAX_INTEGRATION_ID_LENGTH,
    MAX_UNITS,
    AdditionalCost,
    CartItem,
    JSONValue,
    cart_problems,
    cart_total,
    costs_total,
    freeze_mapping,
    is_int,
    is_number,
    is_text,
    json_problems,
    key_problems,
    raise_problems,
    shown,
    str_problems,
    value_problems,
)
from customer_session._readonly import protect, public_repr
from customer_session._records import TransitionRecord
from customer_session._spec import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    Specification,
    State,
    Trigger,
)
from customer_session.exceptions import (
    Problem,
    SessionNotEditable,
    UnknownTrigger,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Workflow

if TYPE_CHECKING:
    from customer_session._cart import ReturnedItem
    from customer_session._transaction import Asking
    from customer_session.hooks import Refusal


def _hint(name: str) -> str:
    if name == "state":
        return "fire a trigger instead: close(), cancel(), return_items(...)"
    if name in _EDITS:
        return f"use {_EDITS[name]} (only while the session is open)"
    return "it is maintained by the library"


_EDITS: Final = {
    "cart_items": "add_item(), update_item(), remove_item() or set_cart_items()",
    "coupon": "set_coupon()",
    "referral": "set_referral()",
    "profile_id": "set_profile_id()",
    "identifiers": "set_identifiers()",
    "attributes": "set_attribute() or remove_attribute()",
    "additional_costs": "set_additional_cost()",
}


def _to_state(value: State | str) -> State:
    if type(value) is State:
        return value
    try:
        return State(value)
    except ValueError:
        return value  # type: ignore[return-value] # reported with its path by the validation


def _plain_cart(cart: object) -> bool:
    """A tuple of cart items well within the limits (the quick check of a new session)."""
    if type(cart) is not tuple:
        return False
    if not cart:
        return True
    units = 0
    value = 0.0
    for line in cart:
        if type(line) is not CartItem:
            return False
        units += line.quantity
        # A valid line's value converts to a finite float, so this cannot raise.
        value += line.line_total
    return len(cart) <= MAX_CART_ITEMS and units <= MAX_UNITS and math.isfinite(value)


def _to_tuple(value: object) -> object:
    if type(value) is tuple:
        return value
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        return tuple(value)
    return value  # reported by the validation


# Converters: a tuple is kept as it is, anything else goes through _to_tuple (whose
# result the validation checks), without a cast() call on every new session.
def _cart_tuple(value: Iterable[CartItem]) -> tuple[CartItem, ...]:
    return value if type(value) is tuple else _to_tuple(value)  # type: ignore[return-value]


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return value if type(value) is tuple else _to_tuple(value)  # type: ignore[return-value]


def _default_workflow(self: CustomerSession) -> Workflow:
    return type(self).default_workflow


def _now(self: CustomerSession) -> datetime:
    return self._workflow.now()


def _same_as_created(self: CustomerSession) -> datetime:
    return self._created


# Fields are private slots behind read-only properties (see ``_readonly``).
@define(kw_only=True, repr=False, on_setattr=setters.NO_OP)
class CustomerSession:
    """A Talon.One customer session whose state follows the transition table.

    A new session starts ``open`` (the default) or ``closed``; use :meth:`restore`
    to load one in any state. Fields cannot be assigned directly: the state changes
    only through triggers (:meth:`close`, :meth:`cancel`, :meth:`return_items`), and
    the cart and codes through the edit methods, only while the session is open.

    Args:
        integration_id: The session id chosen by your integration (1-1000 chars).
        profile_id: The customer profile, if known.
        coupon: A coupon code (at most 100 characters).
        referral: A referral code (at most 100 characters).
        state: ``State.OPEN`` (default) or ``State.CLOSED``.
        cart_items: The cart.
        identifiers: Custom identifiers (at most 5).
        attributes: Custom session attributes (JSON values, copied and frozen).
        first_session: Whether this is the profile's first session.
        discounts: Discount values by label, as Talon.One reports them.
        application_id: The Talon.One application (0 until it is known).
        additional_costs: Session-level additional costs (shipping) by name.
        created: When the session was created (default: the workflow's clock).
        updated: When it last changed (default: ``created``).
        workflow: The workflow whose guards and hooks apply (default: the class's).

    Raises:
        ValidationError: Every invalid field, each with its path.
        WorkflowError: ``workflow`` drives another specification.
    """

    specification: ClassVar[Specification] = CUSTOMER_SESSION
    """The transition table of this class."""
    default_workflow: ClassVar[Workflow]
    """The workflow of sessions created without ``workflow=``."""

    # Each private field's constructor argument is its name without the underscore.
    # Mappings are frozen in ``_normalize`` rather than by converters: a converter
    # runs on every construction, and the common session keeps the empty default.
    _workflow: Workflow = field(
        default=Factory(_default_workflow, takes_self=True), eq=False, repr=False
    )
    _integration_id: str
    _state: State = field(default=State.OPEN, converter=_to_state)
    _profile_id: str | None = None
    _coupon: str | None = None
    _referral: str | None = None
    _cart_items: tuple[CartItem, ...] = field(default=(), converter=_cart_tuple)
    _identifiers: tuple[str, ...] = field(default=(), converter=_str_tuple)
    _attributes: Mapping[str, JSONValue] = EMPTY_MAPPING
    _first_session: bool = True
    _discounts: Mapping[str, float] = EMPTY_MAPPING
    _application_id: int = 0
    _additional_costs: Mapping[str, AdditionalCost] = EMPTY_MAPPING
    _created: datetime = field(default=Factory(_now, takes_self=True))
    _updated: datetime = field(default=Factory(_same_as_created, takes_self=True))
    _update_count: int = field(default=1, init=False)
    _history: tuple[TransitionRecord, ...] = field(default=(), init=False)
    # Set while the session is busy: the trigger under way, or what can()/why_not() ask.
    _running: Trigger | Asking | None = field(default=None, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        """Normalize and validate every field; a new session starts in an initial state."""
        if self._plainly_valid():
            return
        self._normalize()
        problems = self._field_problems()
        spec = self.specification
        if isinstance(self._state, State) and self._state not in spec.initial_states:
            allowed = " or ".join(sorted(spec.initial_states))
            problems.append(
                Problem(
                    "state",
                    f"a new session starts {allowed}, not '{self._state}'; "
                    "use restore() to load a session in any state",
                )
            )
        raise_problems(self._subject(), problems)

    # -- the fields, read-only ------------------------------------------------

    @property
    def workflow(self) -> Workflow:
        """The workflow whose guards and hooks apply to this session."""
        return self._workflow

    @property
    def integration_id(self) -> str:
        """The session id chosen by your integration."""
        return self._integration_id

    @property
    def state(self) -> State:
        """The current state; only triggers change it."""
        return self._state

    @property
    def profile_id(self) -> str | None:
        """The customer profile, if known (see :meth:`set_profile_id`)."""
        return self._profile_id

    @property
    def coupon(self) -> str | None:
        """The coupon code, if any (see :meth:`set_coupon`)."""
        return self._coupon

    @property
    def referral(self) -> str | None:
        """The referral code, if any (see :meth:`set_referral`)."""
        return self._referral

    @property
    def cart_items(self) -> tuple[CartItem, ...]:
        """The cart, in position order (see :meth:`add_item` and the other edits)."""
        return self._cart_items

    @property
    def identifiers(self) -> tuple[str, ...]:
        """Custom identifiers (see :meth:`set_identifiers`)."""
        return self._identifiers

    @property
    def attributes(self) -> Mapping[str, JSONValue]:
        """Custom session attributes, immutable all the way down (see :meth:`set_attribute`).

        JSON arrays read back as tuples and objects as immutable mappings, so that
        no one holding the session, or a copy of it, can change a value in place.
        """
        return self._attributes

    @property
    def first_session(self) -> bool:
        """Whether this is the profile's first session."""
        return self._first_session

    @property
    def discounts(self) -> Mapping[str, float]:
        """Discount values by label, as Talon.One reports them."""
        return self._discounts

    @property
    def application_id(self) -> int:
        """The Talon.One application (0 until it is known)."""
        return self._application_id

    @property
    def additional_costs(self) -> Mapping[str, AdditionalCost]:
        """Session-level additional costs by name (see :meth:`set_additional_cost`)."""
        return self._additional_costs

    @property
    def created(self) -> datetime:
        """When the session was created (aware, UTC)."""
        return self._created

    @property
    def updated(self) -> datetime:
        """When the session last changed (aware, UTC); never before :attr:`created`."""
        return self._updated

    @property
    def update_count(self) -> int:
        """How many changes the session has had, counting its creation as the first."""
        return self._update_count

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Every committed transition, oldest first."""
        return self._history

    def __repr__(self) -> str:
        """The class and every field, by constructor name."""
        return public_repr(self)

    # -- validation ---------------------------------------------------------

    def _subject(self) -> str:
        return f"session {self._integration_id!r}"

    def _plainly_valid(self) -> bool:
        """A quick yes for the common new session: no cart limits near, defaults kept.

        Anything unusual falls through to :meth:`_normalize` and
        :meth:`_field_problems`, which find and name every problem.
        """
        cls = type(self)
        iid, coupon, referral = self._integration_id, self._coupon, self._referral
        created, updated = self._created, self._updated
        profile_id = self._profile_id
        return (
            type(iid) is str
            and 0 < len(iid) <= MAX_INTEGRATION_ID_LENGTH
            and is_text(iid)
            and type(self._state) is State
            and self._state in cls.specification.initial_states
            and (
                self._workflow is cls.default_workflow
                or self._workflow.specification is cls.specification
            )
            and (profile_id is None or (type(profile_id) is str and is_text(profile_id)))
            and (
                coupon is None
                or (type(coupon) is str and len(coupon) <= MAX_CODE_LENGTH and is_text(coupon))
            )
            and (
                referral is None
                or (
                    type(referral) is str and len(referral) <= MAX_CODE_LENGTH and is_text(referral)
                )
            )
            and _plain_cart(self._cart_items)
            and self._identifiers == ()
            and self._attributes is EMPTY_MAPPING
            and self._discounts is EMPTY_MAPPING
            and self._additional_costs is EMPTY_MAPPING
            and type(self._first_session) is bool
            and type(self._application_id) is int
            and self._application_id >= 0
            and type(created) is datetime
            and created.tzinfo is UTC
            and (
                updated is created
                or (type(updated) is datetime and updated.tzinfo is UTC and updated >= created)
            )
        )

    def _normalize(self) -> None:
        """Store the mappings as immutable copies (the caller's dicts may change).

        The converters of the other fields run in ``__init__``, where the type of
        their argument differs from the stored one. A value that cannot be
        converted is kept as it is for :meth:`_field_problems` to report.
        """
        self._attributes = freeze_mapping(self._attributes)
        self._discounts = freeze_mapping(self._discounts)
        self._additional_costs = freeze_mapping(self._additional_costs)

    def _field_problems(self) -> list[Problem]:
        """Every field that breaks a rule (normalizing timestamps to UTC on the way)."""
        spec = self.specification
        workflow: object = self._workflow
        if not isinstance(workflow, Workflow) or workflow.specification != spec:
            raise WorkflowError(
                f"{type(self).__name__} follows {spec.name!r}; "
                f"{workflow!r} drives another specification"
            )
        problems: list[Problem] = []
        values: dict[str, object] = {
            a.alias: getattr(self, a.name) for a in attrs.fields(type(self))
        }
        for name, check in _FIELD_CHECKS.items():
            problems.extend(check(name, values[name]))
        state = values["state"]
        if not isinstance(state, State) or state not in spec.states:
            problems.append(
                Problem("state", f"must be one of {', '.join(spec.states)}, got {state!r}")
            )
        created, updated = self._created, self._updated
        if isinstance(created, datetime) and created.tzinfo is not UTC:
            self._created = created = created.astimezone(UTC)
        if isinstance(updated, datetime) and updated.tzinfo is not UTC:
            self._updated = updated = updated.astimezone(UTC)
        if not problems and updated < created:
            problems.append(Problem("updated", "must not be earlier than created"))
        if not problems:  # the sums of a cart and costs whose entries are all valid
            problems.extend(value_problems(self._cart_items, self._additional_costs))
        return problems

    # -- restoring, copying, pickling ---------------------------------------

    @classmethod
    def restore(
        cls,
        *,
        state: State | str,
        update_count: int = 1,
        history: Iterable[TransitionRecord] = (),
        **fields: Any,
    ) -> Self:
        """Load a session in any state of the table (from a store or the wire).

        Unlike the constructor, any state of the specification is accepted. The
        history, when given, must be a chain of edges of the table ending in
        ``state``.

        Args:
            state: The stored state.
            update_count: The stored update count (at least 1).
            history: The stored transition records.
            **fields: Every other constructor argument.

        Raises:
            ValidationError: Every invalid field, each with its path.
        """
        session = cls(**fields)
        records = tuple(history) if isinstance(history, Iterable) else history
        problems: list[Problem] = []
        restored = _to_state(state)
        if not isinstance(restored, State) or restored not in cls.specification.states:
            choices = ", ".join(cls.specification.states)
            problems.append(Problem("state", f"must be one of {choices}, got {state!r}"))
        if not is_int(update_count) or update_count < 1:
            problems.append(
                Problem("update_count", f"must be an integer >= 1, got {update_count!r}")
            )
        if not problems:
            assert isinstance(restored, State)  # noqa: S101 - narrowed by the check above
            problems.extend(_history_problems(cls.specification, records, restored))
        raise_problems(session._subject(), problems)
        session._state = restored
        session._update_count = update_count
        session._history = records
        return session

    def snapshot(self) -> dict[str, Any]:
        """Every field as a plain dict of constructor/restore arguments.

        ``type(session).restore(**session.snapshot())`` gives an equal session.
        """
        values = {
            a.alias: getattr(self, a.name) for a in attrs.fields(type(self)) if a.eq and a.init
        }
        values.update(state=self._state, update_count=self._update_count, history=self._history)
        values["workflow"] = self._workflow
        return values

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy through :meth:`restore`, so every load is validated."""
        return (_restore, (type(self), self.snapshot()))

    def __getstate__(self) -> dict[str, Any]:
        """The same values :meth:`snapshot` returns."""
        return self.snapshot()

    def __setstate__(self, values: dict[str, Any]) -> None:
        """Overwrite this session with validated ``values`` (as from :meth:`snapshot`).

        Raises:
            ValidationError: ``values`` do not make a valid session; nothing changed.
            SessionNotEditable: A trigger on this session is in progress, or
                ``can()``/``why_not()`` are asking its guards; nothing changed.
        """
        _transaction.check_idle(self, "__setstate__")
        if not isinstance(values, Mapping):
            raise ValidationError.single("session", "$", f"cannot load from {values!r}")
        loaded = _restore(type(self), dict(values))
        for a in attrs.fields(type(self)):
            setattr(self, a.name, getattr(loaded, a.name))

    # -- the machine ----------------------------------------------------------

    @property
    def allowed_triggers(self) -> frozenset[Trigger]:
        """The triggers the table allows from the current state (guards not run)."""
        return _transaction.allowed(self)

    def can(self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()) -> bool:
        """Whether ``trigger`` would be accepted now (table, arguments and guards).

        Nothing changes; guards run with the event the trigger would have.
        """
        return not self.why_not(trigger, items=items)

    def why_not(
        self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()
    ) -> tuple[Refusal, ...]:
        """Why ``trigger`` would be refused now; empty when it would be accepted.

        Reports the table's refusal, every invalid returned item, or every guard
        that refuses (all guards run, so the answer is complete). Nothing changes.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
            HookFailed: A guard raised.
        """
        return _transaction.why_not(self, self._trigger(trigger), items)

    def fire(
        self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()
    ) -> TransitionRecord:
        """Fire ``trigger`` by name (as a log replay does); same as calling its method.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
        """
        return _transaction.fire(self, self._trigger(trigger), items)

    def close(self) -> TransitionRecord:
        """``open -> closed``: the order is placed; the cart becomes read-only.

        Returns:
            The committed history record.

        Raises:
            IllegalTransition: The session is not open.
            GuardRejected: A guard refused; nothing changed.
            HookFailed: A hook before the commit point raised; nothing changed.
            AfterCommitHookFailed: Committed, but an after-commit hook raised.
        """
        return _transaction.fire(self, Trigger.CLOSE, ())

    def cancel(self) -> TransitionRecord:
        """``open|closed|partially_returned -> cancelled``: the terminal state.

        Raises the same errors as :meth:`close`.
        """
        return _transaction.fire(self, Trigger.CANCEL, ())

    def return_items(self, items: Iterable[ReturnedItem]) -> TransitionRecord:
        """Return cart items: ``closed -> partially_returned``, then further returns.

        Each item names a cart position and a quantity; a position may appear once
        per call, and no more units than remain can be returned. Returning every
        unit still leaves the session ``partially_returned``.

        Raises:
            ValidationError: The items are invalid for this cart; nothing changed.
            IllegalTransition: The session is neither closed nor partially returned.
        """
        return _transaction.fire(self, Trigger.RETURN_ITEMS, items)

    def _trigger(self, trigger: Trigger | str) -> Trigger:
        try:
            known = Trigger(trigger)
        except ValueError:
            known = None
        if known is None or known not in self.specification.triggers:
            raise UnknownTrigger(trigger, self.specification.triggers)
        return known

    @contextmanager
    def atomic(self) -> Iterator[Self]:
        """Apply several edits and triggers as one change: all of them, or none.

        If the block raises, every field and the history are put back to what they
        were when it started, and the exception propagates. Hooks run as each
        trigger fires; after-commit hooks of a trigger inside the block have run by
        the time a later step fails, so keep effects that must not happen for a
        rolled-back block out of after-commit hooks (or use a store's durable
        effects, which commit with the data).

        Yields:
            The session itself.
        """
        saved = _transaction.snapshot(self)
        try:
            yield self
        except BaseException:
            _transaction.rollback(self, saved)
            raise

    # -- derived values -------------------------------------------------------

    @property
    def cart_item_total(self) -> float:
        """The value of the cart (every line's ``price x quantity`` and item costs)."""
        return cart_total(self.cart_items)

    @property
    def additional_cost_total(self) -> float:
        """The session-level additional costs (shipping and the like)."""
        return costs_total(self.additional_costs)

    @property
    def total(self) -> float:
        """The cart plus additional costs, before discounts.

        Returns do not lower it (as in Talon.One, whose ``total`` keeps the ordered
        value); :attr:`returned_total` is the value of what came back.
        """
        return self.cart_item_total + self.additional_cost_total

    @property
    def returned_total(self) -> float:
        """The value of the returned units."""
        return sum((line.returned_total for line in self.cart_items), 0.0)

    @property
    def units(self) -> int:
        """The number of units in the cart."""
        return sum(line.quantity for line in self.cart_items)

    # -- edits (open sessions only) ------------------------------------------

    def _edit(self, operation: str, **changes: Any) -> None:
        if self.state is not State.OPEN:
            raise SessionNotEditable(
                operation=operation, state=self.state, integration_id=self.integration_id
            )
        if self._running is not None:
            _transaction.check_edit(self, operation)
        slots = {f"_{name}": value for name, value in changes.items()}
        before = {slot: getattr(self, slot) for slot in slots}
        for slot, value in slots.items():
            setattr(self, slot, value)
        # Every field was valid before, so any problem now comes from these changes.
        problems = self._field_problems()
        if problems:
            for slot, value in before.items():
                setattr(self, slot, value)
            raise ValidationError(f"{self._subject()}: {operation}()", problems)
        _transaction.touch(self)

    def add_item(self, item: CartItem) -> int:
        """Append ``item`` to the cart; return its position.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: A limit would be exceeded; nothing changed.
        """
        self._edit("add_item", cart_items=(*self.cart_items, item))
        return len(self.cart_items) - 1

    def update_item(self, position: int, item: CartItem) -> None:
        """Replace the cart item at ``position``.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: No item at ``position``, or a limit would be exceeded.
        """
        self._check_position("update_item", position)
        cart = list(self.cart_items)
        cart[position] = item
        self._edit("update_item", cart_items=tuple(cart))

    def remove_item(self, position: int) -> CartItem:
        """Remove and return the cart item at ``position``; later items move up.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: No item at ``position``.
        """
        self._check_position("remove_item", position)
        removed = self.cart_items[position]
        self._edit(
            "remove_item", cart_items=self.cart_items[:position] + self.cart_items[position + 1 :]
        )
        return removed

    def set_cart_items(self, items: Iterable[CartItem]) -> None:
        """Replace the whole cart (as a Talon.One update with ``cartItems`` does).

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: An entry is not a CartItem or a limit would be exceeded.
        """
        self._edit("set_cart_items", cart_items=_cart_tuple(items))

    def set_coupon(self, code: str | None) -> None:
        """Set the coupon code (``None`` removes it)."""
        self._edit("set_coupon", coupon=code)

    def set_referral(self, code: str | None) -> None:
        """Set the referral code (``None`` removes it)."""
        self._edit("set_referral", referral=code)

    def set_profile_id(self, profile_id: str | None) -> None:
        """Set the customer profile (``None`` for an anonymous session)."""
        self._edit("set_profile_id", profile_id=profile_id)

    def set_identifiers(self, identifiers: Iterable[str]) -> None:
        """Replace the custom identifiers (at most 5)."""
        self._edit("set_identifiers", identifiers=_str_tuple(identifiers))

    def set_attribute(self, name: str, value: JSONValue) -> None:
        """Set one custom session attribute to a JSON value (a frozen copy of it).

        To change a value inside an attribute, set the attribute to a new value,
        e.g. ``s.set_attribute("tags", [*s.attributes["tags"], "gift"])``.
        """
        self._edit("set_attribute", attributes=freeze_mapping({**self.attributes, name: value}))

    def remove_attribute(self, name: str) -> None:
        """Remove one custom session attribute (absent names are ignored)."""
        kept = {k: v for k, v in self.attributes.items() if k != name}
        self._edit("remove_attribute", attributes=freeze_mapping(kept))

    def set_additional_cost(self, name: str, price: float | None) -> None:
        """Set a session-level additional cost (``None`` removes it)."""
        costs = {k: v for k, v in self.additional_costs.items() if k != name}
        if price is not None:
            costs[name] = AdditionalCost(price)
        self._edit("set_additional_cost", additional_costs=freeze_mapping(costs))

    def _check_position(self, operation: str, position: int) -> None:
        if not is_int(position) or not 0 <= position < len(self.cart_items):
            raise ValidationError.single(
                f"{self._subject()}: {operation}()",
                "position",
                f"no cart item at position {position!r} (the cart has {len(self.cart_items)})",
            )


@define(kw_only=True, repr=False, on_setattr=setters.NO_OP)
class ReopenableCustomerSession(CustomerSession):
    """A session that also allows Talon.One's reopen endpoint: ``closed -> open``.

    Opt-in: its table is the four paths of the seed plus ``reopen``. A reopened
    session is open again, so its cart can be edited and it can be closed again.
    """

    specification: ClassVar[Specification] = REOPENABLE_SESSION
    default_workflow: ClassVar[Workflow]

    def reopen(self) -> TransitionRecord:
        """``closed -> open``: Talon.One rolls back the effects of the close.

        Raises the same errors as :meth:`CustomerSession.close`.
        """
        return _transaction.fire(self, Trigger.REOPEN, ())


protect(CustomerSession, _hint)
CustomerSession.default_workflow = Workflow(CUSTOMER_SESSION, name="customer_session.default")
ReopenableCustomerSession.default_workflow = Workflow(
    REOPENABLE_SESSION, name="customer_session.reopenable.default"
)


def _integration_id_problems(name: str, value: object) -> list[Problem]:
    if isinstance(value, str) and 1 <= len(value) <= MAX_INTEGRATION_ID_LENGTH:
        return str_problems(name, value)
    return [
        Problem(
            name,
            f"must be a string of 1 to {MAX_INTEGRATION_ID_LENGTH} characters, got {value!r:.80}",
        )
    ]


def _bool_problems(name: str, value: object) -> list[Problem]:
    return [] if isinstance(value, bool) else [Problem(name, f"must be a bool, got {value!r}")]


def _count_problems(name: str, value: object) -> list[Problem]:
    if is_int(value) and value >= 0:  # type: ignore[operator] # is_int narrows at run time
        return []
    return [Problem(name, f"must be an integer >= 0, got {value!r}")]


def _aware_problems(name: str, value: object) -> list[Problem]:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return []
    return [Problem(name, f"must be an aware datetime, got {value!r}")]


def _restore(cls: type[CustomerSession], values: dict[str, Any]) -> CustomerSession:
    return cls.restore(**values)


def _code_problems(name: str, value: object, limit: int | None) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [Problem(name, f"must be a string or None, got {value!r:.80}")]
    if limit is not None and len(value) > limit:
        return [Problem(name, f"{len(value)} characters; at most {limit} are allowed")]
    return str_problems(name, value)


def _cart_problems(cart: object) -> list[Problem]:
    if not isinstance(cart, tuple):
        return [Problem("cart_items", f"must be a sequence of CartItem, got {cart!r}")]
    return cart_problems(cart)


def _identifier_problems(identifiers: object) -> list[Problem]:
    if not isinstance(identifiers, tuple):
        return [Problem("identifiers", f"must be a sequence of strings, got {identifiers!r}")]
    problems = [p for i, v in enumerate(identifiers) for p in str_problems(f"identifiers[{i}]", v)]
    if len(identifiers) > MAX_IDENTIFIERS:
        problems.append(
            Problem("identifiers", f"{len(identifiers)} given; at most {MAX_IDENTIFIERS}")
        )
    return problems


def _mapping_problems(name: str, value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [Problem(name, f"must be a mapping, got {value!r}")]
    return json_problems(value, name)


def _discount_problems(discounts: object) -> list[Problem]:
    if not isinstance(discounts, Mapping):
        return [Problem("discounts", f"must be a mapping, got {discounts!r}")]
    return [
        Problem(f"discounts.{k}", f"must map a label to a finite number, got {shown(v)}")
        for k, v in discounts.items()
        if not isinstance(k, str) or not is_number(v)
    ] + key_problems("discounts", discounts)


def _cost_problems(costs: object) -> list[Problem]:
    if not isinstance(costs, Mapping):
        return [Problem("additional_costs", f"must be a mapping, got {costs!r}")]
    return [
        Problem(f"additional_costs.{k}", f"must be an AdditionalCost, got {v!r}")
        for k, v in costs.items()
        if not isinstance(k, str) or not isinstance(v, AdditionalCost)
    ] + key_problems("additional_costs", costs)


def _history_problems(spec: Specification, records: object, state: State) -> list[Problem]:
    if not isinstance(records, tuple):
        return [Problem("history", f"must be a sequence of TransitionRecord, got {records!r}")]
    problems: list[Problem] = []
    previous: TransitionRecord | None = None
    for index, record in enumerate(records):
        where = f"history[{index}]"
        if not isinstance(record, TransitionRecord):
            problems.append(Problem(where, f"must be a TransitionRecord, got {record!r}"))
            return problems
        if spec.target(record.source, record.trigger) is not record.destination:
            problems.append(
                Problem(
                    where,
                    f"{record.source} --{record.trigger}--> "
                    f"{record.destination} is not an edge of {spec.name!r}",
                )
            )
        if previous is not None and previous.destination is not record.source:
            problems.append(
                Problem(
                    where,
                    f"starts in '{record.source}' but the previous "
                    f"record ended in '{previous.destination}'",
                )
            )
        previous = record
    if previous is not None and previous.destination is not state:
        problems.append(
            Problem("history", f"ends in '{previous.destination}' but the state is '{state}'")
        )
    return problems


_FIELD_CHECKS: Final[Mapping[str, Callable[[str, object], list[Problem]]]] = {
    "integration_id": _integration_id_problems,
    "profile_id": lambda name, value: _code_problems(name, value, None),
    "coupon": lambda name, value: _code_problems(name, value, MAX_CODE_LENGTH),
    "referral": lambda name, value: _code_problems(name, value, MAX_CODE_LENGTH),
    "cart_items": lambda _name, value: _cart_problems(value),
    "identifiers": lambda _name, value: _identifier_problems(value),
    "attributes": _mapping_problems,
    "discounts": lambda _name, value: _discount_problems(value),
    "additional_costs": lambda _name, value: _cost_problems(value),
    "first_session": _bool_problems,
    "application_id": _count_problems,
    "created": _aware_problems,
    "updated": _aware_problems,
}
