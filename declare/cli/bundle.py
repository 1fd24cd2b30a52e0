"""`skyform bundle FILE.py::Class`: build and sign one App's bundle and describe it."""

from __future__ import annotations

from pathlib import Path

import typer

from skyform.bundle import build_bundle
from skyform.cli.output import console, human_size, print_json
from skyform.engine.keys import stack_secret


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle)


def bundle(
    ref: str = typer.Argument(..., metavar="FILE.py::Class", help="The App to bundle."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the bundle."),
    stack: str = typer.Option("default", "--stack", help="Whose bundle key signs it."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Build and sign one App's bundle; show its fingerprint, size and modules."""
    workdir = Path.cwd()
    key = stack_secret("bundle_key", workdir, stack)
    built = build_bundle(ref, workdir, key)
    path = out or Path(f"{built.meta['app']}-{built.fingerprint[:12]}.skyb")
    built.write(path)
    meta = built.meta
    if as_json:
        print_json(
            {
                "fingerprint": built.fingerprint,
                "revision": built.revision,
                "size": built.size,
                "path": str(path),
                "by_value": sorted(meta["by_value"]),
                "by_reference": meta["by_reference"],
            }
        )
        return
    from rich.table import Table  # only where a table is printed: not at CLI start

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("app", f"{meta['app']} ({ref})")
    table.add_row("fingerprint", built.fingerprint)
    table.add_row("size", human_size(built.size))
    table.add_row("path", str(path))
    table.add_row("python", meta["python"])
    table.add_row("endpoints", ", ".join(f"{e['method']} {e['path']}" for e in meta["endpoints"]))
    table.add_row(
        "by value", ", ".join(f"{n} ({p})" for n, p in sorted(meta["by_value"].items())) or "-"
    )
    table.add_row("by reference", ", ".join(meta["by_reference"]) or "-")
    console.print(table)
