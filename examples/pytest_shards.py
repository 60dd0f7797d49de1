"""Run the pytest suite of any Python project in shards across workers.

    PIPELINE_ACTORS_PROJECT=/path/to/project \\
        python -m pipeline_actors examples/pytest_shards.py --local-workers 4

`Collect` lists the project's tests with ``pytest --collect-only -q``. Shard
``k`` of ``N`` runs every N-th node id of the sorted list, starting at the
k-th, so every collected test runs exactly once. The pinned `Totals` module
sums the shards' counts, prints them, checks that each shard reported one
outcome per selected test, and fails the run when a test failed.

Environment variables, read when the pipeline is imported:
    PIPELINE_ACTORS_PROJECT: The project folder (required). pytest runs in it,
        with the interpreter that runs the pipeline, so the project and its
        test requirements must be installed there.
    PIPELINE_ACTORS_SHARDS: The number of shard modules, 4 by default.

Counts come from each shard's JUnit XML report, one outcome per test case.
pytest's terminal summary differs in two ways: an expected failure (xfail)
counts as skipped, and a test that passes but then errors in teardown counts
only as an error, where pytest's summary counts it as passed and as an error.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from pipeline_actors import (
    CommandResult,
    Context,
    InvalidPipelineError,
    Module,
    Pipeline,
)

PROJECT_VARIABLE = "PIPELINE_ACTORS_PROJECT"
SHARDS_VARIABLE = "PIPELINE_ACTORS_SHARDS"
DEFAULT_SHARDS = 4

COLLECT_TIMEOUT = 600.0
"""Seconds `Collect` lets pytest take to list the tests."""

SHARD_TIMEOUT = 3600.0
"""Seconds a shard lets pytest take to run its tests."""

ARGUMENT_FILE_THRESHOLD = 100_000
"""Bytes of node ids above which a shard passes them in an argument file.

Linux caps the command line and environment together (ARG_MAX, a quarter of
the stack limit, so 2 MiB with the usual 8 MiB stack), and a very large shard
would fail to start with its node ids in argv. The 100 kB threshold is a
margin well below that cap, not a measured limit.
"""

ARGUMENT_FILE_PYTEST = (8, 2)
"""First pytest version that reads arguments from an ``@file`` argument."""

PYTEST_OK = 0
PYTEST_TESTS_FAILED = 1
PYTEST_NO_TESTS_COLLECTED = 5

OUTCOMES = ("passed", "failed", "errors", "skipped")
MAX_ERROR_LINES = 40
"""Lines of pytest's collection errors quoted in the `Collect` failure."""


class FailedTestsError(Exception):
    """Raised by `Totals` when a test failed or had an error."""


def read_project_folder() -> Path:
    value = os.environ.get(PROJECT_VARIABLE, "")
    if not value:
        msg = (
            f"{PROJECT_VARIABLE} is not set; set it to the folder of the Python "
            f"project whose tests to run"
        )
        raise InvalidPipelineError(msg)

    folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        msg = (
            f"{PROJECT_VARIABLE} is {value!r}, which is not a folder; set it to "
            f"the folder of the Python project whose tests to run"
        )
        raise InvalidPipelineError(msg)
    return folder


def read_shard_count() -> int:
    value = os.environ.get(SHARDS_VARIABLE, str(DEFAULT_SHARDS))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        msg = f"{SHARDS_VARIABLE} must be a whole number of 1 or more, got {value!r}"
        raise InvalidPipelineError(msg)
    return count


PROJECT = read_project_folder()
SHARD_COUNT = read_shard_count()


def pytest_command(*arguments: str) -> list[str]:
    # The cache plugin would write .pytest_cache into the project, and its
    # --lf or --ff options would make a shard run other tests than its own.
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        # Node ids are relative to the rootdir and arguments to the working
        # folder, so the two must be the same folder.
        f"--rootdir={PROJECT}",
        *arguments,
    ]


def read_pytest_version(ctx: Context) -> tuple[int, ...]:
    result = ctx.run(*pytest_command("--version"), cwd=PROJECT, timeout=60)
    match = re.search(r"pytest (\d+)\.(\d+)", result.output)
    if match is None:
        msg = f"cannot read the pytest version from: {result.output.strip()!r}"
        raise RuntimeError(msg)
    return (int(match.group(1)), int(match.group(2)))


def parse_collected_node_ids(result: CommandResult) -> list[str]:
    """Return the node ids listed by ``pytest --collect-only -q``, sorted."""
    if result.returncode == PYTEST_NO_TESTS_COLLECTED:
        return []
    if result.returncode != PYTEST_OK:
        raise RuntimeError(describe_collection_failure(result))

    lines = result.output.splitlines()
    listing = lines[: lines.index("")] if "" in lines else lines
    # Every test item's node id has a "::" after its file's path. Other lines
    # before the first blank line are output of the project's own plugins.
    node_ids = [line for line in listing if "::" in line]

    expected = read_collected_count(lines)
    if expected != len(node_ids):
        found = "no count" if expected is None else f"a count of {expected}"
        msg = (
            f"cannot read the node ids from pytest --collect-only -q: it listed "
            f"{len(node_ids)} node ids and printed {found}; the project's "
            f"addopts may change the verbosity, which must leave one -q"
        )
        raise RuntimeError(msg)
    return sorted(node_ids)


def read_collected_count(lines: list[str]) -> int | None:
    """Return the count of pytest's "N tests collected" line, or None."""
    # Verbosity 0 frames the line in "=" signs, and -qq leaves it out.
    pattern = re.compile(r"^=*\s*(?:(\d+)/)?(\d+) tests? collected")
    for line in reversed(lines):
        match = pattern.match(line)
        if match is not None:
            return int(match.group(1) or match.group(2))
    return None


def describe_collection_failure(result: CommandResult) -> str:
    headline = (
        f"pytest could not collect the tests of {PROJECT} "
        f"(exit status {result.returncode})"
    )
    if result.returncode < 0:
        return (
            f"{headline}: killed, possibly after the timeout of {COLLECT_TIMEOUT:g} s"
        )

    # Keep each "ERROR collecting <file>" heading and the "E   ..." lines of
    # its traceback, which name the file and the exception.
    lines = []
    for line in result.output.splitlines():
        heading = re.fullmatch(r"_+ (ERROR collecting .*?) _+", line)
        if heading is not None:
            lines.append(heading.group(1))
        elif line.startswith("E   "):
            lines.append(f"  {line}")
    if not lines:
        lines = result.output.strip().splitlines()[-MAX_ERROR_LINES:]
    return f"{headline}:\n" + "\n".join(lines[:MAX_ERROR_LINES])


def select_shard(node_ids: list[str], index: int, count: int) -> list[str]:
    """Return the node ids of shard `index` (from 0) of `count`, round-robin."""
    return node_ids[index::count]


def node_id_arguments(
    node_ids: list[str], scratch: Path, pytest_version: tuple[int, ...]
) -> list[str]:
    """Return the pytest arguments that select `node_ids`, one argument per id.

    Long lists go into an argument file, one id per line, when the pytest
    version reads ``@file`` arguments. pytest escapes control characters in
    parametrize ids, so a node id has no newline to break that format.

    NOTE: a project that turns the escaping off, with the ini option
    ``disable_test_id_escaping_and_forfeit_all_rights_to_community_support``,
    can have an id with a newline. ``--collect-only -q`` prints it over two
    lines, and the shard that runs it fails with pytest's "not found" error.
    """
    size = sum(len(node_id.encode()) + 1 for node_id in node_ids)
    if size <= ARGUMENT_FILE_THRESHOLD or pytest_version < ARGUMENT_FILE_PYTEST:
        return list(node_ids)

    argument_file = scratch / "node_ids.txt"
    argument_file.write_text("".join(f"{node_id}\n" for node_id in node_ids))
    return [f"@{argument_file}"]


def count_outcomes(junit_xml: Path) -> dict[str, int]:
    """Count the test cases of a JUnit XML report by outcome.

    Each test case counts once, by the first of failure, error and skipped
    that it records, and as passed when it records none.
    """
    counts = dict.fromkeys(OUTCOMES, 0)
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        if case.find("failure") is not None:
            counts["failed"] += 1
        elif case.find("error") is not None:
            counts["errors"] += 1
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts


def check_shard_exit(result: CommandResult, junit_xml: Path) -> None:
    """Raise unless pytest ran the shard's tests, whether or not they passed."""
    if result.returncode in (PYTEST_OK, PYTEST_TESTS_FAILED) and junit_xml.is_file():
        return

    tail = "\n".join(result.output.strip().splitlines()[-20:])
    msg = f"pytest exited with status {result.returncode}"
    if result.returncode < 0:
        msg += f", killed, possibly after the timeout of {SHARD_TIMEOUT:g} s"
    elif not junit_xml.is_file():
        msg += " without writing its JUnit XML report"
    raise RuntimeError(f"{msg}; last lines of its output:\n{tail}")


class Collect(Module):
    """List the project's test node ids and the pytest version that runs them."""

    estimated_duration = 5

    def execute(self, ctx: Context) -> dict:
        version = read_pytest_version(ctx)
        result = ctx.run(
            *pytest_command("--collect-only", "-q"),
            cwd=PROJECT,
            check=False,
            timeout=COLLECT_TIMEOUT,
        )
        node_ids = parse_collected_node_ids(result)
        version_text = ".".join(map(str, version))
        ctx.log.info("Collected {} tests with pytest {}", len(node_ids), version_text)
        return {"node_ids": node_ids, "pytest_version": version}


class PytestShard(Module):
    """Run the tests of shard `index` (from 0) and count their outcomes."""

    abstract = True
    depends_on = (Collect,)
    estimated_duration = 60
    index = 0

    def execute(self, ctx: Context) -> dict:
        collected = ctx.result(Collect)
        node_ids = select_shard(collected["node_ids"], self.index, SHARD_COUNT)
        counts = dict.fromkeys(OUTCOMES, 0)
        if node_ids:
            counts = self.run_tests(ctx, node_ids, collected["pytest_version"])
        return {
            "shard": self.name,
            "worker": ctx.worker_id,
            "selected": len(node_ids),
            **counts,
        }

    def run_tests(
        self, ctx: Context, node_ids: list[str], pytest_version: tuple[int, ...]
    ) -> dict[str, int]:
        with tempfile.TemporaryDirectory(prefix="pytest-shard-") as folder:
            scratch = Path(folder)
            junit_xml = scratch / "junit.xml"
            selection = node_id_arguments(node_ids, scratch, pytest_version)
            result = ctx.run(
                *pytest_command(f"--junitxml={junit_xml}", *selection),
                cwd=PROJECT,
                check=False,
                timeout=SHARD_TIMEOUT,
            )
            check_shard_exit(result, junit_xml)
            return count_outcomes(junit_xml)


SHARDS = [
    type(f"Shard{number}", (PytestShard,), {"index": number - 1})
    for number in range(1, SHARD_COUNT + 1)
]


def format_table(shards: list[dict], totals: dict[str, int]) -> str:
    columns = ("selected", *OUTCOMES)
    lines = ["shard     worker " + "".join(f"{name:>9}" for name in columns)]
    for shard in shards:
        counts = "".join(f"{shard[name]:>9}" for name in columns)
        lines.append(f"{shard['shard']:<9} {shard['worker']:<6} {counts}")
    counts = "".join(f"{totals[name]:>9}" for name in columns)
    lines.append(f"{'total':<9} {'':<6} {counts}")
    return "\n".join(lines)


def check_every_test_ran_once(shards: list[dict], collected: int) -> None:
    mismatched = [
        f"{shard['shard']} selected {shard['selected']} and reported "
        f"{sum(shard[outcome] for outcome in OUTCOMES)}"
        for shard in shards
        if shard["selected"] != sum(shard[outcome] for outcome in OUTCOMES)
    ]
    selected = sum(shard["selected"] for shard in shards)
    if selected != collected:
        mismatched.append(f"the shards selected {selected} of {collected} tests")
    if mismatched:
        msg = "some tests ran more than once or not at all: " + "; ".join(mismatched)
        raise RuntimeError(msg)


def check_no_test_failed(totals: dict[str, int]) -> None:
    if totals["failed"] or totals["errors"]:
        msg = (
            f"failed: {totals['failed']}, errors: {totals['errors']}, out of "
            f"{totals['selected']} tests; the pytest output of each shard names them"
        )
        raise FailedTestsError(msg)


class Totals(Module):
    """Sum the shards' counts, print them, and fail when a test failed."""

    pin_to_master = True
    depends_on = (Collect, *SHARDS)
    estimated_duration = 0

    def execute(self, ctx: Context) -> dict:
        collected = len(ctx.result(Collect)["node_ids"])
        shards = [ctx.result(shard) for shard in SHARDS]
        columns = ("selected", *OUTCOMES)
        totals = {name: sum(shard[name] for shard in shards) for name in columns}

        print(format_table(shards, totals))
        check_every_test_ran_once(shards, collected)
        check_no_test_failed(totals)
        return {"shards": shards, "totals": totals}


pipeline = Pipeline(Collect, *SHARDS, Totals)
