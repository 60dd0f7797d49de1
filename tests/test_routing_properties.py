"""Property tests of routing: `route` and `rank` alone, then through MasterState.

The rules under test: a module runs only on a live worker that has every
capability it requires and, if it lists operating systems (`only_on`), one of
them. It never runs on the master unless it is pinned, and a pinned module
runs only on the master. Among ready modules the longest remaining path
goes first, then the module the fewest workers can run. Each module goes to
the capable idle worker with the fewest capabilities, ties by lowest id.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_actors.errors import ExitCode
from pipeline_actors.graph import Graph, ModuleSpec
from pipeline_actors.messages import MASTER_ID, Outcome, ResultEvent
from pipeline_actors.module import OPERATING_SYSTEMS
from pipeline_actors.routing import WorkerView, can_run, rank, route
from pipeline_actors.state import Dispatch, Finish, MasterState, ModuleStatus

CAPABILITIES = ("gpu", "cuda", "linux", "macos", "windows")
WORKER_IDS = ("1", "2", "10", "a", "B", "w3", "w20")
"""Worker ids whose string order differs from their numeric order."""


def mixed_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda upper: "".join(
            c.upper() if u else c for c, u in zip(word, upper, strict=True)
        )
    )


capability_sets = st.frozensets(
    st.sampled_from(CAPABILITIES).flatmap(mixed_case), max_size=4
)
"""Capability sets as workers offer them, in any case, even "GPU" beside "gpu"."""

mostly_true = st.sampled_from((True, True, True, False))
mostly_false = st.sampled_from((False, False, False, True))
platform_sets = st.one_of(
    st.just(frozenset()),
    st.frozensets(st.sampled_from(sorted(OPERATING_SYSTEMS)), min_size=1),
)
"""Operating systems a module is restricted to, often none."""


def lower_case(capabilities: frozenset[str]) -> frozenset[str]:
    """Normalise capabilities the way MasterState.worker_registered does."""
    return frozenset(capability.lower() for capability in capabilities)


def normalised(workers: list[WorkerView]) -> list[WorkerView]:
    return [replace(w, capabilities=lower_case(w.capabilities)) for w in workers]


@st.composite
def graphs(draw, max_modules: int = 10) -> Graph:
    """Draw an acyclic graph whose dependencies only point to earlier modules.

    Requirements are lower case, as `Graph.build` stores them.
    """
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
            requires=draw(st.frozensets(st.sampled_from(CAPABILITIES), max_size=3)),
            pin_to_master=draw(mostly_false),
            duration=float(draw(st.integers(min_value=1, max_value=20))),
            platforms=draw(platform_sets),
        )
        specs.append(spec)
    order = draw(st.permutations(specs))
    return Graph.from_specs(order)


@st.composite
def worker_sets(draw, max_workers: int = 6) -> list[WorkerView]:
    """Draw workers with mixed-case capabilities, some busy or lost, maybe a master."""
    ids = draw(st.lists(st.sampled_from(WORKER_IDS), unique=True, max_size=max_workers))
    workers = [
        WorkerView(
            worker_id,
            draw(capability_sets),
            idle=draw(mostly_true),
            alive=draw(mostly_true),
        )
        for worker_id in ids
    ]
    if draw(st.booleans()):
        master = WorkerView(
            MASTER_ID,
            draw(capability_sets),
            idle=draw(mostly_true),
            alive=draw(mostly_true),
            is_master=True,
        )
        workers.append(master)
    return draw(st.permutations(workers))


@st.composite
def scenarios(draw) -> tuple[Graph, list[ModuleSpec], list[WorkerView]]:
    """Draw a graph, some of its modules as the ready ones, and workers."""
    graph = draw(graphs())
    names = draw(st.lists(st.sampled_from(graph.order), unique=True))
    ready = [graph.specs[name] for name in names]
    return graph, ready, normalised(draw(worker_sets()))


def permitted(worker: WorkerView, module: ModuleSpec) -> bool:
    """Tell whether the routing rules let `worker` run `module`, idle or not."""
    if not worker.alive:
        return False
    if module.pin_to_master:
        return worker.is_master
    if worker.is_master:
        return False
    if not all(capability in worker.capabilities for capability in module.requires):
        return False
    if not module.platforms:
        return True
    return any(system in worker.capabilities for system in module.platforms)


def routed(graph: Graph, ready, workers) -> list[tuple[str, str]]:
    return route(rank(ready, workers, graph.remaining_path), workers)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_can_run_matches_rules(scenario):
    _, ready, workers = scenario
    for worker in workers:
        for module in ready:
            assert can_run(worker, module) == permitted(worker, module)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_respects_capabilities(scenario):
    graph, ready, workers = scenario
    by_id = {w.worker_id: w for w in workers}
    for name, worker_id in routed(graph, ready, workers):
        worker = by_id[worker_id]
        spec = graph.specs[name]
        if not spec.pin_to_master:
            assert spec.requires <= worker.capabilities
            assert not worker.is_master
        if spec.platforms and not spec.pin_to_master:
            assert spec.platforms & worker.capabilities


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_pins_to_master(scenario):
    graph, ready, workers = scenario
    by_id = {w.worker_id: w for w in workers}
    for name, worker_id in routed(graph, ready, workers):
        if graph.specs[name].pin_to_master:
            assert by_id[worker_id].is_master


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_is_maximal(scenario):
    graph, ready, workers = scenario
    assignments = routed(graph, ready, workers)
    assigned = {name for name, _ in assignments}
    used = {worker_id for _, worker_id in assignments}

    for module in ready:
        if module.name in assigned:
            continue
        left_idle = [
            w.worker_id
            for w in workers
            if w.idle and w.worker_id not in used and permitted(w, module)
        ]
        assert left_idle == [], f"{module.name} was left unassigned"


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_assigns_each_once(scenario):
    graph, ready, workers = scenario
    assignments = routed(graph, ready, workers)
    modules = [name for name, _ in assignments]
    worker_ids = [worker_id for _, worker_id in assignments]

    assert len(set(modules)) == len(modules)
    assert len(set(worker_ids)) == len(worker_ids)
    assert set(modules) <= {module.name for module in ready}


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_route_ignores_worker_order(scenario, data):
    graph, ready, workers = scenario
    shuffled = data.draw(st.permutations(workers))
    ranked = rank(ready, workers, graph.remaining_path)

    assert route(ranked, shuffled) == route(ranked, workers)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_skips_lost_and_busy(scenario):
    graph, ready, workers = scenario
    unavailable = {w.worker_id for w in workers if not (w.alive and w.idle)}
    for _, worker_id in routed(graph, ready, workers):
        assert worker_id not in unavailable


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios())
def test_route_picks_narrowest_worker(scenario):
    graph, ready, workers = scenario
    ranked = rank(ready, workers, graph.remaining_path)
    position = {module.name: index for index, module in enumerate(ranked)}
    free = [w for w in workers if w.idle and w.alive]
    last_position = -1

    for name, worker_id in route(ranked, workers):
        assert position[name] > last_position, "assignments left rank order"
        last_position = position[name]
        capable = [w for w in free if permitted(w, graph.specs[name])]
        best = min(capable, key=lambda w: (len(w.capabilities), w.worker_id))
        assert worker_id == best.worker_id
        free = [w for w in free if w.worker_id != worker_id]


def test_route_compares_case_as_given():
    module = ModuleSpec("train", (), frozenset({"gpu"}), False, 1.0)
    upper = WorkerView("1", frozenset({"GPU"}))
    lower = WorkerView("2", frozenset({"gpu"}))

    assert route([module], [upper]) == []
    assert route([module], [upper, lower]) == [("train", "2")]


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_rank_orders_by_path_then_scarcity(scenario, data):
    graph, ready, workers = scenario
    shuffled_ready = data.draw(st.permutations(ready))
    shuffled_workers = data.draw(st.permutations(workers))
    ranked = rank(ready, workers, graph.remaining_path)

    assert sorted(m.name for m in ranked) == sorted(m.name for m in ready)
    assert rank(shuffled_ready, shuffled_workers, graph.remaining_path) == ranked
    for first, second in itertools.pairwise(ranked):
        first_path = graph.remaining_path[first.name]
        second_path = graph.remaining_path[second.name]
        assert first_path >= second_path
        if first_path == second_path:
            first_capable = sum(permitted(w, first) for w in workers)
            second_capable = sum(permitted(w, second) for w in workers)
            assert first_capable <= second_capable


@settings(max_examples=150, deadline=None)
@given(worker_id=st.sampled_from(WORKER_IDS), capabilities=capability_sets)
def test_registration_lowercases_capabilities(worker_id, capabilities):
    state = MasterState(Graph.from_specs([]))
    state.worker_registered(worker_id, capabilities, 0.0)

    assert state.workers[worker_id].capabilities == lower_case(capabilities)


@st.composite
def registrations(draw) -> tuple[list[tuple[str, frozenset[str], bool]], bool]:
    """Draw (worker id, mixed-case capabilities, lost before start) and a master."""
    ids = draw(st.lists(st.sampled_from(WORKER_IDS), unique=True, max_size=5))
    workers = [(i, draw(capability_sets), not draw(mostly_true)) for i in ids]
    return workers, draw(st.booleans())


def unroutable_lines(
    spec: ModuleSpec, workers: list[tuple[str, frozenset[str], bool]], master: bool
) -> list[str]:
    """Return the lines the failure of unroutable `spec` must contain."""
    if spec.pin_to_master:
        return ["module is pinned to the master, but the master runs no modules"]
    needed = ", ".join(sorted(spec.requires)) or "none"
    lines = [f"no worker can run it: it requires capabilities [{needed}]"]
    systems = " or ".join(sorted(spec.platforms))
    if spec.platforms:
        lines[0] += f" and runs only on {systems}"
    for worker_id, capabilities, lost in sorted(workers):
        offered = lower_case(capabilities)
        absent = set(spec.requires - offered)
        if spec.platforms and not spec.platforms & offered:
            absent.add(systems)
        missing = ", ".join(sorted(absent))
        offered_text = ", ".join(sorted(offered)) or "nothing"
        state = " (lost)" if lost else ""
        lines.append(
            f"  worker {worker_id}{state} offers [{offered_text}], missing [{missing}]"
        )
    if not workers:
        lines.append("  no worker has registered")
    return lines


@settings(max_examples=150, deadline=None)
@given(graph=graphs(), registered=registrations(), data=st.data())
def test_state_runs_or_fails_modules(graph, registered, data):
    workers, has_master = registered
    state = MasterState(graph)
    out = []
    if has_master:
        out += state.worker_registered(MASTER_ID, frozenset(), 0.0, is_master=True)
    for worker_id, capabilities, _ in workers:
        out += state.worker_registered(worker_id, capabilities, 0.0)
    for worker_id, _, lost in workers:
        if lost:
            out += state.worker_lost(worker_id, 0.0)
    out += state.close_registration(0.0)
    out += state.start(0.0)

    live = [
        WorkerView(worker_id, lower_case(capabilities))
        for worker_id, capabilities, lost in workers
        if not lost
    ]
    if has_master:
        live.append(WorkerView(MASTER_ID, frozenset(), is_master=True))
    by_id = {w.worker_id: w for w in live}
    unroutable = {
        name
        for name, spec in graph.specs.items()
        if not any(permitted(w, spec) for w in live)
    }
    skipped = {d for name in unroutable for d in graph.descendants(name)}
    failed = unroutable - skipped
    succeeded = set(graph.specs) - unroutable - skipped

    dispatched: list[str] = []
    in_flight: list[Dispatch] = []
    for _ in range(len(graph) + 1):
        for instruction in out:
            if isinstance(instruction, Dispatch):
                spec = graph.specs[instruction.module]
                assert permitted(by_id[instruction.worker_id], spec)
                dispatched.append(instruction.module)
                in_flight.append(instruction)
        if state.finished:
            break
        assert in_flight, "the run stalled with nothing running"
        done = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
        event = ResultEvent(
            done.worker_id, done.module, done.attempt,
            Outcome.SUCCEEDED, b"", None, "", 0.0, 0.0,
        )  # fmt: skip
        out = state.result_received(event, 0.0)

    assert state.finished
    assert sorted(dispatched) == sorted(succeeded)
    statuses = {name: record.status for name, record in state.records.items()}
    for name in succeeded:
        assert statuses[name] is ModuleStatus.SUCCEEDED, name
    for name in skipped:
        assert statuses[name] is ModuleStatus.SKIPPED, name
    for name in failed:
        assert statuses[name] is ModuleStatus.FAILED, name
        detail = state.records[name].detail.splitlines()
        for line in unroutable_lines(graph.specs[name], workers, has_master):
            assert line in detail

    expected_exit = ExitCode.FAILED if failed else ExitCode.OK
    assert out[-1] == Finish(expected_exit)


def simulate(graph: Graph, worker_ids: list[str], order) -> float:
    """Return the makespan of `graph` on idle, capability-free workers.

    A discrete-event simulation with no wall clock: at each moment it routes
    the ready modules in the order `order(ready, workers)` returns, then jumps
    to the next module end. Modules become ready in the order they are
    declared, then in the order their last dependency ends.
    """
    unmet = {name: len(spec.dependencies) for name, spec in graph.specs.items()}
    ready = [name for name in graph.specs if unmet[name] == 0]
    running: dict[str, tuple[float, str]] = {}
    now = 0.0
    completed = 0

    for _ in range(len(graph) + 1):
        views = [WorkerView(w, frozenset(), idle=w not in running) for w in worker_ids]
        ordered = order([graph.specs[name] for name in ready], views)
        for name, worker_id in route(ordered, views):
            ready.remove(name)
            running[worker_id] = (now + graph.specs[name].duration, name)
        if not running:
            break

        now = min(end for end, _ in running.values())
        for worker_id in sorted(running):
            end, name = running[worker_id]
            if end != now:
                continue
            del running[worker_id]
            completed += 1
            for dependent in graph.dependents[name]:
                unmet[dependent] -= 1
                if unmet[dependent] == 0:
                    ready.append(dependent)

    assert completed == len(graph), "the simulation did not run every module"
    return now


def test_critical_path_first_is_sooner():
    shorts = [ModuleSpec(f"short{i}", (), frozenset(), False, 1.0) for i in range(20)]
    chain = [ModuleSpec("chain0", (), frozenset(), False, 10.0)]
    for index in range(1, 5):
        previous = (f"chain{index - 1}",)
        chain.append(ModuleSpec(f"chain{index}", previous, frozenset(), False, 10.0))
    graph = Graph.from_specs(shorts + chain)
    workers = ["1", "2"]

    critical = simulate(
        graph, workers, lambda ready, views: rank(ready, views, graph.remaining_path)
    )
    first_ready = simulate(graph, workers, lambda ready, views: list(ready))

    # No schedule beats the longest path (50 s) or total work over workers
    # (70 s / 2), and running the chain on one worker meets that bound.
    total_work = sum(spec.duration for spec in graph.specs.values())
    bound = max(max(graph.remaining_path.values()), total_work / len(workers))
    assert bound == 50.0
    assert critical == bound
    # First-ready order runs the 20 short modules first, two at a time (10 s),
    # and only then the chain (50 s).
    assert first_ready == 60.0
    assert critical < first_ready
