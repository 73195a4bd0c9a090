"""The stateful proof for the async face: the sync invariants hold with triggers awaited."""

import asyncio
import contextlib

from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from customer_session import (
    AfterCommitHookFailed,
    Phase,
    ReopenableCustomerSession,
    TransitionError,
    TransitionInProgress,
    Trigger,
    ValidationError,
    Workflow,
)
from customer_session._stateful import SessionStateMachine
from customer_session.aio import AsyncReopenableSession, AsyncSession

from .conftest import assert_seed_moves


class _Rollback(Exception):
    """An atomic() block's own failure, in the act_while_held rule."""


class AsyncFaceMachine(SessionStateMachine):
    """The base machine's rules and invariants, with every trigger fired through a face.

    Adds concurrent triggers on one session and cancellations at any suspension
    point. Each run has its own event loop; rules drive it to completion.
    """

    face_class: type[AsyncSession] = AsyncSession

    def __init__(self) -> None:
        """Create the workflow and the run's event loop."""
        super().__init__()
        self.runner = asyncio.Runner()

    def teardown(self) -> None:
        """Close the run's event loop."""
        self.runner.close()

    def _draw_call(self, data):
        session = data.draw(st.sampled_from(self.sessions), label="session")
        trigger = data.draw(st.sampled_from(session.specification.triggers), label="trigger")
        return session, trigger, self._draw_items(data, trigger)

    @rule(data=st.data())
    def fire(self, data):
        """Fire any trigger through a face (replaces the base rule's sync call)."""
        session, trigger, items = self._draw_call(data)
        face = self.face_class(session)
        self.attempt(session, lambda: self.runner.run(face.fire(trigger, items=items)))

    @rule(data=st.data(), count=st.integers(2, 3), shared=st.booleans())
    def fire_concurrently(self, data, count, shared):
        """Several tasks fire on one session; they take turns and none sees another's run."""
        session = data.draw(st.sampled_from(self.sessions), label="session")
        calls = []
        for _ in range(count):
            trigger = data.draw(st.sampled_from(session.specification.triggers), label="trigger")
            calls.append((trigger, self._draw_items(data, trigger)))
        face = self.face_class(session)

        async def together():
            faces = [face if shared else self.face_class(session) for _ in calls]
            return await asyncio.gather(
                *(f.fire(t, items=i) for f, (t, i) in zip(faces, calls, strict=True)),
                return_exceptions=True,
            )

        # The lock is first come, first served, so results are in commit order.
        for result in self.runner.run(together()):
            assert not isinstance(result, TransitionInProgress), result
            if isinstance(result, AfterCommitHookFailed):
                self.committed[id(session)].append(result.record)
            elif isinstance(result, TransitionError | ValidationError):
                self.refusals.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                self.committed[id(session)].append(result)

    @rule(data=st.data(), steps=st.integers(0, 12))
    def fire_and_cancel(self, data, steps):
        """Cancel a trigger after a few loop steps: unchanged, or committed whole."""
        session, trigger, items = self._draw_call(data)
        face = self.face_class(session)
        before = session.snapshot()

        async def cancel_after_steps():
            task = asyncio.create_task(face.fire(trigger, items=items))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                return None

        try:
            record = self.runner.run(cancel_after_steps())
        except AfterCommitHookFailed as error:
            record = error.record
        except (TransitionError, ValidationError) as error:
            self.refusals.append(error)
            record = None
        if record is None and len(session.history) > len(before["history"]):
            record = session.history[-1]  # cancelled during the after-commit hooks
        if record is None:
            assert session.snapshot() == before
        else:
            assert session.history[-1] == record
            self.committed[id(session)].append(record)

    @rule(data=st.data())
    def ask(self, data):
        """can() and why_not() through a face change nothing and agree (replaces the sync rule)."""
        session, trigger, items = self._draw_call(data)
        face = self.face_class(session)
        before = session.snapshot()

        async def both():
            return await face.why_not(trigger, items=items), await face.can(trigger, items=items)

        try:
            refusals, allowed = self.runner.run(both())
        except TransitionError as error:  # a guard raised: HookFailed
            self.refusals.append(error)
        else:
            assert allowed == (not refusals), (allowed, refusals)
        assert session.snapshot() == before

    @rule(data=st.data(), coupon=st.text("ABC", min_size=1, max_size=3), steps=st.integers(0, 3))
    def act_while_asked(self, data, coupon, steps):
        """Another task's edit or trigger while a face asks is refused or kept, never undone."""
        session, trigger, items = self._draw_call(data)
        other = data.draw(st.sampled_from(session.specification.triggers), label="other trigger")
        face = self.face_class(session)

        async def together():
            asking = asyncio.create_task(face.why_not(trigger, items=items))
            for _ in range(steps):
                await asyncio.sleep(0)
            self.attempt_edit(session, coupon)
            self.attempt(session, lambda: session.fire(other))
            try:
                await asking
            except TransitionError as error:
                self.refusals.append(error)

        self.runner.run(together())

    @rule(
        data=st.data(),
        coupon=st.text("ABC", min_size=1, max_size=3),
        steps=st.integers(0, 3),
        fail=st.booleans(),
    )
    def act_while_held(self, data, coupon, steps, fail):
        """Another task's edit or trigger while an atomic() block awaits is refused, never undone.

        The block fires and edits, yields for a few loop steps and then commits or
        raises; whatever it rolls back is only its own.
        """
        session, trigger, items = self._draw_call(data)
        other = data.draw(st.sampled_from(session.specification.triggers), label="other trigger")

        async def together():
            holding = asyncio.create_task(
                self._block(session, (trigger, items), coupon.lower(), steps=steps, fail=fail)
            )
            for _ in range(steps):
                await asyncio.sleep(0)
            self.attempt_edit(session, coupon)
            self.attempt(session, lambda: session.fire(other))
            await holding

        self.runner.run(together())

    async def _block(self, session, call, coupon, *, steps, fail):
        """An atomic() block that fires ``call``, edits, yields ``steps`` times, then ends."""
        trigger, items = call
        before = session.snapshot()
        edits = 0
        with contextlib.suppress(_Rollback), session.atomic():
            record = await self._fire_in_block(session, trigger, items)
            if session.state == "open":
                edits = int(session.coupon != coupon)  # the same coupon is no update
                session.set_coupon(coupon)
            for _ in range(steps):
                await asyncio.sleep(0)
            if fail:
                raise _Rollback
        if fail:
            assert session.snapshot() == before, "a rolled-back block left a trace"
            return
        # No await since the block ended: no other task's change came in between.
        if record is not None:
            self._note_commit(session, before["history"], record)
        self.edits[id(session)] += edits

    async def _fire_in_block(self, session, trigger, items):
        """Fire through a face in the block; the committed record, or None if refused."""
        try:
            return await self.face_class(session).fire(trigger, items=items)
        except AfterCommitHookFailed as error:
            return error.record
        except (TransitionError, ValidationError) as error:
            self.refusals.append(error)
            return None

    @invariant()
    def no_transition_is_left_running(self):
        """Between steps no session is marked as in a transition."""
        for session in self.sessions:
            assert session._running is None

    @invariant()
    def moves_are_the_seeds(self):
        """Every session starts open or closed and takes only the moves written out by hand."""
        assert_seed_moves(self.sessions)


class AsyncChaosMachine(AsyncFaceMachine):
    """Async and sync guards and hooks in every phase that yield, refuse and raise."""

    def make_workflow(self) -> Workflow:
        """A workflow whose callables yield to the loop and obey the rules' switches."""
        self.failing: set[Phase] = set()
        self.refusing: set[Trigger] = set()
        workflow = Workflow()

        async def guard(event):
            await asyncio.sleep(0)
            return "refused by the test" if event.trigger in self.refusing else None

        workflow.guard(guard)
        workflow.guard(lambda event: None, name="sync guard")
        for phase in Phase:
            if phase is not Phase.GUARD:
                workflow.register(phase, self._async_hook(phase))
                workflow.register(phase, self._sync_hook(phase))
        return workflow

    def _sync_hook(self, phase):
        def hook(event):
            if phase in self.failing:
                if event.session.state == "open":  # change something the rollback must undo
                    event.session.set_attribute("chaos", phase.value)
                raise RuntimeError(f"{phase.value} failed")

        return hook

    def _async_hook(self, phase):
        async def hook(event):
            await asyncio.sleep(0)  # a point where another task or a cancellation comes in
            if phase in self.failing:
                if event.session.state == "open":
                    event.session.set_attribute("chaos", phase.value)
                await asyncio.sleep(0)  # a cancellation here must undo the edit as well
                raise RuntimeError(f"{phase.value} failed")

        return hook

    @rule(phase=st.sampled_from(list(Phase)), on=st.booleans())
    def switch_failure(self, phase, on):
        """Make the hooks of one phase raise, or stop raising."""
        (self.failing.add if on else self.failing.discard)(phase)

    @rule(trigger=st.sampled_from(list(Trigger)), on=st.booleans())
    def switch_refusal(self, trigger, on):
        """Make the async guard refuse one trigger, or stop refusing it."""
        (self.refusing.add if on else self.refusing.discard)(trigger)

    @invariant()
    def update_count_counts_changes(self):
        """update_count is 1 plus every committed transition and edit."""
        for session in self.sessions:
            assert session.update_count == 1 + len(session.history) + self.edits[id(session)]


class AsyncReopenableMachine(AsyncFaceMachine):
    """The reopen table through its typed face, with a yielding hook in every phase."""

    session_class = ReopenableCustomerSession
    face_class = AsyncReopenableSession

    def make_workflow(self) -> Workflow:
        """A workflow of the reopen table whose hooks only yield to the loop."""
        workflow = Workflow(ReopenableCustomerSession.specification)

        async def pause(event):
            await asyncio.sleep(0)

        for phase in Phase:
            workflow.register(phase, pause)
        return workflow


TestAsyncChaos = AsyncChaosMachine.TestCase
TestAsyncReopenable = AsyncReopenableMachine.TestCase
