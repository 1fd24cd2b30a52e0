"""Install matrix: skyform as users install it, each in a fresh virtual environment.

- a plain install (`pip install .`, no extras) applies, calls and destroys the
  hello stack: `examples/hello/demo.py`, what `make demo` runs;
- the `skypilot` extra alone, in a Python 3.11 venv seeded with the setuptools
  that Python ships (65.x, older than our build backend needs), plans a SkyPilot
  stack offline and shows the optimizer's instance and price.

Installs use uv with the machine's pip configuration handed over the way
skyform hands it to runner environments (`skyform.providers.envconfig`), so
they resolve wherever `pip install` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.ci import REPO, fresh_checkout
from support.procs import free_port, kill_all_under, processes_under
from support.skypilot import SKY_ENV, catalog_rows, make_sky_home

from skyform.providers.envconfig import uv_install_config
from skyform.providers.environments import uv_binary
from skyform.providers.wheel import build_wheel

pytestmark = pytest.mark.slow

SEED_CLOUDS = (
    f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); "
    "from support.skypilot import seed_enabled_clouds; seed_enabled_clouds()"
)


def python311() -> str:
    """Python 3.11 (the oldest we support, what a fresh CI machine has), else this Python."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    return shutil.which("python3.11") or sys.executable


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=540, **kwargs)


def fresh_venv(path: Path) -> Path:
    """`python3.11 -m venv`: pip and the setuptools Python 3.11 bundles (65.x), nothing else
    (from 3.12 on, venv seeds no setuptools at all)."""
    proc = run([python311(), "-m", "venv", str(path)])
    assert proc.returncode == 0, proc.stderr
    return path / "bin" / "python"


def install(python: Path, *requirements: str) -> None:
    uv = uv_binary()
    assert uv is not None, "uv is a core dependency of skyform"
    config = uv_install_config()
    cmd = [uv, "pip", "install", "--quiet", "--python", str(python), *config.args, *requirements]
    proc = run(cmd, env={**os.environ, **config.env})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def imports(python: Path, module: str) -> bool:
    return run([str(python), "-c", f"import {module}"]).returncode == 0


def test_plain_install_applies_calls_and_destroys(tmp_path: Path):
    python = fresh_venv(tmp_path / "venv")
    # As `pip install .` does: build a wheel of the sources, install it (no extras).
    install(python, str(build_wheel(REPO, tmp_path / "dist")))
    assert imports(python, "skyform.runtime.gateway_server")
    assert imports(python, "httptools"), "the gateway's fast HTTP parser is a core dependency"
    for extra in ("sky", "torch", "pytest"):
        assert not imports(python, extra), f"a plain install should not have {extra}"

    project = fresh_checkout("hello", tmp_path / "hello", port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYFORM_")}
    env["SKYFORM_CACHE_DIR"] = os.environ["SKYFORM_CACHE_DIR"]  # the suite's private cache
    try:
        demo = run([str(python), "demo.py"], cwd=project, env={**env, "NO_COLOR": "1"})
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "Hello, skyform!" in demo.stdout
        assert "Demo complete" in demo.stdout
        assert not processes_under(project), "the demo left processes running"
    finally:
        kill_all_under(project)


@pytest.mark.skypilot
def test_skypilot_extra_on_old_setuptools_plans_with_instance_and_price(tmp_path: Path):
    python = fresh_venv(tmp_path / "venv")
    setuptools = run([str(python), "-c", "import setuptools; print(setuptools.__version__)"])
    # What the venv seeds: 65.x on 3.11, none from 3.12; either way too old to build us.
    assert setuptools.stdout.startswith("65.") or setuptools.returncode != 0, setuptools.stdout
    # From the checkout (editable), so plan builds skyform's wheel to ship, with
    # the venv's old setuptools unable to do it in-process.
    install(python, "--editable", f"{REPO}[skypilot]")
    assert not imports(python, "pytest")

    home = make_sky_home(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYFORM_")}
    env.update(SKY_ENV, HOME=str(home), NO_COLOR="1", COLUMNS="200")
    seeded = run([str(python), "-c", SEED_CLOUDS], env=env)
    assert seeded.returncode == 0, seeded.stderr

    project = fresh_checkout("hello", tmp_path / "stack", port=free_port())
    stackfile = project / "skyform.yaml"
    text, count = re.subn(
        r"(?m)^provider: .*$",
        "provider: {skypilot: {clouds: [lambda], autostop_minutes: 20}}",
        stackfile.read_text(),
    )
    assert count == 1
    text += "  embed:\n    app: app.py::Hello\n    machine_type: GPU-H100\n    max_runners: 4\n"
    stackfile.write_text(text)
    skyform = python.parent / "skyform"
    plan = run([str(skyform), "plan", "-f", "skyform.yaml"], cwd=project, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    h100 = min(catalog_rows("H100"), key=lambda r: float(r["Price"]))
    assert h100["InstanceType"] in plan.stdout, plan.stdout
    assert f"${float(h100['Price']):.2f}/h" in plan.stdout, plan.stdout
    assert "Plan: 3 to add" in plan.stdout, plan.stdout
    # The plan's environment keys come from the wheel it built to ship.
    assert list(project.glob(".skyform/runtime/*/skypilot/wheels/skyform-*.whl")), plan.stderr
