"""FastAPI routes for an App's endpoints, and the OpenAPI schema they produce.

One function builds the routes so the schema stored in a bundle (used by the
gateway's playground while no runner is up) is exactly the one the runner
serves. FastAPI is imported lazily: `import skyform` stays light.
"""

from __future__ import annotations

import collections.abc as abc
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, get_origin

from skyform.app import App, Endpoint, app_endpoints
from skyform.errors import AppDefinitionError

if TYPE_CHECKING:
    from fastapi import FastAPI

# Called with (endpoint, the route's arguments by name); returns the endpoint's result.
Invoke = Callable[[Endpoint, dict[str, Any]], Awaitable[Any]]

_STREAM_ORIGINS = (
    abc.Iterator,
    abc.Iterable,
    abc.Generator,
    abc.AsyncIterator,
    abc.AsyncIterable,
    abc.AsyncGenerator,
)
STREAM_DESCRIPTION = (
    "A stream of server-sent events (text/event-stream): each `data:` line is one value "
    "the endpoint yielded, as JSON; a failure after the first event ends the stream with "
    "an `event: error` whose data is {detail, error_type}."
)


def add_endpoint_routes(
    api: FastAPI, endpoints: list[Endpoint], invoke: Invoke, owner: str = "App"
) -> None:
    """Mount one route per endpoint on `api`; each validates its input, then calls `invoke`.

    What FastAPI refuses to build (an argument type it cannot read, a return
    type that is no valid response model) becomes one `AppDefinitionError`
    line naming the endpoint, its file and line.
    """
    for ep in endpoints:
        try:
            if ep.kind == "websocket":
                api.add_api_websocket_route(ep.path, _handler(ep, invoke), name=ep.name)
                continue
            extra: dict[str, Any] = {}
            if ep.kind == "stream":
                extra["responses"] = {
                    200: {
                        "description": STREAM_DESCRIPTION,
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                }
                extra["openapi_extra"] = {"x-skyform-stream": True}
            elif _is_response_class(ep.output_type):
                extra["response_class"] = ep.output_type
            api.add_api_route(
                ep.path,
                _handler(ep, invoke),
                methods=[ep.spec.method],
                name=ep.name,
                response_model=None if ep.kind == "stream" else _response_model(ep.output_type),
                summary=ep.name,
                description=inspect.getdoc(ep.func) or None,
                **extra,
            )
        except AppDefinitionError:
            raise
        except Exception as exc:
            raise AppDefinitionError(
                f"{ep.where}{owner}.{ep.name}: FastAPI cannot build this endpoint: "
                f"{_first_line(exc)}"
            ) from None


def endpoint_api(
    cls: type[App], invoke: Invoke, endpoints: list[Endpoint] | None = None
) -> FastAPI:
    """The FastAPI app of an App's endpoints; the runner serves it, bundles store its schema.

    Both go through here so the schema a bundle carries is the one its runner serves.
    No /docs pages: the gateway's playground is the human interface.
    """
    from fastapi import FastAPI

    api = FastAPI(
        title=cls.__name__, version="1", openapi_url="/openapi.json", docs_url=None, redoc_url=None
    )
    add_endpoint_routes(
        api, app_endpoints(cls) if endpoints is None else endpoints, invoke, cls.__qualname__
    )
    return api


def openapi_schema(cls: type[App], title: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of an App's endpoints, as its runner will serve it."""

    async def never(_ep: Endpoint, _args: dict[str, Any]) -> Any:
        raise RuntimeError("schema-only app")

    api = endpoint_api(cls, never)
    if title is not None:
        api.title = title
    try:
        return api.openapi()
    except Exception as exc:
        raise AppDefinitionError(
            f"{cls.__qualname__}: FastAPI cannot describe its endpoints: {_first_line(exc)}"
        ) from None


def _handler(ep: Endpoint, invoke: Invoke) -> Callable[..., Awaitable[Any]]:
    """A route function with the endpoint's own parameters (minus self), calling `invoke`.

    FastAPI reads the signature to know what each argument is (body, query,
    path, file, form, request, websocket) and to build the schema.
    """

    async def route(**kwargs: Any) -> Any:
        return await invoke(ep, kwargs)

    route.__signature__ = inspect.Signature(list(ep.parameters))  # type: ignore[attr-defined]
    route.__name__ = ep.name
    return route


def _is_response_class(output: Any) -> bool:
    from starlette.responses import Response

    return isinstance(output, type) and issubclass(output, Response)


def _response_model(output: Any) -> Any:
    if output is inspect.Signature.empty or output is Any or output is None:
        return None
    if _is_response_class(output) or get_origin(output) in _STREAM_ORIGINS:
        return None
    return output


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
