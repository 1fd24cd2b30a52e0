"""Benchmark: the skyform runner vs the same endpoints on bare FastAPI + uvicorn.

    .venv/bin/python bench/runner.py [--seconds 5] [--rounds 3] [--connections 16]

Three servers, each in its own process with the same uvicorn settings (loop
and HTTP parser chosen the same way: uvloop and httptools when installed; no
access log, no proxy-header rewriting, no server header, as the runner runs):

- bare FastAPI + uvicorn, in this venv;
- the skyform runner, in this venv;
- the skyform runner in the environment skyform builds for an app with no
  requirements (what `apply` really runs: it must be as fast as this venv's).

The load generator is wrk (`bench/loadgen.py`), one thread, alternating
rounds so drift on a shared machine hits every side alike; the median round
counts. Server and wrk are pinned to one CPU each where the OS allows it.

Measured:
- throughput (requests/s) and p50/p99 latency of a trivial sync and a trivial
  async endpoint, each taking and returning a small pydantic model;
- startup to ready: from spawning the process to the first 200 from /health
  (the runner's readiness route; a plain GET route on the bare app).

Targets: runner >= 0.9x bare throughput, built-environment runner >= 0.9x
this venv's runner, startup <= 1.5x bare.
"""

from __future__ import annotations

import argparse
import contextlib
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

import loadgen

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


def _runner_command(bundle: Path, port: int, python: str = sys.executable) -> list[str]:
    return [
        python,
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


def _measure(port: int, path: str, args: argparse.Namespace) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}{path}"
    loadgen.run(url, body=BODY, connections=args.connections, seconds=args.warmup, cpu=LOAD_CPU)
    return loadgen.run(
        url, body=BODY, connections=args.connections, seconds=args.seconds, cpu=LOAD_CPU
    )


def _built_env_python() -> str:
    """The Python of the environment skyform builds for an app without requirements."""
    from skyform.providers.environments import ensure_environment

    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    return str(ensure_environment([], minor).python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and endpoint")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--starts", type=int, default=5, help="cold starts timed per server")
    args = parser.parse_args()
    loadgen.ensure_wrk()

    from skyform.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp:
        work = Path(tmp)
        (work / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
        (work / "bare_app.py").write_text(textwrap.dedent(BARE_SOURCE))
        bundle = build_bundle("bench_app.py::Bench", work, KEY).write(work / "bench.skyb")
        env_python = _built_env_python()
        servers = {
            "bare": lambda port: _bare_command(port),
            "runner": lambda port: _runner_command(bundle, port),
            "built": lambda port: _runner_command(bundle, port, env_python),
        }

        starts: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.starts):
            for name, command in servers.items():
                with _server(command(_free_port()), work) as (_port, ready):
                    starts[name].append(ready)

        rps: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, command in servers.items():
                with _server(command(_free_port()), work) as (port, _ready):
                    for kind, path in ENDPOINTS.items():
                        rps.setdefault((name, kind), []).append(_measure(port, path, args))

    _report(args, starts, rps)


def _report(
    args: argparse.Namespace,
    starts: dict[str, list[float]],
    rps: dict[tuple[str, str], list[dict[str, float]]],
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
    print(
        "| measure | bare FastAPI + uvicorn | skyform runner | runner / bare | "
        "runner, built env | built / runner |"
    )
    print("|---|---:|---:|---:|---:|---:|")

    def median(name: str, kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rps[(name, kind)])

    for kind in ENDPOINTS:
        bare, runner, built = (median(n, kind, "rate") for n in ("bare", "runner", "built"))
        print(
            f"| {kind} endpoint, req/s | {bare:,.0f} | {runner:,.0f} | {runner / bare:.2f}x "
            f"(>= 0.9x: {_verdict(runner / bare >= 0.9)}) | {built:,.0f} | {built / runner:.2f}x "
            f"(>= 0.9x: {_verdict(built / runner >= 0.9)}) |"
        )
        p50 = [median(n, kind, "p50_ms") for n in ("bare", "runner", "built")]
        p99 = [median(n, kind, "p99_ms") for n in ("bare", "runner", "built")]
        print(
            f"| {kind} p50 / p99, ms | {p50[0]:.2f} / {p99[0]:.2f} | {p50[1]:.2f} / {p99[1]:.2f} "
            f"| - | {p50[2]:.2f} / {p99[2]:.2f} | - |"
        )
    bare_start = statistics.median(starts["bare"])
    runner_start = statistics.median(starts["runner"])
    built_start = statistics.median(starts["built"])
    print(
        f"| startup to ready, s | {bare_start:.2f} | {runner_start:.2f} | "
        f"{runner_start / bare_start:.2f}x (<= 1.5x: {_verdict(runner_start / bare_start <= 1.5)})"
        f" | {built_start:.2f} | {built_start / runner_start:.2f}x |"
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


if __name__ == "__main__":
    main()
