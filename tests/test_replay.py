import io
import json
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest

from customer_session import (
    ReopenableCustomerSession,
    State,
    Trigger,
    ValidationError,
    WorkflowError,
)
from customer_session.replay import MAX_DEPTH, Replayer, ReplayReport, with_progress

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "orders.jsonl"
# Read as a user reads it: from the installed package.
SCHEMA = files("customer_session").joinpath("schemas", "order-event.schema.json")


def event(op: str, session: str = "order-1", at: str = "2026-03-02T10:00:00Z", **body) -> str:
    return json.dumps({"at": at, "session": session, "op": op, **body})


CREATE = event(
    "create",
    customerSession={
        "state": "open",
        "cartItems": [
            {"sku": "SOCK", "quantity": 3, "price": 7.5},
            {"sku": "JKT", "quantity": 1, "price": 129.0},
        ],
    },
)
CLOSE = event("update", at="2026-03-02T11:00:00Z", customerSession={"state": "closed"})


def returning(position: int, quantity: int, at: str = "2026-03-03T09:00:00Z") -> str:
    return event(
        "return",
        at=at,
        **{"return": {"returnedCartItems": [{"position": position, "quantity": quantity}]}},
    )


class TestApplying:
    def test_lifecycle_is_applied_with_log_timestamps(self):
        """Create, close, return and cancel are applied; history carries the log's times."""
        replayer = Replayer()
        cancel = event("update", at="2026-03-04T09:00:00Z", customerSession={"state": "cancelled"})
        report = replayer.run([CREATE, CLOSE, returning(0, 1), cancel])
        assert (report.applied, report.refused) == (4, [])
        session = replayer.sessions["order-1"]
        assert session.state is State.CANCELLED
        assert [r.timestamp.isoformat() for r in session.history] == [
            "2026-03-02T11:00:00+00:00",
            "2026-03-03T09:00:00+00:00",
            "2026-03-04T09:00:00+00:00",
        ]
        assert session.created.isoformat() == "2026-03-02T10:00:00+00:00"
        assert report.states == {"cancelled": 1}

    def test_update_edits_then_closes(self):
        """An update with cart changes and a state does both, in that order."""
        replayer = Replayer()
        update = event(
            "update",
            customerSession={
                "cartItems": [{"sku": "CAP", "quantity": 2, "price": 19.0}],
                "couponCodes": ["WELCOME10"],
                "state": "closed",
            },
        )
        report = replayer.run([CREATE, update])
        session = replayer.sessions["order-1"]
        assert report.refused == []
        assert session.state is State.CLOSED
        assert [line.sku for line in session.cart_items] == ["CAP"]
        assert session.coupon == "WELCOME10"

    def test_reopen_when_enabled(self):
        """With the reopenable class, reopen events are applied."""
        replayer = Replayer(session_class=ReopenableCustomerSession)
        report = replayer.run([CREATE, CLOSE, event("reopen")])
        assert report.refused == []
        assert replayer.sessions["order-1"].state is State.OPEN

    def test_guards_apply_to_replayed_sessions(self):
        """Guards registered on the replayer's workflow refuse events like in a service."""
        replayer = Replayer()
        replayer.workflow.guard(lambda e: "store closed", trigger=Trigger.CLOSE, name="hours")
        report = replayer.run([CREATE, CLOSE])
        (refused,) = report.refused
        assert refused.line == 2
        assert "hours" in refused.reason
        assert replayer.sessions["order-1"].state is State.OPEN


class TestRefusing:
    @pytest.mark.parametrize(
        ("lines", "fragment"),
        [
            ([CREATE, CLOSE, CLOSE], "already closed"),
            ([CREATE, returning(0, 1)], "cannot return_items() from state 'open'"),
            ([CREATE, CLOSE, returning(0, 4)], "more than the 3 units"),
            ([CREATE, CLOSE, returning(7, 1)], "no cart item at position 7"),
            ([CREATE, CREATE], "already exists"),
            ([CLOSE], "unknown session"),
            (
                [CREATE, event("update", customerSession={"state": "partially_returned"})],
                "through a return",
            ),
            ([CREATE, CLOSE, event("reopen")], "--reopen"),
            (
                [CREATE, event("update", customerSession={"state": "shipped"})],
                "unknown state 'shipped'",
            ),
            (
                [event("create", customerSession={"state": "cancelled"})],
                "a new session starts closed or open, not 'cancelled'",
            ),
            (
                [CREATE, CLOSE, event("update", customerSession={"cartItems": []})],
                "cannot set_cart_items() in state 'closed'",
            ),
            ([CREATE, "{not json"], "malformed JSON"),
            ([CREATE, "[1, 2]"], "JSON object"),
            ([CREATE, event("ship")], "$.op"),
            ([CREATE, event("delete")], "$.op"),
            (
                [event("create", customerSession={"state": "open", "loyaltyCards": []})],
                "$.customerSession.loyaltyCards",
            ),
            ([event("create", at="2026-03-02T10:00:00", customerSession={})], "has no time zone"),
            ([CREATE, json.dumps({"session": "order-1", "op": "reopen"})], "$.at"),
            (
                [event("create", customerSession={"cartItems": [{"sku": "", "quantity": -1}]})],
                "$.customerSession.cartItems[0]",
            ),
        ],
    )
    def test_refused_line_is_reported_with_reason(self, lines, fragment):
        """Each refused or malformed line is reported with its number and a reason."""
        report = Replayer().run(lines)
        refused = report.refused[-1]
        assert refused.line == len(lines)
        assert fragment in refused.reason
        assert report.applied == len(lines) - len(report.refused)

    def test_refused_update_is_not_half_applied(self):
        """An update whose close is refused keeps none of its cart changes."""
        replayer = Replayer()
        replayer.workflow.guard(lambda e: "no", trigger=Trigger.CLOSE)
        update = event(
            "update",
            customerSession={"cartItems": [{"sku": "CAP", "quantity": 1}], "state": "closed"},
        )
        replayer.run([CREATE, update])
        session = replayer.sessions["order-1"]
        assert [line.sku for line in session.cart_items] == ["SOCK", "JKT"]
        assert session.update_count == 1

    @pytest.mark.parametrize("fast", [True, False])
    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            (
                event("update", at="9999-12-31T23:59:59-23:59", customerSession={}),
                "$.at: '9999-12-31T23:59:59-23:59' is outside the years 1 to 9999",
            ),
            (
                event("update", at="0001-01-01T00:00:00+01:00", customerSession={}),
                "$.at: '0001-01-01T00:00:00+01:00' is outside the years 1 to 9999",
            ),
            (
                '{"at":"2026-03-02T10:00:00Z","session":"order-1","op":"update",'
                '"customerSession":{"attributes":{"n":' + "7" * 5000 + "}}}",
                "unsupported JSON: a number has more than 4300 digits",
            ),
            ("[" * 100_000 + "]" * 100_000, "nested more than 100 levels deep"),
            (
                event(
                    "update",
                    customerSession={"attributes": {"x": json.loads("[" * 120 + "]" * 120)}},
                ),
                "nested more than 100 levels deep",
            ),
            (
                '{"at":"2026-03-02T10:00:00Z","session":"order-1","op":"update",'
                '"customerSession":{"attributes":{"x":' + '{"a":' * 500 + "1" + "}" * 500 + "}}}",
                "nested more than 100 levels deep",
            ),
        ],
        ids=["year-10000", "year-0", "long-integer", "deep-array", "deep-attribute", "deep-object"],
    )
    def test_line_python_cannot_read_is_refused(self, line, reason, fast):
        """A time out of range, a huge integer or deep nesting refuses the line, on both paths."""
        report = Replayer().run([CREATE, line, CLOSE], fast=fast)
        (refused,) = report.refused
        assert refused.line == 2
        assert reason in refused.reason
        assert report.applied == 2

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    @pytest.mark.parametrize(
        "at",
        [
            "2026-03-02T10:00:00+05:99",  # was read as 6 hours 39 minutes
            "2026-03-02T10:00:00+0530",
            "20260302T100000Z",
            "2026-W10-1T10:00:00Z",
            "2026-03-02 10:00:00Z",
            "2026-03-02T10:00Z",
            "2026-03-02T10:00:00,5Z",
        ],
    )
    def test_a_time_that_is_not_rfc_3339_is_refused(self, at, fast):
        """An ``at`` that is no RFC 3339 date-time is refused at $.at, on both paths."""
        compact = event("update", at=at, customerSession={"state": "closed"})
        for line in (compact, compact.replace(", ", ",").replace(": ", ":")):
            replayer = Replayer()
            report = replayer.run([CREATE, line], fast=fast)
            reason = f"event: $.at: {at!r} is not a valid date-time: not an RFC 3339 date-time"
            assert [r.reason for r in report.refused] == [f"{reason} (e.g. 2026-03-02T10:15:00Z)"]
            assert replayer.sessions["order-1"].state is State.OPEN

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_lower_case_t_and_z_are_rfc_3339(self, fast):
        """RFC 3339 allows ``t`` and ``z`` in lower case: such a time is read as upper case."""
        lower = event("update", at="2026-03-02t11:00:00z", customerSession={"state": "closed"})
        replayer = Replayer()
        report = replayer.run([CREATE, lower], fast=fast)
        assert (report.applied, report.refused) == (2, [])
        (record,) = replayer.sessions["order-1"].history
        assert record.timestamp.isoformat() == "2026-03-02T11:00:00+00:00"

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_an_impossible_date_is_refused_with_why(self, fast):
        """An RFC 3339 shape with an impossible date is refused, saying what is wrong."""
        line = event("update", at="2026-02-30T10:00:00Z", customerSession={})
        (refused,) = Replayer().run([CREATE, line], fast=fast).refused
        assert refused.reason == (
            "event: $.at: '2026-02-30T10:00:00Z' is not a valid date-time: "
            "day is out of range for month"
        )

    @pytest.mark.parametrize("siblings", [0, 5], ids=["alone", "with-siblings"])
    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_nesting_up_to_the_limit_is_accepted(self, siblings, fast):
        """An event nesting exactly MAX_DEPTH levels is applied, however many containers it has."""
        inner = json.loads("[" * (MAX_DEPTH - 3) + "]" * (MAX_DEPTH - 3))  # event, body, attributes
        attributes = {"x": inner} | {f"y{n}": [] for n in range(siblings)}
        update = event("update", customerSession={"attributes": attributes})
        report = Replayer().run([CREATE, update], fast=fast)
        assert (report.applied, report.refused) == (2, [])

    @pytest.mark.parametrize("siblings", [0, 5], ids=["alone", "with-siblings"])
    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_nesting_one_past_the_limit_is_refused(self, siblings, fast):
        """An event nesting MAX_DEPTH + 1 levels is refused, however many containers it has."""
        inner = json.loads("[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2))
        attributes = {"x": inner} | {f"y{n}": [] for n in range(siblings)}
        update = event("update", customerSession={"attributes": attributes})
        report = Replayer().run([CREATE, update], fast=fast)
        assert [r.reason for r in report.refused] == [
            f"unsupported JSON: arrays and objects nested more than {MAX_DEPTH} levels deep"
        ]

    @pytest.mark.parametrize(
        ("key", "first", "second"),
        [
            ("attributes", {"a": 1}, {"b": 2}),
            ("additionalCosts", {"ship": {"price": 4.5}}, {"wrap": {"price": 1.0}}),
        ],
    )
    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_an_update_replaces_the_whole_map(self, key, first, second, fast):
        """An update's attributes or additionalCosts replace the session's: old keys go."""
        lines = [
            CREATE,
            event("update", customerSession={key: first}),
            event("update", customerSession={key: second}),
        ]
        replayer = Replayer()
        report = replayer.run(lines, fast=fast)
        assert (report.applied, report.refused) == (3, [])
        session = replayer.sessions["order-1"]
        field = session.attributes if key == "attributes" else session.additional_costs
        assert set(field) == set(second)

    def test_a_reason_of_several_problems_is_one_line(self):
        """A refusal with several problems is worded on one line, as a report lists it."""
        bad = event("create", customerSession={"cartItems": [{"sku": "", "quantity": -1}]})
        (refused,) = Replayer().run([bad]).refused
        assert "problems" in refused.reason
        assert "\n" not in refused.reason

    def test_malformed_lines_never_stop_the_replay(self):
        """Lines after a malformed one are still applied."""
        report = Replayer().run([CREATE, "\x00garbage", "", CLOSE])
        assert report.applied == 2
        assert [r.line for r in report.refused] == [2]
        assert report.lines == 4

    @pytest.mark.parametrize("session", ["order-1\x00", "\ud800"], ids=["nul", "surrogate"])
    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_a_session_id_that_cannot_be_stored_is_refused_before_any_lookup(self, session, fast):
        """A NUL or lone surrogate id is refused at ``$.session``; the report names no session."""
        lines = [event("create", session, customerSession={}), event("update", session)]
        report = Replayer().run(lines, fast=fast)
        assert [r.line for r in report.refused] == [1, 2]
        refused = report.refused[1]
        assert refused.session is None
        assert refused.reason.startswith("event: $.session: holds a")
        str(refused).encode()  # the report prints, whatever the log held


class TestWhatRunTakes:
    @pytest.mark.parametrize("fast", [True, False])
    def test_a_line_that_is_no_text_is_refused_as_such(self, fast):
        """A bytes or other non-str line is refused, the same on both paths; the rest apply."""
        report = Replayer().run([CREATE.encode(), CREATE, 7, CLOSE], fast=fast)
        assert [str(r) for r in report.refused] == [
            "line 1: not text: a line must be a str, got bytes (open the log in text mode)",
            "line 3: not text: a line must be a str, got int",
        ]
        assert (report.lines, report.applied) == (4, 2)

    @pytest.mark.parametrize("fast", [True, False])
    def test_malformed_json_is_placed_in_its_line(self, fast):
        """A line cut short is refused at its end, not at column 1; others at their column."""
        cut = CREATE[: CREATE.index(",") + 1]  # '{"at": "...",' as a writer left it
        report = Replayer().run([cut + "\n", cut + "\r\n", '{"a" 1}\n'], fast=fast)
        cut_short = "malformed JSON: Expecting property name enclosed in double quotes"
        assert [r.reason for r in report.refused] == [
            f"{cut_short} (the end of the line)",
            f"{cut_short} (the end of the line)",
            "malformed JSON: Expecting ':' delimiter (column 6)",
        ]

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    @pytest.mark.parametrize(
        ("line", "column"),
        [
            ("\ufeff" + CLOSE, 1),
            ("\ufeff\ufeff" + CLOSE, 1),
            ("  \ufeff" + CLOSE, 3),
            (CLOSE.replace(', "op"', ',\ufeff "op"'), CLOSE.index(', "op"') + 2),
            (CLOSE + "\ufeff", len(CLOSE) + 1),
        ],
        ids=["start", "two-at-start", "after-spaces", "between-members", "after-the-object"],
    )
    def test_a_byte_order_mark_outside_a_string_is_refused_in_the_librarys_words(
        self, line, column, fast
    ):
        """A U+FEFF outside a string is refused saying so, where it is, on both paths."""
        report = Replayer().run([CREATE, line + "\n"], fast=fast)
        reason = "malformed JSON: a byte order mark (U+FEFF), which JSON allows only inside a"
        assert [r.reason for r in report.refused] == [f"{reason} string (column {column})"]

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    @pytest.mark.parametrize(
        ("line", "path"),
        [
            (
                (
                    '{"at":"2026-03-02T10:00:00Z","session":"order-2","op":"create",'
                    '"customerSession":{"state":"open","state":"closed","cartItems":[]}}'
                ),
                "$.customerSession.state",
            ),
            (
                (
                    '{"at": "2026-03-02T10:00:00Z", "session": "order-2", "op": "create", '
                    '"customerSession": {"state": "open", "cartItems": [], "state": "closed"}}'
                ),
                "$.customerSession.state",
            ),
            (
                (
                    '{"at":"2026-03-02T10:00:00Z","session":"order-1","session":"order-2",'
                    '"op":"create","customerSession":{"state":"open","cartItems":[]}}'
                ),
                "$.session",
            ),
            (
                (
                    '{"at":"2026-03-02T10:00:00Z","session":"order-2","op":"create",'
                    '"customerSession":{"state":"open","cartItems":'
                    '[{"sku":"SOCK","quantity":1},{"sku":"SOCK","quantity":1,"quantity":2}]}}'
                ),
                "$.customerSession.cartItems[1].quantity",
            ),
            (
                (
                    '{"at":"2026-03-02T10:00:00Z","session":"order-2","op":"create",'
                    '"note":{"by":"a","by":"b"},"customerSession":{"state":"open","cartItems":[]}}'
                ),
                "$.note.by",
            ),
        ],
        ids=["compact-body", "spaced-body", "envelope", "cart-item", "ignored-member"],
    )
    def test_a_key_repeated_in_an_object_is_refused_naming_it(self, line, path, fast):
        """A key twice in one object refuses the line at its path, on both paths: none wins."""
        replayer = Replayer()
        report = replayer.run([CREATE, line], fast=fast)
        assert [(r.line, r.session, r.op, r.reason) for r in report.refused] == [
            (2, None, None, f"event: {path}: appears 2 times in one object; a key must be unique")
        ]
        assert list(replayer.sessions) == ["order-1"]

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_every_repeated_key_of_a_line_is_named(self, fast):
        """Keys repeated in several objects of one line are all named, in one reason."""
        line = (
            '{"at":"x","at":"y","session":"order-2","op":"update",'
            '"customerSession":{"state":"closed","state":"closed","state":"open"}}'
        )
        (refused,) = Replayer().run([line], fast=fast).refused
        assert refused.reason.startswith("event: 2 problems: $.at: appears 2 times in one object")
        assert "$.customerSession.state: appears 3 times in one object" in refused.reason

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_the_problems_of_one_reason_are_kept_apart(self, fast):
        """A reason of several problems separates them by ' | ', on one line."""
        line = '{"at":"x","at":"y","session":"order-2","session":"z","op":"update"}'
        (refused,) = Replayer().run([line], fast=fast).refused
        unique = "appears 2 times in one object; a key must be unique"
        assert refused.reason == f"event: 2 problems: $.at: {unique} | $.session: {unique}"

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    def test_a_byte_order_mark_inside_a_string_is_text(self, fast):
        """A U+FEFF inside a string is part of that string: the line is applied."""
        create = CREATE.replace('"SOCK"', '"SO\ufeffCK"')
        replayer = Replayer()
        assert replayer.run([create], fast=fast).refused == []
        assert replayer.sessions["order-1"].cart_items[0].sku == "SO\ufeffCK"

    @pytest.mark.parametrize(
        ("lines", "fragment"),
        [
            (CREATE, "not one str; split it into lines first"),
            (CREATE.encode(), "not one bytes"),
            (bytearray(CREATE.encode()), "not one bytearray"),
            (5, r"must be an iterable of lines \(a file, a list\), got 5"),
        ],
        ids=["str", "bytes", "bytearray", "number"],
    )
    @pytest.mark.parametrize("fast", [True, False])
    def test_lines_that_are_no_iterable_of_lines_are_refused(self, lines, fragment, fast):
        """A whole log as one str or bytes, or no iterable, is a ValidationError; nothing runs."""
        replayer = Replayer()
        with pytest.raises(ValidationError, match=fragment) as caught:
            replayer.run(lines, fast=fast)
        assert caught.value.subject == "run()"
        assert len(replayer.sessions) == 0

    @pytest.mark.parametrize("session_class", [dict, 5, None])
    def test_a_session_class_that_is_none_is_refused(self, session_class):
        """A session_class that is no CustomerSession class is a WorkflowError naming it."""
        with pytest.raises(WorkflowError, match="session_class must be a CustomerSession class"):
            Replayer(session_class=session_class)


class TestWithProgress:
    def test_bad_arguments_are_refused_by_name(self):
        """Lines, a byte count and a stream of the wrong kind are refused together."""
        with pytest.raises(ValidationError) as caught:
            with_progress("x", total_bytes=-1, stream=3)
        assert [p.path for p in caught.value.problems] == ["lines"]
        with pytest.raises(ValidationError) as caught:
            with_progress([], total_bytes=-1, stream=3)
        assert [p.path for p in caught.value.problems] == ["total_bytes", "stream"]

    def test_lines_pass_through_when_the_stream_is_no_terminal(self, tmp_path):
        """Written to a file (no terminal), the lines come back unchanged, with no bar."""
        lines = [CREATE, CLOSE]
        with (tmp_path / "err").open("w") as stream:
            assert list(with_progress(lines, total_bytes=None, stream=stream)) == lines
        assert (tmp_path / "err").read_text() == ""

    def test_a_line_with_a_lone_surrogate_is_counted_on_a_terminal(self):
        """A line UTF-8 cannot encode (a lone surrogate) passes the bar, counted, to be refused."""
        line = event("create", customerSession={}).replace("order-1", "order-\ud800")
        terminal = Terminal()
        lines = with_progress([line], total_bytes=len(line), stream=terminal)
        assert list(lines) == [line]
        assert terminal.getvalue().split("\r")[-1].startswith("100%|##########|")


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, so the progress bar is drawn on it."""

    def isatty(self) -> bool:
        """Say it is a terminal."""
        return True


class TestExampleLog:
    def test_every_line_matches_the_schema(self):
        """Every well-formed line of the shipped example log validates against the schema."""
        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
        checked = 0
        for line in EXAMPLE.read_text().splitlines():
            try:
                document = json.loads(line)
            except json.JSONDecodeError:
                continue
            validator.validate(document)
            checked += 1
        assert checked > 5000

    @pytest.mark.parametrize(
        "body",
        [
            {"cartItems": [{"sku": "A", "quantity": 1, "position": 0}]},
            {"cartItems": [{"sku": "A", "quantity": 1, "returnedQuantity": 0}]},
            {"cartItems": [{"sku": "A", "quantity": 1, "catalogItemID": 7}]},
            {"cartItems": [{"sku": "A", "quantity": 1, "catalogItemId": 7}]},
            {"cartItems": [{"sku": "A", "quantity": 1, "product": {"name": "P", "id": 1}}]},
            {
                "cartItems": [
                    {"sku": "A", "quantity": 1, "additionalCosts": {"g": {"price": 1, "x": 1}}}
                ]
            },
            {"additionalCosts": {"shipping": {"price": 4.9, "vat": 0.9}}},
            {"couponCodes": [""]},
        ],
    )
    def test_the_schema_refuses_bodies_the_replay_refuses_as_malformed(self, body):
        """Read-only or unknown keys in an item, product or cost, or an empty code, fail both."""
        validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
        line = event("create", customerSession={"state": "open", **body})
        assert not validator.is_valid(json.loads(line))
        assert Replayer().run([line]).refused

    def test_example_replays_with_a_few_refusals(self):
        """The example has thousands of sessions, every kind of event and a few illegal ones."""
        report = Replayer().run(EXAMPLE.read_text().splitlines())
        assert report.sessions >= 1000
        assert set(report.states) == {s.value for s in State}
        assert 0 < len(report.refused) < report.lines * 0.05
        assert sum(1 for r in report.refused if "malformed" in r.reason) == 3

    def test_report_as_json_is_complete(self):
        """The JSON report counts lines, events, refusals and final states."""
        report = Replayer().run([CREATE, CLOSE, CLOSE])
        data = report.to_dict()
        assert data["applied"] == 2
        assert data["refusedCount"] == 1
        assert data["states"] == {"closed": 1}
        assert data["refused"][0]["line"] == 3


class TestReportText:
    def test_max_refusals_zero_lists_none(self):
        """to_text(max_refusals=0) lists no refused line but counts them."""
        text = Replayer().run([CREATE, CLOSE, CLOSE, CLOSE]).to_text(max_refusals=0)
        assert "2 refused" in text
        assert "line 3" not in text
        assert "... and 2 more" in text

    def test_no_more_line_when_every_refusal_is_listed(self):
        """When max_refusals covers them all, the text lists each and promises no more."""
        text = Replayer().run([CREATE, CLOSE, CLOSE, CLOSE]).to_text(max_refusals=2)
        assert "line 3" in text
        assert "line 4" in text
        assert "more" not in text

    def test_to_dict_lists_states_in_name_order(self):
        """to_dict() gives the session counts with the states sorted by name, however kept."""
        report = ReplayReport(states={"open": 1, "closed": 2, "cancelled": 3})
        assert list(report.to_dict()["states"]) == ["cancelled", "closed", "open"]

    def test_a_store_replays_outbox_rows_are_counted_on_the_second_line(self):
        """A report with outbox_rows says how many were written, in text and in JSON."""
        report = ReplayReport(lines=1, applied=1, states={"closed": 1}, outbox_rows=1)
        assert report.to_text().splitlines()[:3] == [
            "1 line: 1 event applied, 0 refused",
            "1 outbox row written",
            "1 session:",
        ]
        assert report.to_dict()["outboxRows"] == 1

    def test_a_replay_in_memory_counts_no_outbox_rows(self):
        """A replay in memory has no outbox: its report counts no outbox rows at all."""
        report = Replayer().run([CREATE, CLOSE])
        assert report.outbox_rows is None
        assert "outboxRows" not in report.to_dict()
        assert "outbox" not in report.to_text()

    def test_counts_of_one_are_singular(self):
        """A report of one line, one event and one session says so in the singular."""
        text = Replayer().run([CREATE]).to_text()
        assert text.splitlines()[:2] == ["1 line: 1 event applied, 0 refused", "1 session:"]

    def test_counts_of_zero_are_plural(self):
        """An empty log's report counts 0 lines, 0 events and 0 sessions, with no list after."""
        assert Replayer().run([]).to_text() == "0 lines: 0 events applied, 0 refused\n0 sessions\n"

    @pytest.mark.parametrize("value", [-1, 1.5, True])
    def test_max_refusals_must_be_a_count_or_none(self, value):
        """A max_refusals that is not None or an integer >= 0 is a ValidationError."""
        report = Replayer().run([CREATE, CLOSE, CLOSE])
        with pytest.raises(ValidationError, match="max_refusals: must be an integer >= 0"):
            report.to_text(max_refusals=value)

    @pytest.mark.parametrize("fast", [True, False], ids=["fast", "live"])
    @pytest.mark.parametrize("name", ["evil\nline 9: x", "red\x1b[31m", "a\u2028b", "tab\tx"])
    def test_a_session_or_op_that_is_not_printable_is_shown_quoted(self, name, fast):
        """A refusal's session or op with control characters is shown by repr, on one line."""
        bad_session = event("update", session=name, customerSession={"state": "closed"})
        bad_op = event(name, session="order-1")
        report = Replayer().run([CREATE, bad_session, bad_op], fast=fast)
        listed = report.to_text().splitlines()[-2:]
        assert listed[0].startswith(f"  line 2: {name!r} update: ")
        assert listed[1].startswith(f"  line 3: order-1 {name!r}: ")
        assert len(report.to_text().splitlines()) == 6  # summary, sessions, state, heading, 2

    def test_a_printable_session_is_shown_as_it_is(self):
        """A refusal's session and op that are printable (spaces, accents) are shown unquoted."""
        line = event("update", session="Bestellung Nr. 7 für Zoë", customerSession={})
        (refused,) = Replayer().run([line]).refused
        assert str(refused).startswith("line 1: Bestellung Nr. 7 für Zoë update: event: ")
