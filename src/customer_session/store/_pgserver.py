"""A throwaway PostgreSQL server, for this library's tests and benchmarks.

Not part of the API. It runs ``initdb`` and ``pg_ctl`` from the PostgreSQL
binaries (``$PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``, else the
``PATH``) on a temporary directory, listening on 127.0.0.1 only, on a free port,
with trust authentication and its Unix socket inside that directory. ``initdb``
refuses to run as root, so under root the server runs as the ``postgres`` system
user (through ``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from types import TracebackType

_SYSTEM_USER: Final = "postgres"
# Settings for tests: nothing needs to survive a crash of the machine.
_FAST: Final = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
# A port found free can be taken by another program before the server binds it.
_PORT_ATTEMPTS: Final = 5


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

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> Self:
        """Create the cluster and start the server; wait until it accepts connections.

        Raises:
            PostgresUnavailable: With the reason and the end of the server's log.
        """
        self._bin = _bin_dir()
        for tool in ("initdb", "pg_ctl"):
            if not (self._bin / tool).exists():
                raise PostgresUnavailable(f"{self._bin / tool} does not exist")
        self.directory = Path(tempfile.mkdtemp(prefix="customer-session-pg-"))
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
                self.stop()
                raise PostgresUnavailable(f"{exc}\n{tail}") from None
            return self

    def _run_as_system_user(self) -> None:
        assert self.directory is not None  # noqa: S101 - set by start()
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
        result = subprocess.run(  # noqa: S603 - our own command line, no shell
            command, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )

    def stop(self) -> None:
        """Stop the server at once and delete its directory."""
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

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
