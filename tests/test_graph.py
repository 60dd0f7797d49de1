"""Graph validation, dependency order and critical-path lengths."""

from __future__ import annotations

import itertools

import pytest

from pipeline_actors import InvalidPipelineError, Module
from pipeline_actors.errors import (
    DependencyCycleError,
    DuplicateModuleError,
    MissingDependencyError,
)
from pipeline_actors.graph import Graph, ModuleSpec


def spec(name: str, *deps: str, duration: float = 1.0) -> ModuleSpec:
    return ModuleSpec(name, deps, frozenset(), False, duration)


def test_order_puts_dependencies_first():
    graph = Graph.from_specs(
        [spec("sink", "left", "right"), spec("left", "src"), spec("right", "src"),
         spec("src")]
    )  # fmt: skip

    position = {name: index for index, name in enumerate(graph.order)}
    assert position["src"] < position["left"] < position["sink"]
    assert position["src"] < position["right"] < position["sink"]
    assert graph.roots() == ["src"]


def test_cycle_error_names_cycle_in_order():
    with pytest.raises(DependencyCycleError) as caught:
        Graph.from_specs([spec("a", "b"), spec("b", "c"), spec("c", "a"), spec("d")])

    assert caught.value.cycle == ["a", "b", "c"]
    assert "a -> b -> c -> a" in str(caught.value)


def test_self_dependency_is_a_cycle():
    with pytest.raises(DependencyCycleError, match="a -> a"):
        Graph.from_specs([spec("a", "a")])


def test_missing_dependency_names_both_modules():
    with pytest.raises(MissingDependencyError) as caught:
        Graph.from_specs([spec("build", "fetch")])

    assert "'build'" in str(caught.value)
    assert "'fetch'" in str(caught.value)


def test_duplicate_names_are_rejected():
    class First(Module):
        name = "same"

        def execute(self, ctx):
            return 1

    class Second(Module):
        name = "same"

        def execute(self, ctx):
            return 2

    with pytest.raises(DuplicateModuleError, match="two modules are named 'same'"):
        Graph.build([First, Second])


def test_module_without_execute_is_rejected():
    class Lazy(Module):
        pass

    with pytest.raises(InvalidPipelineError, match=r"'Lazy'.*does not define execute"):
        Graph.build([Lazy])


def test_async_generator_execute_is_rejected():
    class Streams(Module):
        async def execute(self, ctx):
            yield 1

    with pytest.raises(InvalidPipelineError, match=r"'Streams'.*with async def"):
        Graph.build([Streams])


def test_list_of_modules_gets_a_hint():
    class Alone(Module):
        def execute(self, ctx):
            return 1

    with pytest.raises(InvalidPipelineError, match=r"as in Pipeline\(\*modules\)"):
        Graph.build([[Alone]])


def test_other_object_is_not_a_module():
    with pytest.raises(InvalidPipelineError, match="'lint' is not a Module subclass"):
        Graph.build(["lint"])


def test_declaration_types_are_checked():
    with pytest.raises(InvalidPipelineError, match="depends_on must be a list"):

        class Wrong(Module):
            depends_on = "Other"

    with pytest.raises(InvalidPipelineError, match="requires must be a list"):

        class AlsoWrong(Module):
            requires = "gpu"


def test_remaining_path_follows_longest_chain():
    graph = Graph.from_specs(
        [spec("a", duration=1), spec("b", "a", duration=5), spec("c", "a", duration=2),
         spec("d", "b", "c", duration=1)]
    )  # fmt: skip

    assert graph.remaining_path["d"] == 1
    assert graph.remaining_path["b"] == 6
    assert graph.remaining_path["c"] == 3
    assert graph.remaining_path["a"] == 7


def test_descendants_are_transitive():
    graph = Graph.from_specs([spec("a"), spec("b", "a"), spec("c", "b"), spec("x")])

    assert sorted(graph.descendants("a")) == ["b", "c"]
    assert graph.descendants("x") == []


def test_long_chain_does_not_recurse():
    names = [f"m{i}" for i in range(5000)]
    specs = [spec(names[0])] + [spec(n, p) for p, n in itertools.pairwise(names)]

    graph = Graph.from_specs(reversed(specs))

    assert graph.order == tuple(names)


def test_only_on_becomes_platforms():
    class LinuxBuild(Module):
        only_on = ["Linux"]

        def execute(self, ctx):
            return 1

    graph = Graph.build([LinuxBuild])

    assert graph.specs["LinuxBuild"].platforms == frozenset({"linux"})


def test_only_on_rejects_unknown_system():
    with pytest.raises(InvalidPipelineError, match="only_on names unknown systems"):

        class Amiga(Module):
            only_on = ["amigaos"]
