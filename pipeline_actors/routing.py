"""Routing: which ready module goes to which idle worker.

`route` is a pure function, so it is tested directly and users can
property-test their own capability layouts with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .graph import ModuleSpec


@dataclass(frozen=True, slots=True)
class WorkerView:
    """The part of a worker's state that routing uses."""

    worker_id: str
    capabilities: frozenset[str]
    idle: bool = True
    alive: bool = True
    is_master: bool = False


def can_run(worker: WorkerView, module: ModuleSpec) -> bool:
    """Tell whether `worker` may run `module`, whether or not it is idle."""
    if not worker.alive:
        return False
    if module.pin_to_master:
        return worker.is_master
    if worker.is_master or not module.requires <= worker.capabilities:
        return False
    return not module.platforms or bool(module.platforms & worker.capabilities)


def rank_key(
    module: ModuleSpec, workers: Iterable[WorkerView], priority: Mapping[str, float]
) -> tuple[float, int, str]:
    """Return the sort key that puts the module to start first at the front.

    Modules with the highest `priority` (the longest remaining path) go first;
    among equals, the module the fewest workers can run goes first, so that
    scarce workers are not taken by work anyone could do.
    """
    capable = sum(1 for worker in workers if can_run(worker, module))
    return (-priority.get(module.name, 0.0), capable, module.name)


def rank(
    ready: Iterable[ModuleSpec],
    workers: Iterable[WorkerView],
    priority: Mapping[str, float],
) -> list[ModuleSpec]:
    """Return the ready modules in the order `route` should consider them."""
    workers = list(workers)
    return sorted(ready, key=lambda module: rank_key(module, workers, priority))


def route(
    ranked: Iterable[ModuleSpec], workers: Iterable[WorkerView]
) -> list[tuple[str, str]]:
    """Assign ready modules to idle workers and return (module, worker id) pairs.

    `ranked` is in the order that `rank` returns, and is read only until every
    idle worker has a module, so that a scheduler holding thousands of ready
    modules pays for the few it assigns. Each module goes to the capable idle
    worker with the fewest capabilities, keeping versatile workers free for
    modules that need them. Ties go to the lowest worker id, so the result does
    not depend on the order in which workers registered.
    """
    idle = sorted((w for w in workers if w.idle and w.alive), key=lambda w: w.worker_id)
    assignments: list[tuple[str, str]] = []
    for module in ranked:
        if not idle:
            break
        chosen = _pick_worker(module, idle)
        if chosen is not None:
            idle.remove(chosen)
            assignments.append((module.name, chosen.worker_id))
    return assignments


def _pick_worker(module: ModuleSpec, idle: Sequence[WorkerView]) -> WorkerView | None:
    capable = [w for w in idle if can_run(w, module)]
    if not capable:
        return None
    return min(capable, key=lambda w: (len(w.capabilities), w.worker_id))
