"""`skyform bundle`: the first command, run as a user would."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from support.projects import run_cli, write_project


def test_bundle_json_describes_and_writes_the_bundle(hello_project: Path) -> None:
    out = hello_project / "dist" / "hello.skyb"
    result = run_cli(["bundle", "app.py::Hello", "--out", str(out), "--json"], hello_project)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"fingerprint", "size", "path", "by_value", "by_reference"}
    assert data["by_value"] == ["app", "greeting"]
    assert "pydantic" in data["by_reference"]
    assert out.stat().st_size == data["size"]
    keys = hello_project / ".skyform" / "default.keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_bundle_human_output(hello_project: Path) -> None:
    result = run_cli(["bundle", "app.py::Hello"], hello_project)
    assert result.returncode == 0, result.stderr
    assert "fingerprint" in result.stdout and "greeting (greeting.py)" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour when not a terminal


def test_bundle_key_from_environment_is_used_and_not_stored(hello_project: Path) -> None:
    env = {"SKYFORM_BUNDLE_KEY": "from-env-key"}
    result = run_cli(["bundle", "app.py::Hello", "--out", "b.skyb", "--json"], hello_project, env)
    assert result.returncode == 0, result.stderr
    from skyform.bundle import read_bundle_meta

    read_bundle_meta((hello_project / "b.skyb").read_bytes(), "from-env-key")
    keys = hello_project / ".skyform" / "default.keys.json"
    assert not keys.exists() or "from-env-key" not in keys.read_text()


def test_bundle_errors_are_one_line_exit_1(tmp_path: Path) -> None:
    write_project(tmp_path, {"app.py": "import no_such_module_anywhere\n"})
    for ref, expected in [
        ("missing.py::A", "missing.py: no such file"),
        ("app.py::A", "app.py:1: ModuleNotFoundError"),
        ("app.py", "expected FILE.py::Class"),
    ]:
        result = run_cli(["bundle", ref], tmp_path)
        assert result.returncode == 1
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not any(p.suffix == ".skyb" for p in tmp_path.iterdir())


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    result = run_cli(["bundle"], tmp_path)
    assert result.returncode == 1 and "Missing argument" in result.stderr
    assert os.path.exists(tmp_path)
