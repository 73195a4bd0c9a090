import contextvars
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from customer_session import CustomerSession, wire
from customer_session.exceptions import CorruptData, ValidationError
from customer_session.store import SQLiteStore


class TestEffectToDict:
    def test_is_the_row_as_json_ready_data(self):
        """to_dict() gives every field, camelCase, times and the record as the wire writes them."""
        store = _one_pending_row()
        (row,) = store.pending()
        written = wire.to_dict(store.get("order-42"), include_history=True)
        assert row.to_dict() == {
            "sequence": row.sequence,
            "key": row.key,
            "name": "notify",
            "integrationId": "order-42",
            "version": 2,
            "position": 0,
            "record": written["x-customerSession"]["history"][0],
            "attempts": 0,
            "lastError": None,
            "createdAt": row.created_at.replace(tzinfo=None).isoformat() + "Z",
            "discardedAt": None,
            "discardReason": None,
            "document": written,
        }
        store.close()

    def test_a_discarded_row_has_its_time_and_reason(self):
        """to_dict() of a discarded row gives discardedAt and discardReason; it is plain JSON."""
        store = _one_pending_row()
        data = store.discard(store.pending()[0].sequence, reason="poison").to_dict()
        assert data["discardReason"] == "poison"
        assert data["discardedAt"].endswith("Z")
        assert json.loads(json.dumps(data)) == data
        store.close()

    def test_a_failed_then_discarded_row_has_its_error_and_discard_time(self):
        """to_dict() gives a row's last error, and discardedAt is the discard's time."""
        store = _one_pending_row()

        def refuse(effect):
            raise ConnectionError("receiver down")

        with pytest.raises(ConnectionError):
            store.deliver(refuse)
        row = store.discard(store.pending()[0].sequence, reason="poison")
        data = row.to_dict()
        assert data["lastError"] == "ConnectionError: receiver down"
        assert (data["discardedAt"], data["discardReason"]) == (
            row.discarded_at.replace(tzinfo=None).isoformat() + "Z",
            "poison",
        )
        assert data["discardedAt"] != data["createdAt"]
        store.close()

    def test_without_the_document_it_is_the_rest_of_the_row(self):
        """to_dict(include_document=False) is to_dict() without its document."""
        store = _one_pending_row()
        (row,) = store.pending()
        whole = row.to_dict()
        del whole["document"]
        assert row.to_dict(include_document=False) == whole
        store.close()

    @pytest.mark.parametrize("value", ["no", 0, None])
    def test_include_document_must_be_a_bool(self, value):
        """to_dict(include_document=...) refuses anything but True or False, naming it."""
        store = _one_pending_row()
        (row,) = store.pending()
        with pytest.raises(ValidationError, match=r"^to_dict\(\): include_document: must be"):
            row.to_dict(include_document=value)
        store.close()


class TestListedDocument:
    def test_a_listed_row_with_a_corrupt_document_is_listed_and_its_document_refused(
        self, tmp_path
    ):
        """pending() lists a row whose document is not JSON; reading the document is CorruptData.

        The operator can see the row (and discard it) though its document does not load.
        """
        path = _row_with_a_corrupt_document(tmp_path)
        with SQLiteStore(path) as store:
            (row,) = store.pending()
            assert row.to_dict(include_document=False)["integrationId"] == "order-42"
            with pytest.raises(CorruptData, match="order-42': the stored outbox document is not"):
                _ = row.document
            with pytest.raises(CorruptData, match="order-42': the stored outbox document is not"):
                row.to_dict()
            assert store.discard(row.sequence, reason="corrupt").sequence == row.sequence

    def test_a_listed_row_with_a_corrupt_document_has_a_repr_and_compares(self, tmp_path):
        """A row listed with a corrupt document can be shown, compared and hashed (not raise).

        An operator prints or logs the row before discarding it, and a set of rows
        seen holds it, though its document does not load.
        """
        path = _row_with_a_corrupt_document(tmp_path)
        with SQLiteStore(path) as store:
            (row,) = store.pending()
            (again,) = store.pending()
            assert "document=<outbox document, not JSON: '{oops'>" in repr(row)
            assert row == again
            assert hash(row) == hash(again)
            assert row.to_dict(include_document=False)["integrationId"] == "order-42"
            discarded = store.discard(row.sequence, reason="corrupt")
            assert discarded != row  # discarded since
            assert "order-42" in repr(discarded)

    def test_a_document_is_parsed_once_and_then_kept(self):
        """A listed row's document, once read, is the same object on each read."""
        store = _one_pending_row()
        (row,) = store.pending()
        assert row.document is row.document
        assert row.session().integration_id == "order-42"
        store.close()


class TestNestedDelivery:
    def test_a_context_copied_during_a_delivery_may_deliver_once_it_is_over(self):
        """A context a handler copied (for a thread or task) may deliver once that delivery is over.

        The copy keeps the delivery's entry; only a delivery still running refuses
        one nested in it, as it would wait for itself.
        """
        store = _one_pending_row()
        copied: list[contextvars.Context] = []
        assert store.deliver(lambda effect: copied.append(contextvars.copy_context())) == 1
        store.update("order-42", lambda session: session.cancel())
        (context,) = copied
        assert context.run(store.deliver, lambda effect: None) == 1
        store.close()


def _row_with_a_corrupt_document(tmp_path: Path) -> Path:
    """An SQLite store holding one pending outbox row whose document is not JSON."""
    path = tmp_path / "store.db"
    with SQLiteStore(path) as store:
        store.on_commit("notify")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close())
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE customer_session_outbox SET document = '{oops'")
    return path


def _one_pending_row() -> SQLiteStore:
    """An in-memory store holding one pending outbox row: order-42's close, effect notify."""
    store = SQLiteStore(":memory:")
    store.on_commit("notify")
    store.create(CustomerSession(integration_id="order-42"))
    store.update("order-42", lambda session: session.close())
    return store
