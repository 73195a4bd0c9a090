"""The arguments of the store's methods, checked before anything is read or written.

A wrong argument would otherwise surface late and in another's words: a
``TypeError`` from calling ``None``, a key stored as a number, a negative retry
count that silently means none. Each method names its arguments to
:func:`check`, which refuses every bad one in one
:class:`~customer_session.exceptions.ValidationError` (``update(): retries:
must be ...``).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Final

from customer_session._cart import is_number, is_text, one_line, raise_problems
from customer_session._show import shown
from customer_session._times import in_utc
from customer_session.exceptions import Problem
from customer_session.model import CustomerSession
from customer_session.store._outbox import Effect

if TYPE_CHECKING:
    from collections.abc import Callable


def _text(value: object) -> bool:
    # Stored in text columns: UTF-8 without NUL, as every text of a session.
    return type(value) is str and value != "" and is_text(value)


def _optional_text(value: object) -> bool:
    return value is None or _text(value)


ACTOR_MAX_LENGTH: Final = 200
"""The most characters an actor may have: a name or id for an audit trail, not a note."""


def _actor(value: object) -> bool:
    return value is None or one_line(value, ACTOR_MAX_LENGTH)


REASON_MAX_LENGTH: Final = 1000
"""The most characters a discard reason may have: why, for the operator who reads it."""


def _reason(value: object) -> bool:
    # Shown on a line of a log or a terminal too, as an actor; longer, and never None.
    return one_line(value, REASON_MAX_LENGTH)


# The largest count a database column or LIMIT holds (a signed 64-bit integer).
_LARGEST: Final = 2**63 - 1


def _at_least(minimum: int, *, optional: bool = True) -> Callable[[object], bool]:
    def ok(value: object) -> bool:
        if value is None:
            return optional
        return (
            isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= _LARGEST
        )

    return ok


# The longest a thread can wait (Python's bound, about 292 years): a pool waiting
# longer fails with OverflowError instead of waiting.
LONGEST_WAIT: Final = int(threading.TIMEOUT_MAX)


def _wait(value: object) -> bool:
    # Not 0: the pool could never wait for the first connection when the store opens.
    return is_number(value) and isinstance(value, int | float) and 0 < value <= LONGEST_WAIT


def _session(value: object) -> bool:
    return isinstance(value, CustomerSession)


def _aware(value: object) -> bool:
    return isinstance(in_utc(value), datetime)  # stored and compared in UTC


def _optional_aware(value: object) -> bool:
    return value is None or _aware(value)


def _after(value: object) -> bool:
    # A row, not its sequence number: discarded() pages by discard time and sequence,
    # and pending() takes the same argument so a page's last row is always the cursor.
    return value is None or isinstance(value, Effect)


def _after_discarded(value: object) -> bool:
    return value is None or (isinstance(value, Effect) and value.discarded_at is not None)


_RULES: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "integration_id": (_text, "must be a non-empty string (UTF-8 text without NUL)"),
    "key": (_text, "must be a non-empty string (UTF-8 text without NUL)"),
    "optional_key": (_optional_text, "must be a non-empty string (UTF-8, no NUL) or None"),
    "optional_integration_id": (
        _optional_text,
        "must be a non-empty string (UTF-8, no NUL) or None",
    ),
    "operation": (_optional_text, "must be a non-empty string (UTF-8, no NUL) or None"),
    "log_id": (_optional_text, "must be a non-empty string (UTF-8, no NUL) or None"),
    "refusal": (_optional_text, "must be a non-empty string (UTF-8, no NUL) or None"),
    "actor": (
        _actor,
        (
            f"must be None or a name of 1 to {ACTOR_MAX_LENGTH} characters, not only "
            "whitespace, without control characters or lone surrogates"
        ),
    ),
    "reason": (
        _reason,
        (
            f"must be a text of 1 to {REASON_MAX_LENGTH} characters, not only whitespace, "
            "without control characters or lone surrogates"
        ),
    ),
    "retries": (_at_least(0), "must be an integer from 0 to 2**63 - 1, or None"),
    "default_retries": (_at_least(0, optional=False), "must be an integer from 0 to 2**63 - 1"),
    "session": (_session, "must be a CustomerSession"),
    "pool_timeout": (_wait, f"must be a number of seconds > 0 and at most {LONGEST_WAIT}"),
    # Exactly a bool: a truthy string ("no") or number would be taken for a yes.
    "migrate": (lambda value: type(value) is bool, "must be True or False"),
    "limit": (_at_least(1), "must be an integer from 1 to 2**63 - 1, or None"),
    "max_attempts": (_at_least(1), "must be an integer from 1 to 2**63 - 1, or None"),
    "sequence": (_at_least(1, optional=False), "must be an integer from 1 to 2**63 - 1"),
    "change": (callable, "must be callable"),
    "handler": (callable, "must be callable"),
    "before": (_aware, "must be an aware datetime (in range in UTC)"),
    "updated_before": (_optional_aware, "must be an aware datetime (in range in UTC) or None"),
    "updated_since": (_optional_aware, "must be an aware datetime (in range in UTC) or None"),
    "after": (_after, "must be an Effect (the last row of the page before) or None"),
    "discarded_after": (
        _after_discarded,
        "must be a discarded Effect (the last row of the page before) or None",
    ),
}
# What the rules above are called in messages (the argument's own name).
_SHOWN: Final = {
    "optional_key": "key",
    "optional_integration_id": "integration_id",
    "default_retries": "retries",
    "pool_timeout": "timeout",
    "discarded_after": "after",
}


def check(method: str, **arguments: object) -> None:
    """Refuse the bad ones of ``arguments``, each checked by the rule of its name.

    Args:
        method: The method's name, for the message (``update``).
        **arguments: The values, by rule name (see ``_RULES``).

    Raises:
        ValidationError: Every argument that breaks its rule, by name.
    """
    raise_problems(f"{method}()", problems(**arguments))


def problems(**arguments: object) -> list[Problem]:
    """The problems of ``arguments`` (by rule name, see ``_RULES``), in the order given."""
    found = []
    for rule, value in arguments.items():
        ok, message = _RULES[rule]
        if not ok(value):
            got = f"{shown(value):.80}"
            if isinstance(value, str) and got != repr(value):
                got += f"... ({len(value)} characters)"  # cut short: say how long it was
            found.append(Problem(_SHOWN.get(rule, rule), f"{message}, got {got}"))
    return found
