"""Helpers the suite shares: free ports, a real `pocketrun serve` process, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
# Every server in the suite seeds this admin key (tenant "default"); clients send it.
TEST_ADMIN_KEY = "prk_test-admin-key-0123456789abcdefghijklmnop"
TEST_AUTH = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Server:
    """A real ``pocketrun serve`` (uvicorn) in its own process."""

    def __init__(
        self,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        command: str = "serve",
        cwd: Path = ROOT,
    ) -> None:
        self.database_url = database_url
        self.command, self.cwd = command, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "POCKETRUN_DATABASE_URL": database_url,
            "POCKETRUN_FLOWS": "tests.edge_flows",
            "POCKETRUN_EXAMPLES": "true",
            "POCKETRUN_LOG_LEVEL": "WARNING",
            "POCKETRUN_PORT": str(self.port),
            "POCKETRUN_ADMIN_KEY": TEST_ADMIN_KEY,
            **(env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.headers: dict[str, str] = dict(TEST_AUTH)

    def start(self, timeout: float = 60) -> Server:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "pocketrun"), self.command, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout, 0.1, "the server to answer /healthz")
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=70, **kwargs)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None


def wait_for_run(
    client: httpx.Client, run_id: str, statuses: set[str] = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/runs/{run_id}").json()
        return body if body["status"] in statuses else None

    return wait_until(done, timeout, 0.05, f"run {run_id} to reach {sorted(statuses)}")


class RedisServer:
    """A private, throwaway redis-server (no persistence) that tests may restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, 0.05, "redis-server to answer")
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down_for: float = 0.5) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()
