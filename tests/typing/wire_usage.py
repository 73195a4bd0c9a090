"""Typed usage of customer_session.wire; CI type-checks this file with mypy --strict."""

from __future__ import annotations

from typing import Any, assert_type

from customer_session import CustomerSession, ReopenableCustomerSession, ReturnedItem, wire

session = CustomerSession(integration_id="order-42")
document: dict[str, Any] = wire.to_dict(session, include_history=True)
assert_type(wire.from_dict(document), CustomerSession)
assert_type(
    wire.from_dict(document, session_class=ReopenableCustomerSession), ReopenableCustomerSession
)
assert_type(wire.from_json(wire.to_json(session, indent=2)), CustomerSession)

update: dict[str, Any] = wire.update_request(session, response_content=["customerSession"])
fields: dict[str, Any] = wire.new_session_fields(
    update["customerSession"], path="$.customerSession"
)
returns: dict[str, Any] = wire.return_request([ReturnedItem(position=0, quantity=1)])
assert_type(wire.returned_items_from_json(returns["return"]), tuple[ReturnedItem, ...])

response: dict[str, Any] = {
    "id": 1,
    "created": "2026-03-02T10:15:00Z",
    "integrationId": "order-42",
    "applicationId": 12,
    "firstSession": True,
    "updateCount": 1,
    "total": 0,
    "cartItemTotal": 0,
    "additionalCostTotal": 0,
    "updated": "2026-03-02T10:15:00Z",
}
assert_type(wire.from_v2_response(response), CustomerSession)
