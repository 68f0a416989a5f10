"""Prometheus metrics shared by the API and the engine."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS_CREATED = Counter("pocketrun_runs_created_total", "Runs created", ["flow"])
RUNS_FINISHED = Counter("pocketrun_runs_finished_total", "Runs ended", ["flow", "status"])
STEP_SECONDS = Histogram(
    "pocketrun_step_seconds",
    "Node step duration, commit included",
    ["flow"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge("pocketrun_queue_depth", "Runs waiting for an executor slot here")
IN_FLIGHT = Gauge("pocketrun_runs_in_flight", "Runs being advanced in this process")
API_SECONDS = Histogram(
    "pocketrun_api_request_seconds",
    "API latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
WORKERS_ALIVE = Gauge("pocketrun_workers_alive", "Workers with a live heartbeat")
ABANDONED_THREADS = Gauge(
    "pocketrun_step_threads_abandoned", "Step threads still inside a call that timed out"
)
SUPERVISOR_FAILURES = Counter(
    "pocketrun_supervisor_failures_total", "Supervisor duties that failed", ["duty"]
)
CHANGE_WAITERS = Gauge(
    "pocketrun_change_waiters", "Runs with a long poll waiting on a change in this process"
)
EVENT_SUBSCRIBERS = Gauge(
    "pocketrun_event_subscribers", "Event streams open on this process (GET /v1/runs/{id}/events)"
)
EVENT_SUBSCRIBERS_CUT = Counter(
    "pocketrun_event_subscribers_cut_total",
    "Event streams cut off because their client fell EVENT_BUFFER events behind",
)
RUNS_DELETED = Counter(
    "pocketrun_runs_deleted_total", "Finished runs deleted after RETENTION_DAYS (retention)"
)
KEY_LOOKUPS = Counter(
    "pocketrun_auth_key_lookups_total", "API keys looked up in the database (cache misses)"
)
DENIALS_UNAUDITED = Counter(
    "pocketrun_audit_denials_dropped_total",
    "Refused calls (401, 403) not written to the audit log: over its per-process budget",
)
NODE_CACHE = Counter(
    "pocketrun_node_cache_total", "Node cache lookups and writes", ["result"]
)  # hit, miss, error


# --- Circuit breaker (nodes.breaker) ---------------------------------------------------
BREAKER_TRANSITIONS = Counter(
    "pocketrun_breaker_transitions_total",
    "Circuit breaker state changes seen by this process",
    ["service", "state"],
)
BREAKER_OPEN = Gauge(
    "pocketrun_breaker_open", "1 while this process sees the service's breaker open", ["service"]
)
BREAKER_REJECTED = Counter(
    "pocketrun_breaker_rejected_total", "Calls refused by an open breaker", ["service"]
)
