"""The dashboard in headless Chromium against a real ``pocketrun serve`` on SQLite.

- time to first render of the runs list with 1,000,000 runs stored (as the tenant's admin,
  unfiltered and filtered, and as a cross-tenant admin), from navigation to the table
  drawn;
- time to first render of a run with 10,000 steps, from navigation to its graph and first
  timeline page drawn;
- events per second the run page keeps up with: a live 10,000-step run (step.started and
  step.finished per step) and one step streaming 20,000 ``node.output`` chunks; the page's
  own counter of events drawn, against the events the server sent.

    .venv/bin/python -m bench.dashboard [--runs 1000000] [--steps 10000] [--chunks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import scale
from bench.common import machine, save, table
from db.migrate import upgrade
from db.store import open_store
from tests.browser_support import browser
from tests.security_support import cli_key
from tests.support import TEST_ADMIN_KEY, Server, wait_until

ROUNDS = 5


async def seed(url: str, n: int) -> float:
    store = open_store(url)
    try:
        await upgrade(store)
        began = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for row in scale.rows(n, scale.datetime(2026, 1, 1, tzinfo=scale.UTC)):
            if row["tenant"] == "tenant-0":
                row["tenant"] = "default"
            batch.append(row)
            if len(batch) == 10_000:
                async with store.sa.write() as conn:
                    await conn.execute(scale.insert(scale.runs), batch)
                batch = []
        if batch:
            async with store.sa.write() as conn:
                await conn.execute(scale.insert(scale.runs), batch)
        async with store.sa.write() as conn:
            await conn.exec_driver_sql("ANALYZE")
        return time.perf_counter() - began
    finally:
        await store.close()


def first_render(page: Any, url: str, ready: str) -> list[float]:
    """Milliseconds from navigation start to ``ready`` present, ROUNDS fresh loads."""
    out = []
    for _ in range(ROUNDS):
        page.goto("about:blank")
        page.goto(url)
        page.wait_for_selector(ready, timeout=60_000)
        out.append(page.evaluate("performance.now()"))
    return out


def sign_in(page: Any, server: Server, key: str) -> None:
    page.goto(f"{server.url}/ui")
    page.fill("#api-key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#runs-table[data-loaded]", timeout=60_000)


def page_events(page: Any) -> int:
    return int(page.get_attribute("#event-count", "data-events") or 0)


def follow(page: Any, server: Server, api: httpx.Client, run_id: str, timeout: float) -> dict:
    """Open the run's page as it starts and wait until it shows the run finished: the
    events it drew per second between its first and last drawn frame, and ``lag_ms`` from
    the run's finish (the server's clock) to the page showing it."""
    page.goto(f"{server.url}/ui#/runs/{run_id}")
    page.wait_for_selector("#event-count")
    began = time.perf_counter()
    shown_at = None
    while time.perf_counter() - began < timeout:
        if page.locator(".page-head [data-status=succeeded]").count():
            shown_at = time.time()
            break
        time.sleep(0.05)
    if shown_at is None:
        raise RuntimeError(f"the page did not show run {run_id} finished in {timeout} s")
    run = api.get(f"/v1/runs/{run_id}").json()
    finished = datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00")).timestamp()
    # The page stamps its first and last drawn frame (performance.now(), in ms).
    first = float(page.get_attribute("#event-count", "data-first-at") or 0)
    last = float(page.get_attribute("#event-count", "data-last-at") or 0)
    drawn = page_events(page)
    rate = drawn / ((last - first) / 1000) if last > first else float("nan")
    return {
        "events_drawn": drawn,
        "steps": run["steps"],
        "seconds": (last - first) / 1000,
        "events_per_second": rate,
        "lag_ms": max(0.0, (shown_at - finished) * 1000),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pocketrun-bench-ui-") as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite+aiosqlite:///{tmp / 'pocketrun.db'}"
        seeded = asyncio.run(seed(url, args.runs))
        print(f"seeded {args.runs} runs in {seeded:.1f} s", flush=True)
        everyone = cli_key(url, "admin", "*")
        server = Server(
            url,
            env={"POCKETRUN_FLOWS": "bench.dashboard_flows", "POCKETRUN_RATE_LIMIT": ""},
            log_path=tmp / "server.log",
        ).start(timeout=120)
        try:
            result = measure(server, args, everyone)
        finally:
            server.kill()
    result["seed_seconds"] = seeded
    payload = {"machine": machine(), "params": vars(args), "results": result}
    print(report(payload))
    print("saved", save("dashboard", payload))


def measure(server: Server, args: argparse.Namespace, everyone: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}
    with browser() as ctx, httpx.Client(base_url=server.url, headers=auth, timeout=60) as api:
        page = ctx.new_page()
        sign_in(page, server, TEST_ADMIN_KEY)
        ready = "#runs-table[data-loaded]"
        lists = {
            "tenant, newest first": first_render(page, f"{server.url}/ui#/runs", ready),
            "tenant, status=failed": first_render(
                page, f"{server.url}/ui#/runs?status=failed", ready
            ),
            "tenant, flow=flow-3": first_render(page, f"{server.url}/ui#/runs?flow=flow-3", ready),
        }
        # The 10,000-step run, followed live on its page from its start.
        run = api.post(
            "/v1/flows/long/runs", json={"input": {"steps": args.steps, "delay": 0}}
        ).json()
        live_steps = follow(page, server, api, run["id"], timeout=900)
        run_page = first_render(
            page, f"{server.url}/ui#/runs/{run['id']}", "[data-ready=true] #run-graph svg"
        )
        chatter = api.post("/v1/flows/chatter/runs", json={"input": {"chunks": 1}}).json()
        wait_until(lambda: api.get(f"/v1/runs/{chatter['id']}").json()["status"] == "succeeded")
        burst_run = api.post(
            "/v1/flows/chatter/runs", json={"input": {"chunks": args.chunks}}
        ).json()
        burst = follow(page, server, api, burst_run["id"], timeout=300)
        page2 = ctx.new_page()
        sign_in(page2, server, everyone)
        lists["cross-tenant admin, all tenants"] = first_render(
            page2, f"{server.url}/ui#/runs", ready
        )
    return {
        "runs_list_ms": {
            k: {"median": statistics.median(v), "rounds": v} for k, v in lists.items()
        },
        "run_page_ms": {"median": statistics.median(run_page), "rounds": run_page},
        "live_steps": live_steps,
        "output_burst": burst,
    }


def report(payload: dict[str, Any]) -> str:
    r = payload["results"]
    p = payload["params"]
    rows = [
        [f"runs list, {name} ({p['runs']:,} runs)", f"{v['median']:.0f} ms"]
        for name, v in r["runs_list_ms"].items()
    ]
    rows.append([f"run page, {p['steps']:,} steps", f"{r['run_page_ms']['median']:.0f} ms"])
    for name, key in (
        ("live run, step events", "live_steps"),
        ("node.output burst", "output_burst"),
    ):
        got = r[key]
        rows.append(
            [
                f"{name}: {got['events_drawn']:,} drawn in {got['seconds']:.1f} s",
                f"{got['events_per_second']:,.0f} events/s, lag {got['lag_ms']:.0f} ms",
            ]
        )
    return table("dashboard: first render (median of 5) and events drawn", ["what", "value"], rows)


if __name__ == "__main__":
    main()
