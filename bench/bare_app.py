"""The bare endpoint ``bench.api`` compares against: FastAPI, one route, a small JSON.

    .venv/bin/python -m bench.bare_app --port 8001

Served by uvicorn with the settings ``pocketrun serve`` uses (default loop and HTTP
implementation, access log off).
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

app = FastAPI(title="bare")

RUN = {
    "id": "01900000-0000-7000-8000-000000000000",
    "flow": "hello",
    "status": "succeeded",
    "output": {"greeting": "HELLO, WORLD!"},
}


@app.get("/bare")
async def get_bare() -> dict[str, Any]:
    return RUN


@app.post("/bare", status_code=202)
async def post_bare(body: dict[str, Any]) -> dict[str, Any]:
    return {**RUN, "status": "queued", "input": body.get("input")}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
