"""Benchmark: requests/s through the gateway with TLS vs without, same run.

    .venv/bin/python bench/tls.py [--seconds 3] [--rounds 3] [--connections 16]

Two gateways (local provider) serve the same trivial app: one in plaintext
with a plaintext runner (the local default), one with `tls: auto`
certificates from the stack CA whose runner serves TLS too (`runner_tls`),
so both hops are encrypted and verified. The load generator runs in its own
process over keep-alive connections (TLS handshakes happen once per
connection, in the warm-up), and rounds alternate between the two so drift on
a shared machine hits both alike; the median round counts.

Measured, in the same run: throughput with `--connections` callers, and the
median latency of one sequential caller. Target: TLS >= 0.7x plaintext
throughput (both hops pay for encryption).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# The same trivial app, keys and body as bench/gateway.py, so the two benches compare.
from gateway import ADMIN, APP_SOURCE, BODY, BUNDLE_KEY

# --- load generator (runs in its own process) ---------------------------------


async def _caller(
    port: int, context: ssl.SSLContext | None, request: bytes, stop_at: float, out: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                raise SystemExit(f"unexpected answer: {head[:40]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _load(port: int, ca_file: str, connections: int, seconds: float) -> dict:
    context = None
    if ca_file:
        from skyform.tlscontext import client_context

        context = client_context(ca_file)
    request = (
        f"POST /bench/double HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    warm = time.perf_counter() + 0.3
    await asyncio.gather(*(_caller(port, context, request, warm, []) for _ in range(connections)))
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(_caller(port, context, request, stop_at, latencies) for _ in range(connections))
    )
    return {
        "rate": len(latencies) / (time.perf_counter() - started),
        "median_ms": statistics.median(latencies) * 1000,
    }


def _measure(port: int, ca_file: str, connections: int, seconds: float) -> dict:
    command = [sys.executable, __file__, "--load", str(port), ca_file, str(connections)]
    out = subprocess.run([*command, str(seconds)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# --- orchestration -------------------------------------------------------------


@contextlib.contextmanager
def _gateway(workdir: Path, tls: bool) -> Iterator[tuple[int, str]]:
    """A gateway (and, on first call, its runner); yields (port, CA file or "")."""
    from skyform.engine.tls import ensure_leaf
    from skyform.providers.local import free_port

    port = free_port()
    state = workdir / "state"
    state.mkdir(parents=True)
    args: list[str] = []
    ca_file = ""
    if tls:
        gateway = ensure_leaf(workdir, "bench", "gateway", [])
        runner = ensure_leaf(workdir, "bench", "runner", [])
        args = ["--tls-cert", str(gateway.cert), "--tls-key", str(gateway.key)]
        args += ["--runner-cert", str(runner.cert), "--runner-key", str(runner.key)]
        args += ["--runner-ca", str(runner.ca)]
        (state / "provider.json").write_text(json.dumps({"local": {"runner_tls": True}}))
        ca_file = str(gateway.ca)
    env = dict(os.environ, SKYFORM_ADMIN_TOKEN=ADMIN, SKYFORM_BUNDLE_KEY=BUNDLE_KEY)
    log = open(workdir / "gateway.log", "wb")  # noqa: SIM115
    command = [sys.executable, "-m", "skyform.runtime.gateway", "--port", str(port)]
    command += ["--state-dir", str(state), "--stack", "bench", *args]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port, ca_file
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _register(port: int, ca_file: str, bundle: bytes) -> None:
    scheme = "https" if ca_file else "http"
    verify: ssl.SSLContext | bool = True
    if ca_file:
        from skyform.tlscontext import client_context

        verify = client_context(ca_file)
    with httpx.Client(base_url=f"{scheme}://127.0.0.1:{port}", verify=verify, timeout=60) as c:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.get("/-/health", headers={"Authorization": f"Bearer {ADMIN}"})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("a gateway did not start; see gateway.log") from None
                time.sleep(0.1)
        payload = {"bundle_b64": base64.b64encode(bundle).decode(), "auth": "public", "env": {}}
        c.put("/-/apps/bench", json=payload, headers={"Authorization": f"Bearer {ADMIN}"})
        c.post("/bench/double", content=BODY).raise_for_status()  # starts the runner


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        port, ca_file, connections, seconds = sys.argv[2:]
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        result = asyncio.run(_load(int(port), ca_file, int(connections), float(seconds)))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    from skyform.bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="skyform-bench-tls-") as tmp:
        workdir = Path(tmp)
        (workdir / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
        bundle = build_bundle(str(workdir / "bench_app.py") + "::Bench", workdir, BUNDLE_KEY)
        with (
            _gateway(workdir / "plain", tls=False) as plain,
            _gateway(workdir / "tls", tls=True) as secure,
        ):
            for port, ca_file in (plain, secure):
                _register(port, ca_file, bundle.data)
            rows: dict[str, list[float]] = {k: [] for k in ("plain", "tls", "plain_ms", "tls_ms")}
            for _ in range(args.rounds):
                for name, (port, ca_file) in (("plain", plain), ("tls", secure)):
                    rows[name].append(
                        _measure(port, ca_file, args.connections, args.seconds)["rate"]
                    )
                    rows[f"{name}_ms"].append(_measure(port, ca_file, 1, args.seconds)["median_ms"])
    m = {k: statistics.median(v) for k, v in rows.items()}
    ratio = m["tls"] / m["plain"]
    print(
        f"{os.cpu_count()} CPUs, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds:g}s (median round)\n"
    )
    print("| measure | plaintext | TLS (client->gateway->runner) | result | target |")
    print("|---|---|---|---|---|")
    print(
        f"| throughput (req/s) | {m['plain']:.0f} | {m['tls']:.0f} | {ratio:.2f}x | "
        f">= 0.7x {'OK' if ratio >= 0.7 else 'MISSED'} |"
    )
    print(
        f"| median latency, 1 caller (ms) | {m['plain_ms']:.2f} | {m['tls_ms']:.2f} | "
        f"+{m['tls_ms'] - m['plain_ms']:.2f} ms | - |"
    )


if __name__ == "__main__":
    main()
