"""Schedules (issue: schedules, webhooks, fairness and caching).

Real servers and workers: bad cron text, unknown flows and inputs the flow refuses are
422s naming the field; a schedule starts one run per tick, stops when disabled and goes on
when enabled; schedules declared in code are declared once however many processes load
them; three API processes and two Celery workers fire each tick exactly once, and after
all of them were down a schedule catches up once, not once per missed tick.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from core.cron import cron_problem, first_tick, next_of, tick_after
from core.errors import FlowDefinitionError
from flows.registry import Registry, Schedule, register
from tests import celery_support as cs
from tests.schedule_flows import Greeting, build_greet
from tests.security_support import bearer, cli_key, pocketrun
from tests.support import Server, wait_until

pg, redis_server, start_worker = cs.pg, cs.redis_server, cs.start_worker

FLOWS = "tests.edge_flows,tests.schedule_flows"
ENV = {"POCKETRUN_FLOWS": FLOWS, "POCKETRUN_SCHEDULE_POLL": "0.5"}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _runs_of(client: httpx.Client, schedule_id: str, flow: str = "greet") -> list[dict]:
    """The schedule's runs, oldest tick first."""
    found, cursor = [], None
    while True:
        params: dict[str, Any] = {"flow": flow, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/v1/runs", params=params).json()
        found += [r for r in body["items"] if r["trigger"].get("id") == schedule_id]
        cursor = body["next_cursor"]
        if not cursor:
            return sorted(found, key=lambda r: r["trigger"]["tick"])


def _at_least(client: httpx.Client, schedule_id: str, count: int, flow: str = "greet") -> list:
    def enough() -> list[dict] | None:
        found = _runs_of(client, schedule_id, flow)
        return found if len(found) >= count else None

    return wait_until(enough, 30, 0.2, f"{count} runs of schedule {schedule_id}")


def _create(client: httpx.Client, **body: Any) -> dict:
    response = client.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# ----------------------------------------------------------------------------------------
# ticks


def test_cron_ticks_follow_the_time_zone_and_intervals_keep_their_grid() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    before_dst = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)
    first = first_tick("30 9 * * *", None, "Europe/Berlin", before_dst)
    assert first == datetime(2026, 3, 29, 9, 30, tzinfo=berlin).astimezone(UTC)
    assert first.utcoffset() == timedelta(0) and first.hour == 7  # CEST: UTC+2
    winter = next_of("30 9 * * *", None, "Europe/Berlin", datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    assert winter.hour == 8  # CET: UTC+1
    start = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert next_of(None, 10, "UTC", start) == start + timedelta(seconds=10)
    # 35 s late: the grid stays on the tens, the next tick is the first after now
    late = tick_after(None, 10, "UTC", start, start + timedelta(seconds=35))
    assert late == start + timedelta(seconds=40)
    assert tick_after("0 * * * *", None, "UTC", start, start + timedelta(hours=5, minutes=1)) == (
        start + timedelta(hours=6)
    )
    assert cron_problem("61 * * * *") and cron_problem("* * * *") and cron_problem("x")
    assert cron_problem("*/5 * * * *") is None and cron_problem("@hourly") is None


def test_schedules_in_code_are_checked_when_the_flow_registers() -> None:
    cases = [
        (Schedule(), "exactly one of cron and every"),
        (Schedule(cron="* * * * *", every=5), "exactly one of cron and every"),
        (Schedule(cron="99 * * * *"), "not a valid cron"),
        (Schedule(every=0.01), "every must be between"),
        (Schedule(every=5, timezone="Mars/Olympus"), "unknown time zone"),
        (Schedule(every=5, input={"name": ""}), "input does not match"),
    ]
    for schedule, message in cases:
        with pytest.raises(FlowDefinitionError) as caught:
            register(
                "greet", build_greet, input=Greeting, registry=Registry(), schedules=[schedule]
            )
        assert message in caught.value.detail and "flow 'greet'" in caught.value.detail
    spec = register(
        "greet",
        build_greet,
        registry=Registry(),
        schedules=[Schedule(every=5, input={"name": "x"})],
    )
    assert spec.schedules[0].name == "greet/0"


# ----------------------------------------------------------------------------------------
# the API


def test_bad_schedules_are_422s_that_name_the_field(server_factory, db_url: str) -> None:
    server: Server = server_factory(ENV)
    good = {"flow": "greet", "every": 60, "input": {"name": "a"}}
    cases = [
        ({**good, "every": None, "cron": "61 * * * *"}, "body.cron"),
        ({**good, "every": None, "cron": "* * *"}, "body.cron"),
        ({**good, "cron": "* * * * *"}, "body.cron"),  # both
        ({"flow": "greet", "input": {"name": "a"}}, "body.cron"),  # neither
        ({**good, "every": 0.2}, "body.every"),
        ({**good, "timezone": "Nowhere/City"}, "body.timezone"),
        ({**good, "flow": "no-such-flow"}, "body.flow"),
        ({**good, "version": "99"}, "body.version"),
        ({**good, "input": {"name": ""}}, "body.input.name"),
        ({**good, "input": {"name": "a", "times": 11}}, "body.input.times"),
        ({**good, "input": {}}, "body.input.name"),
        ({**good, "input": {"name": "a\u0000b"}}, "body.input.name"),
        ({**good, "enabled": "yes"}, "body.enabled"),
        ({**good, "colour": "red"}, "body.colour"),
    ]
    with server.client() as client:
        for body, path in cases:
            response = client.post("/v1/schedules", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            paths = [e["path"] for e in response.json()["errors"]]
            assert path in paths, (body, paths)
        made = _create(client, **good)
        for patch, path in [
            ({"cron": "nope"}, "body.cron"),
            ({"every": -1}, "body.every"),
            ({"input": {"name": ""}}, "body.input.name"),
            ({"timezone": "UTC+99"}, "body.timezone"),
        ]:
            response = client.patch(f"/v1/schedules/{made['id']}", json=patch)
            assert response.status_code == 422, (patch, response.text)
            assert path in [e["path"] for e in response.json()["errors"]], response.text
        unchanged = client.get(f"/v1/schedules/{made['id']}").json()
        assert unchanged["every"] == 60 and unchanged["input"] == {"name": "a"}, unchanged
        assert client.get("/v1/schedules").json()["items"] == [unchanged]


def test_a_schedule_starts_one_run_per_tick_until_it_is_disabled(
    server_factory, db_url: str
) -> None:
    server: Server = server_factory(ENV)
    with server.client() as client:
        made = _create(client, flow="greet", every=1, input={"name": "clock", "times": 2})
        created = _moment(made["created_at"])
        assert _moment(made["next_run_at"]) == created + timedelta(seconds=1)
        assert made["enabled"] is True and made["last_run_id"] is None

        runs = _at_least(client, made["id"], 3)
        ticks = [_moment(r["trigger"]["tick"]) for r in runs]
        assert ticks[:3] == [created + timedelta(seconds=n) for n in (1, 2, 3)], ticks
        assert {r["trigger"]["type"] for r in runs} == {"schedule"}
        for run in runs:
            assert _moment(run["created_at"]) >= _moment(run["trigger"]["tick"])
        done = wait_until(
            lambda: all(
                client.get(f"/v1/runs/{r['id']}").json()["status"] == "succeeded" for r in runs
            ),
            20,
        )
        assert done
        output = client.get(f"/v1/runs/{runs[0]['id']}").json()["output"]
        assert output == {"greeting": "hello clock hello clock"}

        off = client.patch(f"/v1/schedules/{made['id']}", json={"enabled": False})
        assert off.status_code == 200 and off.json()["enabled"] is False, off.text
        assert off.json()["last_run_id"] is not None
        settled = len(_runs_of(client, made["id"]))
        time.sleep(2.5)
        assert len(_runs_of(client, made["id"])) == settled  # nothing while disabled

        on = client.patch(f"/v1/schedules/{made['id']}", json={"enabled": True}).json()
        # enabled again, it counts from now: the ticks it was off are not caught up
        assert _moment(on["next_run_at"]) > _moment(on["updated_at"])
        wait_until(lambda: len(_runs_of(client, made["id"])) >= settled + 2, 20)
        resumed = _runs_of(client, made["id"])[settled:]
        assert _moment(resumed[0]["trigger"]["tick"]) == _moment(on["next_run_at"])

        assert client.delete(f"/v1/schedules/{made['id']}").status_code == 204
        assert client.get(f"/v1/schedules/{made['id']}").status_code == 404
        left = len(_runs_of(client, made["id"]))
        time.sleep(1.5)
        assert len(_runs_of(client, made["id"])) == left  # the runs stay, no more come
        assert left >= settled + 2


def test_schedules_belong_to_their_tenant_and_consumers_may_not_manage_them(
    server_factory, db_url: str
) -> None:
    server: Server = server_factory(ENV)
    keys = {
        (role, tenant): cli_key(db_url, role, tenant)
        for role, tenant in [("operator", "a"), ("operator", "b"), ("consumer", "a")]
    }

    def client(role: str, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=bearer(keys[role, tenant]), timeout=30)

    body = {"flow": "greet", "cron": "0 3 * * *", "timezone": "Asia/Tokyo", "input": {"name": "a"}}
    with client("operator", "a") as a, client("operator", "b") as b, client("consumer", "a") as c:
        made = _create(a, **body)
        assert _moment(made["next_run_at"]).astimezone(ZoneInfo("Asia/Tokyo")).hour == 3
        assert b.get(f"/v1/schedules/{made['id']}").status_code == 404
        assert b.patch(f"/v1/schedules/{made['id']}", json={"enabled": False}).status_code == 404
        assert b.delete(f"/v1/schedules/{made['id']}").status_code == 404
        assert b.get("/v1/schedules").json()["items"] == []
        assert c.post("/v1/schedules", json=body).status_code == 403
        assert c.get("/v1/schedules").status_code == 403
        assert c.delete(f"/v1/schedules/{made['id']}").status_code == 403
        assert a.get(f"/v1/schedules/{made['id']}").json()["enabled"] is True
        named = _create(a, **body, name="nightly")
        again = a.post("/v1/schedules", json={**body, "name": "nightly"})
        assert again.status_code == 409, again.text
        assert _create(b, **body, name="nightly")["name"] == "nightly"  # b's own name
        assert {s["id"] for s in a.get("/v1/schedules").json()["items"]} == {
            made["id"],
            named["id"],
        }


def test_the_cli_creates_lists_disables_and_deletes_schedules(server_factory, db_url: str) -> None:
    env = {"POCKETRUN_FLOWS": FLOWS}

    def cli(*args: str) -> Any:
        return pocketrun(db_url, "schedules", *args, env=env)

    bad = cli("create", "greet", "--cron", "61 * * * *", "--input", '{"name": "c"}')
    assert bad.returncode == 2 and "cron:" in bad.stderr, bad.stderr
    bad = cli("create", "greet", "--every", "60", "--input", '{"times": 3}')
    assert bad.returncode == 2 and "input.name:" in bad.stderr, bad.stderr
    assert cli("create", "nope", "--every", "60").returncode == 2
    made = cli("create", "greet", "--every", "1", "--input", '{"name": "cli"}', "--name", "c1")
    assert made.returncode == 0, made.stderr
    schedule_id = made.stdout.split()[0]
    assert "every 1s" in made.stdout and "c1" in made.stdout
    assert schedule_id in cli("list").stdout
    server: Server = server_factory(ENV)
    with server.client() as client:
        runs = _at_least(client, schedule_id, 2)
        assert {r["trigger"]["type"] for r in runs} == {"schedule"}
        off = cli("disable", schedule_id)
        assert off.returncode == 0 and "(disabled)" in off.stdout, off.stdout
        assert client.get(f"/v1/schedules/{schedule_id}").json()["enabled"] is False
        assert cli("enable", schedule_id).returncode == 0
        assert client.get(f"/v1/schedules/{schedule_id}").json()["enabled"] is True
        assert cli("delete", schedule_id).returncode == 0
        assert client.get(f"/v1/schedules/{schedule_id}").status_code == 404
    assert cli("delete", schedule_id).returncode == 1
    assert schedule_id not in cli("list").stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_schedule_in_code_is_declared_once_and_fired_once_by_two_servers(
    server_factory, db_url: str
) -> None:
    env = {**ENV, "POCKETRUN_FLOWS": FLOWS + ",tests.schedule_code_flows"}
    first: Server = server_factory(env)
    second: Server = server_factory(env)
    with first.client() as client:
        listed = wait_until(lambda: client.get("/v1/schedules").json()["items"] or None, 10)
        assert [s["name"] for s in listed] == ["ticker-every-second"]
        assert listed[0]["created_by"] == "code" and listed[0]["every"] == 1
        schedule_id = listed[0]["id"]
        runs = _at_least(client, schedule_id, 5, "ticker")
        ticks = [r["trigger"]["tick"] for r in runs]
        assert len(set(ticks)) == len(ticks), ticks  # two schedulers, one run a tick
        steps = [_moment(b) - _moment(a) for a, b in itertools.pairwise(ticks)]
        assert set(steps) == {timedelta(seconds=1)}, ticks
    second.stop()
    third = server_factory(env)  # a restart declares it again: still one schedule
    with third.client() as client:
        assert [s["id"] for s in client.get("/v1/schedules").json()["items"]] == [schedule_id]


# ----------------------------------------------------------------------------------------
# the cluster


CLUSTER_ENV = {
    "POCKETRUN_FLOWS": "tests.edge_flows,tests.celery_support,tests.schedule_flows",
    "POCKETRUN_SCHEDULE_POLL": "0.5",
    "POCKETRUN_SCHEDULER": "true",
}


def _cluster_ticks(url: str, schedule_id: str) -> list[datetime]:
    rows = cs.fetch(
        url,
        "SELECT trigger->>'tick' AS tick FROM runs WHERE trigger->>'id' = $1 ORDER BY 1",
        schedule_id,
    )
    return [_moment(r["tick"]) for r in rows]


def test_three_api_processes_and_two_workers_fire_each_tick_once_and_catch_up_once(
    pg: str, redis_server, start_worker, tmp_path: Path
) -> None:
    env = {**cs.worker_env(pg, redis_server.url), **CLUSTER_ENV}

    def start_all(round_: int) -> list[Any]:
        workers = [
            start_worker(f"sched-{round_}-{n}", concurrency=1, env=CLUSTER_ENV) for n in range(2)
        ]
        servers = [
            Server(pg, env=env, log_path=tmp_path / f"api-{round_}-{n}.log") for n in range(3)
        ]
        for server in servers:
            server.start()
        for worker in workers:
            worker.wait_ready()
        return [*servers, *workers]

    def stop_all(processes: list[Any]) -> None:
        for process in processes:
            process.stop()

    processes = start_all(0)
    try:
        with processes[0].client() as client:
            made = _create(client, flow="celery-tiny", every=1, input={})
        time.sleep(20)
        stop_all(processes)
        stopped = datetime.now(UTC)
        before = _cluster_ticks(pg, made["id"])
        time.sleep(5)
        restarted = datetime.now(UTC)
        processes = start_all(1)
        time.sleep(4)
        after = _cluster_ticks(pg, made["id"])
        stop_all(processes)
    finally:
        for process in processes:
            process.kill()

    first = _moment(made["created_at"]) + timedelta(seconds=1)
    # before the stop: one run for every tick from the first on, none missing, none twice
    assert before == [first + timedelta(seconds=n) for n in range(len(before))], before
    assert len(before) >= 18, before
    assert before[-1] <= stopped
    # after: one run for the ticks missed while all were down, then a tick a second again
    later = after[len(before) :]
    assert after[: len(before)] == before
    missed = [t for t in later if t < restarted]
    assert missed == [before[-1] + timedelta(seconds=1)], (missed, restarted)
    resumed = later[1:]
    assert len(resumed) >= 2, later
    assert resumed[0] > restarted
    assert resumed == [resumed[0] + timedelta(seconds=n) for n in range(len(resumed))], later
    statuses = cs.fetch(
        pg, "SELECT DISTINCT status FROM runs WHERE trigger->>'id' = $1", made["id"]
    )
    assert {r["status"] for r in statuses} <= {"succeeded", "queued", "running"}
