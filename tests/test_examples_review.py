"""The `review` example through a real server: the run waits for a person, and what the
person answers (approve, edit, reject) decides what the agent does next."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from nodes.drafting import REVIEW_SCHEMA, AskReviewer, compose
from tests.support import Server, wait_for_run

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
SERVER_ENV = {"POCKETRUN_SWEEP_INTERVAL": "0.3"}


def start(client: httpx.Client, data: dict[str, Any]) -> str:
    response = client.post("/v1/flows/review/runs", json={"input": data})
    assert response.status_code in (201, 202), response.text
    return response.json()["id"]


def waiting(client: httpx.Client, run_id: str, steps: int) -> dict[str, Any]:
    """The run once it waits again, after ``steps`` committed steps."""
    run = wait_for_run(client, run_id, {"waiting", "succeeded", "failed"})
    while run["status"] == "waiting" and run["steps"] < steps:
        run = wait_for_run(client, run_id, {"waiting", "succeeded", "failed"})
    assert (run["status"], run["steps"]) == ("waiting", steps), run
    return run


def resume(client: httpx.Client, run_id: str, payload: Any) -> httpx.Response:
    return client.post(f"/v1/runs/{run_id}/resume", json={"payload": payload})


@pytest.fixture
def review_server(server_factory) -> Server:
    return server_factory(SERVER_ENV)


@SQLITE_ONLY
def test_a_reviewers_edit_becomes_the_final_text(review_server: Server) -> None:
    with review_server.client() as client:
        run_id = start(client, {"topic": "release notes"})
        run = waiting(client, run_id, 1)
        draft = compose("release notes", 1, None)
        assert run["waiting_for"]["node"] == "AskReviewer"
        request = run["waiting_for"]["request"]
        assert request["schema"] == REVIEW_SCHEMA
        assert request["prompt"].endswith(draft)
        assert "timeout" not in request

        bad = resume(client, run_id, {"approved": "sure", "edit": ""})
        assert bad.status_code == 422
        paths = {e["path"] for e in bad.json()["errors"]}
        assert paths == {"body.payload.approved", "body.payload.edit"}
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "waiting"

        edit = "Release notes: three fixes, one new verb, nothing breaks."
        assert resume(client, run_id, {"approved": True, "edit": edit}).status_code == 200
        done = wait_for_run(client, run_id)
    assert done["status"] == "succeeded"
    assert done["output"] == {
        "final": edit,
        "outcome": "edited",
        "round": 1,
        "drafts": [draft],
        "reviews": [{"approved": True, "edit": edit}],
    }


@SQLITE_ONLY
def test_a_rejection_makes_the_agent_draft_again_from_the_note(review_server: Server) -> None:
    with review_server.client() as client:
        run_id = start(client, {"topic": "the outage", "rounds": 2})
        waiting(client, run_id, 1)
        assert resume(client, run_id, {"approved": False, "edit": "say who"}).status_code == 200
        second = waiting(client, run_id, 3)  # the answered review, then draft 2
        revised = compose("the outage", 2, "say who")
        assert second["waiting_for"]["request"]["prompt"].endswith(revised)
        assert "revised for: say who" in revised
        assert resume(client, run_id, {"approved": True}).status_code == 200
        done = wait_for_run(client, run_id)
    assert done["status"] == "succeeded"
    assert (done["output"]["final"], done["output"]["outcome"]) == (revised, "approved")
    assert done["output"]["round"] == 2


@SQLITE_ONLY
def test_the_agent_gives_up_after_its_rounds_of_rejections(review_server: Server) -> None:
    with review_server.client() as client:
        run_id = start(client, {"rounds": 1})
        waiting(client, run_id, 1)
        assert resume(client, run_id, {"approved": False}).status_code == 200
        done = wait_for_run(client, run_id)
    assert done["status"] == "succeeded"
    assert (done["output"]["final"], done["output"]["outcome"]) == (None, "rejected")


@SQLITE_ONLY
def test_a_review_not_given_within_the_timeout_ends_the_run(review_server: Server) -> None:
    with review_server.client() as client:
        run_id = start(client, {"timeout": 0.5})
        run = waiting(client, run_id, 1)
        assert run["waiting_for"]["request"]["timeout"] == 0.5
        assert run["wake_at"] is not None
        done = wait_for_run(client, run_id, timeout=30)
        assert done["status"] == "timed_out"
        assert resume(client, run_id, {"approved": True}).status_code == 409


def test_plain_pocketflow_runs_the_same_flow_with_answers_from_ask(monkeypatch) -> None:
    from flows.examples.review import ReviewIn, build

    answers = iter([{"approved": False, "edit": "shorter"}, {"approved": True, "edit": "Short."}])
    monkeypatch.setattr(AskReviewer, "ask", lambda self, request: next(answers))
    shared = ReviewIn(topic="plain runs").model_dump(mode="json")
    build().run(shared)
    assert (shared["final"], shared["outcome"], shared["round"]) == ("Short.", "edited", 2)
    assert shared["drafts"][1] == compose("plain runs", 2, "shorter")
