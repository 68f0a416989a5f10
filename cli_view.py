"""The CLI's live view of one run, drawn from its event stream (``api.events``).

On a terminal it is a rich ``Live`` region (the running node and its elapsed time, a
batch progress bar, the output the node streams) with finished steps printed above it;
elsewhere (a pipe, a file, a test) it is plain lines in the order things happen. The
view only draws: ``follow`` feeds it and stops on Ctrl-C, leaving the run alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.config
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from core.events import (
    OUTPUT_EVENT,
    RESET_EVENT,
    RUN_FINISHED_EVENT,
    RUN_STATUS_EVENT,
    STEP_FINISHED_EVENT,
    STEP_STARTED_EVENT,
)
from core.logging import configure_logging, stdlib_config

Message = tuple[int | None, str, Any]
CUT_EVENT = "stream.cut"  # api.events: the reader fell behind; resume after the last id
WAITING_EVENT = "run.waiting"
RECORD_POLL = 0.25  # seconds between reads of the record when no live feed exists
LIVE_TEXT = 2000  # characters of the running attempt's output kept in the live region

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "white",
    "waiting": "magenta",
    "paused": "blue",
    "sleeping": "blue",
}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def quiet_logs(level: str, *, json_logs: bool) -> None:
    """Logs go to stderr, WARNING and up, so no line lands inside the view on stdout."""
    chosen = max(logging.getLevelName(level.upper()), logging.WARNING)
    name = logging.getLevelName(chosen)
    configure_logging(name, json=json_logs)
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(sys.stderr))
    config = stdlib_config(name, json=json_logs)
    config["handlers"]["stdout"]["stream"] = "ext://sys.stderr"
    logging.config.dictConfig(config)


def id_column(table: Table, name: str = "id", width: int = 36) -> None:
    """A column that shows ids whole at any terminal width: other columns give way."""
    table.add_column(name, no_wrap=True, min_width=width, overflow="fold")


class _QuietFeed:
    cut = False

    def start(self, after: int) -> None:
        pass

    async def next(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, RECORD_POLL))  # None: the stream reads the record


class RecordOnly:
    """An event source with no live events: the run advances in another process, so the
    stream follows the database alone, reading it every ``RECORD_POLL`` seconds."""

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[_QuietFeed]:
        yield _QuietFeed()


def _chunk_text(chunk: Any) -> str:
    return chunk if isinstance(chunk, str) else json.dumps(chunk) + "\n"


def _since(moment: Any) -> float | None:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)


class RunView:
    """Draws events as they come; ``record`` gives the run row as last read (or None),
    for the node in flight when the stream has no live events of it."""

    def __init__(
        self, console: Console, run: dict[str, Any], record: Callable[[], Any] | None = None
    ) -> None:
        self.console = console
        self.run_id = str(run["id"])
        self.status = str(run["status"])
        self.record = record or (lambda: None)
        self.last = 0  # the id of the last event drawn
        self.node: str | None = None
        self.seq = 0
        self.attempt = 1
        self.started = 0.0
        self.text: list[str] = []
        self.batch: tuple[int, int] | None = None  # items done, items
        self.last_finished: Any = run.get("started_at")
        self._midline = False  # plain mode: streamed text without its newline yet
        self._spinner = Spinner("dots")
        self._live: Live | None = None

    # --- lifecycle ---

    def __enter__(self) -> RunView:
        if self.console.is_terminal:
            self._live = Live(
                self,
                console=self.console,
                refresh_per_second=8,
                transient=True,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._end_line()

    # --- events ---

    def handle(self, number: int | None, kind: str, data: Any) -> None:
        if number is not None:
            self.last = number
        handler = {
            RUN_STATUS_EVENT: self._status,
            STEP_STARTED_EVENT: self._step_started,
            OUTPUT_EVENT: self._output,
            RESET_EVENT: self._reset,
            STEP_FINISHED_EVENT: self._step_finished,
            WAITING_EVENT: self._waiting,
            RUN_FINISHED_EVENT: self._run_finished,
        }.get(kind)
        if handler is not None:
            handler(data)

    def _status(self, data: dict[str, Any]) -> None:
        self.status = data["status"]
        self._line(f"[dim]run {self.status}[/dim]")

    def _step_started(self, data: dict[str, Any]) -> None:
        self.node, self.seq, self.attempt = data["node"], data["seq"], data.get("attempt", 1)
        self.started = time.monotonic()
        self.text = []
        batch = data.get("batch")
        if batch:
            self._progress(batch["item"] - 1, batch["items"])
        elif self.batch is not None:
            self._progress(self.batch[1], self.batch[1])
            self.batch = None
        if self._live is None:
            self._line(f"  {self.seq:>4}  [bold]{escape(self.node)}[/bold] started")

    def _progress(self, done: int, total: int) -> None:
        if self.batch == (done, total):
            return
        self.batch = (done, total)
        if self._live is None:
            self._line(f"        batch: {done} of {total} items done")

    def _output(self, data: dict[str, Any]) -> None:
        if data.get("attempt", 1) != self.attempt:
            self.attempt, self.text = data["attempt"], []
        text = _chunk_text(data["chunk"])
        self.text.append(text)
        if self._live is None:
            self.console.file.write(text)
            self.console.file.flush()
            self._midline = not text.endswith("\n")

    def _reset(self, data: dict[str, Any]) -> None:
        dropped = "".join(self.text)
        self.attempt, self.text = data["attempt"], []
        note = (
            f"        [yellow]↺ reset:[/yellow] step {data['seq']} attempt {data['attempt']} "
            "streams again; the output above is void"
        )
        if self._live is not None and dropped:
            self.console.print(Text(dropped, style="dim strike"))
        self._line(note)

    def _step_finished(self, step: dict[str, Any]) -> None:
        if self._live is not None and self.text and step["seq"] == self.seq:
            self.console.print(Text("".join(self.text)))
        self._end_line()
        action = step.get("action") or "default"
        line = (
            f"  {step['seq']:>4}  {styled(step['status']):<9} {escape(step['node'])} "
            f"-> {escape(action)}  {step.get('duration_ms') or 0:.1f} ms  x{step['attempts']}"
        )
        if step.get("error"):
            line += f"  [red]{escape(str(step['error'].get('message', '')))}[/red]"
        self.console.print(line, highlight=False)
        self.last_finished = step.get("finished_at")
        self.node, self.text = None, []

    def _waiting(self, data: dict[str, Any]) -> None:
        self.status = "waiting"
        prompt = (data.get("request") or {}).get("prompt", "")
        self._line(
            f"[magenta]waiting[/magenta] at {escape(str(data.get('node')))}: {escape(str(prompt))}"
            f" (resume: pocketrun runs resume {self.run_id} JSON)"
        )

    def _run_finished(self, run: dict[str, Any]) -> None:
        self.status = run["status"]
        if self.batch is not None and self.status == "succeeded":
            self._progress(self.batch[1], self.batch[1])
        self.node = None

    def _line(self, markup: str) -> None:
        self._end_line()
        self.console.print(markup, highlight=False, soft_wrap=True)

    def _end_line(self) -> None:
        if self._midline:
            self.console.file.write("\n")
            self._midline = False

    # --- the live region ---

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self.node is not None:
            elapsed = time.monotonic() - self.started
            label = f"{self.node}  step {self.seq}"
            if self.attempt > 1:
                label += f"  attempt {self.attempt}"
        else:
            row = self.record() or {}
            label = f"{row.get('current_node') or self.status}"
            elapsed = _since(self.last_finished) or 0.0
        self._spinner.update(text=Text(f"{label}  {elapsed:.1f}s", style="cyan"))
        parts.append(self._spinner)
        if self.batch is not None:
            done, total = self.batch
            bar = Table.grid(padding=(0, 1))
            bar.add_row(ProgressBar(total=total, completed=done, width=30), f"{done}/{total} items")
            parts.append(bar)
        if self.text:
            parts.append(Text("".join(self.text)[-LIVE_TEXT:]))
        return Group(*parts)


def print_outcome(console: Console, run: dict[str, Any]) -> None:
    """The run's final status, then its output or its error as JSON."""
    console.print(styled(run["status"]))
    if run.get("output") is not None:
        console.print_json(json.dumps(run["output"]))
    if run.get("error"):
        console.print_json(json.dumps(run["error"]))


async def follow(messages: Callable[[int], AsyncIterator[Message]], view: RunView) -> Any:
    """Draw the run's events until it finishes (its run JSON) or Ctrl-C (None)."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    reader = asyncio.create_task(_read(messages, view))
    stop = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        for task in (reader, stop):
            task.cancel()
        await asyncio.gather(reader, stop, return_exceptions=True)
    if interrupted.is_set() or reader.cancelled():
        return None
    return reader.result()


async def _read(messages: Callable[[int], AsyncIterator[Message]], view: RunView) -> Any:
    while True:
        cut = False
        async for number, kind, data in messages(view.last):
            if kind == CUT_EVENT:  # behind: carry on from the last event drawn
                cut = True
                break
            view.handle(number, kind, data)
            if kind == RUN_FINISHED_EVENT:
                return data
        if not cut:
            return None
