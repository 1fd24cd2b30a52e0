"""An app that behaves like a curious tenant: it reports everything it can read.

The isolation tests deploy it twice (a public and a private app) and check,
from inside, what a security review checked: its own environment, its parent's
and every other process's `/proc/<pid>/environ`, the stack's `.skyform/` files,
strings in its own memory that look like tokens, and whether any of them opens
another app's runner or the gateway's admin API.
"""

import contextlib
import gc
import hashlib
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel

from skyform import App, endpoint

TOKENISH = re.compile(r"^[A-Za-z0-9_\-]{32,64}$")


class ProbeIn(BaseModel):
    skyform_dir: str = ""
    runner_urls: list[str] = []
    gateway_url: str = ""


class SpawnIn(BaseModel):
    seconds: int = 600


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError as exc:
        return f"<{type(exc).__name__}>"


def _walk(top: Path) -> dict[str, str]:
    """Every file under `top` with what reading it gave."""
    try:
        entries = sorted(top.rglob("*"))
    except OSError as exc:
        return {str(top): f"<{type(exc).__name__}>"}
    found = {str(top): "<dir>"}
    for path in entries:
        found[str(path)] = "<dir>" if path.is_dir() else _read(path)
    return found


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


def _memory_tokens() -> set[str]:
    """Strings in this process's objects that look like a token."""
    found: set[str] = set()
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            values = list(obj.values())
        elif isinstance(obj, list | tuple):
            values = list(obj)
        else:
            try:
                values = list(vars(obj).values())
            except Exception:
                values = []
            with contextlib.suppress(Exception):
                values += [getattr(obj, n, None) for n in getattr(type(obj), "__slots__", ())]
        for value in values:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str):
                for word in value.replace("Bearer ", " ").split():
                    if TOKENISH.match(word):
                        found.add(word)
    return found


class Probe(App):
    max_runners = 1
    keep_alive = 300

    @endpoint("/probe")
    def probe(self, req: ProbeIn) -> dict:
        ppid = os.getppid()
        others = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                others[entry.name] = _read(entry / "environ")
        files = _walk(Path(req.skyform_dir)) if req.skyform_dir else {}
        memory = _memory_tokens()
        candidates = set(os.environ.values()) | memory
        for text in [*others.values(), *files.values()]:
            candidates |= {w for w in re.split(r"[\s\"'=,:\x00]+", text) if TOKENISH.match(w)}
        calls = {}
        for url in req.runner_urls:
            calls[url] = sorted({_status(f"{url}/openapi.json", t) for t in [None, *candidates]})
        admin = []
        if req.gateway_url:
            admin = sorted({_status(f"{req.gateway_url}/-/apps", t) for t in [None, *candidates]})
        return {
            "uid": os.getuid(),
            "environ": dict(os.environ),
            "own_proc_environ": _read(Path("/proc/self/environ")),
            "parent": ppid,
            "parent_environ": _read(Path(f"/proc/{ppid}/environ")),
            "parent_mem": _read(Path(f"/proc/{ppid}/mem")),
            "proc_environs": others,
            "files": files,
            "memory_tokens": sorted(memory),
            "candidates": len(candidates),
            "runner_calls": calls,
            "admin_calls": admin,
        }

    @endpoint("/secret")
    def secret(self) -> dict:
        """What the app knows of its secret: a digest only (results are stored)."""
        value = os.environ.get("MY_SECRET", "")
        return {
            "sha256": hashlib.sha256(value.encode()).hexdigest() if value else None,
            "in_proc_environ": bool(value) and value in _read(Path("/proc/self/environ")),
            "pid": os.getpid(),
        }

    @endpoint("/spawn")
    def spawn(self, req: SpawnIn) -> dict:
        """Start a child that would sleep well past the runner's life."""
        child = subprocess.Popen(["sleep", str(req.seconds)])
        return {"pid": child.pid}

    @endpoint("/slow")
    def slow(self, req: SpawnIn) -> dict:
        import time

        time.sleep(req.seconds)
        value = os.environ.get("MY_SECRET", "")
        return {"sha256": hashlib.sha256(value.encode()).hexdigest() if value else None}
