"""Setup shared by every actor process of a local run."""

from __future__ import annotations

import signal
from typing import TextIO

import psutil

from .. import logs
from ..settings import RunSettings


def prepare_actor_process(
    settings: RunSettings, log_stream: TextIO | None = None
) -> None:
    """Set up a freshly started actor process of a local run.

    Ctrl-C reaches every process of the terminal's process group. Actor
    processes ignore it, so that the supervisor's canceller turns it into one
    orderly stop instead of each process dying on its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(settings.log_level, log_stream)


class SupervisorWatch:
    """Tell whether the process that started this actor is still running."""

    def __init__(self, pid: int) -> None:
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._process = None

    def alive(self) -> bool:
        # is_running() also compares the start time, so a reused pid reads as gone.
        return self._process is not None and self._process.is_running()
