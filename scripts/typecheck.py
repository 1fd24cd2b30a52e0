"""Type-check the package as `skyform`, the way Python imports it.

The code folders install as one package through setuptools' `package-dir`
mapping (`skyform` = declare/, `skyform.state` = state/, ...). The editable
install is an import hook mypy cannot follow, and mypy maps module names to
folders only by their nesting, so run over the folders themselves it sees
every `skyform.*` import as missing and checks each file alone. This script
builds that mapping as a symlink tree under .mypy_cache/ (removed afterwards,
also on failure and Ctrl-C), runs `mypy -p skyform` over it with the project's
config, and prints mypy's report with the tree's paths mapped back to the real
files (declare/app.py, state/lock.py, ...), so that editors and people can jump
to them.

Usage: python scripts/typecheck.py [MYPY_ARGS...]   (what `make lint` runs)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"__pycache__"}


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """The `[tool.setuptools] package-dir` mapping: package name -> its folder."""
    config = tomllib.loads(pyproject.read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: (pyproject.parent / folder).resolve() for name, folder in mapping.items()}


def build_tree(mapping: dict[str, Path], tree: Path) -> dict[Path, Path]:
    """Lay the packages out under `tree` as Python imports them.

    A mapped package is a real folder whose entries link to its source folder's;
    a mapped sub-package (skyform.state inside skyform) is another real folder in
    it. Returns each tree folder with the source folder it stands for, deepest
    first, to map paths back.
    """
    names = set(mapping)
    folders: dict[Path, Path] = {}
    for name in sorted(mapping, key=lambda n: n.count(".")):
        here = tree.joinpath(*name.split("."))
        here.mkdir(parents=True, exist_ok=True)
        folders[here] = mapping[name]
        for entry in sorted(mapping[name].iterdir()):
            if entry.name in SKIP or f"{name}.{entry.name}" in names:
                continue
            if f"{name}.{entry.stem}" in names:
                raise SystemExit(
                    f"pyproject.toml: package-dir maps {name}.{entry.stem}, which {entry} also is"
                )
            (here / entry.name).symlink_to(entry)
    return dict(sorted(folders.items(), key=lambda kv: -len(kv[0].parts)))


def real_path(path: str, folders: dict[Path, Path], root: Path) -> str:
    """A path mypy printed, as the source file it stands for (relative to `root`)."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return path
    for here, source in folders.items():
        if candidate.is_relative_to(here):
            real = source / candidate.relative_to(here)
            return os.path.relpath(real, root) if real.is_relative_to(root) else str(real)
    return path


def map_line(line: str, folders: dict[Path, Path], root: Path) -> str:
    """Replace the tree path at the start of one line of mypy's report."""
    path, sep, rest = line.partition(":")
    return real_path(path, folders, root) + sep + rest if sep else line


def typecheck(root: Path, argv: list[str], out: TextIO) -> int:
    """Run mypy over the project at `root` as its packages import; mypy's exit status."""
    root = root.resolve()
    mapping = package_dirs(root / "pyproject.toml")
    # A fixed place, so mypy's incremental cache (keyed by path) stays valid from
    # run to run; it is rebuilt each time and removed afterwards.
    tree = root / ".mypy_cache" / "package-tree"
    tree.parent.mkdir(exist_ok=True)
    # Two lints of one checkout (an editor's and `make lint`) take turns on the tree.
    with (tree.parent / "package-tree.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run(root, mapping, tree, argv, out)


def _run(root: Path, mapping: dict[str, Path], tree: Path, argv: list[str], out: TextIO) -> int:
    # Each top package (one not inside another mapped one) is a target; mypy
    # finds the rest, mapped or not, by walking the tree.
    tops = [n for n in mapping if not any(n.startswith(f"{m}.") for m in mapping)]
    shutil.rmtree(tree, ignore_errors=True)  # left by a run that was killed
    try:
        folders = build_tree(mapping, tree)
        env = {**os.environ, "MYPYPATH": str(tree)}
        command = [sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")]
        command += ["--no-pretty", "--show-absolute-path", *argv]
        command += [arg for top in sorted(tops) for arg in ("-p", top)]
        with subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    out.write(map_line(line, folders, root))
                return proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                return 130
    finally:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(typecheck(ROOT, sys.argv[1:], sys.stdout))
    except KeyboardInterrupt:  # the tree is gone already (_run's finally)
        sys.exit(130)
