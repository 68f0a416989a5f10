"""A failed node's traceback as an engineer wants to read it: the node's own frames.

The frames between the step runner and the node (pocketflow's ``_run``/``_exec``, the
runner's exec counter, asyncio and thread-pool plumbing) say nothing about the failure, so
they are dropped; what is left is the code that raised, with file and line. Paths are
shown relative to the ``sys.path`` entry they were imported from (``nodes/faults.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import pocketflow

from core.text import storable

MAX_FRAMES = 30  # the innermost ones: where it raised
MAX_CHARS = 8000  # what one step's error keeps of it (and about 40 characters more)
_INTERNAL_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) + os.sep
    for module in (pocketflow, asyncio, concurrent.futures, sys.modules[__package__])
)
_INTERNAL_FILES = (str(Path(threading.__file__).resolve()),)


@dataclass(slots=True, frozen=True)
class NodeTraceback:
    text: str  # the formatted traceback, internals trimmed, capped at MAX_CHARS
    raised_at: str | None  # "file:line" of the innermost kept frame


def _internal(filename: str) -> bool:
    path = str(Path(filename).resolve())
    return path.startswith(_INTERNAL_DIRS) or path in _INTERNAL_FILES


def _short(filename: str) -> str:
    path = str(Path(filename).resolve())
    roots = [str(Path(p).resolve()) + os.sep for p in sys.path if p]
    root = max((r for r in roots if path.startswith(r)), key=len, default="")
    return path[len(root) :]


def _trim(exc: traceback.TracebackException, seen: set[int]) -> None:
    """Drop internal frames in ``exc`` and every exception chained to it."""
    if id(exc) in seen:
        return
    seen.add(id(exc))
    kept = [frame for frame in exc.stack if not _internal(frame.filename)][-MAX_FRAMES:]
    for frame in kept:
        frame.filename = _short(frame.filename)
    exc.stack = traceback.StackSummary.from_list(kept)
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            _trim(chained, seen)


def node_traceback(exc: BaseException) -> NodeTraceback:
    summary = traceback.TracebackException.from_exception(exc, capture_locals=False)
    _trim(summary, set())
    innermost = summary.stack[-1] if summary.stack else None
    raised_at = f"{innermost.filename}:{innermost.lineno}" if innermost else None
    text = storable("".join(summary.format()))
    if len(text) > MAX_CHARS:  # a huge message: keep the frames and both ends of it
        half = MAX_CHARS // 2
        text = f"{text[:half]}\n... {len(text) - 2 * half} characters cut ...\n{text[-half:]}"
    return NodeTraceback(text, raised_at)


def last_line(text: str) -> str:
    """The traceback's last line: the exception and its message."""
    lines = text.rstrip().splitlines()
    return lines[-1] if lines else ""
