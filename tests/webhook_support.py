"""A real HTTP receiver for webhook tests, and the Standard Webhooks verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks: any ``v1,`` signature equal to HMAC-SHA256(id.timestamp.body)."""
    try:
        from standardwebhooks.webhooks import Webhook  # type: ignore[import-not-found]
    except ImportError:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split()]
        return any(hmac.compare_digest(expected, s) for s in given)
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


class Receiver:
    """Answers each POST with the next of ``codes`` (the last one repeats).

    ``hang`` seconds: every request waits that long first. A ``302`` redirects to /elsewhere.
    """

    def __init__(self, codes: list[int], hang: float = 0.0) -> None:
        self.codes, self.hang = list(codes), hang
        self.requests: list[dict[str, Any]] = []
        self.open = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.open += 1
                    index = len(receiver.requests)
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    code = receiver.codes[min(index, len(receiver.codes) - 1)]
                try:
                    if receiver.hang:
                        time.sleep(receiver.hang)
                    self.send_response(code)
                    if code == 302:
                        self.send_header("location", "/elsewhere")
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass
                finally:
                    with receiver.lock:
                        receiver.open -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
