from tests.support import Server, wait_for_run


def test_hello_runs_end_to_end_over_http(server: Server) -> None:
    with server.client() as client:
        created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": "ann"}})
        assert created.status_code == 201, created.text
        run = wait_for_run(client, created.json()["id"])
        assert run["status"] == "succeeded"
        steps = client.get(f"/v1/runs/{run['id']}/steps").json()["items"]
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
