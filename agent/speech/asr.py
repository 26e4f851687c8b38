"""ASR engines: audio (16 kHz PCM16) in, a normalised transcript out.

The engine is a plugin (`AsrEngine` protocol); the default is faster-whisper.  For short
utterances it calls the CTranslate2 Whisper model directly with an encoder window sized to the
audio (rounded up, plus a margin) instead of the fixed 30 s window faster-whisper's
`transcribe` pads every call to: on 2 cores Whisper base's encoder then takes ~0.09 s instead
of ~0.7 s for a 6 s utterance, with the same transcripts on our clips (docs/speech.md has the
CER of both).  Utterances longer than 30 s go through `transcribe()` unchanged.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from agent.speech.codec import PIPELINE_RATE, int16_to_float
from agent.speech.textnorm import looks_cantonese, normalise_transcript

log = structlog.get_logger("dianxiao.speech.asr")

# Silence margin after the utterance in the short encoder window, in 10 ms feature frames.
WINDOW_MARGIN_FRAMES = 100  # 0.5 s measured: CER 13.4 % -> 16.8 %


def encoder_window_frames(feature_frames: int) -> int:
    """The short encoder window for an utterance of `feature_frames` 10 ms frames: the audio
    rounded up to whole seconds + 1 s of silence margin (min 2 s, max Whisper's 30 s).  The
    adaptation pipeline trains on exactly these windows, so keep it the one definition."""
    return min(3000, max(200, math.ceil(feature_frames / 100) * 100 + WINDOW_MARGIN_FRAMES))


@dataclass(frozen=True)
class AsrResult:
    text: str  # normalised: simplified, spoken numbers as digits
    raw_text: str  # as the model wrote it
    language: str  # "zh" or "yue" (or whatever the engine detected)
    language_prob: float | None
    avg_logprob: float | None
    audio_ms: int
    decode_ms: float
    # Whisper's n-best (normalised text, its length-normalised score), first = `text`; empty
    # unless the engine was asked for several hypotheses (agent/asrfix/rescore.py uses them).
    hypotheses: tuple[tuple[str, float], ...] = ()


class AsrEngine(Protocol):
    name: str

    def transcribe(self, pcm16: np.ndarray, hotwords: Sequence[str] = ()) -> AsrResult: ...


def hotword_prompt(terms: Sequence[str], initial_prompt: str = "") -> str:
    """The text Whisper is conditioned on: the playbook's domain terms (product names, ERP,
    SaaS, 并发...) as a list, then an optional sentence.  Terms are de-duplicated, order kept."""
    seen: list[str] = []
    for t in terms:
        t = t.strip()
        if t and t not in seen:
            seen.append(t)
    return "，".join(seen) + (("。" + initial_prompt) if initial_prompt else "")


class FasterWhisperEngine:
    """Whisper via faster-whisper / CTranslate2 (int8 on CPU by default)."""

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 5,
        language: str = "zh",
        short_window: bool = True,
        initial_prompt: str = "",
        download_root: Path | None = None,
        nbest: int = 1,
        num_workers: int = 1,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        started = time.perf_counter()
        # A directory is loaded as is; any other string is a model name for the hub
        # (small, large-v3, a fine-tune's repo id) - the only path that needs internet.
        self.model = WhisperModel(
            str(model), device=device, compute_type=compute_type, cpu_threads=cpu_threads,
            download_root=str(download_root) if download_root else None,
            # CTranslate2 inter_threads: this many decodes may run at once from different Python
            # threads (the ASR stage's workers), each on cpu_threads threads
            num_workers=max(1, num_workers),
        )
        self.device = device
        self.workers = max(1, num_workers)
        self.name = f"faster-whisper:{Path(str(model)).name}:{compute_type}"
        self.beam_size = beam_size
        self.language = language
        self.short_window = short_window
        self.initial_prompt = initial_prompt
        self.nbest = max(1, min(nbest, beam_size))  # beam search keeps beam_size hypotheses at most
        self._tokenizer = Tokenizer(self.model.hf_tokenizer, True, task="transcribe", language=language)
        # faster-whisper lists all languages for any multilingual model; only large-v3-era
        # vocabularies actually have <|yue|>, so ask the tokenizer.
        vocab = self.model.hf_tokenizer
        self._languages = {c for c in ("zh", "yue") if vocab.token_to_id(f"<|{c}|>") is not None}
        self.load_s = time.perf_counter() - started
        log.info("asr model loaded", model=self.name, load_s=round(self.load_s, 2))

    # --- public ---------------------------------------------------------------------------

    def transcribe(self, pcm16: np.ndarray, hotwords: Sequence[str] = ()) -> AsrResult:
        started = time.perf_counter()
        audio = int16_to_float(pcm16)
        prompt_text = hotword_prompt(hotwords, self.initial_prompt)
        hyps: list[tuple[str, float]] = []
        if self.short_window and len(audio) <= 29 * PIPELINE_RATE:
            raw, lang, lang_prob, logprob, hyps = self._decode_short(audio, prompt_text)
            said_once = repeated_sentence(raw)
            if said_once:
                # The short window leaves room after the sentence and Whisper says it again
                # ("…内容所以暂时不公开…"): the first copy is the transcript, no retry needed.
                raw = said_once
                hyps = [(repeated_sentence(t) or t, sc) for t, sc in hyps]
            elif looks_degenerate(raw, len(audio) / PIPELINE_RATE):
                # Whisper's own rule (compression ratio > 2.4 means a loop): the 30 s window, at
                # temperature 0 only.  Whisper loops most on audio cut off mid-word (a partial);
                # faster-whisper's temperature ladder looped again on every rung there and cost
                # 6.6 s on a 2-core AVX2 box (one rung: 1.2 s) while the caller's final waited.
                log.info("short-window decode looped; retrying with the full window", text=raw[:60])
                raw, lang, lang_prob, logprob = self._decode_full(audio, prompt_text, temperature=(0.0,))
                hyps = []
        else:
            raw, lang, lang_prob, logprob = self._decode_full(audio, prompt_text)
        if lang == "zh" and looks_cantonese(raw):
            lang = "yue"
        return AsrResult(
            text=normalise_transcript(raw),
            raw_text=raw,
            language=lang,
            language_prob=lang_prob,
            avg_logprob=logprob,
            audio_ms=len(audio) * 1000 // PIPELINE_RATE,
            decode_ms=(time.perf_counter() - started) * 1000,
            hypotheses=tuple((normalise_transcript(t), sc) for t, sc in hyps) if len(hyps) > 1 else (),
        )

    # --- decoding -------------------------------------------------------------------------

    def _decode_full(self, audio: np.ndarray, prompt_text: str, temperature: Sequence[float] | None = None
                     ) -> tuple[str, str, float | None, float | None]:
        # temperature=(0.0,) turns faster-whisper's fallback ladder off (see transcribe)
        extra = {} if temperature is None else {"temperature": list(temperature)}
        segments, info = self.model.transcribe(
            audio, language=self.language, beam_size=self.beam_size, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, initial_prompt=prompt_text or None, **extra,
        )
        segs = list(segments)
        logprob = float(np.mean([s.avg_logprob for s in segs])) if segs else None
        return "".join(s.text for s in segs).strip(), info.language, info.language_probability, logprob

    def _decode_short(self, audio: np.ndarray, prompt_text: str
                      ) -> tuple[str, str, float | None, float | None, list[tuple[str, float]]]:
        import ctranslate2

        feats = self.model.feature_extractor(audio)
        frames = encoder_window_frames(feats.shape[-1])
        feats = feats[:, :frames]
        if feats.shape[-1] < frames:
            feats = np.pad(feats, ((0, 0), (0, frames - feats.shape[-1])))
        enc = self.model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32)), to_cpu=False
        )
        lang, lang_prob = self._language_of(enc)
        tk = self._tokenizer
        prompt: list[int] = []
        if prompt_text:
            prompt = [tk.sot_prev, *tk.encode(" " + prompt_text)[: 223 // 2 - 1]]
        prompt += [tk.sot, tk.language, tk.transcribe, tk.no_timestamps]
        seconds = len(audio) / PIPELINE_RATE
        # Bound the output by what a person can say in the audio: a looping hallucination stops.
        max_new = int(10 + 9 * seconds)
        result = self.model.model.generate(
            enc, [prompt], beam_size=self.beam_size, num_hypotheses=self.nbest,
            max_length=min(448, len(prompt) + max_new), return_scores=True, suppress_blank=True, suppress_tokens=[-1],
        )[0]
        seqs = [[t for t in ids if t < tk.eot] for ids in result.sequences_ids]
        # A cut-off multi-byte character decodes to U+FFFD: drop it rather than publish it.
        texts = [tk.decode(ids).replace("\ufffd", "").strip() for ids in seqs]
        logprob = result.scores[0] / (len(seqs[0]) + 1) if result.scores else None
        hyps = list(zip(texts, [float(x) for x in result.scores])) if result.scores else []
        return texts[0], lang, lang_prob, logprob, hyps

    def _language_of(self, enc: object) -> tuple[str, float | None]:
        """zh vs yue per segment from Whisper's language head; models without a <|yue|> token
        (Whisper base) can only say zh here and fall back to written-Cantonese markers."""
        candidates = [c for c in ("zh", "yue") if c in self._languages]
        if len(candidates) < 2:
            return self.language, None
        probs = dict(self.model.model.detect_language(enc)[0])
        scores = {c: probs.get(f"<|{c}|>", 0.0) for c in candidates}
        best = max(scores, key=scores.__getitem__)
        return best, scores[best] / (sum(scores.values()) or 1.0)


def _said_again(t: str, period: int) -> bool:
    """`t` is its first `period` characters over and over (the last copy may be cut off)."""
    return all(t[i] == t[i - period] for i in range(period, len(t)))


def repeated_sentence(text: str, min_len: int = 4) -> str | None:
    """The sentence when `text` is it said again (wholly or in part: "ABCDEF ABCDEF AB"), else
    None.  A loop of one syllable ("itititit", "19 19 19") is not a sentence: None."""
    t = text.replace(" ", "")
    for period in range(min_len, len(t) - min_len + 1):
        if _said_again(t, period):
            unit = t[:period]
            if any(_said_again(unit, p) for p in range(1, period // 2 + 1)):
                return None  # the unit itself repeats: a syllable loop
            seen = 0  # the first copy as written, spaces kept ("data backup data backup")
            for end, ch in enumerate(text):
                seen += ch != " "
                if seen == period:
                    return text[: end + 1].strip()
    return None


# Faster than anyone talks (Mandarin runs ~4-7 syllables a second).  A loop runs on to the token
# bound (10 + 9 a second, see _decode_short), past this rate; a short repeat that fits the audio
# is the caller's own 好的好的好的好的 / 喂喂喂喂喂喂喂喂, and a 30 s-window retry of it only costs time.
MAX_CHARS_PER_SECOND = 8.0


def looks_degenerate(text: str, audio_s: float | None = None) -> bool:
    """A decoding loop: the text is one phrase said over and over (more of it than `audio_s`
    seconds of speech can hold, when given), or compresses too well."""
    import zlib

    t = text.replace(" ", "")
    fits = audio_s is not None and len(t) <= MAX_CHARS_PER_SECOND * audio_s
    if not fits and any(_said_again(t, period) for period in range(4, len(t) // 2 + 1)):
        return True
    raw = t.encode()
    return len(raw) > 24 and len(raw) / len(zlib.compress(raw)) > 2.4


def make_engine(
    engine: str,
    model: str,
    models_dir: Path,
    *,
    compute_type: str = "int8",
    device: str = "cpu",
    cpu_threads: int = 2,
    beam_size: int = 5,
    language: str = "zh",
    short_window: bool = True,
    initial_prompt: str = "",
    nbest: int = 1,
    workers: int = 1,
) -> AsrEngine:
    """Build the configured engine.  `engine` is "faster-whisper" or "package.module:factory"
    for a plugin (called with model=..., models_dir=...).  `model` "whisper-base" means the
    Whisper base that ships offline (assembled under models_dir on first use); a shipped
    adapter's name ("whisper-base-phone") or an adapter .npz means Whisper base with that LoRA
    adapter merged in (agent/speech/assets.py); anything else is a directory or a hub name."""
    if engine != "faster-whisper":
        module, _, attr = engine.partition(":")
        factory = getattr(importlib.import_module(module), attr or "make_engine")
        return factory(model=model, models_dir=models_dir)
    from agent.speech.assets import whisper_model_dir

    path: str | Path = whisper_model_dir(model, models_dir) or model
    return FasterWhisperEngine(
        path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, beam_size=beam_size, language=language,
        short_window=short_window, initial_prompt=initial_prompt, download_root=models_dir / "hub", nbest=nbest,
        num_workers=workers,
    )
