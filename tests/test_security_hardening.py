"""Hostile input: strict JSON, bounded queries, CORS closed by default, quiet errors."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from api.hardening import strict_json_error
from tests.support import TEST_ADMIN_KEY, Server


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": {"name": NaN}}',
        b'{"input": {"name": Infinity}}',
        b'{"input": {"name": -Infinity}}',
        b'{"input": {"name": "a", "name": "b"}}',
        b'{"input": {}, "input": {"name": "b"}}',
        b'{"input": {"name": "\\ud800"}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ],
)
def test_strict_json_rejects(body: bytes) -> None:
    assert strict_json_error(body) is not None


def test_strict_json_accepts_plain_json() -> None:
    assert (
        strict_json_error(b'{"input": {"name": "\\ud83d\\ude00 ok", "n": [1, 2.5, null]}}') is None
    )
    assert strict_json_error(b"{not json") is None  # FastAPI reports malformed JSON itself


def test_hostile_requests_get_4xx_problems(server: Server) -> None:
    with server.client() as client:
        for body in (
            b'{"input": {"name": NaN}}',
            b'{"input": {"name": "a", "name": "b"}}',
            b'{"input": {"name": "\\udfff"}}',
            b"[" * 100_000,
            b"{not json",
        ):
            response = client.post(
                "/v1/flows/hello/runs", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, (body[:40], response.text)
            assert response.headers["content-type"] == "application/problem+json"
        big = client.post("/v1/flows/hello/runs", content=b" " * (2 * 1024 * 1024))
        assert big.status_code == 413
        long_query = client.get("/v1/runs?flow=" + "x" * 10_000)
        assert long_query.status_code == 414
        assert long_query.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/runs?limit=100000").status_code == 422
        assert client.get("/v1/runs/not-a-uuid").status_code == 404
        for response in (long_query, big):
            text = response.text.lower()
            assert "traceback" not in text and "sqlalchemy" not in text
        ok = client.get("/v1/flows")
        for header in ("x-content-type-options", "x-frame-options", "referrer-policy"):
            assert header in ok.headers
        # CORS is closed by default: no allow-origin, preflights are not answered
        cross = client.get("/v1/flows", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in cross.headers
        preflight = client.options(
            "/v1/flows",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def _post_raw(server: Server, body: bytes, *, chunked: bool = False) -> tuple[int, dict, bytes]:
    """POST ``body`` over a plain socket, all of it before reading, as a client that does
    not watch for an early answer does; (status, headers, body) of the answer."""
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        "POST /v1/flows/hello/runs HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {TEST_ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        f"{length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head)
        if chunked:
            step = 1024 * 1024
            for start in range(0, len(body), step):
                chunk = body[start : start + step]
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(body)
        answer = b""
        while data := sock.recv(65536):  # the server closes after a 413
            answer += data
    header_block, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, payload


def test_a_huge_body_gets_413_not_a_reset(server: Server) -> None:
    body = b'{"input": {"name": "' + b"x" * (20 * 1024 * 1024) + b'"}}'
    for chunked in (False,) * 5 + (True,) * 2:
        status, headers, payload = _post_raw(server, body, chunked=chunked)
        assert status == 413, (chunked, status, payload[:200])
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(payload)["status"] == 413
    with server.client() as client:  # the server goes on serving, and created nothing
        assert client.get("/v1/runs").json()["items"] == []


def test_cors_opens_only_to_configured_origins(server_factory) -> None:
    server = server_factory({"POCKETRUN_CORS_ORIGINS": "https://app.example"})
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    good = httpx.options(
        server.url + "/v1/flows/hello/runs", headers={"Origin": "https://app.example", **preflight}
    )
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://app.example"
    bad = httpx.options(
        server.url + "/v1/flows/hello/runs", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers


def test_keys_are_never_logged(server_factory, tmp_path) -> None:
    server = server_factory({"POCKETRUN_LOG_LEVEL": "DEBUG"})
    with server.client() as client:
        made = client.post("/v1/keys", json={"name": "n", "role": "consumer"}).json()["key"]
        httpx.get(server.url + "/v1/flows", headers={"Authorization": f"Bearer {made}"})
        httpx.get(server.url + "/v1/flows", headers={"Authorization": "Bearer prk_wrong"})
        client.post("/v1/flows/hello/runs?wait=5", json={"input": {"name": "log"}})
    text = (tmp_path / "server0.log").read_text()
    assert made not in text and TEST_ADMIN_KEY not in text and "prk_wrong" not in text
