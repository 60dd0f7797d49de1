"""Stateful property test of MasterState: workers join, finish and are lost.

A hypothesis state machine picks a random graph, then interleaves worker
registrations, results (success or failure, also late ones from lost
workers), lost workers and an advancing fake clock, with and without
prefetch. It tracks which modules each worker holds from the Dispatch
instructions and checks the scheduling rules after every step.
"""

from __future__ import annotations

import re

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pipeline_actors.errors import ExitCode
from pipeline_actors.graph import Graph, ModuleSpec
from pipeline_actors.messages import MASTER_ID, Outcome, ResultEvent
from pipeline_actors.module import OPERATING_SYSTEMS
from pipeline_actors.state import (
    Dispatch,
    Finish,
    Instruction,
    MasterState,
    ModuleStatus,
    StatusChange,
)

CAPABILITIES = ("gpu", "linux", "macos")
CAPABILITY_TIMEOUT = 30.0
"""Seconds a module waits for a capable worker before it fails."""
DRAIN_AFTER = 25
"""Events the state must receive before `drain` or `close_registration` may run.

Either rule can end the run at once, and the steps after the end only
exercise a finished run.
"""


def mixed_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda upper: "".join(
            c.upper() if u else c for c, u in zip(word, upper, strict=True)
        )
    )


capability_sets = st.frozensets(
    st.sampled_from(CAPABILITIES).flatmap(mixed_case), max_size=3
)
"""Capability sets as workers offer them, in any case."""

platform_sets = st.one_of(
    st.just(frozenset()),
    st.frozensets(st.sampled_from(sorted(OPERATING_SYSTEMS)), min_size=1),
)
"""Operating systems a module is restricted to, often none."""

outcomes = st.sampled_from((Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED))
"""Outcomes a worker reports; a cancelled one comes from a worker cut short."""


@st.composite
def graphs(draw, max_modules: int = 8) -> Graph:
    """Draw an acyclic graph with lower-case requirements, as `Graph.build` does."""
    count = draw(st.integers(min_value=1, max_value=max_modules))
    specs: list[ModuleSpec] = []
    for index in range(count):
        earlier = [spec.name for spec in specs]
        deps = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3))
            if earlier
            else []
        )
        spec = ModuleSpec(
            name=f"m{index}",
            dependencies=tuple(deps),
            requires=draw(st.frozensets(st.sampled_from(CAPABILITIES), max_size=2)),
            pin_to_master=draw(st.sampled_from((False, False, False, True))),
            duration=float(draw(st.integers(min_value=1, max_value=20))),
            platforms=draw(platform_sets),
        )
        specs.append(spec)
    return Graph.from_specs(specs)


class SchedulerMachine(RuleBasedStateMachine):
    """Drive MasterState with random events and check its instructions."""

    @initialize(
        graph=graphs(),
        has_master=st.booleans(),
        max_attempts=st.integers(min_value=1, max_value=3),
        workers=st.lists(capability_sets, max_size=3),
        prefetch=st.integers(min_value=0, max_value=2),
    )
    def begin(self, graph, has_master, max_attempts, workers, prefetch):
        self.graph = graph
        self.prefetch = prefetch
        self.state = MasterState(
            graph,
            max_attempts=max_attempts,
            capability_timeout=CAPABILITY_TIMEOUT,
            workers_may_join=True,
            prefetch=prefetch,
        )
        self.now = 0.0
        self.may_join = True
        self.worker_count = 0
        self.capabilities: dict[str, frozenset[str]] = {}
        """Lower-cased capabilities of every registered worker, by id."""
        self.alive: set[str] = set()
        self.holdings: dict[str, list[tuple[str, int]]] = {}
        """(module, attempt) dispatched to each live worker and not yet finished,
        in the order the worker runs them."""
        self.orphans: list[tuple[str, str, int]] = []
        """(worker, module, attempt) that lost workers ran, for late results."""
        self.statuses = {name: ModuleStatus.PENDING for name in graph.order}
        self.succeeded: set[str] = set()
        self.queued_at: dict[str, float] = {}
        self.exit_codes: list[ExitCode] = []
        self.events = 0

        if has_master:
            self.capabilities[MASTER_ID] = frozenset()
            self.alive.add(MASTER_ID)
            self.apply(
                self.state.worker_registered(
                    MASTER_ID, frozenset(), self.now, is_master=True
                )
            )
        for capabilities in workers:
            self.register(capabilities)
        self.apply(self.state.start(self.now))

    def apply(self, instructions: list[Instruction]) -> None:
        """Check each instruction against the model, then record it."""
        self.events += 1
        for instruction in instructions:
            if isinstance(instruction, Dispatch):
                self.check_dispatch(instruction)
                module, worker_id = instruction.module, instruction.worker_id
                held = self.holdings.setdefault(worker_id, [])
                held.append((module, instruction.attempt))
                self.statuses[module] = ModuleStatus.RUNNING
            elif isinstance(instruction, StatusChange):
                self.check_status_change(instruction)
                self.statuses[instruction.module] = instruction.status
                if instruction.status is ModuleStatus.QUEUED:
                    self.queued_at[instruction.module] = self.now
            elif isinstance(instruction, Finish):
                assert self.exit_codes == [], "the run finished twice"
                self.exit_codes.append(instruction.exit_code)

    def check_dispatch(self, dispatch: Dispatch) -> None:
        module, worker_id = dispatch.module, dispatch.worker_id
        spec = self.graph.specs[module]
        assert self.exit_codes == [], f"{module} dispatched after the run finished"
        assert worker_id in self.alive, f"{module} dispatched to lost {worker_id}"
        held = self.holdings.get(worker_id, [])
        assert len(held) <= self.prefetch, f"{worker_id} got {module} holding {held}"
        if held:
            assert worker_id != MASTER_ID, f"{module} sent ahead to the master"
            assert dispatch.behind == held[-1][0], f"{module} not behind {held}"
            self.check_no_capable_idle_worker(spec)
        status = self.statuses[module]
        assert not status.is_terminal, f"{module} dispatched when {status.value}"
        missing = set(spec.dependencies) - self.succeeded
        assert not missing, f"{module} dispatched before {sorted(missing)} succeeded"
        if spec.pin_to_master:
            assert worker_id == MASTER_ID, f"pinned {module} sent to {worker_id}"
        else:
            assert worker_id != MASTER_ID, f"unpinned {module} sent to the master"
            offered = self.capabilities[worker_id]
            lacking = spec.requires - offered
            assert not lacking, f"{module} sent to {worker_id}, lacking {lacking}"
            if spec.platforms:
                systems = sorted(spec.platforms)
                assert spec.platforms & offered, f"{module} sent off {systems}"

    def check_no_capable_idle_worker(self, spec: ModuleSpec) -> None:
        """Check that a module sent ahead could not have started at once."""
        for worker_id in self.alive - {MASTER_ID}:
            if self.holdings.get(worker_id):
                continue
            offered = self.capabilities[worker_id]
            capable = spec.requires <= offered and (
                not spec.platforms or spec.platforms & offered
            )
            assert not capable, f"{spec.name} sent ahead while {worker_id} idles"

    def check_status_change(self, change: StatusChange) -> None:
        module = change.module
        old = self.statuses[module]
        assert not old.is_terminal, (
            f"{module} went from {old.value} to {change.status.value}"
        )
        if change.status is ModuleStatus.SUCCEEDED:
            assert module not in self.succeeded, f"{module} succeeded twice"
            self.succeeded.add(module)
        if change.status is ModuleStatus.FAILED and self.may_join:
            self.check_capability_timeout(module, change.detail or "")

    def check_capability_timeout(self, module: str, detail: str) -> None:
        """Check that a module failed for want of a worker only after the timeout."""
        lacking = detail.startswith("no worker can run it")
        pinned = detail.startswith("module is pinned to the master")
        if not (lacking or pinned):
            return
        waited = self.now - self.queued_at[module]
        assert waited >= CAPABILITY_TIMEOUT, f"{module} failed after {waited} s"
        if lacking:
            reported = re.search(r"and waited (\d+) s for such a worker", detail)
            assert reported is not None, f"{module} failed without waiting: {detail}"
            assert float(reported.group(1)) >= CAPABILITY_TIMEOUT

    def deliver(self, worker_id: str, module: str, attempt: int, outcome: Outcome):
        success = outcome is Outcome.SUCCEEDED
        event = ResultEvent(
            worker_id, module, attempt, outcome,
            b"" if success else None,
            None if success else f"{outcome.value} on purpose",
            "", self.now, 0.0,
        )  # fmt: skip
        self.apply(self.state.result_received(event, self.now))

    def register(self, capabilities: frozenset[str]) -> None:
        worker_id = f"w{self.worker_count}"
        self.worker_count += 1
        self.capabilities[worker_id] = frozenset(c.lower() for c in capabilities)
        self.alive.add(worker_id)
        self.apply(self.state.worker_registered(worker_id, capabilities, self.now))

    @precondition(lambda self: self.may_join)
    @rule(capabilities=capability_sets)
    def join(self, capabilities):
        self.register(capabilities)

    @precondition(lambda self: self.holdings)
    @rule(data=st.data(), outcome=outcomes)
    def finish(self, data, outcome):
        worker_id = data.draw(st.sampled_from(sorted(self.holdings)))
        module, attempt = self.take_next(worker_id)
        self.deliver(worker_id, module, attempt, outcome)

    def take_next(self, worker_id: str) -> tuple[str, int]:
        """Remove and return the module `worker_id` runs first."""
        held = self.holdings[worker_id]
        first = held.pop(0)
        if not held:
            del self.holdings[worker_id]
        return first

    @precondition(lambda self: self.alive - {MASTER_ID})
    @rule(data=st.data())
    def lose(self, data):
        worker_id = data.draw(st.sampled_from(sorted(self.alive - {MASTER_ID})))
        self.alive.discard(worker_id)
        for held in self.holdings.pop(worker_id, []):
            self.orphans.append((worker_id, *held))
        self.apply(self.state.worker_lost(worker_id, self.now))

    @precondition(lambda self: self.orphans)
    @rule(data=st.data(), outcome=outcomes)
    def finish_late(self, data, outcome):
        """Deliver the result of an attempt whose worker was declared lost."""
        index = data.draw(st.integers(0, len(self.orphans) - 1))
        worker_id, module, attempt = self.orphans.pop(index)
        self.deliver(worker_id, module, attempt, outcome)

    @rule(seconds=st.integers(min_value=1, max_value=10))
    def tick(self, seconds):
        self.now += seconds
        self.apply(self.state.timer_fired(self.now))

    @precondition(lambda self: self.may_join and self.events >= DRAIN_AFTER)
    @rule()
    def close_registration(self):
        self.may_join = False
        self.apply(self.state.close_registration(self.now))

    @precondition(lambda self: self.events >= DRAIN_AFTER and not self.state.finished)
    @rule()
    def drain(self):
        """Complete everything held and let timeouts pass until the run ends.

        Each round either completes a held module or, with nothing held,
        passes the capability timeout so every queued module fails, so
        the run ends within about two rounds per module.
        """
        for _ in range(3 * len(self.graph) + 3):
            if self.state.finished:
                break
            if self.holdings:
                for worker_id in sorted(self.holdings):
                    module, attempt = self.take_next(worker_id)
                    self.deliver(worker_id, module, attempt, Outcome.SUCCEEDED)
            else:
                self.now += CAPABILITY_TIMEOUT + 1
                self.apply(self.state.timer_fired(self.now))
        assert self.state.finished, "the run did not end once drained"

    @invariant()
    def records_match_instructions(self):
        for name, record in self.state.records.items():
            assert record.status is self.statuses[name], name

    @invariant()
    def holdings_match_state(self):
        for worker_id in self.capabilities:
            assert self.state.held_by(worker_id) == self.holdings.get(worker_id, [])

    @invariant()
    def finished_means_terminal(self):
        if not self.state.finished:
            assert self.exit_codes == []
            return
        for name, record in self.state.records.items():
            assert record.status.is_terminal, f"{name} is {record.status.value}"
        unfinished = {ModuleStatus.FAILED, ModuleStatus.CANCELLED}
        failed = bool(unfinished & set(self.statuses.values()))
        expected = ExitCode.FAILED if failed else ExitCode.OK
        assert self.exit_codes == [expected]


SchedulerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_scheduler_machine = SchedulerMachine.TestCase


def late_result(dispatch: Dispatch) -> ResultEvent:
    """Return a success of `dispatch`, as its lost worker would send it."""
    return ResultEvent(
        dispatch.worker_id, dispatch.module, dispatch.attempt,
        Outcome.SUCCEEDED, b"", None, "", 0.0, 0.1,
    )  # fmt: skip


def test_late_success_ends_module():
    graph = Graph.from_specs([ModuleSpec("a", (), frozenset(), False, 1.0)])
    state = MasterState(graph, workers_may_join=True)
    state.worker_registered("1", frozenset(), 0.0)
    first = next(i for i in state.start(0.0) if isinstance(i, Dispatch))
    state.worker_lost("1", 1.0)
    out = state.result_received(late_result(first), 2.0)
    assert out[-1] == Finish(ExitCode.OK)

    out = state.worker_registered("2", frozenset(), 3.0)

    assert [i for i in out if isinstance(i, Dispatch)] == []
    assert state.records["a"].status is ModuleStatus.SUCCEEDED


def test_late_success_counts_once():
    graph = Graph.from_specs(
        [
            ModuleSpec("a", (), frozenset(), False, 1.0),
            ModuleSpec("gpu-job", (), frozenset({"gpu"}), False, 1.0),
            ModuleSpec("after", ("a", "gpu-job"), frozenset(), False, 1.0),
        ]
    )
    state = MasterState(graph, workers_may_join=True)
    state.worker_registered("1", frozenset(), 0.0)
    first = next(i for i in state.start(0.0) if isinstance(i, Dispatch))
    state.worker_lost("1", 1.0)
    state.result_received(late_result(first), 2.0)
    out = state.worker_registered("2", frozenset(), 3.0)

    # A second success of "a" must not start "after" while "gpu-job" waits.
    retries = [i for i in out if isinstance(i, Dispatch)]
    for retry in retries:
        state.result_received(late_result(retry), 4.0)

    assert state.records["gpu-job"].status is ModuleStatus.QUEUED
    assert state.records["after"].status is ModuleStatus.PENDING
