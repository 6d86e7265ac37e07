"""What does the HTTP front door cost, and how much can one server process take?

One embedded broker, one local Ray, the pipeline deployed here (three ``simulated`` tiers at
zero model time, so the pipeline is not what is measured), and ``tierflow serve`` started as
its own process against that broker (one server process, as a user would run it).

(a) **Added latency.** The same fixed rate (``--rate``, default 50 requests/s) for ``--seconds``
    twice, in one run: produced to Kafka directly (``RequestProducer``, latency from the send to
    the result the client reads) and as ``POST /v1/chat/completions`` calls (httpx, one
    connection pool, latency from the call to its response). ``added_p50_ms`` and
    ``added_p99_ms`` are the differences.
(b) **Highest rate held.** HTTP calls at doubling rates from ``--start-rate`` for ``--probe-s``
    each, until p99 passes 1 s or a call fails; ``max_rate_held`` is the highest that held.

The client, the server, the pipeline and the broker share this machine's cores, so the rates
are the machine's; the JSON records the cores. Usage::

    .venv/bin/python load_tests/gateway.py --json load_tests/results/gateway.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import httpx
from rich.console import Console

from infra.broker import EmbeddedBroker, free_port, kafka_options
from infra.client import RequestProducer, ResultCollector
from infra.config import Config, RayConfig, load_config
from infra.pipeline import Pipeline
from infra.ray_cluster import start_ray, stop_ray
from policies.window import percentile
from topics import Request
from topics.admin import delete_topics

CONFIG = """
namespace = "{namespace}"

[broker]
provider = "external"
bootstrap_servers = "{bootstrap}"
session_timeout_ms = 2000

[router]
partitions = 4

[[tiers]]
name = "small"
backend = "simulated"
threshold = 0.8
cost = 0.001
num_cpus = 0.1
options = {{ accuracy = 0.6, seed = 1 }}

[[tiers]]
name = "large"
backend = "simulated"
threshold = 0.0
cost = 0.1
num_cpus = 0.1
options = {{ accuracy = 0.9, seed = 2 }}
"""


def summary(latencies: list[float], sent: int) -> dict[str, Any]:
    return {
        "sent": sent,
        "answered": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


async def direct(config: Config, kafka: dict[str, Any], rate: float, seconds: float) -> dict[str, Any]:
    """Requests produced straight to Kafka at ``rate``; latency = send until the client reads the result."""
    producer, collector = RequestProducer(kafka, config.layout), ResultCollector(kafka, config.layout)
    await producer.start()
    await collector.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    try:
        start, n = time.monotonic(), 0
        while ((elapsed := time.monotonic() - start) < seconds or sent_at) and elapsed < seconds + 60:
            if elapsed < seconds and n < int(rate * elapsed):
                request = Request(f"k-{uuid.uuid4().hex[:12]}", f"direct {n}", time.time())
                sent_at[request.id] = time.monotonic()
                await producer.send_many([request])
                n += 1
            now = time.monotonic()
            settled = await collector.poll(timeout_ms=5)
            latencies += [(now - sent_at.pop(request_id)) * 1000 for request_id in settled if request_id in sent_at]
    finally:
        await producer.stop()
        await collector.stop()
    return summary(latencies, n)


async def over_http(base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Chat completions at ``rate`` (each its own task); latency = call until its response."""
    latencies: list[float] = []
    failures: list[str] = []
    body = {"model": "tierflow", "messages": [{"role": "user", "content": "hello"}]}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:

        async def one() -> None:
            started = time.monotonic()
            try:
                response = await client.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
                return
            if response.status_code != 200:
                failures.append(str(response.status_code))
                return
            latencies.append((time.monotonic() - started) * 1000)

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            while len(tasks) < int(rate * elapsed):
                tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    result = summary(latencies, len(tasks))
    result["failures"] = len(failures)
    return result


def serve(config_path: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "infra.cli", "serve", "--config", str(config_path), "--port", str(port)]
    return subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.DEVNULL)


async def wait_healthy(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not come up")


async def main_async(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tierflow-gateway-"))
    with EmbeddedBroker(log_dir=str(workdir)) as bootstrap:
        path = workdir / "tierflow.toml"
        path.write_text(CONFIG.format(namespace=f"gw-{uuid.uuid4().hex[:8]}", bootstrap=bootstrap))
        config = load_config(path)
        kafka = kafka_options(config.broker, bootstrap)
        started = start_ray(RayConfig(num_cpus=8))
        pipeline = Pipeline(config, bootstrap)
        port = free_port()
        server = None
        try:
            await pipeline.start()
            server = serve(path, port)
            base = f"http://127.0.0.1:{port}"
            await wait_healthy(base)
            console.print(f"(a) {args.rate:g} requests/s for {args.seconds:g} s, straight to Kafka, then over HTTP")
            kafka_side = await direct(config, kafka, args.rate, args.seconds)
            http_side = await over_http(f"{base}/v1", args.rate, args.seconds)
            console.print(f"    kafka {kafka_side}\n    http  {http_side}")
            probes, rate, held = [], args.start_rate, 0.0
            while rate <= args.max_rate:
                probe = {"rate": rate, **await over_http(f"{base}/v1", rate, args.probe_s)}
                probes.append(probe)
                ok = probe["failures"] == 0 and probe["p99_ms"] < 1000 and probe["answered"] == probe["sent"]
                console.print(f"(b) {rate:g}/s: p99 {probe['p99_ms']} ms, failures {probe['failures']}: "
                              f"{'held' if ok else 'not held'}")
                if not ok:
                    break
                held, rate = rate, rate * 2
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            await pipeline.stop()
            await delete_topics(kafka, config.layout.all_topics())
            stop_ray(started)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "kafka": kafka_side,
        "http": http_side,
        "added_p50_ms": round(http_side["p50_ms"] - kafka_side["p50_ms"], 1),
        "added_p99_ms": round(http_side["p99_ms"] - kafka_side["p99_ms"], 1),
        "probes": probes,
        "max_rate_held": held,
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="", metavar="PATH", help="write the report here")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s for (a) (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per side of (a) (default 30)")
    parser.add_argument("--start-rate", type=float, default=50.0, help="first probe rate of (b) (default 50)")
    parser.add_argument("--max-rate", type=float, default=3200.0, help="no probe above this (default 3200)")
    parser.add_argument("--probe-s", type=float, default=20.0, help="seconds per probe of (b) (default 20)")
    args = parser.parse_args()
    console = Console(stderr=True)
    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(main_async(args, console))
        text = json.dumps(report, indent=2)
        if args.json:
            Path(args.json).write_text(text + "\n")
        sys.stdout.write(text + "\n")
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
