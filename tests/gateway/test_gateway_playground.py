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
from gateway_helpers import API_KEY, GatewayProc

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
        form = page.locator('form[data-endpoint="POST /"]')
        form.locator('input[name="text"]').fill("hi")
        form.locator('input[name="times"]').fill("3")
        # Private app, no key yet: the page shows the 401.
        form.locator("button").click()
        form.locator(".result.error").wait_for(timeout=30_000)
        assert "401" in form.locator(".result").inner_text()
        page.locator("#api-key").fill(API_KEY)
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
    from gateway_helpers import APPS, BUNDLE_KEY

    from skyform.bundle import build_bundle

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
