"""The ``customer-session`` command line: diagrams, validation, replay, store set-up, inspection.

Every command uses only the public API. Errors are one line on standard error with
a non-zero exit status, never a traceback. Exit statuses:

- ``0``: success (every document valid, every event applied);
- ``1``: the input was read but is invalid (an invalid document, a refused event),
  or what was asked of a store is not there (no such session, no pending outbox
  row of that number);
- ``2``: the command could not run (bad arguments, a missing or unreadable file, an
  unknown format or one the output's extension contradicts, an output that cannot be
  written (standard output included, when
  its reader leaves early), Graphviz missing or failing for images, a store that
  cannot be opened or fails, a replay into a store whose outbox holds rows of
  durable effects it does not register). ``validate`` checks every file even when
  one cannot be read, and exits with the worst status of them all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO, cast

from customer_session import diagrams, replay, wire

# The library's one way to write an output file: whole, or not at all (render() uses it).
from customer_session._files import write_atomically

# The library's one way to keep a connection string's secrets out of a message.
from customer_session._secrets import masked

# Wording, not behaviour: the CLI counts things in its messages as the library does.
from customer_session._show import counted, printable, shown
from customer_session.exceptions import (
    CustomerSessionError,
    EffectNotPending,
    SchemaNotReady,
    SessionNotFound,
    UnknownTrigger,
    ValidationError,
    WorkflowError,
)
from customer_session.model import CustomerSession, ReopenableCustomerSession

# The byte order mark an editor may put before a file's text, as the wire format names it.
from customer_session.wire import _BOM

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from _typeshed import SupportsWrite

    from customer_session.store import Effect, JournalEntry, SessionStore, StoreReplayer

__all__ = ["main"]

PROG = "customer-session"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
TEXT_FORMATS = ("mermaid", "dot", "table")
IMAGE_FORMATS = ("svg", "png")
STDOUT = Path("-")
STDIN: Final = Path("-")
"""An input file given as ``-``: standard input (told apart by identity: ``./-`` is a file)."""


class _UsageError(Exception):
    """A problem that stops the command (exit status 2)."""


class _ArgumentsRefused(Exception):
    """The argument parser's error line, raised for :func:`main` to print without secrets."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like the rest of the CLI."""

    def __init__(self, *, out: TextIO | None = None, **options: Any) -> None:
        """Take ``out``, where ``--help`` and ``--version`` go (None: standard output)."""
        super().__init__(**options)
        self.out = out

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """Print the help to ``file``, else to :attr:`out`."""
        super().print_help(file if file is not None else self.out)

    def error(self, message: str) -> NoReturn:
        """Refuse the arguments with ``prog: error: message``, which main() prints on one line.

        Raised, not printed: argparse quotes what was typed (``invalid choice:
        'postgresql://user:pw@host/db'``), and only main() has the words typed, whose
        secrets it hides.
        """
        raise _ArgumentsRefused(f"{self.prog}: error: {message}")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, as its metadata records it."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:  # noqa: A002 - argparse's name
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> NoReturn:
        del namespace, values, option_string  # argparse's signature; none is needed
        # Looked up only when asked: it takes some 50 ms, which every command would pay.
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - only --version needs it

        try:
            installed = version("customer-session")
        except PackageNotFoundError:
            # Run from a source tree (PYTHONPATH=src) there is no metadata to read.
            parser.error("--version: the customer-session distribution is not installed")
        out = parser.out if isinstance(parser, _Parser) else None
        print(f"{parser.prog} {installed}", file=out)  # where --help goes
        parser.exit()


def _parser(out: TextIO | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="The Talon.One customer session state machine.", out=out
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    diagram = commands.add_parser("diagram", help="print or render the state diagram", out=out)
    diagram.add_argument(
        "--format",
        choices=TEXT_FORMATS + IMAGE_FORMATS,
        help="output format (default: the one OUT's extension names, else mermaid)",
    )
    diagram.add_argument(
        "--session",
        type=_input,
        metavar="FILE",
        help="highlight this session (a JSON document; '-' for standard input)",
    )
    diagram.add_argument("--reopen", action="store_true", help="the opt-in table with reopen")
    diagram.add_argument(
        "-o",
        "--output",
        type=_path,
        metavar="OUT",
        help="file to write instead of standard output ('-' for standard output; "
        "required for images)",
    )

    validate = commands.add_parser("validate", help="check session JSON documents", out=out)
    validate.add_argument(
        "files",
        nargs="+",
        type=_input,
        metavar="FILE",
        help="session JSON documents (v1; '-' for standard input)",
    )
    validate.add_argument(
        "--reopen", action="store_true", help="read them as sessions of the reopen table"
    )

    run = commands.add_parser("replay", help="apply an order-event log (JSON Lines)", out=out)
    run.add_argument(
        "log",
        type=_input,
        metavar="EVENTS.jsonl",
        help="the log: one JSON event per line ('-' for standard input)",
    )
    run.add_argument("--reopen", action="store_true", help="allow reopen events")
    run.add_argument("--json", action="store_true", help="print a machine-readable report")
    _db_option(
        run,
        f"apply the log to {_STORE}; resumable: lines an earlier run applied are skipped",
        required=False,
    )
    run.add_argument(
        "--actor",
        metavar="NAME",
        help="with --db: who the journal entries of the replay's changes name "
        "(at most 200 characters; default: none)",
    )
    run.add_argument(
        "--effect",
        action="append",
        default=[],
        metavar="NAME:TRIGGER",
        help="with --db: register the durable effect NAME for TRIGGER, as the application "
        "does with store.on_commit(NAME, trigger=TRIGGER), so the replay's transitions write "
        "its outbox rows; TRIGGER is a trigger of the table, or * for every transition "
        "(repeatable)",
    )
    run.add_argument(
        "--no-effects",
        action="store_true",
        help="with --db: apply the log even though the store's outbox holds rows of "
        "effects no --effect registers (the replay writes no outbox row for them)",
    )
    run.add_argument(
        "--max-refusals",
        type=_count,
        default=20,
        metavar="N",
        help="refused lines to list in the text report (all are counted; 0 lists none; default 20)",
    )
    _operator_commands(commands, out)
    return parser


_STORE = "a session store (an SQLite file, or a postgresql:// URL)"


def _db_option(parser: argparse.ArgumentParser, help_: str, *, required: bool = True) -> None:
    """Add ``--db PATH_OR_URL``, the session store a command uses (read by ``open_store``)."""
    parser.add_argument("--db", metavar="PATH_OR_URL", required=required, help=help_)


def _operator_commands(commands: Any, out: TextIO | None) -> None:
    """Add the commands that prepare or inspect a store, or discard one of its outbox rows."""
    migrate = commands.add_parser(
        "migrate", help="create a session store, or migrate its schema to this version", out=out
    )
    _db_option(migrate, f"{_STORE}; a missing SQLite file is created")
    existing = f"{_STORE}, which must exist"
    show = commands.add_parser("show", help="print a stored session's document", out=out)
    show.add_argument("id", metavar="ID", help="the session's integration id")
    _db_option(show, existing)
    show.add_argument(
        "--reopen", action="store_true", help="load it as a session of the reopen table"
    )

    history = commands.add_parser("history", help="print a stored session's journal", out=out)
    history.add_argument("id", metavar="ID", help="the session's integration id")
    _db_option(history, existing)
    history.add_argument("--json", action="store_true", help="one JSON object per entry")
    history.add_argument(
        "--reopen", action="store_true", help="read it as a session of the reopen table"
    )

    outbox = commands.add_parser("outbox", help="list or discard outbox rows", out=out)
    actions = outbox.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = actions.add_parser("list", help="list the pending (or discarded) rows", out=out)
    _db_option(listing, existing)
    listing.add_argument(
        "--discarded", action="store_true", help="the discarded rows instead of the pending ones"
    )
    listing.add_argument("--limit", type=_limit, metavar="N", help="at most N rows (default: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per row")
    discard = actions.add_parser("discard", help="give up on one pending row", out=out)
    discard.add_argument(
        "sequence", type=_positive, metavar="SEQUENCE", help="the row's sequence number"
    )
    discard.add_argument(
        "--reason", required=True, metavar="TEXT", help="why (1 to 1000 characters)"
    )
    _db_option(discard, existing)
    discard.add_argument("--json", action="store_true", help="print the row as JSON")


def _path(text: str) -> Path:
    r"""A file argument: a name the system can take (argparse reports the error).

    The system refuses NUL in a name, and encodes names with ``surrogateescape``:
    a lone surrogate it did not decode itself (``\ud800``, given to :func:`main`)
    has no bytes, and opening it would raise ``ValueError``/``UnicodeEncodeError``.
    An empty name (an unset shell variable, say) would be ``Path(".")``, the
    current directory, which errors would then name instead of what was given.
    """
    if not text:
        raise argparse.ArgumentTypeError("an empty file name")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        valid = False
    else:
        valid = "\x00" not in text
    if not valid:
        raise argparse.ArgumentTypeError(f"not a file name the system can take: {shown(text)}")
    return Path(text)


def _input(text: str) -> Path:
    """An input file argument (see :func:`_path`); ``-`` is standard input (:data:`STDIN`)."""
    return STDIN if text == "-" else _path(text)


def _named(path: Path) -> str:
    """How messages name an input file: as given (escaped for a terminal), or ``standard input``."""
    return "standard input" if path is STDIN else printable(str(path))


def _count(text: str) -> int:
    """An argument that counts something: an integer >= 0 (argparse reports the error)."""
    return _integer(text, 0)


def _positive(text: str) -> int:
    """A sequence number: an integer >= 1 (argparse reports the error)."""
    return _integer(text, 1)


def _limit(text: str) -> int:
    """A listing's limit: an integer from 1 to the largest a store takes.

    Checked here: the listing asks the store for pages, never for the limit itself,
    and a limit past any count (2**63) must be refused, not taken for "all".
    """
    value = _integer(text, 1)
    if value > _LARGEST_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to 2**63 - 1, got {shown(text)}"
        )
    return value


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {shown(text)}")
    return value


# The library's names of the values a store's options give it (open_store's ``target``,
# StoreReplayer's ``database``, the backends' ``path`` and ``conninfo``): all of them
# are what --db was given.
_DB: Final = {"target": "--db", "database": "--db", "path": "--db", "conninfo": "--db"}
_LARGEST_LIMIT: Final = 2**63 - 1  # the largest limit a store's listings take (a SQL bigint)


@contextlib.contextmanager
def _as_typed(options: Mapping[str, str], *, keep_subject: bool = False) -> Iterator[None]:
    """Word the library's refusal of the values the user gave by the options they typed.

    The library names its own arguments (``open_store(): target: ...``), which the
    user of the command never typed. A :class:`ValidationError` whose every problem
    is at one of ``options`` (the library's name of an argument: the option that
    gave it, ``{"actor": "--actor"}``) is the one-line ``--actor: <the library's
    explanation>`` instead; any other refusal is left as it is, since it is not
    about a value the command was given.

    Args:
        options: The option as typed, by the library's name of the value.
        keep_subject: Keep the error's subject in front: it names a file as given.
    """
    try:
        yield
    except ValidationError as error:
        said = []
        for problem in error.problems:
            typed = options.get(problem.path)
            if typed is None:
                raise
            said.append(f"{typed}: {problem.message}")
        subject = f"{error.subject}: " if keep_subject else ""
        raise _UsageError(subject + "; ".join(said)) from None


def _session_class(reopen: bool) -> type[CustomerSession]:
    return ReopenableCustomerSession if reopen else CustomerSession


def _read(path: Path) -> str:
    """The file's text, without a byte order mark (as editors on Windows save one)."""
    if path is STDIN:
        return _read_stdin()
    try:
        return path.read_text(encoding="utf-8").removeprefix(_BOM)
    except FileNotFoundError:
        raise _UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise _UsageError(f"{path}: is a directory") from None
    except PermissionError:
        raise _UsageError(f"{path}: permission denied") from None
    except UnicodeDecodeError as error:
        raise _not_text(path, error) from None
    except OSError as error:
        raise _UsageError(f"{path}: cannot read ({error.strerror})") from None


def _position(line: bytes, start: int, offset: int) -> str:
    """Where byte ``start`` of ``line``, at ``offset`` in its file, is: for people and ``xxd``.

    The column counts characters from 1, as the CLI's other messages (malformed
    JSON's) do; the bytes before ``start`` are UTF-8, since a decoder stops at the
    first byte that is not. The file offset counts bytes from 0, as ``dd skip=``
    and ``xxd -s`` do.
    """
    column = len(line[:start].decode("utf-8")) + 1
    return f"column {column}, file offset {offset + start}"


def _read_stdin() -> str:
    """Standard input's text, read as :func:`_read` reads a file's."""
    try:
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:  # a text stream that main()'s caller put there: already text
            text = sys.stdin.read()
        else:
            # Decoded whole, not by a text wrapper, so an error has the offsets of the
            # input; newlines are then made "\n", as text mode makes them for a file.
            text = buffer.read().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as error:
        raise _not_text(STDIN, error) from None
    except OSError as error:
        raise _UsageError(f"standard input: cannot read ({error.strerror})") from None
    return text.removeprefix(_BOM)


def _not_text(path: Path, error: UnicodeDecodeError) -> _UsageError:
    """The error for an input that is not UTF-8 text, naming where the byte is."""
    data = error.object
    line = data.count(b"\n", 0, error.start) + 1
    line_start = data.rfind(b"\n", 0, error.start) + 1
    in_line = error.start - line_start
    where = f"line {line}, {_position(data[line_start : error.start], in_line, line_start)}"
    return _UsageError(f"{_named(path)}: {_not_utf8(error, where)}")


def _not_utf8(error: UnicodeDecodeError, where: str) -> str:
    """E.g. ``not UTF-8 text: byte 0xff at <where> (invalid start byte)``."""
    return f"not UTF-8 text: byte 0x{error.object[error.start]:02x} at {where} ({error.reason})"


class _LogLines:
    """A replay log's lines, decoded one at a time so a non-UTF-8 line refuses only itself.

    Malformed lines never stop a replay, and a byte that is not UTF-8 makes a line as
    malformed as bad JSON does. Decoding the whole file at once would instead stop
    at the first such byte, with the lines before it applied up to an arbitrary
    buffer boundary. Such a line is kept in :attr:`refused` (with its byte offsets)
    and handed to the replayer as a blank line, so line numbers stay right and no
    replayer (in memory or ``--db``) needs to know: with ``--db`` its key is not
    recorded, so a corrected line is applied by the next run. A UTF-8 byte order mark
    before the first line (editors on Windows write one) is dropped: it is no part of
    the first event, which would otherwise be refused as malformed JSON.

    Attributes:
        refused: The lines that are not UTF-8 text, in order.
    """

    def __init__(self, handle: Iterable[str]) -> None:
        """Wrap ``handle``'s lines, read with ``errors="surrogateescape", newline=""``."""
        self._handle = handle
        self.refused: list[replay.RefusedLine] = []

    def __iter__(self) -> Iterator[str]:
        """Yield each line, its ending made a newline as text mode would, or a blank line."""
        offset = 0  # of the line in the file, in bytes (newline="" keeps every byte)
        for number, line in enumerate(self._handle, start=1):
            try:
                size = len(line.encode("utf-8"))
            except UnicodeEncodeError:  # surrogateescape's stand-ins for undecodable bytes
                raw = line.encode("utf-8", "surrogateescape")
                self.refused.append(self._refusal(number, raw, offset))
                offset += len(raw)
                yield "\n"
                continue
            offset += size
            text = line.removeprefix(_BOM) if number == 1 else line
            if text.endswith("\r\n"):
                yield text[:-2] + "\n"
            elif text.endswith("\r"):
                yield text[:-1] + "\n"
            else:
                yield text

    @staticmethod
    def _refusal(number: int, raw: bytes, offset: int) -> replay.RefusedLine:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            where = _position(raw, error.start, offset)
            return replay.RefusedLine(number, None, None, _not_utf8(error, where))
        raise AssertionError(raw)  # pragma: no cover - only undecodable lines get here


def _diagram(args: argparse.Namespace, out: TextIO) -> int:
    session_class = _session_class(args.reopen)
    session = None
    if args.session is not None:
        try:
            session = wire.from_json(_read(args.session), session_class=session_class)
        except ValidationError as error:
            raise _UsageError(f"{_named(args.session)}: {_one_line(error)}") from None
    spec = None if session is not None else session_class.specification
    output = None if args.output == STDOUT else args.output
    # The library's rule: an extension that names another format than --format is refused.
    if output is None:
        format_ = args.format
    else:
        with _as_typed({"format": "--format"}, keep_subject=True):  # the subject is OUT
            format_ = diagrams.output_format(output, args.format)
    format_ = format_ or "mermaid"
    if format_ in IMAGE_FORMATS:
        if args.output is None:
            raise _UsageError(f"--format {format_} writes an image: give -o FILE (or -o -)")
        image = diagrams.to_image(
            spec, session=session, format="svg" if format_ == "svg" else "png"
        )
        if output is None:
            _write_binary_stdout(image, out)
        else:
            _write(output, image, out)
        return EXIT_OK
    render = {"mermaid": diagrams.to_mermaid, "dot": diagrams.to_dot, "table": diagrams.to_table}
    text = render[format_](spec, session=session)
    if output is None:
        out.write(text)
    else:
        _write(output, text, out)
    return EXIT_OK


def _write_binary_stdout(image: bytes, out: TextIO) -> None:
    """Write an image to standard output (``-o -``), for a pipe or a redirection."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        raise _UsageError("standard output: cannot write an image to a text-only stream")
    out.flush()
    buffer.write(image)
    buffer.flush()


def _write(path: Path, data: str | bytes, out: TextIO) -> None:
    """Write a diagram, text or image, and say so: the one place a CLI output file is written.

    The file is replaced whole, or not at all (the old one stays when the write fails).
    """
    try:
        write_atomically(path, data if isinstance(data, bytes) else data.encode("utf-8"))
    except OSError as error:
        raise _UsageError(f"{path}: cannot write ({error.strerror})") from None
    print(f"wrote {printable(str(path))}", file=out)


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check every file, whatever happens to the others; exit with the worst status."""
    session_class = _session_class(args.reopen)
    if sum(path is STDIN for path in args.files) > 1:
        # Read once, it is empty the next time: that document would seem invalid.
        raise _UsageError("standard input ('-') can be given only once")
    status = EXIT_OK
    for path in args.files:
        try:
            session = wire.from_json(_read(path), session_class=session_class)
        except _UsageError as error:
            # A file that cannot be read must not hide the verdicts on the others.
            _print_error(error, err)
            status = EXIT_USAGE
        except ValidationError as error:
            status = max(status, EXIT_INVALID)
            print(f"{_named(path)}: invalid ({counted(len(error.problems), 'problem')})", file=out)
            for problem in error.problems:
                print(f"  {problem}", file=out)
        else:
            verdict = f"valid (session {session.integration_id!r}, {session.state})"
            print(f"{_named(path)}: {verdict}", file=out)
    return status


def _replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        # surrogateescape and newline="": _LogLines decodes and splits each line itself.
        if args.log is STDIN:
            handle = _stdin_lines()
        else:
            handle = args.log.open(encoding="utf-8", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise _UsageError(f"{args.log}: no such file") from None
    except IsADirectoryError:
        raise _UsageError(f"{args.log}: is a directory") from None
    except PermissionError:
        raise _UsageError(f"{args.log}: permission denied") from None
    except OSError as error:
        raise _UsageError(f"{args.log}: cannot read ({error.strerror})") from None
    with handle as lines, contextlib.ExitStack() as cleanup:
        # Inside: a store that cannot be opened (a bad option) must close the log too.
        replayer = _replayer(args)
        if isinstance(replayer, contextlib.AbstractContextManager):
            cleanup.enter_context(replayer)  # a store replay closes its store
        _durable_effects(args, replayer)  # before any line: nothing applied if refused
        # The bar counts the lines as read, every byte of the file included.
        read = replay.with_progress(lines, total_bytes=_size(args.log), stream=err)
        if isinstance(read, Generator):  # a bar is drawn
            # Ended when the replay stops early (a store failure, Ctrl-C), so that the
            # error line starts a line of its own instead of following the bar on its line.
            cleanup.callback(read.close)
        decoded = _LogLines(read)
        report = replayer.run(decoded)
    if decoded.refused:
        report.refused = sorted([*report.refused, *decoded.refused], key=lambda r: r.line)
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(report.to_text(max_refusals=args.max_refusals))
    return EXIT_INVALID if report.refused else EXIT_OK


def _replayer(args: argparse.Namespace) -> replay.Replayer:
    session_class = _session_class(args.reopen)
    if args.effect and args.no_effects:
        raise _UsageError(
            "--no-effects applies the log without registering durable effects: "
            "give it without --effect"
        )
    if args.db is None:
        if args.actor is not None:
            # A replay in memory keeps no journal: the name would be dropped unsaid.
            raise _UsageError("--actor names who wrote a store's journal entries: give --db")
        # In memory there is no outbox: an effect would be dropped unsaid.
        if args.effect:
            raise _UsageError("--effect registers a durable effect on a store's outbox: give --db")
        if args.no_effects:
            raise _UsageError("--no-effects is about a store's outbox: give --db")
        return replay.Replayer(session_class=session_class)
    from customer_session.store import StoreReplayer  # noqa: PLC0415 - only --db needs it

    with _as_typed({**_DB, "actor": "--actor"}):
        return StoreReplayer(args.db, session_class=session_class, actor=args.actor)


def _durable_effects(args: argparse.Namespace, replayer: replay.Replayer) -> None:
    """With ``--db``: register each ``--effect`` on the replay's store, then check its outbox."""
    if args.db is None:
        return
    store = cast("StoreReplayer", replayer).store
    registered = _register_effects(args.effect, store, _session_class(args.reopen))
    if not args.no_effects:
        _check_outbox(store, registered)


_EVERY_TRANSITION: Final = "*"
"""The ``TRIGGER`` of ``--effect NAME:TRIGGER`` that stands for every transition."""


def _register_effects(
    values: Sequence[str],
    store: SessionStore[CustomerSession],
    session_class: type[CustomerSession],
) -> set[str]:
    """Register each ``--effect NAME:TRIGGER`` on ``store``, as ``on_commit`` does; their names.

    Split at the last colon: a name may hold colons, a trigger never does. The
    store's ``on_commit`` judges the name and the trigger (empty, not storable,
    registered twice, unknown), and its refusal is worded for the option. Nothing
    touches the database yet: a refusal leaves a new SQLite file uncreated.
    """
    triggers = ", ".join(session_class.specification.triggers)
    names = set()
    for value in values:
        name, colon, trigger = value.rpartition(":")
        if not colon:
            raise _UsageError(
                f"--effect {shown(value)}: give NAME:TRIGGER, TRIGGER one of {triggers}, "
                f"or {_EVERY_TRANSITION} for every transition"
            )
        try:
            store.on_commit(name, trigger=None if trigger == _EVERY_TRANSITION else trigger)
        except UnknownTrigger:
            # A trigger only the reopen table has (reopen): say which option gives it.
            opt_in = trigger in ReopenableCustomerSession.specification.triggers
            reopen = f" ({trigger} needs --reopen)" if opt_in else ""
            raise _UsageError(
                f"--effect {shown(value)}: unknown trigger {shown(trigger)}; give one of "
                f"{triggers}, or {_EVERY_TRANSITION} for every transition{reopen}"
            ) from None
        except WorkflowError as error:
            raise _UsageError(f"--effect {shown(value)}: {error}") from None
        names.add(name)
    return names


def _check_outbox(store: SessionStore[CustomerSession], registered: set[str]) -> None:
    """Refuse a replay whose transitions would write no rows of effects the outbox has.

    Durable effects are registered per store object, in each process that writes:
    the rows an application wrote name effects it registers, and a replay without
    them would change sessions with nobody told. The first use of the store:
    creates or migrates it, as the replay would.
    """
    missing = [name for name in store.outbox_effects() if name not in registered]
    if missing:
        names = ", ".join(f"{shown(name):.80}" for name in missing)
        effects = counted(len(missing), "durable effect")
        raise _UsageError(
            f"the store's outbox holds rows of {effects} that no --effect registers: {names}; "
            "the replay's transitions would write none of theirs. Pass --effect NAME:TRIGGER "
            "for each, as the application registers them, or --no-effects to apply the log "
            "without them; nothing was applied"
        )


@contextlib.contextmanager
def _existing_store(
    args: argparse.Namespace, session_class: type[CustomerSession] = CustomerSession
) -> Iterator[SessionStore[CustomerSession]]:
    """The store ``--db`` names, which must exist: an SQLite file is not created.

    A mistyped path would otherwise leave an empty database behind, and every
    session would seem unknown. So is a ``file:`` URI that gives no ``mode`` (the store
    opens it in mode ``rw``); ``:memory:`` and a URI with its own ``mode`` are opened as given.
    Opened with ``migrate=False``: a command that reads must never create the
    store's tables in another application's database, nor migrate a store that its
    workers (of an older library) still use.
    """
    from customer_session.store import SQLiteStore, open_store  # noqa: PLC0415 - only --db needs it

    with _as_typed(_DB):
        opened = open_store(args.db, session_class=session_class, migrate=False)
    with opened as store:
        path = store.path if isinstance(store, SQLiteStore) else None
        named = path is not None and path != ":memory:" and not path.startswith("file:")
        if named and not Path(str(path)).exists():
            raise _UsageError(f"{path}: no such file")
        yield store


def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    """Create the store, or migrate its schema; say which, or that it was current."""
    from customer_session.store import SCHEMA_VERSION, open_store  # noqa: PLC0415 - only --db needs it

    with _as_typed(_DB):
        opened = open_store(args.db)
    with opened as store:
        # What this run found under the migration's lock: another process that
        # migrated meanwhile leaves it current, and this run says so.
        found = store.migrate_schema()
    if found == SCHEMA_VERSION:
        said = f"the session store is at schema version {SCHEMA_VERSION} already"
    elif found == 0:
        said = f"created a session store (schema version {SCHEMA_VERSION})"
    else:
        said = f"migrated the session store from schema version {found} to {SCHEMA_VERSION}"
    out.write(f"{said}\n")
    return EXIT_OK


_ID: Final = {"integration_id": "argument ID"}


def _show(args: argparse.Namespace, out: TextIO) -> int:
    with _existing_store(args, _session_class(args.reopen)) as store, _as_typed(_ID):
        session = store.get(args.id)
    out.write(_terminal_json(wire.to_json(session, include_history=True, indent=2)))
    out.write("\n")
    return EXIT_OK


def _terminal_json(text: str) -> str:
    r"""JSON text with what is not printable in its strings escaped (``\u009b``), lines kept.

    The wire writer keeps text as it is, and the standard library escapes only the
    C0 controls: a C1 control (``\x9b`` starts an escape sequence on an 8-bit
    terminal) or a bidirectional override (``\u202e``) in a stored value would act
    on the reader's terminal. Escaped, the text reads back as the same document.
    """
    if text.replace("\n", "").isprintable():
        return text
    # json.dumps escapes one character as JSON does (a surrogate pair beyond the BMP).
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)


def _history(args: argparse.Namespace, out: TextIO) -> int:
    with _existing_store(args, _session_class(args.reopen)) as store, _as_typed(_ID):
        entries = store.history(args.id)
        # Every stored session has its creation's entry: none means no session.
        if not entries and not store.exists(args.id):
            raise SessionNotFound(args.id)
    if args.json:
        _json_lines((entry.to_dict() for entry in entries), out)
    else:
        out.write(_entries_text(args.id, entries))
    return EXIT_OK


def _outbox(args: argparse.Namespace, out: TextIO) -> int:
    options = {"sequence": "argument SEQUENCE", "reason": "--reason", "limit": "--limit"}
    with _existing_store(args) as store, _as_typed(options):
        if args.action == "discard":
            row = store.discard(args.sequence, reason=args.reason)
            _write_rows([row], out, as_json=args.json)
            return EXIT_OK
        limit: int | None = args.limit
        kind = "discarded" if args.discarded else "pending"
        # Counted first, on an index: the heading comes before the rows, which are
        # then read a page at a time and written as they come, so a backlog of any
        # size takes one page of memory and its first rows show at once. The count
        # also bounds the listing: a row written while it runs is not listed.
        count = store.discarded_count() if args.discarded else store.pending_count()
        listed = count if limit is None else min(count, limit)
        if not args.json:
            heading = counted(listed, f"{kind} row")
            if listed < count:  # the heading must not pass the rows shown for all of them
                heading = f"the first {heading} (--limit {limit}; more are {kind})"
            out.write(f"{heading}\n")
        read = store.discarded if args.discarded else store.pending
        _write_rows(_pages(read, listed), out, as_json=args.json)
    return EXIT_OK


_PAGE: Final = 500
"""How many outbox rows ``outbox list`` reads at a time."""


def _pages(read: Callable[..., tuple[Effect, ...]], most: int) -> Iterator[Effect]:
    """At most ``most`` rows of a listing (``store.pending`` or ``.discarded``), a page a read.

    A row delivered or discarded between pages is not listed (the listing may then
    end short of ``most``); the pages follow each other by the last row read.
    """
    after: Effect | None = None
    while most > 0:
        page = read(limit=min(_PAGE, most), after=after)
        yield from page
        if len(page) < min(_PAGE, most):
            return
        most -= len(page)
        after = page[-1]


def _write_rows(rows: Iterable[Effect], out: TextIO, *, as_json: bool) -> None:
    """Outbox rows as JSON Lines (each row's ``to_dict()``), or for a reader."""
    if as_json:
        _json_lines((row.to_dict() for row in rows), out)
    else:
        out.writelines(_row_text(row) for row in rows)


def _json_lines(items: Iterable[dict[str, Any]], out: TextIO) -> None:
    """JSON Lines: one compact JSON object a line."""
    for item in items:
        out.write(json.dumps(item, separators=(",", ":")))
        out.write("\n")


def _entries_text(integration_id: str, entries: Sequence[JournalEntry]) -> str:
    """The journal for a reader: an entry a line, then its transitions, indented."""
    lines = [
        f"session {integration_id!r}: {counted(len(entries), 'journal entry', 'journal entries')}"
    ]
    for entry in entries:
        data = entry.to_dict()  # the times and records as the JSON form writes them
        who = [f"key {shown(entry.key)}"] if entry.key is not None else []
        who += [f"by {shown(entry.actor)}"] if entry.actor is not None else []
        lines.append(
            f"version {entry.version} at {data['recordedAt']}: {entry.kind} "
            f"({printable(entry.operation)})" + (f", {', '.join(who)}" if who else "")
        )
        lines.extend(f"  {_record_text(record)}" for record in data["records"])
    return "\n".join(lines) + "\n"


def _record_text(record: dict[str, Any]) -> str:
    """``close: open -> closed at <time>``, and what a return returned."""
    edge = f"{record['source']} -> {record['destination']}"
    text = f"{record['trigger']}: {edge} at {record['timestamp']}"
    returned = [
        f"{item['quantity']} of item {item['position']}"
        + (f" ({shown(item['sku'])})" if "sku" in item else "")
        for item in record.get("returnedItems", ())
    ]
    return text + (f", returned {', '.join(returned)}" if returned else "")


def _row_text(row: Effect) -> str:
    """An outbox row for a reader: a line, then its error and discard, indented.

    Written without the row's document, which it does not show (nor parse).
    """
    data = row.to_dict(include_document=False)  # the times and record as JSON writes them
    lines = [
        (
            f"row {row.sequence}: {shown(row.name)} for session {shown(row.integration_id)} "
            f"(version {row.version}, {_record_text(data['record'])}), "
            f"{counted(row.attempts, 'failed attempt')}, created {data['createdAt']}"
        )
    ]
    if row.last_error is not None:
        lines.append(f"  last error: {shown(row.last_error)}")
    if row.discarded_at is not None:
        lines.append(f"  discarded at {data['discardedAt']}: {shown(row.discard_reason)}")
    return "".join(f"{line}\n" for line in lines)


@contextlib.contextmanager
def _stdin_lines() -> Iterator[TextIO]:
    """Standard input, read as a log file is (see :func:`_replay`), left open after."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream that main()'s caller put there: already text
        yield sys.stdin
        return
    lines = io.TextIOWrapper(buffer, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield lines
    finally:
        lines.detach()  # closing the wrapper would close standard input


def _size(path: Path) -> int | None:
    if path is STDIN:  # no size known in advance (the bar counts without a total)
        return None
    try:
        return path.stat().st_size
    except OSError:
        return None


def _one_line(error: BaseException) -> str:
    """The message on one line: its lines joined by ``; ``, runs of spaces made one.

    Joined by spaces only, ``3 problems:`` followed by its list would run the
    problems together with nothing to tell where one ends. What is left that is not
    printable is escaped: a message may quote a file name or an option as given.
    """
    lines = [printable(" ".join(line.split())) for line in str(error).splitlines()]
    first, *rest = [line for line in lines if line] or [""]
    if not rest:
        return first
    return first + (" " if first.endswith(":") else "; ") + "; ".join(rest)


def _print_error(error: BaseException, err: TextIO) -> None:
    """The CLI's error line: ``customer-session: error: <message on one line>``."""
    print(f"{PROG}: error: {_one_line(error)}", file=err)


def _command(args: argparse.Namespace, out: TextIO) -> int:
    """Run the command the arguments name."""
    if args.command == "diagram":
        return _diagram(args, out)
    if args.command == "validate":
        return _validate(args, out, sys.stderr)
    if args.command == "replay":
        return _replay(args, out, sys.stderr)
    if args.command == "migrate":
        return _migrate(args, out)
    inspect = {"show": _show, "history": _history, "outbox": _outbox}[args.command]
    try:
        return inspect(args, out)
    except (SessionNotFound, EffectNotPending) as error:
        # The store was read and the answer is "not there": an answer, not a failure.
        _print_error(error, sys.stderr)
        return EXIT_INVALID
    except SchemaNotReady as error:
        # The library's advice (migrate=True) is for Python; here it is a command.
        done = "creates one" if error.found == 0 else "migrates it"
        raise _UsageError(f"{error.database} {error.condition}; `{PROG} migrate` {done}") from error


@contextlib.contextmanager
def _unconfigured_logs_silenced() -> Generator[None]:
    """Drop what libraries log while logging is not configured, for the block.

    Logging's last-resort handler would print their warnings on standard error
    (psycopg's pool discarding a connection the server cut, say) beside the error
    line that already says what failed. A caller of :func:`main` that configured
    logging keeps every record.
    """
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    silent = logging.NullHandler()
    root.addHandler(silent)
    try:
        yield
    finally:
        root.removeHandler(silent)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        out: Where reports, ``--help`` and ``--version`` go (default: standard
            output). Errors and the progress bar always go to standard error.
    """
    stdout = out if out is not None else sys.stdout
    typed = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(out)
    try:
        args = parser.parse_args(typed)
    except SystemExit as exit_:  # argparse exits for --help and --version
        return int(exit_.code or 0)
    except _ArgumentsRefused as refused:
        print(_without_secrets(str(refused), typed), file=sys.stderr)
        return EXIT_USAGE
    try:
        with _unconfigured_logs_silenced():
            return _command(args, stdout)
    except (_UsageError, CustomerSessionError) as error:
        _print_error(error, sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output left (``| head``); a replay into a store has
        # still applied what it reports.
        if stdout is sys.stdout:
            _discard_stdout()
        print(f"{PROG}: error: standard output: cannot write (broken pipe)", file=sys.stderr)
        return EXIT_USAGE


def _without_secrets(message: str, typed: Sequence[str]) -> str:
    """``message`` with each word of ``typed`` it quotes shown without its secrets.

    A PostgreSQL URL given where another value belongs is quoted by argparse; its
    password, and any other secret parameter, is shown as ``***`` as the stores
    show them. Each word is looked for as typed and as ``repr`` quotes it.
    """
    # A longer word first: it may hold a shorter one.
    for word in sorted(set(typed), key=len, reverse=True):
        hidden = masked(word)
        if hidden != word:
            message = message.replace(repr(word), repr(hidden)).replace(word, hidden)
    return message


def _discard_stdout() -> None:
    """Point standard output at the null device, so the interpreter's last flush cannot fail."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor: nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
