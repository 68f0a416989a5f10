"""SIGTERM drains at once: the executor stops taking runs the moment the signal arrives.

uvicorn sends the lifespan shutdown only after every open connection has closed (or its
``timeout_graceful_shutdown`` ran out), so a long poll or an inline request would hold the
drain back, and meanwhile the executor would go on starting steps. ``Drain`` chains itself
in front of uvicorn's own signal handler: the signal starts the executor's drain, wakes the
long polls (they answer the run as it stands) and arms a last-resort timer that ends the
process ``HARD_EXIT_AFTER`` seconds past the grace, should something never return (its
runs' leases then expire and the sweeper of another process carries them on).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("pocketrun.drain")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
HARD_EXIT_AFTER = 4.0
HARD_EXIT_CODE = 1


class Drain:
    def __init__(self, stop: Callable[[], Awaitable[None]], grace: float) -> None:
        self._stop = stop
        self.grace = grace
        self._task: asyncio.Task | None = None
        self._timer: threading.Timer | None = None

    def begin(self) -> None:
        """Start draining (once); returns at once."""
        if self._task is None:
            log.info("draining", grace=self.grace)
            self._task = asyncio.get_running_loop().create_task(self._stop(), name="drain")

    async def finish(self) -> None:
        """Drain, or wait for the drain a signal started, to its end."""
        self.begin()
        assert self._task is not None
        await self._task

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Begin on SIGTERM or SIGINT while inside; the handler found before still runs.

        Only the main thread can set signal handlers; elsewhere (an app served from a thread
        in a test) the lifespan shutdown starts the drain, as it always did."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

        def handler(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            self._arm_hard_exit()
            before: Any = previous[sig]
            if callable(before):
                before(sig, frame)

        chained = [sig for sig in SIGNALS if callable(previous[sig])]
        for sig in chained:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            # An armed timer stays armed: the process is on its way out.
            for sig in chained:
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, previous[sig])

    def _arm_hard_exit(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(self.grace + HARD_EXIT_AFTER, _hard_exit, (self.grace,))
        self._timer.daemon = True
        self._timer.start()


def _hard_exit(grace: float) -> None:
    log.critical("drain did not end in time; exiting now", grace=grace)
    os._exit(HARD_EXIT_CODE)
