"""End of turn, offline: how soon the VAD stage ends a caller's turn, and how often it ends one
the caller had not finished (issue 17 item 2).  One JSON object per line.

    .venv/bin/python bench/bench_endpointing.py                      # both Smart Turn timings
    .venv/bin/python bench/bench_endpointing.py --pauses 0,150,300,600 --bars 0.7

Every Mandarin clip of ../shared/data/speech goes through the phone path (8 kHz, mu-law, 20 ms
frames) into the real VAD stage (Silero + the turn state machine + Smart Turn), once as
recorded and once per `--pauses` value with that much silence inserted mid-sentence (at the
quietest 20 ms of the middle third, as bench_voice.py does).  Frames are fed as fast as the
stage takes them; all times are media time, so the figures do not depend on the machine's load.

- endpoint_ms: the caller's acoustic end (the end of the last 32 ms window a fresh Silero
  scores >= 0.5 on the clip) -> the media time of the frame at which the stage wrote the final
  segment.  What the caller waits for before the ASR final can even start.
- premature: a clip whose first final segment ends before the clip's speech is over (the turn
  was cut at the inserted pause, or inside the sentence).  The issue's bar: <= 2 % of turns.
- smart_turn_calls: how many times Smart Turn ran per clip.

Compared: Smart Turn asked at the 192 ms pause (`--timings pause`, the default setting) and also
at the early point, ~96 ms of silence (`early`, `DIANXIAO_TURN_SMART_EARLY=true`, with each
`--early-bars` value), for each `--bars` value of `turn_complete`.

The semantic signal (`--words`, agent/speech/completeness.py): each partial segment the stage
writes is decoded by the real ASR stage (Whisper as configured, decodes cached by audio) and its
TranscriptPartial is handed back to the VAD stage `--asr-delay-ms` of media time later (the
decode's wall time on a loaded box; 0 = at once).  Every `--words-complete` x `--hold-ms` value is
a variant beside Smart Turn alone ("words": null).  Each line is reported for all clips and for
the even- and odd-numbered clips (`subset`): choose thresholds on one half, read the other.

    .venv/bin/python bench/bench_endpointing.py --timings pause --words default --words-complete 0.3,0.5 --hold-ms 800,1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_voice import FRAME, SPEECH, acoustic_end_frame, load_8k, pct, with_pause  # noqa: E402

LEAD_MS = 400  # silence before the caller speaks
TRAIL_MS = 1600  # silence after: longer than max_silence_ms, so every turn ends


class CountingSmartTurn:
    """Counts the calls a variant makes; answers the same audio from a cache (the variants and the
    pause lengths share audio up to the cut), so a sweep costs one model run per distinct audio."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.cache = inner, 0, {}

    def complete_probability(self, pcm16):
        self.calls += 1
        key = hash(np.asarray(pcm16).tobytes())
        if key not in self.cache:
            self.cache[key] = self.inner.complete_probability(pcm16)
        return self.cache[key]


class CachedEngine:
    """The ASR engine with decodes cached by audio (same reason)."""

    def __init__(self, inner) -> None:
        self.inner, self.cache = inner, {}
        self.name = getattr(inner, "name", "asr")

    def transcribe(self, pcm16, hotwords=()):
        key = hash(np.asarray(pcm16).tobytes())
        if key not in self.cache:
            self.cache[key] = self.inner.transcribe(pcm16, hotwords)
        return self.cache[key]


def clips(pauses: list[int]) -> list[tuple[str, int, np.ndarray, int]]:
    """(clip, pause, audio, index among the Mandarin clips): the index picks the even/odd half."""
    items = [json.loads(x) for x in (SPEECH / "manifest.jsonl").read_text().splitlines() if x.strip()]
    out = []
    for i, item in enumerate(x for x in items if x["language"] == "zh"):
        pcm = load_8k(SPEECH / item["audio"])
        for p in pauses:
            out.append((item["audio"], p, with_pause(pcm, p) if p else pcm, i))
    return out


def run_clip(stage, pcm: np.ndarray, asr=None, asr_delay_ms: int = 0) -> dict:
    from agent import events as ev
    from agent.speech.codec import ulaw_encode
    from agent.stages.base import CallContext

    lead = np.zeros(LEAD_MS * 8, dtype=np.int16)
    trail = np.zeros(TRAIL_MS * 8, dtype=np.int16)
    audio = np.concatenate([lead, pcm, trail])
    speech_end_ms = LEAD_MS + acoustic_end_frame(pcm) * 20
    ctx = CallContext(call_id="bench", state=stage.new_state("bench"))
    actx = CallContext(call_id="bench", state=asr.new_state("bench")) if asr is not None else None
    finals: list[tuple[int, int]] = []  # (emitted at media ms, segment end ms)
    due: list[tuple[int, object]] = []  # (frame index at which it arrives, TranscriptPartial)
    texts: list[str] = []

    def outputs(emits: list, i: int) -> None:
        for emit in emits:
            e = emit.event
            if isinstance(e, ev.SpeechSegment) and e.final:
                finals.append(((i + 1) * 20, e.end_ms))
            elif isinstance(e, ev.SpeechSegment) and asr is not None:
                for out in asr.handle(e, actx):
                    due.append((i + 1 + -(-asr_delay_ms // 20), out.event))

    for i in range(len(audio) // FRAME):
        for at, tp in [d for d in due if d[0] <= i]:
            due.remove((at, tp))
            texts.append(tp.text)
            outputs(stage.handle(tp, ctx), i - 1)
        frame = ev.AudioFrame(call_id="bench", turn=0, stage="caller", frame_index=i, codec="pcmu8k", payload=ulaw_encode(audio[i * FRAME : (i + 1) * FRAME]))
        outputs(stage.handle(frame, ctx), i)
    if not finals:
        return {"endpoint_ms": None, "premature": False, "finals": 0}
    first_end = finals[0][1]
    # premature: the first turn's audio stops well before the caller's last word (one window of slack)
    premature = first_end < speech_end_ms - 64
    last_at = finals[-1][0]
    return {"endpoint_ms": last_at - speech_end_ms, "premature": premature, "finals": len(finals),
            "first_end_ms": first_end - speech_end_ms, "partials_heard": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pauses", default="0,150,300,600", help="mid-sentence pauses (ms) to insert; 0 = the clip as recorded")
    ap.add_argument("--bars", default="0.7", help="Smart Turn turn_complete values to compare")
    ap.add_argument("--early-bars", default="0.9", help="early_turn_complete values to compare (with --timings early)")
    ap.add_argument("--timings", default="early,pause", help="when Smart Turn is first asked: early (default), pause")
    ap.add_argument("--words", default="", help="completeness model: 'default' (the shipped one) or an .npz path; "
                    "empty = Smart Turn alone only")
    ap.add_argument("--words-complete", default="0.5", help="turn_semantic_complete values to compare")
    ap.add_argument("--hold-ms", default="1000", help="turn_semantic_hold_ms values to compare")
    ap.add_argument("--wait-ms", type=int, default=600, help="turn_semantic_wait_ms")
    ap.add_argument("--asr-delay-ms", type=int, default=150, help="media time from a partial segment to its transcript")
    ap.add_argument("--no-baseline", action="store_true", help="only the --words variants")
    ap.add_argument("--per-clip", type=Path, default=None, help="write every clip's result here (JSONL)")
    a = ap.parse_args()
    from agent.settings import Settings
    from agent.speech import assets
    from agent.speech.models import load_silero, load_smart_turn
    from agent.speech.turns import TurnParams
    from agent.stages.vad import VadStage

    settings = Settings()
    silero = load_silero(str(assets.silero_vad_path(settings.speech_models_dir)))
    smart = CountingSmartTurn(load_smart_turn(str(assets.smart_turn_path(settings.speech_models_dir))))
    pauses = [int(x) for x in a.pauses.split(",")]
    data = clips(pauses)
    words_model, asr = None, None
    if a.words:
        from agent.speech.completeness import CompletenessModel, default_path
        from agent.speech.factories import asr_stage

        words_model = CompletenessModel.load(default_path() if a.words == "default" else Path(a.words))
        asr = asr_stage(settings)
        asr.engine = CachedEngine(asr.engine)
    variants = []
    for bar in [float(x) for x in a.bars.split(",")]:
        for timing in a.timings.split(","):
            for early_bar in ([float(x) for x in a.early_bars.split(",")] if timing == "early" else [None]):
                if not a.no_baseline or not a.words:
                    variants.append((bar, timing, early_bar, None, None))
                if a.words:
                    for wc in [float(x) for x in a.words_complete.split(",")]:
                        for hold in [int(x) for x in a.hold_ms.split(",")]:
                            variants.append((bar, timing, early_bar, wc, hold))
    per_clip = open(a.per_clip, "w") if a.per_clip else None
    for bar, timing, early_bar, wc, hold in variants:
        params = TurnParams(turn_complete=bar, smart_turn_early=timing == "early",
                            **({"early_turn_complete": early_bar} if early_bar is not None else {}),
                            **({"semantic_complete": wc, "semantic_hold_ms": hold, "semantic_wait_ms": a.wait_ms}
                               if wc is not None else {}))
        stage = VadStage(silero, smart, params, completeness=words_model if wc is not None else None)
        rows = []
        for name, pause, pcm, index in data:
            smart.calls = 0
            r = run_clip(stage, pcm, asr if wc is not None else None, a.asr_delay_ms)
            rows.append({"clip": name, "pause_ms": pause, "index": index, **r, "smart_turn_calls": smart.calls})
        head = {"bench": "endpointing", "smart_turn_at": timing, "turn_complete": bar, "early_turn_complete": early_bar,
                "words": None if wc is None else {"complete": wc, "hold_ms": hold, "wait_ms": a.wait_ms,
                                                    "asr_delay_ms": a.asr_delay_ms}}
        if per_clip:
            for r in rows:
                per_clip.write(json.dumps({**head, **r}, ensure_ascii=False) + "\n")
        for subset, keep in (("all", lambda r: True), ("even", lambda r: r["index"] % 2 == 0),
                             ("odd", lambda r: r["index"] % 2 == 1)):
            part = [r for r in rows if keep(r)]
            for pause in pauses:
                sub = [r for r in part if r["pause_ms"] == pause]
                lat = [r["endpoint_ms"] for r in sub if r["endpoint_ms"] is not None and not r["premature"]]
                print(json.dumps({
                    **head, "subset": subset, "pause_ms": pause, "clips": len(sub),
                    "endpoint_p50_ms": pct(lat, 0.5), "endpoint_p95_ms": pct(lat, 0.95),
                    "premature": sum(r["premature"] for r in sub),
                    "premature_rate": round(sum(r["premature"] for r in sub) / len(sub), 3),
                    "smart_turn_calls_per_clip": round(sum(r["smart_turn_calls"] for r in sub) / len(sub), 2),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }), flush=True)
            allp = [r for r in part if r["pause_ms"] > 0]
            print(json.dumps({**head, "subset": subset, "summary": True,
                              "premature": sum(r["premature"] for r in part), "turns": len(part),
                              "premature_rate_paused": round(sum(r["premature"] for r in allp) / max(1, len(allp)), 3),
                              "premature_rate_all": round(sum(r["premature"] for r in part) / len(part), 3),
                              "endpoint_p50_ms_unpaused": pct([r["endpoint_ms"] for r in part if r["pause_ms"] == 0
                                                               and r["endpoint_ms"] is not None and not r["premature"]], 0.5),
                              "endpoint_p95_ms_unpaused": pct([r["endpoint_ms"] for r in part if r["pause_ms"] == 0
                                                               and r["endpoint_ms"] is not None and not r["premature"]], 0.95),
                              "endpoint_p50_ms_all": pct([r["endpoint_ms"] for r in part
                                                          if r["endpoint_ms"] is not None and not r["premature"]], 0.5),
                              "endpoint_p95_ms_all": pct([r["endpoint_ms"] for r in part
                                                          if r["endpoint_ms"] is not None and not r["premature"]], 0.95)}),
                  flush=True)


if __name__ == "__main__":
    main()
