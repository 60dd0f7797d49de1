"""Fixtures shared by the suite: leftover-process checks and pipeline files."""

from __future__ import annotations

import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LEFTOVER_WAIT = 5.0
"""Seconds a test's processes get to disappear after the test ends."""


def _infrastructure_pids() -> set[int]:
    """Return the pids of multiprocessing's own long-lived helper processes."""
    pids = set()
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
