"""Sphinx configuration for the customer-session documentation.

Build with warnings as errors (as CI does)::

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any, Protocol

from pygments.lexers.special import TextLexer
from sphinx.util import logging

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

project = "customer-session"
author = "customer-session developers"
copyright = "2026, customer-session developers"
release = _version("customer-session")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Unresolved cross-references (type hints naming private or third-party types) are
# shown as plain text rather than reported.
nitpicky = False

# -- MyST -------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc and napoleon ---------------------------------------------------

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
# Keep the alias in signatures instead of expanding it into a long union.
autodoc_type_aliases = {"JSONValue": "customer_session.JSONValue"}
# ``Trigger`` rather than ``customer_session._spec.Trigger`` where a type is linked.
python_use_unqualified_type_names = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True

# -- HTML -------------------------------------------------------------------

html_theme = "furo"
html_title = f"customer-session {release}"

# -- checks and small fixes -------------------------------------------------

# Public names that must each be documented once in the API reference, and the
# modules under which the reference may document them.
_PUBLIC_MODULES = (
    "customer_session",
    "customer_session.testing",
    "customer_session.aio",
    "customer_session.store",
)
_DOCUMENTED_UNDER = (
    "customer_session",
    "customer_session.hooks",
    "customer_session.exceptions",
    "customer_session.testing",
    "customer_session.aio",
    "customer_session.store",
)

_logger = logging.getLogger(__name__)


def _named_defaults() -> dict[str, str]:
    """The reprs of the public specifications, mapped to their names.

    A default such as ``specification=CUSTOMER_SESSION`` would otherwise be shown as
    the full repr of the table. (``autodoc_preserve_defaults`` is no help: for attrs
    classes it shows the generated ``__init__``'s ``attr_dict[...]`` expressions.)
    """
    import customer_session  # noqa: PLC0415 - imported when Sphinx runs, not on import

    return {
        repr(value): name
        for name in customer_session.__all__
        if isinstance(value := getattr(customer_session, name), customer_session.Specification)
    }


def _clean_signature(
    _app: Sphinx,
    what: str,
    _name: str,
    obj: Any,
    _options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """Name the public specifications in defaults; drop protocols' signatures.

    A protocol is never instantiated, so its class signature is the meaningless
    ``(*args, **kwargs)``; its call signature is documented on its ``__call__``.
    """
    if what == "class" and isinstance(obj, type) and Protocol in getattr(obj, "__mro__", ()):
        return "", return_annotation
    if signature is None:
        return None
    for text, name in _named_defaults().items():
        signature = signature.replace(text, name)
    return signature, return_annotation


def _check_public_api(_app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) for a public name the API reference misses."""
    documented = set(env.domains["py"].objects)  # type: ignore[attr-defined]
    for module_name in _PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not any(f"{where}.{name}" in documented for where in _DOCUMENTED_UNDER):
                _logger.warning(
                    "%s.%s is public but not documented in the API reference",
                    module_name,
                    name,
                    location="api",
                )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the mermaid lexer alias, the signature clean-up and the API check."""
    # Pygments has no mermaid lexer; show ```mermaid blocks as plain text.
    app.add_lexer("mermaid", TextLexer)
    app.connect("autodoc-process-signature", _clean_signature)
    app.connect("env-check-consistency", _check_public_api)
    return {"parallel_read_safe": True}
