"""The Celery side: the app, the "advance run R" task and each worker process's runtime.

``pocketrun worker`` starts a prefork Celery worker. Each child process builds, after the
fork (``worker_process_init``), its own event loop, database engine, Redis clients and
``RunEngine`` whose step ``worker`` field is the worker's NAME; nothing is inherited. A task
advances its run for one time slice (``TIME_SLICE``) and requeues it when it paused.

Each child also runs its ``Supervisor`` on a thread of its own (its own loop and store),
which:
* records the process in the worker registry with what it is running (TTL WORKER_TTL);
* renews the leases and concurrency slots of the runs this process is advancing, so only
  a dead process lets them expire;
* when it holds the ``sweeper`` lock (one live process at a time), sends a message for
  every unfinished run that no live lease holds (``RunStore.take_orphans``), and for all
  unleased ones when the broker restarted (its run_id changed) and lost its queues.

Celery's soft time limit (TASK_SOFT_TIME_LIMIT) is re-raised as ``StepTimeLimit``, a
``BaseException``: PocketFlow's retry loop (``except Exception``) cannot swallow it, and the
run ends ``timed_out`` with the step that was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import threading
import uuid
from typing import Any

import structlog
from celery import Celery, signals

from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.tracing import configure_tracing, flush
from db.store import CLAIMABLE, RunStore, StepRecord, open_store
from db.types import utcnow
from flows.registry import load_flows, loaded_flows
from workers import webhooks
from workers.dispatch import PRIORITY_SEP, PRIORITY_STEPS, TASK_NAME, Dispatcher, redis_client
from workers.distributed import Advancer, release_held_runs, to_broker
from workers.engine import RunEngine, default_worker_name
from workers.node_cache import node_cache
from workers.redis_events import RedisEvents
from workers.redis_store import RedisStore
from workers.scheduler import Scheduler
from workers.supervisor import Registration, Supervisor
from workers.threads import StepThreads
from workers.tracing import continued
from workers.webhooks import WebhookSender

# Celery's logging and shutdown notices as JSON lines (it connects signal receivers).
importlib.import_module("workers.celery_logging")

log = structlog.get_logger("pocketrun.celery")

QUEUES_ENV = "POCKETRUN_WORKER_QUEUES"


class StepTimeLimit(BaseException):
    """Celery's soft time limit, out of reach of ``except Exception`` handlers."""


def _soft_limit(signum: int, frame: Any) -> None:
    raise StepTimeLimit()


def _free_prefetch_slot_on_failed_ack() -> None:
    """Keep consuming after the broker restarts while a task is in flight.

    kombu's Redis QoS removes a message from its ``unacked`` index in Redis *before* it
    forgets the delivery locally; when Redis is down at that moment the ack raises, the
    delivery stays counted against the prefetch window forever, and with prefetch 1 the
    worker never asks for another message. Forget it locally whatever Redis says: a message
    left in the (restarted or recovered) ``unacked`` index is at worst redelivered after
    the visibility timeout, and a duplicate delivery does nothing here."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport.virtual.base import QoS as VirtualQoS

    if getattr(kombu_redis.QoS, "_pocketrun_patched", False):
        return

    def guarded(method):
        def call(self, delivery_tag, *args, **kwargs):
            try:
                return method(self, delivery_tag, *args, **kwargs)
            except Exception:
                VirtualQoS.ack(self, delivery_tag)
                raise

        return call

    kombu_redis.QoS.ack = guarded(kombu_redis.QoS.ack)
    kombu_redis.QoS.reject = guarded(kombu_redis.QoS.reject)
    kombu_redis.QoS._pocketrun_patched = True


_free_prefetch_slot_on_failed_ack()


def broker_url(settings: Settings) -> str:
    url = settings.broker_url or settings.redis_url
    if not url:
        raise RuntimeError("EXECUTOR=celery needs POCKETRUN_REDIS_URL (or POCKETRUN_BROKER_URL)")
    return url


def make_celery(settings: Settings) -> Celery:
    app = Celery("pocketrun", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "priority_steps": PRIORITY_STEPS,
            "sep": PRIORITY_SEP,
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.visibility_timeout,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=4,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_default_queue="default",
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_redirect_stdouts=False,
        worker_hijack_root_logger=False,
    )
    soft = settings.task_soft_time_limit

    @app.task(
        name=TASK_NAME,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        soft_time_limit=soft,
        time_limit=soft + settings.task_time_limit_grace,
    )
    def advance(task: Any, run_id: str) -> str:
        return process().task(run_id, task.request)

    return app


class WorkerProcess:
    """Everything one worker process owns; built after the fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.worker_name or default_worker_name()
        self.queues = [q for q in os.environ.get(QUEUES_ENV, "default").split(",") if q]
        self.pid = os.getpid()
        self.worker_id = f"{self.name}/{self.pid}"
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.runs = open_store(settings.database_url, pool_size=2)
        self.registry = load_flows(settings.flow_modules, examples=settings.examples)
        self.redis = redis_client(settings.redis_url) if settings.redis_url else None
        broker = broker_url(settings)
        self.broker = self.redis if broker == settings.redis_url else redis_client(broker)
        self.live = (
            RedisStore(self.redis, settings)
            if self.redis is not None and settings.redis_store
            else None
        )
        self.events = RedisEvents(self.redis, settings) if self.redis is not None else None
        self.engine = RunEngine(
            self.runs,
            self.registry,
            settings,
            worker_name=self.name,
            threads=StepThreads(4),
            on_commit=self.live.notify if self.live is not None else None,
            store_sync=self.live,
            events=self.events,
            cache=node_cache(settings),
        )
        self.advancer = Advancer(self.engine, Dispatcher(self.broker), self.registry, settings)
        self.heartbeat = Heartbeat(self)
        self.heartbeat.start()

    def task(self, run_id: str, request: Any = None) -> str:
        signal.signal(signal.SIGUSR1, _soft_limit)
        rid = uuid.UUID(run_id)
        started = utcnow()
        structlog.contextvars.clear_contextvars()
        # here, not only in the engine's task: Celery's own lines about this task carry it too
        structlog.contextvars.bind_contextvars(run_id=run_id)
        with continued(request):  # the sender's span is the parent of this advance's
            main = self.loop.create_task(self.advancer.advance(rid, self.settings.time_slice))
        try:
            outcome = self.loop.run_until_complete(main)
            if self.live is not None:
                self.loop.run_until_complete(self.live.flush())
            if self.events is not None:
                self.loop.run_until_complete(self.events.flush())
            self.loop.run_until_complete(webhooks.flush())  # --- webhooks: the outbox rows
            return outcome
        except StepTimeLimit:
            log.warning("task time limit: ending the run timed_out", run_id=run_id)
            # Fresh connections and step threads: the signal may have interrupted anything.
            # The run is ended before the interrupted task is cancelled, since cancelling it
            # hands the run back (the engine releases its lease on cancellation).
            old_store, old_threads = self._recycle()
            self.loop.run_until_complete(self._time_limited(rid, started))
            if not main.done():
                main.cancel()
                with contextlib.suppress(BaseException):
                    self.loop.run_until_complete(main)
            old_threads.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(asyncio.wait_for(old_store.close(), 5))
            return "timed_out"

    def _recycle(self) -> tuple[RunStore, StepThreads]:
        old_store, old_threads = self.runs, self.engine.threads
        self.runs = self.engine.store = open_store(self.settings.database_url, pool_size=2)
        self.engine.threads = StepThreads(4)
        return old_store, old_threads

    async def _time_limited(self, run_id: uuid.UUID, started) -> None:
        head = await self.runs.head(run_id)
        if head is None or head.status not in CLAIMABLE or head.leased_by != self.engine.owner:
            return
        soft = self.settings.task_soft_time_limit
        node = head.current_node
        error = {
            "type": "timed_out",
            "message": f"node '{node}' was still running when the task reached its {soft:g}s "
            "time limit (POCKETRUN_TASK_SOFT_TIME_LIMIT)",
            "node": node,
        }
        now = utcnow()
        step = None
        if node is not None:
            step = StepRecord(
                head.seq + 1, node, "timed_out", 1, None, started, now, self.name, error, None
            )
        values = {
            "status": "timed_out",
            "finished_at": now,
            "error": error,
            "current_node": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        try:
            await self.runs.checkpoint(
                run_id, self.engine.owner, head.seq, self.settings.lease_ttl, step, values
            )
        except Exception:
            log.exception("could not end the run after the time limit", run_id=str(run_id))
            return
        if self.live is not None:
            await self.live.ended(run_id)
            self.live.notify(run_id)
            await asyncio.sleep(0)

    def close(self) -> None:
        self.heartbeat.stop()


class Heartbeat(threading.Thread):
    """The process's supervisor, on a thread of its own with its own loop and store."""

    def __init__(self, proc: WorkerProcess) -> None:
        super().__init__(name="pocketrun-supervisor", daemon=True)
        self.proc = proc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._broker_run_id: str | None = None

    def stop(self, timeout: float = 5) -> None:
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # its loop already ended
                loop.call_soon_threadsafe(event.set)
        self.join(timeout)

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        proc, settings = self.proc, self.proc.settings
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        store = open_store(settings.database_url, pool_size=1)
        broker = redis_client(broker_url(settings))
        dispatcher = Dispatcher(broker)

        async def sweep(first: bool) -> None:
            woken, _ = await store.due_timers(limit=5000)  # (ended waits: long polls see them)
            if woken:
                await dispatcher.publish_many((d.id, d.queue, d.priority) for d in woken)
            everything = await self._broker_restarted(broker) or first
            found = await store.take_orphans(
                settings.redispatch_after, everything=everything, limit=5000
            )
            if found:
                await dispatcher.publish_many((d.id, d.queue, d.priority) for d in found)
                log.info("sweeper resent runs", count=len(found), everything=everything)
            await release_held_runs(store, dispatcher, settings)  # ended in a dead process

        supervisor = Supervisor(
            store,
            settings,
            owner=proc.engine.owner,
            active=lambda: list(proc.engine.active),
            registration=Registration(proc.worker_id, proc.name, proc.queues),
            sweep=sweep,
            flows=loaded_flows(proc.registry),
        )
        proc.advancer.supervisor = supervisor
        supervisor.start()
        # --- webhooks and schedules: this worker sends due deliveries and fires due ticks
        # too (their own store: the pool of one stays the supervisor's)
        background_store = open_store(settings.database_url, pool_size=2)
        background = [asyncio.create_task(WebhookSender(background_store, settings).run())]
        if settings.scheduler:
            scheduler = Scheduler(background_store, proc.registry, settings, to_broker(dispatcher))
            background.append(asyncio.create_task(scheduler.run()))
        try:
            await self._stop_requested.wait()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await background_store.close()
            await supervisor.stop()
            with contextlib.suppress(Exception):
                await broker.aclose()
            await store.close()

    async def _broker_restarted(self, broker) -> bool:
        try:
            info = await broker.info("server")
        except Exception:
            return False
        run_id = info.get("run_id")
        previous, self._broker_run_id = self._broker_run_id, run_id
        if previous is not None and run_id != previous:
            log.warning("the broker restarted; resending every unleased run")
            return True
        return False


_PROCESS: WorkerProcess | None = None


def process() -> WorkerProcess:
    """This process's runtime (built on first use when the pool does not fork)."""
    global _PROCESS
    if _PROCESS is None or _PROCESS.pid != os.getpid():
        settings = get_settings()
        configure_logging(settings.log_level, json=settings.log_json)
        configure_tracing("worker")  # after the fork: the span batcher runs a thread
        _PROCESS = WorkerProcess(settings)
    return _PROCESS


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    process()


@signals.worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    if _PROCESS is not None and _PROCESS.pid == os.getpid():
        _PROCESS.close()
        flush()  # a pool process may end without running atexit


app = make_celery(get_settings())


def run_worker(concurrency: int, queues: list[str], name: str, loglevel: str = "INFO") -> None:
    """Start the Celery worker (prefork pool) in this process; returns when it stops."""
    nodename = name if "@" in name else f"{name}@%h"
    settings = get_settings()
    # Now, not at Celery's setup_logging: its start-up warnings come before that.
    configure_logging(settings.log_level, json=settings.log_json)
    # The banner is plain text on stdout: left out where every line must be JSON.
    quiet = ["--quiet"] if settings.log_json else []
    app.worker_main(
        [
            *quiet,
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            f"--queues={','.join(queues)}",
            f"--hostname={nodename}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--optimization=fair",
        ]
    )
