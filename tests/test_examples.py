"""The pipelines in examples/: pytest in shards, and this project's own CI."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import leftover_processes

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
PYTEST_SHARDS = EXAMPLES / "pytest_shards.py"
CI_PIPELINE = EXAMPLES / "ci_pipeline.py"

PROJECT_VARIABLE = "PIPELINE_ACTORS_PROJECT"
SHARDS_VARIABLE = "PIPELINE_ACTORS_SHARDS"
INSIDE_CI_VARIABLE = "PIPELINE_ACTORS_INSIDE_CI_EXAMPLE"
MARKER_VARIABLE = "PIPELINE_ACTORS_EXAMPLE_TEST_RUN"
"""Set to a fresh id in each example run, to find the processes it started."""

RUN_TIMEOUT = 150.0
LEFTOVER_TIMEOUT = 5.0
"""Seconds the processes of a finished run get to disappear."""

OUTCOMES = ("passed", "failed", "errors", "skipped")

SAMPLE_TESTS = """
import pytest


def test_add():
    assert 1 + 1 == 2


def test_subtract():
    assert 2 - 1 == 1


def test_wrong_sum():
    assert 1 + 1 == 3


@pytest.mark.parametrize(
    "text", ["plain", "with space", "[brackets]", "a::b", "\\u00fcml\\u00e4ut"]
)
def test_text(text):
    assert text != "[brackets]"


@pytest.mark.skip(reason="not written yet")
def test_skipped():
    pass


@pytest.mark.skipif(True, reason="never on this platform")
def test_skipped_conditionally():
    pass


@pytest.fixture
def broken_resource():
    raise RuntimeError("setup failed")


def test_setup_error(broken_resource):
    pass


@pytest.mark.xfail(reason="known bug")
def test_expected_failure():
    assert False
"""

SAMPLE_GROUP_TESTS = """
import pytest


class TestGroup:
    def test_first(self):
        pass

    def test_second(self):
        pass

    @pytest.mark.parametrize("number", range(3))
    def test_small(self, number):
        assert number < 2
"""

SAMPLE_SUMMARY = {"passed": 10, "failed": 3, "skipped": 2, "xfailed": 1, "errors": 1}
"""pytest's terminal summary of the sample project, counted by hand."""

VERBOSE_OUTCOMES = {
    "PASSED": "passed",
    "XPASS": "passed",
    "FAILED": "failed",
    "ERROR": "errors",
    "SKIPPED": "skipped",
    "XFAIL": "skipped",
}
"""The JUnit XML outcome, which the example counts, of each `pytest -v` word."""

DRIVER = """
import json
import sys

from pipeline_actors import ModuleStatus, run
from pipeline_actors.loader import load_pipeline

if __name__ == "__main__":
    report = run(load_pipeline(sys.argv[1]), local_workers=2)
    modules = {}
    for name, module in report.modules.items():
        succeeded = module.status is ModuleStatus.SUCCEEDED
        modules[name] = {
            "status": module.status.value,
            "result": report.result(name) if succeeded else None,
        }
    print(json.dumps(modules))
"""
"""Runs a pipeline through `pipeline_actors.run` and prints the module results."""


def write_sample_project(folder: Path) -> Path:
    folder.mkdir()
    # A pytest.ini fixes the rootdir, and so the node ids, to this folder.
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_numbers.py").write_text(SAMPLE_TESTS)
    (folder / "group").mkdir()
    (folder / "group" / "test_group.py").write_text(SAMPLE_GROUP_TESTS)
    return folder


def write_project(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source))
    return folder


def example_env(**variables: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in (PROJECT_VARIABLE, SHARDS_VARIABLE)
    }
    env.update(variables)
    env[MARKER_VARIABLE] = uuid.uuid4().hex
    return env


def run_example(
    example: Path, env: dict[str, str], *, workers: int = 2, timeout=RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run an example with the command line, then check that its processes ended."""
    command = [sys.executable, "-m", "pipeline_actors", str(example)]
    command += ["--local-workers", str(workers), "--display", "lines"]
    try:
        return subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        assert_no_processes_left(env[MARKER_VARIABLE])


def run_with_driver(
    example: Path, env: dict[str, str], tmp_path: Path
) -> dict[str, dict]:
    """Run an example with `pipeline_actors.run` and return its modules' results."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    try:
        completed = subprocess.run(
            [sys.executable, str(driver), str(example)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        assert_no_processes_left(env[MARKER_VARIABLE])
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Return the processes whose environment carries this run's marker.

    A worker whose parent has exited is no longer a child of the test
    process, but it keeps the environment it inherited.
    """
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER_VARIABLE) == marker:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def assert_no_processes_left(marker: str) -> None:
    """Assert that no child of this process and no process of the run is left.

    Children exclude multiprocessing's forkserver and resource tracker, which
    other tests' in-process runs leave behind in this process.
    """
    deadline = time.monotonic() + LEFTOVER_TIMEOUT
    children = leftover_processes()
    marked = processes_with_marker(marker)
    for _ in range(100):
        remaining = deadline - time.monotonic()
        if not (children or marked) or remaining <= 0:
            break
        # wait_procs returns as soon as they all exited, or after the timeout.
        psutil.wait_procs([*children, *marked], timeout=min(remaining, 0.5))
        children = leftover_processes()
        marked = processes_with_marker(marker)

    assert not children, f"child processes left: {describe(children)}"
    assert not marked, f"processes of the run left: {describe(marked)}"


def describe(processes: list[psutil.Process]) -> list[str]:
    descriptions = []
    for process in processes:
        try:
            descriptions.append(f"{process.pid} {process.cmdline()}")
        except psutil.Error:
            descriptions.append(str(process.pid))
    return descriptions


def run_pytest_directly(project: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Run pytest -v in `project`; return each test's outcome and the summary."""
    env = {**example_env(), "COLUMNS": "200"}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        assert_no_processes_left(env[MARKER_VARIABLE])
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    return parse_verbose_outcomes(completed.stdout), parse_summary(completed.stdout)


def parse_verbose_outcomes(output: str) -> dict[str, str]:
    """Map each node id of `pytest -v` output to its JUnit XML outcome."""
    words = "|".join(VERBOSE_OUTCOMES)
    pattern = re.compile(rf"^(\S.*?::.*?) ({words})(?: |$)")
    outcomes = {}
    for line in output.splitlines():
        match = pattern.match(line)
        if match is not None:
            outcomes[match.group(1)] = VERBOSE_OUTCOMES[match.group(2)]
    return outcomes


def parse_summary(output: str) -> dict[str, int]:
    """Parse pytest's last line, such as "2 failed, 5 passed, 1 error in 0.1s"."""
    last = output.strip().splitlines()[-1]
    counts = dict.fromkeys(SAMPLE_SUMMARY, 0)
    for number, word in re.findall(r"(\d+) (\w+)", last):
        name = "errors" if word in ("error", "errors") else word
        counts[name] = int(number)
    return counts


def expected_shards(outcomes: dict[str, str], shards: int) -> list[dict[str, int]]:
    """Count the outcomes of each round-robin shard of the sorted node ids."""
    node_ids = sorted(outcomes)
    expected = []
    for index in range(shards):
        selected = node_ids[index::shards]
        counts = collections.Counter(outcomes[node_id] for node_id in selected)
        expected.append(
            {"selected": len(selected), **{name: counts[name] for name in OUTCOMES}}
        )
    return expected


def as_junit_counts(summary: dict[str, int]) -> dict[str, int]:
    """Turn pytest's terminal summary into the counts of the JUnit XML report."""
    return {
        "passed": summary["passed"],
        "failed": summary["failed"],
        "errors": summary["errors"],
        "skipped": summary["skipped"] + summary["xfailed"],
    }


def parse_totals_table(output: str) -> dict[str, dict[str, int]]:
    """Read the table `Totals` prints, by shard name and "total"."""
    columns = ("selected", *OUTCOMES)
    rows = {}
    for line in output.splitlines():
        match = re.search(r"│ (Shard\d+|total)((?: +\d+)+)$", line)
        if match is None:
            continue
        numbers = [int(number) for number in match.group(2).split()]
        # Shard rows start with the worker id, which the total row leaves blank.
        rows[match.group(1)] = dict(zip(columns, numbers[-len(columns) :], strict=True))
    return rows


def shard_counts(row: dict[str, int]) -> dict[str, int]:
    return {name: row[name] for name in ("selected", *OUTCOMES)}


def import_example(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
def test_pytest_shards_print_direct_counts(tmp_path):
    project = write_sample_project(tmp_path / "project")
    outcomes, summary = run_pytest_directly(project)

    result = run_example(PYTEST_SHARDS, example_env(**{PROJECT_VARIABLE: str(project)}))

    assert summary == SAMPLE_SUMMARY
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FailedTestsError: failed: 3, errors: 1, out of 17 tests" in result.stdout
    table = parse_totals_table(result.stdout)
    for index, expected in enumerate(expected_shards(outcomes, 4)):
        assert shard_counts(table[f"Shard{index + 1}"]) == expected
    assert table["total"] == {"selected": 17, **as_junit_counts(summary)}


@pytest.mark.timeout(240)
def test_pytest_shards_return_direct_counts(tmp_path):
    project = write_sample_project(tmp_path / "project")
    outcomes, summary = run_pytest_directly(project)
    env = example_env(**{PROJECT_VARIABLE: str(project), SHARDS_VARIABLE: "3"})

    modules = run_with_driver(PYTEST_SHARDS, env, tmp_path)

    assert modules["Totals"]["status"] == "failed"
    shards = [modules[f"Shard{number}"] for number in (1, 2, 3)]
    assert [shard["status"] for shard in shards] == ["succeeded"] * 3
    returned = [shard_counts(shard["result"]) for shard in shards]
    assert returned == expected_shards(outcomes, 3)
    totals = {name: sum(counts[name] for counts in returned) for name in OUTCOMES}
    assert totals == as_junit_counts(summary)
    assert sorted(modules["Collect"]["result"]["node_ids"]) == sorted(outcomes)


@pytest.mark.timeout(240)
def test_pytest_shards_passing_project(tmp_path):
    project = write_project(
        tmp_path / "project",
        {
            "test_ok.py": """
                def test_one():
                    pass

                def test_two():
                    pass
            """
        },
    )
    env = example_env(**{PROJECT_VARIABLE: str(project), SHARDS_VARIABLE: "3"})

    result = run_example(PYTEST_SHARDS, env)

    assert result.returncode == 0, result.stdout + result.stderr
    table = parse_totals_table(result.stdout)
    empty = dict.fromkeys(("selected", *OUTCOMES), 0)
    assert shard_counts(table["Shard3"]) == empty
    assert table["total"] == {**empty, "selected": 2, "passed": 2}


@pytest.mark.timeout(240)
def test_pytest_shards_collection_error(tmp_path):
    project = write_project(
        tmp_path / "project",
        {
            "test_fine.py": "def test_fine():\n    pass\n",
            "test_broken.py": "import missing_dependency_for_example\n",
        },
    )

    result = run_example(PYTEST_SHARDS, example_env(**{PROJECT_VARIABLE: str(project)}))

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"pytest could not collect the tests of {project}" in result.stdout
    assert "ERROR collecting test_broken.py" in result.stdout
    assert "No module named 'missing_dependency_for_example'" in result.stdout
    assert re.search(r"Shard1 +skipped", result.stdout)


@pytest.mark.timeout(240)
def test_pytest_shards_verbosity_addopts(tmp_path):
    project = write_project(
        tmp_path / "project", {"test_ok.py": "def test_one():\n    pass\n"}
    )
    (project / "pytest.ini").write_text("[pytest]\naddopts = -q\n")

    result = run_example(PYTEST_SHARDS, example_env(**{PROJECT_VARIABLE: str(project)}))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot read the node ids from pytest --collect-only -q" in result.stdout
    assert "addopts may change the verbosity" in result.stdout


@pytest.mark.timeout(240)
def test_pytest_shards_argument_file(tmp_path):
    # 1,200 ids of about 160 bytes exceed the 100 kB limit of a shard's argv.
    long_id = "x" * 140
    project = write_project(
        tmp_path / "project",
        {
            "test_many.py": f"""
                import pytest

                def name(n):
                    return f"{{n}}-{long_id}"

                @pytest.mark.parametrize("n", range(1200), ids=name)
                def test_numbered(n):
                    assert n % 400 != 0
            """
        },
    )
    env = example_env(**{PROJECT_VARIABLE: str(project), SHARDS_VARIABLE: "1"})

    result = run_example(PYTEST_SHARDS, env)

    assert result.returncode == 1, result.stdout + result.stderr
    table = parse_totals_table(result.stdout)
    assert table["total"] == {
        "selected": 1200,
        "passed": 1197,
        "failed": 3,
        "errors": 0,
        "skipped": 0,
    }


@pytest.mark.timeout(60)
def test_pytest_shards_missing_project():
    result = run_example(PYTEST_SHARDS, example_env())

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "PIPELINE_ACTORS_PROJECT is not set" in result.stderr
    assert "run " not in result.stdout


@pytest.mark.timeout(60)
def test_pytest_shards_project_not_folder(tmp_path):
    missing = tmp_path / "no-such-project"

    result = run_example(PYTEST_SHARDS, example_env(**{PROJECT_VARIABLE: str(missing)}))

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"PIPELINE_ACTORS_PROJECT is {str(missing)!r}" in result.stderr
    assert "which is not a folder" in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("count", ["0", "-2", "four"])
def test_pytest_shards_invalid_shard_count(tmp_path, count):
    env = example_env(**{PROJECT_VARIABLE: str(tmp_path), SHARDS_VARIABLE: count})

    result = run_example(PYTEST_SHARDS, env)

    assert result.returncode == 2, result.stdout + result.stderr
    expected = (
        f"PIPELINE_ACTORS_SHARDS must be a whole number of 1 or more, got {count!r}"
    )
    assert expected in result.stderr


@pytest.fixture(scope="module")
def pytest_shards_module(tmp_path_factory):
    """The pytest_shards example imported as a module, for its helpers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROJECT_VARIABLE, str(tmp_path_factory.mktemp("project")))
        patch.delenv(SHARDS_VARIABLE, raising=False)
        return import_example(PYTEST_SHARDS)


@given(
    node_ids=st.lists(st.text(min_size=1), unique=True, max_size=60),
    count=st.integers(min_value=1, max_value=12),
)
def test_round_robin_runs_each_test_once(pytest_shards_module, node_ids, count):
    ordered = sorted(node_ids)

    selections = [
        pytest_shards_module.select_shard(ordered, index, count)
        for index in range(count)
    ]

    flattened = [node_id for selection in selections for node_id in selection]
    assert sorted(flattened) == ordered
    sizes = [len(selection) for selection in selections]
    assert max(sizes) - min(sizes) <= 1


def test_argument_file_only_for_long_lists(pytest_shards_module, tmp_path):
    short = ["test_a.py::test_one", "test_a.py::test_p[a b]"]
    long = [f"test_a.py::test_p[{n}-{'y' * 200}]" for n in range(600)]
    node_id_arguments = pytest_shards_module.node_id_arguments

    assert node_id_arguments(short, tmp_path, (9, 2)) == short
    assert node_id_arguments(long, tmp_path, (8, 1)) == long
    arguments = node_id_arguments(long, tmp_path, (8, 2))
    assert arguments == [f"@{tmp_path / 'node_ids.txt'}"]
    assert (tmp_path / "node_ids.txt").read_text().splitlines() == long


def test_ci_pipeline_modules(monkeypatch):
    monkeypatch.setenv(SHARDS_VARIABLE, "3")

    ci = import_example(CI_PIPELINE)

    names = [module.name for module in ci.pipeline.modules]
    shards = ["Shard1", "Shard2", "Shard3"]
    assert names == ["Lint", "CollectTests", *shards, "Wheel", "Report"]
    assert [shard.index for shard in ci.SHARDS] == [0, 1, 2]
    assert set(ci.Report.depends_on) == {ci.Lint, ci.Wheel, *ci.SHARDS}
    assert ci.REPO_ROOT == REPO_ROOT


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(
    os.environ.get(INSIDE_CI_VARIABLE) == "1",
    reason="runs inside a shard of the CI example, which would start itself again",
)
def test_ci_pipeline_passes():
    result = run_example(CI_PIPELINE, example_env(), workers=4, timeout=1100)

    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"the shards ran on (\d+) workers", result.stdout)
    assert match is not None, result.stdout
    assert int(match.group(1)) >= 2
    assert re.search(r"wheel: .*build/wheels/pipeline_actors-.*\.whl", result.stdout)
