"""Per-session cost of customer-session against its baselines, in one run.

Prints, for each contender: the cost of creating a session (in a batch that keeps
them alive, GC on), the memory each live session retains, and the cost of one full
lifecycle (open -> closed -> partially_returned -> cancelled), then the ratios the
targets are stated in. Each timed part starts right after a full collection, so
that each contender pays for the collections its own allocations trigger, not for
one that the heap or the contender before it left due.

Contenders:
- customer-session (this library), default workflow, no hooks;
- the floor: a plain attrs class with the same fields doing the same observable work
  by hand: a dict lookup in the table, a history record with a UTC timestamp (and
  the returned items), and the return applied to the cart (each item checked against
  the units that remain, the line replaced with ``attrs.evolve``);
- the same floor without the return bookkeeping (table and history only), to show
  what the return's domain work adds;
- the floor's fields with the defaults CustomerSession has (one shared read-only
  empty mapping, an empty tuple) instead of a new dict or list for each session, at
  creation and in memory only: the plain floor allocates four containers a session
  does not, which the ratios against it include;
- transitions the common way (one ``Machine(model=self)`` per session);
- transitions' stock ``Event.trigger`` on one shared machine (no model registered);
- python-statemachine 3.x (one machine per session).

Times are the process's CPU time (as in ``bench/replay.py``): wall-clock time would
count whatever else a shared machine runs while a batch of a few milliseconds is
timed. Rounds are interleaved and medians reported, since the machines are shared
and noisy. Run: ``python bench/core.py [--rounds N] [--sessions N]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
from statemachine import State as PSMState
from statemachine import StateMachine
from transitions import Machine

from customer_session import CUSTOMER_SESSION, CartItem, CustomerSession, ReturnedItem

if TYPE_CHECKING:
    from collections.abc import Callable

ITEM = CartItem(sku="SOCK-42", quantity=2, price=7.5)
RETURN = (ReturnedItem(position=0, quantity=1),)
LIFECYCLE = ("close", "return_items", "cancel")

# Every table below is derived from the one specification (its four paths).
TABLE = {(e.source.value, e.trigger.value): e.destination.value for e in CUSTOMER_SESSION.edges}
TRANSITIONS = [
    {"trigger": e.trigger.value, "source": e.source.value, "dest": e.destination.value}
    for e in CUSTOMER_SESSION.edges
    if not e.internal
]
STATES = [s.value for s in CUSTOMER_SESSION.states]


# -- the floor ---------------------------------------------------------------
@attrs.define(kw_only=True)
class FloorSession:
    """The same fields as CustomerSession, no protection, no validation."""

    integration_id: str
    state: str = "open"
    profile_id: str | None = None
    coupon: str | None = None
    referral: str | None = None
    cart_items: tuple[CartItem, ...] = ()
    identifiers: tuple[str, ...] = ()
    attributes: dict[str, Any] = attrs.Factory(dict)
    first_session: bool = True
    discounts: dict[str, float] = attrs.Factory(dict)
    application_id: int = 0
    additional_costs: dict[str, Any] = attrs.Factory(dict)
    created: datetime = attrs.Factory(lambda: datetime.now(UTC))
    updated: datetime = attrs.Factory(lambda self: self.created, takes_self=True)
    update_count: int = 1

    history: list[tuple[str, str, str, datetime, tuple[ReturnedItem, ...]]] = attrs.Factory(list)

    def fire(self, trigger: str, items: tuple[ReturnedItem, ...] = ()) -> None:
        """Look the edge up, apply a return to the cart, record it with a timestamp, move."""
        dest = TABLE[self.state, trigger]
        if items:
            self.cart_items = returned_by_hand(self.cart_items, items)
        now = datetime.now(UTC)
        self.history.append((trigger, self.state, dest, now, items))
        self.state = dest
        self.updated = now
        self.update_count += 1


def returned_by_hand(
    cart: tuple[CartItem, ...], items: tuple[ReturnedItem, ...]
) -> tuple[CartItem, ...]:
    """The cart after a return, checked and applied the plain attrs way."""
    lines = list(cart)
    for item in items:
        line = lines[item.position]
        if item.quantity > line.remaining_quantity:
            raise ValueError(f"only {line.remaining_quantity} unit(s) remain")
        lines[item.position] = attrs.evolve(
            line, returned_quantity=line.returned_quantity + item.quantity
        )
    return tuple(lines)


# The floor's fields made read-only the way CustomerSession makes them (attrs
# on_setattr), to show what protection alone costs at creation.
ProtectedFloor = attrs.make_class(
    "ProtectedFloor",
    {
        a.name: attrs.field() if a.default is attrs.NOTHING else attrs.field(default=a.default)
        for a in attrs.fields(FloorSession)
    },
    kw_only=True,
    slots=True,  # as FloorSession (attrs.define); make_class's attr.s default is a __dict__
    on_setattr=attrs.setters.frozen,
)


# The floor's fields with CustomerSession's kind of defaults: nothing allocated per
# session for an empty mapping or history, to show what the floor's containers cost.
EMPTY = MappingProxyType({})
SHARED_DEFAULTS: dict[str, object] = {
    "attributes": EMPTY,
    "discounts": EMPTY,
    "additional_costs": EMPTY,
    "history": (),
}
SharedDefaultsFloor = attrs.make_class(
    "SharedDefaultsFloor",
    {
        a.name: attrs.field()
        if a.default is attrs.NOTHING
        else attrs.field(default=SHARED_DEFAULTS.get(a.name, a.default))
        for a in attrs.fields(FloorSession)
    },
    kw_only=True,
    slots=True,
)


# -- transitions the common way -------------------------------------------------
class PerInstanceModel:
    """One Machine(model=self) per session, as the transitions docs show."""

    def __init__(self) -> None:
        self.machine = Machine(
            model=self,
            states=STATES,
            transitions=TRANSITIONS,
            initial="open",
            auto_transitions=False,
        )


SHARED = Machine(
    model=None, states=STATES, transitions=TRANSITIONS, initial=None, auto_transitions=False
)


class SharedModel:
    """A plain model driven by the stock Event.trigger of one shared machine."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "open"

    def fire(self, trigger: str) -> None:
        SHARED.events[trigger].trigger(self)


# -- python-statemachine -----------------------------------------------------------
class PSMSession(StateMachine):  # type: ignore[misc] - no stubs for the metaclass magic
    """The same table in python-statemachine."""

    open = PSMState(initial=True)
    closed = PSMState()
    partially_returned = PSMState()
    cancelled = PSMState(final=True)

    close = open.to(closed)
    cancel = open.to(cancelled) | closed.to(cancelled) | partially_returned.to(cancelled)
    return_items = closed.to(partially_returned)


def ours_create() -> CustomerSession:
    return CustomerSession(integration_id="order-42", cart_items=(ITEM,))


def ours_life(s: CustomerSession) -> None:
    s.close()
    s.return_items(RETURN)
    s.cancel()


def floor_create() -> FloorSession:
    return FloorSession(integration_id="order-42", cart_items=(ITEM,))


def protected_create() -> Any:
    return ProtectedFloor(integration_id="order-42", cart_items=(ITEM,))


def shared_defaults_create() -> Any:
    return SharedDefaultsFloor(integration_id="order-42", cart_items=(ITEM,))


def floor_life(s: FloorSession) -> None:
    s.fire("close")
    s.fire("return_items", RETURN)
    s.fire("cancel")


def bare_floor_life(s: FloorSession) -> None:
    s.fire("close")
    s.fire("return_items")
    s.fire("cancel")


def per_instance_life(m: Any) -> None:
    m.close()
    m.return_items()
    m.cancel()


def shared_life(m: SharedModel) -> None:
    m.fire("close")
    m.fire("return_items")
    m.fire("cancel")


def psm_life(m: Any) -> None:
    m.send("close")
    m.send("return_items")
    m.send("cancel")


CONTENDERS: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "customer-session": (ours_create, ours_life),
    "floor (plain attrs)": (floor_create, floor_life),
    "floor without the return bookkeeping": (floor_create, bare_floor_life),
    "floor, fields protected (on_setattr)": (protected_create, lambda _s: None),
    "floor, shared empty defaults": (shared_defaults_create, lambda _s: None),
    "transitions, Machine per session": (PerInstanceModel, per_instance_life),
    "transitions, stock trigger, shared": (SharedModel, shared_life),
    "python-statemachine 3.x": (PSMSession, psm_life),
}


def _per_item(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def measure_round(n: int) -> dict[str, tuple[float, float]]:
    """One round: (create us, lifecycle us) of CPU time for each contender."""
    out = {}
    for name, (create, life) in CONTENDERS.items():
        size = n if "Machine per" not in name and "python-statemachine" not in name else n // 10
        # Each timed part starts from the same collector state: otherwise a full
        # collection (of the whole heap, and of the garbage the contender before left
        # in reference cycles) falls in whichever part its counters happen to trigger.
        gc.collect()
        start = time.process_time()
        objects = [create() for _ in range(size)]
        created = time.process_time() - start
        gc.collect()
        start = time.process_time()
        for obj in objects:
            life(obj)
        lived = time.process_time() - start
        out[name] = (_per_item(created, size), _per_item(lived, size))
        del objects
    return out


def measure_memory(n: int) -> dict[str, float]:
    """Bytes retained per live session (tracemalloc, after a full collection)."""
    out = {}
    for name, (create, _life) in CONTENDERS.items():
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        objects = [create() for _ in range(n)]
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        out[name] = used / n
        del objects
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=5000)
    args = parser.parse_args()
    if args.sessions < 10:  # the slow contenders run a tenth of them
        parser.error("--sessions must be at least 10")
    for life in (ours_life, floor_life):  # sanity: both do the same observable work
        create = ours_create if life is ours_life else floor_create
        s = create()
        life(s)
        assert str(s.state) == "cancelled"
        assert s.cart_items[0].returned_quantity == 1
        assert len(s.history) == 3
    rounds = [measure_round(args.sessions) for _ in range(args.rounds)]
    memory = measure_memory(2000)
    results = {
        name: (
            statistics.median(r[name][0] for r in rounds),
            statistics.median(r[name][1] for r in rounds),
            memory[name],
        )
        for name in CONTENDERS
    }
    print(f"medians of {args.rounds} interleaved rounds, {args.sessions} sessions each, CPU time\n")
    print(f"{'contender':38} {'create µs':>10} {'lifecycle µs':>13} {'bytes/session':>14}")
    for name, (create_us, life_us, mem) in results.items():
        print(f"{name:38} {create_us:10.2f} {life_us:13.2f} {mem:14.0f}")
    ours = results["customer-session"]
    floor = results["floor (plain attrs)"]
    stock = results["transitions, stock trigger, shared"]
    per_instance = results["transitions, Machine per session"]
    psm = results["python-statemachine 3.x"]
    print("\nratios (target in brackets)")
    protected = results["floor, fields protected (on_setattr)"]
    print(f"  creation vs plain attrs:              {ours[0] / floor[0]:6.2f}x  [<= 1.5x]")
    print(f"  creation vs protected attrs:          {ours[0] / protected[0]:6.2f}x")
    shared = results["floor, shared empty defaults"]
    print(f"  creation vs attrs, shared defaults:   {ours[0] / shared[0]:6.2f}x")
    bare = results["floor without the return bookkeeping"]
    print(f"  lifecycle vs floor:                   {ours[1] / floor[1]:6.2f}x  [<= 3x]")
    print(f"  lifecycle vs floor without returns:   {ours[1] / bare[1]:6.2f}x")
    print(f"  stock transitions trigger vs ours:    {stock[1] / ours[1]:6.2f}x  [>= 3x faster]")
    print(f"  Machine per session vs ours (create): {per_instance[0] / ours[0]:6.1f}x")
    print(f"  python-statemachine vs ours (life):   {psm[1] / ours[1]:6.1f}x")
    print(f"  memory vs plain attrs:                {ours[2] / floor[2]:6.2f}x")
    print(f"  memory vs attrs, shared defaults:     {ours[2] / shared[2]:6.2f}x")


if __name__ == "__main__":
    main()
