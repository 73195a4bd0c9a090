import copy
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import customer_session
from customer_session import (
    CUSTOMER_SESSION,
    CustomerSessionError,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    Phase,
    Problem,
    ProtectedFieldError,
    SessionNotEditable,
    State,
    TransitionError,
    TransitionInProgress,
    TransitionRecord,
    Trigger,
    UnknownTrigger,
    ValidationError,
    exceptions,
)


def _error_classes():
    return [
        obj
        for name in customer_session.__all__
        if isinstance(obj := getattr(customer_session, name), type)
        and issubclass(obj, BaseException)
    ]


def _one_of_each() -> list[CustomerSessionError]:
    """An instance of every error class, each with data in every attribute."""
    common = {"trigger": Trigger.CLOSE, "state": State.OPEN, "integration_id": "o"}
    record = TransitionRecord(
        Trigger.CLOSE, State.OPEN, State.CLOSED, datetime(2026, 3, 2, tzinfo=UTC)
    )
    return [
        CustomerSessionError("plain"),
        exceptions.SpecificationError("spec", "bad table"),
        TransitionError("failed", **common),
        IllegalTransition(**common, allowed=frozenset({Trigger.CANCEL})),
        GuardRejected(**common, guard="payment", reason="not paid"),
        HookFailed(**common, phase=Phase.BEFORE, hook="reserve"),
        TransitionInProgress(**common, running=Trigger.CANCEL, asking=True),
        exceptions.AfterCommitHookFailed(record, [ValueError("erp down"), KeyError("k")]),
        ProtectedFieldError("state", "fire a trigger instead"),
        SessionNotEditable(operation="add_item", state=State.CLOSED, integration_id="o"),
        ValidationError("session 'o'", [Problem("a", "bad"), Problem("b", "worse")]),
        UnknownTrigger("zap", ["close", "cancel"]),
        exceptions.WorkflowError("wrong workflow"),
        exceptions.ConcurrentUpdate("o", 3),
        exceptions.StoreError("database is down", "o"),
        exceptions.SessionNotFound("o"),
        exceptions.SessionExists("o"),
        exceptions.KeyAlreadyProcessed("event-1", "o"),
        exceptions.EffectNotPending(7, "delivered"),
        exceptions.CorruptData("bad document", "o"),
        exceptions.UnsupportedSchema(9, 3, "o"),
        exceptions.SchemaNotReady("shop.db", 3, 4, "o"),
        exceptions.StoreTimeout(
            "gave up waiting",
            database="shop.db",
            waited_for="the write lock",
            setting="timeout",
            timeout=0.5,
            integration_id="o",
        ),
        exceptions.RenderingUnavailable("dot", "install Graphviz"),
        exceptions.RenderingFailed("dot -Tpng", "exit status 1"),
    ]


def _same(copied: BaseException, error: BaseException) -> None:
    """Assert that ``copied`` is ``error``'s class with its message and attributes."""
    assert type(copied) is type(error)
    assert str(copied) == str(error)
    assert repr(copied.args) == repr(error.args)  # sub-exceptions compare by identity
    assert vars(copied) == vars(error)


class TestTree:
    def test_one_root(self):
        """Every exported error derives from CustomerSessionError."""
        for cls in _error_classes():
            assert issubclass(cls, CustomerSessionError), cls

    @pytest.mark.parametrize(
        ("cls", "builtin"),
        [
            (ProtectedFieldError, AttributeError),
            (ValidationError, ValueError),
            (customer_session.SpecificationError, ValueError),
            (customer_session.UnknownTrigger, ValueError),
            (customer_session.RenderingUnavailable, RuntimeError),
            (customer_session.RenderingFailed, RuntimeError),
            (customer_session.AfterCommitHookFailed, ExceptionGroup),
            (customer_session.SessionNotFound, KeyError),
            (customer_session.EffectNotPending, KeyError),
            (customer_session.CorruptData, ValueError),
            (customer_session.StoreTimeout, TimeoutError),
        ],
    )
    def test_subclasses_the_builtin_it_is(self, cls, builtin):
        """Each error is also the builtin exception it really is."""
        assert issubclass(cls, builtin)

    def test_store_errors_share_a_base(self):
        """Every error about a store's data is a StoreError."""
        for cls in (
            customer_session.SessionNotFound,
            customer_session.SessionExists,
            customer_session.KeyAlreadyProcessed,
            customer_session.EffectNotPending,
            customer_session.CorruptData,
            customer_session.UnsupportedSchema,
            customer_session.SchemaNotReady,
            customer_session.StoreTimeout,
        ):
            assert issubclass(cls, customer_session.StoreError)

    def test_failed_triggers_share_a_base(self):
        """Illegal, refused and failed triggers are all TransitionErrors."""
        for cls in (IllegalTransition, GuardRejected, HookFailed):
            assert issubclass(cls, TransitionError)


class TestData:
    def test_schema_not_ready_names_the_database_its_version_and_the_remedy(self):
        """SchemaNotReady keeps the database and both versions, and says to migrate it."""
        older = exceptions.SchemaNotReady("shop.db", 3, 4)
        assert str(older) == (
            "shop.db has customer-session schema version 3, this library needs 4: migrate it "
            "(open it with migrate=True once, at deploy time)"
        )
        assert (older.database, older.found, older.required) == ("shop.db", 3, 4)
        empty = exceptions.SchemaNotReady("shop.db", 0, 4, why="no such file")
        assert str(empty) == (
            "shop.db holds no session store (no such file); open it with migrate=True to create one"
        )

    def test_illegal_transition_carries_its_data(self):
        """IllegalTransition keeps trigger, state and allowed triggers."""
        error = IllegalTransition(
            trigger=Trigger.CLOSE,
            state=State.CLOSED,
            integration_id="o",
            allowed=frozenset({Trigger.CANCEL, Trigger.RETURN_ITEMS}),
        )
        assert (error.trigger, error.state, error.integration_id) == (
            Trigger.CLOSE,
            State.CLOSED,
            "o",
        )
        assert str(error) == (
            "session 'o': cannot close() from state 'closed'; allowed: cancel(), return_items()"
        )

    def test_validation_error_lists_problems(self):
        """A ValidationError with several problems puts one per line."""
        error = ValidationError("session 'o'", [Problem("a", "bad"), Problem("b[0]", "worse")])
        assert str(error) == "session 'o': 2 problems:\n  a: bad\n  b[0]: worse"
        assert error.problems[1].path == "b[0]"

    def test_counts_of_one_are_singular(self):
        """Messages that count attempts or failed hooks use the singular for one."""
        record = TransitionRecord(
            Trigger.CLOSE, State.OPEN, State.CLOSED, datetime(2026, 3, 2, tzinfo=UTC)
        )
        attempts = str(exceptions.ConcurrentUpdate("o", 1))
        hooks = str(exceptions.AfterCommitHookFailed(record, [ValueError("erp down")]))
        assert "gave up after 1 attempt;" in attempts
        assert "but 1 after-commit hook raised" in hooks

    def test_unknown_trigger_shows_any_value(self):
        """UnknownTrigger's message can be built for a 5000-digit integer."""
        error = UnknownTrigger(10**5000, [Trigger.CLOSE])
        assert str(error) == ("unknown trigger an integer of 16610 bits; known: close")

    def test_unknown_trigger_names_an_enum_member_by_its_text(self):
        """UnknownTrigger names a Trigger member as 'reopen', not by its enum repr."""
        error = UnknownTrigger(Trigger.REOPEN, [Trigger.CLOSE])
        assert str(error).startswith("unknown trigger 'reopen'; known: close (")
        assert "Trigger." not in str(error)

    @pytest.mark.parametrize("trigger", [Trigger.REOPEN, "reopen"], ids=["member", "text"])
    def test_unknown_trigger_says_which_table_has_reopen(self, trigger):
        """A table without reopen says the reopenable table and session class have it."""
        error = UnknownTrigger(trigger, CUSTOMER_SESSION.triggers)
        assert str(error) == (
            "unknown trigger 'reopen'; known: cancel, close, return_items (only the "
            "reopenable table has reopen(): use a ReopenableCustomerSession, and a Workflow "
            "of REOPENABLE_SESSION)"
        )

    def test_unknown_trigger_gives_no_advice_for_a_trigger_of_no_table(self):
        """A name that no table of the library has gets no advice about one."""
        assert str(UnknownTrigger("ship", ["close"])) == "unknown trigger 'ship'; known: close"

    def test_not_editable_names_operation_and_state(self):
        """SessionNotEditable says which edit was refused in which state."""
        error = SessionNotEditable(operation="add_item", state=State.CLOSED, integration_id="o")
        assert "add_item()" in str(error)
        assert "'closed'" in str(error)

    def test_not_editable_while_busy_names_what_keeps_it_busy(self):
        """SessionNotEditable for a busy session names the running trigger, not the state."""
        common = {"operation": "set_coupon", "state": State.OPEN, "integration_id": "o"}
        running = SessionNotEditable(**common, running=Trigger.CLOSE)
        asked = SessionNotEditable(**common, running=Trigger.CLOSE, asking=True)
        assert "set_coupon() while close() is in progress" in str(running)
        assert "while can() or why_not() ask the guards of close()" in str(asked)
        assert "only open sessions" not in str(running) + str(asked)
        assert (asked.running, asked.asking, running.asking) == (Trigger.CLOSE, True, False)

    def test_not_editable_elsewhere_says_to_wait_or_edit_from_a_hook(self):
        """An edit refused for another task's trigger is told to wait, or to edit from its hooks."""
        common = {"state": State.OPEN, "integration_id": "o", "running": Trigger.CLOSE}
        edit = SessionNotEditable(operation="set_coupon", **common, elsewhere=True)
        reload = SessionNotEditable(operation="__setstate__", **common, elsewhere=True)
        assert str(edit).endswith(
            "while close() is in progress in another task or thread; try again once it "
            "has finished, or make the edit in one of close()'s hooks"
        )
        assert str(reload).endswith("try again once it has finished")
        assert (edit.elsewhere, edit.running, edit.asking, edit.held) == (
            True,
            Trigger.CLOSE,
            False,
            False,
        )

    def test_transition_in_progress_says_whether_guards_are_asked(self):
        """TransitionInProgress advises an after-commit hook only for a running trigger."""
        common = {"trigger": Trigger.CANCEL, "state": State.OPEN, "integration_id": "o"}
        running = TransitionInProgress(**common, running=Trigger.CLOSE)
        asked = TransitionInProgress(**common, running=Trigger.CLOSE, asking=True)
        assert "after-commit hook" in str(running)
        assert "cancel() while can() or why_not() ask the guards of close()" in str(asked)
        assert (asked.running, asked.asking, running.asking) == (Trigger.CLOSE, True, False)

    def test_refusals_for_a_held_session_name_the_atomic_block(self):
        """A session held by another atomic() block is named as such, with no trigger running."""
        edit = SessionNotEditable(
            operation="set_coupon", state=State.OPEN, integration_id="o", held=True
        )
        trigger = TransitionInProgress(
            trigger=Trigger.CLOSE, state=State.OPEN, integration_id="o", running=None, held=True
        )
        for error in (edit, trigger):
            assert "atomic() block of another task or thread holds the session" in str(error)
            assert (error.held, error.running, error.asking) == (True, None, False)
        assert "only open sessions" not in str(edit)
        assert "after-commit hook" not in str(trigger)

    def test_session_not_found_reads_as_its_message(self):
        """SessionNotFound is a KeyError whose text is the message, not its quoted repr."""
        error = customer_session.SessionNotFound("order-9")
        assert str(error) == "session 'order-9' is not in the store"
        assert error.integration_id == "order-9"

    def test_effect_not_pending_reads_as_its_message(self):
        """EffectNotPending is a KeyError whose text names the row and what it is instead."""
        error = customer_session.EffectNotPending(7, None)
        assert (
            str(error) == "outbox row 7 is not in the outbox; only a pending row can be discarded"
        )
        assert (error.sequence, error.found, error.integration_id) == (7, None, None)
        delivered = customer_session.EffectNotPending(7, "delivered")
        assert str(delivered).startswith("outbox row 7 was already delivered;")

    def test_key_already_processed_names_the_store_without_a_session(self):
        """A key recorded outside a session's change is reported against the store."""
        error = customer_session.KeyAlreadyProcessed("event-1", None)
        assert str(error) == "store: idempotency key 'event-1' was already processed"
        assert (error.key, error.integration_id) == ("event-1", None)


class TestCopies:
    def test_every_error_class_is_checked(self):
        """The copy tests below build an instance of every error class the module exports."""
        classes = {
            obj
            for name in exceptions.__all__
            if isinstance(obj := getattr(exceptions, name), type) and issubclass(obj, BaseException)
        }
        assert {type(error) for error in _one_of_each()} == classes

    @pytest.mark.parametrize("error", _one_of_each(), ids=lambda e: type(e).__name__)
    def test_pickle_keeps_message_and_attributes(self, error):
        """An error pickles and loads as its class, with the same message and attributes."""
        _same(pickle.loads(pickle.dumps(error)), error)  # noqa: S301 - our own data

    @pytest.mark.parametrize("error", _one_of_each(), ids=lambda e: type(e).__name__)
    @pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
    def test_copy_keeps_message_and_attributes(self, error, copier):
        """copy.copy and copy.deepcopy of an error keep its class, message and attributes."""
        _same(copier(error), error)

    def test_pickled_group_keeps_its_hooks_exceptions(self):
        """A pickled AfterCommitHookFailed still holds the hooks' exceptions and splits by type."""
        error = next(e for e in _one_of_each() if isinstance(e, ExceptionGroup))
        loaded = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
        assert [repr(e) for e in loaded.exceptions] == ["ValueError('erp down')", "KeyError('k')"]
        matched, rest = loaded.split(KeyError)
        assert matched is not None
        assert rest is not None
        assert (matched.record, rest.record) == (error.record, error.record)

    @pytest.mark.parametrize("error", _one_of_each(), ids=lambda e: type(e).__name__)
    def test_notes_survive_pickling(self, error):
        """Notes added to an error (add_note) are pickled with it."""
        error.add_note("while replaying line 7")
        assert pickle.loads(pickle.dumps(error)).__notes__ == ["while replaying line 7"]  # noqa: S301 - our own data


class TestModule:
    def test_all_lists_every_public_class(self):
        """exceptions.__all__ lists every error class and Problem, sorted."""
        public = sorted(
            name
            for name, obj in vars(exceptions).items()
            if isinstance(obj, type)
            and obj.__module__ == exceptions.__name__
            and not name.startswith("_")
        )
        assert exceptions.__all__ == public

    def test_everything_is_also_exported_by_the_package(self):
        """Every name of exceptions.__all__ is the same object in customer_session."""
        for name in exceptions.__all__:
            assert getattr(customer_session, name) is getattr(exceptions, name), name


def _documented_attributes() -> dict[str, set[str]]:
    """The attributes docs/errors.md lists for each error class, from its attribute table."""
    page = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    section = page.split("## Every error's attributes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.*?) \|$", section, flags=re.MULTILINE)
    # An attribute is named outside parentheses; inside them, the cell explains it.
    return {
        name: set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells))) for name, cells in rows
    }


class TestDocs:
    def test_errors_page_lists_every_attribute_of_every_error(self):
        """docs/errors.md names every error class with exactly the attributes it carries."""
        carried = {
            type(error).__name__: {name for name in vars(error) if not name.startswith("_")}
            for error in _one_of_each()
        }
        assert _documented_attributes() == carried

    @pytest.mark.parametrize("attribute", ["waited_for", "setting"])
    def test_errors_page_lists_every_value_store_timeout_documents(self, attribute):
        """The errors page gives each value of StoreTimeout's attribute its docstring gives."""
        page = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
        section = page.split("## Every error's attributes", 1)[1]
        row = re.search(r"^\| `StoreTimeout` \| (.*) \|$", section, flags=re.MULTILINE)
        assert row is not None
        cell = re.search(rf"`{attribute}` \(([^)]*)\)", row[1])
        assert cell is not None
        doc = exceptions.StoreTimeout.__doc__ or ""
        flags = re.MULTILINE | re.DOTALL
        entry = re.search(rf"^\s+{attribute}: (.*?)(?=^\s+\w+: |\Z)", doc, flags=flags)
        assert entry is not None
        quoted = r'"(\w[\w ]*)"'
        assert set(re.findall(quoted, cell[1])) == set(re.findall(quoted, entry[1]))
