"""`skyform state list|show|unlock`, run as the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.stored import Worker

from skyform.state import open_backend


def skyform(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyform.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def _seed(config: Any, stack: str, workdir: Path) -> str:
    backend = open_backend(config, stack, workdir)
    try:
        backend.write(
            backend.read().evolve(
                resources={
                    "gateway": {"port": 8765},
                    "app.hello": {"spec": {"secrets": ["HF_TOKEN"], "max_runners": 2}},
                },
                outputs={"gateway_url": "http://127.0.0.1:8765"},
            )
        )
    finally:
        backend.close()
    return (workdir / ".skyform" / f"{stack}.state.json").read_text() if config == "local" else ""


def test_list_and_show_local(tmp_path: Path) -> None:
    (tmp_path / "skyform.yaml").write_text("stack: demo\n")
    before = _seed("local", "demo", tmp_path)
    listed = skyform(tmp_path, "state", "list")
    assert (listed.returncode, listed.stdout) == (0, "app.hello\ngateway\n")
    as_json = json.loads(skyform(tmp_path, "state", "list", "--json").stdout)
    assert as_json == {"stack": "demo", "serial": 1, "addresses": ["app.hello", "gateway"]}
    one = json.loads(skyform(tmp_path, "state", "show", "app.hello", "--json").stdout)
    assert one == {"spec": {"secrets": ["HF_TOKEN"], "max_runners": 2}}
    whole = skyform(tmp_path, "state", "show")
    assert whole.returncode == 0
    assert "serial    1" in whole.stdout and "lock      free" in whole.stdout
    assert json.loads(skyform(tmp_path, "state", "show", "--json").stdout)["serial"] == 1
    # the same state, reached without the stack file
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / ".skyform").symlink_to(tmp_path / ".skyform")
    direct = skyform(other, "state", "list", "--stack", "demo", "--state", "local")
    assert direct.stdout == "app.hello\ngateway\n"
    assert (tmp_path / ".skyform" / "demo.state.json").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["state", "show", "app.helo"],
            "no resource 'app.helo' in the state of stack 'demo' (did you mean \"app.hello\"?)",
        ),
        (
            ["state", "unlock", "nope"],
            "no lock nope on the state of stack 'demo': it is not locked",
        ),
        (["state", "list", "-f", "missing.yaml"], "missing.yaml: no such stack file"),
        (["state", "list", "--state", "local"], "--state needs --stack"),
        (["state", "list", "--stack", "demo", "--state", "{bad"], "--state: expected"),
        (
            ["state", "list", "--stack", "demo", "--state", '{"postgress": {}}'],
            'did you mean "postgres"?',
        ),
    ],
)
def test_bad_input_is_one_line_exit_1_nothing_changed(tmp_path: Path, args, message) -> None:
    (tmp_path / "skyform.yaml").write_text("stack: demo\n")
    before = _seed("local", "demo", tmp_path)
    result = skyform(tmp_path, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert (tmp_path / ".skyform" / "demo.state.json").read_text() == before


def test_unlock_local(tmp_path: Path) -> None:
    (tmp_path / "skyform.yaml").write_text("stack: demo\n")
    holder = Worker.start("hold", "local", "demo", tmp_path, "apply")
    try:
        info = holder.line()["locked"]
        shown = skyform(tmp_path, "state", "show")
        assert info["id"] in shown.stdout
        live = skyform(tmp_path, "state", "unlock", info["id"])
        assert live.returncode == 1 and f"pid {info['pid']}" in live.stderr
        holder.proc.kill()
        holder.proc.wait(timeout=30)
        done = skyform(tmp_path, "state", "unlock", info["id"], "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["unlocked"]["id"] == info["id"]
        assert not (tmp_path / ".skyform" / "demo.state.lock.info").exists()
    finally:
        holder.stop()


@pytest.mark.postgres
def test_postgres_stack_file_and_unlock_of_a_stuck_run(
    tmp_path: Path, pg_config: dict[str, Any], stack: str
) -> None:
    state = {
        "url": "${SKYFORM_PG_URL}",
        **({"schema": pg_config["schema"]} if "schema" in pg_config else {}),
    }
    (tmp_path / "skyform.yaml").write_text(
        f"stack: {stack}\nstate:\n  postgres: {json.dumps(state)}\n"
    )
    env = {"SKYFORM_PG_URL": pg_config["url"]}
    config = {"postgres": pg_config}
    _seed(config, stack, tmp_path)
    listed = skyform(tmp_path, "state", "list", env=env)
    assert (listed.returncode, listed.stdout) == (0, "app.hello\ngateway\n"), listed.stderr
    holder = Worker.start("hold", config, stack, tmp_path, "apply")
    try:
        info = holder.line()["locked"]
        unlocked = skyform(tmp_path, "state", "unlock", info["id"], env=env)
        assert unlocked.returncode == 0, unlocked.stderr
        assert f"Lock {info['id']} removed" in unlocked.stdout
        backend = open_backend(config, stack, tmp_path)
        try:
            assert backend.current_lock() is None
            with backend.lock(timeout=0):
                pass
        finally:
            backend.close()
    finally:
        holder.stop()
