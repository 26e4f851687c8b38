"""The QA story in a real headless browser: Debian's Chromium, driven by Playwright (no
browser download), against the console served by uvicorn on a free local port."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from agent.console.app import create_app, open_console
from agent.settings import Settings
from test_console_calls import record_review_calls

CHROMIUM = Path("/usr/bin/chromium")
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "console-call-page.png"
ARGS = [
    "--no-sandbox",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (deploy/system-packages.txt)")


@pytest.fixture
def served(tmp_path: Path):
    import uvicorn

    recorded = record_review_calls(tmp_path)
    con = open_console(Settings(data_dir=tmp_path))
    con.store.set_user("ada", "admin password 1", "admin")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(con), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", recorded, con
    server.should_exit = True
    thread.join(5)
    sock.close()


def test_an_admin_listens_to_a_turn_corrects_its_intent_and_finds_it_in_the_nlu_export(served, tmp_path):
    from playwright.sync_api import sync_playwright

    base, recorded, con = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
            page.set_default_timeout(15000)
            # Not logged in: the calls page sends us to the login form.
            page.goto(f"{base}/calls")
            assert "/login" in page.url
            page.fill("input[name=username]", "ada")
            page.fill("input[name=password]", "admin password 1")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/calls")
            assert page.locator(f"a[href='/calls/{recorded.demo_call}']").count() == 1

            # The demo's call: every turn of the script is on its page.
            page.click(f"a[href='/calls/{recorded.demo_call}']")
            page.wait_for_selector("li.turn")
            assert "那这个的年费是多少" in page.inner_text("ol.timeline")

            # The audio call: play turn 1's caller audio, then the bot's reply.
            page.goto(f"{base}/calls")
            page.click(f"a[href='/calls/{recorded.audio_call}']")
            page.click("button.play[data-label='turn 1 · caller']")
            page.wait_for_function("() => { const a = document.getElementById('player'); return a.duration > 0 && a.currentTime > 0; }")
            duration = page.evaluate("document.getElementById('player').duration")
            assert 3.0 < duration < 4.0  # the 3.4 s clip, decoded by the browser
            page.click("button.play[data-label='turn 1 · bot']")
            page.wait_for_function("() => document.getElementById('player').src.endsWith('/bot.wav') && document.getElementById('player').duration > 1")
            page.screenshot(path=str(tmp_path / "call-page.png"), full_page=True)
            if not DOCS_SHOT.exists():  # the README's picture; delete it to refresh it
                DOCS_SHOT.parent.mkdir(exist_ok=True)
                shutil.copy(tmp_path / "call-page.png", DOCS_SHOT)

            # Correct turn 1's intent (and the transcript the ASR got slightly wrong).
            turn1 = page.locator("#turn-1")
            turn1.locator("summary", has_text="label this turn").click()
            turn1.locator("input[name=transcript]").fill(recorded.clip_texts[0])
            turn1.locator("input[name=intents]").fill("ask_detail")
            turn1.locator("button", has_text="Save label").click()
            page.wait_for_selector("#turn-1 .label-intents")
            assert page.inner_text("#turn-1 .label-intents") == "ask_detail"

            # Export NLU labels from the labels page and find the correction.
            page.click("nav >> text=Labels")
            with page.expect_download() as dl:
                page.click("#export-nlu")
            exported = tmp_path / "nlu.jsonl"
            dl.value.save_as(exported)
        finally:
            browser.close()
    lines = [json.loads(l) for l in exported.read_text(encoding="utf-8").splitlines()]
    assert {"text": recorded.clip_texts[0], "intents": ["ask_detail"], "entities": [], "context": []} in lines
    actions = [(a.username, a.action, a.call_id) for a in con.store.audit_log()]
    assert ("ada", "open_call", recorded.audio_call) in actions and ("ada", "play", recorded.audio_call) in actions
    assert (tmp_path / "call-page.png").stat().st_size > 20_000
