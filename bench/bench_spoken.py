"""Spoken-understanding benchmark: what the domain correction costs and whether it ever hurts.

    .venv/bin/python bench/bench_spoken.py [--clips ../shared/data/speech/manifest.jsonl] [--no-asr]

Prints one JSON object per line ({"metric", "value", "unit", ...}):
- correction latency per utterance (p50/p95 ms) over the NLU test split's texts, and the share
  of those (correct) texts it changed at all - an over-correction rate;
- on the real recorded clips (Mandarin only): CER at 16 kHz and after the 8 kHz mu-law round
  trip, with and without correction (the "no regression" bar), and how many edits it made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from agent.resources import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]


def emit(metric: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 4), "unit": unit, **extra}, ensure_ascii=False),
          flush=True)


def bench_correction_latency() -> None:
    from agent.asrfix import Corrector, build_lexicon

    t0 = time.perf_counter()
    corrector = Corrector(build_lexicon())
    emit("asrfix_load", time.perf_counter() - t0, "s")
    texts = [json.loads(x)["text"] for x in (DATA_DIR / "nlu" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    lat = []
    changed = 0
    for t in texts:
        s = time.perf_counter()
        out = corrector.correct(t)
        lat.append((time.perf_counter() - s) * 1000)
        changed += bool(out.changes)
    lat.sort()
    emit("asrfix_p50", statistics.median(lat), "ms", n=len(lat))
    emit("asrfix_p95", lat[int(0.95 * (len(lat) - 1))], "ms", n=len(lat))
    emit("asrfix_changed_clean_text", changed / len(texts), "share", n=len(texts),
         note="NLU test texts are what callers said; any change there is an over-correction or a spelling choice")


def bench_shared_clips(manifest: Path, prompts: tuple[bool, ...] = (False,)) -> None:
    from agent import settings as settings_mod
    from agent.asrfix import Corrector, build_lexicon
    from agent.asrfix.rescore import Rescorer, correct_transcript, rule_understands
    from agent.speech.asr import make_engine
    from agent.speech.codec import phone_round_trip
    from pipelines.spoken_eval import cer, read_wav_16k

    s = settings_mod.load()
    lexicon = build_lexicon(s.playbook)
    corrector = Corrector(lexicon)
    # As the ASR stage runs with correction on: n-best rescored by domain terms / understood request.
    rescorer = Rescorer.for_lexicon(corrector, lexicon, rule_understands())
    engine = make_engine(s.asr_engine, s.asr_model, s.speech_models_dir, compute_type=s.asr_compute_type,
                         cpu_threads=s.asr_threads, beam_size=s.asr_beam_size, language=s.asr_language,
                         short_window=s.asr_short_window, nbest=s.asr_nbest)
    rows = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = [r for r in rows if r.get("language", "zh") == "zh"]
    for rate, label in ((16000, "16k"), (8000, "8k")):
        for prompt in prompts:
            raw_pairs, fixed_pairs, edits = [], [], []
            for r in rows:
                pcm = read_wav_16k(manifest.parent / r["audio"])
                if rate == 8000:
                    pcm = phone_round_trip(pcm)
                res = engine.transcribe(pcm, hotwords=lexicon.prompt_terms() if prompt else ())
                text = res.text
                fixed_text, changes = correct_transcript(text, res.hypotheses, corrector, rescorer)
                raw_pairs.append((r["text"], text))
                fixed_pairs.append((r["text"], fixed_text))
                edits.extend(f"{c['before']}->{c['after']}" for c in changes)
            tag = f"{label}{'_prompt' if prompt else ''}"
            emit(f"shared_cer_{tag}_off", cer(raw_pairs), "cer", n=len(rows))
            emit(f"shared_cer_{tag}_on", cer(fixed_pairs), "cer", n=len(rows), edits=edits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "speech" / "manifest.jsonl")
    ap.add_argument("--no-asr", action="store_true", help="only the correction latency (no Whisper)")
    ap.add_argument("--with-prompt", action="store_true", help="also decode with the lexicon's hot-word prompt")
    a = ap.parse_args()
    bench_correction_latency()
    if not a.no_asr:
        if a.clips.is_file():
            bench_shared_clips(a.clips, (False, True) if a.with_prompt else (False,))
        else:
            emit("shared_clips_missing", 0, "", path=str(a.clips))


if __name__ == "__main__":
    main()
