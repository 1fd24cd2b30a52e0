"""The four top-level folders install as the one package `skyform`, in wheels and editable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = [
    "skyform",
    "skyform.engine",
    "skyform.cli",
    "skyform.state",
    "skyform.providers",
    "skyform.runtime",
]


def test_editable_install_maps_folders_to_subpackages() -> None:
    import skyform
    import skyform.providers
    import skyform.runtime
    import skyform.state

    assert Path(skyform.__file__).parent == REPO / "declare"
    assert Path(skyform.state.__file__).parent == REPO / "state"
    assert Path(skyform.providers.__file__).parent == REPO / "providers"
    assert Path(skyform.runtime.__file__).parent == REPO / "runtime"


@pytest.mark.slow
def test_wheel_contains_only_the_skyform_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("skyform-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"skyform"}
    for sub in ("", "engine/", "cli/", "state/", "providers/", "runtime/"):
        assert f"skyform/{sub}__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "skyform = skyform.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import importlib, json; "
        f"print(json.dumps([importlib.import_module(m).__file__ for m in {SUBPACKAGES!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for path in json.loads(result.stdout):
        assert Path(path).is_relative_to(target)
