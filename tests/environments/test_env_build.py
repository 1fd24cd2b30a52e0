"""Real environment builds: what is inside, reuse, rebuilds, and failures with the installer's words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.envs import PYTHON_VERSION, REPO, SMALL, env_vars, make_wheel, run_in
from support.procs import free_port

from skyform.bundle import build_bundle
from skyform.errors import SkyformError
from skyform.providers.environments import (
    MARKER,
    EnvironmentBuildError,
    ensure_environment,
    env_path,
    environment_key,
    load_environment,
    skyform_version,
)

pytestmark = pytest.mark.slow

DEPLOYER_ONLY = ("deepdiff", "typer", "rich", "pytest", "psycopg")


def test_environment_has_the_requirement_the_runtime_and_our_skyform(six_env) -> None:
    env, _ = six_env
    probe = run_in(
        env.python,
        "import sys, six, skyform, fastapi, uvicorn, pydantic, cloudpickle, httpx, yaml;"
        "print(sys.version_info[:2], skyform.__file__, sys.prefix)",
    )
    assert probe.returncode == 0, probe.stderr
    version, skyform_file, prefix = probe.stdout.split()[0:2], *probe.stdout.split()[2:]
    assert "".join(version) == f"({PYTHON_VERSION.replace('.', ',')})"
    assert Path(skyform_file).resolve() == REPO / "declare" / "__init__.py"  # the checkout
    assert Path(prefix).resolve() == env.path.resolve()
    assert env.key == environment_key([SMALL], PYTHON_VERSION, skyform_version())
    assert env.path.parent.parent == Path(os.environ["SKYFORM_CACHE_DIR"])


# Imported by every runner: each must come with its bytecode, so no start recompiles it.
COMPILED_PROBE = (
    "import importlib.util, os, sys, six, uvicorn, uvloop, httptools, fastapi, skyform.runtime.runner;"
    "missing = [m.__name__ for m in (six, uvicorn, uvloop, httptools, fastapi) "
    "if not os.path.exists(importlib.util.cache_from_source(m.__file__))];"
    "print(sys.flags.dont_write_bytecode, missing)"
)


def test_environment_has_uvloop_httptools_and_bytecode_despite_dontwritebytecode(
    six_env,
) -> None:
    """Built under PYTHONDONTWRITEBYTECODE=1 (conftest), yet compiled, with the fast server parts."""
    env, _ = six_env
    with env_vars(PYTHONDONTWRITEBYTECODE="1"):  # nothing may get compiled now
        probe = run_in(env.python, COMPILED_PROBE)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["1", "[]"], probe.stdout
    assert json.loads((env.path / MARKER).read_text())["bytecode"] is True


@pytest.mark.parametrize("module", DEPLOYER_ONLY)
def test_deployer_only_packages_are_not_importable(six_env, module: str) -> None:
    env, _ = six_env
    probe = run_in(env.python, f"import {module}")
    assert probe.returncode != 0
    assert f"No module named '{module}'" in probe.stderr


def test_runner_side_cannot_load_an_app_that_needs_a_deployer_only_package(
    six_env, tmp_path: Path
) -> None:
    env, _ = six_env
    (tmp_path / "six_app.py").write_text(
        "from skyform import App, endpoint\n"
        "class UsesSix(App):\n"
        "    requirements = ['six']\n"
        "    @endpoint('/')\n"
        "    def hello(self) -> dict:\n"
        "        import six  # only the runner has it\n"
        "        return {'six': six.__version__}\n"
    )
    (tmp_path / "deepdiff_app.py").write_text(
        "import deepdiff  # the deployer has it; the app does not list it\n"
        "from skyform import App, endpoint\n"
        "class UsesDeepdiff(App):\n"
        "    requirements = ['six']\n"
        "    @endpoint('/')\n"
        "    def hello(self) -> dict:\n"
        "        return {'d': str(deepdiff.DeepDiff(1, 2))}\n"
    )
    for module, name in (("six_app", "UsesSix"), ("deepdiff_app", "UsesDeepdiff")):
        build_bundle(f"{module}.py::{name}", tmp_path, "k").write(tmp_path / f"{name}.skyb")
    port = free_port()
    env_vars_for_runner = {
        **{k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}},
        "SKYFORM_BUNDLE_KEY": "k",
    }

    def start_runner(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                str(env.python),
                "-m",
                "skyform.runtime.runner",
                "--bundle",
                str(tmp_path / f"{name}.skyb"),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=env.path,
            env=env_vars_for_runner,
        )

    good = start_runner("UsesSix")
    try:
        answer = _call_when_ready(good, f"http://127.0.0.1:{port}/")
        assert answer["six"].startswith("1."), answer
    finally:
        good.terminate()
        good.communicate(timeout=30)
    bad = start_runner("UsesDeepdiff")
    try:
        out, _ = bad.communicate(timeout=60)
    finally:
        if bad.poll() is None:
            bad.kill()
            bad.communicate()
    assert bad.returncode != 0
    assert "deepdiff" in out and "requirements" in out, out


def _call_when_ready(proc: subprocess.Popen[str], url: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(url.rstrip("/") + "/health", timeout=2).status_code == 200:
                return httpx.post(url, json={}, timeout=10).json()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("runner never became ready")


def test_progress_shows_the_build_and_the_installers_lines(six_env) -> None:
    _, lines = six_env
    assert lines[0].startswith("environment ") and "building" in lines[0]
    assert any("six" in line for line in lines[1:-1]), lines
    assert lines[-1].endswith("s") and "ready in" in lines[-1]


def test_same_inputs_reuse_the_environment_without_building(six_env) -> None:
    env, _ = six_env
    lines: list[str] = []
    again = ensure_environment([f"  {SMALL} ", SMALL], f"{PYTHON_VERSION}.0", lines.append)
    assert again.built is False
    assert (again.key, again.build_id, again.path) == (env.key, env.build_id, env.path)
    assert lines == [f"environment {env.key[:12]}: cached"]


def test_a_half_built_environment_is_rebuilt_never_used(six_env) -> None:
    env, _ = six_env
    marker = env.path / MARKER
    saved = marker.read_text()
    marker.unlink()  # exactly what a build killed before its last step leaves
    (env.path / "half-written-file").write_text("junk")
    try:
        assert load_environment(env.key) is None, "no marker: not complete"
        rebuilt = ensure_environment([SMALL], PYTHON_VERSION)
        assert rebuilt.built is True and rebuilt.build_id != env.build_id
        assert not (env.path / "half-written-file").exists()
        assert run_in(rebuilt.python, "import six").returncode == 0
    finally:
        if not marker.exists():
            marker.write_text(saved)


def test_a_corrupt_marker_counts_as_incomplete(six_env) -> None:
    env, _ = six_env
    marker = env.path / MARKER
    saved = marker.read_text()
    try:
        marker.write_text('{"key": "trunc')
        assert load_environment(env.key) is None
        marker.write_text(json.dumps({**json.loads(saved), "key": "someone-else"}))
        assert load_environment(env.key) is None
    finally:
        marker.write_text(saved)
    assert load_environment(env.key) is not None


def _assert_failed_cleanly(exc: EnvironmentBuildError, requirements: list[str]) -> None:
    assert isinstance(exc, SkyformError)
    assert exc.error_type == "environment_build_failed"
    key = environment_key(requirements, PYTHON_VERSION, skyform_version())
    assert exc.key == key
    assert not env_path(key).exists(), "nothing half-built is left behind"
    assert load_environment(key) is None


def test_a_version_that_does_not_exist_fails_with_the_installers_message() -> None:
    reqs = ["six==0.0.0.1"]
    with pytest.raises(EnvironmentBuildError) as info:
        ensure_environment(reqs, PYTHON_VERSION)
    message = str(info.value)
    assert "six==0.0.0.1" in message
    assert "No solution found" in message or "no version" in message.lower()  # uv's words
    _assert_failed_cleanly(info.value, reqs)


def test_conflicting_requirements_fail_with_the_installers_message() -> None:
    reqs = ["six==1.17.0", "six<1.0"]
    with pytest.raises(EnvironmentBuildError) as info:
        ensure_environment(reqs, PYTHON_VERSION)
    assert "six" in str(info.value) and "No solution found" in str(info.value)
    _assert_failed_cleanly(info.value, reqs)


def test_a_package_that_does_not_exist_fails_with_the_installers_message() -> None:
    reqs = ["skyform-test-no-such-package"]
    with pytest.raises(EnvironmentBuildError) as info:
        ensure_environment(reqs, PYTHON_VERSION)
    message = str(info.value)
    assert "skyform-test-no-such-package" in message
    assert "was not found" in message  # uv's own words
    _assert_failed_cleanly(info.value, reqs)


def test_a_conflict_with_the_runtimes_needs_says_so() -> None:
    reqs = ["pydantic<2"]
    with pytest.raises(EnvironmentBuildError) as info:
        ensure_environment(reqs, PYTHON_VERSION)
    message = str(info.value)
    assert "No solution found" in message
    assert "note: skyform's runtime needs" in message and "pydantic>=" in message
    _assert_failed_cleanly(info.value, reqs)


def test_an_app_pin_of_a_runtime_package_wins() -> None:
    """The runtime asks only for lower bounds: the app's exact pin is what gets installed."""
    env = ensure_environment(["cloudpickle==3.1.2", SMALL], PYTHON_VERSION)
    probe = run_in(env.python, "import cloudpickle; print(cloudpickle.__version__)")
    assert probe.stdout.strip() == "3.1.2", probe.stderr


def test_pip_fallback_builds_the_same_kind_of_environment(tmp_path: Path) -> None:
    with env_vars(
        SKYFORM_CACHE_DIR=str(tmp_path / "cache"),
        SKYFORM_ENV_INSTALLER="pip",
        PYTHONDONTWRITEBYTECODE="1",
    ):
        lines: list[str] = []
        env = ensure_environment([SMALL], PYTHON_VERSION, lines.append)
        assert env.installer == "pip" and env.built
        assert any("pip" in line for line in lines[:1])
        assert run_in(env.python, "import six, skyform, fastapi").returncode == 0
        compiled = run_in(env.python, COMPILED_PROBE)
        assert compiled.returncode == 0 and compiled.stdout.split()[1:] == ["[]"], compiled
        assert run_in(env.python, "import deepdiff").returncode != 0
        with pytest.raises(EnvironmentBuildError) as info:
            ensure_environment(["six==0.0.0.1"], PYTHON_VERSION)
        message = str(info.value)
        assert "ERROR: No matching distribution found for six==0.0.0.1" in message  # pip's words
        assert "Collecting" not in message, "its error, not its progress"
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_unknown_installer_choice_is_a_clear_error() -> None:
    with (
        env_vars(SKYFORM_ENV_INSTALLER="conda"),
        pytest.raises(EnvironmentBuildError, match='must be "uv" or "pip"'),
    ):
        ensure_environment([SMALL], PYTHON_VERSION)


def _other_python_minor() -> str | None:
    from skyform.providers.environments import _interpreter_candidates, _python_minor_of

    for minor in ("3.12", "3.13", "3.11", "3.14"):
        if minor == PYTHON_VERSION:
            continue
        if any(_python_minor_of(c) == minor for c in _interpreter_candidates(minor)):
            return minor
    return None


def test_the_environment_uses_the_bundles_python_minor_not_ours() -> None:
    minor = _other_python_minor()
    if minor is None:
        pytest.skip("no second Python (3.11+) interpreter on this machine")
    env = ensure_environment([SMALL], minor)
    probe = run_in(env.python, "import sys, six, skyform; print('%d.%d' % sys.version_info[:2])")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == minor != PYTHON_VERSION
    assert env.key != environment_key([SMALL], PYTHON_VERSION, skyform_version())


def test_the_users_find_links_reach_the_installer(tmp_path: Path) -> None:
    """A package that exists only as a wheel in the user's find-links folder installs."""
    make_wheel(tmp_path / "links", "skyform-test-localpkg", "1.0", "sf_localpkg", "VALUE = 7\n")
    with env_vars(PIP_FIND_LINKS=str(tmp_path / "links"), UV_FIND_LINKS=None):
        env = ensure_environment(["skyform-test-localpkg==1.0"], PYTHON_VERSION)
    probe = run_in(env.python, "import sf_localpkg; print(sf_localpkg.VALUE)")
    assert probe.stdout.strip() == "7", probe.stderr


def test_the_users_constraints_reach_the_installer(tmp_path: Path) -> None:
    """Without the user's constraint `six>=0.2` installs; with `six<0.1` nothing can."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("six<0.1\n")
    reqs = ["six>=0.2"]
    with (
        env_vars(PIP_CONSTRAINT=str(constraints), UV_CONSTRAINT=None),
        pytest.raises(EnvironmentBuildError) as info,
    ):
        ensure_environment(reqs, PYTHON_VERSION)
    assert "No solution found" in str(info.value) and "six" in str(info.value)
    _assert_failed_cleanly(info.value, reqs)
    assert ensure_environment(reqs, PYTHON_VERSION).built, "and without it, it builds"
