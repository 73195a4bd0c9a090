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
    if isinstance(value, int) and _huge(value):
        return f"an integer of {value.bit_length()} bits"
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail because of the value it shows
        return f"a {type(value).__name__} that cannot be shown"


def shown_number(value: object) -> str:
    """:func:`shown`, for a value that had to be a finite number: says why a huge integer is not."""
    return f"{shown(value)} (too large for a float)" if _huge(value) else shown(value)


def _huge(value: object) -> bool:
    """Whether ``value`` is an integer that ``float()`` cannot convert."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return not -INT_LIMIT < value < INT_LIMIT
