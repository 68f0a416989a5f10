"""Arithmetic on one number in the shared store: small steps to compose into pipelines."""

from __future__ import annotations

from pocketflow import Node

from nodes.control import mark


class _Arithmetic(Node):
    """Read ``shared[key]``, compute, write it back and leave a trail entry."""

    def __init__(self, operand: float = 0, key: str = "value") -> None:
        super().__init__()
        self.operand, self.key = operand, key

    def prep(self, shared):
        return shared[self.key]

    def apply(self, value: float, operand: float) -> float:
        raise NotImplementedError

    def exec(self, value):
        return self.apply(value, self.operand)

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = exec_res
        mark(shared, f"{type(self).__name__.lower()}:{exec_res}")


class Add(_Arithmetic):
    def apply(self, value, operand):
        return value + operand


class Multiply(_Arithmetic):
    def apply(self, value, operand):
        return value * operand


class Clamp(Node):
    """Cap ``shared[key]`` at ``shared[limit]``."""

    def __init__(self, key: str = "value", limit: str = "limit") -> None:
        super().__init__()
        self.key, self.limit = key, limit

    def prep(self, shared):
        return shared[self.key], shared[self.limit]

    def exec(self, prep_res):
        value, limit = prep_res
        return min(value, limit)

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = exec_res
        mark(shared, f"clamp:{exec_res}")
