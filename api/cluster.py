"""The supervisor of ``pocketrun serve --workers N``: uvicorn's, with a dead worker seen at once.

uvicorn's ``Multiprocess`` binds the port once and starts N workers that accept on it;
every half second it checks each worker and replaces one that has died or stopped
answering; on SIGTERM it signals each worker and waits for all of them (each drains its own
runs, ``api.draining``). Its check pings a worker over a pipe whose other end the
supervisor also keeps open, so a worker killed while its ping is unanswered shows no EOF,
and is seen dead only when the ping times out (``timeout_worker_healthcheck``, 5 s), while
the checks of the others wait behind it. The supervisor has no use for the worker's end
once the worker holds it: closing it there makes such a death an EOF at once.

Nor does uvicorn stop a worker when the supervisor itself dies (SIGKILL, the OOM killer):
the workers would go on serving the port with nobody to replace them, and a new supervisor
could not bind it. ``end_with_supervisor`` has the kernel send such a worker SIGTERM.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

from uvicorn.supervisors.multiprocess import Multiprocess

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessSupervisor(Multiprocess):
    def init_processes(self) -> None:
        super().init_processes()
        self._close_worker_ends()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._close_worker_ends()

    def restart_all(self) -> None:
        super().restart_all()
        self._close_worker_ends()

    def handle_ttin(self) -> None:
        super().handle_ttin()
        self._close_worker_ends()

    def _close_worker_ends(self) -> None:
        for worker in self.processes:
            if worker.pid is not None:  # started: the worker has its own copy
                worker.child_conn.close()


def end_with_supervisor() -> None:
    """In a worker the supervisor started: SIGTERM (a drain) when the supervisor dies.

    Linux only; elsewhere, and in a process nobody supervises, nothing happens."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != supervisor.pid:  # it died before the kernel was asked
        os.kill(os.getpid(), signal.SIGTERM)
