"""What a node may ask about the step it runs in, without knowing it runs in a server."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson

_step_key: ContextVar[str | None] = ContextVar("pocketrun_step_key", default=None)
# Set by the engine around a node's calls: takes a chunk and its size in bytes.
_emitter: ContextVar[Callable[[Any, int], None] | None] = ContextVar(
    "pocketrun_emitter", default=None
)


def step_key() -> str | None:
    """The step's idempotency key (``run_id:seq``), or None outside pocketrun."""
    return _step_key.get()


def set_step_key(key: str | None) -> None:
    _step_key.set(key)


def emit(chunk: Any) -> None:
    """Stream ``chunk`` (a string or a JSON value) to the run's event stream now, before
    the step commits. Outside pocketrun, or when nobody could listen, it does nothing."""
    emitter = _emitter.get()
    if emitter is None:
        return
    try:
        size = len(orjson.dumps(chunk))
    except TypeError as exc:
        raise TypeError(f"emit() takes a string or a JSON value: {exc}") from None
    emitter(chunk, size)


def set_emitter(emitter: Callable[[Any, int], None] | None) -> None:
    _emitter.set(emitter)


# Set by the engine around a step's calls: takes the seconds a node asked to sleep.
_sleeper: ContextVar[Callable[[float], None] | None] = ContextVar("pocketrun_sleeper", default=None)


def sleep(seconds: float) -> None:
    """Ask for a durable sleep: once this step commits, the run holds nothing for
    ``seconds`` and then goes on with the next node, whatever restarts in between. Call it
    from ``post`` (it takes effect after the step); outside pocketrun it sleeps here."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"sleep() takes a number of seconds >= 0, not {seconds!r}")
    sleeper = _sleeper.get()
    if sleeper is None:
        import time

        time.sleep(seconds)
        return
    sleeper(float(seconds))


def set_sleeper(sleeper: Callable[[float], None] | None) -> None:
    _sleeper.set(sleeper)
