"""The local mailbox: order, timeouts, large messages and a vanished receiver."""

from __future__ import annotations

import multiprocessing

import pytest

from pipeline_actors.mailbox import MailboxClosedError
from pipeline_actors.mailbox.local import LocalMailbox
from pipeline_actors.messages import Shutdown


@pytest.fixture
def context():
    return multiprocessing.get_context("forkserver")


def echo_back(inbox: LocalMailbox, outbox: LocalMailbox, count: int) -> None:
    for _ in range(count):
        outbox.put(inbox.get(timeout=10))


def test_messages_arrive_in_order_across_processes(context):
    inbox = LocalMailbox.create("in", context)
    outbox = LocalMailbox.create("out", context)
    echo = context.Process(target=echo_back, args=(inbox, outbox, 50))
    echo.start()

    for index in range(50):
        inbox.put(Shutdown(f"message {index}"))
    received = [outbox.get(timeout=10) for _ in range(50)]
    echo.join(timeout=10)

    assert [m.reason for m in received] == [f"message {i}" for i in range(50)]
    assert echo.exitcode == 0


def test_get_returns_none_after_timeout(context):
    mailbox = LocalMailbox.create("quiet", context)

    assert mailbox.get(timeout=0.05) is None


def test_large_message_passes_whole(context):
    inbox = LocalMailbox.create("in", context)
    outbox = LocalMailbox.create("out", context)
    echo = context.Process(target=echo_back, args=(inbox, outbox, 1))
    echo.start()

    payload = "x" * (20 * 1024 * 1024)
    inbox.put(Shutdown(payload))
    received = outbox.get(timeout=30)
    echo.join(timeout=10)

    assert received.reason == payload


def test_put_fails_when_the_receiver_is_gone(context):
    mailbox = LocalMailbox.create("orphan", context)
    sender = mailbox.sending_end()
    mailbox.close_reading_end()

    with pytest.raises(MailboxClosedError, match="orphan has no receiver"):
        sender.put(Shutdown("anyone?"))


def test_unreadable_message_is_dropped(context):
    mailbox = LocalMailbox.create("noisy", context)
    mailbox._writer.send_bytes(b"not a pickle")
    mailbox.put(Shutdown("after the noise"))

    assert mailbox.get(timeout=1) is None
    assert mailbox.get(timeout=1).reason == "after the noise"
