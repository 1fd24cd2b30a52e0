"""Loading `file.py::Class`: the precise errors a user sees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.projects import write_project

from skyform.errors import AppDefinitionError, AppLoadError
from skyform.loader import load_app_class, loaded_app, parse_ref


def test_loads_class_relative_to_base_dir(hello_project: Path) -> None:
    cls = load_app_class("app.py::Hello", hello_project)
    assert cls.__name__ == "Hello"
    assert cls.max_runners == 2


def test_project_modules_are_reported_and_dropped_afterwards(hello_project: Path) -> None:
    with loaded_app("app.py::Hello", hello_project) as loaded:
        assert set(loaded.project_modules) == {"app", "greeting"}
        assert "greeting" in sys.modules
    assert "greeting" not in sys.modules
    assert str(hello_project) not in sys.path


def test_two_projects_with_same_helper_name_do_not_mix(tmp_path: Path) -> None:
    for label in ("one", "two"):
        write_project(
            tmp_path / label,
            {
                "app.py": """
                from skyform import App, endpoint
                import helper
                class A(App):
                    @endpoint("/")
                    def f(self) -> str:
                        return helper.LABEL
                """,
                "helper.py": f"LABEL = {label!r}\n",
            },
        )
    labels = []
    for label in ("one", "two"):
        with loaded_app("app.py::A", tmp_path / label) as loaded:
            labels.append(loaded.module.helper.LABEL)
    assert labels == ["one", "two"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("app.py", "expected FILE.py::Class"),
        ("app.txt::Hello", "must be a .py file"),
        ("missing.py::Hello", "missing.py: no such file"),
        ("app.py::Helo", 'no class named Helo \\(did you mean "Hello"\\?\\)'),
        ("app.py::HelloIn", "is not an App subclass"),
    ],
)
def test_reference_errors(hello_project: Path, ref: str, message: str) -> None:
    with pytest.raises(AppLoadError, match=message):
        load_app_class(ref, hello_project)


def test_exception_while_importing_points_at_the_users_line(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {
            "broken.py": """
            from skyform import App, endpoint
            import util
            """,
            "util.py": """
            X = 1
            Y = X / 0
            """,
        },
    )
    with pytest.raises(AppLoadError) as info:
        load_app_class("broken.py::Anything", tmp_path)
    message = str(info.value)
    assert "util.py:3" in message
    assert "ZeroDivisionError" in message
    assert "declare" not in message and "loader.py" not in message


def test_syntax_error_points_at_the_users_line(tmp_path: Path) -> None:
    write_project(tmp_path, {"bad.py": "from skyform import App\n\ndef f(:\n    pass\n"})
    with pytest.raises(AppLoadError, match=r"bad.py:3: SyntaxError"):
        load_app_class("bad.py::X", tmp_path)


def test_app_definition_error_carries_location(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {
            "opts.py": """
            from skyform import App, endpoint

            class A(App):
                keep_alve = 10

                @endpoint("/")
                def f(self) -> int:
                    return 1
            """
        },
    )
    with pytest.raises(
        AppDefinitionError, match=r'opts.py:4: A: unknown option "keep_alve".*"keep_alive"'
    ):
        load_app_class("opts.py::A", tmp_path)


def test_parse_ref_splits_on_last_separator() -> None:
    assert parse_ref("apps/x.py::Cls") == ("apps/x.py", "Cls")
