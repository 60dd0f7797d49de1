"""The canceller: turns one cancel request into a broadcast every actor obeys."""

from __future__ import annotations

from ..logs import actor_logger
from ..mailbox import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    Transport,
    control_address,
)
from ..messages import Cancel, CancelRequest, Shutdown
from ..settings import RunSettings
from .process import SupervisorWatch, run_helper_actor


def canceller_main(transport: Transport, settings: RunSettings) -> None:
    """Run the canceller; the entry point of its process."""
    run_helper_actor("canceller", Canceller, transport, settings)


class Canceller:
    """Relays the first cancel request of a run to the master, monitor and workers.

    Later requests are logged and dropped: a run is cancelled once, for the
    first reason given.
    """

    def __init__(self, transport: Transport, settings: RunSettings) -> None:
        self.log = actor_logger("canceller", settings.run_id)
        self._transport = transport
        self._inbox = transport.mailbox(CANCELLER)
        self._supervisor = SupervisorWatch(settings.supervisor_pid)
        self._settings = settings
        self.cancelled: Cancel | None = None

    def run(self) -> int:
        self.log.debug("Started")
        while True:
            message = self._inbox.get(timeout=self._settings.heartbeat_interval)
            if isinstance(message, Shutdown):
                self.log.debug("Stopped: {}", message.reason)
                return 0
            if isinstance(message, CancelRequest):
                self.request_received(message)
            elif message is None and not self._supervisor.alive():
                self.log.error("Supervisor is gone; stopping")
                return 1

    def request_received(self, request: CancelRequest) -> None:
        if self.cancelled is not None:
            self.log.debug("Already cancelled; ignoring {}", request.reason)
            return
        self.cancelled = Cancel(request.reason, request.origin)
        # Workers are looked up now, not at start: on Redis they join any time.
        workers = self._transport.worker_ids()
        addresses = [MASTER, MONITOR, *(control_address(w) for w in workers)]
        targets = [self._transport.mailbox(address) for address in addresses]
        self.log.info(
            "Cancelling the run ({}, from {}); telling {} actors",
            request.reason,
            request.origin,
            len(targets),
        )
        for target in targets:
            try:
                target.put(self.cancelled)
            except MailboxClosedError:
                self.log.debug("{} is gone; it needs no cancel", target.name)
