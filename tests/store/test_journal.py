import json

from customer_session import CartItem, CustomerSession, ReturnedItem, wire
from customer_session.store import SQLiteStore

# The types json.loads gives: what "JSON-ready data" holds, and nothing else.
PLAIN = (dict, list, str, int, float, bool, type(None))


def plain_types(data: object) -> set[type]:
    """Every type in ``data``, a JSON-like value, looking into its dicts and lists."""
    if isinstance(data, dict):
        return {
            dict,
            *(t for key, value in data.items() for t in plain_types(key) | plain_types(value)),
        }
    if isinstance(data, list):
        return {list, *(t for item in data for t in plain_types(item))}
    return {type(data)}


class TestJournalEntryToDict:
    def test_is_the_entry_as_json_ready_data(self):
        """to_dict() gives every field, camelCase, times and records as the wire writes them."""
        store = SQLiteStore(":memory:", actor="ops")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close(), key="evt-1")
        session = store.get("order-42")
        _, entry = store.history("order-42")
        written = wire.to_dict(session, include_history=True)
        assert entry.to_dict() == {
            "sequence": entry.sequence,
            "integrationId": "order-42",
            "version": 2,
            "kind": "transition",
            "operation": "close",
            "key": "evt-1",
            "actor": "ops",
            "recordedAt": entry.recorded_at.replace(tzinfo=None).isoformat() + "Z",
            "records": written["x-customerSession"]["history"],
            "changes": {key: written[key] for key in entry.changes},
        }
        store.close()

    def test_round_trips_through_json(self):
        """to_dict() of an entry with returned items is plain JSON: it dumps and loads equal."""
        store = SQLiteStore(":memory:")
        store.create(
            CustomerSession(integration_id="o", cart_items=[CartItem(sku="SOCK", quantity=2)])
        )
        store.update("o", lambda s: s.close())
        store.update("o", lambda s: s.return_items([ReturnedItem(position=0, quantity=1)]))
        for entry in store.history("o"):
            data = entry.to_dict()
            assert json.loads(json.dumps(data)) == data
        assert store.history("o")[-1].to_dict()["records"][0]["returnedItems"] == [
            {"position": 0, "quantity": 1}
        ]
        store.close()

    def test_holds_plain_json_types_only(self):
        """to_dict() holds only the types json.loads gives (kind is a str, not the enum)."""
        store = SQLiteStore(":memory:")
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close())
        for entry in store.history("order-42"):
            assert plain_types(entry.to_dict()) <= set(PLAIN)
        store.close()
