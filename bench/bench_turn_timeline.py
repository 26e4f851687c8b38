"""Where the end-of-turn latency goes, clip by clip: one JSON object per line.

    .venv/bin/python bench/bench_turn_timeline.py [--manifest ../shared/data/speech/manifest.jsonl] [--clips 8]

Each clip is streamed in real time as 8 kHz mu-law frames through the VAD stage, with the ASR
stage (as configured: correction, n-best rescoring) on a worker thread - what `dianxiao eval
asr` times.  Every time is in ms after the end of speech: when the VAD sent the early partial,
how long Smart Turn took at the pause, when the partial's decode started and ended, when the
turn ended, and when the final transcript was out.  `smart_turn_ms` well above its time on an
idle machine (bench_asr.py) means it fought the decoder for the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parents[1]


class TimedSmartTurn:
    """The VAD stage's Smart Turn, with each call's duration kept."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls_ms = inner, []

    def complete_probability(self, pcm16: Any) -> float:
        t = time.perf_counter()
        try:
            return self.inner.complete_probability(pcm16)
        finally:
            self.calls_ms.append((time.perf_counter() - t) * 1000)


def timeline(events: list[dict], smart_turn_ms: list[float], result: tuple[float, float, str]) -> dict:
    final_seg = next(e for e in reversed(events) if e["event"] == "segment" and e["final"])
    speech_end = final_seg["speech_end_ms"]  # media time = stream time: frames are paced in real time
    last_partial = next((e for e in reversed(events) if e["event"] == "segment" and not e["final"]
                         and e["end_ms"] == final_seg["end_ms"]), None)
    decodes = [e for e in events if e["event"] == "asr" and e["end_ms"] == final_seg["end_ms"]]
    partial_asr = next((e for e in reversed(decodes) if not e["final"]), None)
    final_asr = next((e for e in reversed(decodes) if e["final"]), None)
    rel = lambda ms: None if ms is None else round(ms - speech_end, 1)  # noqa: E731
    return {
        "final_ms": round(result[0], 1), "endpoint_wait_ms": round(result[1], 1),
        "early_partial_at": rel(last_partial["emitted_ms"]) if last_partial else None,
        "turn_end_at": rel(final_seg["emitted_ms"]),
        "smart_turn_ms": round(smart_turn_ms[-1], 1) if smart_turn_ms else None,
        "partial_decode_start": rel(partial_asr["start_ms"]) if partial_asr else None,
        "partial_decode_ms": round(partial_asr["done_ms"] - partial_asr["start_ms"], 1) if partial_asr else None,
        "final_handle_ms": round(final_asr["done_ms"] - final_asr["start_ms"], 1) if final_asr else None,
        # The stage reuses the partial's decode when the final has the same audio: a few ms, not a decode.
        "final_reused_partial": bool(final_asr and partial_asr and final_asr["done_ms"] - final_asr["start_ms"] < 30),
    }


def main() -> None:
    from agent.audiocall import read_wav
    from agent.settings import Settings
    from agent.speech.codec import resample
    from agent.speech.evaluate import read_manifest, time_to_final
    from agent.speech.factories import asr_engine, asr_stage, hotwords, vad_stage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=REPO.parent / "shared" / "data" / "speech" / "manifest.jsonl")
    ap.add_argument("--clips", type=int, default=8, help="first N clips of at most --max-s seconds")
    ap.add_argument("--max-s", type=float, default=6.0)
    args = ap.parse_args()
    settings = Settings()
    engine = asr_engine(settings)
    terms = hotwords(settings, from_playbook=False)
    rows = []
    for item in read_manifest(args.manifest):
        pcm, rate = read_wav(item["_path"])
        pcm = resample(pcm, rate, 16000) if rate != 16000 else pcm
        if len(pcm) / 16000 > args.max_s:
            continue
        events: list[dict] = []
        timed: list[TimedSmartTurn] = []

        def make_vad() -> Any:
            stage = vad_stage(settings)
            if stage.smart_turn is not None:
                stage.smart_turn = TimedSmartTurn(stage.smart_turn)
                timed.append(stage.smart_turn)
            return stage

        result = time_to_final(make_vad, engine, pcm, terms, asr_stage(settings, terms), trace=events.append)
        if result is None:
            continue
        row = {"clip": Path(item["audio"]).name, "speech_s": round(len(pcm) / 16000, 2),
               **timeline(events, timed[0].calls_ms if timed else [], result)}
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        if len(rows) >= args.clips:
            break
    for key in ("final_ms", "early_partial_at", "smart_turn_ms", "partial_decode_ms"):
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print(json.dumps({"metric": f"{key}_p50", "value": round(statistics.median(values), 1), "unit": "ms",
                              "clips": len(values)}), flush=True)


if __name__ == "__main__":
    main()
