import asyncio
import gc
import pickle
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dt_time

import pytest

from customer_session import (
    CartItem,
    CustomerSession,
    Edge,
    Phase,
    ReturnedItem,
    Specification,
    State,
    Trigger,
    UnknownTrigger,
    Workflow,
    WorkflowError,
)
from customer_session.aio import AsyncSession

from .conftest import BROKEN_ZONE_TIMES, UNHASHABLE_TIME


class TestPhases:
    def test_order_is_the_enum_order(self):
        """The phases run in the order the Phase enum declares."""
        assert [p.value for p in Phase] == [
            "guard",
            "before",
            "exit",
            "enter",
            "after",
            "after_commit",
        ]

    def test_only_after_commit_is_past_the_commit_point(self):
        """Every phase but AFTER_COMMIT rolls back on failure."""
        assert [p for p in Phase if not p.before_commit] == [Phase.AFTER_COMMIT]


class TestEvents:
    def test_record_is_the_committed_history_record(self):
        """An event's record() is the record its transition commits, returned items included."""
        events = []
        workflow = Workflow()
        workflow.register(Phase.AFTER_COMMIT, events.append, key=Trigger.RETURN_ITEMS)
        session = CustomerSession(
            integration_id="o", cart_items=[CartItem(sku="A", quantity=2)], workflow=workflow
        )
        session.close()
        session.return_items([ReturnedItem(position=0, quantity=1)])
        (event,) = events
        assert event.record() == session.history[-1]
        assert event.record().returned_items == (ReturnedItem(position=0, quantity=1),)


class TestRegistration:
    def test_decorator_returns_the_function(self):
        """Used as a decorator, registration returns the function unchanged."""
        workflow = Workflow()

        @workflow.before(trigger=Trigger.CLOSE)
        def hook(event):
            return None

        assert callable(hook)
        assert [r.func for r in workflow.registrations] == [hook]

    def test_call_returns_a_registration_that_removes_itself(self):
        """Called with a function, registration returns a handle whose remove() undoes it."""
        workflow = Workflow()
        registration = workflow.after_commit(lambda event: None, trigger="close")
        assert registration.phase is Phase.AFTER_COMMIT
        assert registration.key is Trigger.CLOSE
        registration.remove()
        registration.remove()
        assert workflow.registrations == ()

    def test_registration_as_context_manager(self):
        """A registration used as a context manager is removed on exit."""
        workflow = Workflow()
        with workflow.on_enter(lambda event: None, state=State.CLOSED):
            assert len(workflow.registrations) == 1
        assert workflow.registrations == ()

    def test_remove_by_function(self):
        """remove(func) drops every registration of that function and counts them."""
        workflow = Workflow()

        def hook(event):
            return None

        workflow.before(hook)
        workflow.after(hook)
        assert workflow.remove(hook) == 2
        assert workflow.registrations == ()

    def test_remove_by_bound_method(self):
        """remove(obj.method) drops that object's registrations of it, and no other object's."""
        workflow = Workflow()

        class Mailer:
            def send(self, event):
                return None

        mailer, other = Mailer(), Mailer()
        workflow.after_commit(mailer.send)
        workflow.before(mailer.send)
        kept = workflow.after_commit(other.send)
        assert workflow.remove(mailer.send) == 2
        assert workflow.registrations == (kept,)

    def test_remove_by_builtin_bound_method(self):
        """remove(seen.append) drops the registrations of that list's append."""
        workflow = Workflow()
        seen: list[object] = []
        workflow.after_commit(seen.append)
        assert workflow.remove([].append) == 0
        assert workflow.remove(seen.append) == 1
        assert workflow.registrations == ()

    def test_an_object_with_an_async_call_is_async(self):
        """A callable object whose __call__ is a coroutine function registers as async."""

        class Publisher:
            async def __call__(self, event):
                return None

        assert Workflow().after_commit(Publisher()).is_async

    def test_a_state_the_table_lacks_is_refused(self):
        """An exit or enter hook for a state outside the workflow's table is a WorkflowError."""
        three_states = Specification(
            name="three_states",
            states=(State.OPEN, State.CLOSED, State.CANCELLED),
            initial_states={State.OPEN},
            edges=[
                Edge(Trigger.CLOSE, State.OPEN, State.CLOSED),
                Edge(Trigger.CANCEL, State.OPEN, State.CANCELLED),
            ],
        )
        workflow = Workflow(three_states)
        with pytest.raises(WorkflowError, match="'partially_returned' is not a state of"):
            workflow.on_enter(lambda event: None, state=State.PARTIALLY_RETURNED)
        assert workflow.registrations == ()

    def test_unknown_trigger_is_refused(self):
        """Registering for a trigger the table does not have is refused."""
        with pytest.raises(UnknownTrigger, match="reopen"):
            Workflow().before(lambda event: None, trigger="reopen")

    def test_a_trigger_of_another_table_is_named_by_its_text(self):
        """A guard for Trigger.REOPEN on the plain table names it 'reopen', not its enum repr."""
        with pytest.raises(UnknownTrigger, match=r"^unknown trigger 'reopen'; known: ") as info:
            Workflow().guard(lambda event: None, trigger=Trigger.REOPEN)
        assert "Workflow of REOPENABLE_SESSION" in str(info.value)

    def test_a_trigger_given_for_a_state_is_named_by_its_text(self):
        """A Trigger member given where a state is wanted is named by its text."""
        with pytest.raises(WorkflowError, match=r"^'close' is not a state; states: "):
            Workflow().on_enter(lambda event: None, state=Trigger.CLOSE)  # type: ignore[arg-type]

    def test_unknown_state_is_refused(self):
        """Registering for a state that does not exist is refused."""
        with pytest.raises(WorkflowError, match="shipped"):
            Workflow().on_enter(lambda event: None, state="shipped")

    def test_non_callable_is_refused(self):
        """Only callables can be registered."""
        with pytest.raises(WorkflowError, match="callable"):
            Workflow().register(Phase.BEFORE, "audit")  # type: ignore[arg-type]

    def test_names_default_to_the_qualified_name(self):
        """A registration is named after its function unless a name is given."""
        workflow = Workflow()

        def audit(event):
            return None

        assert workflow.before(audit).name.endswith("audit")
        assert workflow.before(audit, name="audit-log").name == "audit-log"

    def test_phase_that_is_not_a_phase_is_refused(self):
        """register() with a phase's value instead of a Phase is a WorkflowError naming it."""
        workflow = Workflow()
        with pytest.raises(WorkflowError, match=r"phase must be a Phase \(Phase.GUARD, .*'before'"):
            workflow.register("before", lambda event: None)  # type: ignore[arg-type]
        assert workflow.registrations == ()

    @pytest.mark.parametrize("name", ["", 5])
    def test_name_that_is_not_a_non_empty_string_is_refused(self, name):
        """A registration name that is empty or not a string is refused, not used or ignored."""
        workflow = Workflow()
        with pytest.raises(WorkflowError, match="registration's name must be a non-empty string"):
            workflow.guard(lambda event: None, name=name)
        assert workflow.registrations == ()

    def test_registrations_from_several_threads_are_all_kept(self):
        """Threads registering and removing at once lose no change and revive no removed guard."""
        workflow = Workflow()
        removed = [workflow.guard(lambda event: "no", name=f"old-{i}") for i in range(100)]

        def register():
            for _ in range(200):
                workflow.after(lambda event: None)

        def remove():
            for registration in removed:
                registration.remove()

        threads = [threading.Thread(target=register) for _ in range(4)]
        threads.append(threading.Thread(target=remove))
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often, as a loaded server may
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert len(workflow.registrations) == 4 * 200
        assert not set(removed) & set(workflow.registrations)


class TestScopes:
    def test_two_workflows_coexist(self):
        """Hooks of one workflow never run for sessions bound to another."""
        calls: list[str] = []
        first, second = Workflow(), Workflow()
        first.after_commit(lambda event: calls.append("first"))
        second.after_commit(lambda event: calls.append("second"))
        CustomerSession(integration_id="a", workflow=first).close()
        CustomerSession(integration_id="b", workflow=second).close()
        assert calls == ["first", "second"]

    def test_class_default_workflow_applies_to_every_session(self):
        """A hook on the class's default workflow runs for every default session."""
        calls: list[str] = []
        registration = CustomerSession.default_workflow.after_commit(
            lambda event: calls.append(event.session.integration_id)
        )
        try:
            CustomerSession(integration_id="a").close()
            CustomerSession(integration_id="b", workflow=Workflow()).close()
        finally:
            registration.remove()
        assert calls == ["a"]

    def test_async_exit_hook_does_not_hold_up_an_internal_transition(self):
        """An async exit hook, which no internal transition runs, leaves those to the sync face."""
        workflow = Workflow()

        async def leaving(event):
            return None  # pragma: no cover - an internal transition never exits

        workflow.on_exit(leaving, state=State.PARTIALLY_RETURNED)
        s = CustomerSession(
            integration_id="a",
            state=State.CLOSED,
            cart_items=[CartItem(sku="A", quantity=2)],
            workflow=workflow,
        )
        s.return_items([ReturnedItem(position=0, quantity=1)])
        s.return_items([ReturnedItem(position=0, quantity=1)])
        assert [r.destination for r in s.history] == [State.PARTIALLY_RETURNED] * 2

    def test_wildcard_and_specific_keep_registration_order(self):
        """Hooks for all triggers and for one trigger run in registration order."""
        calls: list[str] = []
        workflow = Workflow()
        workflow.before(lambda event: calls.append("any-1"))
        workflow.before(lambda event: calls.append("close"), trigger=Trigger.CLOSE)
        workflow.before(lambda event: calls.append("any-2"))
        workflow.before(lambda event: calls.append("cancel"), trigger=Trigger.CANCEL)
        CustomerSession(integration_id="a", workflow=workflow).close()
        assert calls == ["any-1", "close", "any-2"]


class TestConstruction:
    @pytest.mark.parametrize("specification", ["customer_session", None])
    def test_specification_that_is_not_one_is_refused(self, specification):
        """A workflow of something that is not a Specification is a WorkflowError."""
        with pytest.raises(WorkflowError, match="specification must be a Specification"):
            Workflow(specification)

    def test_clock_that_is_not_callable_is_refused(self):
        """A clock that cannot be called is refused when the workflow is created."""
        with pytest.raises(WorkflowError, match="clock must be a callable"):
            Workflow(clock=datetime(2026, 3, 2, tzinfo=UTC))  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["", 5])
    def test_name_that_is_not_a_non_empty_string_is_refused(self, name):
        """A workflow name that is empty or not a string is refused and not registered."""
        with pytest.raises(WorkflowError, match="workflow's name must be a non-empty string"):
            Workflow(name=name)


class TestNamedWorkflows:
    def test_duplicate_names_are_refused(self):
        """Two live workflows cannot share a name."""
        keep = Workflow(name="test_hooks.dup")
        with pytest.raises(WorkflowError, match="already exists"):
            Workflow(name="test_hooks.dup")
        assert keep.name == "test_hooks.dup"

    def test_a_name_held_only_by_garbage_is_free(self):
        """A named workflow that nothing reaches frees its name, even in a reference cycle."""

        def make() -> Workflow:
            workflow = Workflow(name="test_hooks.cycle")
            # A hook that refers to its own workflow: a cycle only the collector frees.
            workflow.after_commit(lambda event: workflow.now(), trigger=Trigger.CLOSE)
            return workflow

        gc.disable()  # the collector must not free the first one on its own
        try:
            make()
            assert make().name == "test_hooks.cycle"
        finally:
            gc.enable()

    def test_unpickling_needs_the_workflow(self):
        """Loading a session whose workflow no longer exists says so."""
        workflow = Workflow(name="test_hooks.gone")
        data = pickle.dumps(CustomerSession(integration_id="o", workflow=workflow))
        del workflow
        with pytest.raises(WorkflowError, match=r"test_hooks\.gone"):
            pickle.loads(data)  # noqa: S301 - our own data

    def test_naive_clock_is_refused(self):
        """A clock returning naive datetimes is reported clearly."""
        workflow = Workflow(clock=lambda: datetime(2026, 1, 1))  # noqa: DTZ001
        with pytest.raises(WorkflowError, match="naive"):
            CustomerSession(integration_id="o", workflow=workflow)

    @pytest.mark.parametrize(
        ("clock", "name", "shown"),
        [
            (time.time, "time.time", "not a datetime"),
            (date.today, "date.today", "datetime.date("),
            (lambda: None, "<lambda>", "returned None"),
            (lambda: dt_time(10, 15, tzinfo=UTC), "<lambda>", "datetime.time("),
        ],
    )
    def test_clock_returning_no_datetime_is_refused(self, clock, name, shown):
        """A clock returning no datetime is a WorkflowError naming it and its value."""
        workflow = Workflow(clock=clock)
        with pytest.raises(WorkflowError) as info:
            CustomerSession(integration_id="o", workflow=workflow)
        assert name in str(info.value)
        assert shown in str(info.value)

    def test_aware_clock_times_become_utc(self):
        """An aware clock time in another zone is given as the same instant in UTC."""
        plus_two = timezone(timedelta(hours=2))
        workflow = Workflow(clock=lambda: datetime(2026, 3, 2, 12, tzinfo=plus_two))
        now = workflow.now()
        assert now.tzinfo is UTC
        assert now == datetime(2026, 3, 2, 10, tzinfo=UTC)

    def test_clock_beyond_the_utc_range_is_refused(self):
        """A clock time that cannot be expressed in UTC is a WorkflowError, not OverflowError."""
        late = datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1)))
        workflow = Workflow(clock=lambda: late)
        with pytest.raises(WorkflowError, match="outside the years 1 to 9999 in UTC"):
            CustomerSession(integration_id="o", workflow=workflow)

    @pytest.mark.parametrize("moment", BROKEN_ZONE_TIMES)
    def test_clock_time_whose_zone_fails_is_refused(self, moment):
        """A clock time whose zone fails is a WorkflowError naming the clock, caused by it."""
        workflow = Workflow(clock=lambda: moment)
        with pytest.raises(WorkflowError, match=r"<lambda>.*whose time zone failed") as info:
            CustomerSession(integration_id="o", workflow=workflow)
        assert isinstance(info.value.__cause__, Exception)
        assert not isinstance(info.value.__cause__, WorkflowError)

    def test_clock_failing_at_a_trigger_changes_nothing(self):
        """A clock that stops returning datetimes fails the trigger before anything changes."""
        ticks = iter([datetime(2026, 1, 1, tzinfo=UTC), None])
        s = CustomerSession(integration_id="o", workflow=Workflow(clock=lambda: next(ticks)))
        before = s.snapshot()
        with pytest.raises(WorkflowError, match="returned None"):
            s.close()
        assert s.snapshot() == before


def _failing_clock() -> datetime:
    """A clock that raises, as a broken user clock would."""
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=1 / 0)


class _Switch:
    """A clock that gives a fixed time until it is told to raise."""

    def __init__(self) -> None:
        self.broken = False

    def __call__(self) -> datetime:
        if self.broken:
            return _failing_clock()
        return datetime(2026, 1, 1, tzinfo=UTC)


def _guarded(clock: _Switch) -> Workflow:
    """A workflow of ``clock`` with a guard and a hook on close (the trigger's full path)."""
    workflow = Workflow(clock=clock)
    workflow.guard(lambda event: None, trigger=Trigger.CLOSE)
    workflow.before(lambda event: None, trigger=Trigger.CLOSE)
    return workflow


class TestFailingClock:
    def test_a_clock_that_raises_is_a_workflow_error_naming_it(self):
        """A clock that raises makes now() a WorkflowError naming the clock and the error."""
        workflow = Workflow(clock=_failing_clock)
        with pytest.raises(WorkflowError) as info:
            workflow.now()
        assert "test_hooks._failing_clock of <Workflow" in str(info.value)
        assert "raised ZeroDivisionError: division by zero" in str(info.value)
        assert isinstance(info.value.__cause__, ZeroDivisionError)

    def test_a_new_session_whose_clock_raises_is_refused(self):
        """A new session whose workflow's clock raises is a WorkflowError, the cause chained."""
        with pytest.raises(WorkflowError, match="raised ZeroDivisionError") as info:
            CustomerSession(integration_id="o", workflow=Workflow(clock=_failing_clock))
        assert isinstance(info.value.__cause__, ZeroDivisionError)

    @pytest.mark.parametrize(
        ("hooked", "call"),
        [
            (False, lambda s: s.close()),
            (True, lambda s: s.close()),
            (False, lambda s: s.fire("cancel")),
            (False, lambda s: s.set_coupon("GIFT")),
            (False, lambda s: s.add_item(CartItem(sku="A", quantity=1))),
            (True, lambda s: s.can(Trigger.CLOSE)),
            (True, lambda s: s.why_not(Trigger.CLOSE)),
        ],
        ids=["close", "close with hooks", "fire", "edit", "cart edit", "can", "why_not"],
    )
    def test_a_call_whose_clock_raises_changes_nothing(self, hooked, call):
        """A trigger, edit or question whose clock raises is a WorkflowError; nothing changed."""
        clock = _Switch()
        workflow = _guarded(clock) if hooked else Workflow(clock=clock)
        session = CustomerSession(integration_id="o", workflow=workflow)
        before = session.snapshot()
        clock.broken = True
        with pytest.raises(WorkflowError, match="raised ZeroDivisionError") as info:
            call(session)
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        assert session.snapshot() == before
        clock.broken = False
        session.close()  # the session is not left busy
        assert session.state is State.CLOSED

    @pytest.mark.parametrize("hooked", [False, True], ids=["plain", "with hooks"])
    def test_an_async_trigger_whose_clock_raises_changes_nothing(self, hooked):
        """The async face refuses a trigger whose clock raises as the sync one does."""
        clock = _Switch()
        workflow = _guarded(clock) if hooked else Workflow(clock=clock)
        session = CustomerSession(integration_id="o", workflow=workflow)
        before = session.snapshot()
        clock.broken = True
        with pytest.raises(WorkflowError, match="raised ZeroDivisionError"):
            asyncio.run(AsyncSession(session).close())
        assert session.snapshot() == before

    def test_a_store_update_whose_clock_raises_writes_nothing(self):
        """A store update whose trigger's clock raises is a WorkflowError; nothing is written."""
        from customer_session.store import SQLiteStore  # noqa: PLC0415 - the store's own case

        clock = _Switch()
        with SQLiteStore(":memory:", workflow=Workflow(clock=clock)) as store:
            store.create(CustomerSession(integration_id="o", workflow=store.workflow))
            clock.broken = True
            with pytest.raises(WorkflowError, match="raised ZeroDivisionError"):
                store.update("o", lambda session: session.close())
            clock.broken = False
            assert store.get("o").state is State.OPEN
            assert len(store.history("o")) == 1


class TestLookups:
    def test_plan_is_what_runs_for_a_registered_edge(self):
        """plan() gives the registered callables of an edge, and None for an edge without any."""
        workflow = Workflow()

        registration = workflow.after(lambda event: None, trigger=Trigger.CLOSE)
        plan = workflow.plan(State.OPEN, Trigger.CLOSE)
        assert plan is not None
        assert plan.after == (registration,)
        assert workflow.plan(State.OPEN, Trigger.CANCEL) is None

    def test_plain_destination_is_the_target_of_an_edge_without_callables(self):
        """plain_destination() gives an unhooked edge's target, None for a hooked one."""
        workflow = Workflow()
        workflow.after(lambda event: None, trigger=Trigger.CLOSE)
        assert workflow.plain_destination(State.OPEN, Trigger.CLOSE) is None
        assert workflow.plain_destination(State.OPEN, Trigger.CANCEL) is State.CANCELLED
        assert workflow.plain_destination(State.CANCELLED, Trigger.CLOSE) is None

    @pytest.mark.parametrize(
        ("source", "trigger"),
        [
            (State.OPEN, Trigger.REOPEN),  # a trigger of another table
            (State.OPEN, 1),
            (State.OPEN, ["close"]),
            (["open"], Trigger.CLOSE),
            (State.OPEN, UNHASHABLE_TIME),
            (UNHASHABLE_TIME, Trigger.CLOSE),
        ],
        ids=["reopen", "number", "list trigger", "list state", "time trigger", "time state"],
    )
    def test_no_edge_of_the_table_has_no_plan_and_no_destination(self, source, trigger):
        """A pair that is no edge of the table has neither (None), whatever its values are."""
        workflow = Workflow()
        assert workflow.plan(source, trigger) is None
        assert workflow.plain_destination(source, trigger) is None

    @pytest.mark.parametrize("key", [["close"], UNHASHABLE_TIME], ids=["list", "time"])
    def test_a_key_of_no_table_has_no_entries(self, key):
        """entries() of a key no table has (one whose hash fails, too) is empty."""
        workflow = Workflow()
        workflow.after(lambda event: None, trigger=Trigger.CLOSE)
        assert workflow.entries(Phase.AFTER, key) == ()
