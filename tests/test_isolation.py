"""No node, tenant or request can take another's capacity (issue: isolation under load).

Real servers on SQLite and PostgreSQL: hung nodes and hung flow preps leave the process
able to run everything after them; one tenant's flood leaves another's run fast; inline
runs wait for a slot; a tenant past its unfinished-run limit gets 429; high priorities
need the operator role; steps come in pages; Idempotency-Keys belong to their principal.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from datetime import datetime

import httpx
import pytest

from tests.security_support import api_key, bearer, cli_key
from tests.support import Server, wait_for_run, wait_until

FLOWS = {"POCKETRUN_FLOWS": "tests.edge_flows,tests.hostile_flows"}


def _start(client: httpx.Client, flow: str, body: dict | None = None, **params) -> dict:
    response = client.post(f"/v1/flows/{flow}/runs", json=body or {}, params=params)
    assert response.status_code in (201, 202), response.text
    return response.json()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_hung_nodes_and_preps_leave_the_process_able_to_run_the_next_hundred(
    server_factory,
) -> None:
    server: Server = server_factory(FLOWS)
    with server.client() as client:
        hung = [_start(client, "hang")["id"] for _ in range(32)]
        hung += [_start(client, "hang-prep")["id"] for _ in range(8)]
        ended = [wait_for_run(client, run_id, timeout=90) for run_id in hung]
        assert {run["status"] for run in ended} == {"timed_out"}
        prep = ended[-1]["error"]
        assert prep["type"] == "timed_out" and "prep of flow" in prep["message"], prep

        hello = [
            _start(client, "hello", {"input": {"name": f"n{i}"}, "mode": "background"})["id"]
            for i in range(100)
        ]
        finished = [wait_for_run(client, run_id, timeout=60) for run_id in hello]
        assert [run["status"] for run in finished] == ["succeeded"] * 100

        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        threads = ready.json()["checks"]["executor"]["step_threads"]
        assert threads["abandoned"] == 40, threads  # every hung call left the pool


def test_readyz_warns_near_the_cap_of_replaced_threads_and_fails_at_it(server_factory) -> None:
    server: Server = server_factory({**FLOWS, "POCKETRUN_MAX_ABANDONED_THREADS": "5"})
    with server.client() as client:
        for more, status in ((4, 200), (1, 503)):
            for run_id in [_start(client, "hang")["id"] for _ in range(more)]:
                wait_for_run(client, run_id, timeout=30)
            response = client.get("/readyz")
            assert response.status_code == status, response.text
            executor = response.json()["checks"]["executor"]
            assert "step threads are stuck" in " ".join(executor["warnings"]), executor


def test_a_flooding_tenant_leaves_another_tenants_run_fast(server_factory, db_url: str) -> None:
    server: Server = server_factory(FLOWS)
    flooder_key = cli_key(db_url, "consumer", "flood")
    victim_key = cli_key(db_url, "consumer", "victim")
    victim = httpx.Client(base_url=server.url, headers=bearer(victim_key), timeout=60)
    refused: list[int] = []
    # One client per flooding thread: httpx's connection pool is not safe to share
    # across threads under this load (a socket closed by one thread mid-read by another).
    local = threading.local()
    clients: list[httpx.Client] = []

    def flood() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=server.url, headers=bearer(flooder_key), timeout=60
            )
            clients.append(local.client)
        return local.client

    def background(i: int) -> None:
        response = flood().post("/v1/flows/nap/runs", json={"input": {"seconds": 0.05}})
        if response.status_code not in (201, 202):
            refused.append(response.status_code)

    def inline(i: int) -> None:
        body = {"input": {"seconds": 0.5}, "mode": "inline"}
        response = flood().post("/v1/flows/nap/runs?wait=30", json=body)
        if response.status_code not in (201, 202):
            refused.append(response.status_code)

    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            jobs = [pool.submit(inline, i) for i in range(50)]
            jobs += [pool.submit(background, i) for i in range(1000)]
            wait_until(lambda: sum(j.done() for j in jobs) >= 300, 120, 0.05, "the flood")
            taken = []
            for _ in range(3):
                response = victim.post(
                    "/v1/flows/hello/runs?wait=10", json={"input": {"name": "victim"}}
                )
                assert response.status_code == 201, response.text
                run = response.json()
                assert run["status"] == "succeeded", run
                taken.append(
                    (_moment(run["finished_at"]) - _moment(run["created_at"])).total_seconds()
                )
            for job in jobs:
                job.result()
        assert max(taken) < 2, taken
        assert not [s for s in refused if s >= 500], refused
    finally:
        for client in clients:
            client.close()
        victim.close()


def test_inline_runs_wait_for_a_slot_and_then_go_on_in_the_background(server_factory) -> None:
    server: Server = server_factory({**FLOWS, "POCKETRUN_CONCURRENCY": "1"})
    with server.client() as client:
        busy = _start(client, "nap", {"input": {"seconds": 3}})
        wait_until(
            lambda: client.get(f"/v1/runs/{busy['id']}").json()["status"] == "running", 10, 0.02
        )
        began = time.monotonic()
        response = client.post(
            "/v1/flows/nap/runs?wait=1", json={"input": {"seconds": 0}, "mode": "inline"}
        )
        assert time.monotonic() - began >= 0.9
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"  # the one slot is still busy
        assert wait_for_run(client, response.json()["id"], timeout=30)["status"] == "succeeded"


def test_a_tenant_past_its_unfinished_runs_limit_gets_429_then_room(
    server_factory, db_url: str
) -> None:
    server: Server = server_factory({**FLOWS, "POCKETRUN_TENANT_MAX_UNFINISHED": "3"})
    other_key = cli_key(db_url, "consumer", "other")
    with server.client() as client:
        runs = [_start(client, "nap", {"input": {"seconds": 1.5}})["id"] for _ in range(3)]
        refused = client.post("/v1/flows/nap/runs", json={"input": {"seconds": 0}})
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) >= 1
        assert "limit is 3" in refused.json()["detail"]
        # another tenant is not refused
        other = client.post(
            "/v1/flows/nap/runs", json={"input": {"seconds": 0}}, headers=bearer(other_key)
        )
        assert other.status_code == 202, other.text
        for run_id in runs:
            wait_for_run(client, run_id, timeout=30)
        time.sleep(1.1)  # the count is re-read once a second
        assert client.post("/v1/flows/nap/runs", json={"input": {}}).status_code == 202


def test_priorities_above_the_ceiling_need_the_operator_role(server_factory) -> None:
    server: Server = server_factory(FLOWS)
    _, consumer = api_key(server, "consumer")
    body = {"input": {"seconds": 0}, "priority": 9}
    with server.client() as client:
        denied = client.post("/v1/flows/nap/runs", json=body, headers=bearer(consumer))
        assert denied.status_code == 403, denied.text
        assert "operator" in denied.json()["detail"]
        ceiling = {**body, "priority": 4}
        allowed = client.post("/v1/flows/nap/runs", json=ceiling, headers=bearer(consumer))
        assert allowed.status_code == 202, allowed.text
        # operators and engineers start no runs; the admin, above them, may go higher
        assert client.post("/v1/flows/nap/runs", json=body).status_code == 202


def test_steps_come_in_pages_with_a_hard_cap(server: Server) -> None:
    with server.client() as client:
        run = _start(client, "long", {"input": {"steps": 250, "delay": 0}})
        assert wait_for_run(client, run["id"], timeout=60)["status"] == "succeeded"
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/v1/runs/{run['id']}/steps", params=params).json()
            seen += [step["seq"] for step in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 250
        assert pages == -(-len(seen) // 100)
        first = client.get(f"/v1/runs/{run['id']}/steps").json()
        assert len(first["items"]) == 100 and first["next_cursor"] == "100"
        for bad in ({"limit": 1001}, {"limit": 0}, {"cursor": "-1"}, {"cursor": "x"}):
            response = client.get(f"/v1/runs/{run['id']}/steps", params=bad)
            assert response.status_code == 422, (bad, response.text)


@pytest.mark.parametrize("order", ["same", "reversed"])
def test_idempotency_keys_belong_to_their_principal(server_factory, order: str) -> None:
    server: Server = server_factory(FLOWS)
    _, first = api_key(server, "consumer")
    _, second = api_key(server, "consumer")
    key = {"Idempotency-Key": "order-42"}
    with server.client() as client:
        mine = client.post(
            "/v1/flows/nap/runs",
            json={"input": {"seconds": 0, "tag": "first"}, "metadata": {"a": 1, "b": 2}},
            headers={**bearer(first), **key},
        )
        assert mine.status_code == 202, mine.text
        theirs = client.post(
            "/v1/flows/nap/runs",
            json={"input": {"seconds": 0, "tag": "second"}},
            headers={**bearer(second), **key},
        )
        assert theirs.status_code == 202, theirs.text  # its own run, not a 422 or a replay
        assert "idempotent-replayed" not in theirs.headers
        assert theirs.json()["id"] != mine.json()["id"]
        assert theirs.json()["input"]["tag"] == "second" and theirs.json()["metadata"] == {}

        metadata = {"a": 1, "b": 2} if order == "same" else {"b": 2, "a": 1}
        again = client.post(
            "/v1/flows/nap/runs",
            json={"metadata": metadata, "input": {"tag": "first", "seconds": 0}},
            headers={**bearer(first), **key},
        )
        assert again.status_code in (201, 202), again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == mine.json()["id"]


def test_an_error_no_database_could_store_fails_its_run_cleanly(server_factory) -> None:
    """A node's exception text is anything: NUL and lone surrogates are written out, a huge
    message is cut, and the run fails like any other (PostgreSQL refused it before)."""
    server: Server = server_factory(FLOWS)
    with server.client() as client:
        run = wait_for_run(client, _start(client, "unspeakable")["id"], timeout=30)
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
    assert run["status"] == "failed", run
    message = run["error"]["message"]
    assert message.startswith("ValueError: bad\\x00byte \\ud800 xxx"), message[:60]
    assert len(message) < 5000 and " ... " in message
    assert steps[-1]["status"] == "failed" and steps[-1]["error"]["message"] == message
