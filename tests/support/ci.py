"""Helpers for the CI and install tests: fresh copies of example projects, free
ports, and a last-resort sweep of processes a failed test left behind."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def fresh_checkout(example: str, dest: Path, *, port: int) -> Path:
    """A copy of `examples/<example>` as a fresh clone has it: no `.skyform/`, no caches.

    The gateway's port becomes `port`, so parallel tests never compete for 8765.
    """
    shutil.copytree(
        EXAMPLES / example,
        dest,
        ignore=shutil.ignore_patterns(".skyform", "__pycache__", ".github"),
    )
    stackfile = dest / "skyform.yaml"
    text, count = re.subn(r"port: \d+", f"port: {port}", stackfile.read_text())
    assert count == 1, f"{stackfile}: expected one gateway port"
    stackfile.write_text(text)
    return dest
