"""The `local` provider: runners and the gateway as processes on this machine.

Runners are children of the gateway, bound to 127.0.0.1 on a free port, each
with its own log file `<runtime_dir>/runners/<runner_id>.log`. They are started
with `PR_SET_PDEATHSIG`, so the kernel stops them when the gateway dies, even
by SIGKILL: a crashed gateway leaves no runner behind.

`PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
the process. The gateway calls `start_runner` from worker threads, so every
fork happens on one spawner thread that lives as long as the process.

The gateway itself runs detached (its own session), logs to
`<state_dir>/gateway.log` and records its pid in `<state_dir>/gateway.pid`.

Runners listen on loopback, so by default the gateway talks to them in
plaintext (TLS there would cost CPU and protect nothing). The option
`runner_tls: true` (`provider: {local: {runner_tls: true}}`) makes them serve
the stack's runner certificate, as off-host runners always do.

Isolation (why each runner starts the way it does):

- Environment: an allowlist (`skyform.providers.processenv`): the runtime's
  needs, the app's own `env`, nothing of the gateway's or the deployer's.
- Credentials (the bundle key, the runner's own token, the app's secrets) and
  the bundle itself arrive on a pipe and an inherited fd, never in
  `/proc/<pid>/environ` or a path the runner could reopen.
- When skyform runs as root, runners run as an unprivileged user
  (`SKYFORM_RUNNER_USER`, default `nobody`) with a private home directory:
  app code can read neither `.skyform/` nor the gateway's memory. The app's
  environment must be readable by that user (its cache directory is checked).
- Each runner leads its own process group; stopping it stops the group, so a
  child an endpoint spawned does not outlive the runner.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import pwd
import queue
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyform.credentials import CREDENTIALS_FLAG, send_credentials
from skyform.errors import SkyformError
from skyform.files import private_dir, write_atomic
from skyform.providers import processes
from skyform.providers.base import (
    GatewayHandle,
    GatewaySpec,
    Provider,
    RunnerHandle,
    RunnerSpec,
    TLSMaterial,
)
from skyform.providers.processenv import runtime_env, tool_env

if TYPE_CHECKING:
    from skyform.providers.environments import EnvUser
    from skyform.providers.gpus import GpuLedger

_PR_SET_PDEATHSIG = 1
RUNNER_USER_ENV = "SKYFORM_RUNNER_USER"
DEFAULT_RUNNER_USER = "nobody"
GATEWAY_START_TIMEOUT = 60.0
# How often a starting gateway's health is tried: a refused connection costs
# microseconds, and each interval is time `apply` waits on a gateway already up.
GATEWAY_START_POLL_S = 0.02
# A runner's own drain bound on SIGTERM, kept below the 10 s `stop_runner`
# waits before SIGKILL, so teardown() always gets to run.
RUNNER_DRAIN_S = 7.0


def runner_python(spec: RunnerSpec, progress: Callable[[str], None] | None = None) -> str:
    """The Python interpreter a runner of `spec` runs with: its app's own environment.

    Built from the app's requirements, this skyform and the bundle's Python
    minor version, cached and shared by every runner with the same inputs
    (`skyform.providers.environments`). Raises `EnvironmentBuildError`, with the
    installer's message, when it cannot be built.
    """
    from skyform.providers.environments import ensure_environment

    env = ensure_environment(
        spec.requirements, spec.python_version, progress, used_by=_env_user(spec)
    )
    return str(env.python)


def _env_user(spec: RunnerSpec) -> EnvUser | None:
    """Who uses the environment, when the bundle lives in a stack's `.skyform/runtime/`."""
    from skyform.providers.environments import EnvUser

    parts = Path(spec.bundle_path).resolve().parts
    if ".skyform" not in parts:
        return None
    workdir = Path(*parts[: len(parts) - 1 - parts[::-1].index(".skyform")])
    return EnvUser(stack=spec.stack, app=spec.app, workdir=workdir)


def _log_line(path: Path) -> Callable[[str], None]:
    """Append progress lines (environment builds) to a runner's log."""

    from skyform.logformat import log_line

    def write(line: str) -> None:
        with _private_log(path) as fd:
            os.write(fd, (log_line("skyform.env", "INFO", line.rstrip()) + "\n").encode())

    return write


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Spawner:
    """One long-lived thread that forks every runner (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="skyform-spawner", daemon=True)
        self._thread.start()

    def run(self, job: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return job()
        future: Future[Any] = Future()
        self._jobs.put((job, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _get_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
        return _spawner


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class LocalProvider(Provider):
    """Runners as subprocesses of the calling process; the gateway as a daemon."""

    name = "local"
    runs_on_this_host = True

    def __init__(
        self, stack: str, runtime_dir: Path, runner_tls: bool = False, **options: Any
    ) -> None:
        if options:
            raise SkyformError(
                "the local provider takes no options but runner_tls; got: "
                + ", ".join(sorted(options))
            )
        if not isinstance(runner_tls, bool):
            raise SkyformError(
                f"provider.local.runner_tls must be true or false, got {runner_tls!r}"
            )
        self.stack = stack
        self.runner_tls = runner_tls
        self.runtime_dir = Path(runtime_dir)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._handles: dict[str, RunnerHandle] = {}
        self._lock = threading.Lock()
        self._gpus: GpuLedger | None = None  # the host's GPUs, read at the first runner

    # --- runners ----------------------------------------------------------

    def start_runner(self, spec: RunnerSpec) -> RunnerHandle:
        runner_id = spec.runner_id or f"{spec.app}-{secrets.token_hex(4)}"
        logs = private_dir(self.runtime_dir / "runners")
        log_path = logs / f"{runner_id}.log"
        python = runner_python(spec, progress=_log_line(log_path))
        user = runner_user()
        if user is not None:
            check_reachable(Path(python), user)
            home = self.homes_root() / runner_id  # made only when it spawns
            cwd = home
        else:
            home = Path(os.environ.get("HOME") or self.runtime_dir)
            cwd = self.runtime_dir
        venv = Path(python).parent.parent
        env = runtime_env()
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env.update(spec.env)
        env.update({"HOME": str(home), "VIRTUAL_ENV": str(venv), "PYTHONUNBUFFERED": "1"})
        if user is not None:
            env.update({"USER": user.name, "LOGNAME": user.name})
        env.setdefault("SKYFORM_APP_NAME", spec.app)
        host = "127.0.0.1"
        port = free_port(host)
        cmd = [
            python,
            "-m",
            "skyform.runtime.runner",
            "--bundle",
            str(spec.bundle_path),
            "--port",
            str(port),
            "--host",
            host,
            "--grace",
            str(RUNNER_DRAIN_S),
            CREDENTIALS_FLAG,
            "0",
        ]
        as_user: dict[str, Any] = {}
        if user is not None:
            as_user = {"user": user.uid, "group": user.gid, "extra_groups": []}
        tls = spec.tls if self.runner_tls else None
        if self.runner_tls and tls is None:
            raise SkyformError("runner_tls is on, but the gateway has no runner certificate")
        tls_files: dict[str, str] = {}
        if tls is not None:
            if user is None:
                cmd += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
            else:
                # The runner's user cannot read `.skyform/`: the pair goes on the pipe.
                tls_files = {"cert": tls.cert.read_text(), "key": tls.key.read_text()}
        # Its own GPUs (CUDA_VISIBLE_DEVICES), or CapacityUnavailable: it waits.
        env.update(self.gpu_ledger().claim(runner_id, spec.machine_types, self._runner_running))

        def spawn() -> subprocess.Popen[bytes]:
            if user is not None:
                self._runner_home(runner_id, user)
            # The bundle goes as an open fd: the runner's user may not open its path.
            bundle_fd = os.open(spec.bundle_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with _private_log(log_path) as log:
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.PIPE,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=str(cwd),
                        # Its own session and process group: a Ctrl-C meant for the
                        # gateway does not reach the runner (the gateway stops it:
                        # drain, teardown), and stopping it stops what it spawned.
                        start_new_session=True,
                        pass_fds=(bundle_fd,),
                        preexec_fn=_die_with_parent,
                        **as_user,
                    )
            finally:
                os.close(bundle_fd)
            credentials = {
                "bundle_fd": bundle_fd,
                "bundle_key": spec.bundle_key,
                "runner_token": spec.runner_token,
                "secrets": spec.secrets,
            }
            if tls_files:
                credentials["tls"] = tls_files
            send_credentials(proc, credentials)
            return proc

        try:
            proc = _get_spawner().run(spawn)
        except BaseException:
            self.gpu_ledger().release(runner_id)
            self._forget_home(runner_id)
            raise
        handle = RunnerHandle(
            runner_id=runner_id,
            app=spec.app,
            revision=spec.revision,
            url=f"{'https' if tls else 'http'}://{host}:{port}",
            provider=self.name,
            info={"pid": proc.pid, "log": str(log_path), "host": host, "port": port},
        )
        with self._lock:
            self._procs[runner_id] = proc
            self._handles[runner_id] = handle
        return handle

    def homes_root(self) -> Path:
        """Where runners that run as another user get their home directories (root only)."""
        digest = hashlib.sha256(str(self.runtime_dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"skyform-runners-{digest}"

    def _forget_home(self, runner_id: str) -> None:
        """Remove a runner's home, and their folder when it was the last one."""
        shutil.rmtree(self.homes_root() / runner_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.homes_root().rmdir()  # fails while other runners live there

    def remove_stale_homes(self) -> None:
        """At a gateway's start: homes of runners a killed predecessor left (they died with it)."""
        shutil.rmtree(self.homes_root(), ignore_errors=True)

    def _runner_home(self, runner_id: str, user: RunnerUser) -> Path:
        root = self.homes_root()
        home = root / runner_id
        for _attempt in range(5):  # the last runner's stop may remove `root` meanwhile
            root.mkdir(mode=0o711, exist_ok=True)
            os.chmod(root, 0o711)  # passable, not listable: one runner cannot find another's
            with contextlib.suppress(FileNotFoundError):
                home.mkdir(mode=0o700, exist_ok=True)
                break
        os.chown(home, user.uid, user.gid)
        return home

    def gpu_ledger(self) -> GpuLedger:
        """Which of the host's GPUs each runner holds (the inventory is read once)."""
        with self._lock:
            if self._gpus is None:
                from skyform.providers.gpus import GpuLedger

                self._gpus = GpuLedger()
            return self._gpus

    def _runner_running(self, runner_id: str) -> bool:
        proc = self._procs.get(runner_id)
        return proc is None or proc.poll() is None  # None: being started right now

    def prepare_runner(self, spec: RunnerSpec) -> None:
        """Build (or find cached) the environment runners of `spec` will run in."""
        runner_python(spec)

    def runner_alive(self, handle: RunnerHandle) -> bool:
        proc = self._procs.get(handle.runner_id)
        if proc is not None:
            return proc.poll() is None
        return processes.pid_alive(_int(handle.info.get("pid")))

    def runner_exit_code(self, handle: RunnerHandle) -> int | None:
        """The runner's exit status once it has exited (None while it runs)."""
        proc = self._procs.get(handle.runner_id)
        return proc.poll() if proc is not None else None

    def stop_runner(self, handle: RunnerHandle, grace: float = 10.0) -> None:
        """SIGTERM (the runner drains and runs teardown), SIGKILL after `grace` seconds;
        then SIGKILL whatever is left of its process group (children an endpoint spawned)."""
        with self._lock:
            proc = self._procs.pop(handle.runner_id, None)
            self._handles.pop(handle.runner_id, None)
        pid = _int(handle.info.get("pid"))
        if proc is None:
            _terminate_pid(pid, grace)
        elif proc.poll() is None:
            processes.terminate(proc.pid, grace, lambda: proc.poll() is None)
        if pid is not None:
            kill_group(pid)
        self._forget_home(handle.runner_id)
        if self._gpus is not None:
            self._gpus.release(handle.runner_id)

    def list_runners(self, stack: str) -> list[RunnerHandle]:
        if stack != self.stack:
            return []
        with self._lock:
            return [h for rid, h in self._handles.items() if self._procs[rid].poll() is None]

    def runner_log(self, handle: RunnerHandle) -> Path | None:
        log = handle.info.get("log")
        return Path(str(log)) if log else None

    # --- the gateway ------------------------------------------------------

    def start_gateway(self, spec: GatewaySpec) -> GatewayHandle:
        """Start the gateway detached; return once `GET /-/health` answers."""
        state_dir = private_dir(Path(spec.state_dir))
        _write_provider_config(state_dir, self.runner_tls)
        log_path = state_dir / "gateway.log"
        log_start = log_path.stat().st_size if log_path.exists() else 0
        # Started from an allowlist, its keys on a pipe: nothing of the deployer's
        # environment (another app's secret, a CI credential) reaches it.
        env = tool_env()
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "skyform.runtime.gateway",
            "--port",
            str(spec.port),
            "--state-dir",
            str(state_dir),
            "--stack",
            spec.stack,
            CREDENTIALS_FLAG,
            "0",
            *gateway_tls_args(spec),
        ]
        with _private_log(log_path) as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        send_credentials(proc, dict(spec.credentials))
        write_atomic(state_dir / "gateway.pid", f"{proc.pid}\n", mode=0o600)
        url = f"{'https' if spec.tls else 'http'}://127.0.0.1:{spec.port}"
        info: dict[str, object] = {
            "pid": proc.pid,
            "log": str(log_path),
            "state_dir": str(state_dir),
        }
        if spec.tls is not None:
            # What the CLI trusts: the stack CA, else the user's certificate pinned as is.
            info["ca_file"] = str(spec.tls.ca or spec.tls.cert)
        handle = GatewayHandle(stack=spec.stack, url=url, provider=self.name, info=info)
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SkyformError(
                    f"gateway exited with status {proc.returncode} while starting: "
                    f"{_failure_line(log_path, log_start)} (log: {log_path})"
                )
            if _health_answers(url, _ca_file(handle)):
                return handle
            time.sleep(GATEWAY_START_POLL_S)
        self.stop_gateway(handle, grace=2.0)
        raise SkyformError(
            f"gateway did not answer on {url} within {GATEWAY_START_TIMEOUT:.0f}s (log: {log_path})"
        )

    def gateway_alive(self, handle: GatewayHandle) -> bool:
        return processes.pid_alive(_int(handle.info.get("pid"))) and _health_answers(
            handle.url, _ca_file(handle)
        )

    def stop_gateway(self, handle: GatewayHandle, grace: float = 10.0) -> None:
        """SIGTERM the gateway (it stops its runners and persists its queue), SIGKILL later."""
        _terminate_pid(_int(handle.info.get("pid")), grace)
        state_dir = handle.info.get("state_dir")
        if state_dir:
            with contextlib.suppress(FileNotFoundError):
                (Path(str(state_dir)) / "gateway.pid").unlink()
        # Its runners died with it; so do their home directories.
        shutil.rmtree(self.homes_root(), ignore_errors=True)

    def should_stop_gateway(self, handle: GatewayHandle) -> bool:
        """Only a live gateway is stopped by its recorded pid.

        A pid that no longer answers as our gateway may belong to another
        process by now; `stop_orphans` finds the rest by their command lines.
        """
        return self.gateway_alive(handle)

    def stop_orphans(self, stack: str, state_dir: Path) -> list[int]:
        """Stop gateway processes started for `state_dir` that no handle records."""
        pids = _gateway_pids(state_dir)
        for pid in pids:
            self.stop_gateway(GatewayHandle(stack, "", self.name, {"pid": pid}), grace=5.0)
        return pids


def _gateway_pids(state_dir: Path) -> list[int]:
    """Pids of live gateway processes started for `state_dir`, found by their command line."""
    target = str(state_dir)
    return processes.find(lambda argv: "skyform.runtime.gateway" in argv and target in argv)


@dataclass(frozen=True)
class RunnerUser:
    """The unprivileged account runners run as when skyform itself runs as root."""

    name: str
    uid: int
    gid: int


def runner_user() -> RunnerUser | None:
    """`$SKYFORM_RUNNER_USER` (default `nobody`) when we are root; None otherwise.

    Not root: runners run as the deployer (the OS offers nothing else to drop to);
    they are still non-dumpable, so they cannot read each other's memory.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get(RUNNER_USER_ENV) or DEFAULT_RUNNER_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SkyformError(
            f"{RUNNER_USER_ENV}={name}: no such user (runners run as an unprivileged user "
            "when skyform runs as root)"
        ) from None
    if entry.pw_uid == 0:
        raise SkyformError(f"{RUNNER_USER_ENV}={name} is root; name an unprivileged user")
    return RunnerUser(name, entry.pw_uid, entry.pw_gid)


def check_reachable(python: Path, user: RunnerUser) -> None:
    """Fail clearly when `user` cannot run `python` (a cache under a private home, say)."""
    for target in (python, python.resolve()):
        for folder in [*reversed(target.parents)]:
            try:
                info = folder.stat()
            except OSError:
                continue
            if not _may(info, user, 0o1):
                raise SkyformError(
                    f"runners run as user {user.name}, who cannot reach {target} "
                    f"({folder} is mode {stat.S_IMODE(info.st_mode):04o}); put the environment "
                    "cache where others can read (SKYFORM_CACHE_DIR)"
                )


def _may(info: os.stat_result, user: RunnerUser, bit: int) -> bool:
    """Whether `user` has permission `bit` (1 = x) on a file with stat `info`."""
    if info.st_uid == user.uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid == user.gid:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in process group `pgid` (none: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def _private_log(path: Path) -> Iterator[int]:
    """An append-only log file descriptor, created mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _terminate_pid(pid: int | None, grace: float) -> None:
    if pid is not None and processes.pid_alive(pid):
        processes.terminate(pid, grace)


def _write_provider_config(state_dir: Path, runner_tls: bool) -> None:
    """Tell the gateway its provider's options (`<state-dir>/provider.json`; absent: plain local)."""
    path = state_dir / "provider.json"
    if runner_tls:
        write_atomic(path, json.dumps({"local": {"runner_tls": True}}) + "\n", mode=0o600)
        return
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(current, dict) and set(current) == {"local"}:
        path.unlink(missing_ok=True)  # one a runner_tls start left: back to the default


def gateway_tls_args(spec: GatewaySpec) -> list[str]:
    """The gateway's command-line arguments for TLS, public URL and trusted proxies."""
    args: list[str] = []
    if spec.tls is not None:
        args += ["--tls-cert", str(spec.tls.cert), "--tls-key", str(spec.tls.key)]
    runner: TLSMaterial | None = spec.runner_tls
    if runner is not None and runner.ca is not None:
        args += ["--runner-cert", str(runner.cert), "--runner-key", str(runner.key)]
        args += ["--runner-ca", str(runner.ca)]
    if spec.public_url:
        args += ["--public-url", spec.public_url]
    for proxy in spec.trusted_proxies:
        args += ["--trusted-proxy", proxy]
    return args


def _ca_file(handle: GatewayHandle) -> str | None:
    value = handle.info.get("ca_file")
    return str(value) if value else None


def _health_answers(url: str, ca_file: str | None = None) -> bool:
    """The gateway answers `/-/health` (200, or 401 without the admin token: it is up).

    Over https the certificate is verified (`ca_file`, else the system's CAs):
    a gateway that cannot prove who it is does not count as ours.
    """
    context = None
    if url.startswith("https://"):
        from skyform.tlscontext import client_context

        context = client_context(ca_file)
    try:
        with urllib.request.urlopen(f"{url}/-/health", timeout=1.0, context=context) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code in (200, 401)
    except (OSError, ValueError):
        return False


def _failure_line(path: Path, start: int) -> str:
    """The line of a log (from byte `start` on) that best says why a start failed."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [""])[-1]


def read_gateway_pid(state_dir: Path) -> int | None:
    """The pid `start_gateway` recorded for the gateway of `state_dir`, if it still runs."""
    try:
        pid = int((Path(state_dir) / "gateway.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if processes.pid_alive(pid) else None
