"""State history over HTTP, on SQLite and PostgreSQL: step deltas (``?include=delta``),
one step (``/steps/{seq}``), and the shared store after any step (``/state?seq=N``), with
the run's visibility rules and a 4xx for every bad seq."""

from __future__ import annotations

import httpx
import pytest

from tests.pocketflow_states import pocketflow_states
from tests.security_support import api_key, bearer, cli_key
from tests.support import Server
from tests.test_api_runs import assert_problem, start

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

MUTATE = {"doc": {"title": "t", "tags": ["a"]}, "tmp": "scratch", "counter": 0}


def _finished(client: httpx.Client, flow: str, data: dict) -> str:
    run = start(client, flow, {"input": data}, wait=30).json()
    assert run["status"] == "succeeded", run
    return run["id"]


def test_steps_carry_their_deltas_on_request_and_one_step_always(server: Server) -> None:
    with server.client() as client:
        mutate = _finished(client, "edge-mutate", MUTATE)
        plain = client.get(f"/v1/runs/{mutate}/steps").json()["items"]
        assert [s["delta"] for s in plain] == [None, None, None]
        steps = client.get(f"/v1/runs/{mutate}/steps", params={"include": "delta"}).json()
        deltas = [s["delta"] for s in steps["items"]]
        assert deltas[0] == {
            "set": {
                "doc": {"title": "t", "tags": ["a", "b"], "meta": {"edited": True}},
                "counter": 1,
                "nothing": None,
            },
            "deleted": ["tmp"],
            "appended": {},
        }
        assert deltas[1]["deleted"] == ["nothing"] and deltas[1]["set"]["tmp"] == "back"
        assert sorted(deltas[2]["deleted"]) == ["counter", "doc", "tmp"]
        assert set(deltas[2]["set"]) == {"summary", "old_keys"}

        ticks = _finished(client, "long", {"steps": 3, "delay": 0})
        second = client.get(f"/v1/runs/{ticks}/steps/2")
        assert second.status_code == 200, second.text
        step = second.json()
        assert (step["seq"], step["node"]) == (2, "Tick")
        # a list the step only appended to keeps just the new items
        assert step["delta"] == {
            "set": {"done": 2, "percent": 66.67},
            "deleted": [],
            "appended": {"progress": [2]},
        }
        listed = client.get(f"/v1/runs/{ticks}/steps?include=delta").json()["items"]
        assert listed[1] == step
        assert listed[0]["delta"]["set"]["progress"] == [1]  # a new key is set, not appended

        for seq in ("0", "5", "99", "abc", "-1", "1.0", "99999999999", "%EF%BC%91"):
            assert_problem(client.get(f"/v1/runs/{ticks}/steps/{seq}"), 404)
        assert_problem(client.get(f"/v1/runs/{ticks}/steps?include=everything"), 422)
        unknown = "01900000-0000-7000-8000-000000000000"
        assert_problem(client.get(f"/v1/runs/{unknown}/steps/1"), 404)


def test_state_after_each_step_equals_plain_pocketflow(server: Server) -> None:
    expected = pocketflow_states("edge-mutate", MUTATE)
    with server.client() as client:
        run_id = _finished(client, "edge-mutate", MUTATE)
        for n, store in enumerate(expected):
            answer = client.get(f"/v1/runs/{run_id}/state", params={"seq": n})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"seq": n, "state": store}
        latest = client.get(f"/v1/runs/{run_id}/state").json()
        assert latest == {"seq": len(expected) - 1, "state": expected[-1]}

        past = assert_problem(client.get(f"/v1/runs/{run_id}/state?seq={len(expected)}"), 422)
        assert past["errors"][0]["path"] == "query.seq"
        for bad in ("-1", "abc", "1.5", str(2**31), ""):
            assert_problem(client.get(f"/v1/runs/{run_id}/state?seq={bad}"), 422)
        unknown = "01900000-0000-7000-8000-000000000000"
        assert_problem(client.get(f"/v1/runs/{unknown}/state"), 404)
        assert_problem(client.get("/v1/runs/not-a-run/state"), 404)


def test_history_follows_the_run_visibility_and_hides_internals_from_consumers(
    server: Server, db_url: str
) -> None:
    star = bearer(cli_key(db_url, "admin", "*"))
    keys = {
        name: bearer(api_key(server, role, tenant=tenant, as_=star)[1])
        for name, role, tenant in [
            ("owner", "consumer", "acme"),
            ("neighbour", "consumer", "acme"),
            ("ops", "operator", "acme"),
            ("outsider", "engineer", "globex"),
        ]
    }

    def client(name: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=keys[name], timeout=30)

    with client("owner") as owner:
        run_id = _finished(owner, "long", {"steps": 2, "delay": 0})
        step = owner.get(f"/v1/runs/{run_id}/steps/1")
        assert step.status_code == 200 and step.json()["delta"] is None
        assert_problem(owner.get(f"/v1/runs/{run_id}/steps?include=delta"), 403)
        assert_problem(owner.get(f"/v1/runs/{run_id}/state"), 403)
    for name in ("neighbour", "outsider"):  # a run the caller may not see is 404
        with client(name) as other:
            assert_problem(other.get(f"/v1/runs/{run_id}/steps/1"), 404)
    with client("outsider") as outsider:
        assert_problem(outsider.get(f"/v1/runs/{run_id}/state"), 404)
    with client("neighbour") as neighbour:  # refused for any run id: tells nothing of this one
        assert_problem(neighbour.get(f"/v1/runs/{run_id}/state"), 403)
    with client("ops") as ops:
        assert ops.get(f"/v1/runs/{run_id}/steps/1").json()["delta"]["set"]["done"] == 1
        state = ops.get(f"/v1/runs/{run_id}/state?seq=1").json()["state"]
        assert state["progress"] == [1] and state["steps"] == 2
