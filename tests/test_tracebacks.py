"""A failed node's traceback: on the step's and the run's error for engineers, operators
and admins, never for consumers; the node's own frames with file and line; named in the
engine's "step failed" log line."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import httpx

from nodes.faults import Boom
from tests.security_support import api_key, bearer
from tests.support import Server
from tests.test_api_runs import start
from workers.tracebacks import MAX_CHARS, MAX_FRAMES, last_line, node_traceback


def _raise_line() -> int:
    """The line of Boom.exec's ``raise ValueError``, read from the source."""
    lines, first = inspect.getsourcelines(Boom.exec)
    return first + next(i for i, line in enumerate(lines) if "raise ValueError" in line)


WHERE = f'File "nodes/faults.py", line {_raise_line()}, in exec'


def _errors(client: httpx.Client, run_id: str) -> list[dict]:
    """The failed run's error as every read shows it: run, run list, steps list, step."""
    run = client.get(f"/v1/runs/{run_id}").json()
    listed = next(r for r in client.get("/v1/runs").json()["items"] if r["id"] == run_id)
    steps = client.get(f"/v1/runs/{run_id}/steps").json()["items"]
    failed = steps[-1]
    assert failed["status"] == "failed" and failed["node"] == "Boom"
    one = client.get(f"/v1/runs/{run_id}/steps/{failed['seq']}").json()
    return [run["error"], listed["error"], failed["error"], one["error"]]


def test_engineers_see_where_the_node_raised_and_consumers_never_do(
    server_factory, tmp_path: Path
) -> None:
    server: Server = server_factory({"POCKETRUN_LOG_LEVEL": "INFO"})
    keys = {role: bearer(api_key(server, role)[1]) for role in ("consumer", "operator", "engineer")}
    keys["admin"] = server.headers

    def client(role: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=keys[role], timeout=30)

    with client("consumer") as consumer:
        run = start(consumer, "edge-boom", {"input": {}}, wait=30).json()
        assert run["status"] == "failed"
        assert run["error"]["traceback"] is None
        for error in _errors(consumer, run["id"]):
            assert error["message"] == "ValueError: boom"
            assert error["traceback"] is None
    for role in ("engineer", "operator", "admin"):
        with client(role) as staff:
            for error in _errors(staff, run["id"]):
                trace = error["traceback"]
                assert WHERE in trace, trace
                assert trace.rstrip().endswith("ValueError: boom")
                # pocketflow's and the runner's frames are trimmed
                assert "pocketflow" not in trace and "workers/" not in trace, trace

    logged = [
        json.loads(line)
        for line in (tmp_path / "server0.log").read_text().splitlines()
        if "step failed" in line
    ]
    assert len(logged) == 1, logged
    assert logged[0]["traceback"] == "ValueError: boom"
    assert logged[0]["raised_at"] == f"nodes/faults.py:{_raise_line()}"
    assert logged[0]["run_id"] == run["id"]


def _recurse(n: int, message: str) -> None:
    if n == 0:
        raise RuntimeError(message)
    _recurse(n - 1, message)


def _trace(depth: int, message: str):
    try:
        _recurse(depth, message)
    except RuntimeError as exc:
        return node_traceback(exc)
    raise AssertionError("no exception")


RAISES = f"tests/test_tracebacks.py:{_recurse.__code__.co_firstlineno + 2}"


def test_a_deep_traceback_keeps_its_innermost_frames() -> None:
    trace = _trace(500, "deep down")
    assert trace.raised_at == RAISES
    assert trace.text.count("in _recurse") <= MAX_FRAMES
    assert "in _trace" not in trace.text  # the outer frames went, the innermost stayed
    assert last_line(trace.text) == "RuntimeError: deep down"


def test_a_huge_message_is_cut_in_the_middle_within_the_cap() -> None:
    trace = _trace(1, "start-" + "x" * 50_000 + "-end")
    assert len(trace.text) <= MAX_CHARS + 50
    assert "characters cut" in trace.text
    assert "line" in trace.text.split("RuntimeError")[0]  # the frames survive
    assert trace.text.rstrip().endswith("-end")


def test_text_no_database_can_store_is_escaped() -> None:
    trace = _trace(0, "nul\x00 and \ud800 lone")
    assert last_line(trace.text) == "RuntimeError: nul\\x00 and \\ud800 lone"
    trace.text.encode("utf-8")  # no lone surrogate left


def test_a_chained_cause_keeps_its_own_frames() -> None:
    def parse() -> int:
        return int("x")

    try:
        try:
            parse()
        except ValueError as inner:
            raise KeyError("config") from inner
    except KeyError as exc:
        trace = node_traceback(exc)
    assert "in parse" in trace.text and "invalid literal" in trace.text
    assert "The above exception was the direct cause" in trace.text
    assert last_line(trace.text) == "KeyError: 'config'"
