"""Run a graph of Python modules across processes and machines.

A module subclasses `Module` and implements `execute(ctx)`; its return value
is what dependent modules read with `ctx.result`. `run` executes a pipeline on
this machine; `python -m pipeline_actors` does the same from the command line.
"""

__version__ = "0.1.0"

from loguru import logger

from .context import CommandResult, Context
from .errors import (
    CommandFailedError,
    ExitCode,
    InvalidPipelineError,
    ModuleCancelled,
    PipelineActorsError,
    UndeclaredDependencyError,
)
from .module import Module
from .pipeline import Pipeline, run
from .report import ModuleReport, RunReport
from .state import ModuleStatus

__all__ = [
    "CommandFailedError",
    "CommandResult",
    "Context",
    "ExitCode",
    "InvalidPipelineError",
    "Module",
    "ModuleCancelled",
    "ModuleReport",
    "ModuleStatus",
    "Pipeline",
    "PipelineActorsError",
    "RunReport",
    "UndeclaredDependencyError",
    "run",
]

# Quiet until the application enables logging, as a library should be.
logger.disable("pipeline_actors")
