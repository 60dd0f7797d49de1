"""The record of a finished run: each module's status, timings and output."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .errors import ExitCode
from .messages import Payload
from .state import ModuleStatus


@dataclass(frozen=True)
class ModuleReport:
    """The outcome of one module in a run.

    `started_at` is the wall-clock time, in seconds since the epoch on the
    clock of the machine that ran the module, at which its last attempt began.
    """

    name: str
    status: ModuleStatus
    worker_id: str | None
    duration: float | None
    started_at: float | None
    attempts: int
    detail: str | None
    output: str


@dataclass(frozen=True)
class RunReport:
    """The record of a finished run, returned by `run` and printed as the summary."""

    run_id: str
    exit_code: ExitCode
    wall_time: float
    modules: Mapping[str, ModuleReport]
    _results: Mapping[str, Payload] = field(repr=False, default_factory=dict)
    _fetch: Callable[[Payload], bytes] = field(repr=False, default=bytes)

    @property
    def ok(self) -> bool:
        return self.exit_code is ExitCode.OK

    def result(self, module: Any) -> Any:
        """Return the value a succeeded module returned, by class or name."""
        name = module if isinstance(module, str) else module.name
        report = self.modules.get(name)
        if report is None:
            raise KeyError(f"no module named {name!r} in this run")
        if report.status is not ModuleStatus.SUCCEEDED:
            msg = f"module {name!r} has no result: it {report.status.value}"
            raise LookupError(msg)
        return cloudpickle.loads(self._fetch(self._results[name]))

    def with_status(self, status: ModuleStatus) -> list[str]:
        """Return the names of the modules that ended with `status`."""
        return [m.name for m in self.modules.values() if m.status is status]
