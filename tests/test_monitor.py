"""The heartbeat monitor: who counts as lost, and when."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipeline_actors.actors import monitor
from pipeline_actors.actors.monitor import HeartbeatMonitor
from pipeline_actors.mailbox import MASTER, MONITOR
from pipeline_actors.messages import (
    HeartbeatEvent,
    Shutdown,
    WatchWorker,
    WorkerLostEvent,
)
from pipeline_actors.settings import RunSettings

SETTINGS = RunSettings(
    run_id="monitor-test",
    heartbeat_interval=1.0,
    heartbeat_timeout=10.0,
    supervisor_pid=os.getpid(),
)


def beat(worker_id: str, sequence: int = 1) -> HeartbeatEvent:
    return HeartbeatEvent(worker_id, sequence, None, 0.0, 0)


class ScriptedMailbox:
    """A mailbox whose `get_many` returns prepared batches, then nothing."""

    def __init__(self, batches: list[list[object]]) -> None:
        self.batches = list(batches)
        self.sent: list[object] = []

    def get_many(self, timeout: float | None, limit: int) -> list[object]:
        return self.batches.pop(0) if self.batches else [Shutdown("script over")]

    def put(self, message: object) -> None:
        self.sent.append(message)


class ScriptedTransport:
    def __init__(self, inbox: ScriptedMailbox, master: ScriptedMailbox) -> None:
        self._mailboxes = {MONITOR: inbox, MASTER: master}

    def mailbox(self, name: str) -> ScriptedMailbox:
        return self._mailboxes[name]


def slow_clock(step: float) -> Iterator[float]:
    """Yield times that advance by `step` on every reading, like a starved process."""
    now = 0.0
    while True:
        now += step
        yield now


def run_monitor(monkeypatch, batches, step: float) -> list[object]:
    """Run a monitor over `batches` and return what it sent the master."""
    clock = slow_clock(step)
    monkeypatch.setattr(monitor.time, "monotonic", lambda: next(clock))
    inbox, master = ScriptedMailbox(batches), ScriptedMailbox([])
    code = HeartbeatMonitor(ScriptedTransport(inbox, master), SETTINGS).run()
    assert code == 0
    return master.sent


def test_backlog_of_heartbeats_loses_nobody(monkeypatch):
    # Each clock reading is 6 s after the previous one, as when the monitor
    # gets the CPU only now and then, and both heartbeats waited meanwhile.
    batches = [[beat("1"), beat("2")], [beat("1", 2), beat("2", 2)]]

    sent = run_monitor(monkeypatch, batches, step=6.0)

    assert sent == []


def test_silent_worker_is_reported_once(monkeypatch):
    batches = [[beat("1"), beat("2")], [beat("1", 2)], [beat("1", 3)], []]

    sent = run_monitor(monkeypatch, batches, step=6.0)

    assert len(sent) == 1
    assert isinstance(sent[0], WorkerLostEvent)
    assert sent[0].worker_id == "2"
    assert sent[0].silent_for > SETTINGS.heartbeat_timeout


def test_heartbeat_after_loss_changes_nothing():
    watcher = HeartbeatMonitor(
        ScriptedTransport(ScriptedMailbox([]), ScriptedMailbox([])), SETTINGS
    )
    watcher.beat_received(beat("1"), 0.0)
    lost = watcher.silent_workers(11.0)

    watcher.beat_received(beat("1", 2), 12.0)

    assert [event.worker_id for event in lost] == ["1"]
    assert watcher.silent_workers(30.0) == []
    assert watcher.last_seen["1"] == 0.0


def test_watched_worker_without_heartbeat_is_lost(monkeypatch):
    batches = [[WatchWorker("1"), beat("2")], [beat("2", 2)], [beat("2", 3)]]

    sent = run_monitor(monkeypatch, batches, step=6.0)

    assert [event.worker_id for event in sent] == ["1"]


def test_watching_again_tracks_a_restarted_worker():
    watcher = HeartbeatMonitor(
        ScriptedTransport(ScriptedMailbox([]), ScriptedMailbox([])), SETTINGS
    )
    watcher.watch("1", 0.0)
    first_loss = watcher.silent_workers(11.0)

    watcher.watch("1", 12.0)

    assert [event.worker_id for event in first_loss] == ["1"]
    assert watcher.silent_workers(20.0) == []
    assert [event.worker_id for event in watcher.silent_workers(23.0)] == ["1"]
