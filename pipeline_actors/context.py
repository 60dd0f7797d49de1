"""The context a module's `execute` receives."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
from loguru import logger

from .errors import CommandFailedError, ModuleCancelled, UndeclaredDependencyError
from .messages import Payload
from .module import Module

OUTPUT_TAIL_LINES = 20
"""Lines of a failed command's output quoted in its error."""


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its arguments, exit status and combined output."""

    argv: list[str]
    returncode: int
    output: str


class Context:
    """The interface of a running module: dependency results, commands, a logger.

    Attributes:
        module: The name of the running module.
        run_id: The id of the run.
        worker_id: The worker running the module; ``"master"`` for pinned ones.
        attempt: Which attempt this is, from 1.
        log: A loguru logger whose lines are captured with the module's output.
    """

    def __init__(
        self,
        *,
        module: str,
        dependencies: tuple[str, ...],
        inputs: Mapping[str, Payload],
        fetch: Callable[[Payload], bytes],
        run_id: str,
        worker_id: str,
        attempt: int,
        request_cancel: Callable[[str], None],
    ) -> None:
        self.module = module
        self.run_id = run_id
        self.worker_id = worker_id
        self.attempt = attempt
        self.log = logger.bind(module_log=True, module=module)
        self._dependencies = dependencies
        self._inputs = inputs
        self._fetch = fetch
        self._values: dict[str, Any] = {}
        self._request_cancel = request_cancel
        self._cancelled = threading.Event()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def result(self, dependency: type[Module] | str) -> Any:
        """Return the value a declared dependency returned from `execute`."""
        name = dependency if isinstance(dependency, str) else dependency.name
        if name not in self._dependencies:
            declared = ", ".join(repr(d) for d in self._dependencies) or "none"
            msg = (
                f"module {self.module!r} asked for the result of {name!r}, which "
                f"is not one of its dependencies (declared: {declared}); add it "
                f"to depends_on"
            )
            raise UndeclaredDependencyError(msg)
        if name not in self._values:
            self._values[name] = cloudpickle.loads(self._fetch(self._inputs[name]))
        return self._values[name]

    @property
    def cancelled(self) -> bool:
        """Whether the run is being cancelled."""
        return self._cancelled.is_set()

    def cancel(self, reason: str) -> None:
        """Ask for the whole run to be cancelled, on every instance."""
        self._request_cancel(f"module {self.module} asked: {reason}")

    def run(
        self,
        *argv: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a command, copying its output line by line into the module's output.

        Args:
            argv: The program and its arguments; no shell is involved.
            cwd: The folder to run it in.
            env: Variables added to, or replacing, the inherited environment.
            check: Raise `CommandFailedError` when the exit status is not zero.
            timeout: Seconds after which the command is killed, or None.

        The command gets its own process group, so that a cancel or a timeout
        ends the command and every process it started.
        """
        args = [os.fspath(arg) for arg in argv]
        if not args:
            raise ValueError("Context.run() needs at least the program to run")
        if self.cancelled:
            raise ModuleCancelled

        merged_env = {**os.environ, **env} if env is not None else None
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=merged_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._processes.add(process)
        try:
            output, tail = self._copy_output(process, timeout)
        finally:
            with self._lock:
                self._processes.discard(process)
            _kill_group(process, signal.SIGKILL)
            # Reap it here, so that no dead child is left for the worker's
            # sweep to report as a leftover.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)

        if self.cancelled:
            raise ModuleCancelled
        result = CommandResult(args, process.returncode, output)
        if check and process.returncode != 0:
            raise CommandFailedError(args, process.returncode, "".join(tail))
        return result

    def _copy_output(
        self, process: subprocess.Popen[bytes], timeout: float | None
    ) -> tuple[str, collections.deque[str]]:
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, _kill_group, (process, signal.SIGKILL))
            timer.daemon = True
            timer.start()

        lines: list[str] = []
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = raw.decode("utf-8", errors="replace")
                lines.append(line)
                tail.append(line)
                sys.stdout.write(line)
            process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            process.stdout.close()

        timed_out = timeout is not None and process.returncode == -signal.SIGKILL
        if timed_out and not self.cancelled:
            tail.append(f"[killed after the timeout of {timeout:g} s]\n")
        return "".join(lines), tail

    def _mark_cancelled(self) -> None:
        """Flag the cancel and end every command the module is running."""
        self._cancelled.set()
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            _kill_group(process, signal.SIGTERM)


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
