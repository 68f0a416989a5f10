"""``pocketrun serve --workers N``: N real API processes on one port, sharing the store.

The supervisor is uvicorn's; what is ours is tested here: the schema migrated once for all
of them, JSON lines on stdout from every process, and a worker killed with SIGKILL under
load replaced while the others go on answering, its runs carried on by the survivors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cluster_support import Servers, read_runs
from tests.support import TERMINAL, wait_until

# Orphans swept quickly: a dead holder's lease lapses after 2 s, and a queued run that sat
# 1 s in a dead process's memory is dispatched again.
FAST_SWEEP = {
    "POCKETRUN_LEASE_TTL": "2",
    "POCKETRUN_SWEEP_INTERVAL": "0.5",
    "POCKETRUN_REDISPATCH_AFTER": "1",
    "POCKETRUN_DRAIN_GRACE": "2",
}
REFUSED_FOR_AT_MOST = 2.0


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[Servers]:
    with Servers(db_url, tmp_path, **FAST_SWEEP) as started:
        yield started


def test_workers_share_one_port_migrate_once_and_log_json_lines(tmp_path: Path) -> None:
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"  # no schema yet
    with Servers(fresh, tmp_path, POCKETRUN_LOG_LEVEL="INFO") as servers:
        cluster = servers.start("cluster", workers=3)
        assert len(cluster.answered) == 3  # three processes answer on the one port
        with cluster.client() as client:
            created = client.post("/v1/flows/hello/runs", json={"input": {"name": "n"}})
            assert created.status_code == 201, created.text
        assert cluster.terminate(timeout=30) < 5
        assert cluster.proc is not None and cluster.proc.returncode == 0

    events = cluster.events()  # every line on stdout is one JSON object
    messages = [e["event"] for e in events]
    # the schema was built once, before the processes started
    assert sum(m.startswith("Running upgrade  -> 0001") for m in messages) == 1
    first_start = messages.index("Waiting for application startup.")
    assert max(i for i, m in enumerate(messages) if m.startswith("Running upgrade")) < first_start
    # uvicorn's own lines, from the supervisor and from each worker, and ours
    assert any(m.startswith("Started parent process") for m in messages)
    assert sum(m.startswith("Started server process") for m in messages) == 3
    assert messages.count("pocketrun ready") == 3
    assert messages.count("draining") == 3
    assert all({"level", "timestamp"} <= e.keys() for e in events)


@dataclass
class Answer:
    sent: float
    done: float
    refused: bool  # a connection error or a 5xx


@dataclass
class Load:
    """Client threads, each submitting runs back to back; a refused submission is sent
    again with the same Idempotency-Key until it is answered."""

    url: str
    headers: dict[str, str]
    threads: int = 4
    answers: list[list[Answer]] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.threads):
            mine: list[Answer] = []
            self.answers.append(mine)
            thread = threading.Thread(target=self._submit, args=(i, mine), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(60)

    def _submit(self, index: int, mine: list[Answer]) -> None:
        # inline runs (held by the request's process) and background ones, alternately
        requests = [
            ("/v1/flows/hello/runs?wait=10", {"name": f"t{index}"}),
            ("/v1/flows/long/runs", {"steps": 4, "delay": 0.1}),
        ]
        n = 0
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                path, data = requests[n % 2]
                n += 1
                key = uuid.uuid4().hex
                while True:
                    sent = time.monotonic()
                    try:
                        response = client.post(
                            path, json={"input": data}, headers={"Idempotency-Key": key}
                        )
                        refused = response.status_code >= 500
                    except httpx.HTTPError:
                        refused = True
                    mine.append(Answer(sent, time.monotonic(), refused))
                    if not refused:
                        assert response.status_code in (201, 202), response.text
                        self.run_ids.add(response.json()["id"])
                        break
                    time.sleep(0.02)

    def longest_refusal(self, after: float) -> float:
        """The longest stretch, in any one thread, from a refused request sent after
        ``after`` to the answer that ended the stretch."""
        longest = 0.0
        for mine in self.answers:
            began = None
            for answer in mine:
                if answer.sent < after:
                    continue
                if answer.refused and began is None:
                    began = answer.sent
                elif not answer.refused and began is not None:
                    longest = max(longest, answer.done - began)
                    began = None
            if began is not None:
                longest = max(longest, mine[-1].done - began)
        return longest


def _holder_pid(lease_owner: str) -> int:
    """The pid in a lease owner (``host:pid/suffix``)."""
    return int(lease_owner.split("/", 1)[0].rsplit(":", 1)[1])


def test_a_worker_killed_under_load_is_replaced_and_every_run_finishes(
    servers: Servers,
) -> None:
    cluster = servers.start("cluster", workers=3)
    workers_before = cluster.worker_pids()
    load = Load(cluster.url, cluster.headers).start()
    try:

        def victim() -> tuple[int, list] | None:
            """A worker holding runs right now, and those runs (read once: they move on)."""
            holders: dict[int, list] = {}
            for run_id, row in read_runs(servers.db_url).items():
                owner = row["lease_owner"]
                if owner and _holder_pid(owner) in workers_before:
                    holders.setdefault(_holder_pid(owner), []).append(run_id)
            return min(holders.items()) if holders else None

        pid, in_flight = wait_until(victim, 30, 0.05, "a worker with runs in flight")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def replaced() -> set[int]:
            pids = cluster.worker_pids()
            return pids if len(pids) == 3 and pid not in pids else set()

        workers_after = wait_until(replaced, 10, 0.02, "the dead worker's replacement")
        replaced_in = time.monotonic() - killed_at
        assert replaced_in < 1.5, f"replaced after {replaced_in:.2f}s"
        (newcomer,) = workers_after - workers_before
        time.sleep(3)  # the load goes on while the newcomer starts and the orphans are swept
        wait_until(lambda: cluster.answering_pid() == newcomer, 30, 0.01, "the newcomer to serve")
    finally:
        load.stop()

    assert in_flight, "the killed worker was meant to hold runs"
    refused = load.longest_refusal(after=killed_at)
    assert refused < REFUSED_FOR_AT_MOST, f"requests refused for {refused:.2f}s in a row"

    def all_finished() -> dict[str, dict] | None:
        rows = read_runs(servers.db_url)
        return rows if all(r["status"] in TERMINAL for r in rows.values()) else None

    rows = wait_until(all_finished, 60, 0.2, "every run to finish")
    assert load.run_ids <= rows.keys()
    assert set(in_flight) <= rows.keys()
    statuses = {run_id: row["status"] for run_id, row in rows.items()}
    assert set(statuses.values()) == {"succeeded"}, statuses
    assert len(rows) > 20  # there was load


def test_a_worker_killed_while_its_health_check_waits_is_replaced_at_once(
    tmp_path: Path,
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"
    with Servers(db, tmp_path) as servers:
        cluster = servers.start("cluster", workers=2)
        pid = min(cluster.worker_pids())
        os.kill(pid, signal.SIGSTOP)  # it cannot answer: the supervisor's ping now waits
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def replaced() -> bool:
            pids = cluster.worker_pids()
            return len(pids) == 2 and pid not in pids

        wait_until(replaced, 10, 0.02, "the dead worker's replacement")
        replaced_in = time.monotonic() - killed_at
        # uvicorn's own check would wait out its 5 s ping timeout first
        assert replaced_in < 1.5, f"replaced after {replaced_in:.2f}s"


def _ended(pid: int) -> bool:
    """Exited (gone, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}"
    with Servers(db, tmp_path, POCKETRUN_DRAIN_GRACE="2") as servers:
        cluster = servers.start("cluster", workers=2)
        workers = cluster.worker_pids()
        assert cluster.proc is not None
        cluster.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
        cluster.proc.wait(10)
        try:
            wait_until(lambda: all(map(_ended, workers)), 10, 0.05, "the orphaned workers to end")
        finally:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with socket.socket() as sock:  # nobody holds the port any more
            sock.bind(("127.0.0.1", cluster.port))
