"""Plan actions are a type, and the human plan is styled text: colour follows the action.

The renderer styles each row by what it shows (the resource's `Action`, an
attribute's sign), never by re-reading characters; the CLI prints that text
and rich drops the styles without a terminal or with NO_COLOR. These tests
pin the mapping to DESIGN §4's JSON lists, the styles of every kind of row,
and, through a real pseudo-terminal, the colours the real CLI prints.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from support.cli import SKYFORM, cli_env, write_project

from skyform.engine.plan import Action, Plan, ResourceChange
from skyform.engine.render import render_plan, render_text
from skyform.errors import SkyformError

DESIGN_ACTIONS = [
    ["create"],
    ["update"],
    ["create", "delete"],
    ["delete", "create"],
    ["delete"],
    ["no-op"],
]


def test_actions_map_to_the_json_lists_of_the_design() -> None:
    assert sorted(a.actions for a in Action) == sorted(DESIGN_ACTIONS)
    for action in Action:
        assert Action.from_actions(action.actions) is action
    assert Action.REPLACE.actions == ["create", "delete"]  # create-before-destroy
    assert Action.RECREATE.actions == ["delete", "create"]  # delete-then-create
    assert [a for a in Action if a.creates] == [Action.CREATE, Action.REPLACE, Action.RECREATE]
    assert [a for a in Action if a.deletes] == [Action.REPLACE, Action.RECREATE, Action.DELETE]
    with pytest.raises(SkyformError, match=r"unknown plan actions \['update', 'delete'\]"):
        Action.from_actions(["update", "delete"])


def _change(address: str, action: Action, before: Any, after: Any, **kw: Any) -> ResourceChange:
    kind = "gateway" if address == "gateway" else "app"
    return ResourceChange(address, kind, address.removeprefix("app."), action, before, after, **kw)


def _plan() -> Plan:
    return Plan(
        stack="demo",
        mode="apply",
        lineage="l",
        serial=3,
        resource_changes=[
            _change(
                "gateway",
                Action.RECREATE,
                {"port": 1},
                {"port": 2},
                changed=["port"],
                forces=["port"],
            ),
            _change("app.a", Action.CREATE, None, {"x": 1}),
            _change(
                "app.b",
                Action.UPDATE,
                {"keep_alive": 1, "y": 2},
                {"keep_alive": 2, "y": 2},
                changed=["keep_alive"],
            ),
            _change(
                "app.c",
                Action.REPLACE,
                {"revision": "a" * 20},
                {"revision": "b" * 20, "env": {"K": "v"}},
                changed=["revision", "env"],
                forces=["revision"],
            ),
            _change("app.d", Action.DELETE, {"x": 1}, None),
            _change("app.e", Action.NOOP, {"x": 1}, {"x": 1}),
        ],
        outputs={"gateway_url": "http://127.0.0.1:2"},
        drift=[{"address": "app.d", "reason": "+ not a sign"}],
        warnings=["- not a sign either"],
    )


def _styles(text: Text) -> dict[str, set[str]]:
    """Each rendered line and the styles that cover it."""
    out: dict[str, set[str]] = {}
    for line in text.split("\n"):
        styles = {str(s.style) for s in line.spans}
        if line.style:
            styles.add(str(line.style))
        out[line.plain] = styles
    return out


def test_rows_are_styled_by_their_action_and_sign() -> None:
    plan = _plan()
    rendered = render_plan(plan)
    assert rendered.plain == render_text(plan)
    styles = _styles(rendered)
    assert styles['-/+ resource "gateway" {'] == {"yellow"}
    assert styles['  + resource "app" "a" {'] == {"green"}
    assert styles['  ~ resource "app" "b" {'] == {"yellow"}
    assert styles['+/- resource "app" "c" {'] == {"yellow"}
    assert styles['  - resource "app" "d" {'] == {"red"}
    assert styles["      ~ port = 1 -> 2  # forces replacement"] == {"yellow"}
    assert styles["      + x = 1"] == {"green"}
    assert styles["      - x = 1"] == {"red"}
    assert styles["      ~ keep_alive = 1 -> 2"] == {"yellow"}
    assert styles['      + env      = {"K": "v"}'] == {"green"}
    assert styles["Plan: 3 to add, 1 to change, 3 to destroy."] == {"bold"}
    # Headlines, drift, warnings and braces carry no colour, whatever characters they start with.
    for plain in (
        "  # app.a will be created",
        "  # app.d: + not a sign",
        "Warning: - not a sign either",
        "    }",
        "        # (1 unchanged attributes hidden)",
    ):
        assert styles[plain] == set(), plain
    assert 'resource "app" "e"' not in rendered.plain  # no-ops are not shown


def _run_in_terminal(root: Path, *args: str, env: dict[str, str]) -> str:
    """The real CLI with stdout on a pseudo-terminal; what it wrote there."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*SKYFORM, *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(secondary)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                raise AssertionError("the CLI wrote nothing for 60s")
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) in (0, 2), proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        os.close(primary)
    return b"".join(chunks).decode()


@pytest.mark.slow
def test_cli_colours_the_plan_on_a_terminal_and_not_with_no_color(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    env = {k: v for k, v in cli_env().items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    coloured = _run_in_terminal(root, "plan", "--detailed-exitcode", env=env)
    assert "\x1b[32m" in coloured  # green: the resources to add
    assert "\x1b[1m" in coloured  # bold: the summary
    plain = _run_in_terminal(root, "plan", env={**env, "NO_COLOR": "1"})
    # NO_COLOR turns colour off; emphasis (the bold summary) is not colour and stays.
    for colour in ("\x1b[31m", "\x1b[32m", "\x1b[33m"):
        assert colour not in plain
    assert '+ resource "app" "hello" {' in plain
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in plain
    # Not a terminal (a CI log): no escape codes at all, NO_COLOR or not.
    piped = subprocess.run(
        [*SKYFORM, "plan"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout
    assert '+ resource "app" "hello" {' in piped.stdout
