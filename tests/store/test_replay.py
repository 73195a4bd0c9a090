"""Replaying an order-event log into a store: same verdicts as in memory, resumable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import attrs
import pytest

from customer_session import ReopenableCustomerSession, State, StoreError, WorkflowError
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
RETURN = event(
    "return",
    "order-7",
    "2026-03-02T12:00:00Z",
    **{"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}},
)


def earlier(refused: RefusedLine) -> RefusedLine:
    """``refused`` as a later run reports it."""
    return attrs.evolve(refused, reason=f"refused by an earlier run: {refused.reason}")


def digest(line: str) -> str:
    """The digest of a line's event in its key: SHA-256 of its canonical JSON."""
    canonical = json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
        """A store replay never takes the in-memory fast path."""
        with StoreReplayer(database) as replayer, pytest.raises(Exception, match="fast"):
            replayer.run([CREATE], fast=True)

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
        """A PostgreSQL connection cut during the run exits 2 with one line, nothing else."""
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
    """Once a replay on ``database`` has applied lines, cut its connections; whether it did."""
    import psycopg  # noqa: PLC0415 - optional dependency

    with psycopg.connect(database.replace("replay-cut", "cutter"), autocommit=True) as connection:
        applied = connection.execute("SELECT to_regclass('customer_session_keys')").fetchone()
        if applied is None or applied[0] is None:
            return False
        keys = connection.execute("SELECT count(*) FROM customer_session_keys").fetchone()
        if keys is None or keys[0] < 100:
            return False
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
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
            checked = second.store.processed_key
            answers: set[str] = set()

            def before_the_commit(key: str):
                if key not in answers:
                    answers.add(key)
                    return None
                return checked(key)

            monkeypatch.setattr(second.store, "processed_key", before_the_commit)
            report = second.run(lines)
            stored = second.store.get("order-7")
        assert (report.applied, report.skipped, report.refused) == (0, 3, [])
        assert stored.state is State.PARTIALLY_RETURNED
        assert stored.cart_items[0].returned_quantity == 1

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

    def test_a_store_of_the_reopen_table_without_it_stops_the_run(self, database):
        """Replaying without --reopen into sessions that reopened stops, naming --reopen."""
        reopen = event("reopen", "order-7", "2026-03-02T12:00:00Z")
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            replayer.run([CREATE, CLOSE, reopen])
        with StoreReplayer(database) as replayer:
            with pytest.raises(WorkflowError, match=r"holds 'reopen'.*--reopen"):
                replayer.run([CREATE, CLOSE, reopen, CLOSE])
            assert replayer.store.processed_key(f"replay:{digest(CLOSE)}:1") is None
