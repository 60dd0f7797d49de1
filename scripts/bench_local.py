"""Benchmark local runs of pipeline_actors against concurrent.futures and raw IPC.

Usage:
    python scripts/bench_local.py [--quick] [--repeat N] [--json PATH]

Each comparison is a ratio of two figures measured side by side in this one
run, because absolute timings on a small or shared machine drift between
runs. This is a benchmark, not a test: it reports whether each target was met
and never fails on a timing. It stops with an error only when a run fails or
does not finish within --timeout seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

import psutil

import pipeline_actors
from pipeline_actors import Module, ModuleStatus, RunReport, run
from pipeline_actors.console import Reporter
from pipeline_actors.runtime import default_start_method

from workloads import (
    SLEEP_SECONDS,
    NoOpModule,
    chain_modules,
    diamond_modules,
    independent_modules,
    make_module,
)

WORKERS = 4

PREFETCH = 1
"""Prefetch of the runs that send modules ahead to busy workers."""

PING_PAYLOAD = bytes(100)
"""Round-trip message, about the size of an encoded `Assign` or `ResultEvent`."""

WARMUP_ROUND_TRIPS = 50
RSS_SAMPLE_INTERVAL = 0.005
MEGABYTE = 1024 * 1024

FANOUT_MIN_RATIO = 0.5
CHAIN_MAX_RATIO = 2.5
DIAMOND_MIN_EFFICIENCY = 0.95
MASTER_MAX_RSS_MB = 200.0


class Timing(NamedTuple):
    """When and where one module or executor task ran."""

    started_at: float
    """Wall-clock start, from `time.time()` in the process that ran it."""
    duration: float
    """Seconds, from `time.perf_counter()`."""
    worker: str
    """The pipeline_actors worker id, or the executor process's pid."""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes and the number of repetitions of each timed measurement."""

    repeat: int
    fanout: int
    chain: int
    diamond_width: int
    memory_modules: int
    memory_layers: int
    round_trips: int


FULL_SIZES = Sizes(
    repeat=5,
    fanout=2000,
    chain=300,
    diamond_width=200,
    memory_modules=10_000,
    memory_layers=10,
    round_trips=2000,
)
QUICK_SIZES = Sizes(
    repeat=1,
    fanout=200,
    chain=50,
    diamond_width=40,
    memory_modules=1000,
    memory_layers=10,
    round_trips=200,
)


def layered_modules(total: int, layers: int) -> list[type[Module]]:
    """Build `layers` layers where each module depends on two of the layer above."""
    width = total // layers
    previous = [make_module(NoOpModule, f"layer0_{i}") for i in range(width)]
    modules = list(previous)
    for layer in range(1, layers):
        current = [
            make_module(
                NoOpModule,
                f"layer{layer}_{i}",
                [previous[i], previous[(i + 1) % width]],
            )
            for i in range(width)
        ]
        modules += current
        previous = current
    return modules


def timed_noop() -> Timing:
    started_at = time.time()
    started = time.perf_counter()
    return Timing(started_at, time.perf_counter() - started, str(os.getpid()))


def timed_sleep(seconds: float) -> Timing:
    started_at = time.time()
    started = time.perf_counter()
    time.sleep(seconds)
    return Timing(started_at, time.perf_counter() - started, str(os.getpid()))


def end_of(timing: Timing) -> float:
    return timing.started_at + timing.duration


def span(timings: Sequence[Timing]) -> float:
    """Return seconds from the earliest start to the latest end."""
    first_start = min(timing.started_at for timing in timings)
    return max(end_of(timing) for timing in timings) - first_start


def gaps(timings: Sequence[Timing]) -> list[float]:
    """Return the seconds from each task's end to the next one's start, in order."""
    return [
        following.started_at - end_of(timing)
        for timing, following in itertools.pairwise(timings)
    ]


def gaps_on_each_worker(timings: Sequence[Timing]) -> list[float]:
    """Return the idle seconds between consecutive tasks of the same worker."""
    by_worker: dict[str, list[Timing]] = {}
    for timing in timings:
        by_worker.setdefault(timing.worker, []).append(timing)
    idle = []
    for worker_timings in by_worker.values():
        idle += gaps(sorted(worker_timings))
    return idle


def report_timings(report: RunReport, names: Sequence[str]) -> list[Timing]:
    timings = []
    for name in names:
        module = report.modules[name]
        timings.append(Timing(module.started_at, module.duration, module.worker_id))
    return timings


class JoinRecorder(Reporter):
    """A reporter that stores when the master accepted each worker (`time.time()`)."""

    def __init__(self) -> None:
        self.joined_at: list[float] = []

    def worker_joined(self, worker_id: str, capabilities: frozenset[str]) -> None:
        self.joined_at.append(time.time())


@contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """Send this process SIGINT after `seconds`, which makes `run` cancel the run."""
    timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def alarm_after(seconds: float, description: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the block outlasts `seconds`."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"{description} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class PipelineRun:
    """A finished run with what the benchmark measured around the `run` call."""

    report: RunReport
    elapsed: float
    """Seconds of the whole `run` call."""
    master_cpu: float
    """CPU seconds this process, the master, used during the call."""


def run_pipeline(
    modules: Sequence[type[Module]],
    timeout: float,
    reporter: Reporter | None = None,
    prefetch: int = 0,
) -> PipelineRun:
    """Run `modules` on the local workers and raise unless every module succeeded."""
    with interrupt_after(timeout):
        cpu_started = time.process_time()
        started = time.perf_counter()
        report = run(
            modules, local_workers=WORKERS, reporter=reporter, prefetch=prefetch
        )
        elapsed = time.perf_counter() - started
        master_cpu = time.process_time() - cpu_started

    if not report.ok:
        succeeded = len(report.with_status(ModuleStatus.SUCCEEDED))
        msg = (
            f"benchmark run {report.run_id} ended with {report.exit_code.name} "
            f"after {elapsed:.1f} s (timeout {timeout:g} s): "
            f"{len(report.modules) - succeeded} of {len(report.modules)} modules "
            f"did not succeed"
        )
        raise RuntimeError(msg)
    return PipelineRun(report, elapsed, master_cpu)


def results_within(futures: Sequence[Future], timeout: float) -> list[Any]:
    _, pending = wait(futures, timeout=timeout)
    if pending:
        msg = (
            f"{len(pending)} of {len(futures)} executor tasks did not finish "
            f"within {timeout:g} s"
        )
        raise TimeoutError(msg)
    return [future.result() for future in futures]


def start_context() -> BaseContext:
    return multiprocessing.get_context(default_start_method())


def warm_up(pool: ProcessPoolExecutor, timeout: float) -> None:
    """Make the pool start all its processes and run some tasks in each."""
    # Concurrent sleeps keep every process busy, so the pool must start them all.
    sleeps = [pool.submit(timed_sleep, 0.05) for _ in range(WORKERS)]
    results_within(sleeps, timeout)
    noops = [pool.submit(timed_noop) for _ in range(100)]
    results_within(noops, timeout)


def pipeline_fanout(count: int, timeout: float, prefetch: int) -> dict[str, float]:
    modules = independent_modules(count)
    result = run_pipeline(modules, timeout, prefetch=prefetch)
    steady = span(report_timings(result.report, [m.name for m in modules]))
    return {
        "end_to_end_per_s": count / result.elapsed,
        "steady_per_s": count / steady,
        "run_call_s": result.elapsed,
        "steady_s": steady,
        "master_cpu_us_per_module": result.master_cpu / count * 1e6,
    }


def executor_fanout_warm(
    pool: ProcessPoolExecutor, count: int, timeout: float
) -> dict[str, float]:
    started = time.perf_counter()
    futures = [pool.submit(timed_noop) for _ in range(count)]
    timings = results_within(futures, timeout)
    elapsed = time.perf_counter() - started
    steady = span(timings)
    return {
        "steady_per_s": count / steady,
        "submit_to_results_per_s": count / elapsed,
        "steady_s": steady,
    }


def executor_fanout_cold(count: int, timeout: float) -> dict[str, float]:
    started = time.perf_counter()
    with ProcessPoolExecutor(WORKERS, mp_context=start_context()) as pool:
        results_within([pool.submit(timed_noop) for _ in range(count)], timeout)
    elapsed = time.perf_counter() - started
    return {"end_to_end_per_s": count / elapsed, "end_to_end_s": elapsed}


def pipeline_chain(length: int, timeout: float) -> dict[str, float]:
    modules = chain_modules(length)
    report = run_pipeline(modules, timeout).report
    hops = gaps(report_timings(report, [m.name for m in modules]))
    return {"hop_us": statistics.median(hops) * 1e6}


def executor_chain(
    pool: ProcessPoolExecutor, length: int, timeout: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    timings = []
    for _ in range(length):
        remaining = max(0.0, deadline - time.monotonic())
        timings.append(pool.submit(timed_noop).result(timeout=remaining))
    return {"hop_us": statistics.median(gaps(timings)) * 1e6}


def diamond_ideal(width: int) -> float:
    return SLEEP_SECONDS * (2 + math.ceil(width / WORKERS))


def makespan_figures(timings: Sequence[Timing], width: int) -> dict[str, float]:
    makespan = span(timings)
    return {
        "makespan_ms": makespan * 1e3,
        "efficiency": diamond_ideal(width) / makespan,
        "median_module_ms": statistics.median(t.duration for t in timings) * 1e3,
        "median_worker_gap_ms": statistics.median(gaps_on_each_worker(timings)) * 1e3,
    }


def pipeline_diamond(width: int, timeout: float, prefetch: int) -> dict[str, float]:
    modules = diamond_modules(width)
    joins = JoinRecorder()
    result = run_pipeline(modules, timeout, joins, prefetch)
    timings = report_timings(result.report, [m.name for m in modules])
    first_start = min(timing.started_at for timing in timings)
    return {
        **makespan_figures(timings, width),
        "last_join_after_first_start_ms": (max(joins.joined_at) - first_start) * 1e3,
        "run_call_ms": result.elapsed * 1e3,
    }


def executor_diamond(
    pool: ProcessPoolExecutor, width: int, timeout: float
) -> dict[str, float]:
    timings = results_within([pool.submit(timed_sleep, SLEEP_SECONDS)], timeout)
    middle = [pool.submit(timed_sleep, SLEEP_SECONDS) for _ in range(width)]
    timings += results_within(middle, timeout)
    timings += results_within([pool.submit(timed_sleep, SLEEP_SECONDS)], timeout)
    return makespan_figures(timings, width)


def echo_over_queues(requests, replies, count: int, timeout: float) -> None:
    for _ in range(count):
        replies.put(requests.get(timeout=timeout))


def echo_over_simple_queues(requests, replies, count: int) -> None:
    # SimpleQueue.get takes no timeout, so the parent terminates this process
    # if it outlives the measurement.
    for _ in range(count):
        replies.put(requests.get())


def echo_over_pipes(requests, replies, count: int, timeout: float) -> None:
    for _ in range(count):
        if not requests.poll(timeout):
            return
        replies.send_bytes(requests.recv_bytes())


@dataclass(frozen=True)
class Channel:
    """One side of a two-way link to an echo process."""

    send: Callable[[object], None]
    receive: Callable[[], object]
    echo: Callable[..., None]
    echo_args: tuple


def open_channel(
    kind: str, context: BaseContext, count: int, timeout: float
) -> Channel:
    if kind == "Pipe":
        # Two one-way pipes carrying bytes, which is what a LocalMailbox is
        # made of, without its lock and its cloudpickle encoding.
        request_reader, request_writer = context.Pipe(duplex=False)
        reply_reader, reply_writer = context.Pipe(duplex=False)

        def receive_from_pipe() -> object:
            if not reply_reader.poll(timeout):
                raise TimeoutError(f"no echo over the pipe within {timeout:g} s")
            return reply_reader.recv_bytes()

        echo_args = (request_reader, reply_writer, count, timeout)
        return Channel(
            request_writer.send_bytes, receive_from_pipe, echo_over_pipes, echo_args
        )

    if kind == "SimpleQueue":
        requests, replies = context.SimpleQueue(), context.SimpleQueue()
        echo_args = (requests, replies, count)
        return Channel(requests.put, replies.get, echo_over_simple_queues, echo_args)

    requests, replies = context.Queue(), context.Queue()
    return Channel(
        requests.put,
        lambda: replies.get(timeout=timeout),
        echo_over_queues,
        (requests, replies, count, timeout),
    )


def round_trip_us(kind: str, count: int, timeout: float) -> float:
    """Return the median microseconds of a ping-pong with a second process."""
    context = start_context()
    total = WARMUP_ROUND_TRIPS + count
    channel = open_channel(kind, context, total, timeout)
    echo = context.Process(target=channel.echo, args=channel.echo_args, daemon=True)
    echo.start()

    samples = []
    try:
        # SimpleQueue.get takes no timeout, so the alarm bounds the whole loop.
        with alarm_after(timeout, f"the {kind} round trips"):
            for _ in range(total):
                started = time.perf_counter()
                channel.send(PING_PAYLOAD)
                channel.receive()
                samples.append(time.perf_counter() - started)
    finally:
        echo.join(timeout=timeout)
        if echo.is_alive():
            echo.terminate()
            echo.join(timeout=timeout)
    return statistics.median(samples[WARMUP_ROUND_TRIPS:]) * 1e6


class RssSampler:
    """A background thread's samples of this process's resident set size."""

    def __init__(self, interval: float, max_seconds: float) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._max_samples = int(max_seconds / interval) + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = self._process.memory_info().rss
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while self.samples < self._max_samples and not self._stop.is_set():
            rss = self._process.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, rss)
            self.samples += 1
            self._stop.wait(self._interval)


def measure_memory(sizes: Sizes, timeout: float) -> dict[str, float]:
    rss_at_start = psutil.Process().memory_info().rss
    modules = layered_modules(sizes.memory_modules, sizes.memory_layers)
    rss_before = psutil.Process().memory_info().rss

    with RssSampler(RSS_SAMPLE_INTERVAL, timeout) as sampler:
        result = run_pipeline(modules, timeout)

    # ru_maxrss, the lifetime peak in KiB on Linux, cannot miss a short peak
    # between two samples.
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "modules": len(modules),
        "rss_at_start_mb": rss_at_start / MEGABYTE,
        "rss_before_run_mb": rss_before / MEGABYTE,
        "peak_rss_mb": sampler.peak_bytes / MEGABYTE,
        "ru_maxrss_mb": max_rss_kib * 1024 / MEGABYTE,
        "samples": sampler.samples,
        "run_call_s": result.elapsed,
    }


def measure_repetition(
    pool: ProcessPoolExecutor, sizes: Sizes, timeout: float
) -> dict[str, dict[str, float]]:
    """Measure every timed workload once, each beside its alternative."""
    return {
        "fanout_pipeline": pipeline_fanout(sizes.fanout, timeout, 0),
        "fanout_pipeline_prefetch": pipeline_fanout(sizes.fanout, timeout, PREFETCH),
        "fanout_executor_warm": executor_fanout_warm(pool, sizes.fanout, timeout),
        "fanout_executor_cold": executor_fanout_cold(sizes.fanout, timeout),
        "chain_pipeline": pipeline_chain(sizes.chain, timeout),
        "chain_executor": executor_chain(pool, sizes.chain, timeout),
        "round_trip_queue": {"us": round_trip_us("Queue", sizes.round_trips, timeout)},
        "round_trip_simple_queue": {
            "us": round_trip_us("SimpleQueue", sizes.round_trips, timeout)
        },
        "round_trip_pipe": {"us": round_trip_us("Pipe", sizes.round_trips, timeout)},
        "diamond_pipeline": pipeline_diamond(sizes.diamond_width, timeout, 0),
        "diamond_pipeline_prefetch": pipeline_diamond(
            sizes.diamond_width, timeout, PREFETCH
        ),
        "diamond_executor": executor_diamond(pool, sizes.diamond_width, timeout),
    }


def summarize(
    repetitions: list[dict[str, dict[str, float]]],
) -> dict[str, dict[str, dict[str, float | list[float]]]]:
    """Return, for every figure, its median over the repetitions and each value."""
    summary: dict[str, dict[str, dict[str, float | list[float]]]] = {}
    for workload, figures in repetitions[0].items():
        summary[workload] = {}
        for figure in figures:
            values = [repetition[workload][figure] for repetition in repetitions]
            summary[workload][figure] = {
                "median": statistics.median(values),
                "values": values,
            }
    return summary


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    workload: str
    pipeline_actors: str
    alternative: str
    ratio: float | None
    target: str
    met: bool | None


def build_rows(summary: dict, memory: dict[str, float], sizes: Sizes) -> list[Row]:
    def median(workload: str, figure: str) -> float:
        return summary[workload][figure]["median"]

    fan_warm = median("fanout_executor_warm", "steady_per_s")
    fan_e2e = median("fanout_pipeline", "end_to_end_per_s")
    fan_cold = median("fanout_executor_cold", "end_to_end_per_s")
    hop = median("chain_pipeline", "hop_us")
    executor_hop = median("chain_executor", "hop_us")
    queue_rtt = median("round_trip_queue", "us")
    simple_rtt = median("round_trip_simple_queue", "us")
    pipe_rtt = median("round_trip_pipe", "us")
    executor_makespan = median("diamond_executor", "makespan_ms")
    executor_efficiency = median("diamond_executor", "efficiency")
    ideal_ms = diamond_ideal(sizes.diamond_width) * 1e3
    peak = memory["peak_rss_mb"]

    def fanout_row(workload: str, variant: str) -> Row:
        steady = median(workload, "steady_per_s")
        return Row(
            f"fan-out {sizes.fanout}, steady state{variant}",
            f"{steady:,.0f} modules/s",
            f"{fan_warm:,.0f} tasks/s executor, warm pool",
            steady / fan_warm,
            f">= {FANOUT_MIN_RATIO}",
            steady / fan_warm >= FANOUT_MIN_RATIO,
        )

    def diamond_rows(workload: str, variant: str) -> list[Row]:
        makespan = median(workload, "makespan_ms")
        efficiency = median(workload, "efficiency")
        shape = f"diamond 1-{sizes.diamond_width}-1"
        return [
            Row(
                f"{shape}, efficiency{variant}",
                f"{makespan:,.0f} ms makespan",
                f"{ideal_ms:,.0f} ms ideal",
                efficiency,
                f">= {DIAMOND_MIN_EFFICIENCY}",
                efficiency >= DIAMOND_MIN_EFFICIENCY,
            ),
            Row(
                f"{shape}, executor{variant}",
                f"{makespan:,.0f} ms makespan",
                f"{executor_makespan:,.0f} ms executor "
                f"(efficiency {executor_efficiency:.3f})",
                makespan / executor_makespan,
                "-",
                None,
            ),
        ]

    def hop_row(alternative: str, figure: float, target: bool) -> Row:
        ratio = hop / figure
        return Row(
            f"chain {sizes.chain}, hop",
            f"{hop:,.0f} us",
            alternative,
            ratio,
            f"<= {CHAIN_MAX_RATIO}" if target else "-",
            ratio <= CHAIN_MAX_RATIO if target else None,
        )

    prefetched = f", prefetch {PREFETCH}"
    return [
        fanout_row("fanout_pipeline", ""),
        fanout_row("fanout_pipeline_prefetch", prefetched),
        Row(
            f"fan-out {sizes.fanout}, end to end",
            f"{fan_e2e:,.0f} modules/s",
            f"{fan_cold:,.0f} tasks/s executor, incl. pool start",
            fan_e2e / fan_cold,
            "-",
            None,
        ),
        hop_row(f"{queue_rtt:,.0f} us mp.Queue round trip", queue_rtt, True),
        hop_row(f"{simple_rtt:,.0f} us mp.SimpleQueue round trip", simple_rtt, False),
        hop_row(f"{pipe_rtt:,.0f} us one-way Pipe pair round trip", pipe_rtt, False),
        hop_row(f"{executor_hop:,.0f} us executor hop", executor_hop, False),
        *diamond_rows("diamond_pipeline", ""),
        *diamond_rows("diamond_pipeline_prefetch", prefetched),
        Row(
            f"master RSS, {memory['modules']:,} modules",
            f"{peak:,.1f} MB peak",
            f"{memory['rss_before_run_mb']:,.1f} MB before the run",
            None,
            f"< {MASTER_MAX_RSS_MB:g} MB",
            peak < MASTER_MAX_RSS_MB,
        ),
    ]


def format_met(met: bool | None) -> str:
    if met is None:
        return "-"
    return "yes" if met else "NO"


def format_table(rows: list[Row]) -> str:
    header = ("workload", "pipeline_actors", "alternative", "ratio", "target", "met")
    lines = [header]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        met = format_met(row.met)
        lines.append(
            (row.workload, row.pipeline_actors, row.alternative, ratio, row.target, met)
        )

    widths = [max(len(line[column]) for line in lines) for column in range(6)]
    rendered = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "start_method": default_start_method(),
        "pipeline_actors": pipeline_actors.__version__,
        "workers": WORKERS,
        "load_average_at_start": os.getloadavg(),
    }


def print_machine(machine: dict[str, Any]) -> None:
    print(
        f"Python {machine['python']} ({machine['implementation']}), "
        f"pipeline_actors {machine['pipeline_actors']}"
    )
    print(
        f"{machine['cpu_count']} CPUs ({machine['physical_cores']} physical), "
        f"{machine['cpu_model']}, {machine['memory_gb']} GB RAM"
    )
    print(f"{machine['platform']} ({machine['machine']})")
    print(f"{machine['workers']} workers, start method {machine['start_method']}")
    load = ", ".join(f"{value:.2f}" for value in machine["load_average_at_start"])
    print(f"load average at start: {load}")
    print()


def print_spread(summary: dict) -> None:
    """Print every figure's median and its value in each repetition."""
    print("Medians and per-repetition values:")
    for workload, figures in summary.items():
        for figure, stats in figures.items():
            values = ", ".join(f"{value:,.4g}" for value in stats["values"])
            print(f"  {workload}.{figure}: {stats['median']:,.4g}  [{values}]")


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
        help="repetitions of each timed measurement, whose median is reported "
        f"(default {FULL_SIZES.repeat}, or {QUICK_SIZES.repeat} with --quick)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write every figure to PATH as JSON"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds one run, one batch of executor tasks or one series of "
        "round trips may take before the benchmark stops (default 120)",
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


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    sizes = choose_sizes(arguments)
    timeout = arguments.timeout
    machine = describe_machine()
    print_machine(machine)

    # Memory goes first, so that no earlier workload inflates the baseline and
    # the process's lifetime peak (ru_maxrss) is the peak of this run.
    print("measuring the master's memory ...", file=sys.stderr, flush=True)
    memory = measure_memory(sizes, timeout)

    repetitions = []
    with ProcessPoolExecutor(WORKERS, mp_context=start_context()) as pool:
        warm_up(pool, timeout)
        for index in range(sizes.repeat):
            print(
                f"repetition {index + 1} of {sizes.repeat} ...",
                file=sys.stderr,
                flush=True,
            )
            repetitions.append(measure_repetition(pool, sizes, timeout))

    summary = summarize(repetitions)
    rows = build_rows(summary, memory, sizes)
    print(format_table(rows))
    print(
        "ratio: pipeline_actors / alternative, except diamond efficiency, "
        "which is ideal / makespan."
    )
    print(
        "The chain target is computed against the multiprocessing.Queue round "
        "trip; the SimpleQueue and Pipe floors are listed for reference."
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average at end: {load}")
    print()
    print(
        f"Master RSS: {memory['rss_at_start_mb']:.1f} MB at start, "
        f"{memory['rss_before_run_mb']:.1f} MB with the module classes built, "
        f"{memory['peak_rss_mb']:.1f} MB peak in {memory['samples']} samples, "
        f"ru_maxrss {memory['ru_maxrss_mb']:.1f} MB"
    )
    print_spread(summary)

    if arguments.json:
        document = {
            "machine": machine,
            "sizes": asdict(sizes),
            "memory": memory,
            "figures": summary,
            "rows": [asdict(row) for row in rows],
        }
        with open(arguments.json, "w", encoding="utf-8") as output:
            json.dump(document, output, indent=2)
        print(f"\nWrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
