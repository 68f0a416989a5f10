"""Webhook deliveries per second from one process to a local fast receiver (PostgreSQL).

``--deliveries`` outbox rows (default 2,000) are written for one subscription the way the
engine writes them (``db.webhooks.record``), then one ``WebhookSender`` leases, signs and
POSTs them to a receiver in another process that answers ``200`` at once (HTTP/1.1
keep-alive, raw asyncio), at each ``--concurrency`` (default 4, 16 and 64). Each
delivery is one lease, one resolved-address check, one POST and one logged attempt.

    .venv/bin/python -m bench.webhooks [--deliveries 2000] [--concurrency 4 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from bench.common import machine, save, scratch_database, table
from bench.history import open_migrated

RECEIVER = r"""
import asyncio, sys
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        while True:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep: return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
            if len(rest) < length: return
            self.buf = rest[length:]
            self.t.write(OK)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


async def one(url: str, port: int, deliveries: int, concurrency: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from core.settings import Settings
    from db import webhooks as sql
    from db.models import webhook_deliveries
    from workers.webhooks import WebhookSender, new_secret

    store = await open_migrated(url)
    try:
        hook = await sql.create_subscription(
            store,
            "bench",
            f"http://127.0.0.1:{port}/hook",
            ["run.finished"],
            None,
            new_secret(),
            "bench",
        )
        for start in range(0, deliveries, 500):
            await asyncio.gather(
                *(
                    sql.record(store, "bench", "f", "run.finished", {"id": i, "status": "ok"})
                    for i in range(min(500, deliveries - start))
                )
            )
        settings = Settings(
            database_url=url, webhook_allow_private=True, webhook_concurrency=concurrency
        )
        sender = WebhookSender(store, settings)
        pending = select(func.count()).where(
            webhook_deliveries.c.subscription_id == hook["id"],
            webhook_deliveries.c.status != "delivered",
        )
        began = time.perf_counter()
        while True:
            await sender.tick()
            await asyncio.sleep(0)
            async with store.sa.read() as conn:  # type: ignore[attr-defined]
                left = (await conn.execute(pending)).scalar_one()
            if not left:
                break
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - began
        await sender.client.aclose()
        await sql.delete_subscription(store, "bench", hook["id"])
        return {
            "concurrency": concurrency,
            "deliveries": deliveries,
            "seconds": seconds,
            "deliveries_per_s": deliveries / seconds,
        }
    finally:
        await store.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n")[0])
    p.add_argument("--deliveries", type=int, default=2000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--output", default="webhooks", help="results/<name>.json")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> None:
    args = parse(argv)
    payload: dict[str, Any] = {
        "benchmark": "webhooks",
        "machine": machine(),
        "params": vars(args),
        "results": [],
    }
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(receiver.stdout.readline())  # type: ignore[union-attr]
        with scratch_database("bench_webhooks") as url:
            for concurrency in args.concurrency:
                result = asyncio.run(one(url, port, args.deliveries, concurrency))
                payload["results"].append(result)
                print(result, flush=True)
    finally:
        receiver.kill()
        receiver.wait()
    rows = [
        [r["concurrency"], r["deliveries"], r["seconds"], r["deliveries_per_s"]]
        for r in payload["results"]
    ]
    print(table("webhook deliveries, one process", ["concurrency", "n", "s", "per s"], rows))
    print(f"\nresults: {save(args.output, payload)}")


if __name__ == "__main__":
    run()
