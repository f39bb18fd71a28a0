"""W3, webhooks in (shared/bench/WORKLOADS.md): signed GitHub-style 2 KiB bodies to ``POST /hooks/{slug}``.

    python bench/webhooks.py [--runs 3] [--seconds 10] [--concurrency 8]
                             [--http auto,h11,httptools] [--loop auto,asyncio,uvloop] [--workers 1,2]

Starts a private redis-server on a free port and stores one webhook: GitHub HMAC-SHA256 auth (secret in
an encrypted block) and a jsonpath template (event name from a header and the body, resource from the
body, the body as payload, the delivery header as event id). Then real uvicorn servers
(``tripwire.runner.running`` without services + ``build_server``) in ``--workers`` child processes
sharing one listening socket. ``--concurrency`` keep-alive connections, each sending one request at a
time (a minimal HTTP/1.1 client on asyncio streams, so the client's CPU stays small next to the
server's) for ``--seconds``. Every answer must be 202; the stream length is checked against the count at
the end.

``--http``, ``--loop`` and ``--workers`` take comma-separated lists: every combination is a variant, and
the variants run interleaved (round after round), so they can be compared as ratios in one run.

Prints one JSON object per run (requests/s, p50/p99 latency in ms, server CPU seconds of all server
processes and per request) and a summary per variant with the medians against the target (3,000
requests/s). The machine is shared: single runs vary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.intake import make_settings, percentile, start_redis, wait_ping
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


# -- the server (child processes) ---------------------------------------------------------------------------
async def _create_hook(settings: Settings) -> str:
    """Store the secret block and the webhook; returns its slug."""
    from pydantic import SecretStr

    from blocks import BlockStore, Cipher, Secret
    from events.webhooks import WebhookStore, parse_definition
    from tripwire.runner import running

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
        return hook.slug


def _serve_child(
    settings_json: str, sock: socket.socket, variant: dict[str, Any], ready: Any, stop: Any, out: Any
) -> None:
    from tripwire.runner import event_loop_factory

    settings = Settings.model_validate_json(settings_json)
    with asyncio.Runner(loop_factory=event_loop_factory(variant["loop"])) as runner:
        runner.run(_serve(settings, sock, variant, ready, stop, out))


async def _serve(
    settings: Settings, sock: socket.socket, variant: dict[str, Any], ready: Any, stop: Any, out: Any
) -> None:
    """One API process serving on the shared listening socket until ``stop``; puts its CPU seconds."""
    from tripwire.runner import build_server, running

    async with running(settings, services=[], embedded_redis=False) as ctx:
        host, port = sock.getsockname()[:2]
        server = build_server(ctx, host, port, log_level="warning", http=variant["http"])
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
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


def cpu_us_per_request(result: dict[str, Any]) -> float:
    return round(result["server_cpu_s"] * 1e6 / max(1, result["requests"]))


async def one_run(url: str, args: argparse.Namespace, variant: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tw-bench-w3-") as home:
        settings = make_settings(url, Path(home))
        slug = await _create_hook(settings)
        # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY only on sockets whose proto is TCP (one made
        # by socket.socket() says 0), and without it Nagle holds each response's body for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        port = sock.getsockname()[1]
        mp = multiprocessing.get_context("spawn")
        stop, out = mp.Event(), mp.Queue()
        readies = [mp.Event() for _ in range(variant["workers"])]
        settings_json = settings.model_dump_json()
        children = [
            mp.Process(target=_serve_child, args=(settings_json, sock, variant, ready, stop, out))
            for ready in readies
        ]
        for child in children:
            child.start()
        try:
            for _ in range(6000):
                if all(r.is_set() for r in readies) or not all(c.is_alive() for c in children):
                    break
                await asyncio.sleep(0.01)
            if not all(r.is_set() for r in readies):
                codes = [c.exitcode for c in children]
                sys.exit(f"the API server did not start (exit codes {codes})")
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
            server_cpu = sum(out.get(timeout=30) for _ in children)
            for child in children:
                child.join(30)
            redis = aioredis.Redis.from_url(url)
            on_stream = await redis.xlen(settings.streams.events) - args.concurrency
            await redis.aclose()
        finally:
            stop.set()
            sock.close()
            for child in children:
                if child.is_alive():
                    child.terminate()
    accepted = statuses.get(202, 0)
    result = {
        "variant": variant_name(variant),
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
    result["server_cpu_us_per_request"] = cpu_us_per_request(result)
    return result


def variant_name(variant: dict[str, Any]) -> str:
    return f"http={variant['http']} loop={variant['loop']} workers={variant['workers']}"


def summarise(runs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    rates = [r["requests_per_s"] for r in runs]
    return {
        "workload": "W3 webhooks in: GitHub-signed 2 KiB bodies, jsonpath template",
        "variant": runs[0]["variant"],
        "concurrency": concurrency,
        "runs": len(runs),
        "requests_per_s_median": round(statistics.median(rates)),
        "requests_per_s_min": min(rates),
        "requests_per_s_max": max(rates),
        "p50_ms_median": round(statistics.median(r["p50_ms"] for r in runs), 2),
        "p99_ms_median": round(statistics.median(r["p99_ms"] for r in runs), 2),
        "server_cpu_us_per_request_median": round(
            statistics.median(r["server_cpu_us_per_request"] for r in runs)
        ),
        "target_requests_per_s": TARGET,
        "meets_target": statistics.median(rates) >= TARGET,
        "all_on_stream": all(r["on_stream"] == r["accepted"] for r in runs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--http", default="auto", help="uvicorn HTTP parser(s), comma-separated: auto, httptools, h11"
    )
    parser.add_argument(
        "--loop", default="auto", help="event loop(s), comma-separated: auto, asyncio, uvloop"
    )
    parser.add_argument(
        "--workers", default="1", help="API processes sharing the listening socket, comma-separated counts"
    )
    args = parser.parse_args()
    variants = [
        {"http": http, "loop": loop, "workers": int(workers)}
        for http in args.http.split(",")
        for loop in args.loop.split(",")
        for workers in args.workers.split(",")
    ]
    by_variant: dict[str, list[dict[str, Any]]] = {variant_name(v): [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="tw-bench-redis-") as directory:
        proc, redis_port = start_redis(directory)
        url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            await wait_ping(url)
            for _ in range(args.runs):  # variants interleaved, so a noisy minute hits them all alike
                for variant in variants:
                    result = await one_run(url, args, variant)
                    print(json.dumps(result))
                    by_variant[variant_name(variant)].append(result)
        finally:
            proc.terminate()
            proc.wait(10)
    summaries = [summarise(runs, args.concurrency) for runs in by_variant.values()]
    for summary in summaries:
        print(json.dumps(summary, indent=2))
    for summary in summaries:
        line = (
            f"W3 [{summary['variant']}]: {summary['requests_per_s_median']} req/s (target {TARGET}), "
            f"p50 {summary['p50_ms_median']} ms, p99 {summary['p99_ms_median']} ms, "
            f"{summary['server_cpu_us_per_request_median']} µs server CPU/request"
        )
        print(line, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
