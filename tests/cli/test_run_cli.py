"""`skyform run` in the foreground, and the README's demo script, end to end."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from support.cli import cli_env, start_sky, write_project
from support.procs import descendants, free_port, kill_all_under, pid_alive, port_free
from support.waiting import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class Output:
    """Collects a process's output on a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.text += line

    def join(self) -> None:
        self._thread.join(timeout=30)


def run_and_interrupt(root: Path, *args: str) -> tuple[str, int]:
    """Start `skyform run`, call its app, Ctrl-C it; check that nothing it started is left."""
    port = free_port()
    proc = start_sky(root, "run", *args, "--port", str(port))
    out = Output(proc)
    tree: set[int] = set()
    try:
        assert wait_until(lambda: "press Ctrl-C to stop" in out.text or proc.poll() is not None, 90)
        assert proc.poll() is None, out.text
        base = f"http://127.0.0.1:{port}"
        assert f"POST  {base}/hello/" in out.text
        assert f"playground  {base}/hello/playground" in out.text
        answer = httpx.post(f"{base}/hello/", json={"name": "Run"}, timeout=60)  # public under run
        assert answer.status_code == 200, answer.text
        assert wait_until(lambda: "[hello]" in out.text, 30)  # runner logs are streamed
        tree = descendants(proc.pid)
        assert len(tree) >= 2  # the gateway and a runner
        cmdlines = " ".join(
            Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in tree
        )
        state_dir = re.search(r"--state-dir (\S+)", cmdlines)
        assert state_dir is not None, cmdlines
        run_dir = Path(state_dir.group(1)).parents[3]  # <tmp>/.skyform/runtime/<stack>/gateway
        assert run_dir.name.startswith("skyform-run-") and run_dir.exists()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        out.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in tree:
            if pid_alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)
    assert code == 0, out.text
    assert "Stopped; nothing is left running." in out.text
    assert [p for p in tree if pid_alive(p)] == []
    assert wait_until(lambda: port_free(port))
    assert not run_dir.exists()  # keys, state and logs of the run are gone
    return out.text, code


def test_run_file_class_then_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    try:
        text, _code = run_and_interrupt(root, "app.py::Hello")
        assert "skyform run: stack run-hello" in text
        assert not (root / ".skyform").exists()  # no state left in the project
    finally:
        kill_all_under(root)


def test_run_stack_file(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    try:
        text, _code = run_and_interrupt(root, "-f", "skyform.yaml")
        assert "skyform run: stack demo" in text
        assert not (root / ".skyform" / "demo.state.json").exists()
    finally:
        kill_all_under(root)


def test_run_refuses_a_busy_port(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "skyform.cli", "run", "app.py::Hello", "--port", str(port)],
            cwd=root,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert f"port {port} is in use" in proc.stderr


def test_demo_script_plans_applies_calls_and_destroys(tmp_path: Path) -> None:
    demo = tmp_path / "hello"
    shutil.copytree(
        REPO / "examples" / "hello", demo, ignore=shutil.ignore_patterns(".skyform", "__pycache__")
    )
    port = free_port()
    yaml = (demo / "skyform.yaml").read_text()
    (demo / "skyform.yaml").write_text(yaml.replace("port: 8765", f"port: {port}"))
    try:
        proc = subprocess.run(
            [sys.executable, str(demo / "demo.py")],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "HTTP 200" in proc.stdout and "Hello, skyform!" in proc.stdout
        assert "Destroy complete!" in proc.stdout
        state = json.loads((demo / ".skyform" / "hello.state.json").read_text())
        assert state["resources"] == {}
        assert port_free(port)
    finally:
        kill_all_under(demo)
