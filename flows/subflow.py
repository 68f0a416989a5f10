"""``subflow``: another registered flow's graph, run inline as a nested Flow.

The nested flow works on the caller's shared store (PocketFlow's nested-flow semantics);
its input schema is not applied. Its version is fixed when the caller is compiled
(``version`` omitted: the highest loaded then), so the caller's graph never drifts.
"""

from __future__ import annotations

from pocketflow import Flow
from pydantic import BaseModel, ConfigDict, Field

from core.errors import NotFound
from flows.registry import REGISTRY
from nodes.catalog import CATALOG, CatalogEntry


class SubflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str = Field(min_length=1, max_length=100)
    version: str | None = Field(default=None, description="null: the highest loaded")


def _resolve(params: SubflowParams) -> SubflowParams:
    try:
        spec = REGISTRY.get(params.flow, params.version)
    except NotFound as exc:
        raise ValueError(exc.detail) from None
    return params.model_copy(update={"version": spec.version})


def build_subflow(params: SubflowParams) -> Flow:
    return REGISTRY.get(params.flow, params.version).build()


SUBFLOW = CATALOG.add(
    CatalogEntry(
        name="subflow",
        params=SubflowParams,
        actions=("default",),
        description="Run another registered flow inline, on this run's shared store; its "
        "last action routes here.",
        build=build_subflow,
        actions_of=lambda _: None,
        resolve=_resolve,
    )
)
