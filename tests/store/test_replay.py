"""Replaying an order-event log into a store: same verdicts as in memory, resumable."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from customer_session import ReopenableCustomerSession, State, StoreError
from customer_session.cli import main
from customer_session.replay import Replayer
from customer_session.store import StoreReplayer, open_store

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "orders.jsonl"
PREFIX = 400  # lines of the example log: every kind of event, a few seconds at most


def example(lines: int = PREFIX) -> list[str]:
    with EXAMPLE.open(encoding="utf-8") as log:
        return list(islice(log, lines))


def event(op: str, session: str, at: str, **body) -> str:
    return json.dumps({"at": at, "session": session, "op": op, **body})


CREATE = event("create", "order-7", "2026-03-02T10:00:00Z", customerSession={"cartItems": []})
CLOSE = event("update", "order-7", "2026-03-02T11:00:00Z", customerSession={"state": "closed"})


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

    def test_rerun_applies_nothing_twice(self, database):
        """Running the same log again skips every line and changes nothing."""
        lines = example(120)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            first = replayer.run(lines)
        with StoreReplayer(database, session_class=ReopenableCustomerSession) as replayer:
            second = replayer.run(lines)
            journal = [replayer.store.history(i) for i in ("order-00001",)]
        assert (second.applied, second.refused) == (0, [])
        assert second.skipped == first.applied + len(first.refused)
        assert second.states == first.states
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            assert [store.history(i) for i in ("order-00001",)] == journal

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
        assert resumed.skipped == prefix.applied + len(prefix.refused)
        assert prefix.applied + resumed.applied == whole.applied
        assert prefix.refused + resumed.refused == whole.refused

    def test_refused_line_is_not_applied_later(self, database):
        """A line refused in the first run stays refused: a re-run skips it."""
        with StoreReplayer(database) as replayer:
            first = replayer.run([CLOSE, CREATE])
        assert [r.line for r in first.refused] == [1]
        with StoreReplayer(database) as replayer:
            second = replayer.run([CLOSE, CREATE])
            assert replayer.store.get("order-7").state is State.OPEN
        assert (second.skipped, second.applied, second.refused) == (2, 0, [])

    def test_log_times_and_keys_reach_the_journal(self, database):
        """Changes carry the log's timestamps, and each journal entry its line's key."""
        with StoreReplayer(database, log_id="log-a") as replayer:
            replayer.run([CREATE, CLOSE])
            history = replayer.store.history("order-7")
        assert [e.key for e in history] == ["replay:log-a:1", "replay:log-a:2"]
        assert history[1].records[0].timestamp.isoformat() == "2026-03-02T11:00:00+00:00"
        assert history[1].operation == "update"

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

    def test_unreachable_database_is_a_one_line_error(self, tmp_path, capsys):
        """A database that cannot be opened exits 2 with one line on stderr."""
        log = tmp_path / "events.jsonl"
        log.write_text(f"{CREATE}\n", encoding="utf-8")
        assert main(["replay", "--db", str(tmp_path), str(log)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("customer-session: error:")
        assert err.count("\n") == 1


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
