"""The flow registry: name and version -> factory, input model, output keys, limits."""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pocketflow import Flow
from pydantic import BaseModel, ConfigDict

from core.cron import cron_problem, every_problem, timezone_problem
from core.errors import FlowDefinitionError, NotFound
from flows import own
from flows.compiler import Graph, compile_flow, first_leaf
from flows.project import import_flow_module

Mode = Literal["inline", "background"]
# Where sync nodes run: a step thread (a step timeout can abandon it), or the engine's
# event loop (no thread hop; for nodes that never block: no timeout can cut them short).
SyncNodes = Literal["thread", "loop"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class AnyObject(BaseModel):
    """The input model of a flow registered with ``input=None``: any JSON object."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule declared with its flow: ``register(..., schedules=[Schedule(cron=...)])``.

    Exactly one of ``cron`` (5 fields, in ``timezone``) and ``every`` (seconds). Every
    process that loads the flow declares it under ``name`` (default ``<flow>/<index>``) in
    the default tenant; operators may disable it like any other schedule."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    input: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    enabled: bool = True


@dataclass(slots=True)
class FlowSpec:
    name: str
    version: str
    build: Callable[[], Flow]
    input: type[BaseModel] | None
    output: list[str] | None
    description: str
    mode: Mode
    queue: str
    max_steps: int
    step_timeout: float | None
    run_timeout: float | None
    concurrency: int | None
    graph: Graph = field(repr=False)
    sync_nodes: SyncNodes = "thread"
    schedules: tuple[Schedule, ...] = ()

    @property
    def graph_hash(self) -> str:
        return self.graph.hash

    @property
    def start_node(self) -> str | None:
        """The first leaf a run of this flow executes."""
        return first_leaf(self.graph, self.graph.root.start)

    @property
    def input_model(self) -> type[BaseModel]:
        return self.input or AnyObject

    def input_schema(self) -> dict[str, Any]:
        if self.input is None:
            return {"type": "object", "additionalProperties": True}
        return self.input.model_json_schema()

    def validate_input(self, data: Any) -> dict[str, Any]:
        """The validated input as plain JSON: the run's initial shared store."""
        return self.input_model.model_validate(data).model_dump(mode="json")

    def instantiate(self) -> tuple[Flow, Graph]:
        """A fresh graph for one run; refuses a factory that no longer builds the same shape."""
        flow = self.build()
        graph = compile_flow(flow)
        if graph.hash != self.graph.hash:
            raise FlowDefinitionError(
                f"flow '{self.name}' version {self.version} built a different graph "
                f"({graph.hash} != {self.graph.hash}); factories must be deterministic"
            )
        return flow, graph


def version_key(version: str) -> tuple:
    """Orders versions as people read them: ``2 < 10``, ``1.2 < 1.10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", version))


BUILTIN_PREFIX = "flows.examples"


def factory_place(build: Callable[[], Flow]) -> str:
    """Where a factory is defined, as ``file:line`` (relative to the working directory)."""
    target = inspect.unwrap(build)
    code = getattr(target, "__code__", None)
    if code is None:
        return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)!r}"
    path = code.co_filename
    try:
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    except ValueError:  # another drive
        pass
    return f"{path}:{code.co_firstlineno}"


def is_builtin(spec: FlowSpec) -> bool:
    return getattr(spec.build, "__module__", "").startswith(BUILTIN_PREFIX)


class Registry:
    def __init__(self) -> None:
        self._flows: dict[str, dict[str, FlowSpec]] = {}

    def add(self, spec: FlowSpec) -> FlowSpec:
        """Add a version; the same graph again (a module imported twice) keeps the first,
        a different graph under a taken (name, version), or a built-in's name, is refused."""
        versions = self._flows.get(spec.name, {})
        builtin = next((s for s in versions.values() if is_builtin(s)), None)
        if builtin is not None and not is_builtin(spec):
            raise FlowDefinitionError(
                f"flow name '{spec.name}' at {factory_place(spec.build)} is taken by a built-in "
                f"example ({factory_place(builtin.build)}); give your flow another name"
            )
        known = versions.get(spec.version)
        if known is not None:
            here, there = factory_place(known.build), factory_place(spec.build)
            if known.graph_hash == spec.graph_hash or here == there:
                return known
            raise FlowDefinitionError(
                f"flow '{spec.name}' version {spec.version} is registered twice with different "
                f"graphs: at {here} and at {there}; give one of them another version"
            )
        self._flows.setdefault(spec.name, {})[spec.version] = spec
        return spec

    def get(self, name: str, version: str | None = None) -> FlowSpec:
        versions = self._flows.get(name)
        if not versions:
            raise NotFound(f"flow '{name}' is not registered")
        if version is None:
            return versions[max(versions, key=version_key)]
        try:
            return versions[version]
        except KeyError:
            loaded = ", ".join(s.version for s in self.versions(name))
            raise NotFound(
                f"flow '{name}' has no version '{version}' loaded here (loaded: {loaded})"
            ) from None

    def find(self, name: str, version: str) -> FlowSpec | None:
        return self._flows.get(name, {}).get(version)

    def versions(self, name: str) -> list[FlowSpec]:
        """Every loaded version of ``name``, oldest first."""
        found = self._flows.get(name, {})
        return [found[v] for v in sorted(found, key=version_key)]

    def latest(self) -> list[FlowSpec]:
        return [self.get(name) for name in sorted(self._flows)]

    def all(self) -> list[FlowSpec]:
        return [spec for name in sorted(self._flows) for spec in self.versions(name)]

    def __contains__(self, name: str) -> bool:
        return name in self._flows


REGISTRY = Registry()


def loaded_flows(registry: Registry) -> list[tuple[str, str, str, str]]:
    """(name, version, graph hash, description) of every flow version, as the store keeps them."""
    return [(s.name, s.version, s.graph_hash, s.description) for s in registry.all()]


def register(
    name: str,
    build: Callable[[], Flow],
    *,
    input: type[BaseModel] | None = None,
    version: str = "1",
    mode: Mode = "background",
    output: list[str] | None = None,
    description: str = "",
    queue: str = "default",
    max_steps: int = 10_000,
    step_timeout: float | None = 60,
    run_timeout: float | None = 3600,
    concurrency: int | None = None,
    sync_nodes: SyncNodes = "thread",
    schedules: list[Schedule] | None = None,
    registry: Registry | None = None,
) -> FlowSpec:
    """Register a flow factory; the graph is compiled now, so a bad shape fails here."""
    if not _NAME.match(name):
        raise FlowDefinitionError(f"flow name {name!r} must match {_NAME.pattern}")
    if not _NAME.match(version):
        raise FlowDefinitionError(f"flow version {version!r} must match {_NAME.pattern}")
    if mode not in ("inline", "background"):
        raise FlowDefinitionError(f"flow '{name}': mode must be 'inline' or 'background'")
    if input is not None and not (isinstance(input, type) and issubclass(input, BaseModel)):
        raise FlowDefinitionError(f"flow '{name}': input must be a pydantic model or None")
    if max_steps < 1:
        raise FlowDefinitionError(f"flow '{name}': max_steps must be at least 1")
    if concurrency is not None and concurrency < 1:
        raise FlowDefinitionError(f"flow '{name}': concurrency must be at least 1 or None")
    if sync_nodes not in ("thread", "loop"):
        raise FlowDefinitionError(f"flow '{name}': sync_nodes must be 'thread' or 'loop'")
    try:
        graph = compile_flow(build())
    except FlowDefinitionError as exc:
        raise FlowDefinitionError(f"flow '{name}' version {version}: {exc.detail}") from None
    spec = FlowSpec(
        name=name,
        version=version,
        build=build,
        input=input,
        output=list(output) if output is not None else None,
        description=description or (build.__doc__ or "").strip(),
        mode=mode,
        queue=queue,
        max_steps=max_steps,
        step_timeout=step_timeout,
        run_timeout=run_timeout,
        concurrency=concurrency,
        graph=graph,
        sync_nodes=sync_nodes,
    )
    spec.schedules = tuple(_checked_schedule(spec, i, s) for i, s in enumerate(schedules or []))
    return (registry or REGISTRY).add(spec)


def _checked_schedule(spec: FlowSpec, index: int, schedule: Schedule) -> Schedule:
    where = f"flow '{spec.name}' schedule {schedule.name or index}"
    if not isinstance(schedule, Schedule):
        raise FlowDefinitionError(f"{where}: schedules are flows.registry.Schedule objects")
    if (schedule.cron is None) == (schedule.every is None):
        raise FlowDefinitionError(f"{where}: give exactly one of cron and every")
    problem = (
        (cron_problem(schedule.cron) if schedule.cron is not None else None)
        or (every_problem(schedule.every) if schedule.every is not None else None)
        or timezone_problem(schedule.timezone)
    )
    if problem:
        raise FlowDefinitionError(f"{where}: {problem}")
    try:
        spec.validate_input(schedule.input)
    except ValueError as exc:
        message = f"{where}: its input does not match the flow's schema: {exc}"
        raise FlowDefinitionError(message) from None
    return replace(schedule, name=schedule.name or f"{spec.name}/{index}")


def flow(name: str, **options: Any) -> Callable[[Callable[[], Flow]], Callable[[], Flow]]:
    """Decorator form of :func:`register`."""

    def decorate(build: Callable[[], Flow]) -> Callable[[], Flow]:
        register(name, build, **options)
        return build

    return decorate


BUILTIN_MODULES = ["flows.examples"]


def load_flows(modules: list[str] | None = None, *, examples: bool = True) -> Registry:
    """Import the engineer's modules, and the built-in examples with ``examples``; each
    registers itself.

    An engineer's module is a name resolved from the working directory first, or a .py
    file; its files never shadow pocketrun's packages nor the reverse (flows.project). A
    .json, .yaml or .yml entry is a declarative flow (flows.documents)."""
    own.load()  # pocketrun's nodes, not a nodes.py first on sys.path (flows/own.py)
    for module in BUILTIN_MODULES if examples else []:
        importlib.import_module(module)
    for module in modules or []:
        if module.lower().endswith((".json", ".yaml", ".yml")):
            from flows.documents import load_file

            load_file(module)
        else:
            import_flow_module(module, REGISTRY)
    return REGISTRY
