"""`skyform env list` / `skyform env prune`: the cache of per-app environments."""

from __future__ import annotations

import time

import typer
from rich.markup import escape

from skyform.cli.output import console, help_when_bare, human_size, print_json


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="env",
        help="Inspect and prune the cached per-app environments.",
        invoke_without_command=True,
        callback=help_when_bare,
    )
    group.command("list")(env_list)
    group.command("prune")(env_prune)
    app.add_typer(group, name="env")


def env_list(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List cached environments: key, Python, requirements, size, who uses them."""
    from skyform.providers.environments import envs_dir
    from skyform.providers.envusage import list_environments

    infos = list_environments()
    if as_json:
        print_json({"cache_dir": str(envs_dir()), "environments": [i.to_json() for i in infos]})
        return
    if not infos:
        console.print(f"No environments in {envs_dir()}.")
        return
    from rich.table import Table  # only where a table is printed: not at CLI start

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("key", "python", "requirements", "size", "last used", "in use by"):
        table.add_column(column)
    for info in infos:
        requirements = ", ".join(info.requirements) if info.complete else "(incomplete)"
        table.add_row(
            info.key[:12],
            info.python_version or "-",
            escape(requirements) or "-",  # extras: `uvicorn[standard]`
            human_size(info.size),
            _ago(info.last_used or info.created),
            "; ".join(info.in_use) or "-",
        )
    console.print(table)
    console.print(f"{len(infos)} environment(s) in {envs_dir()}")


def env_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be removed."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Remove environments that no stack in your state uses and no process runs from."""
    from skyform.providers.envusage import prune_environments

    removed = prune_environments(dry_run=dry_run)
    freed = sum(i.size for i in removed)
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "removed": [i.key for i in removed],
                "freed_bytes": freed,
            }
        )
        return
    verb = "Would remove" if dry_run else "Removed"
    for info in removed:
        what = ", ".join(info.requirements) if info.complete else "incomplete build"
        console.print(f"{verb} {info.key[:12]} ({what}, {human_size(info.size)})", markup=False)
    console.print(f"{verb} {len(removed)} environment(s), {human_size(freed)}.")


def _ago(when: float) -> str:
    if not when:
        return "-"
    seconds = max(0, time.time() - when)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{int(seconds // span)}{unit} ago"
    return f"{int(seconds)}s ago"
