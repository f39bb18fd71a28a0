"""W1 (../shared/bench/WORKLOADS.md): the failure storm through the evaluator, against a real Redis.

    python bench/evaluate.py [--size small|large] [--automations N] [--paced EVENTS_PER_S] [--runs 3]

Starts a private redis-server, loads 1 target + noise automations, publishes the events (round robin:
every resource's 1st failure, then every 2nd, then every 3rd) and runs the evaluator and the outbox relay
in this process. "Action observed" = the action message on the actions stream (evaluator alone). Prints
one JSON object per run and the median of the runs.

``--evaluators N`` runs N-1 more evaluators in child processes sharing the consumer group: the layout of
``tripwire server start --evaluator-processes N`` (the server's own evaluator and relay in one process,
the other evaluators in theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from events.bus import RedisBus, connect_redis
from events.codec import encode_event
from events.model import Event, now_utc
from triggers.models import Automation
from triggers.outbox import OutboxService
from triggers.service import EvaluatorService
from tripwire.gc_tuning import settled_heap
from tripwire.settings import Settings, StreamSettings

ENABLED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class Source:
    """The automations, identical in every evaluator process (same ids, same enable time)."""

    def __init__(self, automations: list[Automation]) -> None:
        self.pairs = [(a, ENABLED_AT) for a in automations]

    async def changes_version(self) -> int:
        return 1

    async def enabled_automations(self) -> list[tuple[Automation, datetime]]:
        return self.pairs


class NullSink:
    async def record_outbox(self, docs: list[dict[str, Any]]) -> int:
        return len(docs)


def automations(total: int) -> list[Automation]:
    target = {
        "name": "bench target",
        "trigger": {
            "type": "event",
            "expect": ["bench.run.failed"],
            "match": {"tripwire.resource.id": "bench.run.*"},
            "for_each": ["tripwire.resource.id"],
            "threshold": 3,
            "within": 600,
        },
        "actions": [{"type": "do-nothing"}],
    }
    target["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "bench target"))
    out = [Automation.model_validate(target)]
    for k in range(total - 1):
        trigger: dict[str, Any] = {
            "type": "event",
            "threshold": 3,
            "within": 600,
            "for_each": ["tripwire.resource.id"],
        }
        if k % 2:
            trigger |= {"expect": [f"noise.{k}.failed"]}
        else:
            trigger |= {"expect": ["bench.run.failed"], "match": {"tripwire.resource.id": f"other.svc.{k}.*"}}
        noise = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"noise {k}")), "name": f"noise {k}"}
        out.append(Automation.model_validate(noise | {"trigger": trigger, "actions": []}))
    return out


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("redis-server") or sys.exit("redis-server is not on PATH")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    return proc, port


async def wait_ping(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    for _ in range(500):
        try:
            await client.ping()
            break
        except OSError:
            await asyncio.sleep(0.01)
        except Exception:
            await asyncio.sleep(0.01)
    await client.aclose()


async def _serve_evaluator(
    url: str, prefix: str, total_automations: int, stop: Any, ready: Any, cpu: Any
) -> None:
    client = await connect_redis(url)  # as the engine connects
    streams = StreamSettings(prefix=prefix, block_ms=100)
    settings = Settings(redis_url=url, streams=streams)
    bus = RedisBus(client, streams)
    source = Source(automations(total_automations))
    service = EvaluatorService(
        bus=bus, redis=client, settings=settings, automations=source, consumer=f"child-{os.getpid()}"
    )
    async with service:
        with settled_heap():
            cpu0 = time.process_time()
            ready.set()
            await asyncio.to_thread(stop.wait)
            cpu.value = time.process_time() - cpu0  # the run's CPU (the wait itself costs none)
    await bus.close()
    await client.aclose()


def evaluator_process(url: str, prefix: str, total_automations: int, stop: Any, ready: Any, cpu: Any) -> None:
    """An extra evaluator in its own process (``--evaluators N``), sharing the consumer group."""
    asyncio.run(_serve_evaluator(url, prefix, total_automations, stop, ready, cpu))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_once(
    url: str, resources: int, total_automations: int, paced: float | None, evaluators: int = 1
) -> dict[str, Any]:
    client = await connect_redis(url)  # as the engine connects
    await client.flushall()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    streams = StreamSettings(prefix=prefix, block_ms=100)
    settings = Settings(redis_url=url, streams=streams)
    bus = RedisBus(client, streams)
    evaluator = EvaluatorService(
        bus=bus,
        redis=client,
        settings=settings,
        automations=Source(automations(total_automations)),
        consumer="b1",
    )
    relay = OutboxService(bus=bus, settings=settings, sink=NullSink(), consumer="o1")
    await bus.ensure_group(streams.actions, "bench")

    third_published: dict[str, float] = {}  # resource -> when its 3rd failure was published
    third_id: dict[str, str] = {}  # resource -> id of its 3rd failure
    observed: dict[str, float] = {}  # resource -> when its (first) action message was seen
    triggered_by: dict[str, str] = {}  # resource -> the triggering event of that firing
    done = asyncio.Event()

    async def watch() -> None:
        last = "0"
        reader = aioredis.Redis.from_url(url)
        while len(observed) < resources:
            rows = await reader.xread({streams.actions: last}, count=5000, block=200)
            now = time.perf_counter()
            for _, entries in rows:
                for entry_id, fields in entries:
                    last = entry_id
                    msg = orjson.loads(fields[b"data"])
                    resource = msg["labels"]["tripwire.resource.id"]
                    if resource not in observed:
                        observed[resource] = now
                        triggered_by[resource] = msg["event_id"]
        await reader.aclose()
        done.set()

    # The producer's work (building, stamping and encoding events) is done before the clock starts:
    # the figure is the engine's, from the first XADD to the last action message.
    rounds: list[int] = []
    resources_of: list[str] = []
    payloads: list[bytes] = []
    ids: list[str] = []
    stamp = now_utc()
    for round_ in range(3):
        for i in range(resources):
            event = Event(
                event="bench.run.failed", resource={"tripwire.resource.id": f"bench.run.{i}"}, received=stamp
            )
            rounds.append(round_)
            payloads.append(encode_event(event))
            ids.append(str(event.id))
            resources_of.append(f"bench.run.{i}")
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(evaluators - 1)]
    child_cpu = [ctx.Value("d", 0.0) for _ in readies]
    children = [
        ctx.Process(
            target=evaluator_process,
            args=(url, prefix, total_automations, stop, ready, cpu),
            daemon=True,
        )
        for ready, cpu in zip(readies, child_cpu, strict=True)
    ]
    for child in children:
        child.start()
    for ready in readies:
        await asyncio.to_thread(ready.wait, 60)
    cpu0 = time.process_time()
    async with evaluator:
        await relay.start()
        with settled_heap():  # as the server does once its services have started
            watcher = asyncio.create_task(watch())
            start = time.perf_counter()
            chunk = 1000 if paced is None else max(1, int(paced / 50))
            for n in range(0, len(payloads), chunk):
                await bus.publish(streams.events, payloads[n : n + chunk])
                t = time.perf_counter()
                for k in range(n, min(n + chunk, len(payloads))):
                    if rounds[k] == 2:
                        third_published[resources_of[k]] = t
                        third_id[resources_of[k]] = ids[k]
                if paced is not None:
                    target = start + (n + chunk) / paced
                    await asyncio.sleep(max(0.0, target - time.perf_counter()))
            try:
                await asyncio.wait_for(done.wait(), timeout=600)
            finally:
                watcher.cancel()
            elapsed = max(observed.values()) - start
        await relay.stop()
    stop.set()
    for child in children:
        child.join(30)
    cpu = time.process_time() - cpu0
    lat = [observed[k] - third_published[k] for k in observed if k in third_published]
    info = await client.info("cpu")
    actions_total = int(
        await client.xlen(streams.actions)
    )  # every action message, after the services stopped
    await client.aclose()
    missing = sum(1 for k in third_published if k not in observed)
    # With several evaluators, batches are evaluated concurrently: a resource's 2nd and 3rd failures may
    # be counted in the other order, and the firing then names the 2nd as its triggering event.
    other_trigger = sum(1 for k, eid in triggered_by.items() if third_id.get(k) != eid)
    return {
        "events": len(payloads),
        "automations": total_automations,
        "evaluator_processes": evaluators,
        "paced_events_per_s": paced,
        "events_per_s": round(len(payloads) / elapsed),
        "fired": len(observed),
        "missing": missing,
        "unexpected": sum(1 for k in observed if k not in third_published),
        "duplicated": actions_total - len(observed),
        "triggered_by_an_earlier_failure": other_trigger,
        "latency_ms": {
            "p50": round(percentile(lat, 0.50) * 1000, 2),
            "p95": round(percentile(lat, 0.95) * 1000, 2),
            "p99": round(percentile(lat, 0.99) * 1000, 2),
            "max": round(max(lat) * 1000, 2),
        },
        "engine_cpu_s": round(cpu, 2),
        "extra_evaluators_cpu_s": round(sum(c.value for c in child_cpu), 2),
        "redis_cpu_s": round(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["small", "large"], default="small")
    parser.add_argument("--automations", type=int, default=1000)
    parser.add_argument("--resources", type=int, help="overrides --size")
    parser.add_argument("--paced", type=float, help="publish at this many events/s instead of a burst")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--evaluators", type=int, default=1, help="evaluator processes sharing the group")
    args = parser.parse_args()
    resources = args.resources or (1_000 if args.size == "small" else 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_redis(tmp)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            await wait_ping(url)
            results = []
            for _ in range(args.runs):
                result = await run_once(url, resources, args.automations, args.paced, args.evaluators)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            proc.terminate()
            proc.wait()
    summary = {
        "workload": "W1",
        "runs": len(results),
        "median_events_per_s": statistics.median(r["events_per_s"] for r in results),
        "median_p50_ms": statistics.median(r["latency_ms"]["p50"] for r in results),
        "median_p99_ms": statistics.median(r["latency_ms"]["p99"] for r in results),
        "all_fired": all(
            r["missing"] == 0 and r["unexpected"] == 0 and r["duplicated"] == 0 for r in results
        ),
    }
    print(json.dumps(summary))
    print(
        f"W1 {resources * 3} events, {args.automations} automations: "
        f"{summary['median_events_per_s']} events/s, p50 {summary['median_p50_ms']} ms, "
        f"p99 {summary['median_p99_ms']} ms (median of {len(results)})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    asyncio.run(main())
