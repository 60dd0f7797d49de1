"""Mailboxes over `multiprocessing` pipes, for the processes of one machine."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from loguru import logger

from . import (
    CANCELLER,
    MASTER,
    MONITOR,
    MailboxClosedError,
    control_address,
    decode,
    encode,
    worker_address,
)

LOCK_TIMEOUT = 10.0
"""Seconds a sender waits for a mailbox's write lock before giving up."""


class LocalMailbox:
    """A mailbox backed by a `multiprocessing` pipe, like `multiprocessing.SimpleQueue`.

    A sender writes the encoded message to the pipe itself, under a lock that
    keeps messages of several senders whole. Unlike `multiprocessing.Queue`
    there is no feeder thread, which saves a thread switch on every message.
    The price is that `put` waits while the pipe's buffer (64 KiB on Linux) is
    full. That is safe because each process keeps only the pipe ends it uses
    (see `LocalTransport.for_actor`): a receiver that dies closes the last read
    end, and `put` raises `MailboxClosedError` instead of waiting for ever.
    """

    def __init__(
        self,
        name: str,
        reader: Connection | None,
        writer: Connection | None,
        write_lock: Any,
    ) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        self._write_lock = write_lock

    @classmethod
    def create(cls, name: str, context: BaseContext) -> LocalMailbox:
        reader, writer = context.Pipe(duplex=False)
        return cls(name, reader, writer, context.Lock())

    def sending_end(self) -> LocalMailbox:
        """Return this mailbox without its reading end."""
        return LocalMailbox(self.name, None, self._writer, self._write_lock)

    def put(self, message: Any) -> None:
        if self._writer is None:
            raise MailboxClosedError(f"mailbox {self.name} is closed for sending")
        payload = encode(message)
        # A sender that dies while it writes never releases the lock, so the
        # wait for it is bounded instead of hanging this sender too.
        if not self._write_lock.acquire(timeout=LOCK_TIMEOUT):
            msg = (
                f"mailbox {self.name} stayed locked for {LOCK_TIMEOUT:g} s; a "
                "sender probably died while writing to it"
            )
            raise MailboxClosedError(msg)
        try:
            self._writer.send_bytes(payload)
        except (BrokenPipeError, OSError) as exc:
            msg = f"mailbox {self.name} has no receiver any more"
            raise MailboxClosedError(msg) from exc
        finally:
            self._write_lock.release()

    def get(self, timeout: float | None = None) -> Any | None:
        if self._reader is None:
            raise MailboxClosedError(f"mailbox {self.name} is not read here")
        if not self._reader.poll(timeout):
            return None
        try:
            payload = self._reader.recv_bytes()
        except EOFError as exc:
            raise MailboxClosedError(f"mailbox {self.name} has no senders") from exc
        try:
            return decode(payload)
        except Exception:
            logger.opt(exception=True).warning(
                "Dropped an unreadable message from mailbox {}", self.name
            )
            return None

    def put_then_get(
        self, message: Any, inbox: LocalMailbox, timeout: float | None
    ) -> Any | None:
        """Send `message` here, then wait on `inbox` like `inbox.get(timeout)`."""
        self.put(message)
        return inbox.get(timeout)

    def get_many(self, timeout: float | None, limit: int) -> list[Any]:
        """Wait up to `timeout` s for messages and return up to `limit` of them."""
        first = self.get(timeout)
        if first is None:
            return []
        messages = [first]
        while len(messages) < limit and self._reader.poll(0):
            message = self.get(0)
            if message is not None:
                messages.append(message)
        return messages

    def close_reading_end(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        """Close both ends this process holds, and drop the lock."""
        self.close_reading_end()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._write_lock = None


class LocalTransport:
    """Every mailbox of a run on one machine, created before its processes start.

    `multiprocessing` pipes can only be handed to a child process when it is
    started, so the transport is built with the ids of all local workers.
    Each actor process gets `for_actor`: the reading ends of its own mailboxes
    and the sending ends of the rest.
    """

    def __init__(
        self,
        mailboxes: dict[str, LocalMailbox],
        family: list[LocalMailbox] | None = None,
    ) -> None:
        self._mailboxes = mailboxes
        # Every mailbox object of this transport and of its views, so that
        # `close` releases all of them at once (see `close`).
        self._family = family if family is not None else list(mailboxes.values())

    @classmethod
    def create(
        cls, worker_ids: Iterable[str], context: BaseContext | None = None
    ) -> LocalTransport:
        context = context or multiprocessing.get_context()
        names = [MASTER, MONITOR, CANCELLER]
        for worker_id in worker_ids:
            names += [worker_address(worker_id), control_address(worker_id)]
        return cls({name: LocalMailbox.create(name, context) for name in names})

    def mailbox(self, name: str) -> LocalMailbox:
        try:
            return self._mailboxes[name]
        except KeyError:
            msg = f"no local mailbox named {name!r}"
            raise LookupError(msg) from None

    def for_actor(
        self, receives: Iterable[str], sends: Iterable[str] | None = None
    ) -> LocalTransport:
        """Return the view of an actor that reads `receives` and writes `sends`.

        With `sends` None the actor may write to every mailbox. Giving a
        worker only what it uses keeps the file descriptors handed to each
        new process few, which the forkserver limits.
        """
        own = set(receives)
        allowed = None if sends is None else own | set(sends)
        view = {
            name: mailbox if name in own else mailbox.sending_end()
            for name, mailbox in self._mailboxes.items()
            if allowed is None or name in allowed
        }
        self._family.extend(view.values())
        return LocalTransport(view, self._family)

    def worker_ids(self) -> list[str]:
        """Return the ids of the workers this transport has mailboxes for."""
        prefix, suffix = worker_address(""), ":control"
        return sorted(
            name[len(prefix) : -len(suffix)]
            for name in self._mailboxes
            if name.startswith(prefix) and name.endswith(suffix)
        )

    def run_state(self) -> str | None:
        """Return None: a local run's state lives in its master alone."""
        return None

    def master_alive(self) -> bool:
        """Return True: local workers watch the master's process instead."""
        return True

    def register_worker(self, worker_id: str) -> None:
        """Do nothing: local workers are known from the start."""

    def offload(self, module: str, attempt: int, value: bytes) -> bytes:
        """Return `value`: local results travel inside the result message."""
        return value

    def fetch(self, value: bytes) -> bytes:
        return value

    def keep_reading_only(self, receives: Iterable[str]) -> None:
        """Close the reading ends of every mailbox not in `receives`.

        Called by the process that created the transport once the actor
        processes have started and hold their own copies.
        """
        own = set(receives)
        for name, mailbox in self._mailboxes.items():
            if name not in own:
                mailbox.close_reading_end()

    def close(self) -> None:
        """Close every pipe end and lock of this transport and of its views.

        The locks are dropped here, not whenever the garbage collector gets to
        them, because of Python 3.12. There a semaphore finalized while
        multiprocessing's resource tracker registers a new one makes the
        tracker warn of a reentrant call, and the semaphore may leak.
        """
        for mailbox in self._family:
            mailbox.close()
