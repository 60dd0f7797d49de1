"""Mailboxes: the one contract actors use to exchange messages.

A mailbox is a first-in, first-out queue of messages with many senders and one
receiver. The local transport backs it with `multiprocessing` queues; every
transport serializes messages with `encode` and `decode`.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol

import cloudpickle

from ..errors import PipelineActorsError

MASTER = "master"
MONITOR = "monitor"
CANCELLER = "canceller"


class MailboxClosedError(PipelineActorsError):
    """Raised when a mailbox's other side is gone: no receiver, or no senders."""


class Mailbox(Protocol):
    """The queue from which one actor receives its messages."""

    name: str

    def put(self, message: Any) -> None:
        """Send `message` to the actor behind this mailbox without waiting for it."""

    def get(self, timeout: float | None = None) -> Any | None:
        """Return the next message, or None when `timeout` seconds pass first."""

    def put_then_get(
        self, message: Any, inbox: Mailbox, timeout: float | None
    ) -> Any | None:
        """Send `message` here, then return `inbox.get(timeout)`, at best at once."""

    def get_many(self, timeout: float | None, limit: int) -> list[Any]:
        """Wait up to `timeout` s for messages and return up to `limit` of them."""


class Transport(Protocol):
    """A family of mailboxes that the actors of one run share, and its records."""

    def mailbox(self, name: str) -> Mailbox:
        """Return the mailbox called `name`."""

    def worker_ids(self) -> list[str]:
        """Return the ids of the workers of the run known so far."""

    def run_state(self) -> str | None:
        """Return ``finished`` or ``cancelled`` once the master ended the run."""

    def master_alive(self) -> bool:
        """Return whether the run's master is still there."""

    def register_worker(self, worker_id: str) -> None:
        """Record a worker, so that a cancel reaches it."""

    def offload(self, module: str, attempt: int, value: bytes) -> Any:
        """Return what a result message carries for a serialized result."""

    def fetch(self, value: Any) -> bytes:
        """Return the serialized result that `offload` returned `value` for."""

    def close(self) -> None:
        """Release what this process holds of the transport."""


def encode(message: Any) -> bytes:
    """Serialize a message so that any actor of the run can read it.

    Message records are importable classes of this package, and whatever they
    carry by value (module classes, results) was serialized by cloudpickle
    already, so the standard pickler suffices here. It is about three times
    faster than cloudpickle's for these records; cloudpickle remains the
    fallback for a message that contains something only it can pickle.
    """
    try:
        return pickle.dumps(message, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        return cloudpickle.dumps(message, protocol=5)


def decode(payload: bytes) -> Any:
    """Rebuild a message that `encode` produced."""
    return pickle.loads(payload)


def worker_address(worker_id: str) -> str:
    return f"worker:{worker_id}"


def control_address(worker_id: str) -> str:
    """Return the address of a worker's control mailbox, read beside its module."""
    return f"worker:{worker_id}:control"
