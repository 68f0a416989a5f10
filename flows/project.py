"""An engineer's flow modules, imported beside pocketrun's own packages, neither shadowing
the other.

A PocketFlow project is laid out as ``main.py``, ``nodes.py``, ``flow.py``, ``utils/``;
its ``import nodes`` means its own ``nodes.py``, while pocketrun's code means the
``nodes`` package. Both hold: pocketrun's packages are loaded first, from where pocketrun
is installed; while the engineer's module is imported, the project directory comes first
on ``sys.path`` and pocketrun's entries of each clashing name are out of ``sys.modules``,
so the project's imports find its files; afterwards the project's clashing modules live
on under private names (``pocketrun_project.nodes``) and pocketrun's entries are back.
Code that imports a clashing name lazily, after loading (``from nodes import X`` inside
a function), gets pocketrun's: the project's module-level imports are the ones that see
its own files.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import FlowDefinitionError
from flows import own
from flows.own import OWN_ROOT, PACKAGES

if TYPE_CHECKING:
    from flows.registry import Registry

# pocketrun's top-level packages and modules: the names a project's files may clash with.
OWN_NAMES = (*PACKAGES, "cli", "cli_view")
PRIVATE = "pocketrun_project"


class FlowLoadError(FlowDefinitionError):
    """A flow module that could not be loaded; ``detail`` is one line: what, where, what to do.

    The exception behind it, if any, is its ``__cause__``."""

    type, title = "flow-load", "Flow module failed to load"


@dataclass(slots=True)
class Project:
    directory: Path
    prefix: str  # the private package its clashing modules live under
    clashes: frozenset[str]
    modules: dict[str, types.ModuleType] = field(default_factory=dict)  # by their own name


_PROJECTS: dict[Path, Project] = {}


def import_flow_module(text: str, registry: Registry) -> types.ModuleType:
    """Import one ``POCKETRUN_FLOWS`` entry: a module name (resolved from the working
    directory first) or a ``.py`` file path; a new module must register a flow."""
    own.load()
    directory, name = resolve(text)
    project = _project(directory)
    if name in sys.modules and name.partition(".")[0] not in project.clashes:
        return sys.modules[name]
    if name in project.modules:
        return project.modules[name]
    before = len(registry.all())
    with isolated(project):
        try:
            module = importlib.import_module(name)
        except FlowDefinitionError as exc:
            raise FlowLoadError(f"{_where(exc, directory, name)}: {exc.detail}") from exc
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise FlowLoadError(_not_found(text, name, directory)) from None
            raise FlowLoadError(_code_error(exc, directory, name)) from exc
        except Exception as exc:
            raise FlowLoadError(_code_error(exc, directory, name)) from exc
    if len(registry.all()) == before:
        raise FlowLoadError(
            f"POCKETRUN_FLOWS: {name!r} ({_shown(Path(module.__file__ or name))}) registered "
            "no flow; call flows.register(NAME, build) or decorate build with @flow(NAME) in it"
        )
    return module


def resolve(text: str) -> tuple[Path, str]:
    """``(directory, module name)`` of a module name (``flow``, ``pkg.flows``) or a path
    (``flow.py``, ``./path/to/flow.py``, ``./path/to/package``)."""
    cwd = Path.cwd()
    if not (text.endswith(".py") or "/" in text or os.sep in text):
        if not all(part.isidentifier() for part in text.split(".")):
            raise FlowLoadError(
                f"POCKETRUN_FLOWS: {text!r} is neither a module name nor a .py file; "
                "set it to names like 'flow' or 'pkg.flows', or paths like './flow.py'"
            )
        return cwd, text
    path = (cwd / text).resolve()
    if path.is_dir() and (path / "__init__.py").is_file():
        directory, name = path.parent, path.name
    elif path.is_file() and path.suffix == ".py":
        directory, name = path.parent, path.stem
    else:
        raise FlowLoadError(
            f"POCKETRUN_FLOWS: no file {text!r} in {cwd} (the working directory); "
            "give a .py file or a package directory, relative to it or absolute"
        )
    if not name.isidentifier():
        raise FlowLoadError(
            f"POCKETRUN_FLOWS: {text!r} can't be imported: {name!r} is not a Python "
            "identifier; rename it (letters, digits and _)"
        )
    return directory, name


@contextmanager
def isolated(project: Project) -> Iterator[None]:
    """The project's view of imports for as long as the block runs (see the module doc)."""
    clashes = project.clashes
    own = {k: m for k, m in sys.modules.items() if _top(k) in clashes}
    for key in own:
        del sys.modules[key]
    sys.modules.update(project.modules)
    entry = str(project.directory)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(entry)
        for key in [k for k in sys.modules if _top(k) in clashes]:
            module = sys.modules.pop(key)
            if project.modules.get(key) is not module:
                _make_private(module, key, f"{project.prefix}.{key}")
                project.modules[key] = module
        sys.modules.update(own)
        # After pocketrun's paths: the project's lazy imports of other modules resolve.
        if not any(_same_dir(p, project.directory) for p in sys.path):
            sys.path.append(entry)


def _project(directory: Path) -> Project:
    project = _PROJECTS.get(directory)
    if project is None:
        if directory == OWN_ROOT:  # pocketrun's own checkout: its packages are the ones
            clashes: frozenset[str] = frozenset()
        else:
            clashes = frozenset(n for n in OWN_NAMES if _provides(directory, n))
        prefix = PRIVATE if not _PROJECTS else f"{PRIVATE}{len(_PROJECTS) + 1}"
        project = _PROJECTS[directory] = Project(directory, prefix, clashes)
        parent = sys.modules.setdefault(prefix, types.ModuleType(prefix))
        parent.__path__ = []  # a package, so that dotted private names import
    return project


def _make_private(module: types.ModuleType, name: str, private: str) -> None:
    """File ``module`` under ``private``, its ``__name__`` to match. Its classes keep their
    ``__module__`` (``nodes``): the graph hash, computed at registration, includes it."""
    module.__name__ = private
    sys.modules[private] = module
    parent, _, child = private.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


def _provides(directory: Path, name: str) -> bool:
    return (directory / f"{name}.py").is_file() or (directory / name / "__init__.py").is_file()


def _same_dir(entry: str, directory: Path) -> bool:
    try:
        return Path(entry or ".").resolve() == directory
    except OSError:
        return False


def _top(key: str) -> str:
    return key.partition(".")[0]


def _not_found(text: str, name: str, directory: Path) -> str:
    return (
        f"POCKETRUN_FLOWS: module {name!r} not found in {directory}"
        f"{' (the working directory)' if directory == Path.cwd() else ''}; "
        f"set POCKETRUN_FLOWS to a module name or a .py file (it was {text!r})"
    )


def _code_error(exc: BaseException, directory: Path, name: str) -> str:
    message = str(exc.msg if isinstance(exc, SyntaxError) else exc).strip()
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{_where(exc, directory, name)}: {what}"


def _where(exc: BaseException, directory: Path, name: str) -> str:
    """``file.py line N`` of the innermost frame in the project's own files."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(Path(exc.filename))} line {exc.lineno}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(directory) and not _is_library(path):
            return f"{_shown(path)} line {frame.lineno}"
    return f"module {name!r}"


def _is_library(path: Path) -> bool:
    """Installed code or pocketrun's own, which a project directory may also hold."""
    own = any(path.is_relative_to(OWN_ROOT / n) for n in PACKAGES)
    return own or path.parent == OWN_ROOT or "site-packages" in path.parts


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
