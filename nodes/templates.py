"""Shared-store paths and a safe mini-template: ``{key}``, ``{a.b}``, ``{items.0}``.

No eval: a template is text with ``{path}`` holes (``{{`` and ``}}`` are literal braces).
A string that is exactly one hole renders to the value itself (a number stays a number),
any other string to text; lists and objects render member by member (keys as written).
"""

from __future__ import annotations

import json
import re
from typing import Any

PATH = r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*"
_HOLE = re.compile(r"\{\{|\}\}|\{\s*(" + PATH + r")\s*\}|[{}]")
_WHOLE = re.compile(r"\{\s*(" + PATH + r")\s*\}")
_PATH = re.compile(PATH)
MISSING = object()


class TemplateError(ValueError):
    pass


def lookup(shared: Any, path: str, default: Any = MISSING) -> Any:
    """The value at a dotted path: object keys, and list indexes written as digits."""
    value = shared
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif default is not MISSING:
            return default
        else:
            raise TemplateError(f"'{path}' is not in the shared store")
    return value


def check_path(path: str) -> str:
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not a shared-store path like 'key' or 'a.b.0'")
    return path


def check(template: Any) -> Any:
    """Raise ValueError for a malformed template anywhere in ``template``."""
    if isinstance(template, str):
        for match in _HOLE.finditer(template):
            if match.group(0) in ("{", "}"):
                raise ValueError(
                    f"stray '{match.group(0)}' at character {match.start()} of {template!r}: "
                    "holes are {path}; write {{ or }} for a literal brace"
                )
    elif isinstance(template, dict):
        for value in template.values():
            check(value)
    elif isinstance(template, list):
        for value in template:
            check(value)
    return template


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render(template: Any, shared: Any) -> Any:
    """``template`` with every hole filled from ``shared``; TemplateError for a missing path."""
    if isinstance(template, str):
        whole = _WHOLE.fullmatch(template)
        if whole:
            return lookup(shared, whole.group(1))

        def fill(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            if match.group(1) is None:
                raise TemplateError(f"stray {token!r} in template {template!r}")
            return _text(lookup(shared, match.group(1)))

        return _HOLE.sub(fill, template)
    if isinstance(template, dict):
        return {key: render(value, shared) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, shared) for value in template]
    return template
