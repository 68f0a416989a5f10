"""``workers.testing.run_flow``: a flow through the durable engine in one line, and a run
killed after step k then resumed ends exactly as an uncrashed one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pocketflow import Flow, Node

import flows.examples  # noqa: F401  (registers pipeline and fanout)
import tests.edge_flows  # noqa: F401  (registers the nested edge flows)
from flows.registry import REGISTRY
from tests.support import ROOT
from workers.testing import CrashNotReached, FlowResult, arun_flow, run_flow

pytestmark = pytest.mark.filterwarnings("ignore:Flow ends")

CASES = [
    ("pipeline", {"value": 3}, [1, 3, 5]),  # 3: inside the nested flow two deep
    ("fanout", {"items": ["a", "b", "c"]}, [1, 2]),
    ("edge-nested-action", {"value": 12}, [1, 2]),
    ("edge-batch-nested", {"ns": [1, 2, 3]}, [1, 4]),
]


def _same_end(crashed: FlowResult, straight: FlowResult) -> None:
    assert crashed.status == straight.status == "succeeded"
    assert crashed.store == straight.store
    assert crashed.output == straight.output
    assert crashed.path == straight.path
    keys = ("seq", "node", "status", "attempts", "action")
    assert [{k: s[k] for k in keys} for s in crashed.steps] == [
        {k: s[k] for k in keys} for s in straight.steps
    ]


@pytest.mark.parametrize(("name", "data", "points"), CASES, ids=[c[0] for c in CASES])
def test_a_run_killed_after_step_k_and_resumed_ends_as_an_uncrashed_one(
    name: str, data: dict[str, Any], points: list[int]
) -> None:
    straight = run_flow(name, data)
    assert straight.crashed_after is None
    assert {s["worker"] for s in straight.steps} == {"test"}
    assert len(straight.steps) > max(points)
    for k in points:
        crashed = run_flow(name, data, crash_after=k)
        _same_end(crashed, straight)
        assert crashed.crashed_after == k
        # steps 1..k were committed by the killed process, the rest by the resuming engine
        assert [s["worker"] for s in crashed.steps] == ["crashed"] * k + ["test"] * (
            len(crashed.steps) - k
        )


class RecordPid(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared.setdefault("pids", []).append(os.getpid())


def four_pids() -> Flow:
    first = RecordPid()
    first >> RecordPid() >> RecordPid() >> RecordPid()
    return Flow(start=first)


def test_the_crash_kills_a_real_process_and_the_resume_runs_in_this_one() -> None:
    result = run_flow(four_pids, crash_after=2)  # a factory, registered privately
    pids = result.store["pids"]
    assert pids[2:] == [os.getpid(), os.getpid()]
    dead = pids[0]
    assert pids[:2] == [dead, dead] and dead != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)  # reaped: it was killed, not left running
    assert result.path == ["RecordPid", "RecordPid#2", "RecordPid#3", "RecordPid#4"]


def test_a_flow_spec_runs_and_its_input_is_validated() -> None:
    spec = REGISTRY.get("pipeline")
    assert run_flow(spec, {"value": 3}).output == run_flow("pipeline", {"value": 3}).output
    with pytest.raises(ValueError, match="value"):
        run_flow(spec, {"value": "not a number"})


def test_a_crash_past_the_last_step_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(CrashNotReached, match="before step 99"):
        run_flow("pipeline", {"value": 3}, crash_after=99)


def test_a_failed_run_comes_back_with_its_error() -> None:
    result = run_flow("edge-boom", {})
    assert result.status == "failed"
    assert result.run["error"]["type"] == "node_error"
    assert "boom" in result.run["error"]["message"]
    assert result.steps[-1]["status"] == "failed"


async def test_the_async_variant_crashes_and_resumes_too() -> None:
    straight = await arun_flow("fanout", {"items": ["x", "y"]})
    crashed = await arun_flow("fanout", {"items": ["x", "y"]}, crash_after=1)
    _same_end(crashed, straight)


def _readme_block(readme: str, pattern: str) -> str:
    match = re.search(pattern, readme, re.S)
    assert match, f"README.md has no block matching {pattern!r}"
    return match.group(1)


def test_the_readme_example_test_passes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = _readme_block(
        readme, r"<!-- testing-example:start -->\s*```python\n(.*?)```\s*<!-- testing-example:end"
    )
    flows_module = _readme_block(readme, r"```python\n(# myflows\.py\n.*?)```")
    (tmp_path / "myflows.py").write_text(flows_module)
    (tmp_path / "test_orders.py").write_text(example)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_orders.py"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("POCKETRUN_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
