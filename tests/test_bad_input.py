"""Bad input cannot hurt (issue 16, item 7): every data file the CLI reads reports its bad lines
by number and goes on with the rest; an empty file is one clear error (exit 2), not a report
over nothing; a dial list is read as phone numbers, not as "whatever digits are in the cell"."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.calllog import CallLog
from agent.textcall import run_text_call
from connectors.campaign.leads import read_leads
from connectors.campaign.policy import DoNotCallList
from tests.test_operator_errors import dianxiao, one_error_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIP = SHARED / "data/speech/mandarin/BAC009S0150W0126.wav"


# --- calls import -----------------------------------------------------------------------------


async def test_a_stray_non_utf8_line_costs_that_line_only_when_importing_calls(text_pipeline, tmp_path):
    call = await run_text_call(text_pipeline.bus, ["你好", "云服务器多少钱", "好的，可以安排演示"])
    export = tmp_path / "calls.jsonl"
    with export.open("w", encoding="utf-8") as fh:
        n = CallLog(text_pipeline.bus.path).export_jsonl([call.call_id], fh)
    lines = export.read_bytes().splitlines(keepends=True)
    assert len(lines) == n >= 10
    # a line damaged in transit (a Latin-1 editor, a cut multi-byte character) in the middle
    damaged = lines[:3] + [lines[3].replace("你".encode(), b"\xc4\xe3")] + lines[4:]
    assert b"\xc4\xe3" in damaged[3]
    export.write_bytes(b"".join(damaged))

    res = dianxiao(tmp_path, "calls", "import", str(export), "--log", str(tmp_path / "copy.sqlite"))
    assert "Traceback" not in res.stderr
    assert res.returncode == 1  # some lines were bad: said, and the rest kept
    assert f"{export}:4: not UTF-8" in res.stderr
    assert f"imported {n - 1} events" in res.stdout
    kept = CallLog(tmp_path / "copy.sqlite")
    assert len(list(kept.rows(call.call_id))) == n - 1


def test_importing_an_empty_file_is_an_error_not_zero_events(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    line = one_error_line(dianxiao(tmp_path, "calls", "import", "empty.jsonl"))
    assert "empty.jsonl: nothing to import" in line


# --- eval nlu -----------------------------------------------------------------------------------


def test_eval_nlu_on_a_binary_file_or_an_empty_one_is_one_line_exit_2(tmp_path):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 8)
    line = one_error_line(dianxiao(tmp_path, "eval", "nlu", "--data", "model.bin"))
    assert "model.bin: no usable examples (all 9 non-blank lines are bad; line 1:" in line
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    line = one_error_line(dianxiao(tmp_path, "eval", "nlu", "--data", "empty.jsonl"))
    assert "empty.jsonl: no usable examples (the file is empty)" in line


def test_eval_nlu_scores_the_good_lines_and_names_the_bad_ones(tmp_path):
    good = [{"text": "转人工", "intents": ["request_human"]}, {"text": "多少钱", "intents": ["price_inquiry"]}]
    data = tmp_path / "mine.jsonl"
    data.write_bytes(json.dumps(good[0], ensure_ascii=False).encode() + b"\n\xff\xfe{\n"
                     + b'{"intents": ["other"]}\n' + json.dumps(good[1], ensure_ascii=False).encode() + b"\n")
    res = dianxiao(tmp_path, "eval", "nlu", "--data", "mine.jsonl", "--rules")
    assert "Traceback" not in res.stderr
    assert f"{data.name}:2: skipped: not UTF-8" in res.stderr
    assert f"{data.name}:3: skipped: expected an object with a string 'text'" in res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["n"] == 2  # the good lines were scored
    assert res.returncode == 2  # but a run over part of the file is not a clean pass


# --- eval asr -----------------------------------------------------------------------------------


@pytest.mark.skipif(not CLIP.exists(), reason="shared speech clips not present")
def test_eval_asr_names_a_truncated_clip_and_scores_the_rest(tmp_path):
    with wave.open(str(CLIP)) as w:
        params, frames = w.getparams(), w.readframes(w.getnframes())
    whole = tmp_path / "whole.wav"
    with wave.open(str(whole), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # a download that stopped half way
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"audio": a, "text": "这是参考文本", "language": "zh"}, ensure_ascii=False) + "\n"
                                for a in ("cut.wav", "whole.wav")) + "not json\n", encoding="utf-8")
    res = dianxiao(tmp_path, "eval", "asr", "--manifest", "manifest.jsonl", "--no-latency")
    assert "Traceback" not in res.stderr and "Aborted" not in res.stderr + res.stdout
    assert "manifest.jsonl:3: skipped: not JSON" in res.stderr
    assert "cut.wav: skipped: truncated: the header declares" in res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["clips"] == 1 and summary["skipped"] == 1  # whole.wav was scored
    assert res.returncode == 2


# --- the dial list ------------------------------------------------------------------------------


def test_a_dial_list_dials_phone_numbers_not_digits_found_in_a_cell(tmp_path):
    leads_csv = tmp_path / "leads.csv"
    leads_csv.write_bytes(
        "phone,name\n"
        '"13200132000,<script>alert(1)</script>",注入\n'  # line 2: a number with markup glued on
        "2026-01-15,日期\n"                                 # line 3: a date is not a number
        "138 0013 8000 转 123,分机\n"                        # line 4: an extension would dial another line
        "1 800 FLOWERS,字母\n"                              # line 5: letters are not dialled
        "13800138000,王先生\n"                               # line 6: good
        .encode() + b"\xd5\xc5\xc8\xfd,\xb9\xfe\n"           # line 7: GBK bytes, not UTF-8
        + "+86 139-0013-9000,李女士\n"                        # line 8: good, written with country code
          "008613800138000,重复\n"                           # line 9: the same line as 6, other spelling
          "13900139001,张总,多余的列\n".encode())              # line 10: one cell too many
    leads, bad = read_leads(leads_csv)
    assert [(lead.line, lead.phone) for lead in leads] == [(6, "+8613800138000"), (8, "+8613900139000")]
    reasons = {b.line: b.reason for b in bad}
    assert sorted(reasons) == [2, 3, 4, 5, 7, 9, 10]
    assert reasons[2].startswith("phone: not a phone number")
    assert reasons[3].startswith("phone: not a valid phone number")
    assert reasons[4].startswith("phone: has an extension")
    assert reasons[7].startswith("not UTF-8")
    assert reasons[9] == "duplicate of an earlier lead: +8613800138000"


def test_the_do_not_call_list_matches_however_the_number_is_written(tmp_path):
    dnc_file = tmp_path / "dnc.txt"
    dnc_file.write_text("# asked not to be called\n+86 138 0013 8000\n0086-139-0013-9000\nnot a number\n", encoding="utf-8")
    dnc = DoNotCallList.load(dnc_file)
    for written in ("13800138000", "+8613800138000", "138-0013-8000", "139 0013 9000"):
        assert written in dnc
    assert "13800138001" not in dnc
    # before: digits were stripped out, so "138 0013 8000 转 123" was 13800138000123 - another line
    # that escaped the list; now it is no dialable lead at all
    assert "138 0013 8000 转 123" not in dnc
    assert dnc.bad == [(4, "not a phone number: 'not a number'")]


def test_a_campaign_with_no_usable_lead_is_one_error_line(tmp_path):
    (tmp_path / "leads.csv").write_text("phone,name\n2026-01-15,日期\n", encoding="utf-8")
    res = dianxiao(tmp_path, "campaign", "run", "leads.csv", "--simulate")
    assert "leads.csv:2: skipped" in res.stdout
    assert res.returncode == 2 and "error: leads.csv: no lead to dial (all 1 rows are bad)" in res.stderr
