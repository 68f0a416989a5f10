"""Declarative flows (DESIGN.md section 10): documents of catalog nodes posted to
``POST /v1/flows`` or listed in ``POCKETRUN_FLOWS``, validated like coded flows, stored,
and run by every process, started before the post or after, without a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import celery_support as cs
from tests.fake_http import FAKE_LLM_KEY, Echo, FakeChat, serve
from tests.security_support import api_key, bearer
from tests.support import Server, wait_for_run

pytestmark = pytest.mark.timeout(240)

pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker

YAML = "application/yaml"


def greet_doc(version: str = "1", greeting: str = "Hello") -> dict[str, Any]:
    return {
        "name": "greet-decl",
        "version": version,
        "description": "greets, and knows Bob",
        "input_schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
        "start": "hello",
        "nodes": {
            "hello": {"type": "template", "params": {"set": {"greeting": greeting + ", {name}!"}}},
            "check": {
                "type": "branch",
                "params": {"cases": [{"when": "name == 'bob'", "action": "bob"}]},
            },
            "bob": {"type": "template", "params": {"set": {"bob": True}}},
        },
        "edges": [
            {"from": "hello", "to": "check"},
            {"from": "check", "to": "bob", "action": "bob"},
        ],
    }


GREET_YAML = """
name: greet-yaml
version: "3"
start: hello
nodes:
  hello: {type: template, params: {set: {greeting: "Hi, {name}!"}}}
"""


def _engineer(server: Server) -> dict[str, str]:
    return bearer(api_key(server, "engineer")[1])


def _run(client: httpx.Client, flow: str, data: dict[str, Any]) -> dict[str, Any]:
    created = client.post(f"/v1/flows/{flow}/runs?wait=30", json={"input": data})
    assert created.status_code in (201, 202), created.text
    return wait_for_run(client, created.json()["id"])


def test_a_flow_posted_by_an_engineer_runs_on_servers_started_before_it(server_factory) -> None:
    first = server_factory()
    second = server_factory()  # another API process on the same database
    engineer = _engineer(first)
    with first.client() as client:
        assert client.get("/v1/flows/greet-decl").status_code == 404
        posted = client.post("/v1/flows", json=greet_doc(), headers=engineer)
    assert posted.status_code == 201, posted.text
    assert posted.headers["location"] == "/v1/flows/greet-decl?version=1"
    assert [n["id"] for n in posted.json()["graph"]["nodes"]] == ["hello", "check", "bob"]

    with second.client() as client:  # never told: it loads the stored document itself
        run = _run(client, "greet-decl", {"name": "bob"})
        assert run["status"] == "succeeded", run
        assert run["output"] == {"name": "bob", "greeting": "Hello, bob!", "bob": True}
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
        assert [(s["node"], s["action"]) for s in steps] == [
            ("hello", None),  # the node returned nothing: its default edge
            ("check", "bob"),
            ("bob", None),
        ]
        refused = client.post("/v1/flows/greet-decl/runs", json={"input": {"name": 3}})
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["path"] == "body.input.name"
        listed = {f["name"]: f for f in client.get("/v1/flows").json()["items"]}
        assert listed["greet-decl"]["input_schema"]["required"] == ["name"]
        nodes = {n["name"]: n for n in client.get("/v1/nodes").json()["items"]}
        assert nodes["branch"]["params"]["required"] == ["cases"]


def test_posting_yaml_again_is_200_and_another_document_under_the_version_409(server) -> None:
    engineer = {**_engineer(server), "Content-Type": YAML}
    with server.client() as client:
        assert client.post("/v1/flows", content=GREET_YAML, headers=engineer).status_code == 201
        again = client.post("/v1/flows", content=GREET_YAML, headers=engineer)
        assert again.status_code == 200, again.text
        changed = GREET_YAML.replace("Hi,", "Hey,")
        clash = client.post("/v1/flows", content=changed, headers=engineer)
        assert clash.status_code == 409, clash.text
        assert "another document" in clash.json()["detail"]
        coded = client.post("/v1/flows", json={**greet_doc(), "name": "hello"}, headers=engineer)
        assert coded.status_code == 409  # the built-in example's version 1
        assert _run(client, "greet-yaml", {"name": "ada"})["output"]["greeting"] == "Hi, ada!"


def test_only_engineers_and_admins_may_post_flows(server) -> None:
    with server.client() as client:
        for role in ("consumer", "operator"):
            refused = client.post(
                "/v1/flows", json=greet_doc(), headers=bearer(api_key(server, role)[1])
            )
            assert refused.status_code == 403, role
            assert refused.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/flows/greet-decl").status_code == 404  # nothing was stored
        assert client.post("/v1/flows", json=greet_doc()).status_code == 201  # the admin


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        ({"edges": [{"from": "hello", "to": "ghost"}]}, "body.edges.0.to", "unknown node 'ghost'"),
        ({"edges": [{"from": "gone", "to": "hello"}]}, "body.edges.0.from", "'gone'"),
        ({"start": "nowhere"}, "body.start", "unknown node 'nowhere'"),
        (
            {"nodes": {"hello": {"type": "teleport"}}, "edges": []},
            "body.nodes.hello.type",
            "teleport",
        ),
        (
            {"nodes": {"hello": {"type": "template", "params": {"set": {}}}}, "edges": []},
            "body.nodes.hello.params.set",
            "at least 1",
        ),
        ({"input_schema": {"type": 7}}, "body.input_schema", "not a valid JSON Schema"),
        ({"name": "bad name!"}, "body.name", "pattern"),
    ],
)
def test_a_bad_document_is_a_422_naming_the_node_or_edge(
    server, change: dict[str, Any], path: str, says: str
) -> None:
    with server.client() as client:
        refused = client.post("/v1/flows", json={**greet_doc(), **change})
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["type"].endswith("flow-definition")
        assert path in [e["path"] for e in body["errors"]], body
        assert says in json.dumps(body)
        assert client.get("/v1/flows/greet-decl").status_code == 404
        for bad, media in (("{", "application/json"), ("a: [", YAML), ("- 1", YAML)):
            answer = client.post("/v1/flows", content=bad, headers={"Content-Type": media})
            assert answer.status_code == 422, (bad, answer.text)
        other = client.post("/v1/flows", content="x", headers={"Content-Type": "text/plain"})
        assert other.status_code == 415


def test_flow_files_in_pocketrun_flows_load_as_json_and_yaml(server_factory, tmp_path) -> None:
    (tmp_path / "greet.yaml").write_text(GREET_YAML)
    (tmp_path / "greet.json").write_text(json.dumps(greet_doc("7", "Howdy")))
    flows = f"tests.edge_flows,{tmp_path / 'greet.yaml'},{tmp_path / 'greet.json'}"
    server = server_factory({"POCKETRUN_FLOWS": flows})
    with server.client() as client:
        assert _run(client, "greet-yaml", {"name": "a"})["output"]["greeting"] == "Hi, a!"
        assert _run(client, "greet-decl", {"name": "b"})["output"]["greeting"] == "Howdy, b!"


def test_a_bad_flow_file_stops_the_server_naming_the_file_and_edge(db_url, tmp_path) -> None:
    doc = {**greet_doc(), "edges": [{"from": "hello", "to": "ghost"}]}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    server = Server(
        db_url,
        env={"POCKETRUN_FLOWS": str(tmp_path / "bad.json")},
        log_path=tmp_path / "bad.log",
    )
    with pytest.raises(AssertionError, match="exited"):
        server.start(timeout=30)
    log = (tmp_path / "bad.log").read_text()
    assert "bad.json" in log and "edges.0.to" in log and "ghost" in log


def test_ask_human_and_subflow_nodes_run_on_the_server(server) -> None:
    inner = {
        "name": "decl-inner",
        "start": "mark",
        "nodes": {"mark": {"type": "template", "params": {"set": {"inner": "{answer.note}"}}}},
    }
    outer = {
        "name": "decl-review",
        "start": "ask",
        "nodes": {
            "ask": {
                "type": "ask_human",
                "params": {
                    "prompt": "Approve {amount}?",
                    "schema": {"type": "object", "required": ["action"]},
                },
            },
            "approved": {"type": "subflow", "params": {"flow": "decl-inner"}},
            "rejected": {"type": "template", "params": {"set": {"rejected": True}}},
        },
        "edges": [
            {"from": "ask", "to": "approved", "action": "approve"},
            {"from": "ask", "to": "rejected", "action": "reject"},
        ],
    }
    with server.client() as client:
        assert client.post("/v1/flows", json=inner).status_code == 201
        assert client.post("/v1/flows", json=outer).status_code == 201
        created = client.post("/v1/flows/decl-review/runs", json={"input": {"amount": 40}})
        run = wait_for_run(client, created.json()["id"], {"waiting"})
        assert run["waiting_for"]["node"] == "ask"
        assert run["waiting_for"]["request"]["prompt"] == "Approve 40?"
        assert client.post(f"/v1/runs/{run['id']}/resume", json={"payload": {}}).status_code == 422
        answer = {"action": "approve", "note": "fine"}
        resumed = client.post(f"/v1/runs/{run['id']}/resume", json={"payload": answer})
        assert resumed.status_code == 200, resumed.text
        done = wait_for_run(client, run["id"])
        assert done["status"] == "succeeded", done
        assert done["output"] == {"amount": 40, "answer": answer, "inner": "fine"}
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
        assert [s["node"] for s in steps] == ["ask", "approved/mark"]


def test_http_and_llm_nodes_run_on_the_server_with_its_settings(server_factory) -> None:
    with serve(Echo) as (echo, seen), serve(FakeChat) as (llm, _):
        server = server_factory(
            {
                "POCKETRUN_HTTP_ALLOW_PRIVATE": "true",
                "POCKETRUN_LLM_BASE_URL": llm + "/v1",
                "POCKETRUN_LLM_API_KEY": FAKE_LLM_KEY,
            }
        )
        doc = {
            "name": "decl-fetch",
            "start": "fetch",
            "nodes": {
                "fetch": {
                    "type": "http_request",
                    "params": {"method": "POST", "url": echo + "/t", "body": {"q": "{q}"}},
                },
                "ask": {
                    "type": "llm_chat",
                    "params": {
                        "model": "fake",
                        "messages": [{"role": "user", "content": "got {response.status}"}],
                    },
                },
            },
            "edges": [{"from": "fetch", "to": "ask"}],
        }
        with server.client() as client:
            assert client.post("/v1/flows", json=doc).status_code == 201
            run = _run(client, "decl-fetch", {"q": "x"})
    assert run["status"] == "succeeded", run
    assert run["output"]["reply"] == "GOT 200"
    assert seen[0]["body"] == {"q": "x"}


def test_a_posted_flow_runs_on_a_celery_worker_started_before_it(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    worker = start_worker("decl-1")
    server = Server(pg, env=cs.worker_env(pg, redis_server.url), log_path=tmp_path / "api.log")
    server.start()
    worker.wait_ready()
    try:
        with server.client() as client:
            posted = client.post("/v1/flows", json=greet_doc(), headers=_engineer(server))
            assert posted.status_code == 201, posted.text
            created = client.post(
                "/v1/flows/greet-decl/runs", json={"input": {"name": "bob"}, "mode": "background"}
            )
            assert created.status_code == 202, created.text
            run = wait_for_run(client, created.json()["id"])
            assert run["status"] == "succeeded", run
            assert run["output"]["bob"] is True
            steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
            assert {s["worker"] for s in steps} == {"decl-1"}
    finally:
        server.kill()
