"""The QA review console over HTTP (the browser story is in test_console_browser.py).

Calls are recorded by running the real pipeline (tests/test_console_calls.py); the console
reads the same log file the agent wrote."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import wave
from io import BytesIO
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import agent.cli.console_cmds  # noqa: F401  (registers `console` and `labels` on the app)
from agent.cli.app import app as cli_app
from agent.console.app import create_app, open_console
from agent.observability import configure_logging
from agent.settings import Settings
from test_console_calls import RecordedCalls, record_review_calls

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _logs_to_real_stderr():
    # CLI commands configure structlog onto CliRunner's captured stderr, closed after invoke.
    yield
    configure_logging("WARNING")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordedCalls:
    return record_review_calls(tmp_path_factory.mktemp("recorded"))


@pytest.fixture
def console(recorded: RecordedCalls, tmp_path: Path):
    shutil.copy(recorded.log_path, tmp_path / "bus.sqlite")
    con = open_console(Settings(data_dir=tmp_path))
    for name, role in (("ada", "admin"), ("rita", "reviewer"), ("vic", "viewer")):
        con.store.set_user(name, PASSWORD, role)
    yield con
    con.log.close()
    con.store.close()


def login(con, username: str) -> TestClient:
    client = TestClient(create_app(con))
    page = client.get("/login")
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": username, "password": PASSWORD, "token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/calls", r.text
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


# --- security --------------------------------------------------------------------------------


def test_every_route_refuses_a_stranger_without_leaking_data(console, recorded):
    app = create_app(console)
    client = TestClient(app)
    paths = []
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith(("/login", "/static")) or not path:
            continue
        concrete = (
            path.replace("{call_id}", recorded.audio_call).replace("{turn}", "1").replace("{who}", "caller")
        )
        for method in sorted(getattr(route, "methods", {"GET"}) - {"HEAD"}):
            paths.append((method, concrete))
    assert len(paths) >= 15
    for method, path in paths:
        for accept in ("text/html", "*/*"):
            r = client.request(method, path, headers={"accept": accept}, follow_redirects=False)
            assert r.status_code in (303, 401), (method, path, r.status_code)
            if r.status_code == 303:
                assert r.headers["location"].startswith("/login")
            body = r.text
            assert recorded.audio_call not in body.replace(f"next={path}", "")
            assert "13987654321" not in body and "RIFF" not in body
    # The login page itself shows no call data.
    assert recorded.demo_call not in client.get("/login").text


def test_passwords_are_argon2_hashed_and_cookies_are_httponly_samesite(console):
    stored = console.store.db.execute("SELECT password_hash FROM users WHERE username='ada'").fetchone()[0]
    assert stored.startswith("$argon2") and PASSWORD not in stored
    client = TestClient(create_app(console))
    token = re.search(r'name="token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": "ada", "password": "wrong password", "token": token}, follow_redirects=False)
    assert "error=bad" in r.headers["location"]
    token = re.search(r'name="token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": "ada", "password": PASSWORD, "token": token}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "dx_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    # A forged login form (no signed token) is refused.
    r = TestClient(create_app(console)).post("/login", data={"username": "ada", "password": PASSWORD}, follow_redirects=False)
    assert "error=expired" in r.headers["location"]


def test_a_form_without_the_csrf_token_changes_nothing(console, recorded):
    client = login(console, "rita")
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label", data={"intents": "purchase_intent"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert console.labels.latest_for_call(recorded.audio_call) == {}


def test_a_viewer_sees_masked_numbers_and_cannot_label(console, recorded):
    viewer = login(console, "vic")
    listing = viewer.get("/calls").text
    assert "139****4321" in listing and "13987654321" not in listing
    page = viewer.get(f"/calls/{recorded.audio_call}").text
    assert "13987654321" not in page and "139****4321" in page
    assert "label this turn" not in page
    r = viewer.post(f"/calls/{recorded.audio_call}/turns/1/label", data={"csrf": csrf_of(page), "intents": "x"})
    assert r.status_code == 403
    reviewer_page = login(console, "rita").get(f"/calls/{recorded.audio_call}").text
    assert "13987654321" in reviewer_page


def test_the_audit_log_records_who_opened_and_played_which_call(console, recorded):
    client = login(console, "vic")
    client.get(f"/calls/{recorded.audio_call}")
    wav = client.get(f"/calls/{recorded.audio_call}/turns/1/caller.wav")
    assert wav.status_code == 200
    entries = [(a.username, a.action, a.call_id, a.detail) for a in console.store.audit_log()]
    assert ("vic", "open_call", recorded.audio_call, "") in entries
    assert ("vic", "play", recorded.audio_call, "turn 1 caller") in entries
    admin_page = login(console, "ada").get("/audit").text
    assert "open_call" in admin_page and "vic" in admin_page
    assert login(console, "rita").get("/audit").status_code == 403


# --- the call list and the call page ----------------------------------------------------------


def test_calls_list_filters_sorts_and_searches_transcripts(console, recorded):
    client = login(console, "rita")
    everything = client.get("/calls").text
    assert recorded.demo_call in everything and recorded.audio_call in everything
    by_campaign = client.get("/calls", params={"campaign": "spring-promo"}).text
    assert recorded.audio_call in by_campaign and recorded.demo_call not in by_campaign
    by_text = client.get("/calls", params={"text": "年费"}).text
    assert recorded.demo_call in by_text and recorded.audio_call not in by_text
    by_intent = client.get("/calls", params={"intent": "not_interested"}).text
    assert recorded.audio_call in by_intent and recorded.demo_call not in by_intent
    by_dialect = client.get("/calls", params={"dialect": "zh"}).text
    assert recorded.audio_call in by_dialect and recorded.demo_call not in by_dialect
    slow = client.get("/calls", params={"stage": "nlu", "over_ms": "100000"}).text
    assert recorded.audio_call not in slow and "No calls match" in slow
    any_nlu = client.get("/calls", params={"stage": "nlu", "over_ms": "0"}).text
    assert recorded.audio_call in any_nlu
    flagged_before = client.get("/calls", params={"flagged": "1"}).text
    assert recorded.audio_call not in flagged_before
    page = client.get(f"/calls/{recorded.audio_call}").text
    client.post(f"/calls/{recorded.audio_call}/turns/2/label", data={"csrf": csrf_of(page), "flags": ["compliance"]})
    assert recorded.audio_call in client.get("/calls", params={"flagged": "1"}).text
    assert recorded.audio_call in client.get("/calls", params={"compliance": "1"}).text
    ordered = client.get("/calls", params={"sort": "turns", "dir": "desc"}).text
    assert ordered.index(recorded.demo_call) < ordered.index(recorded.audio_call)  # 5 turns before 2


def test_the_call_page_shows_each_turn_with_audio_intents_slots_and_latency(console, recorded):
    client = login(console, "rita")
    page = client.get(f"/calls/{recorded.audio_call}").text
    assert recorded.asr_texts[0] in page and "0.71" in page  # transcript and ASR confidence
    assert "partial transcripts" in page
    assert "not_interested <b>1.00</b>" in page and "by rule" in page
    assert "barge-in" in page
    assert f"/calls/{recorded.audio_call}/turns/1/caller.wav" in page
    assert f"/calls/{recorded.audio_call}/turns/2/bot.wav" in page
    assert "<svg class=\"latbar\"" in page and "nlu" in page
    demo = client.get(f"/calls/{recorded.demo_call}").text
    assert "concurrency: (none) -&gt; 1000" in demo  # slot change as a state diff
    assert "dead letter · transcripts: invalid transcript.final" in demo


def test_turn_audio_is_served_as_playable_wav(console, recorded):
    client = login(console, "rita")
    caller = client.get(f"/calls/{recorded.audio_call}/turns/1/caller.wav")
    assert caller.headers["content-type"] == "audio/wav"
    with wave.open(BytesIO(caller.content)) as w:
        assert w.getframerate() == 16000 and 3.0 < w.getnframes() / 16000 < 4.0  # the 3.4 s clip
    bot = client.get(f"/calls/{recorded.audio_call}/turns/1/bot.wav")
    with wave.open(BytesIO(bot.content)) as w:
        assert w.getframerate() == 8000 and abs(w.getnframes() / 8000 - 1.2) < 0.03
    assert client.get(f"/calls/{recorded.demo_call}/turns/1/caller.wav").status_code == 404  # text call


# --- bad input ---------------------------------------------------------------------------------


def test_an_unknown_call_gets_a_404_page(console):
    r = login(console, "rita").get("/calls/no-such-call")
    assert r.status_code == 404 and "no call &#39;no-such-call&#39;" in r.text and "<html" in r.text


def test_an_unreadable_log_row_is_an_error_row_not_a_500(console, recorded):
    r = login(console, "rita").get(f"/calls/{recorded.demo_call}")
    assert r.status_code == 200
    assert "unreadable row · nlu.results" in r.text and "{not json" in r.text
    assert "那这个的年费是多少" in r.text  # the rest of the call is still there
    listing = login(console, "rita").get("/calls").text
    assert "1 bad rows" in listing


def test_an_import_with_bad_lines_reports_each_line_and_imports_the_rest(console, recorded, tmp_path):
    from agent.calllog import CallLog

    exported = tmp_path / "calls.jsonl"
    other = CallLog(recorded.log_path)
    with exported.open("w") as fh:
        other.export_jsonl([recorded.demo_call], fh)
    other.close()
    # The same call under a new id (and new event ids, so it is not skipped as already present).
    fresh = lambda line: re.sub(r"[0-9a-f]{32}", lambda m: m.group(0)[::-1], line)  # noqa: E731
    good = [fresh(l.replace(recorded.demo_call, "call-imported")) for l in exported.read_text().splitlines()]
    lines = good[:3] + ["{broken json", json.dumps({"topic": "nope", "event": {}})] + good[3:]
    client = login(console, "ada")
    page = client.get("/import").text
    r = client.post(
        "/import",
        data={"csrf": csrf_of(page)},
        files={"file": ("calls.jsonl", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")},
    )
    assert r.status_code == 200
    assert "line 4" in r.text and "line 5" in r.text and "unknown topic" in r.text
    assert f"imported <b>{len(good)}</b> events" in r.text
    assert "call-imported" in client.get("/calls").text
    assert "那这个的年费是多少" in client.get("/calls/call-imported").text


def test_a_replay_that_fails_shows_the_error_on_the_page(console, recorded):
    client = login(console, "rita")
    page = client.get(f"/calls/{recorded.demo_call}").text
    r = client.post(
        f"/calls/{recorded.demo_call}/replay",
        data={"csrf": csrf_of(page), "stage_dst": "1", "stage_policy": "1", "playbook": "no_such_playbook"},
    )
    assert r.status_code == 200
    assert "The replay failed" in r.text and "no_such_playbook" in r.text and "not found" in r.text


def test_a_replay_with_the_same_versions_shows_every_output_unchanged(console, recorded):
    client = login(console, "rita")
    page = client.get(f"/calls/{recorded.demo_call}").text
    data = {"csrf": csrf_of(page), "stage_nlu": "1", "stage_dst": "1", "stage_policy": "1"}
    r = client.post(f"/calls/{recorded.demo_call}/replay", data=data)
    assert "<b>0</b> of 15 outputs changed" in r.text
    assert "年费" in r.text  # recorded vs replayed side by side, readable Chinese


# --- labels and their export ------------------------------------------------------------------


def _label(client, call_id: str, turn: int, **fields):
    page = client.get(f"/calls/{call_id}").text
    r = client.post(f"/calls/{call_id}/turns/{turn}/label", data={"csrf": csrf_of(page), **fields}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_corrections_export_as_nlu_and_asr_training_data(console, recorded, tmp_path):
    client = login(console, "rita")
    # Monday: a reviewer corrects what the caller said in turn 1 and what they meant, and
    # confirms turn 2 as recorded.
    _label(client, recorded.audio_call, 1, transcript=recorded.clip_texts[0], intents="ask_detail, other",
           entities="product=cloud_server; concurrency=500")
    _label(client, recorded.audio_call, 2, confirmed="1")
    _label(client, recorded.demo_call, 3, intents="price_inquiry, discount_request")
    history = console.labels.history(recorded.audio_call, 1)
    assert history[-1].author == "rita" and history[-1].created_at > 0
    # Tuesday: the export is training data in the pipelines' formats.
    runner = CliRunner()
    out = tmp_path / "nlu.jsonl"
    res = runner.invoke(cli_app, ["labels", "export", "--for", "nlu", "--out", str(out), "--data-dir", str(console.settings.data_dir)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    by_text = {l["text"]: l for l in lines}
    first = by_text[recorded.clip_texts[0]]
    assert first == {
        "text": recorded.clip_texts[0], "intents": ["ask_detail", "other"],
        "entities": [{"type": "product", "value": "cloud_server"}, {"type": "concurrency", "value": 500}],
        "context": [],
    }
    second = by_text[recorded.clip_texts[1]]
    assert second["context"] == [recorded.clip_texts[0]]  # the corrected text, not the ASR's
    assert second["intents"] == ["other"]
    demo = by_text["那这个的年费是多少？"]
    assert demo["intents"] == ["price_inquiry", "discount_request"] and len(demo["context"]) == 2
    assert set(first) == {"text", "intents", "entities", "context"}

    asr_dir = tmp_path / "asr"
    res = runner.invoke(cli_app, ["labels", "export", "--for", "asr", "--out", str(asr_dir), "--data-dir", str(console.settings.data_dir)])
    assert res.exit_code == 0, res.output
    manifest = [json.loads(l) for l in (asr_dir / "manifest.jsonl").read_text().splitlines()]
    assert [m["text"] for m in manifest] == recorded.clip_texts
    for m in manifest:
        with wave.open(str(asr_dir / m["audio"])) as w:  # path relative to the manifest
            assert w.getframerate() == 16000 and w.getnframes() > 16000


def test_the_dashboard_measures_asr_and_intents_on_labelled_turns(console, recorded):
    client = login(console, "rita")
    _label(client, recorded.audio_call, 1, transcript=recorded.clip_texts[0], intents="not_interested")
    _label(client, recorded.audio_call, 2, intents="complaint")
    page = client.get("/dashboard").text
    assert page.count("<svg class=\"chart\"") >= 4
    # One dropped character in 12 -> CER 8.3%; 1 of 2 intent sets right -> 50%.
    assert "8.3%" in page and "50.0%" in page
    assert "completed (2)" in page


def test_create_user_command_sets_up_the_first_admin(tmp_path):
    res = CliRunner().invoke(
        cli_app, ["console", "--data-dir", str(tmp_path), "create-user", "boss", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
    )
    assert res.exit_code == 0, res.output
    db = sqlite3.connect(tmp_path / "console.sqlite")
    assert db.execute("SELECT role FROM users WHERE username='boss'").fetchone() == ("admin",)
    res = CliRunner().invoke(
        cli_app, ["console", "--data-dir", str(tmp_path), "create-user", "x", "--role", "king", "--password-stdin"],
        input="a long enough password\n",
    )
    assert res.exit_code == 1 and "unknown role" in res.output


def test_names_and_numbers_are_masked_in_what_a_viewer_reads():
    from agent.console.privacy import mask_caller, mask_text

    said = "我叫王小明，手机13812345678，座机010-88886666，找李经理也行"
    masked = mask_text(said, extra=["小明"])
    assert "王小明" not in masked and "13812345678" not in masked and "88886666" not in masked
    assert "李经理" not in masked and "138****5678" in masked and "*经理" in masked
    assert mask_caller("+8613812345678") == "138****5678"
    assert "12345" not in mask_caller("sip:12345@pbx")
