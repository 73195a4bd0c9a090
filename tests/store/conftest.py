"""Fixtures of the store tests: one contract, every backend, real databases.

The PostgreSQL server is started once per test session, as the ``postgres`` system
user when the tests run as root (``initdb`` refuses root). Under CI (``CI`` set)
a server that cannot start fails the run: those tests are never skipped there.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from customer_session.store import open_store
from customer_session.store._pgserver import PostgresUnavailable, TemporaryPostgres

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HERE = Path(__file__).parent
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TemporaryPostgres]:
    """A PostgreSQL server for the whole run (skipped outside CI when it cannot start)."""
    try:
        import psycopg  # noqa: F401, PLC0415 - only checks that the extra is installed

        server = TemporaryPostgres().start()
    except (ImportError, PostgresUnavailable) as exc:
        reason = f"PostgreSQL tests need a server: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: these tests must run)", pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of the backend: an SQLite file or a PostgreSQL schema."""
    if backend == "sqlite":
        return str(tmp_path / "sessions.db")
    server: TemporaryPostgres = request.getfixturevalue("pg_server")
    return server.fresh_schema()


@pytest.fixture
def open_db(database: str) -> Iterator[Callable[..., Any]]:
    """Open more store objects on the database; all are closed at the end."""
    opened: list[Any] = []

    def open_(**options: Any) -> Any:
        store = open_store(database, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_db: Callable[..., Any]) -> Any:
    """A store on a fresh database."""
    return open_db()


@pytest.fixture
def sql(database: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run raw SQL on the database (``?`` placeholders), to inspect or damage it."""

    def run(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        if database.startswith("postgresql://"):
            import psycopg  # noqa: PLC0415 - optional dependency

            with psycopg.connect(database, autocommit=True) as connection:
                cursor = connection.execute(statement.replace("?", "%s"), params)
                return list(cursor.fetchall()) if cursor.description else []
        connection = sqlite3.connect(database, isolation_level=None)
        try:
            return connection.execute(statement, params).fetchall()
        finally:
            connection.close()

    return run


@pytest.fixture
def importable_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``store_workers`` importable in spawned worker processes."""
    monkeypatch.syspath_prepend(str(HERE))
