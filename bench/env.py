"""Benchmark: per-app environments against plain `python -m venv` + `pip install`.

Measures, in one run on this machine:

- baseline: `python -m venv` + `pip install` of the same packages an app
  environment holds (one small pure-Python requirement, `six`, plus skyform's
  runtime needs), and of `six` alone for reference;
- skyform's first build of that environment (a key not yet cached) and its
  cached reuse (the same inputs again), in-process and from a fresh process.

Both "warm" (installer download caches as a developer's machine has them) and
"cold" (empty pip / uv caches) first builds are measured.

Targets: cached reuse <= 0.2 s; first build <= 0.5x the plain venv + pip time.

    python bench/env.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUIREMENT = "six"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def plain_venv_pip(where: Path, packages: list[str], *, cold: bool) -> float:
    """`python -m venv` then `pip install` (pip reads the user's own configuration)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    if cold:
        env["PIP_NO_CACHE_DIR"] = "1"
    base = getattr(sys, "_base_executable", sys.executable)

    def run() -> None:
        subprocess.run([base, "-m", "venv", str(where)], check=True, env=env)
        subprocess.run(
            [str(where / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
            check=True,
            env=env,
            stderr=subprocess.DEVNULL,  # pip's warnings about the user's index layout
        )

    return _timed(run)


def skyform_first_build(cache: Path, *, cold_uv: Path | None) -> float:
    """`ensure_environment` for a key not yet built, in a fresh process (as a provider calls it)."""
    env = {**os.environ, "SKYFORM_CACHE_DIR": str(cache)}
    if cold_uv is not None:
        env["UV_CACHE_DIR"] = str(cold_uv)
    code = (
        "import sys, time\n"
        "from skyform.providers.environments import ensure_environment\n"
        "t = time.perf_counter()\n"
        f"e = ensure_environment([{REQUIREMENT!r}], {PYTHON_VERSION!r})\n"
        "assert e.built\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return float(out.stdout.decode().strip())


def skyform_reuse_in_process(cache: Path, repeat: int = 50) -> float:
    from skyform.providers.environments import ensure_environment

    os.environ["SKYFORM_CACHE_DIR"] = str(cache)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        env = ensure_environment([REQUIREMENT], PYTHON_VERSION)
        times.append(time.perf_counter() - started)
        assert not env.built
    return statistics.median(times)


def skyform_reuse_new_process(cache: Path, repeat: int = 5) -> float:
    """Whole `python -c 'ensure_environment(...)'`, interpreter start-up included."""
    env = {**os.environ, "SKYFORM_CACHE_DIR": str(cache)}
    code = (
        "from skyform.providers.environments import ensure_environment\n"
        f"assert not ensure_environment([{REQUIREMENT!r}], {PYTHON_VERSION!r}).built\n"
    )
    return statistics.median(
        _timed(lambda: subprocess.run([sys.executable, "-c", code], check=True, env=env))
        for _ in range(repeat)
    )


def main() -> int:
    from skyform.providers.environments import installer_name, runtime_requirements

    packages = [*runtime_requirements(), REQUIREMENT]
    with tempfile.TemporaryDirectory(prefix="skyform-bench-env-") as tmp:
        root = Path(tmp)
        # warm the installers' download caches once, outside the measurements
        plain_venv_pip(root / "warmup-pip", packages, cold=False)
        skyform_first_build(root / "warmup-cache", cold_uv=None)

        base_warm = plain_venv_pip(root / "plain-warm", packages, cold=False)
        base_six = plain_venv_pip(root / "plain-six", [REQUIREMENT], cold=False)
        base_cold = plain_venv_pip(root / "plain-cold", packages, cold=True)
        first_warm = skyform_first_build(root / "cache-warm", cold_uv=None)
        first_cold = skyform_first_build(root / "cache-cold", cold_uv=root / "uv-cold")
        reuse = skyform_reuse_in_process(root / "cache-warm")
        reuse_proc = skyform_reuse_new_process(root / "cache-warm")
        for path in root.iterdir():
            shutil.rmtree(path, ignore_errors=True)

    rows = [
        ("plain venv + pip: six + runtime (warm pip cache)", base_warm, "1.00x (baseline)"),
        ("plain venv + pip: six alone (warm pip cache)", base_six, f"{base_six / base_warm:.2f}x"),
        ("plain venv + pip: six + runtime (no pip cache)", base_cold, "1.00x (cold baseline)"),
        (
            f"skyform first build, {installer_name()} (warm cache)",
            first_warm,
            f"{first_warm / base_warm:.2f}x of warm baseline",
        ),
        (
            f"skyform first build, {installer_name()} (empty cache)",
            first_cold,
            f"{first_cold / base_cold:.2f}x of cold baseline",
        ),
        ("skyform cached reuse (in-process, median of 50)", reuse, "target <= 0.2 s"),
        ("skyform cached reuse (new process, median of 5)", reuse_proc, "target <= 0.2 s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"bench/env.py: one environment with {REQUIREMENT!r}, Python {PYTHON_VERSION}")
    print(f"{'measurement'.ljust(width)}  {'seconds':>9}  ratio")
    for name, seconds, ratio in rows:
        print(f"{name.ljust(width)}  {seconds:9.4f}  {ratio}")
    ok_reuse = reuse <= 0.2
    ok_first = first_warm <= 0.5 * base_warm and first_cold <= 0.5 * base_cold
    print(f"cached reuse <= 0.2 s: {'PASS' if ok_reuse else 'FAIL'}")
    print(f"first build <= 0.5x plain venv + pip: {'PASS' if ok_first else 'FAIL'}")
    return 0 if ok_reuse and ok_first else 1


if __name__ == "__main__":
    sys.exit(main())
