"""A server-side bug still answers problem+json and leaves the connection usable."""

from tests.support import Server


def test_an_internal_error_is_problem_json_and_the_connection_survives(server: Server) -> None:
    with server.client() as client:
        broken = client.post("/v1/flows/edge-broken-input/runs", json={"input": {"value": 13}})
        assert broken.status_code == 500
        assert broken.headers["content-type"] == "application/problem+json"
        body = broken.json()
        assert body["status"] == 500
        assert "validator bug" not in broken.text  # no internals leak
        assert "Traceback" not in broken.text
        # the same keep-alive connection serves the next request
        ok = client.post("/v1/flows/edge-broken-input/runs?wait=10", json={"input": {"value": 1}})
        assert ok.status_code == 201, ok.text
        runs = client.get("/v1/runs", params={"flow": "edge-broken-input"}).json()["items"]
        assert [r["input"]["value"] for r in runs] == [1]
