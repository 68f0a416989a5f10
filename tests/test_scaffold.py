"""``pocketrun new flow NAME`` writes a module and a test that pass ``make test``'s lint and
run green as written, and prints a README snippet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import BIN, ROOT


def _pocketrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ruff"), *args, "--config", str(ROOT / "pyproject.toml"), "."],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_new_flow_writes_a_module_and_test_that_lint_clean_and_pass(tmp_path: Path) -> None:
    made = _pocketrun("new", "flow", "order-intake", "--dir", str(tmp_path / "app"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    app = tmp_path / "app"
    assert sorted(p.name for p in app.iterdir()) == ["order_intake.py", "test_order_intake.py"]
    assert "### The `order-intake` flow" in made.stdout  # the README snippet
    assert "export POCKETRUN_FLOWS=order_intake" in made.stdout

    for check in (("check",), ("format", "--check")):
        linted = _ruff(*check, cwd=app)
        assert linted.returncode == 0, linted.stdout + linted.stderr

    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_order_intake.py"],
        cwd=app,
        env={**os.environ, "POCKETRUN_FLOWS": "order_intake"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "3 passed" in tested.stdout

    listed = subprocess.run(
        [str(BIN / "pocketrun"), "flows", "order-intake"],
        cwd=app,
        env={**os.environ, "POCKETRUN_FLOWS": "order_intake", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Clean a text and count its words" in listed.stdout


def test_new_flow_refuses_to_overwrite_and_to_shadow_a_package(tmp_path: Path) -> None:
    assert _pocketrun("new", "flow", "intake", cwd=tmp_path).returncode == 0
    again = _pocketrun("new", "flow", "intake", cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists; pass --force" in again.stderr
    assert _pocketrun("new", "flow", "intake", "--force", cwd=tmp_path).returncode == 0

    shadow = _pocketrun("new", "flow", "nodes", cwd=tmp_path)
    assert shadow.returncode == 1
    assert "would shadow pocketrun's own 'nodes'" in shadow.stderr
    bad = _pocketrun("new", "flow", "two words", cwd=tmp_path)
    assert bad.returncode == 1
    assert "use letters, digits" in bad.stderr
    assert not (tmp_path / "nodes.py").exists()
