"""The `skyform` command line: a typer app whose command groups live in sibling modules.

Each module in COMMAND_MODULES defines `register(app)`. User errors
(`SkyformError`, bad usage) print one line and exit 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import sys
from typing import Any

import typer

from skyform.errors import SkyformError

COMMAND_MODULES: tuple[str, ...] = ("bundle", "env", "state", "stack", "devrun")

app = typer.Typer(
    name="skyform",
    help="Self-hosted serverless for Python model apps, driven like Terraform.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, like terraform's: stable to read, diff and grep
    context_settings={"help_option_names": ["-h", "--help"]},
)

# What a person types for an option's value, by the option's parameter name;
# any other valued option shows its name in capitals (--port PORT).
METAVARS: dict[str, str] = {
    "file": "FILE",
    "out": "PATH",
    "lock_timeout": "SECS",
    "target": "APP",
    "replace": "APP",
    "tail": "N",
    "port": "N",
    "fmt": "FORMAT",
    "stack": "NAME",
    "state": "BACKEND",
}


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", is_eager=True, help="Print skyform's version and exit."
    ),
) -> None:
    """Self-hosted serverless for Python model apps, driven like Terraform."""
    if version:
        from skyform import __version__

        typer.echo(f"skyform {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        # Bare `skyform`: the help is the answer, not an error.
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


for _name in COMMAND_MODULES:
    importlib.import_module(f"skyform.cli.{_name}").register(app)

# At exit the interpreter's last garbage collections walk every object the command
# loaded (pydantic, fastapi, the user's app): ~70 ms after `apply` has printed its
# outputs, on the critical path of every script that calls it. Frozen objects are
# skipped; whatever holds a resource is closed by its owner before this runs.
atexit.register(gc.freeze)


def command() -> Any:
    """The click command tree of the CLI, with value placeholders a person reads.

    Typer's default placeholders are Python types (`--target <list[str]>`,
    `--json <bool>`); help shows `--target APP`, `--lock-timeout SECS`, and
    nothing after a flag.
    """
    root = typer.main.get_command(app)
    todo = [root]
    while todo:
        cmd = todo.pop()
        todo.extend(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if param.param_type_name == "argument":
                if param.metavar:  # the usage line brackets optional ones itself
                    param.metavar = param.metavar.strip("[]") or param.metavar
                continue
            if param.metavar is not None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
            else:
                name = param.name or ""
                param.metavar = METAVARS.get(name, name.upper())
    return root


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from skyform.cli.output import print_error

    try:
        result = command().main(args=argv, prog_name="skyform", standalone_mode=False)
    except SkyformError as exc:
        print_error(str(exc))
        return _exit(1)
    except typer.Abort:
        print_error("aborted")
        return _exit(1)
    except typer.Exit as exc:
        return _exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        print_error(_usage_message(exc))
        return _exit(1)
    except KeyboardInterrupt:
        print_error("interrupted")
        return _exit(130)
    return _exit(result if isinstance(result, int) else 0)


def _usage_message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


def _exit(code: int) -> int:
    sys.stdout.flush()
    return code
