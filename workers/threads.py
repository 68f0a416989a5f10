"""Threads for sync nodes that a hung node cannot use up.

A step past its timeout is abandoned: its thread may never come back. ``StepThreads``
then starts a replacement at once, so the pool keeps its size for the steps that follow;
when an abandoned call finally returns, its thread leaves the pool. Replacements are
capped (``max_abandoned``) so that a flood of hung nodes cannot grow threads without end.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from core.metrics import ABANDONED_THREADS


class _Work:
    __slots__ = ("abandoned", "args", "fn", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future: Future = Future()
        self.fn = fn
        self.args = args
        self.abandoned = False


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
                try:
                    result = work.fn(*work.args)
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
