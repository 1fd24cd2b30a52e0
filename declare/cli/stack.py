"""The Terraform-style loop: `plan`, `apply`, `destroy`, `output`, `status`, `logs`, `schema`.

(`run`, the ephemeral foreground stack, lives in `skyform.cli.devrun`.)
Every command reads the stack file first (`-f`, default `skyform.yaml`), so a
bad file fails before anything is locked or started. `plan`, `apply` and
`destroy` hold the state's lock for their whole run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from skyform.cli.common import LogFollower, ReadyProgress, refresh_and_plan, report
from skyform.cli.output import console, print_json, print_warning
from skyform.engine.stackfile import DEFAULT_FILE
from skyform.errors import SkyformError

FILE_OPTION = typer.Option(Path(DEFAULT_FILE), "--file", "-f", help="The stack file.")
LOCK_TIMEOUT = typer.Option(
    0.0, "--lock-timeout", help="Seconds to wait for the state lock (0: fail at once)."
)
TARGET = typer.Option(None, "--target", help="Only this app (repeatable): APP or app.APP.")
REPLACE = typer.Option(
    None, "--replace", help="Force a new revision of APP, or replace the gateway (repeatable)."
)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("destroy")(destroy)
    app.command("output")(output)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("schema")(schema)


# -- plan ----------------------------------------------------------------------------------


def plan(
    file: Path = FILE_OPTION,
    out: Path | None = typer.Option(None, "--out", "-o", help="Save the plan for `apply PLAN`."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable plan."),
    fmt: str = typer.Option("text", "--format", help="text, json or markdown (a PR comment)."),
    detailed_exitcode: bool = typer.Option(
        False, "--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes."
    ),
    target: list[str] | None = TARGET,
    replace: list[str] | None = REPLACE,
    lock_timeout: float = LOCK_TIMEOUT,
) -> None:
    """Show what apply would change: the stack file against what is live."""
    from skyform.engine.planfile import save_plan

    fmt = "json" if as_json else _check_format(fmt)
    ctx, built = _make_plan(file, "plan", target, replace, lock_timeout, quiet=fmt != "text")
    if out is not None:
        save_plan(built, out, ctx.keys["bundle_key"], str(file))
    _print_plan(built, fmt)
    if out is not None and fmt == "text":
        console.print(f'\nSaved the plan to: {out}\nTo apply exactly it: skyform apply "{out}"')
    if detailed_exitcode and built.has_changes:
        raise typer.Exit(2)


def _check_format(fmt: str) -> str:
    from skyform.suggest import did_you_mean

    if fmt not in ("text", "json", "markdown"):
        raise SkyformError(
            f"--format {fmt}: not a format{did_you_mean(fmt, ['text', 'json', 'markdown'])}; "
            "use text, json or markdown"
        )
    return fmt


def _make_plan(
    file: Path,
    operation: str,
    target: list[str] | None,
    replace: list[str] | None,
    lock_timeout: float,
    quiet: bool = False,
) -> tuple[Any, Any]:
    from skyform.engine.apply import open_context
    from skyform.engine.stackfile import load_stack

    ctx = open_context(load_stack(file))
    with ctx.backend.lock(operation=operation, timeout=lock_timeout):
        built = refresh_and_plan(ctx, ctx.backend.read(), _request(target, replace), quiet)
    return ctx, built


def _request(target: list[str] | None, replace: list[str] | None) -> Any:
    from skyform.engine.plan import PlanRequest

    return PlanRequest(targets=tuple(target or ()), replace=tuple(replace or ()))


def _print_plan(built: Any, fmt: str) -> None:
    from skyform.engine.render import render_markdown, render_plan

    if fmt == "json":
        print_json(built.to_dict())
    elif fmt == "markdown":
        sys.stdout.write(render_markdown(built))
        sys.stdout.flush()
    else:
        print_plan_text(render_plan(built))


def print_plan_text(text: Text) -> None:
    """Print a rendered plan; its styles are Terraform's colours (rich drops them without a
    terminal or with NO_COLOR)."""
    console.print(text, end="")


# -- apply / destroy -----------------------------------------------------------------------


def apply(
    plan_file: Path | None = typer.Argument(None, metavar="[PLAN]", help="A saved plan."),
    file: Path = FILE_OPTION,
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask for `yes`."),
    target: list[str] | None = TARGET,
    replace: list[str] | None = REPLACE,
    lock_timeout: float = LOCK_TIMEOUT,
) -> None:
    """Make the stack match its file; a saved PLAN is applied exactly, or refused if stale."""
    from skyform.engine.apply import Applier, EarlyGateway, check_plan_current, open_context
    from skyform.engine.planfile import load_plan
    from skyform.engine.render import render_plan
    from skyform.engine.stackfile import load_stack

    if plan_file is not None and (target or replace):
        raise SkyformError(
            "--target and --replace are planning options; a saved plan is applied as it is"
        )
    stack = load_stack(file)
    ctx = open_context(stack)
    with ctx.backend.lock(operation="apply", timeout=lock_timeout):
        doc = ctx.backend.read()
        # Approved in advance: a new stack's gateway starts while the plan is made.
        early = EarlyGateway.maybe_start(ctx, doc) if auto_approve and not plan_file else None
        try:
            if plan_file is not None:
                built = load_plan(plan_file, ctx.keys["bundle_key"])
                check_plan_current(built, doc, str(plan_file))
            else:
                built = refresh_and_plan(ctx, doc, _request(target, replace))
                print_plan_text(render_plan(built))
                if built.has_changes and not auto_approve:
                    _confirm("apply")
            started = time.monotonic()
            with ReadyProgress() as progress:
                applier = Applier(
                    ctx, built, doc, report, progress=progress.update, early_gateway=early
                )
                doc = applier.run()
        finally:
            if early is not None:
                early.discard()  # unless the apply adopted it
        done = applier.done
    console.print(
        f"\n[bold green]Apply complete![/] Resources: {done['add']} added, "
        f"{done['change']} changed, {done['destroy']} destroyed. "
        f"[{time.monotonic() - started:.1f}s]"
    )
    _print_outputs(doc.outputs)


def destroy(
    file: Path = FILE_OPTION,
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Do not ask for `yes`."),
    lock_timeout: float = LOCK_TIMEOUT,
    keep_queue: bool = typer.Option(
        False,
        "--keep-queue",
        help="Keep the gateway's queue database (requests, results) instead of deleting it.",
    ),
) -> None:
    """Stop the gateway and every runner of the stack, and empty its state."""
    from skyform.engine.apply import Applier, open_context, remove_queue, stop_orphans
    from skyform.engine.plan import PlanRequest
    from skyform.engine.render import render_plan
    from skyform.engine.stackfile import load_stack

    ctx = open_context(load_stack(file))
    with ctx.backend.lock(operation="destroy", timeout=lock_timeout):
        doc = ctx.backend.read()
        built = refresh_and_plan(ctx, doc, PlanRequest(mode="destroy"), quiet=True)
        if not built.has_changes:
            stopped = stop_orphans(ctx)
            if not keep_queue:
                remove_queue(ctx)
            if doc.outputs:
                ctx.backend.write(doc.evolve(outputs={}))
            note = f" (stopped {len(stopped)} stray gateway process)" if stopped else ""
            console.print(f"No changes. No objects need to be destroyed.{note}")
            return
        print_plan_text(render_plan(built))
        if not auto_approve:
            _confirm("destroy")
        applier = Applier(ctx, built, doc, report)
        applier.run()
        stop_orphans(ctx)
        if not keep_queue:
            remove_queue(ctx)
    console.print(
        f"\n[bold green]Destroy complete![/] Resources: {applier.done['destroy']} destroyed."
    )


def _confirm(what: str) -> None:
    if not sys.stdin.isatty():
        hint = " or apply a saved plan (skyform plan --out PLAN)" if what == "apply" else ""
        raise SkyformError(
            f"{what} needs confirmation but there is no terminal to ask on; "
            f"pass --auto-approve{hint}"
        )
    verb = "perform these actions" if what == "apply" else "destroy all resources"
    console.print(f"\nDo you want to {verb}?\n  Only 'yes' will be accepted to approve.\n")
    answer = typer.prompt("  Enter a value", default="", show_default=False)
    if answer.strip() != "yes":
        raise SkyformError(f"{what} cancelled (the answer was not 'yes'); nothing was changed")


# -- inspect -------------------------------------------------------------------------------


def _print_outputs(outputs: dict[str, Any]) -> None:
    if not outputs:
        return
    console.print("\nOutputs:\n")
    console.print(f"gateway_url = {outputs.get('gateway_url')}", markup=False)
    if outputs.get("ca_file"):
        console.print(f"ca_file     = {outputs['ca_file']}", markup=False)
    for name, urls in sorted((outputs.get("apps") or {}).items()):
        console.print(f"\napp.{name}:", markup=False)
        for key in ("url", "queue_url", "playground_url"):
            console.print(f"  {key:<14} = {urls[key]}", markup=False)  # an IPv6 host: [fe80::1]


SENSITIVE_OUTPUTS = ("api_key",)


def output(
    name: str | None = typer.Argument(
        None, metavar="NAME", help="One output: gateway_url, apps or api_key (sensitive)."
    ),
    file: Path = FILE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable outputs."),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Print NAME's bare value, for scripts: $(skyform output --raw api_key).",
    ),
) -> None:
    """The stack's URLs (gateway, and per app its sync, queue and playground URLs), or one NAME.

    Like Terraform's outputs: `api_key` is sensitive, so it is shown only when
    named (`skyform output api_key`), never in the full listing.
    """
    from skyform.engine.stackfile import load_stack
    from skyform.state import open_backend

    if raw and as_json:
        raise SkyformError("--raw and --json are exclusive: pick one")
    if raw and name is None:
        raise SkyformError("--raw needs an output NAME (for example: skyform output --raw api_key)")
    # Only the state (and, for api_key, the stored keys) is read: nothing is made or started.
    stack = load_stack(file)
    with open_backend(stack.model.state, stack.name, stack.base_dir) as backend:
        outputs = backend.read().outputs
    if name is None:
        if as_json:
            print_json(outputs)
        elif not outputs:
            print_warning("no outputs: the stack has not been applied (run skyform apply)")
        else:
            _print_outputs(outputs)
            for secret in SENSITIVE_OUTPUTS:
                console.print(f"\n{secret} = <sensitive>", markup=False)
        return
    value = _output_value(stack, outputs, name)
    if raw:
        if value is None:
            raise SkyformError(f"output {name} has no value in this stack")
        if not isinstance(value, str | int | float | bool):
            raise SkyformError(
                f"output {name} is not a plain string or number; --raw cannot print it (use --json)"
            )
        sys.stdout.write(str(value))
        sys.stdout.flush()
    elif as_json or not isinstance(value, str):
        print_json(value)
    else:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()


def _output_value(stack: Any, outputs: dict[str, Any], name: str) -> Any:
    """The value of output `name`; an unknown name, or a stack never applied, is an error."""
    from skyform.engine.keys import keys_path, stack_secret
    from skyform.suggest import did_you_mean

    if not outputs:
        raise SkyformError("no outputs: the stack has not been applied (run skyform apply)")
    known = sorted({*outputs, *SENSITIVE_OUTPUTS})
    if name not in known:
        raise SkyformError(
            f"no output named {name!r}{did_you_mean(name, known)}; outputs: " + ", ".join(known)
        )
    if name in SENSITIVE_OUTPUTS:
        if (
            not keys_path(stack.base_dir, stack.name).exists()
            and "SKYFORM_API_KEY" not in os.environ
        ):
            raise SkyformError(
                f"the stack's keys file {keys_path(stack.base_dir, stack.name)} is missing and "
                "SKYFORM_API_KEY is not set: the key this stack was applied with is unknown here"
            )
        return stack_secret(name, stack.base_dir, stack.name)
    return outputs[name]


def status(
    file: Path = FILE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable status."),
) -> None:
    """Apps, revisions, runners and URLs, as the gateway sees them now."""
    from rich.markup import escape
    from rich.table import Table

    from skyform.engine.apply import open_context
    from skyform.engine.outputs import app_urls
    from skyform.engine.plan import APP_PREFIX, GATEWAY, tainted_reason
    from skyform.engine.refresh import refresh
    from skyform.engine.stackfile import load_stack

    ctx = open_context(load_stack(file))
    doc = ctx.backend.read()
    live = refresh(doc.resources, ctx.provider, ctx.keys["admin_token"], ctx.gateway_ca_file())
    gw_record = doc.resources.get(GATEWAY) or {}
    base = gw_record.get("url") or ""
    names = sorted(
        {a[len(APP_PREFIX) :] for a in doc.resources if a.startswith(APP_PREFIX)}
        | set(live.apps or {})
    )
    # One JSON row per app (the `--json` body), read back below for the table.
    apps: list[dict[str, Any]] = []
    for name in names:
        record = doc.resources.get(APP_PREFIX + name) or {}
        app = (live.apps or {}).get(name) or {}
        runners = app.get("runners", [])
        apps.append(
            {
                "name": name,
                "revision": app.get("revision") or record.get("revision"),
                "auth": app.get("auth") or record.get("auth"),
                "registered": name in (live.apps or {}),
                "pending": record.get("pending"),
                "tainted": tainted_reason(record),
                "runners": [
                    {k: r.get(k) for k in ("id", "state", "revision", "url", "error")}
                    for r in runners
                ],
                "queue_depth": app.get("queue_depth"),
                "last_error": app.get("last_error"),
                "last_error_type": app.get("last_error_type"),
                "waiting": app.get("waiting"),
                **(app_urls(base, name) if base else {}),
            }
        )
    body = {
        "stack": ctx.stack.name,
        "gateway": {"url": base or None, "alive": live.gateway_alive},
        "apps": apps,
        "state": {"lineage": doc.lineage, "serial": doc.serial},
        "drift": live.drift,
    }
    if as_json:
        print_json(body)
        return
    alive = "[green]running[/]" if live.gateway_alive else "[red]not running[/]"
    console.print(f"stack [bold]{ctx.stack.name}[/] (state serial {doc.serial})")
    console.print(f"gateway: {base or '-'} {alive}")
    if not apps:
        console.print("no apps")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("app", "revision", "auth", "runners", "queue", "url"):
        table.add_column(col)
    for a in apps:
        states: dict[str, int] = {}
        for r in a["runners"]:
            states[r["state"]] = states.get(r["state"], 0) + 1
        runner_text = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "0"
        if not a["registered"]:
            runner_text = "[red]not registered[/]"
        table.add_row(
            a["name"],
            (a["revision"] or "-")[:12],
            a["auth"] or "-",
            runner_text,
            str(a["queue_depth"] if a["queue_depth"] is not None else "-"),
            a.get("url", "-"),
        )
    console.print(table)
    for a in apps:
        if a["waiting"]:
            console.print(f"[yellow]app.{a['name']}:[/] {escape(str(a['waiting']))}")
        if a["tainted"]:
            console.print(
                f"[red]app.{a['name']}: tainted[/] (the next apply replaces it): "
                f"{escape(a['tainted'])}"
            )
        if a["last_error"]:
            console.print(f"[red]app.{a['name']}: last error:[/] {escape(str(a['last_error']))}")


def logs(
    app_name: str = typer.Argument(..., metavar="APP", help="The app whose runner logs to show."),
    file: Path = FILE_OPTION,
    tail: int = typer.Option(200, "--tail", "-n", help="How many lines, in all."),
    follow: bool = typer.Option(False, "--follow", help="Keep printing new lines."),
    every: bool = typer.Option(
        False, "--all", help="Also the runners of older revisions (default: the current one)."
    ),
) -> None:
    """The recent log lines of an app's runners, from the gateway, merged by time.

    Each line: time (UTC), runner, level, source and, inside a request, its id.
    """
    from skyform.engine.admin_client import GatewayClient
    from skyform.engine.apply import open_context
    from skyform.engine.plan import GATEWAY
    from skyform.engine.refresh import refresh
    from skyform.engine.stackfile import load_stack
    from skyform.suggest import did_you_mean

    if tail < 0:
        raise SkyformError(f"--tail {tail}: must be 0 or more")
    stack = load_stack(file)
    ctx = open_context(stack)
    doc = ctx.backend.read()
    live = refresh(doc.resources, ctx.provider, ctx.keys["admin_token"], ctx.gateway_ca_file())
    if not live.gateway_alive or live.apps is None:
        raise SkyformError(
            f"the gateway of stack {stack.name!r} is not running (run skyform apply)"
        )
    if app_name not in live.apps:
        known = sorted(live.apps)
        raise SkyformError(
            f'no app "{app_name}" is running in stack {stack.name!r}{did_you_mean(app_name, known)}'
        )
    from skyform.providers.base import GatewayHandle

    record = doc.resources.get(GATEWAY) or {}
    handle = GatewayHandle(**record["handle"])  # refresh found it alive, so it is recorded
    with GatewayClient.for_handle(
        handle, ctx.keys["admin_token"], ca_file=ctx.gateway_ca_file()
    ) as client:
        follower = LogFollower()
        first = follower.new_lines(client.logs(app_name, tail, every))
        for line in first:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if not first and tail:
            which = "" if every else " of its current revision (--all shows older ones)"
            print_warning(f"app {app_name}: no log lines from runners{which}")
        while follow:
            time.sleep(1.0)
            for line in follower.new_lines(client.logs(app_name, max(tail, 500), every)):
                sys.stdout.write(line + "\n")
            sys.stdout.flush()


def schema() -> None:
    """Print the JSON Schema of skyform.yaml (for editors)."""
    from skyform.engine.stackfile import stack_json_schema

    print_json(stack_json_schema())
