"""An invalid requirement string stops `plan` with one line naming the file, line and app.

Requirements reach the environment recipe from the App class or from the
stack file's override; either way `plan` refuses one that is not PEP 508
before it builds, starts or records anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import sky, write_project

BAD_IN_CLASS = """from skyform import App, endpoint


class Bad(App):
    requirements = ["six", "numpy>=>2"]

    @endpoint("/")
    def run(self) -> str:
        return "x"
"""


@pytest.mark.parametrize("where", ["stack file", "app class"])
def test_invalid_requirement_fails_plan_with_its_place(tmp_path: Path, where: str) -> None:
    bad = {"app": "other.py::Other", "requirements": ["six", "numpy>=>2"]}
    if where == "app class":
        bad = {"app": "bad.py::Bad"}
    root = write_project(tmp_path / "proj", {"hello": {"app": "app.py::Hello"}, "broken": bad})
    (root / "bad.py").write_text(BAD_IN_CLASS)
    proc = sky(root, "plan")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("Error: skyform.yaml:8: apps.broken: "), line
    assert 'requirement "numpy>=>2" is not a valid requirement: ' in line, line
    assert not (root / ".skyform" / "demo.state.json").exists()  # state untouched
