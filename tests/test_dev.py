"""``pocketrun dev`` reloads on an edit of a flow file without losing a run in flight;
``pocketrun serve`` has the example flows only with ``POCKETRUN_EXAMPLES=true``."""

from __future__ import annotations

from pathlib import Path

from tests.support import Server, wait_for_run, wait_until

FLOWS = """\
from pocketflow import Flow, Node

from flows import register


class Hi(Node):
    def post(self, shared, prep_res, exec_res):
        shared["said"] = "hi"


register("alpha", lambda: Flow(start=Hi()))
"""
MORE = """
register("beta", lambda: Flow(start=Hi()))
"""


def _names(server: Server) -> set[str]:
    with server.client() as client:
        response = client.get("/v1/flows", params={"limit": 200})
        assert response.status_code == 200, response.text
        return {flow["name"] for flow in response.json()["items"]}


def _server(tmp_path: Path, command: str, **env: str) -> Server:
    server = Server(
        f"sqlite:///{tmp_path / 'dev.db'}",
        env={"POCKETRUN_FLOWS": "devflows", "POCKETRUN_DRAIN_GRACE": "10", **env},
        log_path=tmp_path / f"{command}.log",
        command=command,
        cwd=tmp_path,
    )
    if "POCKETRUN_EXAMPLES" not in env:
        del server.env["POCKETRUN_EXAMPLES"]  # the default test env turns them on
    return server


def test_dev_reloads_an_edited_flow_file_and_the_run_in_flight_finishes(tmp_path: Path) -> None:
    flows = tmp_path / "devflows.py"
    flows.write_text(FLOWS)
    server = _server(tmp_path, "dev").start()
    try:
        assert {"alpha", "long"} <= _names(server)  # the engineer's flow, and the examples
        assert "beta" not in _names(server)
        with server.client() as client:
            created = client.post(
                "/v1/flows/long/runs", json={"input": {"steps": 20, "delay": 0.2}}
            )
            assert created.status_code in (201, 202), created.text
            run_id = created.json()["id"]
            wait_until(
                lambda: client.get(f"/v1/runs/{run_id}").json()["steps"] >= 2,
                timeout=30,
                message="2 committed steps",
            )

            flows.write_text(FLOWS + MORE)

            def reloaded() -> bool:
                try:
                    return "beta" in _names(server)
                except Exception:  # the old process is draining, the new one not up yet
                    return False

            wait_until(reloaded, timeout=30, interval=0.2, message="beta to be listed")
            run = wait_for_run(client, run_id, timeout=60)
            steps = client.get(f"/v1/runs/{run_id}/steps", params={"limit": 100}).json()
        assert run["status"] == "succeeded", run
        assert run["output"]["done"] == 20
        seqs = [step["seq"] for step in steps["items"]]
        assert seqs == list(range(1, len(seqs) + 1))  # every step committed once, in order
        workers = [step["worker"] for step in steps["items"]]
        assert len(set(workers)) == 2, workers  # carried on by the reloaded process
    finally:
        server.stop()


def test_serve_has_the_examples_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "devflows.py").write_text(FLOWS)
    plain = _server(tmp_path, "serve").start()
    try:
        names = _names(plain)
    finally:
        plain.stop()
    assert "alpha" in names
    assert not names & {"hello", "long", "pipeline"}

    with_examples = _server(tmp_path, "serve", POCKETRUN_EXAMPLES="true").start()
    try:
        assert {"alpha", "hello", "long", "pipeline"} <= _names(with_examples)
    finally:
        with_examples.stop()
