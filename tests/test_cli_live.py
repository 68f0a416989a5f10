"""The CLI's live view (`run --wait`, `runs tail`) drawn from the run's event stream."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import signal
import subprocess
import threading

import pytest
from rich.console import Console

from cli_view import RunView
from tests.support import BIN, ROOT, Server, wait_for_run, wait_until
from tests.test_cli import pocketrun, run_id_from

ANSWER = "You asked: what is pocketrun. Here is a considered answer, one word at a time."
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def start_run(server: Server, flow: str, data: dict) -> str:
    with server.client() as client:
        response = client.post(f"/v1/flows/{flow}/runs", json={"input": data, "mode": "background"})
        assert response.status_code in (201, 202), response.text
        return response.json()["id"]


def test_run_wait_streams_the_retry_after_a_reset_marker(db_url: str) -> None:
    result = pocketrun(db_url, "run", "stream", "--wait", "-i", '{"fail_first": true}')
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    reset = out.index("reset")
    step_line = out.index("succeeded FakeModel")
    # attempt 1 broke off halfway: the whole answer is streamed only after the reset
    assert ANSWER not in out[:reset]
    assert ANSWER in out[reset:step_line]
    assert "attempt 2" in out[reset:step_line]
    assert f'"answer": "{ANSWER}"' in out[step_line:]
    assert '"level"' not in out  # no log line inside the view


@SQLITE_ONLY
def test_runs_tail_follows_a_run_the_server_executes_until_it_ends(
    db_url: str, server: Server
) -> None:
    run_id = start_run(server, "long", {"steps": 8, "delay": 0.3})
    tail = pocketrun(db_url, "runs", "tail", run_id, timeout=60)
    assert tail.returncode == 0, tail.stdout + tail.stderr
    header = tail.stdout.splitlines()[0]
    assert run_id in header and ("running" in header or "queued" in header)
    with server.client() as client:
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    for seq in range(1, 9):
        assert f"{seq:>4}  succeeded Tick" in tail.stdout
    assert "succeeded finish" in tail.stdout
    assert '"done": 8' in tail.stdout

    replay = pocketrun(db_url, "runs", "tail", run_id, timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "succeeded" in replay.stdout.splitlines()[0]
    assert replay.stdout.count("succeeded Tick") == 8
    assert '"done": 8' in replay.stdout


@SQLITE_ONLY
def test_ctrl_c_on_runs_tail_leaves_the_run_going_and_says_how_to_cancel(
    db_url: str, server: Server
) -> None:
    run_id = start_run(server, "long", {"steps": 300, "delay": 0.1})
    proc = subprocess.Popen(
        [str(BIN / "pocketrun"), "runs", "tail", run_id],
        cwd=ROOT,
        env={
            **os.environ,
            "POCKETRUN_DATABASE_URL": db_url,
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_EXAMPLES": "true",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Tick" in line for line in lines), 30, message="a step drawn")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert f"pocketrun runs cancel {run_id}" in stderr
    assert "goes on" in stderr
    drawn = max(int(line.split()[0]) for line in lines if "succeeded Tick" in line)
    with server.client() as client:
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "running"

        def advanced() -> bool:  # steps well past the last one the tail drew
            page = client.get(f"/v1/runs/{run_id}/steps", params={"cursor": drawn + 10})
            return bool(page.json()["items"])

        wait_until(advanced, 20, message="the run to go on after the tail stopped")
        client.post(f"/v1/runs/{run_id}/cancel")
        wait_for_run(client, run_id)


def test_runs_list_shows_whole_ids_on_a_narrow_terminal(db_url: str) -> None:
    ids = []
    for _ in range(2):
        queued = pocketrun(db_url, "run", "long", "--input", '{"steps": 3, "delay": 0}')
        assert queued.returncode == 0, queued.stderr
        ids.append(run_id_from(queued.stdout))
    listing = pocketrun(db_url, "runs", "list", columns=80)
    assert listing.returncode == 0, listing.stderr
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    for run_id in ids:
        assert run_id in listing.stdout


def test_run_wait_on_a_terminal_draws_the_running_node_with_its_elapsed_time(
    db_url: str,
) -> None:
    controller, terminal = pty.openpty()
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": db_url,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "POCKETRUN_EXAMPLES": "true",
        "COLUMNS": "100",
        "TERM": "xterm-256color",
    }
    args = ["run", "stream", "--wait", "-i", '{"fail_first": true, "delay": 0.05}']
    proc = subprocess.Popen(
        [str(BIN / "pocketrun"), *args], cwd=ROOT, env=env, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO: the terminal closed with the process
        while chunk := os.read(controller, 65536):
            drawn += chunk
    os.close(controller)
    assert proc.wait(30) == 0
    screen = drawn.decode(errors="replace")
    assert "\x1b[?25l" in screen  # a live region took the terminal (cursor hidden)
    assert re.search(r"FakeModel  step 1  attempt 2  \d+\.\ds", screen)
    assert "succeeded" in screen and ANSWER in screen


def test_batch_progress_counts_items_done_of_total() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    run = {"id": "r", "status": "running", "started_at": None}
    with RunView(console, run) as view:
        for seq, item in ((1, 1), (2, 2), (3, 3)):
            view.handle(
                seq * 10,
                "step.started",
                {"seq": seq, "node": "Each/Work", "batch": {"item": item, "items": 3}},
            )
            view.handle(
                seq * 10 + 1,
                "step.finished",
                {
                    "seq": seq,
                    "node": "Each/Work",
                    "status": "succeeded",
                    "attempts": 1,
                    "action": None,
                    "duration_ms": 1.0,
                },
            )
        view.handle(40, "step.started", {"seq": 4, "node": "After"})
    lines = [line.strip() for line in out.getvalue().splitlines() if "batch" in line]
    assert lines == [f"batch: {done} of 3 items done" for done in (0, 1, 2, 3)]
