"""W3, webhooks in (shared/bench/WORKLOADS.md): signed GitHub-style 2 KiB bodies to ``POST /hooks/{slug}``.

    python bench/webhooks.py [--runs 3] [--seconds 10] [--concurrency 8]

Starts a private redis-server on a free port, then a real uvicorn server (``tripwire.runner.running``
without services + ``build_server``) in a child process, with one webhook: GitHub HMAC-SHA256 auth
(secret in an encrypted block) and a jsonpath template (event name from a header and the body, resource
from the body, the body as payload, the delivery header as event id). ``--concurrency`` keep-alive
connections, each sending one request at a time (a minimal HTTP/1.1 client on asyncio streams, so the
client's CPU stays small next to the server's) for ``--seconds``. Every answer must be 202; the stream
length is checked against the count at the end.

Prints one JSON object per run (requests/s, p50/p99 latency in ms, server CPU seconds) and a summary with
the medians against the target (3,000 requests/s). The machine is shared: single runs vary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.intake import free_port, make_settings, percentile, start_redis, wait_ping
from events.webhooks.auth import sign_github
from tripwire.settings import Settings

TARGET = 3000
SECRET = "bench-github-secret-0123456789"
TEMPLATE = {
    "event": "github.{$.headers.x-github-event}.{$.body.action}",
    "resource": {
        "tripwire.resource.id": "github.repo.{$.body.repository.full_name}",
        "tripwire.resource.name": "$.body.repository.name",
    },
    "related": [
        {"tripwire.resource.id": "github.user.{$.body.sender.login}", "tripwire.resource.role": "sender"}
    ],
    "payload": "$.body",
    "id": "$.headers.x-github-delivery",
}


def github_body(n: int, size: int = 2048) -> bytes:
    """A GitHub-style pull_request delivery padded to ``size`` bytes."""
    doc: dict[str, Any] = {
        "action": "closed",
        "number": n,
        "pull_request": {"number": n, "title": f"Change {n}", "merged": True, "body": ""},
        "repository": {"name": "tripwire", "full_name": "acme/tripwire"},
        "sender": {"login": "octocat"},
    }
    pad = size - len(json.dumps(doc).encode())
    doc["pull_request"]["body"] = "x" * max(0, pad)
    return json.dumps(doc).encode()


# -- the server (child process) -----------------------------------------------------------------------------
def _serve_child(settings_json: str, port: int, ready: Any, stop: Any, out: Any) -> None:
    settings = Settings.model_validate_json(settings_json)
    asyncio.run(_serve(settings, port, ready, stop, out))


async def _serve(settings: Settings, port: int, ready: Any, stop: Any, out: Any) -> None:
    from pydantic import SecretStr

    from blocks import BlockStore, Cipher, Secret
    from events.webhooks import WebhookStore, parse_definition
    from tripwire.runner import build_server, running

    async with running(settings, services=[], embedded_redis=False) as ctx:
        await BlockStore(ctx.db, Cipher.from_settings(settings)).put(
            "secret/gh", Secret(value=SecretStr(SECRET))
        )
        definition = {
            "name": "github",
            "template": TEMPLATE,
            "auth": {"type": "github", "secret": "secret/gh"},
        }
        hook = await WebhookStore(ctx.db, ctx.redis, settings.streams).create(parse_definition(definition))
        server = build_server(ctx, "127.0.0.1", port, log_level="warning")
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        out.put(hook.slug)
        ready.set()
        cpu0 = time.process_time()
        while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing.Event
            await asyncio.sleep(0.02)
        out.put(time.process_time() - cpu0)
        server.request_stop()
        await task


# -- the client ---------------------------------------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def build_request(path: str, body: bytes, signature: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-GitHub-Event: pull_request\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: {signature}\r\n\r\n"
    )
    return head.encode() + body


async def one_run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tw-bench-w3-") as home:
        settings = make_settings(url, Path(home))
        port = free_port()
        mp = multiprocessing.get_context("spawn")
        ready, stop, out = mp.Event(), mp.Event(), mp.Queue()
        child = mp.Process(target=_serve_child, args=(settings.model_dump_json(), port, ready, stop, out))
        child.start()
        try:
            for _ in range(6000):
                if ready.is_set() or not child.is_alive():
                    break
                await asyncio.sleep(0.01)
            if not ready.is_set():
                sys.exit(f"the API server did not start (exit code {child.exitcode})")
            slug = out.get(timeout=10)
            path = f"/hooks/{slug}"
            bodies = [github_body(n) for n in range(256)]
            signed = [(b, sign_github(SECRET, b)) for b in bodies]
            conns = [await Connection.open(port) for _ in range(args.concurrency)]
            for conn in conns:  # warm-up
                assert await conn.post(build_request(path, *signed[0])) == 202
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            deadline = time.perf_counter() + args.seconds

            async def client(conn: Connection, k: int) -> None:
                i = k
                while time.perf_counter() < deadline:
                    request = build_request(path, *signed[i % len(signed)])
                    i += args.concurrency
                    t0 = time.perf_counter()
                    status = await conn.post(request)
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] = statuses.get(status, 0) + 1

            start = time.perf_counter()
            await asyncio.gather(*(client(c, k) for k, c in enumerate(conns)))
            elapsed = time.perf_counter() - start
            for conn in conns:
                conn.close()
            stop.set()
            server_cpu = out.get(timeout=30)
            child.join(30)
            redis = aioredis.Redis.from_url(url)
            on_stream = await redis.xlen(settings.streams.events) - args.concurrency
            await redis.aclose()
        finally:
            stop.set()
            if child.is_alive():
                child.terminate()
    accepted = statuses.get(202, 0)
    return {
        "requests": len(latencies),
        "accepted": accepted,
        "statuses": {str(k): v for k, v in statuses.items()},
        "on_stream": on_stream,
        "requests_per_s": round(accepted / elapsed),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "server_cpu_s": round(server_cpu, 2),
        "seconds": round(elapsed, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-bench-redis-") as directory:
        proc, redis_port = start_redis(directory)
        url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            await wait_ping(url)
            runs = []
            for _ in range(args.runs):
                result = await one_run(url, args)
                print(json.dumps(result))
                runs.append(result)
        finally:
            proc.terminate()
            proc.wait(10)
    rates = [r["requests_per_s"] for r in runs]
    summary = {
        "workload": "W3 webhooks in: GitHub-signed 2 KiB bodies, jsonpath template",
        "concurrency": args.concurrency,
        "requests_per_s_median": statistics.median(rates),
        "requests_per_s_min": min(rates),
        "requests_per_s_max": max(rates),
        "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
        "target_requests_per_s": TARGET,
        "meets_target": statistics.median(rates) >= TARGET,
        "all_on_stream": all(r["on_stream"] == r["accepted"] for r in runs),
    }
    print(json.dumps(summary, indent=2))
    print(f"W3: {summary['requests_per_s_median']} req/s (target {TARGET}), "
          f"p99 {summary['p99_ms_median']} ms", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
