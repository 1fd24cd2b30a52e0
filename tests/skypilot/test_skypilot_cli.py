"""`skyform plan` and SkyPilot: a local stack never imports `sky`; a SkyPilot stack's
plan shows what the optimizer picks and what it costs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.skypilot import SKY_ENV, catalog_rows

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"

# Runs a skyform command in this process and reports, at exit, whether `sky` was imported.
PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write(f"\\nSKY_IMPORTED={'sky' in sys.modules}\\n"))
sys.argv = ["skyform", *sys.argv[1:]]
from skyform.cli import main
main()
"""


def run_probe(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_hello(tmp_path: Path) -> Path:
    stack = tmp_path / "stack"
    shutil.copytree(HELLO, stack, ignore=shutil.ignore_patterns(".skyform", "__pycache__"))
    return stack


def test_plan_of_a_local_stack_never_imports_sky(tmp_path: Path):
    stack = copy_hello(tmp_path)
    assert "provider: local" in (stack / "skyform.yaml").read_text()
    result = run_probe(["plan", "-f", "skyform.yaml"], stack)
    assert result.returncode == 0, result.stderr
    assert "Plan:" in result.stdout
    assert "SKY_IMPORTED=False" in result.stderr
    # The provider modules themselves are importable without importing sky.
    code = (
        "import sys, skyform, skyform.providers, skyform.providers.skypilot; "
        "from skyform.providers import create_provider; "
        "create_provider({'skypilot': {'clouds': ['lambda']}}, stack='s', runtime_dir='rt'); "
        "print('sky' in sys.modules)"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert probe.stdout.strip() == "False", probe.stderr


@pytest.mark.skypilot
@pytest.mark.slow
def test_plan_of_a_skypilot_stack_shows_instance_and_cost(enabled, sky_home: Path, tmp_path: Path):
    stack = copy_hello(tmp_path)
    stackfile = stack / "skyform.yaml"
    text = stackfile.read_text().replace(
        "provider: local", "provider: {skypilot: {clouds: [lambda], autostop_minutes: 20}}"
    )
    text += "  embed:\n    app: app.py::Hello\n    machine_type: GPU-H100\n    max_runners: 4\n"
    stackfile.write_text(text)
    result = run_probe(["plan", "-f", "skyform.yaml"], stack, {**SKY_ENV, "HOME": str(sky_home)})
    assert result.returncode == 0, result.stderr
    assert "SKY_IMPORTED=True" in result.stderr
    h100 = min(catalog_rows("H100"), key=lambda r: float(r["Price"]))
    assert h100["InstanceType"] in result.stdout
    assert f"${float(h100['Price']):.2f}/h" in result.stdout
    assert f"${4 * float(h100['Price']):.2f}" in result.stdout  # the app at max_runners
