"""Console output shared by every command: rich for people, plain JSON for machines.

Colour is off when the stream is not a terminal or `NO_COLOR` is set (rich
honours both); errors go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


def _console(stderr: bool) -> Console:
    return Console(
        stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True
    )


console = _console(stderr=False)
err_console = _console(stderr=True)


def print_error(message: str) -> None:
    # The message is text, not markup: `[x]` in it (a list, an extra, a log line) stays as is.
    err_console.print(f"[bold red]Error:[/] {escape(message)}")


def print_warning(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/] {escape(message)}")


def human_size(size: int) -> str:
    """`size` bytes as people read it: `512 B`, `3.4 MiB`, `1.2 GiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def print_json(data: Any) -> None:
    """Machine output: compact-enough JSON on stdout, never coloured."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def help_when_bare(ctx: typer.Context) -> None:
    """A command group called without a subcommand prints its help and exits 0."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
