"""Benchmark: streaming endpoints through the gateway vs the same stream on bare FastAPI.

    .venv/bin/python bench/stream.py [--events 20000] [--latency-events 1000] [--rounds 3]

One gateway (local provider) with one app whose generator endpoints stream
SSE events; a bare FastAPI + uvicorn server in its own process serves the
same async generator as a `StreamingResponse`. The client reads the raw
socket and counts events as they arrive (no HTTP library in the way).

Measured, in the same run:
- chunk latency: the handler yields `{"t": time.monotonic()}` once a
  millisecond; the client notes when each event arrives (CLOCK_MONOTONIC is
  one clock for every process on the machine). p50 and p99 of arrival minus
  yield, through the gateway and straight from the bare FastAPI server;
- throughput: events/s of a stream of `--events` small events, yielded as
  fast as the generator can, through the gateway vs bare FastAPI (ratio);
  rounds alternate between the two so drift on a shared machine hits both.

Targets: through the gateway, p99 chunk latency <= 10 ms, and throughput
>= 0.3x bare FastAPI (every event crosses two extra processes: runner and
gateway, each one ASGI hop).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import _admin, _gateway

EVENTS = """
import asyncio
import time


async def ticks(n: int, pause: float):
    for i in range(n):
        if pause:
            await asyncio.sleep(pause)
        yield {"i": i, "t": time.monotonic()}
"""

APP_SOURCE = (
    EVENTS
    + """
from pydantic import BaseModel
from skyform import App, endpoint


class In(BaseModel):
    n: int
    pause: float = 0.0


class Streams(App):
    max_runners = 1
    max_multiplexing = 16
    keep_alive = 600
    auth = "public"

    @endpoint("/ticks")
    async def stream(self, req: In):
        async for value in ticks(req.n, req.pause):
            yield value
"""
)

BARE_SOURCE = (
    EVENTS
    + """
import json
import sys

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class In(BaseModel):
    n: int
    pause: float = 0.0


api = FastAPI()


@api.post("/ticks")
async def stream(req: In):
    async def events():
        async for value in ticks(req.n, req.pause):
            yield b"data: " + json.dumps(value).encode() + b"\\n\\n"

    return StreamingResponse(events(), media_type="text/event-stream")


uvicorn.run(api, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
)
BUNDLE_KEY = "bench-bundle-key"


async def _read_stream(url: str, path: str, n: int, pause: float) -> tuple[float, list[float]]:
    """(seconds from request to last event, per-event latency) of one stream, read raw."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    body = json.dumps({"n": n, "pause": pause}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.perf_counter()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    latencies: list[float] = []
    buffer = b""
    seen = 0
    try:
        await reader.readuntil(b"\r\n\r\n")
        while seen < n:
            data = await reader.read(65536)
            if not data:
                raise SystemExit(f"{url}{path}: stream ended after {seen} of {n} events")
            now = time.monotonic()
            buffer += data
            while (start := buffer.find(b"data: ")) >= 0 and (end := buffer.find(b"\n", start)) > 0:
                if pause:
                    latencies.append(now - json.loads(buffer[start + 6 : end])["t"])
                buffer = buffer[end + 1 :]
                seen += 1
    finally:
        writer.close()
    return time.perf_counter() - started, latencies


@contextlib.contextmanager
def _bare(workdir: Path) -> Iterator[str]:
    from skyform.providers.local import free_port

    port = free_port()
    script = workdir / "bare_app.py"
    script.write_text(textwrap.dedent(BARE_SOURCE))
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(_read_stream(url, "/ticks", 1, 0.0))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the bare FastAPI server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events per throughput stream")
    parser.add_argument("--latency-events", type=int, default=1000, help="events, 1 ms apart")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    from skyform.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "stream_app.py").write_text(textwrap.dedent(APP_SOURCE))
        bundle = build_bundle(str(workdir / "stream_app.py") + "::Streams", workdir, BUNDLE_KEY)
        with _gateway(workdir) as (url, _pid), _bare(workdir) as bare:
            payload = {"bundle_b64": base64.b64encode(bundle.data).decode(), "auth": "public"}
            _admin(url, "PUT", "/-/apps/streams", {**payload, "env": {}})
            asyncio.run(_read_stream(url, "/streams/ticks", 1, 0.0))  # starts the runner
            through, bare_side = (url, "/streams/ticks"), (bare, "/ticks")
            rates: dict[str, list[float]] = {"gateway": [], "bare": []}
            lat: dict[str, list[float]] = {"gateway": [], "bare": []}
            for _ in range(args.rounds):
                for name, side in (("gateway", through), ("bare", bare_side)):
                    seconds, _ = asyncio.run(_read_stream(*side, args.events, 0.0))
                    rates[name].append(args.events / seconds)
                    _, latencies = asyncio.run(_read_stream(*side, args.latency_events, 0.001))
                    lat[name].extend(latencies)
    _report(args, rates, lat)


def _report(args: argparse.Namespace, rates: dict, lat: dict) -> None:
    g_rate, b_rate = statistics.median(rates["gateway"]), statistics.median(rates["bare"])
    ratio = g_rate / b_rate
    g50, g99 = _pct(lat["gateway"], 0.5) * 1000, _pct(lat["gateway"], 0.99) * 1000
    b50, b99 = _pct(lat["bare"], 0.5) * 1000, _pct(lat["bare"], 0.99) * 1000
    print(
        f"{os.cpu_count()} CPUs, {args.rounds} rounds: {args.events} events per throughput "
        f"stream, {args.latency_events} events 1 ms apart per latency stream\n"
    )
    print("| measure | bare FastAPI | through gateway (runner + gateway) | result | target |")
    print("|---|---:|---:|---|---|")
    print(f"| chunk latency p50 (ms) | {b50:.2f} | {g50:.2f} | {g50 - b50:+.2f} ms | - |")
    print(
        f"| chunk latency p99 (ms) | {b99:.2f} | {g99:.2f} | {g99 - b99:+.2f} ms | "
        f"<= 10 ms {'OK' if g99 <= 10 else 'MISSED'} |"
    )
    print(
        f"| throughput (events/s) | {b_rate:.0f} | {g_rate:.0f} | {ratio:.2f}x | "
        f">= 0.3x {'OK' if ratio >= 0.3 else 'MISSED'} |"
    )


if __name__ == "__main__":
    main()
