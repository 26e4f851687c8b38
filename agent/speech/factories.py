"""Build the speech stages from settings (registered in agent/pipeline.py STAGE_FACTORIES).

Models are loaded once per process and shared by every stage instance that asks for the same
configuration (a restarted stage, several test pipelines): loading Whisper takes ~1 s."""

from __future__ import annotations

import os
from typing import Any

from functools import lru_cache
from pathlib import Path

import structlog

from agent.settings import Settings
from agent.speech import assets
from agent.speech.asr import AsrEngine, make_engine
from agent.speech.models import load_silero, load_smart_turn
from agent.speech.tts import TtsEngine, make_tts
from agent.speech.turns import TurnParams
from agent.stages.asr import AsrStage, terms_from_playbook
from agent.stages.tts import TtsStage
from agent.stages.vad import VadStage

log = structlog.get_logger("dianxiao.speech")


@lru_cache(maxsize=4)
def _engine(engine: str, model: str, models_dir: Path, compute_type: str, device: str, threads: int,
            beam: int, language: str, short: bool, prompt: str, nbest: int = 1, workers: int = 1) -> AsrEngine:
    return make_engine(engine, model, models_dir, compute_type=compute_type, device=device, cpu_threads=threads,
                       beam_size=beam, language=language, short_window=short, initial_prompt=prompt, nbest=nbest,
                       workers=workers)


def asr_workers(settings: Settings) -> int:
    """Parallel decodes: asr_workers, or one per CPU core (the 2-core box: 2 of 1 thread each)."""
    return settings.asr_workers or max(1, os.cpu_count() or 1)


def asr_engine(settings: Settings, workers: int = 1) -> AsrEngine:
    threads = max(1, settings.asr_threads // workers) if workers > 1 else settings.asr_threads
    return _engine(settings.asr_engine, settings.asr_model, settings.speech_models_dir.resolve(),
                   settings.asr_compute_type, settings.asr_device, threads, settings.asr_beam_size,
                   settings.asr_language, settings.asr_short_window, settings.asr_initial_prompt,
                   settings.asr_nbest if settings.asr_correction else 1, workers)


def hotwords(settings: Settings, from_playbook: bool | None = None) -> list[str]:
    """The settings' hot-words, then (if asked) the active playbook's terms.  Off by default:
    on the shared clips the playbook prompt raised CER from 13.6 % to 17.3 % (docs/speech.md)."""
    terms = list(settings.asr_hotwords)
    if not (settings.asr_playbook_hotwords if from_playbook is None else from_playbook):
        return terms
    try:
        from agent.dialogue import load_playbook

        terms += terms_from_playbook(load_playbook(settings.playbook))
    except Exception as exc:  # a missing playbook must not stop speech recognition
        log.warning("no playbook terms for ASR hot-words", playbook=settings.playbook, error=str(exc))
    return list(dict.fromkeys(terms))


def vad_stage(settings: Settings) -> VadStage:
    models = settings.speech_models_dir
    vad = load_silero(str(settings.vad_model or assets.silero_vad_path(models)))
    smart = load_smart_turn(str(settings.turn_model or assets.smart_turn_path(models))) if settings.turn_smart else None
    params = TurnParams(max_silence_ms=settings.turn_max_silence_ms, smart_turn_early=settings.turn_smart_early,
                        semantic_complete=settings.turn_semantic_complete,
                        semantic_hold_ms=settings.turn_semantic_hold_ms, semantic_wait_ms=settings.turn_semantic_wait_ms)
    words = _completeness(settings.turn_semantic_model) if settings.turn_semantic and smart is not None else None
    return VadStage(vad, smart, params, completeness=words)


@lru_cache(maxsize=2)
def _completeness(path: Path | None) -> Any:
    from agent.speech.completeness import CompletenessModel, default_path

    return CompletenessModel.load(path or default_path())


def asr_stage(settings: Settings, terms: list[str] | None = None) -> AsrStage:
    """The ASR stage as configured; `terms` overrides the hot-words (an evaluation's choice)."""
    words = hotwords(settings) if terms is None else terms
    workers = asr_workers(settings)
    engine = asr_engine(settings, workers)
    if not settings.asr_correction:
        stage = AsrStage(engine, words)
    else:
        stage = AsrStage(engine, words, _corrector(settings.playbook), rescorer=_rescorer(settings.playbook))
    # A plugin engine that is not known to be thread-safe decodes one segment at a time.
    stage.workers = workers if getattr(engine, "workers", 1) >= workers else 1
    return stage


@lru_cache(maxsize=4)
def _corrector(playbook: str) -> Any:
    from agent.asrfix import Corrector, build_lexicon
    from agent.asrfix.confusions import load_confusions

    return Corrector(build_lexicon(playbook), learned=load_confusions())


@lru_cache(maxsize=4)
def _rescorer(playbook: str) -> Any:
    from agent.asrfix import build_lexicon
    from agent.asrfix.rescore import Rescorer, rule_understands

    return Rescorer.for_lexicon(_corrector(playbook), build_lexicon(playbook), rule_understands())


@lru_cache(maxsize=4)
def _tts(engine: str, voice: str, url: str | None, speed: int) -> TtsEngine:
    return make_tts(engine, voice, url, speed)


def tts_stage(settings: Settings) -> TtsStage:
    return TtsStage(_tts(settings.tts_engine, settings.tts_voice, settings.tts_url, settings.tts_speed))
