"""Tests of customer_session.diagrams.

The golden files under ``tests/data/diagrams/`` are this module's output; after an
intended change of the diagrams, rewrite them with ``.venv/bin/python
tests/test_diagrams.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from customer_session import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    CartItem,
    CustomerSession,
    RenderingFailed,
    RenderingUnavailable,
    ReopenableCustomerSession,
    ReturnedItem,
    Specification,
    State,
    Trigger,
    ValidationError,
    Workflow,
    WorkflowError,
)
from customer_session.diagrams import (
    Arrow,
    extract,
    output_format,
    render,
    to_dot,
    to_image,
    to_mermaid,
    to_table,
)

from .conftest import require_graphviz

if TYPE_CHECKING:
    from collections.abc import Callable

GOLDEN = Path(__file__).parent / "data" / "diagrams"
SPECIFICATIONS = {spec.name: spec for spec in (CUSTOMER_SESSION, REOPENABLE_SESSION)}
SESSION_CLASSES: dict[str, type[CustomerSession]] = {
    CUSTOMER_SESSION.name: CustomerSession,
    REOPENABLE_SESSION.name: ReopenableCustomerSession,
}
RENDERERS: dict[str, Callable[..., str]] = {
    "mermaid": to_mermaid,
    "dot": to_dot,
    "table": to_table,
}
EXTENSIONS = {"mermaid": "mmd", "dot": "dot", "table": "md"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_TEXT = "{http://www.w3.org/2000/svg}text"
SVG_NS = "{http://www.w3.org/2000/svg}"


def travelled(spec: Specification) -> CustomerSession:
    """A session of ``spec`` that took every state-changing edge it can, and returns twice.

    Its workflow guards every trigger (each guard allows), so every edge is marked.
    """
    workflow = Workflow(spec)
    workflow.guard(lambda _event: None, name="allow")
    session = SESSION_CLASSES[spec.name](
        integration_id="order-42", cart_items=[CartItem(sku="sku-1", quantity=3)], workflow=workflow
    )
    session.close()
    if isinstance(session, ReopenableCustomerSession):
        session.reopen()
        session.close()
    for _ in range(3):
        session.return_items([ReturnedItem(0, 1)])
    return session


# -- parsing the output back ---------------------------------------------------
#
# One small grammar per format. Every line must match one of its patterns, so a
# renderer that prints anything unexpected fails the contract test.

_MARKS = r"(?P<marks>(?: \[[\w ]+\])*)"

_GRAMMARS: dict[str, dict[str, re.Pattern[str]]] = {
    "mermaid": {
        "fixed": re.compile(r'---|title: ".*"|stateDiagram-v2|    direction LR'),
        "initial": re.compile(r"    \[\*\] --> (?P<state>\w+)"),
        "terminal": re.compile(r"    (?P<state>\w+) --> \[\*\]"),
        "edge": re.compile(
            rf"    (?P<source>\w+) --> (?P<destination>\w+) : (?P<trigger>\w+){_MARKS}"
        ),
        "style": re.compile(r"    classDef (?:current|visited) \S+"),
        "class": re.compile(r"    class (?P<states>\w+(?:,\w+)*) (?:current|visited)"),
    },
    "dot": {
        "fixed": re.compile(
            r'digraph ".*" \{|    rankdir=LR;|    node \[shape=ellipse\];'
            r'|    "__start__" \[shape=point, label=""\];|\}'
        ),
        "initial": re.compile(r'    "__start__" -> "(?P<state>\w+)";'),
        "edge": re.compile(
            r'    "(?P<source>\w+)" -> "(?P<destination>\w+)" '
            rf'\[label="(?P<trigger>\w+){_MARKS}"(?P<style>.*)\];'
        ),
        "node": re.compile(r'    "(?P<state>\w+)"(?: \[(?P<style>.*)\])?;'),
    },
    "table": {
        "fixed": re.compile(r"\| source \| trigger \| destination \||\| --- \| --- \| --- \|"),
        "edge": re.compile(
            rf"\| (?P<source>\w+) \| (?P<trigger>\w+){_MARKS} \| (?P<destination>\w+) \|"
        ),
    },
}


class Parsed(NamedTuple):
    """What a diagram shows, read back from its text."""

    states: set[str]
    edges: list[tuple[str, str, str]]
    marks: list[str]
    initial: list[str] | None
    terminal: list[str] | None


def parse(renderer: str, text: str) -> Parsed:
    """Read a diagram back; fail on any line the format's grammar does not know."""
    assert text.endswith("\n")
    grammar = _GRAMMARS[renderer]
    states: set[str] = set()
    edges: list[tuple[str, str, str]] = []
    marks: list[str] = []
    initial: list[str] = []
    terminal: list[str] = []
    for line in text.splitlines():
        kind, match = next(
            ((k, m) for k, p in grammar.items() if (m := p.fullmatch(line))), (None, None)
        )
        assert match is not None, f"unexpected {renderer} line: {line!r}"
        found = match.groupdict()
        if kind == "edge":
            edges.append((found["source"], found["trigger"], found["destination"]))
            marks.append(found["marks"])
            states.update((found["source"], found["destination"]))
        elif kind == "initial":
            initial.append(found["state"])
        elif kind == "terminal" or (kind == "node" and "doublecircle" in (found["style"] or "")):
            terminal.append(found["state"])
        if found.get("state"):
            states.add(found["state"])
        if found.get("states"):
            states.update(found["states"].split(","))
    shows_ends = renderer != "table"
    return Parsed(
        states,
        edges,
        marks,
        initial if shows_ends else None,
        terminal if shows_ends else None,
    )


def table_of(spec: Specification) -> list[tuple[str, str, str]]:
    """The edges of ``spec`` as plain strings, in table order."""
    return [(str(e.source), str(e.trigger), str(e.destination)) for e in spec.edges]


def in_order(spec: Specification, states: frozenset[State]) -> list[str]:
    """``states`` as strings, in the specification's declared order."""
    return [str(s) for s in spec.states if s in states]


# -- the contract ----------------------------------------------------------------


class TestContract:
    @pytest.mark.parametrize("marked", [False, True], ids=["plain", "travelled"])
    @pytest.mark.parametrize("spec_name", SPECIFICATIONS)
    @pytest.mark.parametrize("renderer", RENDERERS)
    def test_every_state_and_edge_and_nothing_else(self, renderer, spec_name, marked):
        """Each renderer shows exactly the table's states and edges, in declared order."""
        spec = SPECIFICATIONS[spec_name]
        text = RENDERERS[renderer](session=travelled(spec)) if marked else RENDERERS[renderer](spec)
        shown = parse(renderer, text)
        assert shown.states == {str(s) for s in spec.states}
        assert shown.edges == table_of(spec)
        if shown.initial is not None:
            assert shown.initial == in_order(spec, spec.initial_states)
        if shown.terminal is not None:
            assert shown.terminal == in_order(spec, spec.terminal_states)


# -- the graph model ----------------------------------------------------------------


class TestExtract:
    def test_nodes_follow_the_declared_state_order(self):
        """The nodes are the specification's states in its declared order."""
        graph = extract(REOPENABLE_SESSION)
        assert [node.state for node in graph.nodes] == list(REOPENABLE_SESSION.states)
        assert graph.name == "reopenable_session"

    def test_default_is_the_talon_one_table(self):
        """Without arguments the graph is the one of CUSTOMER_SESSION."""
        assert extract() == extract(CUSTOMER_SESSION)

    def test_initial_and_terminal_states(self):
        """Initial and terminal states come from the specification, in declared order."""
        graph = extract()
        assert graph.initial == (State.OPEN, State.CLOSED)
        assert graph.terminal == (State.CANCELLED,)

    def test_guard_for_one_trigger_marks_its_edges_only(self):
        """A guard registered for a trigger marks every edge of that trigger, no other."""
        workflow = Workflow()
        workflow.guard(lambda _event: None, trigger=Trigger.CANCEL)
        guarded = {a.trigger for a in extract(workflow=workflow).arrows if a.guarded}
        assert guarded == {Trigger.CANCEL}
        assert sum(a.guarded for a in extract(workflow=workflow).arrows) == 3

    def test_guard_for_all_triggers_marks_every_edge(self):
        """A guard registered without a trigger marks every edge."""
        workflow = Workflow()
        workflow.guard(lambda _event: None)
        assert all(a.guarded for a in extract(workflow=workflow).arrows)

    def test_hooks_that_are_not_guards_mark_nothing(self):
        """Before and after hooks do not make an edge guarded."""
        workflow = Workflow()
        workflow.before(lambda _event: None, trigger=Trigger.CLOSE)
        workflow.after(lambda _event: None)
        assert not any(a.guarded for a in extract(workflow=workflow).arrows)

    def test_removed_guard_no_longer_marks(self):
        """Removing the guard removes the mark."""
        workflow = Workflow()
        registration = workflow.guard(lambda _event: None, trigger=Trigger.CLOSE)
        registration.remove()
        assert not any(a.guarded for a in extract(workflow=workflow).arrows)

    def test_session_marks_current_visited_and_taken(self):
        """A session's current state, the states it passed and its edges are marked."""
        session = travelled(CUSTOMER_SESSION)
        graph = extract(session=session)
        current = [node.state for node in graph.nodes if node.current]
        visited = [node.state for node in graph.nodes if node.visited]
        assert current == [State.PARTIALLY_RETURNED]
        assert visited == [State.OPEN, State.CLOSED, State.PARTIALLY_RETURNED]
        taken = {(a.source, a.trigger): a.taken for a in graph.arrows if a.taken}
        assert taken == {
            (State.OPEN, Trigger.CLOSE): 1,
            (State.CLOSED, Trigger.RETURN_ITEMS): 1,
            (State.PARTIALLY_RETURNED, Trigger.RETURN_ITEMS): 2,
        }

    def test_session_brings_its_class_specification(self):
        """With a session, the specification is the one of the session's class."""
        graph = extract(session=travelled(REOPENABLE_SESSION))
        assert graph.name == REOPENABLE_SESSION.name
        assert any(a.trigger is Trigger.REOPEN and a.taken == 1 for a in graph.arrows)

    def test_session_brings_its_workflow(self):
        """With a session and no workflow, the session's workflow's guards are marked."""
        assert all(a.guarded for a in extract(session=travelled(CUSTOMER_SESSION)).arrows)

    def test_explicit_workflow_replaces_the_session_one(self):
        """A workflow passed with a session decides which edges are guarded."""
        graph = extract(session=travelled(CUSTOMER_SESSION), workflow=Workflow())
        assert not any(a.guarded for a in graph.arrows)

    def test_fresh_session_has_no_path(self):
        """A new session is current in its state and has taken no edge."""
        session = CustomerSession(integration_id="order-1", workflow=Workflow())
        graph = extract(session=session)
        assert [node.state for node in graph.nodes if node.current] == [State.OPEN]
        assert not any(node.visited for node in graph.nodes)
        assert not any(a.taken for a in graph.arrows)

    def test_specification_of_another_class_is_refused(self):
        """A specification that is not the session's is a ValidationError (a ValueError)."""
        with pytest.raises(ValidationError, match="not the specification of CustomerSession"):
            extract(REOPENABLE_SESSION, session=travelled(CUSTOMER_SESSION))

    def test_same_specification_as_the_session_is_accepted(self):
        """Passing the session's own specification as well is allowed."""
        session = travelled(CUSTOMER_SESSION)
        assert extract(CUSTOMER_SESSION, session=session) == extract(session=session)

    def test_workflow_of_another_specification_is_refused(self):
        """A workflow that drives another specification is a WorkflowError."""
        with pytest.raises(WorkflowError, match="another specification"):
            extract(CUSTOMER_SESSION, workflow=Workflow(REOPENABLE_SESSION))

    @pytest.mark.parametrize(
        ("argument", "kind"),
        [
            ("specification", "Specification"),
            ("session", "CustomerSession"),
            ("workflow", "Workflow"),
        ],
    )
    def test_argument_of_the_wrong_kind_is_refused(self, argument, kind):
        """A specification, session or workflow of the wrong kind is a ValidationError naming it."""
        with pytest.raises(
            ValidationError, match=f"diagram: {argument}: must be a {kind} or None, got 'x'"
        ):
            extract(**{argument: "x"})


class TestArrowLabel:
    @pytest.mark.parametrize(
        ("guarded", "taken", "label"),
        [
            (False, 0, "close"),
            (True, 0, "close [guarded]"),
            (False, 1, "close [taken]"),
            (True, 3, "close [guarded] [taken 3x]"),
        ],
    )
    def test_label_names_the_trigger_and_its_marks(self, guarded, taken, label):
        """The label is the trigger's name, then [guarded], then [taken] with a count."""
        arrow = Arrow(State.OPEN, Trigger.CLOSE, State.CLOSED, guarded=guarded, taken=taken)
        assert arrow.label == label

    def test_self_loop_is_internal(self):
        """An arrow back to its source is internal."""
        assert Arrow(
            State.PARTIALLY_RETURNED, Trigger.RETURN_ITEMS, State.PARTIALLY_RETURNED
        ).internal
        assert not Arrow(State.OPEN, Trigger.CLOSE, State.CLOSED).internal


# -- each format ----------------------------------------------------------------------


class TestMermaid:
    def test_initial_states_enter_from_the_start(self):
        """Each initial state is entered from [*]."""
        lines = to_mermaid().splitlines()
        assert "    [*] --> open" in lines
        assert "    [*] --> closed" in lines

    def test_terminal_state_leads_to_the_end(self):
        """The terminal state leads to [*]."""
        assert "    cancelled --> [*]" in to_mermaid().splitlines()

    def test_internal_transition_is_a_self_loop(self):
        """Further returns are drawn from partially_returned back to itself."""
        assert (
            "    partially_returned --> partially_returned : return_items"
            in to_mermaid().splitlines()
        )

    def test_guarded_edge_says_so(self):
        """An edge whose trigger has a guard is labelled [guarded]."""
        workflow = Workflow()
        workflow.guard(lambda _event: None, trigger=Trigger.CLOSE)
        assert "    open --> closed : close [guarded]" in to_mermaid(workflow=workflow).splitlines()

    def test_session_current_and_visited_states_get_classes(self):
        """The current state has the class current, the states it passed the class visited."""
        lines = to_mermaid(session=travelled(CUSTOMER_SESSION)).splitlines()
        assert "    class partially_returned current" in lines
        assert "    class open,closed visited" in lines

    def test_plain_diagram_has_no_styles(self):
        """Without a session no class is defined."""
        assert "classDef" not in to_mermaid()

    def test_title_is_the_specification_name(self):
        """The front matter's title is the name, quoted so any name is valid YAML."""
        spec = CUSTOMER_SESSION.extend('odd: "name"')
        assert 'title: "odd: \\"name\\""' in to_mermaid(spec).splitlines()


class TestDot:
    def test_initial_states_enter_from_a_point(self):
        """A point node leads to each initial state."""
        lines = to_dot().splitlines()
        assert '    "__start__" [shape=point, label=""];' in lines
        assert '    "__start__" -> "open";' in lines
        assert '    "__start__" -> "closed";' in lines

    def test_terminal_state_is_a_double_circle(self):
        """The terminal state is drawn as a double circle."""
        assert '    "cancelled" [shape=doublecircle];' in to_dot().splitlines()

    def test_internal_transition_is_a_self_loop(self):
        """Further returns are an edge from partially_returned to itself."""
        assert (
            '    "partially_returned" -> "partially_returned" [label="return_items"];'
            in to_dot().splitlines()
        )

    def test_guarded_edge_is_dashed(self):
        """An edge whose trigger has a guard is dashed and labelled [guarded]."""
        workflow = Workflow()
        workflow.guard(lambda _event: None, trigger=Trigger.CLOSE)
        assert (
            '    "open" -> "closed" [label="close [guarded]", style=dashed];'
            in to_dot(workflow=workflow).splitlines()
        )

    def test_taken_edges_are_bold_and_coloured(self):
        """The edges a session took are wider and coloured; the others are not."""
        edges = [
            line
            for line in to_dot(session=travelled(CUSTOMER_SESSION)).splitlines()
            if "->" in line
        ]
        taken = [line for line in edges if "penwidth=2.5" in line]
        assert len(taken) == 3
        assert all('color="#1F77B4"' in line for line in taken)
        assert all("[taken" in line for line in taken)

    def test_current_state_is_filled(self):
        """The session's current state is filled."""
        lines = to_dot(session=travelled(CUSTOMER_SESSION)).splitlines()
        assert '    "partially_returned" [style=filled, fillcolor="#40E0D0", penwidth=2];' in lines

    def test_name_is_escaped(self):
        """Quotes in the name are escaped; its backslashes are kept (an identifier, no label)."""
        spec = CUSTOMER_SESSION.extend('a "b" \\ c \\n')
        assert to_dot(spec).startswith('digraph "a \\"b\\" \\ c \\n" {\n')


class TestTable:
    def test_rows_follow_the_table(self):
        """One row per edge, in table order, under a source | trigger | destination header."""
        lines = to_table(REOPENABLE_SESSION).splitlines()
        assert lines[:2] == ["| source | trigger | destination |", "| --- | --- | --- |"]
        assert lines[2] == "| open | close | closed |"
        assert lines[-1] == "| closed | reopen | open |"
        assert len(lines) == 2 + len(REOPENABLE_SESSION.edges)

    def test_marks_are_in_the_trigger_cell(self):
        """Guarded and taken marks follow the trigger's name."""
        lines = to_table(session=travelled(CUSTOMER_SESSION)).splitlines()
        assert "| open | close [guarded] [taken] | closed |" in lines
        assert "| open | cancel [guarded] | cancelled |" in lines


# -- determinism -------------------------------------------------------------------------

GOLDEN_CASES: list[tuple[str, str, bool]] = [
    (renderer, spec_name, marked)
    for renderer in RENDERERS
    for spec_name in SPECIFICATIONS
    for marked in (False, True)
]


def golden_path(renderer: str, spec_name: str, marked: bool) -> Path:
    """The golden file of one renderer, specification and variant."""
    infix = ".travelled" if marked else ""
    return GOLDEN / f"{spec_name}{infix}.{EXTENSIONS[renderer]}"


def rendered(renderer: str, spec_name: str, marked: bool) -> str:
    """The text the golden file of this case holds."""
    spec = SPECIFICATIONS[spec_name]
    if marked:
        return RENDERERS[renderer](session=travelled(spec))
    return RENDERERS[renderer](spec)


_SUBPROCESS_SCRIPT = """
from customer_session import CUSTOMER_SESSION, REOPENABLE_SESSION
from customer_session.diagrams import to_dot, to_mermaid, to_table
for spec in (CUSTOMER_SESSION, REOPENABLE_SESSION):
    for renderer in (to_mermaid, to_dot, to_table):
        print(renderer(spec), end="")
"""


class TestDeterminism:
    @pytest.mark.parametrize(
        ("renderer", "spec_name", "marked"),
        GOLDEN_CASES,
        ids=[golden_path(*case).name for case in GOLDEN_CASES],
    )
    def test_output_matches_the_golden_file(self, renderer, spec_name, marked):
        """The output is byte-for-byte the committed golden file."""
        expected = golden_path(renderer, spec_name, marked).read_bytes()
        assert rendered(renderer, spec_name, marked).encode() == expected

    @pytest.mark.parametrize("renderer", RENDERERS)
    def test_two_calls_give_the_same_text(self, renderer):
        """Rendering twice gives identical text."""
        session = travelled(CUSTOMER_SESSION)
        assert RENDERERS[renderer](session=session) == RENDERERS[renderer](session=session)

    def test_output_does_not_depend_on_hash_seeds(self):
        """Processes with different hash seeds (so different set orders) print the same text."""
        outputs = set()
        for seed in ("1", "2", "3"):
            environment = {**os.environ, "PYTHONHASHSEED": seed}
            result = subprocess.run(
                [sys.executable, "-c", _SUBPROCESS_SCRIPT],
                env=environment,
                capture_output=True,
                text=True,
                check=True,
            )
            outputs.add(result.stdout)
        expected = "".join(
            golden_path(renderer, name, marked=False).read_text()
            for name in SPECIFICATIONS
            for renderer in RENDERERS
        )
        assert outputs == {expected}


# -- images ------------------------------------------------------------------------------


@pytest.mark.graphviz
@pytest.mark.usefixtures("graphviz_available")
class TestRender:
    @pytest.mark.parametrize("spec_name", SPECIFICATIONS)
    def test_svg_is_xml_naming_every_state_and_trigger(self, tmp_path, spec_name):
        """The SVG is well-formed XML whose text names every state and trigger."""
        spec = SPECIFICATIONS[spec_name]
        path = render(tmp_path / "diagram.svg", spec)
        root = ET.fromstring(path.read_bytes())  # noqa: S314 - our own dot output
        texts = {element.text for element in root.iter(SVG_TEXT)}
        assert {str(s) for s in spec.states} <= texts
        assert {str(t) for t in spec.triggers} <= texts

    @pytest.mark.parametrize(
        "name",
        ['a "b" \\ c', "C:\\temp\\new", "\\N \\G \\l", 'even \\\\"', "end \\\\"],
        ids=["quote-and-backslash", "path", "escapes", "even-run-before-quote", "even-run-at-end"],
    )
    def test_dot_reads_the_name_back_exactly(self, name):
        """The SVG's title, the graph's name as dot read it, is exactly the specification's name."""
        root = ET.fromstring(to_image(CUSTOMER_SESSION.extend(name)))  # noqa: S314 - our own dot output
        assert root.find(f"{SVG_NS}g/{SVG_NS}title").text == name

    def test_png_has_the_png_signature(self, tmp_path):
        """A PNG starts with the PNG signature."""
        path = render(tmp_path / "diagram.png", format="png")
        assert path.read_bytes().startswith(PNG_SIGNATURE)

    @pytest.mark.parametrize("kind", ["svg", "png"])
    def test_to_image_gives_the_bytes_render_writes(self, tmp_path, kind):
        """to_image() returns the same image that render() writes to its file."""
        path = render(tmp_path / f"diagram.{kind}", format=kind)
        assert to_image(format=kind) == path.read_bytes()

    def test_a_write_failing_half_way_keeps_the_old_file(self, tmp_path, full_disk):
        """A disk that fills up mid-write leaves the old image whole and no temporary file."""
        target = tmp_path / "diagram.svg"
        target.write_bytes(b"<svg>the old diagram</svg>")
        with full_disk(64), pytest.raises(OSError, match="File too large"):
            render(target)
        assert target.read_bytes() == b"<svg>the old diagram</svg>"
        assert [p.name for p in tmp_path.iterdir()] == ["diagram.svg"]

    def test_unwritable_path_is_the_os_error_of_the_write(self, tmp_path):
        """render() to a path in a missing directory raises the OSError of the write."""
        with pytest.raises(FileNotFoundError):
            render(tmp_path / "missing" / "diagram.svg")

    @pytest.mark.parametrize(("name", "signature"), [("d.png", PNG_SIGNATURE), ("D.SVG", b"<")])
    def test_without_a_format_the_extension_chooses_it(self, tmp_path, name, signature):
        """render() without format writes the image the path's extension names."""
        assert render(tmp_path / name).read_bytes().startswith(signature)

    @pytest.mark.parametrize("name", ["diagram", "diagram.img"])
    def test_a_path_naming_no_format_gets_svg(self, tmp_path, name):
        """A path without an extension, or with one naming no format, gets SVG, as before."""
        assert render(tmp_path / name).read_bytes() == to_image(format="svg")

    def test_returns_the_written_path(self, tmp_path):
        """The return value is the path written, as a Path, even when given a str."""
        target = tmp_path / "diagram.svg"
        assert render(str(target)) == target
        assert target.stat().st_size > 0

    def test_session_image_shows_its_marks(self, tmp_path):
        """A session's image fills its current state and labels its taken edges."""
        path = render(tmp_path / "session.svg", session=travelled(CUSTOMER_SESSION))
        svg = path.read_text()
        assert 'fill="#40e0d0"' in svg.lower()
        assert "close [guarded] [taken]" in svg


class TestRenderErrors:
    def test_unknown_format_is_a_validation_error(self, tmp_path):
        """An unknown format is a ValidationError (a ValueError) and writes nothing."""
        target = tmp_path / "diagram.pdf"
        with pytest.raises(ValidationError, match="format: must be one of svg, png, got 'pdf'"):
            render(target, format="pdf")  # type: ignore[arg-type]
        assert not target.exists()

    @pytest.mark.parametrize("format_", ["mermaid", "dot", "table"])
    def test_to_image_refuses_a_text_format(self, format_):
        """to_image() draws only images: a text format is a ValidationError naming svg and png."""
        with pytest.raises(ValidationError, match="format: must be one of svg, png, got"):
            to_image(format=format_)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("name", "format_"), [("x.svg", "png"), ("x.PNG", "svg")])
    def test_an_extension_naming_another_format_is_refused(self, tmp_path, name, format_):
        """An image format the path's extension contradicts names both; nothing is written."""
        target = tmp_path / name
        with pytest.raises(ValidationError) as caught:
            render(target, format=format_)
        assert caught.value.subject == str(target)
        named = "svg" if format_ == "png" else "png"
        assert caught.value.problems[0].message == (
            f"a {target.suffix} file is for {named!r}, not {format_!r}; "
            "change the extension or the format"
        )
        assert not target.exists()

    @pytest.mark.parametrize(("name", "named"), [("x.dot", "dot"), ("x.mmd", "mermaid")])
    def test_a_text_extension_is_refused(self, tmp_path, name, named):
        """A path whose extension names a text format gets no image: render() writes images."""
        target = tmp_path / name
        with pytest.raises(ValidationError, match=f"is for {named!r}, which is text, not an"):
            render(target)
        assert not target.exists()

    @pytest.mark.usefixtures("graphviz_package")
    def test_dot_missing_from_path_says_what_to_install(self, tmp_path, monkeypatch):
        """Without dot on PATH, RenderingUnavailable names Graphviz and how to install it."""
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(RenderingUnavailable, match="apt-get install graphviz") as caught:
            render(tmp_path / "diagram.svg")
        assert "dot" in caught.value.missing
        assert not (tmp_path / "diagram.svg").exists()

    @pytest.mark.usefixtures("graphviz_package")
    def test_dot_that_cannot_run_is_reported_without_its_traceback(self, tmp_path, monkeypatch):
        """When graphviz cannot start dot, the error is RenderingUnavailable, not chained."""
        monkeypatch.setattr(shutil, "which", lambda _name: "/nowhere/dot")
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(RenderingUnavailable, match="Graphviz's 'dot' program") as caught:
            render(tmp_path / "diagram.svg")
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    @pytest.mark.usefixtures("graphviz_package")
    def test_failing_dot_is_rendering_failed_with_its_status_and_error(self, tmp_path, fake_dot):
        """A dot that exits non-zero is RenderingFailed naming its status and first error line."""
        fake_dot('echo "Error: no cairo" >&2; echo "more detail" >&2; exit 3')
        with pytest.raises(RenderingFailed, match="'dot -Tpng' failed") as caught:
            render(tmp_path / "diagram.png", format="png")
        assert caught.value.reason == "exit status 3: Error: no cairo"
        assert not (tmp_path / "diagram.png").exists()

    @pytest.mark.usefixtures("graphviz_package")
    def test_dot_that_writes_nothing_is_rendering_failed(self, tmp_path, fake_dot):
        """A dot that exits 0 without an image is RenderingFailed, and no empty file is left."""
        fake_dot("exit 0")
        with pytest.raises(RenderingFailed, match="wrote no image"):
            render(tmp_path / "diagram.png", format="png")
        assert not (tmp_path / "diagram.png").exists()

    @pytest.mark.usefixtures("graphviz_package")
    def test_killed_dot_is_rendering_failed_naming_the_signal(self, fake_dot):
        """A dot killed by a signal is RenderingFailed naming the signal."""
        fake_dot("kill -9 $$")
        with pytest.raises(RenderingFailed, match="killed by signal 9"):
            to_image()

    @pytest.mark.usefixtures("graphviz_package")
    def test_dot_that_is_not_a_program_is_rendering_failed(self, fake_dot, tmp_path):
        """A dot on PATH that the system cannot start is RenderingFailed, not an OSError."""
        fake_dot("")
        (tmp_path / "fake-dot" / "dot").write_bytes(b"\x00not a program")
        with pytest.raises(RenderingFailed, match="cannot start it") as caught:
            to_image()
        assert caught.value.__cause__ is None

    def test_missing_package_says_what_to_install(self, tmp_path, monkeypatch):
        """Without the graphviz package, RenderingUnavailable names the extra to install."""
        monkeypatch.setitem(sys.modules, "graphviz", None)
        with pytest.raises(RenderingUnavailable, match=r"customer-session\[diagrams\]"):
            render(tmp_path / "diagram.svg")

    def test_text_renderers_need_no_graphviz(self, monkeypatch):
        """Mermaid, DOT and table text are made without the graphviz package."""
        monkeypatch.setitem(sys.modules, "graphviz", None)
        assert all(renderer() for renderer in RENDERERS.values())


class TestOutputFormat:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("s.mmd", "mermaid"),
            ("s.mermaid", "mermaid"),
            ("s.dot", "dot"),
            ("s.gv", "dot"),
            ("s.svg", "svg"),
            ("S.PNG", "png"),
            ("s.md", None),
            ("s", None),
        ],
    )
    def test_without_a_format_the_extension_names_it(self, name, expected):
        """Without a format, the extension's (in any case) is the answer, or None."""
        assert output_format(name) == expected

    @pytest.mark.parametrize("name", ["s.md", "s", "s.txt"])
    def test_an_extension_naming_no_format_takes_any(self, name):
        """A path whose extension names no format takes the one given, text or image."""
        assert [output_format(name, f) for f in ("table", "png")] == ["table", "png"]

    def test_a_format_the_extension_agrees_with_is_kept(self):
        """A format the extension names too is the answer."""
        assert output_format(Path("s.gv"), "dot") == "dot"

    def test_a_contradicted_format_names_the_path_and_both_formats(self):
        """An extension naming another format is a ValidationError naming the path and both."""
        with pytest.raises(ValidationError) as caught:
            output_format(Path("out/states.svg"), "mermaid")
        assert str(caught.value) == (
            f"{Path('out/states.svg')}: format: a .svg file is for 'svg', not 'mermaid'; "
            "change the extension or the format"
        )

    def test_an_unknown_format_is_refused(self):
        """A format that is not one of the five is a ValidationError listing them."""
        with pytest.raises(ValidationError, match="must be one of mermaid, dot, table, svg, png"):
            output_format("s.md", "gif")  # type: ignore[arg-type]

    def test_a_path_that_is_not_one_is_refused(self):
        """A path that is not a str or os.PathLike is a ValidationError, not a TypeError."""
        with pytest.raises(ValidationError, match=r"path: must be a str or os\.PathLike, got 42"):
            output_format(42)  # type: ignore[arg-type]


class TestGraphvizRequirement:
    def test_missing_dot_fails_under_ci(self, monkeypatch):
        """Under CI a missing dot fails the test instead of skipping it."""
        monkeypatch.setattr(shutil, "which", lambda _name: None)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
            require_graphviz()

    def test_missing_dot_skips_outside_ci(self, monkeypatch):
        """Outside CI a missing dot skips the test."""
        monkeypatch.setattr(shutil, "which", lambda _name: None)
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="apt-get install graphviz"):
            require_graphviz()


if __name__ == "__main__":
    # Rewrite the golden files from the current renderers.
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case in GOLDEN_CASES:
        golden_path(*case).write_bytes(rendered(*case).encode())


class TestCopiesInTheDocs:
    def test_readme_and_states_page_show_the_generated_diagram(self):
        """The Mermaid diagrams in README.md and docs/states.md equal to_mermaid()."""
        root = Path(__file__).parent.parent
        block = f"```mermaid\n{to_mermaid()}```"
        for page in (root / "README.md", root / "docs" / "states.md"):
            assert block in page.read_text(encoding="utf-8"), page
