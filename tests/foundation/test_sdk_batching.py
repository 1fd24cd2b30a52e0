"""`@endpoint(batch_size=..., batch_wait_ms=...)`: what the SDK accepts and refuses, at class time."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from skyform import App, endpoint
from skyform.app import app_endpoints, app_options
from skyform.errors import AppDefinitionError


class In(BaseModel):
    x: int


class Out(BaseModel):
    y: int


def test_a_batched_endpoint_is_described_by_one_item() -> None:
    class Good(App):
        max_multiplexing = 16

        @endpoint("/", batch_size=16, batch_wait_ms=5)
        def run(self, reqs: list[In]) -> list[Out]:
            return [Out(y=r.x) for r in reqs]

    (ep,) = app_endpoints(Good)
    assert ep.batched and (ep.spec.batch_size, ep.spec.batch_wait_ms) == (16, 5.0)
    assert ep.input_model is In and ep.output_type is Out


def test_batch_wait_defaults_to_ten_ms_and_plain_endpoints_are_not_batched() -> None:
    class Default(App):
        max_multiplexing = 4

        @endpoint("/b", batch_size=4)
        def b(self, reqs: list[In]) -> list[Out]:
            return []

        @endpoint("/p")
        def p(self, req: In) -> Out:
            return Out(y=req.x)

    batched, plain = app_endpoints(Default)
    assert batched.spec.batch_wait_ms == 10.0 and not plain.batched


def test_batch_size_above_max_multiplexing_is_refused_with_the_fix() -> None:
    with pytest.raises(
        AppDefinitionError,
        match=r"Small\.run: batch_size \(8\) is greater than max_multiplexing \(1\).*at least 8",
    ):

        class Small(App):
            @endpoint("/", batch_size=8)
            def run(self, reqs: list[In]) -> list[Out]:
                return []


def test_a_stack_override_of_max_multiplexing_is_checked_too() -> None:
    class Fits(App):
        max_multiplexing = 8

        @endpoint("/", batch_size=8)
        def run(self, reqs: list[In]) -> list[Out]:
            return []

    assert app_options(Fits, {"max_multiplexing": 8}).max_multiplexing == 8
    with pytest.raises(AppDefinitionError, match=r"batch_size \(8\) is greater than"):
        app_options(Fits, {"max_multiplexing": 2})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, r"batch_size must be a whole number >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be a whole number >= 1, got 2.5"),
        ({"batch_size": True}, r"batch_size must be a whole number >= 1, got True"),
        ({"batch_size": 4, "batch_wait_ms": -1}, r"batch_wait_ms must be a number .* got -1"),
        ({"batch_size": 4, "batch_wait_ms": "5"}, r"batch_wait_ms must be a number .* got '5'"),
        ({"batch_wait_ms": 5}, r"batch_wait_ms needs batch_size"),
        ({"batch_size": 4, "method": "GET"}, r"batched endpoint takes a body: .* POST"),
    ],
)
def test_bad_batching_arguments_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(AppDefinitionError, match=message):
        endpoint("/", **kwargs)


def test_a_batched_handler_must_take_and_return_lists_of_models() -> None:
    with pytest.raises(AppDefinitionError, match=r"must be annotated list\[Model\]"):

        class One(App):
            max_multiplexing = 4

            @endpoint("/", batch_size=4)
            def run(self, req: In) -> list[Out]:
                return []

    with pytest.raises(AppDefinitionError, match=r"returns a list \(one result per input\)"):

        class Scalar(App):
            max_multiplexing = 4

            @endpoint("/", batch_size=4)
            def run(self, reqs: list[In]) -> Out:
                return Out(y=0)

    with pytest.raises(AppDefinitionError, match=r"takes one argument, a list"):

        class NoArg(App):
            max_multiplexing = 4

            @endpoint("/", batch_size=4)
            def run(self) -> list[Out]:
                return []
