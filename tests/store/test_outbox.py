import json

import pytest

from customer_session import CustomerSession, wire
from customer_session.store import SQLiteStore


class TestEffectToDict:
    def test_is_the_row_as_json_ready_data(self):
        """to_dict() gives every field, camelCase, times and the record as the wire writes them."""
        store = SQLiteStore(":memory:")
        store.on_commit("notify")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close())
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
        store = SQLiteStore(":memory:")
        store.on_commit("notify")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close())
        data = store.discard(store.pending()[0].sequence, reason="poison").to_dict()
        assert data["discardReason"] == "poison"
        assert data["discardedAt"].endswith("Z")
        assert json.loads(json.dumps(data)) == data
        store.close()

    def test_a_failed_then_discarded_row_has_its_error_and_discard_time(self):
        """to_dict() gives a row's last error, and discardedAt is the discard's time."""
        store = SQLiteStore(":memory:")
        store.on_commit("notify")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close())

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
