"""The supervisor of ``pocketrun serve --workers N``: uvicorn's, with a dead worker seen at once.

uvicorn's ``Multiprocess`` binds the port once and starts N workers that accept on it;
every half second it checks each worker and replaces one that has died or stopped
answering; on SIGTERM it signals each worker and waits for all of them (each drains its own
runs, ``api.draining``). Its check pings a worker over a pipe whose other end the
supervisor also keeps open, so a worker killed while its ping is unanswered shows no EOF,
and is seen dead only when the ping times out (``timeout_worker_healthcheck``, 5 s), while
the checks of the others wait behind it. The supervisor has no use for the worker's end
once the worker holds it: closing it there makes such a death an EOF at once.
"""

from __future__ import annotations

from uvicorn.supervisors.multiprocess import Multiprocess


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
