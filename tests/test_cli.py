import contextlib
import importlib.metadata
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import pytest

from customer_session import (
    CartItem,
    CustomerSession,
    ReopenableCustomerSession,
    ReturnedItem,
    State,
    StoreError,
    cli,
    wire,
)
from customer_session.cli import main
from customer_session.diagrams import to_dot, to_mermaid
from customer_session.store import SCHEMA_VERSION, SQLiteStore, StoreReplayer, open_store

from .conftest import require_graphviz

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).parent.parent / "examples" / "orders.jsonl"
GRAPHVIZ = pytest.mark.graphviz


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def encoded_log(sku: bytes) -> bytes:
    """Three events as bytes: create s1, create s2 with ``sku`` as raw bytes, close s1."""

    def line(session: str, op: str, body: object) -> bytes:
        event = {"at": "2026-03-02T10:00:00Z", "session": session, "op": op}
        return json.dumps({**event, "customerSession": body}).encode() + b"\n"

    def create(item_sku: str) -> dict[str, object]:
        return {"cartItems": [{"sku": item_sku, "quantity": 1}]}

    second = line("s2", "create", create("@SKU@")).replace(b"@SKU@", sku)
    return line("s1", "create", create("A")) + second + line("s1", "update", {"state": "closed"})


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, so the progress bar is drawn on it."""

    def isatty(self) -> bool:
        """Say it is a terminal."""
        return True


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


class TestDiagram:
    def test_mermaid_is_the_default(self):
        """diagram prints the Mermaid diagram of the table by default."""
        assert run("diagram") == (0, to_mermaid())

    def test_dot_of_the_reopenable_table(self):
        """--reopen --format dot prints the reopenable table's DOT."""
        from customer_session import REOPENABLE_SESSION  # noqa: PLC0415 - used here only

        assert run("diagram", "--format", "dot", "--reopen") == (0, to_dot(REOPENABLE_SESSION))

    def test_an_invalid_session_lists_its_problems_apart_on_one_line(self, capsys, tmp_path):
        """The problems of an invalid --session document are separated by '; ' on its line."""
        document = tmp_path / "s.json"
        document.write_text("{}")
        assert run("diagram", "--session", str(document)) == (2, "")
        assert "6 problems: $.integrationId: is required; $.created: is required; " in (
            one_line_error(capsys)
        )

    def test_session_is_highlighted(self):
        """--session highlights the state of the given document."""
        status, text = run("diagram", "--session", str(DATA / "session_v1.json"))
        assert status == 0
        assert "closed:::current" in text or "class closed current" in text

    @pytest.mark.graphviz
    def test_svg_is_written(self, tmp_path):
        """--format svg -o FILE writes a well-formed SVG naming every state."""
        target = tmp_path / "states.svg"
        status, _ = run("diagram", "--format", "svg", "-o", str(target))
        assert status == 0
        text = "".join(ET.parse(target).getroot().itertext())  # noqa: S314 - our own file
        for state in State:
            assert state.value in text

    @pytest.mark.graphviz
    def test_png_is_written(self, tmp_path):
        """--format png -o FILE writes a PNG and says where."""
        target = tmp_path / "states.png"
        assert run("diagram", "--format", "png", "-o", str(target)) == (0, f"wrote {target}\n")
        assert target.read_bytes().startswith(b"\x89PNG")

    @pytest.mark.parametrize(
        "kind",
        [
            "table",
            "mermaid",
            pytest.param("svg", marks=GRAPHVIZ),
            pytest.param("png", marks=GRAPHVIZ),
        ],
    )
    @pytest.mark.parametrize(
        ("target", "why"), [(".", "Is a directory"), ("missing/x", "No such file or directory")]
    )
    def test_unwritable_output_is_one_line(self, capsys, tmp_path, kind, target, why):
        """An output that cannot be written is one line naming it, exit 2, for text and images."""
        output = tmp_path / target
        assert run("diagram", "--format", kind, "-o", str(output)) == (2, "")
        assert f"{output}: cannot write ({why})" in one_line_error(capsys)

    @pytest.mark.parametrize(
        ("kind", "name"),
        [
            ("mermaid", "states.mmd"),
            ("dot", "states.dot"),
            ("table", "states.md"),
            pytest.param("svg", "states.svg", marks=GRAPHVIZ),
            pytest.param("png", "states.png", marks=GRAPHVIZ),
        ],
    )
    def test_every_format_written_to_a_file_says_so(self, tmp_path, kind, name):
        """-o FILE prints 'wrote FILE' and nothing else, for text as for images."""
        target = tmp_path / name
        assert run("diagram", "--format", kind, "-o", str(target)) == (0, f"wrote {target}\n")
        assert target.stat().st_size > 0

    @pytest.mark.parametrize(
        ("kind", "name"), [("mermaid", "states.mmd"), pytest.param("png", "x.png", marks=GRAPHVIZ)]
    )
    def test_a_write_failing_half_way_keeps_the_old_file(
        self, capsys, tmp_path, full_disk, kind, name
    ):
        """A disk that fills up mid-write is one line, exit 2; the old file stays whole."""
        target = tmp_path / name
        target.write_bytes(b"the old diagram")
        with full_disk(64):
            status = run("diagram", "--format", kind, "-o", str(target))
        assert status == (2, "")
        assert f"{target}: cannot write (File too large)" in one_line_error(capsys)
        assert target.read_bytes() == b"the old diagram"
        assert [p.name for p in tmp_path.iterdir()] == [name]

    def test_dash_output_is_standard_output(self, tmp_path, monkeypatch):
        """-o - prints the text on standard output and creates no file named '-'."""
        monkeypatch.chdir(tmp_path)
        assert run("diagram", "--format", "dot", "-o", "-") == (0, to_dot())
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.graphviz
    @pytest.mark.usefixtures("graphviz_available")
    def test_dash_output_takes_an_image_as_bytes(self, tmp_path):
        """--format png -o - writes the PNG's bytes, and nothing else, on standard output."""
        command = [sys.executable, "-m", "customer_session", "diagram", "--format", "png"]
        done = subprocess.run([*command, "-o", "-"], capture_output=True, check=False, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (0, b"")
        assert done.stdout.startswith(b"\x89PNG")
        assert list(tmp_path.iterdir()) == []

    def test_dash_output_refuses_an_image_on_a_text_only_stream(
        self, capsys, tmp_path, monkeypatch
    ):
        """An image for -o - on a stream without bytes is a one-line error, exit 2."""
        monkeypatch.chdir(tmp_path)
        assert run("diagram", "--format", "svg", "-o", "-") == (2, "")
        assert "text-only stream" in one_line_error(capsys)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize(
        ("name", "kind"),
        [
            ("states.mmd", "mermaid"),
            ("states.dot", "dot"),
            ("states.gv", "dot"),
            pytest.param("states.svg", "svg", marks=GRAPHVIZ),
            pytest.param("STATES.PNG", "png", marks=GRAPHVIZ),
            ("states.md", "mermaid"),
        ],
    )
    def test_format_defaults_to_the_one_the_extension_names(self, tmp_path, name, kind):
        """Without --format, the output's extension chooses the format (else Mermaid)."""
        if kind in {"svg", "png"}:
            require_graphviz()
        target = tmp_path / name
        assert run("diagram", "-o", str(target))[0] == 0
        expected = tmp_path / f"expected.{kind}"
        assert run("diagram", "--format", kind, "-o", str(expected))[0] == 0
        assert target.read_bytes() == expected.read_bytes()

    @pytest.mark.parametrize(
        ("kind", "name"),
        [("mermaid", "states.svg"), ("svg", "states.png"), ("png", "states.dot"), ("dot", "x.mmd")],
    )
    def test_extension_naming_another_format_is_refused(self, capsys, tmp_path, kind, name):
        """An output whose extension names another format is a one-line error; no file is made."""
        target = tmp_path / name
        assert run("diagram", "--format", kind, "-o", str(target)) == (2, "")
        named = {".svg": "svg", ".png": "png", ".dot": "dot", ".mmd": "mermaid"}[target.suffix]
        assert f"{target}: --format: a {target.suffix} file is for {named!r}, not {kind!r}" in (
            one_line_error(capsys)
        )
        assert not target.exists()

    def test_image_needs_an_output(self, capsys):
        """An image format without -o is a one-line usage error."""
        assert run("diagram", "--format", "png")[0] == 2
        assert "-o FILE" in one_line_error(capsys)

    def test_unknown_format_is_one_line(self, capsys):
        """An unknown format is reported on one line with exit status 2."""
        assert run("diagram", "--format", "gif")[0] == 2
        assert "invalid choice: 'gif'" in one_line_error(capsys)

    def test_missing_dot_is_one_line(self, capsys, monkeypatch, tmp_path):
        """Without dot on PATH, an image request fails on one line saying what to install."""
        monkeypatch.setenv("PATH", str(tmp_path))
        assert run("diagram", "--format", "svg", "-o", str(tmp_path / "x.svg"))[0] == 2
        assert "graphviz" in one_line_error(capsys).lower()

    @pytest.mark.usefixtures("graphviz_package")
    def test_failing_dot_is_one_line(self, capsys, tmp_path, fake_dot):
        """A dot that fails is one line with its exit status and first error line, exit 2."""
        fake_dot('echo "Error: no cairo" >&2; echo "second line" >&2; exit 3')
        assert run("diagram", "--format", "png", "-o", str(tmp_path / "x.png"))[0] == 2
        error = one_line_error(capsys)
        assert "'dot -Tpng' failed: exit status 3: Error: no cairo" in error
        assert not (tmp_path / "x.png").exists()


class TestValidate:
    def test_valid_documents(self):
        """Valid documents are listed as valid and the status is 0."""
        status, text = run("validate", str(DATA / "session_v1.json"))
        assert status == 0
        assert "valid (session 'order-2026-000871', closed)" in text

    def test_a_byte_order_mark_before_the_document_is_ignored(self, tmp_path):
        """A document saved with a UTF-8 byte order mark validates as the same without one."""
        marked = tmp_path / "marked.json"
        marked.write_bytes(b"\xef\xbb\xbf" + (DATA / "session_v1.json").read_bytes())
        status, text = run("validate", str(marked))
        assert status == 0
        assert "valid (session 'order-2026-000871', closed)" in text

    def test_a_file_name_with_control_characters_is_printed_escaped(self, tmp_path, capsys):
        """A file name holding a terminal escape sequence is escaped in verdicts and errors."""
        named = tmp_path / "a\x1b]0;x\x07.json"
        named.write_text((DATA / "session_v1.json").read_text())
        status, text = run("validate", str(named), str(tmp_path / "gone\x1b[2J.json"))
        assert status == 2
        assert "a\\x1b]0;x\\x07.json: valid" in text
        err = one_line_error(capsys)
        assert "gone\\x1b[2J.json: no such file" in err
        assert "\x1b" not in text + err

    def test_invalid_document_lists_every_problem(self, tmp_path):
        """An invalid document lists each problem with its JSON path; the status is 1."""
        bad = tmp_path / "bad.json"
        document = json.loads((DATA / "session_v1.json").read_text())
        document["state"] = "shipped"
        document["cartItems"][0]["quantity"] = -2
        bad.write_text(json.dumps(document))
        status, text = run("validate", str(DATA / "session_v1.json"), str(bad))
        assert status == 1
        assert "$.state" in text
        assert "$.cartItems[0].quantity" in text

    @pytest.mark.parametrize(("breaks", "count"), [(1, "1 problem"), (2, "2 problems")])
    def test_invalid_line_counts_the_problems(self, tmp_path, breaks, count):
        """The line of an invalid document counts its problems, in the singular for one."""
        bad = tmp_path / "bad.json"
        document = json.loads((DATA / "session_v1.json").read_text())
        document["cartItems"][0]["quantity"] = -2
        if breaks == 2:
            document["state"] = "shipped"
        bad.write_text(json.dumps(document))
        assert run("validate", str(bad))[1].splitlines()[0] == f"{bad}: invalid ({count})"

    def test_every_file_is_checked_after_one_that_cannot_be_read(self, capsys, tmp_path):
        """A missing file is reported and the files after it are still checked; exit 2."""
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        missing, valid = tmp_path / "nope.json", DATA / "session_v1.json"
        status, text = run("validate", str(missing), str(bad), str(tmp_path), str(valid))
        assert status == 2
        assert text.splitlines()[0].startswith(f"{bad}: invalid (")
        assert f"{valid}: valid (" in text
        err = capsys.readouterr().err
        assert err.splitlines() == [
            f"customer-session: error: {missing}: no such file",
            f"customer-session: error: {tmp_path}: is a directory",
        ]

    def test_an_invalid_file_after_an_unreadable_one_keeps_status_2(self, capsys, tmp_path):
        """A missing file then an invalid one exit with 2, the worse of their statuses."""
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        status, text = run("validate", str(tmp_path / "nope.json"), str(bad))
        assert status == 2
        assert text.startswith(f"{bad}: invalid (")
        assert "no such file" in one_line_error(capsys)

    def test_missing_file_is_one_line(self, capsys, tmp_path):
        """A missing file is a one-line error with exit status 2."""
        assert run("validate", str(tmp_path / "nope.json"))[0] == 2
        assert "no such file" in one_line_error(capsys)

    def test_unreadable_file_is_one_line(self, capsys, tmp_path):
        """A file that is not UTF-8 text is a one-line error with exit status 2."""
        binary = tmp_path / "binary.json"
        binary.write_bytes(b"\xff\xfe\x00garbage")
        assert run("validate", str(binary))[0] == 2
        assert "not UTF-8" in one_line_error(capsys)

    def test_non_utf8_error_names_the_line_and_byte(self, capsys, tmp_path):
        """The error for a non-UTF-8 document names the bad byte, its line and its offsets."""
        document = tmp_path / "latin1.json"
        document.write_bytes(b'{\n  "profileId": "Jos\xe9"\n}\n')
        assert run("validate", str(document))[0] == 2
        assert (
            "latin1.json: not UTF-8 text: byte 0xe9 at line 2, column 20, "
            "file offset 21 (invalid continuation byte)"
        ) in one_line_error(capsys)

    def test_non_utf8_column_counts_characters_from_1(self, capsys, tmp_path):
        """The column of a non-UTF-8 byte counts characters from 1, as JSON errors do."""
        document = tmp_path / "mixed.json"
        document.write_bytes('{"a": "\u00e9'.encode() + b'\xff"}\n')
        assert run("validate", str(document))[0] == 2
        assert "byte 0xff at line 1, column 9, file offset 9 " in one_line_error(capsys)


class TestReplay:
    def test_example_report_and_status(self):
        """Replaying the example prints the summary and exits 1 (it has illegal events)."""
        status, text = run("replay", str(EXAMPLE))
        assert status == 1
        assert "events applied" in text
        assert "partially_returned" in text
        assert "line " in text

    def test_json_report(self):
        """--json prints a machine-readable report."""
        status, text = run("replay", "--json", str(EXAMPLE))
        data = json.loads(text)
        assert status == 1
        assert data["applied"] + data["refusedCount"] <= data["lines"]
        assert sum(data["states"].values()) == data["sessions"]

    def test_clean_log_exits_zero(self, tmp_path):
        """A log with no refused line exits 0."""
        log = tmp_path / "ok.jsonl"
        log.write_text(
            json.dumps(
                {
                    "at": "2026-03-02T10:00:00Z",
                    "session": "o",
                    "op": "create",
                    "customerSession": {"cartItems": [{"sku": "A", "quantity": 1}]},
                }
            )
            + "\n"
        )
        assert run("replay", str(log))[0] == 0

    def test_max_refusals_zero_lists_none_but_counts_them(self):
        """--max-refusals 0 lists no refused line; the summary still counts them all."""
        status, text = run("replay", "--max-refusals", "0", str(EXAMPLE))
        assert status == 1
        assert "\n  line " not in text
        assert "\n  ... and 148 more (--max-refusals N or --json lists them)\n" in text

    @pytest.mark.parametrize("value", ["-5", "-1", "many"])
    def test_max_refusals_must_be_a_count(self, capsys, tmp_path, value):
        """A --max-refusals that is not an integer >= 0 is a usage error, before any replay."""
        database = tmp_path / "store.db"
        argv = ("replay", "--db", str(database), "--max-refusals", value, str(EXAMPLE))
        assert run(*argv) == (2, "")
        assert f"must be an integer >= 0, got '{value}'" in one_line_error(capsys)
        assert not database.exists()

    def test_non_utf8_line_is_refused_and_the_replay_goes_on(self, tmp_path):
        """A line that is not UTF-8 is refused with its number and offsets; the rest applies."""
        log = tmp_path / "log.jsonl"
        log.write_bytes(encoded_log(b"A\xff"))
        first_line = len(encoded_log(b"A").splitlines(keepends=True)[0])
        in_line = encoded_log(b"A\xff").splitlines()[1].index(b"\xff")
        status, text = run("replay", "--json", str(log))
        data = json.loads(text)
        assert status == 1
        assert data["applied"] == 2
        assert data["refused"] == [
            {
                "line": 2,
                "session": None,
                "op": None,
                "reason": f"not UTF-8 text: byte 0xff at column {in_line + 1}, "
                f"file offset {first_line + in_line} (invalid start byte)",
            }
        ]

    def test_a_db_that_cannot_be_opened_is_named_as_other_files_are(self, capsys, tmp_path):
        """A --db path that is no database leads its error line unquoted, like any other file."""
        assert run("replay", "--db", str(tmp_path), str(EXAMPLE)) == (2, "")
        assert one_line_error(capsys) == (
            f"customer-session: error: {tmp_path}: cannot open as an SQLite database "
            "(unable to open database file)\n"
        )

    def test_a_store_that_cannot_be_opened_leaves_the_log_closed(self, capsys, monkeypatch):
        """A --db the store refuses is an error line, and the log opened first is closed."""
        opened = []
        path_open = Path.open

        def spy(path, *args, **options):
            opened.append(path_open(path, *args, **options))
            return opened[-1]

        monkeypatch.setattr(Path, "open", spy)
        assert run("replay", "--db", "mysql://host/orders", str(EXAMPLE)) == (2, "")
        assert "unsupported URL scheme 'mysql'" in one_line_error(capsys)
        assert [handle.closed for handle in opened] == [True]

    def test_non_utf8_line_is_applied_once_corrected_under_db(self, tmp_path):
        """With --db a non-UTF-8 line is not recorded, so the next run applies it fixed."""
        log, database = tmp_path / "log.jsonl", str(tmp_path / "store.db")
        log.write_bytes(encoded_log(b"A\xff"))
        assert run("replay", "--json", "--db", database, str(log))[0] == 1
        log.write_bytes(encoded_log(b"A"))
        status, text = run("replay", "--json", "--db", database, str(log))
        assert status == 0
        assert json.loads(text)["applied"] == 1
        assert json.loads(text)["states"] == {"closed": 1, "open": 1}

    def test_actor_is_recorded_on_the_journal_entries_the_replay_writes(self, tmp_path):
        """--actor NAME with --db names NAME on each entry; a run without it names nobody."""
        log, database = tmp_path / "log.jsonl", str(tmp_path / "store.db")
        log.write_bytes(encoded_log(b"A"))
        assert run("replay", "--db", database, "--actor", "nightly-import", str(log))[0] == 0
        cancel = {"at": "2026-03-02T11:00:00Z", "session": "s1", "op": "update"}
        cancel["customerSession"] = {"state": "cancelled"}
        log.write_bytes(encoded_log(b"A") + json.dumps(cancel).encode() + b"\n")
        assert run("replay", "--db", database, str(log))[0] == 0  # applies the new line only
        with open_store(database) as store:
            assert [e.actor for e in store.history("s1")] == ["nightly-import"] * 2 + [None]
            assert [e.actor for e in store.history("s2")] == ["nightly-import"]

    def test_a_bad_actor_is_a_usage_error_before_any_line(self, capsys, tmp_path):
        """A refused --actor is one error line naming --actor, exit 2, and nothing is applied."""
        database = tmp_path / "store.db"
        assert run("replay", "--db", str(database), "--actor", "a\tb", str(EXAMPLE)) == (2, "")
        assert one_line_error(capsys).startswith(
            "customer-session: error: --actor: must be None or a name of 1 to 200"
        )
        assert not database.exists()

    def test_actor_without_db_is_a_usage_error(self, capsys):
        """--actor without --db is refused: a replay in memory keeps no journal to record it."""
        assert run("replay", "--actor", "me", str(EXAMPLE)) == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: --actor names who wrote a store's journal entries: "
            "give --db\n"
        )

    def test_crlf_log_replays_like_lf(self, tmp_path):
        """A log with CRLF line endings gives the same report as with LF."""
        lf, crlf = tmp_path / "lf.jsonl", tmp_path / "crlf.jsonl"
        lf.write_bytes(encoded_log(b"A") + b"not json\n")
        crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
        assert run("replay", str(crlf)) == run("replay", str(lf))

    def test_log_with_a_byte_order_mark_replays_like_one_without(self, tmp_path):
        """A UTF-8 byte order mark before the first line is ignored, not a malformed line."""
        plain, marked = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
        plain.write_bytes(encoded_log(b"A"))
        marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
        expected = run("replay", str(plain))
        assert expected[0] == 0
        assert run("replay", str(marked)) == expected

    def test_a_second_byte_order_mark_refuses_the_first_line_saying_what_it_is(self, tmp_path):
        """Of two byte order marks before the first line, the second refuses it, in plain words."""
        marked = tmp_path / "bom.jsonl"
        marked.write_bytes(b"\xef\xbb\xbf" * 2 + encoded_log(b"A"))
        status, text = run("replay", "--json", str(marked))
        refused = json.loads(text)["refused"][0]  # then the close of the session it made
        assert status == 1
        assert refused["line"] == 1
        assert refused["reason"] == (
            "malformed JSON: a byte order mark (U+FEFF), which JSON allows only inside a "
            "string (column 1)"
        )

    def test_directory_is_one_line(self, capsys, tmp_path):
        """A directory instead of a log is a one-line error with exit status 2."""
        assert run("replay", str(tmp_path))[0] == 2
        assert "is a directory" in one_line_error(capsys)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path) -> str:
    """A store with sessions, journal entries and outbox rows: an SQLite file or a PG schema.

    ``order-42`` was created and closed by ``nightly-import``; ``order-43`` was created,
    closed (outbox row 1, ``notify``, failed once) and cancelled (outbox row 2).
    """
    if request.param == "sqlite":
        database = str(tmp_path / "store.db")
    else:
        database = request.getfixturevalue("pg_server").fresh_schema()
    with open_store(database, actor="nightly-import") as store:
        store.create(CustomerSession(integration_id="order-42"))
        store.update("order-42", lambda session: session.close(), key="evt-1")
        store.on_commit("notify")  # from here on: order-43's transitions only
        store.create(CustomerSession(integration_id="order-43"), actor="shop")
        store.update("order-43", lambda session: session.close())
        store.update("order-43", lambda session: session.cancel())

        def refuse(effect):
            raise ConnectionError("receiver down")

        with pytest.raises(ConnectionError):
            store.deliver(refuse, limit=1)
    return database


class TestReplayStoreErrors:
    def test_a_store_error_names_the_database(self, capsys, db):
        """A store failing during replay --db names its database, either backend, exit 2."""
        if db.startswith("postgresql://"):
            db = db.replace("postgres@", "postgres:s3cret-pw@")  # trust: any password is let in
            with psycopg_connection(db) as connection:
                connection.execute("ALTER TABLE customer_session_keys RENAME TO gone")
            said = "store: PostgreSQL error in 'user=postgres password=*** "
            schema = db.rpartition("%3D")[2]
        else:
            with sqlite3.connect(db) as connection:
                connection.execute("ALTER TABLE customer_session_keys RENAME TO gone")
            connection.close()
            said = f"store: SQLite error in '{db}': "
            schema = ""
        assert run("replay", "--db", db, "--no-effects", str(EXAMPLE)) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith(f"customer-session: error: {said}"), error
        assert schema in error
        assert "customer_session_keys" in error
        assert "s3cret-pw" not in error


def rows_of(database: str, *, discarded: bool = False):
    with open_store(database) as store:
        return store.discarded() if discarded else store.pending()


class TestShow:
    def test_prints_the_stored_document_with_history(self, db):
        """show ID prints the session's wire document with its history, as wire writes it."""
        with open_store(db) as store:
            expected = wire.to_json(store.get("order-42"), include_history=True, indent=2)
        assert run("show", "order-42", "--db", db) == (0, expected + "\n")
        assert json.loads(expected)["x-customerSession"]["history"][0]["trigger"] == "close"

    def test_characters_that_act_on_a_terminal_are_printed_escaped(self, tmp_path):
        """show escapes C1 controls and bidi overrides as JSON does; the document stays the same."""
        db = str(tmp_path / "odd.db")
        # \x9b is a CSI to an 8-bit terminal; \u202e reverses what follows; the
        # private-use plane character above the BMP is escaped as a surrogate pair.
        odd = "sku\x9b2J\u202eevil\U000e0041 caf\u00e9"
        session = CustomerSession(
            integration_id="order-odd", cart_items=(CartItem(sku=odd, quantity=1, price=1),)
        )
        with open_store(db) as store:
            store.create(session)
        code, out = run("show", "order-odd", "--db", db)
        assert code == 0
        assert all(c.isprintable() or c == "\n" for c in out)
        assert "\\u009b" in out
        assert "\\u202e" in out
        assert "\\udb40\\udc41" in out
        assert "caf\u00e9" in out  # printable text is left as it is
        assert json.loads(out) == json.loads(wire.to_json(session, include_history=True))

    def test_an_unknown_session_exits_1_naming_it(self, capsys, db):
        """show of a session the store does not hold is one error line naming it, exit 1."""
        assert run("show", "order-99", "--db", db) == (1, "")
        assert one_line_error(capsys) == (
            "customer-session: error: session 'order-99' is not in the store\n"
        )

    def test_a_missing_database_file_is_refused_and_not_created(self, capsys, tmp_path):
        """show on a path that does not exist is an error, exit 2, and leaves no file behind."""
        typo = tmp_path / "stroe.db"
        assert run("show", "order-42", "--db", str(typo)) == (2, "")
        assert one_line_error(capsys) == f"customer-session: error: {typo}: no such file\n"
        assert list(tmp_path.iterdir()) == []

    def test_an_unreachable_url_is_one_line(self, capsys):
        """show on a PostgreSQL URL nobody listens on is one error line, exit 2."""
        assert run("show", "order-42", "--db", "postgresql://127.0.0.1:1/orders") == (2, "")
        assert "cannot connect to PostgreSQL" in one_line_error(capsys)

    def test_a_server_that_never_answers_is_one_line_in_time(
        self, capsys, monkeypatch, silent_server
    ):
        """show on a URL whose server never answers gives up after connect_timeout, exit 2."""
        monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")  # the default timeout waits 30 seconds
        url = f"postgresql://postgres:s3cret@127.0.0.1:{silent_server}/orders"
        assert run("show", "order-42", "--db", url) == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: cannot connect to PostgreSQL (user=postgres "
            f"password=*** dbname=orders host=127.0.0.1 port={silent_server}): no answer "
            "from the server within 2 seconds (PGCONNECT_TIMEOUT=2): is the server up, "
            "and reachable at that host and port?\n"
        )

    def test_a_bad_libpq_option_in_the_url_is_one_line(self, capsys):
        """A --db URL whose numeric libpq option is no number is one --db error line."""
        url = "postgresql://127.0.0.1:1/orders?connect_timeout=abc"
        assert run("show", "order-42", "--db", url) == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: --db: is not a valid connection string or URL: "
            "invalid connect_timeout 'abc': libpq takes a number of seconds\n"
        )

    def test_a_bad_libpq_environment_variable_is_one_line(self, capsys, monkeypatch):
        """A bad PGPORT is one --db error line naming the variable and its value."""
        monkeypatch.setenv("PGPORT", "abc")
        assert run("show", "order-42", "--db", "postgresql://127.0.0.1/orders") == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: --db: the environment variable PGPORT='abc', libpq's "
            "port where the connection string gives none, is invalid: "
            "a port is a number from 1 to 65535\n"
        )

    def test_db_is_required(self, capsys):
        """show without --db is a usage error, exit 2."""
        assert run("show", "order-42") == (2, "")
        assert "the following arguments are required: --db" in one_line_error(capsys)

    def test_reopen_loads_a_session_of_the_reopen_table(self, tmp_path):
        """show --reopen prints a session whose history holds a reopen."""
        path = tmp_path / "store.db"
        with open_store(path, session_class=ReopenableCustomerSession) as store:
            store.create(ReopenableCustomerSession(integration_id="order-42"))
            store.update("order-42", lambda session: session.close())
            store.update("order-42", lambda session: session.reopen())
            expected = wire.to_json(store.get("order-42"), include_history=True, indent=2)
        assert run("show", "order-42", "--reopen", "--db", str(path)) == (0, expected + "\n")

    def test_a_session_of_the_reopen_table_without_reopen_names_this_commands_option(
        self, capsys, tmp_path
    ):
        """show without --reopen of a session that reopened is exit 2, advising show's --reopen."""
        path = tmp_path / "store.db"
        with open_store(path, session_class=ReopenableCustomerSession) as store:
            store.create(ReopenableCustomerSession(integration_id="order-42"))
            store.update("order-42", lambda session: session.close())
            store.update("order-42", lambda session: session.reopen())
        assert run("show", "order-42", "--db", str(path)) == (2, "")
        error = one_line_error(capsys)
        assert "replay" not in error
        assert error.endswith(
            "open the store with the session class that wrote it "
            "(ReopenableCustomerSession; on the command line: --reopen)\n"
        )

    def test_a_file_uri_is_opened_as_given(self, tmp_path):
        """show --db file:URI reads the store the URI names (it is not taken for a file name)."""
        path = tmp_path / "store.db"
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42"))
        status, text = run("show", "order-42", "--db", f"{path.as_uri()}?mode=ro")
        assert (status, json.loads(text)["integrationId"]) == (0, "order-42")

    def test_memory_is_an_empty_database_not_a_missing_file(self, capsys):
        """show --db :memory: opens an empty database, not a file: no session store, exit 2."""
        assert run("show", "order-42", "--db", ":memory:") == (2, "")
        assert one_line_error(capsys).startswith(
            "customer-session: error: :memory: holds no session store"
        )


class TestHistory:
    def test_lists_every_entry_with_its_transitions(self, db):
        """history ID prints each entry's version, time, kind, operation, key and actor."""
        with open_store(db) as store:
            entries = store.history("order-42")
        times = [entry.to_dict()["recordedAt"] for entry in entries]
        closed_at = entries[1].to_dict()["records"][0]["timestamp"]
        assert run("history", "order-42", "--db", db) == (
            0,
            (
                "session 'order-42': 2 journal entries\n"
                f"version 1 at {times[0]}: created (create), by 'nightly-import'\n"
                f"version 2 at {times[1]}: transition (close), key 'evt-1', by 'nightly-import'\n"
                f"  close: open -> closed at {closed_at}\n"
            ),
        )

    def test_an_operation_with_control_characters_is_printed_escaped(self, tmp_path):
        """An operation label holding a terminal escape sequence is printed escaped, not raw."""
        path = tmp_path / "store.db"
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42"))
            store.update("order-42", lambda session: session.close(), operation="x\x1b]0;y\x07")
        status, text = run("history", "order-42", "--db", str(path))
        assert status == 0
        assert "transition (x\\x1b]0;y\\x07)" in text
        assert "\x1b" not in text

    def test_reopen_lists_the_journal_of_a_session_that_reopened(self, capsys, tmp_path):
        """history --reopen lists a reopen; without it, exit 2 advising history's --reopen."""
        path = tmp_path / "store.db"
        with open_store(path, session_class=ReopenableCustomerSession) as store:
            store.create(ReopenableCustomerSession(integration_id="order-42"))
            store.update("order-42", lambda session: session.close())
            store.update("order-42", lambda session: session.reopen())
        status, text = run("history", "order-42", "--reopen", "--db", str(path))
        assert status == 0
        assert "  reopen: closed -> open at " in text
        assert run("history", "order-42", "--db", str(path)) == (2, "")
        assert one_line_error(capsys).endswith(
            "open the store with the session class that wrote it "
            "(ReopenableCustomerSession; on the command line: --reopen)\n"
        )

    def test_json_is_one_entry_a_line(self, db):
        """history --json prints one JSON object a line: each entry's to_dict()."""
        with open_store(db) as store:
            expected = [entry.to_dict() for entry in store.history("order-43")]
        status, text = run("history", "order-43", "--db", db, "--json")
        assert status == 0
        assert [json.loads(line) for line in text.splitlines()] == expected
        assert [entry["actor"] for entry in expected] == [
            "shop",
            "nightly-import",
            "nightly-import",
        ]

    def test_an_unknown_session_exits_1_naming_it(self, capsys, db):
        """history of a session the store does not hold is an error naming it, exit 1."""
        assert run("history", "order-99", "--db", db, "--json") == (1, "")
        assert "session 'order-99' is not in the store" in one_line_error(capsys)

    def test_every_transition_of_an_entry_is_listed_with_what_it_returned(self, tmp_path):
        """history lists each transition of a commit, and each returned item with its SKU."""
        path = tmp_path / "store.db"
        cart = [CartItem(sku="SOCK", quantity=2), CartItem(sku="HAT", quantity=1)]
        returned = [
            ReturnedItem(position=0, quantity=1, sku="SOCK"),
            ReturnedItem(position=1, quantity=1),
        ]
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42", cart_items=cart))
            store.update(
                "order-42", lambda session: (session.close(), session.return_items(returned))
            )
            (close, give_back) = store.history("order-42")[1].to_dict()["records"]
        status, text = run("history", "order-42", "--db", str(path))
        assert status == 0
        assert text.splitlines()[-2:] == [
            f"  close: open -> closed at {close['timestamp']}",
            (
                f"  return_items: closed -> partially_returned at {give_back['timestamp']}, "
                "returned 1 of item 0 ('SOCK'), 1 of item 1"
            ),
        ]

    def test_a_stored_session_without_journal_entries_has_an_empty_history(self, tmp_path):
        """history of a stored session whose journal rows are gone lists none, exit 0."""
        path = tmp_path / "store.db"
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42"))
        connection = sqlite3.connect(path)
        connection.execute("DELETE FROM customer_session_journal")
        connection.commit()
        connection.close()
        assert run("history", "order-42", "--db", str(path)) == (
            0,
            "session 'order-42': 0 journal entries\n",
        )

    def test_json_lines_are_compact(self, db):
        """history --json writes each entry as compact JSON: no space after , or :."""
        with open_store(db) as store:
            expected = [entry.to_dict() for entry in store.history("order-42")]
        status, text = run("history", "order-42", "--db", db, "--json")
        assert (status, text.splitlines()) == (
            0,
            [json.dumps(entry, separators=(",", ":")) for entry in expected],
        )

    def test_a_missing_database_file_is_not_created(self, capsys, tmp_path):
        """history on a path that does not exist is an error, exit 2, and creates nothing."""
        assert run("history", "order-42", "--db", str(tmp_path / "nope.db"))[0] == 2
        assert "nope.db: no such file" in one_line_error(capsys)
        assert list(tmp_path.iterdir()) == []


class TestOutbox:
    def test_list_shows_the_pending_rows(self, db):
        """outbox list prints each pending row: sequence, effect, session, attempts, error, time."""
        first, second = rows_of(db)
        created = [row.to_dict()["createdAt"] for row in (first, second)]
        status, text = run("outbox", "list", "--db", db)
        assert status == 0
        assert text.splitlines() == [
            "2 pending rows",
            (
                f"row {first.sequence}: 'notify' for session 'order-43' (version 2, close: open -> "
                f"closed at {first.to_dict()['record']['timestamp']}), 1 failed attempt, "
                f"created {created[0]}"
            ),
            "  last error: 'ConnectionError: receiver down'",
            (
                f"row {second.sequence}: 'notify' for session 'order-43' (version 3, cancel: "
                f"closed -> cancelled at {second.to_dict()['record']['timestamp']}), "
                "0 failed attempts, "
                f"created {created[1]}"
            ),
        ]

    @pytest.mark.parametrize("kind", ["pending", "discarded"])
    @pytest.mark.parametrize(
        ("limit", "heading"),
        [
            ((), "5 {kind} rows"),
            (("--limit", "3"), "the first 3 {kind} rows (--limit 3; more are {kind})"),
            (("--limit", "5"), "5 {kind} rows"),
        ],
    )
    def test_list_reads_the_rows_a_page_at_a_time(
        self, monkeypatch, tmp_path, kind, limit, heading
    ):
        """outbox list asks the store for pages of rows, never all at once; the output is whole."""
        database = str(tmp_path / "store.db")
        with open_store(database) as store:
            store.on_commit("notify")
            for n in range(5):
                store.create(CustomerSession(integration_id=f"order-{n}"))
                store.update(f"order-{n}", lambda session: session.close())
            if kind == "discarded":
                for row in store.pending():
                    store.discard(row.sequence, reason="gave up")
            rows = store.discarded() if kind == "discarded" else store.pending()
        asked: list[int | None] = []
        listing = getattr(SQLiteStore, kind)

        def paged(self, *, limit=None, after=None):
            asked.append(limit)
            return listing(self, limit=limit, after=after)

        monkeypatch.setattr(cli, "_PAGE", 2)
        monkeypatch.setattr(SQLiteStore, kind, paged)
        flag = ("--discarded",) if kind == "discarded" else ()
        status, text = run("outbox", "list", *flag, *limit, "--db", database)
        shown = 3 if "3" in limit else 5
        assert status == 0
        assert asked == ([2, 1] if shown == 3 else [2, 2, 1])
        assert text.splitlines()[0] == heading.format(kind=kind)
        listed = [line.split(":")[0] for line in text.splitlines() if line.startswith("row ")]
        assert listed == [f"row {row.sequence}" for row in rows[:shown]]
        status, text = run("outbox", "list", *flag, *limit, "--json", "--db", database)
        assert [json.loads(line)["sequence"] for line in text.splitlines()] == [
            row.sequence for row in rows[:shown]
        ]

    def test_a_row_discarded_while_the_list_prints_is_left_out(self, monkeypatch, db):
        """A row that leaves the pending ones between pages is not listed; the list ends short."""
        first, second = rows_of(db)
        with open_store(db) as store:
            backend = type(store)
        listing = backend.pending

        def paged(self, *, limit=None, after=None):
            if after is not None:  # another process gives up on the next row meanwhile
                with open_store(db) as other:
                    other.discard(second.sequence, reason="gave up")
            return listing(self, limit=limit, after=after)

        monkeypatch.setattr(cli, "_PAGE", 1)
        monkeypatch.setattr(backend, "pending", paged)
        status, text = run("outbox", "list", "--db", db)
        assert status == 0
        lines = text.splitlines()
        assert lines[0] == "2 pending rows"
        listed = [line.split(":")[0] for line in lines if line.startswith("row ")]
        assert listed == [f"row {first.sequence}"]

    def test_list_json_is_one_row_a_line(self, db):
        """outbox list --json prints one JSON object a line: each row's to_dict()."""
        status, text = run("outbox", "list", "--json", "--db", db)
        assert status == 0
        assert [json.loads(line) for line in text.splitlines()] == [
            row.to_dict() for row in rows_of(db)
        ]

    def test_limit_lists_the_first_rows_only(self, db):
        """outbox list --limit N lists at most N rows, the first ones."""
        status, text = run("outbox", "list", "--json", "--limit", "1", "--db", db)
        assert status == 0
        assert [json.loads(line)["sequence"] for line in text.splitlines()] == [
            rows_of(db)[0].sequence
        ]

    def test_a_limited_list_does_not_pass_for_every_pending_row(self, db):
        """outbox list --limit N (text) that leaves rows out says so, not that N are pending."""
        first, second = rows_of(db)
        status, text = run("outbox", "list", "--limit", "1", "--db", db)
        assert status == 0
        assert text.splitlines()[0] == "the first 1 pending row (--limit 1; more are pending)"
        assert f"row {first.sequence}:" in text
        assert f"row {second.sequence}:" not in text
        assert run("outbox", "list", "--limit", "2", "--db", db)[1].splitlines()[0] == (
            "2 pending rows"
        )

    @pytest.mark.parametrize("value", ["0", "-1", "many"])
    def test_a_bad_limit_is_a_usage_error(self, capsys, tmp_path, value):
        """A --limit that is not an integer >= 1 is a usage error, before any store is opened."""
        database = tmp_path / "store.db"
        assert run("outbox", "list", "--limit", value, "--db", str(database)) == (2, "")
        assert f"must be an integer >= 1, got '{value}'" in one_line_error(capsys)
        assert not database.exists()

    def test_a_limit_past_any_count_is_a_usage_error(self, capsys, tmp_path):
        """--limit 2**63 (more than any store counts) is refused, not taken for "all"."""
        database = tmp_path / "store.db"
        assert run("outbox", "list", "--limit", str(2**63), "--db", str(database)) == (2, "")
        assert one_line_error(capsys).endswith(
            f"argument --limit: must be an integer from 1 to 2**63 - 1, got '{2**63}'\n"
        )
        assert not database.exists()

    def test_discard_gives_up_on_the_row_and_prints_it(self, db):
        """outbox discard SEQUENCE --reason marks the row discarded and prints it so."""
        poison = rows_of(db)[0]
        argv = ("outbox", "discard", str(poison.sequence), "--reason", "ticket 881", "--db", db)
        status, text = run(*argv)
        (discarded,) = rows_of(db, discarded=True)
        assert status == 0
        assert text.splitlines()[1:] == [
            "  last error: 'ConnectionError: receiver down'",
            f"  discarded at {discarded.to_dict()['discardedAt']}: 'ticket 881'",
        ]
        assert (discarded.sequence, discarded.discard_reason) == (poison.sequence, "ticket 881")
        assert [row.sequence for row in rows_of(db)] == [poison.sequence + 1]

    def test_discarded_lists_the_discarded_rows_with_reason(self, db):
        """outbox list --discarded --json lists the discarded rows with their reason and time."""
        sequence = rows_of(db)[1].sequence
        assert run("outbox", "discard", str(sequence), "--reason", "dup", "--db", db)[0] == 0
        status, text = run("outbox", "list", "--discarded", "--json", "--db", db)
        (row,) = [json.loads(line) for line in text.splitlines()]
        assert status == 0
        assert (row["sequence"], row["discardReason"]) == (sequence, "dup")
        assert row["discardedAt"].endswith("Z")

    def test_discarded_text_counts_discarded_rows(self, db):
        """outbox list --discarded (text) heads its list with the count of discarded rows."""
        sequence = rows_of(db)[0].sequence
        assert run("outbox", "discard", str(sequence), "--reason", "dup", "--db", db)[0] == 0
        status, text = run("outbox", "list", "--discarded", "--db", db)
        assert (status, text.splitlines()[0]) == (0, "1 discarded row")
        assert text.splitlines()[-1].startswith("  discarded at ")

    def test_limit_applies_to_the_discarded_rows(self, db):
        """outbox list --discarded --limit N lists at most N discarded rows, the first ones."""
        first, second = rows_of(db)
        for row in (first, second):
            argv = ("outbox", "discard", str(row.sequence), "--reason", "dup", "--db", db)
            assert run(*argv)[0] == 0
        status, text = run("outbox", "list", "--discarded", "--limit", "1", "--json", "--db", db)
        assert status == 0
        assert [json.loads(line)["sequence"] for line in text.splitlines()] == [first.sequence]

    def test_a_limited_discarded_list_says_it_leaves_rows_out(self, db):
        """outbox list --discarded --limit N (text) that leaves rows out says so."""
        for row in rows_of(db):
            argv = ("outbox", "discard", str(row.sequence), "--reason", "dup", "--db", db)
            assert run(*argv)[0] == 0
        status, text = run("outbox", "list", "--discarded", "--limit", "1", "--db", db)
        assert (status, text.splitlines()[0]) == (
            0,
            "the first 1 discarded row (--limit 1; more are discarded)",
        )

    def test_an_action_is_required(self, capsys):
        """outbox without list or discard is a usage error, exit 2."""
        assert run("outbox") == (2, "")
        assert "the following arguments are required: action" in one_line_error(capsys)

    def test_discarding_a_row_that_is_not_pending_exits_1_naming_it(self, capsys, db):
        """Discarding a row discarded already, or never written, is an error naming it, exit 1."""
        sequence = rows_of(db)[0].sequence
        assert run("outbox", "discard", str(sequence), "--reason", "x", "--db", db)[0] == 0
        capsys.readouterr()
        assert run("outbox", "discard", str(sequence), "--reason", "x", "--db", db) == (1, "")
        assert f"outbox row {sequence} was already discarded" in one_line_error(capsys)
        assert run("outbox", "discard", "999", "--reason", "x", "--db", db) == (1, "")
        assert "outbox row 999 is not in the outbox" in one_line_error(capsys)

    @pytest.mark.parametrize("reason", ["", "   ", "a\nb"])
    def test_a_bad_reason_is_a_usage_error_and_changes_nothing(self, capsys, db, reason):
        """A --reason the store refuses is one error line, exit 2, and the row stays pending."""
        before = rows_of(db)
        argv = ("outbox", "discard", str(before[0].sequence), "--reason", reason, "--db", db)
        assert run(*argv) == (2, "")
        assert one_line_error(capsys).startswith(
            "customer-session: error: --reason: must be a text of 1 to 1000 characters"
        )
        assert rows_of(db) == before

    @pytest.mark.parametrize("value", ["0", "x"])
    def test_a_bad_sequence_is_a_usage_error(self, capsys, tmp_path, value):
        """A SEQUENCE that is not an integer >= 1 is a usage error, exit 2."""
        argv = ("outbox", "discard", value, "--reason", "r", "--db", str(tmp_path / "s.db"))
        assert run(*argv) == (2, "")
        assert f"must be an integer >= 1, got '{value}'" in one_line_error(capsys)

    @pytest.mark.parametrize("action", [("list",), ("discard", "1", "--reason", "r")])
    def test_a_missing_database_file_is_not_created(self, capsys, tmp_path, action):
        """outbox list and discard on a path that does not exist fail, exit 2, creating nothing."""
        assert run("outbox", *action, "--db", str(tmp_path / "nope.db")) == (2, "")
        assert "nope.db: no such file" in one_line_error(capsys)
        assert list(tmp_path.iterdir()) == []


def effects_log(path: Path) -> str:
    """:func:`encoded_log` (s1 and s2 created, s1 closed), then s2 cancelled: the log's path."""
    cancel = {"at": "2026-03-02T11:00:00Z", "session": "s2", "op": "update"}
    cancel["customerSession"] = {"state": "cancelled"}
    path.write_bytes(encoded_log(b"A") + json.dumps(cancel).encode() + b"\n")
    return str(path)


def written_rows(database: str) -> list[tuple[str, str, str]]:
    """The pending outbox rows of the log's sessions: effect, session, trigger."""
    return [
        (row.name, row.integration_id, str(row.record.trigger))
        for row in rows_of(database)
        if row.integration_id in {"s1", "s2"}
    ]


class TestReplayEffects:
    """replay --db registers durable effects (--effect), and refuses to forget the outbox's."""

    def test_effects_write_outbox_rows_for_the_matching_transitions_only(self, db, tmp_path):
        """Each --effect NAME:TRIGGER writes a row for each transition TRIGGER fires, no other."""
        log = effects_log(tmp_path / "log.jsonl")
        argv = ("replay", "--db", db, "--effect", "notify:close", "--effect", "erp:cancel", log)
        status, text = run(*argv)
        assert status == 0
        assert text.splitlines()[1] == "2 outbox rows written"
        assert written_rows(db) == [("notify", "s1", "close"), ("erp", "s2", "cancel")]

    def test_a_star_writes_for_every_transition_and_a_name_may_hold_colons(self, db, tmp_path):
        """--effect NAME:* is every transition; the value is split at its last colon."""
        log = effects_log(tmp_path / "log.jsonl")
        status, text = run(
            "replay", "--json", "--db", db, "--effect", "notify:*", "--effect", "talon:one:*", log
        )
        assert status == 0
        assert json.loads(text)["outboxRows"] == 4
        assert written_rows(db) == [
            ("notify", "s1", "close"),
            ("talon:one", "s1", "close"),
            ("notify", "s2", "cancel"),
            ("talon:one", "s2", "cancel"),
        ]

    def test_a_resumed_run_writes_no_outbox_row_twice(self, db, tmp_path):
        """A run over a log an earlier run partly applied writes the rows of the new lines only."""
        log = tmp_path / "log.jsonl"
        log.write_bytes(encoded_log(b"A"))
        effect = ("--effect", "notify:*")
        status, text = run("replay", "--json", "--db", db, *effect, str(log))
        assert (status, json.loads(text)["outboxRows"]) == (0, 1)
        status, text = run("replay", "--json", "--db", db, *effect, effects_log(log))
        assert (status, json.loads(text)["skipped"], json.loads(text)["outboxRows"]) == (0, 3, 1)
        status, text = run("replay", "--json", "--db", db, *effect, str(log))
        assert (status, json.loads(text)["outboxRows"]) == (0, 0)
        assert written_rows(db) == [("notify", "s1", "close"), ("notify", "s2", "cancel")]

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("notify", "give NAME:TRIGGER, TRIGGER one of close, cancel, return_items, or * for"),
            (":close", "a durable effect needs a name of 1 to 200 characters, not only"),
            ("no\x00tify:close", "without control characters or lone surrogates (NUL, a"),
            (f"{'x' * 201}:close", "a durable effect needs a name of 1 to 200 characters"),
            ("notify:refund", "unknown trigger 'refund'; give one of close, cancel, return_items,"),
            ("notify:", "unknown trigger ''; give one of close, cancel, return_items, or * for"),
            ("notify:reopen", "or * for every transition (reopen needs --reopen)"),
        ],
    )
    def test_a_bad_effect_is_a_usage_error_naming_it(self, capsys, tmp_path, value, why):
        """A refused --effect is one error line naming it and its value, exit 2, no file made."""
        database = tmp_path / "store.db"
        argv = ("replay", "--db", str(database), "--effect", "erp:*", "--effect", value)
        assert run(*argv, str(EXAMPLE)) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith(f"customer-session: error: --effect {value!r}: ")
        assert why in error
        assert not database.exists()

    def test_an_effect_given_twice_is_a_usage_error(self, capsys, tmp_path):
        """Two --effect of one name (whatever their triggers) are refused, as on_commit refuses."""
        database = tmp_path / "store.db"
        argv = ("--effect", "erp:close", "--effect", "erp:cancel", str(EXAMPLE))
        assert run("replay", "--db", str(database), *argv) == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: --effect 'erp:cancel': a durable effect named 'erp' is "
            "already registered\n"
        )
        assert not database.exists()

    def test_reopen_is_a_trigger_with_reopen(self, tmp_path):
        """With --reopen, --effect NAME:reopen writes a row for each reopen."""
        log = tmp_path / "log.jsonl"
        reopen = {"at": "2026-03-02T12:00:00Z", "session": "s1", "op": "reopen"}
        log.write_bytes(encoded_log(b"A") + json.dumps(reopen).encode() + b"\n")
        database = str(tmp_path / "store.db")
        argv = ("--reopen", "--effect", "notify:reopen", str(log))
        assert run("replay", "--json", "--db", database, *argv)[0] == 0
        with open_store(database, session_class=ReopenableCustomerSession) as store:
            assert [str(row.record.trigger) for row in store.pending()] == ["reopen"]

    @pytest.mark.parametrize(
        ("argv", "error"),
        [
            (
                ("--effect", "erp:close"),
                "--effect registers a durable effect on a store's outbox: give --db",
            ),
            (("--no-effects",), "--no-effects is about a store's outbox: give --db"),
            (
                ("--db", "store.db", "--no-effects", "--effect", "erp:close"),
                (
                    "--no-effects applies the log without registering durable effects: "
                    "give it without --effect"
                ),
            ),
        ],
    )
    def test_options_that_do_not_go_together_are_usage_errors(
        self, capsys, tmp_path, monkeypatch, argv, error
    ):
        """--effect or --no-effects without --db, and the two together, are refused, exit 2."""
        monkeypatch.chdir(tmp_path)
        assert run("replay", *argv, str(EXAMPLE)) == (2, "")
        assert one_line_error(capsys) == f"customer-session: error: {error}\n"
        assert list(tmp_path.iterdir()) == []

    def test_effects_of_the_outbox_left_out_refuse_the_replay_with_nothing_applied(
        self, capsys, db, tmp_path
    ):
        """An outbox effect no --effect registers stops replay --db before its first line."""
        log = effects_log(tmp_path / "log.jsonl")
        with open_store(db) as store:
            before = (store.counts(), store.pending(), store.discarded())
        for effects in ((), ("--effect", "erp:*")):
            assert run("replay", "--db", db, *effects, log) == (2, "")
            assert one_line_error(capsys) == (
                "customer-session: error: the store's outbox holds rows of 1 durable effect "
                "that no --effect registers: 'notify'; the replay's transitions would write "
                "none of theirs. Pass --effect NAME:TRIGGER for each, as the application "
                "registers them, or --no-effects to apply the log without them; nothing was "
                "applied\n"
            )
        with open_store(db) as store:
            assert (store.counts(), store.pending(), store.discarded()) == before
            assert not store.exists("s1")

    def test_the_refusal_names_every_effect_left_out_and_only_those(self, capsys, db, tmp_path):
        """Of the outbox's effects, the refusal lists those no --effect registers, sorted."""
        with open_store(db) as store:
            store.on_commit("Zeta")
            store.on_commit("erp")
            store.update("order-42", lambda session: session.cancel())
        assert run("replay", "--db", db, "--effect", "notify:*", str(EXAMPLE)) == (2, "")
        assert "2 durable effects that no --effect registers: 'Zeta', 'erp';" in (
            one_line_error(capsys)
        )

    def test_no_effects_applies_the_log_writing_no_outbox_row(self, db, tmp_path):
        """--no-effects lets the replay through on purpose; it writes no outbox row."""
        log = effects_log(tmp_path / "log.jsonl")
        status, text = run("replay", "--db", db, "--no-effects", log)
        assert status == 0
        assert text.splitlines()[:2] == [
            "4 lines: 4 events applied, 0 refused",
            "0 outbox rows written",
        ]
        assert written_rows(db) == []
        with open_store(db) as store:
            assert store.get("s2").state is State.CANCELLED

    def test_a_new_store_needs_neither_option(self, tmp_path):
        """A new database's outbox is empty: the replay runs without --effect or --no-effects."""
        status, text = run("replay", "--json", "--db", str(tmp_path / "new.db"), str(EXAMPLE))
        assert (status, json.loads(text)["outboxRows"]) == (1, 0)

    def test_a_replay_in_memory_reports_no_outbox_rows(self):
        """Without --db there is no outbox: neither report counts outbox rows."""
        assert "outboxRows" not in json.loads(run("replay", "--json", str(EXAMPLE))[1])
        assert "outbox" not in run("replay", str(EXAMPLE))[1]


# Each command that reads a store (outbox discard writes a row, but creates nothing).
READ_COMMANDS = [
    pytest.param(("show", "order-42"), id="show"),
    pytest.param(("history", "order-42"), id="history"),
    pytest.param(("outbox", "list"), id="outbox list"),
    pytest.param(("outbox", "discard", "1", "--reason", "r"), id="outbox discard"),
]


def sqlite_tables(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return [name for (name,) in connection.execute("SELECT name FROM sqlite_master")]
    finally:
        connection.close()


class TestReadCommandsChangeNoDatabase:
    @pytest.mark.parametrize("command", READ_COMMANDS)
    def test_another_applications_sqlite_file_is_left_as_it_was(self, capsys, tmp_path, command):
        """A read command on an SQLite file that holds no store fails, exit 2, adding no table."""
        other = tmp_path / "shop.db"
        connection = sqlite3.connect(other)
        connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        connection.commit()
        connection.close()
        before = other.read_bytes()
        assert run(*command, "--db", str(other)) == (2, "")
        assert one_line_error(capsys) == (
            f"customer-session: error: {other} holds no session store (no customer_session "
            "tables); `customer-session migrate` creates one\n"
        )
        assert sqlite_tables(other) == ["orders"]
        assert other.read_bytes() == before  # not even put in WAL mode
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]

    @pytest.mark.postgres
    @pytest.mark.parametrize("command", READ_COMMANDS)
    def test_an_empty_postgresql_schema_stays_empty(self, capsys, pg_server, command):
        """A read command on a PostgreSQL schema without a store fails, exit 2, creating nothing."""
        database = pg_server.fresh_schema()
        assert run(*command, "--db", database) == (2, "")
        error = one_line_error(capsys)
        assert "holds no session store (no customer_session tables)" in error
        assert "(schema 's_" in error
        with psycopg_connection(database) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        assert tables == []

    @pytest.mark.parametrize("command", READ_COMMANDS)
    def test_an_older_store_is_not_migrated(self, capsys, tmp_path, command):
        """A read command on a store of an older schema version fails, exit 2, migrating nothing."""
        path = tmp_path / "store.db"
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42"))
        connection = sqlite3.connect(path)
        connection.execute("UPDATE customer_session_schema SET version = 3")
        connection.commit()
        connection.close()
        assert run(*command, "--db", str(path)) == (2, "")
        assert one_line_error(capsys) == (
            f"customer-session: error: {path} has customer-session schema version 3, this "
            f"library needs {SCHEMA_VERSION}; `customer-session migrate` migrates it\n"
        )
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("SELECT version FROM customer_session_schema").fetchall() == [
                (3,)
            ]
        finally:
            connection.close()

    def test_replay_still_creates_its_store(self, tmp_path):
        """replay --db creates the store's schema in a new database, as before."""
        path = tmp_path / "store.db"
        status, _ = run("replay", str(EXAMPLE), "--db", str(path))
        assert status in {0, 1}  # 1: the example log holds refused lines, on purpose
        with open_store(path, migrate=False) as store:
            assert store.counts()


def version_3_store(path: Path) -> None:
    """An SQLite store as a library of schema version 3 left it, holding order-42."""
    with open_store(path) as store:
        store.create(CustomerSession(integration_id="order-42"))
    connection = sqlite3.connect(path)
    try:
        # What version 4 added: the journal's actor, the outbox's discards and effect
        # index, the sessions' (state, updated) index.
        for statement in (
            "ALTER TABLE customer_session_journal DROP COLUMN actor",
            "DROP INDEX customer_sessions_state_updated",
            "CREATE INDEX customer_sessions_state ON customer_sessions (state)",
            "DROP INDEX customer_session_outbox_discarded",
            "ALTER TABLE customer_session_outbox DROP COLUMN discarded_at",
            "ALTER TABLE customer_session_outbox DROP COLUMN discard_reason",
            "DROP INDEX customer_session_outbox_effect",
            "UPDATE customer_session_schema SET version = 3",
        ):
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


def schema_version(path: Path) -> list[tuple[int]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT version FROM customer_session_schema").fetchall()
    finally:
        connection.close()


# A process that runs `customer-session migrate --db DATABASE` once GO exists, so that
# two of them start together (their imports done).
MIGRATE_ON_GO = """
import os, sys, time
from customer_session.cli import main
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
sys.exit(main(["migrate", "--db", sys.argv[1]]))
"""


def migrate_on_go(database: str, go: Path) -> subprocess.Popen[str]:
    """Start a process that runs the migrate command on ``database`` once ``go`` exists."""
    return subprocess.Popen(
        [sys.executable, "-c", MIGRATE_ON_GO, database, str(go)],
        stdout=subprocess.PIPE,
        text=True,
    )


def said_by(processes: list[subprocess.Popen[str]]) -> list[str]:
    """What each process printed, sorted, once all of them ended with status 0."""
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        outputs.append(out)
    return sorted(outputs)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def newer_store(request, tmp_path) -> tuple[str, str, str]:
    """A store holding order-42 at schema version 99 (a newer library's), and its name.

    The ``--db`` argument (on PostgreSQL a URL with a password, which no message may
    show), then how an error's name of the database starts and ends (on PostgreSQL:
    its connection string, the password redacted, ..., its schema).
    """
    if request.param == "sqlite":
        database = str(tmp_path / "orders.db")
    else:
        # trust authentication: any password is let in
        database = request.getfixturevalue("pg_server").fresh_schema()
        database = database.replace("postgres@", "postgres:s3cret-pw@")
    with open_store(database) as store:
        store.create(CustomerSession(integration_id="order-42"))
    if request.param == "sqlite":
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            connection.execute("UPDATE customer_session_schema SET version = 99")
        return database, database, database
    with psycopg_connection(database) as connection:
        connection.execute("UPDATE customer_session_schema SET version = 99")
    schema = database.rpartition("%3D")[2]
    return database, "PostgreSQL database user=postgres password=*** ", f"(schema '{schema}')"


def stored_schema_version(database: str) -> list[tuple[int]]:
    """The schema version rows of an SQLite file or a PostgreSQL URL's schema."""
    if database.startswith("postgresql://"):
        with psycopg_connection(database) as connection:
            return connection.execute("SELECT version FROM customer_session_schema").fetchall()
    return schema_version(Path(database))


class TestMigrate:
    def test_a_missing_file_gets_a_new_store(self, tmp_path):
        """migrate creates a store in a new SQLite file and says so."""
        path = tmp_path / "orders.db"
        assert run("migrate", "--db", str(path)) == (
            0,
            f"created a session store (schema version {SCHEMA_VERSION})\n",
        )
        with open_store(path, migrate=False) as store:
            assert store.counts() == {}

    def test_an_older_store_is_migrated_and_then_read(self, tmp_path):
        """migrate takes a version 3 store to this version; the read commands then work."""
        path = tmp_path / "orders.db"
        version_3_store(path)
        assert run("migrate", "--db", str(path)) == (
            0,
            f"migrated the session store from schema version 3 to {SCHEMA_VERSION}\n",
        )
        assert schema_version(path) == [(SCHEMA_VERSION,)]
        status, shown = run("history", "order-42", "--db", str(path))
        assert status == 0
        assert shown.startswith("session 'order-42': 1 journal entry\n")

    def test_a_current_store_is_left_as_it_was(self, tmp_path):
        """migrate on a store at this version changes nothing and says it is current."""
        path = tmp_path / "orders.db"
        with open_store(path) as store:
            store.create(CustomerSession(integration_id="order-42"))
        before = path.read_bytes()
        assert run("migrate", "--db", str(path)) == (
            0,
            f"the session store is at schema version {SCHEMA_VERSION} already\n",
        )
        assert path.read_bytes() == before

    def test_a_newer_store_is_refused_and_left_as_it_was(self, capsys, newer_store):
        """migrate on a store of a newer library fails naming it first, exit 2, changing nothing."""
        database, starts, ends = newer_store
        assert run("migrate", "--db", database) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith(f"customer-session: error: {starts}"), error
        assert f"{ends} has customer-session schema version 99, " in error
        assert "s3cret-pw" not in error
        assert stored_schema_version(database) == [(99,)]

    @pytest.mark.parametrize("command", [["show", "order-42"], ["history", "order-42"]])
    def test_a_newer_store_is_named_by_a_read_command(self, capsys, newer_store, command):
        """A read command on a store of a newer library names the database first, exit 2."""
        database, starts, ends = newer_store
        assert run(command[0], "--db", database, *command[1:]) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith(f"customer-session: error: {starts}"), error
        assert f"{ends} has customer-session schema version 99, " in error
        assert "s3cret-pw" not in error

    def test_two_commands_at_once_on_a_new_sqlite_file_say_what_each_did(self, tmp_path):
        """Of two migrate commands started together on a new SQLite file, one says it created it."""
        path = tmp_path / "orders.db"
        go = tmp_path / "go"
        processes = [migrate_on_go(str(path), go) for _ in range(2)]
        go.touch()
        assert said_by(processes) == [
            f"created a session store (schema version {SCHEMA_VERSION})\n",
            f"the session store is at schema version {SCHEMA_VERSION} already\n",
        ]

    @pytest.mark.postgres
    def test_two_commands_waiting_on_one_postgresql_schema_say_what_each_did(
        self, pg_server, tmp_path
    ):
        """Two migrate commands that both found no store and waited: one says it created it."""
        database = pg_server.fresh_schema()
        go = tmp_path / "go"
        go.touch()
        with psycopg_connection(database) as holder, holder.transaction():
            # The lock a store migrates under: both commands wait for it, having read
            # that the schema holds no store.
            holder.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.schema'))")
            processes = [migrate_on_go(database, go) for _ in range(2)]
            wait_for_advisory_lock_waiters(holder, 2)
        assert said_by(processes) == [
            f"created a session store (schema version {SCHEMA_VERSION})\n",
            f"the session store is at schema version {SCHEMA_VERSION} already\n",
        ]

    @pytest.mark.postgres
    def test_an_empty_postgresql_schema_gets_a_store(self, pg_server):
        """migrate creates the store's tables in an empty PostgreSQL schema."""
        database = pg_server.fresh_schema()
        assert run("migrate", "--db", database) == (
            0,
            f"created a session store (schema version {SCHEMA_VERSION})\n",
        )
        assert run("outbox", "list", "--db", database) == (0, "0 pending rows\n")


def psycopg_connection(database: str):
    import psycopg  # noqa: PLC0415 - optional dependency

    return psycopg.connect(database, autocommit=True)


def wait_for_advisory_lock_waiters(watcher, count: int) -> None:
    """Wait (up to 60 s) until ``count`` connections wait for an advisory lock."""
    deadline = time.monotonic() + 60
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    while watcher.execute(query).fetchone()[0] < count:
        assert time.monotonic() < deadline, f"never {count} waiting for the lock"
        time.sleep(0.01)


COMMANDS = (
    "diagram",
    "validate",
    "replay",
    "migrate",
    "show",
    "history",
    "outbox list",
    "outbox discard",
)
CLI_DOCS = Path(__file__).parent.parent / "docs" / "cli.md"


def help_of(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """What ``customer-session COMMAND --help`` prints."""
    assert main([*command.split(), "--help"]) == 0
    return capsys.readouterr().out


def docs_section(command: str) -> tuple[str, str]:
    """The synopsis (first text block) and the prose of the command's section of cli.md."""
    text = CLI_DOCS.read_text(encoding="utf-8")
    section = text.split(f"## `{command}`\n", 1)[1].split("\n## ", 1)[0]
    _, synopsis, prose = section.split("```", 2)
    return synopsis.removeprefix("text\n").strip(), prose


class TestFileArguments:
    @pytest.mark.parametrize(
        "argv",
        [
            ("replay", ""),
            ("validate", ""),
            ("diagram", "--session", ""),
            ("diagram", "--format", "table", "-o", ""),
        ],
        ids=["replay", "validate", "diagram-session", "diagram-output"],
    )
    def test_an_empty_file_name_is_a_usage_error(self, capsys, argv):
        """An empty file name is refused as such, not read or written as the directory '.'."""
        assert run(*argv) == (2, "")
        assert one_line_error(capsys).endswith(": an empty file name\n")


def run_with_stdin(*argv: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    """Run the command in a new process with ``stdin`` as its standard input."""
    command = [sys.executable, "-m", "customer_session", *argv]
    done = subprocess.run(command, input=stdin, capture_output=True, check=False)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


class TestStandardInput:
    def test_validate_reads_a_document_from_standard_input(self):
        """validate - checks the document on standard input, named as standard input."""
        document = (DATA / "session_v1.json").read_bytes()
        done = run_with_stdin("validate", "-", stdin=b"\xef\xbb\xbf" + document)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == ("standard input: valid (session 'order-2026-000871', closed)\n")

    def test_validate_reports_an_invalid_document_on_standard_input(self):
        """An invalid document on standard input is listed with its problems; the status is 1."""
        done = run_with_stdin("validate", "-", stdin=b'{"integrationId": 3}\r\n')
        assert done.returncode == 1
        assert done.stdout.startswith("standard input: invalid (")

    def test_validate_names_standard_input_that_is_not_utf8(self):
        """Standard input that is not UTF-8 is a usage error naming it and the byte."""
        done = run_with_stdin("validate", "-", stdin=b'{"integrationId": "\xff"}')
        assert done.returncode == 2
        assert done.stderr == (
            "customer-session: error: standard input: not UTF-8 text: byte 0xff at line 1, "
            "column 20, file offset 19 (invalid start byte)\n"
        )

    def test_validate_takes_standard_input_only_once(self):
        """Giving '-' twice is a usage error: the second read would find it empty."""
        done = run_with_stdin("validate", "-", "-", stdin=b"{}")
        assert (done.returncode, done.stdout) == (2, "")
        assert "standard input ('-') can be given only once" in done.stderr

    def test_a_file_named_dash_is_read_as_dot_slash_dash(self, tmp_path):
        """./- names a file called '-', not standard input."""
        (tmp_path / "-").write_bytes((DATA / "session_v1.json").read_bytes())
        command = [sys.executable, "-m", "customer_session", "validate", "./-"]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=tmp_path, input=""
        )
        assert (done.returncode, done.stdout) == (
            0,
            "-: valid (session 'order-2026-000871', closed)\n",
        )

    def test_replay_reads_the_log_from_standard_input(self, tmp_path):
        """replay - applies the log on standard input, as it would the same file."""
        log = tmp_path / "events.jsonl"
        log.write_bytes(encoded_log(b"A\xff").replace(b"\n", b"\r\n"))
        from_file = run_with_stdin("replay", "--json", str(log), stdin=b"")
        from_stdin = run_with_stdin("replay", "--json", "-", stdin=log.read_bytes())
        assert from_stdin.returncode == from_file.returncode == 1
        assert json.loads(from_stdin.stdout) == json.loads(from_file.stdout)
        assert from_stdin.stderr == ""

    def test_diagram_reads_the_session_from_standard_input(self):
        """diagram --session - highlights the session on standard input."""
        document = (DATA / "session_v1.json").read_bytes()
        done = run_with_stdin("diagram", "--session", "-", stdin=document)
        from_file = run_with_stdin("diagram", "--session", str(DATA / "session_v1.json"), stdin=b"")
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == from_file.stdout


# Every option or argument whose value the library checks, with a value it refuses.
REFUSED_VALUES = [
    pytest.param(("replay", "--db", "", str(EXAMPLE)), "--db", id="replay --db"),
    pytest.param(("migrate", "--db", ""), "--db", id="migrate --db"),
    pytest.param(("show", "order-42", "--db", ""), "--db", id="show --db"),
    pytest.param(("history", "order-42", "--db", ""), "--db", id="history --db"),
    pytest.param(("outbox", "list", "--db", ""), "--db", id="outbox list --db"),
    pytest.param(
        ("outbox", "discard", "1", "--reason", "r", "--db", ""), "--db", id="outbox discard --db"
    ),
    pytest.param(("show", "order-42", "--db", "mysql://host/db"), "--db", id="--db scheme"),
    pytest.param(("show", "order-42", "--db", "orders\x00.db"), "--db", id="--db NUL"),
    pytest.param(("show", "", "--db", "@db"), "argument ID", id="show ID"),
    pytest.param(("history", "", "--db", "@db"), "argument ID", id="history ID"),
    pytest.param(
        ("outbox", "discard", str(2**63), "--reason", "r", "--db", "@db"),
        "argument SEQUENCE",
        id="SEQUENCE",
    ),
    pytest.param(
        ("outbox", "discard", "1", "--reason", " ", "--db", "@db"), "--reason", id="--reason"
    ),
    pytest.param(
        ("replay", "--db", "@db", "--actor", "", str(EXAMPLE)), "--actor", id="replay --actor"
    ),
]


class TestOptionsAsTyped:
    @pytest.mark.parametrize(("argv", "typed"), REFUSED_VALUES)
    def test_a_refused_value_is_named_by_its_option(self, capsys, tmp_path, argv, typed):
        """A value the library refuses is one error line naming the option as typed, exit 2."""
        database = tmp_path / "store.db"
        with open_store(database) as store:
            store.counts()  # a store, so that only the value given can be wrong
        argv = tuple(str(database) if arg == "@db" else arg for arg in argv)
        assert run(*argv) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith(f"customer-session: error: {typed}: "), error
        assert "()" not in error
        assert "Store" not in error

    def test_every_problem_of_one_refusal_is_named_by_its_option(self, capsys, tmp_path):
        """A --db and an --actor both refused are both named, each by its option."""
        argv = ("replay", "--db", "file:?cache=shared", "--actor", "", str(EXAMPLE))
        assert run(*argv) == (2, "")
        error = one_line_error(capsys)
        assert error.startswith("customer-session: error: --db: must name a file")
        assert "; --actor: must be None or a name" in error

    def test_the_librarys_explanation_is_kept(self, capsys):
        """The option leads the line, followed by the library's words for what is wrong."""
        assert run("show", "order-42", "--db", "") == (2, "")
        assert one_line_error(capsys) == (
            "customer-session: error: --db: must be a postgresql:// URL, a file path or "
            "':memory:', got ''\n"
        )


URL = "postgresql://shop:s3cret-pw@db.example/orders"


class TestUsageErrorsHideSecrets:
    @pytest.mark.parametrize(
        ("argv", "said"),
        [
            (("outbox", "list", "--limit", URL), "argument --limit: must be an integer >= 1, got "),
            (("outbox", "discard", URL), "argument SEQUENCE: must be an integer >= 1, got "),
            (("outbox", URL), "argument action: invalid choice: "),
            (("--db", URL), "argument command: invalid choice: "),
            (("diagram", "--format", URL), "argument --format: invalid choice: "),
            (("history", "--db", URL, "order-42", URL), "unrecognized arguments: "),
            (("show", "order-42", f"--nope={URL}", "--db", "x"), "unrecognized arguments: "),
            (("show", URL), "the following arguments are required: --db"),
        ],
    )
    def test_a_misplaced_url_is_shown_without_its_password(self, capsys, argv, said):
        """A usage error quoting a misplaced URL shows it with its password hidden, exit 2."""
        assert run(*argv) == (2, "")
        error = one_line_error(capsys)
        assert said in error, error
        assert "s3cret-pw" not in error
        if "required" not in said:  # the others quote the URL: as typed, but its password
            assert "postgresql://shop:***@db.example/orders" in error

    @pytest.mark.parametrize(
        "value",
        [
            "postgresql://shop@db.example/orders?password=s3cret-pw",
            "postgresql://shop@db.example/orders?pass%77ord=s3cret-pw&sslmode=require",
            "host=db.example password=s3cret-pw dbname=orders",
            "host=db.example sslpassword='s3cret-pw' dbname=orders",
        ],
    )
    def test_secret_parameters_are_hidden(self, capsys, value):
        """A secret given as a URL parameter or a keyword is hidden in a usage error too."""
        assert run("outbox", "list", "--limit", value) == (2, "")
        error = one_line_error(capsys)
        assert "argument --limit: must be an integer" in error
        assert "s3cret-pw" not in error
        assert "***" in error

    def test_a_value_without_a_secret_is_shown_as_typed(self, capsys):
        """A URL without a password, or a plain value, is quoted as typed."""
        plain = "postgresql://shop@db.example/orders"
        assert run("outbox", "list", "--limit", plain) == (2, "")
        assert one_line_error(capsys).endswith(f"must be an integer >= 1, got '{plain}'\n")


class TestHelpAndDocs:
    @pytest.mark.parametrize("command", COMMANDS)
    def test_synopsis_in_the_docs_is_the_help_usage(self, capsys, command):
        """docs/cli.md shows each command's synopsis exactly as --help prints it (minus -h)."""
        usage = help_of(capsys, command).split("\n\n", 1)[0]
        expected = " ".join(usage.split()).removeprefix("usage: ").replace(" [-h]", "")
        assert docs_section(command)[0] == expected

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_option_is_described_in_the_docs(self, capsys, command):
        """Each long option --help lists is described in the command's prose in docs/cli.md."""
        listed = re.findall(
            r"^  (?:-\w(?: \S+)?, )?(--[\w-]+)", help_of(capsys, command), re.MULTILINE
        )
        options = set(listed)
        options.discard("--help")
        assert options
        prose = docs_section(command)[1]
        assert {option for option in options if f"`{option}" not in prose} == set()

    def test_outbox_examples_show_the_last_error_as_the_command_prints_it(self, tmp_path):
        """docs/cli.md's outbox list and discard examples quote the last error as printed."""

        class HTTPError(Exception):
            """What a receiver's client raises."""

        def refuse(effect):
            raise HTTPError("422 Unprocessable Entity")

        database = str(tmp_path / "store.db")
        with open_store(database) as store:
            store.on_commit("release-shipment")
            store.create(CustomerSession(integration_id="order-47"))
            store.update("order-47", lambda session: session.close())
            with pytest.raises(HTTPError):
                store.deliver(refuse)
        status, text = run("outbox", "list", "--db", database)
        (printed,) = [line for line in text.splitlines() if "last error" in line]
        page = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
        assert (status, page.count(f"\n{printed}\n")) == (0, 2)


class TestEntryPoints:
    def test_version_is_the_installed_metadata(self, capsys):
        """--version prints the version the package metadata records, and exits 0."""
        assert main(["--version"]) == 0
        assert capsys.readouterr().out == f"customer-session {version('customer-session')}\n"

    @pytest.mark.parametrize(
        ("argv", "start"),
        [
            (["--version"], "customer-session "),
            (["--help"], "usage: customer-session "),
            (["replay", "--help"], "usage: customer-session replay "),
            (["diagram", "-h"], "usage: customer-session diagram "),
        ],
    )
    def test_version_and_help_go_to_out(self, capsys, argv, start):
        """main(out=...) receives what --version and --help print; standard output gets nothing."""
        out = io.StringIO()
        assert main(argv, out=out) == 0
        assert out.getvalue().startswith(start)
        assert capsys.readouterr() == ("", "")

    def test_version_without_metadata_is_a_one_line_error(self, monkeypatch, capsys):
        """--version where the distribution is not installed is a usage error, not a traceback."""

        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        monkeypatch.setattr(importlib.metadata, "version", not_installed)
        assert main(["--version"]) == 2
        assert capsys.readouterr().err.endswith(
            "error: --version: the customer-session distribution is not installed\n"
        )

    def test_python_dash_m(self):
        """python -m customer_session runs the same CLI."""
        result = subprocess.run(
            [sys.executable, "-m", "customer_session", "diagram", "--format", "table"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        assert result.returncode == 0
        assert "| open |" in result.stdout or "open" in result.stdout

    def test_the_progress_bar_ends_at_the_size_of_the_file(self, monkeypatch, tmp_path):
        """On a terminal, the bar reaches 100% for a log with a BOM, CRLF and bad bytes too."""
        log = tmp_path / "log.jsonl"
        log.write_bytes(b"\xef\xbb\xbf" + encoded_log(b"A\xff").replace(b"\n", b"\r\n"))
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert run("replay", str(log))[0] == 1
        assert terminal.getvalue().split("\r")[-1].startswith("100%|##########|")

    @pytest.mark.parametrize(
        ("failure", "said"),
        [
            (
                StoreError("store: the server closed the connection"),
                "error: store: the server closed the connection",
            ),
            (KeyboardInterrupt(), "interrupted"),
        ],
    )
    def test_a_replay_stopped_half_way_ends_its_bar_before_the_error_line(
        self, monkeypatch, tmp_path, failure, said
    ):
        """A replay stopped half-way ends its bar first: the error line is a line of its own."""
        applying = StoreReplayer.apply

        def failing(replayer, number, line):
            if number == 2:  # the store fails (or Ctrl-C comes) after the first line
                raise failure
            return applying(replayer, number, line)

        monkeypatch.setattr(StoreReplayer, "apply", failing)
        log = tmp_path / "log.jsonl"
        log.write_bytes(encoded_log(b"A"))
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert run("replay", "--db", str(tmp_path / "orders.db"), str(log))[0] in {2, 130}
        bar, error = terminal.getvalue().rsplit("\n", 2)[:2]
        assert error == f"customer-session: {said}"
        assert "|" in bar.split("\r")[-1]  # the bar's last state, ended by its own newline

    def test_no_progress_bar_when_not_a_terminal(self):
        """Without a terminal on stderr, replay prints no progress bar."""
        result = subprocess.run(
            [sys.executable, "-m", "customer_session", "replay", str(EXAMPLE)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr == ""

    def test_a_reader_that_leaves_early_is_a_one_line_error(self, tmp_path):
        """A report cut short by its reader (``| head``) is one error line, exit 2, no traceback."""
        log = tmp_path / "events.jsonl"
        log.write_text("not json\n" * 5000, encoding="utf-8")  # a report beyond a pipe's buffer
        command = [sys.executable, "-m", "customer_session", "replay", "--json", str(log)]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as replay:
            assert replay.stdout is not None
            assert replay.stdout.read(1) == "{"
            replay.stdout.close()
            err = replay.communicate()[1]
        assert replay.returncode == 2
        assert err == "customer-session: error: standard output: cannot write (broken pipe)\n"
