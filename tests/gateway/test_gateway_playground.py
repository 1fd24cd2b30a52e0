"""The playground page, driven in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway import API_KEY, APPS, BUNDLE_KEY, GatewayProc

from skyform.bundle import build_bundle, read_bundle_meta

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None and os.geteuid() == 0:
        script = Path(__file__).resolve().parents[2] / "scripts" / "system-deps.sh"
        subprocess.run(["bash", str(script)], check=True)
        executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/system-deps.sh as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_playground_calls_the_app_from_zero_runners(gateway: GatewayProc, bundles, browser) -> None:
    gateway.register("echo", bundles["echo"], auth="private")
    assert gateway.app("echo")["runners"] == []
    page = browser.new_page()
    try:
        page.goto(f"{gateway.url}/echo/playground")
        assert "echo" in page.title()
        # Private app, no key yet: the page asks for it and shows nothing of the app.
        page.wait_for_function("document.getElementById('endpoints').dataset.state === 'needs-key'")
        assert page.locator("form.endpoint").count() == 0
        assert "Repeat the text" not in page.content()
        page.locator("#api-key").fill("not-the-key")
        page.wait_for_function("document.getElementById('endpoints').innerText.includes('401')")
        assert page.locator("form.endpoint").count() == 0
        # With the key, the page fetches the schema and builds the forms.
        page.locator("#api-key").fill(API_KEY)
        form = page.locator('form[data-endpoint="POST /"]')
        form.wait_for(timeout=30_000)
        assert "Repeat the text" in form.inner_text()
        form.locator('input[name="text"]').fill("hi")
        form.locator('input[name="times"]').fill("3")
        form.locator("button").click()
        page.wait_for_function(
            "document.querySelector('form[data-endpoint=\"POST /\"]').dataset.state !== 'running'",
            timeout=60_000,
        )
        assert form.get_attribute("data-state") == "done", form.locator(".result").inner_text()
        assert '"echo": "hihihi"' in form.locator(".result").inner_text()
        assert "COMPLETED" in form.locator(".status").inner_text()
        # An endpoint error is shown as such.
        status_form = page.locator('form[data-endpoint="POST /status"]')
        status_form.locator('input[name="key"]').fill("pg")
        status_form.locator('input[name="code"]').fill("400")
        status_form.locator('input[name="fail_times"]').fill("5")
        status_form.locator("button").click()
        page.wait_for_function(
            "['done', 'error'].includes(document.querySelector("
            "'form[data-endpoint=\"POST /status\"]').dataset.state)",
            timeout=60_000,
        )
        assert status_form.get_attribute("data-state") == "error"
        assert "planned 400" in status_form.locator(".result").inner_text()
        # GET endpoints get a form too.
        assert page.locator('form[data-endpoint="GET /version"]').count() == 1
    finally:
        page.close()


def test_playground_uploads_files_and_shows_a_stream_as_it_arrives(
    gateway: GatewayProc, browser
) -> None:
    bundle = build_bundle(str(APPS / "gw_stream.py") + "::Streamer", APPS, BUNDLE_KEY)
    gateway.register("stream", bundle, auth="public")
    page = browser.new_page()
    try:
        page.goto(f"{gateway.url}/stream/playground")
        upload = page.locator('form[data-endpoint="POST /upload"]')
        upload.locator('input[type="file"]').set_input_files(
            files=[{"name": "a.txt", "mimeType": "text/plain", "buffer": b"hello"}]
        )
        upload.locator('input[name="note"]').fill("from the page")
        upload.locator("button").click()
        page.wait_for_function(
            "['done', 'error'].includes(document.querySelector("
            "'form[data-endpoint=\"POST /upload\"]').dataset.state)",
            timeout=60_000,
        )
        assert upload.get_attribute("data-state") == "done", upload.locator(".result").inner_text()
        shown = upload.locator(".result").inner_text()
        assert '"size": 5' in shown and '"note": "from the page"' in shown

        tokens = page.locator('form[data-endpoint="POST /tokens"]')
        assert tokens.get_attribute("data-stream") == "1"
        tokens.locator('input[name="key"]').fill("page")
        tokens.locator('input[name="n"]').fill("3")
        tokens.locator('input[name="gate"]').check()
        tokens.locator("button").click()
        # The first event is on the page while the handler waits for go1.
        page.wait_for_function(
            "document.querySelector('form[data-endpoint=\"POST /tokens\"]').dataset.events === '1'",
            timeout=60_000,
        )
        assert not (gateway.count_dir / "page.go1").exists()
        assert tokens.get_attribute("data-state") == "streaming"
        assert '"token": "t0"' in tokens.locator(".result").inner_text()
        for i in (1, 2):
            (gateway.count_dir / f"page.go{i}").write_text("")
        page.wait_for_function(
            "document.querySelector('form[data-endpoint=\"POST /tokens\"]').dataset.state === 'done'",
            timeout=60_000,
        )
        lines = tokens.locator(".result").inner_text().strip().splitlines()
        assert [json.loads(line)["i"] for line in lines] == [0, 1, 2]
    finally:
        page.close()


def test_private_playground_page_holds_no_schema(gateway: GatewayProc, bundles) -> None:
    gateway.register("echo", bundles["echo"], auth="private")
    page = gateway.http.get("/echo/playground")
    assert page.status_code == 200
    assert "Repeat the text" not in page.text and "/status" not in page.text
    assert gateway.http.get("/echo/openapi.json").status_code == 401
    keyed = gateway.http.get("/echo/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"})
    assert keyed.status_code == 200 and "/status" in keyed.json()["paths"]


def test_hostile_docstrings_render_as_text(gateway: GatewayProc, browser) -> None:
    hostile = build_bundle(str(APPS / "gw_abuse.py") + "::Hostile", APPS, BUNDLE_KEY)
    meta = read_bundle_meta(hostile.data, BUNDLE_KEY, check_python=False)
    doc = meta["openapi"]["paths"]["/"]["post"]["description"]
    assert "</script>" in doc and "<!--<script>" in doc and "{{script}}" in doc
    gateway.register("hostile", hostile, auth="public")
    gateway.register("hostile-private", hostile, auth="private")
    raw = gateway.http.get("/hostile/playground").text
    # The schema is embedded as data: nothing in it can end the script or open a comment.
    config = raw.split('<script id="skyform-config" type="application/json">', 1)[1]
    config = config.split("</script>", 1)[0]
    assert "<" not in config and ">" not in config and "&" not in config
    assert "\\u003c/script\\u003e" in config
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        for name, key in (("hostile", None), ("hostile-private", API_KEY)):
            page.goto(f"{gateway.url}/{name}/playground")
            if key:
                page.locator("#api-key").fill(key)
            form = page.locator('form[data-endpoint="POST /"]')
            form.wait_for(timeout=30_000)
            # The docstring is shown whole, as text; none of it ran or became markup.
            assert form.locator("p.muted").evaluate("e => e.textContent") == doc
            assert page.evaluate("window.pwned") is None
            assert page.locator("b").count() == 0
            assert page.locator("form.endpoint").count() == 1
            assert page.locator("h1").inner_text() == name
        assert not errors, errors
    finally:
        page.close()
