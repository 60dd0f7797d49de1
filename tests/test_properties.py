"""Property tests: random acyclic graphs run every module once, after its inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_actors import ExitCode, Module, run
from pipeline_actors.graph import Graph, ModuleSpec
from pipeline_actors.messages import Outcome, ResultEvent
from pipeline_actors.state import Dispatch, Finish, MasterState


@st.composite
def acyclic_graphs(draw, max_modules: int = 12) -> dict[str, list[str]]:
    """Draw a graph as {module: dependencies}; edges only point to earlier modules."""
    count = draw(st.integers(min_value=1, max_value=max_modules))
    names = [f"m{index}" for index in range(count)]
    graph = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        graph[name] = deps
    order = draw(st.permutations(names))
    return {name: graph[name] for name in order}


def build_modules(graph: dict[str, list[str]], log: Path) -> list[type[Module]]:
    class Recorded(Module):
        abstract = True

        def execute(self, ctx):
            with open(log, "a") as handle:
                handle.write(f"start {self.name}\n")
            values = [ctx.result(dep) for dep in self.depends_on]
            with open(log, "a") as handle:
                handle.write(f"end {self.name}\n")
            return sum(values) + 1

    return [
        type(name, (Recorded,), {"depends_on": deps}) for name, deps in graph.items()
    ]


def expected_values(graph: dict[str, list[str]]) -> dict[str, int]:
    values: dict[str, int] = {}
    for name in Graph.from_specs(specs_of(graph)).order:
        values[name] = sum(values[dep] for dep in graph[name]) + 1
    return values


def specs_of(graph: dict[str, list[str]]) -> list[ModuleSpec]:
    return [ModuleSpec(n, tuple(d), frozenset(), False, 1.0) for n, d in graph.items()]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(graph=acyclic_graphs(), workers=st.integers(min_value=1, max_value=3))
def test_real_run_respects_dependencies(graph, workers):
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log"
        report = run(build_modules(graph, log), local_workers=workers)
        events = log.read_text().split("\n")

    assert report.exit_code is ExitCode.OK
    starts = [e.split()[1] for e in events if e.startswith("start ")]
    assert sorted(starts) == sorted(graph)
    position = {event: index for index, event in enumerate(events)}
    for name, deps in graph.items():
        for dep in deps:
            assert position[f"end {dep}"] < position[f"start {name}"]
    for name, value in expected_values(graph).items():
        assert report.result(name) == value


@settings(max_examples=300, deadline=None)
@given(
    graph=acyclic_graphs(max_modules=25),
    workers=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_state_dispatches_once_after_dependencies(graph, workers, data):
    state = MasterState(Graph.from_specs(specs_of(graph)))
    out = []
    for index in range(workers):
        out += state.worker_registered(str(index), frozenset(), 0.0)
    out += state.close_registration(0.0)
    out += state.start(0.0)

    done: set[str] = set()
    dispatched: list[str] = []
    in_flight: list[Dispatch] = []
    for _ in range(len(graph) + 1):
        for instruction in out:
            if isinstance(instruction, Dispatch):
                assert set(graph[instruction.module]) <= done
                dispatched.append(instruction.module)
                in_flight.append(instruction)
        if state.finished:
            break
        assert len(in_flight) <= workers
        finished = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
        done.add(finished.module)
        event = ResultEvent(
            finished.worker_id, finished.module, finished.attempt,
            Outcome.SUCCEEDED, b"", None, "", 0.0, 0.0,
        )  # fmt: skip
        out = state.result_received(event, 0.0)

    assert sorted(dispatched) == sorted(graph)
    assert isinstance(out[-1], Finish)
