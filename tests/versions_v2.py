"""Version 2 of the ``evolving`` flow: a -> b -> c -> check (a person) -> d."""

from flows.registry import register
from tests.versions_nodes import build


def build_v2():
    return build("2", check=True)


register("evolving", build_v2, version="2", output=["trail"], step_timeout=None, run_timeout=None)
