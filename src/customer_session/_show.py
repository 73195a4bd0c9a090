"""How messages show a value: safely, whatever the value is; and how they count things."""

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


def printable(text: str) -> str:
    r"""``text`` for a terminal: each character that is not printable escaped as ``repr`` does.

    For text shown without quotes (a file name, an operation label, a whole
    message): a control character (``\x1b``, the start of a terminal escape
    sequence), a C1 control or a bidirectional override would otherwise act on the
    reader's terminal instead of being shown. Printable text is returned as it is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_name(value: object) -> str:
    """:func:`shown`, for a value given as the name of a trigger or a state: text as text.

    A ``Trigger`` or ``State`` member (a ``StrEnum``) is shown by its text,
    ``'reopen'``, as messages name them, not by its enum ``repr``
    (``<Trigger.REOPEN: 'reopen'>``); any other value as :func:`shown` shows it.
    """
    return shown(str.__str__(value)) if isinstance(value, str) else shown(value)


def unreadable(error: BaseException) -> str:
    """Why a value could not be read, for a problem's message: ``cannot be read (<error>)``.

    The error is named by its type and message; a message that cannot be made
    (a raising ``__str__``) is left out.
    """
    return f"cannot be read ({described(error)})"


def described(error: BaseException) -> str:
    """An error for a message: its type and message (``ZeroDivisionError: division by zero``).

    A message that cannot be made (a raising ``__str__``) is left out, and so is an
    empty one.
    """
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a message must not fail because of the error it names
        message = ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def shown_number(value: object) -> str:
    """:func:`shown`, for a value that had to be a finite number: says why a huge integer is not."""
    return f"{shown(value)} (too large for a float)" if _huge(value) else shown(value)


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is 1: the one way messages count.

    ``counted(1, "event")`` is ``"1 event"``; ``counted(0, "event")`` and
    ``counted(2, "event")`` are ``"0 events"`` and ``"2 events"``. A noun whose
    plural is not the noun plus ``s`` gives it (``counted(2, "entry", "entries")``).
    """
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"


def _huge(value: object) -> bool:
    """Whether ``value`` is an integer that ``float()`` cannot convert."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return not -INT_LIMIT < value < INT_LIMIT
