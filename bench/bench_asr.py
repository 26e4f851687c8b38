"""Speech timings on this machine, one JSON object per line:
{"metric": ..., "value": ..., "unit": ...}.

    .venv/bin/python bench/bench_asr.py [--manifest ../shared/data/speech/manifest.jsonl] [--clips 8]

Measures: Whisper load time; decode time and RTF with the utterance-sized encoder window and
with faster-whisper's 30 s window; Silero per 32 ms window; Smart Turn per call; espeak-ng
time to the first chunk of a reply and for the whole reply.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from agent.audiocall import read_wav
from agent.machine import machine
from agent.settings import Settings
from agent.speech import assets
from agent.speech.asr import FasterWhisperEngine
from agent.speech.models import WINDOW, SileroState, SileroVad, SmartTurn
from agent.speech.tts import make_tts, split_sentences

REPO = Path(__file__).resolve().parents[1]


def emit(metric: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 4), "unit": unit, **extra, "machine": machine()},
                     ensure_ascii=False), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, default=REPO.parent / "shared" / "data" / "speech" / "manifest.jsonl")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    models = Settings().speech_models_dir
    items = [json.loads(line) for line in args.manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    clips = [read_wav(args.manifest.parent / i["audio"])[0] for i in items[: args.clips]]
    audio_s = sum(len(c) for c in clips) / 16000

    t = time.perf_counter()
    engine = FasterWhisperEngine(assets.whisper_base_dir(models), cpu_threads=args.threads)
    emit("asr_load_s", time.perf_counter() - t, "s")
    engine.transcribe(clips[0])  # warm-up
    for short in (True, False):
        engine.short_window = short
        times = [engine.transcribe(c).decode_ms for c in clips]
        window = "utterance" if short else "30s"
        emit("asr_decode_ms_p50", statistics.median(times), "ms", window=window, clips=len(clips))
        emit("asr_rtf", sum(times) / 1000 / audio_s, "x", window=window, threads=args.threads)

    vad = SileroVad(assets.silero_vad_path(models))
    state = SileroState()
    x = clips[0].astype(np.float32) / 32768
    n = len(x) // WINDOW
    t = time.perf_counter()
    for i in range(n):
        vad.probability(state, x[i * WINDOW : (i + 1) * WINDOW])
    emit("silero_ms_per_window", (time.perf_counter() - t) * 1000 / n, "ms", window_ms=32)

    smart = SmartTurn(assets.smart_turn_path(models))
    smart.complete_probability(clips[0])
    times = []
    for c in clips:
        t = time.perf_counter()
        smart.complete_probability(c)
        times.append((time.perf_counter() - t) * 1000)
    emit("smart_turn_ms_p50", statistics.median(times), "ms")

    tts = make_tts()
    reply = "您好，我是云启的小王。我们的企业版支持一千并发，价格是每月九百九十九元，另外还有私有化部署的方案。"
    t = time.perf_counter()
    chunks = split_sentences(reply)
    tts.synthesize(chunks[0])
    emit("tts_first_chunk_ms", (time.perf_counter() - t) * 1000, "ms", engine=tts.name)
    t = time.perf_counter()
    total = 0.0
    for c in chunks:
        pcm, rate = tts.synthesize(c)
        total += len(pcm) / rate
    emit("tts_rtf", (time.perf_counter() - t) / total, "x", engine=tts.name, audio_s=round(total, 2))


if __name__ == "__main__":
    main()
