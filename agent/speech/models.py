"""The two small ONNX models of turn-taking: Silero VAD (speech probability per 32 ms window)
and Smart Turn v3 (does the caller's audio so far sound like a finished turn?).

Each keeps its onnxruntime session; per-call recurrent state lives in `SileroState`, owned by
the caller, so one session serves every call and a call's state can be rebuilt from its log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
_CONTEXT = 64


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Smart Turn ships as a QDQ INT8 graph. Fused into integer kernels, it scores differently by
    # CPU: on an AVX2-only EPYC (no AVX-512/VNNI; u8s8 products saturate there) a mid-sentence
    # pause of the shared clips scored 0.81-0.91 ("finished") instead of 0.49-0.52, and callers
    # were cut off on that machine only. Run as written (dequantise, then float maths), it gives
    # the same scores on every CPU; it costs 110 -> 146 ms per decision there (docs/speech.md).
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class SileroState:
    rnn: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros((1, _CONTEXT), dtype=np.float32))

    def reset(self) -> None:
        self.rnn[:] = 0
        self.context[:] = 0


class SileroVad:
    def __init__(self, path: Path, threads: int = 1) -> None:
        self._session = _session(path, threads)
        self._sr = np.array(16000, dtype=np.int64)

    def probability(self, state: SileroState, window: np.ndarray) -> float:
        """Speech probability of one 512-sample float32 window; advances `state`."""
        x = np.concatenate([state.context, window.reshape(1, WINDOW).astype(np.float32)], axis=1)
        out, rnn = self._session.run(None, {"input": x, "state": state.rnn, "sr": self._sr})
        state.rnn = rnn
        state.context = x[:, -_CONTEXT:]
        return float(out[0][0])

    def probabilities(self, requests: list[tuple[SileroState, np.ndarray]]) -> list[float]:
        """One window of each of several calls in one model run (batch axis = calls); advances
        every state.  Same numbers as `probability` one by one (the model has no cross-batch
        terms); on 2 cores a run of 10 windows costs 0.4 ms instead of 10 x 0.1 ms."""
        if len(requests) == 1:
            return [self.probability(*requests[0])]
        x = np.concatenate([np.concatenate([st.context, w.reshape(1, WINDOW).astype(np.float32)], axis=1)
                            for st, w in requests], axis=0)
        rnn = np.concatenate([st.rnn for st, _ in requests], axis=1)
        out, rnn = self._session.run(None, {"input": x, "state": rnn, "sr": self._sr})
        for i, (st, _) in enumerate(requests):
            st.rnn = rnn[:, i : i + 1].copy()
            st.context = x[i : i + 1, -_CONTEXT:].copy()
        return [float(v) for v in out.reshape(-1)]


class SmartTurn:
    """Smart Turn v3: the last 8 s of the turn -> probability that the turn is complete."""

    SECONDS = 8

    # One thread: it runs at each pause while the ASR decodes the same audio on the other
    # core(s); two threads made both slower (Smart Turn 60 -> 140-200 ms when contended).
    def __init__(self, path: Path, threads: int = 1) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._session = _session(path, threads)
        # Same log-mel as transformers' WhisperFeatureExtractor (checked to 3e-6), without
        # importing transformers.
        self._features = FeatureExtractor(feature_size=80, chunk_length=self.SECONDS)

    def complete_probability(self, pcm16: np.ndarray) -> float:
        n = self.SECONDS * 16000
        x = np.asarray(pcm16, dtype=np.float32)[-n:] / 32768.0
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # the model was trained on normalised audio
        feats = self._features(x, padding=0)[:, : n // 160]
        out = self._session.run(None, {"input_features": feats[None].astype(np.float32)})[0]
        return float(out[0][0])


@lru_cache(maxsize=4)
def load_silero(path: str) -> SileroVad:
    return SileroVad(Path(path))


@lru_cache(maxsize=4)
def load_smart_turn(path: str) -> SmartTurn:
    return SmartTurn(Path(path))
