"""Runs across processes that share only a Redis URL, a run id and a secret."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from pipeline_actors.mailbox import encode
from pipeline_actors.mailbox.signing import Signer
from pipeline_actors.runtime import os_capability

from conftest import run_cli

SECRET = "distributed-test-secret"

DIAMOND = """
    from pipeline_actors import Module

    class Source(Module):
        def execute(self, ctx):
            return 10

    class Left(Module):
        depends_on = [Source]

        def execute(self, ctx):
            return ctx.result(Source) + 1

    class Right(Module):
        depends_on = [Source]

        def execute(self, ctx):
            return ctx.result(Source) * 3

    class Sink(Module):
        depends_on = [Left, Right]

        def execute(self, ctx):
            total = ctx.result(Left) + ctx.result(Right)
            print(f"sink total {total}")
            return total
"""

SLOW = """
    import time
    from pipeline_actors import Module

    class Slow(Module):
        def execute(self, ctx):
            time.sleep(1.5)
            return "slow done"
"""


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


def instance_env(redis_server, run_id: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "PIPELINE_ACTORS_RUN_ID": run_id,
        "PIPELINE_ACTORS_SECRET": SECRET,
        **extra,
    }


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", "worker", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    return out, err


def summary_rows(out: str) -> dict[str, tuple[str, str]]:
    """Return {module: (status, worker)} from the summary table."""
    rows = re.findall(
        r"^\s+(\w+)\s+(succeeded|failed|skipped|cancelled)\s+(\S+)", out, re.M
    )
    return {module: (status, worker) for module, status, worker in rows}


def wait_for_registrations(redis_server, run_id: str, count: int) -> None:
    key = f"pipeline_actors:{{{run_id}}}:workers"
    deadline = time.monotonic() + 30
    while int(redis_server.cli("hlen", key) or 0) < count:
        assert time.monotonic() < deadline, "workers did not register"
        time.sleep(0.05)


def test_master_and_two_workers_run_a_diamond(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    workers = [
        start_worker(env, "--instance-index", str(index), "--local-workers", "1")
        for index in (1, 2)
    ]

    master = run_cli(
        pipeline_file(DIAMOND), "--local-workers", "0", "--min-workers", "2", env=env
    )
    worker_results = [finish(worker) for worker in workers]

    assert master.returncode == 0, master.stderr
    assert "sink total 41" in master.stdout
    rows = summary_rows(master.stdout)
    assert set(rows) == {"Source", "Left", "Right", "Sink"}
    for status, worker in rows.values():
        assert status == "succeeded"
        assert worker in {"1.1", "2.1"}
    for worker, (_, err) in zip(workers, worker_results, strict=True):
        assert worker.returncode == 0, err


def test_worker_started_first_waits_for_master(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")
    wait_for_registrations(redis_server, run_id, 1)

    master = run_cli(pipeline_file(DIAMOND), "--local-workers", "0", env=env)
    finish(worker)

    assert master.returncode == 0, master.stderr
    assert {w for _, w in summary_rows(master.stdout).values()} == {"1.1"}
    assert worker.returncode == 0


def test_two_runs_on_one_redis_stay_apart(redis_server, tmp_path):
    masters, workers = [], []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        module_name = f"Only{name.title()}"
        (folder / "pipeline.py").write_text(
            "from pipeline_actors import Module\n"
            f"class {module_name}(Module):\n"
            "    def execute(self, ctx):\n"
            f"        return '{name}'\n"
        )
        env = instance_env(redis_server, new_run_id())
        workers.append(
            start_worker(env, "--instance-index", "1", "--local-workers", "1")
        )
        masters.append(
            subprocess.Popen(
                [sys.executable, "-m", "pipeline_actors", str(folder / "pipeline.py"),
                 "--local-workers", "0", "--min-workers", "1"],
                env={**os.environ, **env}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
        )  # fmt: skip

    outputs = [finish(master)[0] for master in masters]
    for worker in workers:
        finish(worker)

    assert set(summary_rows(outputs[0])) == {"OnlyFirst"}
    assert set(summary_rows(outputs[1])) == {"OnlySecond"}
    assert [m.returncode for m in masters] == [0, 0]
    assert [w.returncode for w in workers] == [0, 0]


def test_second_master_under_live_run_id_is_refused(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    path = pipeline_file(SLOW)
    first = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "1"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    key = f"pipeline_actors:{{{run_id}}}:master"
    deadline = time.monotonic() + 30
    while redis_server.cli("exists", key).strip() != "1":
        assert time.monotonic() < deadline, "first master did not claim the run"
        time.sleep(0.05)

    second = run_cli(path, "--local-workers", "1", env=env)
    _, err = finish(first)

    assert second.returncode == 2
    assert f"run id {run_id!r} is taken" in second.stderr
    assert "give this run another id" in second.stderr
    assert first.returncode == 0, err
    assert "slow done" not in second.stdout


def evil_pickle(marker: Path) -> bytes:
    """Return a pickle that creates `marker` when it is unpickled."""

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps(Evil())


def test_bad_messages_are_dropped_and_never_unpickled(
    redis_server, pipeline_file, tmp_path
):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    markers = [tmp_path / f"unpickled-{n}" for n in range(3)]
    sealed = bytearray(Signer(SECRET.encode(), run_id).seal(evil_pickle(markers[0])))
    sealed[len(sealed) // 2] ^= 0x01
    other_run = Signer(SECRET.encode(), "other-run").seal(evil_pickle(markers[2]))
    inbox = f"pipeline_actors:{{{run_id}}}:mailbox:worker:1.1"
    for envelope in (bytes(sealed), evil_pickle(markers[1]), other_run, b"\x00garbage"):
        redis_server.cli("rpush", inbox, last_argument=envelope)

    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")
    master = run_cli(pipeline_file(DIAMOND), "--local-workers", "0", env=env)
    _, worker_log = finish(worker)

    assert master.returncode == 0, master.stderr
    assert worker.returncode == 0, worker_log
    assert (
        "Dropped messages on mailbox worker:1.1 without unpickling them" in worker_log
    )
    assert "unsigned or tampered with" in worker_log
    assert "not a message" in worker_log
    assert "from another run" in worker_log
    assert "(4 in all)" in worker_log
    assert not any(marker.exists() for marker in markers)


def test_signed_message_from_this_run_is_read():
    signer = Signer(SECRET.encode(), "run")

    assert signer.open(signer.seal(encode("hello"))) == encode("hello")


def test_unreachable_redis_exits_three(pipeline_file):
    started = time.monotonic()
    result = run_cli(
        pipeline_file(DIAMOND),
        "--redis",
        "redis://admin:hunter2@127.0.0.1:1/0",
        env={"PIPELINE_ACTORS_SECRET": SECRET},
    )

    assert result.returncode == 3
    assert time.monotonic() - started < 10
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_redis_without_secret_is_refused(redis_server, pipeline_file):
    result = run_cli(pipeline_file(DIAMOND), "--redis", redis_server.url)

    assert result.returncode == 2
    assert "needs a shared secret" in result.stderr
    assert "PIPELINE_ACTORS_SECRET" in result.stderr


def test_insecure_runs_with_a_warning(redis_server, pipeline_file):
    result = run_cli(
        pipeline_file(DIAMOND), "--redis", redis_server.url, "--insecure",
        "--local-workers", "1",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "without a secret (--insecure)" in result.stderr


def test_several_instances_need_a_run_id(redis_server, pipeline_file):
    result = run_cli(
        pipeline_file(DIAMOND), "--redis", redis_server.url, "--total-instances", "3",
        env={"PIPELINE_ACTORS_SECRET": SECRET},
    )  # fmt: skip

    assert result.returncode == 2
    assert "a run of 3 instances needs one run id" in result.stderr
    assert "PIPELINE_ACTORS_RUN_ID" in result.stderr


def test_empty_pipeline_releases_the_workers(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")
    wait_for_registrations(redis_server, run_id, 1)

    master = run_cli(pipeline_file("from pipeline_actors import Module\n"), env=env)
    finish(worker)

    assert master.returncode == 0, master.stderr
    assert worker.returncode == 0


def test_local_workers_share_redis_with_remote_ones(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")

    master = run_cli(
        pipeline_file(DIAMOND), "--local-workers", "1", "--min-workers", "2", env=env
    )
    finish(worker)

    assert master.returncode == 0, master.stderr
    used = {w for _, w in summary_rows(master.stdout).values()}
    assert used <= {"0.1", "1.1"}
    assert worker.returncode == 0


def test_print_config_masks_secrets(redis_server, pipeline_file):
    result = run_cli(
        pipeline_file(DIAMOND), "--print-config",
        "--redis", "redis://user:topsecret@127.0.0.1:6379/0",
        env={"PIPELINE_ACTORS_SECRET": "hush", "MODULARPIPELINES_RUN_ID": "ci-42"},
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    assert "hush" not in result.stdout
    assert "redis://user:***@127.0.0.1:6379/0" in result.stdout
    assert re.search(
        r"run_id += ci-42 +\(environment MODULARPIPELINES_RUN_ID\)", result.stdout
    )
    assert re.search(
        r"role += master +\(derived from instance index 0\)", result.stdout
    )


@pytest.mark.timeout(180)
def test_large_result_travels_by_reference(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    path = pipeline_file(
        """
        import hashlib
        from pipeline_actors import Module

        class Big(Module):
            def execute(self, ctx):
                return bytes(range(256)) * (40 * 1024 * 1024 // 256)

        class Check(Module):
            depends_on = [Big]

            def execute(self, ctx):
                data = ctx.result(Big)
                digest = hashlib.sha256(data).hexdigest()[:12]
                print(f"received {len(data)} bytes, sha {digest}")
        """
    )
    expected = hashlib.sha256(bytes(range(256)) * (40 * 1024 * 1024 // 256))
    workers = [
        start_worker(env, "--instance-index", str(i), "--local-workers", "1")
        for i in (1, 2)
    ]

    master = run_cli(
        path, "--local-workers", "0", "--min-workers", "2", env=env, timeout=150
    )
    for worker in workers:
        finish(worker)

    assert master.returncode == 0, master.stderr
    assert (
        f"received {40 * 1024 * 1024} bytes, sha {expected.hexdigest()[:12]}"
        in master.stdout
    )
    keys = redis_server.cli(
        "--scan", "--pattern", f"pipeline_actors:{{{run_id}}}:result:*"
    )
    assert keys.split() == [f"pipeline_actors:{{{run_id}}}:result:Big:1"]


def test_worker_exits_when_its_master_dies(redis_server, pipeline_file, tmp_path):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    started = tmp_path / "summary.started"
    path = pipeline_file(
        f"""
        import time
        from pathlib import Path
        from pipeline_actors import Module

        class Quick(Module):
            def execute(self, ctx):
                return 1

        class Wait(Module):
            depends_on = [Quick]
            pin_to_master = True

            def execute(self, ctx):
                Path({str(started)!r}).write_text("")
                time.sleep(60)
        """
    )
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")
    master = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "0",
         "--heartbeat-timeout", "2", "--min-workers", "1"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the pinned module did not start"
        time.sleep(0.05)
    family = psutil.Process(master.pid).children(recursive=True)

    master.kill()
    master.wait(timeout=10)
    _, worker_log = finish(worker, timeout=30)
    # The master's own actors notice that their supervisor died, and exit.
    _, alive = psutil.wait_procs(family, timeout=10)
    master.communicate(timeout=10)

    assert worker.returncode == 1
    assert "The master of the run is gone" in worker_log
    assert [p.pid for p in alive] == []


def test_impossible_module_fails_once_every_instance_registered(
    redis_server, pipeline_file
):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    path = pipeline_file(
        """
        from pipeline_actors import Module

        class Train(Module):
            requires = ["GPU"]

            def execute(self, ctx):
                return 1

        class Evaluate(Module):
            depends_on = [Train]

            def execute(self, ctx):
                return 2

        class Docs(Module):
            def execute(self, ctx):
                return 3
        """
    )
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "2")

    started = time.monotonic()
    master = run_cli(
        path, "--local-workers", "0", "--total-instances", "2",
        "--capability-timeout", "120", env=env,
    )  # fmt: skip
    finish(worker)

    assert time.monotonic() - started < 60
    assert master.returncode == 1
    assert "no worker can run it: it requires capabilities [gpu]" in master.stdout
    assert "worker 1.1 offers [linux], missing [gpu]" in master.stdout
    assert "worker 1.2 offers [linux], missing [gpu]" in master.stdout
    rows = summary_rows(master.stdout)
    assert rows["Evaluate"][0] == "skipped"
    assert rows["Docs"][0] == "succeeded"
    assert worker.returncode == 0


def test_capabilities_route_to_the_right_workers(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    path = pipeline_file(
        """
        import os
        from pipeline_actors import Module

        class Train(Module):
            requires = ["GPU"]

            def execute(self, ctx):
                return ctx.worker_id

        class Package(Module):
            requires = ["docker"]

            def execute(self, ctx):
                return ctx.worker_id

        class Summary(Module):
            depends_on = [Train, Package]
            pin_to_master = True

            def execute(self, ctx):
                print(f"summary in pid {os.getpid()}")

        class Synthesize(Module):
            requires = ["fpga"]

            def execute(self, ctx):
                return "never"
        """
    )
    workers = [
        start_worker(env, "--instance-index", "1", "--local-workers", "1",
                     "--capability", "gpu"),
        start_worker(env, "--instance-index", "2", "--local-workers", "1",
                     "--capability", "Docker", "--no-os-capability"),
    ]  # fmt: skip

    master = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "0",
         "--min-workers", "2", "--capability-timeout", "3"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    out, err = finish(master)
    for worker in workers:
        finish(worker)

    rows = summary_rows(out)
    assert master.returncode == 1, err
    assert rows["Train"] == ("succeeded", "1.1")
    assert rows["Package"] == ("succeeded", "2.1")
    assert rows["Summary"] == ("succeeded", "master")
    assert f"summary in pid {master.pid}" in out
    assert rows["Synthesize"][0] == "failed"
    assert "it requires capabilities [fpga] and waited 3 s" in out
    assert f"worker 1.1 offers [gpu, {os_capability()}], missing [fpga]" in out
    assert "worker 2.1 offers [docker], missing [fpga]" in out
    assert [w.returncode for w in workers] == [0, 0]


FAN_IN = """
    import time
    from pipeline_actors import Module, Pipeline

    def part(index):
        class Part(Module):
            name = f"part{index}"

            def execute(self, ctx):
                time.sleep(0.05)
                return index

        return Part

    PARTS = [part(index) for index in range(6)]

    class Total(Module):
        depends_on = PARTS

        def execute(self, ctx):
            total = sum(ctx.result(p) for p in PARTS)
            print(f"total {total}")
            return total

    pipeline = Pipeline(*PARTS, Total)
"""


def test_prefetch_sends_modules_ahead_over_redis(redis_server, pipeline_file):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    worker = start_worker(env, "--instance-index", "1", "--local-workers", "1")

    master = run_cli(
        pipeline_file(FAN_IN),
        "--local-workers", "0", "--min-workers", "1", "--prefetch", "1",
        env=env,
    )  # fmt: skip
    _, worker_err = finish(worker)

    assert master.returncode == 0, master.stderr
    assert "total 15" in master.stdout
    assert re.search(
        r"sent ahead\s+part\d to worker 1\.1, to run after part\d", master.stdout
    )
    rows = summary_rows(master.stdout)
    assert {worker for _, worker in rows.values()} == {"1.1"}
    assert worker.returncode == 0, worker_err


@pytest.mark.timeout(240)
def test_terminated_worker_instance_is_replaced(redis_server, pipeline_file, tmp_path):
    run_id = new_run_id()
    env = instance_env(redis_server, run_id)
    marker = tmp_path / "first.attempt"
    path = pipeline_file(
        f"""
        from pathlib import Path
        from pipeline_actors import Module

        class Build(Module):
            def execute(self, ctx):
                if ctx.attempt == 1:
                    Path({str(marker)!r}).write_text(ctx.worker_id)
                    ctx.run("sleep", "60")
                return f"built on attempt {{ctx.attempt}}"
        """
    )
    workers = {
        index: start_worker(env, "--instance-index", index, "--local-workers", "1")
        for index in ("1", "2")
    }
    master = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "0",
         "--heartbeat-timeout", "4", "--min-workers", "2", "--display", "lines"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the first attempt did not start"
        assert master.poll() is None
        time.sleep(0.05)
    doomed = workers[marker.read_text().split(".")[0]]
    family = psutil.Process(doomed.pid).children(recursive=True)

    doomed.send_signal(signal.SIGTERM)
    out, err = master.communicate(timeout=90)
    results = {index: finish(worker) for index, worker in workers.items()}
    _, alive = psutil.wait_procs(family, timeout=10)

    assert doomed.returncode == -signal.SIGTERM
    assert master.returncode == 0, err
    status, worker_id = summary_rows(out)["Build"]
    assert status == "succeeded"
    assert worker_id != marker.read_text()
    assert "was lost during attempt 1; retrying" in out
    survivor = next(w for w in workers.values() if w is not doomed)
    assert survivor.returncode == 0, results
    assert [p.pid for p in alive] == []
