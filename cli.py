"""The ``pocketrun`` command: serve, worker, db, run, flows, runs."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings, get_settings

app = typer.Typer(
    help="pocketrun: a durable backend for PocketFlow workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
runs_app = typer.Typer(help="List, show and cancel runs.", invoke_without_command=True)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
console = Console()
err = Console(stderr=True)

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "white",
    "waiting": "magenta",
}


def _settings() -> Settings:
    return get_settings()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Run the API with its executor (the embedded default needs no other services)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_grace) + 5,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from db.database import Database
    from db.migrate import current_revision, upgrade

    async def main() -> str | None:
        db = Database(_settings().database_url)
        try:
            await upgrade(db)
            return await current_revision(db)
        finally:
            await db.close()

    console.print(f"database at revision [bold]{asyncio.run(main())}[/bold]")


def _parse_input(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--input is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("--input must be a JSON object")
    return value


@app.command()
def run(
    flow: Annotated[str, typer.Argument(help="Flow name")],
    input: Annotated[str, typer.Option("--input", "-i", help="JSON object, or @file")] = "{}",
    wait: Annotated[bool, typer.Option(help="Run it here and show steps as they finish")] = False,
    priority: Annotated[int, typer.Option(min=0, max=9)] = 0,
) -> None:
    """Start a run. With --wait it runs in this process (or on the workers) live."""
    code = asyncio.run(start_run(_settings(), flow, _parse_input(input), wait, priority, console))
    raise typer.Exit(code)


@app.command()
def flows(name: Annotated[str | None, typer.Argument(help="Show one flow")] = None) -> None:
    """List the registered flows, or show one with its graph as Mermaid."""
    from flows.registry import load_flows

    registry = load_flows(_settings().flow_modules)
    if name is None:
        table = Table("name", "version", "mode", "queue", "description")
        for spec in registry.latest():
            table.add_row(spec.name, spec.version, spec.mode, spec.queue, spec.description)
        console.print(table)
        return
    try:
        spec = registry.get(name)
    except Exception as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[bold]{spec.name}[/bold] v{spec.version} ({spec.mode}) {spec.description}")
    console.print_json(json.dumps(spec.input_schema()))
    console.print(spec.graph.mermaid(), markup=False, highlight=False)


@runs_app.callback()
def runs_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        ctx.invoke(runs_list)


@runs_app.command("list")
def runs_list(
    flow: Annotated[str | None, typer.Option()] = None,
    status: Annotated[list[str] | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """The newest runs, across tenants."""
    rows = asyncio.run(list_runs(_settings(), flow, status or [], limit))
    table = Table("id", "flow", "status", "steps", "current node", "created")
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "")
        table.add_row(
            str(row["id"]),
            row["flow"],
            f"[{style}]{row['status']}[/{style}]",
            str(row["seq"]),
            row["current_node"] or "",
            row["created_at"].isoformat(),
        )
    console.print(table)


def _run_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a run id") from None


@runs_app.command("show")
def runs_show(run_id: Annotated[str, typer.Argument()]) -> None:
    """One run with its steps."""
    found = asyncio.run(show_run(_settings(), _run_id(run_id), console))
    raise typer.Exit(0 if found else 1)


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[str, typer.Argument()]) -> None:
    """Cancel a run: at once if queued, at its next checkpoint if running."""
    status = asyncio.run(cancel_run(_settings(), _run_id(run_id)))
    if status is None:
        err.print("run not found")
        raise typer.Exit(1)
    console.print(f"{run_id}: {status}")


# --- the async work behind the verbs: they act on the database directly ---


async def _open(settings: Settings):
    from db.database import Database
    from db.migrate import upgrade

    db = Database(settings.database_url)
    if settings.auto_migrate:
        await upgrade(db)
    return db


def _print_step(step: Any) -> None:
    style = STATUS_STYLE.get(step["status"], "")
    action = step["action"] or "default"
    console.print(
        f"  {step['seq']:>4}  [{style}]{step['status']:<9}[/{style}] {step['node']:<32} "
        f"-> {action:<12} {step['duration_ms']:8.1f} ms  x{step['attempts']}"
    )


async def start_run(
    settings: Settings, flow: str, data: dict[str, Any], wait: bool, priority: int, out: Console
) -> int:
    from pydantic import ValidationError

    from core.errors import NotFound
    from core.principal import LOCAL_PRINCIPAL
    from db.runs import NewRun, RunRepository
    from flows.registry import load_flows
    from workers.factory import make_executor

    registry = load_flows(settings.flow_modules)
    try:
        spec = registry.get(flow)
        initial = spec.validate_input(data)
    except NotFound as exc:
        err.print(f"[red]{exc.detail}[/red]")
        return 2
    except ValidationError as exc:
        err.print(f"[red]invalid input:[/red] {exc}")
        return 2
    db = await _open(settings)
    repo = RunRepository(db)
    try:
        row, _ = await repo.create(
            NewRun(
                tenant=LOCAL_PRINCIPAL.tenant,
                principal="cli",
                flow=spec.name,
                flow_version=spec.version,
                graph_hash=spec.graph_hash,
                mode="background",
                queue=spec.queue,
                priority=priority,
                input=initial,
                metadata={"source": "cli"},
                run_timeout=spec.run_timeout,
            )
        )
        run_id = row["id"]
        out.print(f"run [bold]{run_id}[/bold] ({spec.name} v{spec.version})")
        executor = make_executor(settings, db, registry)
        if not wait:
            if settings.executor == "celery":
                await executor.submit(run_id, priority=priority, queue=spec.queue)
            else:
                out.print("queued: a running `pocketrun serve` on this database picks it up")
            return 0
        if settings.executor == "local":
            task = asyncio.create_task(executor.run_inline(run_id, budget=float("inf")))
        else:
            await executor.submit(run_id, priority=priority, queue=spec.queue)
            task = None
        shown = 0
        while True:
            current = await repo.get(run_id)
            for step in (await repo.steps(run_id))[shown:]:
                _print_step(step)
                shown += 1
            if current is not None and current["status"] in TERMINAL:
                break
            await asyncio.sleep(0.1)
        if task is not None:
            await task
        style = STATUS_STYLE.get(current["status"], "")
        out.print(f"[{style}]{current['status']}[/{style}]")
        if current["output"] is not None:
            out.print_json(json.dumps(current["output"]))
        if current["error"]:
            out.print_json(json.dumps(current["error"]))
        return 0 if current["status"] == "succeeded" else 1
    finally:
        await db.close()


async def list_runs(
    settings: Settings, flow: str | None, statuses: list[str], limit: int
) -> list[Any]:
    from db.runs import RunFilter, RunRepository

    db = await _open(settings)
    try:
        return await RunRepository(db).list(
            RunFilter(tenant=None, flow=flow, statuses=statuses, limit=limit)
        )
    finally:
        await db.close()


async def show_run(settings: Settings, run_id: uuid.UUID, out: Console) -> bool:
    from db.runs import RunRepository

    db = await _open(settings)
    try:
        repo = RunRepository(db)
        row = await repo.get(run_id)
        if row is None:
            err.print("run not found")
            return False
        fields = {
            k: row[k]
            for k in (
                "flow",
                "flow_version",
                "status",
                "mode",
                "current_node",
                "created_at",
                "started_at",
                "finished_at",
            )
        }
        for key, value in fields.items():
            out.print(f"[bold]{key:>13}[/bold] {value if value is not None else ''}")
        for key in ("input", "output", "error"):
            if row[key] is not None:
                out.print(f"[bold]{key:>13}[/bold]")
                out.print_json(json.dumps(row[key]))
        for step in await repo.steps(run_id):
            _print_step(step)
        return True
    finally:
        await db.close()


async def cancel_run(settings: Settings, run_id: uuid.UUID) -> str | None:
    from db.runs import RunRepository

    db = await _open(settings)
    try:
        row = await RunRepository(db).cancel(run_id)
        if row is None:
            return None
        return "cancel requested" if row["status"] == "running" else row["status"]
    finally:
        await db.close()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
