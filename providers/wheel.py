"""Building skyform's own wheel from a checkout, to ship to remote machines.

Why a module of its own: the wheel must build wherever `skyform` runs from a
checkout, and the interpreter's setuptools is whatever its venv happens to have
(Python 3.11's `venv` seeds setuptools 65, which cannot read this project's
PEP 639 `license = "..."`). So the build backend our `pyproject.toml` asks for
decides how: when the running interpreter already has it (the usual dev venv),
the wheel is built in-process, offline; otherwise it is built in an isolated
build environment, as `pip install .` would, with uv (a core dependency) or
pip, from the user's package index configuration.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from skyform.errors import SkyformError

# What a wheel holds: the project metadata and the four package folders.
SOURCES = ("pyproject.toml", "README.md", "declare", "state", "providers", "runtime")

_BUILT: dict[Path, Path] = {}


def build_wheel(root: Path, out_dir: Path) -> Path:
    """Build skyform's wheel from the checkout at `root` into `out_dir` (once per process).

    Builds from a clean copy of the package folders so stale `build/` leftovers in
    the checkout never end up in the wheel, and the checkout is not written to.
    """
    if root in _BUILT and _BUILT[root].exists():
        return _BUILT[root]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skyform-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            path = root / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif path.is_file():
                shutil.copy2(path, src / name)
        dist = Path(tmp) / "dist"
        dist.mkdir()
        env = dict(os.environ)
        if backend_installed(src / "pyproject.toml"):
            command = [
                sys.executable,
                "-c",
                "import sys, setuptools.build_meta as b; b.build_wheel(sys.argv[1])",
                str(dist),
            ]
        else:
            command, extra_env = isolated_build_command(src, dist)
            env = {**extra_env, **env}
        build = subprocess.run(command, cwd=src, env=env, capture_output=True, text=True)
        wheels = sorted(dist.glob("skyform-*.whl"))
        if build.returncode != 0 or len(wheels) != 1:
            tail = (build.stderr or build.stdout).strip().splitlines()[-1:] or ["no wheel made"]
            raise SkyformError(f"cannot build the skyform wheel to ship: {tail[0]}")
        wheel = out_dir / wheels[0].name
        shutil.move(str(wheels[0]), wheel)
    _BUILT[root] = wheel
    return wheel


def backend_installed(pyproject: Path) -> bool:
    """True when this interpreter has every `[build-system] requires` at a fitting version."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return False  # cannot tell: the isolated build is always right
    requires = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
    for text in requires:
        try:
            req = Requirement(text)
            version = importlib.metadata.version(req.name)
        except (InvalidRequirement, importlib.metadata.PackageNotFoundError):
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


def isolated_build_command(src: Path, dist: Path) -> tuple[list[str], dict[str, str]]:
    """`uv build` (or `pip wheel`) of `src` in a fresh build environment, from the user's
    indexes; returns the command and the environment variables it needs.

    uv does not read pip's configuration, so the same sources pip would use are
    passed to it (see `skyform.providers.envconfig`).
    """
    from skyform.providers.environments import uv_binary  # one way to find uv

    uv = uv_binary()
    if uv is None:
        return [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)], {}
    from skyform.providers.envconfig import uv_install_config

    config = uv_install_config()
    command = [uv, "build", "--wheel", "--quiet", "--python", sys.executable]
    command += [*_build_args(config.args), "--out-dir", str(dist), str(src)]
    return command, config.env


# `uv pip install` options that `uv build` takes too (constraints apply to the build's own deps).
_BUILD_OPTIONS = {
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "--find-links": "--find-links",
    "--constraint": "--build-constraints",
    "--allow-insecure-host": "--allow-insecure-host",
    "--index-strategy": "--index-strategy",
    "--prerelease": "--prerelease",
}


def _build_args(install_args: list[str]) -> list[str]:
    """The `uv build` spelling of `uv_install_config` arguments (each an option and a value,
    but `--no-index`); options `uv build` lacks (`--only-binary`, ...) are left out."""
    out: list[str] = []
    args = iter(install_args)
    for arg in args:
        if arg == "--no-index":
            out.append(arg)
            continue
        value = next(args, "")
        if arg in _BUILD_OPTIONS:
            out += [_BUILD_OPTIONS[arg], value]
    return out
