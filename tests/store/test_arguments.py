"""The checks of the store methods' arguments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from customer_session import ValidationError
from customer_session.store._arguments import check


class TestCheck:
    def test_good_arguments_pass(self):
        """Valid values of every rule raise nothing."""
        check(
            "update",
            integration_id="order-1",
            change=len,
            retries=0,
            optional_key=None,
            operation="close",
            limit=None,
        )

    @pytest.mark.parametrize(
        ("rule", "value", "shown"),
        [
            ("integration_id", "", "integration_id"),
            ("integration_id", 42, "integration_id"),
            ("integration_id", "order-\ud800", "integration_id"),
            ("key", "key\x00", "key"),
            ("key", None, "key"),
            ("optional_key", 5, "key"),
            ("optional_integration_id", "", "integration_id"),
            ("operation", "", "operation"),
            ("retries", -1, "retries"),
            ("retries", True, "retries"),
            ("limit", 0, "limit"),
            ("limit", 2**63, "limit"),
            ("retries", 2**63, "retries"),
            ("before", datetime(2026, 3, 2, 10, 15), "before"),  # noqa: DTZ001 - naive on purpose
            ("before", datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))), "before"),
            (
                "updated_since",
                datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
                "updated_since",
            ),
            ("change", None, "change"),
            ("handler", "print", "handler"),
        ],
    )
    def test_a_bad_value_is_named_by_its_argument(self, rule, value, shown):
        """Each rule refuses its bad values under the argument's own name."""
        with pytest.raises(ValidationError) as caught:
            check("method", **{rule: value})
        assert [p.path for p in caught.value.problems] == [shown]
        assert caught.value.subject == "method()"

    def test_every_bad_argument_is_listed(self):
        """Several bad arguments are refused together, in the order given."""
        with pytest.raises(ValidationError) as caught:
            check("update", integration_id=None, change=3, retries=-2)
        assert [p.path for p in caught.value.problems] == ["integration_id", "change", "retries"]
