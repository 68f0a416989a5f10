"""A small safe expression language for branching: shared-store paths compared with
literals, combined with ``and``, ``or``, ``not``.

``amount > 100 and customer.tier == "gold"``, ``status in ["new", "open"]``,
``not flagged``, ``reply.score >= 0.5 or retries == 0``. Parsed with ``ast`` and walked
here; only the node types below are accepted, so nothing is ever evaluated as Python.
A path that is not in the store is ``null``. ``true``, ``false`` and ``null`` are literals.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from nodes.templates import lookup

MAX_LENGTH = 2000
LITERALS = {"true": True, "false": False, "null": None}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class ExpressionError(ValueError):
    pass


def _path(node: ast.expr) -> str | None:
    """``a.b[0]["c"]`` -> ``a.b.0.c``; None when ``node`` is not a path."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _path(node.value)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        base = _path(node.value)
        if base is None or not isinstance(key, str | int) or isinstance(key, bool):
            return None
        return f"{base}.{key}"
    return None


class Expression:
    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("an expression must be a non-empty string")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"an expression may be at most {MAX_LENGTH} characters")
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"{text!r} is not an expression: {exc.msg}") from None
        self._tree = tree.body
        self._check(self._tree)

    def _check(self, node: ast.expr) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE:
                    raise ExpressionError(f"operator {type(op).__name__} is not allowed")
            for operand in (node.left, *node.comparators):
                self._check(operand)
        elif not self._is_value(node):
            raise ExpressionError(
                f"{ast.unparse(node)!r} is not allowed: use shared-store paths, literals, "
                "comparisons, and, or, not"
            )

    def _is_value(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return node.value is None or isinstance(node.value, str | int | float | bool)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return isinstance(node.operand, ast.Constant) and isinstance(
                node.operand.value, int | float
            )
        if isinstance(node, ast.List | ast.Tuple):
            return all(self._is_value(e) for e in node.elts)
        path = _path(node)  # looked up in the store's dicts and lists, never as attributes
        return path is not None and not any(p.startswith("__") for p in path.split("."))

    def evaluate(self, shared: Any) -> bool:
        return bool(self._eval(self._tree, shared))

    def _eval(self, node: ast.expr, shared: Any) -> Any:
        if isinstance(node, ast.BoolOp):
            values = (self._eval(v, shared) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, shared)
            if isinstance(node.op, ast.Not):
                return not value
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, shared)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator, shared)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError:
                    raise ExpressionError(
                        f"in {self.text!r}: can't compare {left!r} with {right!r}"
                    ) from None
                left = right
            return True
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [self._eval(e, shared) for e in node.elts]
        path = _path(node)
        assert path is not None  # _check let only paths through
        if path in LITERALS:
            return LITERALS[path]
        return lookup(shared, path, None)
