"""`skyform run`: an ephemeral stack in the foreground, for a laptop.

Everything the run creates (keys, state, the gateway's queue, runner logs)
lives in one temporary directory; Ctrl-C (or SIGTERM) stops the gateway,
whose runners die with it, and removes that directory. Apps default to
`public` auth here, so a developer can curl them without a key.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from skyform.cli.output import console, err_console
from skyform.engine.stackfile import DEFAULT_FILE, DEFAULT_PORT
from skyform.errors import SkyformError


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ref: str | None = typer.Argument(
        None, metavar="[FILE.py::Class]", help="Run this one App (instead of a stack file)."
    ),
    file: Path | None = typer.Option(None, "--file", "-f", help="Run this stack file's apps."),
    port: int | None = typer.Option(None, "--port", "-p", help="Gateway port (default 8765)."),
) -> None:
    """Run apps in the foreground: prints their URLs, streams runner logs; Ctrl-C removes all."""
    stack = _stack(ref, file)
    port = port if port is not None else stack.model.gateway.port
    if not 0 < port < 65536:
        raise SkyformError(f"--port {port}: not a TCP port")
    _check_port_free(stack.model.gateway.host, port)
    workdir = Path(tempfile.mkdtemp(prefix="skyform-run-"))
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C must stop the run even when started from a shell that ignores SIGINT in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctx = None
    try:
        ctx = _start(stack, workdir, port)
        _stream_logs(ctx)
    except KeyboardInterrupt:
        err_console.print("\nStopping...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _cleanup(ctx, stack, workdir)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term)
    err_console.print("Stopped; nothing is left running.")


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _stack(ref: str | None, file: Path | None) -> Any:
    from skyform.engine.stackfile import AppEntry, GatewayConfig, Stack, StackModel, load_stack

    if ref is not None and file is not None:
        raise SkyformError("give either FILE.py::Class or -f FILE, not both")
    if ref is None:
        path = file or Path(DEFAULT_FILE)
        if file is None and not path.exists():
            raise SkyformError(
                f"nothing to run: no {DEFAULT_FILE} here; pass FILE.py::Class or -f FILE"
            )
        return load_stack(path)
    from skyform.loader import parse_ref

    _file_part, class_name = parse_ref(ref)
    name = re.sub(r"[^a-z0-9]+", "-", class_name.lower()).strip("-") or "app"
    model = StackModel(
        stack=f"run-{name}",
        gateway=GatewayConfig(port=DEFAULT_PORT),
        apps={name: AppEntry(app=ref)},
    )
    return Stack(model=model, path=Path.cwd().resolve() / DEFAULT_FILE)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", port))
        except OSError:
            raise SkyformError(
                f"port {port} is in use; pass --port N (or stop what listens there)"
            ) from None


def _start(stack: Any, workdir: Path, port: int) -> Any:
    from skyform.bundle import read_bundle_meta
    from skyform.cli.common import ReadyProgress, refresh_and_plan, report
    from skyform.engine.apply import Applier, open_context
    from skyform.engine.plan import PlanRequest

    ctx = open_context(stack, workdir=workdir, state="local")
    with ctx.backend.lock(operation="run", timeout=0):
        doc = ctx.backend.read()
        err_console.print(f"Building {len(stack.apps)} app(s)...")
        plan = refresh_and_plan(ctx, doc, PlanRequest(mode="run", port=port), quiet=True)
        with ReadyProgress() as progress:
            doc = Applier(ctx, plan, doc, report, progress=progress.update).run()
    outputs = doc.outputs
    console.print(f"\n[bold]skyform run[/]: stack {stack.name}, gateway {outputs['gateway_url']}")
    for name, urls in sorted(outputs["apps"].items()):
        meta = read_bundle_meta(plan.bundles[name], ctx.keys["bundle_key"])
        console.print(f"\n[bold]{name}[/] ({stack.apps[name].app})")
        for ep in meta["endpoints"]:
            path = ep["path"].lstrip("/")
            console.print(f"  {ep['method']:<5} {urls['url']}{path}")
        console.print(f"  queue       {urls['queue_url']}")
        console.print(f"  playground  {urls['playground_url']}")
        auth = (plan.change(f"app.{name}").after or {}).get("auth")
        if auth == "private":
            console.print(
                "  auth        private: send Authorization: Bearer <key>; the key is "
                f"$SKYFORM_API_KEY or api_key in {ctx.workdir / '.skyform'}"
            )
    console.print("\nStreaming runner logs; press Ctrl-C to stop.\n")
    sys.stdout.flush()
    return ctx


def _stream_logs(ctx: Any) -> None:
    from skyform.cli.common import LogFollower
    from skyform.engine.admin_client import GatewayClient, GatewayError
    from skyform.engine.plan import GATEWAY
    from skyform.providers.base import GatewayHandle

    doc = ctx.backend.read()
    handle = GatewayHandle(**doc.resources[GATEWAY]["handle"])
    followers = {name: LogFollower() for name in ctx.stack.apps}
    token = ctx.keys["admin_token"]
    with GatewayClient.for_handle(handle, token, 10.0, ctx.gateway_ca_file()) as client:
        while True:
            if not ctx.provider.gateway_alive(handle):
                raise SkyformError("the gateway stopped unexpectedly (see its log above)")
            for name, follower in followers.items():
                with contextlib.suppress(GatewayError):
                    for line in follower.new_lines(client.logs(name, 500)):
                        sys.stdout.write(f"[{name}] {line}\n")
            sys.stdout.flush()
            time.sleep(0.5)


def _cleanup(ctx: Any, stack: Any, workdir: Path) -> None:
    from skyform.engine.apply import open_context, should_stop, stop_orphans
    from skyform.engine.plan import GATEWAY
    from skyform.providers.base import GatewayHandle

    try:
        if ctx is None:
            ctx = open_context(stack, workdir=workdir, state="local")
        with contextlib.suppress(SkyformError):
            record = ctx.backend.read().resources.get(GATEWAY) or {}
            handle = GatewayHandle(**record["handle"]) if record.get("handle") else None
            if handle is not None and should_stop(ctx.provider, handle):
                ctx.provider.stop_gateway(handle, grace=10.0)
        stop_orphans(ctx)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(workdir)
