"""The `pocketrun` command against a real database, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.support import BIN, ROOT


def pocketrun(
    db_url: str, *args: str, timeout: float = 120, columns: int = 200
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": db_url,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_FLOWS": "tests.edge_flows",
        "POCKETRUN_EXAMPLES": "true",
        "COLUMNS": str(columns),
    }
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def run_id_from(output: str) -> str:
    for word in output.split():
        try:
            return str(uuid.UUID(word))
        except ValueError:
            continue
    raise AssertionError(f"no run id in {output!r}")


def test_db_upgrade_reports_the_head_revision(db_url: str) -> None:
    result = pocketrun(db_url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "revision" in result.stdout


def test_flows_lists_the_catalog_and_shows_one_graph(db_url: str) -> None:
    listing = pocketrun(db_url, "flows")
    assert listing.returncode == 0, listing.stderr
    for name in ("hello", "triage", "long", "pipeline"):
        assert name in listing.stdout
    one = pocketrun(db_url, "flows", "triage")
    assert one.returncode == 0, one.stderr
    assert "flowchart TD" in one.stdout
    assert '"approve"' in one.stdout
    missing = pocketrun(db_url, "flows", "no-such-flow")
    assert missing.returncode == 1


def test_run_wait_shows_each_step_and_the_output(db_url: str) -> None:
    result = pocketrun(
        db_url, "run", "triage", "--input", json.dumps({"amount": 500, "flags": ["vip"]}), "--wait"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    for node in ("Score", "Review", "approve", "Notify"):
        assert node in result.stdout
    assert '"decision": "approved"' in result.stdout


def test_run_reads_input_from_a_file_and_fails_visibly(db_url: str, tmp_path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps({"note": "from a file"}))
    result = pocketrun(db_url, "run", "edge-boom", "--input", f"@{path}", "--wait")
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "boom" in result.stdout


@pytest.mark.parametrize("bad", ["not json", "[1, 2]"])
def test_run_refuses_input_that_is_not_a_json_object(db_url: str, bad: str) -> None:
    result = pocketrun(db_url, "run", "hello", "--input", bad)
    assert result.returncode == 2
    assert "--input" in result.stderr


def test_run_refuses_input_the_schema_rejects(db_url: str) -> None:
    result = pocketrun(db_url, "run", "long", "--input", '{"steps": -1}', "--wait")
    assert result.returncode == 2
    assert "invalid input" in result.stderr


def test_runs_list_show_and_cancel(db_url: str) -> None:
    queued = pocketrun(db_url, "run", "long", "--input", '{"steps": 3, "delay": 0}')
    assert queued.returncode == 0, queued.stderr
    run_id = run_id_from(queued.stdout)
    listing = pocketrun(db_url, "runs", "list", "--status", "queued")
    assert run_id in listing.stdout
    shown = pocketrun(db_url, "runs", "show", run_id)
    assert shown.returncode == 0 and "queued" in shown.stdout
    cancelled = pocketrun(db_url, "runs", "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert "cancelled" in pocketrun(db_url, "runs", "show", run_id).stdout
    assert pocketrun(db_url, "runs", "show", str(uuid.uuid4())).returncode == 1
