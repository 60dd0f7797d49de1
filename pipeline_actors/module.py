"""The `Module` base class and the declarations a module makes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import InvalidPipelineError

if TYPE_CHECKING:
    from .context import Context


class Module:
    """A unit of work in a pipeline.

    Subclass it, implement `execute`, and declare the rest as class attributes:

    Attributes:
        name: The name the module is known by in the graph, the logs and the
            summary. Defaults to the class name.
        depends_on: Modules (classes or names) whose results this module reads.
            It starts only after all of them succeeded.
        requires: Capabilities a worker must offer to run this module, such as
            ``"linux"`` or ``"gpu"``. Compared case-insensitively.
        only_on: Operating systems the module runs on: any of ``"linux"``,
            ``"macos"`` and ``"windows"``. It runs only on a worker offering
            one of them as a capability, which workers do for their own
            system, so it need not be repeated in `requires`.
        pin_to_master: Run the module in the master's process, never on a worker.
        estimated_duration: Expected seconds of work, used to start the modules
            on the longest path first. Defaults to one second.
        abstract: Set to true in a base class that is not a module of its own.
            Not inherited.
    """

    name: ClassVar[str]
    depends_on: ClassVar[Iterable[type[Module] | str]] = ()
    requires: ClassVar[Iterable[str]] = ()
    only_on: ClassVar[Iterable[str]] = ()
    pin_to_master: ClassVar[bool] = False
    estimated_duration: ClassVar[float | None] = None
    abstract: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.abstract = bool(cls.__dict__.get("abstract", False))
        if "name" not in cls.__dict__:
            cls.name = cls.__name__
        if not _unpickling.active:
            _check_declarations(cls)

    def execute(self, ctx: Context) -> Any:
        """Do the module's work and return its result."""
        raise NotImplementedError


class _Unpickling(threading.local):
    active = False


_unpickling = _Unpickling()


@contextlib.contextmanager
def classes_checked_elsewhere() -> Iterator[None]:
    """Skip the declaration checks of classes rebuilt in this block.

    A worker rebuilds every module class of the pipeline from the master's
    copy, whose declarations the master checked already.
    """
    _unpickling.active = True
    try:
        yield
    finally:
        _unpickling.active = False


def defines_execute(cls: type[Module]) -> bool:
    """Tell whether a module class, or a base between it and `Module`, has `execute`."""
    return cls.execute is not Module.execute


def dependency_names(cls: type[Module]) -> tuple[str, ...]:
    """Return the names of the modules that `cls` depends on, in declared order."""
    return tuple(_name_of(dep) for dep in cls.depends_on)


def capability_names(cls: type[Module]) -> frozenset[str]:
    """Return the capabilities `cls` requires, in lower case."""
    return frozenset(capability.lower() for capability in cls.requires)


OPERATING_SYSTEMS = frozenset({"linux", "macos", "windows"})
"""Capabilities naming an operating system, as workers advertise them."""


def platform_names(cls: type[Module]) -> frozenset[str]:
    """Return the operating systems `cls` is restricted to, in lower case."""
    only_on = cls.only_on
    names = [only_on] if isinstance(only_on, str) else list(only_on)
    return frozenset(name.lower() for name in names)


def _name_of(dep: type[Module] | str) -> str:
    return dep if isinstance(dep, str) else dep.name


def _check_declarations(cls: type[Module]) -> None:
    where = f"module {cls.__qualname__!r}"

    if not isinstance(cls.name, str) or not cls.name:
        raise InvalidPipelineError(f"{where}: name must be a non-empty string")

    deps = cls.depends_on
    if isinstance(deps, (str, type)):
        msg = f"{where}: depends_on must be a list or tuple, got {deps!r}"
        raise InvalidPipelineError(msg)
    for dep in deps:
        is_module = isinstance(dep, type) and issubclass(dep, Module)
        if not (is_module or (isinstance(dep, str) and dep)):
            msg = (
                f"{where}: depends_on entries must be Module subclasses or "
                f"module names, got {dep!r}"
            )
            raise InvalidPipelineError(msg)

    caps = cls.requires
    if isinstance(caps, str) or not all(isinstance(c, str) and c for c in caps):
        msg = f"{where}: requires must be a list of capability names, got {caps!r}"
        raise InvalidPipelineError(msg)

    unknown = platform_names(cls) - OPERATING_SYSTEMS
    if unknown:
        known = ", ".join(sorted(OPERATING_SYSTEMS))
        msg = f"{where}: only_on names unknown systems {sorted(unknown)}; use {known}"
        raise InvalidPipelineError(msg)

    duration = cls.estimated_duration
    valid_duration = isinstance(duration, (int, float)) and duration >= 0
    if duration is not None and not valid_duration:
        msg = f"{where}: estimated_duration must be seconds >= 0, got {duration!r}"
        raise InvalidPipelineError(msg)
