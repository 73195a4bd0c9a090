"""The throwaway PostgreSQL server the store tests start for themselves (``pgserver``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pgserver
from pgserver import PostgresUnavailable, TemporaryPostgres

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.postgres

# A process that starts a server, optionally forks a child that outlives it, prints
# the server's directory and the child's pid, then waits to be killed. Told "initdb",
# it prints them as it runs initdb, to be killed in the middle of its start. The
# launcher's directory comes second: pytest's ``pythonpath`` does not reach a child.
STARTER = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
from pgserver import TemporaryPostgres

if sys.argv[1] == "initdb":
    run = TemporaryPostgres._run
    def announce(self, tool, *args):
        if tool == "initdb":
            print(self.directory, 0, flush=True)
        run(self, tool, *args)
    TemporaryPostgres._run = announce
server = TemporaryPostgres().start()
child = os.fork() if sys.argv[1] == "fork" else 0
if sys.argv[1] == "fork" and child == 0:
    time.sleep(600)
    os._exit(0)
print(server.directory, child, flush=True)
time.sleep(600)
"""
SUPPORT = str(Path(pgserver.__file__).parent)
DEADLINE = 60.0


def running(pid: int) -> bool:
    """Whether the process ``pid`` exists and has not exited (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def leftover(root: Path, *, age: float, pid: int | None = None) -> Path:
    """A directory as the launcher leaves it, last changed ``age`` seconds ago."""
    directory = Path(tempfile.mkdtemp(prefix=pgserver._PREFIX, dir=root))
    data = directory / "data"
    data.mkdir()
    if pid is not None:
        (data / "postmaster.pid").write_text(f"{pid}\n{data}\n")
    then = time.time() - age
    os.utime(directory, (then, then))
    return directory


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_port_taken_before_the_server_binds_it_is_replaced(pg_server, monkeypatch):
    """A port another program takes between the probe and the start: the server takes another."""
    import psycopg  # noqa: PLC0415 - optional dependency

    probed = pgserver._free_port

    def ports() -> Iterator[int]:
        yield pg_server.port  # found free, then bound by another server before this one
        while True:
            yield probed()

    monkeypatch.setattr(pgserver, "_free_port", ports().__next__)
    with TemporaryPostgres() as server:
        assert server.port != pg_server.port
        with psycopg.connect(server.url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="watches processes through /proc")
class TestLifetime:
    @pytest.mark.parametrize(
        ("how", "signum", "group"),
        [
            ("alone", signal.SIGKILL, False),
            ("alone", signal.SIGTERM, True),
            ("fork", signal.SIGKILL, False),
        ],
        ids=["SIGKILL", "SIGTERM-to-its-process-group", "SIGKILL-with-a-forked-child-alive"],
    )
    def test_a_killed_starter_leaves_no_server_and_no_directory(self, how, signum, group):
        """A starter killed (as ``timeout`` kills, or with a forked child alive) leaves nothing."""
        starter = subprocess.Popen(
            [sys.executable, "-c", STARTER, how, SUPPORT],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as under ``timeout``
        )
        assert starter.stdout is not None
        child, directory = 0, None
        try:
            line = starter.stdout.readline().split()
            assert line, "the starter could not start a server"
            directory, child = Path(line[0]), int(line[1])
            server = int((directory / "data" / "postmaster.pid").read_text().split()[0])
            assert running(server)
            if group:  # what ``timeout`` does: the watchdog must not be in the group
                os.killpg(starter.pid, signum)
            else:
                starter.send_signal(signum)
            assert starter.wait(timeout=DEADLINE) == -signum
            deadline = time.monotonic() + DEADLINE
            while (running(server) or directory.exists()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not running(server), "the server outlived its starter"
            assert not directory.exists(), "the directory outlived its starter"
        finally:
            if starter.poll() is None:
                starter.kill()
                starter.wait()
            if child:
                os.kill(child, signal.SIGKILL)
            if directory is not None:  # a failed test leaves no stray server either
                pgserver._reap(directory)
            starter.stdout.close()

    def test_a_starter_killed_during_initdb_leaves_nothing(self):
        """A starter killed while initdb runs leaves no directory and no initdb running."""
        starter = subprocess.Popen(
            [sys.executable, "-c", STARTER, "initdb", SUPPORT], stdout=subprocess.PIPE, text=True
        )
        assert starter.stdout is not None
        directory = None
        try:
            line = starter.stdout.readline().split()
            assert line, "the starter did not reach initdb"
            directory = Path(line[0])
            deadline = time.monotonic() + DEADLINE
            while not (directory / "data").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # initdb is at work once it has created the cluster
            starter.kill()
            starter.wait()
            while (
                directory.exists() or pgserver._processes_naming(directory)
            ) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pgserver._processes_naming(directory), "initdb outlived its starter"
            assert not directory.exists(), "the directory outlived its starter"
        finally:
            if starter.poll() is None:
                starter.kill()
                starter.wait()
            if directory is not None:  # a failed test leaves no stray either
                pgserver._reap(directory)
            starter.stdout.close()

    def test_a_normal_stop_leaves_no_watchdog_behind(self):
        """stop() stops the server, and its watchdog exits quietly before stop() returns."""
        server = TemporaryPostgres().start()
        directory, watchdog = server.directory, server._watchdog
        assert directory is not None
        assert watchdog is not None
        assert watchdog.poll() is None
        postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
        server.stop()
        assert not running(postmaster)
        assert not directory.exists()
        assert watchdog.returncode == 0
        assert not running(watchdog.pid)
        assert server._watchdog is None


class TestLeftovers:
    @pytest.fixture
    def root(self, tmp_path, monkeypatch) -> Path:
        """The temporary directory where the launcher looks (a test's own)."""
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        return tmp_path

    def test_start_removes_a_directory_without_a_server(self, root, monkeypatch):
        """start() deletes an old directory of the launcher with no postmaster.pid in it."""
        old = leftover(root, age=3600)
        monkeypatch.setenv("PG_BIN", str(root / "nothing"))  # start fails after the sweep
        with pytest.raises(PostgresUnavailable):
            TemporaryPostgres().start()
        assert not old.exists()

    def test_a_directory_naming_a_dead_server_is_removed(self, root):
        """An old directory whose postmaster.pid names an exited process is deleted."""
        old = leftover(root, age=3600, pid=dead_pid())
        pgserver._remove_leftovers()
        assert not old.exists()

    def test_a_directory_naming_a_reused_pid_is_removed(self, root):
        """An old directory whose pid now names a process running elsewhere is deleted."""
        old = leftover(root, age=3600, pid=os.getpid())
        pgserver._remove_leftovers()
        assert not old.exists()

    def test_a_young_directory_is_kept(self, root):
        """A directory changed within a start's time may be another start's: it is kept."""
        young = leftover(root, age=5)
        pgserver._remove_leftovers()
        assert young.exists()

    def test_only_the_launchers_directories_are_removed(self, root):
        """An old directory without the launcher's prefix is left alone."""
        other = root / "someone-else"
        other.mkdir()
        os.utime(other, (0, 0))
        pgserver._remove_leftovers()
        assert other.exists()

    def test_a_running_servers_directory_is_kept(self, pg_server):
        """The directory of a running server is kept, however old."""
        import psycopg  # noqa: PLC0415 - optional dependency

        directory = pg_server.directory
        assert directory is not None
        os.utime(directory, (0, 0))
        pgserver._remove_leftovers()
        assert (directory / "data" / "postmaster.pid").exists()
        with psycopg.connect(pg_server.url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
