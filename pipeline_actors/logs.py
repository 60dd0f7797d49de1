"""Logging through loguru: quiet by default, enabled by the command line.

Two kinds of records pass through loguru here. Actor records (starts, stops,
assignments, caught errors) carry the actor and run ids and go to the log
stream. Records a module writes through `Context.log` carry ``module_log`` and
go to `sys.stderr` as it is when they are written, which is where the module's
output is being captured.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from loguru import logger

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LEVEL = "WARNING"

ACTOR_FORMAT = (
    "<dim>{time:HH:mm:ss.SSS}</dim> <level>{level: <7}</level> "
    "<cyan>{extra[actor]}</cyan> <dim>run={extra[run_id]}</dim> {message}"
)
MODULE_FORMAT = "{time:HH:mm:ss.SSS} {level: <7} {message}"


def _is_module_record(record: dict[str, Any]) -> bool:
    return "module_log" in record["extra"]


def _is_actor_record(record: dict[str, Any]) -> bool:
    return "module_log" not in record["extra"]


def _write_to_current_stderr(message: str) -> None:
    sys.stderr.write(message)


def configure(level: str | None, stream: TextIO | None = None) -> None:
    """Send actor records at `level` or above to `stream`, or none when `level` is None.

    Module records always go to the module's captured output.
    """
    logger.remove()
    logger.configure(extra={"actor": "-", "run_id": "-"})
    logger.add(
        _write_to_current_stderr,
        level="TRACE",
        format=MODULE_FORMAT,
        filter=_is_module_record,
        colorize=False,
    )
    if level is None:
        logger.disable("pipeline_actors")
        return
    logger.enable("pipeline_actors")
    stream = stream or sys.stderr
    logger.add(
        stream,
        level=level.upper(),
        format=ACTOR_FORMAT,
        filter=_is_actor_record,
        colorize=stream.isatty(),
        backtrace=False,
        diagnose=False,
    )


def actor_logger(actor: str, run_id: str) -> Any:
    """Return the logger an actor writes through."""
    return logger.bind(actor=actor, run_id=run_id)
