"""A private, throwaway PostgreSQL server that a test may stop and start again (the shared
one on 5432 must stay up for everyone else)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.support import free_port, wait_until

SERVER_USER = "postgres"  # PostgreSQL refuses to run as root
INITDB_OPTIONS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
SERVER_OPTIONS = ("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    # setpriv execs in place: the process we start is the server itself, whose pid we own.
    return ["setpriv", "--reuid", SERVER_USER, "--regid", SERVER_USER, "--clear-groups", *args]


class PrivatePostgres:
    """Its data lives in a directory of its own (pytest's are private to root, where the
    server's user could not reach them); ``remove`` stops the server and deletes it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pocketrun-pg-"))
        self.data = self.root / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    def init(self) -> PrivatePostgres:
        self.data.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(self.data, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_server_user(
                [shutil.which("initdb") or "initdb", "-D", str(self.data), *INITDB_OPTIONS]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def start(self) -> PrivatePostgres:
        where = ("-D", str(self.data), "-p", str(self.port), "-k", str(self.data))
        self.proc = subprocess.Popen(
            _as_server_user([shutil.which("postgres") or "postgres", *where, *SERVER_OPTIONS]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 30, 0.1, "the private postgres to accept connections")
        return self

    def ping(self) -> bool:
        import asyncio

        async def main() -> bool:
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", timeout=1
                )
            except (OSError, asyncpg.PostgresError):
                return False
            await conn.close()
            return True

        return asyncio.run(main())

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, as when the database goes away for real."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
