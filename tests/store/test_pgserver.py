"""The throwaway PostgreSQL server the store tests start for themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from customer_session.store import _pgserver
from customer_session.store._pgserver import TemporaryPostgres

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres


def test_a_port_taken_before_the_server_binds_it_is_replaced(pg_server, monkeypatch):
    """A port another program takes between the probe and the start: the server takes another."""
    import psycopg  # noqa: PLC0415 - optional dependency

    probed = _pgserver._free_port

    def ports() -> Iterator[int]:
        yield pg_server.port  # found free, then bound by another server before this one
        while True:
            yield probed()

    monkeypatch.setattr(_pgserver, "_free_port", ports().__next__)
    with TemporaryPostgres() as server:
        assert server.port != pg_server.port
        with psycopg.connect(server.url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
