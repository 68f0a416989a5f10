"""The ``pocketrun`` command: serve, worker, db, run, flows, runs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli_view import RecordOnly, RunView, follow, id_column, print_outcome, quiet_logs, styled
from core.settings import Settings, get_settings

app = typer.Typer(
    help="pocketrun: a durable backend for PocketFlow workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
runs_app = typer.Typer(
    help="List, show, cancel, resume, retry, replay, pause and unpause runs.",
    invoke_without_command=True,
)
app.add_typer(db_app, name="db")
app.add_typer(runs_app, name="runs")
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
new_app = typer.Typer(help="Start new code from a template.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants: their limit of runs in flight.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
cache_app = typer.Typer(help="The node result cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
webhooks_app = typer.Typer(help="Outbound webhooks of a tenant.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
schedules_app = typer.Typer(help="Schedules that start runs of a flow.", no_args_is_help=True)
app.add_typer(schedules_app, name="schedules")
app.add_typer(new_app, name="new")
console = Console()
err = Console(stderr=True)
# A control verb's work on one run: (RunControl, the run, dispatched) -> the run after it.
Act = Callable[[Any, Any, bool], Awaitable[Any]]
_options = {"debug": False, "database_noted": False}
DebugOption = Annotated[
    bool, typer.Option("--debug", help="On a flow module that fails to load, its traceback")
]


def _settings() -> Settings:
    return get_settings()


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"pocketrun {version('pocketrun')}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version"),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """pocketrun: a durable backend for PocketFlow workflows."""
    _options["debug"] = debug


def _loaded_flows(modules: list[str], debug: bool = False) -> Any:
    """The registry with POCKETRUN_FLOWS loaded; a module that fails to load exits 2 with
    one line (what, where, what to do), its traceback only under --debug."""
    from flows.project import FlowLoadError
    from flows.registry import load_flows

    try:
        return load_flows(modules, examples=_settings().examples)
    except FlowLoadError as exc:
        if exc.__cause__ is None:  # nothing raised: the message is all there is
            _refuse(2, exc.detail)
        if debug or _options["debug"]:
            traceback.print_exception(exc.__cause__)
            _refuse(2, exc.detail)
        _refuse(2, f"{exc.detail} (--debug shows the traceback)")


def _note_database(settings: Settings) -> None:
    """Name the database on stderr, once, when it is the default: a SQLite file in whatever
    directory the command runs from."""
    if "database_url" in settings.model_fields_set or _options["database_noted"]:
        return
    _options["database_noted"] = True
    path = Path(settings.database_url.partition(":///")[2]).resolve()
    err.print(
        f"pocketrun: database {path} (the default, in the working directory; "
        "set POCKETRUN_DATABASE_URL to choose)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=256, help="API processes sharing the port; one that dies is replaced"
        ),
    ] = 1,
    debug: DebugOption = False,
) -> None:
    """Run the API with its executor (the embedded default needs no other services)."""
    from api.serving import serve as run_server

    # The app reads its settings from the environment (in each process): --host and --port
    # go there, so what it prints (the first-start hint) names the address it listens on.
    if host is not None:
        os.environ["POCKETRUN_HOST"] = host
    if port is not None:
        os.environ["POCKETRUN_PORT"] = str(port)
    get_settings.cache_clear()
    settings = _settings()
    _loaded_flows(settings.flow_modules, debug)  # a module that can't load: one line, here
    _note_database(settings)
    run_server(settings, host=settings.host, port=settings.port, workers=workers)


@app.command()
def dev(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
) -> None:
    """Serve for development: the example flows on, and a restart when a flow file changes
    (the old process drains first: runs in flight go on in the new one)."""
    import os

    from api.serving import dev as run_dev
    from api.serving import flow_dirs

    os.environ.setdefault("POCKETRUN_EXAMPLES", "true")
    get_settings.cache_clear()
    settings = _settings()
    watch = flow_dirs(settings.flow_modules)
    err.print(f"watching {', '.join(str(d) for d in watch)}", highlight=False)
    run_dev(settings, host=host or settings.host, port=port or settings.port, watch=watch)


@new_app.command("flow")
def new_flow(
    name: Annotated[str, typer.Argument(help="Flow name, e.g. order-intake")],
    dir: Annotated[Path, typer.Option("--dir", help="Where to write the files")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite files that exist")] = False,
) -> None:
    """Write a flow module and its test (both pass `make test` as written), and print a
    README snippet for them."""
    from core.errors import FlowDefinitionError
    from flows.scaffold import scaffold, write

    try:
        made = scaffold(name, dir)
        written = write(made, force=force)
    except (FlowDefinitionError, FileExistsError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    for path in written:
        err.print(f"wrote {path}", highlight=False)
    print(made.snippet, end="")


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: CPU count)")
    ] = None,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume")] = "default",
    name: Annotated[
        str | None, typer.Option(help="Worker name, recorded on every step it runs")
    ] = None,
) -> None:
    """Run a Celery worker (EXECUTOR=celery): advances runs from their checkpoints."""
    import os

    from workers.engine import default_worker_name

    _loaded_flows(_settings().flow_modules)  # a module that can't load: one line, here
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] or ["default"]
    worker_name = name or _settings().worker_name or default_worker_name()
    # The pool's processes read their settings from the environment after the fork.
    os.environ["POCKETRUN_WORKER_NAME"] = worker_name
    os.environ["POCKETRUN_WORKER_QUEUES"] = ",".join(queue_list)
    get_settings.cache_clear()
    settings = _settings()
    if settings.auto_migrate:
        asyncio.run(_migrate_only(settings))
    from workers.celery_app import run_worker

    run_worker(concurrency or os.cpu_count() or 1, queue_list, worker_name, settings.log_level)


@app.command()
def workers(
    all_: Annotated[bool, typer.Option("--all", help="Include dead workers")] = False,
) -> None:
    """The Celery worker processes with a recent heartbeat, and what they are running."""
    from db.types import utcnow

    rows = asyncio.run(list_workers(_settings(), all_))
    table = Table("name", "pid", "host", "queues")
    id_column(table, "running")
    table.add_column("heartbeat")
    table.add_column("alive")
    now = utcnow()
    for row in rows:
        alive = row.alive
        table.add_row(
            row.name,
            str(row.pid),
            row.hostname,
            ",".join(row.queues),
            "\n".join(row.running) or "-",
            f"{(now - row.heartbeat_at).total_seconds():.1f}s ago",
            "[green]yes[/green]" if alive else "[red]no[/red]",
        )
    console.print(table)
    names = {row.name for row in rows if row.alive}
    console.print(f"{len(names)} worker(s) alive, {sum(r.alive for r in rows)} process(es)")


async def _migrate_only(settings: Settings) -> None:
    db = await _open(settings)
    await db.close()


async def list_workers(settings: Settings, include_dead: bool) -> list[Any]:

    db = await _open(settings)
    try:
        return await db.live_workers(include_dead=include_dead)
    finally:
        await db.close()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from db.migrate import upgrade

    _migrate_schema(upgrade, "head")


@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(
    revision: Annotated[
        str, typer.Argument(help="Where to go: -1 (one step, the default), -N, a revision, base")
    ] = "-1",
) -> None:
    """Revert migrations down to REVISION; ``base`` removes the whole schema."""
    from db.migrate import downgrade

    _migrate_schema(downgrade, revision)


def _migrate_schema(step: Callable[[Any, str], Awaitable[None]], revision: str) -> None:
    from alembic.util import CommandError

    from db.migrate import current_revision
    from db.store import open_store

    _note_database(_settings())

    async def main() -> str | None:
        db = open_store(_settings().database_url)
        try:
            await step(db, revision)
            return await current_revision(db)
        finally:
            await db.close()

    try:
        reached = asyncio.run(main())
    except CommandError as exc:  # an unknown revision, or a step past base or head
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"database at revision [bold]{reached or 'base'}[/bold]")


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
    debug: DebugOption = False,
) -> None:
    """Start a run. With --wait it runs in this process (or on the workers) live."""
    settings = _settings()
    _loaded_flows(settings.flow_modules, debug)
    quiet_logs(settings.log_level, json_logs=settings.log_json)
    code = asyncio.run(start_run(_settings(), flow, _parse_input(input), wait, priority, console))
    raise typer.Exit(code)


@app.command()
def flows(
    name: Annotated[str | None, typer.Argument(help="Show one flow")] = None,
    debug: DebugOption = False,
) -> None:
    """List the registered flows, or show one with its graph as Mermaid."""
    registry = _loaded_flows(_settings().flow_modules, debug)
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
    status: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable: queued, running, waiting, paused, sleeping, succeeded, ..."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """The newest runs, across tenants."""
    from db.store import CLAIMABLE, STOPPED, TERMINAL

    known = (*CLAIMABLE, *STOPPED, *TERMINAL)
    for name in status or []:
        if name not in known:
            raise typer.BadParameter(
                f"{name!r} is not a run status: one of {', '.join(known)}", param_hint="--status"
            )
    rows = asyncio.run(list_runs(_settings(), flow, status or [], limit))
    # compact, so whole ids and the status fit in 80 columns
    table = Table(box=None, padding=(0, 1, 0, 0), header_style="bold underline")
    id_column(table)
    table.add_column("flow", overflow="fold")
    table.add_column("status", min_width=9, overflow="fold")
    table.add_column("steps", overflow="fold")
    table.add_column("node", overflow="fold")
    table.add_column("created (UTC)", min_width=10, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["flow"],
            styled(row["status"]),
            str(row["seq"]),
            row["current_node"] or "",
            row["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
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


@runs_app.command("tail")
def runs_tail(run_id: Annotated[str, typer.Argument()]) -> None:
    """Follow a run live (or replay a finished one); Ctrl-C stops watching, not the run."""
    settings = _settings()
    quiet_logs(settings.log_level, json_logs=settings.log_json)
    raise typer.Exit(asyncio.run(tail_run(settings, _run_id(run_id), console)))


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[str, typer.Argument()]) -> None:
    """Cancel a run: at once if queued, at its next checkpoint if running."""
    status = asyncio.run(cancel_run(_settings(), _run_id(run_id)))
    if status is None:
        err.print("run not found")
        raise typer.Exit(1)
    console.print(f"{run_id}: {status}")


# --- control of a started run (workers.control), audited like the API's routes ---


def _json_arg(text: str, name: str) -> Any:
    """``text`` as JSON (``@file`` reads a file); exit 2 with one line when it is not."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        return json.loads(raw, parse_constant=_not_json)
    except (OSError, ValueError) as exc:
        _refuse(2, f"{name} is not JSON: {exc}")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _patch_arg(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = _json_arg(text, "--patch")
    if not isinstance(value, dict):
        _refuse(2, "--patch must be a JSON object of shared-store keys to set")
    return value


def _refuse(code: int, *lines: str) -> NoReturn:
    for line in lines:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _field(error: dict[str, Any]) -> str:
    """An ``errors[]`` entry's field as the CLI spells it: ``payload.edit``, ``--from-seq``."""
    loc = [str(part) for part in error.get("loc", ())]
    if loc[:1] == ["body"]:
        loc = loc[1:]
    if loc and loc[0] in ("from_seq", "patch"):
        return "--" + loc[0].replace("_", "-") + "".join(f".{part}" for part in loc[1:])
    return ".".join(loc) or "payload"


def _control(run_id: str, action: str, act: Act, detail: dict[str, Any] | None = None) -> Any:
    """Run ``act`` on the run and report: 1 for an unknown run or a conflict, 2 for input
    that fails its schema (one line per error, naming the field)."""
    from core.errors import Conflict, InvalidInput, NotFound

    try:
        row = asyncio.run(control_run(_settings(), _run_id(run_id), action, act, detail))
    except NotFound:
        _refuse(1, "run not found")
    except Conflict as exc:
        _refuse(1, exc.detail)
    except InvalidInput as exc:
        errors = exc.errors or []
        _refuse(2, f"{exc.detail}:" if errors else exc.detail, *(_error_line(e) for e in errors))
    return row


def _error_line(error: dict[str, Any]) -> str:
    return f"  {_field(error)}: {error.get('msg', 'invalid')}"


def _report(row: Any, what: str) -> None:
    console.print(f"{row['id']}: {what}{styled(row['status'])}", highlight=False)
    if row["status"] == "queued" and _settings().executor == "local":
        console.print("a running `pocketrun serve` on this database picks it up at its next sweep")


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument()],
    payload: Annotated[
        str | None, typer.Argument(help="The answer as JSON (or @file)", show_default=False)
    ] = None,
    payload_option: Annotated[
        str | None, typer.Option("--payload", help="The answer as JSON (or @file)")
    ] = None,
) -> None:
    """Deliver the answer a waiting run asked for; it must match the request's schema."""
    if (payload is None) == (payload_option is None):
        _refuse(2, "give the answer once: runs resume RUN_ID PAYLOAD_JSON, or --payload JSON")
    answer = _json_arg(payload if payload is not None else payload_option, "the payload")

    async def act(control: Any, run: Any, dispatched: bool) -> Any:
        return await control.resume(run["id"], answer, dispatched=dispatched)

    _report(_control(run_id, "run.resume", act), "resumed, ")


@runs_app.command("retry")
def runs_retry(
    run_id: Annotated[str, typer.Argument()],
    patch: Annotated[
        str | None, typer.Option(help="JSON object: shared-store keys to set first (or @file)")
    ] = None,
) -> None:
    """Carry a failed, timed-out or cancelled run on from the step that ended it."""
    changes = _patch_arg(patch)

    async def act(control: Any, run: Any, dispatched: bool) -> Any:
        now = await control.store.now()
        return await control.retry(run["id"], changes, now, dispatched=dispatched)

    row = _control(run_id, "run.retry", act)
    _report(row, f"retry {row['retries']}, ")


@runs_app.command("replay")
def runs_replay(
    run_id: Annotated[str, typer.Argument()],
    from_seq: Annotated[int, typer.Option("--from-seq", help="The step to start at")],
    patch: Annotated[
        str | None, typer.Option(help="JSON object: shared-store keys to set first (or @file)")
    ] = None,
) -> None:
    """Start a new run from the state before step N of a finished run."""
    changes = _patch_arg(patch)

    async def act(control: Any, parent: Any, dispatched: bool) -> Any:
        from core.errors import Conflict

        spec = _loaded_flows(_settings().flow_modules).find(parent["flow"], parent["flow_version"])
        if spec is None:
            raise Conflict(
                f"flow '{parent['flow']}' version {parent['flow_version']} is not loaded here"
            )
        row = await control.replay(
            parent, from_seq, changes, principal="cli", run_timeout=spec.run_timeout
        )
        if dispatched:
            return row
        # A new run: stamp it for the next sweep rather than wait REDISPATCH_AFTER for one.
        swept = await control.store.transition(row["id"], ("queued",), {}, dispatched=False)
        return swept or row

    detail = {"parent": str(_run_id(run_id)), "from_seq": from_seq}
    row = _control(run_id, "run.replay", act, detail)
    console.print(f"run [bold]{row['id']}[/bold] replays {run_id} from step {from_seq}")
    _report(row, "")


@runs_app.command("pause")
def runs_pause(run_id: Annotated[str, typer.Argument()]) -> None:
    """Pause a queued run now, a running one at its next checkpoint."""

    async def act(control: Any, run: Any, dispatched: bool) -> Any:
        return await control.pause(run["id"])

    row = _control(run_id, "run.pause", act)
    _report(row, "pause requested, " if row["status"] == "running" else "")


@runs_app.command("unpause")
def runs_unpause(run_id: Annotated[str, typer.Argument()]) -> None:
    """Queue a paused run again (or drop a pause a running run has not reached yet)."""

    async def act(control: Any, run: Any, dispatched: bool) -> Any:
        return await control.unpause(run["id"], dispatched=dispatched)

    _report(_control(run_id, "run.unpause", act), "")


# --- the async work behind the verbs: they act on the database directly ---


async def _open(settings: Settings):
    from db.migrate import upgrade
    from db.store import open_store

    _note_database(settings)
    store = open_store(settings.database_url)
    if settings.auto_migrate:
        await upgrade(store)
    return store


def _print_step(step: Any) -> None:
    action = step["action"] or "default"
    console.print(
        f"  {step['seq']:>4}  {styled(step['status'])} {step['node']:<32} "
        f"-> {action:<12} {step['duration_ms']:8.1f} ms  x{step['attempts']}"
    )


async def start_run(
    settings: Settings, flow: str, data: dict[str, Any], wait: bool, priority: int, out: Console
) -> int:
    from pydantic import ValidationError

    from core.errors import NotFound
    from core.principal import LOCAL_PRINCIPAL
    from db.store import NewRun
    from workers.factory import make_executor
    from workers.local import LocalExecutor

    registry = _loaded_flows(settings.flow_modules)
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
    repo = db
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
                current_node=spec.start_node,
                trigger={"type": "cli"},
            )
        )
        run_id = row["id"]
        out.print(f"run [bold]{run_id}[/bold] ({spec.name} v{spec.version})")
        if not wait:
            if settings.executor == "celery":
                await make_executor(settings, db, registry).submit(
                    run_id, priority=priority, queue=spec.queue
                )
            else:  # for the next sweep, rather than after REDISPATCH_AFTER
                await db.transition(run_id, ("queued",), {}, dispatched=False)
                out.print("queued: a running `pocketrun serve` on this database picks it up")
            return 0
        local: LocalExecutor | None = None
        if settings.executor == "local":
            # This process runs it, its supervisor keeping the lease; it sweeps nobody's runs.
            local = LocalExecutor(db, registry, settings, sweep=False)
            await local.start()
            await local.run_inline(run_id, budget=float("inf"))
            source = local.events
        else:
            executor = make_executor(settings, db, registry)
            await executor.submit(run_id, priority=priority, queue=spec.queue)
            source = executor.events
        try:
            finished = await watch(db, source, row, out)
        finally:
            if local is not None:
                await local.stop()  # on Ctrl-C: the step in flight ends, the lease is freed
        if finished is None:
            where = (
                "a `pocketrun serve` on this database carries it on from its last checkpoint"
                if local is not None
                else "the workers carry it on"
            )
            return interrupted(run_id, where)
        print_outcome(out, finished)
        return 0 if finished["status"] == "succeeded" else 1
    finally:
        await db.close()


async def watch(store: Any, source: Any, run: Any, out: Console) -> dict[str, Any] | None:
    """Draw the run's event stream until it finishes (its run JSON) or Ctrl-C (None)."""
    from api.events import RunEventStream

    stream = RunEventStream(
        store, source, dict(run), internals=True, debug=True, stopping=lambda: False
    )
    with RunView(out, dict(run), record=lambda: stream.run) as view:
        return await follow(stream.messages, view)


def interrupted(run_id: uuid.UUID, where: str) -> int:
    err.print(f"stopped watching; run {run_id} goes on: {where}.", highlight=False, soft_wrap=True)
    err.print(f"to cancel it: pocketrun runs cancel {run_id}", markup=False, soft_wrap=True)
    return 130


async def tail_run(settings: Settings, run_id: uuid.UUID, out: Console) -> int:
    db = await _open(settings)
    client = None
    try:
        row = await db.get(run_id)
        if row is None:
            err.print("run not found")
            return 1
        if settings.executor == "celery" and settings.redis_url:
            from workers.dispatch import redis_client
            from workers.redis_events import RedisEvents

            client = redis_client(settings.redis_url)
            source: Any = RedisEvents(client, settings)
        else:
            source = RecordOnly()  # the process running it is elsewhere: follow the record
        out.print(
            f"run [bold]{run_id}[/bold] ({row['flow']} v{row['flow_version']}) "
            f"{styled(row['status'])}",
            soft_wrap=True,
        )
        finished = await watch(db, source, row, out)
        if finished is None:
            return interrupted(run_id, "this command only watched it")
        print_outcome(out, finished)
        return 0 if finished["status"] == "succeeded" else 1
    finally:
        if client is not None:
            await client.aclose()
        await db.close()


async def list_runs(
    settings: Settings, flow: str | None, statuses: list[str], limit: int
) -> list[Any]:
    from db.store import RunFilter

    db = await _open(settings)
    try:
        return await db.list(RunFilter(tenant=None, flow=flow, statuses=statuses, limit=limit))
    finally:
        await db.close()


async def show_run(settings: Settings, run_id: uuid.UUID, out: Console) -> bool:

    db = await _open(settings)
    try:
        repo = db
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
        fields.update(_control_fields(row))
        for key, value in fields.items():
            out.print(
                f"[bold]{key:>13}[/bold] {escape(str(value)) if value is not None else ''}",
                soft_wrap=True,
            )
        for key in ("input", "output", "error"):
            if row[key] is not None:
                out.print(f"[bold]{key:>13}[/bold]")
                out.print_json(json.dumps(row[key]))
        for step in await repo.steps(run_id):
            _print_step(step)
        return True
    finally:
        await db.close()


def _control_fields(row: Any) -> dict[str, Any]:
    """What a run's durable control adds to ``runs show``, only where it is set."""
    fields: dict[str, Any] = {}
    waiting = row["waiting_for"]
    if waiting:
        prompt = (waiting.get("request") or {}).get("prompt")
        fields["waiting_for"] = f"{waiting.get('node')}: {prompt}" if prompt else waiting["node"]
    if row["wake_at"] is not None:
        fields["wake_at"] = row["wake_at"]
    trigger = row["trigger"]
    if trigger:
        fields["trigger"] = " ".join(str(trigger[k]) for k in ("type", "id") if trigger.get(k))
    if row["parent_run_id"] is not None:
        fields["parent"] = f"{row['parent_run_id']} step {row['parent_seq']}"
    if row["retries"]:
        fields["retries"] = row["retries"]
    return fields


async def cancel_run(settings: Settings, run_id: uuid.UUID) -> str | None:

    db = await _open(settings)
    try:
        row = await db.cancel(run_id)
        if row is None:
            return None
        return "cancel requested" if row["status"] == "running" else row["status"]
    finally:
        await db.close()


async def control_run(
    settings: Settings,
    run_id: uuid.UUID,
    action: str,
    act: Act,
    detail: dict[str, Any] | None = None,
) -> Any:
    """``act(control, run, dispatched)`` on the run, then an audit entry (``action``, as
    principal ``cli``) and, with EXECUTOR=celery, the queued run handed to the workers.
    With the local executor nobody here runs it: the next sweep of a ``pocketrun serve``
    on this database does (``dispatched=False``)."""
    from core.errors import NotFound
    from core.principal import LOCAL_PRINCIPAL
    from db.audit import AuditRecord, AuditRepository
    from workers.control import RunControl

    db = await _open(settings)
    try:
        run = await db.get(run_id)
        if run is None:
            raise NotFound(f"run '{run_id}' not found")
        dispatched = settings.executor == "celery"
        control = RunControl(
            db,
            max_store_bytes=settings.max_store_bytes,
            tenant_limit=settings.tenant_concurrency,
        )
        row = await act(control, run, dispatched)
        await AuditRepository(db).record(
            AuditRecord(
                tenant=run["tenant"],
                principal="cli",
                role=str(LOCAL_PRINCIPAL.role),
                action=action,
                target=str(row["id"]),
                status=201 if action == "run.replay" else 200,
                detail={"source": "cli", **(detail or {})},
            )
        )
        if dispatched and row["status"] == "queued" and not row["held"]:
            from workers.factory import make_executor

            registry = _loaded_flows(settings.flow_modules)
            await make_executor(settings, db, registry).submit(
                row["id"], priority=row["priority"], queue=row["queue"], tenant=row["tenant"]
            )
        return row
    finally:
        await db.close()


# --- tenants: their share of capacity (TENANT_CONCURRENCY) ---


@tenants_app.command("limit")
def tenants_limit(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1_000_000, help="Set its runs in flight")
    ] = None,
    reset: Annotated[bool, typer.Option(help="Back to POCKETRUN_TENANT_CONCURRENCY")] = False,
) -> None:
    """Show a tenant's limit of runs in flight and its load; set or reset its override."""
    if concurrency is not None and reset:
        raise typer.BadParameter("give --concurrency or --reset, not both")
    settings = _settings()

    async def main() -> tuple[Any, int, int]:
        from db.audit import AuditRecord, AuditRepository

        db = await _open(settings)
        try:
            if concurrency is not None or reset:
                await db.set_tenant_limit(tenant, concurrency, "cli")
                await AuditRepository(db).record(
                    AuditRecord(
                        tenant=tenant,
                        principal="cli",
                        role="admin",
                        action="tenant.limits",
                        target=tenant,
                        status=200,
                        detail={"source": "cli", "concurrency": concurrency},
                    )
                )
            override = await db.tenant_limit(tenant)
            in_flight, held = await db.tenant_load(tenant)
            return override, in_flight, held
        finally:
            await db.close()

    override, in_flight, held = asyncio.run(main())
    limit = override["concurrency"] if override else settings.tenant_concurrency
    source = f"set by {override['updated_by']}" if override else "POCKETRUN_TENANT_CONCURRENCY"
    console.print(
        f"tenant [bold]{tenant}[/bold]: {limit} runs in flight ({source}); "
        f"{in_flight} in flight, {held} held"
    )


# --- the node result cache ---


@cache_app.command("clear")
def cache_clear(
    flow: Annotated[str, typer.Option(help="The flow whose entries go")],
    key: Annotated[str | None, typer.Option(help="Only this cache key")] = None,
    tenant: Annotated[str, typer.Option(help="The tenant")] = "default",
) -> None:
    """Drop node cache entries of a flow (in Redis too, when REDIS_URL is set)."""
    settings = _settings()

    async def main() -> int:
        from workers.node_cache import node_cache

        db = await _open(settings)
        cache = node_cache(settings)
        try:
            return await cache.clear(db, tenant, flow, key)
        finally:
            if cache.redis is not None:
                await cache.redis.aclose()
            await db.close()

    removed = asyncio.run(main())
    console.print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'} of {flow!r}")


# --- API keys: the CLI acts on the database, so a new key works at once ---


def _parse_expiry(text: str | None):
    """``30d``, ``12h``, ``15m``, ``90s`` from now, or an ISO 8601 moment (naive: UTC)."""
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("--expires takes 30d, 12h, 15m, 90s or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="consumer, operator, engineer or admin")],
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Tenant; '*' (admins only) crosses tenants. Default: 'default', while the "
            "keys have no other tenant"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for humans")] = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, ... or ISO 8601")] = None,
) -> None:
    """Create an API key and print it: it is shown only this once."""
    from core.principal import ALL_TENANTS, Role
    from db.keys import NewKey

    try:
        parsed_role = Role(role)
    except ValueError:
        raise typer.BadParameter(f"--role must be one of {[r.value for r in Role]}") from None
    if tenant == ALL_TENANTS and parsed_role is not Role.admin:
        raise typer.BadParameter("only an admin key can have tenant '*'")
    if tenant is not None and not 1 <= len(tenant) <= 100:
        raise typer.BadParameter("--tenant must be 1-100 characters")
    expires_at = _parse_expiry(expires)

    async def main():
        from db.keys import KeyRepository

        db = await _open(_settings())
        try:
            keys = KeyRepository(db)
            chosen = tenant or await _only_tenant(keys)
            new = NewKey(
                name=name or f"{parsed_role.value}@{chosen}",
                tenant=chosen,
                role=parsed_role,
                created_by="cli",
                expires_at=expires_at,
            )
            return await keys.create(new)
        finally:
            await db.close()

    row, key = asyncio.run(main())
    err.print(
        f"key [bold]{row['id']}[/bold] ({row['role']} of tenant {row['tenant']!r}); "
        "it is shown only now:"
    )
    print(key)


async def _only_tenant(keys: Any) -> str:
    """``default`` while no key belongs to another tenant; otherwise --tenant must say."""
    from core.principal import ALL_TENANTS

    rows = await keys.list(None, limit=10_000)
    tenants = {row["tenant"] for row in rows if row["revoked_at"] is None}
    others = sorted(tenants - {"default", ALL_TENANTS})
    if others:
        shown = ", ".join(["default", *others][:10])
        _refuse(2, f"give --tenant: keys exist for several tenants ({shown})")
    return "default"


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
) -> None:
    """API keys, newest first (never the keys themselves)."""

    async def main():
        from db.keys import KeyRepository

        db = await _open(_settings())
        try:
            return await KeyRepository(db).list(tenant, limit=limit)
        finally:
            await db.close()

    table = Table()
    id_column(table, width=16)
    for name in ("prefix", "name", "tenant", "role", "created", "expires", "revoked"):
        table.add_column(name)
    for row in asyncio.run(main()):
        table.add_row(
            row["id"],
            row["prefix"] + "...",
            row["name"],
            row["tenant"],
            row["role"],
            row["created_at"].isoformat(timespec="seconds"),
            row["expires_at"].isoformat(timespec="seconds") if row["expires_at"] else "",
            row["revoked_at"].isoformat(timespec="seconds") if row["revoked_at"] else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see keys list)")],
) -> None:
    """Revoke a key (API processes notice within POCKETRUN_AUTH_CACHE_TTL seconds)."""

    async def main():
        from db.keys import KeyRepository

        db = await _open(_settings())
        try:
            return await KeyRepository(db).revoke(key_id)
        finally:
            await db.close()

    row = asyncio.run(main())
    if row is None:
        err.print("key not found")
        raise typer.Exit(1)
    console.print(f"{key_id}: revoked at {row['revoked_at'].isoformat(timespec='seconds')}")


# --- webhooks: a tenant's subscriptions and their delivery log ---

_HOOK_TENANT = typer.Option("--tenant", help="The tenant")


def _webhooks(work: Callable[[Any], Awaitable[Any]]) -> Any:
    settings = _settings()

    async def main() -> Any:
        db = await _open(settings)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(main())


def _hook_id(text: str) -> Any:
    from core.ids import parse_uuid

    parsed = parse_uuid(text)
    if parsed is None:
        raise typer.BadParameter(f"{text!r} is not an id")
    return parsed


@webhooks_app.command("list")
def webhooks_list(tenant: Annotated[str, _HOOK_TENANT] = "default") -> None:
    """The tenant's webhooks."""
    from db import webhooks as sql

    rows = _webhooks(lambda db: sql.list_subscriptions(db, tenant, None, 1000))
    for row in rows:
        flow = f" flow={row['flow']}" if row["flow"] else ""
        state = "" if row["enabled"] else " (disabled)"
        console.print(f"{row['id']}  {row['url']}  {','.join(row['events'])}{flow}{state}")


@webhooks_app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="An http(s) URL")],
    event: Annotated[list[str], typer.Option(help="run.status, run.waiting or run.finished")],
    flow: Annotated[str | None, typer.Option(help="Only this flow's runs")] = None,
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Subscribe ``url``; prints the signing secret, once."""
    from db import webhooks as sql
    from nodes.net import public_address
    from workers.webhooks import EVENTS, new_secret

    unknown = sorted(set(event) - set(EVENTS))
    if unknown:
        raise typer.BadParameter(f"unknown events {unknown}; choose from {list(EVENTS)}")
    try:
        public_address(url, allow_private=_settings().webhook_allow_private)
    except ValueError as exc:
        _refuse(2, f"url: {exc}".replace("HTTP_ALLOW", "WEBHOOK_ALLOW"))
    secret = new_secret()
    row = _webhooks(
        lambda db: sql.create_subscription(db, tenant, url, sorted(set(event)), flow, secret, "cli")
    )
    console.print(f"{row['id']}\nsecret (shown once): {secret}")


@webhooks_app.command("delete")
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Delete a webhook and its pending deliveries."""
    from db import webhooks as sql

    if not _webhooks(lambda db: sql.delete_subscription(db, tenant, _hook_id(webhook_id))):
        _refuse(1, "webhook not found")
    console.print(f"{webhook_id}: deleted")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """The delivery log: every attempt, oldest first."""
    from db import webhooks as sql

    sub_id = _hook_id(webhook_id)

    async def work(db: Any) -> Any:
        if await sql.get_subscription(db, tenant, sub_id) is None:
            return None
        return await sql.attempts(db, sub_id, None, 1000)

    rows = _webhooks(work)
    if rows is None:
        _refuse(1, "webhook not found")
    for row in rows:
        outcome = row["status_code"] if row["status_code"] is not None else row["error"]
        console.print(
            f"{row['at'].isoformat(timespec='seconds')}  {row['delivery_id']}  {row['event']}  "
            f"{outcome}  {row['duration_ms']:.0f} ms  ({row['delivery_status']})"
        )


@webhooks_app.command("replay")
def webhooks_replay(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id")],
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Send one delivery again."""
    from db import webhooks as sql

    sub_id, one = _hook_id(webhook_id), _hook_id(delivery_id)

    async def work(db: Any) -> bool:
        if await sql.get_subscription(db, tenant, sub_id) is None:
            return False
        return await sql.replay(db, sub_id, one)

    if not _webhooks(work):
        _refuse(1, "webhook or delivery not found")
    console.print(f"{delivery_id}: due again")


# --- schedules: a tenant's cron and interval schedules ---


def _schedule_line(row: Any) -> str:
    timing = (
        f"cron '{row['cron']}' {row['timezone']}" if row["cron"] else f"every {row['every']:g}s"
    )
    name = f" {row['name']}" if row["name"] else ""
    state = "" if row["enabled"] else " (disabled)"
    next_at = row["next_run_at"].isoformat(timespec="seconds")
    return f"{row['id']}{name}  {row['flow']}  {timing}  next {next_at}{state}"


@schedules_app.command("list")
def schedules_list(tenant: Annotated[str, _HOOK_TENANT] = "default") -> None:
    """The tenant's schedules and their next ticks."""
    from db import schedules as sql

    for row in _webhooks(lambda db: sql.list_page(db, tenant, None, 10_000)):
        console.print(_schedule_line(row), highlight=False)


@schedules_app.command("create")
def schedules_create(
    flow: Annotated[str, typer.Argument(help="The flow to run")],
    cron: Annotated[str | None, typer.Option(help="5 cron fields, e.g. '*/5 * * * *'")] = None,
    every: Annotated[float | None, typer.Option(help="Seconds between runs")] = None,
    timezone: Annotated[str, typer.Option(help="The cron's IANA time zone")] = "UTC",
    input: Annotated[str, typer.Option("--input", help="The runs' input, as JSON")] = "{}",
    name: Annotated[str | None, typer.Option(help="A name unique in the tenant")] = None,
    version: Annotated[str | None, typer.Option(help="Default: the highest loaded")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled")] = False,
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Start runs of FLOW on a cron or fixed-interval schedule; prints the schedule."""
    from api.schedule_definitions import new_schedule
    from core.errors import Conflict, InvalidInput
    from db import schedules as sql

    try:
        data = json.loads(input)
    except json.JSONDecodeError as exc:
        _refuse(2, f"--input is not JSON: {exc}")
    if not isinstance(data, dict):
        _refuse(2, "--input must be a JSON object")
    registry = _loaded_flows(_settings().flow_modules)
    fields = {"flow": flow, "cron": cron, "every": every, "timezone": timezone, "input": data}
    fields.update(name=name, version=version, enabled=not disabled)

    async def work(db: Any) -> Any:
        row = new_schedule(registry, fields, tenant=tenant, by="cli", now=await db.now())
        return await sql.create(db, row)

    try:
        row = _webhooks(work)
    except InvalidInput as exc:
        errors = exc.errors or []
        _refuse(2, f"{exc.detail}:" if errors else exc.detail, *(_error_line(e) for e in errors))
    except Conflict as exc:
        _refuse(1, exc.detail)
    console.print(_schedule_line(row), highlight=False)


def _set_enabled(schedule_id: str, tenant: str, enabled: bool) -> None:
    from core.cron import first_tick
    from db import schedules as sql

    one = _hook_id(schedule_id)

    async def work(db: Any) -> Any:
        row = await sql.get(db, tenant, one)
        if row is None:
            return None
        values: dict[str, Any] = {"enabled": enabled}
        if enabled and not row["enabled"]:  # counts from now: no catch-up of the time off
            values["next_run_at"] = first_tick(
                row["cron"], row["every"], row["timezone"], await db.now()
            )
        await sql.change(db, tenant, one, values)
        return await sql.get(db, tenant, one)

    row = _webhooks(work)
    if row is None:
        _refuse(1, "schedule not found")
    console.print(_schedule_line(row), highlight=False)


@schedules_app.command("enable")
def schedules_enable(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Enable a schedule: its next tick counts from now."""
    _set_enabled(schedule_id, tenant, True)


@schedules_app.command("disable")
def schedules_disable(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Disable a schedule: no runs until it is enabled again."""
    _set_enabled(schedule_id, tenant, False)


@schedules_app.command("delete")
def schedules_delete(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id")],
    tenant: Annotated[str, _HOOK_TENANT] = "default",
) -> None:
    """Delete a schedule (the runs it started stay)."""
    from db import schedules as sql

    if not _webhooks(lambda db: sql.remove(db, tenant, _hook_id(schedule_id))):
        _refuse(1, "schedule not found")
    console.print(f"{schedule_id}: deleted")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
