"""Benchmark: a trivial endpoint called directly on a runner vs through the gateway.

    .venv/bin/python bench/gateway.py [--seconds 3] [--rounds 3] [--connections 16]

One gateway (local provider) with one app and, beside it, one runner of the
same bundle started by hand: "direct" calls go to that runner (with its
token; each runner the gateway starts has a token of its own that nobody else
learns), "gateway" calls go to the gateway's synchronous route `POST /{app}/{path}`,
which queues, dispatches and answers each request. The load generator is
wrk (`bench/loadgen.py`), and rounds alternate between the two sides so
drift on a shared machine hits both alike; the median round counts.

Measured, in the same run:
- throughput (requests/s) with `--connections` concurrent callers;
- median latency of one caller making sequential calls (added = gateway - direct);
- queue submissions/s: `POST /queue/{app}/{path}` answered 202 (durable).

Also the CPU seconds per request of the gateway and of the runner
(/proc/PID/stat before and after each run), so the ratio can be read
against where the CPU goes on a machine whose cores they share.

Also, for scale, the same runner behind nginx (a compiled reverse proxy with
keep-alive upstream connections; Debian's nginx-light, which
`scripts/bench-deps.sh` installs): what one more process hop costs when the
proxy is not written in Python. It only forwards; the gateway also
authenticates, queues, schedules and retries.

With `--baseline PYTHON` (the interpreter of another checkout's venv, e.g.
the commit before a refactor), a second gateway started by that interpreter
serves the same app beside the first, and takes its turn in every round
(first in every other round: two builds of the same code differ by 2-4 %
depending on which goes first): the table gains its column and the ratios
of this checkout to it, measured in one run. An even --rounds balances the turns.

Targets: gateway >= 0.7x direct throughput, <= 0.25 ms added median latency
with one caller, >= 1000 queue submissions/s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import loadgen

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


# --- load (wrk) ------------------------------------------------------------------


def _measure(
    url: str, path: str, headers: dict, connections: int, seconds: float, pids: dict[str, int]
) -> dict:
    """One wrk run, plus the CPU seconds each process in `pids` spent per request."""
    before = {name: loadgen.process_cpu_seconds(pid) for name, pid in pids.items()}
    result = loadgen.run(
        url + path, body=BODY, headers=headers, connections=connections, seconds=seconds
    )
    for name, pid in pids.items():
        spent = loadgen.process_cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_us"] = spent / max(1, result["requests"]) * 1e6
    return result


# --- orchestration -------------------------------------------------------------


def _wait_started(
    proc: subprocess.Popen[bytes], probe: Callable[[], object], limit: float, what: str
) -> None:
    """Until `probe()` stops raising OSError; exits naming `what` if `proc` dies or `limit` passes."""
    deadline = time.monotonic() + limit
    while True:
        try:
            probe()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start; see its log") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _gateway(workdir: Path, python: str = sys.executable) -> Iterator[tuple[str, int]]:
    """A gateway started by `python` (this venv's, or a baseline checkout's)."""
    from skyform.providers.local import free_port

    port = free_port()
    env = dict(
        os.environ,
        SKYFORM_ADMIN_TOKEN=ADMIN,
        SKYFORM_BUNDLE_KEY=BUNDLE_KEY,
        SKYFORM_RUNNER_TOKEN=RUNNER_TOKEN,
    )
    name = "gateway" if python == sys.executable else "baseline-gateway"
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "skyform.runtime.gateway",
            "--port",
            str(port),
            "--state-dir",
            str(workdir / f"{name}-state"),
            "--stack",
            "bench",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Out of the checkout: a baseline interpreter must import its own
        # skyform, not this directory's.
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_started(
            proc, lambda: _admin(url, "GET", "/-/health"), 30, f"the gateway ({name}.log)"
        )
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@contextlib.contextmanager
def _direct_runner(workdir: Path, bundle_path: Path) -> Iterator[tuple[str, int]]:
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
        # urlopen raises (an OSError) on anything but a 2xx: 503 while starting.
        probe = lambda: urllib.request.urlopen(url + "/health", timeout=2).close()  # noqa: E731
        _wait_started(proc, probe, 60, "the runner (runner.log)")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream runner {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://runner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextlib.contextmanager
def _nginx(workdir: Path, runner_url: str) -> Iterator[tuple[str, int]]:
    """nginx forwarding to the runner at `runner_url` (the compiled-proxy reference)."""
    from skyform.providers.local import free_port

    port = free_port()
    conf = workdir / "nginx.conf"
    upstream = runner_url.rsplit(":", 1)[1]
    conf.write_text(NGINX_CONF.format(work=workdir, upstream=upstream, port=port))
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        probe = lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close()  # noqa: E731
        _wait_started(proc, probe, 10, "nginx (nginx.log)")
        yield url, _nginx_worker(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def _nginx_worker(master: int) -> int:
    """nginx's one worker process (it, not the master, serves the requests)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{master}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise SystemExit("nginx started no worker process")


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


def _runner_pid(gateway_pid: int) -> int:
    """The gateway's one runner process (its child running skyform.runtime.runner)."""
    for task in Path(f"/proc/{gateway_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"skyform.runtime.runner" in cmdline:
                return int(child)
    raise SystemExit("the gateway's runner process was not found")


def _serve_app(url: str, bundle_data: bytes) -> None:
    """Register the bench app on the gateway at `url`; its first call starts the runner."""
    body = {"bundle_b64": base64.b64encode(bundle_data).decode(), "auth": "public", "env": {}}
    _admin(url, "PUT", "/-/apps/bench", body)
    request = urllib.request.Request(
        url + "/bench/double",
        data=BODY,
        method="POST",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=120).read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also measure a gateway started by this interpreter (another checkout's venv)",
    )
    args = parser.parse_args()
    loadgen.ensure_wrk()

    from skyform.bundle import build_bundle

    sides = ["gateway", *(["baseline"] if args.baseline else [])]
    runs: dict[str, list[dict]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        (workdir / "bench_app.py").write_text(textwrap.dedent(APP_SOURCE))
        bundle = build_bundle(str(workdir / "bench_app.py") + "::Bench", workdir, BUNDLE_KEY)
        bundle_path = bundle.write(workdir / "bench.bundle")
        gateways = {
            side: stack.enter_context(
                _gateway(workdir, args.baseline if side == "baseline" else sys.executable)
            )
            for side in sides
        }
        runner_url, direct_pid = stack.enter_context(_direct_runner(workdir, bundle_path))
        for url, _pid in gateways.values():
            _serve_app(url, bundle.data)
        proxy = None
        if shutil.which("nginx"):
            proxy = stack.enter_context(_nginx(workdir, runner_url))
        c, sec = args.connections, args.seconds
        # CPU is counted for a gateway and the runner serving that side.
        direct = (runner_url, "/double", {"authorization": f"Bearer {RUNNER_TOKEN}"})
        direct_pids = {"gateway": gateways["gateway"][1], "runner": direct_pid}
        for round_ in range(args.rounds):
            # Every other round the gateways take their turns the other way round:
            # the side measured first in a round runs a few percent slower here.
            order = list(gateways.items())
            if round_ % 2:
                order.reverse()
            for key, conns in (("direct", c), ("d1", 1)):
                runs.setdefault(key, []).append(_measure(*direct, conns, sec, direct_pids))
            if proxy is not None:
                forwarded = (proxy[0], "/double", direct[2])
                pids = {"nginx": proxy[1], "runner": direct_pid}
                runs.setdefault("nginx", []).append(_measure(*forwarded, c, sec, pids))
                runs.setdefault("nginx1", []).append(_measure(*forwarded, 1, sec, pids))
            for side, (url, pid) in order:
                pids = {"gateway": pid, "runner": _runner_pid(pid)}
                through = (url, "/bench/double", {})
                runs.setdefault(side, []).append(_measure(*through, c, sec, pids))
                runs.setdefault(f"{side}1", []).append(_measure(*through, 1, sec, pids))
                queued = (url, "/queue/bench/double", {})
                runs.setdefault(f"{side}q", []).append(_measure(*queued, c, sec, pids))

    def med(run: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[run])

    def rows(side: str) -> dict[str, float]:
        return {
            "direct_rps": med("direct", "rate"),
            "gateway_rps": med(side, "rate"),
            "direct_ms": med("d1", "p50_ms"),
            "gateway_ms": med(f"{side}1", "p50_ms"),
            "direct_p99": med("direct", "p99_ms"),
            "gateway_p99": med(side, "p99_ms"),
            "queue_rps": med(f"{side}q", "rate"),
            "runner_cpu_direct": med("direct", "runner_cpu_us"),
            "runner_cpu_proxied": med(side, "runner_cpu_us"),
            "gateway_cpu_proxied": med(side, "gateway_cpu_us"),
            "gateway_cpu_queued": med(f"{side}q", "gateway_cpu_us"),
        }

    _report(args, rows("gateway"))
    if "nginx" in runs:
        _report_nginx(rows("gateway"), med("nginx", "rate"), med("nginx1", "p50_ms"))
        print(f"nginx CPU per forwarded request: {med('nginx', 'nginx_cpu_us'):.0f} us")
    if args.baseline:
        _report_baseline(args, rows("gateway"), rows("baseline"))


def _report(args: argparse.Namespace, m: dict[str, float]) -> None:
    ratio = m["gateway_rps"] / m["direct_rps"]
    added = m["gateway_ms"] - m["direct_ms"]
    print(
        f"{os.cpu_count()} CPUs, wrk, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds:g}s (median round)\n"
    )
    print("| measure | direct to runner | through gateway | result | target |")
    print("|---|---|---|---|---|")
    print(
        f"| throughput (req/s) | {m['direct_rps']:,.0f} | {m['gateway_rps']:,.0f} | "
        f"{ratio:.2f}x | >= 0.7x: {_verdict(ratio >= 0.7)} |"
    )
    print(
        f"| p99 latency, {args.connections} connections (ms) | {m['direct_p99']:.2f} | "
        f"{m['gateway_p99']:.2f} | - | - |"
    )
    print(
        f"| median latency, 1 caller (ms) | {m['direct_ms']:.3f} | {m['gateway_ms']:.3f} | "
        f"+{added:.3f} ms | <= 0.25 ms: {_verdict(added <= 0.25)} |"
    )
    print(
        f"| queue submissions (202/s) | - | {m['queue_rps']:,.0f} | {m['queue_rps']:,.0f}/s | "
        f">= 1000/s: {_verdict(m['queue_rps'] >= 1000)} |"
    )
    print(
        f"\nCPU per request: runner {m['runner_cpu_direct']:.0f} us called directly, "
        f"{m['runner_cpu_proxied']:.0f} us behind the gateway; gateway "
        f"{m['gateway_cpu_proxied']:.0f} us per proxied request, "
        f"{m['gateway_cpu_queued']:.0f} us per queue submission"
    )


def _report_nginx(m: dict[str, float], rps: float, p50_ms: float) -> None:
    """The gateway beside a compiled proxy's single hop, both in front of the same runner."""
    print("\nThe same runner behind nginx (forwarding only), same rounds:\n")
    print("| measure | direct | nginx -> runner | gateway -> runner |")
    print("|---|---|---|---|")
    print(
        f"| throughput (req/s) | {m['direct_rps']:,.0f} | {rps:,.0f} "
        f"({rps / m['direct_rps']:.2f}x) | {m['gateway_rps']:,.0f} "
        f"({m['gateway_rps'] / m['direct_rps']:.2f}x) |"
    )
    print(
        f"| median latency, 1 caller (ms) | {m['direct_ms']:.3f} | {p50_ms:.3f} "
        f"(+{p50_ms - m['direct_ms']:.3f}) | {m['gateway_ms']:.3f} "
        f"(+{m['gateway_ms'] - m['direct_ms']:.3f}) |"
    )


def _report_baseline(args: argparse.Namespace, m: dict[str, float], base: dict[str, float]) -> None:
    """This checkout's gateway against the baseline's, both measured in this run."""
    print(f"\nAgainst the baseline gateway ({args.baseline}), same rounds:\n")
    print("| measure | baseline gateway | this gateway | this / baseline |")
    print("|---|---|---|---|")
    for label, key, fmt in (
        ("throughput (req/s)", "gateway_rps", ",.0f"),
        ("throughput vs direct", None, ".2f"),
        ("median latency, 1 caller (ms)", "gateway_ms", ".3f"),
        (f"p99 latency, {args.connections} connections (ms)", "gateway_p99", ".2f"),
        ("queue submissions (202/s)", "queue_rps", ",.0f"),
        ("gateway CPU per proxied request (us)", "gateway_cpu_proxied", ".0f"),
    ):
        if key is None:
            old, new = base["gateway_rps"] / base["direct_rps"], m["gateway_rps"] / m["direct_rps"]
        else:
            old, new = base[key], m[key]
        print(f"| {label} | {old:{fmt}} | {new:{fmt}} | {new / old:.2f}x |")


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


if __name__ == "__main__":
    main()
