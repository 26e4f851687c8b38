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
    con = open_console(Settings(data_dir=tmp_path, nlu_model="rules"))  # as the calls were recorded
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
    assert "every output the same as recorded" in r.text and "<ins>" not in r.text


def test_a_replay_with_another_playbook_shows_only_the_changed_fields_highlighted(console, recorded):
    client = login(console, "rita")
    page = client.get(f"/calls/{recorded.demo_call}").text
    data = {"csrf": csrf_of(page), "stage_dst": "1", "stage_policy": "1", "playbook": "industrial_software"}
    r = client.post(f"/calls/{recorded.demo_call}/replay", data=data)
    changed = int(re.search(r"<b>(\d+)</b> of \d+ outputs changed", r.text).group(1))
    assert changed > 0
    table = r.text[r.text.index('id="replay-diff"'):]
    rows = re.findall(r'<tr class="changed">', table)
    # one row per changed field, each with something marked removed or added
    assert len(rows) >= changed
    assert table.count("<del>") + table.count("<ins>") >= len(rows) // 2
    assert "<code>text</code>" in table or "<code>action</code>" in table  # the reply's changed field by name
    assert '"schema_version"' not in table and "<pre>" not in table  # no raw JSON dump of whole outputs


# --- labels and their export ------------------------------------------------------------------


def _label(client, call_id: str, turn: int, **fields):
    page = client.get(f"/calls/{call_id}").text
    r = client.post(f"/calls/{call_id}/turns/{turn}/label", data={"csrf": csrf_of(page), **fields}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_corrections_export_as_nlu_and_asr_training_data(console, recorded, tmp_path):
    client = login(console, "rita")
    # Monday: a reviewer corrects what the caller said in turn 1 and what they meant, and
    # confirms turn 2 as recorded.
    _label(client, recorded.audio_call, 1, transcript=recorded.clip_texts[0], intents="feature_inquiry, other",
           entities="product=cloud_server; concurrency=500")
    _label(client, recorded.audio_call, 2, confirmed="1")
    _label(client, recorded.demo_call, 3, intents="price_inquiry, price_objection")
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
        "text": recorded.clip_texts[0], "intents": ["feature_inquiry", "other"],
        "entities": [{"type": "product", "value": "cloud_server"}, {"type": "concurrency", "value": 500}],
        "context": [],
    }
    second = by_text[recorded.clip_texts[1]]
    assert second["context"] == [recorded.clip_texts[0]]  # the corrected text, not the ASR's
    assert second["intents"] == ["other"]
    demo = by_text["那这个的年费是多少？"]
    assert demo["intents"] == ["price_inquiry", "price_objection"] and len(demo["context"]) == 2
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
    _label(client, recorded.audio_call, 2, intents="price_objection")
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


# --- labels from the taxonomy (issue 19) --------------------------------------------------------


def test_a_label_with_an_intent_outside_the_taxonomy_is_refused_with_its_name(console, recorded):
    client = login(console, "rita")
    page = client.get(f"/calls/{recorded.audio_call}").text
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label",
                    data={"csrf": csrf_of(page), "intents": ["price_inquiry", "not_a_real_intent"]})
    assert r.status_code == 422 and "not_a_real_intent" in r.text and "not saved" in r.text
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label",
                    data={"csrf": csrf_of(page), "entity_type": ["product", "colour"], "entity_value": ["crm", "red"]})
    assert r.status_code == 422 and "colour" in r.text
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label",
                    data={"csrf": csrf_of(page), "entity_type": ["system"], "entity_value": ["SAP_HANA"]})
    assert r.status_code == 422 and "SAP_HANA" in r.text
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label",
                    data={"csrf": csrf_of(page), "entity_type": ["concurrency"], "entity_value": ["lots"]})
    assert r.status_code == 422 and "lots" in r.text
    assert console.labels.latest_for_call(recorded.audio_call) == {}  # nothing of the above was kept
    # The form's pickers offer exactly the taxonomy's intents and entity types.
    assert page.count('<select name="intents" multiple') == 2
    assert '<option value="do_not_call"' in page and '<option value="not_a_real_intent"' not in page
    assert '<datalist id="entity-values">' in page and '<option value="cloud_server" label="product">' in page
    # Picked from the multi-select and slot rows: saved, ints as ints, blank rows skipped.
    r = client.post(f"/calls/{recorded.audio_call}/turns/1/label", follow_redirects=False, data={
        "csrf": csrf_of(page), "intents": ["price_inquiry", "feature_inquiry"], "slots_set": "1",
        "entity_type": ["product", "concurrency", ""], "entity_value": ["cloud_server", "500", ""]})
    assert r.status_code == 303
    label = console.labels.latest_for_call(recorded.audio_call)[1]
    assert label.intents == ["price_inquiry", "feature_inquiry"]
    assert [(e.type, e.value) for e in label.entities] == [("product", "cloud_server"), ("concurrency", 500)]


def test_an_old_label_with_an_unknown_intent_is_neither_exported_nor_counted(console, recorded):
    from agent.labels import TurnLabel

    # saved before names were checked (straight into the store, as the old form allowed)
    console.labels.add(TurnLabel(call_id=recorded.audio_call, turn=1, intents=["not_a_real_intent"], author="old"))
    client = login(console, "rita")
    exported = client.get("/labels/export", params={"kind": "nlu"}).text
    assert "not_a_real_intent" not in exported
    assert "1 labels (saved before names were checked)" in client.get("/labels").text
    dash = client.get("/dashboard").text
    assert "intent accuracy on 0 labelled turns" in dash and "1 old labels" in dash


def test_a_label_import_refuses_unknown_names_line_by_line_and_keeps_the_rest(console, recorded):
    client = login(console, "rita")
    page = client.get("/labels").text
    lines = [
        json.dumps({"call_id": recorded.audio_call, "turn": 1, "intents": ["price_inquiry"]}),
        json.dumps({"call_id": recorded.audio_call, "turn": 2, "intents": ["not_a_real_intent"]}),
        "{broken",
        json.dumps({"call_id": recorded.demo_call, "turn": 1, "entities": [{"type": "feature", "value": "warp_drive"}]}),
        json.dumps({"call_id": recorded.demo_call, "turn": 2, "intents": ["callback_request"],
                    "entities": [{"type": "callback_time", "value": "tomorrow 10:00"}]}),
    ]
    r = client.post("/labels/import", data={"csrf": csrf_of(page)},
                    files={"file": ("labels.jsonl", "\n".join(lines).encode(), "application/x-ndjson")})
    assert r.status_code == 200
    assert "imported <b>2</b> labels" in r.text
    assert "line 2" in r.text and "not_a_real_intent" in r.text
    assert "line 3" in r.text and "line 4" in r.text and "warp_drive" in r.text
    assert console.labels.latest_for_call(recorded.audio_call)[1].author == "rita"
    assert 2 not in console.labels.latest_for_call(recorded.audio_call)


# --- review queue, latency, CER, whole-call audio --------------------------------------------


def test_the_review_queue_puts_unreviewed_risky_turns_first(console, recorded):
    client = login(console, "rita")
    page = client.get("/queue").text
    items = re.findall(r'<code>([^<]+)</code> · turn (\d+)</a>', page)
    assert (recorded.audio_call, "1") in items and (recorded.demo_call, "1") in items
    # turn 1 of the audio call: ASR confidence 0.71 -> low confidence, ahead of confident turns
    assert "low confidence" in page
    first_call, first_turn = items[0]
    assert "reason-low_confidence" in page.split("</li>")[0] or "reason-dnc" in page.split("</li>")[0]
    _label(client, first_call, int(first_turn), confirmed="1")
    after = re.findall(r'<code>([^<]+)</code> · turn (\d+)</a>', client.get("/queue").text)
    assert (first_call, first_turn) not in after and len(after) == len(items) - 1
    assert (first_call, first_turn) in re.findall(r'<code>([^<]+)</code> · turn (\d+)</a>', client.get("/queue?all=1").text)


def test_every_stage_latency_is_indexed_and_marked_as_including_bus_wait(console, recorded):
    client = login(console, "rita")
    listing = client.get("/calls").text
    row = listing[listing.index(f"/calls/{recorded.audio_call}\""):].split("</tr>")[0]
    for stage in ("vad", "asr", "nlu", "dst", "policy", "tts"):
        assert f"{stage} " in row, stage
    assert "incl. bus wait" in listing
    assert recorded.audio_call in client.get("/calls", params={"stage": "asr", "over_ms": "0"}).text
    assert recorded.demo_call not in client.get("/calls", params={"stage": "asr", "over_ms": "0"}).text
    assert "No calls match" in client.get("/calls", params={"stage": "tts", "over_ms": "60000"}).text
    page = client.get(f"/calls/{recorded.audio_call}").text
    assert "stage-asr" in page and "stage-tts" in page and "incl. bus wait" in page


def test_asr_cer_is_measured_on_audio_calls_only(console, recorded):
    client = login(console, "rita")
    # a text call's turn confirmed as typed: no ASR was involved, so no CER yet
    _label(client, recorded.demo_call, 1, confirmed="1")
    page = client.get("/dashboard").text
    assert '<div class="card kpi" id="kpi-cer"><b>n/a</b>' in page
    _label(client, recorded.audio_call, 1, transcript=recorded.clip_texts[0])
    assert "8.3%" in client.get("/dashboard").text  # 1 dropped character of 12, on the audio turn only


def test_the_whole_call_is_one_stereo_wav_with_peaks_and_turn_marks(console, recorded):
    client = login(console, "vic")
    wav = client.get(f"/calls/{recorded.audio_call}/audio/call.wav")
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    with wave.open(BytesIO(wav.content)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 16000
        frames = w.readframes(w.getnframes())
    import numpy as np

    x = np.frombuffer(frames, dtype="<i2").reshape(-1, 2)
    caller, bot = np.abs(x[:, 0]).astype(int), np.abs(x[:, 1]).astype(int)
    peaks = client.get(f"/calls/{recorded.audio_call}/audio/peaks.json").json()
    marks = peaks["turns"]
    assert [(m["turn"], m["who"]) for m in marks] == [(1, "caller"), (1, "bot"), (2, "caller"), (2, "bot")]
    for m in marks:
        a, b = int(m["start_s"] * 16000), int(m["end_s"] * 16000)
        own, other = (caller, bot) if m["who"] == "caller" else (bot, caller)
        assert own[a:b].max() > 1000  # the speaker is heard in their own channel ...
    bot1 = next(m for m in marks if m == marks[1])
    assert bot.max() > 1000 and caller[int(bot1["start_s"] * 16000) : int(bot1["end_s"] * 16000)].max() < 200  # ... not the other's
    assert abs((marks[1]["end_s"] - marks[1]["start_s"]) - 1.2) < 0.05  # the 1.2 s reply
    assert marks[3]["end_s"] - marks[3]["start_s"] < 0.7  # barge-in: cut where the caller spoke (640 ms)
    assert len(peaks["caller"]) == len(peaks["bot"]) <= 600 and len(json.dumps(peaks)) < 20_000
    assert ("vic", "play", recorded.audio_call, "whole call") in [
        (a.username, a.action, a.call_id, a.detail) for a in console.store.audit_log()]
    assert client.get(f"/calls/{recorded.demo_call}/audio/call.wav").status_code == 404  # text call
    assert 'id="waveform"' in client.get(f"/calls/{recorded.audio_call}").text
    assert 'id="waveform"' not in client.get(f"/calls/{recorded.demo_call}").text


# --- hardening: parameters, login throttling, headers --------------------------------------------


@pytest.mark.parametrize("params", [
    {"page": "1e20"}, {"page": "0"}, {"page": "-3"}, {"page": "99999999999999999999"}, {"per_page": "100000"},
    {"over_ms": "nan"}, {"over_ms": "-5"}, {"over_ms": "1e400"}, {"stage": "nlu;drop"}, {"page": "abc"},
])
def test_a_bad_query_parameter_is_a_422_that_names_it_never_a_500(console, params):
    client = login(console, "rita")
    r = client.get("/calls", params=params)
    assert r.status_code == 422, (params, r.status_code)
    name = next(iter(params))
    assert f"{name}:" in r.text and "<html" in r.text
    assert client.get("/queue", params={"page": "1e20"}).status_code == 422
    assert client.get("/calls/x/turns/1e20/caller.wav").status_code == 422


def test_empty_filter_fields_from_the_form_are_not_errors(console, recorded):
    client = login(console, "rita")
    r = client.get("/calls", params={"stage": "", "over_ms": "", "page": "", "campaign": ""})
    assert r.status_code == 200 and recorded.audio_call in r.text


def _attempt(client, username, password):
    page = client.get("/login").text
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    return client.post("/login", data={"username": username, "password": password, "token": token}, follow_redirects=False)


def test_wrong_passwords_meet_a_growing_delay_then_a_lockout_all_in_the_audit_log(console):
    now = [1_000_000.0]
    console.throttle.clock = lambda: now[0]
    client = TestClient(create_app(console))
    for _ in range(3):  # the first few mistakes cost nothing
        assert "error=bad" in _attempt(client, "ada", "wrong").headers["location"]
    r = _attempt(client, "ada", PASSWORD)  # right password, but too soon after the third failure
    assert r.status_code == 429 and "wait" in r.text and int(r.headers["retry-after"]) >= 1
    waits = []
    for _ in range(7):  # each failure doubles the wait before the next try
        wait = console.throttle.check("ada", "testclient").wait_s
        waits.append(round(wait))
        now[0] += wait + 0.01
        assert "error=bad" in _attempt(client, "ada", "wrong").headers["location"]
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    now[0] += 60
    r = _attempt(client, "ada", PASSWORD)  # 10 failures: locked out, even with the password
    assert r.status_code == 429 and "locked" in r.text
    actions = [a.action for a in console.store.audit_log(100)]
    assert actions.count("login_failed") == 10 and actions.count("login_locked") == 1 and "login_throttled" in actions
    now[0] += 901
    assert _attempt(client, "ada", PASSWORD).headers["location"] == "/calls"  # the lockout ends


def test_one_address_spraying_many_user_names_is_throttled_too(console):
    now = [2_000_000.0]
    console.throttle.clock = lambda: now[0]
    client = TestClient(create_app(console))
    for name in ("u1", "u2", "u3"):
        _attempt(client, name, "guess")
    r = _attempt(client, "u4", "guess")
    assert r.status_code == 429
    assert "address testclient" in console.store.audit_log(1)[0].detail


def test_the_throttle_delays_double_up_to_a_cap():
    from agent.console.throttle import LoginThrottle
    import sqlite3 as _sq

    t = LoginThrottle(_sq.connect(":memory:"), free=2, base_delay_s=0.5, max_delay_s=4, lock_after=6, clock=lambda: 0.0)
    assert [t.delay_after(n) for n in range(7)] == [0, 0, 0.5, 1.0, 2.0, 4.0, 4.0]
    for _ in range(5):
        assert not t.failed("bob", "10.0.0.1").locked
    assert t.failed("bob", "10.0.0.1").locked
    assert t.check("bob", "10.0.0.2").locked  # the user is locked from any address
    t.succeeded("bob")
    assert t.check("carol", "10.0.0.1").locked  # a success does not clear the address


def test_every_reply_carries_a_strict_content_security_policy(console):
    client = TestClient(create_app(console))
    for r in (client.get("/login"), client.get("/calls", follow_redirects=False), client.get("/static/console.css")):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "same-origin"
    templates = Path(__file__).resolve().parents[1] / "agent" / "console" / "templates"
    for t in templates.glob("*.html"):
        html = t.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), t.name  # no inline script
        assert not re.search(r"\son[a-z]+=", html) and "style=" not in html, t.name  # no inline handlers/styles
