"""Benchmark runs of pipeline_actors over Redis against raw Redis round trips.

Usage:
    python scripts/bench_redis.py [--quick] [--repeat N] [--json PATH] [--profile]

The benchmark starts its own redis-server on a free loopback port, without
persistence, and stops it at the end. It measures a raw RPUSH/BLPOP ping-pong
between two processes, then runs the workloads of bench_local.py through
`run_master` with four local workers that talk only through that Redis. It
counts the Redis commands of each run from INFO commandstats.

Each comparison is a ratio of two figures measured side by side in this one
run, because absolute timings on a small or shared machine drift between
runs. This is a benchmark, not a test: it reports whether each target was met
and never fails on a timing. It stops with an error only when a run fails or
does not finish within --timeout seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import json
import math
import multiprocessing
import os
import pickle
import platform
import pstats
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import redis

import pipeline_actors
from pipeline_actors import Module, ModuleStatus, RunReport
from pipeline_actors.console import Reporter
from pipeline_actors.distributed import InstanceOptions, run_master
from pipeline_actors.mailbox import decode, encode
from pipeline_actors.mailbox.redis import RedisSettings, RedisTransport
from pipeline_actors.mailbox.signing import Signer
from pipeline_actors.messages import Assign, Outcome, ResultEvent
from pipeline_actors.runtime import default_start_method
from pipeline_actors.settings import RunSettings
from pipeline_actors.state import Dispatch, StatusChange

from workloads import (
    SLEEP_SECONDS,
    chain_modules,
    diamond_modules,
    independent_modules,
)

WORKERS = 4

PING_PAYLOAD = bytes(150)
"""Raw round-trip message; a signed `Assign` is about 120 bytes, a `ResultEvent` 190."""

WARMUP_ROUND_TRIPS = 50
SERVER_START_TIMEOUT = 10.0
SERVER_START_ATTEMPTS = 3
SERVER_STOP_TIMEOUT = 10.0
PROFILE_TOP_FUNCTIONS = 25

CHAIN_MAX_RATIO = 2.5
"""Target: a chain hop costs at most this many raw Redis round trips."""

FANOUT_MIN_MODULES_PER_ROUND_TRIP = 0.5
"""Target: the fan-out finishes at least this many modules per raw round trip."""

BENCHMARK_COMMANDS = frozenset({"info"})
"""Commands that the benchmark sends to read the counts, which the counts leave out."""


class Timing(NamedTuple):
    """When and where one module ran."""

    started_at: float
    """Wall-clock start, from `time.time()` in the worker that ran it."""
    duration: float
    """Seconds, from `time.perf_counter()`."""
    worker: str


@dataclass(frozen=True)
class Sizes:
    """Workload sizes and the number of repetitions of each measurement."""

    repeat: int
    fanout: int
    small_fanout: int
    chain: int
    diamond_width: int
    round_trips: int


FULL_SIZES = Sizes(
    repeat=5,
    fanout=2000,
    small_fanout=500,
    chain=300,
    diamond_width=200,
    round_trips=2000,
)
QUICK_SIZES = Sizes(
    repeat=1,
    fanout=200,
    small_fanout=50,
    chain=50,
    diamond_width=40,
    round_trips=200,
)


def end_of(timing: Timing) -> float:
    return timing.started_at + timing.duration


def span(timings: Sequence[Timing]) -> float:
    """Return seconds from the earliest start to the latest end."""
    first_start = min(timing.started_at for timing in timings)
    return max(end_of(timing) for timing in timings) - first_start


def gaps(timings: Sequence[Timing]) -> list[float]:
    """Return the seconds from each module's end to the next one's start, in order."""
    return [
        following.started_at - end_of(timing)
        for timing, following in itertools.pairwise(timings)
    ]


def report_timings(report: RunReport, names: Sequence[str]) -> list[Timing]:
    timings = []
    for name in names:
        module = report.modules[name]
        timings.append(Timing(module.started_at, module.duration, module.worker_id))
    return timings


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedisServer:
    """A redis-server that only this benchmark uses, on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            msg = "redis-server is not installed (Debian: apt-get install redis-server)"
            raise RuntimeError(msg)

        # Another program may take the free port between the probe and the
        # server's bind, so a server that exits at once gets a new port.
        for _ in range(SERVER_START_ATTEMPTS):
            self.port = free_loopback_port()
            self.process = self._launch(executable)
            if self._wait_until_ready():
                return
            self.stop()
        log = (self.folder / "redis.log").read_text(errors="replace")
        msg = (
            f"redis-server did not start after {SERVER_START_ATTEMPTS} attempts; "
            f"its log ends with:\n{log[-2000:]}"
        )
        raise RuntimeError(msg)

    def _launch(self, executable: str) -> subprocess.Popen[bytes]:
        with open(self.folder / "redis.log", "ab") as log:
            return subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _wait_until_ready(self) -> bool:
        client = redis.Redis("127.0.0.1", self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SERVER_STOP_TIMEOUT)


@contextmanager
def private_redis_server() -> Iterator[PrivateRedisServer]:
    with tempfile.TemporaryDirectory(prefix="bench_redis_") as folder:
        server = PrivateRedisServer(Path(folder))
        try:
            server.start()
            yield server
        finally:
            server.stop()


def start_context() -> BaseContext:
    context = multiprocessing.get_context(default_start_method())
    # The same preload as the library's supervisor, so whichever process
    # starts the forkserver first, the workers start from the same server.
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(["pipeline_actors.runtime"])
    return context


def echo_over_redis(
    url: str, requests: str, replies: str, count: int, timeout: float
) -> None:
    client = redis.Redis.from_url(url)
    for _ in range(count):
        item = client.blpop([requests], timeout=timeout)
        if item is None:
            return
        client.rpush(replies, item[1])


def echo_over_mailboxes(
    settings: RedisSettings, requests: str, replies: str, count: int, timeout: float
) -> None:
    transport = RedisTransport(settings)
    inbox, outbox = transport.mailbox(requests), transport.mailbox(replies)
    try:
        for _ in range(count):
            message = inbox.get(timeout=timeout)
            if message is None:
                return
            outbox.put(message)
    finally:
        transport.close()


@contextmanager
def echo_process(target: Any, args: tuple, timeout: float) -> Iterator[None]:
    """Run `target(*args)` in a second process while the block runs."""
    echo = start_context().Process(target=target, args=args, daemon=True)
    echo.start()
    try:
        yield
    finally:
        echo.join(timeout=timeout)
        if echo.is_alive():
            echo.terminate()
            echo.join(timeout=timeout)


def raw_round_trip_us(url: str, count: int, timeout: float) -> float:
    """Return the median microseconds of an RPUSH/BLPOP ping-pong with redis-py."""
    requests, replies = f"bench:raw:{uuid.uuid4().hex}", f"bench:raw:{uuid.uuid4().hex}"
    total = WARMUP_ROUND_TRIPS + count
    client = redis.Redis.from_url(url)
    samples = []
    args = (url, requests, replies, total, timeout)
    with contextlib.closing(client), echo_process(echo_over_redis, args, timeout):
        for _ in range(total):
            started = time.perf_counter()
            client.rpush(requests, PING_PAYLOAD)
            if client.blpop([replies], timeout=timeout) is None:
                raise TimeoutError(f"raw Redis echo timed out after {timeout:g} s")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples[WARMUP_ROUND_TRIPS:]) * 1e6


def mailbox_round_trip_us(url: str, secret: bytes, count: int, timeout: float) -> float:
    """Return the median microseconds of an `Assign` sent to an echo and back.

    Both sides use `RedisMailbox`, so each leg adds what every message of a
    run pays on top of raw Redis: cloudpickle, the HMAC signature, PEXPIRE.
    """
    settings = RedisSettings(url, f"bench-mailbox-{uuid.uuid4().hex[:8]}", secret)
    transport = RedisTransport(settings)
    requests, replies = transport.mailbox("requests"), transport.mailbox("replies")
    message = Assign("task0", 1, {})
    total = WARMUP_ROUND_TRIPS + count
    samples = []
    args = (settings, "requests", "replies", total, timeout)
    with (
        contextlib.closing(transport),
        echo_process(echo_over_mailboxes, args, timeout),
    ):
        for _ in range(total):
            started = time.perf_counter()
            requests.put(message)
            if replies.get(timeout=timeout) is None:
                raise TimeoutError(f"RedisMailbox echo timed out after {timeout:g} s")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples[WARMUP_ROUND_TRIPS:]) * 1e6


def command_stats(client: redis.Redis) -> dict[str, dict[str, float]]:
    """Return {command: {"calls": n, "usec": server microseconds}} from INFO."""
    stats = {}
    for key, values in client.info("commandstats").items():
        command = key.removeprefix("cmdstat_")
        if command not in BENCHMARK_COMMANDS:
            stats[command] = {"calls": values["calls"], "usec": values["usec"]}
    return stats


def stats_delta(before: dict, after: dict, figure: str) -> Counter[str]:
    delta: Counter[str] = Counter()
    for command, values in after.items():
        change = values[figure] - before.get(command, {}).get(figure, 0)
        if change:
            delta[command] = change
    return delta


@contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """Send this process SIGINT after `seconds`, which makes the master cancel."""
    timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far by each process of a run, at one moment."""

    wall: float
    """`time.perf_counter()` when the snapshot was taken."""
    master: float
    redis: float
    actors: dict[int, float]
    """By pid: the workers, the monitor, the canceller and the forkserver."""


def take_cpu_snapshot(redis_pid: int) -> CpuSnapshot:
    actors = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            actors[child.pid] = times.user + times.system
    redis_cpu = actors.pop(redis_pid, 0.0)
    return CpuSnapshot(time.perf_counter(), time.process_time(), redis_cpu, actors)


class CpuRecorder(Reporter):
    """Reporter that takes a CPU snapshot at the first dispatch and at the last end.

    Between the two, every process of the run does only the run's work, so
    their CPU time divided by the modules is the cost of a module once the
    processes have started. psutil reads the CPU time of other processes in
    clock ticks, 10 ms on Linux, so short runs get coarse figures.
    """

    def __init__(self, module_count: int, redis_pid: int) -> None:
        self.module_count = module_count
        self.redis_pid = redis_pid
        self.ended = 0
        self.first: CpuSnapshot | None = None
        self.last: CpuSnapshot | None = None

    def module_started(self, dispatch: Dispatch) -> None:
        if self.first is None:
            self.first = take_cpu_snapshot(self.redis_pid)

    def status_changed(self, change: StatusChange, output: str) -> None:
        if change.status.is_terminal:
            self.ended += 1
            if self.ended == self.module_count:
                self.last = take_cpu_snapshot(self.redis_pid)

    def figures(self) -> dict[str, float]:
        """Return CPU microseconds per module between the snapshots, by process."""
        first, last = self.first, self.last
        actors = sum(
            cpu - first.actors[pid]
            for pid, cpu in last.actors.items()
            if pid in first.actors
        )
        master, redis_cpu = last.master - first.master, last.redis - first.redis
        wall = last.wall - first.wall
        total = master + redis_cpu + actors
        return {
            "routing_master_cpu_us_per_module": master / self.module_count * 1e6,
            "routing_actors_cpu_us_per_module": actors / self.module_count * 1e6,
            "routing_redis_cpu_us_per_module": redis_cpu / self.module_count * 1e6,
            "routing_cpu_us_per_module": total / self.module_count * 1e6,
            "routing_cpu_utilization": total / (wall * (os.cpu_count() or 1)),
        }


@dataclass(frozen=True)
class RedisRun:
    """A finished run over Redis with what the benchmark measured around it."""

    report: RunReport
    elapsed: float
    """Seconds of the whole `run_master` call, worker start and stop included."""
    master_cpu: float
    """CPU seconds this process, the master, used during the call."""
    called_at: float
    returned_at: float
    """Wall-clock times of the call and of its return, from `time.time()`."""
    redis_cpu: float
    """CPU seconds redis-server used during the call."""
    commands: Counter[str]
    """Redis commands of the whole run, by command name."""
    redis_usec: float
    """Microseconds redis-server spent executing those commands."""
    routing_cpu: dict[str, float]
    """CPU per module from the first dispatch to the last module's end."""


def run_over_redis(
    modules: Sequence[type[Module]],
    server: PrivateRedisServer,
    secret: bytes,
    timeout: float,
    profiler: cProfile.Profile | None = None,
) -> RedisRun:
    """Run `modules` as master with local workers over `server`, under a new run id."""
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    transport = RedisTransport(RedisSettings(server.url, run_id, secret))
    # Routing waits for every worker, so that no worker joins in the middle
    # of the steady state.
    options = InstanceOptions(
        local_workers=WORKERS, capabilities=frozenset(), min_workers=WORKERS
    )
    recorder = CpuRecorder(len(modules), server.process.pid)
    stats_client = server.client()
    before, redis_cpu_before = command_stats(stats_client), server.cpu_seconds()
    try:
        with interrupt_after(timeout):
            cpu_started = time.process_time()
            called_at, started = time.time(), time.perf_counter()
            with profiling(profiler):
                report = run_master(
                    modules, transport, RunSettings(run_id=run_id), options, recorder
                )
            elapsed = time.perf_counter() - started
            master_cpu = time.process_time() - cpu_started
            returned_at = time.time()
    finally:
        transport.close()
    after, redis_cpu_after = command_stats(stats_client), server.cpu_seconds()
    stats_client.close()

    check_succeeded(report, elapsed, timeout)
    return RedisRun(
        report,
        elapsed,
        master_cpu,
        called_at,
        returned_at,
        redis_cpu_after - redis_cpu_before,
        stats_delta(before, after, "calls"),
        sum(stats_delta(before, after, "usec").values()),
        recorder.figures(),
    )


@contextmanager
def profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def check_succeeded(report: RunReport, elapsed: float, timeout: float) -> None:
    if report.ok:
        return
    succeeded = len(report.with_status(ModuleStatus.SUCCEEDED))
    msg = (
        f"benchmark run {report.run_id} ended with {report.exit_code.name} "
        f"after {elapsed:.1f} s (timeout {timeout:g} s): "
        f"{len(report.modules) - succeeded} of {len(report.modules)} modules "
        f"did not succeed"
    )
    raise RuntimeError(msg)


@dataclass
class Measurement:
    """The figures of one workload in one repetition, and its commands."""

    figures: dict[str, float]
    commands_per_module: dict[str, float] = field(default_factory=dict)


def cost_figures(result: RedisRun, count: int) -> dict[str, float]:
    """Return the start, stop, CPU and Redis cost of one run, per module."""
    timings = report_timings(result.report, list(result.report.modules))
    first_start = min(timing.started_at for timing in timings)
    last_end = max(end_of(timing) for timing in timings)
    return {
        "first_start_after_call_s": first_start - result.called_at,
        "return_after_last_end_s": result.returned_at - last_end,
        "commands_per_module": sum(result.commands.values()) / count,
        "commands": sum(result.commands.values()),
        "redis_usec_per_module": result.redis_usec / count,
        "redis_cpu_us_per_module": result.redis_cpu / count * 1e6,
        "master_cpu_us_per_module": result.master_cpu / count * 1e6,
        **result.routing_cpu,
        "run_call_s": result.elapsed,
    }


def per_module(commands: Counter[str], count: int) -> dict[str, float]:
    return {command: calls / count for command, calls in commands.items()}


def redis_fanout(
    count: int, server: PrivateRedisServer, secret: bytes, timeout: float
) -> Measurement:
    modules = independent_modules(count)
    result = run_over_redis(modules, server, secret, timeout)
    steady = span(report_timings(result.report, [m.name for m in modules]))
    figures = {
        "steady_per_s": count / steady,
        "end_to_end_per_s": count / result.elapsed,
        "steady_s": steady,
        **cost_figures(result, count),
    }
    return Measurement(figures, per_module(result.commands, count))


def redis_chain(
    length: int, server: PrivateRedisServer, secret: bytes, timeout: float
) -> Measurement:
    modules = chain_modules(length)
    result = run_over_redis(modules, server, secret, timeout)
    hops = gaps(report_timings(result.report, [m.name for m in modules]))
    figures = {"hop_us": statistics.median(hops) * 1e6, **cost_figures(result, length)}
    return Measurement(figures, per_module(result.commands, length))


def diamond_ideal(width: int) -> float:
    return SLEEP_SECONDS * (2 + math.ceil(width / WORKERS))


def redis_diamond(
    width: int, server: PrivateRedisServer, secret: bytes, timeout: float
) -> Measurement:
    modules = diamond_modules(width)
    result = run_over_redis(modules, server, secret, timeout)
    makespan = span(report_timings(result.report, [m.name for m in modules]))
    figures = {
        "makespan_ms": makespan * 1e3,
        "efficiency": diamond_ideal(width) / makespan,
        **cost_figures(result, len(modules)),
    }
    return Measurement(figures, per_module(result.commands, len(modules)))


def measure_repetition(
    server: PrivateRedisServer, secret: bytes, sizes: Sizes, timeout: float
) -> dict[str, Measurement]:
    """Measure every workload once, each beside its raw Redis floor."""
    url = server.url
    raw_us = raw_round_trip_us(url, sizes.round_trips, timeout)
    mailbox_us = mailbox_round_trip_us(url, secret, sizes.round_trips, timeout)
    return {
        "round_trip_raw": Measurement({"us": raw_us}),
        "round_trip_mailbox": Measurement({"us": mailbox_us}),
        "fanout": redis_fanout(sizes.fanout, server, secret, timeout),
        "fanout_small": redis_fanout(sizes.small_fanout, server, secret, timeout),
        "chain": redis_chain(sizes.chain, server, secret, timeout),
        "diamond": redis_diamond(sizes.diamond_width, server, secret, timeout),
    }


def median_and_values(values: list[float]) -> dict[str, float | list[float]]:
    return {"median": statistics.median(values), "values": values}


def summarize(repetitions: list[dict[str, Measurement]]) -> dict[str, dict]:
    """Return, for every figure and command count, its median and each value.

    A command missing from a repetition, such as a health-check PING, counts 0.
    """
    summary = {}
    for workload, first in repetitions[0].items():
        measurements = [repetition[workload] for repetition in repetitions]
        figures = {
            figure: median_and_values([m.figures[figure] for m in measurements])
            for figure in first.figures
        }
        commands = sorted({c for m in measurements for c in m.commands_per_module})
        per_command = {
            command: median_and_values(
                [m.commands_per_module.get(command, 0.0) for m in measurements]
            )
            for command in commands
        }
        summary[workload] = {"figures": figures, "commands_per_module": per_command}
    return summary


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    workload: str
    figure: str
    floor: str
    ratio: float | None
    target: str
    met: bool | None


def median_of(summary: dict, workload: str, figure: str) -> float:
    return summary[workload]["figures"][figure]["median"]


def fanout_rows(summary: dict, sizes: Sizes, raw_us: float) -> list[Row]:
    steady = median_of(summary, "fanout", "steady_per_s")
    end_to_end = median_of(summary, "fanout", "end_to_end_per_s")
    small_steady = median_of(summary, "fanout_small", "steady_per_s")
    per_round_trip = steady * raw_us / 1e6
    return [
        Row(
            f"fan-out {sizes.fanout}, steady state",
            f"{steady:,.0f} modules/s",
            f"{1e6 / raw_us:,.0f} raw round trips/s",
            per_round_trip,
            f">= {FANOUT_MIN_MODULES_PER_ROUND_TRIP}",
            per_round_trip >= FANOUT_MIN_MODULES_PER_ROUND_TRIP,
        ),
        Row(
            f"fan-out {sizes.fanout}, end to end",
            f"{end_to_end:,.0f} modules/s",
            f"{steady:,.0f} modules/s steady state",
            end_to_end / steady,
            "-",
            None,
        ),
        Row(
            f"fan-out {sizes.small_fanout}, steady state",
            f"{small_steady:,.0f} modules/s",
            f"{1e6 / raw_us:,.0f} raw round trips/s",
            small_steady * raw_us / 1e6,
            "-",
            None,
        ),
    ]


def chain_rows(summary: dict, sizes: Sizes, raw_us: float) -> list[Row]:
    hop = median_of(summary, "chain", "hop_us")
    mailbox_us = median_of(summary, "round_trip_mailbox", "us")
    return [
        Row(
            f"chain {sizes.chain}, hop",
            f"{hop:,.0f} us",
            f"{raw_us:,.0f} us raw Redis round trip",
            hop / raw_us,
            f"<= {CHAIN_MAX_RATIO}",
            hop / raw_us <= CHAIN_MAX_RATIO,
        ),
        Row(
            f"chain {sizes.chain}, hop",
            f"{hop:,.0f} us",
            f"{mailbox_us:,.0f} us RedisMailbox round trip",
            hop / mailbox_us,
            "-",
            None,
        ),
        Row(
            "RedisMailbox round trip",
            f"{mailbox_us:,.0f} us",
            f"{raw_us:,.0f} us raw Redis round trip",
            mailbox_us / raw_us,
            "-",
            None,
        ),
    ]


def other_rows(summary: dict, sizes: Sizes) -> list[Row]:
    makespan = median_of(summary, "diamond", "makespan_ms")
    efficiency = median_of(summary, "diamond", "efficiency")
    big = median_of(summary, "fanout", "commands_per_module")
    small = median_of(summary, "fanout_small", "commands_per_module")
    return [
        Row(
            f"diamond 1-{sizes.diamond_width}-1, efficiency",
            f"{makespan:,.0f} ms makespan",
            f"{diamond_ideal(sizes.diamond_width) * 1e3:,.0f} ms ideal",
            efficiency,
            "-",
            None,
        ),
        Row(
            f"fan-out {sizes.fanout}, Redis commands",
            f"{big:.2f} per module",
            f"{small:.2f} per module at fan-out {sizes.small_fanout}",
            big / small,
            "-",
            None,
        ),
    ]


def build_rows(summary: dict, sizes: Sizes) -> list[Row]:
    raw_us = median_of(summary, "round_trip_raw", "us")
    return [
        *fanout_rows(summary, sizes, raw_us),
        *chain_rows(summary, sizes, raw_us),
        *other_rows(summary, sizes),
    ]


def format_columns(lines: list[tuple[str, ...]]) -> str:
    widths = [
        max(len(line[column]) for line in lines) for column in range(len(lines[0]))
    ]
    rendered = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def format_table(rows: list[Row]) -> str:
    lines = [("workload", "figure", "floor or alternative", "ratio", "target", "met")]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        met = {None: "-", True: "yes", False: "NO"}[row.met]
        lines.append((row.workload, row.figure, row.floor, ratio, row.target, met))
    return format_columns(lines)


RUN_WORKLOADS = ("fanout_small", "fanout", "chain", "diamond")


def format_commands(summary: dict, sizes: Sizes) -> str:
    """Return a table of Redis commands per module, by command and workload."""
    titles = {
        "fanout_small": f"fan-out {sizes.small_fanout}",
        "fanout": f"fan-out {sizes.fanout}",
        "chain": f"chain {sizes.chain}",
        "diamond": f"diamond 1-{sizes.diamond_width}-1",
    }
    commands = sorted(
        {c for w in RUN_WORKLOADS for c in summary[w]["commands_per_module"]}
    )
    lines = [("command", *(titles[w] for w in RUN_WORKLOADS))]
    for command in [*commands, "total"]:
        lines.append(
            (command, *(command_cell(summary, w, command) for w in RUN_WORKLOADS))
        )
    return format_columns(lines)


def command_cell(summary: dict, workload: str, command: str) -> str:
    if command == "total":
        return f"{median_of(summary, workload, 'commands_per_module'):.3f}"
    counts = summary[workload]["commands_per_module"]
    return f"{counts[command]['median']:.3f}" if command in counts else "0"


def marginal_commands(summary: dict, sizes: Sizes) -> tuple[float, float]:
    """Return (commands per added module, fixed commands) from the two fan-outs."""
    big = median_of(summary, "fanout", "commands")
    small = median_of(summary, "fanout_small", "commands")
    per_module = (big - small) / (sizes.fanout - sizes.small_fanout)
    return per_module, small - per_module * sizes.small_fanout


def print_costs(summary: dict, sizes: Sizes) -> None:
    print("Redis commands per module (median over repetitions):")
    print(format_commands(summary, sizes))
    per_module, fixed = marginal_commands(summary, sizes)
    print(
        f"Between fan-out {sizes.small_fanout} and {sizes.fanout}: "
        f"{per_module:.2f} commands per added module, about {fixed:,.0f} fixed "
        "per run (registration, welcome, heartbeats, shutdown)."
    )
    print()
    print(
        "CPU per module from the first dispatch to the last module's end, "
        "median over repetitions:"
    )
    lines = [("workload", "master", "actors", "redis-server", "total", "CPUs busy")]
    for workload in RUN_WORKLOADS:
        lines.append(routing_cpu_line(summary, workload))
    print(format_columns(lines))
    print(
        "actors: the workers, the heartbeat monitor and the canceller; CPUs "
        "busy: the total over the window's wall time and every CPU."
    )
    print()


def routing_cpu_line(summary: dict, workload: str) -> tuple[str, ...]:
    def microseconds(part: str) -> str:
        value = median_of(summary, workload, f"routing_{part}cpu_us_per_module")
        return f"{value:,.0f} us"

    utilization = median_of(summary, workload, "routing_cpu_utilization")
    return (
        workload,
        microseconds("master_"),
        microseconds("actors_"),
        microseconds("redis_"),
        microseconds(""),
        f"{utilization:.0%}",
    )


def print_spread(summary: dict) -> None:
    """Print every figure's median and its value in each repetition."""
    print("Medians and per-repetition values:")
    for workload, parts in summary.items():
        for figure, stats in parts["figures"].items():
            values = ", ".join(f"{value:,.4g}" for value in stats["values"])
            print(f"  {workload}.{figure}: {stats['median']:,.4g}  [{values}]")


PACKAGE_MARKERS = (
    ("/site-packages/redis/", "redis-py"),
    ("/site-packages/cloudpickle/", "cloudpickle"),
    ("/site-packages/psutil/", "psutil"),
    ("/site-packages/loguru/", "loguru"),
    ("/pipeline_actors/", "pipeline_actors"),
)


def package_of(path: str) -> str:
    if path == "~":
        return "built-in functions (socket I/O, pickle, hmac, isinstance...)"
    for marker, package in PACKAGE_MARKERS:
        if marker in path:
            return package
    return "standard library"


def function_label(path: str, line: int, function: str) -> str:
    parts = Path(path).parts
    if "pipeline_actors" in parts:
        start = len(parts) - 1 - parts[::-1].index("pipeline_actors")
        return f"{'/'.join(parts[start:])}:{line}({function})"
    return f"{Path(path).name}:{line}({function})"


def profile_rows(stats: pstats.Stats, count: int) -> list[dict[str, Any]]:
    rows = []
    for (path, line, function), entry in stats.stats.items():
        _, calls, own, cumulative, _ = entry
        rows.append(
            {
                "function": function_label(path, line, function),
                "package": package_of(path),
                "calls_per_module": calls / count,
                "own_us_per_module": own / count * 1e6,
                "cumulative_us_per_module": cumulative / count * 1e6,
            }
        )
    return rows


def profile_fanout(
    count: int, server: PrivateRedisServer, secret: bytes, timeout: float
) -> dict[str, Any]:
    """Profile the master during one fan-out; return where its CPU time goes.

    The profiler counts CPU time of the thread running `MasterActor.run`, so
    time spent blocked in BLPOP is left out. It adds its own overhead to every
    call it records, so compare its figures with each other, not with the
    unprofiled CPU figures.
    """
    profiler = cProfile.Profile(time.thread_time)
    run_over_redis(independent_modules(count), server, secret, timeout, profiler)
    stats = pstats.Stats(profiler)
    rows = profile_rows(stats, count)

    by_package: Counter[str] = Counter()
    for row in rows:
        by_package[row["package"]] += row["own_us_per_module"]
    library = [row for row in rows if row["package"] == "pipeline_actors"]
    library.sort(key=lambda row: row["cumulative_us_per_module"], reverse=True)
    rows.sort(key=lambda row: row["own_us_per_module"], reverse=True)
    return {
        "total_us_per_module": stats.total_tt / count * 1e6,
        "own_us_per_module_by_package": dict(by_package.most_common()),
        "library_by_cumulative": library[:PROFILE_TOP_FUNCTIONS],
        "by_own_time": rows[:PROFILE_TOP_FUNCTIONS],
    }


def format_profile_rows(rows: list[dict[str, Any]]) -> str:
    lines = [("function", "calls", "own us", "cumulative us")]
    for row in rows:
        lines.append(
            (
                row["function"],
                f"{row['calls_per_module']:.2f}",
                f"{row['own_us_per_module']:.1f}",
                f"{row['cumulative_us_per_module']:.1f}",
            )
        )
    return format_columns(lines)


def print_profile(profile: dict[str, Any], count: int) -> None:
    total = profile["total_us_per_module"]
    print(
        f"Master thread CPU under cProfile, fan-out {count}: {total:,.0f} us "
        "per module. Own time by package:"
    )
    for package, own in profile["own_us_per_module_by_package"].items():
        print(f"  {package}: {own:,.0f} us ({own / total:.0%})")
    print()
    print("pipeline_actors functions by cumulative time, per module:")
    print(format_profile_rows(profile["library_by_cumulative"]))
    print()
    print("All functions by own time, per module:")
    print(format_profile_rows(profile["by_own_time"]))
    print()


def time_per_call(
    operation: Callable[[], object], count: int, warmup: int = WARMUP_ROUND_TRIPS
) -> float:
    """Return the median microseconds of one call of `operation`, after a warm-up.

    The median is less sensitive than the mean to the calls that other
    processes on a busy machine delay.
    """
    for _ in range(warmup):
        operation()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def sample_result() -> ResultEvent:
    return ResultEvent(
        "0.1", "task0", 1, Outcome.SUCCEEDED, encode(None), None, "", time.time(), 0.0
    )


def serialization_costs(signer: Signer, count: int) -> dict[str, float]:
    assign, result = Assign("task0", 1, {}), sample_result()
    payload = encode(assign)
    envelope = signer.seal(payload)
    return {
        "cloudpickle.dumps(Assign)": time_per_call(lambda: encode(assign), count),
        "pickle.dumps(Assign)": time_per_call(
            lambda: pickle.dumps(assign, protocol=5), count
        ),
        "cloudpickle.dumps(ResultEvent)": time_per_call(lambda: encode(result), count),
        "cloudpickle.loads(Assign)": time_per_call(lambda: decode(payload), count),
        "Signer.seal(Assign)": time_per_call(lambda: signer.seal(payload), count),
        "Signer.open(Assign)": time_per_call(lambda: signer.open(envelope), count),
    }


PUSH_WITH_EXPIRY_SCRIPT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
"""The two commands of `RedisTransport.push` as one server-side Lua script."""

BATCH_POP_SIZE = 100


def push_costs(transport: RedisTransport, key: str, count: int) -> dict[str, float]:
    """Time ways to push one signed `Assign`; each queues items for `pop_costs`."""
    client, ttl_ms = transport.client, transport.keys.ttl_ms
    payload = encode(Assign("task0", 1, {}))
    envelope = transport.signer.seal(payload)
    push_with_expiry = client.register_script(PUSH_WITH_EXPIRY_SCRIPT)

    def pipelined_push() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(key, envelope)
        pipe.pexpire(key, ttl_ms)
        pipe.execute()

    single = redis.Redis.from_url(transport.settings.url, single_connection_client=True)
    with contextlib.closing(single):
        single_us = time_per_call(lambda: single.rpush(key, envelope), count)
    return {
        "PING": time_per_call(client.ping, count),
        "RPUSH": time_per_call(lambda: client.rpush(key, envelope), count),
        "RPUSH, single_connection_client=True": single_us,
        "RPUSH + PEXPIRE pipeline": time_per_call(pipelined_push, count),
        "RPUSH + PEXPIRE Lua script (EVALSHA)": time_per_call(
            lambda: push_with_expiry(keys=[key], args=[envelope, ttl_ms]), count
        ),
        "RedisTransport.push": time_per_call(
            lambda: transport.push(key, payload), count
        ),
    }


def pop_costs(transport: RedisTransport, key: str, count: int) -> dict[str, float]:
    """Time ways to pop the envelopes that `push_costs` queued under `key`."""
    client, mailbox = transport.client, transport.mailbox("message-path")
    batches = max(1, count // BATCH_POP_SIZE)
    needed = 2 * (count + WARMUP_ROUND_TRIPS) + (batches + 1) * BATCH_POP_SIZE
    queued = client.llen(key)
    if queued < needed:
        msg = f"{key} holds {queued} envelopes, fewer than the {needed} to pop"
        raise RuntimeError(msg)

    batch_us = time_per_call(
        lambda: client.lpop(key, BATCH_POP_SIZE), batches, warmup=1
    )
    return {
        "BLPOP of a queued item": time_per_call(lambda: client.blpop([key], 1), count),
        f"LPOP of {BATCH_POP_SIZE} queued items, per item": batch_us / BATCH_POP_SIZE,
        "RedisMailbox.get of a queued Assign": time_per_call(
            lambda: mailbox.get(timeout=1), count
        ),
    }


def message_path_costs(url: str, secret: bytes, count: int) -> dict[str, float]:
    """Return the median microseconds of each step a message takes, in one process."""
    settings = RedisSettings(url, f"bench-path-{uuid.uuid4().hex[:8]}", secret)
    transport = RedisTransport(settings)
    key = transport.keys.mailbox("message-path")
    try:
        return {
            **serialization_costs(transport.signer, count),
            **push_costs(transport, key, count),
            **pop_costs(transport, key, count),
        }
    finally:
        transport.client.delete(key)
        transport.close()


def print_message_path(costs: dict[str, float]) -> None:
    print("Steps of one message, median of repeated calls in one process:")
    lines = [("step", "us per call")]
    lines += [(step, f"{us:.1f}") for step, us in costs.items()]
    print(format_columns(lines))
    print()


def redis_server_version(server: PrivateRedisServer) -> str:
    client = server.client()
    try:
        return client.info("server")["redis_version"]
    finally:
        client.close()


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe_machine(server: PrivateRedisServer) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "start_method": default_start_method(),
        "pipeline_actors": pipeline_actors.__version__,
        "redis_server": redis_server_version(server),
        "redis_py": redis.__version__,
        "redis_url": server.url,
        "workers": WORKERS,
        "load_average_at_start": os.getloadavg(),
    }


def print_machine(machine: dict[str, Any]) -> None:
    print(
        f"Python {machine['python']} ({machine['implementation']}), "
        f"pipeline_actors {machine['pipeline_actors']}, "
        f"redis-server {machine['redis_server']}, redis-py {machine['redis_py']}"
    )
    print(f"{machine['cpu_count']} CPUs, {machine['cpu_model']}")
    print(f"{machine['platform']}")
    print(
        f"{machine['workers']} workers, start method {machine['start_method']}, "
        f"private Redis at {machine['redis_url']}"
    )
    load = ", ".join(f"{value:.2f}" for value in machine["load_average_at_start"])
    print(f"load average at start: {load}")
    print()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller workloads and one repetition, for a smoke test",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions of each measurement, whose median is reported "
        f"(default {FULL_SIZES.repeat}, or {QUICK_SIZES.repeat} with --quick)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write every figure to PATH as JSON"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, run the large fan-out once more under cProfile, print "
        "where the master's CPU time goes per module, and time each step of "
        "one message",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=120.0,
        help="seconds one run or one round-trip measurement may take before "
        "the benchmark stops (default 120)",
    )
    arguments = parser.parse_args(argv)
    if arguments.repeat is not None and arguments.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {arguments.repeat}")
    return arguments


def choose_sizes(arguments: argparse.Namespace) -> Sizes:
    sizes = QUICK_SIZES if arguments.quick else FULL_SIZES
    if arguments.repeat is None:
        return sizes
    return Sizes(**{**asdict(sizes), "repeat": arguments.repeat})


def measure(
    server: PrivateRedisServer, sizes: Sizes, timeout: float
) -> list[dict[str, Measurement]]:
    # Runs sign their messages, as real runs must, because signing is part of
    # the cost of every message.
    secret = secrets.token_bytes(32)
    repetitions = []
    for index in range(sizes.repeat):
        print(
            f"repetition {index + 1} of {sizes.repeat} ...", file=sys.stderr, flush=True
        )
        repetitions.append(measure_repetition(server, secret, sizes, timeout))
    return repetitions


def print_results(summary: dict, sizes: Sizes) -> list[Row]:
    rows = build_rows(summary, sizes)
    print(format_table(rows))
    print(
        "ratio: figure / floor, except fan-out steady state (modules per raw "
        "round trip) and diamond efficiency (ideal / makespan)."
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average at end: {load}")
    print()
    print_costs(summary, sizes)
    print_spread(summary)
    print()
    return rows


def paired_ratios(repetitions: list[dict[str, Measurement]]) -> dict[str, list]:
    """Return the two target ratios within each repetition, for their spread."""
    fanout, chain = [], []
    for repetition in repetitions:
        raw_us = repetition["round_trip_raw"].figures["us"]
        fanout.append(repetition["fanout"].figures["steady_per_s"] * raw_us / 1e6)
        chain.append(repetition["chain"].figures["hop_us"] / raw_us)
    return {"fanout_modules_per_round_trip": fanout, "chain_hop_round_trips": chain}


def print_paired_ratios(ratios: dict[str, list]) -> None:
    print("Target ratios within each repetition:")
    for name, values in ratios.items():
        print(f"  {name}: " + ", ".join(f"{value:.2f}" for value in values))
    print()


def write_json(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as output:
        json.dump(document, output, indent=2)
    print(f"Wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    sizes = choose_sizes(arguments)

    with private_redis_server() as server:
        machine = describe_machine(server)
        print_machine(machine)
        repetitions = measure(server, sizes, arguments.timeout)
        summary = summarize(repetitions)
        rows = print_results(summary, sizes)
        ratios = paired_ratios(repetitions)
        print_paired_ratios(ratios)
        profile = message_path = None
        if arguments.profile:
            print("profiling the master ...", file=sys.stderr, flush=True)
            secret = secrets.token_bytes(32)
            profile = profile_fanout(sizes.fanout, server, secret, arguments.timeout)
            print_profile(profile, sizes.fanout)
            message_path = message_path_costs(server.url, secret, sizes.round_trips)
            print_message_path(message_path)

    if arguments.json:
        document = {
            "machine": machine,
            "sizes": asdict(sizes),
            "summary": summary,
            "rows": [asdict(row) for row in rows],
            "paired_ratios": ratios,
            "profile": profile,
            "message_path_us": message_path,
        }
        write_json(arguments.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
