"""A second ``evolving`` version 1 with another graph: loading it beside
``tests.versions_v1`` must fail, naming both factories."""

from flows.registry import register
from tests.versions_nodes import build


def build_other_v1():
    return build("1", check=True)


register("evolving", build_other_v1, version="1", step_timeout=None, run_timeout=None)
