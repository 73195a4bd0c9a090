"""How messages show a value: safely, whatever the value is."""

from __future__ import annotations

from typing import Final

INT_LIMIT: Final = 2**1024 - 2**970
"""The smallest integer ``float()`` cannot convert (it rounds to infinity)."""


def shown(value: object) -> str:
    """``repr(value)`` for messages, for any value: the one way messages show one.

    An integer too large for a float is described by its size: ``repr`` of one of
    more than 4300 digits raises ``ValueError``, and a shorter one would still
    flood the message. A value whose ``repr`` raises (a container holding such an
    integer, a broken ``__repr__``) is named by its type.
    """
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not -INT_LIMIT < value < INT_LIMIT
    ):
        return f"an integer of {value.bit_length()} bits (too large for a float)"
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail because of the value it shows
        return f"a {type(value).__name__} that cannot be shown"
