"""Building the skyform wheel that SkyPilot machines install: in-process only when
this interpreter has the build backend pyproject.toml asks for, else isolated;
a broken checkout is one clear error."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from support.ci import REPO

from skyform.errors import SkyformError
from skyform.providers.wheel import SOURCES, _build_args, backend_installed, build_wheel


def pyproject(tmp_path: Path, requires: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[build-system]\nrequires = [{requires}]\n")
    return path


def test_backend_installed_checks_name_and_version(tmp_path: Path):
    assert backend_installed(pyproject(tmp_path, '"setuptools>=1", "wheel"'))
    assert not backend_installed(pyproject(tmp_path, '"setuptools>=9999"'))
    assert not backend_installed(pyproject(tmp_path, '"no-such-build-backend-xyz"'))
    assert backend_installed(REPO / "pyproject.toml")  # the dev venv builds in-process


def test_build_args_keep_what_uv_build_takes():
    args = ["--extra-index-url", "file:///a", "--find-links", "/w", "--constraint", "/c.txt"]
    args += ["--only-binary", ":all:", "--no-index", "--index-strategy", "unsafe-best-match"]
    assert _build_args(args) == [
        "--extra-index-url", "file:///a", "--find-links", "/w", "--build-constraints", "/c.txt",
        "--no-index", "--index-strategy", "unsafe-best-match",
    ]  # fmt: skip


def test_a_checkout_that_cannot_build_is_one_clear_error(tmp_path: Path):
    root = tmp_path / "checkout"
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        text.replace('version = "0.1.0"', 'version = "not a version"')
    )
    with pytest.raises(SkyformError) as err:
        build_wheel(root, tmp_path / "out")
    message = str(err.value)
    assert message.startswith("cannot build the skyform wheel to ship: ")
    assert "\n" not in message
    assert not list((tmp_path / "out").glob("*.whl"))


def test_wheel_holds_the_package_and_not_the_checkout_leftovers(tmp_path: Path):
    wheel = build_wheel(REPO, tmp_path / "out")
    names = zipfile.ZipFile(wheel).namelist()
    assert "skyform/runtime/gateway_server.py" in names
    assert not [n for n in names if "__pycache__" in n]
    # Test support (the throwaway PostgreSQL server among it) is not part of the product.
    assert "skyform/state/pgtemp.py" not in names
    assert not [n for n in names if n.startswith(("support/", "tests/"))]
