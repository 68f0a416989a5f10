"""Named fault points, so a test can make one exact operation fail in a real process.

``POCKETRUN_FAULTS=slot_release,...`` arms points by name; ``fault_point(name)`` raises
``InjectedFault`` at an armed point and does nothing anywhere else.
"""

from __future__ import annotations

import os

ARMED = frozenset(p for p in os.environ.get("POCKETRUN_FAULTS", "").split(",") if p)


class InjectedFault(RuntimeError):
    """Raised at a fault point armed by POCKETRUN_FAULTS."""


def fault_point(name: str) -> None:
    if name in ARMED:
        raise InjectedFault(f"fault point {name!r} is armed (POCKETRUN_FAULTS)")
