"""The command line: `python -m pipeline_actors [PIPELINE] --local-workers N`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .console import LineReporter, LiveReporter, Reporter
from .errors import ExitCode, InvalidPipelineError
from .loader import DEFAULT_PIPELINE, load_pipeline
from .logs import DEFAULT_LEVEL, LEVELS, configure
from .runtime import new_run_id, run_local
from .settings import RunSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_actors",
        description=(
            "Run a pipeline of modules across worker processes. Exit status: "
            "0 when every module succeeded, 1 when one failed, 2 for invalid "
            "input, 130 when the run was cancelled."
        ),
        formatter_class=_DefaultsHelpFormatter,
    )
    parser.add_argument(
        "pipeline",
        nargs="?",
        default=DEFAULT_PIPELINE,
        metavar="PIPELINE",
        help="path to a .py file, or an importable package.module name",
    )

    parser.add_argument(
        "--local-workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes to start on this machine; defaults to its CPU count",
    )

    parser.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME",
        help="capability the local workers offer, besides the operating "
        "system's name; repeat for several",
    )

    parser.add_argument("--run-id", help="id of the run; a random one by default")

    parser.add_argument(
        "--display",
        choices=("auto", "lines", "live"),
        default="auto",
        help="'lines' prints a line per change, 'live' a live table; 'auto' "
        "picks 'live' on a terminal",
    )

    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help="level of the actors' log records on stderr",
    )

    _add_timing_options(parser)

    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _add_timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two heartbeats of a worker",
    )

    parser.add_argument(
        "--heartbeat-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds without a heartbeat after which a worker is lost",
    )

    parser.add_argument(
        "--cancel-grace",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds running modules get to stop after a cancel before "
        "their workers are killed",
    )

    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=3,
        metavar="N",
        help="attempts per module when the worker running it is lost",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level)
    try:
        modules = load_pipeline(args.pipeline)
    except InvalidPipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID

    settings = RunSettings(
        run_id=args.run_id or new_run_id(),
        log_level=args.log_level,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        cancel_grace=args.cancel_grace,
        max_attempts=args.max_attempts,
    )
    try:
        report = run_local(
            modules,
            workers=args.local_workers,
            capabilities=args.capability,
            settings=settings,
            reporter=_reporter(args.display),
        )
    except InvalidPipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    return report.exit_code


def _reporter(display: str) -> Reporter:
    live = display == "live" or (display == "auto" and sys.stdout.isatty())
    return LiveReporter() if live else LineReporter()


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default in its help, unless there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, [], False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
