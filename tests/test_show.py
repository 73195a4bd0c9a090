"""How messages show values: ``customer_session._show``."""

import pytest

from customer_session._show import (
    counted,
    printable,
    shown,
    shown_name,
    shown_number,
    unreadable,
)
from customer_session._spec import State, Trigger


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError


class TestShown:
    def test_an_ordinary_value_is_its_repr(self):
        """A value whose repr works is shown as its repr."""
        assert shown("a'b") == repr("a'b")

    @pytest.mark.parametrize("value", [2**1024, -(10**5000)], ids=["2**1024", "-10**5000"])
    def test_a_huge_integer_is_shown_by_its_size(self, value):
        """An integer too large for a float is described by its bits, never converted."""
        assert shown(value) == f"an integer of {value.bit_length()} bits"

    def test_a_container_of_a_huge_integer_is_named_by_its_type(self):
        """A value whose repr cannot be built (it holds a 5000-digit integer) is named."""
        assert shown((10**5000,)) == "a tuple that cannot be shown"

    def test_a_broken_repr_is_named_by_its_type(self):
        """A value whose __repr__ raises is named by its type."""
        assert shown(_BrokenRepr()) == "a _BrokenRepr that cannot be shown"


class TestShownName:
    @pytest.mark.parametrize(
        ("value", "text"),
        [(Trigger.REOPEN, "'reopen'"), (State.OPEN, "'open'"), ("reopen", "'reopen'")],
        ids=["trigger", "state", "text"],
    )
    def test_a_trigger_or_state_is_shown_by_its_text(self, value, text):
        """A Trigger or State member is shown as its text is, not as its enum repr."""
        assert shown_name(value) == text

    def test_anything_else_is_shown(self):
        """A value that is no text is shown as shown() shows it."""
        assert shown_name(10**5000) == shown(10**5000)


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError


class TestUnreadable:
    def test_an_error_is_named_by_its_type_and_message(self):
        """Why a value could not be read names the error's type and its message."""
        assert unreadable(OSError("gone")) == "cannot be read (OSError: gone)"

    @pytest.mark.parametrize("error", [ValueError(), _BrokenStr("x")], ids=["empty", "broken"])
    def test_an_error_without_a_message_is_named_by_its_type(self, error):
        """An error with no message, or one whose __str__ raises, is named by its type alone."""
        assert unreadable(error) == f"cannot be read ({type(error).__name__})"


class TestShownNumber:
    def test_a_huge_integer_where_a_number_was_due_says_why_it_is_not_one(self):
        """Where a finite number was due, a huge integer is said to be too large for a float."""
        assert shown_number(2**1024) == "an integer of 1025 bits (too large for a float)"

    @pytest.mark.parametrize("value", [2**63, 1.5, "x"], ids=["2**63", "1.5", "text"])
    def test_any_other_value_is_shown_as_shown_shows_it(self, value):
        """A value a float can hold, or no integer at all, is shown as shown() shows it."""
        assert shown_number(value) == shown(value)


class TestCounted:
    @pytest.mark.parametrize(
        ("count", "expected"), [(0, "0 events"), (1, "1 event"), (2, "2 events"), (-1, "-1 events")]
    )
    def test_the_noun_is_singular_only_for_one(self, count, expected):
        """The noun is plural for every count but 1, zero included."""
        assert counted(count, "event") == expected

    def test_an_irregular_plural_is_the_one_given(self):
        """A plural given is used as it is, and the singular stays the noun."""
        assert (counted(1, "entry", "entries"), counted(3, "entry", "entries")) == (
            "1 entry",
            "3 entries",
        )


class TestPrintable:
    def test_printable_text_is_kept_as_it_is(self):
        """Text of printable characters only (quotes, backslashes, accents) is not changed."""
        assert printable("orders/n\u00e9 'x'.json") == "orders/n\u00e9 'x'.json"

    def test_control_characters_are_escaped_as_repr_escapes_them(self):
        """A terminal escape sequence, a C1 control and a bidi override are escaped."""
        assert printable("a\x1b]0;x\x07\x9b\u202e\n") == "a\\x1b]0;x\\x07\\x9b\\u202e\\n"
