"""The node catalog: node types that declare their params (a pydantic model) and actions.

A catalog node is a plain PocketFlow node built from validated params, ``Cls(params)``;
declarative flows (``flows.declarative``) are made of them, and ``GET /v1/nodes`` lists
them. Register a type with the class decorator::

    @catalog_node("greet", params=GreetParams, actions=["default"], description="...")
    class Greet(CatalogNode[GreetParams]):
        def post(self, shared, prep_res, exec_res):
            shared["greeting"] = f"Hello, {self.config.name}!"
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pocketflow import BaseNode, Node
from pydantic import BaseModel

P = TypeVar("P", bound=BaseModel)
C = TypeVar("C", bound=type)


class CatalogNode(Node, Generic[P]):
    """A node configured by its params model. They live in ``config``: PocketFlow's own
    ``params`` is the dict a parent flow hands down, replaced on every visit."""

    def __init__(self, config: P) -> None:
        super().__init__()
        self.config = config


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    params: type[BaseModel]
    actions: tuple[str, ...]  # what it may return; listed by GET /v1/nodes
    description: str
    build: Callable[[Any], BaseNode]  # validated params -> a fresh node
    # The actions one configured node may return (an edge with another action is refused);
    # None: any (e.g. the action a person's answer names).
    actions_of: Callable[[Any], Iterable[str] | None] | None = None
    # Run once when a flow is compiled: fills what must stay fixed for the flow's life
    # (e.g. the version of a sub-flow), or raises ValueError saying what is wrong.
    resolve: Callable[[Any], Any] | None = None

    def allowed_actions(self, params: BaseModel) -> set[str] | None:
        if self.actions_of is None:
            return set(self.actions)
        found = self.actions_of(params)
        return None if found is None else set(found)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": self.params.model_json_schema(),
            "actions": list(self.actions),
        }


class Catalog:
    def __init__(self) -> None:
        self._entries: dict[str, CatalogEntry] = {}

    def add(self, entry: CatalogEntry) -> CatalogEntry:
        known = self._entries.get(entry.name)
        if known is not None and known.build is not entry.build:
            raise ValueError(f"catalog node type '{entry.name}' is already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name)

    def all(self) -> list[CatalogEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        return sorted(self._entries)


CATALOG = Catalog()


def catalog_node(
    name: str,
    *,
    params: type[BaseModel],
    actions: Iterable[str] = ("default",),
    description: str = "",
    actions_of: Callable[[Any], Iterable[str] | None] | None = None,
    resolve: Callable[[Any], Any] | None = None,
    catalog: Catalog | None = None,
) -> Callable[[C], C]:
    """Class decorator: register a node class, built as ``cls(validated_params)``."""

    def decorate(cls: C) -> C:
        (catalog or CATALOG).add(
            CatalogEntry(
                name=name,
                params=params,
                actions=tuple(actions),
                description=description or (cls.__doc__ or "").strip().split("\n\n")[0],
                build=cls,
                actions_of=actions_of,
                resolve=resolve,
            )
        )
        return cls

    return decorate
