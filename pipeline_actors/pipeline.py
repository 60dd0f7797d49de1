"""`Pipeline`: an explicit list of modules, and the `run` entry point."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .console import Reporter
from .module import Module
from .report import RunReport
from .runtime import new_run_id, os_capability, run_local
from .settings import RunSettings


class Pipeline:
    """The modules of a pipeline, when a pipeline file names them explicitly.

    Without a `Pipeline` object, a pipeline file's pipeline is every
    non-abstract `Module` subclass defined in it.
    """

    def __init__(self, *modules: type[Module]) -> None:
        self.modules: tuple[type[Module], ...] = modules

    def __repr__(self) -> str:
        names = ", ".join(module.name for module in self.modules)
        return f"Pipeline({names})"

    def run(self, **options: object) -> RunReport:
        """Run this pipeline; takes the keyword arguments of `run`."""
        return run(self.modules, **options)  # type: ignore[arg-type]


def run(
    modules: Pipeline | Iterable[type[Module]],
    *,
    local_workers: int | None = None,
    capabilities: Iterable[str] = (),
    run_id: str | None = None,
    log_level: str | None = None,
    reporter: Reporter | None = None,
    heartbeat_interval: float = 1.0,
    heartbeat_timeout: float = 10.0,
    cancel_grace: float = 10.0,
    max_attempts: int = 3,
    prefetch: int = 0,
) -> RunReport:
    """Run a pipeline on this machine and return its report.

    Args:
        modules: A `Pipeline` or the module classes to run.
        local_workers: Worker processes to start; defaults to the CPU count.
        capabilities: Capabilities the local workers offer, besides the
            operating system's name.
        run_id: The run's id; a random one by default.
        log_level: Level of the actors' log records on stderr; None keeps
            them quiet.
        reporter: Receives each change as it happens; the default shows nothing.
        heartbeat_interval: Seconds between a worker's heartbeats.
        heartbeat_timeout: Seconds of silence before a worker counts as lost.
        cancel_grace: Seconds running modules get to stop after a cancel.
        max_attempts: Attempts per module when the worker holding it is lost.
        prefetch: Modules a busy worker may hold waiting behind the one it
            runs, so that it starts the next one without waiting for the
            master. Worth 1 for modules of milliseconds; with longer ones it
            can leave a module waiting behind a slow one while another worker
            is free.
    """
    if isinstance(modules, Pipeline):
        modules = modules.modules
    settings = RunSettings(
        run_id=run_id or new_run_id(),
        log_level=log_level,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        cancel_grace=cancel_grace,
        max_attempts=max_attempts,
        prefetch=prefetch,
    )
    return run_local(
        modules,
        workers=local_workers or os.cpu_count() or 1,
        capabilities=[os_capability(), *capabilities],
        settings=settings,
        reporter=reporter,
    )
