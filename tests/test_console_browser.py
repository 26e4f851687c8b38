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
    con = open_console(Settings(data_dir=tmp_path, nlu_model="rules"))  # as the calls were recorded
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
            blocked = _watch_csp(page)
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
            # intents are picked from the taxonomy's multi-select, not typed
            turn1.locator("select.intents-pick").select_option(["feature_inquiry", "callback_request"])
            turn1.locator("button", has_text="Save label").click()
            page.wait_for_selector("#turn-1 .label-intents")
            assert page.inner_text("#turn-1 .label-intents") == "feature_inquiry, callback_request"

            # Export NLU labels from the labels page and find the correction.
            page.click("nav >> text=Labels")
            with page.expect_download() as dl:
                page.click("#export-nlu")
            exported = tmp_path / "nlu.jsonl"
            dl.value.save_as(exported)
        finally:
            browser.close()
    lines = [json.loads(l) for l in exported.read_text(encoding="utf-8").splitlines()]
    assert any(l["text"] == recorded.clip_texts[0] and l["intents"] == ["feature_inquiry", "callback_request"] for l in lines)
    assert blocked == []  # the Content-Security-Policy broke nothing on the way
    actions = [(a.username, a.action, a.call_id) for a in con.store.audit_log()]
    assert ("ada", "open_call", recorded.audio_call) in actions and ("ada", "play", recorded.audio_call) in actions
    assert (tmp_path / "call-page.png").stat().st_size > 20_000


def _watch_csp(page) -> list[str]:
    """Collect every Content-Security-Policy violation the page reports (none expected)."""
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    return blocked


def _login(page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "admin password 1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/calls")


def test_a_reviewer_walks_the_queue_with_the_keyboard_sees_the_waveform_and_a_highlighted_diff(served, tmp_path):
    from playwright.sync_api import sync_playwright

    base, recorded, con = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(15000)
            blocked = _watch_csp(page)
            _login(page, base)

            # The queue: the first item is current; j moves down, k back up.
            page.click("nav >> text=Review queue")
            page.wait_for_selector("li.qitem.current")
            items = page.locator("li.qitem")
            total = items.count()
            assert total >= 7  # 5 demo turns + 2 audio turns, none reviewed yet
            assert page.get_attribute("li.qitem.current", "id") == "q-0"
            page.keyboard.press("j")
            page.keyboard.press("j")
            page.keyboard.press("k")
            assert page.get_attribute("li.qitem.current", "id") == "q-1"
            target = page.inner_text("li.qitem.current .qhead a")  # "CALL · turn N"
            call_id, turn = target.split(" · turn ")
            # 3 toggles the third intent (price_inquiry), 9 the ninth (demo_request); s saves.
            page.keyboard.press("3")
            page.keyboard.press("9")
            picked = page.eval_on_selector_all("li.qitem.current select.intents-pick option:checked", "os => os.map(o => o.value)")
            assert "price_inquiry" in picked and "demo_request" in picked
            page.keyboard.press("s")
            page.wait_for_load_state("load")
            page.wait_for_selector("li.qitem.current")
            assert page.locator("li.qitem").count() == total - 1  # the saved turn left the queue
            label = con.labels.latest_for_call(call_id)[int(turn)]
            assert set(label.intents) == set(picked) and label.author == "ada"
            # a accepts the (now first) turn as recorded
            accepted = page.inner_text("li.qitem.current .qhead a")
            page.keyboard.press("a")
            page.wait_for_function(f"() => document.querySelectorAll('li.qitem').length === {total - 2}")
            acall, aturn = accepted.split(" · turn ")
            assert con.labels.latest_for_call(acall)[int(aturn)].confirmed

            # The whole call: a waveform with both channels and every turn marked.
            page.goto(f"{base}/calls/{recorded.audio_call}")
            page.wait_for_selector("#waveform[data-ready='1'] svg.wave")
            assert page.locator("svg.wave path.peaks.caller").count() == 1
            assert page.locator("svg.wave path.peaks.bot").count() == 1
            assert page.locator("svg.wave rect.mark.caller").count() == 2
            assert page.locator("svg.wave rect.mark.bot").count() == 2
            page.click("svg.wave", position={"x": 30, "y": 20})  # click near the start: plays from there
            page.wait_for_function("() => { const a = document.getElementById('callplayer'); return a.duration > 5 && a.currentTime > 0; }")
            assert 6 < page.evaluate("document.getElementById('callplayer').duration") < 12
            assert "incl. bus wait" in page.inner_text("li#turn-1 .latlegend")
            page.screenshot(path=str(tmp_path / "waveform.png"), full_page=False)

            # Replay with another playbook: only the changed fields, the changes marked.
            page.goto(f"{base}/calls/{recorded.demo_call}")
            page.uncheck("input[name=stage_nlu]")
            page.fill("input[name=playbook]", "industrial_software")
            page.click("button:has-text('Replay and compare')")
            page.wait_for_selector("#replay-diff")
            marked = page.locator("#replay-diff ins, #replay-diff del")
            assert marked.count() > 0
            bg = marked.first.evaluate("e => getComputedStyle(e).backgroundColor")
            assert bg not in ("rgba(0, 0, 0, 0)", "transparent")  # highlighted: the stylesheet loaded under the CSP
            height = page.evaluate("document.getElementById('replay-diff').getBoundingClientRect().height")
            page.screenshot(path=str(tmp_path / "replay.png"), full_page=True)
        finally:
            browser.close()
    assert blocked == []
    print(f"replay diff table height: {height:.0f} px")
