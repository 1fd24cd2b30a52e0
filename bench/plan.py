"""Benchmark: a no-change `skyform plan` for stacks of 10, 100 and 1000 apps.

Each stack is real: one file per app (each importing a shared helper module),
applied for real to a local gateway (min_runners 0, so no runner starts),
then `skyform plan --detailed-exitcode` is timed in a fresh process; it must
exit 0 (no changes). The table shows the median of a few runs, the time per
app, and the growth against the 10-app stack (linear growth keeps the
per-app time flat). Target: <= 3 s at 1000 apps.

    .venv/bin/python bench/plan.py [--sizes 10,100,1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKYFORM = [sys.executable, "-m", "skyform.cli"]
TARGET_S = 3.0
TARGET_SIZE = 1000

APP = """from pydantic import BaseModel

from common import shout
from skyform import App, endpoint


class In(BaseModel):
    text: str


class Bench(App):
    machine_type = "CPU"
    max_runners = 2

    @endpoint("/")
    def echo(self, req: In) -> dict:
        return {{"text": shout(req.text), "app": {index}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_stack(root: Path, size: int) -> None:
    apps = root / "apps"
    apps.mkdir(parents=True)
    (apps / "common.py").write_text("def shout(text: str) -> str:\n    return text.upper()\n")
    lines = [f"stack: bench-{size}", f"gateway: {{port: {free_port()}}}", "apps:"]
    for i in range(size):
        (apps / f"app_{i}.py").write_text(APP.format(index=i))
        lines += [f"  app-{i}:", f"    app: apps/app_{i}.py::Bench", "    keep_alive: 30"]
    (root / "skyform.yaml").write_text("\n".join(lines) + "\n")


def skyform(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [*SKYFORM, *args], cwd=root, env=env, capture_output=True, text=True, timeout=1800
    )
    if check and proc.returncode not in (0, 2):
        raise SystemExit(f"skyform {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def bench_size(size: int, repeat: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix=f"skyform-bench-{size}-") as tmp:
        root = Path(tmp)
        make_stack(root, size)
        try:
            started = time.perf_counter()
            skyform(root, "apply", "--auto-approve")
            apply_s = time.perf_counter() - started
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                proc = skyform(root, "plan", "--detailed-exitcode", check=False)
                times.append(time.perf_counter() - started)
                if proc.returncode != 0:
                    raise SystemExit(
                        f"plan after apply was not clean (exit {proc.returncode}):\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
                    )
            return statistics.median(times), apply_s
        finally:
            skyform(root, "destroy", "--auto-approve", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {size: bench_size(size, args.repeat) for size in sizes}
    base_size = sizes[0]
    base = results[base_size][0]
    print(f"\nno-change plan, median of {args.repeat} (fresh process each, gateway live)\n")
    print(f"{'apps':>6} {'plan s':>8} {'ms/app':>8} {'vs ' + str(base_size):>8} {'apply s':>8}")
    for size in sizes:
        plan_s, apply_s = results[size]
        print(
            f"{size:>6} {plan_s:>8.2f} {plan_s / size * 1000:>8.2f} "
            f"{plan_s / base:>7.1f}x {apply_s:>8.1f}"
        )
    print()
    print(target_line(results))
    return 0 if results.get(TARGET_SIZE, (0.0,))[0] <= TARGET_S else 1


def target_line(results: dict[int, tuple[float, float]]) -> str:
    """The verdict on the target, only when the target's size was measured in this run."""
    if TARGET_SIZE not in results:
        return (
            f"target: <= {TARGET_S:.0f} s at {TARGET_SIZE} apps: not measured "
            f"(this run planned {', '.join(str(s) for s in sorted(results))} apps)"
        )
    met = results[TARGET_SIZE][0] <= TARGET_S
    return f"target: <= {TARGET_S:.0f} s at {TARGET_SIZE} apps: {'met' if met else 'MISSED'}"


if __name__ == "__main__":
    sys.exit(main())
