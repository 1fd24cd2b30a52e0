"""A throwaway PostgreSQL server from the system's binaries, for tests and benchmarks only (not shipped).

The postgres backend is only trustworthy if it is tested against a real
server, and CI cannot be assumed to have one running. This starts one in a
temp dir (trust auth, listening on 127.0.0.1 and a private unix socket) and
removes every trace of it on exit. It looks for `initdb` and `postgres` on
PATH, then in Debian's `/usr/lib/postgresql/<version>/bin`. PostgreSQL refuses
to run as root, so as root the server runs as the `postgres` user (or
`nobody`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skyform.state.errors import StateError
from support.procs import free_port

USER = "skyform"
START_TIMEOUT = 60.0


def find_binaries() -> Path | None:
    """The directory holding `initdb` and `postgres`, newest version first; None if absent."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: _version_key(Path(p).parent.parent.name),
        reverse=True,
    )
    for initdb in candidates:
        directory = Path(initdb).parent
        if (directory / "postgres").exists():
            return directory
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StateError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


@contextlib.contextmanager
def temp_postgres(durable: bool = False) -> Iterator[str]:
    """Run a fresh server for the block; yields its `postgresql://` URL.

    `durable=False` turns fsync off (tests); benchmarks pass True to measure
    what a real server would do.
    """
    bindir = find_binaries()
    if bindir is None:
        raise StateError(
            "PostgreSQL binaries not found (initdb, postgres); install Debian's `postgresql`"
        )
    account = _run_as()
    root = Path(tempfile.mkdtemp(prefix="skyform-pg-"))
    data, log = root / "data", root / "server.log"
    as_user: dict[str, Any] = {}
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    if account is not None:
        env["HOME"] = str(root)
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, env=env, cwd=root, **as_user,
        )  # fmt: skip
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(root),
            "max_connections": "100",
            "shared_buffers": "32MB",
        }
        if not durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root,
                start_new_session=True, **as_user,
            )  # fmt: skip
        url = f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        _wait_ready(url, proc, log)
        yield url
    except subprocess.CalledProcessError as exc:
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(
            errors="replace"
        )
        raise StateError(f"initdb failed: {out.strip()[-500:]}") from None
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise StateError(f"postgres exited at start: {_tail(log)}")
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise StateError(
                    f"postgres did not start in {START_TIMEOUT:g}s: {_tail(log)}"
                ) from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: disconnect clients, stop); SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
    except OSError:
        return "(no log)"
