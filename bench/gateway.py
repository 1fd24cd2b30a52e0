"""Benchmark: a trivial endpoint called directly on a runner vs through the gateway.

    .venv/bin/python bench/gateway.py [--seconds 3] [--rounds 3] [--connections 16]

One gateway (local provider) with one app and, beside it, one runner of the
same bundle started by hand: "direct" calls go to that runner (with its
token; each runner the gateway starts has a token of its own that nobody else
learns), "gateway" calls go to the gateway's synchronous route `POST /{app}/{path}`,
which queues, dispatches and answers each request. The load generator runs in
a separate process (`--load` mode: asyncio over keep-alive connections), and
rounds alternate between the two sides so drift on a shared machine hits both
alike; the median round counts.

Measured, in the same run:
- throughput (requests/s) with `--connections` concurrent callers;
- median latency of one caller making sequential calls (added = gateway - direct);
- queue submissions/s: `POST /queue/{app}/{path}` answered 202 (durable).

Targets: gateway >= 0.6x direct throughput, <= 2 ms added median latency,
>= 1000 queue submissions/s.
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
import urllib.request
from collections.abc import Iterator
from pathlib import Path

APP_SOURCE = """
from pydantic import BaseModel
from skyform import App, endpoint


class In(BaseModel):
    x: int


class Bench(App):
    max_runners = 1
    max_multiplexing = 64
    keep_alive = 600
    auth = "public"

    @endpoint("/double")
    async def double(self, req: In) -> dict:
        return {"y": req.x * 2}
"""
BODY = b'{"x": 21}'
BUNDLE_KEY = "bench-bundle-key"
ADMIN = "bench-admin"
RUNNER_TOKEN = "bench-runner-token"


# --- load generator (runs in its own process) ---------------------------------


async def _caller(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float], codes: dict
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1
    finally:
        writer.close()


async def _load(host: str, port: int, path: str, headers: dict, connections: int, seconds: float):
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"{extra}content-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    # Warm-up: connections open, caches hot.
    await asyncio.gather(
        *(
            _caller(host, port, request, time.perf_counter() + 0.3, [], {})
            for _ in range(connections)
        )
    )
    latencies: list[float] = []
    codes: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_caller(host, port, request, stop_at, latencies, codes) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    return {
        "rate": len(latencies) / elapsed,
        "median_ms": statistics.median(latencies) * 1000 if latencies else None,
        "codes": codes,
    }


def _load_main(argv: list[str]) -> None:
    host, port, path, headers, connections, seconds = argv
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(
        _load(host, int(port), path, json.loads(headers), int(connections), float(seconds))
    )
    print(json.dumps(result))


def _measure(url: str, path: str, headers: dict, connections: int, seconds: float) -> dict:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            host,
            port,
            path,
            json.dumps(headers),
            str(connections),
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    bad = {c: n for c, n in result["codes"].items() if not str(c).startswith("2")}
    if bad:
        raise SystemExit(f"errors while measuring {url}{path}: {bad}")
    return result


# --- orchestration -------------------------------------------------------------


@contextlib.contextmanager
def _gateway(workdir: Path) -> Iterator[str]:
    from skyform.providers.local import free_port

    port = free_port()
    env = dict(
        os.environ,
        SKYFORM_ADMIN_TOKEN=ADMIN,
        SKYFORM_BUNDLE_KEY=BUNDLE_KEY,
        SKYFORM_RUNNER_TOKEN=RUNNER_TOKEN,
    )
    log = open(workdir / "gateway.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skyform.runtime.gateway",
            "--port",
            str(port),
            "--state-dir",
            str(workdir / "state"),
            "--stack",
            "bench",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _admin(url, "GET", "/-/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start; see gateway.log") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@contextlib.contextmanager
def _direct_runner(workdir: Path, bundle_path: Path) -> Iterator[str]:
    """A runner of the same bundle in the same app environment, started by hand
    (the baseline's side)."""
    from skyform.providers.environments import ensure_environment
    from skyform.providers.local import free_port

    python = str(ensure_environment([], f"{sys.version_info[0]}.{sys.version_info[1]}").python)

    port = free_port()
    env = dict(os.environ, SKYFORM_BUNDLE_KEY=BUNDLE_KEY, SKYFORM_RUNNER_TOKEN=RUNNER_TOKEN)
    log = open(workdir / "runner.log", "wb")  # noqa: SIM115
    cmd = [python, "-m", "skyform.runtime.runner", "--bundle", str(bundle_path)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the runner did not start; see runner.log") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _admin(url: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    from skyform.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
        bundle = build_bundle(str(workdir / "bench_app.py") + "::Bench", workdir, BUNDLE_KEY)
        bundle_path = bundle.write(workdir / "bench.bundle")
        with _gateway(workdir) as url, _direct_runner(workdir, bundle_path) as runner_url:
            _admin(
                url,
                "PUT",
                "/-/apps/bench",
                {
                    "bundle_b64": base64.b64encode(bundle.data).decode(),
                    "auth": "public",
                    "env": {},
                },
            )
            # The first call starts the runner (scale from zero); then find its URL.
            urllib.request.urlopen(
                urllib.request.Request(
                    url + "/bench/double",
                    data=BODY,
                    method="POST",
                    headers={"content-type": "application/json"},
                ),
                timeout=60,
            ).read()
            direct = (runner_url, "/double", {"authorization": f"Bearer {RUNNER_TOKEN}"})
            through = (url, "/bench/double", {})
            rows: dict[str, list[float]] = {
                k: [] for k in ("direct_rps", "gateway_rps", "direct_ms", "gateway_ms", "queue_rps")
            }
            for _ in range(args.rounds):
                rows["direct_rps"].append(_measure(*direct, args.connections, args.seconds)["rate"])
                rows["gateway_rps"].append(
                    _measure(*through, args.connections, args.seconds)["rate"]
                )
                rows["direct_ms"].append(_measure(*direct, 1, args.seconds)["median_ms"])
                rows["gateway_ms"].append(_measure(*through, 1, args.seconds)["median_ms"])
                rows["queue_rps"].append(
                    _measure(url, "/queue/bench/double", {}, args.connections, args.seconds)["rate"]
                )
    _report(args, {k: statistics.median(v) for k, v in rows.items()})


def _report(args: argparse.Namespace, m: dict[str, float]) -> None:
    ratio = m["gateway_rps"] / m["direct_rps"]
    added = m["gateway_ms"] - m["direct_ms"]
    print(
        f"{os.cpu_count()} CPUs, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds:g}s (median round)\n"
    )
    print("| measure | direct to runner | through gateway | result | target |")
    print("|---|---|---|---|---|")
    print(
        f"| throughput (req/s) | {m['direct_rps']:.0f} | {m['gateway_rps']:.0f} | "
        f"{ratio:.2f}x | >= 0.6x {'OK' if ratio >= 0.6 else 'MISSED'} |"
    )
    print(
        f"| median latency, 1 caller (ms) | {m['direct_ms']:.2f} | {m['gateway_ms']:.2f} | "
        f"+{added:.2f} ms | <= 2 ms {'OK' if added <= 2 else 'MISSED'} |"
    )
    print(
        f"| queue submissions (202/s) | - | {m['queue_rps']:.0f} | {m['queue_rps']:.0f}/s | "
        f">= 1000/s {'OK' if m['queue_rps'] >= 1000 else 'MISSED'} |"
    )


if __name__ == "__main__":
    main()
