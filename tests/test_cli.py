"""The command line: help, exit statuses, what it prints, and Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO_ROOT, run_cli

PASSING = """
    from pipeline_actors import Module

    class Fetch(Module):
        def execute(self, ctx):
            print("fetched 3 files")
            return 3

    class Build(Module):
        depends_on = [Fetch]

        def execute(self, ctx):
            return ctx.result(Fetch) * 2
"""

FAILING = """
    from pipeline_actors import Module

    class Fine(Module):
        def execute(self, ctx):
            return 1

    class Broken(Module):
        def execute(self, ctx):
            raise ValueError("bad input 42")

    class Blocked(Module):
        depends_on = [Broken]

        def execute(self, ctx):
            return 2
"""

SLOW = """
    import time
    from pathlib import Path
    from pipeline_actors import Module

    HERE = Path(__file__).parent

    class Sleeper(Module):
        def execute(self, ctx):
            ctx.run("sh", "-c", f"echo $$ > {HERE}/command.pid; exec sleep 60")

    class Napper(Module):
        def execute(self, ctx):
            (HERE / "napper.started").write_text("")
            time.sleep(60)

    class After(Module):
        depends_on = [Sleeper]

        def execute(self, ctx):
            return 1
"""


def test_help_lists_every_option_with_default():
    result = run_cli("--help")

    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in (
        "--local-workers N",
        "--capability NAME",
        "--run-id",
        "--display",
        "--log-level",
        "--heartbeat-interval SECONDS",
        "--heartbeat-timeout SECONDS",
        "--cancel-grace SECONDS",
        "--max-attempts N",
        "--redis URL",
        "--instance-index N",
        "--total-instances N",
        "--secret-file FILE",
        "--min-workers N",
        "--print-config",
    ):
        assert option in text
    assert "(default: 1.0; environment: PIPELINE_ACTORS_HEARTBEAT_INTERVAL)" in text
    assert "(default: WARNING; environment: PIPELINE_ACTORS_LOG_LEVEL)" in text
    assert (
        "(default: the CPU count; environment: PIPELINE_ACTORS_LOCAL_WORKERS)" in text
    )
    assert "(default: pipeline.py)" in text


def test_success_exits_zero_with_lines_and_summary(pipeline_file):
    path = pipeline_file(PASSING)

    result = run_cli(path, "--local-workers", "2")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"queued +Fetch", out)
    assert re.search(r"started +Fetch on worker [12]", out)
    assert re.search(r"succeeded +Fetch in \d+\.\d\d s on worker [12]", out)
    assert "    │ fetched 3 files" in out
    assert re.search(r"Build +succeeded +[12] +\d+\.\d\d s +1", out)
    assert re.search(r"2 modules: 2 succeeded; wall time \d+\.\d\d s", out)


def test_failure_exits_one_and_shows_traceback(pipeline_file):
    path = pipeline_file(FAILING)

    result = run_cli(path, "--local-workers", "2")

    assert result.returncode == 1
    assert "ValueError: bad input 42" in result.stdout
    assert f'File "{path}", line 10, in execute' in result.stdout
    assert re.search(r"skipped +Blocked: dependency 'Broken' failed", result.stdout)
    assert re.search(r"Fine +succeeded", result.stdout)


def test_log_level_shows_actor_records(pipeline_file):
    path = pipeline_file(PASSING)

    result = run_cli(path, "--local-workers", "1", "--log-level", "debug")

    assert result.returncode == 0
    log = result.stderr
    assert re.search(
        r"DEBUG +master run=\w+ Assigned Fetch \(attempt 1\) to worker 1", log
    )
    assert re.search(r"worker 1 run=\w+ Started with pid \d+", log)
    assert "monitor" in log
    assert "canceller" in log


def ctrl_c_in_terminal(pid: int) -> None:
    # A terminal sends Ctrl-C to the whole foreground process group.
    os.killpg(pid, signal.SIGINT)


def sigterm_to_command(pid: int) -> None:
    # What `docker stop` sends by default.
    os.kill(pid, signal.SIGTERM)


def sigterm_to_group(pid: int) -> None:
    # What `timeout` and `kill -- -PGID` send.
    os.killpg(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    "stop", [ctrl_c_in_terminal, sigterm_to_command, sigterm_to_group]
)
def test_stop_signal_ends_everything(pipeline_file, stop):
    path = pipeline_file(SLOW)
    command_pid_file = path.parent / "command.pid"
    napper_file = path.parent / "napper.started"

    cli = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not (command_pid_file.exists() and napper_file.exists()):
        assert time.monotonic() < deadline, "modules did not start"
        assert cli.poll() is None
        time.sleep(0.05)
    family = psutil.Process(cli.pid).children(recursive=True)
    command_pid = int(command_pid_file.read_text())

    stop(cli.pid)
    out, err = cli.communicate(timeout=30)

    assert cli.returncode == 130, err
    assert re.search(r"Sleeper +cancelled", out)
    assert re.search(r"Napper +cancelled", out)
    assert re.search(r"After +cancelled", out)
    assert not psutil.pid_exists(command_pid)
    # multiprocessing's forkserver exits on its own once its parent is gone.
    _, still_running = psutil.wait_procs(family, timeout=10)
    assert [p.pid for p in still_running] == []


def test_workflow_command_writes_yaml():
    import yaml

    result = run_cli("workflow", "github", "examples/quickstart.py", cwd=REPO_ROOT)

    assert result.returncode == 0, result.stderr
    workflow = yaml.safe_load(result.stdout)
    matrix = workflow["jobs"]["pipeline"]["strategy"]["matrix"]["include"]
    assert [entry["instance"] for entry in matrix] == [0]


def test_module_output_cannot_drive_the_terminal(pipeline_file):
    path = pipeline_file(
        """
        from pipeline_actors import Module

        class Rude(Module):
            def execute(self, ctx):
                print("before\\x1b[2J\\x1b]0;HIJACKED\\x07after")
        """
    )

    result = run_cli(path, "--local-workers", "1")

    assert result.returncode == 0, result.stderr
    assert "    │ beforeafter" in result.stdout
    assert "\x1b" not in result.stdout
