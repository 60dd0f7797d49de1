"""The command line: `python -m pipeline_actors [PIPELINE] --local-workers N`.

The same command becomes the master or a worker of a distributed run by its
instance index; `python -m pipeline_actors worker` joins a run as a worker
without the pipeline file, and `python -m pipeline_actors workflow github
PIPELINE` writes a GitHub Actions workflow for it. Settings come from flags,
then the environment, then ``[tool.pipeline_actors]`` in the pipeline's
pyproject.toml, then defaults (see `config`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from . import __version__
from .config import (
    SETTINGS,
    ResolvedConfig,
    find_pyproject,
    load_secret,
    resolve,
    show_value,
)
from .console import LineReporter, LiveReporter, Reporter
from .distributed import InstanceOptions, run_master, run_worker_instance
from .errors import ConfigError, ExitCode, InvalidPipelineError
from .loader import DEFAULT_PIPELINE, load_pipeline
from .logs import configure
from .mailbox.redis import RedisSettings, RedisTransport, RedisUnavailableError
from .module import Module
from .runtime import new_run_id, os_capability, run_local
from .settings import RunSettings
from .workflow import main_workflow

OPTION_HELP: dict[str, tuple[str | None, str]] = {
    "local_workers": ("N", "worker processes to start on this machine"),
    "capabilities": (
        "NAME",
        "capability the workers of this machine offer, such as gpu; repeat for several",
    ),
    "no_os_capability": (None, "do not add the operating system's name"),
    "instance_index": ("N", "this instance's index: 0 is the master"),
    "total_instances": (
        "N",
        "instances of the run, the master included; once all registered, a "
        "module no worker can run fails at once",
    ),
    "role": ("ROLE", "'master' or 'worker', overriding the instance index"),
    "run_id": ("ID", "id shared by every instance of the run"),
    "redis_url": ("URL", "Redis shared by the instances of a distributed run"),
    "secret_file": (
        "FILE",
        "file holding the secret that signs messages; or set PIPELINE_ACTORS_SECRET",
    ),
    "insecure": (None, "run over Redis without a secret; unsafe"),
    "key_prefix": ("TEXT", "prefix of the run's Redis keys"),
    "key_ttl": ("SECONDS", "time-to-live of the run's Redis keys"),
    "min_workers": (
        "N",
        "workers the master waits for, up to --registration-timeout, before routing",
    ),
    "registration_timeout": (
        "SECONDS",
        "how long a master waits for --min-workers, and a worker for its master",
    ),
    "capability_timeout": (
        "SECONDS",
        "how long a module waits for a worker that can run it",
    ),
    "display": (
        "MODE",
        "'lines' prints a line per change, 'live' a live table, 'auto' a live "
        "table on a terminal",
    ),
    "log_level": ("LEVEL", "level of the actors' log records on stderr"),
    "heartbeat_interval": ("SECONDS", "time between two heartbeats of a worker"),
    "heartbeat_timeout": (
        "SECONDS",
        "silence after which a worker counts as lost",
    ),
    "cancel_grace": (
        "SECONDS",
        "time running modules get to stop after a cancel",
    ),
    "max_attempts": ("N", "attempts per module when the worker running it is lost"),
    "prefetch": (
        "N",
        "modules a busy worker may hold waiting behind the one it runs; "
        "1 or more speeds up modules of milliseconds",
    ),
}

WORKER_OPTIONS = (
    "redis_url", "run_id", "local_workers", "capabilities", "no_os_capability",
    "instance_index", "secret_file", "insecure", "key_prefix", "key_ttl",
    "registration_timeout", "log_level", "heartbeat_interval", "heartbeat_timeout",
)  # fmt: skip
"""Settings a `worker` command takes; the rest come from the master."""

DESCRIPTION = (
    "Run a pipeline of modules across worker processes and machines. "
    "'python -m pipeline_actors worker --help' shows how to join a run as a "
    "worker, and 'python -m pipeline_actors workflow github --help' how to "
    "write a GitHub Actions workflow. Exit status: 0 when every module "
    "succeeded, 1 when one failed, 2 for invalid input, 3 when Redis cannot be "
    "reached, 130 when the run was cancelled."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_actors", description=DESCRIPTION
    )
    parser.add_argument(
        "pipeline",
        nargs="?",
        default=DEFAULT_PIPELINE,
        metavar="PIPELINE",
        help="path to a .py file, or an importable package.module name "
        f"(default: {DEFAULT_PIPELINE})",
    )
    _add_setting_options(parser, [s.name for s in SETTINGS if s.flag])
    _add_common_options(parser)
    return parser


def build_worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_actors worker",
        description="Join a distributed run as a worker. The module classes "
        "come from the master, so no pipeline file is needed.",
    )
    _add_setting_options(parser, WORKER_OPTIONS)
    _add_common_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["workflow"]:
        return main_workflow(arguments[1:])
    if arguments[:1] == ["worker"]:
        args = build_worker_parser().parse_args(arguments[1:])
        args.role = "worker"
        args.pipeline = None
    else:
        args = build_parser().parse_args(arguments)

    try:
        return _run(args)
    except KeyboardInterrupt:
        print(
            "stopped by a second stop signal: running modules were killed",
            file=sys.stderr,
        )
        return ExitCode.CANCELLED
    except InvalidPipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    except RedisUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE


def _run(args: argparse.Namespace) -> int:
    config = _resolve(args)
    configure(config.log_level)
    if args.print_config:
        print("\n".join(config.describe()))
        return ExitCode.OK

    if config.effective_role.value == "worker":
        return _run_worker(config)

    modules = load_pipeline(args.pipeline)
    if config.redis_url is None:
        return _run_local(modules, config)
    return _run_master(modules, config)


def _run_local(modules: list[type[Module]], config: ResolvedConfig) -> int:
    workers = _local_workers(config)
    if workers == 0:
        msg = "--local-workers must be 1 or more for a run without --redis"
        raise ConfigError(msg)
    report = run_local(
        modules,
        workers=workers,
        capabilities=_capabilities(config),
        settings=_run_settings(config, config.run_id or new_run_id()),
        reporter=_reporter(config.display),
    )
    return report.exit_code


def _run_master(modules: list[type[Module]], config: ResolvedConfig) -> int:
    run_id = config.run_id
    if run_id is None and config.total_instances > 1:
        msg = (
            f"a run of {config.total_instances} instances needs one run id shared "
            "by all of them: set PIPELINE_ACTORS_RUN_ID (or --run-id) to the "
            "same value on every instance, such as the CI run's id and attempt"
        )
        raise ConfigError(msg)
    run_id = run_id or new_run_id()
    transport = _transport(config, run_id)
    try:
        report = run_master(
            modules,
            transport,
            _run_settings(config, run_id),
            _instance_options(config),
            _reporter(config.display),
        )
    finally:
        transport.close()
    return report.exit_code


def _run_worker(config: ResolvedConfig) -> int:
    if config.redis_url is None:
        raise ConfigError(
            "a worker needs the run's Redis: pass --redis or set REDIS_URL"
        )
    if config.run_id is None:
        msg = (
            "a worker needs the run id of its master: pass --run-id or set "
            "PIPELINE_ACTORS_RUN_ID"
        )
        raise ConfigError(msg)
    transport = _transport(config, config.run_id)
    try:
        settings = _run_settings(config, config.run_id)
        return run_worker_instance(transport, settings, _instance_options(config))
    finally:
        transport.close()


def _resolve(args: argparse.Namespace) -> ResolvedConfig:
    start = Path(args.pipeline).parent if args.pipeline else Path.cwd()
    flags = {name: value for name, value in vars(args).items() if value is not None}
    flags = {k: v for k, v in flags.items() if not (v is False or v == [])}
    return resolve(flags, os.environ, find_pyproject(start.resolve()))


def _transport(config: ResolvedConfig, run_id: str) -> RedisTransport:
    secret = load_secret(config)
    if secret is None and not config.insecure:
        msg = (
            "the Redis transport needs a shared secret to sign messages: set "
            "PIPELINE_ACTORS_SECRET or pass --secret-file FILE on every "
            "instance (or --insecure to run without one)"
        )
        raise ConfigError(msg)
    if secret is None:
        logger.warning(
            "Running over Redis without a secret (--insecure): anyone who can "
            "write to this Redis can run code in every instance of the run"
        )
    settings = RedisSettings(
        config.redis_url, run_id, secret, config.key_prefix, config.key_ttl
    )
    transport = RedisTransport(settings)
    transport.client  # noqa: B018 (connects now, so an unreachable Redis fails here)
    return transport


def _run_settings(config: ResolvedConfig, run_id: str) -> RunSettings:
    return RunSettings(
        run_id=run_id,
        log_level=config.log_level,
        heartbeat_interval=config.heartbeat_interval,
        heartbeat_timeout=config.heartbeat_timeout,
        cancel_grace=config.cancel_grace,
        max_attempts=config.max_attempts,
        prefetch=config.prefetch,
        capability_timeout=config.capability_timeout,
        registration_timeout=config.registration_timeout,
    )


def _instance_options(config: ResolvedConfig) -> InstanceOptions:
    # Without an index of its own, a worker must not take the master's 0, so
    # its workers get a random prefix instead.
    index_given = config.source("instance_index") != "default"
    return InstanceOptions(
        local_workers=_local_workers(config),
        capabilities=_capabilities(config),
        min_workers=config.min_workers,
        instance_index=config.instance_index if index_given else None,
        total_instances=(
            config.total_instances
            if config.source("total_instances") != "default"
            else None
        ),
    )


def _local_workers(config: ResolvedConfig) -> int:
    if config.local_workers is None:
        return os.cpu_count() or 1
    return config.local_workers


def _capabilities(config: ResolvedConfig) -> frozenset[str]:
    names = set(config.capabilities)
    if not config.no_os_capability:
        names.add(os_capability())
    return frozenset(names)


def _reporter(display: str) -> Reporter:
    live = display == "live" or (display == "auto" and sys.stdout.isatty())
    return LiveReporter() if live else LineReporter()


def _add_setting_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    by_name = {setting.name: setting for setting in SETTINGS}
    for name in names:
        setting = by_name[name]
        metavar, text = OPTION_HELP[name]
        default = show_value(setting, setting.default)
        help_text = (
            f"{text} (default: {default}; environment: {setting.environment[0]})"
        )
        if metavar is None:
            parser.add_argument(
                setting.flag, dest=name, action="store_true", help=help_text
            )
        elif name == "capabilities":
            parser.add_argument(
                setting.flag,
                dest=name,
                action="append",
                metavar=metavar,
                help=help_text,
            )
        else:
            parser.add_argument(
                setting.flag, dest=name, metavar=metavar, help=help_text
            )


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every resolved setting and its source, then exit",
    )
    parser.add_argument("--version", action="version", version=__version__)
