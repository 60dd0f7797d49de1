"""This project's own CI as a pipeline: lint, the test suite in shards, a wheel.

    python -m pipeline_actors examples/ci_pipeline.py --local-workers 4

`Lint` runs ruff. `CollectTests` lists the suite's node ids, and shard ``k``
of ``N`` runs every N-th id of the sorted list, starting at the k-th, so
every test runs exactly once. `Wheel` builds a wheel into ``build/wheels``.
`Report` checks that every shard passed and reported one outcome per selected
test, with at least one test, and prints the counts and where the wheel is.

Every command runs with the interpreter that runs the pipeline, which needs
the project's test extras, ruff included (``pip install -e '.[test]'``).

Environment variables, read when the pipeline is imported:
    PIPELINE_ACTORS_SHARDS: The number of test shards, 4 by default.

The shards run pytest with PIPELINE_ACTORS_INSIDE_CI_EXAMPLE=1, and the
suite's test of this pipeline skips itself when that variable is set, so the
pipeline does not start itself again from inside its own shards.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from pipeline_actors import Context, InvalidPipelineError, Module, Pipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEEL_FOLDER = REPO_ROOT / "build" / "wheels"

SHARDS_VARIABLE = "PIPELINE_ACTORS_SHARDS"
DEFAULT_SHARDS = 4
INSIDE_CI_VARIABLE = "PIPELINE_ACTORS_INSIDE_CI_EXAMPLE"
INSIDE_CI_ENV = {INSIDE_CI_VARIABLE: "1"}

# Seconds each command may take before it is killed.
LINT_TIMEOUT = 300.0
COLLECT_TIMEOUT = 300.0
SHARD_TIMEOUT = 1800.0
WHEEL_TIMEOUT = 600.0

OUTCOMES = ("passed", "failed", "errors", "skipped")


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


SHARD_COUNT = read_shard_count()


def pytest_command(*arguments: str) -> list[str]:
    # Without the cache plugin, parallel shards do not race on .pytest_cache.
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments]


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


class Lint(Module):
    """Run ``ruff check`` and ``ruff format --check`` on the repository."""

    estimated_duration = 5

    def execute(self, ctx: Context) -> dict:
        commands = {
            "ruff check": ("check", str(REPO_ROOT)),
            "ruff format --check": ("format", "--check", str(REPO_ROOT)),
        }
        statuses = {}
        for label, arguments in commands.items():
            result = ctx.run(
                sys.executable,
                "-m",
                "ruff",
                *arguments,
                cwd=REPO_ROOT,
                check=False,
                timeout=LINT_TIMEOUT,
            )
            statuses[label] = result.returncode

        # Both commands run before this check, so one run reports every problem.
        failed = [label for label, status in statuses.items() if status != 0]
        if failed:
            raise RuntimeError(f"{' and '.join(failed)} failed; their output lists why")
        return statuses


class CollectTests(Module):
    """List the node ids of the repository's test suite, sorted."""

    estimated_duration = 5

    def execute(self, ctx: Context) -> list[str]:
        result = ctx.run(
            *pytest_command("--collect-only", "-q"),
            cwd=REPO_ROOT,
            env=INSIDE_CI_ENV,
            timeout=COLLECT_TIMEOUT,
        )
        lines = result.output.splitlines()
        listing = lines[: lines.index("")] if "" in lines else lines
        return sorted(line for line in listing if "::" in line)


class PytestShard(Module):
    """Run every `SHARD_COUNT`-th collected test, from the one at `index`."""

    abstract = True
    depends_on = (CollectTests,)
    estimated_duration = 60
    index = 0

    def execute(self, ctx: Context) -> dict:
        node_ids = ctx.result(CollectTests)[self.index :: SHARD_COUNT]
        counts = dict.fromkeys(OUTCOMES, 0)
        if node_ids:
            counts = self.run_tests(ctx, node_ids)
        return {"worker": ctx.worker_id, "selected": len(node_ids), **counts}

    def run_tests(self, ctx: Context, node_ids: list[str]) -> dict[str, int]:
        with tempfile.TemporaryDirectory(prefix="ci-shard-") as folder:
            junit_xml = Path(folder) / "junit.xml"
            result = ctx.run(
                *pytest_command(f"--junitxml={junit_xml}", *node_ids),
                cwd=REPO_ROOT,
                env=INSIDE_CI_ENV,
                check=False,
                timeout=SHARD_TIMEOUT,
            )
            # CommandFailedError would quote the whole command, every node id
            # included, so the error quotes only pytest's last lines.
            if result.returncode != 0:
                tail = "\n".join(result.output.strip().splitlines()[-20:])
                msg = (
                    f"pytest exited with status {result.returncode}; last lines "
                    f"of its output:\n{tail}"
                )
                raise RuntimeError(msg)
            return count_outcomes(junit_xml)


SHARDS = [
    type(f"Shard{number}", (PytestShard,), {"index": number - 1})
    for number in range(1, SHARD_COUNT + 1)
]


class Wheel(Module):
    """Build the project's wheel into ``build/wheels`` and return its path."""

    estimated_duration = 20

    def execute(self, ctx: Context) -> str:
        WHEEL_FOLDER.mkdir(parents=True, exist_ok=True)
        # Building into a fresh folder separates this build's wheel from older
        # ones in build/wheels.
        with tempfile.TemporaryDirectory(dir=WHEEL_FOLDER.parent) as folder:
            ctx.run(
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--wheel-dir",
                folder,
                str(REPO_ROOT),
                cwd=REPO_ROOT,
                timeout=WHEEL_TIMEOUT,
            )
            built = list(Path(folder).glob("*.whl"))
            if len(built) != 1:
                names = [path.name for path in built]
                raise RuntimeError(f"expected one wheel from pip, found {names}")
            wheel = WHEEL_FOLDER / built[0].name
            shutil.move(built[0], wheel)
        return str(wheel)


def describe_shard_problem(name: str, shard: dict) -> str | None:
    if shard["failed"] or shard["errors"]:
        return f"{name} had {shard['failed']} failed and {shard['errors']} errors"
    ran = sum(shard[outcome] for outcome in OUTCOMES)
    if ran == 0:
        return (
            f"{name} ran no tests; the suite may have fewer tests than the "
            f"{SHARD_COUNT} shards, so lower {SHARDS_VARIABLE}"
        )
    if ran != shard["selected"]:
        return f"{name} selected {shard['selected']} tests but reported {ran}"
    return None


class Report(Module):
    """Check every shard's counts, and print them and where the wheel is."""

    depends_on = (Lint, *SHARDS, Wheel)
    estimated_duration = 0

    def execute(self, ctx: Context) -> dict:
        shards = {shard.name: ctx.result(shard) for shard in SHARDS}
        wheel = ctx.result(Wheel)

        print(f"wheel: {wheel}")
        for name, shard in shards.items():
            counts = ", ".join(f"{shard[outcome]} {outcome}" for outcome in OUTCOMES)
            print(f"{name} on worker {shard['worker']}: {counts}")
        workers = sorted({shard["worker"] for shard in shards.values()})
        print(f"the shards ran on {len(workers)} workers: {', '.join(workers)}")

        problems = [describe_shard_problem(name, s) for name, s in shards.items()]
        problems = [problem for problem in problems if problem is not None]
        if problems:
            raise RuntimeError("; ".join(problems))
        return {"wheel": wheel, "shards": shards}


pipeline = Pipeline(Lint, CollectTests, *SHARDS, Wheel, Report)
