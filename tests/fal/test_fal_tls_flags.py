"""The gateway's `--tls-cert/--tls-key`: a bad pair is one line and exit 1, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyform.providers.local import free_port


def _gateway(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "state"
    return subprocess.run(
        [sys.executable, "-m", "skyform.runtime.gateway", "--port", str(free_port()),
         "--state-dir", str(state), *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{cert}"], "error: --tls-cert and --tls-key go together"),
        (["--tls-cert", "{cert}", "--tls-key", "{tmp}/missing.pem"], "missing.pem: no such file"),
        (
            ["--tls-cert", "{garbage}", "--tls-key", "{key}"],
            "as a TLS certificate and key",
        ),
    ],
)
def test_bad_tls_flags(
    tmp_path: Path, tls: tuple[Path, Path, Path], flags: list[str], message: str
) -> None:
    _ca, cert, key = tls
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    values = {"cert": cert, "key": key, "garbage": garbage, "tmp": tmp_path}
    done = _gateway(tmp_path, *(f.format(**values) for f in flags))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # checked before anything was created
