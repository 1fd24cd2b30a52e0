"""Bad input to the isolation mechanisms is one clear error and changes nothing:
reserved names in the stack file, broken credentials on a runner's pipe, a
gateway store whose secrets do not open; and the store never holds plaintext."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from skyform.engine.stackfile import StackFileError, parse_stack
from skyform.errors import SkyformError
from skyform.providers.processenv import tool_env
from skyform.runtime.queue_store import QueueStore, StoredApp
from skyform.runtime.sealing import Sealer

STACK = """stack: demo
apps:
  hello:
    app: app.py::Hello
    secrets: [HF_TOKEN, {name}]
"""


@pytest.mark.parametrize("name", ["SKYFORM_BUNDLE_KEY", "SKYFORM_APP_NAME", "VIRTUAL_ENV"])
def test_a_reserved_name_in_secrets_names_file_line_and_key(name: str) -> None:
    with pytest.raises(StackFileError) as info:
        parse_stack(
            STACK.format(name=name), Path("/p/skyform.yaml"), display="skyform.yaml", environ={}
        )
    message = str(info.value)
    assert message.startswith("skyform.yaml:5: apps.hello.secrets:"), message
    assert f"{name} is reserved" in message and "\n" not in message


def _runner(stdin: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "skyform.runtime.runner", "--bundle", str(tmp_path / "b")]
    return subprocess.run(
        [*cmd, "--port", "0", "--credentials-fd", "0"],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=tool_env(),
        check=False,
    )


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        (b"not json", "credentials on fd 0 are not JSON"),
        (b'["a list"]', "credentials on fd 0 are not a JSON object"),
        (b"{}", "SKYFORM_BUNDLE_KEY is not set"),
        (b'{"bundle_key": "k", "secrets": ["x"]}', "credentials: secrets must be an object"),
    ],
)
def test_bad_credentials_on_the_pipe_are_one_line_and_exit_1(
    stdin: bytes, says: str, tmp_path: Path
) -> None:
    result = _runner(stdin, tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def _app(secrets: dict[str, str]) -> StoredApp:
    return StoredApp("priv", "r1", "f1", "private", {"PLAIN": "v"}, Path("/b"), secrets)


def test_the_store_seals_secrets_and_reopens_them_with_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = QueueStore(path, sealer=Sealer("bundle-key-1"))
    store.save_app(_app({"MY_SECRET": "plain-secret-value-9"}))
    store.close()
    for name in [path.name, path.name + "-wal"]:
        if (tmp_path / name).exists():
            assert b"plain-secret-value-9" not in (tmp_path / name).read_bytes()
    again = QueueStore(path, sealer=Sealer("bundle-key-1"))
    (app,) = again.load_apps()
    assert app.secrets == {"MY_SECRET": "plain-secret-value-9"} and app.env == {"PLAIN": "v"}
    again.close()


def test_secrets_that_do_not_open_skip_that_app_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = QueueStore(path, sealer=Sealer("bundle-key-1"))
    store.save_app(_app({"MY_SECRET": "x"}))
    store.close()
    other = QueueStore(path, sealer=Sealer("another-key"))
    assert other.load_apps() == []
    assert "do not open with this stack's bundle key" in other.load_errors["priv"]
    other.close()
    # A sealed value moved to another app's row does not open there either.
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO apps SELECT 'thief', revision, fingerprint, auth, env, secrets, "
        "bundle_path, updated FROM apps WHERE name = 'priv'"
    )
    db.commit()
    db.close()
    store = QueueStore(path, sealer=Sealer("bundle-key-1"))
    assert [a.name for a in store.load_apps()] == ["priv"]
    assert "thief" in store.load_errors
    store.close()


def test_a_store_without_a_key_refuses_to_keep_secrets(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "q.sqlite3")
    with pytest.raises(SkyformError, match="no key to seal"):
        store.save_app(_app({"MY_SECRET": "x"}))
    assert store.load_apps() == []
    store.close()
