"""Shared pytest configuration: Hypothesis profiles, a stand-in for Graphviz's dot, PostgreSQL.

The PostgreSQL server is started once per test session, as the ``postgres`` system
user when the tests run as root (``initdb`` refuses root). Under CI (``CI`` set)
a server that cannot start fails the run: those tests are never skipped there.
"""

import contextlib
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest
from hypothesis import HealthCheck, settings

from customer_session import CartItem, CustomerSession

if TYPE_CHECKING:
    from pgserver import TemporaryPostgres

# A fast default for the edit-test loop and a thorough profile that CI selects.
settings.register_profile("fast", max_examples=60, deadline=None)
# This replaces Hypothesis's own "ci" profile, so each choice of it is made here.
# No deadline and no too_slow check: CI shares a busy machine. New examples on each
# run (not derandomized): a failure is a real bug found, and print_blob puts the
# @reproduce_failure line for it in the log. No example database: a CI run depends
# on no earlier run, not even one left in a developer's checkout by `bash .ci/run`.
settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    database=None,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def fake_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put a ``dot`` on PATH (alone) that runs the given shell script body instead."""

    def install(body: str) -> None:
        directory = tmp_path / "fake-dot"
        directory.mkdir(exist_ok=True)
        dot = directory / "dot"
        dot.write_text(f"#!/bin/sh\n{body}\n")
        dot.chmod(0o755)
        monkeypatch.setenv("PATH", str(directory))

    return install


def require(missing: list[str]) -> None:
    """Skip when something a test needs is ``missing``, but fail under CI (``CI`` set).

    What CI installs must be tested there: a test it cannot run is a failure, never
    a skip no one reads.
    """
    if missing:
        unavailable(" and ".join(missing))


def unavailable(what: str) -> NoReturn:
    """Skip the test, which needs ``what``, or fail it under CI (see :func:`require`)."""
    message = f"needs {what}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it (scripts/test.sh installs it)")
    pytest.skip(message)


def require_module(name: str, extra: str) -> ModuleType:
    """The module ``name``, which the package's ``extra`` installs (see :func:`require`)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        unavailable(f"{name} (pip install 'customer-session[{extra}]')")


def require_graphviz(*, dot: bool = True) -> None:
    """The graphviz package, and dot if ``dot``, are installed (see :func:`require`)."""
    missing: list[str] = []
    if importlib.util.find_spec("graphviz") is None:
        missing.append("the graphviz package (pip install 'customer-session[diagrams]')")
    if dot and shutil.which("dot") is None:
        missing.append("Graphviz's dot program (apt-get install graphviz)")
    require(missing)


@contextlib.contextmanager
def without_write_bits(path: Path) -> Iterator[None]:
    """Take the write bits of the file or directory ``path`` away, then give them back.

    They bind every user but root (see :func:`unwritable` for this process as root).
    """
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
    try:
        yield
    finally:
        path.chmod(mode)


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make the file or directory ``path`` unwritable for this process, then restore it.

    Root ignores permission bits, so as root the immutable attribute does it (which
    root cannot bypass either); where that cannot be set, the test is skipped (under
    CI, failed: see :func:`require`).
    """
    if os.geteuid() != 0:
        with without_write_bits(path):
            yield
        return
    chattr = shutil.which("chattr")
    if (
        chattr is None
        or subprocess.run([chattr, "+i", path], capture_output=True, check=False).returncode
    ):
        unavailable("the immutable attribute (chattr +i): no permission bit binds root")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", path], check=True)


@pytest.fixture
def graphviz_available() -> None:
    """The graphviz package and dot are installed (see require_graphviz)."""
    require_graphviz()


@pytest.fixture
def graphviz_package() -> None:
    """The graphviz package is installed, dot need not be (see require_graphviz)."""
    require_graphviz(dot=False)


@pytest.fixture
def full_disk() -> Callable[[int], contextlib.AbstractContextManager[None]]:
    """A context in which a write past ``size`` bytes of any file fails, as on a full disk.

    It lowers the file size limit (``RLIMIT_FSIZE``) of this process, so a write
    fails half-way whichever code does it, with ``EFBIG`` (``SIGXFSZ`` ignored).
    """
    resource = pytest.importorskip("resource")

    @contextlib.contextmanager
    def limited(size: int) -> Iterator[None]:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, ignored)

    return limited


@pytest.fixture
def silent_server() -> Iterator[int]:
    """The port of a server that takes connections and never says a word (a hung host).

    A listening socket nobody accepts from: the kernel completes the handshakes
    (then, its queue full, leaves the next ones unanswered), so a client waits for
    the server's first reply for as long as it lets itself.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        yield listener.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator["TemporaryPostgres"]:
    """A PostgreSQL server for the whole run (skipped outside CI when it cannot start)."""
    # Imported here: most tests need no store, and the package's import stays light.
    from pgserver import (  # noqa: PLC0415
        PostgresUnavailable,
        TemporaryPostgres,
    )

    try:
        import psycopg  # noqa: F401, PLC0415 - only checks that the extra is installed

        server = TemporaryPostgres().start()
    except (ImportError, PostgresUnavailable) as exc:
        reason = f"PostgreSQL tests need a server: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: these tests must run)", pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.stop()


def loaded_by_import(module: str, names: list[str]) -> list[str]:
    """Which of the modules ``names`` a fresh interpreter has loaded after importing ``module``."""
    script = f"import sys, {module}; print(','.join(m for m in {names!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    return loaded.split(",") if loaded else []


class _RaisingZone(tzinfo):
    """A time zone whose ``utcoffset()`` raises."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("the zone database is gone")


class _WrongTypeZone(tzinfo):
    """A time zone whose ``utcoffset()`` returns text (``datetime`` raises TypeError)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return "+01:00"  # type: ignore[return-value]


class _DayLongZone(tzinfo):
    """A time zone whose ``utcoffset()`` is a whole day (``datetime`` raises ValueError)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=24)


BROKEN_ZONE_TIMES = [
    pytest.param(datetime(2026, 3, 2, 10, 15, tzinfo=zone), id=name)
    for name, zone in [
        ("raises", _RaisingZone()),
        ("wrong-type", _WrongTypeZone()),
        ("day-long", _DayLongZone()),
    ]
]
"""Aware-looking times whose time zone fails: they have no time in UTC."""

BEYOND_UTC_TIMES = [
    pytest.param(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), id="early"),
    pytest.param(datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))), id="late"),
]
"""Aware times whose time in UTC falls outside the years 1 to 9999 that datetime holds."""

UNHASHABLE_TIME = datetime(2026, 3, 2, 10, 15, tzinfo=_RaisingZone())
"""A value whose hash raises RuntimeError, not TypeError (hash() asks the zone)."""


def edit_every_field(session: CustomerSession) -> None:
    """Change every field an edit can change (for tests that check they are put back)."""
    session.set_profile_id("profile-2")
    session.set_coupon("COUPON")
    session.set_referral("REFERRAL")
    session.set_identifiers(["device-1"])
    session.set_attribute("gift", True)
    session.set_additional_cost("shipping", 4.5)
    session.add_item(CartItem(sku="HAT", quantity=1, price=2.0))
