"""customer_session.wire against the official next-generation SDK (PyPI ``talon-one-sdk``).

The SDK's Pydantic models are the oracle for the wire format: our request bodies
must validate as its request models (and lose no key when it dumps them again),
its ``CustomerSessionV2`` must load into our session, and its v1
``CustomerSession`` must carry our documents there and back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from talon_one.models import (
    CustomerSession as SdkCustomerSession,
)
from talon_one.models import (
    CustomerSessionV2,
    IntegrationRequest,
    ReturnIntegrationRequest,
)

from customer_session import CustomerSession, ReturnedItem, State
from customer_session.testing import returned_items, sessions, wire_documents
from customer_session.wire import (
    RETURN_RESPONSE_CONTENT,
    UPDATE_RESPONSE_CONTENT,
    from_dict,
    from_v2_response,
    return_request,
    to_dict,
    update_request,
)

DATA = Path(__file__).parent / "data"
# Cart item fields the SDK marks readOnly (newer versions drop them from to_dict()),
# with their keys and defaults.
READ_ONLY: dict[str, tuple[str, Any]] = {
    "returned_quantity": ("returnedQuantity", 0),
    "catalog_item_id": ("catalogItemID", None),
    "selected_price_type": ("selectedPriceType", None),
    "adjustment_reference_id": ("adjustmentReferenceId", None),
    "adjustment_effective_from": ("adjustmentEffectiveFrom", None),
    "adjustment_effective_until": ("adjustmentEffectiveUntil", None),
    "prices": ("prices", {}),
}


def load(name: str) -> Any:
    """A sample document from ``tests/data``."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def updatable(session: CustomerSession) -> bool:
    """Whether an update request can be built for ``session``."""
    return session.state is not State.PARTIALLY_RETURNED


def sdk_v2(session: CustomerSession, internal_id: int = 1) -> CustomerSessionV2:
    """The ``CustomerSessionV2`` Talon.One would answer with for ``session``, built with the SDK."""
    items = [
        {**item, "position": index} for index, item in enumerate(to_dict(session)["cartItems"])
    ]
    optional = {
        "profileId": session.profile_id,
        "referralCode": session.referral,
        "couponCodes": None if session.coupon is None else [session.coupon],
        "identifiers": list(session.identifiers) or None,
    }
    return CustomerSessionV2.from_dict(
        {
            "id": internal_id,
            "created": session.created.isoformat(),
            "integrationId": session.integration_id,
            "applicationId": session.application_id,
            "state": session.state.value,
            "cartItems": items,
            "additionalCosts": {k: {"price": v.price} for k, v in session.additional_costs.items()},
            "attributes": to_dict(session)["attributes"],
            "firstSession": session.first_session,
            "updateCount": session.update_count,
            "total": session.total,
            "cartItemTotal": session.cart_item_total,
            "additionalCostTotal": session.additional_cost_total,
            "updated": session.updated.isoformat(),
            **{key: value for key, value in optional.items() if value is not None},
        }
    )


def as_v2(session: CustomerSession, sdk_doc: dict[str, Any]) -> CustomerSession:
    """What a v2 response can carry of ``session``: no history, no discounts."""
    return surviving(CustomerSession.restore(**{**session.snapshot(), "discounts": {}}), sdk_doc)


def surviving(session: CustomerSession, sdk_doc: dict[str, Any]) -> CustomerSession:
    """``session`` without what the SDK dropped: the history, and read-only item fields.

    The SDK's v1 model has no history; newer SDK versions also leave the read-only
    cart item fields out of ``to_dict()``, so each one missing from the SDK's item
    goes back to its default here.
    """
    lines = [
        attrs.evolve(
            line, **{name: default for name, (key, default) in READ_ONLY.items() if key not in kept}
        )
        for line, kept in zip(session.cart_items, sdk_doc.get("cartItems", []), strict=True)
    ]
    return CustomerSession.restore(**{**session.snapshot(), "history": (), "cart_items": lines})


class TestUpdateRequestsValidate:
    """Our update bodies are valid ``IntegrationRequest`` bodies."""

    def test_sample_request_is_valid(self):
        """The sample update request validates and dumps back unchanged."""
        body = load("update_request.json")
        assert IntegrationRequest.from_dict(body).to_dict() == body

    @given(wire_documents().map(from_dict).filter(updatable))
    def test_generated_requests_validate_without_losing_keys(self, session):
        """Every update body validates as IntegrationRequest, and the SDK keeps every key."""
        body = update_request(session, response_content=sorted(UPDATE_RESPONSE_CONTENT))
        model = IntegrationRequest.from_dict(body)
        assert model.to_dict() == body
        assert model.customer_session.state == session.state.value

    @given(sessions().filter(updatable))
    def test_discarding_codes_validates(self, session):
        """Bodies that discard unset codes validate too."""
        body = update_request(session, discard_unset_codes=True)
        assert IntegrationRequest.from_dict(body).to_dict() == body


class TestReturnRequestsValidate:
    """Our return bodies are valid ``ReturnIntegrationRequest`` bodies."""

    def test_sample_request_is_valid(self):
        """The sample return request validates and dumps back unchanged."""
        body = load("return_request.json")
        assert ReturnIntegrationRequest.from_dict(body).to_dict() == body

    @given(sessions(state=State.CLOSED).flatmap(returned_items), st.booleans())
    def test_generated_returns_validate(self, items, with_sku):
        """Every return body validates as ReturnIntegrationRequest, keys kept."""
        if with_sku:
            items = tuple(ReturnedItem(i.position, i.quantity, f"SKU-{i.position}") for i in items)
        body = return_request(items, response_content=sorted(RETURN_RESPONSE_CONTENT))
        model = ReturnIntegrationRequest.from_dict(body)
        assert model.to_dict() == body
        assert [i.position for i in model.var_return.returned_cart_items] == [
            i.position for i in items
        ]


class TestV2ResponsesLoad:
    """A ``CustomerSessionV2`` the SDK dumps loads into our session."""

    def test_sample_response_is_valid(self):
        """The sample response validates with the SDK and loads from its dump."""
        model = CustomerSessionV2.from_dict(load("session_v2_response.json"))
        assert from_v2_response(model.to_dict()) == from_v2_response(
            load("session_v2_response.json")
        )

    @given(wire_documents().map(from_dict))
    def test_sdk_dump_loads(self, session):
        """The SDK's to_dict() of a response (datetime and UUID objects included) loads."""
        sdk_doc = sdk_v2(session).to_dict()
        assert from_v2_response(sdk_doc) == as_v2(session, sdk_doc)

    @given(wire_documents().map(from_dict))
    def test_sdk_json_loads(self, session):
        """The SDK's JSON text of a response loads the same session."""
        sdk_doc = json.loads(sdk_v2(session).model_dump_json(by_alias=True, exclude_none=True))
        assert from_v2_response(sdk_doc) == as_v2(session, sdk_doc)


class TestV1RoundTripThroughSdk:
    """Ours -> dict -> SDK CustomerSession -> SDK to_dict() -> ours."""

    def test_our_sample_output_is_a_valid_sdk_document(self):
        """What we write for the seed-era sample validates with the SDK's v1 model."""
        doc = to_dict(from_dict(load("session_v1.json")))
        model = SdkCustomerSession.from_dict(doc)
        assert model.update_count == 1

    def test_seed_era_sample_lacks_what_the_sdk_requires(self):
        """The seed-era sample has no updateCount, which the SDK requires and we default."""
        with pytest.raises(ValueError, match="updateCount"):
            SdkCustomerSession.from_dict(load("session_v1.json"))

    @given(wire_documents(session_costs=False).map(from_dict))
    def test_round_trip_keeps_what_survives(self, session):
        """Every field the SDK's v1 model keeps comes back equal."""
        sdk_doc = SdkCustomerSession.from_dict(to_dict(session)).to_dict()
        assert from_dict(sdk_doc) == surviving(session, sdk_doc)

    @given(sessions())
    def test_history_extension_is_ignored_by_the_sdk(self, session):
        """The SDK ignores our history extension rather than refusing the document."""
        doc = to_dict(session, include_history=True)
        assert from_dict(SdkCustomerSession.from_dict(doc).to_dict()) == surviving(session, doc)
