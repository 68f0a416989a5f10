"""The step runner: PocketFlow's ``Flow._orch`` loop, one durable step at a time.

``Flow._orch`` copies the current node, gives it the flow's params, runs it and follows
``successors[action]``; a nested flow runs its ``prep``, its own loop and its ``post``.
Here that loop is unrolled into a cursor so it can stop after any node: ``step`` enters
flows until it reaches a leaf, runs the leaf, routes by its action, and unwinds every
flow that ended (running their ``post``), so each flow's ``prep`` commits with its first
inner step and its ``post`` with its last.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pocketflow import AsyncBatchNode, BaseNode, BatchNode, Flow

from core.context import set_emitter, set_sleeper, set_step_key
from core.human_input import request_problem
from core.jsonutil import roundtrip
from core.text import storable
from flows.compiler import ASYNC_KINDS, Graph, Kind, NodeInfo
from nodes.human import asks_human
from workers.cursor import Cursor, Frame
from workers.live import LiveStep
from workers.node_cache import CacheScope, cache_ttl, entry_key, json_storable
from workers.threads import StepThreads
from workers.tracebacks import NodeTraceback, node_traceback

BATCH_KINDS = {Kind.batch_flow, Kind.async_batch_flow}
MAX_MESSAGE = 4000  # characters of an error message kept with the step


class StepError(Exception):
    """A step that ends the run: ``type`` becomes the run's and the step's error type."""

    def __init__(
        self,
        type_: str,
        message: str,
        node: str,
        status: str = "failed",
        attempts: int = 0,
        traceback: NodeTraceback | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.node = node
        self.status = status
        self.attempts = attempts  # exec calls made before the step failed
        self.traceback = traceback  # where the node's own code raised

    @classmethod
    def raised(cls, exc: Exception, node: str, attempts: int = 0) -> StepError:
        """The node's code raised ``exc``: a ``node_error`` that keeps its traceback."""
        message = f"{type(exc).__name__}: {exc}"
        return cls("node_error", message, node, attempts=attempts, traceback=node_traceback(exc))

    def to_json(self) -> dict[str, Any]:
        # an exception's text is anything: every database must be able to keep it
        message = storable(self.message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE // 2] + " ... " + message[-MAX_MESSAGE // 2 :]
        out = {"type": self.type, "message": message, "node": self.node}
        if self.traceback is not None:
            out["traceback"] = self.traceback.text
        return out


@dataclass(slots=True, frozen=True)
class Limits:
    """How long one call of a step may take: ``timeout`` seconds of its own time (a wait
    for a thread does not count) and never past ``until``, the run's deadline (loop time)."""

    timeout: float | None = None
    until: float | None = None

    def remaining(self, started: float, now: float | None = None) -> float | None:
        """Seconds left at ``now`` for a call whose own time began at ``started``."""
        now = started if now is None else now
        ends = [] if self.until is None else [self.until]
        if self.timeout is not None:
            ends.append(started + self.timeout)
        return min(ends) - now if ends else None

    def deadline_passed(self, now: float) -> bool:
        return self.until is not None and now + 0.001 >= self.until


NO_LIMITS = Limits()


@dataclass(slots=True)
class StepResult:
    node: str | None  # None: the run ended without running a leaf (e.g. an empty batch)
    action: str | None
    attempts: int
    started_at: datetime
    finished_at: datetime
    cursor: Cursor
    shared: dict[str, Any]
    error: StepError | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    waiting: bool = False  # stopped at an AskHuman node after its prep (cursor.wait)
    sleep: float | None = None  # seconds the node asked to sleep (core.context.sleep)
    cached: bool = False  # exec's result came from the node cache


class _Counter:
    """Counts exec calls on a node copy without changing what the node does.

    pocketflow's AsyncNode retries without setting ``cur_retry``; pocketrun sets it for
    async nodes too. Each retry loop runs in one task (a parallel batch gives each item its
    own), and a loop ends on success or on its last failure, so a per-task count is the
    retry index."""

    def __init__(self, node: BaseNode, is_async: bool, live: LiveStep | None = None) -> None:
        self.calls = 0
        item_done = _batch_items(node, is_async, live)
        if is_async and hasattr(node, "exec_async"):
            original = node.exec_async
            tries: dict[int, int] = {}
            max_retries = getattr(node, "max_retries", 1)

            async def counted_async(prep_res: Any) -> Any:
                self.calls += 1
                task = id(asyncio.current_task())
                retry = tries.get(task, 0)
                node.cur_retry = retry
                if retry and live is not None:
                    live.retry(retry + 1)
                try:
                    result = await original(prep_res)
                except Exception:
                    if retry + 1 >= max_retries:
                        tries.pop(task, None)
                    else:
                        tries[task] = retry + 1
                    raise
                tries.pop(task, None)
                item_done()
                return result

            node.exec_async = counted_async  # type: ignore[method-assign]
        else:
            original_sync = node.exec

            def counted(prep_res: Any) -> Any:
                self.calls += 1
                retry = getattr(node, "cur_retry", 0)
                if retry and live is not None:
                    live.retry(retry + 1)
                result = original_sync(prep_res)
                item_done()
                return result

            node.exec = counted  # type: ignore[method-assign]


def _batch_items(node: BaseNode, is_async: bool, live: LiveStep | None) -> Callable[[], None]:
    """For a batch node with a live stream: count its items as each one ends (by exec or
    by its fallback) and publish ``node.progress``; the callable marks one item done."""
    if live is None or not isinstance(node, (BatchNode, AsyncBatchNode)):
        return _nothing
    counts = [0, 0]  # done, total
    batch_exec = node._exec

    def done() -> None:
        counts[0] += 1
        live.progress(counts[0], counts[1])

    if is_async:

        async def exec_all_async(items: Any) -> Any:
            counts[1] = len(items or [])
            return await batch_exec(items)

        node._exec = exec_all_async  # type: ignore[method-assign]
    else:

        def exec_all(items: Any) -> Any:
            counts[1] = len(items or [])
            return batch_exec(items)

        node._exec = exec_all  # type: ignore[method-assign]
    fallback = node.exec_fallback_async if is_async else node.exec_fallback
    if is_async:

        async def fallback_async(prep_res: Any, exc: Exception) -> Any:
            result = await fallback(prep_res, exc)
            done()
            return result

        node.exec_fallback_async = fallback_async  # type: ignore[method-assign]
    else:

        def fallback_sync(prep_res: Any, exc: Exception) -> Any:
            result = fallback(prep_res, exc)
            done()
            return result

        node.exec_fallback = fallback_sync  # type: ignore[method-assign]
    return done


def _nothing() -> None:
    return None


def _json(value: Any, what: str, node: str) -> Any:
    try:
        return roundtrip(value)
    except TypeError as exc:
        raise StepError(
            "unserializable", f"{what} of '{node}' can't be stored as JSON: {exc}", node
        ) from None


class StepRunner:
    def __init__(
        self,
        graph: Graph,
        threads: StepThreads,
        run_key: str,
        *,
        clock: Callable[[], datetime],
        inline_sync: bool = False,
        cache: CacheScope | None = None,
    ) -> None:
        self.graph = graph
        self.threads = threads
        self.run_key = run_key
        self.clock = clock
        # No timeout can cut a sync call short: run it here, without a thread hop.
        self.inline_sync = inline_sync
        self._live_flows: dict[str, BaseNode] = {}  # entered flow copies, for their post
        self._sleeps: list[float] = []  # this step's core.context.sleep calls
        self.cache = cache
        self._served = False  # this step's exec result came from the node cache

    async def _call(
        self,
        fn: Any,
        *args: Any,
        is_async: bool,
        limits: Limits,
        key: str | None = None,
        live: LiveStep | None = None,
    ) -> Any:
        """``fn(*args)`` within ``limits``: TimeoutError when one runs out. ``live``: what
        the call emits goes to its step's event stream."""
        loop = asyncio.get_running_loop()
        emitter = live.emit if live is not None else None
        sleeper = self._sleeps.append
        if is_async or self.inline_sync:
            set_step_key(key)
            set_emitter(emitter)
            set_sleeper(sleeper)
            try:
                if not is_async:
                    return fn(*args)
                return await asyncio.wait_for(fn(*args), limits.remaining(loop.time()))
            finally:
                set_emitter(None)
                set_sleeper(None)

        def in_thread() -> Any:
            set_step_key(key)
            set_emitter(emitter)
            set_sleeper(sleeper)
            try:
                return fn(*args)
            finally:
                set_emitter(None)
                set_sleeper(None)

        future = self.threads.submit(in_thread)
        waiting = asyncio.wrap_future(future)
        while True:
            # The node's own time runs from when a thread took the call, not from now.
            started = self.threads.started_at(future)
            now = loop.time()
            left = limits.remaining(started if started is not None else now, now)
            if left is not None and left <= 0:
                break
            done, _ = await asyncio.wait((waiting,), timeout=left)
            if done:
                return waiting.result()
        self.threads.abandon(future)  # it may never return: the pool replaces its thread
        waiting.cancel()
        raise TimeoutError

    async def step(
        self,
        cursor: Cursor,
        shared: dict[str, Any],
        seq: int,
        limits: Limits = NO_LIMITS,
        live: LiveStep | None = None,
    ) -> StepResult:
        """Run the next leaf node (entering and leaving flows around it) on ``shared``; each
        call (a flow's prep or post as much as the node) runs within ``limits``."""
        started = self.clock()
        key = f"{self.run_key}:{seq}"
        self._sleeps = []
        self._served = False
        try:
            while cursor.next is None or self.graph[cursor.next].is_container:
                if cursor.next is None:
                    if await self._unwind(cursor, shared, limits):
                        return StepResult(
                            None, cursor.final, 0, started, self.clock(), cursor, shared
                        )
                else:
                    await self._enter(self.graph[cursor.next], cursor, shared, limits)
            info = self.graph[cursor.next]
            answered = cursor.wait is not None and cursor.wait.get("node") == info.id
            if live is not None and not answered:  # an answered wait started before it
                live.started(info.id, _batch_progress(cursor))
            if asks_human(info.obj):
                if not answered:
                    cursor.wait = await self._ask(info, cursor, shared, key, limits, live)
                if cursor.wait is None or "answer" not in cursor.wait:
                    return StepResult(
                        info.id, None, 0, started, self.clock(), cursor, shared, waiting=True
                    )
                action = await self._answered(info, cursor, shared, key, limits, live)
                attempts = 0  # a person's answer took the place of exec
            else:
                action, attempts = await self._run_leaf(info, cursor, shared, key, limits, live)
            cursor.wait = cursor.pending = None
            cursor.last = action
            cursor.next = info.successors.get(action or "default")
            while cursor.next is None and not await self._unwind(cursor, shared, limits):
                pass
        except StepError as exc:
            return StepResult(
                exc.node, None, exc.attempts, started, self.clock(), cursor, shared, error=exc
            )
        sleep = max(self._sleeps) if self._sleeps else None
        return StepResult(
            info.id,
            action,
            attempts,
            started,
            self.clock(),
            cursor,
            shared,
            sleep=sleep,
            cached=self._served,
        )

    async def _ask(
        self,
        info: NodeInfo,
        cursor: Cursor,
        shared: dict[str, Any],
        key: str,
        limits: Limits,
        live: LiveStep | None,
    ) -> dict[str, Any]:
        """Run an AskHuman node's prep: what the run will wait for."""
        node = copy.copy(info.obj)
        node.set_params(cursor.frames[-1].params)
        is_async = info.kind in ASYNC_KINDS
        prep = node.prep_async if is_async else node.prep
        try:
            request = await self._call(
                prep, shared, is_async=is_async, limits=limits, key=key, live=live
            )
        except TimeoutError:
            raise _timed_out(f"prep of node '{info.id}'", info.id, limits) from None
        except Exception as exc:
            raise StepError.raised(exc, info.id) from exc
        request = _json(request, "request", info.id)
        problem = request_problem(request)
        if problem is not None:
            raise StepError("invalid_request", f"node '{info.id}': {problem}", info.id)
        return {"node": info.id, "request": request}

    async def _answered(
        self,
        info: NodeInfo,
        cursor: Cursor,
        shared: dict[str, Any],
        key: str,
        limits: Limits,
        live: LiveStep | None,
    ) -> str | None:
        """An answered AskHuman node: its post, with the answer as the exec result."""
        assert cursor.wait is not None
        node = copy.copy(info.obj)
        node.set_params(cursor.frames[-1].params)
        is_async = info.kind in ASYNC_KINDS
        post = node.post_async if is_async else node.post
        request, answer = cursor.wait["request"], cursor.wait["answer"]
        try:
            action = await self._call(
                post, shared, request, answer, is_async=is_async, limits=limits, key=key, live=live
            )
        except TimeoutError:
            raise _timed_out(f"post of node '{info.id}'", info.id, limits) from None
        except Exception as exc:
            raise StepError.raised(exc, info.id) from exc
        if action is not None and not isinstance(action, str):
            raise StepError(
                "invalid_action",
                f"node '{info.id}' returned {action!r}; actions are strings",
                info.id,
            )
        return action

    async def _run_leaf(
        self,
        info: NodeInfo,
        cursor: Cursor,
        shared: dict[str, Any],
        key: str,
        limits: Limits,
        live: LiveStep | None,
    ) -> tuple[str | None, int]:
        node = copy.copy(info.obj)
        node.set_params(cursor.frames[-1].params)
        is_async = info.kind in ASYNC_KINDS
        counter = _Counter(node, is_async, live)
        ttl = cache_ttl(node) if self.cache is not None else None
        try:
            if ttl is not None and info.kind not in BATCH_KINDS:
                action = await self._run_cached(
                    node, info.id, is_async, ttl, shared, key, limits, live
                )
            else:
                run = node._run_async if is_async else node._run
                action = await self._call(
                    run, shared, is_async=is_async, limits=limits, key=key, live=live
                )
        except TimeoutError:
            raise _timed_out(f"node '{info.id}'", info.id, limits, counter.calls) from None
        except StepError:
            raise
        except Exception as exc:
            raise StepError.raised(exc, info.id, counter.calls) from exc
        if action is not None and not isinstance(action, str):
            raise StepError(
                "invalid_action",
                f"node '{info.id}' returned {action!r}; actions are strings",
                info.id,
                attempts=counter.calls,
            )
        return action, 1 if isinstance(info.obj, Flow) else counter.calls

    async def _run_cached(
        self,
        node: BaseNode,
        node_id: str,
        is_async: bool,
        ttl: float,
        shared: dict[str, Any],
        key: str,
        limits: Limits,
        live: LiveStep | None,
    ) -> Any:
        """prep, then exec's result from the cache or from exec (kept for the next time),
        then post: pocketflow's ``_run`` with a lookup in the middle."""
        assert self.cache is not None
        call = {"is_async": is_async, "limits": limits, "key": key, "live": live}
        prep = await self._call(node.prep_async if is_async else node.prep, shared, **call)
        digest = entry_key(node, prep)
        hit, result = await self.cache.get(node_id, digest) if digest else (False, None)
        if hit:
            self._served = True
        else:
            result = await self._call(node._exec, prep, **call)
            if digest and json_storable(result):
                await self.cache.put(node_id, digest, result, ttl)
        post = node.post_async if is_async else node.post
        return await self._call(post, shared, prep, result, **call)

    async def _enter(
        self, info: NodeInfo, cursor: Cursor, shared: dict[str, Any], limits: Limits
    ) -> None:
        """Start a flow: its prep runs now and commits with its first inner step."""
        flow = copy.copy(info.obj)
        base = cursor.frames[-1].params if cursor.frames else flow.params
        flow.set_params(base)
        is_async = info.kind in ASYNC_KINDS
        try:
            prep = await self._call(
                flow.prep_async if is_async else flow.prep, shared, is_async=is_async, limits=limits
            )
        except TimeoutError:
            raise _timed_out(f"prep of flow '{info.id}'", info.id, limits) from None
        except Exception as exc:
            raise StepError.raised(exc, info.id) from exc
        base = _json(base, "params", info.id)
        if info.kind in BATCH_KINDS:
            items = _json(prep or [], "prep result", info.id)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise StepError(
                    "invalid_batch",
                    f"prep of batch flow '{info.id}' must return a list of dicts",
                    info.id,
                )
            params = {**base, **items[0]} if items else dict(base)
            frame = Frame(info.id, base, params, items, items, 0)
            cursor.next = info.start if items else None
        else:
            frame = Frame(info.id, base, dict(base), _json(prep, "prep result", info.id))
            cursor.next = info.start
        cursor.frames.append(frame)
        cursor.last = None
        self._live_flows[info.id] = flow

    async def _unwind(self, cursor: Cursor, shared: dict[str, Any], limits: Limits) -> bool:
        """The innermost flow's loop ended: next batch pass, or its post. True: run over."""
        frame = cursor.frames[-1]
        info = self.graph[frame.flow]
        if frame.items is not None and frame.index + 1 < len(frame.items):
            frame.index += 1
            frame.params = {**frame.base, **frame.items[frame.index]}
            cursor.next, cursor.last = info.start, None
            return False
        flow = self._live_flows.pop(frame.flow, None)
        if flow is None:
            flow = copy.copy(info.obj)
            flow.set_params(frame.base)
        is_async = info.kind in ASYNC_KINDS
        last = None if frame.items is not None else cursor.last
        try:
            result = await self._call(
                flow.post_async if is_async else flow.post,
                shared,
                frame.prep,
                last,
                is_async=is_async,
                limits=limits,
            )
        except TimeoutError:
            raise _timed_out(f"post of flow '{info.id}'", info.id, limits) from None
        except Exception as exc:
            raise StepError.raised(exc, info.id) from exc
        if result is not None and not isinstance(result, str):
            raise StepError(
                "invalid_action",
                f"post of flow '{info.id or 'top-level'}' returned {result!r}; actions are strings",
                info.id,
            )
        cursor.frames.pop()
        if not cursor.frames:
            cursor.final, cursor.next, cursor.done = result, None, True
            return True
        cursor.last = result
        cursor.next = info.successors.get(result or "default")
        return False


def _timed_out(what: str, node: str, limits: Limits, attempts: int = 0) -> StepError:
    if limits.deadline_passed(asyncio.get_running_loop().time()):
        return StepError(
            "run_timeout", f"{what} ran past the run's deadline", node, "timed_out", attempts
        )
    return StepError(
        "timed_out",
        f"{what} ran past its {limits.timeout:.3g}s step timeout",
        node,
        status="timed_out",
        attempts=attempts,
    )


def _batch_progress(cursor: Cursor) -> dict[str, Any] | None:
    """Where a batch flow's pass stands: its item index and how many there are."""
    for frame in reversed(cursor.frames):
        if frame.items is not None:
            return {"batch": {"item": frame.index + 1, "items": len(frame.items)}}
    return None
