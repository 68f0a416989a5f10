"""Many clients at once, over HTTP to a real ``pocketrun serve`` on SQLite and PostgreSQL:
no submission lost, none run twice, and Idempotency-Key replays return the same run."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.support import TERMINAL, Server, wait_until

SUBMISSIONS = 200
THREADS = 50


def _list_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/runs", params=query).json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def test_200_concurrent_submissions_none_lost_none_duplicated(server: Server) -> None:
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with server.client(limits=limits) as client:

        def submit(i: int) -> httpx.Response:
            return client.post(
                "/v1/flows/hello/runs",
                json={"input": {"name": f"n{i}"}, "mode": "background", "metadata": {"i": i}},
                headers={"Idempotency-Key": f"submission-{i}"},
            )

        with ThreadPoolExecutor(THREADS) as pool:
            responses = list(pool.map(submit, range(SUBMISSIONS)))
        assert [r.status_code for r in responses if r.status_code not in (201, 202)] == []
        assert all("idempotent-replayed" not in r.headers for r in responses)
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == SUBMISSIONS
        for i, response in enumerate(responses):
            assert response.headers["location"] == f"/v1/runs/{ids[i]}"
            assert response.json()["metadata"] == {"i": i}

        # Every run reaches a terminal state.
        def all_finished() -> list[dict[str, Any]] | None:
            runs = _list_all(client, flow="hello")
            done = [r for r in runs if r["status"] in TERMINAL]
            return runs if len(done) == len(runs) == SUBMISSIONS else None

        runs = wait_until(all_finished, 120, 0.25, "all 200 runs to finish")

        # None lost: the list holds exactly the 200 ids, once each, each with its own input.
        assert sorted(r["id"] for r in runs) == sorted(ids)
        by_id = {r["id"]: r for r in runs}
        for i, run_id in enumerate(ids):
            run = by_id[run_id]
            assert run["status"] == "succeeded", run
            assert run["input"] == {"name": f"n{i}"}
            assert run["output"] == {"greeting": f"HELLO, N{i}!"}
            assert run["metadata"] == {"i": i}
        walked = [r["id"] for r in _list_all(client)]  # and through small pages too
        assert Counter(walked) == Counter(ids)
        small_pages: list[str] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/runs", params={"limit": 7, **({"cursor": cursor} if cursor else {})}
            )
            small_pages += [r["id"] for r in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert small_pages == walked

        # None duplicated: each run's steps are seq 1..n, each node once.
        def steps(run_id: str) -> list[dict[str, Any]]:
            return client.get(f"/v1/runs/{run_id}/steps").json()["items"]

        with ThreadPoolExecutor(THREADS) as pool:
            all_steps = list(pool.map(steps, ids))
        for run_id, items in zip(ids, all_steps, strict=True):
            assert [s["seq"] for s in items] == [1, 2], (run_id, items)
            assert [s["node"] for s in items] == ["Greet", "Upper"], (run_id, items)
            assert by_id[run_id]["steps"] == 2

        # Replays, all at once again: the same run for every key, and nothing new.
        with ThreadPoolExecutor(THREADS) as pool:
            replays = list(pool.map(submit, range(SUBMISSIONS)))
        assert [r.status_code for r in replays] == [201] * SUBMISSIONS
        assert [r.json()["id"] for r in replays] == ids
        assert all(r.headers.get("idempotent-replayed") == "true" for r in replays)
        assert len(_list_all(client)) == SUBMISSIONS


def test_concurrent_posts_with_one_idempotency_key_create_one_run(server: Server) -> None:
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    with server.client(limits=limits) as client:
        for round_, flow, body in (
            (1, "edge-slow", {"input": {"seconds": 0}}),
            (2, "hello", {"input": {"name": "once"}, "mode": "background"}),
        ):
            key = {"Idempotency-Key": f"same-key-{round_}"}

            def post(
                _: int, flow: str = flow, body: dict = body, key: dict = key
            ) -> httpx.Response:
                return client.post(f"/v1/flows/{flow}/runs", json=body, headers=key)

            with ThreadPoolExecutor(20) as pool:
                responses = list(pool.map(post, range(20)))
            assert all(r.status_code in (201, 202) for r in responses), [r.text for r in responses]
            ids = {r.json()["id"] for r in responses}
            assert len(ids) == 1, ids
            fresh = [r for r in responses if "idempotent-replayed" not in r.headers]
            assert len(fresh) == 1
            runs = client.get("/v1/runs", params={"flow": flow}).json()["items"]
            assert [r["id"] for r in runs] == list(ids)

            run_id = ids.pop()
            deadline = time.monotonic() + 30
            while client.get(f"/v1/runs/{run_id}").json()["status"] not in TERMINAL:
                assert time.monotonic() < deadline, "the run did not finish"
                time.sleep(0.05)
            steps = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
            assert [s["seq"] for s in steps] == [1, 2]
