"""Typed usage of the async face; CI type-checks this file with mypy --strict."""

from __future__ import annotations

import asyncio

from customer_session import (
    CartItem,
    CustomerSession,
    Guard,
    Hook,
    Refusal,
    ReopenableCustomerSession,
    ReturnedItem,
    State,
    TransitionEvent,
    TransitionRecord,
    Trigger,
    Workflow,
)
from customer_session.aio import AsyncReopenableSession, AsyncSession

workflow = Workflow()


@workflow.guard(trigger=Trigger.CLOSE)
async def stock_reserved(event: TransitionEvent) -> str | None:
    """Ask a (pretend) warehouse before closing."""
    await asyncio.sleep(0)
    return None if event.session.cart_items else "nothing to ship"


@workflow.after_commit
async def publish(event: TransitionEvent) -> None:
    """Publish every committed transition."""
    await asyncio.sleep(0)


async def notify(event: TransitionEvent) -> None:
    """Notify someone of every committed transition."""
    await asyncio.sleep(0)


# An async guard is a Guard and an async hook a Hook, as their docs say.
guards: list[Guard] = [stock_reserved]
hooks: list[Hook] = [notify]
for hook in hooks:
    workflow.after_commit(hook)


async def handler() -> None:
    """Drive both faces; the session keeps its own type through the face."""
    face = AsyncSession(
        CustomerSession(
            integration_id="order-42",
            cart_items=[CartItem(sku="SOCK-42", quantity=2, price=7.5)],
            workflow=workflow,
        )
    )
    session: CustomerSession = face.session
    state: State = face.state
    ok: bool = await face.can("close")
    reasons: tuple[Refusal, ...] = await face.why_not(Trigger.CLOSE)
    closed: TransitionRecord = await face.close()
    returned: TransitionRecord = await face.return_items([ReturnedItem(position=0, quantity=1)])
    cancelled: TransitionRecord = await face.fire("cancel")

    reopenable = AsyncReopenableSession(
        ReopenableCustomerSession(integration_id="order-43", state=State.CLOSED)
    )
    typed: ReopenableCustomerSession = reopenable.session
    reopened: TransitionRecord = await reopenable.reopen()
    del session, state, ok, reasons, closed, returned, cancelled, typed, reopened


def plain_session_has_no_reopen(face: AsyncSession[CustomerSession]) -> None:
    """A face over a plain session offers no reopen() to the type checker."""
    face.reopen()  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(handler())
