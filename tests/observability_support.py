"""Reading what a process wrote on stdout: JSON log lines, and spans among them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# every line of every process has these (core.logging)
LINE_KEYS = {"timestamp", "level", "event", "logger"}
# the console span exporter, with spans exported within 50 ms
TRACING_ENV = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line parsed as JSON: a line that isn't one fails the test, naming it."""
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {text!r}") from None
    return lines


def spans(*paths: Path) -> list[dict[str, Any]]:
    return [line for path in paths for line in log_lines(path) if line["event"] == "span"]


def only(items: list[dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(items) == 1, f"expected one {what}, found {len(items)}: {items}"
    return items[0]


def of_run(found: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [s for s in found if s["attributes"].get("pocketrun.run.id") == run_id]
