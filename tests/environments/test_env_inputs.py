"""The inputs of an environment: its key, its requirements, the installer's configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyform.errors import SkyformError
from skyform.providers.envconfig import pip_settings, uv_install_config
from skyform.providers.environments import (
    EnvironmentBuildError,
    environment_key,
    normalize_requirements,
    python_minor,
    remote_setup_script,
    runtime_requirements,
    skyform_install,
)


def test_key_ignores_order_spacing_and_duplicates() -> None:
    a = environment_key(["six", "toolz==1.0.0"], "3.11", "0.1.0")
    b = environment_key(["toolz == 1.0.0".replace(" == ", "=="), " six ", "six"], "3.11.7", "0.1.0")
    assert a == b
    assert len(a) == 24 and all(c in "0123456789abcdef" for c in a)


@pytest.mark.parametrize(
    "other",
    [
        (["six", "toolz==1.0.1"], "3.11", "0.1.0"),  # a requirement
        (["six", "toolz==1.0.0"], "3.12", "0.1.0"),  # the Python minor
        (["six", "toolz==1.0.0"], "3.11", "0.1.1"),  # skyform's version
    ],
)
def test_key_changes_with_each_input(other: tuple[list[str], str, str]) -> None:
    assert environment_key(["six", "toolz==1.0.0"], "3.11", "0.1.0") != environment_key(*other)


def test_gateway_kind_never_shares_a_runner_key() -> None:
    assert environment_key([], "3.11", "0.1.0") != environment_key(
        [], "3.11", "0.1.0", kind="gateway"
    )


def test_key_is_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "from skyform.providers.environments import environment_key;"
        "print(environment_key(['b', 'a', 'c>=1'], '3.11', '0.1.0'))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout.strip()
        for seed in ("0", "1", "4242")
    }
    assert keys == {environment_key(["c>=1", "a", "b"], "3.11", "0.1.0")}


def test_normalize_drops_blanks_and_comments() -> None:
    assert normalize_requirements(["  ", "# note", "Six", "a  >=  1"]) == ["a >= 1", "Six"]


@pytest.mark.parametrize(
    ("requirements", "message"),
    [
        (["--extra-index-url http://x"], "installer option"),
        (["-e ."], "installer option"),
        ("six", "list of strings"),
        ([3], "not a string"),
    ],
)
def test_bad_requirements_are_clear_errors(requirements: object, message: str) -> None:
    with pytest.raises(EnvironmentBuildError, match=message) as info:
        normalize_requirements(requirements)  # type: ignore[arg-type]
    assert isinstance(info.value, SkyformError)


@pytest.mark.parametrize(
    ("requirement", "kept"),
    [
        ("uvicorn[standard]>=0.29", "uvicorn[standard]>=0.29"),
        ("Foo_Bar [x, y] >= 1.0 , < 2", "Foo_Bar [x, y] >= 1.0 , < 2"),
        ('six; python_version >= "3.8"', 'six; python_version >= "3.8"'),
        (
            "pkg @ https://example.invalid/pkg-1.0.tar.gz",
            "pkg @ https://example.invalid/pkg-1.0.tar.gz",
        ),
        ("  torch   ==  2.13.0  ", "torch == 2.13.0"),
        ("zope.interface~=6.0", "zope.interface~=6.0"),
    ],
)
def test_odd_but_valid_requirements_pass_as_written(requirement: str, kept: str) -> None:
    assert normalize_requirements([requirement]) == [kept]


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("foo>=>1", 'requirement "foo>=>1" is not a valid requirement: '),
        ("foo bar", 'requirement "foo bar" is not a valid requirement: '),
        ("six; python_version >", "not a valid requirement"),
        ("git+https://example.invalid/x.git", 'needs the package name first: "name @ URL"'),
        ("./my-package", 'needs the package name first: "name @ URL"'),
    ],
)
def test_invalid_requirement_is_one_clear_line(requirement: str, message: str) -> None:
    with pytest.raises(EnvironmentBuildError) as info:
        normalize_requirements(["six", requirement])
    assert message in str(info.value)
    assert "\n" not in str(info.value), "one line: not packaging's caret diagram"


def test_requirement_names_are_compared_canonically() -> None:
    from skyform.providers.environments import _req_name, _runtime_only_metadata

    assert _req_name("Foo_Bar.baz[x]>=1; python_version > '3'") == "foo-bar-baz"
    assert _req_name("PyYAML @ https://example.invalid/p.whl") == "pyyaml"
    metadata = "Name: skyform\nRequires-Dist: PyYAML>=6.0\nRequires-Dist: Typer>=0.12\n"
    kept = _runtime_only_metadata(metadata)
    assert "Requires-Dist: PyYAML>=6.0" in kept, "a runtime need, whatever its spelling"
    assert "Typer" not in kept, "a CLI-side dependency is dropped"


@pytest.mark.parametrize("bad", ["3", "python3.11", "3.x", ""])
def test_bad_python_version_is_refused(bad: str) -> None:
    with pytest.raises(EnvironmentBuildError, match="invalid Python version"):
        python_minor(bad)


def test_runtime_requirements_come_from_skyforms_own_metadata() -> None:
    runtime = runtime_requirements()
    names = [r.split(">")[0].split("=")[0] for r in runtime]
    assert names == [
        *["pydantic", "cloudpickle", "fastapi", "uvicorn", "httpx", "pyyaml"],
        "python-multipart",  # form and file endpoints
        "websockets",  # websocket endpoints
        "psutil",  # the runner stops its own process group's members on exit
        *["uvloop", "httptools"],  # the fast event loop and parser, where they build
    ]
    assert all(";" in r for r in runtime[-2:]), "platform markers keep them optional"
    versions = [r.split(";")[0] for r in runtime]
    assert all("<" not in v and "==" not in v for v in versions), "no upper pins on the app"
    # CLI-side dependencies never go into an app's environment
    assert not {"typer", "rich", "deepdiff", "psycopg", "uv"} & set(names)


def test_skyform_install_is_the_editable_checkout() -> None:
    install = skyform_install()
    repo = Path(__file__).resolve().parents[2]
    assert install.editable_path is not None and install.editable_path.resolve() == repo
    assert install.version_id.startswith(install.version + "+editable.")


# --- the user's package index configuration -> uv ----------------------------------


def _isolated(tmp_path: Path, conf: str | None, **env: str) -> dict[str, str]:
    base = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "etc-xdg")}
    if conf is not None:
        path = tmp_path / "pip.conf"
        path.write_text(conf)
        base["PIP_CONFIG_FILE"] = str(path)
    return {**base, **env}


def test_pip_config_file_becomes_uv_arguments(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    environ = _isolated(
        tmp_path,
        "[global]\n"
        "index-url = https://mirror.example/simple\n"
        "extra-index-url = file:///srv/a/simple\n    file:///srv/b/simple\n"
        f"find-links = {tmp_path / 'wheels'}\n"
        "constraint = /etc/constraints.txt\n"
        "trusted-host = mirror.example\n"
        "cert = /etc/ca.pem\n"
        "timeout = 60\n"
        "[install]\n"
        "extra-index-url = file:///srv/c/simple\n",
    )
    config = uv_install_config(environ)
    args = config.args
    assert args[args.index("--index-url") + 1] == "https://mirror.example/simple"
    # [install] overrides [global], as in pip
    assert [args[i + 1] for i, a in enumerate(args) if a == "--extra-index-url"] == [
        "file:///srv/c/simple"
    ]
    assert args[args.index("--find-links") + 1] == str(tmp_path / "wheels")
    assert args[args.index("--constraint") + 1] == "/etc/constraints.txt"
    assert args[args.index("--allow-insecure-host") + 1] == "mirror.example"
    assert args[args.index("--index-strategy") + 1] == "unsafe-best-match"
    assert config.env == {"SSL_CERT_FILE": "/etc/ca.pem", "UV_HTTP_TIMEOUT": "60"}


def test_pip_variables_override_files(tmp_path: Path) -> None:
    environ = _isolated(
        tmp_path,
        "[global]\nfind-links = /from/file\n",
        PIP_FIND_LINKS="/from/env1 /from/env2",
        PIP_NO_INDEX="yes",
        PIP_CONSTRAINT="/c.txt",
        PIP_EXTRA_INDEX_URL="file:///x/simple",
    )
    args = uv_install_config(environ).args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--find-links"] == [
        "/from/env1",
        "/from/env2",
    ]
    assert "--no-index" in args
    assert args[args.index("--constraint") + 1] == "/c.txt"
    assert args[args.index("--extra-index-url") + 1] == "file:///x/simple"


def test_uv_variables_win_over_pip_settings(tmp_path: Path) -> None:
    environ = _isolated(
        tmp_path,
        "[global]\nindex-url = https://pip.example/simple\nfind-links = /w\nconstraint = /c\n",
        UV_INDEX_URL="https://uv.example/simple",
        UV_FIND_LINKS="/uvw",
        UV_CONSTRAINT="/uvc",
        UV_INDEX_STRATEGY="first-index",
    )
    args = uv_install_config(environ).args
    assert args == [], "uv reads its own variables; pip's corresponding settings are not passed"


def test_pip_config_file_devnull_disables_every_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nfind-links = /user\n")
    base = {"HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    assert pip_settings(base).get("find-links") == "/user"  # the user's file is read
    assert "find-links" not in pip_settings({**base, "PIP_CONFIG_FILE": os.devnull})


def test_relative_find_links_are_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = uv_install_config(_isolated(tmp_path, None, PIP_FIND_LINKS="wheels")).args
    assert args[args.index("--find-links") + 1] == str(tmp_path / "wheels")


# --- the remote recipe ---------------------------------------------------------------


def test_remote_script_carries_the_same_key_and_inputs() -> None:
    key = environment_key(["six"], "3.11", "0.1.0+abc")
    script = remote_setup_script(
        [" six"], "3.11.2", "skyform @ file://$HOME/w/skyform.whl", "0.1.0+abc"
    )
    assert key in script
    assert "--python 3.11 " in script
    assert '--no-deps "skyform @ file://$HOME/w/skyform.whl"' in script
    for req in [*runtime_requirements(), "six"]:
        assert f"\n{req}\n" in script
    gateway = remote_setup_script([], "3.11", "skyform[skypilot]==0.1.0", "0.1.0", kind="gateway")
    assert environment_key([], "3.11", "0.1.0", kind="gateway") in gateway
    assert "--no-deps" not in gateway
