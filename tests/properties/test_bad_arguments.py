"""Bad arguments anywhere in the public API get the library's own errors.

Every public callable (constructors, public methods, module functions) of the
modules below is found from their ``__all__``, so a new one is covered as soon as
it is exported: it needs a valid call in :data:`RECIPES` (or, for the methods of
the stores, :data:`STORE_RECIPES`), or a reason in :data:`NOT_CHECKED`. Each test
takes one parameter of one callable, replaces its valid argument by a value from
:func:`customer_session.testing.bad_values`, and checks that the call either
succeeds or raises a :class:`CustomerSessionError`; when it raises, the object it
was called on (a session, a workflow's registrations, a store's contents, a
replayer's sessions) is unchanged.

Some bad values are right for some parameters and accepted on purpose: ``None``
where a value is optional, ``""`` or ``-1`` as a JSON attribute value, ``0`` as a
limit, ``True`` where a flag is expected (a ``bool`` is an ``int``), any object as
a record field of a result type (``Arrow``, ``JournalEntry``, ...: the library
builds those and does not check them), ``{}`` or ``[]`` as an empty iterable. So
the property is "never a bare error", not "always refused".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Unpack, get_args, get_origin, is_typeddict

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import customer_session
from customer_session import (
    CUSTOMER_SESSION,
    AdditionalCost,
    CartItem,
    CustomerSession,
    CustomerSessionError,
    Edge,
    Phase,
    PriceDetail,
    Problem,
    Product,
    Refusal,
    Registration,
    ReopenableCustomerSession,
    ReturnedItem,
    Specification,
    State,
    TransitionEvent,
    TransitionRecord,
    Trigger,
    Workflow,
)
from customer_session import wire as wire_module
from customer_session.aio import AsyncReopenableSession, AsyncSession
from customer_session.cli import main
from customer_session.diagrams import Arrow, Graph, Node
from customer_session.replay import RefusedLine, Replayer, ReplayReport, with_progress
from customer_session.store import (
    AsyncPostgresStore,
    DurableEffect,
    Effect,
    JournalEntry,
    JournalKind,
    PostgresStore,
    ProcessedKey,
    SQLiteStore,
    StoreReplayer,
    open_store,
    rebuild,
)
from customer_session.testing import Path as TablePath
from customer_session.testing import bad_values, shortest_paths

MODULES = [
    "customer_session",
    "customer_session.wire",
    "customer_session.diagrams",
    "customer_session.replay",
    "customer_session.hooks",
    "customer_session.aio",
    "customer_session.store",
    "customer_session.testing",
]
STORES = (SQLiteStore, PostgresStore, AsyncPostgresStore)

# Callables where an error of the library's tree is not the right answer. Only public
# names are walked: dunder methods (``__eq__``, ``__hash__``, ...) answer Python's own
# protocols, with Python's own errors.
NOT_CHECKED: dict[str, Callable[[type], bool]] = {
    # The errors themselves: the library builds them from values it has checked, and
    # building one must not raise another of the tree in its place.
    "the error tree": lambda cls: issubclass(cls, BaseException),
    # Enum lookup by value (``State("x")``) raises ValueError by the enum protocol;
    # the library's entry points take text through their own check.
    "enums": lambda cls: issubclass(cls, Enum),
    # Typing protocols (Guard, Hook, Clock, SessionStore, EffectHandler) are types to
    # implement, not callables to call.
    "protocols": lambda cls: bool(getattr(cls, "_is_protocol", False)),
    # TypedDicts (SessionFields) type the keywords of a callable (restore()), whose
    # parameters the recipes try one by one; calling one only makes a dict.
    "typed dicts": is_typeddict,
    # Its rules and invariants are called by Hypothesis's stateful runner with values
    # it draws, never by a user.
    "testing.SessionStateMachine": lambda cls: cls.__name__ == "SessionStateMachine",
}


def _short(module: str) -> str:
    return module.removeprefix("customer_session").lstrip(".")


def _defining_class(cls: type, attribute: str) -> type:
    return next(klass for klass in cls.__mro__ if attribute in vars(klass))


def _methods(cls: type, name: str, public_classes: set[type]) -> dict[str, Callable[..., Any]]:
    """The public methods ``cls`` defines (or inherits from a private base), by public name."""
    found = {}
    for attribute in dir(cls):
        if attribute.startswith("_"):
            continue
        owner = _defining_class(cls, attribute)
        if isinstance(vars(owner)[attribute], property) or not callable(getattr(cls, attribute)):
            continue
        if owner is not cls and (
            owner in public_classes or not owner.__module__.startswith("customer_session")
        ):
            continue  # checked on the public base, or Python's / a library's own
        found[f"{name}.{attribute}"] = getattr(cls, attribute)
    return found


def public_callables() -> dict[str, Callable[..., Any]]:
    """Every public callable by its public name (``store.SQLiteStore.get``), found from ``__all__``.

    A method is listed under the first public class that defines it: a subclass's
    inherited methods are checked on its base. Names exported twice (``Workflow``
    from the package and from ``hooks``) are listed once, under the first module.
    """
    found: dict[str, Callable[..., Any]] = {}
    seen: set[int] = set()
    public_classes: set[type] = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        public_classes |= {
            obj for name in module.__all__ if isinstance(obj := getattr(module, name), type)
        }
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        prefix = f"{_short(module_name)}." if _short(module_name) else ""
        for name in module.__all__:
            obj = getattr(module, name)
            if (
                id(obj) in seen
                or not callable(obj)
                or not getattr(obj, "__module__", "").startswith("customer_session")
            ):
                continue  # constants, type aliases, names exported twice
            seen.add(id(obj))
            if not isinstance(obj, type):
                found[prefix + name] = obj
                continue
            if any(rule(obj) for rule in NOT_CHECKED.values()):
                continue
            found[prefix + name] = obj
            found |= _methods(obj, prefix + name, public_classes)
    return found


@attrs.frozen
class Call:
    """A valid call: the callable, its arguments by name, and what it must not change."""

    func: Callable[..., Any]
    args: dict[str, Any] = attrs.field(factory=dict)
    subject: object = None


class Given:
    """Fresh objects for one example: sessions, a workflow, a directory, the store under test."""

    def __init__(self, tmp: Path, runner: asyncio.Runner, store: Any = None) -> None:
        """Hold the case's directory, event loop and store (or database URL)."""
        self.tmp = tmp
        self.run = runner.run
        self.store = store
        self.workflow = Workflow()
        self.opened: list[Any] = []

    def store_replayer(self) -> StoreReplayer:
        """A StoreReplayer on a file of the directory, closed with the example."""
        replayer = StoreReplayer(self.tmp / "replayed.db", retries=1)
        self.opened.append(replayer)
        return replayer

    def close(self) -> None:
        """Close what the example opened."""
        for opened in self.opened:
            opened.close()

    def open(self) -> CustomerSession:
        """An open session with one line of two units."""
        return CustomerSession(
            integration_id="o1", cart_items=[CartItem(sku="A", quantity=2, price=1)]
        )

    def closed(self) -> CustomerSession:
        """A closed session."""
        session = self.open()
        session.close()
        return session

    def record(self) -> TransitionRecord:
        """A transition record (a close)."""
        return self.closed().history[-1]

    def entry(self) -> JournalEntry:
        """A journal entry that creates a session."""
        return JournalEntry(
            sequence=1,
            integration_id="o1",
            version=1,
            kind=JournalKind.CREATED,
            operation="create",
            records=(),
            changes={"integrationID": "o1", "state": "open"},
            key=None,
            recorded_at=NOW,
        )


NOW = datetime(2026, 1, 1, tzinfo=UTC)
ITEM = {"sku": "A", "quantity": 1}
RETURN = (ReturnedItem(position=0, quantity=1),)
LOG = ['{"at": "2026-01-01T00:00:00Z", "session": "s1", "op": "create", "customerSession": {}}']
EVENT = {
    "session": None,
    "trigger": Trigger.CLOSE,
    "source": State.OPEN,
    "destination": State.CLOSED,
    "timestamp": NOW,
}


def _hook(event: object) -> None:
    """A guard or hook that does nothing."""


def _doc(g: Given) -> dict[str, Any]:
    return wire_module.to_dict(g.open())


def _session_call(method: str, **args: Any) -> Callable[[Given], Call]:
    """A call of ``method`` on a fresh open session (or closed, for returns)."""

    def recipe(g: Given) -> Call:
        session = g.closed() if method == "return_items" or "items" in args else g.open()
        return Call(getattr(session, method), args, session)

    return recipe


def _async_call(method: str, **args: Any) -> Callable[[Given], Call]:
    def recipe(g: Given) -> Call:
        session = AsyncSession(g.closed())
        return Call(getattr(session, method), args, session.session)

    return recipe


def _workflow_call(method: str, **args: Any) -> Callable[[Given], Call]:
    return lambda g: Call(getattr(g.workflow, method), args, g.workflow)


_DIAGRAM = {"specification": CUSTOMER_SESSION, "session": None, "workflow": None}
_READER = {"session_class": CustomerSession, "workflow": None}
_SESSION_FIELDS = {"integration_id": "o1", "cart_items": [CartItem(**ITEM)], "state": State.OPEN}

# A valid call per public callable with parameters, by its public name.
RECIPES: dict[str, Callable[[Given], Call]] = {
    # customer_session
    "AdditionalCost": lambda g: Call(AdditionalCost, {"price": 1.0}),
    "CartItem": lambda g: Call(CartItem, {**ITEM, "price": 1.0}),
    "CustomerSession": lambda g: Call(CustomerSession, {**_SESSION_FIELDS, "workflow": g.workflow}),
    "CustomerSession.add_item": _session_call("add_item", item=CartItem(**ITEM)),
    "CustomerSession.can": _session_call("can", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "CustomerSession.fire": _session_call("fire", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "CustomerSession.why_not": _session_call("why_not", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "CustomerSession.return_items": _session_call("return_items", items=RETURN),
    "CustomerSession.remove_attribute": _session_call("remove_attribute", name="a"),
    "CustomerSession.remove_item": _session_call("remove_item", position=0),
    "CustomerSession.restore": lambda g: Call(
        CustomerSession.restore, {**_SESSION_FIELDS, "update_count": 1, "history": ()}
    ),
    "CustomerSession.set_additional_cost": _session_call(
        "set_additional_cost", name="a", price=1.0
    ),
    "CustomerSession.set_attribute": _session_call("set_attribute", name="a", value=1),
    "CustomerSession.set_cart_items": _session_call("set_cart_items", items=[CartItem(**ITEM)]),
    "CustomerSession.set_coupon": _session_call("set_coupon", code="C"),
    "CustomerSession.set_identifiers": _session_call("set_identifiers", identifiers=["i"]),
    "CustomerSession.set_profile_id": _session_call("set_profile_id", profile_id="p"),
    "CustomerSession.set_referral": _session_call("set_referral", code="R"),
    "CustomerSession.update_item": _session_call("update_item", position=0, item=CartItem(**ITEM)),
    "Edge": lambda g: Call(
        Edge, {"trigger": Trigger.CLOSE, "source": State.OPEN, "destination": State.CLOSED}
    ),
    "PriceDetail": lambda g: Call(PriceDetail, {"price": 1.0}),
    "Problem": lambda g: Call(Problem, {"path": "$", "message": "m"}),
    "Product": lambda g: Call(Product, {"name": "n"}),
    "Refusal": lambda g: Call(Refusal, {"guard": None, "reason": "r"}),
    "Registration": lambda g: Call(
        Registration,
        {
            "workflow": g.workflow,
            "phase": Phase.GUARD,
            "key": None,
            "func": _hook,
            "name": "n",
            "is_async": False,
        },
    ),
    "ReopenableCustomerSession": lambda g: Call(ReopenableCustomerSession, dict(_SESSION_FIELDS)),
    "ReturnedItem": lambda g: Call(ReturnedItem, {"position": 0, "quantity": 1}),
    "Specification": lambda g: Call(
        Specification,
        {
            "name": "s",
            "states": CUSTOMER_SESSION.states,
            "initial_states": [State.OPEN],
            "edges": CUSTOMER_SESSION.edges,
        },
    ),
    "Specification.allowed": lambda g: Call(CUSTOMER_SESSION.allowed, {"state": State.OPEN}),
    "Specification.edges_from": lambda g: Call(CUSTOMER_SESSION.edges_from, {"state": State.OPEN}),
    "Specification.extend": lambda g: Call(
        CUSTOMER_SESSION.extend,
        {"name": "s", "edges": (Edge(Trigger.REOPEN, State.CLOSED, State.OPEN),)},
    ),
    "Specification.target": lambda g: Call(
        CUSTOMER_SESSION.target, {"state": State.OPEN, "trigger": Trigger.CLOSE}
    ),
    "TransitionEvent": lambda g: Call(
        TransitionEvent, {**EVENT, "session": g.open(), "returned_items": ()}
    ),
    "TransitionRecord": lambda g: Call(TransitionRecord, {**EVENT, "returned_items": ()}),
    "Workflow": lambda g: Call(
        Workflow,
        {"specification": CUSTOMER_SESSION, "name": "w", "clock": customer_session.utc_now},
    ),
    "Workflow.after": _workflow_call("after", func=_hook, trigger=Trigger.CLOSE, name="n"),
    "Workflow.after_commit": _workflow_call(
        "after_commit", func=_hook, trigger=Trigger.CLOSE, name="n"
    ),
    "Workflow.before": _workflow_call("before", func=_hook, trigger=Trigger.CLOSE, name="n"),
    "Workflow.guard": _workflow_call("guard", func=_hook, trigger=Trigger.CLOSE, name="n"),
    "Workflow.on_enter": _workflow_call("on_enter", func=_hook, state=State.CLOSED, name="n"),
    "Workflow.on_exit": _workflow_call("on_exit", func=_hook, state=State.OPEN, name="n"),
    "Workflow.entries": _workflow_call("entries", phase=Phase.GUARD, key=Trigger.CLOSE),
    "Workflow.plain_destination": _workflow_call(
        "plain_destination", source=State.OPEN, trigger=Trigger.CLOSE
    ),
    "Workflow.plan": _workflow_call("plan", source=State.OPEN, trigger=Trigger.CLOSE),
    "Workflow.register": _workflow_call(
        "register", phase=Phase.GUARD, func=_hook, key=Trigger.CLOSE, name="n"
    ),
    "Workflow.remove": _workflow_call("remove", func=_hook),
    # wire
    "wire.from_dict": lambda g: Call(wire_module.from_dict, {"data": _doc(g), **_READER}),
    "wire.from_json": lambda g: Call(
        wire_module.from_json, {"text": wire_module.to_json(g.open()), **_READER}
    ),
    "wire.from_v2_response": lambda g: Call(
        wire_module.from_v2_response,
        {"data": {"effects": [], "customerSession": _doc(g)}, **_READER},
    ),
    "wire.new_session_fields": lambda g: Call(
        wire_module.new_session_fields, {"body": {}, "path": "$"}
    ),
    "wire.return_request": lambda g: Call(
        wire_module.return_request, {"items": RETURN, "response_content": None}
    ),
    "wire.returned_items_from_json": lambda g: Call(
        wire_module.returned_items_from_json,
        {"data": [{"position": 0, "quantity": 1}], "path": "$"},
    ),
    "wire.to_dict": lambda g: Call(
        wire_module.to_dict, {"session": g.open(), "include_history": False}
    ),
    "wire.to_json": lambda g: Call(
        wire_module.to_json, {"session": g.open(), "include_history": False, "indent": None}
    ),
    "wire.update_request": lambda g: Call(
        wire_module.update_request,
        {"session": g.open(), "response_content": None, "discard_unset_codes": False},
    ),
    # diagrams
    "diagrams.Arrow": lambda g: Call(
        Arrow, {"source": State.OPEN, "trigger": Trigger.CLOSE, "destination": State.CLOSED}
    ),
    "diagrams.Graph": lambda g: Call(Graph, {"name": "g", "nodes": (), "arrows": ()}),
    "diagrams.Node": lambda g: Call(Node, {"state": State.OPEN}),
    "diagrams.extract": lambda g: Call(customer_session.diagrams.extract, _DIAGRAM),
    "diagrams.output_format": lambda g: Call(
        customer_session.diagrams.output_format, {"path": "d.svg", "format": None}
    ),
    "diagrams.render": lambda g: Call(
        customer_session.diagrams.render, {"path": g.tmp / "d.svg", **_DIAGRAM, "format": None}
    ),
    "diagrams.to_dot": lambda g: Call(customer_session.diagrams.to_dot, _DIAGRAM),
    "diagrams.to_image": lambda g: Call(
        customer_session.diagrams.to_image, {**_DIAGRAM, "format": "svg"}
    ),
    "diagrams.to_mermaid": lambda g: Call(customer_session.diagrams.to_mermaid, _DIAGRAM),
    "diagrams.to_table": lambda g: Call(customer_session.diagrams.to_table, _DIAGRAM),
    # replay
    "replay.RefusedLine": lambda g: Call(
        RefusedLine, {"line": 1, "session": None, "op": None, "reason": "r"}
    ),
    "replay.ReplayReport": lambda g: Call(ReplayReport, {"lines": 1, "applied": 1}),
    "replay.ReplayReport.to_text": lambda g: Call(
        ReplayReport(lines=1).to_text, {"max_refusals": 20}
    ),
    "replay.Replayer": lambda g: Call(Replayer, {"session_class": CustomerSession}),
    "replay.Replayer.apply": lambda g: _replayer_call(Replayer(), "apply", number=1, line=LOG[0]),
    "replay.Replayer.run": lambda g: _replayer_call(Replayer(), "run", lines=LOG, fast=None),
    "replay.with_progress": lambda g: Call(
        with_progress, {"lines": LOG, "total_bytes": 10, "stream": io.StringIO()}
    ),
    # aio
    "aio.AsyncSession": lambda g: Call(AsyncSession, {"session": g.open()}),
    "aio.AsyncSession.can": _async_call("can", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "aio.AsyncSession.fire": _async_call("fire", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "aio.AsyncSession.why_not": _async_call("why_not", trigger=Trigger.RETURN_ITEMS, items=RETURN),
    "aio.AsyncSession.return_items": _async_call("return_items", items=RETURN),
    "aio.AsyncReopenableSession": lambda g: Call(
        AsyncReopenableSession, {"session": ReopenableCustomerSession(integration_id="o1")}
    ),
    # store: the records and functions (the stores' methods are in STORE_RECIPES)
    "store.DurableEffect": lambda g: Call(
        DurableEffect, {"name": "n", "trigger": None, "remove": _hook}
    ),
    "store.DurableEffect.matches": lambda g: Call(
        DurableEffect(name="n", trigger=None, remove=_hook).matches, {"trigger": Trigger.CLOSE}
    ),
    "store.Effect": lambda g: Call(Effect, _effect_fields(g)),
    "store.Effect.session": lambda g: Call(Effect(**_effect_fields(g)).session, _READER),
    "store.Effect.to_dict": lambda g: Call(
        Effect(**_effect_fields(g)).to_dict, {"include_document": False}
    ),
    "store.JournalEntry": lambda g: Call(JournalEntry, attrs.asdict(g.entry(), recurse=False)),
    "store.ProcessedKey": lambda g: Call(
        ProcessedKey, {"key": "k", "integration_id": None, "refusal": None}
    ),
    "store.StoreReplayer": lambda g: Call(
        StoreReplayer,
        {
            "database": g.tmp / "replay.db",
            "session_class": CustomerSession,
            "log_id": None,
            "retries": 1,
            "actor": None,
        },
    ),
    "store.open_store": lambda g: Call(
        open_store,
        {
            "target": g.tmp / "open.db",
            **_READER,
            "retries": 1,
            "timeout": 1.0,
            "actor": None,
            "migrate": True,
        },
    ),
    "store.rebuild": lambda g: Call(rebuild, {"entries": [g.entry()], **_READER}),
    "store.SQLiteStore": lambda g: Call(
        SQLiteStore,
        {
            "path": g.tmp / "s.db",
            **_READER,
            "retries": 1,
            "synchronous": "FULL",
            "timeout": 1.0,
            "actor": None,
            "migrate": True,
        },
    ),
    "store.StoreReplayer.apply": lambda g: _store_replayer_call(g, "apply", number=1, line=LOG[0]),
    "store.StoreReplayer.run": lambda g: _store_replayer_call(g, "run", lines=LOG, fast=None),
    # testing (a strategy is drawn from, so its arguments are used)
    "testing.Path": lambda g: Call(TablePath, {"start": State.OPEN, "edges": ()}),
    "testing.attribute_maps": lambda g: Call(
        customer_session.testing.attribute_maps, {"max_size": 1}
    ),
    "testing.cart_items": lambda g: Call(
        customer_session.testing.cart_items, {"max_quantity": 2, "with_price": None}
    ),
    "testing.carts": lambda g: Call(
        customer_session.testing.carts, {"min_size": 0, "max_size": 1, "max_quantity": 2}
    ),
    "testing.covering_paths": lambda g: Call(
        customer_session.testing.covering_paths, {"specification": CUSTOMER_SESSION}
    ),
    "testing.follow": lambda g: Call(
        customer_session.testing.follow,
        {"path": shortest_paths()[State.CLOSED], **_READER, "integration_id": "o1"},
    ),
    "testing.parametrize_paths": lambda g: Call(
        customer_session.testing.parametrize_paths,
        {"kind": "edges", "specification": CUSTOMER_SESSION, "argname": "p"},
    ),
    "testing.returned_items": lambda g: Call(
        customer_session.testing.returned_items, {"session": g.closed()}
    ),
    "testing.sessions": lambda g: Call(
        customer_session.testing.sessions, {"state": None, **_READER, "min_items": 1, "ids": None}
    ),
    "testing.shortest_paths": lambda g: Call(
        customer_session.testing.shortest_paths, {"specification": CUSTOMER_SESSION}
    ),
    "testing.trigger_sequences": lambda g: Call(
        customer_session.testing.trigger_sequences,
        {
            "legal_only": False,
            "start": State.OPEN,
            "max_size": 2,
            "specification": CUSTOMER_SESSION,
        },
    ),
    "testing.triggers": lambda g: Call(
        customer_session.testing.triggers, {"specification": CUSTOMER_SESSION}
    ),
    "testing.wire_documents": lambda g: Call(
        customer_session.testing.wire_documents,
        {"valid": True, "include_history": False, "session_costs": True},
    ),
}


def _replayer_call(replayer: Replayer, method: str, **args: Any) -> Call:
    return Call(getattr(replayer, method), args, replayer)


def _store_replayer_call(g: Given, method: str, **args: Any) -> Call:
    replayer = g.store_replayer()
    return Call(getattr(replayer, method), args, replayer.store)


def _effect_fields(g: Given) -> dict[str, Any]:
    return {
        "sequence": 1,
        "key": "k",
        "name": "n",
        "integration_id": "o1",
        "version": 2,
        "position": 0,
        "record": g.record(),
        "document": _doc(g),
        "attempts": 0,
        "created_at": NOW,
    }


# A valid call per method of the stores (the same for SQLiteStore, PostgresStore and
# AsyncPostgresStore), on a store holding "o1" (open) and "o2" (closed, with one
# effect pending) and the processed key "k".
STORE_RECIPES: dict[str, Callable[[Given], Call]] = {
    "counts": lambda g: Call(g.store.counts),
    "create": lambda g: Call(
        g.store.create,
        {
            "session": CustomerSession(integration_id="o3"),
            "key": "k3",
            "operation": "op",
            "actor": "a",
        },
    ),
    "deliver": lambda g: Call(g.store.deliver, {"handler": _hook, "limit": 1, "max_attempts": 3}),
    # The pending effect of "o2" is row 1 (discarded by the first call that succeeds).
    "discard": lambda g: Call(g.store.discard, {"sequence": 1, "reason": "gave up"}),
    "discarded": lambda g: Call(g.store.discarded, {"limit": 1, "after": None}),
    "discarded_count": lambda g: Call(g.store.discarded_count),
    "exists": lambda g: Call(g.store.exists, {"integration_id": "o1"}),
    "forget_keys": lambda g: Call(
        g.store.forget_keys, {"before": datetime(2000, 1, 1, tzinfo=UTC)}
    ),
    "get": lambda g: Call(g.store.get, {"integration_id": "o1"}),
    "history": lambda g: Call(g.store.history, {"integration_id": "o1"}),
    "ids": lambda g: Call(
        g.store.ids,
        {"state": State.OPEN, "updated_before": None, "updated_since": None, "limit": 5},
    ),
    "mark_processed": lambda g: Call(
        g.store.mark_processed, {"key": "k4", "integration_id": "o1", "refusal": None}
    ),
    "on_commit": lambda g: Call(g.store.on_commit, {"name": "n2", "trigger": Trigger.CLOSE}),
    "pending": lambda g: Call(g.store.pending, {"limit": 1, "after": None}),
    "pending_count": lambda g: Call(g.store.pending_count),
    "processed": lambda g: Call(g.store.processed, {"key": "k"}),
    "processed_key": lambda g: Call(g.store.processed_key, {"key": "k"}),
    "purge_delivered": lambda g: Call(
        g.store.purge_delivered, {"before": datetime(2000, 1, 1, tzinfo=UTC)}
    ),
    "transaction": lambda g: Call(
        g.store.transaction, {"integration_id": "o1", "key": "k5", "operation": "op", "actor": "a"}
    ),
    "update": lambda g: Call(
        g.store.update,
        {
            "integration_id": "o1",
            "change": _hook,
            "retries": 1,
            "key": "k6",
            "operation": "op",
            "actor": "a",
        },
    ),
}


def _pg_constructor(cls: type) -> Callable[[Given], Call]:
    def recipe(g: Given) -> Call:
        return Call(
            cls if cls is PostgresStore else cls.open,
            {
                "conninfo": g.store,
                **_READER,
                "retries": 1,
                "min_connections": 1,
                "max_connections": 1,
                "timeout": 1.0,
                "actor": None,
                "migrate": True,
            },
        )

    return recipe


# The PostgreSQL stores' constructors, given the URL of a fresh schema as g.store.
PG_CONSTRUCTORS = {
    "store.PostgresStore": _pg_constructor(PostgresStore),
    "store.AsyncPostgresStore": _pg_constructor(AsyncPostgresStore),
    "store.AsyncPostgresStore.open": _pg_constructor(AsyncPostgresStore),
}


def _store_method(name: str) -> str | None:
    """``"get"`` for ``store.SQLiteStore.get`` (a method of a store class), else None."""
    for cls in STORES:
        prefix = f"store.{cls.__name__}."
        if name.startswith(prefix) and name.removeprefix(prefix) in STORE_RECIPES:
            return name.removeprefix(prefix)
    return None


PUBLIC = public_callables()
MORE_FIELDS = "**"  # a bad value for one of the recipe's arguments that go to ``**fields``


def parameter_names(name: str) -> list[str]:
    """The parameters of a public callable to try bad values in."""
    names = []
    for parameter in inspect.signature(PUBLIC[name]).parameters.values():
        if parameter.name in {"self", "cls"}:
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            names.extend(typed_keywords(PUBLIC[name], parameter) or [MORE_FIELDS])
        else:
            names.append(parameter.name)
    return names


def typed_keywords(func: Callable[..., Any], parameter: inspect.Parameter) -> list[str]:
    """The keywords of ``**parameter: Unpack[SomeTypedDict]`` (restore()'s), each its own case."""
    annotation = parameter.annotation
    if isinstance(annotation, str):  # postponed (from __future__ import annotations)
        if not annotation.startswith("Unpack["):
            return []
        annotation = eval(annotation, vars(sys.modules[func.__module__]))  # noqa: S307 - the library's own annotation
    if get_origin(annotation) is not Unpack:
        return []
    (fields,) = get_args(annotation)
    return list(fields.__annotations__)


def cases(names: list[str]) -> list[Any]:
    return [
        pytest.param(
            name,
            parameter,
            id=f"{name}({parameter})",
            marks=[pytest.mark.postgres] if "Postgres" in name else [],
        )
        for name in names
        for parameter in parameter_names(name)
    ]


STORE_METHODS = sorted(name for name in PUBLIC if _store_method(name))
PLAIN = sorted(name for name in PUBLIC if name in RECIPES)


def arguments(
    call: Call, parameter: str, value: object, data: st.DataObject
) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments with ``value`` in place of ``parameter``'s."""
    signature = inspect.signature(call.func)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True  # until a parameter is left to its default
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            extra = {k: v for k, v in call.args.items() if k not in signature.parameters}
            if parameter == MORE_FIELDS:
                extra[data.draw(st.sampled_from(sorted(extra)), label="field")] = value
            elif parameter in typed_keywords(call.func, p):
                extra[parameter] = value
            kwargs.update(extra)
        elif p.kind is p.VAR_POSITIONAL:
            args.extend((value,) if p.name == parameter else call.args.get(p.name, ()))
        elif p.name != parameter and p.name not in call.args:
            positional = False
        else:
            given = value if p.name == parameter else call.args[p.name]
            if p.kind is p.POSITIONAL_ONLY or (positional and p.kind is p.POSITIONAL_OR_KEYWORD):
                args.append(given)
            else:
                kwargs[p.name] = given
    return args, kwargs


async def _enter(manager: contextlib.AbstractAsyncContextManager[Any]) -> None:
    async with manager:
        pass


def settle(result: object, g: Given, data: st.DataObject) -> None:
    """Use what the call gave: await it, draw from a strategy, enter a context, iterate.

    What a constructor gives is only kept: the recipes of its methods use it.
    """
    if inspect.isawaitable(result):
        result = g.run(_awaited(result))
    if isinstance(result, st.SearchStrategy):
        data.draw(result, label="drawn")
    elif isinstance(result, contextlib.AbstractContextManager) and not isinstance(result, PurePath):
        with result:
            pass
    elif isinstance(result, contextlib.AbstractAsyncContextManager):
        g.run(_enter(result))
    elif isinstance(result, Iterator):
        list(result)
    if isinstance(result, (SQLiteStore, PostgresStore, StoreReplayer)):
        result.close()
    elif isinstance(result, AsyncPostgresStore):
        g.run(result.close())


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def observe(subject: object, g: Given) -> object:
    """What a refused call must leave as it was."""
    if isinstance(subject, CustomerSession):
        return subject.snapshot()
    if isinstance(subject, Workflow):
        seen = []
        for phase in Phase:
            for key in (*Trigger, *State):
                with contextlib.suppress(CustomerSessionError):  # no such pair
                    seen.append(subject.entries(phase, key))
        return seen
    if isinstance(subject, Replayer):
        return {key: session.snapshot() for key, session in subject.sessions.items()}
    if isinstance(subject, STORES):
        return store_contents(subject, g)
    assert subject is None, subject
    return None


KEYS = ("k", "k3", "k4", "k5", "k6")


def store_contents(store: Any, g: Given) -> object:
    """Every session, journal, pending and discarded effect and recipe key of a store."""

    def run(value: Any) -> Any:
        return g.run(_awaited(value)) if inspect.isawaitable(value) else value

    ids = run(store.ids())
    return (
        {key: (run(store.get(key)).snapshot(), run(store.history(key))) for key in ids},
        run(store.pending()),
        run(store.discarded()),
        run(store.counts()),
        [run(store.processed_key(key)) for key in KEYS],
    )


def check(call: Call, parameter: str, g: Given, data: st.DataObject) -> None:
    """Call with a bad value for ``parameter``: success, or a library error and no change."""
    value = data.draw(bad_values(), label="bad value")
    args, kwargs = arguments(call, parameter, value, data)
    before = observe(call.subject, g)
    try:
        result = call.func(*args, **kwargs)
        if not isinstance(call.func, type):
            settle(result, g, data)
    except CustomerSessionError:
        assert observe(call.subject, g) == before, "a refused call changed its subject"


# Each case is one parameter of one callable; bad_values() holds some 25 odd scalars
# and containers of them, and CI draws new ones each run.
EXAMPLES = settings(
    max_examples=10,
    deadline=None,
    # The directory, event loop and store are shared by the examples of a case: each
    # example observes its subject before and after, so none depends on another.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# A store's calls cost a round trip or a write each: fewer examples per case.
STORE_EXAMPLES = settings(EXAMPLES, max_examples=5)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for every async call of the module (and the async store's pool)."""
    with asyncio.Runner() as loop:
        yield loop


class TestBadArguments:
    def test_every_public_callable_has_a_recipe(self):
        """Each public callable with parameters has a valid call, and each recipe a callable."""
        missing = [
            name
            for name in PUBLIC
            if parameter_names(name)
            and name not in RECIPES
            and name not in PG_CONSTRUCTORS
            and not _store_method(name)
        ]
        assert missing == []
        assert set(RECIPES) | set(PG_CONSTRUCTORS) <= set(PUBLIC)
        assert {_store_method(name) for name in STORE_METHODS} == set(STORE_RECIPES)

    @pytest.mark.parametrize(("name", "parameter"), cases(PLAIN))
    @EXAMPLES
    @given(data=st.data())
    def test_plain_callables(self, name, parameter, data, tmp_path, runner, monkeypatch):  # noqa: PLR0917 - fixtures
        """A bad argument to a callable gives success or a library error, its subject unchanged."""
        monkeypatch.chdir(tmp_path)  # a bad path (" ") is relative: keep its file here
        g = Given(tmp_path, runner)
        try:
            check(RECIPES[name](g), parameter, g, data)
        finally:
            g.close()

    @pytest.mark.parametrize(("name", "parameter"), cases(STORE_METHODS))
    @STORE_EXAMPLES
    @given(data=st.data())
    def test_store_methods(self, name, parameter, data, store_given):
        """A bad argument to a store's method: success, or a library error, the store unchanged."""
        g = store_given
        check(STORE_RECIPES[_store_method(name)](g), parameter, g, data)

    @pytest.mark.postgres
    @pytest.mark.parametrize(("name", "parameter"), cases(sorted(PG_CONSTRUCTORS)))
    @STORE_EXAMPLES
    @given(data=st.data())
    def test_postgres_constructors(self, name, parameter, data, pg_server, tmp_path, runner):  # noqa: PLR0917 - fixtures
        """A bad argument to a PostgreSQL store's constructor gives a store or a library error."""
        g = Given(tmp_path, runner, pg_server.fresh_schema())
        check(PG_CONSTRUCTORS[name](g), parameter, g, data)


@pytest.fixture(scope="module")
def open_stores(runner) -> Iterator[dict[type, Any]]:
    """The stores of the module's cases, one per class, opened by the first case that needs it."""
    opened: dict[type, Any] = {}
    yield opened
    for store in opened.values():
        if isinstance(store, AsyncPostgresStore):
            runner.run(store.close())
        else:
            store.close()


@pytest.fixture
def store_given(request, tmp_path, runner, open_stores) -> Given:
    """The store whose method the case calls, holding two sessions, an effect and a key.

    One store per class serves every case: each example compares the store's contents
    before and after its call, so what earlier cases did to it does not matter.
    """
    cls = next(cls for cls in STORES if f".{cls.__name__}." in request.node.callspec.params["name"])
    if cls not in open_stores:
        open_stores[cls] = _filled(cls, request, runner)
    return Given(tmp_path, runner, open_stores[cls])


def _filled(cls: type, request: pytest.FixtureRequest, runner: asyncio.Runner) -> Any:
    """A new store of ``cls`` holding "o1" (open), "o2" (closed, one effect pending) and key "k"."""
    if cls is SQLiteStore:
        path = request.getfixturevalue("tmp_path_factory").mktemp("store") / "sessions.db"
        store: Any = SQLiteStore(path, retries=1)
    else:
        url = request.getfixturevalue("pg_server").fresh_schema()
        store = (
            PostgresStore(url) if cls is PostgresStore else runner.run(AsyncPostgresStore.open(url))
        )

    def run(value: Any) -> Any:
        return runner.run(_awaited(value)) if inspect.isawaitable(value) else value

    store.on_commit("n", trigger=Trigger.CLOSE)
    run(
        store.create(
            CustomerSession(integration_id="o1", cart_items=[CartItem(sku="A", quantity=2)])
        )
    )
    run(store.create(CustomerSession(integration_id="o2")))
    run(store.update("o2", lambda session: session.close()))
    run(store.mark_processed("k"))
    return store


# What a command line is made of: the commands, their options, and odd words.
_WORDS = st.sampled_from(
    [
        "diagram",
        "validate",
        "replay",
        "--format",
        "--session",
        "--output",
        "-o",
        "--reopen",
        "--json",
        "--db",
        "--actor",
        "--max-refusals",
        "-",
        ".",
        "missing.json",
        "out.svg",
        "out.dot",
        "9" * 5000,
        "-1",
        # bad_values()'s text: argv holds only text
        "",
        " ",
        "\x00",
        "\ud800",
    ]
)


class TestCommandLine:
    @settings(EXAMPLES, max_examples=100)  # one case for the whole command line
    @given(argv=st.lists(_WORDS, max_size=6))
    def test_odd_arguments_get_one_error_line(self, argv, tmp_path, monkeypatch):
        """Any argv gives an exit status; status 2 comes with error lines, never a traceback.

        One line per error: ``validate`` reports each file it cannot read on a line.
        """
        monkeypatch.chdir(tmp_path)  # files the arguments name are made here
        # Standard error as the interpreter opens it takes any text (backslashreplace);
        # pytest's capture is strict UTF-8, so a lone surrogate would fail there only.
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        status = main(argv, out=io.StringIO())
        assert status in {0, 1, 2}
        assert "Traceback" not in err.getvalue()
        if status == 2:
            lines = err.getvalue().splitlines()
            assert lines, "status 2 without an error"
            assert all(
                line.startswith("customer-session") and ": error: " in line for line in lines
            )
