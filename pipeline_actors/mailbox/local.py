"""Mailboxes over `multiprocessing` queues, for the processes of one machine."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from typing import Any

from loguru import logger

from . import (
    CANCELLER,
    MASTER,
    MONITOR,
    control_address,
    decode,
    encode,
    worker_address,
)


class LocalMailbox:
    """A mailbox backed by one `multiprocessing.Queue`.

    The queue carries encoded bytes, so a message is serialized once, by the
    sender, however it is routed.
    """

    def __init__(self, name: str, context: BaseContext) -> None:
        self.name = name
        self._queue = context.Queue()

    def put(self, message: Any) -> None:
        self._queue.put(encode(message))

    def get(self, timeout: float | None = None) -> Any | None:
        try:
            payload = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        try:
            return decode(payload)
        except Exception:
            logger.opt(exception=True).warning(
                "Dropped an unreadable message from mailbox {}", self.name
            )
            return None

    def close(self) -> None:
        """Release the queue; the mailbox takes no more messages afterwards."""
        self._queue.close()
        self._queue.cancel_join_thread()


class LocalTransport:
    """Every mailbox of a run on one machine, created before its processes start.

    `multiprocessing` queues can only be handed to a child process when it is
    started, so the transport is built with the ids of all local workers and
    passed whole to each actor process.
    """

    def __init__(
        self,
        worker_ids: Iterable[str],
        context: BaseContext | None = None,
    ) -> None:
        context = context or multiprocessing.get_context()
        names = [MASTER, MONITOR, CANCELLER]
        for worker_id in worker_ids:
            names += [worker_address(worker_id), control_address(worker_id)]
        self._mailboxes = {name: LocalMailbox(name, context) for name in names}

    def mailbox(self, name: str) -> LocalMailbox:
        try:
            return self._mailboxes[name]
        except KeyError:
            msg = f"no local mailbox named {name!r}"
            raise LookupError(msg) from None

    def close(self) -> None:
        for mailbox in self._mailboxes.values():
            mailbox.close()
