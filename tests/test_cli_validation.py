"""Invalid input: one clear message, exit status 2, and no module executed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli

MARKER_MODULE = """
    from pathlib import Path
    from pipeline_actors import Module

    class Marker(Module):
        def execute(self, ctx):
            Path(__file__).with_name("executed").write_text(self.name)
"""


def assert_rejected(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def assert_nothing_executed(folder: Path) -> None:
    assert not (folder / "executed").exists()


def test_cycle_is_rejected(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    class Build(Marker):
        depends_on = ["Test"]

    class Test(Marker):
        depends_on = ["Package"]

    class Package(Marker):
        depends_on = [Build]
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "dependency cycle: Build -> Test -> Package -> Build")
    assert_nothing_executed(path.parent)


def test_missing_dependency_is_rejected(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    class Deploy(Marker):
        depends_on = ["Approve"]
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "'Deploy'", "'Approve'", "not in the pipeline")
    assert_nothing_executed(path.parent)


def test_duplicate_name_is_rejected(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    class Lint(Marker):
        pass

    class LintAgain(Marker):
        name = "Lint"
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "two modules are named 'Lint'", "LintAgain")
    assert_nothing_executed(path.parent)


def test_module_without_execute_is_rejected(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    class Fine(Marker):
        pass

    class Unfinished(Module):
        depends_on = [Fine]
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "'Unfinished'", "does not define execute()")
    assert_nothing_executed(path.parent)


def test_async_execute_is_rejected(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    class Fine(Marker):
        pass

    class Waiting(Module):
        depends_on = [Fine]

        async def execute(self, ctx):
            return 1
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "'Waiting'", "execute() with async def")
    assert_nothing_executed(path.parent)


def test_missing_file_is_rejected(tmp_path):
    result = run_cli(tmp_path / "nowhere.py", "--local-workers", "1")

    assert_rejected(result, "pipeline file not found", "nowhere.py")


def test_default_file_is_pipeline_py(tmp_path):
    result = run_cli("--local-workers", "1", cwd=tmp_path)

    assert_rejected(result, "pipeline file not found", str(tmp_path / "pipeline.py"))


def test_missing_module_name_is_rejected(tmp_path):
    result = run_cli("no_such_package.pipeline", cwd=tmp_path)

    assert_rejected(result, "'no_such_package.pipeline' not found")


def test_import_error_is_shown(pipeline_file):
    path = pipeline_file(
        MARKER_MODULE
        + """
    import not_a_real_dependency

    class Never(Marker):
        pass
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(
        result,
        f"importing pipeline {path} failed",
        "No module named 'not_a_real_dependency'",
        "line 9",
    )
    assert_nothing_executed(path.parent)


def test_syntax_error_is_shown(pipeline_file):
    path = pipeline_file("from pipeline_actors import Module\nclass Broken(Module:\n")

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "importing pipeline", "SyntaxError")


@pytest.mark.parametrize("value", ["0", "-3", "four"])
def test_bad_worker_count_is_rejected(pipeline_file, value):
    path = pipeline_file(MARKER_MODULE)

    result = run_cli(path, "--local-workers", value)

    assert result.returncode == 2
    assert "--local-workers" in result.stderr
    assert_nothing_executed(path.parent)


def test_pipeline_raising_invalid_pipeline_shows_message_only(pipeline_file):
    path = pipeline_file(
        """
    from pipeline_actors import InvalidPipelineError

    raise InvalidPipelineError("set PROJECT_DIR to the project to test")
    """
    )

    result = run_cli(path, "--local-workers", "1")

    assert_rejected(result, "error: set PROJECT_DIR to the project to test")
    assert "Traceback" not in result.stderr
    assert "line" not in result.stderr
