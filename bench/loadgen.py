"""A fallback HTTP/1.1 load generator for ``bench.api`` when ``wrk`` is not installed.

    .venv/bin/python -m bench.loadgen URL [--method POST --body JSON] [--header 'K: V']
        [--connections 32] [--duration 10]

Keep-alive connections over asyncio streams (uvloop when present), each sending its
next request as soon as the last answer is read; prints one JSON line. One Python
process can saturate before a fast server does: prefer ``wrk`` (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit


async def connection(
    host: str, port: int, request: bytes, until: float, codes: Counter, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < until:
            started = loop.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            code = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            codes[code] += 1
            latencies.append(loop.time() - started)
    finally:
        writer.close()


async def run(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path + (f"?{url.query}" if url.query else "")
    body = args.body.encode() if args.body else b""
    headers = [f"Host: {host}:{port}", "Connection: keep-alive"]
    if body:
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    headers += args.header
    request = (f"{args.method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode()
    request += body
    codes: Counter = Counter()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    until = started + args.duration
    await asyncio.gather(
        *(connection(host, port, request, until, codes, latencies) for _ in range(args.connections))
    )
    elapsed = loop.time() - started
    total = sum(codes.values())
    latencies.sort()
    return {
        "requests": total,
        "seconds": elapsed,
        "requests_per_s": total / elapsed,
        "non_2xx_3xx": sum(n for c, n in codes.items() if not 200 <= c < 400),
        "status_codes": {str(c): n for c, n in codes.items()},
        "latency_avg_ms": 1000 * sum(latencies) / total if total else None,
        "latency_p99_ms": 1000 * latencies[int(0.99 * (total - 1))] if total else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("url")
    p.add_argument("--method", default="GET")
    p.add_argument("--body", default="")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=10)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.time()
    result = asyncio.run(run(args))
    result["wall_s"] = time.time() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
