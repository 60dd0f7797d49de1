"""Mailboxes over Redis lists, for actors on several machines.

A mailbox is a Redis list: senders RPUSH a signed envelope and the one
receiver BLPOPs it. See `keys` for the key schema and `signing` for the
envelope. A transport object carries only its settings when it is pickled, so
each actor process opens its own connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from loguru import logger
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import PipelineActorsError
from ..messages import ResultRef
from . import MailboxClosedError, decode, encode
from .keys import DEFAULT_PREFIX, DEFAULT_TTL, RunKeys
from .signing import INSECURE_KEY, EnvelopeRejected, Rejection, Signer

SECRET_HINT = "; check that PIPELINE_ACTORS_SECRET is the same on every instance"

CONNECT_TIMEOUT = 8.0
"""Seconds to keep trying to reach Redis at start before giving up. With the
time a command takes to start, an unreachable Redis is reported within 10 s."""

MAX_VALUE_SIZE = 512 * 1024 * 1024
"""The largest string Redis stores, in bytes (its proto-max-bulk-len default)."""

INLINE_RESULT_LIMIT = 256 * 1024
"""Results up to this many bytes travel inside the result message; larger ones
are stored under their own key, so the master keeps no copy of them."""

DROP_LOG_INTERVAL = 10.0
"""Seconds between two warnings about rejected messages of one mailbox."""


class RedisUnavailableError(PipelineActorsError):
    """Raised when Redis cannot be reached or rejects the connection."""


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the Redis of a run, and what to sign with."""

    url: str
    run_id: str
    secret: bytes | None
    prefix: str = DEFAULT_PREFIX
    ttl: float = DEFAULT_TTL

    @property
    def insecure(self) -> bool:
        return self.secret is None


def describe_url(url: str) -> str:
    """Return where a Redis URL points, without its user name or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    database = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{database}"


def connect(
    url: str, timeout: float = CONNECT_TIMEOUT, *, single_connection: bool = False
) -> redis.Redis:
    """Open a client for `url` and wait until Redis replies, up to `timeout` s.

    A `single_connection` client skips the connection pool on every command;
    it suits one thread.

    Raises `RedisUnavailableError` naming the server, never the password.
    """
    where = describe_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": min(timeout, 2.0),
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "single_connection_client": single_connection,
    }
    # redis-py's Unix socket connection takes no keepalive option.
    if urlsplit(url).scheme != "unix":
        options["socket_keepalive"] = True
    deadline = time.monotonic() + timeout
    while True:
        try:
            # A single-connection client connects as it is made, so making it
            # is part of each attempt.
            _probe(url, options, timeout=max(0.5, deadline - time.monotonic()))
            client = redis.Redis.from_url(url, **options)
            client.ping()
            return client
        except ValueError as exc:
            msg = f"invalid Redis URL for {where}: {exc}"
            raise RedisUnavailableError(msg) from exc
        except redis.AuthenticationError as exc:
            msg = f"Redis at {where} rejected the credentials: {exc}"
            raise RedisUnavailableError(msg) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Each ping retries with backoff for up to about a second, so
            # stop early enough for the next one to end before the deadline.
            if time.monotonic() + 1.5 >= deadline:
                msg = f"cannot reach Redis at {where} within {timeout:g} s: {exc}"
                raise RedisUnavailableError(msg) from exc
            time.sleep(0.2)
        except redis.RedisError as exc:
            msg = f"Redis at {where} rejected the connection: {exc}"
            raise RedisUnavailableError(msg) from exc


def _probe(url: str, options: dict[str, Any], timeout: float) -> None:
    """Ping Redis once with a read timeout, and without retries.

    The clients of a run wait in BLPOP for as long as it takes, so they have
    no read timeout. A server that accepts connections but never replies
    must be caught here instead.
    """
    probe_options = {**options, "single_connection_client": False}
    probe_options.update(socket_timeout=min(timeout, 2.0), retry=None)
    probe = redis.Redis.from_url(url, **probe_options)
    try:
        probe.ping()
    finally:
        probe.close()


class DropCounter:
    """Counts messages rejected by a mailbox, and warns at most once in a while.

    A flood of bad messages must not flood the log, so the first rejection is
    logged at once and later ones as counts every `DROP_LOG_INTERVAL` seconds.
    """

    def __init__(self, mailbox: str) -> None:
        self.mailbox = mailbox
        self.total: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._last_log = float("-inf")
        self._lock = threading.Lock()

    def count(self, reason: str) -> None:
        with self._lock:
            self.total[reason] += 1
            self._pending[reason] += 1
            if time.monotonic() - self._last_log < DROP_LOG_INTERVAL:
                return
        self.flush()

    def flush(self) -> None:
        """Log the rejections not logged yet, if any."""
        with self._lock:
            if not self._pending:
                return
            summary = ", ".join(f"{n} {why}" for why, n in self._pending.items())
            hint = SECRET_HINT if Rejection.BAD_SIGNATURE.value in self._pending else ""
            self._pending.clear()
            self._last_log = time.monotonic()
        logger.warning(
            "Dropped messages on mailbox {} without unpickling them: {} ({} in all){}",
            self.mailbox,
            summary,
            sum(self.total.values()),
            hint,
        )


class RedisMailbox:
    """One actor's mailbox: a Redis list of signed envelopes."""

    def __init__(self, name: str, key: str, transport: RedisTransport) -> None:
        self.name = name
        self.key = key
        self._transport = transport
        self.drops = DropCounter(name)

    def put(self, message: Any) -> None:
        self._transport.push(self.key, encode(message))

    def get(self, timeout: float | None = None) -> Any | None:
        envelope = self._transport.pop(self.key, timeout)
        return None if envelope is None else self._open(envelope)

    def put_then_get(
        self, message: Any, inbox: RedisMailbox, timeout: float | None
    ) -> Any | None:
        """Send `message` here, then wait on `inbox` like `inbox.get(timeout)`.

        Both go to Redis in one round trip, which saves a worker one round
        trip per module: its result and its wait for the next assignment.
        """
        envelope = self._transport.push_then_pop(
            self.key, encode(message), inbox.key, timeout
        )
        return None if envelope is None else inbox._open(envelope)

    def get_many(self, timeout: float | None, limit: int) -> list[Any]:
        """Wait up to `timeout` s for messages and return up to `limit` of them."""
        envelopes = self._transport.pop_many(self.key, timeout, limit)
        opened = (self._open(envelope) for envelope in envelopes)
        return [message for message in opened if message is not None]

    def _open(self, envelope: bytes) -> Any | None:
        try:
            payload = self._transport.signer.open(envelope)
        except EnvelopeRejected as rejected:
            self.drops.count(rejected.reason.value)
            return None
        try:
            return decode(payload)
        except Exception:
            self.drops.count("signed but unreadable")
            return None


class RedisTransport:
    """Every mailbox and shared record of one run, in one Redis database."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.keys = RunKeys(settings.prefix, settings.run_id, settings.ttl)
        self.signer = Signer(settings.secret or INSECURE_KEY, settings.run_id)
        # One client per thread, each with its own connection: a worker's
        # module thread and heartbeat thread block on BLPOP at the same time,
        # and a private connection saves the pool's bookkeeping per command.
        self._local = threading.local()
        self._clients: list[redis.Redis] = []
        self._blmpop: bool | None = None
        self._mailboxes: dict[str, RedisMailbox] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])

    @property
    def client(self) -> redis.Redis:
        """Return the calling thread's client, connecting it on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = connect(self.settings.url, single_connection=True)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def mailbox(self, name: str) -> RedisMailbox:
        with self._lock:
            if name not in self._mailboxes:
                key = self.keys.mailbox(name)
                self._mailboxes[name] = RedisMailbox(name, key, self)
            return self._mailboxes[name]

    def for_actor(
        self, receives: Iterable[str], sends: Iterable[str] | None = None
    ) -> RedisTransport:
        """Return this transport: each process connects on its own anyway."""
        return self

    def keep_reading_only(self, receives: Iterable[str]) -> None:
        """Do nothing: Redis mailboxes have no ends to close."""

    def push(self, key: str, payload: bytes) -> None:
        envelope = self.signer.seal(payload)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, envelope)
            pipe.pexpire(key, self.keys.ttl_ms)
            pipe.execute()
        except redis.RedisError as exc:
            raise MailboxClosedError(self._lost(exc)) from exc

    def push_then_pop(
        self, push_key: str, payload: bytes, pop_key: str, timeout: float | None
    ) -> bytes | None:
        wait = 0 if timeout is None else max(timeout, 0.001)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(push_key, self.signer.seal(payload))
            pipe.pexpire(push_key, self.keys.ttl_ms)
            pipe.blpop([pop_key], timeout=wait)
            item = pipe.execute()[-1]
        except redis.RedisError as exc:
            raise MailboxClosedError(self._lost(exc)) from exc
        return None if item is None else item[1]

    def pop(self, key: str, timeout: float | None) -> bytes | None:
        # BLPOP treats 0 as "wait for ever"; a tiny positive wait keeps a
        # zero timeout a poll.
        wait = 0 if timeout is None else max(timeout, 0.001)
        try:
            item = self.client.blpop([key], timeout=wait)
        except redis.RedisError as exc:
            raise MailboxClosedError(self._lost(exc)) from exc
        return None if item is None else item[1]

    def pop_many(self, key: str, timeout: float | None, limit: int) -> list[bytes]:
        """Wait for at least one envelope and return up to `limit` of them.

        Redis 7 does it in one command, BLMPOP; older servers get BLPOP and
        so one envelope at a time.
        """
        if not self._has_blmpop():
            envelope = self.pop(key, timeout)
            return [] if envelope is None else [envelope]
        wait = 0 if timeout is None else max(timeout, 0.001)
        try:
            popped = self.client.blmpop(wait, 1, key, direction="LEFT", count=limit)
        except redis.RedisError as exc:
            raise MailboxClosedError(self._lost(exc)) from exc
        return [] if popped is None else list(popped[1])

    def _has_blmpop(self) -> bool:
        if self._blmpop is None:
            version = str(self.client.info("server").get("redis_version", "0"))
            self._blmpop = int(version.split(".")[0]) >= 7
        return self._blmpop

    def worker_ids(self) -> list[str]:
        with self._errors_as_closed():
            return sorted(w.decode() for w in self.client.hkeys(self.keys.workers))

    def register_worker(self, worker_id: str) -> None:
        with self._errors_as_closed():
            description = f"pid {os.getpid()} on {socket.gethostname()}"
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.keys.workers, worker_id, description)
            pipe.pexpire(self.keys.workers, self.keys.ttl_ms)
            pipe.execute()

    def claim_master(self, identity: str, lease: float) -> str | None:
        """Become the run's master; return the holder's identity when taken.

        The claim is a lease of `lease` seconds that `renew_master` extends,
        so the key of a master that died expires soon, and its workers see
        that it is gone.
        """
        claimed = self.client.set(
            self.keys.master, identity, nx=True, px=max(1, int(lease * 1000))
        )
        if claimed:
            return None
        holder = self.client.get(self.keys.master)
        return holder.decode() if holder else "an unknown master"

    def renew_master(self, lease: float) -> None:
        with self._errors_as_closed():
            self.client.pexpire(self.keys.master, max(1, int(lease * 1000)))

    def master_alive(self) -> bool:
        with self._errors_as_closed():
            return bool(self.client.exists(self.keys.master))

    def release_master(self) -> None:
        self.client.delete(self.keys.master)

    def set_state(self, state: str) -> None:
        with self._errors_as_closed():
            self.client.set(self.keys.state, state, px=self.keys.ttl_ms)

    def run_state(self) -> str | None:
        with self._errors_as_closed():
            value = self.client.get(self.keys.state)
            return value.decode() if value else None

    def refresh(self, addresses: Iterable[str], results: Iterable[ResultRef]) -> None:
        """Push back the expiry of every key of the run that is still in use."""
        keys = [self.keys.workers, self.keys.state]
        keys += [self.keys.mailbox(address) for address in addresses]
        keys += [ref.key for ref in results]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, self.keys.ttl_ms)
        pipe.execute()

    def offload(self, module: str, attempt: int, value: bytes) -> bytes | ResultRef:
        """Store a large result under its own key and return a reference to it."""
        if len(value) <= INLINE_RESULT_LIMIT:
            return value
        if len(value) + 1024 > MAX_VALUE_SIZE:
            msg = (
                f"the result is {len(value):,} bytes once pickled, more than the "
                f"{MAX_VALUE_SIZE:,} that Redis stores under one key; return a "
                "path to shared storage instead"
            )
            raise ValueError(msg)
        key = self.keys.result(module, attempt)
        try:
            self.client.set(key, self.signer.seal(value), px=self.keys.ttl_ms)
        except redis.RedisError as exc:
            raise MailboxClosedError(f"storing the result failed: {exc}") from exc
        return ResultRef(key, len(value))

    def fetch(self, value: bytes | ResultRef) -> bytes:
        """Return the serialized result that `value` is or refers to."""
        if isinstance(value, bytes):
            return value
        envelope = self.client.get(value.key)
        if envelope is None:
            msg = f"the result stored under {value.key} has expired or was removed"
            raise LookupError(msg)
        return self.signer.open(envelope)

    def close(self) -> None:
        """Log any rejected messages not reported yet and disconnect."""
        for mailbox in list(self._mailboxes.values()):
            mailbox.drops.flush()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _errors_as_closed(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise MailboxClosedError(self._lost(exc)) from exc

    def _lost(self, exc: Exception) -> str:
        return (
            f"lost the connection to Redis at {describe_url(self.settings.url)}: {exc}"
        )
