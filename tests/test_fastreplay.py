"""The fast replay path gives the live path's verdicts, reasons and sessions."""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_session import CustomerSession, ReopenableCustomerSession, State
from customer_session._fastreplay import SessionRecord, SessionView
from customer_session.exceptions import WorkflowError
from customer_session.replay import MAX_DEPTH, Replayer

EXAMPLE = Path(__file__).parent.parent / "examples" / "orders.jsonl"

# -- the log strategy ------------------------------------------------------------------

SESSIONS = ("order-1", "order-2", "order-3")
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PLAIN_TEXTS = st.sampled_from(["Sock", "Trail Runner", "", "socks", "a,b c"])
# Strings that stress the compact-form pattern: JSON punctuation, escapes, non-ASCII,
# and text no session may hold (NUL, a lone surrogate: raw in a line, or escaped).
TRICKY_TEXTS = (
    st.sampled_from(
        ["x],[y", "},{", 'say "hi"', "back\\slash", "tab\there", "Größe", "\u2028", "ü", "a\x00"]
    )
    | st.sampled_from(["\ud800", "x\udfff"])
    | st.text(max_size=4)
)
BAD_QUANTITIES = st.sampled_from([0, -1, 10, 9_999, True, 1.0, "2", None])
PRICES = st.sampled_from([7.5, 19, 0, -0.0, 139.95, 1e20, 12345678901234567, -3])
# Prices whose line or cart value is beyond a float, or that are themselves.
HUGE_PRICES = st.sampled_from([1e308, -1.7e308, 10**308, 10**400])
BAD_PRICES = st.sampled_from(["7.5", None, float("nan"), float("inf"), True])
BAD_ITEM_KEYS = st.sampled_from(["attributes", "returnedQuantity", "position", "Sku", "weight"])
# Item keys the live path takes and the fast path's whitelist does not.
ITEM_DETAILS = st.sampled_from([{"weight": 2.5}, {"attributes": {"gift": True}}])


@st.composite
def cart_items(draw, *, tricky=False, broken=False):
    """A cart item object: plain and in the examples' key order unless asked otherwise."""
    texts = TRICKY_TEXTS if tricky else PLAIN_TEXTS
    skus = st.sampled_from(["SOCK-42", "JKT-1", "CAP"]) | (TRICKY_TEXTS if tricky else st.nothing())
    item = {"sku": draw(skus)}
    if draw(st.booleans()):
        item["name"] = draw(texts)
    item["quantity"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        item["price"] = draw(HUGE_PRICES if tricky and draw(st.booleans()) else PRICES)
    if draw(st.booleans()):
        item["category"] = draw(texts)
    if broken:
        key = draw(st.sampled_from(["sku", "quantity", "price", "name", "extra"]))
        if key == "sku":
            item["sku"] = draw(st.sampled_from(["", None, 5]))
        elif key == "quantity":
            item["quantity"] = draw(BAD_QUANTITIES)
        elif key == "price":  # a huge price times the quantity is beyond a float
            item["price"] = draw(BAD_PRICES | HUGE_PRICES)
        elif key == "name":
            item["name"] = draw(st.sampled_from([None, 3, ["x"]]))
        else:
            item[draw(BAD_ITEM_KEYS)] = draw(st.sampled_from([{}, 0, 1, "x", None]))
    return item


@st.composite
def carts(draw, *, noise=False):
    """A ``cartItems`` value: plain items; with ``noise``, one way of being wrong or odd."""
    if not noise:
        items = draw(st.lists(cart_items(), max_size=4))
        odd = draw(st.integers(0, 11)) if items else None
        if odd == 0:
            # Valid, but not plain: the live path takes it, and the record keeps CartItems.
            items[-1].update(draw(ITEM_DETAILS))
        elif odd == 1:
            # Anywhere: the fast path's whitelist must refuse it even among plain items.
            items.insert(draw(st.integers(0, len(items))), draw(cart_items(broken=True)))
        return items
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from([None, {}, "[]", [1], [[]]]))
    if kind == 1:
        return [{"sku": "BULK", "quantity": 9_999}, {"sku": "BULK", "quantity": 2}]
    if kind == 2:
        return [{"sku": "ONE", "quantity": 1}] * draw(st.sampled_from([1_000, 1_001]))
    if kind == 3:
        item = draw(cart_items())
        return [{key: item[key] for key in draw(st.permutations(list(item)))}]
    items = draw(st.lists(cart_items(tricky=True), min_size=1, max_size=3))
    if kind == 4:
        # Anywhere: the whitelist stops at the first item it does not take.
        items.insert(draw(st.integers(0, len(items))), draw(cart_items(broken=True)))
    return items


TARGETS = st.sampled_from(
    ["closed", "closed", "cancelled", "open", "partially_returned", "shipped"]
)
STATES = st.sampled_from(["open", "closed", "cancelled", "partially_returned", "shipped", None, 3])
CODES = st.lists(
    st.sampled_from(["WELCOME10", "", "X" * 100, "X" * 101, "Größe"]), max_size=2
) | st.sampled_from([None, "WELCOME10", [5]])
OTHER_EDITS = st.sampled_from(
    [
        ("couponCodes", ["WELCOME10"]),
        ("couponCodes", []),
        ("profileId", "cust-9"),
        ("profileId", None),
        ("referralCode", "FRIEND"),
        ("referralCode", ""),
        ("identifiers", ["a", "b"]),
        ("identifiers", ["a"] * 6),
        ("attributes", {"tier": "gold"}),
        ("attributes", {}),
        ("additionalCosts", {"shipping": {"price": 4.9}}),
        ("additionalCosts", {"x": 1}),
        ("storeIntegrationId", "store-1"),
        ("color", "blue"),
    ]
)


@st.composite
def create_bodies(draw, *, noise=False):
    """A ``create`` body in the examples' key order; with ``noise``, something unusual."""
    body = {"state": draw(st.sampled_from(["open", "open", "closed"])), "cartItems": draw(carts())}
    if draw(st.booleans()):
        body["profileId"] = draw(st.sampled_from(["cust-1", "", "Größe"]))
    if draw(st.booleans()):
        body["couponCodes"] = draw(
            st.sampled_from([["WELCOME10"], [], [""], ["WELCOME10", "SPRING"]])
        )
    if noise:
        kind = draw(st.integers(0, 5))
        if kind == 0:
            body["state"] = draw(STATES)
        elif kind == 1:
            body["cartItems"] = draw(carts(noise=True))
        elif kind == 2:
            body["couponCodes"] = draw(CODES)
        elif kind == 3:
            body["profileId"] = draw(st.sampled_from([None, 42, "x"]))
        elif kind == 4:
            key, value = draw(OTHER_EDITS)
            body[key] = value
        else:
            del body[draw(st.sampled_from(["state", "cartItems"]))]
    return body


@st.composite
def update_bodies(draw, *, noise=False, target=None):
    """An ``update`` body: a cart, a target state or both; with ``noise``, other edits.

    With ``target``, the body moves to that state, with a cart edit or without.
    """
    shape = draw(st.integers(0, 2)) if target is None else draw(st.sampled_from([1, 1, 2]))
    body = {}
    if shape != 1:
        body["cartItems"] = draw(carts())
    if shape != 0:
        # Mostly a move; sometimes a state no trigger leads to (open stays open), or none.
        body["state"] = target or draw(TARGETS)
    if not noise and draw(st.integers(0, 5)) == 0:
        key, value = draw(OTHER_EDITS)  # an edit the live path applies (or refuses)
        body[key] = value
    if noise:
        kind = draw(st.integers(0, 5))
        if kind == 0:
            body["state"] = draw(STATES)
        elif kind == 1:
            body["cartItems"] = draw(carts(noise=True))
        elif kind in {2, 3}:
            key, value = draw(OTHER_EDITS)
            body[key] = value
        elif kind == 4:
            body = {key: body[key] for key in reversed(body)}
        else:
            body = {}
    return body


@st.composite
def return_bodies(draw, *, noise=False):
    """A ``return`` body of plain entries (over-returns happen by chance)."""
    entry = st.fixed_dictionaries({"position": st.integers(0, 3), "quantity": st.integers(1, 2)})
    body = {"returnedCartItems": draw(st.lists(entry, min_size=1, max_size=2))}
    if noise:
        odd = st.fixed_dictionaries(
            {"position": st.sampled_from([-1, 0, True, "0"]), "quantity": st.sampled_from([0, 99])},
            optional={"sku": st.sampled_from(["SOCK-42", "", None])},
        )
        kind = draw(st.integers(0, 3))
        if kind == 0:
            body["returnedCartItems"].append(draw(odd))
        elif kind == 1:
            body["returnedCartItems"] *= 2  # the same positions twice
        elif kind == 2:
            body["returnedCartItems"][0]["sku"] = draw(st.sampled_from(["SOCK-42", "CAP"]))
        else:
            body = draw(st.sampled_from([{}, {"returnedCartItems": []}, {**body, "note": "x"}]))
    return body


@st.composite
def timestamps(draw, *, noise=False):
    """An ``at`` in compact UTC form; with ``noise``, other forms and invalid ones."""
    # Half hours from a start, so some events go back in time and some tie.
    when = START + timedelta(minutes=30 * draw(st.integers(0, 100)))
    when += timedelta(microseconds=draw(st.integers(0, 1)))
    if not noise:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == 1:
        return when.astimezone(timezone(timedelta(hours=-5))).isoformat()
    if kind == 2:
        return draw(st.sampled_from(["2026-03-02T10:00:00", "2026-13-02T10:00:00Z", "soon", ""]))
    return draw(st.sampled_from([None, 1_772_438_400]))


BODIES = {"create": create_bodies, "update": update_bodies, "return": return_bodies}


@st.composite
def events(draw, *, op=None, session=None, target=None):
    """One event object; one in five carries one kind of noise."""
    op = op or draw(st.sampled_from(["create", "update", "update", "update", "return", "reopen"]))
    noise = draw(st.integers(0, 4)) == 0
    # The noise's part: a bad ``at`` is common enough to reach every op's check of it.
    part = (
        draw(st.sampled_from(["at", "at", "body", "body", "body", "envelope"])) if noise else None
    )
    event = {
        "at": draw(timestamps(noise=part == "at")),
        "session": session or draw(st.sampled_from(SESSIONS)),
        "op": op,
    }
    if op == "update":
        event["customerSession"] = draw(update_bodies(noise=part == "body", target=target))
    elif op in BODIES:
        key = "return" if op == "return" else "customerSession"
        event[key] = draw(BODIES[op](noise=part == "body"))
    if part == "envelope":
        kind = draw(st.integers(0, 5))
        if kind == 0:
            event["op"] = draw(st.sampled_from(["ship", None, 5, ""]))
        elif kind == 1:
            event["session"] = draw(
                st.sampled_from(["", None, 7, "unknown", "x" * 1_001, "order-1\x00", "\ud800"])
            )
        elif kind == 2:
            del event[draw(st.sampled_from(["at", "session", "op"]))]
        elif kind == 3:
            event["customerSession" if op != "return" else "return"] = draw(
                st.sampled_from([None, [], "x"])
            )
        elif kind == 4:
            # A key no operation reads: ignored, unless it nests too deep for any path.
            depth = draw(st.sampled_from([0, MAX_DEPTH - 1, MAX_DEPTH]))
            event["x"] = json.loads("[" * depth + "]" * depth) if depth else "y"
        else:
            event = {key: event[key] for key in reversed(event)}
    return event


@st.composite
def lines_of(draw, event):
    """``event`` as a line: mostly compact, sometimes spaced, broken or padded."""
    compact = json.dumps(event, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    variants = [
        lambda: json.dumps(event),
        lambda: compact + draw(st.sampled_from(["\n", "\r\n", "  "])),
        lambda: " " + compact,
        lambda: compact[: draw(st.integers(0, len(compact) - 1))],
        lambda: compact.replace('":"', '":"\x01', 1),
        lambda: compact[:-1] + ',"session":"order-2"}',
        lambda: compact.replace('"state":', '"state":"closed","state":', 1),
        lambda: compact.replace('"quantity":', '"quantity":1,"quantity":', 1),
        lambda: draw(st.sampled_from(["", "   ", "\n", "[1, 2]", "null", "{not json"])),
        # From a log opened in binary mode: refused, on both paths.
        lambda: compact.encode("utf-8", "surrogatepass"),
    ]
    kind = draw(st.integers(0, 19))
    return compact if kind >= len(variants) else variants[kind]()


@st.composite
def order_logs(draw, *, max_events=30):
    """A random order-event log, reusable wherever the two replay paths are compared.

    Most sessions are created first; then come updates, returns and reopens on a
    few sessions, mixing valid events, moves the table forbids, invalid bodies
    (wrong types, negative quantities, unknown keys, too many coupon codes,
    over-returns, duplicate positions), unknown sessions, duplicate creates and
    malformed lines. Shapes each path leaves to the other come up in most logs:
    edits only the live path applies (codes, attributes, costs, items with more
    than the plain keys), states no trigger leads to (``open``,
    ``partially_returned``), reopens of closed sessions, extra envelope keys (one
    nested too deep), lines that are bytes.
    """
    stories = [draw(story(session)) for session in SESSIONS if draw(st.integers(0, 4))]
    tags = [index for index, events_ in enumerate(stories) for _ in events_]
    merged = [stories[index].pop(0) for index in draw(st.permutations(tags))]
    extra = draw(st.lists(events(), max_size=max_events // 3))
    for event in extra:
        merged.insert(draw(st.integers(0, len(merged))), event)
    return [draw(lines_of(event)) for event in merged]


@st.composite
def story(draw, session):
    """The events of one session in a plausible order, as the example generator tells them."""
    told = [draw(events(op="create", session=session))]
    created = told[0].get("customerSession")
    if isinstance(created, dict) and "cartItems" in created and draw(st.integers(0, 3)) == 0:
        # The cart it was created with, again: an edit that changes nothing.
        again = draw(events(op="update", session=session))
        if isinstance(again.get("customerSession"), dict):
            rest = {k: v for k, v in again["customerSession"].items() if k != "cartItems"}
            again["customerSession"] = {"cartItems": created["cartItems"], **rest}
        told.append(again)
    told += [draw(events(op="update", session=session)) for _ in range(draw(st.integers(0, 2)))]
    ending = draw(st.sampled_from(["closed", "closed", "cancelled", None]))
    if ending is not None:
        told.append(draw(events(op="update", session=session, target=ending)))
    if ending == "closed" and draw(st.booleans()):
        # Reopened, or refused without the reopen table; then it may close again.
        told.append(draw(events(op="reopen", session=session)))
        if draw(st.booleans()):
            told.append(draw(events(op="update", session=session, target="closed")))
    for _ in range(draw(st.integers(0, 3))):
        told.append(draw(events(op="return", session=session)))
    for _ in range(draw(st.integers(0, 1))):
        op = draw(st.sampled_from(["reopen", "update"]))
        told.append(draw(events(op=op, session=session, target="cancelled")))
    return told


def assert_same_replay(lines, session_class=CustomerSession, *, split=None, reads=()):
    """Replay ``lines`` on both paths (in two runs at ``split``) and compare everything."""
    live = Replayer(session_class=session_class)
    fast = Replayer(session_class=session_class)
    cut = len(lines) if split is None else split
    for part in (lines[:cut], lines[cut:]):
        live_report = live.run(part, fast=False)
        fast_report = fast.run(part, fast=True)
        assert fast_report.refused == live_report.refused
        assert fast_report == live_report
        for key in reads:  # a session read between runs must stay in step
            assert (key in fast.sessions) == (key in live.sessions)
            if key in live.sessions:
                assert fast.sessions[key] == live.sessions[key]
    assert list(fast.sessions) == list(live.sessions)
    assert dict(fast.sessions) == dict(live.sessions)
    return fast


# -- the proofs ----------------------------------------------------------------------------


class TestOnlyTheTable:
    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(
        lines=order_logs(),
        first=st.sampled_from(list(State)),
        reopenable=st.booleans(),
        fast=st.booleans(),
    )
    def test_every_replayed_session_took_a_path_of_the_table(self, lines, first, reopenable, fast):
        """Any log leaves each session created in an initial state and moved only along edges."""
        session_class = ReopenableCustomerSession if reopenable else CustomerSession
        spec = session_class.specification
        replayer = Replayer(session_class=session_class)
        # The logs rarely ask to create a session elsewhere than open or closed: one more does.
        create = {"state": first.value, "cartItems": []}
        at = START.isoformat()
        line = json.dumps(
            {"at": at, "session": "order-0", "op": "create", "customerSession": create}
        )
        replayer.run([line, *lines], fast=fast)
        for session in replayer.sessions.values():
            states = [session.history[0].source] if session.history else [session.state]
            for record in session.history:
                assert spec.target(record.source, record.trigger) is record.destination
                assert record.source is states[-1]
                states.append(record.destination)
            assert states[0] in spec.initial_states
            assert states[-1] is session.state


class TestSameVerdicts:
    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(lines=order_logs(), reopenable=st.booleans())
    def test_random_logs_give_the_same_report_and_sessions(self, lines, reopenable):
        """Any log gives the same refused lines, reasons, counts and sessions on both paths."""
        session_class = ReopenableCustomerSession if reopenable else CustomerSession
        assert_same_replay(lines, session_class)

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(
        lines=order_logs(max_events=20),
        split=st.integers(0, 20),
        reads=st.lists(st.sampled_from(SESSIONS), max_size=2),
    )
    def test_sessions_read_between_runs_stay_in_step(self, lines, split, reads):
        """Reading sessions between two runs changes no verdict and no session."""
        assert_same_replay(lines, split=min(split, len(lines)), reads=reads)

    @pytest.mark.parametrize(
        ("edited", "updates"),
        [
            ('[{"sku":"SOCK","quantity":3,"price":7.5}]', 2),
            ('[{"sku":"SOCK","quantity":3,"price":7.50}]', 2),
            ('[{"quantity":3,"sku":"SOCK","price":7.5}]', 2),
            ('[{"sku":"SOCK","quantity":3,"price":7}]', 3),
            ('[{"sku":"SOCK","quantity":3}]', 3),
        ],
        ids=["same", "same-price-written-longer", "decoded", "int-price", "unpriced"],
    )
    @pytest.mark.parametrize("then_close", [False, True])
    def test_cart_edits_that_change_nothing_are_no_updates(self, edited, updates, then_close):
        """A cart edit that leaves the cart as it was counts on neither path (here the 2nd)."""
        priced = CART_EDIT.replace('"quantity":3}', '"quantity":3,"price":7.5}')
        last = edited.join(CART_EDIT.split('[{"sku":"SOCK","quantity":3}]'))
        if then_close:
            last = last.replace("}]}}", '}],"state":"closed"}}')
        fast = assert_same_replay([CREATE, CART_EDIT, priced, last])
        assert fast.sessions["order-1"].update_count == updates + then_close

    @pytest.mark.parametrize("session_class", [CustomerSession, ReopenableCustomerSession])
    def test_example_log_gives_the_same_report_and_sessions(self, session_class):
        """The shipped example log replays identically on both paths."""
        lines = EXAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
        fast = assert_same_replay(lines, session_class)
        assert len(fast.sessions) >= 1_000


# -- choosing the path ---------------------------------------------------------------------

CREATE = json.dumps(
    {
        "at": "2026-03-02T10:00:00Z",
        "session": "order-1",
        "op": "create",
        "customerSession": {"state": "open", "cartItems": [{"sku": "SOCK", "quantity": 3}]},
    },
    separators=(",", ":"),
)
CLOSE = (
    '{"at":"2026-03-02T11:00:00Z","session":"order-1","op":"update",'
    '"customerSession":{"state":"closed"}}'
)
RETURN = (
    '{"at":"2026-03-02T12:00:00Z","session":"order-1","op":"return",'
    '"return":{"returnedCartItems":[{"position":0,"quantity":1}]}}'
)
COUPON = (
    '{"at":"2026-03-02T10:30:00Z","session":"order-1","op":"update",'
    '"customerSession":{"couponCodes":["WELCOME10"]}}'
)
OVER_RETURN = RETURN.replace('"quantity":1', '"quantity":9')
CART_EDIT = (
    '{"at":"2026-03-02T10:10:00Z","session":"order-1","op":"update",'
    '"customerSession":{"cartItems":[{"sku":"SOCK","quantity":3}]}}'
)


def entries(replayer):
    """The replayer's records and sessions, as kept (nothing is built)."""
    return replayer._view.entries


@pytest.fixture
def slow_work(monkeypatch):
    """What left the fast path: each line lent to the live path and each session built.

    The fast path lends a line through :meth:`Replayer.apply` (the live path, one
    line) and builds a session from a record only through
    :meth:`SessionView.materialize`; both still run, so a test shows what went there.
    """
    seen = []
    apply, materialize = Replayer.apply, SessionView.materialize

    def lent(replayer, number, line):
        seen.append(("lent", number))
        return apply(replayer, number, line)

    def built(view, integration_id, record):
        seen.append(("built", integration_id))
        return materialize(view, integration_id, record)

    monkeypatch.setattr(Replayer, "apply", lent)
    monkeypatch.setattr(SessionView, "materialize", built)
    return seen


class TestChoosingThePath:
    def test_fast_path_is_automatic_without_registrations(self):
        """With nothing registered, sessions are kept as compact records."""
        replayer = Replayer()
        replayer.run([CREATE, CLOSE])
        assert type(entries(replayer)["order-1"]) is SessionRecord

    def test_live_path_runs_when_a_hook_is_registered(self):
        """A registered hook sends every event through the session API, and it runs."""
        replayer = Replayer()
        seen = []
        replayer.workflow.after(lambda event: seen.append(event.trigger))
        replayer.run([CREATE, CLOSE])
        assert type(entries(replayer)["order-1"]) is CustomerSession
        assert seen == ["close"]

    def test_forcing_the_fast_path_with_a_guard_is_refused(self):
        """``fast=True`` with a guard registered raises instead of skipping the guard."""
        replayer = Replayer()
        replayer.workflow.guard(lambda event: None)
        with pytest.raises(WorkflowError, match="guards or hooks"):
            replayer.run([CREATE], fast=True)

    def test_subclass_sessions_take_the_live_path_by_default(self):
        """A user's session subclass may override methods, so the live path runs it."""

        class Audited(CustomerSession):
            pass

        replayer = Replayer(session_class=Audited)
        replayer.run([CREATE])
        assert type(entries(replayer)["order-1"]) is Audited


class TestSessionsView:
    def test_reading_a_session_builds_it_once(self):
        """A record becomes one session object, returned on every read."""
        replayer = Replayer()
        replayer.run([CREATE, CLOSE])
        session = replayer.sessions["order-1"]
        assert session is replayer.sessions["order-1"]
        assert session.state is State.CLOSED

    def test_membership_and_length_build_nothing(self):
        """``in``, ``len()`` and the keys leave the records as they are."""
        replayer = Replayer()
        replayer.run([CREATE])
        assert "order-1" in replayer.sessions
        assert len(replayer.sessions) == 1
        assert list(replayer.sessions) == ["order-1"]
        assert type(entries(replayer)["order-1"]) is SessionRecord

    def test_a_session_read_follows_later_events(self):
        """A session read after one run is the object a later run changes."""
        replayer = Replayer()
        replayer.run([CREATE])
        session = replayer.sessions["order-1"]
        replayer.run([CLOSE, RETURN])
        assert session.state is State.PARTIALLY_RETURNED
        assert session.cart_items[0].returned_quantity == 1

    def test_deleting_a_session_forgets_it(self):
        """``del`` removes a session; a later event on it is refused as unknown."""
        replayer = Replayer()
        replayer.run([CREATE])
        del replayer.sessions["order-1"]
        report = replayer.run([CLOSE])
        assert "unknown session" in report.refused[0].reason


class TestLendingToTheLivePath:
    def test_an_edit_the_fast_path_leaves_is_kept_as_a_record(self):
        """An update with a coupon goes to the live path; the session is a record again."""
        replayer = Replayer()
        report = replayer.run([CREATE, COUPON, CLOSE, RETURN])
        assert report.refused == []
        record = entries(replayer)["order-1"]
        assert type(record) is SessionRecord
        assert record.coupon == "WELCOME10"
        assert record.returned == (1,)

    def test_a_refused_line_leaves_the_record_untouched(self):
        """An over-return refused by the live path puts the very same record back."""
        replayer = Replayer()
        replayer.run([CREATE, CLOSE])
        record = entries(replayer)["order-1"]
        report = replayer.run([OVER_RETURN])
        assert "more than the 3 units" in report.refused[0].reason
        assert entries(replayer)["order-1"] is record

    def test_an_illegal_move_is_refused_with_the_table_reason(self, slow_work):
        """A return from an open session is refused on the fast path in the table's words."""
        replayer = Replayer()
        report = replayer.run([CREATE, RETURN])
        (refused,) = report.refused
        assert refused.line == 2
        assert refused.reason == (
            "session 'order-1': cannot return_items() from state 'open'; allowed: cancel(), close()"
        )
        assert slow_work == []
        assert type(entries(replayer)["order-1"]) is SessionRecord


class TestStateRefusals:
    def test_refusals_that_depend_on_the_state_build_no_session(self, slow_work):
        """Repeated closes, edits after the close, bad targets and unknown sessions stay fast."""
        replayer = Replayer()
        replayer.run([CREATE, CLOSE])
        lines = [
            CLOSE,
            CLOSE.replace('"closed"', '"partially_returned"'),
            CREATE.replace('"state":"open",', ""),
            CLOSE.replace("order-1", "order-9"),  # plain: a coupon update goes to the live path
            CREATE.replace('"create"', '"update"').replace('"state":"open",', ""),
            CLOSE.replace('"update"', '"reopen"').replace(
                ',"customerSession":{"state":"closed"}', ""
            ),
        ]
        report = replayer.run(lines)
        fragments = [
            "already closed",
            "partially_returned is reached through a return",
            "session 'order-1' already exists",
            "unknown session 'order-9'",
            "cannot set_cart_items() in state 'closed'",
            "reopen is not enabled",
        ]
        assert len(report.refused) == len(fragments)
        for refused, fragment in zip(report.refused, fragments, strict=True):
            assert fragment in refused.reason
        assert slow_work == []

    @pytest.mark.parametrize("target", ["shipped", "partially_returned", "closed", "open"])
    def test_a_cart_edit_of_a_closed_session_is_checked_in_the_live_order(self, target):
        """A cart edit with a target on a closed session gets the live path's first reason."""
        update = CART_EDIT.replace("}]}}", f'}}],"state":"{target}"}}}}')
        report = assert_same_replay([CREATE, CLOSE, update]).run([])
        assert report.states == {"closed": 1}


class TestDecidedHere:
    def test_plain_events_build_no_session(self, slow_work):
        """Creates, cart edits, moves, reopens and a return of every unit are decided on records."""
        reopen = CLOSE.replace('"update"', '"reopen"').replace(
            ',"customerSession":{"state":"closed"}', ""
        )
        lines = [
            CREATE,
            json.dumps(json.loads(CART_EDIT)),  # spaced: decoded, then decided here
            CLOSE,
            reopen,
            CLOSE.replace("11:00", "11:30"),
            RETURN.replace('"quantity":1', '"quantity":3'),  # every unit there is
            CLOSE.replace('"closed"', '"cancelled"').replace("11:00", "13:00"),
        ]
        replayer = Replayer(session_class=ReopenableCustomerSession)
        report = replayer.run(lines)
        assert (report.applied, report.refused) == (len(lines), [])
        assert slow_work == []
        record = entries(replayer)["order-1"]
        assert (record.state, record.returned) == ("cancelled", (3,))


def _spaced(line: str, change) -> str:
    """``line``'s event changed by ``change``, written with spaces (not the compact form)."""
    event = json.loads(line)
    change(event)
    return json.dumps(event)


class TestSpacedForm:
    @pytest.mark.parametrize(
        "change",
        [
            lambda e: e["customerSession"].update(loyaltyCards=[]),
            lambda e: e["customerSession"]["cartItems"][0].update(quantity=True),
            lambda e: e["customerSession"]["cartItems"][0].update(price=True),
            lambda e: e["customerSession"].update(profileId=7),
            lambda e: e["customerSession"].update(profileId="cust\u0000-7"),
            lambda e: e["customerSession"].update(profileId="cust-7", firstSession=False),
            lambda e: e["customerSession"].update(profileId="cust-7", applicationId=4),
        ],
        ids=[
            "unknown-key",
            "bool-quantity",
            "bool-price",
            "number-profile",
            "nul-in-profile",
            "first-session",
            "application-id",
        ],
    )
    def test_a_create_the_fast_path_decodes_gets_the_live_verdict(self, change):
        """A create outside the compact form, odd or not, replays as on the live path."""
        assert_same_replay([_spaced(CREATE, change), CLOSE, RETURN])

    @pytest.mark.parametrize(
        "items",
        [[], [{"position": 0, "quantity": True}], [{"position": False, "quantity": 1}]],
        ids=["no-items", "bool-quantity", "bool-position"],
    )
    def test_a_return_the_fast_path_decodes_gets_the_live_verdict(self, items):
        """A return outside the compact form with no item or bools replays as on the live path."""
        line = _spaced(RETURN, lambda e: e["return"].update(returnedCartItems=items))
        assert_same_replay([CREATE, CLOSE, line, RETURN])

    @pytest.mark.parametrize(
        "line",
        [CLOSE.replace('"closed"', '"cancelled"'), RETURN, CLOSE.replace('"update"', '"reopen"')],
        ids=["cancel", "return", "reopen"],
    )
    def test_an_envelope_key_nested_too_deep_is_refused_as_on_the_live_path(self, line):
        """An event whose extra envelope key nests past MAX_DEPTH is refused, not applied."""
        deep = json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)  # the event is one more level
        fast = assert_same_replay(
            [CREATE, CLOSE.replace("11:00", "10:30"), _spaced(line, lambda e: e.update(x=deep))],
            ReopenableCustomerSession,
        )
        assert fast.sessions["order-1"].state is State.CLOSED


class TestSessionsPutIn:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("first_session", False), ("application_id", 4), ("discounts", {"spring": 2.0})],
    )
    def test_a_session_a_record_cannot_hold_keeps_its_field(self, field, value):
        """A session put in with a field a record lacks keeps it through fast-path events."""
        replayer = Replayer()
        replayer.sessions["order-1"] = CustomerSession(integration_id="order-1", **{field: value})
        report = replayer.run([CLOSE], fast=True)
        assert (report.applied, report.refused) == (1, [])
        session = replayer.sessions["order-1"]
        assert (session.state, getattr(session, field)) == (State.CLOSED, value)


class TestCompactForm:
    @pytest.mark.parametrize(
        "name",
        ["a},{b", "x]", "},{", 'say "hi"', "back\\slash", "tab\there", "Größe", "\u2028", ""],
    )
    def test_strings_that_look_like_structure_give_the_live_verdicts(self, name):
        """Item strings holding JSON punctuation or escapes replay as on the live path."""
        item = {"sku": "SOCK", "name": name, "quantity": 2, "price": 7.5, "category": name}
        lines = [
            json.dumps(
                {
                    "at": "2026-03-02T10:00:00.000000Z",
                    "session": "order-1",
                    "op": "create",
                    "customerSession": {"state": "open", "cartItems": [item, item]},
                },
                separators=(",", ":"),
                ensure_ascii=False,
            ),
            CLOSE,
            RETURN,
        ]
        assert_same_replay(lines)

    @pytest.mark.parametrize(
        "cart",
        [
            '[{"sku":"A","quantity":1,"price":1' + "0" * 400 + "}]",
            '[{"sku":"A","quantity":2,"price":1e308}]',
            '[{"sku":"A","quantity":1,"price":1e308},{"sku":"B","quantity":1,"price":1e308}]',
            '[{"sku":"A","quantity":1,"price":1'
            + "0" * 308
            + '},{"sku":"B","quantity":1,"price":1e308}]',
            '[{"sku":"A\\u0000","quantity":1}]',
            '[{"sku":"A","name":"\\ud800","quantity":1}]',
            '[{"sku":"A","category":"\ud800","quantity":1}]',
        ],
        ids=[
            "int-price",
            "line",
            "total",
            "int-total",
            "nul",
            "escaped-surrogate",
            "raw-surrogate",
        ],
    )
    def test_values_the_live_path_refuses_are_refused_alike(self, cart):
        """Prices beyond a float and text no session may hold get the live path's verdicts."""
        update = CLOSE.replace('{"state":"closed"}', '{"cartItems":' + cart + "}")
        fast = assert_same_replay([CREATE, update, CLOSE])
        assert fast.sessions["order-1"].total == 0.0

    @pytest.mark.parametrize("session", ["order-1\\u0000", "\\ud800", "\ud800"])
    def test_a_session_id_that_cannot_be_stored_is_refused_alike(self, session):
        """A NUL or lone surrogate in the session id is refused by both paths, for every op."""
        lines = [line.replace('"order-1"', f'"{session}"') for line in (CREATE, CLOSE, RETURN)]
        assert_same_replay(lines)

    def test_a_cart_beyond_the_units_limit_is_refused_as_on_the_live_path(self):
        """Quantities of more than one digit are decoded and checked against the limits."""
        cart = [{"sku": "BULK", "quantity": 9_999}, {"sku": "BULK", "quantity": 2}]
        line = CREATE.replace('[{"sku":"SOCK","quantity":3}]', json.dumps(cart).replace(" ", ""))
        fast = assert_same_replay([line])
        assert "order-1" not in fast.sessions

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ('"quantity":3}]', '"quantity":0}]'),
            ('"sku":"SOCK"', '"sku":""'),
            ('"sku":"SOCK"', '"sku":"SO\x01CK"'),
            ('"quantity":3}]', '"quantity":3,"price":07}]'),
            ('"quantity":3}]', '"quantity":3,"price":-07.5}]'),
            ('"quantity":3}]', '"quantity":3,"price":7.}]'),
            ('"quantity":3}]', '"quantity":3,"weight":2}]'),
            ('"quantity":3}]', '"quantity":3},{"sku":"X","quantity":1,"color":"red"}]'),
            ('"quantity":3}]', '"quantity":3}' + ',{"sku":"A","quantity":1}' * 1_000 + "]"),
            ('"session":"order-1"', '"session":""'),
            ('"session":"order-1"', '"session":"' + "x" * 1_001 + '"'),
            ("}]}", '}],"couponCodes":[""]}'),
            ("}]}", '}],"couponCodes":["' + "X" * 101 + '"]}'),
            ("}]}", '}],"couponCodes":["WELCOME10","SPRING"]}'),
            ("}]}", '}],"profileId":"a\x1fb"}'),
            ("}]}}", "}]}}\x0b"),
            ("}]}}", "}]}}\xa0"),
            ("}]}}", "}]}}\x1c"),
        ],
        ids=[
            "no-units",
            "empty-sku",
            "raw-control-character",
            "leading-zero",
            "negative-leading-zero",
            "no-fraction-digits",
            "unknown-item-key",
            "unknown-key-in-a-later-item",
            "too-many-items",
            "empty-session",
            "long-session",
            "empty-coupon",
            "long-coupon",
            "two-coupons",
            "control-character-in-profile",
            "trailing-vertical-tab",
            "trailing-no-break-space",
            "trailing-file-separator",
        ],
    )
    def test_a_create_just_outside_the_compact_form_gets_the_live_verdict(self, old, new):
        """A compact create just past what the pattern accepts replays as on the live path."""
        assert old in CREATE
        assert_same_replay([CREATE.replace(old, new), CLOSE, RETURN])

    @pytest.mark.parametrize(
        "entries",
        [
            '{"position":00,"quantity":1}',
            '{"position":01,"quantity":1}',
            '{"position":0,"quantity":0}',
            '{"position":0,"quantity":01}',
            '{"position":-1,"quantity":1}',
            '{"position":0,"quantity":1},{"position":0,"quantity":1}',
            '{"position":0,"quantity":2},{"position":0,"quantity":2}',
            '{"position":1,"quantity":1}',
            '{"position":0,"quantity":1,"sku":"SOCK"}',
        ],
        ids=[
            "double-zero",
            "leading-zero-position",
            "no-units",
            "leading-zero-quantity",
            "negative-position",
            "a-position-twice",
            "a-position-twice-too-many-units",
            "past-the-cart",
            "another-key",
        ],
    )
    def test_a_return_just_outside_the_compact_form_gets_the_live_verdict(self, entries):
        """A compact return one step past what the fast path applies replays as on the live path."""
        line = RETURN.replace('{"position":0,"quantity":1}', entries)
        assert_same_replay([CREATE, CLOSE, line, RETURN])
