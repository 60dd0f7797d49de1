"""Fixtures shared by the suite: leftover-process checks and pipeline files."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LEFTOVER_WAIT = 5.0
"""Seconds a test's processes get to disappear after the test ends."""


SUITE_PROCESSES: set[int] = set()
"""Pids of servers the suite keeps for all its tests, such as redis-server."""


def _infrastructure_pids() -> set[int]:
    """Return the pids of helper processes that outlive a single test."""
    pids = set(SUITE_PROCESSES)
    forkserver = getattr(
        multiprocessing.forkserver._forkserver, "_forkserver_pid", None
    )
    tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    for pid in (forkserver, tracker):
        if pid:
            pids.add(pid)
    return pids


def leftover_processes() -> list[psutil.Process]:
    """Return descendants of this test process other than multiprocessing's helpers."""
    infrastructure = _infrastructure_pids()
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid in infrastructure or child.status() == psutil.STATUS_ZOMBIE:
                continue
            leftovers.append(child)
        except psutil.NoSuchProcess:
            continue
    return leftovers


def wait_for_no_leftovers(timeout: float = LEFTOVER_WAIT) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    leftovers = leftover_processes()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.05)
        leftovers = leftover_processes()
    return leftovers


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves any process of its own running."""
    yield
    leftovers = wait_for_no_leftovers()
    descriptions = []
    for process in leftovers:
        try:
            descriptions.append(f"{process.pid} {process.cmdline()}")
        except psutil.Error:
            descriptions.append(str(process.pid))
        process.kill()
    assert not descriptions, f"processes left running: {descriptions}"


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a pipeline file from source text and return its path."""

    def write(source: str, name: str = "pipeline.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline_actors` and return its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_actors", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class RedisServer:
    """A private redis-server, by default on a free loopback port.

    `server_args` go on the server's command line after the defaults. A
    server on a Unix socket, or one with TLS or a password, also needs `url`,
    the URL that clients connect with. It needs `cli_args` too, the redis-cli
    options that reach it, which are ``-p PORT`` by default. `requirement`
    names what the server needs beyond a plain redis-server, for the failure
    message when it does not start.
    """

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        server_args: Sequence[str] = (),
        url: str | None = None,
        cli_args: Sequence[str] | None = None,
        requirement: str | None = None,
    ) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server is not installed; the Redis tests need it "
                "(Debian: apt-get install redis-server). .ci/run installs it."
            )
        self.port = free_port() if port is None else port
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        self.cli_args = ["-p", str(self.port)] if cli_args is None else list(cli_args)
        self.log_path = folder / "redis-server.log"
        self.requirement = requirement
        command = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(folder),
            *server_args,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT
            )
        SUITE_PROCESSES.add(self.process.pid)
        self._wait_until_ready()

    def cli(self, *args: str, last_argument: bytes | None = None) -> str:
        """Run redis-cli against this server and return what it printed.

        `last_argument` is passed on stdin with ``-x``, which keeps any byte,
        NUL included, that a command-line argument cannot carry.
        """
        extra = ["-x"] if last_argument is not None else []
        result = subprocess.run(
            ["redis-cli", *self.cli_args, *extra, *args],
            input=last_argument,
            capture_output=True,
            timeout=10,
            check=True,
        )
        return result.stdout.decode()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        SUITE_PROCESSES.discard(self.process.pid)

    def _wait_until_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        answer = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                SUITE_PROCESSES.discard(self.process.pid)
                pytest.fail(
                    f"redis-server exited with status {self.process.returncode}"
                    + self._requirement_text()
                    + f"; its output ends with:\n{self._log_tail()}"
                )
            ping = subprocess.run(
                ["redis-cli", *self.cli_args, "ping"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            answer = (ping.stdout + ping.stderr).strip()
            if ping.returncode == 0 and answer == "PONG":
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"redis-server did not answer redis-cli's PING in {timeout:g} s"
            + self._requirement_text()
            + f"; the last answer was {answer!r}"
        )

    def _requirement_text(self) -> str:
        return f" (it needs {self.requirement})" if self.requirement else ""

    def _log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """Return a loopback TCP port that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
