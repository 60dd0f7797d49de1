"""The master's pure state machine, driven with events and no processes."""

from __future__ import annotations

from pipeline_actors.errors import ExitCode
from pipeline_actors.graph import Graph, ModuleSpec
from pipeline_actors.messages import MASTER_ID, Outcome, ResultEvent
from pipeline_actors.state import (
    Dispatch,
    Finish,
    MasterState,
    ModuleStatus,
    StatusChange,
)


def spec(name, *deps, requires=(), pinned=False, duration=1.0) -> ModuleSpec:
    return ModuleSpec(name, deps, frozenset(requires), pinned, duration)


def diamond() -> Graph:
    return Graph.from_specs(
        [spec("src"), spec("left", "src"), spec("right", "src"),
         spec("sink", "left", "right")]
    )  # fmt: skip


def started(graph: Graph, workers=("1", "2"), **options) -> tuple[MasterState, list]:
    state = MasterState(graph, **options)
    out = state.worker_registered(MASTER_ID, frozenset(), 0.0, is_master=True)
    for worker_id in workers:
        out += state.worker_registered(worker_id, frozenset({"linux"}), 0.0)
    out += state.close_registration(0.0)
    out += state.start(0.0)
    return state, out


def dispatches(instructions) -> list[Dispatch]:
    return [i for i in instructions if isinstance(i, Dispatch)]


def changes_of(instructions, module: str) -> list[StatusChange]:
    return [
        i for i in instructions if isinstance(i, StatusChange) and i.module == module
    ]


def result(dispatch: Dispatch, outcome=Outcome.SUCCEEDED, error=None) -> ResultEvent:
    value = b"" if outcome is Outcome.SUCCEEDED else None
    return ResultEvent(
        dispatch.worker_id, dispatch.module, dispatch.attempt, outcome, value,
        error, "", 0.0, 0.1,
    )  # fmt: skip


def test_diamond_runs_in_dependency_order():
    state, out = started(diamond())
    first = dispatches(out)
    assert [d.module for d in first] == ["src"]

    middle = dispatches(state.result_received(result(first[0]), 1.0))
    assert sorted(d.module for d in middle) == ["left", "right"]
    assert len({d.worker_id for d in middle}) == 2

    last = dispatches(state.result_received(result(middle[0]), 2.0))
    assert last == []
    out = state.result_received(result(middle[1]), 3.0)
    assert [d.module for d in dispatches(out)] == ["sink"]

    out = state.result_received(result(dispatches(out)[0]), 4.0)
    assert out[-1] == Finish(ExitCode.OK)
    assert state.finished


def test_failure_skips_exactly_the_descendants():
    graph = Graph.from_specs([spec("a"), spec("b", "a"), spec("c", "b"), spec("other")])
    state, out = started(graph)
    by_module = {d.module: d for d in dispatches(out)}

    out = state.result_received(
        result(by_module["a"], Outcome.FAILED, "ValueError: boom"), 1.0
    )

    assert state.records["a"].status is ModuleStatus.FAILED
    assert state.records["a"].detail == "ValueError: boom"
    assert state.records["b"].status is ModuleStatus.SKIPPED
    assert state.records["c"].status is ModuleStatus.SKIPPED
    assert state.records["c"].detail == "dependency 'a' failed"
    assert state.records["other"].status is ModuleStatus.RUNNING

    out = state.result_received(result(by_module["other"]), 2.0)
    assert out[-1] == Finish(ExitCode.FAILED)


def test_lost_worker_retries_then_fails():
    state, out = started(Graph.from_specs([spec("a")]), workers=("1",), max_attempts=2)
    first = dispatches(out)[0]

    state.worker_registered("2", frozenset({"linux"}), 0.5)
    retry = dispatches(state.worker_lost(first.worker_id, 1.0))
    assert retry == [Dispatch("a", "2", 2)]

    out = state.worker_lost("2", 2.0)
    assert state.records["a"].status is ModuleStatus.FAILED
    assert "worker 2 was lost during attempt 2 of 2" in state.records["a"].detail
    assert out[-1] == Finish(ExitCode.FAILED)


def test_late_duplicate_result_is_ignored():
    state, out = started(Graph.from_specs([spec("a"), spec("b", "a")]))
    first = dispatches(out)[0]
    state.worker_registered("3", frozenset({"linux"}), 0.1)
    retry = dispatches(state.worker_lost(first.worker_id, 1.0))[0]

    state.result_received(result(retry), 2.0)
    out = state.result_received(result(first), 3.0)

    assert dispatches(out) == []
    assert state.records["a"].attempts == 2
    assert state.records["b"].status is ModuleStatus.RUNNING


def test_unroutable_module_fails_once_registration_closes():
    graph = Graph.from_specs(
        [spec("gpu-job", requires={"gpu"}), spec("after", "gpu-job")]
    )
    state, _ = started(graph)

    record = state.records["gpu-job"]
    assert record.status is ModuleStatus.FAILED
    assert "requires capabilities [gpu]" in record.detail
    assert "worker 1 offers [linux], missing [gpu]" in record.detail
    assert state.records["after"].status is ModuleStatus.SKIPPED


def test_unroutable_waits_while_workers_may_join():
    graph = Graph.from_specs([spec("gpu-job", requires={"gpu"})])
    state = MasterState(graph, capability_timeout=30.0, workers_may_join=True)
    state.worker_registered("1", frozenset({"linux"}), 0.0)
    state.start(0.0)

    assert state.timer_fired(29.0) == []
    state.timer_fired(31.0)

    assert state.records["gpu-job"].status is ModuleStatus.FAILED
    assert "waited 31 s" in state.records["gpu-job"].detail


def test_pinned_module_goes_to_master_only():
    graph = Graph.from_specs([spec("summary", pinned=True), spec("build")])
    _, out = started(graph)

    targets = {d.module: d.worker_id for d in dispatches(out)}
    assert targets["summary"] == MASTER_ID
    assert targets["build"] != MASTER_ID


def test_cancel_stops_dispatch_and_waits_for_running():
    graph = Graph.from_specs([spec("a"), spec("b"), spec("c"), spec("d", "a")])
    state, out = started(graph, cancel_grace=5.0)
    running = dispatches(out)
    assert len(running) == 2

    out = state.cancel("interrupted", 1.0)
    cancelled = [
        n for n, r in state.records.items() if r.status is ModuleStatus.CANCELLED
    ]
    assert sorted(cancelled) == ["c", "d"]
    assert not state.finished

    state.result_received(result(running[0], Outcome.CANCELLED, "cancelled"), 2.0)
    assert state.timer_fired(5.5) == []
    out = state.timer_fired(6.5)

    assert out[-1] == Finish(ExitCode.CANCELLED)
    detail = state.records[running[1].module].detail
    assert detail == "did not stop within 5 s of the cancel"


def test_empty_graph_finishes_at_start():
    state, out = started(Graph.from_specs([]))

    assert out == [Finish(ExitCode.OK)]
    assert state.finished


def test_worker_with_fewest_capabilities_is_chosen():
    graph = Graph.from_specs([spec("plain")])
    state = MasterState(graph)
    state.worker_registered("a", frozenset({"linux", "gpu", "docker"}), 0.0)
    state.worker_registered("b", frozenset({"linux"}), 0.0)

    out = state.start(0.0)

    assert dispatches(out) == [Dispatch("plain", "b", 1)]


def test_only_on_routes_to_any_listed_system():
    graph = Graph.from_specs(
        [ModuleSpec("unix-only", (), frozenset(), False, 1.0,
                    frozenset({"linux", "macos"}))]
    )  # fmt: skip
    state = MasterState(graph)
    state.worker_registered("win", frozenset({"windows"}), 0.0)
    state.worker_registered("mac", frozenset({"macos"}), 0.0)

    out = state.start(0.0)

    assert dispatches(out) == [Dispatch("unix-only", "mac", 1)]


def test_only_on_failure_names_the_systems():
    graph = Graph.from_specs(
        [ModuleSpec("win-only", (), frozenset({"docker"}), False, 1.0,
                    frozenset({"windows"}))]
    )  # fmt: skip
    state, _ = started(graph)

    detail = state.records["win-only"].detail
    assert "requires capabilities [docker] and runs only on windows" in detail
    assert "worker 1 offers [linux], missing [docker, windows]" in detail


def test_late_result_of_requeued_module_leaves_the_queue():
    graph = Graph.from_specs([spec("a", requires={"gpu"})])
    state = MasterState(graph, workers_may_join=True, capability_timeout=5.0)
    state.worker_registered("gpu-box", frozenset({"gpu"}), 0.0)
    first = dispatches(state.start(0.0))[0]
    state.worker_lost("gpu-box", 1.0)

    state.result_received(result(first), 2.0)
    out = state.timer_fired(100.0)

    assert state.records["a"].status is ModuleStatus.SUCCEEDED
    assert out == []


def test_reregistered_worker_loses_what_it_held():
    state, out = started(Graph.from_specs([spec("a")]), workers=("1",))
    first = dispatches(out)[0]

    retry = dispatches(state.worker_registered("1", frozenset({"linux"}), 1.0))

    assert retry == [Dispatch("a", "1", 2)]
    assert first.attempt == 1


def fan_out(width: int) -> Graph:
    return Graph.from_specs([spec(f"m{i}") for i in range(width)])


def test_busy_worker_gets_nothing_by_default():
    state, out = started(fan_out(5))

    assert [(d.worker_id, d.behind) for d in dispatches(out)] == [
        ("1", None),
        ("2", None),
    ]
    assert state.held_by("1") == [("m0", 1)]


def test_prefetch_fills_each_busy_worker():
    state, out = started(fan_out(5), prefetch=1)
    sent = dispatches(out)

    assert [(d.worker_id, d.behind) for d in sent] == [
        ("1", None),
        ("2", None),
        ("1", sent[0].module),
        ("2", sent[1].module),
    ]
    assert state.held_by("1") == [(sent[0].module, 1), (sent[2].module, 1)]

    refill = dispatches(state.result_received(result(sent[0]), 1.0))

    assert [(d.worker_id, d.behind) for d in refill] == [("1", sent[2].module)]


def test_prefetch_waits_for_an_idle_capable_worker_first():
    graph = Graph.from_specs([spec("a"), spec("b"), spec("gpu", requires=["gpu"])])
    state = MasterState(graph, prefetch=1)
    state.worker_registered("plain", frozenset(), 0.0)
    state.worker_registered("gpu-box", frozenset({"gpu"}), 0.0)
    state.close_registration(0.0)

    sent = dispatches(state.start(0.0))

    # Sending "b" ahead is allowed only once both workers are busy.
    by_module = {d.module: (d.worker_id, d.behind) for d in sent}
    assert by_module["gpu"] == ("gpu-box", None)
    assert by_module["a"] == ("plain", None)
    assert by_module["b"][1] is not None


def test_lost_worker_returns_modules_sent_ahead():
    state, out = started(fan_out(4), prefetch=1, max_attempts=1)
    running, waiting = (module for module, _ in state.held_by("1"))

    out = state.worker_lost("1", 1.0)

    assert dispatches(out) == []
    assert state.held_by("1") == []
    assert state.records[running].status is ModuleStatus.FAILED
    assert state.records[waiting].status is ModuleStatus.QUEUED
    assert state.records[waiting].attempts == 0
    assert "lost before it started it" in changes_of(out, waiting)[-1].detail
