"""The exception hierarchy and the process exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of the command line, one per way a run can end."""

    OK = 0
    FAILED = 1
    INVALID = 2
    UNAVAILABLE = 3
    CANCELLED = 130


class PipelineActorsError(Exception):
    """Base of every error raised by pipeline_actors."""


class InvalidPipelineError(PipelineActorsError):
    """Raised when a pipeline cannot run as written: nothing has executed yet."""


class PipelineNotFoundError(InvalidPipelineError):
    """Raised when the pipeline file or module name does not exist."""


class PipelineImportError(InvalidPipelineError):
    """Raised when the pipeline file exists but importing it fails."""


class DependencyCycleError(InvalidPipelineError):
    """Raised when modules depend on each other in a cycle."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]])
        super().__init__(f"dependency cycle: {path}")


class MissingDependencyError(InvalidPipelineError):
    """Raised when a module depends on a module that is not in the pipeline."""

    def __init__(self, module: str, dependency: str) -> None:
        self.module = module
        self.dependency = dependency
        msg = (
            f"module {module!r} depends on {dependency!r}, which is not in the "
            f"pipeline; add {dependency!r} to the pipeline or remove the dependency"
        )
        super().__init__(msg)


class DuplicateModuleError(InvalidPipelineError):
    """Raised when two modules of one pipeline share a name."""


class ConfigError(InvalidPipelineError):
    """Raised for an invalid setting from a flag, the environment or pyproject.toml."""


class UndeclaredDependencyError(PipelineActorsError, LookupError):
    """Raised by `Context.result` for a module that is not a declared dependency."""


ARGV_SHOWN = 12
"""Arguments of a failed command quoted in its error; `argv` keeps them all."""


class CommandFailedError(PipelineActorsError):
    """Raised by `Context.run` when a command exits with a non-zero status."""

    def __init__(self, argv: list[str], returncode: int, output_tail: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        command = " ".join(argv[:ARGV_SHOWN])
        if len(argv) > ARGV_SHOWN:
            command += f" ... ({len(argv) - ARGV_SHOWN} more arguments)"
        msg = f"command {command!r} exited with status {returncode}"
        if output_tail:
            msg += f"; last lines of its output:\n{output_tail}"
        super().__init__(msg)


class ModuleCancelled(BaseException):
    """Raised inside a running module when the run is cancelled.

    It derives from `BaseException` so that a module's own `except Exception`
    does not swallow the cancellation.
    """
