"""How messages show values: ``customer_session._show``."""

import pytest

from customer_session._show import shown


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
        assert shown(value) == f"an integer of {value.bit_length()} bits (too large for a float)"

    def test_a_container_of_a_huge_integer_is_named_by_its_type(self):
        """A value whose repr cannot be built (it holds a 5000-digit integer) is named."""
        assert shown((10**5000,)) == "a tuple that cannot be shown"

    def test_a_broken_repr_is_named_by_its_type(self):
        """A value whose __repr__ raises is named by its type."""
        assert shown(_BrokenRepr()) == "a _BrokenRepr that cannot be shown"
