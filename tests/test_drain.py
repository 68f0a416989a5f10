"""SIGTERM drains without waiting for nothing: a real ``pocketrun serve``, with one process
and with ``--workers 3`` (the supervisor passes the signal to each worker and waits).

A drain ends when every run in flight has reached a checkpoint and handed its lease back,
not when ``DRAIN_GRACE`` runs out, and open long polls answer at once instead of holding
uvicorn's shutdown back. Steps that never return are cut off at the grace; their runs go
back to the queue and the next server runs those steps again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.draining import HARD_EXIT_CODE
from tests.cluster_support import Cluster, Servers, read_runs
from tests.support import wait_for_run, wait_until

LONG_GRACE = 30.0  # a drain that waited for the grace would blow every bound below
HUNG_GRACE = 2.0
# A run left unreleased would sit out its 60 s lease: a second server takes over at once
# only if the drain handed every run back.
ENV = {"POCKETRUN_LEASE_TTL": "60", "POCKETRUN_SWEEP_INTERVAL": "0.5"}


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[Servers]:
    with Servers(db_url, tmp_path, **ENV) as started:
        yield started


def _submit(server: Cluster, flow: str, data: dict[str, Any]) -> str:
    with server.client() as client:
        created = client.post(f"/v1/flows/{flow}/runs", json={"input": data})
        assert created.status_code in (201, 202), created.text
        return created.json()["id"]


class LongPolls:
    """Open ``GET /v1/runs/{id}?wait=60`` requests in threads; what each one got back."""

    def __init__(self, server: Cluster, run_ids: list[str]) -> None:
        self.answers: list[int | str] = []
        self.threads = [
            threading.Thread(target=self._poll, args=(server, run_id), daemon=True)
            for run_id in run_ids
        ]
        for thread in self.threads:
            thread.start()

    def _poll(self, server: Cluster, run_id: str) -> None:
        try:
            with server.client() as client:
                self.answers.append(
                    client.get(f"/v1/runs/{run_id}", params={"wait": 60}).status_code
                )
        except httpx.HTTPError as exc:
            self.answers.append(type(exc).__name__)

    def join(self) -> list[int | str]:
        for thread in self.threads:
            thread.join(10)
        return self.answers


def _running_steps(server: Cluster, run_ids: list[str], at_least: int) -> None:
    with server.client() as client:

        def going() -> bool:
            return all(client.get(f"/v1/runs/{r}").json()["steps"] >= at_least for r in run_ids)

        wait_until(going, 30, 0.05, f"every run to commit {at_least} step(s)")


def drain_checkpointed(servers: Servers, workers: int) -> None:
    """Runs between short steps and open long polls: SIGTERM exits within 2 s."""
    server = servers.start("first", workers, POCKETRUN_DRAIN_GRACE=str(LONG_GRACE))
    # 8 s each: a server that kept them going until they ended would not exit in time
    run_ids = [_submit(server, "long", {"steps": 40, "delay": 0.2}) for _ in range(2 * workers)]
    _running_steps(server, run_ids, 1)
    polls = LongPolls(server, run_ids)
    time.sleep(0.5)  # the polls are waiting

    elapsed = server.terminate(timeout=LONG_GRACE + 10)
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f}s to exit"
    assert polls.join() == [200] * len(run_ids)  # each long poll answered, none cut off

    for row in read_runs(servers.db_url, run_ids).values():
        # each stopped at a checkpoint and handed its lease back
        assert row["status"] == "running" and row["lease_owner"] is None, row
        assert row["seq"] < 30, row

    second = servers.start("second")
    with second.client() as client:
        for run_id in run_ids:
            assert wait_for_run(client, run_id, timeout=30)["status"] == "succeeded"
    second.stop()


def drain_hung(servers: Servers, workers: int) -> None:
    """Sync and async nodes that never return: SIGTERM exits within DRAIN_GRACE + 5 s, their
    runs are handed back, and the next server runs the cut-off steps again to the end."""
    gate, log = servers.tmp_path / "gate", servers.tmp_path / "entered.log"
    gate.touch()
    server = servers.start("first", workers, POCKETRUN_DRAIN_GRACE=str(HUNG_GRACE))
    data = {"gate": str(gate), "log": str(log)}
    run_ids = [_submit(server, flow, data) for flow in ("drain-hang", "drain-hang-async") * 2]
    wait_until(
        lambda: log.exists() and len(log.read_text().split()) == len(run_ids),
        30,
        0.05,
        "every hanging step to start",
    )
    polls = LongPolls(server, run_ids)
    time.sleep(0.3)

    elapsed = server.terminate(timeout=HUNG_GRACE + 30)
    assert elapsed < HUNG_GRACE + 5, f"SIGTERM took {elapsed:.2f}s to exit"
    assert polls.join() == [200] * len(run_ids)

    drained = read_runs(servers.db_url, run_ids)
    for row in drained.values():  # back in the queue: not finished, and nobody holds it
        assert row["status"] == "running" and row["seq"] == 0, row
        assert row["lease_owner"] is None, row

    gate.unlink()
    second = servers.start("second")
    with second.client() as client:
        for run_id in run_ids:
            run = wait_for_run(client, run_id, timeout=30)
            assert run["status"] == "succeeded", run
    second.stop()
    # every hanging step started twice: cut off in the first server, run again in the second
    assert sorted(log.read_text().split()) == sorted(f"{r}:1" for r in run_ids * 2)


@pytest.mark.parametrize("workers", [1, 3])
def test_sigterm_with_only_checkpointed_runs_in_flight_exits_within_two_seconds(
    servers: Servers, workers: int
) -> None:
    drain_checkpointed(servers, workers)


@pytest.mark.parametrize("workers", [1, 3])
def test_sigterm_with_hung_nodes_exits_within_the_grace_and_hands_their_runs_back(
    servers: Servers, workers: int
) -> None:
    drain_hung(servers, workers)


def test_sigterm_with_the_event_loop_blocked_still_exits_and_the_run_is_swept_up(
    servers: Servers,
) -> None:
    """A sync node called on the loop that never returns: nothing async can run, so the
    last-resort timer ends the process; the run's lease lapses and the next server runs it."""
    gate, log = servers.tmp_path / "gate", servers.tmp_path / "entered.log"
    gate.touch()
    env = {"POCKETRUN_DRAIN_GRACE": str(HUNG_GRACE), "POCKETRUN_LEASE_TTL": "3"}
    server = servers.start("first", **env)
    run_id = _submit(server, "drain-hang-loop", {"gate": str(gate), "log": str(log)})
    wait_until(lambda: log.exists() and log.read_text(), 30, 0.05, "the step to start")

    elapsed = server.terminate(timeout=HUNG_GRACE + 30)
    assert elapsed < HUNG_GRACE + 5, f"SIGTERM took {elapsed:.2f}s to exit"
    assert server.proc is not None and server.proc.returncode == HARD_EXIT_CODE
    (row,) = read_runs(servers.db_url, [run_id]).values()
    assert row["status"] == "running" and row["lease_owner"] is not None  # nobody released it

    gate.unlink()
    second = servers.start("second", **env)
    with second.client() as client:
        assert wait_for_run(client, run_id, timeout=30)["status"] == "succeeded"
    second.stop()
    assert log.read_text().split() == [f"{run_id}:1"] * 2
