"""The checks of the store methods' arguments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from tests.conftest import BROKEN_ZONE_TIMES

from customer_session import ValidationError
from customer_session.store._arguments import check


class _Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


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
            actor="worker-1",
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
            ("actor", "", "actor"),
            ("actor", "   ", "actor"),
            ("actor", "a" * 201, "actor"),
            ("actor", "line\nbreak", "actor"),
            ("actor", "bell\x07", "actor"),
            ("actor", "del\x7f", "actor"),
            ("actor", "c1\x9f", "actor"),
            ("actor", "x\udfff", "actor"),
            ("actor", 7, "actor"),
        ],
    )
    def test_a_bad_value_is_named_by_its_argument(self, rule, value, shown):
        """Each rule refuses its bad values under the argument's own name."""
        with pytest.raises(ValidationError) as caught:
            check("method", **{rule: value})
        assert [p.path for p in caught.value.problems] == [shown]
        assert caught.value.subject == "method()"

    @pytest.mark.parametrize("rule", ["before", "updated_before", "updated_since"])
    @pytest.mark.parametrize("moment", BROKEN_ZONE_TIMES)
    def test_a_time_whose_zone_fails_is_refused(self, rule, moment):
        """A time whose time zone fails is refused under the argument's name, as a naive one is."""
        with pytest.raises(ValidationError) as caught:
            check("method", **{rule: moment})
        assert [p.path for p in caught.value.problems] == [rule]

    def test_every_bad_argument_is_listed(self):
        """Several bad arguments are refused together, in the order given."""
        with pytest.raises(ValidationError) as caught:
            check("update", integration_id=None, change=3, retries=-2)
        assert [p.path for p in caught.value.problems] == ["integration_id", "change", "retries"]

    @pytest.mark.parametrize("actor", [None, "a", "a" * 200, "Zoë (support)", " x ", "x\u2028y"])
    def test_an_actor_may_be_none_or_any_short_non_blank_text(self, actor):
        """None and any text of 1 to 200 characters, not blank and without controls, pass."""
        check("update", actor=actor)

    def test_a_value_cut_short_in_the_message_has_its_length_given(self):
        """A string too long to show whole is shown cut, with how many characters it has."""
        with pytest.raises(ValidationError) as caught:
            check("create", actor="w" * 300)
        (problem,) = caught.value.problems
        assert problem.message.endswith(f"got {'w' * 300!r:.80}... (300 characters)")
        assert "200 characters" in problem.message

    @pytest.mark.parametrize(
        ("value", "description"),
        [
            (10**5000, "an integer of 16610 bits"),
            (_Unshowable(), "a _Unshowable that cannot be shown"),
        ],
        ids=["huge integer", "raising repr"],
    )
    def test_a_value_repr_cannot_show_is_described(self, value, description):
        """A value whose repr() fails (a 5,000-digit integer, a raising __repr__) is described."""
        with pytest.raises(ValidationError) as caught:
            check("get", integration_id=value)
        (problem,) = caught.value.problems
        assert problem.message.endswith(f"got {description}")
