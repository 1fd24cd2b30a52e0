"""Installers never outlive their build, never build beside each other, never see secrets.

A real build of a local package whose `setup.py` blocks (so there is a live
installer to look at) runs in a child process, as `apply` or the gateway runs
it; the tests kill that builder the hard way.
"""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
from support.envs import PYTHON_VERSION, ensure_in_subprocess, reaped
from support.procs import descendants, pid_alive
from support.waiting import wait_until

from skyform.providers.environments import environment_key, key_lock, skyform_version

pytestmark = pytest.mark.slow

SECRET = "installer-must-not-see-this-3391"


def _blocking_project(tmp_path: Path) -> tuple[list[str], Path, Path]:
    """Requirements naming a package whose build blocks while a flag file exists;
    the build writes its pid to a file once it blocks."""
    project = tmp_path / "blockpkg"
    project.mkdir()
    flag, started = tmp_path / "BLOCK", tmp_path / "STARTED"
    (project / "blockpkg.py").write_text("VALUE = 1\n")
    (project / "setup.py").write_text(
        textwrap.dedent(
            f"""
            import os, pathlib, time
            from setuptools import setup
            while pathlib.Path({str(flag)!r}).exists():
                pathlib.Path({str(started)!r}).write_text(str(os.getpid()))
                time.sleep(0.2)
            setup(name="blockpkg", version="1.0", py_modules=["blockpkg"])
            """
        )
    )
    flag.touch()
    return [f"blockpkg @ {project.as_uri()}"], flag, started


def _lock_free(key: str) -> bool:
    with key_lock(key, blocking=False) as held:
        return held


def test_a_builder_killed_by_sigkill_takes_its_installers_along(tmp_path: Path) -> None:
    reqs, _flag, started = _blocking_project(tmp_path)
    key = environment_key(reqs, PYTHON_VERSION, skyform_version())
    env = {**os.environ, "MY_SECRET": SECRET, "SKYFORM_API_KEY": SECRET + "-api"}
    builder = ensure_in_subprocess(reqs, env=env)
    with reaped(builder):
        assert wait_until(lambda: started.exists() and started.read_text(), 120)
        backend = int(started.read_text())
        tree = descendants(builder.pid)
        assert backend in tree and len(tree) >= 2, tree  # the supervisor, uv, the build
        for pid in tree:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert SECRET.encode() not in environ, f"installer {pid} got the deployer's secret"
        assert not _lock_free(key), "the build holds its key's lock"
        os.kill(builder.pid, signal.SIGKILL)  # the builder alone: no cleanup code runs
        builder.wait(timeout=30)
        assert wait_until(lambda: not any(pid_alive(p) for p in tree), 15), [
            p for p in tree if pid_alive(p)
        ]
    assert wait_until(lambda: _lock_free(key), 10), "the lock is free once the installers died"


def test_the_lock_stays_held_while_any_installer_process_lives(tmp_path: Path) -> None:
    """Even when the builder and the supervisor die at once (an OOM kill), the orphaned
    installer still holds the key's lock: no second build starts beside it."""
    reqs, flag, started = _blocking_project(tmp_path)
    key = environment_key(reqs, PYTHON_VERSION, skyform_version())
    builder = ensure_in_subprocess(reqs)
    with reaped(builder):
        assert wait_until(lambda: started.exists() and started.read_text(), 120)
        backend = int(started.read_text())
        tree = descendants(builder.pid)
        supervisor = next(p for p in tree if os.getpgid(p) == p)
        group = os.getpgid(backend)
        assert group == supervisor, "installer steps run in the supervisor's process group"
        for pid in (supervisor, builder.pid):  # the supervisor first: it would clean up
            os.kill(pid, signal.SIGKILL)
        builder.wait(timeout=30)
        assert pid_alive(backend)
        assert not _lock_free(key), "an orphaned installer still holds the lock"
        os.killpg(group, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(backend), 15)
    flag.unlink()
    assert wait_until(lambda: _lock_free(key), 10)
