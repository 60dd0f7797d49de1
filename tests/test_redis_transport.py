"""The Redis transport against a real redis-server: mailboxes, signing, keys."""

from __future__ import annotations

import multiprocessing
import pickle
import time
import uuid

import pytest

from pipeline_actors.mailbox import MailboxClosedError, encode
from pipeline_actors.mailbox.redis import (
    INLINE_RESULT_LIMIT,
    RedisSettings,
    RedisTransport,
    RedisUnavailableError,
    connect,
    describe_url,
)
from pipeline_actors.mailbox.signing import EnvelopeRejected, Rejection, Signer
from pipeline_actors.messages import ResultRef, Shutdown

from conftest import RedisServer

SECRET = b"test-secret"


def new_transport(url: str, secret: bytes | None = SECRET, **kw) -> RedisTransport:
    run_id = kw.pop("run_id", f"test-{uuid.uuid4().hex[:8]}")
    return RedisTransport(RedisSettings(url, run_id, secret, **kw))


def echo_back(transport: RedisTransport, count: int) -> None:
    inbox, outbox = transport.mailbox("in"), transport.mailbox("out")
    for _ in range(count):
        outbox.put(inbox.get(timeout=10))


def test_messages_cross_processes_in_order(redis_server):
    transport = new_transport(redis_server.url)
    context = multiprocessing.get_context("forkserver")
    echo = context.Process(target=echo_back, args=(transport, 20))
    echo.start()

    for index in range(20):
        transport.mailbox("in").put(Shutdown(f"message {index}"))
    received = [transport.mailbox("out").get(timeout=10) for _ in range(20)]
    echo.join(timeout=10)

    assert [m.reason for m in received] == [f"message {i}" for i in range(20)]
    assert echo.exitcode == 0


def test_get_times_out_with_none(redis_server):
    transport = new_transport(redis_server.url)

    started = time.monotonic()
    assert transport.mailbox("quiet").get(timeout=0.2) is None
    assert time.monotonic() - started >= 0.15


def test_keys_carry_prefix_hash_tag_and_ttl(redis_server):
    transport = new_transport(redis_server.url, prefix="ci", ttl=120, run_id="r-1.x")
    transport.mailbox("master").put(Shutdown("hello"))

    keys = redis_server.cli("--scan", "--pattern", "ci:{r-1.x}:*").split()
    assert keys == ["ci:{r-1.x}:mailbox:master"]
    ttl = int(redis_server.cli("ttl", keys[0]))
    assert 0 < ttl <= 120


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (b"garbage bytes", Rejection.NOT_A_MESSAGE),
        (pickle.dumps(Shutdown("unsigned")), Rejection.NOT_A_MESSAGE),
        (
            Signer(b"other secret", "run").seal(encode(Shutdown("x"))),
            Rejection.BAD_SIGNATURE,
        ),
        (Signer(SECRET, "other-run").seal(encode(Shutdown("x"))), Rejection.OTHER_RUN),
    ],
)
def test_bad_envelopes_are_counted_and_dropped(redis_server, envelope, reason):
    transport = new_transport(redis_server.url, run_id="run")
    mailbox = transport.mailbox("master")
    redis_server.cli("rpush", mailbox.key, last_argument=envelope)
    mailbox.put(Shutdown("genuine"))

    assert mailbox.get(timeout=5) is None
    assert mailbox.drops.total[reason.value] == 1
    assert mailbox.get(timeout=5).reason == "genuine"


def test_tampered_byte_fails_the_signature():
    signer = Signer(SECRET, "run")
    envelope = bytearray(signer.seal(b"payload bytes"))
    envelope[-3] ^= 0x01

    with pytest.raises(EnvelopeRejected) as caught:
        signer.open(bytes(envelope))

    assert caught.value.reason is Rejection.BAD_SIGNATURE


def test_large_result_is_stored_by_reference(redis_server):
    transport = new_transport(redis_server.url)
    small = b"s" * 100
    large = b"L" * (INLINE_RESULT_LIMIT + 1)

    assert transport.offload("Small", 1, small) == small
    ref = transport.offload("Large", 1, large)

    assert isinstance(ref, ResultRef)
    assert ref.size == len(large)
    assert transport.fetch(ref) == large


def test_master_claim_is_exclusive(redis_server):
    first = new_transport(redis_server.url, run_id="claimed")
    second = new_transport(redis_server.url, run_id="claimed")

    assert first.claim_master("pid 1 on a", lease=30) is None
    assert second.claim_master("pid 2 on b", lease=30) == "pid 1 on a"
    assert second.master_alive()


def test_master_lease_expires_unless_renewed(redis_server):
    transport = new_transport(redis_server.url)
    transport.claim_master("pid 1 on a", lease=0.3)
    transport.renew_master(lease=0.6)

    assert transport.master_alive()
    deadline = time.monotonic() + 5
    while transport.master_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not transport.master_alive()


def test_unreachable_redis_names_host_not_password():
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError) as caught:
        connect("redis://user:hunter2@127.0.0.1:1/0", timeout=2)

    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_stopped_server_closes_the_mailbox(tmp_path):
    server = RedisServer(tmp_path)
    transport = new_transport(server.url)
    transport.mailbox("master").put(Shutdown("before"))
    server.stop()

    with pytest.raises(MailboxClosedError, match=f"127.0.0.1:{server.port}"):
        transport.mailbox("master").put(Shutdown("after"))


def test_describe_url_hides_credentials():
    assert (
        describe_url("rediss://me:pw@cache.example:6380/2")
        == "rediss://cache.example:6380/2"
    )
    assert describe_url("unix:///run/redis.sock") == "unix:/run/redis.sock"
    assert describe_url("redis://localhost") == "redis://localhost:6379/0"
