"""Threads for sync nodes that a hung node cannot use up.

A step past its timeout is abandoned: its thread may never come back. ``StepThreads``
then starts a replacement at once, so the pool keeps its size for the steps that follow;
when an abandoned call finally returns, its thread leaves the pool. Replacements are
capped (``max_abandoned``) so that a flood of hung nodes cannot grow threads without end;
``near_cap`` tells health checks when the process is close to that cap.

A call runs in a copy of its submitter's context: what the caller bound (the run id and
step the log lines carry, the current span) holds inside the node's code too.

A call's start time is kept (``started_at``) so that a step timeout can count the node's
own time from there, not the time its call waited for a thread.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from core.metrics import ABANDONED_THREADS


class _Work:
    __slots__ = ("abandoned", "args", "context", "fn", "future", "started")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future: Future = Future()
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()
        self.abandoned = False
        self.started: float | None = None  # time.monotonic() when a thread took it


class StepThreads(Executor):
    def __init__(self, size: int, *, max_abandoned: int = 256, name: str = "pocketrun-step"):
        self.size = size
        self.max_abandoned = max_abandoned
        self.name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # live threads, busy or idle
        self._idle = 0
        self._abandoned = 0  # threads still inside an abandoned call
        self._by_future: dict[Future, _Work] = {}
        self._shutdown = False

    @property
    def abandoned(self) -> int:
        return self._abandoned

    @property
    def near_cap(self) -> bool:
        """Four fifths of the replacements used: a few more hung nodes and steps queue."""
        return self._abandoned * 5 >= self.max_abandoned * 4

    def health(self) -> tuple[dict[str, int], list[str]]:
        """The pool's numbers for /readyz, and warnings once hung calls near the cap."""
        numbers = {"size": self.size, "abandoned": self._abandoned, "cap": self.max_abandoned}
        warnings = []
        if self.near_cap:
            warnings.append(
                f"{self._abandoned} step threads are stuck in calls that timed out "
                f"(cap {self.max_abandoned}); past the cap, hung nodes hold the pool's threads"
            )
        return numbers, warnings

    def started_at(self, future: Future) -> float | None:
        """When a thread began the call behind ``future`` (None: still queued, or over)."""
        work = self._by_future.get(future)
        return work.started if work is not None else None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if kwargs:
            raise TypeError("StepThreads.submit takes positional arguments only")
        work = _Work(fn, args)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the step threads are shut down")
            self._by_future[work.future] = work
            if self._idle == 0 and self._threads < self.size + self._abandoned:
                self._start_thread()
            else:
                self._idle -= 1
        self._queue.put(work)
        return work.future

    def abandon(self, future: Future) -> None:
        """The call behind ``future`` timed out: its thread no longer counts as the pool's."""
        with self._lock:
            work = self._by_future.get(future)
            if work is None or work.abandoned or self._abandoned >= self.max_abandoned:
                return
            work.abandoned = True
            self._abandoned += 1
            ABANDONED_THREADS.set(self._abandoned)

    def _start_thread(self) -> None:
        self._threads += 1
        name = f"{self.name}-{self._threads}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                with self._lock:
                    self._threads -= 1
                return
            if work.future.set_running_or_notify_cancel():
                work.started = time.monotonic()
                try:
                    result = work.context.run(work.fn, *work.args)
                except BaseException as exc:
                    work.future.set_exception(exc)
                else:
                    work.future.set_result(result)
            with self._lock:
                self._by_future.pop(work.future, None)
                if work.abandoned:  # the pool replaced this thread long ago: leave
                    self._abandoned -= 1
                    self._threads -= 1
                    ABANDONED_THREADS.set(self._abandoned)
                    return
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = self._threads
            pending = list(self._by_future.values()) if cancel_futures else []
        for work in pending:
            work.future.cancel()
        for _ in range(threads):
            self._queue.put(None)
