"""pocketrun's own packages, whatever the working directory holds.

A PocketFlow project has a ``nodes.py``; run from its directory (``python main.py``,
``python -c``), that file comes first on ``sys.path`` and would stand in for pocketrun's
``nodes`` package. :func:`load` puts pocketrun's packages in ``sys.modules`` from where
pocketrun is installed, before ``flows`` imports any of them; :func:`release` then hands
each shadowed name back to the program, keeping pocketrun's submodules loaded (its code
holds them already). Standard library only: it runs before anything else of ours.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.machinery import PathFinder
from pathlib import Path
from types import ModuleType

PACKAGES = ("core", "nodes", "flows", "workers", "db", "api")
# Where they are installed: the directory that holds this package.
OWN_ROOT = Path(__file__).resolve().parent.parent


def is_own(module: ModuleType | None, name: str) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().parent == OWN_ROOT / name


def load() -> None:
    """Have each of pocketrun's packages in ``sys.modules``, loaded from ``OWN_ROOT``."""
    for name in PACKAGES:
        if is_own(sys.modules.get(name), name):
            continue
        spec = PathFinder.find_spec(name, [str(OWN_ROOT)])
        if spec is None or spec.loader is None:
            raise ImportError(f"pocketrun's package {name!r} is missing from {OWN_ROOT}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def release() -> None:
    """Drop the top-level entry of each package that the program's directory (first on
    ``sys.path``) also holds, so the program's ``import nodes`` finds its ``nodes.py``."""
    first = (sys.path[0] if sys.path else "") or os.getcwd()
    for name in PACKAGES:
        if name == "flows":
            continue  # a program importing flows means pocketrun's: this one
        spec = PathFinder.find_spec(name, [first])
        if spec is not None and spec.origin and not _under(Path(spec.origin), OWN_ROOT / name):
            sys.modules.pop(name, None)


def _under(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory)
