"""`python -m skyform.runtime.runner --bundle PATH --port N [--host H]`: serve one App bundle.

With `--tls-cert PEM --tls-key PEM` it serves https (runners reached over a network).

The runner's life (DESIGN §6, fal's readiness and liveness rules):

1. Take the credentials (from `--credentials-fd`: a JSON object on a pipe with
   the bundle key, this runner's token, the app's secrets and an open fd of the
   bundle; else `SKYFORM_BUNDLE_KEY` / `SKYFORM_RUNNER_TOKEN`), verify and open
   the bundle, bind the port. Any problem: one line on stderr, exit 1, nothing
   served. The app's secrets go into `os.environ` (not into the process's
   start-up environment, which `/proc/<pid>/environ` shows); the keys go
   nowhere app code looks, and the process is made non-dumpable.
2. Start a plain `setup()` in a thread at once (an `async def` one on the
   loop), and build the API and start serving meanwhile: the runner's own
   start overlaps the app's imports. `/health` answers 503
   `{"status": "starting"}` until `setup()` returns, 200
   `{"status": "ready", "app", "revision"}` after. `setup()` raising, or outliving `startup_timeout`: its traceback
   is logged and the process exits 2, never having answered 200.
3. Endpoints answer by the status rules (`runner_asgi`, `runner_endpoints`):
   a 503 ends the runner (exit 3) right after the response is written,
   a request past `request_timeout` gets 504 and ends it too (exit 4).
4. SIGTERM or SIGINT: stop accepting, let requests in flight finish within
   `--grace` seconds, run `teardown()`, exit 0.

The runner exits through `os._exit` after flushing its logs: a stuck endpoint
thread must not hold the process open, and an unhealthy runner must not wait
for keep-alive connections. When it leads its own process group (as the local
provider starts it), whatever is left in that group (processes an endpoint
spawned) is killed first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from skyform.app import App, app_endpoints
from skyform.bundle import open_bundle, read_bundle_file
from skyform.credentials import CREDENTIALS_FLAG, harden_process, read_credentials
from skyform.errors import SkyformError
from skyform.options import option_or_default
from skyform.runtime.runner_asgi import Phase, RunnerASGI, RunnerMetrics, RunnerState
from skyform.runtime.runner_context import configure_logging, flush_logs, stamp_output
from skyform.runtime.runner_errors import EXIT_BAD_START, EXIT_SETUP_FAILED, user_traceback

if TYPE_CHECKING:
    from skyform.runtime.runner_server import RunnerServer

log = logging.getLogger("skyform.runner")

ENV_BUNDLE_KEY = "SKYFORM_BUNDLE_KEY"
ENV_RUNNER_TOKEN = "SKYFORM_RUNNER_TOKEN"
ENV_APP_NAME = "SKYFORM_APP_NAME"
ENV_GRACE = "SKYFORM_RUNNER_GRACE"
DEFAULT_GRACE = 30.0


@dataclass(frozen=True)
class RunnerConfig:
    """Everything the runner needs, read and checked before anything is served."""

    meta: dict[str, Any]
    cls: type[App]
    host: str
    port: int
    grace: float
    token: str | None
    app_name: str
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve https

    @property
    def options(self) -> dict[str, Any]:
        return self.meta.get("options", {})


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: exit 1 with one line on a bad start, else serve until told to stop."""
    configure_logging()
    try:
        config = load_config(argv, os.environ)
        sock = bind(config.host, config.port)
    except SkyformError as exc:
        print(f"skyform runner: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_START)
    stamp_output()  # the App's own prints get a time and request id from here on
    _run(Runner(config, sock).serve_then_exit())
    raise AssertionError("unreachable: the runner leaves through os._exit")


def load_config(argv: list[str] | None, env: os._Environ[str] | dict[str, str]) -> RunnerConfig:
    """Parse the command line and environment, verify and open the bundle."""
    args = _parser().parse_args(argv)
    credentials: dict[str, Any] = {}
    if args.credentials_fd is not None:
        credentials = read_credentials(args.credentials_fd)
        harden_process()
    key = str(credentials.get("bundle_key") or env.get(ENV_BUNDLE_KEY, ""))
    token = str(credentials.get("runner_token") or env.get(ENV_RUNNER_TOKEN, "")) or None
    for name in (ENV_BUNDLE_KEY, ENV_RUNNER_TOKEN):
        env.pop(name, None)  # not for app code to find
    if not key:
        raise SkyformError(f"{ENV_BUNDLE_KEY} is not set; the runner cannot verify its bundle")
    grace = args.grace if args.grace is not None else _env_float(env, ENV_GRACE, DEFAULT_GRACE)
    if grace < 0:
        raise SkyformError("--grace must not be negative")
    if not 0 <= args.port <= 65535:
        raise SkyformError(f"--port {args.port} is not a TCP port (0-65535)")
    tls = _tls_files(*_tls_paths(args, credentials.get("tls")))
    secrets = credentials.get("secrets") or {}
    if not isinstance(secrets, dict):
        raise SkyformError("credentials: secrets must be an object")
    # Before unpickling: the app's module code may read its secrets at import.
    env.update({str(k): str(v) for k, v in secrets.items()})
    bundle_fd = credentials.get("bundle_fd")
    if isinstance(bundle_fd, int):
        data = _read_fd(bundle_fd, args.bundle)
    else:
        data = read_bundle_file(args.bundle)
    meta, cls = open_bundle(data, key)
    del key, credentials
    app_endpoints(cls)  # an App without endpoints was never bundled; refuse anything odd
    return RunnerConfig(
        meta=meta,
        cls=cls,
        host=args.host,
        port=args.port,
        grace=grace,
        token=token,
        app_name=env.get(ENV_APP_NAME) or str(meta.get("app") or cls.__name__),
        tls=tls,
    )


def _read_fd(fd: int, path: Path) -> bytes:
    """The bundle from the open fd the provider passed (its path may be closed to us)."""
    chunks = []
    try:
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(1 << 20):
                chunks.append(chunk)
    except OSError as exc:
        raise SkyformError(f"cannot read bundle {path}: {exc.strerror or exc}") from None
    return b"".join(chunks)


def _tls_paths(args: argparse.Namespace, given: Any) -> tuple[Path | None, Path | None]:
    """`--tls-cert`/`--tls-key`, or the pair sent on the credentials pipe (a runner that
    runs as another user cannot read the stack's copy), kept in its private home."""
    if given is None:
        return args.tls_cert, args.tls_key
    if not isinstance(given, dict) or not all(
        isinstance(given.get(k), str) for k in ("cert", "key")
    ):
        raise SkyformError("credentials: tls must be an object with cert and key")
    folder = Path(os.environ.get("HOME") or ".") / ".skyform-tls"
    folder.mkdir(mode=0o700, exist_ok=True)
    paths = (folder / "cert.pem", folder / "key.pem")
    for path, text in zip(paths, (given["cert"], given["key"]), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    return paths


def _tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """`--tls-cert`/`--tls-key`: both or neither, and a pair that loads."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SkyformError("--tls-cert and --tls-key go together")
    from skyform.tlscontext import server_context

    server_context(cert, key)  # a TLSError names the file that is wrong
    return cert, key


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen now, so a taken port is a one-line start error, not a crash later."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SkyformError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SkyformError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class Runner:
    """One App instance served by uvicorn, with the readiness and liveness rules."""

    def __init__(self, config: RunnerConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self._exit_code: int | None = None
        self._failed: asyncio.Event | None = None
        self._server: RunnerServer | None = None  # built while a plain setup() already runs
        self._stop_asked = False  # a signal came before the server was built

    async def serve_then_exit(self) -> NoReturn:
        """Serve, then leave through `os._exit`: stuck user threads must not keep the process."""
        _exit(await self.serve())

    async def serve(self) -> int:
        """Serve until told to stop or until unhealthy; the process exit code."""
        config, options = self.config, self.config.options
        self._failed = asyncio.Event()
        state = RunnerState(config.app_name, str(config.meta.get("revision", "")), self._fail)
        instance = config.cls()
        self._install_signals(state)  # before setup() starts: SIGTERM during it exits 0
        timeout = float(option_or_default(options, "startup_timeout"))
        setup: asyncio.Future[Any] | None = None
        if _overrides(config.cls, "setup"):
            log.info("running setup() (startup_timeout %gs)", timeout)
            setup = _start_setup(instance.setup)
        setup_started = time.monotonic()
        # Imported now, while setup() runs: not before the app's own imports.
        from skyform.runtime.runner_endpoints import EndpointInvoker, build_api
        from skyform.runtime.runner_server import let_responses_leave, make_server

        endpoints = app_endpoints(config.cls)
        invoker = EndpointInvoker(
            instance,
            endpoints,
            request_timeout=float(option_or_default(options, "request_timeout")),
            max_threads=int(option_or_default(options, "max_multiplexing")),
        )
        api = build_api(config.cls, invoker, endpoints)
        asgi = RunnerASGI(
            api, state, RunnerMetrics(state), {ep.path for ep in endpoints}, config.token
        )
        server = make_server(
            asgi, any(e.kind == "websocket" for e in endpoints), config.grace, config.tls
        )
        self._server = server
        if self._stop_asked:  # told to stop while the server was being built
            server.should_exit = True
        host, port = self.sock.getsockname()[:2]
        log.info(
            "serving %s (revision %s) on %s://%s:%s",
            config.app_name,
            state.revision[:12],
            "https" if config.tls else "http",
            host,
            port,
        )
        serving = asyncio.ensure_future(server.serve(sockets=[self.sock]))
        failed = asyncio.ensure_future(self._failed.wait())

        if setup is not None:
            code = await self._setup(setup, setup_started, timeout, serving)
            if code is not None:
                return code
        state.mark_ready()
        if state.phase is Phase.READY:
            log.info("ready")

        await asyncio.wait({serving, failed}, return_when=asyncio.FIRST_COMPLETED)
        if self._exit_code is not None:
            await let_responses_leave(server)
            return self._exit_code
        serving.result()  # re-raise if uvicorn itself failed
        if not _overrides(config.cls, "teardown"):
            return 0
        return await self._teardown(instance)

    async def _setup(
        self,
        setup: asyncio.Future[Any],
        started: float,
        timeout: float,
        serving: asyncio.Future[None],
    ) -> int | None:
        """Wait for setup() within its time limit; None when ready, else the exit code."""
        left = max(timeout - (time.monotonic() - started), 0.0)
        done, _ = await asyncio.wait(
            {setup, serving}, timeout=left, return_when=asyncio.FIRST_COMPLETED
        )
        if setup in done:
            exc = setup.exception()
            if exc is None:
                log.info("setup() finished in %.2fs", time.monotonic() - started)
                return None
            log.error("setup() failed; this runner never becomes ready\n%s", user_traceback(exc))
            return EXIT_SETUP_FAILED
        if serving in done:
            log.info("stopped while setup() was running; teardown() skipped")
            return 0
        log.error(
            "setup() did not finish within startup_timeout (%gs); this runner never becomes ready",
            timeout,
        )
        return EXIT_SETUP_FAILED

    async def _teardown(self, instance: App) -> int:
        log.info("running teardown()")
        try:
            await asyncio.wait_for(_call(instance.teardown), timeout=max(self.config.grace, 1.0))
        except TimeoutError:
            log.error("teardown() did not finish within %gs", max(self.config.grace, 1.0))
            return 1
        except Exception as exc:
            log.error("teardown() failed\n%s", user_traceback(exc))
            return 1
        log.info("teardown() finished; exiting")
        return 0

    def _fail(self, code: int, reason: str) -> None:
        log.error("runner is unhealthy: %s; exiting with code %d", reason, code)
        self._exit_code = code
        assert self._failed is not None
        self._failed.set()

    def _install_signals(self, state: RunnerState) -> None:
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            server = self._server
            if server is None:
                log.info("%s: stopping once the server is built", sig.name)
                state.drain()
                self._stop_asked = True
                return
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
                return
            log.info(
                "%s: draining (in-flight requests get up to %gs), then teardown()",
                sig.name,
                self.config.grace,
            )
            state.drain()
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)


def _start_setup(func: Any) -> asyncio.Future[Any]:
    """Start the App's setup(): a plain one in a thread at once, a coroutine on the loop.

    A plain setup() (importing torch, loading weights: the long part of a cold
    start) runs while the runner still builds its API and binds its server,
    instead of after: health says "starting" until it returns, as before.
    """
    if inspect.iscoroutinefunction(func):
        return asyncio.ensure_future(func())
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(None, contextvars.copy_context().run, func)


async def _call(func: Any) -> Any:
    """Call a user hook: coroutine functions on the loop, plain ones in a thread."""
    if inspect.iscoroutinefunction(func):
        return await func()
    return await asyncio.to_thread(func)


def _overrides(cls: type[App], name: str) -> bool:
    return getattr(cls, name) is not getattr(App, name)


def _run(coro: Any) -> Any:
    """Run the server on uvloop when it is installed (it is faster), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _exit(code: int) -> NoReturn:
    flush_logs()
    _stop_own_group()
    os._exit(code)


def _stop_own_group() -> None:
    """SIGKILL the other members of our process group, when we lead one of our own."""
    me = os.getpid()
    if os.getpgid(0) != me:
        return
    import psutil  # only on the way out: not every runner start pays for it

    for pid in psutil.pids():
        if pid == me:
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == me:
                os.kill(pid, signal.SIGKILL)


def _env_float(env: Any, name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SkyformError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise SkyformError(f"{name} must not be negative")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m skyform.runtime.runner",
        description="Serve one skyform App bundle over HTTP.",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="the signed bundle file")
    parser.add_argument("--port", required=True, type=int, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--tls-cert", type=Path, help="serve https with this PEM certificate")
    parser.add_argument("--tls-key", type=Path, help="the certificate's PEM key")
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help=f"seconds in-flight requests get after SIGTERM (${ENV_GRACE}, default {DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        CREDENTIALS_FLAG,
        dest="credentials_fd",
        type=int,
        default=None,
        help="read the credentials (a JSON object) from this fd instead of the environment",
    )
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a SkyformError (one line, exit 1)."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise SkyformError(f"{message} (usage: {usage})")


if __name__ == "__main__":
    main()
