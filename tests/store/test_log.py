"""The stores' logger (``_log.py``): its place in the hierarchy, and what a record costs.

What each backend logs, event by event, is in the contract suite (``TestLogging``).
"""

import logging
from datetime import UTC, datetime

import pytest

from customer_session import CustomerSession, StoreTimeout
from customer_session.store import SQLiteStore, _log


class _CountedRepr:
    """A stand-in store that counts how often it is shown."""

    def __init__(self) -> None:
        self.shown = 0

    def __repr__(self) -> str:
        self.shown += 1
        return "<CountedStore>"


def _every_event(store: object) -> None:
    """Log each event that names a store, once."""
    _log.commit_retried(store, "order-1", 1, 2, 3)
    _log.commit_gave_up(store, "order-1", 3, 3)
    _log.commit_conflict(store, "order-1", 1)
    _log.cache_stale(store, "order-1", 1)
    _log.schema_changed(store, "db", 0, 4)
    _log.purged(store, 0, datetime(2026, 3, 2, tzinfo=UTC))
    _log.keys_forgotten(store, 0, datetime(2026, 3, 2, tzinfo=UTC))


class _Raising(logging.Handler):
    """A user's handler that fails on every record."""

    def emit(self, record: logging.LogRecord) -> None:
        raise RuntimeError("log sink down")


@pytest.fixture
def raising_handler():
    """The store logger on at DEBUG, with a handler that raises."""
    logger = logging.getLogger("customer_session.store")
    handler, level = _Raising(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield
    logger.removeHandler(handler)
    logger.setLevel(level)


class TestAFailingHandler:
    def test_does_not_break_the_store_call_and_is_shown_as_logging_shows_one(
        self, raising_handler, tmp_path, capsys
    ):
        """A handler that raises leaves the call's outcome alone; stderr says a log failed."""
        with SQLiteStore(tmp_path / "s.db") as store:  # schema_created is logged on first use
            store.create(CustomerSession(integration_id="order-1"))
            assert store.exists("order-1")
            assert store.purge_delivered(before=datetime.now(UTC)) == 0
        err = capsys.readouterr().err
        assert "--- Logging error ---" in err
        assert "RuntimeError: log sink down" in err

    def test_is_silent_when_logging_raises_no_exceptions(
        self, raising_handler, tmp_path, capsys, monkeypatch
    ):
        """With logging.raiseExceptions off (production), a failing handler prints nothing."""
        monkeypatch.setattr(logging, "raiseExceptions", False)
        with SQLiteStore(tmp_path / "s.db") as store:
            store.create(CustomerSession(integration_id="order-1"))
        assert capsys.readouterr().err == ""


class TestTheLogger:
    def test_is_a_child_of_the_package_logger_without_a_handler_of_its_own(self):
        """customer_session.store propagates to the package's logger and adds no handler."""
        logger = logging.getLogger("customer_session.store")
        assert logger is _log.logger
        assert logger.parent is logging.getLogger("customer_session")
        assert logger.handlers == []
        assert logger.propagate

    def test_a_level_that_is_off_builds_no_record(self, caplog):
        """With the logger off for an event's level, the store is not even shown (repr())."""
        caplog.set_level(logging.CRITICAL, logger="customer_session")
        store = _CountedRepr()
        _every_event(store)
        assert store.shown == 0
        assert caplog.records == []

    def test_a_level_that_is_on_shows_the_store_once_a_record(self, caplog):
        """With the logger on, each record shows the store in one repr() call at most."""
        caplog.set_level(logging.DEBUG, logger="customer_session")
        store = _CountedRepr()
        _every_event(store)
        assert len(caplog.records) == store.shown == 7
        assert {record.store for record in caplog.records} == {"<CountedStore>"}

    def test_a_record_points_at_the_store_method_that_logged_it(self, caplog):
        """A record's function and file are the store's, not the logging helper's."""
        caplog.set_level(logging.INFO, logger="customer_session")
        with SQLiteStore(":memory:") as store:
            store.create(CustomerSession(integration_id="order-1"))
            caplog.clear()
            store.purge_delivered(before=datetime.now(UTC))
        (record,) = caplog.records
        assert (record.funcName, record.filename) == ("purge_delivered", "_base.py")


@pytest.mark.parametrize(
    ("setting", "timeout", "limit"),
    [
        ("timeout", 0.5, "the store's timeout of 0.5 seconds"),
        ("connect_timeout", 2, "libpq's connect_timeout of 2 seconds"),
        ("lock_timeout", None, "the server's lock_timeout"),
        ("statement_timeout", None, "the server's statement_timeout"),
    ],
)
def test_a_timeout_names_whose_limit_ran_out(caplog, setting, timeout, limit):
    """A StoreTimeout's record says which limit ran out and whose setting it is."""
    caplog.set_level(logging.WARNING, logger="customer_session")
    error = StoreTimeout(
        "the message",
        database="db",
        waited_for="a lock",
        setting=setting,
        timeout=timeout,
        integration_id=None,
    )
    assert _log.timed_out(error) is error
    (record,) = caplog.records
    assert record.getMessage() == (
        f"store: gave up waiting for a lock in db ({limit} ran out); nothing was written "
        "(StoreTimeout)"
    )
