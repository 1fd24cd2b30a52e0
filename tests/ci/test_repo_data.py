"""The test data travels with the repository, exactly: SkyPilot's catalog subsets
keep their upstream CRLF line endings, and git is told never to convert them."""

from __future__ import annotations

import subprocess

from support.ci import REPO

CATALOGS = REPO / "tests" / "data" / "skypilot-catalogs"


def test_catalog_subsets_keep_crlf_line_endings():
    data = (CATALOGS / "v8" / "lambda" / "vms.csv").read_bytes()
    lines = data.split(b"\n")[:-1]
    assert len(lines) > 100
    assert all(line.endswith(b"\r") for line in lines), "vms.csv lost its CRLF line endings"
    assert (CATALOGS / "README.md").is_file()


def test_git_never_converts_the_catalogs():
    out = subprocess.run(
        ["git", "check-attr", "text", "--", "tests/data/skypilot-catalogs/v8/lambda/vms.csv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().endswith("text: unset"), out
