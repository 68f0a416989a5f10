"""Small things the CLI got wrong for a new user, each shown fixed by the command itself."""

from __future__ import annotations

import os
import subprocess
import threading
from importlib.metadata import version
from pathlib import Path

from tests.support import BIN, free_port, wait_until


def pocketrun(
    cwd: Path, *args: str, db_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETRUN_")}
    env.update(POCKETRUN_LOG_LEVEL="WARNING", COLUMNS="200")
    if db_url is not None:
        env["POCKETRUN_DATABASE_URL"] = db_url
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=cwd,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = pocketrun(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pocketrun {version('pocketrun')}"


def test_keys_create_defaults_to_the_only_tenant(tmp_path: Path, db_url: str) -> None:
    first = pocketrun(tmp_path, "keys", "create", "--role", "consumer", db_url=db_url)
    assert first.returncode == 0, first.stderr
    assert "tenant 'default'" in first.stderr
    assert first.stdout.strip().startswith("prk_")

    acme = pocketrun(
        tmp_path, "keys", "create", "--role", "consumer", "--tenant", "acme", db_url=db_url
    )
    assert acme.returncode == 0, acme.stderr
    ambiguous = pocketrun(tmp_path, "keys", "create", "--role", "consumer", db_url=db_url)
    assert ambiguous.returncode == 2
    assert "give --tenant" in ambiguous.stderr and "acme" in ambiguous.stderr
    assert ambiguous.stdout == ""


def test_the_default_database_is_named_on_stderr(tmp_path: Path) -> None:
    listed = pocketrun(tmp_path, "runs", "list")
    assert listed.returncode == 0, listed.stderr
    database = tmp_path / "pocketrun.db"
    assert database.exists()
    assert f"pocketrun: database {database} (the default" in listed.stderr

    chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
    quiet = pocketrun(tmp_path, "runs", "list", db_url=chosen)
    assert quiet.returncode == 0, quiet.stderr
    assert "pocketrun: database" not in quiet.stderr


def test_serve_port_first_start_hint_names_that_port(tmp_path: Path) -> None:
    """No POCKETRUN_PORT and no admin key: the key minted at first start comes with a curl
    line, which must name the port given on the command line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETRUN_")}
    env.update(POCKETRUN_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")
    proc = subprocess.Popen(
        [str(BIN / "pocketrun"), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        hint = wait_until(
            lambda: next((line for line in list(lines) if "curl" in line), None),
            timeout=60,
            message="the first-start hint",
        )
        assert f"http://127.0.0.1:{port}/v1/flows" in hint
    finally:
        proc.kill()
        proc.wait(10)
