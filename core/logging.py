"""structlog set up once; ``request_id``, ``run_id``, ``flow`` and ``step`` ride contextvars.

Every event is one line on stdout (JSON unless ``LOG_JSON=false``) for the platform to
collect and rotate: structlog's own events and the standard library's records (uvicorn,
alembic, celery) alike, rendered by the same processors. ``stdlib_config`` is the
``logging.config.dictConfig`` form of the standard library's half, which uvicorn applies in
its supervisor and in every worker process it starts.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_TIME = structlog.processors.TimeStamper(fmt="iso", utc=True)


def _renderer(json: bool) -> structlog.types.Processor:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _TIME,
            structlog.processors.format_exc_info,
            _renderer(json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_config(level, json=json))
    logging.captureWarnings(True)


def stdlib_config(level: str = "INFO", *, json: bool = True) -> dict[str, Any]:
    """One stdout handler on the root logger; uvicorn's loggers hand their records to it."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"pocketrun": {"()": "core.logging.record_formatter", "json": json}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "pocketrun",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            # uvicorn's default config gives these handlers of their own.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # One line per request is not a log event (latency is a metric): off, as the
            # access_log switch, which this config would otherwise undo, leaves it.
            "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
            # The list of plugins alembic loads at import, in every process.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def record_formatter(json: bool = True) -> logging.Formatter:
    """Renders a standard library record as structlog renders its own events."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _TIME,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(json),
        ],
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
