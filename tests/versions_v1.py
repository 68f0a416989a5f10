"""Version 1 of the ``evolving`` flow: a -> b -> c -> d."""

from flows.registry import register
from tests.versions_nodes import build


def build_v1():
    return build("1", check=False)


register("evolving", build_v1, version="1", output=["trail"], step_timeout=None, run_timeout=None)
