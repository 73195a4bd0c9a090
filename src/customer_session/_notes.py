"""Notes the library adds to exceptions raised by user code (hooks, delivery handlers)."""

from __future__ import annotations

import threading
from typing import Final

# Checking for the note and adding it is one step, for threads failing with one object.
_LOCK: Final = threading.Lock()


def add_note_once(error: BaseException, note: str) -> None:
    """Add ``note`` to ``error`` unless it carries that note already.

    A hook or handler may raise the same exception object on every failure (a
    circuit breaker re-raising its stored error): adding the note each time would
    make its notes, and every traceback showing them, grow without bound. A note
    with other text (another hook, another outbox row) is still added. Notes that
    are not a list (``add_note`` refuses to extend them) are left as they are: the
    failure must be reported, not replaced by a ``TypeError`` about its notes.
    """
    with _LOCK:
        notes = getattr(error, "__notes__", None)
        if notes is None or (isinstance(notes, list) and note not in notes):
            error.add_note(note)
