"""Environment-build helpers, shared by the environment and isolation tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
SMALL = "six"  # a small pure-Python package: the one requirement most tests use


@contextlib.contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    """Set (or with None, unset) environment variables for the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_in(python: Path | str, code: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run `code` with an environment's Python, from a neutral directory, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        timeout=120,
        check=False,
        **kwargs,
    )


# A child process that builds (or reuses) an environment and reports what happened.
ENSURE_SCRIPT = """
import json, sys
from pathlib import Path
from skyform.providers.environments import ensure_environment, EnvironmentBuildError, EnvUser
args = json.loads(sys.argv[1])
go = Path(args["go"]) if args.get("go") else None
if go is not None:
    Path(args["ready"]).touch()
    while not go.exists():
        pass
user = EnvUser(**args["user"]) if args.get("user") else None
try:
    env = ensure_environment(args["requirements"], args["python"], used_by=user)
except EnvironmentBuildError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(3)
print(json.dumps({"key": env.key, "built": env.built, "build_id": env.build_id, "python": str(env.python)}))
"""


def ensure_in_subprocess(
    requirements: list[str], *, env: dict[str, str] | None = None, **extra: object
) -> subprocess.Popen[str]:
    """Start a real process that calls `ensure_environment`; read its JSON from stdout."""
    args = {"requirements": requirements, "python": PYTHON_VERSION, **extra}
    return subprocess.Popen(
        [sys.executable, "-c", ENSURE_SCRIPT, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ),
        start_new_session=True,
    )


@contextlib.contextmanager
def reaped(*procs: subprocess.Popen[str]) -> Iterator[None]:
    """Kill (whole process group) whatever is still running at the end of the block."""
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
            with contextlib.suppress(Exception):
                proc.communicate(timeout=30)


def make_wheel(directory: Path, name: str, version: str, module: str, source: str) -> Path:
    """Write a minimal pure-Python wheel by hand (no build tools, no network)."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}.py": source,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: skyform-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel
