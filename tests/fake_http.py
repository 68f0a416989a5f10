"""Small real HTTP servers for the catalog's tests: an echo service and a fake
OpenAI-compatible chat API, each on a free port in a thread of the test process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_LLM_KEY = "sk-test-fake-llm-key"


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _request(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": json.loads(raw) if raw else None,
        }
        self.seen.append(request)
        return request

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Echo(_Handler):
    """Answers every request with what it received; ``/status/N`` answers status N."""

    def _any(self) -> None:
        request = self._request()
        status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
        self._send(status, {"echo": request})

    do_GET = do_POST = do_PUT = do_DELETE = _any


class FakeChat(_Handler):
    """``POST /v1/chat/completions``: the reply is the last message, upper-cased."""

    def do_POST(self) -> None:
        request = self._request()
        if request["headers"].get("authorization") != f"Bearer {FAKE_LLM_KEY}":
            self._send(401, {"error": {"message": "bad key"}})
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "no such route"}})
            return
        last = request["body"]["messages"][-1]["content"]
        reply = {"role": "assistant", "content": last.upper()}
        self._send(
            200,
            {
                "id": "c1",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
            },
        )


@contextmanager
def serve(handler: type[_Handler]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(base URL, the requests it received) of a running server."""
    seen: list[dict[str, Any]] = []
    bound = type(handler.__name__, (handler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
