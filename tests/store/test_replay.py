"""Replaying an order-event log into a store: same verdicts as in memory, resumable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import attrs
import pytest

from customer_session import (
    CustomerSession,
    KeyAlreadyProcessed,
    ReopenableCustomerSession,
    State,
    StoreError,
    ValidationError,
    WorkflowError,
)
from customer_session.cli import main
from customer_session.replay import RefusedLine, Replayer
from customer_session.store import StoreReplayer

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "orders.jsonl"
PREFIX = 400  # lines of the example log: every kind of event, a few seconds at most


def example(lines: int = PREFIX) -> list[str]:
    with EXAMPLE.open(encoding="utf-8") as log:
        return list(islice(log, lines))


SOCKS = {"sku": "SOCK", "quantity": 3, "price": 7.5}


def event(op: str, session: str, at: str, **body) -> str:
    return json.dumps({"at": at, "session": session, "op": op, **body})


CREATE = event("create", "order-7", "2026-03-02T10:00:00Z", customerSession={"cartItems": [SOCKS]})
CLOSE = event("update", "order-7", "2026-03-02T11:00:00Z", customerSession={"state": "closed"})
CANCEL = event("update", "order-7", "2026-03-02T11:30:00Z", customerSession={"state": "cancelled"})
# CREATE of a closed session, and with its state twice: json.loads reads "closed".
CLOSED_CREATE = CREATE.replace('{"cartItems"', '{"state": "closed", "cartItems"')
REPEATED_CREATE = CREATE.replace('{"cartItems"', '{"state": "open", "state": "closed", "cartItems"')
RETURN = event(
    "return",
    "order-7",
    "2026-03-02T12:00:00Z",
    **{"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}},
)
EDIT = event(
    "update",
    "order-7",
    "2026-03-02T10:30:00Z",
    customerSession={"cartItems": [SOCKS, {"sku": "CAP", "quantity": 1, "price": 19.0}]},
)

# A return of every unit of CREATE's cart: refused while order-7 is open, and again once done.
RETURN_ALL = event(
    "return",
    "order-7",
    "2026-03-02T12:00:00Z",
    **{"return": {"returnedCartItems": [{"position": 0, "quantity": 3}]}},
)
# An edit that sets order-7's cart to the cart it has: applied, it changes nothing.
SAME_CART = event(
    "update", "order-7", "2026-03-02T10:15:00Z", customerSession={"cartItems": [SOCKS]}
)


def earlier(refused: RefusedLine) -> RefusedLine:
    """``refused`` as a later run reports it."""
    return attrs.evolve(refused, reason=f"refused by an earlier run: {refused.reason}")


def digest(line: str) -> str:
    """The digest of a line's event in its key: SHA-256 of its canonical JSON."""
    canonical = json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def cut(line: str) -> str:
    """``line`` as a log holds it when its writer stopped halfway: malformed JSON."""
    return line[:40]


# An AFTER UPDATE trigger on the key table that fails the statement, per dialect: a
# failure once a re-evaluated line's change and its key's new record are written,
# before the commit.
FAIL_KEY_UPDATES = {
    "sqlite": [
        (
            "CREATE TRIGGER fail_key_updates AFTER UPDATE ON customer_session_keys "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    ],
    "postgres": [
        (
            "CREATE FUNCTION fail_key_updates() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
        ),
        (
            "CREATE TRIGGER fail_key_updates AFTER UPDATE ON customer_session_keys "
            "FOR EACH ROW EXECUTE FUNCTION fail_key_updates()"
        ),
    ],
}


class TestStoreReplay:
    def test_same_verdicts_and_sessions_as_in_memory(self, database):
        """A store replay refuses the same lines and stores the same sessions."""
        lines = example()
        memory = Replayer(session_class=ReopenableCustomerSession)
        expected = memory.run(lines, fast=False)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            report = replayer.run(lines)
            assert report.refused == expected.refused
            assert (report.applied, report.states) == (expected.applied, expected.states)
            for integration_id, session in memory.sessions.items():
                assert replayer.store.get(integration_id) == session

    def test_a_line_that_is_no_text_is_refused_and_not_recorded(self, database):
        """A bytes line is refused as in memory, and a rerun with the text applies it."""
        create = example(1)[0]
        with StoreReplayer(database) as replayer:
            report = replayer.run([create.encode()])
            assert [r.reason for r in report.refused] == [
                "not text: a line must be a str, got bytes (open the log in text mode)"
            ]
            again = replayer.run([create])
            assert (again.applied, again.refused) == (1, [])

    def test_rerun_applies_nothing_twice(self, database):
        """Running the same log again applies nothing, and reports the same refusals."""
        lines = example(120)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            first = replayer.run(lines)
            journals = {i: replayer.store.history(i) for i in _ids(lines)}
        assert first.refused  # the prefix has refused lines to report again
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            second = replayer.run(lines)
            assert {i: replayer.store.history(i) for i in _ids(lines)} == journals
        assert (second.applied, second.skipped) == (0, first.applied)
        assert second.refused == [earlier(r) for r in first.refused]
        assert second.states == first.states

    def test_outbox_rows_are_the_rows_each_runs_commits_wrote(self, database):
        """report.outbox_rows counts a run's rows of the effects registered; a rerun writes none."""
        lines = example(200)
        with StoreReplayer(database) as replayer:
            replayer.store.on_commit("notify")
            replayer.store.on_commit("erp", trigger="close")
            prefix = replayer.run(lines[:90])
            whole = replayer.run(lines)
            again = replayer.run(lines)
            rows = replayer.store.pending()
            transitions = [
                record.trigger for i in _ids(lines) for record in replayer.store.get(i).history
            ]
        expected = len(transitions) + transitions.count("close")
        assert prefix.outbox_rows is not None
        assert 0 < prefix.outbox_rows < expected
        assert (prefix.outbox_rows + whole.outbox_rows, again.outbox_rows) == (expected, 0)
        assert len(rows) == len({row.key for row in rows}) == expected

    def test_outbox_rows_leave_out_the_rows_of_other_threads_sharing_the_store(self, database):
        """outbox_rows leaves out what other threads commit through the run's store meanwhile."""
        lines = example(200)
        others = 4

        def close_another(n: int) -> None:
            replayer.store.create(CustomerSession(integration_id=f"other-{n}"))
            replayer.store.update(f"other-{n}", lambda session: session.close())

        class CommittingMeanwhile(StoreReplayer):
            def apply(self, number: int, line: str) -> RefusedLine | None:
                if number == 100:  # halfway: the run has written rows, and will write more
                    threads = [
                        threading.Thread(target=close_another, args=(n,)) for n in range(others)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                return super().apply(number, line)

        with CommittingMeanwhile(database) as replayer:
            replayer.store.on_commit("notify")
            report = replayer.run(lines)
            transitions = sum(len(replayer.store.get(i).history) for i in _ids(lines))
            written = len(replayer.store.pending())
        assert written == transitions + others  # the other threads' closes did commit
        assert report.outbox_rows == transitions

    def test_interrupted_run_resumes_where_it_stopped(self, database, tmp_path):
        """A run over a prefix, then over the whole log, ends like one run of the log."""
        lines = example(200)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            prefix = replayer.run(lines[:90])
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            resumed = replayer.run(lines)
            stored = {i: replayer.store.get(i) for i in _ids(lines)}
        with StoreReplayer(
            tmp_path / "one-shot.db", session_class=ReopenableCustomerSession
        ) as one:
            whole = one.run(lines)
            assert {i: one.store.get(i) for i in _ids(lines)} == stored
        assert resumed.skipped == prefix.applied
        assert prefix.applied + resumed.applied == whole.applied
        assert resumed.refused == [earlier(r) if r in prefix.refused else r for r in whole.refused]

    def test_refused_line_is_not_applied_later(self, database):
        """A line refused in the first run is reported refused again, never applied."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([CLOSE, CREATE])
        (refused,) = first.refused
        assert refused.line == 1
        with StoreReplayer(database) as replayer:
            second = replayer.run([CLOSE, CREATE])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (second.skipped, second.applied, second.refused) == (1, 0, [earlier(refused)])
        assert second.refused[0].reason.startswith("refused by an earlier run: event: $.session")

    def test_log_times_and_keys_reach_the_journal(self, database):
        """Changes carry the log's timestamps, and each journal entry its event's key."""
        with StoreReplayer(database, log_id="log-a") as replayer:
            replayer.run([CREATE, CLOSE])
            history = replayer.store.history("order-7")
        assert [e.key for e in history] == [
            f"replay:log-a:{digest(CREATE)}:0",
            f"replay:log-a:{digest(CLOSE)}:0",
        ]
        assert history[1].records[0].timestamp.isoformat() == "2026-03-02T11:00:00+00:00"
        assert history[1].operation == "update"

    def test_the_actor_reaches_every_journal_entry_the_replay_writes(self, database):
        """StoreReplayer(actor=...) names its actor on the entries of the changes it applies."""
        with StoreReplayer(database, actor="nightly-import") as replayer:
            replayer.run([CREATE, CLOSE, RETURN])
            history = replayer.store.history("order-7")
        assert [e.actor for e in history] == ["nightly-import"] * 3

    def test_fast_path_is_refused(self, database):
        """A store replay refuses the in-memory fast path, a WorkflowError; nothing is written."""
        with StoreReplayer(database) as replayer:
            with pytest.raises(
                WorkflowError, match=r"^the fast replay path cannot run: sessions are not in memory"
            ):
                replayer.run([CREATE], fast=True)
            assert not replayer.store.exists("order-7")

    @pytest.mark.parametrize("database", [None, "", 42])
    def test_a_bad_database_is_refused_by_its_own_name(self, database):
        """A bad ``database`` names StoreReplayer and its argument, not open_store's."""
        with pytest.raises(ValidationError) as caught:
            StoreReplayer(database)
        assert caught.value.subject == "StoreReplayer()"
        assert [p.path for p in caught.value.problems] == ["database"]

    @pytest.mark.parametrize("log_id", ["", "log\x00one", "\ud800", 7])
    def test_a_bad_log_id_is_refused_before_the_store_opens(self, tmp_path, log_id):
        """A log_id that no key can hold is a ValidationError naming it; no file is made."""
        with pytest.raises(ValidationError) as caught:
            StoreReplayer(tmp_path / "orders.db", log_id=log_id)
        assert caught.value.subject == "StoreReplayer()"
        assert [p.path for p in caught.value.problems] == ["log_id"]
        assert list(tmp_path.iterdir()) == []

    def test_store_failure_stops_the_run(self, database, sql):
        """A corrupt stored session stops the replay with its StoreError."""
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE])
        sql("UPDATE customer_sessions SET document = 'garbage'")
        with StoreReplayer(database) as replayer, pytest.raises(StoreError, match="order-7"):
            replayer.run([CREATE, CLOSE])


class TestEventKeys:
    def test_a_line_completed_after_a_run_is_applied(self, database):
        """A last line read half-written is refused, and applied once it is complete."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([CREATE, CLOSE[:40]])
        assert "malformed JSON" in first.refused[0].reason
        with StoreReplayer(database) as replayer:
            second = replayer.run([CREATE, CLOSE])
            assert replayer.store.get("order-7").state is State.CLOSED
        assert (second.skipped, second.applied, second.refused) == (1, 1, [])

    def test_another_log_with_the_same_first_line_is_applied(self, database):
        """A log sharing only its first event with an earlier log has its other events applied."""
        cancel = event(
            "update", "order-7", "2026-03-02T12:00:00Z", customerSession={"state": "cancelled"}
        )
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, CLOSE])
        with StoreReplayer(database) as replayer:
            report = replayer.run([CREATE, cancel])
            assert replayer.store.get("order-7").state is State.CANCELLED
        assert (report.skipped, report.applied, report.refused) == (1, 1, [])

    def test_a_respaced_log_applies_nothing_twice(self, database):
        """The same events with other spacing and key order are the same events."""
        lines = [CREATE, CLOSE, RETURN]
        respaced = [json.dumps(json.loads(line), indent=1, sort_keys=True) for line in lines]
        respaced = [" ".join(line.split()) for line in respaced]
        with StoreReplayer(database) as replayer:
            replayer.run(lines)
        with StoreReplayer(database) as replayer:
            report = replayer.run(respaced)
            (item,) = replayer.store.get("order-7").cart_items
        assert (report.skipped, report.applied, report.refused) == (3, 0, [])
        assert item.returned_quantity == 1

    def test_an_event_twice_in_a_log_is_applied_twice(self, database):
        """Two identical lines are two events; a re-run skips both."""
        lines = [CREATE, CLOSE, RETURN, RETURN]
        with StoreReplayer(database) as replayer:
            first = replayer.run(lines)
        with StoreReplayer(database) as replayer:
            second = replayer.run([*lines, RETURN])
            (item,) = replayer.store.get("order-7").cart_items
        assert (first.applied, first.refused) == (4, [])
        assert (second.skipped, second.applied) == (4, 1)
        assert item.returned_quantity == 3

    def test_a_key_digests_the_event_with_non_ascii_text_escaped(self, database):
        """The digest is of the canonical JSON, non-ASCII escaped however the line wrote it."""
        body = {"cartItems": [{"sku": "GRÖSSE-\u2028", "quantity": 1}]}
        line = json.dumps(
            {
                "at": "2026-03-02T10:00:00Z",
                "session": "bestellung-ä",
                "op": "create",
                "customerSession": body,
            },
            ensure_ascii=False,
        )
        with StoreReplayer(database) as replayer:
            replayer.run([line])
            (entry,) = replayer.store.history("bestellung-ä")
        assert entry.key == f"replay:{digest(line)}:0"

    def test_running_one_replayer_again_applies_nothing_twice(self, database):
        """A second run of the same replayer object counts keys and skips from its first line."""
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE])
        with StoreReplayer(database) as replayer:
            first = replayer.run([CREATE, CLOSE, RETURN, RETURN])
            second = replayer.run([CREATE, CLOSE, RETURN, RETURN])
        assert (first.applied, first.skipped) == (3, 1)
        assert (second.applied, second.skipped, second.refused) == (0, 4, [])

    def test_a_malformed_line_is_the_same_event_with_or_without_its_newline(self, database):
        """The digest of a line that is no JSON leaves out surrounding whitespace."""
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, "{not json\n"])
        with StoreReplayer(database) as replayer:
            (refused,) = replayer.run([CREATE, " {not json"]).refused
        assert refused.reason.startswith("refused by an earlier run: malformed JSON")

    def test_a_refusal_is_recorded_with_its_session(self, database):
        """A refused line's key records the session it named and the reason."""
        with StoreReplayer(database) as replayer:
            (refused,) = replayer.run([CLOSE]).refused
            recorded = replayer.store.processed_key(f"replay:{digest(CLOSE)}:0")
        assert recorded is not None
        assert (recorded.integration_id, recorded.refusal) == ("order-7", refused.reason)

    def test_log_id_keeps_the_keys_of_two_logs_apart(self, database):
        """With another log_id, the same events are new events (here a second create)."""
        with StoreReplayer(database, log_id="monday") as replayer:
            replayer.run([CREATE])
        with StoreReplayer(database, log_id="tuesday") as replayer:
            report = replayer.run([CREATE])
        assert report.skipped == 0
        assert "session 'order-7' already exists" in report.refused[0].reason

    def test_refusals_before_an_interruption_are_reported_by_the_next_run(self, database):
        """A run stopped midway reports nothing; the next run reports its refusals."""

        def interrupted():
            yield from [CREATE, CREATE, CLOSE]
            raise KeyboardInterrupt

        with StoreReplayer(database) as replayer, pytest.raises(KeyboardInterrupt):
            replayer.run(interrupted())
        with StoreReplayer(database) as replayer:
            report = replayer.run([CREATE, CREATE, CLOSE, RETURN])
        assert (report.skipped, report.applied) == (2, 1)
        (refused,) = report.refused
        assert str(refused) == (
            "line 2: order-7 create: refused by an earlier run: "
            "event: $.session: session 'order-7' already exists"
        )

    @pytest.mark.parametrize(
        "line",
        [
            event("update", "order-7", "9999-12-31T23:59:59-23:59", customerSession={}),
            '{"at":"2026-03-02T10:00:00Z","session":"order-7","op":"update",'
            '"customerSession":{"attributes":{"n":' + "7" * 5000 + "}}}",
            "[" * 100_000 + "]" * 100_000,
            '{"at":"2026-03-02T10:00:00Z","session":"order-7","op":"update",'
            '"customerSession":{"attributes":{"x":' + '{"a":' * 500 + "1" + "}" * 500 + "}}}",
        ],
        ids=["year-10000", "long-integer", "deep-array", "deep-object"],
    )
    def test_unreadable_line_is_refused_and_recorded(self, database, line):
        """A line Python cannot read is refused like in memory, and refused again on a re-run."""
        expected = Replayer().run([CREATE, line, CLOSE])
        with StoreReplayer(database) as replayer:
            first = replayer.run([CREATE, line, CLOSE])
        with StoreReplayer(database) as replayer:
            second = replayer.run([CREATE, line, CLOSE])
        assert (first.applied, first.refused) == (2, expected.refused)
        assert second.refused == [earlier(r) for r in expected.refused]

    def test_a_repeated_key_is_refused_as_in_memory_and_again_by_a_rerun(self, database):
        """A line repeating a key is refused as in memory, creates nothing, and stays refused."""
        lines = [REPEATED_CREATE, CLOSE]
        expected = Replayer().run(lines)
        with StoreReplayer(database) as replayer:
            first = replayer.run(lines)
            assert not replayer.store.exists("order-7")
        with StoreReplayer(database) as replayer:
            second = replayer.run(lines)
        assert "$.customerSession.state: appears 2 times" in expected.refused[0].reason
        assert (first.applied, first.refused) == (0, expected.refused)
        assert second.refused == [earlier(r) for r in expected.refused]

    def test_a_repeated_key_line_an_older_replay_applied_is_skipped(self, database):
        """A line an older replay applied as its last value counts as applied: not refused now.

        The older replay recorded the line's key from the event ``json.loads`` read, each
        repeated key with its last value: the key of a line holding that event once.
        """
        closed, repeated = CLOSED_CREATE, REPEATED_CREATE
        assert digest(repeated) == digest(closed)  # json.loads keeps the last value
        with StoreReplayer(database) as replayer:  # the older replay's records
            assert replayer.run([closed, CANCEL]).applied == 2
            journal = replayer.store.history("order-7")
        with StoreReplayer(database) as replayer:
            again = replayer.run([repeated, CANCEL, closed])
            assert replayer.store.history("order-7") == journal
        assert (again.skipped, again.applied) == (2, 0)
        assert [(r.line, r.reason) for r in again.refused] == [
            (3, "event: $.session: session 'order-7' already exists")
        ]

    def test_a_refused_repeated_key_line_leaves_the_keys_of_its_event_to_others(self, database):
        """A refused line repeating a key takes no key of its last value: that event applies."""
        closed, repeated = CLOSED_CREATE, REPEATED_CREATE
        with StoreReplayer(database) as replayer:
            first = replayer.run([repeated, closed])
        with StoreReplayer(database) as replayer:
            second = replayer.run([repeated, closed])
            assert replayer.store.get("order-7").state is State.CLOSED
        assert (first.applied, len(first.refused)) == (1, 1)
        assert (second.applied, second.skipped, len(second.refused)) == (0, 1, 1)
        assert second.refused[0].reason.startswith("refused by an earlier run: event: $.custo")

    def test_duplicate_create_is_refused_as_in_memory(self, database):
        """A second create is refused as existing, whatever its body, like in memory."""
        again = event(
            "create", "order-7", "2026-03-02T12:00:00Z", customerSession={"state": "cancelled"}
        )
        expected = Replayer().run([CREATE, again])
        with StoreReplayer(database) as replayer:
            report = replayer.run([CREATE, again])
        assert report.refused == expected.refused
        assert "session 'order-7' already exists" in report.refused[0].reason


class TestCorrectedLogs:
    def test_a_corrected_create_resumes_to_what_a_new_replay_gives(self, database):
        """Once a malformed create is mended, the lines it made fail are applied too."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([cut(CREATE), CLOSE, RETURN])
        assert (first.applied, len(first.refused)) == (0, 3)
        memory = Replayer()
        fresh = memory.run([CREATE, CLOSE, RETURN], fast=False)
        with StoreReplayer(database) as replayer:
            resumed = replayer.run([CREATE, CLOSE, RETURN])
            assert replayer.store.get("order-7") == memory.sessions["order-7"]
            recorded = replayer.store.processed_key(f"replay:{digest(RETURN)}:0")
        assert (resumed.applied, resumed.skipped, resumed.refused) == (3, 0, [])
        assert (resumed.states, fresh.refused) == (fresh.states, [])
        assert recorded is not None
        assert recorded.refusal is None

    def test_the_example_log_with_a_mended_line_resumes_as_a_new_replay(self, database, tmp_path):
        """A cut line of the example log (a close), mended, gives the states of a new replay.

        Line 24 closes order-0000007, whose later returns were refused while it was
        open: they are applied once the close is, as a new replay applies them.
        """
        lines = example()
        broken = [*lines[:23], cut(lines[23]), *lines[24:]]
        with StoreReplayer(database) as replayer:
            replayer.run(broken)
        with StoreReplayer(database) as replayer:
            resumed = replayer.run(lines)
            stored = {i: replayer.store.get(i) for i in _ids(lines)}
        with StoreReplayer(tmp_path / "new.db") as new:
            fresh = new.run(lines)
            assert {i: new.store.get(i) for i in _ids(lines)} == stored
        assert stored["order-0000007"].state is State.PARTIALLY_RETURNED
        assert resumed.states == fresh.states
        assert resumed.applied + resumed.skipped == fresh.applied
        assert [r.line for r in resumed.refused] == [r.line for r in fresh.refused]

    def test_a_run_interrupted_after_the_corrected_line_leaves_the_rest_to_the_next(self, database):
        """A corrected line applied by a run that then stopped still reopens the lines after it.

        The next run skips the corrected create (applied before), yet the close and
        the return, refused before it was applied, are evaluated again and applied.
        """
        with StoreReplayer(database) as replayer:
            replayer.run([cut(CREATE), CLOSE, RETURN])
        with StoreReplayer(database) as replayer:
            assert replayer.run([CREATE]).applied == 1  # stopped after the corrected line
        memory = Replayer()
        memory.run([CREATE, CLOSE, RETURN], fast=False)
        with StoreReplayer(database) as replayer:
            resumed = replayer.run([CREATE, CLOSE, RETURN])
            assert replayer.store.get("order-7") == memory.sessions["order-7"]
        assert (resumed.applied, resumed.skipped, resumed.refused) == (2, 1, [])

    def test_a_refusal_holds_when_only_another_session_was_touched(self, database):
        """A rerun keeps line 1 "close A" refused (A did not exist yet), though B is new."""
        other = event("create", "order-8", "2026-03-02T09:00:00Z", customerSession={})
        with StoreReplayer(database) as replayer:
            (refused,) = replayer.run([CLOSE, CREATE]).refused
        with StoreReplayer(database) as replayer:
            report = replayer.run([other, CLOSE, CREATE])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (report.applied, report.skipped) == (1, 1)
        assert report.refused == [attrs.evolve(earlier(refused), line=2)]

    def test_a_line_that_changes_nothing_touches_no_session(self, database):
        """A rerun keeps "close A" refused when its new line before it left A as it was."""
        with StoreReplayer(database) as replayer:
            (refused,) = replayer.run([CLOSE, CREATE]).refused
        with StoreReplayer(database) as replayer:
            report = replayer.run([SAME_CART, CLOSE, CREATE])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (report.applied, report.skipped) == (1, 1)
        assert report.refused == [attrs.evolve(earlier(refused), line=2)]

    def test_a_second_run_of_a_replayer_starts_with_no_session_touched(self, database):
        """run() again on one replayer keeps the refusals the log made, as a new replayer would."""
        with StoreReplayer(database) as replayer:
            (refused,) = replayer.run([CLOSE, CREATE]).refused
            again = replayer.run([CLOSE, CREATE])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (again.applied, again.skipped, again.refused) == (0, 1, [earlier(refused)])

    def test_a_second_run_of_a_replayer_evaluates_its_first_runs_refusals_again(self, database):
        """run() again on one replayer, with the bad line mended, applies what it made fail."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([cut(CREATE), CLOSE])
            mended = replayer.run([CREATE, CLOSE])
            assert replayer.store.get("order-7").state is State.CLOSED
        assert (first.applied, len(first.refused)) == (0, 2)
        assert (mended.applied, mended.skipped, mended.refused) == (2, 0, [])

    def test_a_corrected_log_resumes_after_the_clock_went_back(self, database, sql):
        """Refusals recorded at a time the clock has not reached again are still evaluated again.

        The clock stepped back (NTP) between the runs, or stood still: the refusals
        are at a time after the mended run began by the clock, yet before it in fact.
        """
        with StoreReplayer(database) as replayer:
            first = replayer.run([cut(CREATE), CLOSE])
        ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        sql("UPDATE customer_session_keys SET recorded_at = ?", ahead)
        with StoreReplayer(database) as replayer:
            mended = replayer.run([CREATE, CLOSE])
            assert replayer.store.get("order-7").state is State.CLOSED
        assert (first.applied, len(first.refused)) == (0, 2)
        assert (mended.applied, mended.skipped, mended.refused) == (2, 0, [])

    def test_a_refused_line_that_now_changes_nothing_is_applied(self, database):
        """A line evaluated again that applies now without a change is recorded as applied."""
        key = f"replay:{digest(SAME_CART)}:0"
        with StoreReplayer(database) as replayer:
            first = replayer.run([cut(CREATE), SAME_CART])
        assert "unknown session 'order-7'" in first.refused[-1].reason
        with StoreReplayer(database) as replayer:
            report = replayer.run([CREATE, SAME_CART])
            recorded = replayer.store.processed_key(key)
        assert (report.applied, report.skipped, report.refused) == (2, 0, [])
        assert recorded is not None
        assert recorded.refusal is None

    def test_a_key_evaluated_again_is_recorded_anew(self, database):
        """A line evaluated again, applied or refused, has its key's time renewed (forget_keys)."""
        with StoreReplayer(database) as replayer:
            replayer.run([cut(CREATE), CLOSE, RETURN_ALL, RETURN_ALL])
        between = datetime.now(UTC)
        with StoreReplayer(database) as replayer:
            report = replayer.run([CREATE, CLOSE, RETURN_ALL, RETURN_ALL])
            forgotten = replayer.store.forget_keys(before=between)  # the cut line's key only
            kept = [
                replayer.store.processed_key(f"replay:{digest(line)}:{k}")
                for line, k in ((CLOSE, 0), (RETURN_ALL, 0), (RETURN_ALL, 1))
            ]
        assert (report.applied, [r.line for r in report.refused]) == (3, [4])
        assert forgotten == 1
        assert [k is not None and k.refusal is None for k in kept] == [True, True, False]
        assert kept[2] is not None

    def test_a_line_refused_again_once_another_replay_applied_it_keeps_that_verdict(
        self, database, monkeypatch
    ):
        """A line evaluated again, refused as another replay applied it meanwhile, is skipped.

        Both replays touched order-7. Once the first found the return of every unit
        refused before, the second applies it; the first then finds no unit left to
        return: it leaves the second's record as it is and counts the line as applied
        by another run.
        """
        key = f"replay:{digest(RETURN_ALL)}:0"
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, cut(EDIT), cut(CLOSE), RETURN_ALL])
        mended = [CREATE, EDIT, CLOSE, RETURN_ALL]
        with StoreReplayer(database) as first, StoreReplayer(database) as second:
            verdicts = []
            recorded = first.store._key_recorded

            def second_applies_meanwhile(looked_up):
                found = recorded(looked_up)
                if looked_up == key and not verdicts:  # the first lookup only
                    verdicts.append(second.apply(4, RETURN_ALL))
                return found

            def lines():
                yield from mended[:2]
                assert [second.apply(n, line) for n, line in enumerate(mended[:3], 1)] == [None] * 3
                monkeypatch.setattr(first.store, "_key_recorded", second_applies_meanwhile)
                yield from mended[2:]

            report = first.run(lines())
            stored = first.store.get("order-7")
            record = first.store.processed_key(key)
        assert verdicts == [None]
        assert (report.applied, report.skipped, report.refused) == (1, 3, [])
        assert stored.cart_items[0].returned_quantity == 3
        assert record is not None
        assert record.refusal is None

    def test_a_line_still_refused_gets_its_current_reason(self, database):
        """A line evaluated again and still refused is reported and recorded with the new reason."""
        too_many = event(
            "return",
            "order-7",
            "2026-03-02T12:00:00Z",
            **{"return": {"returnedCartItems": [{"position": 0, "quantity": 99}]}},
        )
        key = f"replay:{digest(too_many)}:0"
        with StoreReplayer(database) as replayer:
            first = replayer.run([cut(CREATE), CLOSE, too_many])
        assert "unknown session 'order-7'" in first.refused[-1].reason
        with StoreReplayer(database) as replayer:
            (now,) = replayer.run([CREATE, CLOSE, too_many]).refused
            recorded = replayer.store.processed_key(key)
        assert now.reason.startswith("session 'order-7': return_items(): items[0].quantity: 99")
        assert recorded is not None
        assert recorded.refusal == now.reason
        with StoreReplayer(database) as replayer:
            (again,) = replayer.run([CREATE, CLOSE, too_many]).refused
        assert again == earlier(now)

    def test_a_failure_before_the_commit_keeps_the_refusal_and_writes_no_change(
        self, backend, database, sql
    ):
        """A re-evaluated line whose commit fails leaves its old refusal and the session as was."""
        key = f"replay:{digest(RETURN)}:0"
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, cut(CLOSE), RETURN])
            before = replayer.store.processed_key(key)
        for statement in FAIL_KEY_UPDATES[backend]:
            sql(statement)
        with (
            StoreReplayer(database) as replayer,
            pytest.raises(StoreError, match="injected failure"),
        ):
            replayer.run([CREATE, CLOSE, RETURN])
        with StoreReplayer(database) as replayer:
            assert replayer.store.processed_key(key) == before
            assert replayer.store.get("order-7").state is State.CLOSED  # the close applied
            assert [e.operation for e in replayer.store.history("order-7")] == [
                "create",
                "update",
            ]
        assert before is not None
        assert "from state 'open'" in (before.refusal or "")

    def test_two_replays_evaluating_one_line_again_apply_it_once(self, database, monkeypatch):
        """Two replays that both touched a session race on a line refused before: one applies it.

        The first replay applies the mended edit, the second the mended close; the
        second then applies the return, refused before, while the first is about to
        commit it: the first's commit loses, and it counts the line as applied by
        another run.
        """
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, cut(EDIT), cut(CLOSE), RETURN])
        mended = [CREATE, EDIT, CLOSE, RETURN]
        with StoreReplayer(database) as first, StoreReplayer(database) as second:
            verdicts = []
            update = first.store._update

            def second_commits_first(change, expected):
                if not verdicts:
                    verdicts.append(second.apply(4, RETURN))
                return update(change, expected)

            def lines():
                yield from mended[:2]
                assert [second.apply(n, line) for n, line in enumerate(mended[:3], 1)] == [None] * 3
                monkeypatch.setattr(first.store, "_update", second_commits_first)
                yield from mended[2:]

            report = first.run(lines())
            stored = first.store.get("order-7")
            history = first.store.history("order-7")
        assert verdicts == [None]
        assert (report.applied, report.skipped, report.refused) == (1, 3, [])
        assert stored.cart_items[0].returned_quantity == 1
        assert [e.key for e in history].count(f"replay:{digest(RETURN)}:0") == 1

    def test_a_refusal_by_a_replay_running_meanwhile_holds(self, database):
        """A line another replay of the log refused since this run began keeps its verdict.

        That replay reached it in the log's order; evaluated again here, after the
        close it then applied, the return would be applied, as no replay of the log
        alone applies it.
        """
        lines = [CREATE, EDIT, RETURN, CLOSE]
        expected = Replayer().run(lines, fast=False)
        with StoreReplayer(database) as first, StoreReplayer(database) as second:

            def overtaken():
                yield from lines[:2]  # the first replay creates and edits order-7
                second.run(lines)  # the second refuses the return, then closes
                yield from lines[2:]

            report = first.run(overtaken())
            stored = first.store.get("order-7")
        assert stored.state is State.CLOSED
        assert stored.cart_items[0].returned_quantity == 0
        assert report.refused == [earlier(r) for r in expected.refused]


class TestCommandLine:
    def test_replay_into_a_database_then_again(self, database, tmp_path, capsys):
        """replay --db applies the log once; the second run reports every line as done."""
        log = tmp_path / "events.jsonl"
        log.write_text(f"{CREATE}\n{CLOSE}\n", encoding="utf-8")
        assert main(["replay", "--db", database, str(log)]) == 0
        assert "2 events applied, 0 refused" in capsys.readouterr().out
        assert main(["replay", "--db", database, "--json", str(log)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["applied"], report["skipped"], report["states"]) == (0, 2, {"closed": 1})

    def test_rerun_of_a_log_with_refusals_fails_again(self, database, tmp_path, capsys):
        """A re-run lists the lines an earlier run refused and exits 1 again."""
        log = tmp_path / "events.jsonl"
        log.write_text(f"{CLOSE}\n{CREATE}\n", encoding="utf-8")
        assert main(["replay", "--db", database, str(log)]) == 1
        capsys.readouterr()
        assert main(["replay", "--db", database, str(log)]) == 1
        out = capsys.readouterr().out
        assert "0 events applied, 1 refused, 1 applied by an earlier run" in out
        assert "line 1: order-7 update: refused by an earlier run: " in out

    def test_a_corrected_log_applies_the_lines_its_bad_line_made_fail(
        self, database, tmp_path, capsys
    ):
        """replay --db of a log whose bad create was mended applies the lines after it too."""
        log = tmp_path / "events.jsonl"
        log.write_text(f"{cut(CREATE)}\n{CLOSE}\n{RETURN}\n", encoding="utf-8")
        assert main(["replay", "--db", database, str(log)]) == 1
        assert "0 events applied, 3 refused" in capsys.readouterr().out
        log.write_text(f"{CREATE}\n{CLOSE}\n{RETURN}\n", encoding="utf-8")
        assert main(["replay", "--db", database, "--json", str(log)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["applied"], report["skipped"], report["refused"]) == (3, 0, [])
        assert report["states"] == {"partially_returned": 1}

    def test_a_byte_order_mark_does_not_change_the_first_event(self, database, tmp_path, capsys):
        """A log saved with a byte order mark applies its first line, as the same log without."""
        marked, plain = tmp_path / "bom.jsonl", tmp_path / "plain.jsonl"
        marked.write_text(f"\ufeff{CREATE}\n{CLOSE}\n", encoding="utf-8")
        plain.write_text(f"{CREATE}\n{CLOSE}\n", encoding="utf-8")
        assert main(["replay", "--db", database, str(marked)]) == 0
        assert "2 events applied, 0 refused" in capsys.readouterr().out
        assert main(["replay", "--db", database, str(plain)]) == 0
        assert "0 events applied, 0 refused, 2 applied by an earlier run" in capsys.readouterr().out

    def test_unreachable_database_is_a_one_line_error(self, tmp_path, capsys):
        """A database that cannot be opened exits 2 with one line on stderr."""
        log = tmp_path / "events.jsonl"
        log.write_text(f"{CREATE}\n", encoding="utf-8")
        assert main(["replay", "--db", str(tmp_path), str(log)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("customer-session: error:")
        assert err.count("\n") == 1

    @pytest.mark.postgres
    def test_a_connection_lost_mid_run_is_a_one_line_error(self, pg_server):
        """A PostgreSQL connection cut while a statement runs exits 2 with one line, nothing else.

        One cut while idle in the pool would not do: the pool's check replaces it.
        """
        database = pg_server.fresh_schema() + "&application_name=replay-cut"
        command = [sys.executable, "-m", "customer_session", "replay", "--db", database]
        replay = subprocess.Popen(
            [*command, str(EXAMPLE)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        with replay:
            while replay.poll() is None and not _cut_when_applying(database):
                time.sleep(0.01)
            err = replay.communicate()[1]
        assert replay.returncode == 2
        assert err.startswith("customer-session: error: ")
        assert err.count("\n") == 1


def _cut_when_applying(database: str) -> bool:
    """Once a replay on ``database`` has applied lines, cut its connections; whether it did.

    They are cut while a statement of the replay runs: one waiting for a lock this
    holds (each line records its key) until then.
    """
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(database.replace("replay-cut", "cutter"), autocommit=True) as connection:
        applied = connection.execute("SELECT to_regclass('customer_session_keys')").fetchone()
        if applied is None or applied[0] is None:
            return False
        keys = connection.execute("SELECT count(*) FROM customer_session_keys").fetchone()
        if keys is None or keys[0] < 100:
            return False
        with connection.transaction():
            connection.execute("LOCK TABLE customer_session_keys IN EXCLUSIVE MODE")
            deadline = time.monotonic() + 30
            while not connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                ("replay-cut",),
            ).fetchall()[0][0]:
                assert time.monotonic() < deadline, "no statement of the replay waited"
                time.sleep(0.01)
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                ("replay-cut",),
            )
    return True


def _ids(lines: list[str]) -> list[str]:
    ids = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("op") == "create":
            ids.append(event["session"])
    return ids


class TestValuesThatCannotBeStored:
    def test_a_cart_total_beyond_a_float_is_refused_and_the_row_still_loads(self, database):
        """An update whose cart total overflows is refused; the stored session loads after it."""
        cart = [
            {"sku": "A", "quantity": 1, "price": 1e308},
            {"sku": "B", "quantity": 1, "price": 1e308},
        ]
        lines = [
            CREATE,
            event("update", "order-7", "2026-03-02T10:30:00Z", customerSession={"cartItems": cart}),
            CLOSE,
        ]
        with StoreReplayer(database) as replayer:
            report = replayer.run(lines)
            assert [r.line for r in report.refused] == [2]
            assert "more than a float can hold" in report.refused[0].reason
            assert replayer.store.get("order-7").state is State.CLOSED

    @pytest.mark.parametrize("session", ["order-7\x00", "order-\ud800"], ids=["nul", "surrogate"])
    def test_a_session_id_that_cannot_be_stored_is_refused_and_the_run_goes_on(
        self, database, session
    ):
        """A NUL or lone surrogate id is refused per line, not a store error; later lines apply."""
        lines = [
            event("create", session, "2026-03-02T10:00:00Z", customerSession={}),
            event("update", session, "2026-03-02T11:00:00Z", customerSession={"state": "closed"}),
            CREATE,
        ]
        with StoreReplayer(database, log_id="ids") as replayer:
            report = replayer.run(lines)
            assert [r.line for r in report.refused] == [1, 2]
            assert report.applied == 1
            assert replayer.store.exists("order-7")

    @pytest.mark.parametrize(
        "line",
        [
            event("update", "", "2026-03-02T10:30:00Z", customerSession={}),
            event("create", "order-8", "2026-03-02T10:30:00Z", customerSession={"\x00": 1}),
            event("create", "order-8", "2026-03-02T10:30:00Z", customerSession={"\ud800": 1}),
        ],
        ids=["empty-session", "nul-key", "surrogate-key"],
    )
    def test_a_refusal_quoting_what_cannot_be_stored_is_recorded(self, database, line):
        """An empty session id or a bad body key is refused, recorded, and later lines apply."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([CREATE, line, CLOSE])
        with StoreReplayer(database) as replayer:
            second = replayer.run([CREATE, line, CLOSE])
            assert replayer.store.get("order-7").state is State.CLOSED
        assert (first.applied, [r.line for r in first.refused]) == (2, [2])
        assert second.refused == [earlier(r) for r in first.refused]
        assert "\x00" not in str(first.refused[0])
        str(first.refused[0]).encode()  # printable: no lone surrogate


class TestConcurrentReplays:
    def test_an_event_applied_by_another_replay_meanwhile_counts_as_applied(
        self, database, monkeypatch
    ):
        """A replay whose key check came just before another replay's commit is not fooled.

        The create then finds the session existing, the close finds it closed and
        the return would be applied twice, but each line's key was recorded by the
        other replay: each counts as applied by an earlier run, none as refused.
        """
        lines = [CREATE, CLOSE, RETURN]
        with StoreReplayer(database) as first:
            first.run(lines)
        with StoreReplayer(database) as second:
            # Each key check answers as it would have before the first replay committed.
            checked = second.store._key_recorded
            answers: set[str] = set()

            def before_the_commit(key: str):
                if key not in answers:
                    answers.add(key)
                    return None
                return checked(key)

            monkeypatch.setattr(second.store, "_key_recorded", before_the_commit)
            report = second.run(lines)
            assert len(answers) == len(lines)  # every line's key was checked as if unrecorded
            stored = second.store.get("order-7")
        assert (report.applied, report.skipped, report.refused) == (0, 3, [])
        assert stored.state is State.PARTIALLY_RETURNED
        assert stored.cart_items[0].returned_quantity == 1

    def test_a_create_another_replay_committed_meanwhile_is_refused_for_its_key(
        self, database, monkeypatch
    ):
        """A create that meets its session stored by another replay counts as applied by it.

        Its key and the session were checked just before the other replay's commit:
        create() is refused for the key, as a redelivery, not as a session that exists.
        """
        with StoreReplayer(database) as first:
            first.run([CREATE])
        with StoreReplayer(database) as second:
            store = second.store
            recorded, create = store._key_recorded, store.create
            answered: set[str] = set()
            raised: list[type[Exception]] = []

            def before_the_commit(key: str):
                if key not in answered:
                    answered.add(key)
                    return None
                return recorded(key)

            def watched(*args, **kwargs):
                try:
                    create(*args, **kwargs)
                except Exception as error:
                    raised.append(type(error))
                    raise

            monkeypatch.setattr(store, "_key_recorded", before_the_commit)
            monkeypatch.setattr(store, "exists", lambda integration_id: False)
            monkeypatch.setattr(store, "create", watched)
            report = second.run([CREATE])
            assert store.processed_key(second._key).refusal is None
        assert (report.applied, report.skipped, report.refused) == (0, 1, [])
        assert raised == [KeyAlreadyProcessed]

    def test_replays_of_one_log_at_once_agree_with_one_replay(self, database, tmp_path):
        """Three CLI processes replaying one log into one database: none fails or misreports."""
        log = tmp_path / "events.jsonl"
        log.write_text("".join(example(1500)), encoding="utf-8")
        alone = Replayer().run(example(1500))
        command = [sys.executable, "-m", "customer_session", "replay", str(log)]
        runs = [
            subprocess.Popen(
                [*command, "--db", database, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        finished = [(*run.communicate(timeout=300), run.returncode) for run in runs]
        # 1: the log has refused lines; nothing on stderr: no error, no traceback.
        assert [(err, code) for _, err, code in finished] == [("", 1)] * 3
        reports = [json.loads(out) for out, _, _ in finished]
        expected = {(r.line, r.reason) for r in alone.refused}
        for report in reports:
            refused = {
                (r["line"], r["reason"].removeprefix("refused by an earlier run: "))
                for r in report["refused"]
            }
            assert refused == expected
            assert report["applied"] + report["skipped"] == alone.applied
        assert sum(report["applied"] for report in reports) == alone.applied
        assert reports[0]["states"] == alone.states


class TestReplayOptions:
    def test_a_reopen_refused_without_the_reopen_table_is_applied_with_it(self, database):
        """A reopen refused for want of --reopen is not recorded: a run with it applies it."""
        reopen = event("reopen", "order-7", "2026-03-02T12:00:00Z")
        with StoreReplayer(database) as replayer:
            first = replayer.run([CREATE, CLOSE, reopen])
        assert "replay with --reopen" in first.refused[0].reason
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            second = replayer.run([CREATE, CLOSE, reopen])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (second.applied, second.skipped, second.refused) == (1, 2, [])

    def test_a_reopen_refused_without_the_reopen_table_meets_the_session_as_left(self, database):
        """With --reopen, that reopen is judged on the session as the earlier run left it."""
        reopen = event("reopen", "order-7", "2026-03-02T11:45:00Z")
        with StoreReplayer(database) as replayer:
            replayer.run([CREATE, CLOSE, reopen, RETURN])
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            second = replayer.run([CREATE, CLOSE, reopen, RETURN])
            assert replayer.store.get("order-7").state is State.PARTIALLY_RETURNED
        refusal = (
            "session 'order-7': cannot reopen() from state 'partially_returned'; "
            "allowed: cancel(), return_items()"
        )
        assert [(r.line, r.reason) for r in second.refused] == [(3, refusal)]

    def test_a_store_of_the_reopen_table_without_it_stops_the_run(self, database):
        """Replaying without --reopen into sessions that reopened stops, naming --reopen."""
        reopen = event("reopen", "order-7", "2026-03-02T12:00:00Z")
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            replayer.run([CREATE, CLOSE, reopen])
        with StoreReplayer(database) as replayer:
            with pytest.raises(WorkflowError, match=r"holds 'reopen'.*--reopen"):
                replayer.run([CREATE, CLOSE, reopen, CLOSE])
            assert replayer.store.processed_key(f"replay:{digest(CLOSE)}:1") is None
