import subprocess
import sys

import customer_session


class TestPublicApi:
    def test_all_is_sorted(self):
        """__all__ is sorted isort-style: constants, then classes, then functions."""

        def kind(name: str) -> tuple[int, str]:
            rank = 0 if name.isupper() else 1 if name[0].isupper() else 2
            return rank, name

        assert customer_session.__all__ == sorted(customer_session.__all__, key=kind)

    def test_all_names_exist(self):
        """Every name in __all__ is importable from the package."""
        for name in customer_session.__all__:
            assert hasattr(customer_session, name), name

    def test_public_names_have_docstrings(self):
        """Every exported class and function has a docstring."""
        for name in customer_session.__all__:
            obj = getattr(customer_session, name)
            if callable(obj) and not name.isupper():
                assert obj.__doc__, name

    def test_py_typed_is_shipped(self):
        """The package is marked as typed."""
        from importlib.resources import files  # noqa: PLC0415 - only this test needs it

        assert files("customer_session").joinpath("py.typed").is_file()

    def test_import_loads_no_optional_or_heavy_module(self):
        """Importing the package loads neither the extras, asyncio, SQLite nor the CLI."""
        heavy = [
            "asyncio",
            "argparse",
            "sqlite3",
            "psycopg",
            "graphviz",
            "hypothesis",
            "cattrs",
            "customer_session.cli",
            "customer_session.store",
        ]
        script = (
            "import sys, customer_session; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert loaded == ""
