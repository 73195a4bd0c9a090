"""The three backends, driven in lockstep, agree on everything a caller can observe.

A Hypothesis state machine runs the same random operations on an ``SQLiteStore``
(a file), a ``PostgresStore`` and an ``AsyncPostgresStore`` (each on a new schema of
its own, in a database that sorts text by a language; the async one awaited on one
event loop of the test's own thread), with a second store object of each backend
on the same database as a rival writer. Each example starts with an open and a
closed session stored and a trigger fired; changes mostly fire a trigger a stored
session's state allows, so they commit. The operations: creates (duplicates,
reused keys, bad arguments), transaction blocks and ``update()`` changes (legal and
illegal triggers, valid and invalid returns, cart and code edits, no-op edits, a
guard's refusal, a failing after-commit hook, blocks that raise, reused keys, a
race lost to the rival, once or on every attempt of ``update()`` until it gives
up), deliveries (handlers that fail, or use the store, or deliver again, or
discard their row; with or without ``max_attempts``),
discards of outbox rows (pending, delivered or unknown ones, with good and bad
reasons), purges, keys recorded and forgotten, and ``ids()`` queries.

After each step it compares what every store returned (sessions by their wire
documents with history) or raised (class, message, public attributes, notes),
then everything they hold: each session (``get``, ``exists``), its journal and
what ``rebuild`` makes of it, the counts, the ids, the pending and the discarded
outbox rows and every idempotency key. Sequence numbers, ``recorded_at``,
``created_at`` and ``discarded_at`` are compared for their order (or presence)
only. Messages are normalised where they name the store (its file or server, as
``repr(store)`` shows it) and the outbox row a delivery failure's note or a
refused discard names by sequence number; nothing else.

Any difference is a bug in a backend (or a difference the docs must state); the
regression test of each one found lives beside its backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from customer_session import (
    CustomerSession,
    ReturnedItem,
    State,
    Trigger,
    ValidationError,
    Workflow,
    wire,
)
from customer_session.store import (
    AsyncPostgresStore,
    Effect,
    JournalEntry,
    PostgresStore,
    SQLiteStore,
    rebuild,
)
from customer_session.testing import cart_items, returned_items, sessions

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


pytestmark = pytest.mark.postgres

# Few, so creates collide and changes find them; cases and punctuation that a
# language's collation orders otherwise than by code point (ids() breaks ties by id).
IDS = ("order-1", "Order-2", "order_3", "ordér-4")
# The sessions every example starts with (see Lockstep.start); the other ids are
# unknown until a create stores them, so changes to unknown sessions stay covered.
STARTING = {IDS[0]: State.OPEN, IDS[1]: State.CLOSED}
KEYS = ("key-1", "key-2", "key-3")  # few, so keys are reused
OPERATIONS = (None, "sweep")
# Far enough from the wall clock that delivered rows and keys are all or none of them.
FAR = timedelta(days=3650)
BACKENDS = ("sqlite", "postgres", "postgres-async")

# What a change does to the session in a transaction block or an update() change.
ACTIONS = (
    "close",
    "cancel",
    "return",  # a valid return of what remains (or an invalid one when none does)
    "bad-return",
    "add",
    "remove",
    "coupon",
    "bad-coupon",
    "referral",
    "attribute",
    "nothing",
    "unknown-trigger",
)
# The action that fires each trigger of the table.
TRIGGER_ACTIONS = {Trigger.CLOSE: "close", Trigger.CANCEL: "cancel", Trigger.RETURN_ITEMS: "return"}
# Mostly the first: a change picks a stored session and a trigger its state allows
# (so it commits), and only sometimes any id or action (unknown, illegal, an edit).
MOSTLY = st.sampled_from([True, True, False])
# Seldom true: a block that raises commits nothing.
SELDOM = st.sampled_from([False, False, False, True])
# Seldom a race: the rival commits during a change's first attempt, or during each
# (so update() runs out of attempts: ConcurrentUpdate).
RACES = st.sampled_from([None, None, None, None, "first", "always"])
# What a change draws besides its session and action.
CHANGES = {
    "how": st.sampled_from(["transaction", "update"]),
    "fail": SELDOM,
    "race": RACES,
    "key": st.none() | st.sampled_from(KEYS),
    "operation": st.sampled_from(OPERATIONS),
    "retries": st.sampled_from([None, 0]),
    "data": st.data(),
}
CODES = st.sampled_from(["WELCOME", "SPRING-10", None])


class Clock:
    """The workflow's clock, the same for every store: a step that changes sessions ticks it."""

    def __init__(self) -> None:
        """Start at the current second."""
        self.start = self.now = datetime.now(UTC).replace(microsecond=0)

    def reset(self) -> None:
        """Back to the start: each example sees the same times, so a failure replays."""
        self.now = self.start

    def __call__(self) -> datetime:
        """The time of the current step."""
        return self.now

    def tick(self) -> None:
        """Move on one second."""
        self.now += timedelta(seconds=1)


CLOCK = Clock()
WORKFLOW = Workflow(clock=CLOCK)


@WORKFLOW.guard(trigger=Trigger.CLOSE)
def _no_close_with_spring_coupon(event: Any) -> str | None:
    return "no close with the SPRING-10 coupon" if event.session.coupon == "SPRING-10" else None


@WORKFLOW.after_commit(trigger=Trigger.CANCEL)
def _cancel_hook_fails_for_web(event: Any) -> None:
    if event.session.attributes.get("channel") == "web":
        raise RuntimeError("the cancel hook failed")


def rival_change(session: CustomerSession) -> None:
    """What another writer commits meanwhile (nothing, so no write, unless it is open)."""
    if session.state is State.OPEN:
        session.set_attribute("rival", session.update_count)


def reentrant_change(session: CustomerSession) -> None:
    """What a delivery's handler commits: a cancel, when it is allowed."""
    if Trigger.CANCEL in session.allowed_triggers:
        session.cancel()


class SyncFace:
    """Calls on a sync store, and on another store object of its database (the rival)."""

    def __init__(self, store: Any, rival: Any) -> None:
        """Drive ``store``; ``rival`` is another store object on its database."""
        self.store = store
        self.rival = rival

    def call(self, name: str, *args: Any, **options: Any) -> Any:
        """``store.name(*args, **options)``."""
        return getattr(self.store, name)(*args, **options)

    def transact(
        self, integration_id: str, block: Callable[[Any], Any], *, race: str | None, **options: Any
    ) -> Any:
        """Run ``block`` in a transaction; the rival commits meanwhile if ``race``."""
        with self.store.transaction(integration_id, **options) as session:
            result = block(session)
            if race:
                self.rival.update(integration_id, rival_change)
            return result

    def update(
        self, integration_id: str, block: Callable[[Any], Any], *, race: str | None, **options: Any
    ) -> Any:
        """``update()`` with ``block``; the rival commits during the first attempt, or each."""
        raced: list[bool] = []

        def change(session: Any) -> Any:
            result = block(session)
            if race == "always" or (race and not raced):
                raced.append(True)
                self.rival.update(integration_id, rival_change)
            return result

        return self.store.update(integration_id, change, **options)

    def deliver(self, core: Callable[[Effect], None], reentrant: str | None, **options: Any) -> Any:
        """Deliver with a handler that runs ``core``, then uses the store if ``reentrant`` says."""

        def handler(effect: Effect) -> None:
            core(effect)
            if reentrant == "get":
                self.store.get(effect.integration_id)
            elif reentrant == "update":
                self.store.update(effect.integration_id, reentrant_change)
            elif reentrant == "deliver":
                self.rival.deliver(lambda _: None)
            elif reentrant == "discard":
                self.store.discard(effect.sequence, reason="the handler gave up")

        return self.store.deliver(handler, **options)

    def close(self) -> None:
        """Close both store objects."""
        self.store.close()
        self.rival.close()


class AsyncFace:
    """Calls on an ``AsyncPostgresStore`` (and its rival), each run on one loop of this thread."""

    def __init__(self, runner: asyncio.Runner, store: Any, rival: Any) -> None:
        """Drive ``store`` on ``runner``'s loop; ``rival`` is another store on its database."""
        self.runner = runner
        self.store = store
        self.rival = rival

    def call(self, name: str, *args: Any, **options: Any) -> Any:
        """``store.name(*args, **options)``, awaited if it is a coroutine."""
        result = getattr(self.store, name)(*args, **options)
        return self.runner.run(result) if asyncio.iscoroutine(result) else result

    def transact(
        self, integration_id: str, block: Callable[[Any], Any], *, race: str | None, **options: Any
    ) -> Any:
        """Run ``block`` in a transaction; the rival commits meanwhile if ``race``."""

        async def run() -> Any:
            async with self.store.transaction(integration_id, **options) as session:
                result = block(session)
                if race:
                    await self.rival.update(integration_id, rival_change)
                return result

        return self.runner.run(run())

    def update(
        self, integration_id: str, block: Callable[[Any], Any], *, race: str | None, **options: Any
    ) -> Any:
        """``update()`` with ``block``; the rival commits during the first attempt, or each."""
        raced: list[bool] = []

        async def change(session: Any) -> Any:
            result = block(session)
            if race == "always" or (race and not raced):
                raced.append(True)
                await self.rival.update(integration_id, rival_change)
            return result

        return self.runner.run(self.store.update(integration_id, change, **options))

    def deliver(self, core: Callable[[Effect], None], reentrant: str | None, **options: Any) -> Any:
        """Deliver with a handler that runs ``core``, then uses the store if ``reentrant`` says."""

        async def handler(effect: Effect) -> None:
            core(effect)
            if reentrant == "get":
                await self.store.get(effect.integration_id)
            elif reentrant == "update":
                await self.store.update(effect.integration_id, reentrant_change)
            elif reentrant == "deliver":
                await self.rival.deliver(lambda _: None)
            elif reentrant == "discard":
                await self.store.discard(effect.sequence, reason="the handler gave up")

        return self.runner.run(self.store.deliver(handler, **options))

    def close(self) -> None:
        """Close both store objects."""
        self.runner.run(self.store.close())
        self.runner.run(self.rival.close())


@attrs.frozen
class Raised:
    """An exception as the comparison sees it: class, message, attributes, notes."""

    kind: type[BaseException]
    message: str
    attributes: Any
    notes: tuple[str, ...]


def comparable(value: Any, text: Callable[[str], str]) -> Any:  # noqa: PLR0911 - one return per kind of value
    """``value`` with what may differ between backends left out.

    Sessions become their wire documents (with history); journal entries and
    outbox rows lose ``sequence`` and ``recorded_at``/``created_at``, whose order
    :func:`held` compares instead; ``text`` normalises every string.
    """
    if isinstance(value, str):
        return text(value)
    if isinstance(value, CustomerSession):
        return (type(value), wire.to_dict(value, include_history=True))
    if isinstance(value, JournalEntry):
        return ("entry", comparable(_entry_fields(attrs.asdict(value, recurse=False)), text))
    if isinstance(value, Effect):
        fields = attrs.asdict(value, recurse=False)
        del fields["sequence"], fields["created_at"]
        # The document as read (the field holds its text until it is first read).
        fields["document"] = value.document
        del fields["_document"]
        fields["discarded_at"] = fields["discarded_at"] is not None  # clocks differ
        return ("effect", comparable(fields, text))
    if isinstance(value, BaseException):
        return (type(value), text(str(value)), comparable(public(value), text))
    if isinstance(value, dict):
        return {key: comparable(item, text) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return tuple(comparable(item, text) for item in value)
    return value


def public(exc: BaseException) -> dict[str, Any]:
    """The public attributes of ``exc`` (an exception group's too).

    An outbox row's ``sequence`` (``EffectNotPending``) is left out, as the
    sequence numbers of messages are (see ``Lockstep.normalised``).
    """
    attributes = {k: v for k, v in vars(exc).items() if not k.startswith("_") and k != "sequence"}
    if isinstance(exc, BaseExceptionGroup):
        attributes["exceptions"] = exc.exceptions
    return attributes


def _entry_fields(fields: dict[str, Any]) -> dict[str, Any]:
    del fields["sequence"], fields["recorded_at"]
    return fields


class Lockstep(RuleBasedStateMachine):
    """One operation at a time on the three stores; what each gives must be the same."""

    def __init__(self, fresh_schema: Callable[[], str], directory: Path) -> None:
        """Open two store objects of each backend on a new database of their own."""
        super().__init__()
        CLOCK.reset()
        self.clock = CLOCK
        self.workflow = WORKFLOW
        self.runner = asyncio.Runner()
        self.faces: dict[str, Any] = {}
        self.names: dict[str, str] = {}  # how each store names itself, to normalise messages
        path = directory / f"{uuid.uuid4().hex}.db"
        sqlite = [SQLiteStore(path, workflow=WORKFLOW) for _ in range(2)]
        self.faces["sqlite"] = SyncFace(*sqlite)
        url = fresh_schema()
        self.faces["postgres"] = SyncFace(
            *(PostgresStore(url, workflow=WORKFLOW) for _ in range(2))
        )
        url = fresh_schema()
        opened = [
            self.runner.run(AsyncPostgresStore.open(url, workflow=WORKFLOW)) for _ in range(2)
        ]
        self.faces["postgres-async"] = AsyncFace(self.runner, *opened)
        for backend, face in self.faces.items():
            self.names[backend] = repr(face.store)
            for store in (face.store, face.rival):
                store.on_commit("notify")
                store.on_commit("refund", trigger=Trigger.RETURN_ITEMS)
        self.handled: dict[str, list[Any]] = {backend: [] for backend in BACKENDS}

    def teardown(self) -> None:
        """Close every store object."""
        for face in self.faces.values():
            with contextlib.suppress(Exception):
                face.close()
        self.runner.close()

    # -- running one operation on each store ---------------------------------------------

    def each(self, operation: Callable[[str, Any], Any]) -> Any:
        """Run ``operation(backend, face)`` on every store; check they agree; the outcome."""
        outcomes = {}
        for backend, face in self.faces.items():
            try:
                outcomes[backend] = comparable(
                    operation(backend, face), lambda t, b=backend: self.normalised(b, t)
                )
            except Exception as exc:  # compared below, with the other stores' outcomes
                outcomes[backend] = self.raised(backend, exc)
        first = outcomes["sqlite"]
        for backend, outcome in outcomes.items():
            assert outcome == first, f"{backend} disagrees with sqlite:\n{outcome!r}\n{first!r}"
        return first

    def raised(self, backend: str, exc: Exception) -> Raised:
        """``exc``, raised by ``backend``'s store, as the comparison sees it."""
        return Raised(
            type(exc),
            self.normalised(backend, str(exc)),
            comparable(public(exc), lambda t: self.normalised(backend, t)),
            tuple(self.normalised(backend, n) for n in getattr(exc, "__notes__", ())),
        )

    def normalised(self, backend: str, text: str) -> str:
        """``text`` with the store's own name (its file or server) replaced.

        The outbox row a delivery failure's note names by its sequence number is
        left out too: sequence numbers are compared for their order only.
        """
        text = re.sub(r"outbox row \d+ ", "outbox row <n> ", text)
        return text.replace(self.names[backend], "<store>")

    def tick(self) -> None:
        """Move the workflow's clock on: what this step commits is dated later."""
        self.clock.tick()

    # -- sessions ----------------------------------------------------------------------

    @initialize(
        opened=sessions(state=State.OPEN, ids=st.just(IDS[0]), workflow=WORKFLOW),
        closed=sessions(state=State.CLOSED, ids=st.just(IDS[1]), workflow=WORKFLOW),
    )
    def start(self, opened, closed):
        """Store an open and a closed session, with carts, so changes find and commit.

        Hypothesis runs a random subset of the rules in each example (swarm
        testing), so ``create`` is often left out or drawn late; an initialize
        rule always runs first. The other ids are left unknown (``STARTING``).
        """
        for session in (opened, closed):
            assert STARTING[session.integration_id] is session.state
            self.each(lambda _, face, s=session: face.call("create", s))

    @rule(
        session=sessions(ids=st.sampled_from(IDS), workflow=WORKFLOW),
        key=st.none() | st.sampled_from(KEYS),
        operation=st.sampled_from(OPERATIONS),
    )
    def create(self, session, key, operation):
        """Create a session (a duplicate id, a reused key are refused); no tick: ties."""
        before = wire.to_dict(session, include_history=True)
        self.each(lambda _, face: face.call("create", session, key=key, operation=operation))
        assert wire.to_dict(session, include_history=True) == before, "create changed its session"

    @rule(
        wrong=st.sampled_from(
            [
                ("not a session", {}),
                (None, {"key": ""}),
                (CustomerSession(integration_id="order-9"), {"key": "bad\x00key"}),
                (CustomerSession(integration_id="order-9"), {"operation": 7}),
            ]
        )
    )
    def create_badly(self, wrong):
        """A create with bad arguments is refused alike."""
        session, options = wrong
        self.each(lambda _, face: face.call("create", session, **options))

    @rule(**CHANGES)
    def change(self, how, fail, race, key, operation, retries, data):  # noqa: PLR0917 - one rule's drawn values
        """Change a session in a transaction block or by update().

        Mostly a stored session, by a trigger its state allows; sometimes any id
        (an unknown one) and any action (an illegal trigger, an edit, a bad one).
        The block may raise after its change, and another store object on the same
        database may commit a change to the session meanwhile (a lost race).
        """
        self.tick()
        integration_id, stored = self.target(data, fireable=False)
        legal = sorted(TRIGGER_ACTIONS[t] for t in getattr(stored, "allowed_triggers", ()))
        if legal and data.draw(MOSTLY, label="a legal trigger"):
            action = data.draw(st.sampled_from(legal), label="action")
        else:
            action = data.draw(st.sampled_from(ACTIONS), label="action")
        self.run_change(
            integration_id, stored, action, how, fail, race, key, operation, retries, data
        )

    @rule(**CHANGES)
    def fire(self, how, fail, race, key, operation, retries, data):  # noqa: PLR0917 - one rule's drawn values
        """Fire a trigger a stored session's state allows, as ``change`` does.

        A second rule so that (as Hypothesis leaves random rules out of each
        example) nearly every example commits changes; when no stored session
        has a trigger left it is a ``change`` of any id and action.
        """
        self.tick()
        integration_id, stored = self.target(data, fireable=True)
        legal = sorted(TRIGGER_ACTIONS[t] for t in getattr(stored, "allowed_triggers", ()))
        action = data.draw(st.sampled_from(legal or ACTIONS), label="action")
        self.run_change(
            integration_id, stored, action, how, fail, race, key, operation, retries, data
        )

    @initialize(**CHANGES)
    def fire_first(self, how, fail, race, key, operation, retries, data):  # noqa: PLR0917 - one rule's drawn values
        """Fire a trigger at once (as ``fire``), after ``start``: nearly every example commits.

        Hypothesis leaves random rules out of each example and ends some examples
        after a few steps, so ``change`` and ``fire`` alone left many without one.
        """
        self.fire(how, fail, race, key, operation, retries, data)

    def run_change(  # noqa: PLR0917 - one rule's drawn values
        self, integration_id, stored, action, how, fail, race, key, operation, retries, data
    ):
        """Do ``action`` to the session in a transaction block or by update(), on every store."""
        block = self.block(stored, action, fail, data)
        options = {"key": key, "operation": operation, "race": race}
        if how == "transaction":
            self.each(lambda _, face: face.transact(integration_id, block, **options))
        else:
            self.each(lambda _, f: f.update(integration_id, block, retries=retries, **options))

    def target(self, data: st.DataObject, *, fireable: bool) -> tuple[str, CustomerSession | None]:
        """The id a change is for, and its session if it is stored.

        Mostly a stored one (always one with a trigger left if ``fireable`` and
        there is one). All the stores hold the same sessions (``hold_the_same``),
        so the SQLite store answers for them.
        """
        sqlite = self.faces["sqlite"]
        stored = {
            i: s
            for i in IDS
            if isinstance(s := _outcome(lambda i=i: sqlite.call("get", i)), CustomerSession)
        }
        if fireable:
            known = [i for i, s in stored.items() if s.allowed_triggers]
            likely = bool(known)
        else:
            known = list(stored)
            likely = bool(known) and data.draw(MOSTLY, label="a stored session")
        integration_id = data.draw(
            st.sampled_from(known if likely else IDS), label="integration_id"
        )
        return integration_id, stored.get(integration_id)

    def block(self, stored, action, fail, data) -> Callable[[CustomerSession], Any]:
        """What the change does, drawn before it runs (the same for every store)."""
        argument: Any = None
        if action == "return":
            # Nothing left to return (an emptied cart): the default return is refused.
            with contextlib.suppress(ValidationError):
                argument = None if stored is None else data.draw(returned_items(stored))
        elif action == "add":
            argument = data.draw(cart_items())
        elif action in {"coupon", "referral"}:
            argument = data.draw(CODES)
        elif action == "remove":
            argument = data.draw(st.integers(min_value=0, max_value=3))

        def run(session: CustomerSession) -> Any:
            result = act(session, action, argument)
            if fail:
                raise RuntimeError("the block failed")
            return result

        return run

    # -- durable effects ------------------------------------------------------------------

    @rule(
        fail_at=st.none() | st.integers(min_value=0, max_value=3),
        limit=st.none() | st.integers(1, 3),
        reentrant=st.sampled_from([None, None, "get", "update", "deliver", "discard"]),
        max_attempts=st.none() | st.integers(1, 2),
    )
    def deliver(self, fail_at, limit, reentrant, max_attempts):
        """Deliver the outbox; the handler may fail on its n-th row, or use the store."""
        self.tick()

        def run(backend: str, face: Any) -> Any:
            handed: list[Any] = []

            def core(effect: Effect) -> None:
                handed.append(effect)
                if fail_at is not None and len(handed) > fail_at:
                    raise RuntimeError("the handler failed")

            try:
                return face.deliver(core, reentrant, limit=limit, max_attempts=max_attempts)
            finally:
                self.handled[backend].extend(handed)

        self.each(run)
        self.each(lambda backend, _: self.handled[backend])

    @rule(
        which=st.sampled_from(["first pending", "last pending", "last handled", "unknown"]),
        reason=st.sampled_from(["the receiver refuses it", "", "two\nlines"]),
    )
    def discard(self, which, reason):
        """Discard an outbox row: a pending one, the last one handed over, or none at all.

        Each store picks its own row of that place (sequence numbers differ).
        """
        self.tick()

        def run(backend: str, face: Any) -> Any:
            pending = face.call("pending")
            handled = self.handled[backend]
            sequence = 10**9  # no such row
            if which.endswith("pending") and pending:
                sequence = pending[0 if which == "first pending" else -1].sequence
            elif which == "last handled" and handled:
                sequence = handled[-1].sequence
            return face.call("discard", sequence, reason=reason)

        self.each(run)

    @rule(future=st.booleans())
    def purge_delivered(self, future):
        """Purge delivered outbox rows (all of them, or none)."""
        before = datetime.now(UTC) + (FAR if future else -FAR)
        self.each(lambda _, face: face.call("purge_delivered", before=before))

    # -- idempotency keys -----------------------------------------------------------------

    @rule(
        key=st.sampled_from(KEYS),
        integration_id=st.none() | st.sampled_from(IDS),
        refusal=st.none() | st.just("refused by the test"),
    )
    def mark_processed(self, key, integration_id, refusal):
        """Record a key without a change."""
        self.each(
            lambda _, face: face.call(
                "mark_processed", key, integration_id=integration_id, refusal=refusal
            )
        )

    @rule(future=st.booleans())
    def forget_keys(self, future):
        """Forget the keys (all of them, or none)."""
        before = datetime.now(UTC) + (FAR if future else -FAR)
        self.each(lambda _, face: face.call("forget_keys", before=before))

    # -- queries ------------------------------------------------------------------------

    @rule(
        state=st.none() | st.sampled_from([*State, "shipped"]),
        limit=st.none() | st.integers(min_value=1, max_value=3),
        bound=st.sampled_from([None, "before", "since"]),
    )
    def ids(self, state, limit, bound):
        """Query the sessions by state, time and count."""
        options: dict[str, Any] = {"state": state, "limit": limit}
        if bound is not None:
            options[f"updated_{bound}"] = self.clock.now - timedelta(seconds=3)
        self.each(lambda _, face: face.call("ids", **options))

    @invariant()
    def hold_the_same(self):
        """Every session, its history and rebuild, the counts, ids, keys and outbox agree.

        Sequence numbers and times are compared for their order only: the journal
        is in the same order in every store, its times never go back, and so is
        the outbox.
        """
        self.each(lambda _, face: held(face))


def held(face: Any) -> Any:
    """What a store holds, as far as a caller can see (see ``Lockstep.hold_the_same``)."""
    found: dict[str, Any] = {}
    entries: list[JournalEntry] = []
    for integration_id in IDS:
        found[integration_id] = (
            _outcome(lambda i=integration_id: face.call("get", i)),
            face.call("exists", integration_id),
        )
        history = _outcome(lambda i=integration_id: face.call("history", i))
        if isinstance(history, tuple) and history:
            entries.extend(history)
            found[f"rebuilt {integration_id}"] = _outcome(lambda h=history: rebuild(h))
        found[f"history {integration_id}"] = history
    by_sequence = sorted(entries, key=lambda e: e.sequence)
    assert sorted(by_sequence, key=lambda e: e.recorded_at) == by_sequence, "times go back"
    found["journal order"] = [(e.integration_id, e.version) for e in by_sequence]
    pending = face.call("pending")
    found["pending"] = pending
    found["outbox order"] = sorted(pending, key=lambda e: e.sequence) == list(pending)
    discarded = face.call("discarded")
    found["discarded"] = discarded
    found["discard order"] = [e.key for e in discarded] == [
        e.key for e in sorted(discarded, key=lambda e: (e.discarded_at, e.sequence))
    ]
    found["counts"] = face.call("counts")
    found["ids"] = face.call("ids")
    found["keys"] = [face.call("processed_key", key) for key in KEYS]
    return found


def _outcome(call: Callable[[], Any]) -> Any:
    """What ``call()`` returned, or the exception it raised (compared as ``Lockstep.raised``)."""
    try:
        return call()
    except Exception as exc:  # compared with the other stores' outcomes
        return exc


def act(session: CustomerSession, action: str, argument: Any) -> Any:  # noqa: C901, PLR0911 - one case per action
    """Do ``action`` to ``session``; what it returns."""
    if action == "close":
        return session.close()
    if action == "cancel":
        return session.cancel()
    if action == "return":
        return session.return_items(argument or (ReturnedItem(position=0, quantity=1),))
    if action == "bad-return":
        return session.return_items((ReturnedItem(position=9, quantity=1),))
    if action == "add":
        return session.add_item(argument)
    if action == "remove":
        return session.remove_item(argument)
    if action == "coupon":
        return session.set_coupon(argument)
    if action == "bad-coupon":
        return session.set_coupon("")
    if action == "referral":
        return session.set_referral(argument)
    if action == "attribute":
        return session.set_attribute("channel", "web")
    if action == "unknown-trigger":
        return session.fire("ship")
    return None


def test_the_backends_agree(collated_schemas: Callable[[], str], tmp_path: Path) -> None:
    """Random operations give the same results, errors and stored data on every backend."""
    run_state_machine_as_test(
        lambda: Lockstep(collated_schemas, tmp_path),
        # Each example opens six store objects on three new databases: a modest
        # count keeps the test within seconds under every profile. No shrinking:
        # its runs cost as much, and Hypothesis shrinks for up to five minutes (a
        # fixed limit, no setting), past the per-test timeout. A failure prints
        # the steps of the example that failed (up to stateful_step_count) and,
        # with the ci profile's print_blob, its @reproduce_failure line; the
        # explain phase, which works on a shrunk example, goes with it.
        settings=settings(
            settings.default,
            max_examples=min(settings.default.max_examples, 12),
            stateful_step_count=min(settings.default.stateful_step_count, 20),
            phases=[p for p in settings.default.phases if p not in {Phase.shrink, Phase.explain}],
        ),
    )
