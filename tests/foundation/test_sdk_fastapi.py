"""Endpoints take FastAPI signatures; what FastAPI cannot build is one line, file and line."""

from __future__ import annotations

from pathlib import Path

from support.projects import run_cli, write_project

from skyform.app import app_endpoints
from skyform.loader import loaded_app
from skyform.openapi import openapi_schema

NATIVE = """
from collections.abc import Iterator
from typing import Annotated

from fastapi import File, Form, Query, Request, UploadFile, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from skyform import App, endpoint


class In(BaseModel):
    text: str


class Native(App):
    @endpoint("/two/{item_id}")
    def two(self, item_id: int, a: In, b: In, q: Annotated[str, Query()] = "") -> dict:
        return {}

    @endpoint("/upload")
    async def upload(self, f: Annotated[UploadFile, File()], note: Annotated[str, Form()]) -> dict:
        return {}

    @endpoint("/raw")
    async def raw(self, request: Request) -> StreamingResponse:
        return StreamingResponse(iter([b"x"]))

    @endpoint("/text", method="GET")
    def text(self) -> PlainTextResponse:
        return PlainTextResponse("x")

    @endpoint("/gen")
    def gen(self, req: In) -> Iterator[dict]:
        yield {"t": req.text}

    @endpoint("/ws", websocket=True)
    async def ws(self, ws: WebSocket) -> None:
        await ws.accept()
"""

BROKEN = """
from skyform import App, endpoint


class Thing:
    pass


class Broken(App):
    @endpoint("/")
    def f(self) -> Thing:
        return Thing()
"""


def test_fastapi_signatures_build_and_the_schema_describes_them(tmp_path: Path) -> None:
    write_project(tmp_path, {"native.py": NATIVE})
    with loaded_app("native.py::Native", tmp_path) as loaded:
        kinds = {e.path: e.kind for e in app_endpoints(loaded.cls)}
        schema = openapi_schema(loaded.cls)
    assert kinds == {
        "/gen": "stream",
        "/raw": "call",
        "/text": "call",
        "/two/{item_id}": "call",
        "/upload": "call",
        "/ws": "websocket",
    }
    paths = schema["paths"]
    two = paths["/two/{item_id}"]["post"]
    assert {p["name"]: p["in"] for p in two["parameters"]} == {"item_id": "path", "q": "query"}
    body_ref = two["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"a", "b"}  # two bodies: embedded by name, as FastAPI does
    upload = paths["/upload"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    assert "text/event-stream" in paths["/gen"]["post"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/text"]["get"]["responses"]["200"]["content"]
    assert "/ws" not in paths


def test_bundle_of_a_streaming_response_annotation_works(tmp_path: Path) -> None:
    write_project(tmp_path, {"native.py": NATIVE})
    result = run_cli(["bundle", "native.py::Native", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr


def test_what_fastapi_cannot_build_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    write_project(tmp_path, {"broken.py": BROKEN})
    result = run_cli(["bundle", "broken.py::Broken"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "broken.py:10: Broken.f: FastAPI cannot build this endpoint" in lines[0]
    assert "Invalid args for response field" in lines[0]
    assert not any(p.suffix == ".skyb" for p in tmp_path.iterdir())
