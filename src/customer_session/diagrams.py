"""Diagrams of a specification or of one session: Mermaid, DOT and Markdown text, images.

Diagrams are a pipeline. :func:`extract` turns a :class:`~customer_session.Specification`
(and optionally a workflow and a session) into a small immutable :class:`Graph`; one
renderer per format turns that graph into text. The text renderers need nothing
beyond this package and are deterministic: everything is laid out in the order the
specification declares, so the same input always gives byte-identical output.

Images (:func:`to_image`, :func:`render`) need the optional ``graphviz`` package
(``pip install 'customer-session[diagrams]'``) and Graphviz's ``dot`` program.
:func:`output_format` is the rule for a file's format: the one asked for or the one
its extension names, never two that disagree.

What the diagrams show:

* every state and every edge of the table, labelled with its trigger; an internal
  transition (``return_items`` from ``partially_returned``) is a self-loop;
* the initial states (``[*] --> open`` in Mermaid, arrows from a point in DOT) and
  the terminal states (``cancelled --> [*]``, a double circle in DOT);
* with ``workflow=``: the edges whose trigger has a guard, as ``close [guarded]``
  (dashed in DOT);
* with ``session=``: its current state (filled), the states it passed through and
  the edges its history took (``[taken]``, bold and coloured in DOT).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeAlias, get_args

from attrs import frozen

from customer_session._cart import is_text
from customer_session._files import write_atomically
from customer_session._phase import Phase
from customer_session._show import shown
from customer_session._spec import CUSTOMER_SESSION, Specification, State, Trigger
from customer_session.exceptions import (
    RenderingFailed,
    RenderingUnavailable,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Workflow
from customer_session.model import CustomerSession

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
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
]

_CURRENT_FILL: Final = "#40E0D0"
_TAKEN_COLOUR: Final = "#1F77B4"
# No State value can collide with it: states are a closed enum of snake_case words.
_START: Final = "__start__"
Format: TypeAlias = Literal["mermaid", "dot", "table", "svg", "png"]
"""A diagram format: the text of one of the ``to_*`` renderers, or an image."""
_FORMATS: Final = ("svg", "png")
_ALL_FORMATS: Final[tuple[Format, ...]] = get_args(Format)
# The formats a file's extension names; any other extension (.md, .txt) names none.
_SUFFIX_FORMATS: Final[dict[str, Format]] = {
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
}
_INSTALL_PACKAGE: Final = "pip install 'customer-session[diagrams]'"
_INSTALL_DOT: Final = (
    "install Graphviz, e.g. apt-get install graphviz (Debian, Ubuntu), "
    "brew install graphviz (macOS), or see https://graphviz.org/download/"
)


# -- the graph model -----------------------------------------------------------


@frozen
class Node:
    """A state as a diagram shows it.

    Attributes:
        state: The state.
        initial: Whether a new session may start here.
        terminal: Whether no edge leaves it.
        current: Whether the highlighted session is in it.
        visited: Whether the highlighted session's history passed through it.
    """

    state: State
    initial: bool = False
    terminal: bool = False
    current: bool = False
    visited: bool = False


@frozen
class Arrow:
    """An edge of the table as a diagram shows it.

    Attributes:
        source: Where it starts.
        trigger: What fires it.
        destination: Where it ends (``source`` again for an internal transition).
        guarded: Whether the workflow has a guard for ``trigger``.
        taken: How many times the highlighted session's history took it.
    """

    source: State
    trigger: Trigger
    destination: State
    guarded: bool = False
    taken: int = 0

    @property
    def internal(self) -> bool:
        """Whether it is a self-loop (an internal transition)."""
        return self.source is self.destination

    @property
    def label(self) -> str:
        """The trigger's name with its marks, e.g. ``close [guarded] [taken]``."""
        marks = [str(self.trigger)]
        if self.guarded:
            marks.append("[guarded]")
        if self.taken == 1:
            marks.append("[taken]")
        elif self.taken > 1:
            marks.append(f"[taken {self.taken}x]")
        return " ".join(marks)


@frozen
class Graph:
    """The states and edges of a specification, in its declared order, ready to draw.

    Attributes:
        name: The specification's name.
        nodes: One node per state, in the order of ``Specification.states``.
        arrows: One arrow per edge, in the order of the table.
    """

    name: str
    nodes: tuple[Node, ...]
    arrows: tuple[Arrow, ...]

    @property
    def initial(self) -> tuple[State, ...]:
        """The initial states, in declared order."""
        return tuple(node.state for node in self.nodes if node.initial)

    @property
    def terminal(self) -> tuple[State, ...]:
        """The terminal states, in declared order."""
        return tuple(node.state for node in self.nodes if node.terminal)


def extract(
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
) -> Graph:
    """The graph to draw: the table, its guards, and one session's path.

    Args:
        specification: The table (default: the session's, else ``CUSTOMER_SESSION``).
        session: A session whose current state and history to highlight.
        workflow: Whose guards to mark (default: the session's workflow, if any).

    Returns:
        The graph, with nodes and arrows in the specification's declared order.

    Raises:
        ValidationError: An argument is not of its kind (a ``Specification``, a
            ``CustomerSession``, a ``Workflow``), or ``specification`` is not the
            one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
    """
    _check_kinds(specification, session, workflow)
    spec = _specification(specification, session)
    if workflow is None and session is not None:
        workflow = session.workflow
    if workflow is not None and workflow.specification != spec:
        raise WorkflowError(f"{shown(workflow)} drives another specification than {spec.name!r}")
    guarded = _guarded_triggers(workflow)
    taken: Counter[tuple[State, Trigger]] = Counter()
    visited: set[State] = set()
    if session is not None:
        for record in session.history:
            taken[record.source, record.trigger] += 1
            visited.update((record.source, record.destination))
    nodes = tuple(
        Node(
            state,
            initial=state in spec.initial_states,
            terminal=state in spec.terminal_states,
            current=session is not None and session.state is state,
            visited=state in visited,
        )
        for state in spec.states
    )
    arrows = tuple(
        Arrow(
            edge.source,
            edge.trigger,
            edge.destination,
            guarded=edge.trigger in guarded,
            taken=taken[edge.source, edge.trigger],
        )
        for edge in spec.edges
    )
    return Graph(spec.name, nodes, arrows)


def _check_kinds(specification: object, session: object, workflow: object) -> None:
    """Refuse an argument of the wrong kind, which would fail deep inside as a bare error."""
    for name, value, kind in (
        ("specification", specification, Specification),
        ("session", session, CustomerSession),
        ("workflow", workflow, Workflow),
    ):
        if value is not None and not isinstance(value, kind):
            raise ValidationError.single(
                "diagram", name, f"must be a {kind.__name__} or None, got {shown(value):.80}"
            )


def _specification(
    specification: Specification | None, session: CustomerSession | None
) -> Specification:
    if session is None:
        return CUSTOMER_SESSION if specification is None else specification
    own = type(session).specification
    if specification is not None and specification != own:
        raise ValidationError.single(
            "diagram",
            "specification",
            f"{specification.name!r} is not the specification of "
            f"{type(session).__name__} ({own.name!r}); leave it out to use the session's",
        )
    return own


def _guarded_triggers(workflow: Workflow | None) -> frozenset[Trigger]:
    if workflow is None:
        return frozenset()
    keys = {r.key for r in workflow.registrations if r.phase is Phase.GUARD}
    # A guard registered without a trigger (key None) runs for every trigger.
    if None in keys:
        return frozenset(workflow.specification.triggers)
    return frozenset(key for key in keys if isinstance(key, Trigger))


# -- the text renderers --------------------------------------------------------


def to_mermaid(
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
) -> str:
    """A Mermaid ``stateDiagram-v2`` of the table (arguments as for :func:`extract`).

    Mermaid cannot style single transitions, so guarded and taken edges are marked
    in their labels; the current and visited states get the classes ``current``
    and ``visited``.

    Raises:
        ValidationError: ``specification`` is not the one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
    """
    graph = extract(specification, session=session, workflow=workflow)
    lines = [
        "---",
        # A JSON string is a valid YAML scalar, whatever the name contains.
        f"title: {json.dumps(graph.name)}",
        "---",
        "stateDiagram-v2",
        "    direction LR",
    ]
    lines.extend(f"    [*] --> {state}" for state in graph.initial)
    lines.extend(f"    {a.source} --> {a.destination} : {a.label}" for a in graph.arrows)
    lines.extend(f"    {state} --> [*]" for state in graph.terminal)
    current = [str(node.state) for node in graph.nodes if node.current]
    visited = [str(node.state) for node in graph.nodes if node.visited and not node.current]
    if current:
        lines.append(f"    classDef current fill:{_CURRENT_FILL},stroke:#333,stroke-width:2px")
        lines.append(f"    class {','.join(current)} current")
    if visited:
        lines.append(f"    classDef visited stroke:{_TAKEN_COLOUR},stroke-width:2px")
        lines.append(f"    class {','.join(visited)} visited")
    return "\n".join(lines) + "\n"


def to_dot(
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
) -> str:
    """A Graphviz DOT digraph of the table (arguments as for :func:`extract`).

    Initial states are entered from a point; terminal states are double circles;
    guarded edges are dashed; the current state is filled and the edges its history
    took are bold and coloured.

    Raises:
        ValidationError: ``specification`` is not the one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
    """
    graph = extract(specification, session=session, workflow=workflow)
    lines = [
        f"digraph {_identifier(graph.name)} {{",
        "    rankdir=LR;",
        "    node [shape=ellipse];",
        f'    "{_START}" [shape=point, label=""];',
    ]
    lines.extend(f'    "{node.state}"{_attributes(_node_style(node))};' for node in graph.nodes)
    lines.extend(f'    "{_START}" -> "{state}";' for state in graph.initial)
    for arrow in graph.arrows:
        style = {"label": _quote(arrow.label), **_arrow_style(arrow)}
        lines.append(f'    "{arrow.source}" -> "{arrow.destination}"{_attributes(style)};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_style(node: Node) -> dict[str, str]:
    style: dict[str, str] = {}
    if node.terminal:
        style["shape"] = "doublecircle"
    if node.current:
        style.update(style="filled", fillcolor=_quote(_CURRENT_FILL), penwidth="2")
    elif node.visited:
        style.update(color=_quote(_TAKEN_COLOUR), penwidth="2")
    return style


def _arrow_style(arrow: Arrow) -> dict[str, str]:
    style: dict[str, str] = {}
    if arrow.guarded:
        style["style"] = "dashed"
    if arrow.taken:
        colour = _quote(_TAKEN_COLOUR)
        style.update(color=colour, fontcolor=colour, penwidth="2.5")
    return style


def _attributes(style: dict[str, str]) -> str:
    if not style:
        return ""
    return " [" + ", ".join(f"{key}={value}" for key, value in style.items()) + "]"


def _identifier(text: str) -> str:
    r"""A DOT double-quoted identifier that ``dot`` reads back as exactly ``text``.

    Unlike a label (an escString, see :func:`_quote`), an identifier keeps every
    backslash: dot's scanner turns only ``\"`` into a quote, so doubling a
    backslash would double it in the graph's name (the SVG ``<title>``). An odd
    run of backslashes right before a quote or at the end cannot be written;
    :class:`Specification` refuses such names.
    """
    return '"' + text.replace('"', '\\"') + '"'


def _quote(text: str) -> str:
    r"""A DOT label (escString): backslashes, quotes and newlines are escaped.

    In a label ``dot`` reads ``\\`` as one backslash, and ``\n``, ``\l``,
    ``\N`` and the like as escapes, so every backslash is doubled.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_table(
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
) -> str:
    """A Markdown table of the edges: ``source | trigger | destination``, in table order.

    The trigger cell carries the same marks as the diagrams' labels (``[guarded]``,
    ``[taken]``); initial and terminal states are not shown.

    Raises:
        ValidationError: ``specification`` is not the one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
    """
    graph = extract(specification, session=session, workflow=workflow)
    lines = ["| source | trigger | destination |", "| --- | --- | --- |"]
    lines.extend(f"| {a.source} | {a.label} | {a.destination} |" for a in graph.arrows)
    return "\n".join(lines) + "\n"


# -- images --------------------------------------------------------------------


def to_image(
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
    format: Literal["svg", "png"] = "svg",  # noqa: A002 - the word Graphviz and its users use
) -> bytes:
    """:func:`to_dot`'s diagram drawn by Graphviz as SVG or PNG bytes.

    Args:
        specification: As for :func:`extract`.
        session: As for :func:`extract`.
        workflow: As for :func:`extract`.
        format: ``"svg"`` or ``"png"``.

    Returns:
        The image, as ``dot`` wrote it.

    Raises:
        ValidationError: ``format`` is not ``"svg"`` or ``"png"``, or ``specification``
            is not the one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
        RenderingUnavailable: The ``graphviz`` package or the ``dot`` program is
            missing; the message says what to install.
        RenderingFailed: ``dot`` is installed but failed, was killed, could not
            be started or wrote nothing; the message has its exit status and first
            error line.
    """
    _check_format(format, "to_image()")
    return _draw(to_dot(specification, session=session, workflow=workflow), format)


def _check_format(format: str, subject: str) -> None:  # noqa: A002 - as in to_image
    if format not in _FORMATS:
        raise ValidationError.single(
            subject, "format", f"must be one of {', '.join(_FORMATS)}, got {shown(format)}"
        )


def output_format(path: str | PathLike[str], format: Format | None = None) -> Format | None:  # noqa: A002 - as in to_image
    """The format of a diagram written to ``path``: ``format``, else the one its extension names.

    The extensions that name a format are ``.mmd`` and ``.mermaid`` (Mermaid), ``.dot``
    and ``.gv`` (DOT), ``.svg`` and ``.png``, in any case; other extensions (``.md``,
    ``.txt``) and none name no format. A ``format`` the extension contradicts, such
    as PNG bytes in ``states.svg``, is refused: it is a mistake whichever of the two
    is wrong. :func:`render` and the ``customer-session diagram`` command both
    follow this rule.

    Args:
        path: The file to write.
        format: The format asked for, or ``None`` to take the extension's.

    Returns:
        ``format`` if given, else the format the extension names, else ``None``
        (the caller's default applies: SVG for :func:`render`).

    Raises:
        ValidationError: ``format`` is not one of ``mermaid``, ``dot``, ``table``,
            ``svg``, ``png`` or ``None``; the extension names another format; or
            ``path`` is not a path, or one no file can have (empty, NUL, a lone
            surrogate). The error's subject is the path.
    """
    try:
        suffix = Path(path).suffix
    except TypeError:
        raise ValidationError.single(
            "output_format()", "path", f"must be a str or os.PathLike, got {shown(path):.80}"
        ) from None
    # No file can have these names: the OS refuses NUL, and a lone surrogate has no
    # UTF-8 encoding; "" names no file (pathlib reads it as the directory ".").
    if os.fspath(path) == "" or not is_text(os.fspath(path)):
        raise ValidationError.single(
            "output_format()", "path", f"must name a file, got {shown(path):.80}"
        )
    if format is not None and format not in _ALL_FORMATS:
        raise ValidationError.single(
            os.fspath(path),
            "format",
            f"must be one of {', '.join(_ALL_FORMATS)}, got {shown(format):.80}",
        )
    named = _SUFFIX_FORMATS.get(suffix.lower())
    if format is None:
        return named
    if named is not None and named != format:
        raise ValidationError.single(
            os.fspath(path),
            "format",
            f"a {suffix} file is for {named!r}, not {format!r}; change the extension or the format",
        )
    return format


def _draw(source: str, format: str) -> bytes:  # noqa: A002 - as in to_image
    """Run ``dot`` on ``source``; every way it can fail becomes one of our errors."""
    try:
        # Imported here: the package is an optional extra, and the text renderers
        # must work without it.
        import graphviz  # type: ignore[import-untyped] # noqa: PLC0415 - optional dependency
    except ImportError:
        raise RenderingUnavailable("the Python package 'graphviz'", _INSTALL_PACKAGE) from None
    # Checked up front so the error is ours, not a subprocess failure from inside graphviz.
    if shutil.which("dot") is None:
        raise RenderingUnavailable("Graphviz's 'dot' program", _INSTALL_DOT)
    command = f"dot -T{format}"
    try:
        # quiet: what dot prints on standard error goes into our error, not around it.
        image: bytes = graphviz.Source(source).pipe(format=format, engine="dot", quiet=True)
    except graphviz.ExecutableNotFound:
        raise RenderingUnavailable("Graphviz's 'dot' program", _INSTALL_DOT) from None
    except graphviz.CalledProcessError as error:
        raise RenderingFailed(command, _dot_failure(error.returncode, error.stderr)) from None
    except OSError as error:  # found on PATH but not startable (permissions, not a program)
        raise RenderingFailed(command, f"cannot start it ({error.strerror})") from None
    if not image:
        # No image is never right; writing it would leave an empty file behind.
        raise RenderingFailed(command, "exit status 0 but it wrote no image")
    return image


def _dot_failure(returncode: int, stderr: bytes | None) -> str:
    """Why dot failed: its exit status (or signal) and the first line of its stderr."""
    status = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    text = (stderr or b"").decode("utf-8", "replace")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{status}: {first}" if first else status


def render(
    path: str | PathLike[str],
    specification: Specification | None = None,
    *,
    session: CustomerSession | None = None,
    workflow: Workflow | None = None,
    format: Literal["svg", "png"] | None = None,  # noqa: A002 - the word Graphviz and its users use
) -> Path:
    """Draw :func:`to_dot`'s diagram as an SVG or PNG image at ``path``.

    The format is ``format``, else the one ``path``'s extension names (``.svg``,
    ``.png``), else SVG; an extension that names another format is refused, as
    :func:`output_format` says. The image is made first (:func:`to_image`), then
    written to a temporary file beside ``path`` and renamed over it, so ``path``
    holds either its old content or the whole new image, never part of it: when
    anything fails, a full disk or an interrupt during the write included, it is
    not touched and no temporary file is left. A new file gets the mode a plain
    write gives it; an existing one keeps its own.

    Args:
        path: The file to write (overwritten; its directory must exist).
        specification: As for :func:`extract`.
        session: As for :func:`extract`.
        workflow: As for :func:`extract`.
        format: ``"svg"``, ``"png"`` or ``None`` (the default: the extension's).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValidationError: ``format`` is not ``"svg"``, ``"png"`` or ``None``;
            ``path``'s extension names another format than ``format``, or a text
            format (``.dot``: use :func:`to_dot`); or ``specification`` is not the
            one of ``session``'s class.
        WorkflowError: ``workflow`` drives another specification.
        RenderingUnavailable: The ``graphviz`` package or the ``dot`` program is
            missing; the message says what to install.
        RenderingFailed: ``dot`` is installed but did not produce the image.
        OSError: ``path`` cannot be written (a directory, a missing parent, no
            permission to write it or to create a file in its directory, a full
            disk); the error's ``filename`` is ``path``.
    """
    if format is not None:
        _check_format(format, "render()")
    chosen = output_format(path, format) or "svg"
    if chosen not in _FORMATS:
        raise ValidationError.single(
            os.fspath(path),
            "format",
            f"a {Path(path).suffix} file is for {shown(chosen)}, which is text, not an image; "
            f"write the text of to_{chosen}() to it, or give a .svg or .png path",
        )
    image = _draw(to_dot(specification, session=session, workflow=workflow), chosen)
    write_atomically(path, image)
    return Path(path)
