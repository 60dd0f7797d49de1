"""The settings one run shares between its actors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunSettings:
    """Knobs of one run, handed to every actor process.

    Attributes:
        run_id: The id tying every actor and log line to this run.
        log_level: Level of actor log records, or None to keep them quiet.
        heartbeat_interval: Seconds between two heartbeats of a worker.
        heartbeat_timeout: Seconds without a heartbeat before a worker is lost.
        cancel_grace: Seconds running modules get to stop after a cancel.
        max_attempts: Attempts per module when the worker holding it is lost.
        prefetch: Modules a busy worker may hold waiting behind the one it runs.
        capability_timeout: Seconds a module waits for a worker that can run it.
        registration_timeout: Seconds a worker waits for its master to accept
            it, and a master for its minimum number of workers.
        instance_workers: Worker processes this instance starts.
        supervisor_pid: The process that started the local actors; they exit
            when it is gone.
    """

    run_id: str
    log_level: str | None = None
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0
    cancel_grace: float = 10.0
    max_attempts: int = 3
    prefetch: int = 0
    capability_timeout: float = 300.0
    registration_timeout: float = 300.0
    instance_workers: int = 1
    supervisor_pid: int = field(default_factory=os.getpid)
