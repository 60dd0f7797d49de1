"""Runs pinned modules in threads of the master's own process."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable, Mapping

from ..capture import ThreadCapture
from ..context import Context
from ..errors import ModuleCancelled
from ..execution import Interruptible, call_module
from ..messages import MASTER_ID, Assign, Payload, ResultEvent
from ..module import Module, dependency_names


class PinnedRunner:
    """Executes modules that must stay on the master, each in its own thread.

    A result goes through `deliver`, the master's own mailbox, like any
    worker's result, so the master treats both the same way.
    """

    def __init__(
        self,
        modules: Mapping[str, type[Module]],
        run_id: str,
        deliver: Callable[[ResultEvent], None],
        request_cancel: Callable[[str], None],
        fetch: Callable[[Payload], bytes],
    ) -> None:
        self._modules = modules
        self._fetch = fetch
        self._run_id = run_id
        self._deliver = deliver
        self._request_cancel = request_cancel
        self._capture = ThreadCapture()
        self._running: dict[int, tuple[Context, Interruptible]] = {}
        self._lock = threading.Lock()

    def start(self, assign: Assign) -> None:
        thread = threading.Thread(
            target=self._run, args=(assign,), name=f"pinned-{assign.module}"
        )
        thread.daemon = True
        thread.start()

    def cancel(self) -> None:
        """Interrupt every running pinned module with `ModuleCancelled`."""
        with self._lock:
            running = list(self._running.items())
        for thread_id, (ctx, interruptible) in running:
            ctx._mark_cancelled()
            if interruptible.active:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(ModuleCancelled)
                )

    def _run(self, assign: Assign) -> None:
        cls = self._modules[assign.module]
        ctx = Context(
            module=assign.module,
            dependencies=dependency_names(cls),
            inputs=assign.inputs,
            fetch=self._fetch,
            run_id=self._run_id,
            worker_id=MASTER_ID,
            attempt=assign.attempt,
            request_cancel=self._request_cancel,
        )
        interruptible = Interruptible()
        with self._lock:
            self._running[threading.get_ident()] = (ctx, interruptible)

        self._capture.begin()
        started_at = time.time()
        started = time.perf_counter()
        try:
            outcome, value, error = call_module(cls, ctx, interruptible)
        finally:
            duration = time.perf_counter() - started
            output = self._capture.end()
            with self._lock:
                del self._running[threading.get_ident()]

        result = ResultEvent(
            MASTER_ID, assign.module, assign.attempt, outcome, value, error,
            output, started_at, duration,
        )  # fmt: skip
        self._deliver(result)
