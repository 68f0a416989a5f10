"""Prometheus metrics of runs and steps, read from a real server's /metrics."""

from tests.support import Server


def test_metrics_count_finished_runs_and_time_their_steps(server: Server) -> None:
    with server.client() as client:
        for name in ("ann", "bo"):
            created = client.post("/v1/flows/hello/runs?wait=10", json={"input": {"name": name}})
            assert created.json()["status"] == "succeeded"
        failed = client.post("/v1/flows/edge-boom/runs?wait=10", json={"input": {}})
        assert failed.json()["status"] == "failed"
        text = client.get("/metrics").text
    assert 'pocketrun_runs_finished_total{flow="hello",status="succeeded"} 2.0' in text
    assert 'pocketrun_runs_finished_total{flow="edge-boom",status="failed"} 1.0' in text
    assert 'pocketrun_step_seconds_count{flow="hello"} 4.0' in text  # 2 nodes x 2 runs
    assert 'pocketrun_runs_created_total{flow="hello"} 2.0' in text
    assert "pocketrun_queue_depth 0.0" in text
