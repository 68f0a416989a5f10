"""What a node may ask about the step it runs in, without knowing it runs in a server."""

from __future__ import annotations

from contextvars import ContextVar

_step_key: ContextVar[str | None] = ContextVar("pocketrun_step_key", default=None)


def step_key() -> str | None:
    """The step's idempotency key (``run_id:seq``), or None outside pocketrun."""
    return _step_key.get()


def set_step_key(key: str | None) -> None:
    _step_key.set(key)
