"""What a store recorded with an idempotency key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import frozen

if TYPE_CHECKING:
    from collections.abc import Sequence


@frozen
class ProcessedKey:
    """An idempotency key as the store recorded it (``store.processed_key(key)``).

    Attributes:
        key: The key.
        integration_id: The session the change or event concerned, when known.
        refusal: Why the event was refused, for a key recorded with
            ``mark_processed(key, refusal=...)``; ``None`` for a change that was
            applied (or a key recorded without a reason).
    """

    key: str
    integration_id: str | None
    refusal: str | None


def processed_key_from_row(key: str, row: Sequence[Any] | None) -> ProcessedKey | None:
    """The record of ``key`` from its row (``integration_id, refusal``), if it has one."""
    return None if row is None else ProcessedKey(key, row[0], row[1])
