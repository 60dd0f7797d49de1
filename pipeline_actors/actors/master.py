"""The master actor: moves messages between the mailboxes and `MasterState`."""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Iterable, Mapping

import cloudpickle

from ..console import Reporter
from ..execution import restore_filenames
from ..graph import Graph
from ..logs import actor_logger
from ..mailbox import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    Transport,
    worker_address,
)
from ..messages import (
    MASTER_ID,
    Assign,
    Cancel,
    CancelRequest,
    Outcome,
    Payload,
    RegisterWorker,
    ResultEvent,
    ResultRef,
    WatchWorker,
    Welcome,
    WorkerLostEvent,
)
from ..module import Module
from ..report import ModuleReport, RunReport
from ..settings import RunSettings
from ..state import Dispatch, Finish, Instruction, MasterState, StatusChange
from .pinned import PinnedRunner

TICK = 0.2
"""Seconds between two checks of the deadlines and of the worker processes."""

BATCH = 256
"""Messages the master takes from its mailbox at once, at most."""


class MasterActor:
    """Owns the run: registers workers, routes modules, stores results.

    Args:
        graph: The validated graph of `modules`.
        modules: The module classes by name.
        transport: The run's mailboxes.
        settings: The run's settings.
        reporter: Receives every change, for the console.
        expected_workers: Workers that will register; once they all have, a
            module none of them can run fails at once. None when workers may
            join at any time, as on Redis.
        min_workers: Workers to wait for, up to the registration timeout,
            before the first module is routed.
        total_instances: Instances of a distributed run, when known. Once
            every instance registered all the workers it starts, a module none
            of them can run fails at once instead of after the capability
            timeout.
        find_dead_workers: Called every tick; returns workers whose process has
            died, so they are handled before their heartbeats time out.
    """

    def __init__(
        self,
        graph: Graph,
        modules: Mapping[str, type[Module]],
        transport: Transport,
        settings: RunSettings,
        reporter: Reporter,
        expected_workers: int | None,
        find_dead_workers: Callable[[], Iterable[str]] = lambda: (),
        min_workers: int = 0,
        total_instances: int | None = None,
    ) -> None:
        self.graph = graph
        self.settings = settings
        self.log = actor_logger("master", settings.run_id)
        self.state = MasterState(
            graph,
            max_attempts=settings.max_attempts,
            capability_timeout=settings.capability_timeout,
            workers_may_join=expected_workers is None or expected_workers > 0,
            cancel_grace=settings.cancel_grace,
            prefetch=settings.prefetch,
        )
        self._transport = transport
        self._inbox = transport.mailbox(MASTER)
        self._canceller = transport.mailbox(CANCELLER)
        self._monitor = transport.mailbox(MONITOR)
        self._reporter = reporter
        self._expected_workers = expected_workers
        self._find_dead_workers = find_dead_workers
        self._modules = dict(modules)
        self._modules_payload = cloudpickle.dumps(dict(modules), protocol=5)
        self._pinned = PinnedRunner(
            modules,
            settings.run_id,
            self._inbox.put,
            self.request_cancel,
            transport.fetch,
        )
        self._min_workers = min_workers
        self._total_instances = total_instances
        # Instance 0 is this master, which starts settings.instance_workers.
        self._instance_sizes: dict[str, int] = {"0": settings.instance_workers}
        self._routing_started = False
        self._registered: set[str] = set()
        self._origins: dict[str, tuple[int, str]] = {}
        self._results: dict[str, Payload] = {}
        self._outputs: dict[str, str] = {}
        self._exit_code = None

    def request_cancel(self, reason: str) -> None:
        """Ask the canceller to stop the run; safe to call from a signal handler."""
        self._canceller.put(CancelRequest(reason, origin="master"))

    def stored_results(self) -> list[ResultRef]:
        """Return the results the transport stores for this run; safe from threads."""
        return [v for v in list(self._results.values()) if isinstance(v, ResultRef)]

    def run(self) -> RunReport:
        """Drive the run to its end and return its report."""
        started = time.perf_counter()
        self.log.debug("Started with {} modules", len(self.graph))
        now = time.monotonic()
        self._apply(
            self.state.worker_registered(MASTER_ID, frozenset(), now, is_master=True)
        )
        self._registration_deadline = now + self.settings.registration_timeout
        self._start_routing_when_ready(now)

        next_tick = now + TICK
        while self._exit_code is None:
            # Taking every waiting message at once costs one Redis command
            # where one each would cost a round trip per message.
            messages = self._inbox.get_many(TICK, BATCH)
            now = time.monotonic()
            for message in messages:
                self._handle(message, now)
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK

        self.log.debug("Finished with exit status {}", int(self._exit_code))
        return self._report(time.perf_counter() - started)

    def _handle(self, message: object, now: float) -> None:
        if isinstance(message, ResultEvent):
            self._result_received(message, now)
        elif isinstance(message, RegisterWorker):
            self._register(message, now)
        elif isinstance(message, WorkerLostEvent):
            self._apply(self.state.worker_lost(message.worker_id, now))
        elif isinstance(message, Cancel):
            self.log.warning(
                "Run cancelled: {} (from {})", message.reason, message.origin
            )
            self._pinned.cancel()
            self._apply(self.state.cancel(message.reason, now))
        else:
            self.log.warning("Ignored unexpected {}", type(message).__name__)

    def _start_routing_when_ready(self, now: float) -> None:
        """Start routing once `min_workers` registered or the deadline passed."""
        if self._routing_started:
            return
        registered = len(self._registered)
        if registered < self._min_workers:
            if now < self._registration_deadline:
                return
            self.log.warning(
                "Only {} of the {} workers asked for registered within {:g} s; "
                "starting with them",
                registered,
                self._min_workers,
                self.settings.registration_timeout,
            )
        self._routing_started = True
        self._apply(self.state.start(now))

    def _tick(self, now: float) -> None:
        for worker_id in self._find_dead_workers():
            self.log.warning("Worker {} died", worker_id)
            if worker_id not in self._registered:
                self._never_registered(worker_id, now)
            self._apply(self.state.worker_lost(worker_id, now))
        self._start_routing_when_ready(now)
        self._apply(self.state.timer_fired(now))

    def _never_registered(self, worker_id: str, now: float) -> None:
        """Stop waiting for a local worker that died before it registered."""
        self._min_workers = max(0, self._min_workers - 1)
        if self._expected_workers is not None:
            self._expected_workers -= 1
            if self._all_expected_registered():
                self._apply(self.state.close_registration(now))

    def _register(self, registration: RegisterWorker, now: float) -> None:
        worker_id = registration.worker_id
        origin = (registration.pid, registration.host)
        earlier = self._origins.get(worker_id)
        if earlier is not None and earlier != origin:
            self.log.warning(
                "Worker id {} registered again from pid {} on {}, after pid {} on "
                "{}; give every worker instance its own --instance-index",
                worker_id,
                registration.pid,
                registration.host,
                *earlier,
            )
        self._origins[worker_id] = origin
        self.log.info(
            "Worker {} registered (pid {} on {}) with capabilities {}",
            worker_id,
            registration.pid,
            registration.host,
            sorted(registration.capabilities),
        )
        # The welcome goes out before any assignment, so the worker has the
        # module classes by the time it reads one.
        welcome = Welcome(
            self.settings.run_id,
            self._modules_payload,
            self.settings.heartbeat_interval,
        )
        self._registered.add(worker_id)
        if self._send(worker_id, welcome):
            self._watch(worker_id)
            self._reporter.worker_joined(worker_id, registration.capabilities)
            caps = registration.capabilities
            self._apply(self.state.worker_registered(worker_id, caps, now))
        else:
            self._worker_gone(worker_id)
        instance = worker_id.split(".")[0]
        self._instance_sizes[instance] = registration.instance_workers
        if self.state.workers_may_join and self._all_expected_registered():
            self.log.info("Every expected worker has registered")
            self._apply(self.state.close_registration(now))
        self._start_routing_when_ready(now)

    def _watch(self, worker_id: str) -> None:
        try:
            self._monitor.put(WatchWorker(worker_id))
        except MailboxClosedError:
            self.log.error(
                "Worker {} cannot be watched: the heartbeat monitor is gone", worker_id
            )

    def _all_expected_registered(self) -> bool:
        if self._expected_workers is not None:
            return len(self._registered) >= self._expected_workers
        if self._total_instances is None:
            return False
        for index in range(self._total_instances):
            prefix = str(index)
            size = self._instance_sizes.get(prefix)
            if size is None:
                return False
            joined = sum(1 for w in self._registered if w.split(".")[0] == prefix)
            if joined < size:
                return False
        return True

    def _result_received(self, result: ResultEvent, now: float) -> None:
        if result.error is not None:
            path = _source_file(self._modules.get(result.module))
            result = dataclasses.replace(
                result, error=restore_filenames(result.error, path)
            )
        record = self.state.records.get(result.module)
        if record is not None and not record.status.is_terminal:
            self._outputs[result.module] = result.output
            if result.outcome is Outcome.SUCCEEDED and result.value is not None:
                self._results[result.module] = result.value
        else:
            self.log.info(
                "Ignored a late result of {} from worker {}",
                result.module,
                result.worker_id,
            )
        self._apply(self.state.result_received(result, now))

    def _apply(self, instructions: list[Instruction]) -> None:
        # Assignments go out before the console hears of anything, so that
        # no worker waits while hundreds of "queued" lines are written.
        unsent = [
            instruction.worker_id
            for instruction in instructions
            if isinstance(instruction, Dispatch) and not self._dispatch(instruction)
        ]
        for instruction in instructions:
            if isinstance(instruction, Dispatch):
                self._reporter.module_started(instruction)
            elif isinstance(instruction, StatusChange):
                output = self._outputs.get(instruction.module, "")
                self._reporter.status_changed(instruction, output)
            elif isinstance(instruction, Finish):
                self._exit_code = instruction.exit_code
        for worker_id in dict.fromkeys(unsent):
            self._worker_gone(worker_id)

    def _dispatch(self, dispatch: Dispatch) -> bool:
        """Send an assignment, or start a pinned one; return False if unsent."""
        spec = self.graph.specs[dispatch.module]
        inputs = {name: self._results[name] for name in spec.dependencies}
        assign = Assign(dispatch.module, dispatch.attempt, inputs)
        self.log.debug(
            "Assigned {} (attempt {}) to worker {}",
            dispatch.module,
            dispatch.attempt,
            dispatch.worker_id,
        )
        if dispatch.worker_id == MASTER_ID:
            self._pinned.start(assign)
            return True
        return self._send(dispatch.worker_id, assign)

    def _send(self, worker_id: str, message: object) -> bool:
        """Send to a worker; return False when its mailbox is gone."""
        try:
            self._transport.mailbox(worker_address(worker_id)).put(message)
        except MailboxClosedError:
            self.log.warning("Worker {} is gone: its mailbox is closed", worker_id)
            return False
        return True

    def _worker_gone(self, worker_id: str) -> None:
        self._apply(self.state.worker_lost(worker_id, time.monotonic()))

    def _report(self, wall_time: float) -> RunReport:
        modules = {
            name: ModuleReport(
                name=name,
                status=record.status,
                worker_id=record.worker_id,
                duration=record.duration,
                started_at=record.started_at,
                attempts=record.attempts,
                detail=record.detail,
                output=self._outputs.get(name, ""),
            )
            for name, record in self.state.records.items()
        }
        return RunReport(
            self.settings.run_id,
            self._exit_code,
            wall_time,
            modules,
            self._results,
            self._transport.fetch,
        )


def _source_file(cls: type[Module] | None) -> str | None:
    if cls is None:
        return None
    try:
        return inspect.getsourcefile(cls)
    except TypeError:
        return None
