"""Setup shared by every actor process of a local run."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import psutil

from .. import logs
from ..logs import actor_logger
from ..mailbox import MailboxClosedError, Transport
from ..settings import RunSettings


def prepare_actor_process(
    settings: RunSettings, log_stream: TextIO | None = None
) -> None:
    """Set up a freshly started actor process of a local run.

    Ctrl-C reaches every process of the terminal's process group, and
    `timeout` or `kill -- -PGID` send SIGTERM to a whole group. Actor
    processes ignore both, so that the supervisor turns them into one orderly
    stop instead of each process dying on its own and leaving the commands
    of its module running.
    """
    # A handler that does nothing, not SIG_IGN: an ignored signal would stay
    # ignored in the commands that modules start, while a handler is reset to
    # the default when they start.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _do_nothing)
    logs.configure(settings.log_level, log_stream)


def _do_nothing(signum: int, frame: Any) -> None:
    pass


def run_helper_actor(
    name: str,
    actor_type: Callable[[Transport, RunSettings], Any],
    transport: Transport,
    settings: RunSettings,
) -> None:
    """Run a helper actor (monitor, canceller) in this process, then exit.

    A mailbox that closes under it, because Redis went away, ends it with one
    log line and status 1 rather than a traceback.
    """
    prepare_actor_process(settings)
    try:
        code = actor_type(transport, settings).run()
    except MailboxClosedError as exc:
        actor_logger(name, settings.run_id).error("Stopping: {}", exc)
        code = 1
    finally:
        transport.close()
    sys.exit(code)


class SupervisorWatch:
    """Tell whether the process that started this actor is still running."""

    def __init__(self, pid: int) -> None:
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._process = None

    def alive(self) -> bool:
        if self._process is None:
            return False
        # is_running() also compares the start time, so a reused pid reads as
        # gone. A dead supervisor stays a zombie until its own parent reaps it.
        try:
            running = self._process.is_running()
            return running and self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
