"""A flow for the observability tests: its node logs through the standard library."""

from __future__ import annotations

import logging

from pocketflow import Flow, Node

from core.context import step_key
from flows.registry import register

NODE_LOGGER = "tests.observability.node"
NODE_MESSAGE = "the node says hello"


class Chatty(Node):
    """Logs one line from ``exec`` (a step thread) with plain ``logging``."""

    def exec(self, prep_res):
        logging.getLogger(NODE_LOGGER).warning(NODE_MESSAGE)
        return step_key()

    def post(self, shared, prep_res, exec_res):
        shared["key"] = exec_res


def build_chatty() -> Flow:
    first = Chatty()
    first >> Chatty()
    return Flow(start=first)


register("obs-chatty", build_chatty, description="two nodes that log with stdlib logging")
