"""The benchmarks' load generator: wrk, driven from Python, results as a dict.

Why wrk and not a Python loop: a Python client tops out near 3.5k requests/s
on one core, so it measured itself, not the server. wrk (C, epoll) drives
tens of thousands per second from one thread and reports latency
percentiles. It comes from Debian's packages (`scripts/bench-deps.sh`,
run by `ensure_wrk()` when wrk is missing); the tests never need it.

`run()` writes a small Lua script per call: the POST body and headers, and a
`done` hook that prints one JSON line (requests, duration, errors, p50/p99).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def ensure_wrk() -> str:
    """The wrk binary, installed first (as root, from Debian) when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["bash", str(REPO / "scripts" / "bench-deps.sh")], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed; run scripts/bench-deps.sh")
    return found


def _lua_string(text: str) -> str:
    level = "="
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def run(
    url: str,
    *,
    method: str = "POST",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    connections: int = 16,
    seconds: float = 3.0,
    threads: int = 1,
    cpu: int | None = None,
) -> dict[str, Any]:
    """Drive `url` with wrk; {rate, p50_ms, p99_ms, mean_ms, requests, errors}.

    Raises SystemExit when any answer was not 2xx/3xx or a socket failed:
    a throughput of errors is no throughput.
    """
    wrk = ensure_wrk()
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body:
        lines.append(f"wrk.body = {_lua_string(body.decode())}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n" + _DONE)
    command = [wrk, "-t", str(threads), "-c", str(max(connections, threads))]
    command += ["-d", f"{max(1, round(seconds))}s", "--timeout", "30s", "-s", script.name, url]
    try:
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=_pin(cpu),
        )
    finally:
        os.unlink(script.name)
    result_line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), "")
    if out.returncode != 0 or not result_line:
        raise SystemExit(f"wrk failed on {url}: {out.stderr.strip() or out.stdout.strip()}")
    raw = json.loads(result_line)
    if raw["requests"] == 0:
        raise SystemExit(f"{url}: no request completed in {seconds:g}s")
    if raw["status_errors"] or raw["socket_errors"]:
        raise SystemExit(
            f"{url}: {raw['status_errors']} error answers and {raw['socket_errors']} socket "
            f"errors among {raw['requests']} requests"
        )
    return {
        "rate": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
    }


def _pin(cpu: int | None):  # type: ignore[no-untyped-def]
    """preexec_fn keeping wrk on one CPU (so it never trades places with a server)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if cpu >= len(cpus):
        return None
    target = cpus[cpu]
    return lambda: os.sched_setaffinity(0, {target})


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
