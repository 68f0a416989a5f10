"""What tracing costs a step: the hooks with tracing off, and spans on versus off.

Part one times, in a tight loop, each thing the engine does per step or per advance
because tracing exists, with tracing off (its default). Part two advances one long run
(the built-in ``long`` flow, no delay) on SQLite through the real ``RunEngine``, tracing
off and then on (the SDK with a batch processor and an exporter that drops the spans),
and reports the per-step latency of each.

    .venv/bin/python -m bench.tracing [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

from bench.common import machine, median, save, table
from bench.history import new_run, open_migrated


def _per_call_ns(stmt: Any, number: int = 200_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9


def hook_costs() -> dict[str, float]:
    """Nanoseconds per call of each hook with tracing off."""
    from core import tracing as config
    from workers import tracing

    assert not config.ENABLED
    runner, claimed, run_id = object(), object(), uuid.uuid4()

    def work() -> None:
        return None

    def in_copied_context() -> None:  # what a step thread now does around a sync call
        contextvars.copy_context().run(work)

    def publish_hooks() -> None:
        with tracing.dispatching(run_id, "default"):
            tracing.trace_headers(run_id)

    return {
        "bare call (reference)": _per_call_ns(work),
        "step thread: run in copied context": _per_call_ns(in_copied_context),
        "traced_runner (per advance)": _per_call_ns(lambda: tracing.traced_runner(runner, claimed)),
        "run_ended (per run)": _per_call_ns(lambda: tracing.run_ended("succeeded")),
        "remember (per queued run)": _per_call_ns(lambda: tracing.remember(run_id)),
        "dispatching + trace_headers (per message)": _per_call_ns(publish_hooks),
    }


async def _advance_once(url: str, steps: int) -> float:
    from core.settings import Settings
    from flows.registry import load_flows
    from workers.engine import Outcome, RunEngine

    store = await open_migrated(url)
    try:
        run_id = await new_run(store, steps)
        engine = RunEngine(store, load_flows(), Settings(database_url=url), worker_name="bench")
        began = time.perf_counter()
        outcome = await engine.advance(run_id)
        seconds = time.perf_counter() - began
        engine.threads.shutdown(wait=False)
        if outcome is not Outcome.finished:
            raise RuntimeError(f"the run ended {outcome}")
        return seconds / (steps + 1) * 1e6  # the finish node is a step too
    finally:
        await store.close()


def _enable_tracing() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from core import tracing as config

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    config.ENABLED = True


async def engine_costs(steps: int, repeats: int, tmp: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"off": [], "on": []}
    for mode in ("off", "on"):
        if mode == "on":
            _enable_tracing()
        for i in range(repeats + 1):  # the first of each is a warm-up
            url = f"sqlite+aiosqlite:///{tmp / f'{mode}{i}.db'}"
            per_step = await _advance_once(url, steps)
            if i:
                results[mode].append(per_step)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    hooks = hook_costs()
    with tempfile.TemporaryDirectory() as tmp:
        engine = asyncio.run(engine_costs(args.steps, args.repeats, Path(tmp)))
    off, on = median(engine["off"]), median(engine["on"])
    print(table("hooks with tracing off", ["hook", "ns/call"], [[k, v] for k, v in hooks.items()]))
    print()
    print(
        table(
            f"RunEngine on SQLite, {args.steps}-step run, median of {args.repeats}",
            ["tracing", "us/step", "vs off"],
            [["off", off, 1.0], ["on (SDK, spans dropped)", on, on / off]],
        )
    )
    path = save(
        "tracing",
        {"machine": machine(), "args": vars(args), "hooks_ns": hooks, "engine_us_per_step": engine},
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
