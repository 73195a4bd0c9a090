"""Generate a realistic order-event log (JSON Lines) for ``customer-session replay``.

Each session is created (mostly open, some closed as legacy orders), its cart is
edited a few times, then it is closed, cancelled or abandoned; some closed orders
get one or two returns and some of those are cancelled later. A small share of the
events are deliberately illegal (a close after a cancel, a return from an open
session, a cart change after the close, ``partially_returned`` as an update target,
over-returns) and a few lines are malformed, so the replay has something to report.

The output is deterministic for a given ``--seed``. ``examples/orders.jsonl`` was
made with the defaults: ``python examples/generate_orders.py -o examples/orders.jsonl``.
``--edits`` sets the choices for the number of cart edits per session (the
benchmark in ``bench/replay.py`` uses more edits for longer sessions).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

CATALOG = [
    ("SOCK-TR-42", "Trail Sock", 7.5, "socks"),
    ("SOCK-WL-39", "Wool Sock", 9.9, "socks"),
    ("JKT-RN-M", "Rain Jacket", 129.0, "jackets"),
    ("JKT-DN-L", "Down Jacket", 219.0, "jackets"),
    ("SHO-TR-44", "Trail Runner", 139.95, "shoes"),
    ("CAP-01", "Cap", 19.0, "accessories"),
    ("BTL-05", "Bottle", 14.5, "accessories"),
    ("GIFT-25", "Gift Card 25", 25.0, "gift cards"),
]
COUPONS = ["WELCOME10", "SPRING24", "FREESHIP"]
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EDITS = (0, 0, 1, 1, 2, 3)
"""The default choices for the number of cart edits of an open session."""


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _item(rng: random.Random) -> dict[str, Any]:
    sku, name, price, category = rng.choice(CATALOG)
    return {
        "sku": sku,
        "name": name,
        "quantity": rng.choice([1, 1, 1, 2, 2, 3]),
        "price": price,
        "category": category,
    }


def _cart(rng: random.Random) -> list[dict[str, Any]]:
    return [_item(rng) for _ in range(rng.randint(1, 4))]


def session_events(  # noqa: C901 - one readable story of a session, step by step
    rng: random.Random,
    integration_id: str,
    start: datetime,
    *,
    illegal_rate: float,
    edits: Sequence[int] = EDITS,
) -> list[tuple[datetime, dict[str, Any]]]:
    """The events of one session, in order, each with its time.

    ``edits`` are the choices for how many times an open session's cart is edited.
    """
    events: list[tuple[datetime, dict[str, Any]]] = []
    now = start

    def emit(op: str, **body: Any) -> None:
        nonlocal now
        now += timedelta(seconds=rng.randint(5, 3600))
        events.append((now, {"at": _stamp(now), "session": integration_id, "op": op, **body}))

    def maybe_illegal(*choices: tuple[str, dict[str, Any]]) -> None:
        if rng.random() < illegal_rate:
            op, body = rng.choice(choices)
            emit(op, **body)

    cart = _cart(rng)
    legacy = rng.random() < 0.08
    doc: dict[str, Any] = {"state": "closed" if legacy else "open", "cartItems": cart}
    if rng.random() < 0.6:
        doc["profileId"] = f"cust-{rng.randint(1, 50_000)}"
    if rng.random() < 0.2:
        doc["couponCodes"] = [rng.choice(COUPONS)]
    emit("create", customerSession=doc)
    state = doc["state"]

    if state == "open":
        maybe_illegal(
            ("return", {"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}})
        )
        for _ in range(rng.choice(edits)):
            cart = [*cart, _item(rng)] if rng.random() < 0.7 or len(cart) < 2 else cart[:-1]
            emit("update", customerSession={"cartItems": cart})
        ending = rng.random()
        if ending < 0.78:
            emit("update", customerSession={"state": "closed"})
            state = "closed"
        elif ending < 0.9:
            emit("update", customerSession={"state": "cancelled"})
            state = "cancelled"
    if state == "closed":
        maybe_illegal(
            ("update", {"customerSession": {"cartItems": [*cart, _item(rng)]}}),
            ("update", {"customerSession": {"state": "partially_returned"}}),
        )
        remaining = [line["quantity"] for line in cart]
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            position = rng.randrange(len(cart))
            if not remaining[position]:
                continue
            quantity = rng.randint(1, remaining[position])
            remaining[position] -= quantity
            emit(
                "return",
                **{"return": {"returnedCartItems": [{"position": position, "quantity": quantity}]}},
            )
            state = "partially_returned"
        if state == "partially_returned":
            maybe_illegal(
                ("return", {"return": {"returnedCartItems": [{"position": 0, "quantity": 99}]}}),
            )
        if rng.random() < 0.15:
            emit("update", customerSession={"state": "cancelled"})
            state = "cancelled"
    if state == "cancelled":
        maybe_illegal(
            ("update", {"customerSession": {"state": "closed"}}),
            ("reopen", {}),
        )
    return events


def generate(
    sessions: int,
    *,
    seed: int = 2026,
    illegal_rate: float = 0.03,
    malformed: int = 3,
    edits: Sequence[int] = EDITS,
) -> Iterator[str]:
    """Yield the log's lines: the sessions' events interleaved by time."""
    rng = random.Random(seed)
    spread = timedelta(days=30) / max(sessions, 1)
    streams = [
        session_events(
            rng, f"order-{n:07d}", START + n * spread, illegal_rate=illegal_rate, edits=edits
        )
        for n in range(sessions)
    ]
    merged = heapq.merge(*streams, key=lambda pair: pair[0])
    broken = set(rng.sample(range(sessions * 3), min(malformed, sessions * 3)))
    for index, (_, event) in enumerate(merged):
        if index in broken:
            yield '{"at": "2026-03-02T08:00:00Z", "session": "order-broken", "op": "update", '
            continue
        yield json.dumps(event, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    """Write the log to ``-o`` or standard output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--illegal-rate", type=float, default=0.03)
    parser.add_argument("--malformed", type=int, default=3)
    parser.add_argument(
        "--edits",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=EDITS,
        help="choices for the number of cart edits per session (default: 0,0,1,1,2,3)",
    )
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    lines = generate(
        args.sessions,
        seed=args.seed,
        illegal_rate=args.illegal_rate,
        malformed=args.malformed,
        edits=args.edits,
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:  # noqa: PTH123 - a plain script
            out.writelines(f"{line}\n" for line in lines)
    else:
        sys.stdout.writelines(f"{line}\n" for line in lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
