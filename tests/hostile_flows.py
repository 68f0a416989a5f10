"""Flows that misbehave on purpose, for the isolation tests.

``hang`` calls a sync node whose exec never returns (step_timeout=1); ``hang-prep`` is a
flow whose own prep never returns; ``nap`` sleeps ``seconds`` in one sync node (for
keeping slots busy); ``pair`` runs two such naps, so it can time-slice between them;
``chatter`` streams many chunks (for event stream load).
"""

from __future__ import annotations

import threading
import time

from pocketflow import Flow, Node

from core.context import emit
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


class Chatter(Node):
    """Emits ``chunks`` strings of ``size`` bytes, pausing ``pause`` s every ``pause_every``."""

    def prep(self, shared):
        return shared

    def exec(self, p):
        text = "x" * int(p.get("size", 100))
        every = int(p.get("pause_every", 0))
        for i in range(int(p.get("chunks", 10))):
            emit(text)
            if every and (i + 1) % every == 0:
                time.sleep(float(p.get("pause", 0.01)))


def chatter() -> Flow:
    return Flow(start=Chatter())


class Unspeakable(Node):
    """Raises an error whose text no PostgreSQL column takes: NUL, a lone surrogate, 1 MB."""

    def __init__(self) -> None:
        super().__init__(max_retries=1)

    def exec(self, prep_res):
        raise ValueError("bad\x00byte \ud800 " + "x" * 1_000_000)


def unspeakable() -> Flow:
    return Flow(start=Unspeakable())


def nap_chatter() -> Flow:
    """A nap first (subscribers gather), then the chatter."""
    first = Sleep()
    first >> Chatter()
    return Flow(start=first)


register("hang", hang, step_timeout=1, mode="background")
register("hang-prep", hang_prep, step_timeout=1, mode="background")
register("nap", nap, mode="background")
register("pair", pair, mode="background")
register("chatter", chatter, mode="background")
register("nap-chatter", nap_chatter, mode="background")
register("unspeakable", unspeakable, mode="background")
