"""A run's event stream (GET /v1/runs/{id}/events) over real servers.

Resuming with Last-Event-ID after any number of events gives exactly the rest, live,
in both executors (in the distributed shape through another API process); a node that
fails once streams its first attempt, a reset and its second; a client that reads
nothing is cut off while two hundred others get every event.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import celery_support as cs
from tests.support import Server, wait_for_run

pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker
FLOWS = {"POCKETRUN_FLOWS": "tests.edge_flows,tests.hostile_flows"}
STREAM = {"input": {"fail_first": True, "delay": 0.03}, "mode": "background"}

Message = tuple[int | None, str, Any]  # (id, event, data)


def sse(response: httpx.Response) -> Iterator[Message]:
    """The messages of an event stream as they arrive (comment lines skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields or "data" in fields:
                number = int(fields["id"]) if "id" in fields else None
                yield number, fields.get("event", "message"), json.loads(fields.get("data", "null"))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read(client: httpx.Client, run_id: str, *, stop_after: int | None = None, **headers):
    """Events of the run's stream, all of them or the first ``stop_after``."""
    got: list[Message] = []
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in sse(response):
            got.append(message)
            if stop_after is not None and len(got) >= stop_after:
                break
    return got


def _resume_checks(first: Server, second: Server, points: tuple[int, ...]) -> None:
    with first.client() as client:
        run = client.post("/v1/flows/stream/runs", json=STREAM).json()
        results: dict[int, list[Message]] = {}

        def resumed(k: int) -> None:
            with first.client() as a, second.client() as b:
                head = read(a, run["id"], stop_after=k)
                rest = read(b, run["id"], **{"Last-Event-ID": str(head[-1][0])})
                results[k] = head + rest

        threads = [threading.Thread(target=resumed, args=(k,)) for k in points]
        for thread in threads:
            thread.start()
        whole = read(client, run["id"])  # one subscriber from the start, live
        for thread in threads:
            thread.join(60)
        assert wait_for_run(client, run["id"])["status"] == "succeeded"
        replayed = read(client, run["id"])  # the finished run's history

    assert whole[-1][1] == "run.finished" and whole[0][1] == "run.status"
    ids = [m[0] for m in whole]
    assert ids == sorted(set(ids)), "ids increase, no duplicates"
    assert replayed == whole
    for k, got in results.items():
        assert got == whole, f"resumed after {k} events"


def test_resuming_after_k_events_gives_exactly_the_rest(server_factory) -> None:
    server: Server = server_factory(FLOWS)
    _resume_checks(server, server, (1, 3, 8, 20, 40))


@pytest.mark.timeout(240)
def test_resuming_on_another_api_process_in_the_distributed_shape(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    start_worker("events-a").wait_ready()
    env = {**cs.worker_env(pg, redis_server.url), **FLOWS, "POCKETRUN_READY_MIN_WORKERS": "1"}
    env["POCKETRUN_FLOWS"] += ",tests.celery_support"
    first = Server(pg, env=env, log_path=tmp_path / "api-1.log").start()
    second = Server(pg, env=env, log_path=tmp_path / "api-2.log").start()
    try:
        _resume_checks(first, second, (1, 5, 20))
    finally:
        first.kill()
        second.kill()


def test_a_failed_attempt_streams_then_resets_then_the_retry_streams(server: Server) -> None:
    with server.client() as client:
        run = client.post("/v1/flows/stream/runs", json=STREAM).json()
        events = read(client, run["id"])
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
    kinds = [kind for _, kind, _ in events]
    reset = kinds.index("node.output.reset")
    first = [d["chunk"] for _, k, d in events[:reset] if k == "node.output"]
    second = [d["chunk"] for _, k, d in events[reset:] if k == "node.output"]
    assert first and all(d["attempt"] == 1 for _, k, d in events[:reset] if k == "node.output")
    assert events[reset][2] == {"seq": 1, "attempt": 2}
    assert all(d["attempt"] == 2 for _, k, d in events[reset:] if k == "node.output")
    assert "".join(second).startswith("".join(first))  # the retry streams it again, whole
    assert len(second) > len(first)
    assert steps[0]["output"] == second
    finished = next(d for _, k, d in events if k == "step.finished")
    assert "output" not in finished and finished["attempts"] == 2  # streamed already
    assert finished["delta"]["set"]["answer"] == "".join(second)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the hub, not the database
def test_two_hundred_subscribers_and_one_that_reads_nothing(server_factory) -> None:
    env = {"POCKETRUN_EVENT_BUFFER": "20", "POCKETRUN_MAX_STEP_OUTPUT_BYTES": "8000000"}
    server: Server = server_factory({**FLOWS, **env})
    # a nap while the subscribers connect, then 4.8 MB of output: more than the stuck
    # client's socket and the server's write buffers take
    chatter = {"chunks": 160, "size": 30000, "pause_every": 5, "pause": 0.1}
    with server.client() as client:
        run = client.post("/v1/flows/nap-chatter/runs", json={"input": {"seconds": 4, **chatter}})
        run = run.json()
    assert server.proc is not None
    before = _rss_kb(server.proc.pid)

    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: small
    stuck.connect(("127.0.0.1", server.port))
    auth = server.headers["Authorization"]
    request = f"GET /v1/runs/{run['id']}/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}"
    stuck.sendall(request.encode() + b"\r\n\r\n")

    async def subscribers(n: int) -> list[int]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=120, limits=limits
        ) as c:

            async def one() -> int:
                # counted on the raw bytes: 199 readers parsing lines would lag the stream
                chunks, tail = 0, b""
                async with c.stream("GET", f"/v1/runs/{run['id']}/events") as response:
                    assert response.status_code == 200
                    async for raw in response.aiter_raw():
                        seen = tail + raw
                        chunks += seen.count(b"event: node.output\r\n")
                        tail = seen[-32:]
                        chunks -= tail.count(b"event: node.output\r\n")
                assert b"event: run.finished" in tail or b"run.finished" in seen
                return chunks

            return await asyncio.gather(*(one() for _ in range(n)))

    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb(server.proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        counts = asyncio.run(subscribers(199))
    finally:
        done.set()
        sampler.join()
        stuck.close()
    assert counts == [160] * 199  # every one got every chunk
    with server.client() as client:
        metrics = client.get("/metrics").text
    name = "pocketrun_event_subscribers_cut_total"
    cut = [line for line in metrics.splitlines() if line.startswith(name)]
    assert cut and float(cut[0].split()[-1]) >= 1, cut  # the one reading nothing was cut off
    assert (peak[0] - before) / 1024 < 100, (before, peak)  # MB


@pytest.mark.parametrize(
    ("flow", "body"),
    [
        ("wordcount", {"documents": ["a b", "b c", "c d e", "the end", "x"], "chunk_size": 2}),
        ("fanout", {"items": ["x", "y", "z", "w"], "delay": 0.05}),
    ],
)
def test_batches_report_their_progress_live_and_replayed(server: Server, flow, body) -> None:
    with server.client() as client:
        run = client.post(f"/v1/flows/{flow}/runs", json={"input": body, "mode": "background"})
        run = run.json()
        live = read(client, run["id"])
        replayed = read(client, run["id"])
    assert replayed == live
    progress = [d for _, kind, d in live if kind == "node.progress"]
    assert progress, "a batch node reports items done"
    by_step: dict[int, list[tuple[int, int]]] = {}
    for item in progress:
        by_step.setdefault(item["seq"], []).append((item["done"], item["total"]))
    for seq, seen in by_step.items():
        total = seen[0][1]
        assert seen == [(i, total) for i in range(1, total + 1)], (seq, seen)
    if flow == "wordcount":  # a BatchFlow: each pass's step says which item of how many
        passes = [d["batch"] for _, kind, d in live if kind == "step.started" and "batch" in d]
        assert passes == [{"item": i, "items": 3} for i in (1, 2, 3)], passes


async def test_a_stream_opened_as_the_run_starts_still_begins_with_run_status(db) -> None:
    """The record is read while the run starts and races through its first steps: the
    steps committed after the run was read started it too, so run.status comes first."""
    from api.events import RunEventStream
    from flows.registry import REGISTRY
    from tests.test_equivalence import create_run, settings_for
    from workers.local import LocalExecutor

    executor = LocalExecutor(db, REGISTRY, settings_for(db), sweep=False)
    await executor.start()
    try:
        for _ in range(8):
            run_id = await create_run(db, "wordcount", {})
            await executor.submit(run_id)
            run = dict(await db.get(run_id))
            stream = RunEventStream(
                db, executor.events, run, internals=True, debug=True, stopping=lambda: False
            )
            messages = [m async for m in stream.messages(0)]
            kinds = [kind for _, kind, _ in messages]
            ids = [number for number, _, _ in messages]
            assert kinds[0] == "run.status" and kinds.count("run.status") == 1, kinds[:4]
            assert kinds[-1] == "run.finished" and ids == sorted(set(ids))
    finally:
        await executor.stop()
