"""Helpers for the SDK, loader and bundle tests: small throwaway app projects."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HELLO_APP = """
from pydantic import BaseModel
from skyform import App, endpoint

import greeting


class HelloIn(BaseModel):
    name: str


class HelloOut(BaseModel):
    message: str


class Hello(App):
    machine_type = "CPU"
    requirements = ["six==1.16.0"]
    max_runners = 2

    @endpoint("/")
    def hello(self, req: HelloIn) -> HelloOut:
        return HelloOut(message=greeting.greet(req.name))
"""

GREETING = """
def greet(name: str) -> str:
    return f"Hello, {name}!"
"""


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run_python(
    code: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "skyform.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
