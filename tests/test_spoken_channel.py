"""A synthetic caller's voice goes through what a phone line does: speed and pitch of a
different speaker, background noise at a chosen SNR, the 300-3400 Hz band and 8 kHz mu-law."""

from __future__ import annotations

import numpy as np
import pytest

from agent.speech.codec import ulaw_decode
from pipelines.phone_channel import (
    LineParams,
    add_noise,
    band_limit,
    change_speed,
    phone_line,
    sample_params,
    shift_pitch,
    snr_of,
)

SR = 24000


def tone(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(x: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.mark.parametrize("snr", [5.0, 12.5, 20.0])
@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum"])
def test_noise_is_mixed_at_the_requested_snr(snr: float, kind: str) -> None:
    clean = tone(440)
    noisy = add_noise(clean, snr, SR, np.random.default_rng(3), kind)
    assert snr_of(clean, noisy) == pytest.approx(snr, abs=0.3)


def test_the_telephone_band_keeps_speech_and_drops_rumble_and_hiss() -> None:
    def level_db(x: np.ndarray) -> float:
        return 10 * np.log10(float((x[SR // 10: -SR // 10] ** 2).mean()) + 1e-20)

    for f, kept in ((100, False), (1000, True), (3000, True), (6000, False)):
        x = tone(f)
        drop = level_db(x) - level_db(band_limit(x, SR))
        assert (drop < 1.0) if kept else (drop > 40.0), (f, drop)


def test_speed_changes_length_and_pitch_shift_keeps_it() -> None:
    x = tone(220, 2.0)
    assert len(change_speed(x, 1.1)) == pytest.approx(len(x) / 1.1, rel=0.01)
    up = shift_pitch(x, 2.0, SR)
    assert len(up) == pytest.approx(len(x), rel=0.03)
    assert dominant_hz(up) == pytest.approx(220 * 2 ** (2 / 12), rel=0.02)


def test_a_phone_line_delivers_8khz_mulaw_levels() -> None:
    x = tone(700, 1.5)
    params = LineParams(speed=1.05, pitch_semitones=-1.0, snr_db=10.0, noise="pink", gain_db=-3.0, pad_s=0.3, seed=7)
    out = phone_line(x, SR, params)
    assert out.dtype == np.int16
    assert len(out) / 8000 == pytest.approx((1.5 / 1.05) + 0.6, rel=0.04)
    levels = set(np.unique(ulaw_decode(bytes(range(256)))).tolist())
    assert set(np.unique(out).tolist()) <= levels, "every sample is a G.711 mu-law level"
    # the same parameters give the same line (seeded), a different seed a different one
    assert np.array_equal(out, phone_line(x, SR, params))
    assert not np.array_equal(out, phone_line(x, SR, LineParams(**{**params.as_dict(), "seed": 8})))


def test_sampled_lines_stay_in_the_issue_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = sample_params(rng)
        assert 5.0 <= p.snr_db <= 20.0
        assert 0.9 <= p.speed <= 1.1
        assert -2.0 <= p.pitch_semitones <= 2.0


def test_silence_and_empty_audio_do_not_crash_the_line() -> None:
    assert len(phone_line(np.zeros(0, dtype=np.float32), SR, LineParams())) >= 0
    out = phone_line(np.zeros(SR, dtype=np.float32), SR, LineParams(snr_db=10.0))
    assert out.dtype == np.int16
