"""The messages actors exchange through their mailboxes.

Commands are named as verbs (`Assign`, `Cancel`), facts as `*Event`. Every
message is a small frozen record that cloudpickle serializes by reference, so
only the payloads inside (module classes, results) travel by value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MASTER_ID = "master"
"""Worker id under which the master runs pinned modules."""


class Outcome(str, enum.Enum):
    """The outcome of one attempt at a module."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ResultRef:
    """A serialized result stored by the transport under `key`, `size` bytes long."""

    key: str
    size: int


Payload = bytes | ResultRef
"""A serialized result, inline or stored by the transport."""


@dataclass(frozen=True, slots=True)
class RegisterWorker:
    """A worker announces itself and what it can run."""

    worker_id: str
    capabilities: frozenset[str]
    pid: int
    host: str
    instance_workers: int = 1
    """Workers the registering worker's instance starts, itself included."""


@dataclass(frozen=True, slots=True)
class Welcome:
    """The master accepts a worker and hands it the pipeline's module classes."""

    run_id: str
    modules: bytes
    heartbeat_interval: float


@dataclass(frozen=True, slots=True)
class Assign:
    """Run one attempt of a module, given its dependencies' serialized results."""

    module: str
    attempt: int
    inputs: dict[str, Payload] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """A worker finished an attempt: its value or error, output and timings."""

    worker_id: str
    module: str
    attempt: int
    outcome: Outcome
    value: Payload | None
    error: str | None
    output: str
    started_at: float
    duration: float


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    """A worker is alive, with what it is doing and what it costs."""

    worker_id: str
    sequence: int
    module: str | None
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class WatchWorker:
    """The master accepted a worker: its heartbeats are due from now on.

    The monitor counts the silence from here, so a worker that dies before
    its first heartbeat is declared lost as well.
    """

    worker_id: str


@dataclass(frozen=True, slots=True)
class WorkerLostEvent:
    """The heartbeat monitor heard nothing from a worker within the timeout."""

    worker_id: str
    silent_for: float


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A request to the canceller to stop the whole run."""

    reason: str
    origin: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """The canceller's broadcast: every actor stops what it is doing."""

    reason: str
    origin: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The run is over: the receiving actor cleans up and exits."""

    reason: str
