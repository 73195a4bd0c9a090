import importlib
import inspect
import logging
import pkgutil
import re
from pathlib import Path

import pytest

import customer_session

from .conftest import loaded_by_import

# The public API, name by name: the package and every module whose dotted name has no
# part starting with an underscore, each with its __all__ exactly. Adding, removing or
# renaming a public name or module is a deliberate change: of this table, of the API
# reference (docs/api.md) and of the changelog.
PUBLIC_API: dict[str, list[str]] = {
    "customer_session": [
        "CUSTOMER_SESSION",
        "REOPENABLE_SESSION",
        "AdditionalCost",
        "AfterCommitHookFailed",
        "CartItem",
        "ConcurrentUpdate",
        "CorruptData",
        "CustomerSession",
        "CustomerSessionError",
        "Edge",
        "EffectNotPending",
        "Guard",
        "GuardRejected",
        "Hook",
        "HookFailed",
        "IllegalTransition",
        "JSONValue",
        "KeyAlreadyProcessed",
        "Phase",
        "PriceDetail",
        "Problem",
        "Product",
        "ProtectedFieldError",
        "Refusal",
        "Registration",
        "RenderingFailed",
        "RenderingUnavailable",
        "ReopenableCustomerSession",
        "ReturnedItem",
        "SchemaNotReady",
        "SessionExists",
        "SessionFields",
        "SessionNotEditable",
        "SessionNotFound",
        "Specification",
        "SpecificationError",
        "State",
        "StoreError",
        "StoreTimeout",
        "TransitionError",
        "TransitionEvent",
        "TransitionInProgress",
        "TransitionRecord",
        "Trigger",
        "UnknownTrigger",
        "UnsupportedSchema",
        "ValidationError",
        "Workflow",
        "WorkflowError",
        "utc_now",
    ],
    "customer_session.aio": ["AsyncReopenableSession", "AsyncSession"],
    "customer_session.cli": ["main"],
    "customer_session.diagrams": [
        "Arrow",
        "Format",
        "Graph",
        "Node",
        "extract",
        "output_format",
        "render",
        "to_dot",
        "to_image",
        "to_mermaid",
        "to_table",
    ],
    "customer_session.exceptions": [
        "AfterCommitHookFailed",
        "ConcurrentUpdate",
        "CorruptData",
        "CustomerSessionError",
        "EffectNotPending",
        "GuardRejected",
        "HookFailed",
        "IllegalTransition",
        "KeyAlreadyProcessed",
        "Problem",
        "ProtectedFieldError",
        "RenderingFailed",
        "RenderingUnavailable",
        "SchemaNotReady",
        "SessionExists",
        "SessionNotEditable",
        "SessionNotFound",
        "SpecificationError",
        "StoreError",
        "StoreTimeout",
        "TransitionError",
        "TransitionInProgress",
        "UnknownTrigger",
        "UnsupportedSchema",
        "ValidationError",
        "WorkflowError",
    ],
    "customer_session.hooks": [
        "Clock",
        "Guard",
        "Hook",
        "Refusal",
        "Registration",
        "Workflow",
        "utc_now",
    ],
    "customer_session.model": ["CustomerSession", "ReopenableCustomerSession", "SessionFields"],
    "customer_session.replay": [
        "MAX_DEPTH",
        "OPERATIONS",
        "RefusedLine",
        "ReplayReport",
        "Replayer",
        "with_progress",
    ],
    "customer_session.store": [
        "DEFAULT_RETRIES",
        "SCHEMA_VERSION",
        "AsyncPostgresStore",
        "DurableEffect",
        "Effect",
        "EffectHandler",
        "JournalEntry",
        "JournalKind",
        "PostgresStore",
        "ProcessedKey",
        "SQLiteStore",
        "SessionStore",
        "StoreReplayer",
        "open_store",
        "rebuild",
    ],
    "customer_session.testing": [
        "Path",
        "SessionStateMachine",
        "attribute_maps",
        "bad_values",
        "cart_items",
        "carts",
        "covering_paths",
        "follow",
        "integration_ids",
        "json_values",
        "parametrize_paths",
        "returned_items",
        "sessions",
        "shortest_paths",
        "trigger_sequences",
        "triggers",
        "wire_documents",
    ],
    "customer_session.wire": [
        "EXTENSION_KEY",
        "RETURN_RESPONSE_CONTENT",
        "TOTAL_TOLERANCE",
        "UPDATE_RESPONSE_CONTENT",
        "from_dict",
        "from_json",
        "from_v2_response",
        "new_session_fields",
        "return_request",
        "returned_items_from_json",
        "to_dict",
        "to_json",
        "update_request",
    ],
}


def public_modules() -> list[str]:
    """The package and every module in it whose dotted name has no private part."""
    found = pkgutil.walk_packages(customer_session.__path__, f"{customer_session.__name__}.")
    names = [m.name for m in found if not any(p.startswith("_") for p in m.name.split("."))]
    return sorted([customer_session.__name__, *names])


def kind(name: str) -> tuple[int, str]:
    """isort's order: constants, then classes, then functions, each alphabetical."""
    rank = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return rank, name


class TestPublicApi:
    def test_the_public_modules_are_pinned(self):
        """The public modules are exactly those PUBLIC_API pins, no more and no fewer."""
        assert public_modules() == sorted(PUBLIC_API)

    @pytest.mark.parametrize("module_name", PUBLIC_API)
    def test_all_is_pinned(self, module_name):
        """Each public module's __all__ is exactly the names PUBLIC_API pins, in its order."""
        assert importlib.import_module(module_name).__all__ == PUBLIC_API[module_name]

    @pytest.mark.parametrize("module_name", PUBLIC_API)
    def test_all_is_sorted(self, module_name):
        """Each __all__ is sorted isort-style: constants, then classes, then functions."""
        names = importlib.import_module(module_name).__all__
        assert names == sorted(names, key=kind)

    @pytest.mark.parametrize("module_name", PUBLIC_API)
    def test_all_names_exist(self, module_name):
        """Every name in a public module's __all__ can be imported from it."""
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert hasattr(module, name), name

    @pytest.mark.parametrize("module_name", PUBLIC_API)
    def test_every_public_name_it_defines_is_exported(self, module_name):
        """Each class and function a public module defines under a public name is in __all__."""
        module = importlib.import_module(module_name)
        defined = {
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (isinstance(obj, type) or inspect.isfunction(obj))
            and obj.__module__ == module_name
        }
        assert defined <= set(module.__all__)

    def test_public_names_have_docstrings(self):
        """Every exported class and function has a docstring."""
        for name in customer_session.__all__:
            obj = getattr(customer_session, name)
            if callable(obj) and not name.isupper():
                assert obj.__doc__, name

    def test_the_package_logger_has_a_null_handler_alone(self):
        """The package adds one handler, a NullHandler: the application decides where records go."""
        handlers = logging.getLogger("customer_session").handlers
        assert [type(handler) for handler in handlers] == [logging.NullHandler]

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
        assert loaded_by_import("customer_session", heavy) == []

    @pytest.mark.parametrize("module_name", PUBLIC_API)
    def test_every_public_module_is_in_the_api_reference(self, module_name):
        """Each public module has a section in the docs, or only re-exports documented names."""
        docs = Path(__file__).parent.parent / "docs"
        directives = "".join(page.read_text(encoding="utf-8") for page in docs.glob("*.md"))
        directive = r"^\.\. auto(?:module|function|class):: ([\w.]+)"
        found = re.findall(directive, directives, flags=re.MULTILINE)
        sections = set(found) | {name.rsplit(".", 1)[0] for name in found}
        # A module without a section of its own only re-exports names the package documents.
        reexports = set(PUBLIC_API[module_name]) <= set(PUBLIC_API["customer_session"])
        assert module_name in sections or reexports
