"""Calling a module's `execute` and turning the outcome into a result."""

from __future__ import annotations

import linecache
import re
import traceback
from typing import Any

from .context import Context
from .errors import ModuleCancelled
from .mailbox import encode
from .messages import Outcome
from .module import Module


class Interruptible:
    """Whether the module's own code is running, so a cancel may interrupt it."""

    active = False


def call_module(
    cls: type[Module], ctx: Context, interruptible: Interruptible | None = None
) -> tuple[Outcome, bytes | None, str | None]:
    """Run one attempt of `cls` and return its outcome, serialized value and error.

    Nothing the module raises escapes: an exception becomes a failure with its
    traceback, `ModuleCancelled` becomes a cancellation, and a value that
    cannot be pickled becomes a failure that names its type.
    """
    guard = interruptible or Interruptible()
    try:
        guard.active = True
        try:
            value = cls().execute(ctx)
        finally:
            guard.active = False
    except ModuleCancelled:
        return Outcome.CANCELLED, None, "cancelled while running"
    except BaseException as exc:
        return Outcome.FAILED, None, _format_error(exc)
    return _serialize(value)


def _serialize(value: Any) -> tuple[Outcome, bytes | None, str | None]:
    # `encode` tries the standard pickler first: cloudpickle's costs a tenth
    # of a millisecond when its code has gone cold while the module ran.
    try:
        return Outcome.SUCCEEDED, encode(value), None
    except Exception as exc:
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        error = f"the result, of type {kind}, cannot be pickled: {exc}"
        return Outcome.FAILED, None, error


def _format_error(exc: BaseException) -> str:
    # Start below call_module's own frame: the user's code is what matters.
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
    return "".join(traceback.format_exception(type(exc), exc, tb))


_DYNAMIC_FRAME = re.compile(r'File "<dynamic-code>", line (\d+), in (.+)')


def restore_filenames(error: str, path: str | None) -> str:
    """Put the pipeline file's name and lines back into a worker's traceback.

    cloudpickle replaces the file name of code it sends by value with
    ``<dynamic-code>``. The master still has the file, so it restores the
    name and the source line under each such frame.
    """
    if not path or "<dynamic-code>" not in error:
        return error

    def restore(match: re.Match[str]) -> str:
        line_number = int(match.group(1))
        frame = f'File "{path}", line {line_number}, in {match.group(2)}'
        source = linecache.getline(path, line_number).strip()
        return f"{frame}\n    {source}" if source else frame

    return _DYNAMIC_FRAME.sub(restore, error)
