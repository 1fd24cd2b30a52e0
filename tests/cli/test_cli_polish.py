"""The CLI's own manners: help and version, placeholders a person reads, one-line errors.

Help is rendered in-process (cheap); the exit codes and streams a shell sees
are checked through the real console entry point.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.cli import sky, write_project

from skyform import __version__
from skyform.cli import main
from skyform.errors import AppLoadError
from skyform.loader import loaded_app


def _command_paths() -> list[list[str]]:
    """Every command of the CLI as the words that call it, subcommands of groups included."""
    from skyform.cli import command

    out: list[list[str]] = []
    todo: list[tuple[list[str], object]] = [([], command())]
    while todo:
        words, cmd = todo.pop()
        subcommands = getattr(cmd, "commands", {})
        if words:
            out.append(words)
        todo.extend(([*words, name], sub) for name, sub in subcommands.items())
    return sorted(out)


COMMANDS = _command_paths()


def test_bare_skyform_prints_help_and_exits_0(tmp_path: Path) -> None:
    proc = sky(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: skyform [OPTIONS] COMMAND")
    assert "plan" in proc.stdout and "apply" in proc.stdout
    assert ["state", "unlock"] in COMMANDS and ["status"] in COMMANDS  # the walk finds them
    assert proc.stderr == ""
    group = sky(tmp_path, "state")
    assert group.returncode == 0 and "unlock" in group.stdout and group.stderr == ""


def test_version(tmp_path: Path) -> None:
    proc = sky(tmp_path, "--version")
    assert proc.returncode == 0 and proc.stdout == f"skyform {__version__}\n"


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_shows_placeholders_not_python_types(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*words, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: skyform {' '.join(words)}")
    # No `--json <bool>`, `--target <list[str]>`, `--port <int>`...
    assert not re.search(r"-[-\w]+ <", text), text
    assert "[[" not in text


def test_plan_help_names_its_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    for shown in ("-f, --file FILE", "--target APP", "--replace APP", "--lock-timeout SECS"):
        assert shown in text
    assert re.search(r"^\s+--json\s{2,}Machine", text, re.M)  # a flag takes no value
    assert main(["logs", "--help"]) == 0
    assert "-n, --tail N" in capsys.readouterr().out


def test_output_errors_are_one_line(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj")
    for args, message in [
        (["output", "api_key"], "the stack has not been applied"),
        (["output", "--raw"], "--raw needs an output NAME"),
        (["output", "--raw", "--json", "api_key"], "--raw and --json are exclusive"),
    ]:
        proc = sky(root, *args)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert not (root / ".skyform" / "demo.keys.json").exists()  # nothing was made


TOP_LEVEL_IMPORT = """import os
import skyform_absent_pkg

from skyform import App, endpoint


class Fancy(App):
    requirements = ["skyform-absent-pkg"]

    @endpoint("/")
    def run(self) -> str:
        return skyform_absent_pkg.render()
"""


def test_missing_top_level_import_says_why_and_what_to_do(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"fancy": {"app": "fancy.py::Fancy"}})
    (root / "fancy.py").write_text(TOP_LEVEL_IMPORT)
    proc = sky(root, "plan")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr.strip()
    assert "fancy.py:2: " in line and "'skyform_absent_pkg'" in line
    assert "top level runs locally at plan time" in line
    assert "inside setup() or the endpoint" in line and "install it locally" in line
    assert not (root / ".skyform" / "demo.state.json").exists()  # state untouched


def test_missing_import_in_a_helper_module_points_at_the_helper(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("\n\nimport yaml_that_is_not_here.sub\n")
    (tmp_path / "app.py").write_text(
        "import helper\nfrom skyform import App, endpoint\n\n\nclass A(App):\n"
        "    @endpoint('/')\n    def f(self) -> str:\n        return 'x'\n"
    )
    with pytest.raises(AppLoadError) as info, loaded_app("app.py::A", tmp_path):
        pass
    message = str(info.value)
    assert re.match(
        r"\S*helper\.py:3: ModuleNotFoundError: No module named 'yaml_that_is_not_here'", message
    ), message
    assert "Import yaml_that_is_not_here inside setup()" in message


def test_log_follower_prints_each_line_once_even_when_merged_out_of_order() -> None:
    from skyform.cli.common import LogFollower

    follower = LogFollower()
    first = "T1 a-1 INFO x one\nT3 b-2 INFO x three\n"
    assert follower.new_lines(first) == ["T1 a-1 INFO x one", "T3 b-2 INFO x three"]
    # A line of another runner, stamped earlier, lands in the middle of the next snapshot.
    later = "T1 a-1 INFO x one\nT2 a-1 INFO x two\nT3 b-2 INFO x three\nT4 b-2 INFO x four\n"
    assert follower.new_lines(later) == ["T2 a-1 INFO x two", "T4 b-2 INFO x four"]
    assert follower.new_lines(later) == []
