"""Whole pipelines on real worker processes of this machine."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline_actors import ExitCode, Module, ModuleStatus, Pipeline, run
from pipeline_actors.console import Reporter
from pipeline_actors.state import Dispatch


def test_diamond_results_reach_the_sink():
    class Source(Module):
        def execute(self, ctx):
            return {"base": 10}

    class Double(Module):
        depends_on = [Source]

        def execute(self, ctx):
            return ctx.result(Source)["base"] * 2

    class Square(Module):
        depends_on = [Source]

        def execute(self, ctx):
            return ctx.result(Source)["base"] ** 2

    class Sink(Module):
        depends_on = [Double, Square]

        def execute(self, ctx):
            return (ctx.result(Double), ctx.result("Square"), ctx.worker_id)

    report = run([Source, Double, Square, Sink], local_workers=2)

    assert report.exit_code is ExitCode.OK
    double, square, sink_worker = report.result(Sink)
    assert (double, square) == (20, 100)
    assert sink_worker == report.modules["Sink"].worker_id
    assert {m.attempts for m in report.modules.values()} == {1}


def test_failure_skips_exactly_its_dependents():
    class Broken(Module):
        def execute(self, ctx):
            raise RuntimeError("compiler exploded")

    class NeedsBroken(Module):
        depends_on = [Broken]

        def execute(self, ctx):
            return "never"

    class NeedsNeedsBroken(Module):
        depends_on = [NeedsBroken]

        def execute(self, ctx):
            return "never either"

    class Independent(Module):
        def execute(self, ctx):
            return "ran"

    report = run([Broken, NeedsBroken, NeedsNeedsBroken, Independent], local_workers=2)

    assert report.exit_code is ExitCode.FAILED
    assert report.with_status(ModuleStatus.FAILED) == ["Broken"]
    assert sorted(report.with_status(ModuleStatus.SKIPPED)) == [
        "NeedsBroken",
        "NeedsNeedsBroken",
    ]
    assert report.result(Independent) == "ran"
    error = report.modules["Broken"].detail
    assert "Traceback" in error
    assert "RuntimeError: compiler exploded" in error
    assert report.modules["NeedsBroken"].detail == "dependency 'Broken' failed"
    assert report.modules["NeedsNeedsBroken"].attempts == 0


def test_unpicklable_result_fails_with_its_type():
    class HoldsLock(Module):
        def execute(self, ctx):
            return threading.Lock()

    class After(Module):
        depends_on = [HoldsLock]

        def execute(self, ctx):
            return 1

    class Fine(Module):
        def execute(self, ctx):
            return 2

    report = run([HoldsLock, After, Fine], local_workers=2)

    assert report.modules["HoldsLock"].status is ModuleStatus.FAILED
    assert "_thread.lock" in report.modules["HoldsLock"].detail
    assert "cannot be pickled" in report.modules["HoldsLock"].detail
    assert report.modules["After"].status is ModuleStatus.SKIPPED
    assert report.result(Fine) == 2


def make_noisy(tag: str) -> type[Module]:
    class Noisy(Module):
        name = tag

        def execute(self, ctx):
            print(f"{tag}-print")
            print(f"{tag}-stderr", file=sys.stderr)
            ctx.log.info(f"{tag}-log")
            ctx.run(sys.executable, "-c", f"print('{tag}-command')")
            os.system(f"echo {tag}-system")
            return tag

    return Noisy


def test_output_is_attributed_to_its_module():
    tags = ["alpha", "beta", "gamma", "delta"]
    modules = [make_noisy(tag) for tag in tags]

    report = run(modules, local_workers=2)

    assert report.exit_code is ExitCode.OK
    for tag in tags:
        output = report.modules[tag].output
        for kind in ("print", "stderr", "log", "command", "system"):
            assert f"{tag}-{kind}" in output, output
        others = [t for t in tags if t != tag]
        assert not any(other in output for other in others), output


def test_output_keeps_the_order_it_was_written_in():
    class Ordered(Module):
        def execute(self, ctx):
            print("one")
            print("two", file=sys.stderr)
            ctx.run("sh", "-c", "echo three; echo four >&2")
            print("five")

    report = run([Ordered], local_workers=1)

    lines = report.modules["Ordered"].output.split()
    assert lines == ["one", "two", "three", "four", "five"]


def test_undeclared_dependency_is_a_clear_error():
    class Config(Module):
        def execute(self, ctx):
            return {}

    class Sneaky(Module):
        def execute(self, ctx):
            return ctx.result(Config)

    report = run([Config, Sneaky], local_workers=1)

    detail = report.modules["Sneaky"].detail
    assert "UndeclaredDependencyError" in detail
    assert "'Config', which is not one of its dependencies" in detail


def test_failed_command_names_command_and_output_tail():
    class Compile(Module):
        def execute(self, ctx):
            script = "import sys; print('\\n'.join(map(str, range(100)))); sys.exit(3)"
            ctx.run(sys.executable, "-c", script)

    report = run([Compile], local_workers=1)

    detail = report.modules["Compile"].detail
    assert "CommandFailedError" in detail
    assert "exited with status 3" in detail
    assert "99" in detail
    assert "\n79\n" not in detail
    assert report.modules["Compile"].output.count("\n") == 100


def test_command_result_and_unchecked_status():
    class Probe(Module):
        def execute(self, ctx):
            result = ctx.run("sh", "-c", "echo $GREETING; exit 4", check=False,
                             env={"GREETING": "hi"})  # fmt: skip
            return result.returncode, result.output

    report = run([Probe], local_workers=1)

    assert report.result(Probe) == (4, "hi\n")


def test_command_timeout_kills_it():
    class Slow(Module):
        def execute(self, ctx):
            ctx.run("sleep", "30", timeout=0.5)

    started = time.monotonic()
    report = run([Slow], local_workers=1)

    assert time.monotonic() - started < 15
    assert "killed after the timeout of 0.5 s" in report.modules["Slow"].detail


def test_pinned_module_runs_on_the_master():
    class Build(Module):
        def execute(self, ctx):
            return os.getpid()

    class Summary(Module):
        depends_on = [Build]
        pin_to_master = True

        def execute(self, ctx):
            print("summary line")
            return os.getpid(), ctx.result(Build)

    report = run(Pipeline(Build, Summary), local_workers=1)

    summary_pid, build_pid = report.result(Summary)
    assert summary_pid == os.getpid()
    assert build_pid != os.getpid()
    assert report.modules["Summary"].worker_id == "master"
    assert report.modules["Summary"].output == "summary line\n"


def test_empty_pipeline_succeeds():
    report = run([], local_workers=1)

    assert report.exit_code is ExitCode.OK
    assert report.modules == {}


def test_dead_worker_is_retried_then_failed():
    class Crashes(Module):
        def execute(self, ctx):
            os._exit(9)

    class AfterCrash(Module):
        depends_on = [Crashes]

        def execute(self, ctx):
            return 1

    class Survives(Module):
        def execute(self, ctx):
            return "fine"

    report = run([Crashes, AfterCrash, Survives], local_workers=3, max_attempts=2)

    crashed = report.modules["Crashes"]
    assert crashed.status is ModuleStatus.FAILED
    assert crashed.attempts == 2
    assert "was lost during attempt 2 of 2" in crashed.detail
    assert report.modules["AfterCrash"].status is ModuleStatus.SKIPPED
    assert report.result(Survives) == "fine"


def test_module_cancel_stops_the_run(tmp_path):
    pid_file = tmp_path / "sleeper.pid"

    class Sleeper(Module):
        def execute(self, ctx):
            ctx.run("sh", "-c", f"echo $$ > {pid_file}; exec sleep 60")

    class Quitter(Module):
        def execute(self, ctx):
            deadline = time.monotonic() + 20
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            ctx.cancel("enough")
            time.sleep(30)

    class Later(Module):
        depends_on = [Quitter]

        def execute(self, ctx):
            return 1

    started = time.monotonic()
    report = run([Sleeper, Quitter, Later], local_workers=2, cancel_grace=5)

    assert time.monotonic() - started < 20
    assert report.exit_code is ExitCode.CANCELLED
    assert report.modules["Sleeper"].status is ModuleStatus.CANCELLED
    assert report.modules["Quitter"].status is ModuleStatus.CANCELLED
    assert report.modules["Later"].status is ModuleStatus.CANCELLED
    assert "not started" in report.modules["Later"].detail


def test_leftover_background_process_is_ended():
    class Spawner(Module):
        def execute(self, ctx):
            import subprocess

            subprocess.Popen(["sleep", "60"])
            return "spawned"

    report = run([Spawner], local_workers=1)

    assert report.result(Spawner) == "spawned"


def logging_modules(log: Path, count: int, seconds: float = 0.0) -> list[type[Module]]:
    """Return `count` modules that each append their name to `log`, then sleep."""

    def make(index: int) -> type[Module]:
        class Entry(Module):
            name = f"m{index}"

            def execute(self, ctx):
                with open(log, "a") as handle:
                    handle.write(f"{self.name}\n")
                time.sleep(seconds)

        return Entry

    return [make(index) for index in range(count)]


@pytest.mark.parametrize("workers", [1, 3])
def test_every_module_runs_once(tmp_path, workers):
    log = tmp_path / "log"

    report = run(logging_modules(log, 40), local_workers=workers)

    assert report.exit_code is ExitCode.OK
    assert sorted(log.read_text().split()) == sorted(f"m{i}" for i in range(40))
    used = {m.worker_id for m in report.modules.values()}
    assert used <= {str(i) for i in range(1, workers + 1)}


def test_failed_command_error_shortens_long_argv():
    from pipeline_actors import CommandFailedError

    error = CommandFailedError(["pytest", *(f"test_{i}" for i in range(500))], 1, "")

    assert "test_10 ... (489 more arguments)" in str(error)
    assert "test_11" not in str(error)
    assert len(error.argv) == 501


class DispatchRecorder(Reporter):
    """A reporter that keeps every dispatch of a run."""

    def __init__(self) -> None:
        self.dispatches: list[Dispatch] = []

    def module_started(self, dispatch: Dispatch) -> None:
        self.dispatches.append(dispatch)


def test_prefetch_runs_each_module_once(tmp_path):
    log = tmp_path / "log"
    recorder = DispatchRecorder()
    modules = logging_modules(log, 30, seconds=0.01)
    report = run(modules, local_workers=2, prefetch=1, reporter=recorder)

    assert report.exit_code is ExitCode.OK
    assert sorted(log.read_text().split()) == sorted(m.name for m in modules)
    ahead = [d for d in recorder.dispatches if d.behind is not None]
    assert ahead, "no module was sent ahead"
    for dispatch in ahead:
        module = report.modules[dispatch.module]
        before = report.modules[dispatch.behind]
        assert module.worker_id == before.worker_id == dispatch.worker_id
        assert module.started_at >= before.started_at + before.duration


def test_cancel_stops_a_module_sent_ahead(tmp_path):
    marker = tmp_path / "started"

    class AQuitter(Module):
        def execute(self, ctx):
            ctx.cancel("enough")
            time.sleep(30)

    class BWaiting(Module):
        def execute(self, ctx):
            marker.write_text("ran")

    recorder = DispatchRecorder()
    report = run([AQuitter, BWaiting], local_workers=1, prefetch=1, reporter=recorder)

    assert [d.behind for d in recorder.dispatches] == [None, "AQuitter"]
    assert report.exit_code is ExitCode.CANCELLED
    waiting = report.modules["BWaiting"]
    assert waiting.status is ModuleStatus.CANCELLED
    assert (
        waiting.detail == "not started: run cancelled (module AQuitter asked: enough)"
    )
    assert not marker.exists()
