"""Celery's output as pocketrun's: one JSON object per line on stdout.

Left alone, Celery gives the root logger and its task logger (``celery.task``, which does
not propagate) plain-text handlers of its own, prints a banner, and writes its shutdown
notices straight to the terminal. Here:

* a ``setup_logging`` receiver makes Celery skip its own set-up and applies
  ``core.logging`` instead (every Celery logger, the task logger too, reaches the root
  handler that renders through structlog);
* the shutdown notices (``safe_say``, written with ``os.write`` since it runs in signal
  handlers) become JSON lines built the same way, still with a single ``os.write``;
* after each task the contextvars it bound (``run_id``, ``flow``, ``step``) are cleared,
  once Celery has logged the task's result with them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from celery import signals
from celery.apps import worker as celery_worker

from core.logging import configure_logging
from core.settings import get_settings


@signals.setup_logging.connect
def _configure(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)


@signals.task_postrun.connect
def _forget_run(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


def say(message: str, file: Any = None) -> None:
    """``celery.apps.worker.safe_say`` as a log line (signal-safe: one ``os.write``)."""
    stream = file if file is not None else sys.__stdout__
    event = {
        "event": message,
        "level": "warning",
        "logger": "celery.apps.worker",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    line = orjson.dumps(event) + b"\n" if get_settings().log_json else f"{message}\n".encode()
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.write(stream.fileno(), line)  # losing a notice must never abort the handler


celery_worker.safe_say = say
