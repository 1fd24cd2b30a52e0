"""Isolation tests reuse the CLI tests' project and process helpers, and the
environment tests' build helpers (their folders are put on the import path)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
for folder in ("cli", "environments"):
    if str(TESTS / folder) not in sys.path:
        sys.path.append(str(TESTS / folder))
