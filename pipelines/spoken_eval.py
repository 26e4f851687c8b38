"""Spoken understanding, measured: audio -> ASR -> (domain correction) -> NLU, the way a call
hears it, against the reference transcript and labels.

Input lines: {"audio": "path relative to the file", "text": "reference transcript",
"intents": [...], "entities": [...], "context": [...]} (any WAV sample rate, PCM 8/16/32-bit).
The ASR is a callable (16 kHz int16 -> text) so any engine, or a stub, can be measured; the
default is the configured faster-whisper engine with the playbook's hot-words.

Reported: CER (before/after correction), intent micro-F1 / exact-set match / entity F1 on the ASR
output and on the reference text, their difference (the cost of the ear), the domain-term error
rate (lexicon terms of the reference that the transcript does not contain) before/after
correction, and each utterance the ear got wrong."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.jsonl import read_jsonl
from agent.asrfix import Corrector, DomainLexicon
from agent.asrfix.rescore import correct_transcript, domain_terms_in, lexicon_surfaces
from agent.nlu import Understander
from agent.nlu.evaluate import Example, evaluate, parse_example
from agent.speech.codec import PIPELINE_RATE, resample
from agent.speech.textnorm import for_cer

Asr = Callable[[np.ndarray], "str | list[list]"]  # 16 kHz int16 mono -> transcript, or n-best [[text, score], ...]


class SpokenDataError(ValueError):
    pass


@dataclass(frozen=True)
class SpokenItem:
    audio: Path
    example: Example  # reference text + labels


@dataclass
class Heard:
    item: SpokenItem
    asr_text: str
    fixed_text: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    decode_ms: float = 0.0
    error: str = ""


def load_spoken(path: Path) -> list[SpokenItem]:
    items = []
    base = path.parent
    for i, obj in read_jsonl(path, SpokenDataError):
        if not isinstance(obj, dict) or not isinstance(obj.get("audio"), str):
            raise SpokenDataError(f"{path}:{i}: expected an object with a string 'audio'")
        try:
            ex = parse_example(obj, f"{path}:{i}")
        except ValueError as exc:
            raise SpokenDataError(str(exc)) from exc
        items.append(SpokenItem((base / obj["audio"]).resolve(), ex))
    if not items:
        raise SpokenDataError(f"{path}: no lines")
    return items


def read_wav_16k(path: Path) -> np.ndarray:
    """Any-rate PCM WAV -> 16 kHz int16 mono (what the ASR stage receives after the codec)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, ch, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise SpokenDataError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise SpokenDataError(f"{path}: {8 * width}-bit WAV is not supported (use 8/16/32-bit PCM)")
    if ch > 1:
        x = x[: len(x) // ch * ch].reshape(-1, ch).mean(axis=1)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    return resample(pcm, rate, PIPELINE_RATE)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def cer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus CER over (reference, hypothesis) in the scoring form (simplified, numbers as
    digits, no punctuation), the same form `dianxiao eval asr` uses."""
    errs = total = 0
    for ref, hyp in pairs:
        r, h = for_cer(ref), for_cer(hyp)
        errs += edit_distance(r, h)
        total += len(r)
    return errs / total if total else 0.0


def domain_term_error_rate(pairs: Iterable[tuple[str, str]], lexicon: DomainLexicon) -> tuple[float, int]:
    """Share of the reference's domain-term occurrences missing from the transcript."""
    surfaces = lexicon_surfaces(lexicon)
    missed = total = 0
    for ref, hyp in pairs:
        want = domain_terms_in(ref, surfaces)
        h = for_cer(hyp)
        total += len(want)
        missed += sum(1 for s in want if s not in h)
    return (missed / total if total else 0.0), total


def audio_key(path: Path, config: str) -> str:
    """Cache key of one decode: the clip's bytes and the ASR configuration."""
    import hashlib

    h = hashlib.sha256(config.encode("utf-8"))
    h.update(path.read_bytes())
    return h.hexdigest()[:24]


def transcribe_all(items: Sequence[SpokenItem], asr: Asr, corrector: Corrector | None,
                   progress: Callable[[], None] | None = None, cache: dict[str, Any] | None = None,
                   config: str = "", rescorer: Any = None) -> list[Heard]:
    """Decode every clip (or take it from `cache`, keyed by audio bytes + `config`), then correct.
    `asr` returns a transcript or Whisper's n-best as [text, score] pairs; with a `rescorer`
    (agent/asrfix/rescore.py) the n-best is rescored before correction, as the ASR stage does."""
    out = []
    for it in items:
        t0 = time.perf_counter()
        err = ""
        key = None
        try:
            key = audio_key(it.audio, config) if cache is not None else None
            if key is not None and key in cache:
                value = cache[key]
            else:
                value = asr(read_wav_16k(it.audio))
                if key is not None:
                    cache[key] = value
        except (SpokenDataError, OSError) as exc:  # a bad clip is reported, the run goes on
            value, err = "", str(exc)
        hyps = [(h[0], float(h[1])) for h in value] if isinstance(value, list) and value else [(str(value or ""), 0.0)]
        text = hyps[0][0]
        ms = (time.perf_counter() - t0) * 1000
        fixed_text, changes = correct_transcript(text, hyps, corrector, rescorer) if corrector is not None else (text, [])
        out.append(Heard(it, text, fixed_text, changes, ms, err))
        if progress:
            progress()
    return out


def score(heard: Sequence[Heard], understander: Understander, lexicon: DomainLexicon,
          correction: bool = True) -> dict[str, Any]:
    """All figures for one run; `correction` picks which transcript the NLU hears."""
    refs = [h.item.example for h in heard]
    hyp_texts = [h.fixed_text if correction else h.asr_text for h in heard]
    on_text = evaluate(understander, refs)
    on_speech = evaluate(understander, [replace(ex, text=t) for ex, t in zip(refs, hyp_texts)])
    raw_pairs = [(ex.text, h.asr_text) for ex, h in zip(refs, heard)]
    fixed_pairs = [(ex.text, h.fixed_text) for ex, h in zip(refs, heard)]
    dter_before, n_terms = domain_term_error_rate(raw_pairs, lexicon)
    dter_after, _ = domain_term_error_rate(fixed_pairs, lexicon)
    s_speech, s_text = on_speech["summary"], on_text["summary"]
    failures = []
    speech_err = {e["text"]: e for e in on_speech["errors"]}
    for h, t in zip(heard, hyp_texts):
        e = speech_err.get(t)
        if e is not None or h.error:
            failures.append({"audio": h.item.audio.name, "ref": h.item.example.text, "asr": h.asr_text,
                             "heard": t, "gold": e["gold"] if e else None, "pred": e["pred"] if e else None,
                             "changes": h.changes, "error": h.error or None})
    decode = sorted(h.decode_ms for h in heard)
    return {
        "summary": {
            "n": len(heard),
            "correction": correction,
            "cer": round(cer(fixed_pairs if correction else raw_pairs), 4),
            "cer_raw": round(cer(raw_pairs), 4),
            "micro_f1": s_speech["micro_f1"],
            "text_micro_f1": s_text["micro_f1"],
            "f1_gap": round(s_text["micro_f1"] - s_speech["micro_f1"], 4),
            "exact_match": s_speech["exact_match"],
            "text_exact_match": s_text["exact_match"],
            "entity_f1": s_speech["entity_f1"],
            "text_entity_f1": s_text["entity_f1"],
            "domain_terms": n_terms,
            "dter_before": round(dter_before, 4),
            "dter_after": round(dter_after, 4) if correction else round(dter_before, 4),
            "changes": sum(len(h.changes) for h in heard) if correction else 0,
            "asr_p50_ms": round(decode[len(decode) // 2], 1) if decode else 0.0,
        },
        "per_intent": on_speech["per_intent"],
        "failures": failures,
    }


def report_lines(result: dict[str, Any], show_failures: int = 20) -> Iterable[str]:
    s = result["summary"]
    yield f"{'intent':24s} {'P':>7s} {'R':>7s} {'F1':>7s} {'support':>8s}   (on the ASR transcripts)"
    for n, m in result["per_intent"].items():
        yield f"{n:24s} {m['precision']:7.3f} {m['recall']:7.3f} {m['f1']:7.3f} {m['support']:8d}"
    yield ""
    yield f"failures ({len(result['failures'])}):"
    for f in result["failures"][:show_failures]:
        yield "  " + json.dumps(f, ensure_ascii=False)
    yield ""
    yield (f"n={s['n']} correction={'on' if s['correction'] else 'off'}  CER={s['cer']:.4f} (raw {s['cer_raw']:.4f})  "
           f"domain-term errors {s['dter_before']:.3f} -> {s['dter_after']:.3f} of {s['domain_terms']}")
    yield (f"intent micro-F1: speech {s['micro_f1']:.4f}  text {s['text_micro_f1']:.4f}  cost of the ear "
           f"{s['f1_gap']:+.4f}   exact-set: speech {s['exact_match']:.4f} text {s['text_exact_match']:.4f}   "
           f"entity F1: speech {s['entity_f1']:.4f} text {s['text_entity_f1']:.4f}")
    yield json.dumps(s, ensure_ascii=False)
