"""The load time of 1,000 registered flows, against building their graphs in plain Python.

A generated module registers ``--flows`` (1,000) flows of ``--nodes`` (5) nodes each, a
chain with one branch back, as engineers' modules do (``register(name, factory, ...)``).
Each measurement is a fresh interpreter (``python -c``), so imports are counted as a
server start counts them:

- floor: import pocketflow and call every factory once (the graphs built, nothing else);
- pocketrun: ``flows.registry.load_flows([module])``, which imports the module, builds,
  compiles and hashes every graph and validates each registration;
- ``pocketrun flows``: the CLI listing them (start to exit), what an engineer waits for.

    .venv/bin/python -m bench.flow_load [--flows 1000] [--nodes 5] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, median, save, table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

MODULE = '''"""{flows} generated flows of {nodes} nodes each."""

from pocketflow import Flow, Node


class Step(Node):
    def post(self, shared, prep_res, exec_res):
        shared["n"] = shared.get("n", 0) + 1
        return "again" if shared["n"] < 2 else None


def build() -> Flow:
    nodes = [Step() for _ in range({nodes})]
    for a, b in zip(nodes, nodes[1:]):
        a >> b
    nodes[-1] - "again" >> nodes[0]
    return Flow(start=nodes[0])


FACTORIES = {{f"generated-{{i}}": build for i in range({flows})}}

if __name__ != "__bench_floor__":
    from flows.registry import register

    for name, factory in FACTORIES.items():
        register(name, factory, description="generated")
'''

FLOOR = """
import importlib.util, time
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("__bench_floor__", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for factory in module.FACTORIES.values():
    factory()
print(time.perf_counter() - start)
"""

LOAD = """
import time
start = time.perf_counter()
from flows.registry import load_flows
registry = load_flows([{module!r}])
print(time.perf_counter() - start)
"""


def _seconds(code: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _cli_seconds(env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(BIN / "pocketrun"), "flows"], env=env, cwd=cwd, capture_output=True, check=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "generated_flows.py"
        path.write_text(MODULE.format(flows=args.flows, nodes=args.nodes))
        env = {
            **os.environ,
            "PYTHONPATH": f"{work}{os.pathsep}{ROOT}",
            "POCKETRUN_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
            "POCKETRUN_FLOWS": "generated_flows",
            "POCKETRUN_LOG_LEVEL": "WARNING",
        }
        floor, load, cli = [], [], []
        for _ in range(args.repeat):  # interleaved, so drift hits all three alike
            floor.append(_seconds(FLOOR.format(path=str(path)), env))
            load.append(_seconds(LOAD.format(module="generated_flows"), env))
            cli.append(_cli_seconds(env, work))
    rows = [
        ["floor: build the graphs", median(floor) * 1000, 1.0],
        [
            "load_flows (import, compile, register)",
            median(load) * 1000,
            median(load) / median(floor),
        ],
        [
            "`pocketrun flows` (process start to exit)",
            median(cli) * 1000,
            median(cli) / median(floor),
        ],
    ]
    print(
        table(
            f"{args.flows} flows of {args.nodes} nodes, median of {args.repeat} fresh processes",
            ["what", "ms", "x floor"],
            rows,
        )
    )
    save(
        "flow_load",
        {
            "machine": machine(),
            "flows": args.flows,
            "nodes": args.nodes,
            "repeat": args.repeat,
            "floor_s": floor,
            "load_flows_s": load,
            "cli_s": cli,
            "per_flow_ms": median(load) * 1000 / args.flows,
        },
    )


if __name__ == "__main__":
    main()
