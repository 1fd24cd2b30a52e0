"""Console output shared by every command: rich for people, plain JSON for machines.

Colour is off when the stream is not a terminal or `NO_COLOR` is set (rich
honours both); errors go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def _console(stderr: bool) -> Console:
    return Console(
        stderr=stderr, no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True
    )


console = _console(stderr=False)
err_console = _console(stderr=True)


def print_error(message: str) -> None:
    err_console.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)


def print_warning(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/] {message}")


def print_json(data: Any) -> None:
    """Machine output: compact-enough JSON on stdout, never coloured."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
