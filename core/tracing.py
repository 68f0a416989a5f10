"""OpenTelemetry, set up only when the standard ``OTEL_*`` variables ask for it.

Off by default: nothing is configured, ``ENABLED`` stays False and the engine's and the
API's hooks step aside without creating a span. It is on when ``OTEL_TRACES_EXPORTER``
names an exporter (``console``, ``otlp``; ``none`` is off), when an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or when the
process already has a tracer provider of its own (``opentelemetry-instrument``).
``OTEL_SDK_DISABLED=true`` wins over all of them. The SDK reads the rest itself:
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (service name default
``pocketrun``), ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` for batching, and the OTLP
exporter's own ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, protocol, timeout).

``console`` writes each finished span as one JSON log line (``event: "span"``) through the
process's log pipeline, so stdout stays one JSON object per line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry import trace

from core.logging import unfiltered_logger

ENABLED = False
TRACER_NAME = "pocketrun"

_configured = False
log = structlog.get_logger("pocketrun.tracing")


def requested_exporters(env: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The exporters the environment asks for; empty: tracing stays off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if "OTEL_TRACES_EXPORTER" in env:
        return names
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def configure_tracing(role: str) -> bool:
    """Install the SDK once per process if the environment asks; True when spans are made.

    Call it in each process after any fork (the batch processor runs a thread)."""
    global ENABLED, _configured
    if _configured:
        return ENABLED
    _configured = True
    exporters = requested_exporters()
    if not exporters:
        # someone else's provider (e.g. opentelemetry-instrument): use it as it is
        ENABLED = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return ENABLED
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"pocketrun.role": role})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "pocketrun"}))
    provider = TracerProvider(resource=resource)
    for name in exporters:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    ENABLED = True
    return True


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (before a process that may skip ``atexit`` ends)."""
    provider = trace.get_tracer_provider()
    force = getattr(provider, "force_flush", None)
    if ENABLED and force is not None:
        force(timeout_ms)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def _exporter(name: str) -> Any:
    if name == "console":
        return LogSpanExporter()
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        )
        try:
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
        except ImportError as exc:
            log.warning("OTLP exporter not installed; spans are not exported", error=str(exc))
            return None
        return OTLPSpanExporter()
    log.warning("unknown OTEL_TRACES_EXPORTER entry ignored", exporter=name)
    return None


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


class LogSpanExporter:
    """The ``console`` exporter: each span as one structured log line on stdout."""

    def __init__(self) -> None:
        self._log: Any = None

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._log is None:  # built on first use: logging is configured by then
            self._log = unfiltered_logger("pocketrun.span")
        for span in spans:
            ctx = span.context
            parent = span.parent
            self._log.info(
                "span",
                name=span.name,
                kind=span.kind.name,
                trace_id=_hex(ctx.trace_id, 32),
                span_id=_hex(ctx.span_id, 16),
                parent_id=_hex(parent.span_id, 16) if parent is not None else None,
                duration_ms=round((span.end_time - span.start_time) / 1e6, 3),
                status=span.status.status_code.name,
                status_message=span.status.description,
                attributes=dict(span.attributes or {}),
                span_events=[
                    {"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events
                ],
            )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
