"""Flows that misbehave on purpose, for the isolation tests.

``hang`` calls a sync node whose exec never returns (step_timeout=1); ``hang-prep`` is a
flow whose own prep never returns; ``nap`` sleeps ``seconds`` in one sync node (for
keeping slots busy); ``pair`` runs two such naps, so it can time-slice between them.
"""

from __future__ import annotations

import threading
import time

from pocketflow import Flow, Node

from flows.registry import register
from nodes.control import Sleep

FOREVER = threading.Event()  # never set


class Hang(Node):
    def exec(self, prep_res):
        FOREVER.wait()


class HangingPrepFlow(Flow):
    def prep(self, shared):
        FOREVER.wait()


class Done(Node):
    def post(self, shared, prep_res, exec_res):
        shared["done"] = True


def hang() -> Flow:
    return Flow(start=Hang())


def hang_prep() -> Flow:
    inner = HangingPrepFlow(start=Done())
    return Flow(start=inner)


def nap() -> Flow:
    return Flow(start=Sleep())


def pair() -> Flow:
    first = Sleep()
    first >> Sleep()
    return Flow(start=first)


class Clock(Node):
    def post(self, shared, prep_res, exec_res):
        shared["finished"] = time.time()


register("hang", hang, step_timeout=1, mode="background")
register("hang-prep", hang_prep, step_timeout=1, mode="background")
register("nap", nap, mode="background")
register("pair", pair, mode="background")
