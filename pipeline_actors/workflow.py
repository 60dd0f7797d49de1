"""Generate a GitHub Actions workflow that runs a pipeline across runners.

The workflow has one job with a matrix: instance 0, the master, on Linux, then
one worker per operating system that the modules need (see `required_systems`),
then any extra Linux workers. Every runner runs the same command, and its
instance index makes it the master or a worker. The YAML is written as text,
so generating it needs no YAML library.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ExitCode, InvalidPipelineError
from .graph import Graph, ModuleSpec
from .loader import load_pipeline
from .module import OPERATING_SYSTEMS, Module

# NOTE: setup.cfg does not list Windows among the supported systems, and
# `ctx.run` stops commands with os.killpg, which Windows lacks, so a
# windows-latest worker may fail where the others succeed.
RUNNER_LABELS = {
    "linux": "ubuntu-latest",
    "windows": "windows-latest",
    "macos": "macos-latest",
}
"""GitHub-hosted runner label per operating-system capability, in matrix order.

The keys are the names that `runtime.os_capability` returns.
"""

MASTER_RUNNER = RUNNER_LABELS["linux"]
EXTRA_WORKER_RUNNER = RUNNER_LABELS["linux"]

DEFAULT_PYTHON = "3.12"
DEFAULT_PIPELINE_PATH = "pipeline.py"
DEFAULT_REDIS_SECRET = "PIPELINE_REDIS_URL"
DEFAULT_SIGNING_SECRET = "PIPELINE_SECRET"

# The rules GitHub applies when a repository secret is created.
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_SECRET_PREFIX = "GITHUB_"

_EXPRESSION_START = "${{"


@dataclass(frozen=True)
class MatrixEntry:
    """One runner of the workflow's matrix.

    Attributes:
        instance: The instance index: 0 is the master, every other a worker.
        runner: The GitHub-hosted runner label, such as ``ubuntu-latest``.
        purpose: Why the entry exists, written as a comment above it.
    """

    instance: int
    runner: str
    purpose: str


def github_workflow(
    modules: Iterable[type[Module]],
    *,
    extra_workers: int = 0,
    python_version: str = DEFAULT_PYTHON,
    pipeline_path: str = DEFAULT_PIPELINE_PATH,
    redis_secret: str = DEFAULT_REDIS_SECRET,
    signing_secret: str = DEFAULT_SIGNING_SECRET,
) -> str:
    """Build the text of a GitHub Actions workflow that runs `modules` distributed.

    `pipeline_path` is the pipeline as the runners name it, relative to the
    repository's root. `redis_secret` and `signing_secret` name the repository
    secrets that hold the Redis URL and the secret that signs messages.

    Raises InvalidPipelineError for an invalid graph, an `extra_workers` that
    is not a whole number of 0 or more, an invalid secret name, or a pipeline
    path or Python version that cannot be written into the workflow.
    """
    _check_pipeline_path(pipeline_path)
    _check_text("Python version", python_version)
    _check_secret_name("Redis URL secret", redis_secret)
    _check_secret_name("signing secret", signing_secret)

    graph = Graph.build(modules)
    entries = matrix_entries(graph, extra_workers)
    command = run_command(pipeline_path, worker_instances=len(entries) - 1)

    generated_by = generating_command(
        pipeline_path, extra_workers, python_version, redis_secret, signing_secret
    )
    lines = [
        *_header_lines(generated_by, redis_secret, signing_secret, graph),
        *_workflow_lines(entries),
        *_job_env_lines(len(entries), redis_secret, signing_secret),
        *_steps_lines(python_version, command),
    ]
    return "\n".join(lines) + "\n"


def required_systems(graph: Graph) -> list[str]:
    """Return the operating systems that need a worker runner, in matrix order.

    They are every system named in a module's `requires`, plus the fewest
    systems that give each module with `only_on` one of its systems. Among
    equally small choices, systems earlier in matrix order win. Pinned modules
    are left out, because they run on the master whatever they declare.
    """
    specs = _worker_specs(graph)
    required = {name for spec in specs for name in spec.requires} & OPERATING_SYSTEMS
    alternatives = [spec.platforms for spec in specs if spec.platforms]

    # Three systems make eight subsets, so trying them all, smallest first, is cheap.
    ordered = list(RUNNER_LABELS)
    for size in range(len(required), len(ordered) + 1):
        for chosen in itertools.combinations(ordered, size):
            has_required = required.issubset(chosen)
            if has_required and all(not s.isdisjoint(chosen) for s in alternatives):
                return list(chosen)

    # Only reached for an `only_on` that names no known system, which
    # `Module` rejects.
    return ordered


def unprovided_capabilities(graph: Graph) -> list[str]:
    """Return the required capabilities that name no operating system, sorted."""
    required = {name for spec in _worker_specs(graph) for name in spec.requires}
    return sorted(required - OPERATING_SYSTEMS)


def matrix_entries(graph: Graph, extra_workers: int) -> list[MatrixEntry]:
    """Return the matrix: the master, a worker per required system, then extras."""
    _check_extra_workers(extra_workers)
    entries = [MatrixEntry(0, MASTER_RUNNER, "instance 0 is the master")]

    for system in required_systems(graph):
        purpose = f"a worker for the modules that need {system}"
        entries.append(MatrixEntry(len(entries), RUNNER_LABELS[system], purpose))

    for _ in range(extra_workers):
        purpose = "an extra worker"
        entries.append(MatrixEntry(len(entries), EXTRA_WORKER_RUNNER, purpose))
    return entries


def run_command(pipeline_path: str, *, worker_instances: int) -> str:
    """Return the command that every runner runs, for the bash shell."""
    # NOTE: --min-workers counts worker processes, and the master's own (one
    # per CPU by default) count too, so the master may start routing before
    # the other runners register. A module that only another runner can run
    # then waits for it, up to --capability-timeout.
    pipeline = shlex.quote(pipeline_path)
    return f"python -m pipeline_actors {pipeline} --min-workers {worker_instances}"


def generating_command(
    pipeline_path: str,
    extra_workers: int,
    python_version: str,
    redis_secret: str,
    signing_secret: str,
) -> str:
    """Return the `workflow` command line that generates the same workflow."""
    argv = ["python", "-m", "pipeline_actors", "workflow", "github", pipeline_path]
    if extra_workers:
        argv += ["--extra-workers", str(extra_workers)]
    if python_version != DEFAULT_PYTHON:
        argv += ["--python", python_version]
    if redis_secret != DEFAULT_REDIS_SECRET:
        argv += ["--redis-secret", redis_secret]
    if signing_secret != DEFAULT_SIGNING_SECRET:
        argv += ["--signing-secret", signing_secret]
    return shlex.join(argv)


def _worker_specs(graph: Graph) -> list[ModuleSpec]:
    # Routing ignores a pinned module's `requires` and `only_on`.
    return [spec for spec in graph.specs.values() if not spec.pin_to_master]


def _header_lines(
    generated_by: str, redis_secret: str, signing_secret: str, graph: Graph
) -> list[str]:
    lines = [
        f"# Generated by: {generated_by}",
        "# Generate it again when the modules' `requires` or `only_on` change.",
        "#",
        f"# It needs two repository secrets: {redis_secret}, a Redis URL that",
        f"# every runner can reach, and {signing_secret}, a long random string",
        "# that signs the messages. Re-run all jobs, not only the failed ones,",
        "# because the run id changes with every attempt.",
    ]

    missing = unprovided_capabilities(graph)
    if missing:
        pronoun = "it" if len(missing) == 1 else "them"
        note = (
            f"No runner of this workflow offers {', '.join(missing)}, so the "
            f"modules that require {pronoun} fail. A runner added for "
            f"{pronoun} needs --capability NAME, and every runner needs the "
            "new PIPELINE_ACTORS_TOTAL_INSTANCES."
        )
        lines += ["#", *(f"# {line}" for line in textwrap.wrap(note, width=70))]
    return lines


def _workflow_lines(entries: Sequence[MatrixEntry]) -> list[str]:
    # PyYAML and other YAML 1.1 parsers read an unquoted `on` key as true.
    lines = [
        "name: pipeline",
        '"on":',
        "  push:",
        "  workflow_dispatch:",
        "permissions:",
        "  contents: read",
        "jobs:",
        "  pipeline:",
        "    name: " + _quoted("instance ${{ matrix.instance }} (${{ matrix.os }})"),
        "    strategy:",
        "      fail-fast: false",
        "      matrix:",
        "        include:",
    ]

    for entry in entries:
        lines += [
            f"          # {entry.purpose}",
            f"          - instance: {entry.instance}",
            f"            os: {entry.runner}",
        ]

    lines += [
        "    runs-on: " + _quoted("${{ matrix.os }}"),
        "    defaults:",
        "      run:",
        "        # bash on Windows too, so every runner parses the command alike",
        "        shell: bash",
    ]
    return lines


def _job_env_lines(instances: int, redis_secret: str, signing_secret: str) -> list[str]:
    env = {
        "PIPELINE_ACTORS_INSTANCE_INDEX": "${{ matrix.instance }}",
        "PIPELINE_ACTORS_TOTAL_INSTANCES": str(instances),
        "PIPELINE_ACTORS_RUN_ID": "${{ github.run_id }}-${{ github.run_attempt }}",
        "REDIS_URL": "${{ secrets." + redis_secret + " }}",
        "PIPELINE_ACTORS_SECRET": "${{ secrets." + signing_secret + " }}",
    }
    lines = ["    env:"]
    lines += [f"      {name}: {_quoted(value)}" for name, value in env.items()]
    return lines


def _steps_lines(python_version: str, command: str) -> list[str]:
    return [
        "    steps:",
        "      - uses: actions/checkout@v4",
        "      - uses: actions/setup-python@v5",
        "        with:",
        "          python-version: " + _quoted(python_version),
        "      # Installs the project, which must depend on pipeline_actors.",
        "      - run: python -m pip install .",
        "      # A non-zero instance index makes the same command a worker.",
        "      - run: " + _quoted(command),
    ]


def _quoted(text: str) -> str:
    # `_check_text` lets only printable characters through, and a JSON string
    # of those is also a YAML double-quoted scalar with the same value.
    return json.dumps(text, ensure_ascii=False)


def _check_extra_workers(extra_workers: int) -> None:
    is_count = isinstance(extra_workers, int) and not isinstance(extra_workers, bool)
    if not is_count or extra_workers < 0:
        msg = (
            f"invalid extra workers {extra_workers!r}: expected a whole number "
            "of 0 or more"
        )
        raise InvalidPipelineError(msg)


def _check_text(description: str, text: str) -> None:
    if not isinstance(text, str):
        raise InvalidPipelineError(f"invalid {description} {text!r}: expected a string")

    if not text.strip():
        raise InvalidPipelineError(f"invalid {description} {text!r}: it is empty")

    if not text.isprintable():
        msg = (
            f"invalid {description} {text!r}: it contains a line break or "
            "another control character"
        )
        raise InvalidPipelineError(msg)

    # GitHub evaluates ${{ }} wherever it appears in a value.
    if _EXPRESSION_START in text:
        msg = (
            f"invalid {description} {text!r}: GitHub Actions would evaluate the "
            f"{_EXPRESSION_START} in it as an expression"
        )
        raise InvalidPipelineError(msg)


def _check_pipeline_path(pipeline_path: str) -> None:
    _check_text("pipeline path", pipeline_path)

    if pipeline_path.startswith("-"):
        msg = (
            f"invalid pipeline path {pipeline_path!r}: it starts with '-', so the "
            f"command line would read it as an option. Write it as ./{pipeline_path}"
        )
        raise InvalidPipelineError(msg)


def _check_secret_name(description: str, name: str) -> None:
    valid = isinstance(name, str) and _SECRET_NAME.fullmatch(name)
    if not valid:
        msg = (
            f"invalid {description} name {name!r}: expected letters, digits and "
            "'_', not starting with a digit, as GitHub requires of secret names"
        )
        raise InvalidPipelineError(msg)

    if name.upper().startswith(_RESERVED_SECRET_PREFIX):
        msg = (
            f"invalid {description} name {name!r}: GitHub reserves names "
            f"starting with {_RESERVED_SECRET_PREFIX}"
        )
        raise InvalidPipelineError(msg)


def build_workflow_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_actors workflow",
        description="Generate a CI workflow that runs a pipeline across runners.",
    )
    platforms = parser.add_subparsers(dest="platform", required=True, metavar="CI")
    github = platforms.add_parser(
        "github",
        help="a GitHub Actions workflow",
        description="Write a GitHub Actions workflow with a runner for the master, "
        "one per operating system that the modules require, and any extra "
        "workers. Run it from the repository's root. Exit status: 0 on "
        "success, 2 for invalid input.",
    )
    github.add_argument(
        "pipeline",
        metavar="PIPELINE",
        help="path to a .py file relative to the repository's root, or an "
        "importable package.module name",
    )
    github.add_argument(
        "--extra-workers",
        type=int,
        default=0,
        metavar="N",
        help="Linux worker runners to add beyond those the modules require "
        "(default: 0)",
    )
    github.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        metavar="VERSION",
        help=f"Python version that setup-python installs (default: {DEFAULT_PYTHON})",
    )
    github.add_argument(
        "--redis-secret",
        default=DEFAULT_REDIS_SECRET,
        metavar="NAME",
        help="repository secret that contains the Redis URL "
        f"(default: {DEFAULT_REDIS_SECRET})",
    )
    github.add_argument(
        "--signing-secret",
        default=DEFAULT_SIGNING_SECRET,
        metavar="NAME",
        help="repository secret that contains the shared secret that signs messages "
        f"(default: {DEFAULT_SIGNING_SECRET})",
    )
    github.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="file to write the workflow to (default: standard output)",
    )
    return parser


def main_workflow(argv: Sequence[str]) -> int:
    """Run `python -m pipeline_actors workflow` and return its exit status.

    `argv` contains the arguments after the word ``workflow``.
    """
    args = build_workflow_parser().parse_args(list(argv))

    try:
        text = _generate_github_workflow(args)
    except InvalidPipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID

    if args.output is None:
        sys.stdout.write(text)
        return ExitCode.OK

    try:
        args.output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot write {args.output}: {reason}", file=sys.stderr)
        return ExitCode.INVALID
    return ExitCode.OK


def _generate_github_workflow(args: argparse.Namespace) -> str:
    modules = load_pipeline(args.pipeline)
    return github_workflow(
        modules,
        extra_workers=args.extra_workers,
        python_version=args.python,
        pipeline_path=_pipeline_path_on_runners(args.pipeline),
        redis_secret=args.redis_secret,
        signing_secret=args.signing_secret,
    )


def _pipeline_path_on_runners(target: str) -> str:
    """Return `target` as the runners name it, from the repository's root.

    A file's path is taken relative to the current folder, which is meant to
    be the repository's root, and written with '/' for bash. A module name is
    returned unchanged.
    """
    path = Path(target)
    if not path.is_file():
        return target

    if path.is_absolute():
        folder = Path.cwd().resolve()
        try:
            path = path.resolve().relative_to(folder)
        except ValueError:
            msg = (
                f"pipeline file {path} is outside the current folder {folder}; "
                "run the command from the repository's root"
            )
            raise InvalidPipelineError(msg) from None
    return path.as_posix()
