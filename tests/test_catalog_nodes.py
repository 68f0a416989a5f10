"""Each catalog node type (nodes/catalog.py), run as plain PocketFlow inside a declarative
flow: what it writes to the shared store, how it routes, what it refuses. HTTP calls go to
real servers in this process (tests/fake_http.py). The server-side node types
(``ask_human``, ``subflow``) also run through a real server in test_declarative."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import FlowDefinitionError
from core.settings import get_settings
from flows.declarative import register_document
from flows.registry import REGISTRY, Registry, register
from nodes.catalog import CATALOG
from nodes.expressions import Expression, ExpressionError
from nodes.human import AskHuman
from tests.fake_http import FAKE_LLM_KEY, Echo, FakeChat, serve

CATALOG_TYPES = {
    "ask_human",
    "branch",
    "http_request",
    "json_schema",
    "llm_chat",
    "subflow",
    "template",
}


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment changes the nodes see: settings are read again after each."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def flow_of(nodes: dict[str, Any], edges: list[dict[str, str]] | None = None, **doc: Any):
    document = {"name": "t", "start": next(iter(nodes)), "nodes": nodes, "edges": edges or []}
    return register_document({**document, **doc}, registry=Registry())


def run(nodes: dict[str, Any], shared: dict[str, Any], edges=None) -> dict[str, Any]:
    flow, _ = flow_of(nodes, edges).instantiate()
    flow.run(shared)
    return shared


def test_the_catalog_lists_every_built_in_type_with_params_schema_and_actions() -> None:
    import flows.declarative  # noqa: F401  (what the API loads)

    described = {entry.name: entry.describe() for entry in CATALOG.all()}
    assert set(described) >= CATALOG_TYPES
    assert described["json_schema"]["actions"] == ["valid", "invalid"]
    assert described["http_request"]["params"]["properties"]["url"]["type"] == "string"
    assert "url" in described["http_request"]["params"]["required"]


# --- template --------------------------------------------------------------------------


def test_template_fills_paths_and_a_lone_hole_keeps_the_value_type() -> None:
    shared = run(
        {
            "t": {
                "type": "template",
                "params": {
                    "set": {
                        "greeting": "Hello, {user.name}! {{literal}}",
                        "total": "{order.items.1}",
                        "copy": {"who": "{user}", "list": ["{order.items.0}", "x"]},
                    }
                },
            }
        },
        {"user": {"name": "Ada"}, "order": {"items": [3, 4.5]}},
    )
    assert shared["greeting"] == "Hello, Ada! {literal}"
    assert shared["total"] == 4.5
    assert shared["copy"] == {"who": {"name": "Ada"}, "list": [3, "x"]}


def test_template_refuses_a_missing_path_at_run_time_and_a_stray_brace_at_compile_time():
    with pytest.raises(ValueError, match=r"'user\.email' is not in the shared store"):
        run({"t": {"type": "template", "params": {"set": {"x": "{user.email}"}}}}, {"user": {}})
    with pytest.raises(FlowDefinitionError) as caught:
        flow_of({"t": {"type": "template", "params": {"set": {"x": "a { b"}}}})
    assert caught.value.errors[0]["path"].startswith("nodes.t.params.set")


# --- branch ----------------------------------------------------------------------------


def _branch(shared: dict[str, Any]) -> dict[str, Any]:
    nodes = {
        "route": {
            "type": "branch",
            "params": {
                "cases": [
                    {"when": 'amount > 100 and customer.tier == "gold"', "action": "vip"},
                    {"when": "status in ['new', 'open'] or not flagged", "action": "open"},
                ],
                "otherwise": "rest",
            },
        },
        "vip": {"type": "template", "params": {"set": {"went": "vip"}}},
        "open": {"type": "template", "params": {"set": {"went": "open"}}},
        "rest": {"type": "template", "params": {"set": {"went": "rest"}}},
    }
    edges = [{"from": "route", "to": n, "action": n} for n in ("vip", "open", "rest")]
    return run(nodes, shared, edges)


def test_branch_routes_by_the_first_case_that_holds() -> None:
    gold = {"amount": 150, "customer": {"tier": "gold"}, "flagged": True}
    assert _branch(gold)["went"] == "vip"
    assert _branch({**gold, "amount": 50, "status": "open"})["went"] == "open"
    assert _branch({"amount": 50, "flagged": False})["went"] == "open"  # missing is null
    assert _branch({"amount": 50, "flagged": True, "status": "done"})["went"] == "rest"


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "amount.__class__",
        "x + 1 > 2",
        "(lambda: 1)()",
        "[c for c in 'ab']",
        "a if b else c",
        "x[1:2]",
        "open('/etc/passwd')",
    ],
)
def test_branch_expressions_accept_no_code(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(text)


def test_branch_refuses_an_edge_for_an_action_it_never_returns() -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        flow_of(
            {
                "route": {"type": "branch", "params": {"cases": [{"when": "a", "action": "yes"}]}},
                "next": {"type": "template", "params": {"set": {"x": 1}}},
            },
            [{"from": "route", "to": "next", "action": "yse"}],
        )
    assert caught.value.errors[0]["path"] == "edges.0.action"
    assert "never 'yse'" in caught.value.errors[0]["msg"]


def test_branch_comparing_unlike_types_fails_the_step_saying_so() -> None:
    with pytest.raises(ExpressionError, match="can't compare"):
        Expression("amount > 3").evaluate({"amount": "many"})


# --- json_schema -----------------------------------------------------------------------


def test_json_schema_routes_valid_and_invalid_with_the_reasons() -> None:
    schema = {
        "type": "object",
        "properties": {"qty": {"type": "integer", "minimum": 1}},
        "required": ["qty"],
    }
    nodes = {
        "check": {"type": "json_schema", "params": {"schema": schema, "value": "order"}},
        "ok": {"type": "template", "params": {"set": {"went": "ok"}}},
        "bad": {"type": "template", "params": {"set": {"went": "bad"}}},
    }
    edges = [
        {"from": "check", "to": "ok", "action": "valid"},
        {"from": "check", "to": "bad", "action": "invalid"},
    ]
    assert run(nodes, {"order": {"qty": 2}}, edges)["went"] == "ok"
    shared = run(nodes, {"order": {"qty": 0}}, edges)
    assert shared["went"] == "bad"
    assert shared["validation_errors"] == [
        {"path": "qty", "message": "0 is less than the minimum of 1"}
    ]


def test_json_schema_refuses_a_schema_that_is_not_one() -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        flow_of({"check": {"type": "json_schema", "params": {"schema": {"type": "banana"}}}})
    assert caught.value.errors[0]["path"] == "nodes.check.params.schema"


# --- http_request ----------------------------------------------------------------------


def test_http_request_sends_the_templated_request_and_stores_the_answer(settings_env) -> None:
    settings_env.setenv("POCKETRUN_HTTP_ALLOW_PRIVATE", "true")
    with serve(Echo) as (base, seen):
        shared = run(
            {
                "call": {
                    "type": "http_request",
                    "params": {
                        "method": "POST",
                        "url": base + "/orders/{order.id}",
                        "headers": {"X-Customer": "{customer}"},
                        "body": {"qty": "{order.qty}", "note": "for {customer}"},
                        "result": "answer",
                    },
                }
            },
            {"order": {"id": 7, "qty": 3}, "customer": "ada"},
        )
    assert seen[0]["path"] == "/orders/7"
    assert seen[0]["headers"]["x-customer"] == "ada"
    assert seen[0]["body"] == {"qty": 3, "note": "for ada"}
    assert shared["answer"]["status"] == 200
    assert shared["answer"]["body"]["echo"]["method"] == "POST"


def test_http_request_fails_or_routes_error_on_a_4xx(settings_env) -> None:
    settings_env.setenv("POCKETRUN_HTTP_ALLOW_PRIVATE", "true")
    with serve(Echo) as (base, _):
        with pytest.raises(RuntimeError, match="answered 404"):
            run({"call": {"type": "http_request", "params": {"url": base + "/status/404"}}}, {})
        shared = run(
            {
                "call": {
                    "type": "http_request",
                    "params": {"url": base + "/status/503", "on_error": "route"},
                },
                "oops": {"type": "template", "params": {"set": {"went": "error"}}},
            },
            {},
            [{"from": "call", "to": "oops", "action": "error"}],
        )
    assert shared["went"] == "error"
    assert shared["response"]["status"] == 503


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254", "10.0.0.1"])
def test_http_request_refuses_private_addresses_by_default(settings_env, host: str) -> None:
    settings_env.delenv("POCKETRUN_HTTP_ALLOW_PRIVATE", raising=False)
    with serve(Echo) as (base, seen):
        port = base.rsplit(":", 1)[1]
        with pytest.raises(ValueError, match="POCKETRUN_HTTP_ALLOW_PRIVATE"):
            run(
                {
                    "call": {
                        "type": "http_request",
                        "params": {"url": f"http://{host}:{port}/x", "timeout": 2},
                    }
                },
                {},
            )
    assert seen == []  # nothing was sent


# --- llm_chat --------------------------------------------------------------------------


def test_llm_chat_calls_the_openai_compatible_api_from_settings(settings_env) -> None:
    with serve(FakeChat) as (base, seen):
        settings_env.setenv("POCKETRUN_LLM_BASE_URL", base + "/v1")
        settings_env.setenv("POCKETRUN_LLM_API_KEY", FAKE_LLM_KEY)
        shared = run(
            {
                "ask": {
                    "type": "llm_chat",
                    "params": {
                        "model": "fake-1",
                        "messages": [
                            {"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "summarise {doc.title}"},
                        ],
                        "temperature": 0,
                        "result": "summary",
                    },
                }
            },
            {"doc": {"title": "the report"}},
        )
    assert shared["summary"] == "SUMMARISE THE REPORT"
    assert seen[0]["body"] == {
        "model": "fake-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "summarise the report"},
        ],
        "temperature": 0,
    }


def test_llm_chat_says_what_is_missing_or_wrong(settings_env) -> None:
    node = {
        "ask": {
            "type": "llm_chat",
            "params": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        }
    }
    settings_env.delenv("POCKETRUN_LLM_BASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="POCKETRUN_LLM_BASE_URL is not set"):
        run(node, {})
    with serve(FakeChat) as (base, _):
        settings_env.setenv("POCKETRUN_LLM_BASE_URL", base + "/v1")
        settings_env.setenv("POCKETRUN_LLM_API_KEY", "sk-wrong")
        get_settings.cache_clear()
        with pytest.raises(RuntimeError, match="answered 401"):
            run(node, {})


# --- ask_human and subflow -------------------------------------------------------------


def test_ask_human_is_an_askhuman_whose_prompt_is_a_template() -> None:
    spec = flow_of(
        {
            "ask": {
                "type": "ask_human",
                "params": {
                    "prompt": "Approve {amount}?",
                    "schema": {"type": "object"},
                    "timeout": 60,
                    "key": "ok",
                },
            }
        }
    )
    _, graph = spec.instantiate()
    node = graph["ask"].obj
    assert isinstance(node, AskHuman)
    assert node.prep({"amount": 12}) == {
        "prompt": "Approve 12?",
        "schema": {"type": "object"},
        "timeout": 60.0,
    }


def test_subflow_runs_a_registered_flow_inline_pinned_to_its_version() -> None:
    def inner_doc(version: str, word: str) -> dict[str, Any]:
        return {
            "name": "catalog-inner",
            "version": version,
            "start": "w",
            "nodes": {"w": {"type": "template", "params": {"set": {"word": word}}}},
        }

    register_document(inner_doc("1", "one"), registry=REGISTRY)
    outer = flow_of(
        {
            "call": {"type": "subflow", "params": {"flow": "catalog-inner"}},
            "after": {"type": "template", "params": {"set": {"after": "{word}"}}},
        },
        [{"from": "call", "to": "after"}],
    )
    assert [n["id"] for n in outer.graph.to_json()["nodes"]] == ["call", "call/w", "after"]
    register_document(inner_doc("2", "two"), registry=REGISTRY)  # later versions change nothing
    flow, _ = outer.instantiate()
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert shared == {"word": "one", "after": "one"}


def test_subflow_of_an_unknown_flow_names_the_node() -> None:
    with pytest.raises(FlowDefinitionError) as caught:
        flow_of({"call": {"type": "subflow", "params": {"flow": "no-such-flow"}}})
    assert caught.value.errors[0]["path"] == "nodes.call.params"
    assert "no-such-flow" in caught.value.errors[0]["msg"]


def test_a_coded_flow_may_use_catalog_nodes_too() -> None:
    from pocketflow import Flow

    from nodes.transform import Template, TemplateParams

    def build() -> Flow:
        return Flow(start=Template(TemplateParams(set={"x": "{a}"})))

    spec = register("catalog-coded", build, registry=Registry())
    flow, _ = spec.instantiate()
    shared = {"a": 5}
    flow.run(shared)
    assert shared == {"a": 5, "x": 5}
