"""Projects and the CLI as a subprocess, shared by the CLI and isolation tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.procs import free_port, kill_all_under

SKYFORM = [sys.executable, "-m", "skyform.cli"]

APP = """import os

from pydantic import BaseModel

from greeting import greet
from skyform import App, endpoint


class HelloIn(BaseModel):
    name: str = "world"


class Hello(App):
    machine_type = "CPU"
    min_runners = 0
    max_runners = 1
    keep_alive = 30

    def setup(self) -> None:
        self.greeting = os.environ.get("GREETING", "Hello")

    @endpoint("/")
    def hello(self, req: HelloIn) -> dict:
        return {"message": greet(req.name, self.greeting), "token": os.environ.get("TOKEN_X")}
"""

GREETING = """def greet(name: str, greeting: str) -> str:
    return f"{greeting}, {name}!"
"""

OTHER = """from skyform import App, endpoint


class Other(App):
    max_runners = 2

    @endpoint("/")
    def ping(self) -> dict:
        return {"pong": True}
"""


def stack_yaml(name: str, port: int, apps: dict[str, dict[str, Any]]) -> str:
    lines = [f"stack: {name}", "provider: local", "state: local", f"gateway: {{port: {port}}}"]
    lines.append("apps:" if apps else "apps: {}")
    for app, entry in apps.items():
        lines.append(f"  {app}:")
        for key, value in entry.items():
            lines.append(f"    {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write_project(
    root: Path, apps: dict[str, dict[str, Any]] | None = None, name: str = "demo"
) -> Path:
    """A project with two App files, a helper module and a skyform.yaml on a free port."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(APP)
    (root / "greeting.py").write_text(GREETING)
    (root / "other.py").write_text(OTHER)
    if apps is None:
        apps = {"hello": {"app": "app.py::Hello", "env": {"GREETING": "Hi"}}}
    (root / "skyform.yaml").write_text(stack_yaml(name, free_port(), apps))
    return root


def set_apps(root: Path, apps: dict[str, dict[str, Any]]) -> None:
    """Rewrite the apps of a project's stack file, keeping its name and port."""
    text = (root / "skyform.yaml").read_text().splitlines()
    name = text[0].split(":", 1)[1].strip()
    port = int(text[3].split(":")[2].strip(" }"))
    (root / "skyform.yaml").write_text(stack_yaml(name, port, apps))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # No keys or tokens from outside; the suite's private environment cache stays.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SKYFORM_") or k == "SKYFORM_CACHE_DIR"
    }
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def sky(
    root: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh process, in `root`."""
    return subprocess.run(
        [*SKYFORM, *args],
        cwd=root,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input if input is not None else "",
    )


def start_sky(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SKYFORM, *args],
        cwd=root,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def state_of(root: Path, stack: str = "demo") -> dict[str, Any]:
    path = root / ".skyform" / f"{stack}.state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def keys_of(root: Path, stack: str = "demo") -> dict[str, str]:
    return json.loads((root / ".skyform" / f"{stack}.keys.json").read_text())


def cleanup(root: Path) -> None:
    """Destroy whatever a test applied in `root`, then kill anything still left."""
    if (root / ".skyform").exists():
        sky(root, "destroy", "--auto-approve", "--lock-timeout", "30", timeout=90)
    kill_all_under(root)
