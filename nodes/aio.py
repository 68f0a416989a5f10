"""Async nodes: simulated I/O with small ``asyncio.sleep`` calls, sequential and parallel."""

from __future__ import annotations

import asyncio
import hashlib

from pocketflow import AsyncBatchNode, AsyncNode, AsyncParallelBatchNode

from nodes.control import mark


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Plan(AsyncNode):
    """Turn ``items`` into fetch jobs; later items wait less so they finish first."""

    async def prep_async(self, shared):
        return list(shared.get("items") or []), shared.get("delay", 0.0)

    async def exec_async(self, prep_res):
        items, delay = prep_res
        await asyncio.sleep(delay)
        n = len(items)
        return [{"item": item, "delay": round(delay * (n - i), 6)} for i, item in enumerate(items)]

    async def post_async(self, shared, prep_res, exec_res):
        shared["jobs"] = exec_res
        mark(shared, "plan")


class FetchAll(AsyncParallelBatchNode):
    """Fetch every job concurrently; results come back in job order whatever finishes first."""

    async def prep_async(self, shared):
        return shared["jobs"]

    async def exec_async(self, job):
        await asyncio.sleep(job["delay"])
        return {"item": job["item"], "body": f"<{job['item']}>" * 2}

    async def post_async(self, shared, prep_res, exec_res):
        shared["pages"] = exec_res
        mark(shared, "fetch")


class Digest(AsyncBatchNode):
    """Checksum each fetched page, one at a time."""

    async def prep_async(self, shared):
        return shared["pages"]

    async def exec_async(self, page):
        await asyncio.sleep(0)
        return [page["item"], checksum(page["body"])]

    async def post_async(self, shared, prep_res, exec_res):
        shared["digests"] = dict(exec_res)
        mark(shared, "digest")
