"""Running a pipeline on this machine: start, supervise and stop its processes."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import platform
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

import psutil

from . import logs
from .actors.canceller import canceller_main
from .actors.master import MasterActor
from .actors.monitor import monitor_main
from .actors.worker import worker_main
from .console import Reporter
from .graph import Graph
from .mailbox import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    Transport,
    control_address,
    worker_address,
)
from .mailbox.local import LocalTransport
from .messages import Shutdown
from .module import Module
from .report import RunReport
from .settings import RunSettings

STOP_TIMEOUT = 5.0
"""Seconds actor processes get to exit after the shutdown message."""


def os_capability() -> str:
    """Return the capability naming this operating system."""
    system = platform.system().lower()
    return {"darwin": "macos"}.get(system, system)


def default_start_method() -> str:
    """Return the fastest safe way to start processes here.

    `forkserver` forks each actor from a clean server process, which is quick
    and safe while the parent has threads; where it is missing, `spawn`.
    """
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def new_run_id() -> str:
    return secrets.token_hex(4)


def run_local(
    modules: Iterable[type[Module]],
    *,
    workers: int,
    capabilities: Iterable[str] = (),
    settings: RunSettings | None = None,
    reporter: Reporter | None = None,
    start_method: str | None = None,
) -> RunReport:
    """Run `modules` on this machine with `workers` worker processes.

    The workers offer exactly `capabilities`; callers add the operating
    system's name when they want it (see `os_capability`).

    Raises `InvalidPipelineError` before anything starts when the graph is
    invalid. Every process the run starts has ended when this returns, except
    multiprocessing's forkserver and resource tracker: they serve the runs
    that follow and end with the calling process.
    """
    modules = list(modules)
    graph = Graph.build(modules)
    if workers < 1:
        raise ValueError(f"a local run needs at least one worker, got {workers}")
    settings = dataclasses.replace(
        settings or RunSettings(run_id=new_run_id()), instance_workers=workers
    )
    reporter = reporter or Reporter()
    caps = frozenset(c.lower() for c in capabilities)

    context = multiprocessing.get_context(start_method or default_start_method())
    worker_ids = [str(index) for index in range(1, workers + 1)]
    transport = LocalTransport.create(worker_ids, context)
    supervisor = Supervisor(transport, settings, worker_ids, caps, context)
    by_name = {module.name: module for module in modules}

    reporter.run_started(settings.run_id, len(graph), workers)
    with supervisor.running():
        master = MasterActor(
            graph,
            by_name,
            transport,
            settings,
            reporter,
            expected_workers=workers,
            find_dead_workers=supervisor.newly_dead_workers,
            # Workers start within milliseconds of each other; waiting for
            # all of them spreads the first modules evenly.
            min_workers=workers,
        )
        with interrupt_cancels(master.request_cancel, MASTER_STOP_SIGNALS):
            report = master.run()
    reporter.run_finished(report)
    return report


class Supervisor:
    """Starts the actor processes of this machine and makes sure they all end.

    Beside the master it starts the heartbeat monitor and the canceller as
    well (`with_helpers`); on a worker machine, only workers.
    """

    def __init__(
        self,
        transport: Transport,
        settings: RunSettings,
        worker_ids: list[str],
        capabilities: frozenset[str],
        context: BaseContext,
        *,
        with_helpers: bool = True,
    ) -> None:
        self.transport = transport
        self.with_helpers = with_helpers
        self.settings = settings
        self.worker_ids = worker_ids
        self.capabilities = capabilities
        self.context = context
        self.log = logs.actor_logger("supervisor", settings.run_id)
        self.workers: dict[str, BaseProcess] = {}
        self.helpers: dict[str, BaseProcess] = {}
        self._reported_dead: set[str] = set()

    @contextmanager
    def running(self) -> Iterator[Supervisor]:
        """Start the processes, and stop them when the block ends.

        A KeyboardInterrupt (a second Ctrl-C) kills them at once instead of
        waiting for them to stop.
        """
        try:
            self.start()
            yield self
        except KeyboardInterrupt:
            self.stop(force=True)
            raise
        except BaseException:
            self.stop()
            raise
        else:
            self.stop()

    def start(self) -> None:
        if self.context.get_start_method() == "forkserver":
            self.context.set_forkserver_preload(["pipeline_actors.runtime"])
        transport = self.transport
        if self.with_helpers:
            self._start_helpers()
        for worker_id in self.worker_ids:
            own = [worker_address(worker_id), control_address(worker_id)]
            args = (
                worker_id,
                transport.for_actor(own, sends=[MASTER, MONITOR, CANCELLER]),
                self.settings,
                self.capabilities,
                dict(os.environ),
            )
            self.workers[worker_id] = self._start_process(
                f"worker-{worker_id}", worker_main, args
            )
        # The children hold their own ends now. Closing the master's copies of
        # the ends it never reads lets a dead receiver's pipe report as broken.
        transport.keep_reading_only([MASTER])

    def wait_for_workers(self) -> dict[str, int | None]:
        """Wait until every worker process has exited; return their exit codes."""
        for process in self.workers.values():
            process.join()
        return {worker_id: p.exitcode for worker_id, p in self.workers.items()}

    def _start_helpers(self) -> None:
        transport = self.transport
        monitor_view = transport.for_actor([MONITOR], sends=[MASTER])
        self.helpers[MONITOR] = self._start_process(
            "monitor", monitor_main, (monitor_view, self.settings)
        )
        self.helpers[CANCELLER] = self._start_process(
            "canceller",
            canceller_main,
            (transport.for_actor([CANCELLER]), self.settings),
        )

    def newly_dead_workers(self) -> list[str]:
        """Return the workers whose process ended since the last call."""
        dead = [
            worker_id
            for worker_id, process in self.workers.items()
            if worker_id not in self._reported_dead and not process.is_alive()
        ]
        for worker_id in dead:
            code = self.workers[worker_id].exitcode
            self.log.warning("Worker {} process exited with status {}", worker_id, code)
        self._reported_dead.update(dead)
        return dead

    def stop(self, *, force: bool = False) -> None:
        """Tell every actor to stop, wait for it, and kill what does not stop.

        With `force`, kill every process at once. Ctrl-C is ignored meanwhile,
        because a cleanup cut short would leave processes running.
        """
        with _ctrl_c_ignored():
            self._stop(force)

    def _stop(self, force: bool) -> None:
        shutdown = Shutdown("run finished")
        addresses = [worker_address(w) for w in self.workers] + list(self.helpers)
        for address in addresses:
            with contextlib.suppress(MailboxClosedError):
                self.transport.mailbox(address).put(shutdown)

        processes = [*self.workers.values(), *self.helpers.values()]
        deadline = time.monotonic() + (0.0 if force else STOP_TIMEOUT)
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                self.log.warning(
                    "Killing {} (pid {}): it did not stop", process.name, process.pid
                )
                _kill_tree(process.pid)
                process.join(timeout=STOP_TIMEOUT)
        self.transport.close()
        self.log.debug("Every actor process has ended")

    def _start_process(self, name: str, target: object, args: tuple) -> BaseProcess:
        process = self.context.Process(
            target=target, args=args, name=f"pipeline_actors-{name}"
        )
        process.start()
        self.log.debug("Started {} as pid {}", name, process.pid)
        return process


def _kill_tree(pid: int) -> None:
    """Kill a process and all its descendants, found before any of them dies."""
    try:
        process = psutil.Process(pid)
        family = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=STOP_TIMEOUT)


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


MASTER_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that cancel a run when the master's process receives them.

SIGTERM is what `docker stop` and Kubernetes send by default to stop a container.
A worker instance keeps the default for SIGTERM: it ends at once, and the
master retries its modules elsewhere.
"""

_STOP_REASONS = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


@contextmanager
def interrupt_cancels(
    request_cancel: Callable[[str], None],
    signals: Iterable[signal.Signals] = (signal.SIGINT,),
) -> Iterator[None]:
    """Turn the first of `signals` into a cancel request, and a second into an abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        if received > 1:
            raise KeyboardInterrupt
        request_cancel(_STOP_REASONS[signal.Signals(signum)])

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
