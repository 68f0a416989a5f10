"""Operator and human control of a run once it started: resume, retry, replay, pause,
migrate to another version.

Each operation checks the run's checkpoint, then changes it with one conditional update
(``RunStore.transition``) fenced by the run's version, so two callers racing on one run
get one success and one conflict. None of them runs a step: they leave the run queued,
and the caller hands it to an executor (``dispatched=True``) or lets the next sweep take
it (``dispatched=False``, e.g. the CLI with no executor of its own).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound
from core.human_input import answer_errors
from core.jsonutil import roundtrip
from db.store import RETRYABLE, TERMINAL, NewRun, RunStore
from flows.migration import migration_problem
from flows.registry import FlowSpec, Registry
from workers.cursor import Cursor
from workers.state_history import state_after
from workers.store import merge_deltas

Row = Mapping[str, Any]
# Runs that hold no lease and run no step: they may move to another version.
MIGRATABLE = ("queued", "waiting", "paused", "sleeping", "failed")


class RunControl:
    def __init__(
        self, store: RunStore, *, max_store_bytes: int, tenant_limit: int | None = None
    ) -> None:
        self.store = store
        self.max_store_bytes = max_store_bytes
        self.tenant_limit = tenant_limit  # a replay past it is held for its tenant's turn

    async def _checkpoint(self, run_id: uuid.UUID) -> Row:
        found = await self.store.checkpoint_of(run_id)
        if found is None:
            raise NotFound(f"run '{run_id}' not found")
        return found

    async def resume(self, run_id: uuid.UUID, payload: Any, *, dispatched: bool) -> Row:
        """Deliver a person's answer to a waiting run: 422 when it fails the request's
        schema (the run keeps waiting), 409 when the run is not waiting."""
        cp = await self._checkpoint(run_id)
        if cp["status"] != "waiting":
            raise Conflict(f"run '{run_id}' is {cp['status']}, not waiting for input")
        cursor = Cursor.from_json(cp["cursor"])
        assert cursor.wait is not None, "a waiting run's cursor says what it waits for"
        errors = answer_errors(cursor.wait["request"].get("schema"), payload)
        if errors:
            raise InvalidInput("the payload does not match the request's schema", errors=errors)
        cursor.wait = {**cursor.wait, "answer": roundtrip(payload)}
        values = {
            "status": "queued",
            "cursor": cursor.to_json(),
            "waiting_for": None,
            "wake_at": None,
            "deliveries": 0,
        }
        row = await self.store.transition(
            run_id, ("waiting",), values, version=cp["version"], dispatched=dispatched
        )
        if row is None:
            raise Conflict(
                f"run '{run_id}' changed meanwhile: it was resumed, cancelled or timed out"
            )
        return row

    async def retry(
        self, run_id: uuid.UUID, patch: Mapping[str, Any] | None, now: datetime, *, dispatched: bool
    ) -> Row:
        """Carry a failed, timed-out or cancelled run on from the checkpoint before the step
        that failed: same id, earlier steps kept; ``patch`` sets shared keys first."""
        cp = await self._checkpoint(run_id)
        if cp["status"] not in RETRYABLE:
            raise Conflict(
                f"run '{run_id}' is {cp['status']}; only failed, timed-out or cancelled runs "
                "can be retried"
            )
        cursor = Cursor.from_json(cp["cursor"])
        if patch:
            cursor.pending = merge_deltas(cursor.pending, {"set": roundtrip(dict(patch))})
        deadline = cp["deadline_at"]
        if deadline is not None:  # a fresh run deadline of the same length
            deadline = now + (deadline - cp["created_at"])
        values = {
            "status": "queued",
            "cursor": cursor.to_json(),
            "finished_at": None,
            "error": None,
            "output": None,
            "cancel_requested": False,
            "pause_requested": False,
            "waiting_for": None,
            "wake_at": None,
            "deliveries": 0,
            "deadline_at": deadline,
            "current_node": (cp["error"] or {}).get("node"),
            "retries": cp["retries"] + 1,
        }
        row = await self.store.transition(
            run_id, RETRYABLE, values, version=cp["version"], dispatched=dispatched
        )
        if row is None:
            raise Conflict(f"run '{run_id}' changed meanwhile; read it and try again")
        return row

    async def replay(
        self,
        parent: Row,
        from_seq: int,
        patch: Mapping[str, Any] | None,
        *,
        principal: str,
        run_timeout: float | None,
    ) -> Row:
        """A new run from the state before step ``from_seq`` of a finished run (``patch``
        applied), starting at that step's node; its ``parent`` names where it came from."""
        if parent["status"] not in TERMINAL:
            raise Conflict(f"run '{parent['id']}' is {parent['status']}; replay a finished run")
        if not 1 <= from_seq <= parent["seq"]:
            raise InvalidInput(
                f"run '{parent['id']}' has steps 1 to {parent['seq']}",
                errors=[
                    {
                        "loc": ["body", "from_seq"],
                        "path": "body.from_seq",
                        "msg": f"must be a step of the run: 1 to {parent['seq']}",
                        "type": "step_range",
                    }
                ],
            )
        cp = await self._checkpoint(parent["id"])
        state = await state_after(self.store, parent, from_seq - 1, max_bytes=self.max_store_bytes)
        state.update(roundtrip(dict(patch or {})))
        _, cursor = await self.store.step_cursor(parent["id"], from_seq)
        start = await self.store.steps(parent["id"], after=from_seq - 1, limit=1)
        row, _ = await self.store.create(
            NewRun(
                tenant=parent["tenant"],
                principal=principal,
                flow=parent["flow"],
                flow_version=parent["flow_version"],
                graph_hash=cp["graph_hash"],
                mode="background",
                queue=parent["queue"],
                priority=parent["priority"],
                input=state,
                metadata=dict(parent["metadata"] or {}),
                run_timeout=run_timeout,
                current_node=start[0]["node"] if start else None,
                trigger={"type": "replay", "id": str(parent["id"])},
                parent=(parent["id"], from_seq),
                cursor=cursor,
                tenant_limit=self.tenant_limit,
            )
        )
        return row

    async def pause(self, run_id: uuid.UUID) -> Row:
        """A queued run pauses now, a running one at its next checkpoint."""
        row = await self.store.pause(run_id)
        if row is None:
            raise NotFound(f"run '{run_id}' not found")
        if row["status"] not in ("paused", "running"):
            raise Conflict(f"run '{run_id}' is {row['status']}; only queued or running runs pause")
        return row

    async def unpause(self, run_id: uuid.UUID, *, dispatched: bool) -> Row:
        row = await self.store.unpause(run_id, dispatched=dispatched)
        if row is None:
            raise NotFound(f"run '{run_id}' not found")
        if row["status"] not in ("queued", "running"):
            raise Conflict(f"run '{run_id}' is {row['status']}, not paused")
        return row

    async def migrate(self, run_id: uuid.UUID, registry: Registry, target: FlowSpec) -> Row:
        """Move a run that holds nothing to another loaded version of its flow when its
        node, the flows around it and the edges out of them exist there (409 otherwise)."""
        cp = await self._checkpoint(run_id)
        if cp["status"] not in MIGRATABLE:
            raise Conflict(
                f"run '{run_id}' is {cp['status']}; only queued, waiting, paused, sleeping or "
                "failed runs move to another version (pause a running one first)"
            )
        if (cp["flow_version"], cp["graph_hash"]) == (target.version, target.graph_hash):
            row = await self.store.get(run_id)
            assert row is not None
            return row
        source = registry.find(cp["flow"], cp["flow_version"])
        if source is None or source.graph_hash != cp["graph_hash"]:
            raise Conflict(
                f"run '{run_id}' is on flow '{cp['flow']}' version {cp['flow_version']} "
                f"(graph {cp['graph_hash']}), which is not loaded here: its graph can't be "
                "compared with the target's"
            )
        cursor = Cursor.from_json(cp["cursor"])
        frames = [frame.flow for frame in cursor.frames]
        problem = migration_problem(source.graph, target.graph, frames, cursor.next)
        if problem is not None:
            raise Conflict(f"run '{run_id}' can't move to version {target.version}: {problem}")
        values = {"flow_version": target.version, "graph_hash": target.graph_hash}
        row = await self.store.transition(run_id, MIGRATABLE, values, version=cp["version"])
        if row is None:
            raise Conflict(f"run '{run_id}' changed meanwhile; read it and try again")
        return row
