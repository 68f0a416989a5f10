"""A run's shared store as it stood after any committed step, rebuilt from its history.

The same replay the engine does when it takes a run over (``RunEngine._load_store``): the
run's last snapshot when it was taken at or before the step asked for, else the run's
input; then the deltas of the steps after that, up to the one asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from db.store import RunStore
from workers.store import SharedStore


async def state_after(
    store: RunStore, run: Mapping[str, Any], seq: int, *, max_bytes: int
) -> dict[str, Any]:
    """The shared store after step ``seq`` (0: before the first) of ``run``, a run row
    whose ``seq`` is at least ``seq``."""
    snapshot = await store.snapshot(run["id"])
    state, state_seq = snapshot if snapshot is not None else (None, 0)
    if state is not None and state_seq <= seq:
        shared, after = SharedStore(state, max_bytes=max_bytes), state_seq
    else:
        # A snapshot newer than ``seq`` is of no use: only the latest one is kept.
        shared, after = SharedStore(run["input"], max_bytes=max_bytes), 0
    if seq > after:
        for delta in await store.deltas(run["id"], after, up_to=seq):
            shared.apply_json(delta)
    return shared.to_dict()
