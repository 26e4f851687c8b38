"""TTS engines: text -> PCM16 at the engine's rate; and CJK sentence splitting so the first
chunk of a reply can be synthesised and sent before the rest.

Engines are plugins (`TtsEngine`):
- `espeak-ng` (default; Debian package, GPL-3, separate program): formant voices `cmn`
  (Mandarin) and `yue` (Cantonese).  Robotic, but offline, fast and licence-clean.
- `http`: POST {"text", "voice"} as JSON to a URL that answers audio/wav (a cloud TTS behind a
  small adapter, or a local server).
- `piper`: the `piper` program with a voice model file (`--model`), WAV on stdout.
- `module:factory`: any Python factory returning an object with `synthesize(text)`.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import shutil
import subprocess
import urllib.request
import wave
from typing import Protocol

import numpy as np


class TtsError(RuntimeError):
    """Synthesis failed; the message says which engine and why."""


class TtsEngine(Protocol):
    name: str

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """Text -> (int16 mono samples, sample rate)."""
        ...


_SENTENCE_END = re.compile(r"(?<=[。！？!?；;…\n])")
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")


def split_sentences(text: str, max_chars: int = 24, first_max_chars: int = 12) -> list[str]:
    """Split after CJK/Latin sentence punctuation; a long sentence is split again at commas.
    The first chunk is kept short (`first_max_chars`) so its audio leaves early."""
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        limit = first_max_chars if not chunks else max_chars
        if len(sentence) <= limit:
            chunks.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            limit = first_max_chars if not chunks else max_chars
            if current and len(current) + len(clause) > limit:
                chunks.append(current)
                current = ""
            current += clause
        if current:
            chunks.append(current)
    return chunks


def wav_bytes_to_pcm(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2:
                raise TtsError(f"TTS returned {8 * w.getsampwidth()}-bit audio; 16-bit PCM WAV expected")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
            if w.getnchannels() > 1:
                pcm = pcm.reshape(-1, w.getnchannels())[:, 0].copy()
            return pcm, w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise TtsError(f"TTS output is not a WAV file: {exc}") from exc


class EspeakTts:
    def __init__(self, voice: str = "cmn", speed: int = 170, executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise TtsError(f"{executable} not found: apt-get install espeak-ng (deploy/system-packages.txt)")
        self.executable = path
        self.voice = voice
        self.speed = speed
        self.name = f"espeak-ng:{voice}"

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        # Text goes on stdin, never on the command line (a reply starting with "-" is no flag).
        proc = subprocess.run(
            [self.executable, "-v", self.voice, "-s", str(self.speed), "--stdout"],
            input=text.encode(), capture_output=True, timeout=30,
        )
        if proc.returncode != 0:
            raise TtsError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
        return wav_bytes_to_pcm(proc.stdout)


class HttpTts:
    def __init__(self, url: str, voice: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.voice = voice
        self.timeout = timeout
        self.name = f"http:{url}"

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        body = json.dumps({"text": text, "voice": self.voice}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return wav_bytes_to_pcm(resp.read())
        except OSError as exc:
            raise TtsError(f"HTTP TTS {self.url} failed: {exc}") from exc


class PiperTts:
    def __init__(self, model: str, executable: str = "piper") -> None:
        path = shutil.which(executable)
        if path is None:
            raise TtsError(f"{executable} not found: pip install piper-tts, and give a voice with tts_voice")
        self.executable = path
        self.model = model
        self.name = f"piper:{model}"

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        proc = subprocess.run([self.executable, "--model", self.model, "--output_file", "-"],
                              input=text.encode(), capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise TtsError(f"piper failed: {proc.stderr.decode(errors='replace')[-300:]}")
        return wav_bytes_to_pcm(proc.stdout)


def make_tts(engine: str = "espeak-ng", voice: str = "cmn", url: str | None = None, speed: int = 170) -> TtsEngine:
    if engine == "espeak-ng":
        return EspeakTts(voice=voice, speed=speed)
    if engine == "http":
        if not url:
            raise TtsError("tts_engine=http needs tts_url")
        return HttpTts(url, voice=voice)
    if engine == "piper":
        return PiperTts(model=voice)
    module, _, attr = engine.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr or "make_tts")
    except (ImportError, AttributeError) as exc:
        raise TtsError(f"unknown TTS engine {engine!r}: {exc}") from exc
    return factory(voice=voice, url=url)
