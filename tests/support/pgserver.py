"""A throwaway PostgreSQL server, for this library's tests and benchmarks.

Not part of the library, so not in its wheel: the tests import it as ``pgserver``
(pytest's ``pythonpath`` holds ``tests/support``), and ``bench/store.py`` puts this
directory on ``sys.path`` itself.

It runs ``initdb`` and ``pg_ctl`` from the PostgreSQL binaries (``$PG_BIN``, else
the newest ``/usr/lib/postgresql/*/bin``, else the ``PATH``) on a temporary
directory, listening on 127.0.0.1 only, on a free port, with trust authentication
and its Unix socket inside that directory. ``initdb`` refuses to run as root, so
under root the server runs as the ``postgres`` system user (through ``runuser``).

The server lives no longer than the process that started it. Next to it runs a
watchdog: this file run as a script, in a session of its own (so that a signal to
the starter's process group, such as ``timeout``'s or a terminal's, spares it). It
holds the read end of a pipe whose write end only the starter holds; when the
starter dies in any way (a signal, ``os._exit``, a crash) the kernel closes that end,
the watchdog reads end-of-file, stops the server at once and deletes its directory.
The watchdog runs as the starter's user, so it may signal the server (which runs
as that user, or as ``postgres`` under root) and delete the directory. A process
forked from the starter gives up its copy of the write end, or the server would
outlive the starter for as long as the child lives; spawned and ``exec``-ed
processes, the server among them, never get it (it is not inheritable). Finally
:meth:`TemporaryPostgres.start` deletes the directories of earlier servers of this
launcher that no longer run, left by a watchdog that could not do its work.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from types import TracebackType

_SYSTEM_USER: Final = "postgres"
# Settings for tests: nothing needs to survive a crash of the machine.
_FAST: Final = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
# A port found free can be taken by another program before the server binds it.
_PORT_ATTEMPTS: Final = 5
# The name of every directory this launcher creates, and so of those it may delete.
_PREFIX: Final = "customer-session-pg-"
# The longest any step of a start may take: a younger directory with no server may be
# one that another process is still setting up, so the sweep of leftovers spares it.
_STEP_TIMEOUT: Final = 120
# How long a server gets to finish an immediate shutdown before it is killed.
_SHUTDOWN_WAIT: Final = 10


class PostgresUnavailable(RuntimeError):
    """The server could not be started (no binaries, no user to run it, a failed start)."""


def _bin_dir() -> Path:
    configured = os.environ.get("PG_BIN")
    if configured:
        return Path(configured)
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1]
    found = shutil.which("pg_ctl")
    if found is None:
        raise PostgresUnavailable(
            "no PostgreSQL binaries: set PG_BIN or install the server (e.g. postgresql-15)"
        )
    return Path(found).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_pid(data: Path) -> int | None:
    """The pid of the server that runs on the cluster ``data``, or ``None`` if none does.

    ``postmaster.pid`` outlives a server that was killed, and its pid may since name
    another process: only a live process whose working directory is ``data`` (the
    server changes into its data directory) counts.

    Raises:
        PermissionError: The lock file or the process cannot be inspected.
    """
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    proc = Path("/proc", str(pid))
    if not Path("/proc/self").exists():  # no procfs: the pid's existence must do
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid
    try:
        # A zombie (which no one may ever reap in a container) has exited.
        if (proc / "stat").read_text().rpartition(")")[2].split()[0] in {"Z", "X"}:
            return None
        runs_in = (proc / "cwd").readlink()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return pid if runs_in == data.resolve() else None


def _remove_leftovers() -> None:
    """Delete this launcher's directories whose server no longer runs.

    Only directories with the launcher's prefix, not symbolic links, untouched for
    longer than a start can take, and with no server running on them (or none
    that can be seen: an unreadable one is spared).
    """
    now = time.time()
    for candidate in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            status = candidate.lstat()
            if not stat.S_ISDIR(status.st_mode) or now - status.st_mtime < _STEP_TIMEOUT:
                continue
            if _server_pid(candidate / "data") is not None:
                continue
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
        shutil.rmtree(candidate, ignore_errors=True)


def _reap(directory: Path) -> None:
    """Stop the server running on ``directory`` at once, then delete the directory.

    An immediate shutdown (what ``pg_ctl stop -m immediate`` asks for), then a kill
    if the server is still there after :data:`_SHUTDOWN_WAIT` seconds. A starter that
    died during :meth:`TemporaryPostgres.start` may have left ``initdb`` or ``pg_ctl``
    running, which would go on writing in the directory (``initdb`` even creates it
    again): they are killed too. Whoever calls this must be allowed to signal them:
    their user, or root.
    """
    data = directory / "data"
    with contextlib.suppress(OSError):
        pid = _server_pid(data)
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            deadline = time.monotonic() + _SHUTDOWN_WAIT
            while _server_pid(data) == pid and time.monotonic() < deadline:
                time.sleep(0.05)
            if _server_pid(data) == pid:
                os.kill(pid, signal.SIGKILL)
    # Until the directory stays gone: a tool killed mid-write may leave a child
    # (initdb's bootstrap backend) writing on for a moment, so that one deletion
    # meets a directory not empty yet.
    deadline = time.monotonic() + _SHUTDOWN_WAIT
    while True:
        for pid in _processes_naming(directory):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists() or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def _processes_naming(directory: Path) -> list[int]:
    """The other processes whose command line names ``directory`` (none without procfs).

    Its name is unique, so they are this launcher's: the tools of a start, a server.
    """
    needle = os.fsencode(directory)
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            if needle in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def _watch(lifeline: int) -> None:
    """The watchdog: read the directory's name, then wait for end-of-file, then reap.

    The name comes through the pipe, not the command line, so that
    :func:`_processes_naming` does not count the watchdog among a start's tools.
    End-of-file comes when the starter's end of ``lifeline`` closes: after a normal
    :meth:`TemporaryPostgres.stop`, which leaves nothing to reap, or when it dies.
    """
    received = bytearray()
    with contextlib.suppress(OSError):
        while chunk := os.read(lifeline, 4096):
            received += chunk
    if received:
        _reap(Path(os.fsdecode(bytes(received))))


# Servers started by this process; a forked child gives up their lifelines.
_STARTED: weakref.WeakSet[TemporaryPostgres] = weakref.WeakSet()


def _disown_after_fork() -> None:
    for server in list(_STARTED):
        server._disown()  # the launcher's own bookkeeping
    _STARTED.clear()


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory; :meth:`start`, then :meth:`stop`.

    Args:
        durable: Keep PostgreSQL's crash-safety settings (for benchmarks); by
            default ``fsync`` and synchronous commits are off, which is faster.
    """

    def __init__(self, *, durable: bool = False) -> None:
        """Prepare; nothing runs until :meth:`start`."""
        self.durable = durable
        self.directory: Path | None = None
        self.port = 0
        self._bin = Path()
        self._as_user: list[str] = []
        self._lifeline: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> Self:
        """Create the cluster and start the server; wait until it accepts connections.

        Any failure stops what was started and deletes the directory; so does the
        watchdog if this process dies, whenever that happens.

        Raises:
            PostgresUnavailable: With the reason and the end of the server's log.
        """
        _remove_leftovers()
        self._bin = _bin_dir()
        for tool in ("initdb", "pg_ctl"):
            if not (self._bin / tool).exists():
                raise PostgresUnavailable(f"{self._bin / tool} does not exist")
        self.directory = Path(tempfile.mkdtemp(prefix=_PREFIX))
        try:
            self._start_watchdog()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_watchdog(self) -> None:
        assert self.directory is not None  # set by start()
        # os.pipe() makes both ends non-inheritable: only pass_fds hands the read end on.
        read_end, self._lifeline = os.pipe()
        _STARTED.add(self)
        try:
            self._watchdog = subprocess.Popen(  # our own command line, no shell
                [sys.executable, "-I", "-S", __file__, str(read_end)],
                pass_fds=(read_end,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        # A path is far shorter than a pipe's buffer: this write never blocks.
        os.write(self._lifeline, os.fsencode(self.directory))

    def _disown(self) -> None:
        """In a forked child: close the inherited lifeline; the watchdog is not ours."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        self._watchdog = None

    def _start_server(self) -> None:
        assert self.directory is not None  # set by start()
        if os.geteuid() == 0:
            self._run_as_system_user()
        data = self.directory / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        log = self.directory / "server.log"
        attempt = 0
        while True:
            attempt += 1
            self.port = _free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.directory}",
                "-c max_connections=200",
                *(() if self.durable else _FAST),
            ]
            log.unlink(missing_ok=True)  # so that the log tells of this attempt only
            try:
                self._run(
                    "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
                    "-o", " ".join(options), "start",
                )  # fmt: skip
            except PostgresUnavailable as exc:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                if "Address already in use" in tail and attempt < _PORT_ATTEMPTS:
                    continue  # taken meanwhile: try another port
                raise PostgresUnavailable(f"{exc}\n{tail}") from None
            return

    def _run_as_system_user(self) -> None:
        assert self.directory is not None  # set by start()
        try:
            user = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, and initdb refuses root: create a {_SYSTEM_USER!r} user"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root, and runuser is missing")
        os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._as_user = [runuser, "-u", _SYSTEM_USER, "--"]

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self._bin / tool), *args]
        result = subprocess.run(  # our own command line, no shell
            command, capture_output=True, text=True, check=False, timeout=_STEP_TIMEOUT
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )

    def stop(self) -> None:
        """Stop the server at once and delete its directory; the watchdog then exits."""
        try:
            if self.directory is not None:
                _reap(self.directory)  # what the watchdog does when this process dies
                self.directory = None
        finally:
            self._release_watchdog()

    def restart(self) -> None:
        """Restart the server on the same port: a fast shutdown, which ends every session.

        It waits until the server accepts connections again.
        """
        assert self.directory is not None  # started
        # With its log file, as start(): else the new server writes to pg_ctl's output,
        # and the pipe that _run reads it from never ends.
        self._run(
            "pg_ctl", "-D", str(self.directory / "data"), "-l", str(self.directory / "server.log"),
            "-m", "fast", "-w", "-t", "60", "restart",
        )  # fmt: skip

    def _release_watchdog(self) -> None:
        # Closing the lifeline wakes the watchdog; it reaps whatever stop() could not.
        _STARTED.discard(self)
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=2 * _SHUTDOWN_WAIT)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def fresh_schema(self) -> str:
        """A URL whose ``search_path`` is a new, empty schema (a database of its own)."""
        import psycopg  # noqa: PLC0415 - optional dependency

        name = f"s_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


os.register_at_fork(after_in_child=_disown_after_fork)

if __name__ == "__main__":  # the watchdog, started by TemporaryPostgres.start()
    _watch(int(sys.argv[1]))
