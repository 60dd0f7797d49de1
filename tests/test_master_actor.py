"""The master actor around its state: the messages it sends, the lines it reports."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading

from pipeline_actors import ExitCode, Module
from pipeline_actors.actors.master import MasterActor
from pipeline_actors.console import LineReporter
from pipeline_actors.graph import Graph
from pipeline_actors.mailbox import MASTER, worker_address
from pipeline_actors.mailbox.local import LocalTransport
from pipeline_actors.messages import (
    Assign,
    Cancel,
    Outcome,
    RegisterWorker,
    ResultEvent,
    Welcome,
)
from pipeline_actors.settings import RunSettings


class First(Module):
    def execute(self, ctx):
        return 1


class Second(Module):
    def execute(self, ctx):
        return 2


def registration(worker_id: str) -> RegisterWorker:
    return RegisterWorker(worker_id, frozenset(), os.getpid(), socket.gethostname())


def success(assign: Assign, worker_id: str) -> ResultEvent:
    return ResultEvent(
        worker_id, assign.module, assign.attempt, Outcome.SUCCEEDED,
        None, None, "", 0.0, 0.01,
    )  # fmt: skip


class Lines:
    """A text stream that keeps each line a LineReporter writes, without its time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.append(" ".join(line.split()[1:]))

    def flush(self) -> None:
        pass


def test_closed_worker_mailbox_retries_on_another():
    context = multiprocessing.get_context("forkserver")
    transport = LocalTransport.create(["1", "2"], context)
    lines = Lines()
    master = MasterActor(
        Graph.build([First, Second]),
        {"First": First, "Second": Second},
        transport,
        RunSettings(run_id="master-test", cancel_grace=1.0),
        LineReporter(lines),
        expected_workers=2,
        min_workers=2,
    )
    reports = []
    thread = threading.Thread(target=lambda: reports.append(master.run()))
    thread.start()
    inbox = transport.mailbox(MASTER)
    first_inbox = transport.mailbox(worker_address("1"))
    second_inbox = transport.mailbox(worker_address("2"))
    try:
        inbox.put(registration("1"))
        assert isinstance(first_inbox.get(timeout=5), Welcome)
        # Worker 1 dies after its welcome: nothing reads its mailbox any more.
        first_inbox.close_reading_end()
        inbox.put(registration("2"))
        assert isinstance(second_inbox.get(timeout=5), Welcome)

        first = second_inbox.get(timeout=5)
        inbox.put(success(first, "2"))
        retry = second_inbox.get(timeout=5)
        inbox.put(success(retry, "2"))
        thread.join(timeout=10)
    finally:
        if thread.is_alive():
            inbox.put(Cancel("test over", origin="test"))
            thread.join(timeout=10)
        transport.close()

    assert (first.module, first.attempt) == ("Second", 1)
    assert (retry.module, retry.attempt) == ("First", 2)
    assert reports[0].exit_code is ExitCode.OK
    assert lines.lines == [
        "queued First",
        "queued Second",
        "started First on worker 1",
        "started Second on worker 2",
        "queued First: worker 1 was lost during attempt 1; retrying",
        "succeeded Second in 0.01 s on worker 2",
        "started First on worker 2 (attempt 2)",
        "succeeded First in 0.01 s on worker 2",
    ]
