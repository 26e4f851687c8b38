"""Shared bits of the speech tests: where models are cached, the shared real clips, skips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / ".dianxiao" / "models"  # persistent cache (gitignored): Whisper is assembled once
CLIPS = SHARED / "data" / "speech"


def manifest() -> list[dict]:
    path = CLIPS / "manifest.jsonl"
    if not path.exists():
        pytest.skip(f"shared speech clips not found at {CLIPS} (CI keeps shared/ beside the clone)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def clip(name: str) -> Path:
    for item in manifest():
        if item["audio"].endswith(name):
            return CLIPS / item["audio"]
    raise KeyError(name)


def load_clip(name: str) -> np.ndarray:
    from agent.audiocall import read_wav

    pcm, rate = read_wav(clip(name))
    assert rate == 16000
    return pcm


def need_pipecat_models() -> tuple[Path, Path]:
    from agent.speech import assets

    try:
        return assets.silero_vad_path(MODELS), assets.smart_turn_path(MODELS)
    except assets.AssetError as exc:
        pytest.skip(f"Silero/Smart Turn ONNX files unavailable: {exc}")


def need_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (deploy/system-packages.txt; make setup installs it)")
