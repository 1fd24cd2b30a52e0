"""Benchmark: dynamic batching on the embeddings example, batched vs unbatched, same run.

    .venv/bin/python bench/batching.py [--seconds 5] [--rounds 3] [--connections 32]

One runner of examples/embeddings (its own environment, the real MiniLM
model on this machine's CPU or GPU) serves two endpoints that each take one
text and return its vector:

- `/one`: `@endpoint(batch_size=32, batch_wait_ms=5)`, the example's own;
- `/plain`: the same work without batching (one `model.encode` per call),
  added by a subclass for this bench only.

wrk sends one text per request from `--connections` callers, alternating
endpoints round by round; the median round counts. Also one caller alone,
where batching can only add its wait (the batch of one starts after
`batch_wait_ms` at most).

No target: the gain depends on the device (a GPU gains far more from a
batch of 32 than two shared CPU cores do); the ratio is what it is here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import loadgen

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "embeddings"
KEY = "bench-batching-key"
BODY = b'{"text": "A man is playing the guitar on a sunny afternoon in the park."}'
BENCH_APP = """
from app import Embedder, TextIn, VectorOut
from skyform import endpoint


class BenchEmbedder(Embedder):
    @endpoint("/plain")
    def plain(self, req: TextIn) -> VectorOut:
        return VectorOut(vector=self._encode([req.text])[0])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    loadgen.ensure_wrk()

    from skyform.bundle import build_bundle
    from skyform.providers.environments import ensure_environment
    from skyform.providers.local import free_port

    with tempfile.TemporaryDirectory(prefix="skyform-bench-batching-") as tmp:
        work = Path(tmp)
        shutil.copy(EXAMPLE / "app.py", work / "app.py")
        (work / "bench_app.py").write_text(BENCH_APP)
        bundle = build_bundle("bench_app.py::BenchEmbedder", work, KEY)
        path = bundle.write(work / "bench.skyb")
        minor = f"{sys.version_info.major}.{sys.version_info.minor}"
        python = ensure_environment(bundle.meta["requirements"], minor).python
        port = free_port()
        env = {**os.environ, "SKYFORM_BUNDLE_KEY": KEY, "HF_HUB_OFFLINE": "1"}
        log = open(work / "runner.log", "wb")  # noqa: SIM115
        command = [str(python), "-m", "skyform.runtime.runner", "--bundle", str(path)]
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc, work / "runner.log")
            runs: dict[tuple[str, int], list[dict]] = {}
            for _ in range(args.rounds):
                for name in ("/one", "/plain"):
                    for callers in (args.connections, 1):
                        result = loadgen.run(
                            url + name, body=BODY, connections=callers, seconds=args.seconds
                        )
                        runs.setdefault((name, callers), []).append(result)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    _report(args, runs)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the runner exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health?wait=5", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the runner did not become ready")


def _report(args: argparse.Namespace, runs: dict[tuple[str, int], list[dict]]) -> None:
    def med(name: str, callers: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[(name, callers)])

    c = args.connections
    print(
        f"{os.cpu_count()} CPUs, wrk, {args.rounds} rounds of {args.seconds:g}s (median), "
        f"one text per request\n"
    )
    print("| endpoint | callers | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, label in (("/one", "batched (32, 5 ms)"), ("/plain", "unbatched")):
        for callers in (c, 1):
            print(
                f"| {label} | {callers} | {med(name, callers, 'rate'):,.0f} | "
                f"{med(name, callers, 'p50_ms'):.2f} | {med(name, callers, 'p99_ms'):.2f} |"
            )
    ratio = med("/one", c, "rate") / med("/plain", c, "rate")
    print(
        f"\nbatched / unbatched at {c} callers: {ratio:.2f}x throughput; one caller: "
        f"{med('/one', 1, 'p50_ms') - med('/plain', 1, 'p50_ms'):+.2f} ms median"
    )


if __name__ == "__main__":
    main()
