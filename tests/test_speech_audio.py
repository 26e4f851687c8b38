"""Audio plumbing: G.711 mu-law, 8 <-> 16 kHz, frame assembly, ring buffers."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent import events as ev
from agent.speech import codec
from agent.speech.frames import FrameAssembler, SampleRing, pcm_to_ulaw_frames


def test_mulaw_matches_the_reference_g711_encoder_byte_for_byte():
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    try:
        import audioop  # deprecated, gone in 3.13: only used here as the reference
    except ImportError:
        # Spot values of the Sun/ITU reference encoder instead.
        assert codec.ulaw_encode(np.array([0, -1, 32767, -32768, 1000], dtype=np.int16)) == bytes(
            [0xFF, 0x7E, 0x80, 0x00, 0xCE]
        )
        return
    assert codec.ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
    all_bytes = bytes(range(256))
    assert (codec.ulaw_decode(all_bytes) == np.frombuffer(audioop.ulaw2lin(all_bytes, 2), dtype=np.int16)).all()


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_mulaw_round_trip_error_stays_within_the_segment_step(samples):
    pcm = np.array(samples, dtype=np.int16)
    back = codec.ulaw_decode(codec.ulaw_encode(pcm)).astype(np.int32)
    err = np.abs(back - pcm.astype(np.int32))
    # G.711 quantisation: step doubles per segment; |error| <= ~3% of the magnitude + 8 LSBs
    assert (err <= np.abs(pcm.astype(np.int32)) * 0.032 + 8 + (np.abs(pcm) > 32000) * 130).all()


def test_a_tone_survives_the_phone_line_round_trip():
    t = np.arange(16000) / 16000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    back = codec.phone_round_trip(tone)
    assert abs(len(back) - len(tone)) <= 2
    n = min(len(back), len(tone))
    corr = np.corrcoef(back[200 : n - 200].astype(float), tone[200 : n - 200].astype(float))[0, 1]
    assert corr > 0.99
    # and a 5 kHz tone (above the 4 kHz telephone band) is gone
    hi = (0.3 * 32767 * np.sin(2 * np.pi * 5000 * t)).astype(np.int16)
    assert np.abs(codec.phone_round_trip(hi)[200:-200]).mean() < 0.05 * np.abs(hi).mean()


def test_streaming_resampler_gives_the_same_audio_as_one_shot():
    rng = np.random.default_rng(1)
    narrow = (rng.standard_normal(8000) * 3000).astype(np.int16)
    stream = codec.StreamResampler(8000, 16000)
    pieces = [stream.push(narrow[i : i + 160]) for i in range(0, 8000, 160)] + [stream.push(np.zeros(0), last=True)]
    streamed = np.concatenate(pieces)
    assert abs(len(streamed) - 16000) <= 2
    whole = codec.resample(narrow, 8000, 16000)
    n = min(len(whole), len(streamed))
    assert np.abs(whole[:n].astype(int) - streamed[:n].astype(int)).mean() < 60


def test_frames_are_assembled_from_arbitrary_chunks():
    asm = FrameAssembler(160)
    data = bytes(range(256)) * 3  # 768 bytes
    frames = list(asm.push(data[:100])) + list(asm.push(data[100:500])) + list(asm.push(data[500:]))
    assert [len(f) for f in frames] == [160] * 4
    assert b"".join(frames) == data[:640]
    tail = asm.flush(pad=0xFF)
    assert tail == data[640:] + b"\xff" * (160 - 128)
    assert asm.flush() is None


def test_a_signal_becomes_20ms_mulaw_frames():
    frames = pcm_to_ulaw_frames(np.zeros(16000 + 100, dtype=np.int16), 16000)
    assert len(frames) == 51 and all(len(f) == ev.FRAME_BYTES["pcmu8k"] for f in frames)


def test_ring_buffer_keeps_the_last_samples_by_absolute_position():
    ring = SampleRing(capacity=1000)
    for start in range(0, 2500, 300):
        ring.append(np.arange(start, start + 300, dtype=np.int16))
    assert ring.total == 2700 and ring.oldest == 1700
    assert (ring.slice(2000, 2100) == np.arange(2000, 2100)).all()
    assert (ring.slice(0, 1800) == np.arange(1700, 1800)).all()  # clipped to what is kept
    assert len(ring.slice(3000, 4000)) == 0


def test_resampling_is_reproducible_so_a_replayed_call_hears_the_same_audio():
    rng = np.random.default_rng(0)
    narrow = (rng.standard_normal(16000) * 2000).astype(np.int16)

    def stream() -> np.ndarray:
        s = codec.StreamResampler(8000, 16000)
        return np.concatenate([s.push(narrow[i : i + 160]) for i in range(0, len(narrow), 160)])

    runs = [stream() for _ in range(4)]
    assert all((r == runs[0]).all() for r in runs)
    assert all((codec.phone_round_trip(narrow) == codec.phone_round_trip(narrow)).all() for _ in range(3))
