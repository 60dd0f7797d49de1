"""Capture what a module writes, so the master can show it under the module."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
from typing import TextIO


class FileDescriptorCapture:
    """Redirect this process's stdout and stderr into a file, read per module.

    A worker runs one module at a time, so everything written to file
    descriptors 1 and 2 between two calls of `take` belongs to one module:
    `print`, logging, and subprocesses that inherit the descriptors alike.
    Redirecting the descriptors themselves, not only `sys.stdout`, is what
    catches output of C extensions and of child processes.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 (closed by close())
        self._fd = self._file.fileno()
        sys.stdout.flush()
        sys.stderr.flush()
        self.original_stdout_fd = os.dup(1)
        self.original_stderr_fd = os.dup(2)
        os.dup2(self._fd, 1)
        os.dup2(self._fd, 2)
        # Line buffering keeps print() and stderr in the order they were written.
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True)

    def original_stderr(self) -> TextIO:
        """Return a stream to the stderr this process had before the capture."""
        return os.fdopen(os.dup(self.original_stderr_fd), "w", buffering=1)

    def take(self) -> str:
        """Return what was written since the last call, and forget it."""
        sys.stdout.flush()
        sys.stderr.flush()
        size = os.fstat(self._fd).st_size
        if size == 0:
            return ""
        data = os.pread(self._fd, size, 0)
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.original_stdout_fd, 1)
        os.dup2(self.original_stderr_fd, 2)
        os.close(self.original_stdout_fd)
        os.close(self.original_stderr_fd)
        self._file.close()


class _ThreadRoutedStream(io.TextIOBase):
    """A text stream that sends each thread's writes to that thread's buffer."""

    def __init__(self, fallback: TextIO, buffers: dict[int, io.StringIO]) -> None:
        self._fallback = fallback
        self._buffers = buffers

    def write(self, text: str) -> int:
        buffer = self._buffers.get(threading.get_ident())
        if buffer is None:
            return self._fallback.write(text)
        return buffer.write(text)

    def flush(self) -> None:
        self._fallback.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._fallback, "encoding", "utf-8")


class ThreadCapture:
    """Capture `sys.stdout` and `sys.stderr` per thread, for pinned modules.

    Pinned modules run in threads of the master's process, whose descriptors
    belong to the master's console, so their capture works at the level of
    Python streams.

    NOTE: output written straight to file descriptors 1 and 2 by a pinned
    module (a C extension, `os.system`) reaches the console uncaptured.
    `Context.run` is captured because it copies its command's output to
    `sys.stdout`.
    """

    def __init__(self) -> None:
        self._buffers: dict[int, io.StringIO] = {}
        self._lock = threading.Lock()
        self._saved: tuple[TextIO, TextIO] | None = None

    def begin(self) -> None:
        """Start capturing for the calling thread."""
        with self._lock:
            if self._saved is None:
                self._saved = (sys.stdout, sys.stderr)
                sys.stdout = _ThreadRoutedStream(sys.stdout, self._buffers)
                sys.stderr = _ThreadRoutedStream(sys.stderr, self._buffers)
            self._buffers[threading.get_ident()] = io.StringIO()

    def end(self) -> str:
        """Stop capturing for the calling thread and return what it wrote."""
        with self._lock:
            buffer = self._buffers.pop(threading.get_ident(), None)
            if not self._buffers and self._saved is not None:
                sys.stdout, sys.stderr = self._saved
                self._saved = None
        return buffer.getvalue() if buffer is not None else ""
