"""A PocketFlow project laid out as the cookbook does (``main.py``, ``nodes.py``, ``flow.py``,
``utils/``) runs unchanged from its own directory, through the CLI and the API; its files
and pocketrun's packages never stand in for each other; a module that fails to load says
what, where and what to do in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import BIN, ROOT, Server, wait_for_run

COOKBOOK = ROOT / "tests" / "projects" / "cookbook"
QUESTION = {"question": "What is PocketFlow?"}
ANSWER = "PocketFlow is a 100-line framework: nodes joined into a flow by actions."


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the cookbook project, outside pocketrun's checkout."""
    return Path(shutil.copytree(COOKBOOK, tmp_path / "cookbook"))


def pocketrun(
    cwd: Path, *args: str, flows: str = "flow", db_url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETRUN_")}
    env.update(POCKETRUN_FLOWS=flows, POCKETRUN_LOG_LEVEL="WARNING", COLUMNS="200")
    env["POCKETRUN_EXAMPLES"] = "true"  # the built-in flows beside the project's
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


def test_the_project_runs_as_plain_pocketflow(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "main.py", QUESTION["question"]],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"Answer: {ANSWER}" in result.stdout


@pytest.mark.parametrize("flows", ["flow", "flow.py", "./flow.py", "ABSOLUTE"])
def test_cli_lists_the_project_flow_however_it_is_named(project: Path, flows: str) -> None:
    result = pocketrun(
        project, "flows", flows=str(project / "flow.py") if flows == "ABSOLUTE" else flows
    )
    assert result.returncode == 0, result.stderr
    assert "qa" in result.stdout
    assert "hello" in result.stdout  # pocketrun's own examples, from its own nodes package


def test_cli_runs_the_project_flow_from_its_directory(project: Path, db_url: str) -> None:
    shown = pocketrun(project, "flows", "qa")
    assert shown.returncode == 0, shown.stderr
    assert "GetQuestionNode" in shown.stdout and "AnswerNode" in shown.stdout

    ran = pocketrun(project, "run", "qa", "--input", json.dumps(QUESTION), "--wait", db_url=db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout
    assert ANSWER in ran.stdout

    # A built-in flow in the same process: pocketrun's nodes are still its own.
    hello = pocketrun(
        project, "run", "hello", "--input", '{"name": "ann"}', "--wait", db_url=db_url
    )
    assert hello.returncode == 0, hello.stdout + hello.stderr
    assert "HELLO, ANN" in hello.stdout.upper()


def test_api_runs_the_project_flow_served_from_its_directory(
    project: Path, db_url: str, tmp_path: Path
) -> None:
    server = Server(
        db_url, env={"POCKETRUN_FLOWS": "flow"}, log_path=tmp_path / "server.log", cwd=project
    )
    try:
        server.start()
        with server.client() as client:
            flow = client.get("/v1/flows/qa")
            assert flow.status_code == 200, flow.text
            assert {"GetQuestionNode", "AnswerNode", "NoQuestionNode"} <= {
                node["id"] for node in flow.json()["graph"]["nodes"]
            }
            started = client.post("/v1/flows/qa/runs", json={"input": QUESTION})
            assert started.status_code in (201, 202), started.text
            run = wait_for_run(client, started.json()["id"])
            assert run["status"] == "succeeded", run
            assert run["output"] == {"question": QUESTION["question"], "answer": ANSWER}

            empty = client.post("/v1/flows/qa/runs", json={"input": {"question": " "}})
            run = wait_for_run(client, empty.json()["id"])
            assert run["output"]["answer"] == "Ask me a question first."
    finally:
        server.kill()


def test_python_c_in_the_project_directory_keeps_both_nodes(project: Path) -> None:
    """``python -c`` puts the project directory first on sys.path: pocketrun still gets its
    own packages, and the project's ``nodes.py`` lives on under a private name."""
    script = (
        "import json, sys\n"
        "from flows import load_flows\n"
        "registry = load_flows(['flow'])\n"
        "import nodes, nodes.aio, nodes.human\n"
        "mine = sys.modules['pocketrun_project.nodes']\n"
        "print(json.dumps({'ours': nodes.__file__, 'theirs': mine.__file__,\n"
        "    'name': mine.__name__, 'qa': 'qa' in registry}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("POCKETRUN_")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert Path(seen["ours"]).parent == ROOT / "nodes"
    assert Path(seen["theirs"]) == project / "nodes.py"
    assert seen["name"] == "pocketrun_project.nodes"
    assert seen["qa"]


def test_project_modules_named_like_pocketrun_packages_run(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "core.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (tmp_path / "db.py").write_text("ROWS = {'ann': 'hi'}\n")
    (tmp_path / "app.py").write_text(
        "from pocketflow import Flow, Node\n"
        "from core import shout\n"
        "from db import ROWS\n"
        "from flows.registry import register\n\n\n"
        "class Shout(Node):\n"
        "    def exec(self, prep_res):\n"
        "        return shout(ROWS['ann'])\n\n"
        "    def post(self, shared, prep_res, exec_res):\n"
        "        shared['said'] = exec_res\n\n\n"
        "register('shout', lambda: Flow(start=Shout()))\n"
    )
    ran = pocketrun(tmp_path, "run", "shout", "--wait", flows="app", db_url=db_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "HI!" in ran.stdout


LOAD_ERRORS = [
    # (files, POCKETRUN_FLOWS, what the one line says, a traceback behind it)
    ({"flow.py": "import json\n\nx = undefined_name\n"}, "flow", "flow.py line 3: NameError", True),
    ({"flow.py": "def build(:\n"}, "flow", "flow.py line 1: SyntaxError", True),
    (
        {"flow.py": "from nodes import Missing\n", "nodes.py": "X = 1\n"},
        "flow",
        "flow.py line 1: ImportError: cannot import name 'Missing' from 'nodes'",
        True,
    ),
    (
        {"flow.py": "from helpers import go\n", "helpers.py": "import json\ngo = 1 / 0\n"},
        "flow.py",
        "helpers.py line 2: ZeroDivisionError",
        True,
    ),
    ({"flow.py": "X = 1\n"}, "flow", "'flow' (flow.py) registered no flow", False),
    ({}, "flow", "module 'flow' not found in", False),
    ({}, "myflows.py", "no file 'myflows.py' in", False),
]


@pytest.mark.parametrize(("files", "flows", "says", "traced"), LOAD_ERRORS)
def test_a_module_that_fails_to_load_says_so_in_one_line(
    tmp_path: Path, files: dict[str, str], flows: str, says: str, traced: bool
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = pocketrun(tmp_path, "flows", flows=flows)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr
    assert ("--debug shows the traceback" in lines[0]) is traced

    debug = pocketrun(tmp_path, "--debug", "flows", flows=flows)
    assert debug.returncode == 2
    assert ("Traceback (most recent call last)" in debug.stderr) is traced
    assert debug.stderr.strip().splitlines()[-1].startswith(lines[0].split(" (--debug")[0])


@pytest.mark.parametrize("command", [("serve", "--port", "1"), ("run", "qa", "--wait")])
def test_serve_and_run_report_a_load_error_in_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "flow.py").write_text("import json\n\nx = undefined_name\n")
    db_url = f"sqlite:///{tmp_path / 'pocketrun.db'}"
    result = pocketrun(tmp_path, *command, db_url=db_url, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "flow.py line 3: NameError: name 'undefined_name' is not defined "
        "(--debug shows the traceback)"
    ]
    traced = pocketrun(tmp_path, *command[:1], "--debug", *command[1:], db_url=db_url)
    assert "Traceback (most recent call last)" in traced.stderr
