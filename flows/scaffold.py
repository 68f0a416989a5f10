"""``pocketrun new flow NAME``: a flow module, its test and a README snippet, as text.

What is written passes the repository's lint (ruff check, ruff format) and its test passes
as written; tests/test_scaffold.py holds both to that.
"""

from __future__ import annotations

import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import FlowDefinitionError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")
# an engineer's module by one of these names would shadow pocketrun's own
OURS = frozenset({"api", "cli", "cli_view", "core", "db", "flows", "nodes", "workers", "tests"})


@dataclass(frozen=True, slots=True)
class Scaffold:
    flow: str  # the registered flow name
    module: str  # the importable module that registers it
    files: dict[Path, str]  # path -> content
    snippet: str  # markdown for the engineer's README


def module_name(flow: str) -> str:
    """The module that registers ``flow``: ``order-intake`` -> ``order_intake``."""
    if not _NAME.match(flow):
        raise FlowDefinitionError(
            f"flow name {flow!r}: use letters, digits, '-' and '_', starting with a letter"
        )
    module = flow.replace("-", "_").lower()
    if keyword.iskeyword(module):
        raise FlowDefinitionError(f"flow name {flow!r}: '{module}' is a Python keyword")
    if module in OURS or module in sys.stdlib_module_names:
        owner = "pocketrun's" if module in OURS else "Python's"
        raise FlowDefinitionError(
            f"flow name {flow!r}: a module called '{module}' would shadow {owner} own "
            f"'{module}'; pick another name"
        )
    return module


def scaffold(flow: str, directory: Path) -> Scaffold:
    module = module_name(flow)
    model = "".join(part.capitalize() for part in module.split("_")) + "In"
    files = {
        directory / f"{module}.py": MODULE.format(flow=flow, module=module, model=model),
        directory / f"test_{module}.py": TEST.format(flow=flow, module=module),
    }
    commands = [
        (f"export POCKETRUN_FLOWS={module}", ""),
        ("pocketrun dev", "serve it; an edit restarts the server"),
        (f'pocketrun run {flow} --input \'{{"text": "a few words"}}\' --wait', ""),
        (f"pytest test_{module}.py", "runs it, and crashes and resumes it, on SQLite"),
    ]
    width = max(len(c) for c, why in commands if why) + 2
    sh = "\n".join(f"{c:<{width}}# {why}" if why else c for c, why in commands)
    return Scaffold(flow, module, files, SNIPPET.format(flow=flow, module=module, sh=sh))


def write(scaffold: Scaffold, *, force: bool = False) -> list[Path]:
    """Write the files; refuses to overwrite any unless ``force``."""
    existing = [path for path in scaffold.files if path.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise FileExistsError(f"{names} already exists; pass --force to overwrite")
    for path, text in scaffold.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(scaffold.files)


MODULE = '''\
"""The `{flow}` flow: clean a text, then count its words (replace with your own nodes).

Serve it with `POCKETRUN_FLOWS={module} pocketrun dev`; test it with
`pytest test_{module}.py`.
"""

from typing import Any

from pocketflow import Flow, Node
from pydantic import BaseModel

from flows import register


class {model}(BaseModel):
    text: str


class Clean(Node):
    def prep(self, shared: dict[str, Any]) -> str:
        return shared["text"]

    def exec(self, text: str) -> str:
        return " ".join(text.split())

    def post(self, shared: dict[str, Any], prep_res: str, exec_res: str) -> str:
        shared["clean"] = exec_res
        return "default" if exec_res else "empty"


class Count(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["words"] = len(shared["clean"].split())


class Empty(Node):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["words"] = 0


def build() -> Flow:  # a new Flow on every call
    clean = Clean()
    clean >> Count()
    clean - "empty" >> Empty()
    return Flow(start=clean)


register(
    "{flow}",
    build,
    input={model},
    output=["clean", "words"],
    description="Clean a text and count its words",
)
'''

TEST = '''\
"""The `{flow}` flow, run through pocketrun's durable engine (`workers.testing`)."""

from workers.testing import run_flow

# isort: split
import {module}  # noqa: F401  (registers the flow)

FLOW = "{flow}"
TEXT = {{"text": "  three   short words "}}


def test_the_cleaned_text_has_its_words_counted() -> None:
    result = run_flow(FLOW, TEXT)
    assert result.status == "succeeded"
    assert result.output == {{"clean": "three short words", "words": 3}}
    assert result.path == ["Clean", "Count"]


def test_an_empty_text_takes_the_empty_branch() -> None:
    result = run_flow(FLOW, {{"text": "   "}})
    assert result.path == ["Clean", "Empty"]
    assert result.output == {{"clean": "", "words": 0}}


def test_a_crash_after_the_first_step_resumes_to_the_same_end() -> None:
    crashed = run_flow(FLOW, TEXT, crash_after=1)
    assert crashed.status == "succeeded"
    assert crashed.store == run_flow(FLOW, TEXT).store
'''

SNIPPET = """\
### The `{flow}` flow

`{module}.py` registers the flow; `test_{module}.py` tests it through the durable engine.

```sh
{sh}
```
"""
