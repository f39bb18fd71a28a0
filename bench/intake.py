"""Intake throughput (issue 2): Python emit_events, POST /api/events batches, and the recorder into SQLite.

    python bench/intake.py [--runs 3] [--only emit,http,recorder] [--events 100000] [--batch 1000]
                           [--concurrency 6] [--related 0] [--recorder-batch N] [--gc-freeze]

Starts a private redis-server on a free port; every figure gets a fresh temp SQLite file and stream prefix.

1. emit: ``EventEmitter.emit_events`` on batches of ``--batch`` dicts (as a user passes them) onto the
   stream: validation, ``received`` stamping, limits, JSON encoding and one MULTI/EXEC per batch. events/s.
2. http: ``POST /api/events`` with JSON arrays of ``--batch`` events to a real uvicorn server built by
   ``tripwire.runner.running`` (no services) + ``build_server`` in a child process (so the client's CPU is
   not the server's), from ``httpx.AsyncClient`` with keep-alive and ``--concurrency`` requests in flight.
   Request bodies are encoded before timing. events/s, p50/p99 request latency, server CPU seconds.
3. recorder: ``--events`` events published to the stream first, then ``RecorderService`` started; timed
   until the ``recorder`` group has been delivered everything with nothing pending and the rows are
   counted in SQLite. rows/s.

``cpu_s`` is the measured process's CPU time (the recorder's includes the SQLite thread) and ``gc_s`` the
time its garbage collector ran; ``--gc-freeze`` calls ``gc.freeze()`` in that process once set up.
Prints one JSON object per run and a JSON summary (medians and min/max of the runs, against the targets),
and a one-line summary on stderr. The machine is shared, so single runs vary by up to +-50 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events.bus import RedisBus
from events.codec import encode_event
from events.emit import EventEmitter
from events.model import Event, now_utc
from events.recorder import RECORDER_GROUP, RecorderService
from tripwire.db import Database
from tripwire.settings import Settings, StreamSettings

FIGURES = ("emit", "http", "recorder")
TARGETS = {"emit": 50_000, "http": 20_000, "recorder": 20_000}  # events/s (rows/s for the recorder)
UNITS = {"emit": "events/s", "http": "events/s", "recorder": "rows/s"}
POLL_S = 0.01
TIMEOUT_S = 600.0


# -- helpers ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    exe = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    options = {"port": str(port), "bind": "127.0.0.1", "save": "", "appendonly": "no", "dir": directory}
    argv = [exe] + [arg for name, value in options.items() for arg in (f"--{name}", value)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL), port


async def wait_ping(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(1000):
            try:
                await client.ping()
                return
            except Exception:
                await asyncio.sleep(0.01)
        sys.exit(f"redis-server at {url} did not answer")
    finally:
        await client.aclose()


class GcClock:
    """Seconds spent in the garbage collector while inside (``with GcClock() as gc_clock``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._t0

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


@contextlib.contextmanager
def frozen_heap(enabled: bool) -> Iterator[None]:
    """``gc.freeze()`` while inside when enabled: what exists now is never scanned by a collection again."""
    if not enabled:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def make_settings(url: str, home: Path, batch_size: int | None = None) -> Settings:
    """Settings on the private Redis, a fresh SQLite file under ``home`` and stream prefix, no API key."""
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    home.mkdir(parents=True, exist_ok=True)
    return Settings(
        redis_url=url,
        database_url=f"sqlite+aiosqlite:///{home / 'tripwire.db'}",
        home=home,
        api_key=None,
        streams=StreamSettings(prefix=f"bench-{uuid.uuid4().hex[:8]}", **sizes),
    )


def event_dicts(n: int, related: int, tag: str) -> list[dict[str, Any]]:
    """Small events as a producer writes them: name, resource (id + name), a small payload."""
    out = []
    for i in range(n):
        item: dict[str, Any] = {
            "event": "bench.intake.tick",
            "resource": {
                "tripwire.resource.id": f"bench.{tag}.{i % 1000}",
                "tripwire.resource.name": "bench",
            },
            "payload": {"n": i, "status": "ok"},
        }
        if related:
            item["related"] = [
                {"tripwire.resource.id": f"bench.rel.{k}", "tripwire.resource.role": "flow"}
                for k in range(related)
            ]
        out.append(item)
    return out


# -- 1. emit_events -----------------------------------------------------------------------------------------
async def bench_emit(url: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = make_settings(url, home)
    client = aioredis.Redis.from_url(url)
    try:
        emitter = EventEmitter(RedisBus(client, settings.streams), settings)
        await emitter.emit_events(event_dicts(10, args.related, "warm"))  # warm-up, not counted
        elapsed = cpu = gc_s = 0.0
        with frozen_heap(args.gc_freeze):
            for first in range(0, args.events, args.batch):
                # Each batch is built just before its call, as a producer would; only the calls are timed.
                # (Holding all 100,000 dicts at once would make every full collection scan them too.)
                batch = event_dicts(min(args.batch, args.events - first), args.related, "emit")
                with GcClock() as gc_clock:
                    cpu0, start = time.process_time(), time.perf_counter()
                    await emitter.emit_events(batch)
                    elapsed += time.perf_counter() - start
                    cpu += time.process_time() - cpu0
                gc_s += gc_clock.seconds
        on_stream = await client.xlen(settings.streams.events) - 10
    finally:
        await client.aclose()
    return {
        "events": args.events,
        "events_per_s": round(args.events / elapsed),
        "seconds": round(elapsed, 3),
        "cpu_s": round(cpu, 2),
        "gc_s": round(gc_s, 3),
        "on_stream": on_stream,
    }


# -- 2. POST /api/events ------------------------------------------------------------------------------------
def _serve_child(settings_json: str, port: int, gc_freeze: bool, ready: Any, stop: Any, done: Any) -> None:
    """Child process: running(no services) + build_server on ``port`` until ``stop`` is set."""
    settings = Settings.model_validate_json(settings_json)
    asyncio.run(_serve(settings, port, gc_freeze, ready, stop, done))


async def _serve(settings: Settings, port: int, gc_freeze: bool, ready: Any, stop: Any, done: Any) -> None:
    from tripwire.runner import build_server, running

    async with running(settings, services=[], embedded_redis=False) as ctx:
        server = build_server(ctx, "127.0.0.1", port, log_level="warning")
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        cpu0 = time.process_time()
        with frozen_heap(gc_freeze), GcClock() as gc_clock:
            ready.set()
            while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing.Event
                await asyncio.sleep(0.02)
        done.put((time.process_time() - cpu0, gc_clock.seconds))
        server.request_stop()
        await task


async def bench_http(url: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = make_settings(url, home)
    port = free_port()
    mp = multiprocessing.get_context("spawn")
    ready, stop, done = mp.Event(), mp.Event(), mp.Queue()
    child_args = (settings.model_dump_json(), port, args.gc_freeze, ready, stop, done)
    child = mp.Process(target=_serve_child, args=child_args, daemon=True)
    child.start()
    try:
        for _ in range(int(60 / POLL_S)):
            if ready.is_set() or not child.is_alive():
                break
            await asyncio.sleep(POLL_S)
        if not ready.is_set():
            sys.exit(f"the API server did not start (exit code {child.exitcode})")
        items = event_dicts(args.events, args.related, "http")
        bodies = [json.dumps(items[i : i + args.batch]).encode() for i in range(0, len(items), args.batch)]
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        headers = {"content-type": "application/json"}
        latencies: list[float] = []
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=120, headers=headers
        ) as http:
            # warm-up: open the connections and let the server import and compile what it needs
            warm = json.dumps(event_dicts(10, args.related, "warm")).encode()
            for r in await asyncio.gather(
                *(http.post("/api/events", content=warm) for _ in range(args.concurrency))
            ):
                r.raise_for_status()
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)
            accepted = 0

            async def worker() -> None:
                nonlocal accepted
                while not queue.empty():
                    body = queue.get_nowait()
                    t0 = time.perf_counter()
                    r = await http.post("/api/events", content=body)
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 202:
                        raise RuntimeError(f"POST /api/events answered {r.status_code}: {r.text[:500]}")
                    accepted += r.json()["accepted"]

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - start
        stop.set()
        server_cpu, server_gc = done.get(timeout=30)
        client = aioredis.Redis.from_url(url)
        on_stream = await client.xlen(settings.streams.events) - 10 * args.concurrency
        await client.aclose()
    finally:
        stop.set()
        child.join(30)
        if child.is_alive():
            child.terminate()
            child.join()
    return {
        "events": args.events,
        "accepted": accepted,
        "on_stream": on_stream,
        "requests": len(bodies),
        "concurrency": args.concurrency,
        "events_per_s": round(args.events / elapsed),
        "seconds": round(elapsed, 3),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 1),
            "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
        "server_cpu_s": round(server_cpu, 2),
        "server_gc_s": round(server_gc, 3),
    }


# -- 3. the recorder ----------------------------------------------------------------------------------------
async def _drained(client: aioredis.Redis, stream: str) -> bool:
    """The recorder group has been delivered the newest entry and has nothing pending (any Redis >= 5)."""
    newest = (await client.xinfo_stream(stream))["last-generated-id"]
    for group in await client.xinfo_groups(stream):
        if _text(group["name"]) == RECORDER_GROUP:
            return _text(group["last-delivered-id"]) == _text(newest) and group["pending"] == 0
    return False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def bench_recorder(url: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings = make_settings(url, home, batch_size=args.recorder_batch)
    stream = settings.streams.events
    client = aioredis.Redis.from_url(url)
    bus = RedisBus(client, settings.streams)
    db = Database(settings.effective_database_url)
    try:
        now = now_utc()
        bodies = [
            encode_event(Event.model_validate({**item, "received": now}))
            for item in event_dicts(args.events, args.related, "rec")
        ]
        for i in range(0, len(bodies), 10_000):
            await bus.publish(stream, bodies[i : i + 10_000])
        await db.start()
        service = RecorderService(bus, db, settings, consumer="bench")
        try:
            with frozen_heap(args.gc_freeze), GcClock() as gc_clock:
                cpu0, start = time.process_time(), time.perf_counter()
                await service.start()
                while not await _drained(client, stream):
                    if time.perf_counter() > start + TIMEOUT_S:
                        raise TimeoutError(f"recorder did not drain {args.events} events in {TIMEOUT_S} s")
                    await asyncio.sleep(POLL_S)
                async with db.engine.connect() as conn:
                    rows = (await conn.exec_driver_sql("SELECT count(*) FROM events")).scalar_one()
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu0
        finally:
            await service.stop()
        stats = service.stats
    finally:
        await bus.close()
        await db.stop()
        await client.aclose()
    return {
        "events": args.events,
        "rows": rows,
        "rows_per_s": round(rows / elapsed),
        "seconds": round(elapsed, 3),
        "cpu_s": round(cpu, 2),
        "gc_s": round(gc_clock.seconds, 3),
        "batches": stats.batches,
        "batch_size": settings.streams.batch_size,
    }


# -- main ---------------------------------------------------------------------------------------------------
BENCHES = {"emit": bench_emit, "http": bench_http, "recorder": bench_recorder}
RATE_KEY = {"emit": "events_per_s", "http": "events_per_s", "recorder": "rows_per_s"}


def summarise(results: list[dict[str, Any]], figures: list[str], args: argparse.Namespace) -> dict[str, Any]:
    options = ("events", "batch", "concurrency", "related", "recorder_batch", "gc_freeze")
    summary: dict[str, Any] = {"benchmark": "intake", "runs": len(results)}
    summary |= {name: getattr(args, name) for name in options}
    for fig in figures:
        rates = [r[fig][RATE_KEY[fig]] for r in results]
        entry: dict[str, Any] = {
            f"median_{RATE_KEY[fig]}": statistics.median(rates),
            "range": [min(rates), max(rates)],
            "target": TARGETS[fig],
            "meets_target": statistics.median(rates) >= TARGETS[fig],
        }
        if fig == "http":
            entry["median_p50_ms"] = statistics.median(r[fig]["latency_ms"]["p50"] for r in results)
            entry["median_p99_ms"] = statistics.median(r[fig]["latency_ms"]["p99"] for r in results)
        complete = [r[fig].get("rows", r[fig].get("on_stream")) == r[fig]["events"] for r in results]
        entry["all_complete"] = all(complete)
        summary[fig] = entry
    return summary


def human(summary: dict[str, Any], figures: list[str]) -> str:
    parts = []
    for fig in figures:
        s = summary[fig]
        median = s[f"median_{RATE_KEY[fig]}"]
        text = f"{fig} {median:,.0f} {UNITS[fig]} [{s['range'][0]:,}..{s['range'][1]:,}]"
        if fig == "http":
            text += f" p50 {s['median_p50_ms']} ms p99 {s['median_p99_ms']} ms"
        text += " ok" if s["meets_target"] else f" BELOW target {TARGETS[fig]:,}"
        parts.append(text)
    frozen = ", gc.freeze()" if summary["gc_freeze"] else ""
    return f"intake (median of {summary['runs']}{frozen}): " + "; ".join(parts)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per figure and run")
    parser.add_argument("--batch", type=int, default=1000, help="events per emit_events call / POST")
    parser.add_argument("--concurrency", type=int, default=6, help="POST requests in flight (4-8 sensible)")
    parser.add_argument("--related", type=int, default=0, help="related resources per event")
    parser.add_argument(
        "--recorder-batch", type=int, help="XREADGROUP count of the recorder (default: settings)"
    )
    parser.add_argument(
        "--only", default=",".join(FIGURES), help="comma-separated subset of emit,http,recorder"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after set-up in the measured process (what a server could do after start-up)",
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}: choose from {', '.join(FIGURES)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(tmp)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            await wait_ping(url)
            for run in range(args.runs):
                result: dict[str, Any] = {"run": run + 1}
                for fig in figures:
                    flush = aioredis.Redis.from_url(url)
                    await flush.flushall()
                    await flush.aclose()
                    result[fig] = await BENCHES[fig](url, Path(tmp) / f"{fig}-{run}", args)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            proc.terminate()
            proc.wait()
    summary = summarise(results, figures, args)
    print(json.dumps(summary), flush=True)
    print(human(summary, figures), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
