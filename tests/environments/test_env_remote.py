"""The remote recipe, run for real with bash here: same key, same layout, same marker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.envs import PYTHON_VERSION, REPO, run_in

from skyform.providers.environments import (
    MARKER,
    environment_key,
    load_environment,
    remote_env_python,
    remote_setup_script,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def skyform_wheel() -> Iterator[Path]:
    """skyform's wheel built from a clean copy of this checkout (what a remote side gets)."""
    with tempfile.TemporaryDirectory(prefix="skyform-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for name in ("declare", "state", "providers", "runtime"):
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        (src / "README.md").write_text("skyform\n")
        built = subprocess.run(
            [sys.executable, "-c", "import sys, setuptools.build_meta as b;"
             "print(b.build_wheel(sys.argv[1]))", str(out)],
            cwd=src, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        yield out / built.stdout.strip().splitlines()[-1]


def _run_script(script: str, cache: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    from uv import find_uv_bin

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "uv").exists():
        (bin_dir / "uv").symlink_to(find_uv_bin())
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.update(SKYFORM_CACHE_DIR=str(cache), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_remote_script_builds_the_environment_local_runs_would_find(
    skyform_wheel: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "remote-cache"
    version = "0.1.0+wheel"
    key = environment_key(["six"], PYTHON_VERSION, version)
    script = remote_setup_script(
        ["six"], PYTHON_VERSION, f"skyform @ {skyform_wheel.as_uri()}", version
    )
    first = _run_script(script, cache, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"environment {key[:12]} ready" in first.stdout

    env_dir = cache / "envs" / key
    assert (env_dir / MARKER).is_file()
    os.environ["SKYFORM_CACHE_DIR"] = str(cache)  # restored by the autouse fixture
    env = load_environment(key)
    assert env is not None and env.requirements == ("six",)
    probe = run_in(env.python, "import six, skyform, fastapi; print(skyform.__file__)")
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve().is_relative_to(env_dir.resolve()), "from the wheel"
    assert run_in(env.python, "import deepdiff").returncode != 0, "skyform installed without deps"

    run_command = remote_env_python(key)
    shown = _run_script(f"{run_command} -c 'import sys; print(sys.prefix)'", cache, tmp_path)
    assert Path(shown.stdout.strip()).resolve() == env_dir.resolve()

    again = _run_script(script, cache, tmp_path)
    assert again.returncode == 0 and f"environment {key[:12]} is cached" in again.stdout


def test_remote_script_failure_exits_nonzero_with_the_installers_words(
    skyform_wheel: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "remote-cache"
    reqs = ["six==0.0.0.1"]
    script = remote_setup_script(reqs, PYTHON_VERSION, str(skyform_wheel), "0.1.0+wheel")
    result = _run_script(script + 'echo "setup-exit=$?"\n', cache, tmp_path)
    assert "setup-exit=1" in result.stdout, "a subshell: the caller's script decides what follows"
    assert "six==0.0.0.1" in result.stderr
    key = environment_key(reqs, PYTHON_VERSION, "0.1.0+wheel")
    assert not (cache / "envs" / key).exists(), "nothing half-built is left"
    strict = _run_script("set -e\n" + script + "echo after-setup\n", cache, tmp_path)
    assert strict.returncode != 0 and "after-setup" not in strict.stdout


def test_a_wheel_install_of_skyform_copies_that_exact_install(
    skyform_wheel: Path, tmp_path: Path
) -> None:
    """Deployed from a wheel (not a checkout): the environment gets those very files."""
    from uv import find_uv_bin

    deployer = tmp_path / "deployer"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    uv = find_uv_bin()
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(deployer)], check=True, env=env
    )
    from skyform.providers.envconfig import uv_install_config

    installed = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(deployer / "bin" / "python"),
         *uv_install_config().args, str(skyform_wheel)],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    code = (
        "import json\n"
        "from skyform.providers.environments import ensure_environment, skyform_install\n"
        f"e = ensure_environment(['six'], '{PYTHON_VERSION}')\n"
        "print(json.dumps([str(e.python), skyform_install().version_id]))\n"
    )
    built = subprocess.run(
        [str(deployer / "bin" / "python"), "-c", code],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=300,
        env={**env, "SKYFORM_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    python, version_id = json.loads(built.stdout.strip().splitlines()[-1])
    assert "+editable" not in version_id
    probe = run_in(python, "import skyform, skyform.runtime.runner; print(skyform.__file__)")
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(tmp_path / "cache"), "copied, not linked"
    assert run_in(python, "import typer").returncode != 0
