"""structlog set up once; ``request_id``, ``run_id``, ``flow`` and ``step`` ride contextvars.

Every event is one line on stdout (JSON unless ``LOG_JSON=false``) for the platform to
collect and rotate: structlog's own events and the standard library's records (uvicorn,
alembic, celery) alike, rendered by the same processors. ``stdlib_config`` is the
``logging.config.dictConfig`` form of the standard library's half, which uvicorn applies in
its supervisor and in every worker process it starts.

Every line has ``timestamp``, ``level``, ``event`` and ``logger`` (structlog's own loggers
carry the name they were made with). uvicorn's access lines (``LOG_ACCESS=true``) also get
``client``, ``method``, ``path`` and ``status``.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_TIME = structlog.processors.TimeStamper(fmt="iso", utc=True)
ACCESS_LOGGER = "uvicorn.access"


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's fast stdout writer, with the name ``get_logger(name)`` was given."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


def _named_factory(*args: Any) -> _NamedWriteLogger:
    return _NamedWriteLogger(sys.stdout, str(args[0]) if args else "pocketrun")


def _access_fields(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's access record as fields: its args are (client, method, path, version, status).

    A record's args reach here as ``positional_args`` (``pass_foreign_args``); they are
    already in its message, so they leave the line whatever the logger."""
    args = event.pop("positional_args", None)
    record = event.get("_record")
    if record is not None and record.name == ACCESS_LOGGER and len(args or ()) == 5:
        client, verb, path, _, status = args
        event.update(client=client, method=verb, path=path, status=status)
    return event


def _renderer(json: bool) -> structlog.types.Processor:
    return structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()


def _processors(json: bool) -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        _TIME,
        structlog.processors.format_exc_info,
        _renderer(json),
    ]


def configure_logging(level: str = "INFO", *, json: bool = True, access: bool = False) -> None:
    structlog.configure(
        processors=_processors(json),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_named_factory,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(stdlib_config(level, json=json, access=access))
    logging.captureWarnings(True)


def unfiltered_logger(name: str) -> Any:
    """A logger that writes whatever the level (for records asked for on their own, such as
    the console span exporter's), rendered as every other line is."""
    json = isinstance(structlog.get_config()["processors"][-1], structlog.processors.JSONRenderer)
    return structlog.wrap_logger(
        _named_factory(name), processors=_processors(json), wrapper_class=structlog.BoundLogger
    )


def stdlib_config(
    level: str = "INFO", *, json: bool = True, access: bool = False
) -> dict[str, Any]:
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
            # One line per request is not a log event (latency is a metric): off unless
            # LOG_ACCESS asks, as the access_log switch, which this config would otherwise
            # undo, leaves it.
            ACCESS_LOGGER: {
                "handlers": [],
                "propagate": True,
                "level": "INFO" if access else "WARNING",
            },
            # The list of plugins alembic loads at import, in every process.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def record_formatter(json: bool = True) -> logging.Formatter:
    """Renders a standard library record as structlog renders its own events."""
    return structlog.stdlib.ProcessorFormatter(
        pass_foreign_args=True,
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _access_fields,
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
