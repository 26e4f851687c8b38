"""Speech recognition on real recorded Mandarin: the offline Whisper base model, transcripts in
simplified characters with digits, partials that do not flicker, hot-words, and the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent import events as ev
from agent.speech.codec import phone_round_trip
from agent.speech.evaluate import edit_distance, evaluate, read_manifest
from agent.speech.textnorm import for_cer, normalise_transcript
from agent.stages.asr import AsrStage, stable_prefix
from agent.stages.base import CallContext
from tests.speech_helpers import CLIPS, MODELS, load_clip, manifest


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
    from agent.speech.asr import make_engine
    from agent.speech.assets import AssetError

    try:
        return make_engine("faster-whisper", "whisper-base", MODELS)
    except AssetError as exc:
        pytest.skip(str(exc))


# --- text normalisation (no model needed) -----------------------------------------------------


@pytest.mark.parametrize(
    ("spoken", "published"),
    [
        ("我要一千并发的", "我要1000并发的"),
        ("百分之八十是危险临界点", "80%是危险临界点"),
        ("一点五倍以上是安全的", "1.5倍以上是安全的"),
        ("我的电话是一三八零零一三八零零零", "我的电话是13800138000"),  # digit by digit, not a quantity
        ("幺三八零零一三八零零零", "13800138000"),
        ("统一一下，一些问题", "统一一下，一些问题"),  # words with 一 stay words
        ("大概三四个人", "大概三四个人"),
        ("而中國目前實際是十一倍", "而中国目前实际是11倍"),
        ("两千块", "2000块"),
    ],
)
def test_transcripts_are_simplified_with_spoken_numbers_as_digits(spoken, published):
    assert normalise_transcript(spoken) == published


def test_cer_form_ignores_punctuation_script_and_number_style():
    assert for_cer("自六月底，呼和浩特市。") == for_cer("自6月底呼和浩特市")
    assert for_cer("1.5倍") == for_cer("一点五倍")
    assert edit_distance("限购", "线构") == 2 and edit_distance("", "ab") == 2 and edit_distance("abc", "abc") == 0


@pytest.mark.parametrize(
    ("heard", "said_once"),
    [
        ("所以暂时不公开具体的内容所以暂时不公开具体的", "所以暂时不公开具体的内容"),  # said again, cut off
        ("1.5倍以上是安全的1.5倍以上是安全的", "1.5倍以上是安全的"),
        ("itititititititititit", None),  # a syllable loop: the full window redoes it
        ("19 19 19 19 19 19", None),
        ("好的好的好的", None),
        ("我要开发票，发票抬头写公司", None),
        ("有冇data backup服务 有冇data backup服务", "有冇data backup服务"),  # spaces as written
    ],
)
def test_a_sentence_whisper_says_twice_is_kept_once(heard, said_once):
    from agent.speech.asr import repeated_sentence

    assert repeated_sentence(heard) == said_once


def test_a_caller_who_repeats_a_word_is_not_a_decoding_loop():
    from agent.speech.asr import looks_degenerate

    assert not looks_degenerate("好的好的好的好的", audio_s=2.0)  # said, at a speaking rate
    assert not looks_degenerate("喂喂喂喂喂喂喂喂喂", audio_s=2.5)
    assert looks_degenerate("19 19 19 19 19 19 19 19", audio_s=0.9)  # faster than anyone talks
    assert looks_degenerate("好的好的好的好的好的好的好的好的", audio_s=1.0)
    assert looks_degenerate("好的好的好的好的")  # no duration given: the shape alone decides


def test_partials_expose_only_the_prefix_two_hypotheses_agree_on():
    assert stable_prefix("", "我想要一个") == ""
    assert stable_prefix("我想要一个", "我想要一个性价比") == "我想要一个"
    assert stable_prefix("我想药", "我想要一个") == "我想"


# --- the model --------------------------------------------------------------------------------


def test_whisper_base_is_assembled_from_its_two_packages(engine):
    d = MODELS / "whisper-base-ct2"
    assert (d / "model.bin").stat().st_size > 140_000_000
    assert {p.name for p in d.iterdir()} >= {"config.json", "tokenizer.json", "vocabulary.txt", "model.bin"}


def test_a_real_mandarin_recording_is_transcribed_in_simplified_chinese_with_digits(engine):
    # AISHELL-1 BAC009S0002W0125 "而中国目前实际是十一倍": Whisper base writes 實際 in
    # traditional characters and the number in digits; we publish simplified + digits.
    name = next(i["audio"] for i in manifest() if i["text"] == "而中国目前实际是十一倍")
    res = engine.transcribe(load_clip(Path(name).name))
    assert res.text == "而中国目前实际是11倍"
    assert res.language == "zh" and res.audio_ms > 3000


def test_short_window_decoding_matches_the_30s_window_on_real_clips(engine):
    from agent.speech.asr import FasterWhisperEngine

    full = FasterWhisperEngine.__new__(FasterWhisperEngine)
    full.__dict__.update(engine.__dict__, short_window=False)
    items = manifest()[1:3]
    errs_short = errs_full = chars = 0
    for item in items:
        pcm = load_clip(Path(item["audio"]).name)
        ref = for_cer(item["text"])
        errs_short += edit_distance(ref, for_cer(engine.transcribe(pcm).text))
        errs_full += edit_distance(ref, for_cer(full.transcribe(pcm).text))
        chars += len(ref)
    assert errs_short / chars <= errs_full / chars + 0.05


def test_hot_words_go_into_the_prompt_and_the_playbook_supplies_them(engine):
    from agent.settings import Settings
    from agent.speech.asr import hotword_prompt
    from agent.speech.factories import hotwords

    assert hotword_prompt(["ERP", "SaaS", "ERP", " 并发 "], "以下是销售电话。") == "ERP，SaaS，并发。以下是销售电话。"
    assert hotwords(Settings(asr_hotwords=["一千并发"])) == ["一千并发"]  # playbook terms are opt-in
    terms = hotwords(Settings(asr_hotwords=["一千并发"], asr_playbook_hotwords=True))
    assert terms[0] == "一千并发" and len(terms) > 1 and all("_" not in t for t in terms)
    res = engine.transcribe(load_clip("BAC009S0764W0121.wav"), terms)  # still a transcript
    assert len(res.text) >= 8


def test_the_asr_stage_turns_a_pause_into_a_partial_and_the_end_into_a_final(engine):
    stage = AsrStage(engine, hotwords=[])
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    pcm = load_clip("BAC009S0764W0121.wav")
    half = pcm[: len(pcm) // 2].astype("<i2").tobytes()
    whole = pcm.astype("<i2").tobytes()
    seg = lambda audio, final, end: ev.SpeechSegment(  # noqa: E731
        call_id="c1", turn=1, start_ms=0, end_ms=end, final=final, audio_pcm16=audio)
    (p1,) = stage.handle(seg(half, False, 2100), ctx)
    (p2,) = stage.handle(seg(whole, False, 4200), ctx)
    assert isinstance(p1.event, ev.TranscriptPartial) and p1.event.stable_prefix == ""
    assert p2.event.text.startswith(p2.event.stable_prefix)
    (final,) = stage.handle(seg(whole, True, 4200), ctx)  # same audio: the partial's decode is reused
    assert isinstance(final.event, ev.TranscriptFinal) and final.event.text == p2.event.text
    assert final.event.turn == 1 and final.event.asr_model == engine.name and final.event.audio_ms > 4000
    # bad audio is an error for the runner's dead-letter path, not a crash
    with pytest.raises(ValueError):
        stage.handle(seg(b"\x00" * 3, True, 10), ctx)
    assert stage.handle(seg(b"", True, 0), ctx) == []  # nothing said: nothing published


def test_eval_reports_cer_at_16k_and_on_the_phone_line_for_real_clips(engine, tmp_path):
    items = read_manifest(CLIPS / "manifest.jsonl")
    chosen = [i for i in items if i["language"] == "zh"][:2] + [i for i in items if i["language"] == "yue"][:1]
    report = evaluate(chosen, engine)
    s = report.summary(engine.name)
    assert s["clips"] == 3 and set(s["per_language"]) == {"zh", "yue"}
    assert 0 <= s["cer"] < 0.6 and 0 <= s["cer_8k"] < 0.7 and 0 < s["rtf"] < 2
    assert all(len(c.hyp) > 0 for c in report.clips)
    # a manifest whose only line has no text is refused, naming the file and the line
    bad = tmp_path / "m.jsonl"
    bad.write_text(json.dumps({"audio": "x.wav"}) + "\n")
    with pytest.raises(ValueError, match="m.jsonl"):
        read_manifest(bad)
    # ... and a bad line among good ones is skipped, the good ones kept
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"audio": "x.wav"}) + "\n" + json.dumps({"audio": "y.wav", "text": "你好"}) + "\n")
    assert [i["audio"] for i in read_manifest(mixed)] == ["y.wav"]


def test_phone_line_audio_still_transcribes(engine):
    pcm = load_clip("BAC009S0764W0122.wav")
    ref = for_cer(next(i["text"] for i in manifest() if i["audio"].endswith("BAC009S0764W0122.wav")))
    hyp = for_cer(engine.transcribe(phone_round_trip(pcm)).text)
    assert edit_distance(ref, hyp) / len(ref) < 0.5
    assert np.abs(phone_round_trip(pcm)).max() > 0


def test_end_of_turn_timing_streams_a_clip_through_the_vad_and_the_asr_stage(engine):
    """What `dianxiao eval asr` times and bench/bench_turn_timeline.py breaks down: a clip paced
    like a phone line, an early partial decoded during the pause, the final reusing it."""
    from agent.speech.evaluate import time_to_final
    from agent.speech.models import load_silero, load_smart_turn
    from agent.stages.vad import VadStage
    from tests.speech_helpers import need_pipecat_models

    silero, smart = need_pipecat_models()
    vad = load_silero(str(silero)), load_smart_turn(str(smart))
    events: list[dict] = []
    final_ms, wait_ms, text = time_to_final(lambda: VadStage(*vad), engine, load_clip("BAC009S0150W0126.wav"),
                                            trace=events.append)
    assert text and 0 < wait_ms < final_ms < 5000
    segments = [e for e in events if e["event"] == "segment"]
    decodes = [e for e in events if e["event"] == "asr"]
    assert segments[-1]["final"] and any(not s["final"] for s in segments)
    assert len(decodes) == len(segments)  # every segment reached the ASR stage
    final = next(d for d in decodes if d["final"])
    assert final["done_ms"] - final["start_ms"] < 50  # the partial's decode of the same audio was reused


def test_a_decode_that_loops_is_redone_once_with_the_full_window_not_a_temperature_ladder(engine, monkeypatch):
    # Whisper loops on audio cut off mid-word (a partial at a pause): "itititit…".  faster-whisper's
    # temperature ladder looped again on every rung and cost 6.6 s on a 2-core AVX2 box while the
    # caller's final waited behind it; one rung at temperature 0 costs ~1.2 s.
    from agent.speech.asr import looks_degenerate, repeated_sentence
    from agent.speech.codec import int16_to_float

    def loops(cut) -> bool:  # what transcribe() retries: a loop, not a sentence said twice
        raw = engine._decode_short(int16_to_float(cut), "")[0]
        return repeated_sentence(raw) is None and looks_degenerate(raw, len(cut) / 16000)

    pcm = load_clip("BAC009S0150W0126.wav")
    cuts = [pcm[: ms * 16] for ms in range(600, 1400, 100)]
    cuts += [phone_round_trip(c) for c in cuts]
    looping = next((c for c in cuts if loops(c)), None)
    if looping is None:
        pytest.skip("no cut of this clip loops with this CPU's int8 kernels")
    ladders = []
    real_generate = engine.model.generate_with_fallback
    monkeypatch.setattr(engine.model, "generate_with_fallback",
                        lambda *a, **k: ladders.append(a[3].temperatures) or real_generate(*a, **k))
    stage = AsrStage(engine, hotwords=[])
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    seg = ev.SpeechSegment(call_id="c1", turn=1, start_ms=0, end_ms=len(looping) // 16, final=True,
                           audio_pcm16=looping.astype("<i2").tobytes())
    out = stage.handle(seg, ctx)
    assert ladders == [[0.0]]  # one 30 s window decode, at temperature 0 only
    assert all(not looks_degenerate(e.event.text) for e in out)  # and no loop is published
