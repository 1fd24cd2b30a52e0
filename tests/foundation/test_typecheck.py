"""scripts/typecheck.py: mypy sees the package-dir mapping, and says where the real files are.

The lint runs it over the repository; here it runs over a small project with the
same shape (a top package and a mapped sub-package in folders of their own), so
that a deliberate cross-module error can be written without touching the code.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "typecheck.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("typecheck_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(root: Path, files: dict[str, str]) -> Path:
    (root / "pyproject.toml").write_text(
        "[tool.setuptools]\n"
        'package-dir = { "pkg" = "top", "pkg.sub" = "lower" }\n'
        "[tool.mypy]\n"
        'python_version = "3.11"\n'
    )
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cross_module_errors_fail_and_name_the_real_files(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "top/__init__.py": "",
            "top/core.py": "def double(x: int) -> int:\n    return 2 * x\n",
            "lower/__init__.py": "",
            "lower/use.py": (
                'from pkg.core import double\nfrom pkg.nothing import thing\n\ndouble("two")\n'
            ),
        },
    )
    out = io.StringIO()
    rc = _script().typecheck(root, [], out)
    report = out.getvalue()
    assert rc == 1, report
    # The wrong argument type crosses from pkg.sub to pkg: mypy resolved the import.
    assert (
        'lower/use.py:4: error: Argument 1 to "double" has incompatible type "str"; '
        'expected "int"  [arg-type]'
    ) in report.splitlines()
    # A missing first-party module is an error, not a silent Any.
    assert any(
        line.startswith("lower/use.py:2: error:") and "[import-not-found]" in line
        for line in report.splitlines()
    ), report
    assert "package-tree" not in report
    assert not (root / ".mypy_cache" / "package-tree").exists()


def test_a_clean_project_passes(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "top/__init__.py": "def double(x: int) -> int:\n    return 2 * x\n",
            "lower/__init__.py": "from pkg import double\n\nFOUR: int = double(2)\n",
        },
    )
    out = io.StringIO()
    assert _script().typecheck(root, [], out) == 0, out.getvalue()
    assert out.getvalue().startswith("Success: no issues found in 2 source files")


def test_a_module_shadowing_a_mapped_package_is_one_clear_error(tmp_path: Path) -> None:
    root = _project(tmp_path, {"top/__init__.py": "", "top/sub.py": "", "lower/__init__.py": ""})
    with pytest.raises(SystemExit) as exc:
        _script().typecheck(root, [], io.StringIO())
    assert str(exc.value) == (
        f"pyproject.toml: package-dir maps pkg.sub, which {root / 'top' / 'sub.py'} also is"
    )
    assert not (root / ".mypy_cache" / "package-tree").exists()
