"""The master's run state: events in, instructions out, no I/O.

Every decision of the master (what is ready, where it goes, what a failure, a
lost worker or a late result means, when the run is over) is made here. The
master actor feeds events in and carries out the instructions that come back,
so this logic is tested without processes.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import ExitCode
from .graph import Graph, ModuleSpec
from .messages import Outcome, ResultEvent
from .routing import WorkerView, can_run, rank, route


class ModuleStatus(str, enum.Enum):
    """The status of a module in a run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in _ACTIVE


_ACTIVE = frozenset({ModuleStatus.PENDING, ModuleStatus.QUEUED, ModuleStatus.RUNNING})


@dataclass
class ModuleRecord:
    """The master's account of one module, as the summary shows it."""

    name: str
    status: ModuleStatus = ModuleStatus.PENDING
    worker_id: str | None = None
    attempts: int = 0
    duration: float | None = None
    started_at: float | None = None
    detail: str | None = None
    queued_at: float | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send attempt `attempt` of `module` to worker `worker_id`.

    `behind` names the module the worker runs first, when this one is sent
    ahead to wait in the worker's mailbox (see `MasterState`'s `prefetch`).
    """

    module: str
    worker_id: str
    attempt: int
    behind: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A module changed status; `detail` contains the error or the reason."""

    module: str
    status: ModuleStatus
    worker_id: str | None = None
    detail: str | None = None
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """Every module reached a final status: end the run with `exit_code`."""

    exit_code: ExitCode


Instruction = Dispatch | StatusChange | Finish


class MasterState:
    """The run state of one pipeline, driven by the master actor.

    Args:
        graph: The validated module graph.
        max_attempts: Attempts per module when the worker holding it is lost.
        capability_timeout: Seconds a module waits for a worker that can run
            it, when `workers_may_join` is set.
        workers_may_join: Whether more workers may still register. While it is
            true, a module no registered worker can run waits up to
            `capability_timeout`; once `close_registration` is called, it fails
            at once.
        cancel_grace: Seconds running modules get to stop after a cancel
            before they are given up on.
        prefetch: Modules a busy worker may hold waiting behind the one it
            runs. With 0, a worker holds one module at a time. More lets a
            worker start its next module without waiting for the master,
            which pays off for modules of milliseconds; such a module is only
            sent ahead when no worker that could run it is idle.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        max_attempts: int = 3,
        capability_timeout: float = 300.0,
        workers_may_join: bool = False,
        cancel_grace: float = 10.0,
        prefetch: int = 0,
    ) -> None:
        self.graph = graph
        self.max_attempts = max_attempts
        self.capability_timeout = capability_timeout
        self.workers_may_join = workers_may_join
        self.cancel_grace = cancel_grace
        self.prefetch = prefetch

        self.records = {name: ModuleRecord(name) for name in graph.order}
        self._unmet = {n: len(graph.specs[n].dependencies) for n in graph.order}
        self._ready = ReadyQueue(graph)
        self._workers: dict[str, WorkerView] = {}
        # What each worker holds, as (module, attempt), in the order it runs them.
        self._held: dict[str, list[tuple[str, int]]] = {}
        self._terminal_count = 0
        self._cancel_deadline: float | None = None
        self.cancel_reason: str | None = None
        self.finished = False

    @property
    def workers(self) -> dict[str, WorkerView]:
        return dict(self._workers)

    def held_by(self, worker_id: str) -> list[tuple[str, int]]:
        """Return the (module, attempt) pairs `worker_id` holds, in running order."""
        return list(self._held.get(worker_id, ()))

    def start(self, now: float) -> list[Instruction]:
        """Queue the modules that depend on nothing."""
        out: list[Instruction] = []
        for name in self.graph.roots():
            self._enqueue(name, now, out)
        return self._settle(now, out)

    def worker_registered(
        self,
        worker_id: str,
        capabilities: frozenset[str],
        now: float,
        *,
        is_master: bool = False,
    ) -> list[Instruction]:
        out: list[Instruction] = []
        # A worker that registers again was restarted: what it held is lost.
        self._give_back(worker_id, now, out)
        caps = frozenset(c.lower() for c in capabilities)
        self._workers[worker_id] = WorkerView(worker_id, caps, is_master=is_master)
        return self._settle(now, out)

    def close_registration(self, now: float) -> list[Instruction]:
        """Declare that every expected worker has registered."""
        self.workers_may_join = False
        return self._settle(now, [])

    def result_received(self, result: ResultEvent, now: float) -> list[Instruction]:
        """Record a worker's result; a late duplicate only frees its worker."""
        out: list[Instruction] = []
        self._release(result.worker_id, (result.module, result.attempt))

        record = self.records.get(result.module)
        if record is None or record.status.is_terminal:
            return self._settle(now, out)

        record.worker_id = result.worker_id
        record.duration = result.duration
        record.started_at = result.started_at
        if result.outcome is Outcome.SUCCEEDED:
            self._succeed(record, now, out)
        elif result.outcome is Outcome.CANCELLED:
            self._cancel_one(record, result.error, out)
        else:
            self._fail(record, result.error, out)
        return self._settle(now, out)

    def worker_lost(self, worker_id: str, now: float) -> list[Instruction]:
        """Mark a worker dead and retry or fail what it held."""
        out: list[Instruction] = []
        worker = self._workers.get(worker_id)
        if worker is None or not worker.alive:
            return out
        self._workers[worker_id] = replace(worker, alive=False, idle=False)

        self._give_back(worker_id, now, out)
        return self._settle(now, out)

    def cancel(self, reason: str, now: float) -> list[Instruction]:
        """Stop starting modules; running ones get `cancel_grace` to finish."""
        out: list[Instruction] = []
        if self.cancel_reason is not None or self.finished:
            return out
        self.cancel_reason = reason
        self._cancel_deadline = now + self.cancel_grace

        for record in self.records.values():
            if record.status in (ModuleStatus.PENDING, ModuleStatus.QUEUED):
                detail = f"not started: run cancelled ({reason})"
                self._conclude(record, ModuleStatus.CANCELLED, detail, out)
        self._ready.clear()
        return self._settle(now, out)

    def timer_fired(self, now: float) -> list[Instruction]:
        """Apply the deadlines: capability timeouts and the cancel grace."""
        out: list[Instruction] = []
        if self._cancel_deadline is not None and now >= self._cancel_deadline:
            for record in self.records.values():
                if record.status is ModuleStatus.RUNNING:
                    detail = (
                        f"did not stop within {self.cancel_grace:g} s of the cancel"
                    )
                    self._conclude(record, ModuleStatus.CANCELLED, detail, out)

        for name in self._ready.unroutable(self._workers.values()):
            record = self.records[name]
            queued_at = now if record.queued_at is None else record.queued_at
            waited = now - queued_at
            if waited >= self.capability_timeout:
                self._fail_unroutable(name, waited, out)
        return self._settle(now, out)

    def _enqueue(self, name: str, now: float, out: list[Instruction]) -> None:
        record = self.records[name]
        record.status = ModuleStatus.QUEUED
        record.queued_at = now
        self._ready.add(name)
        out.append(StatusChange(name, ModuleStatus.QUEUED))

    def _settle(self, now: float, out: list[Instruction]) -> list[Instruction]:
        """Fail what can never run, dispatch what can, and detect the end."""
        if not self.workers_may_join:
            for name in self._ready.unroutable(self._workers.values()):
                self._fail_unroutable(name, 0.0, out)

        if self.cancel_reason is None and self._ready:
            self._dispatch(out)

        if not self.finished and self._terminal_count == len(self.records):
            self.finished = True
            out.append(Finish(self._exit_code()))
        return out

    def _dispatch(self, out: list[Instruction]) -> None:
        """Give idle workers a module each, then fill the prefetch slots."""
        self._route_to(list(self._workers.values()), out)
        while self._ready:
            with_free_slot = self._with_free_slot()
            if not with_free_slot or not self._route_to(with_free_slot, out):
                return

    def _route_to(self, workers: list[WorkerView], out: list[Instruction]) -> int:
        """Assign ready modules to the idle ones of `workers`; return how many."""
        assignments = route(self._ready.candidates(workers), workers)
        for name, worker_id in assignments:
            self._assign(name, worker_id, out)
        return len(assignments)

    def _with_free_slot(self) -> list[WorkerView]:
        """Return busy workers that may take one more module, shown as idle.

        `_dispatch` calls this only after the idle workers had their turn,
        so a module is sent ahead only when no idle worker can run it.
        """
        return [
            replace(worker, idle=True)
            for worker in self._workers.values()
            if worker.alive
            and not worker.idle
            and not worker.is_master
            and len(self._held.get(worker.worker_id, ())) <= self.prefetch
        ]

    def _assign(self, name: str, worker_id: str, out: list[Instruction]) -> None:
        record = self.records[name]
        self._ready.remove(name)
        record.status = ModuleStatus.RUNNING
        record.worker_id = worker_id
        record.attempts += 1
        held = self._held.setdefault(worker_id, [])
        behind = held[-1][0] if held else None
        held.append((name, record.attempts))
        self._workers[worker_id] = replace(self._workers[worker_id], idle=False)
        out.append(Dispatch(name, worker_id, record.attempts, behind))

    def _release(self, worker_id: str, attempt: tuple[str, int]) -> None:
        """Forget that `worker_id` holds `attempt`; it is idle once it holds none."""
        held = self._held.get(worker_id)
        if held is None or attempt not in held:
            return
        held.remove(attempt)
        if held:
            return
        del self._held[worker_id]
        worker = self._workers.get(worker_id)
        if worker is not None and worker.alive:
            self._workers[worker_id] = replace(worker, idle=True)

    def _succeed(self, record: ModuleRecord, now: float, out: list) -> None:
        self._conclude(record, ModuleStatus.SUCCEEDED, None, out)
        for dependent in self.graph.dependents[record.name]:
            self._unmet[dependent] -= 1
            pending = self.records[dependent].status is ModuleStatus.PENDING
            ready = self._unmet[dependent] == 0 and pending
            if ready and self.cancel_reason is None:
                self._enqueue(dependent, now, out)

    def _fail(self, record: ModuleRecord, error: str | None, out: list) -> None:
        self._conclude(record, ModuleStatus.FAILED, error, out)
        self._skip_descendants(record, f"dependency {record.name!r} failed", out)

    def _cancel_one(self, record: ModuleRecord, error: str | None, out: list) -> None:
        """End a module its worker reported cancelled; its dependents cannot run."""
        self._conclude(record, ModuleStatus.CANCELLED, error, out)
        reason = f"dependency {record.name!r} was cancelled"
        self._skip_descendants(record, reason, out)

    def _skip_descendants(self, record: ModuleRecord, reason: str, out: list) -> None:
        for name in self.graph.descendants(record.name):
            dependent = self.records[name]
            if not dependent.status.is_terminal:
                self._ready.remove(name)
                self._conclude(dependent, ModuleStatus.SKIPPED, reason, out)

    def _give_back(self, worker_id: str, now: float, out: list) -> None:
        """Retry what a lost worker held; only the first module had started.

        A worker runs what it holds in order, so the modules sent ahead
        behind the first were still waiting, and they are not charged an
        attempt.
        """
        held = self._held.pop(worker_id, [])
        for index, (name, _) in enumerate(held):
            if index == 0:
                self._recover(name, worker_id, now, out)
            else:
                self._requeue_unstarted(name, worker_id, now, out)

    def _requeue_unstarted(
        self, name: str, worker_id: str, now: float, out: list
    ) -> None:
        record = self.records[name]
        if record.status is not ModuleStatus.RUNNING:
            return
        record.attempts -= 1
        record.worker_id = None
        if self.cancel_reason is not None:
            detail = f"not started: run cancelled ({self.cancel_reason})"
            self._conclude(record, ModuleStatus.CANCELLED, detail, out)
            return
        self._enqueue(name, now, out)
        detail = f"worker {worker_id} was lost before it started it; queued again"
        out[-1] = StatusChange(name, ModuleStatus.QUEUED, detail=detail)

    def _recover(self, name: str, worker_id: str, now: float, out: list) -> None:
        record = self.records[name]
        if record.status is not ModuleStatus.RUNNING:
            return
        lost = f"worker {worker_id} was lost during attempt {record.attempts}"
        if record.attempts >= self.max_attempts or self.cancel_reason is not None:
            self._fail(record, f"{lost} of {self.max_attempts}", out)
            return
        record.worker_id = None
        self._enqueue(name, now, out)
        out[-1] = StatusChange(name, ModuleStatus.QUEUED, detail=f"{lost}; retrying")

    def _fail_unroutable(self, name: str, waited: float, out: list) -> None:
        spec = self.graph.specs[name]
        self._ready.remove(name)
        self._fail(self.records[name], self._unroutable_reason(spec, waited), out)

    def _unroutable_reason(self, spec: ModuleSpec, waited: float) -> str:
        if spec.pin_to_master:
            return "module is pinned to the master, but the master runs no modules"
        needed = ", ".join(sorted(spec.requires)) or "none"
        lines = [f"no worker can run it: it requires capabilities [{needed}]"]
        if spec.platforms:
            systems = " or ".join(sorted(spec.platforms))
            lines[0] += f" and runs only on {systems}"
        if waited:
            lines[0] += f" and waited {waited:.0f} s for such a worker"
        offers = [w for w in self._workers.values() if not w.is_master]
        for worker in sorted(offers, key=lambda w: w.worker_id):
            absent = set(spec.requires - worker.capabilities)
            if spec.platforms and not spec.platforms & worker.capabilities:
                absent.add(" or ".join(sorted(spec.platforms)))
            missing = ", ".join(sorted(absent))
            offered = ", ".join(sorted(worker.capabilities)) or "nothing"
            state = "" if worker.alive else " (lost)"
            lines.append(
                f"  worker {worker.worker_id}{state} offers [{offered}], "
                f"missing [{missing}]"
            )
        if not offers:
            lines.append("  no worker has registered")
        return "\n".join(lines)

    def _conclude(
        self,
        record: ModuleRecord,
        status: ModuleStatus,
        detail: str | None,
        out: list[Instruction],
    ) -> None:
        if not record.status.is_terminal:
            self._terminal_count += 1
        # A module requeued after its worker was lost can still end through
        # that worker's late result; it must not stay ready.
        if record.status is ModuleStatus.QUEUED:
            self._ready.remove(record.name)
        record.status = status
        record.detail = detail
        change = StatusChange(
            record.name, status, record.worker_id, detail, record.duration
        )
        out.append(change)

    def _exit_code(self) -> ExitCode:
        if self.cancel_reason is not None:
            return ExitCode.CANCELLED
        statuses = {record.status for record in self.records.values()}
        # Without a cancel of the run, a cancelled module did not do its work.
        if statuses & {ModuleStatus.FAILED, ModuleStatus.CANCELLED}:
            return ExitCode.FAILED
        return ExitCode.OK


class ReadyQueue:
    """Modules ready to run, grouped by what they require.

    Modules of one group can run on exactly the same workers, so among them
    only priority decides. That lets a scheduler holding thousands of ready
    modules hand `route` just the few that could be assigned now: from each
    group, as many of its best modules as there are idle workers able to run
    it. `route` returns the same assignments for that short list as for all
    ready modules, because a group never gets more modules than it has
    capable idle workers.
    """

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._groups: dict[tuple, list[tuple[float, str]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, name: str) -> None:
        spec = self._graph.specs[name]
        group = self._groups.setdefault(_group_of(spec), [])
        bisect.insort(group, self._entry(name))
        self._size += 1

    def remove(self, name: str) -> None:
        spec = self._graph.specs[name]
        group = self._groups.get(_group_of(spec), [])
        entry = self._entry(name)
        index = bisect.bisect_left(group, entry)
        if index < len(group) and group[index] == entry:
            del group[index]
            self._size -= 1

    def clear(self) -> None:
        self._groups.clear()
        self._size = 0

    def candidates(self, workers: Iterable[WorkerView]) -> list[ModuleSpec]:
        """Return the modules `route` needs to see, in `rank` order."""
        workers = list(workers)
        specs = self._graph.specs
        chosen: list[ModuleSpec] = []
        for group in self._groups.values():
            if not group:
                continue
            example = specs[group[0][1]]
            capable_idle = sum(1 for w in workers if w.idle and can_run(w, example))
            chosen.extend(specs[name] for _, name in group[:capable_idle])
        return rank(chosen, workers, self._graph.remaining_path)

    def unroutable(self, workers: Iterable[WorkerView]) -> list[str]:
        """Return the ready modules that no live worker can run, by name."""
        workers = list(workers)
        stuck: list[str] = []
        for group in self._groups.values():
            if group and not any(
                can_run(w, self._graph.specs[group[0][1]]) for w in workers
            ):
                stuck.extend(name for _, name in group)
        return sorted(stuck)

    def _entry(self, name: str) -> tuple[float, str]:
        return (-self._graph.remaining_path[name], name)


def _group_of(spec: ModuleSpec) -> tuple[frozenset[str], frozenset[str], bool]:
    """Return what decides which workers can run `spec`."""
    return (spec.requires, spec.platforms, spec.pin_to_master)
