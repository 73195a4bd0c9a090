"""Replay throughput on a generated order-event log, against its baselines, in one run.

The log is generated in memory (deterministic for a seed) by
``examples/generate_orders.py`` with more cart edits per session, so that a session
has about ten events: by default 1,000,000 events over 100,000 sessions. Then, in
events per second of the process's CPU time (one core's time, so that other load on
a shared machine does not count):

- the fast path: ``Replayer().run(lines, fast=True)`` on every event (what
  ``Replayer.run`` does when no guard or hook is registered);
- the floor: ``json.loads`` of each line and a dict lookup of
  ``(state, trigger) -> state`` compiled from the specification, nothing else (no
  validation, no history, no session);
- the fast path on lines that are not in compact form (``json.dumps`` with its
  default separators), so that every line is decoded and checked, on a prefix;
- the live path: ``Replayer().run(lines, fast=False)``, every event through the
  session API, on a prefix (it is an order of magnitude slower);
- ``transitions`` the common way: one ``Machine(model=self)`` per session with
  ``auto_transitions=False`` and the table from the specification, driving only the
  state changes, on a prefix (building a machine per session is slow).

The fast and live paths are checked to give the same report on the live prefix.
Run: ``python bench/replay.py [--events N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transitions import Machine, MachineError

from customer_session import CUSTOMER_SESSION, Trigger
from customer_session.replay import Replayer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType

TARGET = 100_000
"""Events per second the fast path must reach on one core."""
TARGET_EVENTS = 1_000_000
"""The length of the log the target is stated on."""

# Derived from the one specification: the table, and the trigger an update's target
# state stands for (the edges into it that are not returns).
SPEC = CUSTOMER_SESSION
TABLE = {(e.source.value, e.trigger.value): e.destination.value for e in SPEC.edges}
TARGETS = {
    e.destination.value: e.trigger.value
    for e in SPEC.edges
    if not e.internal and e.trigger is not Trigger.RETURN_ITEMS
}
TRANSITIONS = [
    {"trigger": e.trigger.value, "source": e.source.value, "dest": e.destination.value}
    for e in SPEC.edges
]
STATES = [s.value for s in SPEC.states]
OP_TRIGGERS = {"return": Trigger.RETURN_ITEMS.value, "reopen": Trigger.REOPEN.value}


def _generator() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "examples" / "generate_orders.py"
    spec = importlib.util.spec_from_file_location("generate_orders", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(events: int, sessions: int, seed: int) -> list[str]:
    """The first ``events`` lines of a log of ``sessions`` sessions of ~10 events."""
    # 0..17 cart edits (8.5 on average) make about 10.4 events per session.
    lines = _generator().generate(sessions, seed=seed, edits=range(18))
    return list(itertools.islice(lines, events))


# -- the floor ------------------------------------------------------------------------


def floor(lines: Sequence[str]) -> int:
    """Parse each line and look the move up in the table; return the events decided."""
    states: dict[Any, str] = {}
    decided = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if type(event) is not dict:
            continue
        session, op = event.get("session"), event.get("op")
        if op == "create":
            body = event.get("customerSession")
            states[session] = body.get("state", "open") if type(body) is dict else "open"
        elif op == "update":
            body = event.get("customerSession")
            trigger = TARGETS.get(body.get("state")) if type(body) is dict else None
            if trigger is not None:
                _move(states, session, trigger)
        else:
            _move(states, session, OP_TRIGGERS.get(op))
        decided += 1
    return decided


def _move(states: dict[Any, str], session: Any, trigger: str | None) -> None:
    destination = TABLE.get((states.get(session), trigger))  # type: ignore[arg-type]
    if destination is not None:
        states[session] = destination


# -- transitions, the common way ------------------------------------------------------


class MachineSession:
    """A model with its own ``Machine(model=self)``, as the transitions docs show."""

    def __init__(self, state: str) -> None:
        self.machine = Machine(
            model=self,
            states=STATES,
            transitions=TRANSITIONS,
            initial=state,
            auto_transitions=False,
        )


def with_transitions(lines: Sequence[str]) -> int:
    """Drive the state changes of the log through one machine per session."""
    sessions: dict[Any, MachineSession] = {}
    decided = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        session, op = event.get("session"), event.get("op")
        if op == "create":
            body = event.get("customerSession") or {}
            if session not in sessions:
                sessions[session] = MachineSession(body.get("state", "open"))
            decided += 1
            continue
        trigger = OP_TRIGGERS.get(op)
        if op == "update":
            trigger = TARGETS.get((event.get("customerSession") or {}).get("state"))
        model = sessions.get(session)
        if model is not None and trigger is not None:
            # Refused by the table, or a trigger this table lacks.
            with contextlib.suppress(MachineError, AttributeError):
                getattr(model, trigger)()
        decided += 1
    return decided


# -- measuring -------------------------------------------------------------------------


def timed(run: Callable[[], object]) -> float:
    """The CPU time ``run`` takes: one core's time, whatever else the machine runs.

    Each run starts right after a full collection, so that every round and path pays
    for the collections its own allocations trigger: otherwise the first round runs
    on the collector's state the log's generation left (no full collection falls
    due in it, though one does in each later round), and the best round is that one.
    """
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def spaced(lines: Sequence[str]) -> list[str]:
    """The same events with ``json.dumps``' default separators (not compact form)."""
    out = []
    for line in lines:
        try:
            out.append(json.dumps(json.loads(line)))
        except ValueError:
            out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=TARGET_EVENTS)
    parser.add_argument("--sessions", type=int, help="default: events / 10")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the full-log runs")
    parser.add_argument("--live-events", type=int, default=50_000)
    parser.add_argument("--transitions-events", type=int, default=100_000)
    parser.add_argument("--spaced-events", type=int, default=200_000)
    args = parser.parse_args(argv)
    sessions = args.sessions or max(1, args.events // 10)

    start = time.perf_counter()
    lines = generate(args.events, sessions, args.seed)
    made = time.perf_counter() - start
    size = sum(map(len, lines)) / max(1, len(lines))
    print(f"Python {platform.python_version()}, {platform.machine()}, one core")
    print(
        f"log: {len(lines):,} events over {sessions:,} sessions "
        f"({len(lines) / sessions:.1f} per session, {size:.0f} characters per line), "
        f"generated in {made:.1f} s\n"
    )

    rows: dict[str, tuple[int, float]] = {}
    fast_times, floor_times = [], []
    for _ in range(args.rounds):  # interleaved, best of the rounds
        fast_times.append(timed(lambda: Replayer().run(lines, fast=True)))
        floor_times.append(timed(lambda: floor(lines)))
    rows["fast path (fast=True)"] = (len(lines), min(fast_times))
    rows["floor (json.loads + dict lookup)"] = (len(lines), min(floor_times))

    prefix = spaced(lines[: args.spaced_events])
    rows["fast path, lines not compact"] = (len(prefix), timed(lambda: Replayer().run(prefix)))

    live_lines = lines[: args.live_events]
    live, reports = Replayer(), []
    live_seconds = timed(lambda: reports.append(live.run(live_lines, fast=False)))
    rows["live path (fast=False)"] = (len(live_lines), live_seconds)
    same = _same(live_lines, live, reports[0])

    machine_lines = lines[: args.transitions_events]
    rows["transitions, Machine per session"] = (
        len(machine_lines),
        timed(lambda: with_transitions(machine_lines)),
    )

    rates = {name: count / seconds for name, (count, seconds) in rows.items()}
    print(f"{'path':36} {'events':>11} {'CPU s':>9} {'events/s':>11}")
    for name, (count, seconds) in rows.items():
        part = "" if count == len(lines) else " (first)"
        print(f"{name:36} {count:>11,} {seconds:9.2f} {rates[name]:>11,.0f}{part}")
    fast, floor_rate = rates["fast path (fast=True)"], rates["floor (json.loads + dict lookup)"]
    print("\nratios")
    for label, ratio in (
        ("fast / floor", fast / floor_rate),
        ("fast / transitions (common way)", fast / rates["transitions, Machine per session"]),
        ("fast / live", fast / rates["live path (fast=False)"]),
        ("fast, lines not compact / floor", rates["fast path, lines not compact"] / floor_rate),
    ):
        print(f"  {label + ':':36} {ratio:6.2f}x")
    spread = statistics.pstdev(fast_times) / statistics.mean(fast_times) if args.rounds > 1 else 0
    print(
        f"\nfast path rounds: {', '.join(f'{t:.2f} s' for t in fast_times)} (spread {spread:.0%})"
    )
    print(f"fast and live paths agree on the first {len(live_lines):,} events: {same}")
    verdict = "MET" if fast >= TARGET else "NOT MET"
    if not same:  # a rate of wrong answers meets no target
        verdict = "NOT MET: the fast path's answer differs from the live path's"
    elif len(lines) < TARGET_EVENTS:
        verdict = f"not judged on {len(lines):,} events (it is stated on {TARGET_EVENTS:,})"
    print(f"target {TARGET:,} events/s on one core: {verdict} ({fast:,.0f} events/s)")
    return 0 if same else 1


def _same(lines: Sequence[str], live: Replayer, report: object) -> bool:
    """Whether the fast path gives the live path's report and sessions on ``lines``."""
    fast = Replayer()
    return fast.run(lines, fast=True) == report and dict(fast.sessions) == dict(live.sessions)


if __name__ == "__main__":
    sys.exit(main())
