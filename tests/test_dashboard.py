"""The dashboard at ``GET /ui`` in headless Chromium against a real ``pocketrun serve``.

One server and one browser for the module; each test opens its own tab (the key is kept
in the tab's session), records every request the tab makes and every script error, and
writes its page's screenshot to ``docs/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser_support import RequestLog, browser
from tests.security_support import api_key
from tests.support import ROOT, TEST_ADMIN_KEY, Server, wait_for_run, wait_until

DOCS = ROOT / "docs"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("dashboard")
    running = Server(
        f"sqlite+aiosqlite:///{tmp / 'pocketrun.db'}",
        env={"POCKETRUN_FLOWS": "tests.dashboard_flows"},
        log_path=tmp / "server.log",
    )
    yield running.start()
    running.kill()


@pytest.fixture(scope="module")
def context() -> Iterator[Any]:
    with browser() as ctx:
        yield ctx


class Tab:
    """One browser tab on the dashboard, with its request log."""

    def __init__(self, context: Any, server: Server) -> None:
        self.page = context.new_page()
        self.log = RequestLog(self.page)
        self.server = server

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.server.url}/ui{fragment}")
        return self.page

    def sign_in(self, key: str = TEST_ADMIN_KEY) -> Any:
        page = self.open()
        page.fill("#api-key", key)
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("#runs-table[data-loaded]")
        return page

    def go(self, fragment: str, ready: str) -> Any:
        self.page.evaluate("f => { location.hash = f }", fragment)
        self.page.wait_for_selector(ready)
        return self.page

    def node_states(self) -> dict[str, str]:
        return self.page.eval_on_selector_all(
            "#run-graph [data-node]",
            "els => Object.fromEntries(els.map(e => [e.dataset.node, e.dataset.state]))",
        )

    def status(self) -> str:
        return self.page.get_attribute(".page-head [data-status]", "data-status")

    def shot(self, name: str) -> None:
        DOCS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(DOCS / name), full_page=True)

    def close(self) -> None:
        """No request left 127.0.0.1 and no script failed while this tab was open."""
        self.page.close()
        assert self.log.foreign() == [], self.log.foreign()
        failures = [e for e in self.log.errors if "Failed to load resource" not in e]
        assert failures == []
        assert self.log.urls, "the tab made no requests at all"


@pytest.fixture
def tab(context: Any, server: Server) -> Iterator[Tab]:
    opened = Tab(context, server)
    yield opened
    opened.close()


def start(server: Server, flow: str, body: dict[str, Any], key: str = TEST_ADMIN_KEY) -> str:
    response = httpx.post(
        f"{server.url}/v1/flows/{flow}/runs",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code in (201, 202), response.text
    return response.json()["id"]


def test_sign_in_start_a_run_from_the_form_and_watch_its_nodes_turn_done_one_by_one(
    tab: Tab,
) -> None:
    page = tab.open()
    page.wait_for_selector("#api-key")
    tab.shot("ui-signin.png")
    tab.sign_in()
    page.evaluate("window.__sameDocument = 'yes'")  # gone if anything reloads the page
    tab.go("#/flows", "#flow-list[data-loaded] [data-flow='ui-stages'] svg")
    tab.shot("ui-flows.png")
    tab.go("#/flows/ui-stages", "#start-form")
    page.fill("#f-label", "first order")
    page.fill("#f-count", "3")
    page.click("[data-action=start]")
    page.wait_for_selector("#run-graph svg [data-node]")
    order = ["receive", "check", "pack", "ship"]
    seen: list[tuple[str, ...]] = []

    def done_so_far() -> bool:
        states = tab.node_states()
        done = tuple(n for n in order if states.get(n) == "done")
        if not seen or seen[-1] != done:
            seen.append(done)
        return len(done) == len(order)

    wait_until(done_so_far, 30, 0.05, "every node to turn done")
    # One by one, in the flow's order: every prefix of the path was on the page.
    assert [tuple(order[:k]) for k in range(len(order) + 1)] == seen or seen == [
        tuple(order[:k]) for k in range(1, len(order) + 1)
    ], seen
    page.wait_for_selector(".page-head [data-status=succeeded]")
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.inner_text("#stream-state") == "ended"
    assert page.locator("#timeline tr.step").count() == 4
    page.click("#timeline tr[data-seq='2']")
    page.wait_for_selector("#step-detail details")  # the step's delta
    assert "check" in page.inner_text("#step-detail")
    tab.shot("ui-run.png")


def test_a_field_error_from_the_form_s_422_appears_at_that_field(tab: Tab) -> None:
    tab.sign_in()
    page = tab.go("#/flows/ui-stages", "#start-form")
    page.fill("#f-label", "bad order")
    page.fill("#f-count", "0")
    page.click("[data-action=start]")
    page.wait_for_selector("[data-field=count].invalid")
    assert "greater than or equal to 1" in page.inner_text("[data-error-for=count]")
    assert page.inner_text("[data-error-for=label]") == ""
    assert "#/flows/ui-stages" in page.url  # no run was started: still on the form
    page.fill("#f-count", "many")
    page.click("[data-action=start]")
    page.wait_for_function(
        "() => document.querySelector('[data-error-for=count]').textContent.includes('integer')"
    )


def test_a_waiting_run_is_resumed_from_its_form_and_finishes(tab: Tab, server: Server) -> None:
    run_id = start(server, "ui-approval", {"input": {"order": 7}})
    tab.sign_in()
    page = tab.go(f"#/runs/{run_id}", "#resume-form")
    assert "Approve the order?" in page.inner_text("#waiting")
    wait_until(lambda: tab.node_states().get("approve") == "waiting", 10, 0.05, "waiting")
    page.fill("#f-note", "x")  # the schema's minLength is 2: the server says so at the field
    page.click("[data-action=resume]")
    page.wait_for_selector("[data-field=note].invalid")
    page.check("#f-approved")
    page.fill("#f-note", "ship it")
    page.click("[data-action=resume]")
    page.wait_for_selector(".page-head [data-status=succeeded]", timeout=20_000)
    wait_until(lambda: set(tab.node_states().values()) == {"done"}, 10, 0.05, "all done")
    with server.client() as client:
        run = client.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["output"]["recorded"] == {"approved": True, "note": "ship it"}


def test_a_failed_run_is_retried_from_the_page_and_succeeds(tab: Tab, server: Server) -> None:
    run_id = start(server, "ui-flaky", {"input": {}})
    with server.client() as client:
        assert wait_for_run(client, run_id)["status"] == "failed"
    tab.sign_in()
    page = tab.go(f"#/runs/{run_id}", "#run-controls [data-action=retry]")
    wait_until(lambda: tab.node_states().get("Flaky") == "failed", 10, 0.05, "Flaky failed")
    page.click("#timeline tr[data-seq='2']")
    page.wait_for_selector("#step-detail [data-traceback]")  # operators and up see it
    page.click("#run-controls [data-action=retry]")
    page.wait_for_selector(".page-head [data-status=succeeded]", timeout=20_000)
    wait_until(lambda: set(tab.node_states().values()) == {"done"}, 10, 0.05, "all done")
    with server.client() as client:
        run = client.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["retries"] == 1


def test_a_consumer_sees_no_control_it_may_not_use_and_a_forged_request_is_refused(
    tab: Tab, server: Server
) -> None:
    _, consumer = api_key(server, "consumer")
    theirs = start(server, "ui-flaky", {"input": {}}, key=consumer)
    admins = start(server, "ui-stages", {"input": {"label": "admin's", "count": 1}})
    with server.client() as client:
        assert wait_for_run(client, theirs)["status"] == "failed"
    page = tab.sign_in(consumer)
    assert page.locator("#nav [data-nav=ops]").count() == 0
    listed = page.eval_on_selector_all(
        "#runs-table tr[data-run]", "rs => rs.map(r => r.dataset.run)"
    )
    assert theirs in listed and admins not in listed  # its own runs only
    page = tab.go(f"#/runs/{theirs}", "[data-ready=true] #run-graph svg")
    page.click("#timeline tr[data-seq='2']")
    page.wait_for_selector("#step-detail .error-box")
    for action in ("retry", "replay", "pause", "unpause", "cancel"):
        assert page.locator(f"[data-action={action}]").count() == 0, action
    assert page.locator("[data-traceback]").count() == 0
    forged = page.evaluate(
        """async (id) => {
            const auth = {Authorization: `Bearer ${sessionStorage.getItem('pocketrun.key')}`};
            const post = async (path, body) => (await fetch(`/v1/runs/${id}/${path}`, {
                method: 'POST', headers: {...auth, 'Content-Type': 'application/json'},
                body: JSON.stringify(body)})).status;
            return {
                retry: await post('retry', {}),
                replay: await post('replay', {from_seq: 1}),
                pause: await post('pause', {}),
                workers: (await fetch('/v1/workers', {headers: auth})).status,
                other: (await fetch(`/v1/runs/${id.replace(/.$/, '0')}`, {headers: auth})).status,
            };
        }""",
        theirs,
    )
    assert forged == {"retry": 403, "replay": 403, "pause": 403, "workers": 403, "other": 404}
    with server.client() as client:
        assert client.get(f"/v1/runs/{theirs}").json()["status"] == "failed"
    page = tab.go(f"#/runs/{admins}", "#view p.form-error")
    assert "No such run" in page.inner_text("#view")


def test_no_request_leaves_127_0_0_1_while_any_page_loads(tab: Tab, server: Server) -> None:
    run_id = start(server, "ui-stages", {"input": {"label": "offline", "count": 2}})
    with server.client() as client:
        wait_for_run(client, run_id)
        nightly = {
            "flow": "ui-stages",
            "cron": "0 3 * * *",
            "input": {"label": "nightly", "count": 2},
        }
        made = client.post("/v1/schedules", json=nightly)
        assert made.status_code == 201, made.text
    page = tab.sign_in()
    tab.shot("ui-runs.png")
    for fragment, ready in [
        ("#/runs?status=succeeded", "#runs-table[data-loaded]"),
        (f"#/runs/{run_id}", "[data-ready=true] #run-graph svg"),
        ("#/flows", "#flow-list[data-loaded]"),
        ("#/flows/ui-approval", "#start-form"),
        ("#/ops", "#queue-depth"),
    ]:
        page.goto(f"{server.url}/ui{fragment}")
        page.wait_for_selector(ready)
        page.wait_for_load_state("networkidle")
    row = page.wait_for_selector(f"[data-schedule='{made.json()['id']}']")
    tab.shot("ui-operations.png")
    row.query_selector("button:text('Disable')").click()
    page.wait_for_selector(f"[data-schedule='{made.json()['id']}'] button:text('Enable')")
    with server.client() as client:
        assert client.get(f"/v1/schedules/{made.json()['id']}").json()["enabled"] is False
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    page.wait_for_load_state("networkidle")
    tab.shot("ui-docs.png")
    loaded = {u.split("?")[0] for u in tab.log.urls}
    assert f"{server.url}/ui/static/vendor/swagger-ui/swagger-ui-bundle.js" in loaded
    assert f"{server.url}/openapi.json" in loaded
    # tab.close() (the fixture) asserts that every URL requested was on 127.0.0.1


def test_the_dashboard_is_served_under_a_strict_content_security_policy(server: Server) -> None:
    page = httpx.get(f"{server.url}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert "<script>" not in page.text  # no inline script: only the module file
    asset = httpx.get(f"{server.url}/ui/static/app.js", timeout=10)
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    me = httpx.get(f"{server.url}/v1/me", timeout=10)
    assert me.status_code == 401  # the page is open; the data behind it is not
