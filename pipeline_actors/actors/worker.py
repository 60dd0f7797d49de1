"""The worker actor: runs one assigned module at a time and reports the result."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import cloudpickle
import psutil

from ..capture import FileDescriptorCapture
from ..context import Context
from ..errors import ModuleCancelled
from ..execution import Interruptible, call_module
from ..logs import actor_logger
from ..mailbox import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    Transport,
    control_address,
    worker_address,
)
from ..messages import (
    Assign,
    Cancel,
    CancelRequest,
    HeartbeatEvent,
    Outcome,
    RegisterWorker,
    ResultEvent,
    Shutdown,
    Welcome,
)
from ..module import Module, classes_checked_elsewhere, dependency_names
from ..settings import RunSettings
from .process import SupervisorWatch, prepare_actor_process

CHILD_SWEEP_AFTER = 0.05
"""Seconds a module must run before the worker looks for processes it left.

Listing child processes costs about two milliseconds, so the sweep is skipped
after very short modules, which could hardly have started a process anyway.
"""

CHILD_STOP_GRACE = 2.0
"""Seconds a leftover child process gets to exit after SIGTERM."""


def worker_main(
    worker_id: str,
    transport: Transport,
    settings: RunSettings,
    capabilities: frozenset[str],
    environment: dict[str, str] | None = None,
) -> None:
    """Run a worker actor; the entry point of a worker process.

    `environment`, when given, replaces the process's environment variables.
    A local run passes the master's, because a forkserver started by an
    earlier run would otherwise hand out the environment of that time.
    """
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    actor = WorkerActor(worker_id, transport, settings, capabilities)
    sys.exit(actor.run())


class WorkerActor:
    """Executes modules that the master assigns, one at a time.

    The module runs in the worker's main thread. A second thread sends
    heartbeats and reads the control mailbox, so a cancel reaches a module
    that is busy: the thread ends the module's commands and interrupts the
    main thread with SIGUSR1, which raises `ModuleCancelled` inside the module.
    """

    def __init__(
        self,
        worker_id: str,
        transport: Transport,
        settings: RunSettings,
        capabilities: frozenset[str],
    ) -> None:
        self.worker_id = worker_id
        self.settings = settings
        self.capabilities = capabilities
        self._transport = transport
        self._inbox = transport.mailbox(worker_address(worker_id))
        self._control = transport.mailbox(control_address(worker_id))
        self._master = transport.mailbox(MASTER)
        self._monitor = transport.mailbox(MONITOR)
        self._canceller = transport.mailbox(CANCELLER)
        self._modules: dict[str, type[Module]] = {}
        self._current: Context | None = None
        self._cancel_reason: str | None = None
        # Held by the main thread while it sends a result, and taken for good
        # by `_abandon`, so that no result of a module cut short goes out.
        self._sending = threading.Lock()
        self._interruptible = Interruptible()
        self._heartbeat_interval = settings.heartbeat_interval

    def run(self) -> int:
        """Serve assignments until the master sends `Shutdown`; return the exit code."""
        self._start()
        try:
            return self._serve()
        except MailboxClosedError as exc:
            self.log.error("Lost contact with the master: {}", exc)
            return 1
        finally:
            self._stop()

    def _start(self) -> None:
        self._capture = FileDescriptorCapture()
        prepare_actor_process(self.settings, self._capture.original_stderr())
        self.log = actor_logger(f"worker {self.worker_id}", self.settings.run_id)
        signal.signal(signal.SIGUSR1, self._on_interrupt)
        self._supervisor = SupervisorWatch(self.settings.supervisor_pid)

        registration = RegisterWorker(
            self.worker_id,
            self.capabilities,
            os.getpid(),
            socket.gethostname(),
            self.settings.instance_workers,
        )
        self._transport.register_worker(self.worker_id)
        self._master.put(registration)
        self._beats = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.worker_id}", daemon=True
        )
        self._beats.start()
        self.log.debug(
            "Started with pid {} and capabilities {}",
            os.getpid(),
            sorted(self.capabilities),
        )

    def _serve(self) -> int:
        registered_at = time.monotonic()
        welcomed = False
        unsent: ResultEvent | None = None
        while True:
            message = self._send_and_receive(unsent)
            unsent = None
            if isinstance(message, Assign):
                unsent = self._execute(message)
            elif isinstance(message, Welcome):
                if not self._welcome(message):
                    return 1
                welcomed = True
            elif isinstance(message, Shutdown):
                self.log.debug("Shutting down: {}", message.reason)
                return 0
            elif message is not None:
                self.log.warning("Ignored unexpected {}", type(message).__name__)
            else:
                code = self._check_while_idle(welcomed, registered_at)
                if code is not None:
                    return code

    def _send_and_receive(self, result: ResultEvent | None) -> Any | None:
        """Send a result, if any, and wait for the next message, in one step."""
        timeout = self.settings.heartbeat_interval
        if result is None:
            return self._inbox.get(timeout=timeout)
        with self._sending:
            return self._master.put_then_get(result, self._inbox, timeout)

    def _check_while_idle(self, welcomed: bool, registered_at: float) -> int | None:
        """Return an exit code when there is no point in waiting any longer."""
        if not self._supervisor.alive():
            self.log.error("Supervisor is gone; stopping")
            return 1
        state = self._transport.run_state()
        if state in ("finished", "cancelled"):
            self.log.info("The run is {}; stopping", state)
            return 0
        if welcomed and not self._transport.master_alive():
            self.log.error("The master of the run is gone; stopping")
            return 1
        waited = time.monotonic() - registered_at
        if not welcomed and waited > self.settings.registration_timeout:
            self.log.error(
                "No master accepted this worker within {:g} s; stopping",
                self.settings.registration_timeout,
            )
            return 1
        return None

    def _stop(self) -> None:
        self._control.put(Shutdown("worker stopping"))
        self._beats.join(timeout=self._heartbeat_interval + 1)
        self._end_leftover_children()
        self._transport.close()
        self._capture.close()
        self.log.debug("Stopped")

    def _welcome(self, welcome: Welcome) -> bool:
        try:
            with classes_checked_elsewhere():
                self._modules = cloudpickle.loads(welcome.modules)
        except Exception:
            self.log.exception("Could not load the pipeline's module classes")
            return False
        self._heartbeat_interval = welcome.heartbeat_interval
        self.log.debug("Joined with {} module classes", len(self._modules))
        return True

    def _execute(self, assign: Assign) -> ResultEvent | None:
        """Run an assignment and return its result, or send it and return None.

        The result of a short module is returned, for `_serve` to send along
        with its wait for the next message. After a longer one the result goes
        out at once, because looking for leftover processes takes a while.
        """
        cls = self._modules.get(assign.module)
        if cls is None:
            self._report_unknown(assign)
            return None
        if self._cancel_reason is not None:
            # With prefetch, assignments sent before the cancel still wait here.
            return self._not_started(assign, self._cancel_reason)

        ctx = Context(
            module=assign.module,
            dependencies=dependency_names(cls),
            inputs=assign.inputs,
            fetch=self._transport.fetch,
            run_id=self.settings.run_id,
            worker_id=self.worker_id,
            attempt=assign.attempt,
            request_cancel=self._request_cancel,
        )
        self.log.debug("Running {} (attempt {})", assign.module, assign.attempt)
        self._current = ctx
        started_at = time.time()
        started = time.perf_counter()
        outcome, value, error = call_module(cls, ctx, self._interruptible)
        duration = time.perf_counter() - started
        self._current = None

        if outcome is not Outcome.SUCCEEDED:
            self.log.info("{} {}: {}", assign.module, outcome.value, _last_line(error))
        if value is not None:
            try:
                value = self._transport.offload(assign.module, assign.attempt, value)
            except (ValueError, MailboxClosedError) as exc:
                outcome, value, error = Outcome.FAILED, None, str(exc)
                self.log.warning("Result of {} not stored: {}", assign.module, exc)
        result = ResultEvent(
            self.worker_id,
            assign.module,
            assign.attempt,
            outcome,
            value,
            error,
            self._capture.take(),
            started_at,
            duration,
        )
        if duration < CHILD_SWEEP_AFTER:
            return result
        with self._sending:
            self._master.put(result)
        self._end_leftover_children()
        return None

    def _report_unknown(self, assign: Assign) -> None:
        error = f"this worker has no module named {assign.module!r}"
        self.log.error("Assignment of unknown module {}", assign.module)
        result = ResultEvent(
            self.worker_id, assign.module, assign.attempt, Outcome.FAILED,
            None, error, "", time.time(), 0.0,
        )  # fmt: skip
        with self._sending:
            self._master.put(result)

    def _not_started(self, assign: Assign, reason: str) -> ResultEvent:
        self.log.debug("Not starting {}: the run is cancelled", assign.module)
        return ResultEvent(
            self.worker_id, assign.module, assign.attempt, Outcome.CANCELLED,
            None, f"not started: run cancelled ({reason})", "", time.time(), 0.0,
        )  # fmt: skip

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self._interruptible.active:
            raise ModuleCancelled

    def _request_cancel(self, reason: str) -> None:
        request = CancelRequest(reason, origin=f"worker {self.worker_id}")
        try:
            self._canceller.put(request)
        except MailboxClosedError:
            self.log.error("Cannot request a cancel: the canceller is gone")

    def _beat(self) -> None:
        """Send heartbeats and obey control messages, beside the running module."""
        process = psutil.Process()
        process.cpu_percent(None)
        sequence = 0
        next_beat = time.monotonic()

        while True:
            wait = max(0.0, next_beat - time.monotonic())
            message = self._control.get(timeout=wait)
            if isinstance(message, Shutdown):
                return
            if isinstance(message, Cancel):
                self._cancel(message)
            if time.monotonic() < next_beat:
                continue

            if not self._supervisor.alive():
                self._abandon()
            sequence += 1
            try:
                self._monitor.put(self._heartbeat(process, sequence))
            except MailboxClosedError:
                self.log.debug("Heartbeat monitor is gone; heartbeat dropped")
            next_beat = time.monotonic() + self._heartbeat_interval

    def _heartbeat(self, process: psutil.Process, sequence: int) -> HeartbeatEvent:
        current = self._current
        return HeartbeatEvent(
            worker_id=self.worker_id,
            sequence=sequence,
            module=current.module if current is not None else None,
            cpu_percent=process.cpu_percent(None),
            rss_bytes=process.memory_info().rss,
        )

    def _cancel(self, cancel: Cancel) -> None:
        self._cancel_reason = cancel.reason
        current = self._current
        if current is None:
            self.log.debug("Cancel received while idle: {}", cancel.reason)
            return
        self.log.info("Cancelling {}: {}", current.module, cancel.reason)
        current._mark_cancelled()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def _abandon(self) -> None:
        """Exit at once because the supervisor died, sending no result.

        Over Redis the master may live on, on another machine. It must see
        this worker lost and retry the module elsewhere, not receive the
        outcome of a module that was cut short.
        """
        self.log.error("Supervisor is gone; ending the running module and exiting")
        self._sending.acquire(timeout=self._heartbeat_interval + 1)
        current = self._current
        if current is not None:
            current._mark_cancelled()
        self._end_leftover_children()
        os._exit(1)

    def _end_leftover_children(self) -> None:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        if not children:
            return
        self.log.warning(
            "Ending {} process(es) that modules left running: {}",
            len(children),
            [child.pid for child in children],
        )
        for child in children:
            _signal_quietly(child, signal.SIGTERM)
        _, alive = psutil.wait_procs(children, timeout=CHILD_STOP_GRACE)
        for child in alive:
            _signal_quietly(child, signal.SIGKILL)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _signal_quietly(process: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)
