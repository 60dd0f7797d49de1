"""Running one instance of a run that spans machines through a shared Redis.

Instance 0 is the master: it claims the run id, starts the heartbeat monitor,
the canceller and any local workers, and routes modules to every worker that
registers, local or remote. Every other instance only starts workers, which
register with the master and receive the module classes from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import logs
from .actors.master import MasterActor
from .console import Reporter
from .errors import ExitCode, InvalidPipelineError
from .graph import Graph
from .mailbox import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    control_address,
    worker_address,
)
from .mailbox.redis import RedisTransport
from .messages import CancelRequest, ResultRef, Shutdown
from .module import Module
from .report import RunReport
from .runtime import (
    MASTER_STOP_SIGNALS,
    Supervisor,
    default_start_method,
    interrupt_cancels,
)
from .settings import RunSettings


class MasterAlreadyRunningError(InvalidPipelineError):
    """Raised when another master holds, or held, the run id."""


@dataclass(frozen=True)
class InstanceOptions:
    """The workers one instance of a distributed run starts on its machine."""

    local_workers: int
    capabilities: frozenset[str]
    min_workers: int = 0
    instance_index: int | None = None
    total_instances: int | None = None
    """Instances of the run when given, so the master can tell when all registered."""


def run_master(
    modules: Iterable[type[Module]],
    transport: RedisTransport,
    settings: RunSettings,
    options: InstanceOptions,
    reporter: Reporter | None = None,
) -> RunReport:
    """Run the master of a distributed run and return the run's report."""
    modules = list(modules)
    graph = Graph.build(modules)
    reporter = reporter or Reporter()
    _claim_master(transport, settings)
    transport.set_state("running")

    worker_ids = [f"0.{k}" for k in range(1, options.local_workers + 1)]
    settings = dataclasses.replace(settings, instance_workers=len(worker_ids))
    supervisor = _supervisor(transport, settings, worker_ids, options, helpers=True)
    reporter.run_started(settings.run_id, len(graph), None)

    final_state = "cancelled"
    try:
        with supervisor.running():
            master = MasterActor(
                graph,
                {module.name: module for module in modules},
                transport,
                settings,
                reporter,
                expected_workers=None,
                find_dead_workers=supervisor.newly_dead_workers,
                min_workers=options.min_workers,
                total_instances=options.total_instances,
            )
            keepalive = _KeyRefresher(
                transport, master.stored_results, settings.heartbeat_interval,
                settings.heartbeat_timeout,
            )  # fmt: skip
            stop_signals = interrupt_cancels(master.request_cancel, MASTER_STOP_SIGNALS)
            with keepalive.running(), stop_signals:
                report = master.run()
            final_state = (
                "cancelled" if report.exit_code is ExitCode.CANCELLED else "finished"
            )
            _shut_down_remote_workers(transport, exclude=worker_ids)
    finally:
        transport.set_state(final_state)
    reporter.run_finished(report)
    return report


def run_worker_instance(
    transport: RedisTransport,
    settings: RunSettings,
    options: InstanceOptions,
) -> ExitCode:
    """Start this machine's workers of a distributed run and wait for them.

    Returns OK when every worker exited cleanly, which is what they do when
    the master signals that the run is over.
    """
    if options.instance_index == 0:
        msg = "instance index 0 is the master's; give each worker an index of 1 or more"
        raise InvalidPipelineError(msg)
    prefix = (
        str(options.instance_index)
        if options.instance_index is not None
        else f"w{secrets.token_hex(2)}"
    )
    worker_ids = [f"{prefix}.{k}" for k in range(1, options.local_workers + 1)]
    settings = dataclasses.replace(settings, instance_workers=len(worker_ids))
    supervisor = _supervisor(transport, settings, worker_ids, options, helpers=False)
    log = logs.actor_logger("supervisor", settings.run_id)

    def request_cancel(reason: str) -> None:
        origin = f"instance {prefix} on {socket.gethostname()}"
        with contextlib.suppress(MailboxClosedError):
            transport.mailbox(CANCELLER).put(CancelRequest(reason, origin))

    with supervisor.running(), interrupt_cancels(request_cancel):
        codes = supervisor.wait_for_workers()
    failed = {w: code for w, code in codes.items() if code != 0}
    if failed:
        log.error("Workers exited with errors: {}", failed)
        return ExitCode.FAILED
    return ExitCode.OK


def _claim_master(transport: RedisTransport, settings: RunSettings) -> None:
    run_id = settings.run_id
    identity = (
        f"pid {os.getpid()} on {socket.gethostname()} since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    )
    state = transport.run_state()
    holder = transport.claim_master(identity, settings.heartbeat_timeout)
    if holder is None and state is None:
        return
    if holder is None:
        transport.release_master()
        holder = "an earlier master"
    msg = (
        f"run id {run_id!r} is taken: {holder} owns it"
        + (f" and the run is {state}" if state else "")
        + "; give this run another id (--run-id or PIPELINE_ACTORS_RUN_ID), "
        f"or wait {transport.keys.ttl:g} s for the old run's keys to expire"
    )
    raise MasterAlreadyRunningError(msg)


def _supervisor(
    transport: RedisTransport,
    settings: RunSettings,
    worker_ids: list[str],
    options: InstanceOptions,
    *,
    helpers: bool,
) -> Supervisor:
    capabilities = frozenset(options.capabilities)
    context = multiprocessing.get_context(default_start_method())
    return Supervisor(
        transport, settings, worker_ids, capabilities, context, with_helpers=helpers
    )


def _shut_down_remote_workers(transport: RedisTransport, exclude: list[str]) -> None:
    """Send `Shutdown` to every registered worker but the local ones in `exclude`.

    The supervisor stops the local workers itself.
    """
    shutdown = Shutdown("run finished")
    for worker_id in transport.worker_ids():
        if worker_id not in exclude:
            with contextlib.suppress(MailboxClosedError):
                transport.mailbox(worker_address(worker_id)).put(shutdown)


class _KeyRefresher:
    """Renews the master's lease every heartbeat, and the run's other keys
    every third of their time-to-live, while the master is alive."""

    def __init__(
        self,
        transport: RedisTransport,
        stored_results: Callable[[], list[ResultRef]],
        heartbeat_interval: float,
        lease: float,
    ) -> None:
        self._transport = transport
        self._stored_results = stored_results
        self._interval = heartbeat_interval
        self._lease = lease
        self._refresh_every = max(1.0, min(transport.keys.ttl / 3, 60.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._refresh_until_stopped, name="key-refresher", daemon=True
        )

    @contextlib.contextmanager
    def running(self):
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

    def _refresh_until_stopped(self) -> None:
        log = logs.actor_logger("master", self._transport.settings.run_id)
        last_refresh = time.monotonic()
        while not self._stop.wait(self._interval):
            try:
                self._transport.renew_master(self._lease)
                if time.monotonic() - last_refresh >= self._refresh_every:
                    self._refresh_run_keys()
                    last_refresh = time.monotonic()
            except Exception:
                log.opt(exception=True).warning("Could not refresh the run's keys")

    def _refresh_run_keys(self) -> None:
        addresses = [MASTER, MONITOR, CANCELLER]
        for worker_id in self._transport.worker_ids():
            addresses += [worker_address(worker_id), control_address(worker_id)]
        self._transport.refresh(addresses, self._stored_results())
