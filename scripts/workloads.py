"""The module graphs that both benchmarks run, built from two abstract bases."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pipeline_actors import Module

SLEEP_SECONDS = 0.010
"""Seconds each module of the diamond sleeps."""


class NoOpModule(Module):
    abstract = True

    def execute(self, ctx):
        return None


class SleepModule(Module):
    abstract = True

    def execute(self, ctx):
        time.sleep(SLEEP_SECONDS)


def make_module(
    base: type[Module], name: str, depends_on: Sequence[type[Module]] = ()
) -> type[Module]:
    return type(name, (base,), {"depends_on": tuple(depends_on)})


def independent_modules(count: int) -> list[type[Module]]:
    return [make_module(NoOpModule, f"task{i}") for i in range(count)]


def chain_modules(length: int) -> list[type[Module]]:
    modules = [make_module(NoOpModule, "hop0")]
    for index in range(1, length):
        modules.append(make_module(NoOpModule, f"hop{index}", [modules[-1]]))
    return modules


def diamond_modules(width: int) -> list[type[Module]]:
    source = make_module(SleepModule, "source")
    middle = [make_module(SleepModule, f"middle{i}", [source]) for i in range(width)]
    sink = make_module(SleepModule, "sink", middle)
    return [source, *middle, sink]
