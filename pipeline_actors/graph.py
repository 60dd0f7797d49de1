"""The module graph: validation, dependency order and critical-path lengths."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import (
    DependencyCycleError,
    DuplicateModuleError,
    InvalidPipelineError,
    MissingDependencyError,
)
from .module import (
    Module,
    capability_names,
    defines_execute,
    dependency_names,
    platform_names,
)

DEFAULT_DURATION = 1.0
"""Seconds assumed for a module that declares no `estimated_duration`."""


@dataclass(frozen=True)
class ModuleSpec:
    """The part of a module that the scheduler uses, without its class."""

    name: str
    dependencies: tuple[str, ...]
    requires: frozenset[str]
    pin_to_master: bool
    duration: float
    platforms: frozenset[str] = frozenset()
    """Operating systems the module runs on, any one of them; empty for any."""


@dataclass(frozen=True)
class Graph:
    """A validated, acyclic module graph.

    Build it with `Graph.build`, which raises `InvalidPipelineError` for a
    graph that cannot run.
    """

    specs: Mapping[str, ModuleSpec]
    order: tuple[str, ...]
    dependents: Mapping[str, tuple[str, ...]]
    remaining_path: Mapping[str, float] = field(repr=False)

    @classmethod
    def build(cls, modules: Iterable[type[Module]]) -> Graph:
        classes = _index_by_name(modules)
        specs = {name: _spec_of(module) for name, module in classes.items()}
        return cls.from_specs(specs.values())

    @classmethod
    def from_specs(cls, specs: Iterable[ModuleSpec]) -> Graph:
        by_name = {spec.name: spec for spec in specs}
        _check_dependencies_exist(by_name)
        order = _topological_order(by_name)
        dependents = _dependents_of(by_name, order)
        remaining = _remaining_path_lengths(by_name, order, dependents)
        return cls(by_name, order, dependents, remaining)

    def __len__(self) -> int:
        return len(self.specs)

    def roots(self) -> list[str]:
        """Return the modules that depend on nothing, in dependency order."""
        return [name for name in self.order if not self.specs[name].dependencies]

    def descendants(self, name: str) -> list[str]:
        """Return every module that depends on `name`, directly or not."""
        seen: dict[str, None] = {}
        stack = list(self.dependents[name])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen[current] = None
                stack.extend(self.dependents[current])
        return list(seen)


def _index_by_name(modules: Iterable[type[Module]]) -> dict[str, type[Module]]:
    classes: dict[str, type[Module]] = {}
    for module in modules:
        if not (isinstance(module, type) and issubclass(module, Module)):
            raise InvalidPipelineError(_not_a_module(module))

        other = classes.get(module.name)
        if other is module:
            continue
        if other is not None:
            msg = (
                f"two modules are named {module.name!r}: {_where(other)} and "
                f"{_where(module)}; give one of them another `name`"
            )
            raise DuplicateModuleError(msg)

        if not defines_execute(module):
            msg = f"module {module.name!r} ({_where(module)}) does not define execute()"
            raise InvalidPipelineError(msg)
        execute = module.execute
        if inspect.iscoroutinefunction(execute) or inspect.isasyncgenfunction(execute):
            msg = (
                f"module {module.name!r} ({_where(module)}) defines execute() with "
                "async def, but modules are called synchronously; define it with "
                "def and run coroutines inside it with asyncio.run()"
            )
            raise InvalidPipelineError(msg)
        classes[module.name] = module
    return classes


def _not_a_module(value: object) -> str:
    if isinstance(value, (list, tuple, set)):
        return (
            f"a {type(value).__name__} of modules was given where a Module "
            "subclass was expected; pass the modules one by one, as in "
            "Pipeline(*modules)"
        )
    return f"{value!r} is not a Module subclass"


def _where(module: type[Module]) -> str:
    return f"{module.__module__}.{module.__qualname__}"


def _spec_of(module: type[Module]) -> ModuleSpec:
    duration = module.estimated_duration
    return ModuleSpec(
        name=module.name,
        dependencies=tuple(dict.fromkeys(dependency_names(module))),
        requires=capability_names(module),
        pin_to_master=bool(module.pin_to_master),
        duration=DEFAULT_DURATION if duration is None else float(duration),
        platforms=platform_names(module),
    )


def _check_dependencies_exist(specs: Mapping[str, ModuleSpec]) -> None:
    for spec in specs.values():
        for dep in spec.dependencies:
            if dep not in specs:
                raise MissingDependencyError(spec.name, dep)


def _topological_order(specs: Mapping[str, ModuleSpec]) -> tuple[str, ...]:
    """Order modules so each comes after its dependencies, or raise on a cycle.

    An iterative depth-first search, so that a chain of thousands of modules
    does not hit the recursion limit.
    """
    done: dict[str, None] = {}
    on_path: dict[str, int] = {}

    for start in specs:
        if start in done:
            continue
        path = [start]
        pending = [iter(specs[start].dependencies)]
        on_path[start] = 0

        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                finished = path.pop()
                pending.pop()
                del on_path[finished]
                done[finished] = None
            elif dep in on_path:
                raise DependencyCycleError(path[on_path[dep] :])
            elif dep not in done:
                on_path[dep] = len(path)
                path.append(dep)
                pending.append(iter(specs[dep].dependencies))
    return tuple(done)


def _dependents_of(
    specs: Mapping[str, ModuleSpec], order: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for dep in specs[name].dependencies:
            dependents[dep].append(name)
    return {name: tuple(names) for name, names in dependents.items()}


def _remaining_path_lengths(
    specs: Mapping[str, ModuleSpec],
    order: tuple[str, ...],
    dependents: Mapping[str, tuple[str, ...]],
) -> dict[str, float]:
    """Return, per module, the longest run of durations from it to the graph's end."""
    remaining: dict[str, float] = {}
    for name in reversed(order):
        after = max((remaining[d] for d in dependents[name]), default=0.0)
        remaining[name] = specs[name].duration + after
    return remaining
