"""Benchmark: the skyform runner vs the same endpoints on bare FastAPI + uvicorn.

    .venv/bin/python bench/runner.py [--seconds 5] [--rounds 3] [--connections 16]

Both servers run in their own process with the same uvicorn settings: loop
and HTTP parser chosen the same way (uvloop and httptools when installed), no
access log, no proxy-header rewriting, no server header, as the runner runs. One load generator
(this file's `--load` mode: asyncio protocols over keep-alive connections, in
a separate process) drives both, alternating rounds so that drift on a shared
machine hits both sides alike; the median round counts. Server and load
generator are pinned to one CPU each where the OS allows it.

Measured:
- throughput (requests/s) of a trivial sync and a trivial async endpoint, each
  taking and returning a small pydantic model;
- startup to ready: from spawning the process to the first 200 from /health
  (the runner's readiness route; a plain GET route on the bare app).

Targets: runner >= 0.9x bare throughput, startup <= 1.5x bare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ENDPOINTS = {"sync": "/sync", "async": "/async"}
BODY = b'{"x": 21}'
KEY = "bench-key"
SERVER_CPU, LOAD_CPU = 0, 1

APP_SOURCE = """
from pydantic import BaseModel
from skyform import App, endpoint


class In(BaseModel):
    x: int


class Out(BaseModel):
    y: int


class Bench(App):
    @endpoint("/sync")
    def sync_double(self, req: In) -> Out:
        return Out(y=req.x * 2)

    @endpoint("/async")
    async def async_double(self, req: In) -> Out:
        return Out(y=req.x * 2)
"""

BARE_SOURCE = """
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class In(BaseModel):
    x: int


class Out(BaseModel):
    y: int


@app.get("/health")
async def health() -> dict:
    return {"status": "ready"}


@app.post("/sync")
def sync_double(req: In) -> Out:
    return Out(y=req.x * 2)


@app.post("/async")
async def async_double(req: In) -> Out:
    return Out(y=req.x * 2)
"""


# ---------------------------------------------------------------- load generator


class _Connection(asyncio.Protocol):
    """Sends one request, waits for its whole response, sends the next (keep-alive)."""

    def __init__(self, request: bytes, stats: dict[str, int], stop_at: float) -> None:
        self.request = request
        self.stats = stats
        self.stop_at = stop_at
        self.buffer = b""
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            ok = head.startswith(b"HTTP/1.1 200")
            self.stats["ok" if ok else "bad"] += 1
            self.buffer = self.buffer[end:]
            if time.monotonic() >= self.stop_at:
                self.transport.close()
                return
            self.transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(port: int, path: str, connections: int, seconds: float, warmup: float) -> dict:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    loop = asyncio.get_running_loop()
    warm = {"ok": 0, "bad": 0}
    await _drive(loop, port, request, warm, connections, time.monotonic() + warmup)
    stats = {"ok": 0, "bad": 0}
    started = time.monotonic()
    await _drive(loop, port, request, stats, connections, started + seconds)
    elapsed = time.monotonic() - started
    return {"rps": stats["ok"] / elapsed, "ok": stats["ok"], "bad": stats["bad"]}


async def _drive(loop, port, request, stats, connections, stop_at) -> None:  # type: ignore[no-untyped-def]
    protocols = []
    for _ in range(connections):
        _transport, protocol = await loop.create_connection(
            lambda: _Connection(request, stats, stop_at), "127.0.0.1", port
        )
        protocols.append(protocol)
    await asyncio.gather(*(p.done for p in protocols))


def _load_main(argv: list[str]) -> None:
    port, path, connections, seconds, warmup = argv
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(json.dumps(run(_load(int(port), path, int(connections), float(seconds), float(warmup)))))


# ---------------------------------------------------------------- servers


def _pin(cpu: int) -> Callable[[], None] | None:
    """Keep server and load generator on their own CPU, so they never trade places."""
    if not hasattr(os, "sched_setaffinity") or cpu >= len(os.sched_getaffinity(0)):
        return None
    target = sorted(os.sched_getaffinity(0))[cpu]
    return lambda: os.sched_setaffinity(0, {target})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _runner_command(bundle: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "skyform.runtime.runner",
        "--bundle",
        str(bundle),
        "--port",
        str(port),
    ]


def _bare_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
        "--no-access-log", "--no-proxy-headers", "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def _server(command: list[str], workdir: Path) -> Iterator[tuple[int, float]]:
    """Start a server; yield (port, seconds from spawn to first 200 on /health)."""
    port = int(command[command.index("--port") + 1])
    env = {**os.environ, "SKYFORM_BUNDLE_KEY": KEY}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_pin(SERVER_CPU),
    )
    try:
        ready = _wait_ready(port, proc, started)
        yield port, ready
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], started: float) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    raise SystemExit("server never became ready")


def _measure(port: int, path: str, args: argparse.Namespace) -> float:
    command = [sys.executable, __file__, "--load", str(port), path, str(args.connections)]
    command += [str(args.seconds), str(args.warmup)]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, preexec_fn=_pin(LOAD_CPU)
    ).stdout
    result = json.loads(out)
    if result["bad"]:
        raise SystemExit(f"{result['bad']} non-200 responses from {path}")
    return float(result["rps"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and endpoint")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--starts", type=int, default=5, help="cold starts timed per server")
    args = parser.parse_args()

    from skyform.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp:
        work = Path(tmp)
        (work / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
        (work / "bare_app.py").write_text(textwrap.dedent(BARE_SOURCE))
        bundle = build_bundle("bench_app.py::Bench", work, KEY).write(work / "bench.skyb")
        servers = {
            "bare": lambda port: _bare_command(port),
            "runner": lambda port: _runner_command(bundle, port),
        }

        starts: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.starts):
            for name, command in servers.items():
                with _server(command(_free_port()), work) as (_port, ready):
                    starts[name].append(ready)

        rps: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, command in servers.items():
                with _server(command(_free_port()), work) as (port, _ready):
                    for kind, path in ENDPOINTS.items():
                        rps.setdefault((name, kind), []).append(_measure(port, path, args))

    _report(args, starts, rps)


def _report(
    args: argparse.Namespace,
    starts: dict[str, list[float]],
    rps: dict[tuple[str, str], list[float]],
) -> None:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loop {loop}, "
        f"{args.connections} connections, {args.rounds} rounds x {args.seconds:g}s (median), "
        f"server and load generator pinned to one CPU each"
    )
    print()
    print("| measure | bare FastAPI + uvicorn | skyform runner | runner / bare | target |")
    print("|---|---|---|---|---|")
    for kind in ENDPOINTS:
        bare = statistics.median(rps[("bare", kind)])
        runner = statistics.median(rps[("runner", kind)])
        print(
            f"| {kind} endpoint, requests/s | {bare:,.0f} | {runner:,.0f} | "
            f"{runner / bare:.2f}x | >= 0.9x |"
        )
    bare_start = statistics.median(starts["bare"])
    runner_start = statistics.median(starts["runner"])
    print(
        f"| startup to ready, s | {bare_start:.2f} | {runner_start:.2f} | "
        f"{runner_start / bare_start:.2f}x | <= 1.5x |"
    )


if __name__ == "__main__":
    main()
