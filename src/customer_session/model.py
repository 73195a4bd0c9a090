"""The customer session: an attrs class whose state only its triggers can change."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, ClassVar, Final, Required, Self, TypedDict, Unpack, cast
from weakref import WeakKeyDictionary

import attrs
from attrs import Factory, define, field, setters

from customer_session import _transaction
from customer_session._cart import (
    EMPTY_MAPPING,
    MAX_CART_ITEMS,
    MAX_CODE_LENGTH,
    MAX_IDENTIFIERS,
    MAX_INTEGER,
    MAX_INTEGRATION_ID_LENGTH,
    MAX_UNITS,
    AdditionalCost,
    CartItem,
    JSONValue,
    ReturnedItem,
    Unreadable,
    cart_problems,
    cart_total,
    costs_problems,
    costs_total,
    finite_total,
    freeze_mapping,
    int_problems,
    is_int,
    is_number,
    is_text,
    json_problems,
    key_path,
    key_problems,
    raise_problems,
    read_entries,
    returned_list_problems,
    same,
    str_problems,
    value_problems,
)
from customer_session._readonly import protect, public_repr
from customer_session._records import TransitionRecord
from customer_session._show import counted, shown, shown_name, shown_number
from customer_session._spec import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    Specification,
    State,
    Trigger,
    member,
)
from customer_session._times import in_utc
from customer_session.exceptions import (
    Problem,
    UnknownTrigger,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Workflow

if TYPE_CHECKING:
    from customer_session._transaction import Asking, Edit, Held
    from customer_session.hooks import Refusal

# Also exported by the package, whose name users import them by.
__all__ = ["CustomerSession", "ReopenableCustomerSession", "SessionFields"]


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
    known = member(State, value)
    # Anything else is reported with its path by the validation.
    return value if known is None else known  # type: ignore[return-value]


_RESTORING: ContextVar[object] = ContextVar("customer_session.restoring", default=None)
"""The session :meth:`CustomerSession.restore` is building: it may be in any state.

The object itself, not a flag: user code that restore() runs meanwhile (the clock,
a mapping being copied) may create sessions too, and those start in an initial state.
"""


# Prices within this bound cannot add up beyond a float in a cart of MAX_UNITS units
# (halved: a margin for the rounding of the bound and of the sum).
_HIGH: Final = sys.float_info.max / MAX_UNITS / 2
_LOW: Final = -_HIGH
# The largest int the interpreter compares on its fast path (one 30-bit digit).
_SMALL: Final = 2**30 - 1


def _plain_cart(cart: object) -> bool:
    """A tuple of cart items well within the limits, none returned (the quick check).

    A cart with returned units goes to the full check, which knows in which
    states a session may have them.
    """
    if type(cart) is not tuple:
        return False
    if not cart:
        return True
    units = 0
    bounded = True
    for line in cart:  # slots, not properties: this runs for every new session
        if type(line) is not CartItem or line._returned_quantity:
            return False
        units += line._quantity
        if bounded and not (
            _LOW <= (line._price or 0.0) <= _HIGH and line._additional_costs is EMPTY_MAPPING
        ):
            bounded = False
    if len(cart) > MAX_CART_ITEMS or units > MAX_UNITS:
        return False
    # Each line's value is a finite float (the item checked it); only their sum may
    # not be, and only when a price is beyond the bound or an item has costs.
    return bounded or finite_total(lambda: cart_total(cart))


def _to_tuple(value: object) -> object:
    if type(value) is tuple:
        return value
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        try:  # read_entries() inline: one call less for every new session given a list
            return tuple(value)
        except Exception as exc:  # noqa: BLE001 - the caller's iterable failed: refused, named
            return Unreadable(exc)  # by the validation
    return value  # reported by the validation


# Converters: a tuple is kept as it is, anything else goes through _to_tuple (whose
# result the validation checks), without a cast() call on every new session.
def _cart_tuple(value: Iterable[CartItem]) -> tuple[CartItem, ...]:
    return value if type(value) is tuple else _to_tuple(value)  # type: ignore[return-value]


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return value if type(value) is tuple else _to_tuple(value)  # type: ignore[return-value]


_NOT_GIVEN: Final[Any] = attrs.NOTHING
"""An argument left out (typed Any: it stands for a value of each argument's type)."""


def _default_workflow(self: CustomerSession) -> Workflow:
    return type(self).default_workflow


def _now(self: CustomerSession) -> datetime:
    workflow: object = self._workflow
    if not isinstance(workflow, Workflow):  # before its clock is asked: it may have none
        raise _foreign_workflow(self, workflow)
    # Workflow.now()'s common case inline (one call less for every new session).
    try:
        now = workflow._tick()
    except Exception as exc:
        raise workflow._clock_failed(exc) from exc
    if type(now) is datetime and now.tzinfo is UTC:
        return now
    return workflow._checked_time(now)


def _check_session_class(session_class: object) -> None:
    """Refuse a ``session_class=`` argument that is no :class:`CustomerSession` class."""
    if not (isinstance(session_class, type) and issubclass(session_class, CustomerSession)):
        raise WorkflowError(
            f"session_class must be a CustomerSession class, got {shown(session_class):.80}"
        )


def _foreign_workflow(session: CustomerSession, workflow: object) -> WorkflowError:
    """The error for a session given ``workflow``, which does not drive its table."""
    if not isinstance(workflow, Workflow):
        return WorkflowError(
            f"{type(session).__name__}: workflow must be a Workflow, got {shown(workflow):.80}"
        )
    return WorkflowError(
        f"{type(session).__name__} follows {session.specification.name!r}; "
        f"{shown(workflow)} drives another specification"
    )


class SessionFields(TypedDict, total=False):
    """The arguments of :meth:`CustomerSession.restore`, by name, each with its type.

    Every constructor argument (see :class:`CustomerSession`), in the order of the
    fields, and restore's own: ``state`` (required, any state of the table),
    ``update_count`` and ``history``. A type checker refuses a misspelled or
    mistyped argument to ``restore()`` as it does the constructor's. A subclass
    with fields of its own restores them from a ``dict[str, Any]`` (as
    :meth:`CustomerSession.snapshot` gives), which is checked when it runs.
    """

    workflow: Workflow
    integration_id: Required[str]
    state: Required[State | str]
    profile_id: str | None
    coupon: str | None
    referral: str | None
    cart_items: Iterable[CartItem]
    identifiers: Iterable[str]
    attributes: Mapping[str, JSONValue]
    first_session: bool
    discounts: Mapping[str, float]
    application_id: int
    additional_costs: Mapping[str, AdditionalCost]
    created: datetime
    updated: datetime | None
    update_count: int
    history: Iterable[TransitionRecord]


# Fields are private slots behind read-only properties (see ``_readonly``).
# init=False: __init__ is written out below (see there why).
@define(kw_only=True, repr=False, on_setattr=setters.NO_OP, init=False)
class CustomerSession:
    """A Talon.One customer session whose state follows the transition table.

    A new session starts ``open`` (the default) or ``closed``; use :meth:`restore`
    to load one in any state. Fields cannot be assigned directly: the state changes
    only through triggers (:meth:`close`, :meth:`cancel`, :meth:`return_items`), and
    the cart and codes through the edit methods, only while the session is open.

    Args:
        integration_id: The session id chosen by your integration (1-1000 chars).
        profile_id: The customer profile, if known.
        coupon: A coupon code (1 to 100 characters), or ``None`` for none.
        referral: A referral code (1 to 100 characters), or ``None`` for none.
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
    default_workflow: ClassVar[Workflow] = Workflow(
        CUSTOMER_SESSION, name="customer_session.default"
    )
    """The workflow of sessions created without ``workflow=``.

    It drives the class's :attr:`specification`: a subclass with its own table
    must define its own default workflow, or the class statement raises
    :class:`~customer_session.exceptions.WorkflowError`.
    """

    # Each private field's constructor argument is its name without the underscore,
    # named by ``alias=`` too: type checkers other than mypy's attrs plugin (pyright)
    # read the alias, not attrs' rule, for the __init__ a subclass generates.
    # Mappings are frozen in ``_normalize`` rather than by converters: a converter
    # runs on every construction, and the common session keeps the empty default.
    _workflow: Workflow = field(
        default=Factory(_default_workflow, takes_self=True), eq=False, repr=False, alias="workflow"
    )
    _integration_id: str = field(alias="integration_id")
    _state: State = field(default=State.OPEN, converter=_to_state, alias="state")
    _profile_id: str | None = field(default=None, alias="profile_id")
    _coupon: str | None = field(default=None, alias="coupon")
    _referral: str | None = field(default=None, alias="referral")
    _cart_items: tuple[CartItem, ...] = field(default=(), converter=_cart_tuple, alias="cart_items")
    _identifiers: tuple[str, ...] = field(default=(), converter=_str_tuple, alias="identifiers")
    _attributes: Mapping[str, JSONValue] = field(default=EMPTY_MAPPING, alias="attributes")
    _first_session: bool = field(default=True, alias="first_session")
    _discounts: Mapping[str, float] = field(default=EMPTY_MAPPING, alias="discounts")
    _application_id: int = field(default=0, alias="application_id")
    _additional_costs: Mapping[str, AdditionalCost] = field(
        default=EMPTY_MAPPING, alias="additional_costs"
    )
    _created: datetime = field(default=Factory(_now, takes_self=True), alias="created")
    # None until __attrs_post_init__ makes it ``created`` (cheaper than a factory).
    _updated: datetime = field(default=None, alias="updated")
    _update_count: int = field(default=1, init=False)
    _history: tuple[TransitionRecord, ...] = field(default=(), init=False)
    # Set while the session is busy: the trigger under way, what can()/why_not() ask,
    # or the atomic() block that holds it.
    _running: Trigger | Asking | Held | None = field(default=None, init=False, eq=False, repr=False)

    # attrs would generate this __init__, calling a converter or factory for five of
    # the fields; written out, their common cases are tests in line (a new session
    # costs a fifth less). The fields keep their converters and factories: they
    # describe the arguments, and a subclass's generated __init__ uses them.
    def __init__(
        self,
        *,
        workflow: Workflow = _NOT_GIVEN,
        integration_id: str,
        state: State | str = State.OPEN,
        profile_id: str | None = None,
        coupon: str | None = None,
        referral: str | None = None,
        cart_items: Iterable[CartItem] = (),
        identifiers: Iterable[str] = (),
        attributes: Mapping[str, JSONValue] = EMPTY_MAPPING,
        first_session: bool = True,
        discounts: Mapping[str, float] = EMPTY_MAPPING,
        application_id: int = 0,
        additional_costs: Mapping[str, AdditionalCost] = EMPTY_MAPPING,
        created: datetime = _NOT_GIVEN,
        updated: datetime | None = None,
    ) -> None:
        """Set the fields, then validate them (see the class's arguments)."""
        self._workflow = type(self).default_workflow if workflow is _NOT_GIVEN else workflow
        self._integration_id = integration_id
        self._state = state if type(state) is State else _to_state(state)
        self._profile_id = profile_id
        self._coupon = coupon
        self._referral = referral
        self._cart_items = cart_items if type(cart_items) is tuple else _cart_tuple(cart_items)
        self._identifiers = identifiers if type(identifiers) is tuple else _str_tuple(identifiers)
        self._attributes = attributes
        self._first_session = first_session
        self._discounts = discounts
        self._application_id = application_id
        self._additional_costs = additional_costs
        self._created = _now(self) if created is _NOT_GIVEN else created
        self._updated = updated  # type: ignore[assignment] # None: made ``created`` below
        self._update_count = 1
        self._history = ()
        self._running = None
        self.__attrs_post_init__()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass whose default workflow drives another table than its own.

        A subclass that sets ``specification`` inherits ``default_workflow`` unless
        it sets that too; sessions of the inherited workflow would follow the
        parent's table, so such a class is refused when it is defined.

        Raises:
            WorkflowError: ``default_workflow`` drives another specification.
        """
        super().__init_subclass__(**kwargs)
        spec, workflow = cls.specification, cls.default_workflow
        if workflow.specification != spec:
            how = "sets" if "default_workflow" in vars(cls) else "inherits"
            raise WorkflowError(
                f"{cls.__name__} follows {spec.name!r} but {how} the default workflow "
                f"{shown(workflow)}, which drives another specification; give it its own: "
                f"default_workflow: ClassVar[Workflow] = Workflow(<its specification>)"
            )

    def __attrs_post_init__(self) -> None:
        """Validate every field; a new session starts in an initial state.

        The common new session (no cart limits near, defaults kept) passes the quick
        test here, inline since a call would cost more than most of its checks;
        anything unusual takes :meth:`_full_check`, which finds and names every problem.
        """
        cls = type(self)
        spec = cls.specification
        iid, coupon, referral = self._integration_id, self._coupon, self._referral
        created = self._created
        updated: datetime | None = self._updated  # None: not given
        profile_id, state, workflow = self._profile_id, self._state, self._workflow
        app, empty = self._application_id, EMPTY_MAPPING
        if (
            type(iid) is str
            and 0 < len(iid) <= MAX_INTEGRATION_ID_LENGTH
            # is_text()'s common case inline: a call costs more than the test.
            and ((iid.isascii() and "\x00" not in iid) or is_text(iid))
            and type(state) is State
            and (
                state in spec.initial_states
                # A state only a return leads to needs returned units: the full check.
                or (
                    state in spec.states
                    and state not in spec.states_after_returns
                    and _RESTORING.get() is self
                )
            )
            # Even the class's default workflow: a class attribute can be reassigned.
            # (The slot, not the property: this runs for every new session.)
            and type(workflow) is Workflow
            and workflow._specification is spec
            and (profile_id is None or (type(profile_id) is str and is_text(profile_id)))
            and (
                coupon is None
                or (type(coupon) is str and 0 < len(coupon) <= MAX_CODE_LENGTH and is_text(coupon))
            )
            and (
                referral is None
                or (
                    type(referral) is str
                    and 0 < len(referral) <= MAX_CODE_LENGTH
                    and is_text(referral)
                )
            )
            and _plain_cart(self._cart_items)
            and self._identifiers == ()
            and self._attributes is empty
            and self._discounts is empty
            and self._additional_costs is empty
            and type(self._first_session) is bool
            and type(app) is int
            # The first test is the small-int fast path of the common id.
            and (0 <= app <= _SMALL or 0 <= app <= MAX_INTEGER)
            and type(created) is datetime
            and created.tzinfo is UTC
            and (
                updated is None
                or (type(updated) is datetime and updated.tzinfo is UTC and updated >= created)
            )
        ):
            if updated is None:
                self._updated = created
            return
        self._full_check()

    def _full_check(self) -> None:
        """Normalize and validate every field; raise one error naming every problem."""
        self._normalize()
        problems = self._field_problems()
        spec = self.specification
        if (
            isinstance(self._state, State)
            and self._state not in spec.initial_states
            and _RESTORING.get() is not self
        ):
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
        return f"session {shown(self._integration_id)}"

    def _normalize(self) -> None:
        """Store the mappings as immutable copies (the caller's dicts may change).

        The converters of the other fields run in ``__init__``, where the type of
        their argument differs from the stored one. A value that cannot be
        converted is kept as it is for :meth:`_field_problems` to report. An
        ``updated`` not given is ``created``.
        """
        given: datetime | None = self._updated  # None: not given
        if given is None:
            self._updated = self._created
        self._attributes = freeze_mapping(self._attributes)
        self._discounts = freeze_mapping(self._discounts)
        self._additional_costs = freeze_mapping(self._additional_costs)

    def _field_problems(self, changes: Mapping[str, object] = EMPTY_MAPPING) -> list[Problem]:
        """Every field that breaks a rule (normalizing timestamps to UTC on the way).

        ``changes`` (constructor names to values) are judged in place of those
        fields, which are left as they are: an edit validates its new values so
        before it applies them.
        """
        spec = self.specification
        workflow: object = self._workflow
        if not isinstance(workflow, Workflow) or workflow.specification != spec:
            raise _foreign_workflow(self, workflow)
        problems: list[Problem] = []
        values: dict[str, Any] = {a.alias: getattr(self, a.name) for a in attrs.fields(type(self))}
        values.update(changes)
        for name, check in _FIELD_CHECKS.items():
            problems.extend(check(name, values[name]))
        state = values["state"]
        if not isinstance(state, State) or state not in spec.states:
            problems.append(
                Problem(
                    "state", f"must be one of {', '.join(spec.states)}, got {shown_name(state)}"
                )
            )
        created, updated = self._created, self._updated
        # Converted only when they have a time in UTC (_aware_problems reports the others).
        if isinstance(created, datetime) and created.tzinfo is not UTC:
            moment = in_utc(created)
            self._created = created = moment if isinstance(moment, datetime) else created
        if isinstance(updated, datetime) and updated.tzinfo is not UTC:
            moment = in_utc(updated)
            self._updated = updated = moment if isinstance(moment, datetime) else updated
        if not problems and updated < created:
            problems.append(Problem("updated", "must not be earlier than created"))
        cart = values["cart_items"]
        if isinstance(state, State) and state not in spec.states_with_returns:
            problems.extend(_unexplained_returns(cart, state))
        if isinstance(state, State) and state in spec.states_after_returns:
            problems.extend(_missing_returns(cart, f"the session is '{state}'"))
        if not problems:  # the sums of a cart and costs whose entries are all valid
            problems.extend(value_problems(cart, values["additional_costs"]))
        return problems

    # -- restoring, copying, pickling ---------------------------------------

    @classmethod
    def restore(cls, **fields: Unpack[SessionFields]) -> Self:
        """Load a session in any state of the table (from a store or the wire).

        Unlike the constructor, any state of the specification is accepted. The
        session must be one its table and history explain:

        - the history, when given, is a chain of edges of the table ending in
          ``state``, made of :class:`TransitionRecord` with :class:`Trigger` and
          :class:`State` members and aware timestamps that never go backwards,
          from ``created`` to ``updated``;
        - ``update_count`` counts the creation and every transition, so it is at
          least one more than the number of records (edits count too, and are
          not in the history);
        - returned units: none in a state no return leads to (``open``,
          ``closed``), some in a state only a return leads to
          (``partially_returned``), or when the history passes such a state
          (see :attr:`Specification.states_after_returns`); a history that
          starts before any return lists every
          return, whose units must add up to each cart item's
          ``returned_quantity``; a history that starts after a return lists at
          most those units; each returned item names a cart position, with its
          SKU if given. Without a history only the first rule can be checked.

        Args:
            **fields: Every constructor argument (as for :class:`CustomerSession`),
                and ``state`` (required: the stored state), ``update_count`` (the
                stored update count, at least 1; default 1) and ``history`` (the
                stored transition records; default none): see :class:`SessionFields`.

        Raises:
            ValidationError: Every problem, each with its path; a keyword that is not
                a constructor argument, or a required one missing (``integration_id``,
                ``state``), is one too (with ``Cls.restore()`` as the subject), not a
                ``TypeError``.
        """
        # Checked here, value by value, whatever a caller's type checker saw: a store
        # or a wire document passes untyped data. (``fields`` is this call's own dict.)
        arguments = cast("dict[str, Any]", fields)
        state: State | str = arguments.pop("state", _NOT_GIVEN)
        update_count: int = arguments.pop("update_count", 1)
        history: Iterable[TransitionRecord] = arguments.pop("history", ())
        spec = cls.specification
        if isinstance(history, Iterable) and not isinstance(history, str | bytes | Mapping):
            # An iterable that raises is refused with its error, as a cart's is.
            records: object = read_entries(history)
        else:
            records = history
        given = state is not _NOT_GIVEN
        problems = int_problems("update_count", update_count, 1)
        problems.extend(_record_problems(spec, records, _to_state(state) if given else None))
        accepted, required = _init_arguments(cls)
        if not (given and arguments.keys() <= accepted and required <= arguments.keys()):
            # The constructor cannot even be called: its TypeError would name no field
            # (and restore's own, for a missing state, names no problem of the data).
            wrong = _argument_problems(cls, arguments.keys(), accepted, required, state=given)
            raise ValidationError(f"{cls.__name__}.restore()", [*wrong, *problems])
        session = cls.__new__(cls)
        token = _RESTORING.set(session)
        try:
            cls.__init__(session, state=state, **arguments)
        except ValidationError as exc:
            raise ValidationError(exc.subject, [*exc.problems, *problems]) from None
        finally:
            _RESTORING.reset(token)
        if not problems:
            assert isinstance(records, tuple)  # noqa: S101 - _record_problems checked it
            problems.extend(_explained_problems(session, records, update_count))
        raise_problems(session._subject(), problems)
        session._update_count = update_count
        session._history = _in_utc(records)  # type: ignore[arg-type] # checked above
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
            SessionNotEditable: A trigger on this session is in progress,
                ``can()``/``why_not()`` are asking its guards, or an :meth:`atomic`
                block of another task or thread holds it; nothing changed.
        """
        _transaction.check_idle(self, "__setstate__")
        if not isinstance(values, Mapping):
            raise ValidationError.single("session", "$", f"cannot load from {shown(values)}")
        raise_problems("session", _value_name_problems(type(self), values))
        loaded = _restore(type(self), dict(values))
        # The busy marker is this object's, not the values': an atomic() block that
        # holds the session keeps holding it (getattr: a bare object has none yet).
        running = getattr(self, "_running", None)
        for a in attrs.fields(type(self)):
            setattr(self, a.name, getattr(loaded, a.name))
        self._running = running

    # -- the machine ----------------------------------------------------------

    @property
    def allowed_triggers(self) -> frozenset[Trigger]:
        """The triggers the table allows from the current state (guards not run)."""
        return _transaction.allowed(self)

    def can(self, trigger: Trigger | str, *, items: Iterable[ReturnedItem] = ()) -> bool:
        """Whether ``trigger`` would be accepted now (table, arguments and guards).

        Nothing changes; guards run with the event the trigger would have.

        Raises:
            UnknownTrigger: ``trigger`` is not a trigger of this session's table.
            HookFailed: A guard raised.
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
        known = member(Trigger, trigger)
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

        While the block is open it holds the session: only the block's own code,
        the tasks it creates (they copy its context) and blocks nested in it may
        fire triggers, edit or open a block on it. Any other task or thread is
        refused (``TransitionInProgress`` for a trigger, ``SessionNotEditable`` for
        an edit, a reload or another block) and changes nothing, so a rollback only
        ever undoes the block's own changes. A nested block rolls back to where it
        started; the outermost one releases the session.

        Yields:
            The session itself.

        Raises:
            SessionNotEditable: The session is busy: another task's or thread's
                block holds it, a trigger on it is in progress, or ``can()`` or
                ``why_not()`` are asking its guards.
        """
        opened = _transaction.hold(self)
        saved = _transaction.snapshot(self)
        workflow = self._workflow  # __setstate__ in the block may replace it
        try:
            yield self
        except BaseException:
            if _transaction.may_restore(opened):
                marked = _transaction.rolling(opened)
                _transaction.rollback(self, saved)
                self._workflow = workflow
                _transaction.rolled(opened, marked)
            _transaction.release(self, opened, failed=True)
            raise
        _transaction.release(self, opened, failed=False)

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

    def _editing(self, operation: str) -> Edit:
        """The first check of every edit: the state, before any argument.

        Returns:
            What the edit builds its new values on (see :meth:`_edit`).
        """
        return _transaction.check_edit(self, operation)

    def _require_name(self, operation: str, name: object) -> None:
        if not isinstance(name, str):
            raise ValidationError.single(
                f"{self._subject()}: {operation}()", "name", f"must be a string, got {shown(name)}"
            )

    def _edit(self, operation: str, seen: Edit, **changes: Any) -> None:
        """Apply ``changes`` (field names to new values) as one edit, or none of them.

        The new values are built on ``seen`` (what :meth:`_editing` found) and
        validated with the other fields as it found them, without touching the
        session; the commit point then applies them only if the session still is
        as it was checked (see :func:`~customer_session._transaction.commit_edit`).
        No other thread sees them before they are whole and valid.

        An edit that changes nothing (every value is the same as before, types
        included: see :func:`~customer_session._cart.same`) is not an update:
        ``updated`` and ``update_count`` stay, so a store has nothing to write.

        Raises:
            ValidationError: A new value breaks a rule; nothing changed.
            SessionNotEditable: A trigger or another edit changed the session since
                it was checked (from another task or thread, or the clock); nothing
                changed. (:meth:`_editing` refuses one from another task or thread
                while a trigger is under way: only its guards and hooks may edit.)
        """
        values = seen.fields()
        if all(same(values[name], value) for name, value in changes.items()):
            return
        values.update(changes)
        # Judged as the open session it was checked on (the commit point makes sure it
        # still is); every field was valid, so any problem comes from these changes.
        problems = self._field_problems({**values, "state": State.OPEN})
        if problems:
            raise ValidationError(f"{self._subject()}: {operation}()", problems)
        # A clock that fails (it raises, or gives a naive time) takes the edit with it.
        timestamp = _transaction.edit_timestamp(self)
        _transaction.commit_edit(self, seen, operation, values, timestamp)

    def add_item(self, item: CartItem) -> int:
        """Append ``item`` to the cart; return its position.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: A limit would be exceeded; nothing changed.
        """
        seen = self._editing("add_item")
        cart = (*seen.cart_items, item)
        self._edit("add_item", seen, cart_items=cart)
        return len(cart) - 1

    def update_item(self, position: int, item: CartItem) -> None:
        """Replace the cart item at ``position``.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: No item at ``position``, or a limit would be exceeded.
        """
        seen = self._editing("update_item")
        cart = list(seen.cart_items)
        self._check_position("update_item", position, len(cart))
        cart[position] = item
        self._edit("update_item", seen, cart_items=tuple(cart))

    def remove_item(self, position: int) -> CartItem:
        """Remove and return the cart item at ``position``; later items move up.

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: No item at ``position``.
        """
        seen = self._editing("remove_item")
        cart = seen.cart_items
        self._check_position("remove_item", position, len(cart))
        self._edit("remove_item", seen, cart_items=cart[:position] + cart[position + 1 :])
        return cart[position]

    def set_cart_items(self, items: Iterable[CartItem]) -> None:
        """Replace the whole cart (as a Talon.One update with ``cartItems`` does).

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: An entry is not a CartItem or a limit would be exceeded.
        """
        cart = _cart_tuple(items)  # the caller's iterable runs before the check, not under it
        self._edit("set_cart_items", self._editing("set_cart_items"), cart_items=cart)

    def set_coupon(self, code: str | None) -> None:
        """Set the coupon code (``None`` removes it; an empty code is refused).

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: The code is empty, longer than 100 characters or not text.
        """
        self._edit("set_coupon", self._editing("set_coupon"), coupon=code)

    def set_referral(self, code: str | None) -> None:
        """Set the referral code (``None`` removes it; an empty code is refused).

        Raises:
            SessionNotEditable: The session is not open.
            ValidationError: The code is empty, longer than 100 characters or not text.
        """
        self._edit("set_referral", self._editing("set_referral"), referral=code)

    def set_profile_id(self, profile_id: str | None) -> None:
        """Set the customer profile (``None`` for an anonymous session)."""
        self._edit("set_profile_id", self._editing("set_profile_id"), profile_id=profile_id)

    def set_identifiers(self, identifiers: Iterable[str]) -> None:
        """Replace the custom identifiers (at most 5)."""
        given = _str_tuple(identifiers)
        self._edit("set_identifiers", self._editing("set_identifiers"), identifiers=given)

    def set_attribute(self, name: str, value: JSONValue) -> None:
        """Set one custom session attribute to a JSON value (a frozen copy of it).

        To change a value inside an attribute, set the attribute to a new value,
        e.g. ``s.set_attribute("tags", [*s.attributes["tags"], "gift"])``.
        """
        seen = self._editing("set_attribute")
        self._require_name("set_attribute", name)
        attributes = freeze_mapping({**seen.attributes, name: value})
        self._edit("set_attribute", seen, attributes=attributes)

    def remove_attribute(self, name: str) -> None:
        """Remove one custom session attribute.

        Removing a name that is not set changes nothing, so it is no update.
        """
        seen = self._editing("remove_attribute")
        self._require_name("remove_attribute", name)
        kept = {k: v for k, v in seen.attributes.items() if k != name}
        self._edit("remove_attribute", seen, attributes=freeze_mapping(kept))

    def set_additional_cost(self, name: str, price: float | None) -> None:
        """Set a session-level additional cost (``None`` removes it)."""
        seen = self._editing("set_additional_cost")
        self._require_name("set_additional_cost", name)
        costs = {k: v for k, v in seen.additional_costs.items() if k != name}
        if price is not None:
            try:
                costs[name] = AdditionalCost(price)
            except ValidationError as exc:
                # Named as the session's field, as every other problem of an edit is.
                where = key_path("additional_costs", name)
                raise ValidationError(
                    f"{self._subject()}: set_additional_cost()",
                    [Problem(f"{where}.{p.path}", p.message) for p in exc.problems],
                ) from None
        self._edit("set_additional_cost", seen, additional_costs=freeze_mapping(costs))

    def _check_position(self, operation: str, position: int, size: int) -> None:
        """Refuse a ``position`` that names no line of a cart of ``size`` lines."""
        if not is_int(position) or not 0 <= position < size:
            raise ValidationError.single(
                f"{self._subject()}: {operation}()",
                "position",
                f"no cart item at position {shown(position)} (the cart has {size})",
            )


@define(kw_only=True, repr=False, on_setattr=setters.NO_OP, init=False)
class ReopenableCustomerSession(CustomerSession):
    """A session that also allows Talon.One's reopen endpoint: ``closed -> open``.

    Opt-in: its table is the four paths of the seed plus ``reopen``. A reopened
    session is open again, so its cart can be edited and it can be closed again.
    """

    specification: ClassVar[Specification] = REOPENABLE_SESSION
    default_workflow: ClassVar[Workflow] = Workflow(
        REOPENABLE_SESSION, name="customer_session.reopenable.default"
    )

    def reopen(self) -> TransitionRecord:
        """``closed -> open``: Talon.One rolls back the effects of the close.

        Raises the same errors as :meth:`CustomerSession.close`.
        """
        return _transaction.fire(self, Trigger.REOPEN, ())


protect(CustomerSession, _hint)


def _integration_id_problems(name: str, value: object) -> list[Problem]:
    if isinstance(value, str) and 1 <= len(value) <= MAX_INTEGRATION_ID_LENGTH:
        return str_problems(name, value)
    return [
        Problem(
            name,
            f"must be a string of 1 to {MAX_INTEGRATION_ID_LENGTH} characters, "
            f"got {shown(value):.80}",
        )
    ]


def _bool_problems(name: str, value: object) -> list[Problem]:
    return [] if isinstance(value, bool) else [Problem(name, f"must be a bool, got {shown(value)}")]


def _count_problems(name: str, value: object) -> list[Problem]:
    return int_problems(name, value, 0)


def _aware_problems(name: str, value: object) -> list[Problem]:
    moment = in_utc(value)
    return [] if isinstance(moment, datetime) else [Problem(name, moment.needed(value))]


def _restore(cls: type[CustomerSession], values: dict[str, Any]) -> CustomerSession:
    return cls.restore(**values)


def _value_name_problems(cls: type[CustomerSession], values: Mapping[Any, object]) -> list[Problem]:
    """The names in ``values`` that :meth:`CustomerSession.restore` takes no argument for.

    And the required ones that are missing: restore() would raise ``TypeError`` for both.
    """
    names = {a.alias for a in attrs.fields(cls) if a.init} | {"state", "update_count", "history"}
    problems = [
        Problem(key if isinstance(key, str) else shown(key), f"is not a field of {cls.__name__}")
        for key in values
        if key not in names
    ]
    problems.extend(
        Problem(name, "is missing") for name in ("integration_id", "state") if name not in values
    )
    return problems


def _code_problems(name: str, value: object, limit: int | None) -> list[Problem]:
    """A profile id (no ``limit``) or a coupon or referral code (at most ``limit`` characters).

    A code is ``None`` or at least one character: an empty string is no code, and
    ``None`` already says "none" (the wire's ``referralCode: ""`` and
    ``couponCodes: []`` are read as ``None``).
    """
    if value is None:
        return []
    if not isinstance(value, str):
        return [Problem(name, f"must be a string or None, got {shown(value):.80}")]
    if limit is not None and not value:
        return [Problem(name, "must not be empty; None means no code")]
    if limit is not None and len(value) > limit:
        return [Problem(name, f"{len(value)} characters; at most {limit} are allowed")]
    return str_problems(name, value)


def _cart_problems(cart: object) -> list[Problem]:
    if not isinstance(cart, tuple):
        return [Problem("cart_items", f"must be a sequence of CartItem, got {shown(cart)}")]
    return cart_problems(cart)


def _identifier_problems(identifiers: object) -> list[Problem]:
    if not isinstance(identifiers, tuple):
        return [Problem("identifiers", f"must be a sequence of strings, got {shown(identifiers)}")]
    problems = [p for i, v in enumerate(identifiers) for p in str_problems(f"identifiers[{i}]", v)]
    if len(identifiers) > MAX_IDENTIFIERS:
        problems.append(
            Problem("identifiers", f"{len(identifiers)} given; at most {MAX_IDENTIFIERS}")
        )
    return problems


def _mapping_problems(name: str, value: object) -> list[Problem]:
    if not isinstance(value, Mapping):
        return [Problem(name, f"must be a mapping, got {shown(value)}")]
    return json_problems(value, name)


def _discount_problems(discounts: object) -> list[Problem]:
    if not isinstance(discounts, Mapping):
        return [Problem("discounts", f"must be a mapping, got {shown(discounts)}")]
    return [
        Problem(
            key_path("discounts", k), f"must map a label to a finite number, got {shown_number(v)}"
        )
        for k, v in discounts.items()
        if not isinstance(k, str) or not is_number(v)
    ] + key_problems("discounts", discounts)


def _unexplained_returns(cart: object, state: State) -> list[Problem]:
    """Returned units in a session whose state no return leads to."""
    if not isinstance(cart, tuple):
        return []  # reported by the cart's own check
    return [
        Problem(
            f"cart_items[{index}].returned_quantity",
            f"must be 0 in a session that is '{state}': units are returned only by "
            f"return_items(), and no return leads to '{state}'",
        )
        for index, line in enumerate(cart)
        if isinstance(line, CartItem) and line.returned_quantity
    ]


def _missing_returns(cart: object, where: str) -> list[Problem]:
    """No returned unit in a cart that ``where`` (a state only a return leads to) says has some."""
    if not isinstance(cart, tuple) or not all(isinstance(line, CartItem) for line in cart):
        return []  # reported by the cart's own check
    if any(line.returned_quantity for line in cart):
        return []
    return [
        Problem(
            "cart_items",
            f"no unit is returned, but {where}, which only return_items() leads to",
        )
    ]


# Per class, as restore() runs for every session a store loads; weak, as classes can be made
# on the fly.
_INIT_ARGUMENTS: WeakKeyDictionary[type, tuple[frozenset[str], frozenset[str]]] = (
    WeakKeyDictionary()
)


def _init_arguments(cls: type[CustomerSession]) -> tuple[frozenset[str], frozenset[str]]:
    """The keywords ``restore(**fields)`` passes on to the constructor, and the required ones."""
    found = _INIT_ARGUMENTS.get(cls)
    if found is None:
        arguments = [a for a in attrs.fields(cls) if a.init and a.alias != "state"]
        found = _INIT_ARGUMENTS[cls] = (
            frozenset(a.alias for a in arguments),
            frozenset(a.alias for a in arguments if a.default is attrs.NOTHING),
        )
    return found


def _argument_problems(
    cls: type[CustomerSession],
    given: Iterable[str],
    accepted: frozenset[str],
    required: frozenset[str],
    *,
    state: bool,
) -> list[Problem]:
    """A problem for each keyword ``restore()`` does not take, and each required one missing.

    ``given`` are the keywords for the constructor, ``state`` whether restore's own
    required argument was given.
    """
    problems = []
    known = sorted([*accepted, "state", "update_count", "history"])
    for name in given:
        if name not in accepted:
            near = get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            problems.append(Problem(name, f"is not a field of {cls.__name__}{hint}"))
    missing = required - set(given) if state else (required - set(given)) | {"state"}
    problems.extend(Problem(name, "is required") for name in sorted(missing))
    return problems


def _record_problems(spec: Specification, records: object, state: State | None) -> list[Problem]:
    """What keeps ``records`` from being a history of ``spec`` that ends in ``state``.

    Each record's fields, its edge, the chain of records and the order of their
    timestamps; :func:`_explained_problems` compares them with the rest of the session.
    Where the chain ends is not checked without a ``state`` (``None``: none was given).
    """
    if not isinstance(records, tuple):
        return [
            Problem("history", f"must be a sequence of TransitionRecord, got {shown(records):.80}")
        ]
    problems: list[Problem] = []
    previous: TransitionRecord | None = None
    for index, record in enumerate(records):
        where = f"history[{index}]"
        found = _field_problems_of(record, where)
        if found:
            problems.extend(found)
            previous = None  # the chain restarts after a record that cannot be read
            continue
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
                    f"{where}.source",
                    f"starts in '{record.source}' but the previous "
                    f"record ended in '{previous.destination}'",
                )
            )
        if previous is not None and record.timestamp < previous.timestamp:
            problems.append(
                Problem(
                    f"{where}.timestamp",
                    f"{record.timestamp.isoformat()} is earlier than the previous "
                    f"record's {previous.timestamp.isoformat()}; the history never goes back",
                )
            )
        previous = record
    if (
        state is not None
        and previous is not None
        and previous is records[-1]
        and previous.destination is not state
    ):
        problems.append(
            Problem("history", f"ends in '{previous.destination}' but the state is '{state}'")
        )
    return problems


def _field_problems_of(record: object, where: str) -> list[Problem]:
    """The fields of one history record: their types, and returned items only for a return."""
    if not isinstance(record, TransitionRecord):
        return [Problem(where, f"must be a TransitionRecord, got {shown(record):.80}")]
    problems: list[Problem] = []
    for name, value, kind in (
        ("trigger", record.trigger, Trigger),
        ("source", record.source, State),
        ("destination", record.destination, State),
    ):
        if type(value) is not kind:
            problems.append(Problem(f"{where}.{name}", _member_needed(kind, value)))
    problems.extend(_aware_problems(f"{where}.timestamp", record.timestamp))
    problems.extend(_returned_items_problems(record, f"{where}.returned_items"))
    return problems


def _member_needed(kind: type[Trigger | State], value: object) -> str:
    """The refusal of ``value`` where a member of ``kind`` is needed.

    Text naming a member compares equal to it (they are ``StrEnum`` members), so the
    message says which member to write instead of repeating what looks the same.
    """
    if isinstance(value, str) and value in kind._value2member_map_:
        member = kind(value)
        return (
            f"must be a {kind.__name__} member, got the text {shown(value):.80}: "
            f"use {kind.__name__}.{member.name}"
        )
    return f"must be a {kind.__name__}, got {shown(value):.80}"


def _returned_items_problems(record: TransitionRecord, path: str) -> list[Problem]:
    """A record's returned items: ReturnedItem entries at distinct positions, for a return."""
    items: object = record.returned_items
    if not isinstance(items, tuple):
        return [Problem(path, f"must be a tuple of ReturnedItem, got {shown(items):.80}")]
    problems = returned_list_problems(items, path)
    if record.trigger is Trigger.RETURN_ITEMS and not items:
        problems.append(Problem(path, "a return needs at least one item"))
    elif record.trigger is not Trigger.RETURN_ITEMS and items:
        what = shown_name(record.trigger)  # a trigger by its text, not its enum repr
        problems.append(Problem(path, f"only a return_items record returns items, not {what}"))
    return problems


def _explained_problems(
    session: CustomerSession, records: tuple[TransitionRecord, ...], update_count: int
) -> list[Problem]:
    """How the well-formed ``records`` disagree with the rest of ``session``."""
    if not records:
        return []
    problems: list[Problem] = []
    last = len(records) - 1
    if records[0].timestamp < session.created:
        problems.append(
            Problem("history[0].timestamp", "is earlier than created; the session did not exist")
        )
    if records[last].timestamp > session.updated:
        problems.append(
            Problem(f"history[{last}].timestamp", "is later than updated, the last change")
        )
    if update_count < len(records) + 1:
        problems.append(
            Problem(
                "update_count",
                f"is {update_count}, but the creation and the "
                f"{counted(len(records), 'transition')} of the history count {len(records) + 1}",
            )
        )
    problems.extend(_history_return_problems(session, records))
    problems.extend(_history_missing_returns(session, records))
    return problems


def _history_missing_returns(
    session: CustomerSession, records: tuple[TransitionRecord, ...]
) -> list[Problem]:
    """Returned units a history implies: it passes a state only a return leads to.

    Only the records since the history last entered ``open`` count (an edit there
    may have removed the returned lines); the state itself is checked with the fields.
    """
    spec = session.specification
    after_returns = spec.states_after_returns
    if session.state in after_returns:
        return []  # the field check reported it
    for record in reversed(records):
        if record.destination is State.OPEN:
            break
        if record.source in after_returns:
            return _missing_returns(session.cart_items, f"the history passes '{record.source}'")
    return []


def _history_return_problems(
    session: CustomerSession, records: tuple[TransitionRecord, ...]
) -> list[Problem]:
    """The returns of ``records`` against the cart's returned units.

    Skipped for a table in which an open (editable) session can follow a return:
    the cart a return named positions in may since have been edited.
    """
    spec = session.specification
    with_returns = spec.states_with_returns
    if State.OPEN in with_returns:
        return []
    cart = session.cart_items
    # A history that starts in a state no return leads to lists every return.
    complete = records[0].source not in with_returns
    units = [0] * len(cart)
    problems: list[Problem] = []
    for index, record in enumerate(records):
        for i, item in enumerate(record.returned_items):
            where = f"history[{index}].returned_items[{i}]"
            if item.position >= len(cart):
                problems.append(
                    Problem(
                        f"{where}.position",
                        f"no cart item at position {item.position} (the cart has {len(cart)})",
                    )
                )
                continue
            line = cart[item.position]
            if item.sku is not None and item.sku != line.sku:
                problems.append(
                    Problem(
                        f"{where}.sku",
                        f"{item.sku!r} does not match {line.sku!r} at position {item.position}",
                    )
                )
            units[item.position] += item.quantity
    for position, (line, returned) in enumerate(zip(cart, units, strict=True)):
        if returned == line.returned_quantity or (
            not complete and returned < line.returned_quantity
        ):
            continue
        problems.append(
            Problem(
                f"cart_items[{position}].returned_quantity",
                f"is {line.returned_quantity}, but the history's returns of {line.sku!r} "
                f"add up to {returned}"
                + ("" if complete else ", and it started after a return: at least that many"),
            )
        )
    return problems


def _in_utc(records: tuple[TransitionRecord, ...]) -> tuple[TransitionRecord, ...]:
    """``records`` with every timestamp in UTC (``records`` itself when they are)."""
    if all(record.timestamp.tzinfo is UTC for record in records):
        return records
    return tuple(
        record
        if record.timestamp.tzinfo is UTC
        else TransitionRecord(
            record.trigger,
            record.source,
            record.destination,
            record.timestamp.astimezone(UTC),
            record.returned_items,
        )
        for record in records
    )


_FIELD_CHECKS: Final[Mapping[str, Callable[[str, object], list[Problem]]]] = {
    "integration_id": _integration_id_problems,
    "profile_id": lambda name, value: _code_problems(name, value, None),
    "coupon": lambda name, value: _code_problems(name, value, MAX_CODE_LENGTH),
    "referral": lambda name, value: _code_problems(name, value, MAX_CODE_LENGTH),
    "cart_items": lambda _name, value: _cart_problems(value),
    "identifiers": lambda _name, value: _identifier_problems(value),
    "attributes": _mapping_problems,
    "discounts": lambda _name, value: _discount_problems(value),
    "additional_costs": lambda name, value: costs_problems(value, name),
    "first_session": _bool_problems,
    "application_id": _count_problems,
    "created": _aware_problems,
    "updated": _aware_problems,
}
