"""From a clone to an engineer's own flow running: the commands, and seconds on this machine.

What a new engineer types, in a fresh temporary directory, each command timed:

1. ``git clone`` of this checkout;
2. ``make .venv/.installed`` (what ``make run`` and ``make test`` do first: the virtualenv
   and the package with its dependencies, from this machine's package index);
3. ``pocketrun new flow greet`` (the scaffold: a module, its test, a README snippet);
4. ``POCKETRUN_FLOWS=greet.py pocketrun run greet --input '{"text": ...}' --wait`` (the
   durable engine on an embedded SQLite file: no server, no services), as the scaffold's
   README snippet says;
5. the scaffold's own test, ``pytest test_greet.py``.

    .venv/bin/python -m bench.onboarding [--source PATH]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import machine, save, table

ROOT = Path(__file__).resolve().parent.parent
INPUT = '{"text": "a few words"}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT), help="what to clone")
    args = parser.parse_args()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clone = work / "pocketrun"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("POCKETRUN_", "VIRTUAL_ENV"))
        }
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
        )
        project = work / "project"
        project.mkdir()
        bin_ = clone / ".venv" / "bin"
        steps = [
            ("git clone", ["git", "clone", "-q", args.source, str(clone)], work, {}),
            ("make .venv/.installed", ["make", ".venv/.installed"], clone, {}),
            (
                "pocketrun new flow greet",
                [str(bin_ / "pocketrun"), "new", "flow", "greet"],
                project,
                {},
            ),
            (
                "POCKETRUN_FLOWS=greet.py pocketrun run greet --input ... --wait",
                [str(bin_ / "pocketrun"), "run", "greet", "--input", INPUT, "--wait"],
                project,
                {"POCKETRUN_FLOWS": "greet.py"},
            ),
            (
                "pytest test_greet.py",
                [str(bin_ / "python"), "-m", "pytest", "-q", "test_greet.py"],
                project,
                {"POCKETRUN_FLOWS": "greet.py"},
            ),
        ]
        total = 0.0
        for label, command, cwd, extra in steps:
            start = time.perf_counter()
            done = subprocess.run(
                command, cwd=cwd, env={**env, **extra}, capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
            total += seconds
            ok = done.returncode == 0
            rows.append([label, f"{seconds:.1f}", "ok" if ok else f"exit {done.returncode}"])
            if not ok:
                print(f"$ {shlex.join(command)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                break
        rows.append(["total", f"{total:.1f}", f"{len(rows)} commands"])
    print(table("from a clone to a custom flow running", ["command", "seconds", "result"], rows))
    save("onboarding", {"machine": machine(), "steps": rows})


if __name__ == "__main__":
    main()
