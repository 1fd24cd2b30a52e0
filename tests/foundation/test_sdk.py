"""The App SDK: options, machine types, endpoints, and what `import skyform` costs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from support.projects import run_python

from skyform import MACHINE_TYPES, App, endpoint
from skyform.app import AppOptions, app_endpoints, app_options
from skyform.errors import AppDefinitionError
from skyform.machines import get_machine_type


class In(BaseModel):
    x: int


def test_import_skyform_is_light(tmp_path: Path) -> None:
    result = run_python(
        """
        import json, sys
        import skyform
        assert skyform.App and skyform.endpoint
        heavy = ["rich", "deepdiff", "typer", "sky", "fastapi", "uvicorn", "torch", "httpx"]
        print(json.dumps([m for m in heavy if m in sys.modules]))
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_machine_type_catalog_has_cpu_h100_b200() -> None:
    assert {"CPU", "GPU-H100", "GPU-B200"} <= set(MACHINE_TYPES)
    assert get_machine_type("CPU").accelerator is None
    assert get_machine_type("GPU-H100").accelerator == "H100"
    assert get_machine_type("GPU-B200").accelerator_count == 1


def test_unknown_machine_type_suggests_nearest() -> None:
    with pytest.raises(
        AppDefinitionError, match=r'unknown machine type "GPU-H10".*did you mean "GPU-H100"'
    ):

        class Bad(App):
            machine_type = "GPU-H10"

            @endpoint("/")
            def f(self) -> int:
                return 1


def test_machine_type_fallback_list_checks_each_name() -> None:
    class Good(App):
        machine_type = ["GPU-H100", "GPU-B200"]

        @endpoint("/")
        def f(self) -> int:
            return 1

    assert app_options(Good).machine_types == ["GPU-H100", "GPU-B200"]
    with pytest.raises(AppDefinitionError, match='did you mean "GPU-B200"'):

        class Bad(App):
            machine_type = ["GPU-H100", "GPU-B20"]

            @endpoint("/")
            def f(self) -> int:
                return 1


def test_misspelt_option_suggests_nearest() -> None:
    with pytest.raises(AppDefinitionError, match=r'unknown option "max_runner".*"max_runners"'):

        class Bad(App):
            max_runner = 3

            @endpoint("/")
            def f(self) -> int:
                return 1


def test_user_attributes_far_from_options_are_allowed() -> None:
    class Fine(App):
        model_name = "all-MiniLM-L6-v2"

        @endpoint("/")
        def f(self) -> str:
            return self.model_name

    assert Fine.model_name == "all-MiniLM-L6-v2"


def test_option_values_are_validated() -> None:
    with pytest.raises(AppDefinitionError, match=r"min_runners .* greater than max_runners"):

        class Bad(App):
            min_runners = 3
            max_runners = 1

            @endpoint("/")
            def f(self) -> int:
                return 1

    with pytest.raises(AppDefinitionError, match="keep_alive"):

        class Negative(App):
            keep_alive = -1

            @endpoint("/")
            def f(self) -> int:
                return 1


def test_overriding_init_is_refused() -> None:
    with pytest.raises(AppDefinitionError, match=r"overrides __init__.*setup"):

        class Bad(App):
            def __init__(self) -> None:
                pass


def test_endpoint_paths_must_be_unique() -> None:
    with pytest.raises(AppDefinitionError, match="both serve POST /predict"):

        class Bad(App):
            @endpoint("/predict")
            def a(self) -> int:
                return 1

            @endpoint("/predict/")
            def b(self) -> int:
                return 2


def test_app_without_endpoint_is_refused_when_resolved() -> None:
    class Empty(App):
        def setup(self) -> None:
            pass

    with pytest.raises(AppDefinitionError, match="has no endpoint"):
        app_endpoints(Empty)


def test_endpoint_signature_rules() -> None:
    # Signatures are FastAPI's (tests/foundation/test_sdk_fastapi.py); what skyform
    # itself refuses names the file and line.
    with pytest.raises(AppDefinitionError, match=r"test_sdk\.py:\d+: .*first parameter is self"):

        class NoSelf(App):
            @endpoint("/")
            def f(a: In) -> int:  # type: ignore[misc]
                return 1

    with pytest.raises(AppDefinitionError, match="a websocket endpoint is `async def"):

        class SyncSocket(App):
            @endpoint("/ws", websocket=True)
            def ws(self, ws: object) -> None:
                pass

    with pytest.raises(AppDefinitionError, match='starting with "/"'):
        endpoint("predict")


def test_endpoints_sync_async_and_inputs_resolved() -> None:
    class Both(App):
        @endpoint("/sync")
        def sync(self, req: In) -> dict:
            return {"x": req.x}

        @endpoint("/async")
        async def asynchronous(self) -> int:
            return 1

    eps = {e.path: e for e in app_endpoints(Both)}
    assert eps["/sync"].input_model is In and not eps["/sync"].is_async
    assert eps["/async"].input_model is None and eps["/async"].is_async


def test_stack_overrides_win_and_are_validated() -> None:
    class Base(App):
        max_runners = 4

        @endpoint("/")
        def f(self) -> int:
            return 1

    assert app_options(Base, {"max_runners": 7}).max_runners == 7
    with pytest.raises(AppDefinitionError, match="max_runner"):
        app_options(Base, {"max_runner": 7})
    assert set(AppOptions.model_fields) >= {"machine_type", "keep_alive", "request_timeout"}


def test_skyform_has_no_generic_top_level_modules() -> None:
    import skyform.providers
    import skyform.runtime
    import skyform.state

    for mod in (skyform.state, skyform.providers, skyform.runtime):
        assert mod.__name__.startswith("skyform.")
    assert "state" not in sys.modules or not hasattr(sys.modules["state"], "open_backend")
