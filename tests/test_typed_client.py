"""Each flow is its own typed operation in ``/openapi.json``, and a client generated from
the document (``openapi-python-client``) starts runs through typed methods."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import BIN, TEST_ADMIN_KEY, Server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("typed")
    running = Server(f"sqlite+aiosqlite:///{tmp / 'pocketrun.db'}", log_path=tmp / "server.log")
    running.start()
    yield running
    running.kill()


def test_every_flow_has_its_own_typed_start_operation(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    flows = httpx.get(server.url + "/v1/flows", headers=server.headers, timeout=30).json()
    names = {flow["name"] for flow in flows["items"]}
    typed = {
        path: item["post"]
        for path, item in spec["paths"].items()
        if "post" in item and item["post"].get("tags") == ["flow runs"]
    }
    assert set(typed) == {f"/v1/flows/{name}/runs" for name in names}
    hello = typed["/v1/flows/hello/runs"]
    assert hello["operationId"] == "startHello"
    assert [p["name"] for p in hello["parameters"]] == ["wait", "idempotency-key"]
    body = hello["requestBody"]["content"]["application/json"]["schema"]
    schemas = spec["components"]["schemas"]
    create = schemas[body["$ref"].rsplit("/", 1)[-1]]
    hello_input = schemas[create["properties"]["input"]["$ref"].rsplit("/", 1)[-1]]
    assert hello_input["properties"]["name"]["type"] == "string"
    assert "/v1/flows/{flow}/runs" in spec["paths"]  # the generic operation stays
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_a_generated_client_starts_a_run_through_a_typed_method(
    server: Server, tmp_path: Path
) -> None:
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(server.url + "/openapi.json", timeout=30).content)
    package = tmp_path / "pocketrun_client"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(document),
            "--output-path",
            str(package),
            "--meta",
            "none",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("pocketrun_client")
        start_hello = importlib.import_module("pocketrun_client.api.flow_runs.start_hello")
        models = importlib.import_module("pocketrun_client.models")
        client = client_module.AuthenticatedClient(base_url=server.url, token=TEST_ADMIN_KEY)
        body = models.HelloRunCreate(input_=models.HelloInput(name="typed"))
        response = start_hello.sync_detailed(client=client, body=body, wait=10)
        assert response.status_code == 201, response.content
        run = response.parsed
        assert isinstance(run, models.RunOut)
        assert run.flow == "hello" and run.status.value == "succeeded"
        assert run.output.to_dict() == {"greeting": "HELLO, TYPED!"}
        refused = start_hello.sync_detailed(
            client=client, body=models.HelloRunCreate.from_dict({"input": {"name": 7}})
        )
        assert refused.status_code == 422
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.split(".")[0] == "pocketrun_client"]:
            del sys.modules[name]
