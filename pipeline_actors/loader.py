"""Loading a pipeline from a `.py` file or an importable module name."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

import cloudpickle

from .errors import InvalidPipelineError, PipelineImportError, PipelineNotFoundError
from .module import Module
from .pipeline import Pipeline

DEFAULT_PIPELINE = "pipeline.py"


def load_pipeline(target: str | Path = DEFAULT_PIPELINE) -> list[type[Module]]:
    """Import a pipeline and return its module classes.

    `target` is a path to a `.py` file, or a dotted module name. Its modules
    are those of its `Pipeline` object when it has one, and otherwise every
    non-abstract `Module` subclass it defines. The module's code travels by
    value with cloudpickle, so workers need no copy of the file.
    """
    namespace = _import(str(target))
    cloudpickle.register_pickle_by_value(namespace)
    return modules_of(namespace)


def modules_of(namespace: ModuleType) -> list[type[Module]]:
    """Return the pipeline's modules from an imported pipeline namespace."""
    pipelines = [v for v in vars(namespace).values() if isinstance(v, Pipeline)]
    if len(pipelines) > 1:
        msg = (
            f"{namespace.__name__} defines {len(pipelines)} Pipeline objects; keep one"
        )
        raise InvalidPipelineError(msg)
    if pipelines:
        return list(pipelines[0].modules)
    return [
        value
        for value in vars(namespace).values()
        if isinstance(value, type)
        and issubclass(value, Module)
        and value.__module__ == namespace.__name__
        and not value.abstract
    ]


def _import(target: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py") or path.is_file() or "/" in target:
        return _import_file(path)
    return _import_name(target)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        where = path.resolve()
        raise PipelineNotFoundError(f"pipeline file not found: {where}")
    path = path.resolve()
    name = f"pipeline_actors_file_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineImportError(f"cannot import {path}: not a Python file")

    namespace = importlib.util.module_from_spec(spec)
    # Like `python file.py`, let the pipeline import modules beside it.
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = namespace
    try:
        spec.loader.exec_module(namespace)
    except BaseException as exc:
        del sys.modules[name]
        # The pipeline's own InvalidPipelineError already explains the problem.
        if isinstance(exc, (KeyboardInterrupt, InvalidPipelineError)):
            raise
        raise PipelineImportError(_import_failure(str(path), exc)) from exc
    return namespace


def _import_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            msg = (
                f"pipeline {name!r} not found: no file of that name and no "
                f"importable module {exc.name!r}"
            )
            raise PipelineNotFoundError(msg) from exc
        raise PipelineImportError(_import_failure(name, exc)) from exc
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, InvalidPipelineError)):
            raise
        raise PipelineImportError(_import_failure(name, exc)) from exc


def _import_failure(target: str, exc: BaseException) -> str:
    # Drop the frames of the import machinery, which mean nothing to the user.
    frames = traceback.extract_tb(exc.__traceback__)
    own = [
        frame
        for frame in frames
        if frame.filename != __file__ and "importlib" not in frame.filename
    ]
    lines = traceback.format_list(own)
    lines += traceback.format_exception_only(type(exc), exc)
    return f"importing pipeline {target} failed:\n" + "".join(lines).rstrip()
