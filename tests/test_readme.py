"""The README's Python examples, extracted and run, so they cannot rot: each passes the
project's own lint as written, and each that registers flows loads, and runs, through the
real CLI from a directory of its own."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import BIN, ROOT

pytestmark = pytest.mark.timeout(300)

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FILE_NAME = re.compile(r"#\s*([A-Za-z_][A-Za-z0-9_]*\.py)\b")
REGISTERED = re.compile(r"""^register\(\s*["']([A-Za-z0-9_.-]+)["']""", re.M)


def examples() -> list[tuple[str, str]]:
    """(file name, code) of every Python block of the README."""
    found = []
    for i, match in enumerate(BLOCK.finditer((ROOT / "README.md").read_text())):
        code = match.group(1)
        first = code.splitlines()[0] if code.strip() else ""
        named = FILE_NAME.match(first)
        found.append((named.group(1) if named else f"readme_example_{i}.py", code))
    return found


def _write(tmp_path: Path) -> list[Path]:
    paths = []
    for name, code in examples():
        path = tmp_path / name
        path.write_text(code)
        paths.append(path)
    return paths


def _cli(tmp_path: Path, *args: str, flows: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "POCKETRUN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'readme.db'}",
        "POCKETRUN_FLOWS": flows,
        "POCKETRUN_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(BIN / "pocketrun"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_has_python_examples() -> None:
    names = [name for name, _ in examples()]
    assert "myflows.py" in names and len(names) >= 2, names


def test_every_python_example_passes_the_project_lint_as_written(tmp_path: Path) -> None:
    paths = [str(p) for p in _write(tmp_path)]
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check", "--diff"]):
        result = subprocess.run(
            [str(BIN / "ruff"), *command, "--config", config, *paths],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_example_that_registers_flows_loads_through_the_cli(tmp_path: Path) -> None:
    checked = 0
    for path in _write(tmp_path):
        names = REGISTERED.findall(path.read_text())
        if not names:
            continue
        listed = _cli(tmp_path, "flows", flows=path.name)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        for name in names:
            assert name in listed.stdout, (path.name, name, listed.stdout)
        checked += 1
    assert checked >= 2


def test_the_orders_example_runs_to_its_receipt(tmp_path: Path) -> None:
    _write(tmp_path)
    ran = _cli(
        tmp_path,
        "run",
        "orders",
        "--input",
        '{"sku": "tea", "quantity": 2}',
        "--wait",
        flows="myflows.py",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 x tea: 19.00" in ran.stdout, ran.stdout
