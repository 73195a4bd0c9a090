"""The distributions as a user installs them: the sdist and the wheel built from it.

The sdist is built from a copy of the project (so that stray files can be put beside
it), then the wheel from the unpacked sdist, as ``pip install`` of the sdist does.
hatchling builds both in-process in well under a second.
"""

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hatchling.builders.sdist import SdistBuilder
from hatchling.builders.wheel import WheelBuilder

from .conftest import loaded_by_import

ROOT = Path(__file__).resolve().parents[1]
# What the sdist is made of; anything else in the project directory stays out of it.
SHIPPED = [
    "CHANGELOG.md",
    "LICENSE",
    "README.md",
    "bench",
    "docs",
    "examples",
    "pyproject.toml",
    "scripts",
    "src",
    "tests",
]
SCHEMA = "customer_session/schemas/order-event.schema.json"
OPTIONAL = ["psycopg", "psycopg_pool", "graphviz", "hypothesis"]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist of a copy of the project that also holds a developer's stray files."""
    project = tmp_path_factory.mktemp("project")
    for name in [*SHIPPED, ".gitignore"]:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_build", ".hypothesis")
            shutil.copytree(source, project / name, ignore=ignore)
        elif source.exists():  # an unpacked sdist has no .gitignore
            shutil.copy2(source, project / name)
    (project / ".env").write_text("PGPASSWORD=secret\n")
    (project / "notes.txt").write_text("to do\n")
    (built,) = SdistBuilder(str(project)).build(
        directory=str(tmp_path_factory.mktemp("sdist")), versions=["standard"]
    )
    return Path(built)


@pytest.fixture(scope="module")
def sdist_names(sdist: Path) -> set[str]:
    """The sdist's file names, without the leading ``customer_session-VERSION/``."""
    with tarfile.open(sdist) as archive:
        return {name.partition("/")[2] for name in archive.getnames()}


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from the unpacked sdist."""
    unpacked = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (top,) = unpacked.iterdir()
    (built,) = WheelBuilder(str(top)).build(
        directory=str(tmp_path_factory.mktemp("wheel")), versions=["standard"]
    )
    with zipfile.ZipFile(built) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [p for p in wheel.namelist() if p.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


class TestSdist:
    def test_ships_what_builds_and_tests_the_package(self, sdist_names):
        """The sdist holds the sources, tests, test data, docs, examples and licence."""
        expected = {
            "pyproject.toml",
            "LICENSE",
            "README.md",
            "CHANGELOG.md",
            "src/customer_session/py.typed",
            f"src/{SCHEMA}",
            "tests/conftest.py",
            "tests/support/pgserver.py",
            "tests/data/session_v1.json",
            "docs/index.md",
            "docs/conf.py",
            "examples/orders.jsonl",
        }
        assert expected <= sdist_names

    def test_leaves_out_stray_files_beside_the_project(self, sdist_names):
        """Files in the project directory that are not the project's stay out of it."""
        top_level = {name.split("/")[0] for name in sdist_names}
        # hatchling adds the metadata and, so that a rebuild ignores the same files,
        # the .gitignore.
        assert top_level <= {*SHIPPED, "PKG-INFO", ".gitignore"}


class TestWheel:
    def test_ships_only_the_package(self, wheel):
        """Every file of the wheel is in the package or its metadata."""
        outside = [
            name
            for name in wheel.namelist()
            if not name.startswith(("customer_session/", "customer_session-"))
        ]
        assert outside == []

    def test_ships_the_type_marker_and_the_event_schema(self, wheel):
        """py.typed and the order-event JSON Schema are in the installed package."""
        assert {"customer_session/py.typed", SCHEMA} <= set(wheel.namelist())

    def test_declares_the_extras_the_docs_name(self, wheel):
        """The metadata offers the diagrams, postgres and testing extras."""
        metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
        assert {"diagrams", "postgres", "testing"} <= set(metadata.get_all("Provides-Extra"))

    def test_declares_python_licence_and_readme_format(self, wheel):
        """The metadata states the Python it needs, its licence and a Markdown readme."""
        metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
        assert metadata["Requires-Python"] == ">=3.11"
        assert metadata["License-Expression"] == "MIT"
        assert metadata["Description-Content-Type"] == "text/markdown"

    def test_installs_the_command(self, wheel):
        """The wheel installs ``customer-session``, which runs ``cli.main``."""
        scripts = _dist_info(wheel, "entry_points.txt")
        assert "customer-session = customer_session.cli:main" in scripts


class TestSuite:
    def test_collecting_the_docs_needs_no_sphinx(self):
        """The test extra runs the docs' doctests: collecting them never imports Sphinx."""
        script = (
            "import sys, pytest; sys.modules['sphinx'] = None; "
            "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'docs']))"
        )
        collected = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert collected.returncode == 0, collected.stdout + collected.stderr


class TestCommand:
    def test_start_up_loads_no_optional_dependency(self):
        """The command line's module imports none of the extras' packages."""
        assert loaded_by_import("customer_session.cli", OPTIONAL) == []
