"""The generated GitHub Actions workflow: its matrix, env, command and CLI."""

from __future__ import annotations

import shlex

import pytest
import yaml

from pipeline_actors import InvalidPipelineError, Module
from pipeline_actors.loader import load_pipeline
from pipeline_actors.module import OPERATING_SYSTEMS
from pipeline_actors.workflow import RUNNER_LABELS, github_workflow, main_workflow

from conftest import REPO_ROOT


class Compile(Module):
    requires = ["linux"]

    def execute(self, ctx):
        return 1


class Package(Module):
    depends_on = [Compile]
    requires = ["Windows"]

    def execute(self, ctx):
        return 2


class Train(Module):
    requires = ["gpu"]

    def execute(self, ctx):
        return 3


class Anywhere(Module):
    def execute(self, ctx):
        return 4


class SignOnMac(Module):
    requires = ["macos"]

    def execute(self, ctx):
        return 5


class PinnedOnWindows(Module):
    requires = ["windows"]
    pin_to_master = True

    def execute(self, ctx):
        return 6


class Installer(Module):
    requires = ["windows"]

    def execute(self, ctx):
        return 13


class WindowsOrMac(Module):
    only_on = ["windows", "macos"]

    def execute(self, ctx):
        return 9


class OnlyMac(Module):
    only_on = ["macos"]

    def execute(self, ctx):
        return 10


class OnlyLinux(Module):
    only_on = "linux"

    def execute(self, ctx):
        return 11


class PinnedOnlyMac(Module):
    only_on = ["macos"]
    pin_to_master = True

    def execute(self, ctx):
        return 12


class First(Module):
    depends_on = ["Second"]

    def execute(self, ctx):
        return 7


class Second(Module):
    depends_on = [First]

    def execute(self, ctx):
        return 8


MIXED = [Compile, Package, Train, Anywhere]

RUN_ID = "${{ github.run_id }}-${{ github.run_attempt }}"

CYCLE = """
    from pipeline_actors import Module

    class First(Module):
        depends_on = ["Second"]

        def execute(self, ctx):
            return 1

    class Second(Module):
        depends_on = [First]

        def execute(self, ctx):
            return 2
"""

PIPELINE = """
    from pipeline_actors import Module

    class Test(Module):
        requires = ["macos"]

        def execute(self, ctx):
            return 1
"""


def parse(text):
    return yaml.safe_load(text)


def pipeline_job(workflow):
    return workflow["jobs"]["pipeline"]


def matrix_of(workflow):
    include = pipeline_job(workflow)["strategy"]["matrix"]["include"]
    return [(entry["instance"], entry["os"]) for entry in include]


def run_steps(workflow):
    return [step["run"] for step in pipeline_job(workflow)["steps"] if "run" in step]


def test_matrix_has_worker_per_required_os():
    workflow = parse(github_workflow(MIXED))

    assert matrix_of(workflow) == [
        (0, "ubuntu-latest"),
        (1, "ubuntu-latest"),
        (2, "windows-latest"),
    ]


def test_matrix_orders_linux_windows_macos():
    workflow = parse(github_workflow([SignOnMac, Package, Compile]))

    runners = [runner for _, runner in matrix_of(workflow)]
    assert runners == [
        "ubuntu-latest",
        "ubuntu-latest",
        "windows-latest",
        "macos-latest",
    ]


def test_extra_workers_append_linux_entries():
    workflow = parse(github_workflow(MIXED, extra_workers=2))

    assert matrix_of(workflow) == [
        (0, "ubuntu-latest"),
        (1, "ubuntu-latest"),
        (2, "windows-latest"),
        (3, "ubuntu-latest"),
        (4, "ubuntu-latest"),
    ]


def test_no_os_requirement_gives_master_and_extras():
    assert matrix_of(parse(github_workflow([Anywhere, Train]))) == [
        (0, "ubuntu-latest")
    ]

    with_extras = parse(github_workflow([Anywhere], extra_workers=3))
    assert matrix_of(with_extras) == [
        (0, "ubuntu-latest"),
        (1, "ubuntu-latest"),
        (2, "ubuntu-latest"),
        (3, "ubuntu-latest"),
    ]


def test_pinned_module_adds_no_worker():
    workflow = parse(github_workflow([Anywhere, PinnedOnWindows]))

    assert matrix_of(workflow) == [(0, "ubuntu-latest")]


def test_only_on_takes_first_system_in_order():
    workflow = parse(github_workflow([WindowsOrMac]))

    assert matrix_of(workflow) == [(0, "ubuntu-latest"), (1, "windows-latest")]


def test_only_on_reuses_required_system():
    with_installer = parse(github_workflow([Installer, WindowsOrMac]))
    with_mac = parse(github_workflow([WindowsOrMac, OnlyMac]))

    assert matrix_of(with_installer) == [(0, "ubuntu-latest"), (1, "windows-latest")]
    assert matrix_of(with_mac) == [(0, "ubuntu-latest"), (1, "macos-latest")]


def test_only_on_adds_to_requires():
    workflow = parse(github_workflow([Installer, OnlyLinux, PinnedOnlyMac]))

    assert matrix_of(workflow) == [
        (0, "ubuntu-latest"),
        (1, "ubuntu-latest"),
        (2, "windows-latest"),
    ]


def test_runner_labels_cover_operating_systems():
    assert RUNNER_LABELS.keys() == OPERATING_SYSTEMS


def test_total_instances_equals_matrix_size():
    for extra_workers in (0, 1, 5):
        workflow = parse(github_workflow(MIXED, extra_workers=extra_workers))
        env = pipeline_job(workflow)["env"]

        total = int(env["PIPELINE_ACTORS_TOTAL_INSTANCES"])
        assert total == len(matrix_of(workflow))
        assert total == 3 + extra_workers


def test_job_env_and_strategy():
    workflow = parse(github_workflow(MIXED))
    job = pipeline_job(workflow)

    assert job["strategy"]["fail-fast"] is False
    assert job["runs-on"] == "${{ matrix.os }}"
    assert job["env"]["PIPELINE_ACTORS_INSTANCE_INDEX"] == "${{ matrix.instance }}"
    assert job["env"]["PIPELINE_ACTORS_RUN_ID"] == RUN_ID
    assert job["env"]["REDIS_URL"] == "${{ secrets.PIPELINE_REDIS_URL }}"
    assert job["env"]["PIPELINE_ACTORS_SECRET"] == "${{ secrets.PIPELINE_SECRET }}"


def test_secret_names_are_configurable():
    text = github_workflow(MIXED, redis_secret="CI_REDIS", signing_secret="_SIGN")
    env = pipeline_job(parse(text))["env"]

    assert env["REDIS_URL"] == "${{ secrets.CI_REDIS }}"
    assert env["PIPELINE_ACTORS_SECRET"] == "${{ secrets._SIGN }}"
    assert "--redis-secret CI_REDIS --signing-secret _SIGN" in text.splitlines()[0]


def test_one_command_for_every_runner():
    workflow = parse(github_workflow(MIXED, extra_workers=1))
    job = pipeline_job(workflow)

    assert "if" not in job
    assert all("if" not in step for step in job["steps"])
    assert run_steps(workflow) == [
        "python -m pip install .",
        "python -m pipeline_actors pipeline.py --min-workers 3",
    ]
    assert job["defaults"]["run"]["shell"] == "bash"


def test_min_workers_counts_worker_instances():
    workflow = parse(github_workflow([Anywhere], pipeline_path="ci/pipe.py"))

    command = run_steps(workflow)[-1]
    assert command == "python -m pipeline_actors ci/pipe.py --min-workers 0"


def test_pipeline_path_is_shell_quoted():
    path = "my pipelines/it's.py"
    workflow = parse(github_workflow([Anywhere], pipeline_path=path))

    argv = shlex.split(run_steps(workflow)[-1])
    assert argv == ["python", "-m", "pipeline_actors", path, "--min-workers", "0"]


def test_python_version_stays_a_string():
    workflow = parse(github_workflow([Anywhere], python_version="3.10"))

    setup = pipeline_job(workflow)["steps"][1]
    assert setup["uses"] == "actions/setup-python@v5"
    assert setup["with"]["python-version"] == "3.10"


def test_on_key_reads_as_string():
    workflow = parse(github_workflow([Anywhere]))

    assert True not in workflow
    assert set(workflow["on"]) == {"push", "workflow_dispatch"}
    assert pipeline_job(workflow)["steps"][0] == {"uses": "actions/checkout@v4"}


def test_header_names_generating_command():
    text = github_workflow(
        MIXED, extra_workers=2, python_version="3.13", pipeline_path="ci.py"
    )

    first_line = text.splitlines()[0]
    expected = (
        "# Generated by: python -m pipeline_actors workflow github ci.py "
        "--extra-workers 2 --python 3.13"
    )
    assert first_line == expected


def test_header_lists_unprovided_capabilities():
    with_gpu = github_workflow(MIXED)
    without_gpu = github_workflow([Compile])

    assert "No runner of this workflow offers gpu, so the modules" in with_gpu
    assert "No runner of this workflow offers" not in without_gpu


@pytest.mark.parametrize("extra_workers", [-1, True, 1.5, "2"])
def test_invalid_extra_workers_raise(extra_workers):
    with pytest.raises(InvalidPipelineError, match="invalid extra workers"):
        github_workflow(MIXED, extra_workers=extra_workers)


@pytest.mark.parametrize(
    "name", ["", "1ABC", "HAS SPACE", "DASH-NAME", "GITHUB_TOKEN", "github_x"]
)
def test_invalid_secret_name_raises(name):
    with pytest.raises(InvalidPipelineError, match="invalid Redis URL secret name"):
        github_workflow(MIXED, redis_secret=name)

    with pytest.raises(InvalidPipelineError, match="invalid signing secret name"):
        github_workflow(MIXED, signing_secret=name)


@pytest.mark.parametrize("path", ["", "  ", "a\nb.py", "${{ secrets.X }}.py", "-p.py"])
def test_invalid_pipeline_path_raises(path):
    with pytest.raises(InvalidPipelineError, match="invalid pipeline path"):
        github_workflow(MIXED, pipeline_path=path)


def test_invalid_python_version_raises():
    with pytest.raises(InvalidPipelineError, match="invalid Python version"):
        github_workflow(MIXED, python_version="3.12\n")


def test_invalid_graph_raises():
    with pytest.raises(InvalidPipelineError, match="dependency cycle"):
        github_workflow([First, Second])


def test_cli_prints_workflow(pipeline_file, monkeypatch, capsys):
    path = pipeline_file(PIPELINE)
    monkeypatch.chdir(path.parent)

    status = main_workflow(["github", "pipeline.py", "--python", "3.11"])

    output = capsys.readouterr()
    assert status == 0
    assert output.err == ""
    assert output.out == github_workflow(
        load_pipeline(path), python_version="3.11", pipeline_path="pipeline.py"
    )


def test_cli_writes_output_file(pipeline_file, monkeypatch, capsys, tmp_path):
    path = pipeline_file(PIPELINE)
    monkeypatch.chdir(path.parent)
    output_file = tmp_path / "workflow.yml"

    status = main_workflow(
        ["github", "pipeline.py", "--extra-workers", "1", "--output", str(output_file)]
    )

    assert status == 0
    assert capsys.readouterr().out == ""
    workflow = parse(output_file.read_text(encoding="utf-8"))
    assert matrix_of(workflow) == [
        (0, "ubuntu-latest"),
        (1, "macos-latest"),
        (2, "ubuntu-latest"),
    ]


def test_cli_relativizes_absolute_path(pipeline_file, monkeypatch, capsys):
    path = pipeline_file(PIPELINE, name="nested.py")
    monkeypatch.chdir(path.parent.parent)

    status = main_workflow(["github", str(path)])

    assert status == 0
    command = run_steps(parse(capsys.readouterr().out))[-1]
    expected_path = f"{path.parent.name}/nested.py"
    assert command == f"python -m pipeline_actors {expected_path} --min-workers 1"


def test_cli_rejects_path_outside_folder(pipeline_file, monkeypatch, capsys, tmp_path):
    path = pipeline_file(PIPELINE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    status = main_workflow(["github", str(path)])

    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: pipeline file ")
    assert "outside the current folder" in error


def test_cli_negative_extra_workers_exit_2(pipeline_file, monkeypatch, capsys):
    path = pipeline_file(PIPELINE)
    monkeypatch.chdir(path.parent)

    status = main_workflow(["github", "pipeline.py", "--extra-workers", "-1"])

    output = capsys.readouterr()
    assert status == 2
    assert output.out == ""
    assert output.err.startswith("error: invalid extra workers -1")


def test_cli_non_number_extra_workers_exit_2(pipeline_file, monkeypatch, capsys):
    path = pipeline_file(PIPELINE)
    monkeypatch.chdir(path.parent)

    with pytest.raises(SystemExit) as exit_info:
        main_workflow(["github", "pipeline.py", "--extra-workers", "two"])

    assert exit_info.value.code == 2
    assert "--extra-workers: invalid int value: 'two'" in capsys.readouterr().err


def test_cli_invalid_pipeline_exit_2(pipeline_file, monkeypatch, capsys, tmp_path):
    path = pipeline_file(CYCLE)
    monkeypatch.chdir(path.parent)
    output_file = tmp_path / "workflow.yml"

    status = main_workflow(["github", "pipeline.py", "--output", str(output_file)])

    assert status == 2
    assert capsys.readouterr().err.startswith("error: dependency cycle: ")
    assert not output_file.exists()


def test_cli_missing_pipeline_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)

    status = main_workflow(["github", "absent.py"])

    assert status == 2
    assert capsys.readouterr().err.startswith("error: pipeline file not found: ")


def test_cli_unwritable_output_exit_2(pipeline_file, monkeypatch, capsys, tmp_path):
    path = pipeline_file(PIPELINE)
    monkeypatch.chdir(path.parent)
    output_file = tmp_path / "missing-folder" / "workflow.yml"

    status = main_workflow(["github", "pipeline.py", "--output", str(output_file)])

    assert status == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write {output_file}: ")


def test_cli_requires_platform(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_workflow([])

    assert exit_info.value.code == 2
    assert "python -m pipeline_actors workflow" in capsys.readouterr().err


def test_docs_example_is_current(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    example = REPO_ROOT / "docs" / "workflow-example.yml"

    modules = load_pipeline("examples/quickstart.py")
    expected = github_workflow(
        modules, extra_workers=2, pipeline_path="examples/quickstart.py"
    )
    assert example.read_text(encoding="utf-8") == expected
