"""The heartbeat monitor: declares a worker lost when its heartbeats stop."""

from __future__ import annotations

import time

from ..logs import actor_logger
from ..mailbox import MASTER, MONITOR, MailboxClosedError, Transport
from ..messages import (
    Cancel,
    HeartbeatEvent,
    Shutdown,
    WatchWorker,
    WorkerLostEvent,
)
from ..settings import RunSettings
from .process import SupervisorWatch, run_helper_actor

BATCH = 1024
"""Messages the monitor takes from its mailbox at once, at most."""


def monitor_main(transport: Transport, settings: RunSettings) -> None:
    """Run the heartbeat monitor; the entry point of its process."""
    run_helper_actor("monitor", HeartbeatMonitor, transport, settings)


class HeartbeatMonitor:
    """Stamps each heartbeat on its own monotonic clock and reports silence.

    The sender's clock is never used, so clock skew between machines cannot
    make a live worker look dead.
    """

    def __init__(self, transport: Transport, settings: RunSettings) -> None:
        self.settings = settings
        self.log = actor_logger("monitor", settings.run_id)
        self._inbox = transport.mailbox(MONITOR)
        self._master = transport.mailbox(MASTER)
        self._supervisor = SupervisorWatch(settings.supervisor_pid)
        self.last_seen: dict[str, float] = {}
        self.latest: dict[str, HeartbeatEvent] = {}
        self.lost: set[str] = set()

    def run(self) -> int:
        self.log.debug("Started; timeout {} s", self.settings.heartbeat_timeout)
        check_every = min(self.settings.heartbeat_interval, 1.0)
        while True:
            # Every waiting heartbeat is read before any worker is judged:
            # after this process was starved of CPU, judging each worker
            # while later heartbeats still wait in the mailbox would declare
            # live workers lost.
            messages = self._inbox.get_many(check_every, BATCH)
            now = time.monotonic()
            for message in messages:
                if isinstance(message, Shutdown):
                    self.log.debug("Stopped: {}", message.reason)
                    return 0
                if isinstance(message, HeartbeatEvent):
                    self.beat_received(message, now)
                elif isinstance(message, WatchWorker):
                    self.watch(message.worker_id, now)
                elif isinstance(message, Cancel):
                    self.log.debug("Cancel received: {}", message.reason)
            if not messages and not self._supervisor.alive():
                self.log.error("Supervisor is gone; stopping")
                return 1

            for event in self.silent_workers(now):
                self.log.warning(
                    "Worker {} lost: no heartbeat for {:.1f} s",
                    event.worker_id,
                    event.silent_for,
                )
                try:
                    self._master.put(event)
                except MailboxClosedError:
                    self.log.error("The master is gone; stopping")
                    return 1

    def watch(self, worker_id: str, now: float) -> None:
        """Expect heartbeats of `worker_id` from `now` on, even after a loss.

        A worker id that registers again belongs to a new process.
        """
        self.lost.discard(worker_id)
        self.last_seen[worker_id] = now

    def beat_received(self, beat: HeartbeatEvent, now: float) -> None:
        if beat.worker_id in self.lost:
            return
        self.last_seen[beat.worker_id] = now
        self.latest[beat.worker_id] = beat

    def silent_workers(self, now: float) -> list[WorkerLostEvent]:
        """Return one event for each worker newly silent for longer than the timeout."""
        events = []
        for worker_id, seen in self.last_seen.items():
            silent_for = now - seen
            if (
                worker_id not in self.lost
                and silent_for > self.settings.heartbeat_timeout
            ):
                self.lost.add(worker_id)
                events.append(WorkerLostEvent(worker_id, silent_for))
        return events
