"""ASR evaluation on a manifest of (audio, text[, language]) lines: CER per clip, per language
and overall (number-normalised, punctuation-free, simplified), real-time factor, and the time
from the end of speech to the final transcript through the real VAD/turn-taking stage.

CER is edit distance / reference length on `textnorm.for_cer` of both sides.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent import events as ev
from agent.jsonl import BadLine, finish, read_jsonl
from agent.speech.asr import AsrEngine
from agent.speech.codec import phone_round_trip
from agent.speech.frames import pcm_to_ulaw_frames
from agent.speech.textnorm import for_cer
from agent.stages.base import CallContext


def edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance over characters (two-row DP; strings here are < 200 chars)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


@dataclass
class ClipResult:
    audio: str
    language: str
    duration_s: float
    ref: str
    hyp: str
    hyp_8k: str
    errors: int
    errors_8k: int
    ref_chars: int
    decode_ms: float
    detected_language: str
    final_ms: float | None = None  # end of speech -> final transcript (8 kHz line, VAD + ASR)
    endpoint_wait_ms: float | None = None
    final_text: str | None = None

    @property
    def cer(self) -> float:
        return self.errors / max(1, self.ref_chars)

    @property
    def cer_8k(self) -> float:
        return self.errors_8k / max(1, self.ref_chars)


@dataclass
class Report:
    clips: list[ClipResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (audio, why) of clips not scored

    def _cer(self, clips: list[ClipResult], attr: str) -> float:
        return sum(getattr(c, attr) for c in clips) / max(1, sum(c.ref_chars for c in clips))

    def summary(self, model: str = "") -> dict[str, Any]:
        langs = sorted({c.language for c in self.clips})
        finals = [c.final_ms for c in self.clips if c.final_ms is not None]
        short = [c.final_ms for c in self.clips if c.final_ms is not None and c.duration_s <= 6.0]
        audio_s = sum(c.duration_s for c in self.clips)
        return {
            "model": model,
            "clips": len(self.clips),
            "skipped": len(self.skipped),
            "audio_s": round(audio_s, 1),
            "per_language": {
                lang: {
                    "clips": sum(c.language == lang for c in self.clips),
                    "cer": round(self._cer([c for c in self.clips if c.language == lang], "errors"), 4),
                    "cer_8k": round(self._cer([c for c in self.clips if c.language == lang], "errors_8k"), 4),
                    "language_id_accuracy": round(
                        sum(c.detected_language == lang for c in self.clips if c.language == lang)
                        / max(1, sum(c.language == lang for c in self.clips)), 3),
                }
                for lang in langs
            },
            "final_p50_ms_le6s": round(_pct(short, 50), 1) if short else None,
            "final_p95_ms": round(_pct(finals, 95), 1) if finals else None,
            "cer": round(self._cer(self.clips, "errors"), 4),
            "cer_8k": round(self._cer(self.clips, "errors_8k"), 4),
            "rtf": round(sum(c.decode_ms for c in self.clips) / 1000 / max(audio_s, 1e-9), 3),
            "final_p50_ms": round(_pct(finals, 50), 1) if finals else None,
        }


def _pct(xs: list[float], q: float) -> float:
    if len(xs) == 1:
        return xs[0]
    return float(np.percentile(np.array(xs), q))


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest's clips; a bad line is reported on stderr by number and skipped, a manifest
    with no usable line is an error (agent.jsonl.EmptyInput: one line, exit 2)."""
    items: list[dict[str, Any]] = []
    bad: list[BadLine] = []
    for n, item in read_jsonl(path, bad=bad):
        if not isinstance(item, dict) or not isinstance(item.get("audio"), str) or not isinstance(item.get("text"), str):
            bad.append(BadLine(n, "needs 'audio' and 'text' strings"))
            continue
        item["_path"] = (path.parent / item["audio"]).resolve()
        items.append(item)
    return finish(path, items, bad, "clips")


class ClipError(ValueError):
    """A clip that cannot be scored (missing, not a WAV, cut short): named, skipped, the run goes on."""


def read_clip(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM from a WAV (first channel).  Unlike a plain read, a file shorter than its own
    header says is refused: a clip cut off mid-data would otherwise be scored on part of its
    audio against the whole reference text, a wrong CER with no warning."""
    import wave

    try:
        with wave.open(str(path)) as w:
            width, channels, rate, declared = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            data = w.readframes(declared)
    except FileNotFoundError:
        raise ClipError("no such file") from None
    except (wave.Error, EOFError) as exc:  # EOFError: the header itself is cut off
        raise ClipError(f"not a readable WAV ({exc or 'file ends inside the header'})") from None
    except OSError as exc:
        raise ClipError(f"cannot read it ({exc.strerror or exc})") from None
    if width != 2:
        raise ClipError(f"{8 * width}-bit WAV; 16-bit PCM expected")
    got = len(data) // (width * channels)
    if got < declared or len(data) % (width * channels):
        raise ClipError(f"truncated: the header declares {declared} frames, the file holds {got}")
    if got == 0:
        raise ClipError("no audio in it")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels)[:, 0].copy()
    return pcm, rate


def time_to_final(vad_stage_factory: Callable[[], Any], engine: AsrEngine, pcm16k: np.ndarray,
                  hotwords: Iterable[str] = (), asr_stage: Any = None,
                  trace: Callable[[dict[str, Any]], None] | None = None) -> tuple[float, float, str] | None:
    """Stream the clip (as 8 kHz mu-law frames, paced in real time like a phone line) into a
    fresh VAD stage, with a real ASR stage consuming its segments on a worker thread (as a
    separate ASR consumer does); for the last final transcript return (end of speech -> final
    transcript ms, of which endpoint wait ms, final text).

    End of speech = end of the last speech window, on the wall clock of the paced stream; the
    final is ready when the ASR stage has published it - a partial decoded during the pause is
    reused.  The wait is media time: the silence the turn-taker needed before ending the turn.
    Wall-clock measured, so it takes as long as the audio (plus a little silence).  `asr_stage`:
    the ASR stage as configured (correction, n-best rescoring); default a bare one on `engine`.
    `trace` (bench/bench_turn_timeline.py) gets each segment the VAD emits and each ASR call,
    with wall-clock ms since the stream started (called from two threads)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from agent.stages.asr import AsrStage

    stage = vad_stage_factory()
    asr = asr_stage if asr_stage is not None else AsrStage(engine, list(hotwords))
    ctx = CallContext(call_id="eval", state=stage.new_state("eval"))
    actx = CallContext(call_id="eval", state=asr.new_state("eval"))
    speech_frames = -(-len(pcm16k) // (16000 * ev.FRAME_MS // 1000))
    audio = np.concatenate([pcm16k, np.zeros(32000, dtype=np.int16)])

    def run_asr(seg: ev.SpeechSegment) -> tuple[list[Any], float]:
        started = time.perf_counter()
        out = asr.handle(seg, actx)
        done = time.perf_counter()
        if trace:
            trace({"event": "asr", "final": seg.final, "end_ms": seg.end_ms, "audio_ms": seg.end_ms - seg.start_ms,
                   "start_ms": (started - t0) * 1000, "done_ms": (done - t0) * 1000})
        return out, done

    finals: list[tuple[float, float, Future]] = []  # (speech end on the wall clock, wait ms, decode)
    with ThreadPoolExecutor(max_workers=1) as pool:
        t0 = time.perf_counter()
        for i, payload in enumerate(pcm_to_ulaw_frames(audio, 16000)):
            # frame i is complete (and can be sent) once its 20 ms have been spoken
            time.sleep(max(0.0, t0 + (i + 1) * ev.FRAME_MS / 1000 - time.perf_counter()))
            handled = time.perf_counter()
            out = stage.handle(ev.AudioFrame(call_id="eval", codec="pcmu8k", frame_index=i, payload=payload), ctx)
            for emit in out:
                seg = emit.event
                if isinstance(seg, ev.SpeechSegment):
                    speech_end_ms = seg.end_ms - stage.params.tail_ms
                    if trace:
                        now = time.perf_counter()
                        trace({"event": "segment", "final": seg.final, "end_ms": seg.end_ms,
                               "speech_end_ms": speech_end_ms, "emitted_ms": (now - t0) * 1000,
                               "vad_ms": (now - handled) * 1000})
                    fut = pool.submit(run_asr, seg)
                    if seg.final:
                        finals.append((t0 + speech_end_ms / 1000, (i + 1) * ev.FRAME_MS - speech_end_ms, fut))
            if i >= speech_frames and finals and ctx.state.turn.phase.value == "quiet":
                break  # the clip is over and its last turn has ended
        last: tuple[float, float, str] | None = None
        for speech_end, wait_ms, fut in finals:
            emits, done = fut.result()
            texts = [e.event.text for e in emits if isinstance(e.event, ev.TranscriptFinal)]
            if texts:
                last = ((done - speech_end) * 1000, wait_ms, texts[0])
    return last


def evaluate(
    items: list[dict[str, Any]], engine: AsrEngine, *, vad_stage_factory: Callable[[], Any] | None = None,
    hotwords: Iterable[str] = (), progress: Callable[[ClipResult], None] | None = None,
    asr_stage_factory: Callable[[], Any] | None = None,
    skipped: Callable[[str, str], None] | None = None,
) -> Report:
    """Score each clip; a clip that cannot be read is recorded in `report.skipped` (and passed to
    `skipped(audio, reason)`) and the rest are scored."""
    from agent.speech.codec import resample

    report = Report()
    terms = list(hotwords)
    for item in items:
        try:
            pcm, rate = read_clip(item["_path"])
        except ClipError as exc:
            report.skipped.append((item["audio"], str(exc)))
            if skipped:
                skipped(item["audio"], str(exc))
            continue
        if rate != 16000:
            pcm = resample(pcm, rate, 16000)
        ref = for_cer(item["text"])
        r16 = engine.transcribe(pcm, terms)
        r8 = engine.transcribe(phone_round_trip(pcm), terms)
        clip = ClipResult(
            audio=item["audio"], language=item.get("language", "zh"), duration_s=len(pcm) / 16000, ref=ref,
            hyp=for_cer(r16.text), hyp_8k=for_cer(r8.text), errors=edit_distance(ref, for_cer(r16.text)),
            errors_8k=edit_distance(ref, for_cer(r8.text)), ref_chars=len(ref), decode_ms=r16.decode_ms,
            detected_language=r16.language,
        )
        if vad_stage_factory is not None:
            timing = time_to_final(vad_stage_factory, engine, pcm, terms,
                                   asr_stage_factory() if asr_stage_factory else None)
            if timing:
                clip.final_ms, clip.endpoint_wait_ms, clip.final_text = timing
        report.clips.append(clip)
        if progress:
            progress(clip)
    return report


def clip_line(c: ClipResult) -> dict[str, Any]:
    d = asdict(c)
    d.update(cer=round(c.cer, 4), cer_8k=round(c.cer_8k, 4))
    return d
