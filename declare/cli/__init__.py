"""The `skyform` command line: a typer app whose command groups live in sibling modules.

Each module in COMMAND_MODULES defines `register(app)`. User errors
(`SkyformError`, bad usage) print one line and exit 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from skyform.errors import SkyformError

COMMAND_MODULES: tuple[str, ...] = ("bundle", "env", "state", "stack", "devrun")

app = typer.Typer(
    name="skyform",
    help="Self-hosted serverless for Python model apps, driven like Terraform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Self-hosted serverless for Python model apps, driven like Terraform."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"skyform.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    from skyform.cli.output import print_error

    try:
        result = app(args=argv, standalone_mode=False)
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
