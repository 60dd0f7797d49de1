"""Console output of a run: a line per change or a live table, then the summary."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .report import RunReport
from .state import Dispatch, ModuleStatus, StatusChange

STATUS_STYLES = {
    ModuleStatus.QUEUED: "dim",
    ModuleStatus.RUNNING: "cyan",
    ModuleStatus.SUCCEEDED: "green",
    ModuleStatus.FAILED: "bold red",
    ModuleStatus.SKIPPED: "yellow",
    ModuleStatus.CANCELLED: "magenta",
}
LIVE_ROWS = 20
"""Running modules shown in the live table; the rest are counted."""


class Reporter:
    """Receiver of a run's progress, called by the master; this base prints nothing."""

    def run_started(self, run_id: str, modules: int, workers: int | None) -> None:
        """Called once; `workers` is None when workers join over Redis."""

    def worker_joined(self, worker_id: str, capabilities: frozenset[str]) -> None:
        pass

    def module_started(self, dispatch: Dispatch) -> None:
        pass

    def status_changed(self, change: StatusChange, output: str) -> None:
        pass

    def run_finished(self, report: RunReport) -> None:
        pass


class LineReporter(Reporter):
    """Writes one line per state change, with a module's output grouped under it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def run_started(self, run_id: str, modules: int, workers: int | None) -> None:
        self._write(f"run {run_id}: {describe_start(modules, workers)}\n")

    def module_started(self, dispatch: Dispatch) -> None:
        where = _worker_label(dispatch.worker_id)
        attempt = f" (attempt {dispatch.attempt})" if dispatch.attempt > 1 else ""
        if dispatch.behind is None:
            self._line("started", f"{dispatch.module} on {where}{attempt}")
            return
        after = f", to run after {dispatch.behind}"
        self._line("sent ahead", f"{dispatch.module} to {where}{after}{attempt}")

    def status_changed(self, change: StatusChange, output: str) -> None:
        self._line(change.status.value, describe(change))
        block = format_block(output, change)
        if block:
            self._write(block)

    def run_finished(self, report: RunReport) -> None:
        console = Console(file=self.stream, width=120, color_system=None)
        print_summary(console, report)

    def _line(self, label: str, text: str) -> None:
        self._write(f"{time.strftime('%H:%M:%S')}  {label:<10} {text}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class LiveReporter(Reporter):
    """Keeps a live table of running modules, and prints each finished one above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._running: dict[str, tuple[str, float]] = {}
        self._queued: set[str] = set()
        self._counts: Counter[ModuleStatus] = Counter()
        self._total = 0
        self._lock = threading.Lock()
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=8,
            transient=True,
        )

    def run_started(self, run_id: str, modules: int, workers: int | None) -> None:
        self._total = modules
        self.console.print(f"run {run_id}: {describe_start(modules, workers)}")
        self._live.start()

    def module_started(self, dispatch: Dispatch) -> None:
        if dispatch.behind is not None:
            # It waits behind another module, so it stays among the queued.
            return
        with self._lock:
            self._queued.discard(dispatch.module)
            self._running[dispatch.module] = (dispatch.worker_id, time.monotonic())

    def status_changed(self, change: StatusChange, output: str) -> None:
        with self._lock:
            self._running.pop(change.module, None)
            self._queued.discard(change.module)
            if change.status is ModuleStatus.QUEUED:
                self._queued.add(change.module)
            if change.status.is_terminal:
                self._counts[change.status] += 1
        if not change.status.is_terminal:
            return

        line = Text(f"{change.status.value:<10} ", style=STATUS_STYLES[change.status])
        line.append(describe(change))
        self.console.print(line)
        block = format_block(output, change)
        if block:
            self.console.print(Text(block.rstrip("\n"), style="dim"))

    def run_finished(self, report: RunReport) -> None:
        self._live.stop()
        print_summary(self.console, report)

    def _render(self) -> Group:
        with self._lock:
            running = sorted(self._running.items(), key=lambda item: item[1][1])
            done = sum(self._counts.values())
            queued = len(self._queued)
        now = time.monotonic()
        table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
        table.add_column("running")
        table.add_column("worker")
        table.add_column("for", justify="right")
        for name, (worker_id, started) in running[:LIVE_ROWS]:
            table.add_row(name, worker_id, f"{now - started:.1f} s")
        hidden = len(running) - LIVE_ROWS
        heading = f"{done}/{self._total} done, {len(running)} running, {queued} queued"
        if hidden > 0:
            heading += f" ({hidden} not shown)"
        return Group(Text(heading, style="bold"), table)


def describe_start(modules: int, workers: int | None) -> str:
    counted = _count(modules, "module")
    if workers is None:
        return f"{counted}, on the workers that register over Redis"
    return f"{counted} on {_count(workers, 'worker')}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def describe(change: StatusChange) -> str:
    """Return the text after the status word of a change's line."""
    where = f" on {_worker_label(change.worker_id)}" if change.worker_id else ""
    if change.duration is not None:
        where = f" in {_seconds(change.duration)}{where}"
    if change.status is ModuleStatus.SKIPPED:
        return f"{change.module}: {change.detail}"
    if change.status is ModuleStatus.QUEUED and change.detail:
        return f"{change.module}: {change.detail}"
    if change.status is ModuleStatus.CANCELLED and change.detail:
        return f"{change.module}{where}: {change.detail}"
    return f"{change.module}{where}"


_CONTROL_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: cursor moves, clearing, colours
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, links
    r"|\x1b.?"  # any other escape
    r"|[\x00-\x08\x0b-\x1f\x7f]"  # control characters but tab and newline
)
"""Terminal escape and control sequences, which a module's output must not
send to the master's console: they could clear it or retitle it."""


def format_block(output: str, change: StatusChange) -> str:
    """Return a module's output, and its error when it failed, as an indented block."""
    text = _CONTROL_SEQUENCES.sub("", output)
    if change.status is ModuleStatus.FAILED and change.detail:
        if text and not text.endswith("\n"):
            text += "\n"
        text += change.detail
    if not text.strip():
        return ""
    return "".join(f"    │ {line}\n" for line in text.rstrip("\n").split("\n"))


def print_summary(console: Console, report: RunReport) -> None:
    """Print the table of modules and the totals of a finished run."""
    table = Table(
        title=f"run {report.run_id}",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for column in ("module", "status", "worker", "duration", "attempts"):
        justify = "right" if column in ("duration", "attempts") else "left"
        table.add_column(column, justify=justify)

    for module in report.modules.values():
        duration = "-" if module.duration is None else _seconds(module.duration)
        table.add_row(
            module.name,
            Text(module.status.value, style=STATUS_STYLES.get(module.status, "")),
            module.worker_id or "-",
            duration,
            str(module.attempts),
        )
    console.print(table)

    counts = Counter(module.status.value for module in report.modules.values())
    totals = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    console.print(
        f"{len(report.modules)} modules: {totals or 'none'}; "
        f"wall time {report.wall_time:.2f} s"
    )


def _seconds(duration: float) -> str:
    return f"{duration:.2f} s" if duration < 10 else f"{duration:.1f} s"


def _worker_label(worker_id: str | None) -> str:
    return "master" if worker_id == "master" else f"worker {worker_id}"
