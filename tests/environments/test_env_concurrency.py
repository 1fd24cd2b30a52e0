"""Real concurrent processes: one key builds once; a build killed half-way is rebuilt, never used."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from support.envs import PYTHON_VERSION, ensure_in_subprocess, reaped, run_in
from support.waiting import wait_for

from skyform.providers.environments import (
    MARKER,
    ensure_environment,
    env_path,
    environment_key,
    load_environment,
    skyform_version,
)

pytestmark = pytest.mark.slow


def test_processes_starting_together_build_once(tmp_path: Path) -> None:
    # Two runners of one app, and another app listing the same packages differently.
    variants = [["six", "toolz"], ["toolz", "six"], [" six ", "toolz", "six"]]
    go = tmp_path / "go"
    procs = [
        ensure_in_subprocess(reqs, go=str(go), ready=str(tmp_path / f"ready{i}"))
        for i, reqs in enumerate(variants)
    ]
    with reaped(*procs):
        wait_for(
            lambda: all((tmp_path / f"ready{i}").exists() for i in range(len(procs))),
            60,
            "the processes to start",
        )
        go.touch()  # all three ask at once
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["built"] for r in results) == 1, results
    assert len({r["key"] for r in results}) == 1
    assert len({r["build_id"] for r in results}) == 1, "everyone got the one build"
    assert run_in(results[0]["python"], "import six, toolz").returncode == 0


def _slow_project(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A local package whose build blocks while a flag file exists (a build to kill)."""
    project = tmp_path / "slowpkg"
    project.mkdir()
    slow, started = tmp_path / "SLOW", tmp_path / "STARTED"
    (project / "slowpkg.py").write_text("VALUE = 42\n")
    (project / "setup.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib, time
            from setuptools import setup
            if pathlib.Path({str(slow)!r}).exists():
                pathlib.Path({str(started)!r}).touch()
                time.sleep(300)
            setup(name="slowpkg", version="1.0", py_modules=["slowpkg"])
            """
        )
    )
    return project, slow, started


def test_a_build_killed_half_way_is_detected_and_rebuilt(tmp_path: Path) -> None:
    project, slow, started = _slow_project(tmp_path)
    reqs = [f"slowpkg @ {project.as_uri()}"]
    key = environment_key(reqs, PYTHON_VERSION, skyform_version())
    slow.touch()
    proc = ensure_in_subprocess(reqs)
    with reaped(proc):
        wait_for(started.exists, 120, "the installer to be mid-build")
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no cleanup runs
        proc.wait(timeout=30)
    half = env_path(key)
    assert half.is_dir(), "the killed build left a half-built environment"
    assert not (half / MARKER).exists()
    assert load_environment(key) is None, "a half-built environment is never handed out"

    slow.unlink()
    lines: list[str] = []
    env = ensure_environment(reqs, PYTHON_VERSION, lines.append)
    assert env.built is True
    assert any("incomplete" in line for line in lines), lines
    probe = run_in(env.python, "import slowpkg; print(slowpkg.VALUE)")
    assert probe.stdout.strip() == "42", probe.stderr


def test_a_waiting_process_gets_the_environment_another_one_built(tmp_path: Path) -> None:
    """While one process builds, another waits on the key's lock, then reuses the result."""
    project, slow, started = _slow_project(tmp_path)
    reqs = [f"slowpkg @ {project.as_uri()}"]
    slow.touch()
    builder = ensure_in_subprocess(reqs)
    waiter = None
    with reaped(builder):
        wait_for(started.exists, 120, "the first build to be under way")
        waiter = ensure_in_subprocess(reqs)
        with reaped(waiter):
            time.sleep(1.0)
            assert waiter.poll() is None, "the second process waits for the first build"
            slow.unlink()  # let the first build finish... it is still sleeping: kill it instead
            os.killpg(builder.pid, signal.SIGKILL)
            builder.wait(timeout=30)
            out, err = waiter.communicate(timeout=180)
    assert waiter.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["built"] is True, "the waiter found the killed build incomplete and built it"
    assert run_in(result["python"], "import slowpkg").returncode == 0
