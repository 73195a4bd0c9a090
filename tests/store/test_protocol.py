"""SessionStore: every backend offers what the protocol says, with the same signatures."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from customer_session.store import (
    AsyncPostgresStore,
    PostgresStore,
    SessionStore,
    SQLiteStore,
    open_store,
)

SYNC_STORES = [SQLiteStore, PostgresStore]
STORES = [*SYNC_STORES, AsyncPostgresStore]

# What a backend has beyond the protocol, on purpose: nothing else may be public.
BACKEND_ONLY: dict[type[Any], set[str]] = {
    SQLiteStore: {"path"},  # the file: a PostgreSQL store has a URL with secrets instead
    PostgresStore: set(),
    AsyncPostgresStore: {"open"},  # the async constructor: __init__ cannot await the pool
}
# The SQL dialect the shared implementation picks statements by: a class constant.
NOT_API = {"dialect"}
# The async store's context manager is the async one.
ASYNC_NAMES = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
CONTEXT = {*ASYNC_NAMES, *ASYNC_NAMES.values()}
# The options of the constructors that mean the same on every backend.
SHARED_OPTIONS = ["session_class", "workflow", "retries", "timeout", "actor", "migrate"]


def public(cls: type[Any]) -> set[str]:
    """The public names of ``cls``: its methods and properties, and its context manager's."""
    names = set(dir(cls))
    return {name for name in names if not name.startswith("_")} | (CONTEXT & names)


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    """Each parameter's name, kind and default (annotations differ between sync and async)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def annotated(function: Any) -> list[tuple[str, Any, Any, Any]]:
    """Each parameter's name, kind, default and annotation, as written."""
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


def named(cls: type[Any], name: str) -> str:
    """The name of the protocol's member ``name`` on ``cls`` (``__aenter__`` for ``__enter__``)."""
    return ASYNC_NAMES.get(name, name) if cls is AsyncPostgresStore else name


def protocol_members() -> list[str]:
    """The protocol's members, the context manager's included."""
    return sorted(
        name
        for name in vars(SessionStore)
        if not name.startswith("_") or name in {"__enter__", "__exit__"}
    )


MEMBERS = protocol_members()
PROPERTIES = [n for n in MEMBERS if isinstance(inspect.getattr_static(SessionStore, n), property)]
METHODS = [n for n in MEMBERS if n not in PROPERTIES]


class TestSessionStore:
    @pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
    def test_every_backend_has_every_member(self, cls):
        """Each backend has every method and property the protocol declares."""
        for name in MEMBERS:
            assert hasattr(cls, named(cls, name)), name

    @pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
    def test_the_protocol_declares_every_public_member(self, cls):
        """A public method or property of a backend is in the protocol, unless only it has one."""
        declared = {named(cls, name) for name in MEMBERS}
        assert public(cls) - declared - NOT_API == BACKEND_ONLY[cls]

    @pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
    @pytest.mark.parametrize("name", PROPERTIES)
    def test_properties_are_properties(self, cls, name):
        """What the protocol declares as a property is a property of every backend."""
        assert isinstance(inspect.getattr_static(cls, name), property)

    @pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
    @pytest.mark.parametrize("name", METHODS)
    def test_methods_take_the_same_parameters(self, cls, name):
        """Each method takes the protocol's parameters: the same names, kinds and defaults."""
        declared = getattr(SessionStore, name)
        assert parameters(getattr(cls, named(cls, name))) == parameters(declared)

    @pytest.mark.parametrize("cls", SYNC_STORES, ids=lambda c: c.__name__)
    @pytest.mark.parametrize("name", METHODS)
    def test_sync_methods_annotate_their_parameters_as_the_protocol(self, cls, name):
        """A sync backend's parameters have the protocol's annotations, as written."""
        assert annotated(getattr(cls, name)) == annotated(getattr(SessionStore, name))

    @pytest.mark.parametrize("name", sorted(set(METHODS) - {"on_commit", "transaction"}))
    def test_async_methods_are_awaited(self, name):
        """Every method of the async store is a coroutine, but on_commit and transaction."""
        method = getattr(AsyncPostgresStore, named(AsyncPostgresStore, name))
        assert inspect.iscoroutinefunction(method)


class TestConstructors:
    @pytest.mark.parametrize("cls", STORES, ids=lambda c: c.__name__)
    def test_shared_options_have_the_same_kind_and_default(self, cls):
        """The options every backend takes are keyword-only, with the same defaults."""
        options = {p.name: p for p in inspect.signature(cls).parameters.values()}
        reference = {p.name: p for p in inspect.signature(SQLiteStore).parameters.values()}
        for name in SHARED_OPTIONS:
            assert options[name].kind is inspect.Parameter.KEYWORD_ONLY, name
            assert options[name].default == reference[name].default, name

    def test_open_store_takes_the_shared_options_as_the_stores(self):
        """open_store() takes the options shared by every backend, with their defaults."""
        options = {p.name: p for p in inspect.signature(open_store).parameters.values()}
        reference = {p.name: p for p in inspect.signature(SQLiteStore).parameters.values()}
        assert sorted(options) == sorted(["target", *SHARED_OPTIONS])
        for name in SHARED_OPTIONS:
            assert (options[name].kind, options[name].default) == (
                reference[name].kind,
                reference[name].default,
            ), name

    def test_the_async_store_opens_with_the_constructors_parameters(self):
        """AsyncPostgresStore.open() takes exactly what AsyncPostgresStore() takes."""
        assert parameters(AsyncPostgresStore.open) == parameters(AsyncPostgresStore)

    def test_the_postgres_stores_take_the_same_options(self):
        """PostgresStore and AsyncPostgresStore take the same options, with the same defaults."""
        assert parameters(AsyncPostgresStore) == parameters(PostgresStore)
