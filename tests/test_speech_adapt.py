"""Dialect adaptation pipeline: augmentation, the held-out split, and the CTranslate2 <->
transformers weight mapping that makes LoRA fine-tuning possible without hub weights."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.asr_adapt import Pair, add_noise, augment, speed, split, telephone
from pipelines.whisper_ct2_weights import read_model_bin, write_model_bin
from tests.speech_helpers import MODELS, load_clip


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(float))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_speed_perturbation_changes_duration():
    x = _tone(440, 2.0)
    assert abs(len(speed(x, 1.1)) - len(x) / 1.1) < 20
    assert abs(len(speed(x, 0.9)) - len(x) / 0.9) < 20
    assert speed(x, 1.0) is x


def test_noise_is_added_at_the_requested_snr():
    x = _tone(440)
    for snr in (5.0, 20.0):
        noisy = add_noise(x, snr, np.random.default_rng(0))
        noise = noisy.astype(float) - x
        measured = 10 * np.log10(np.mean(x.astype(float) ** 2) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5


def test_the_telephone_channel_keeps_300_to_3400_hz_only():
    x = _tone(100) + _tone(1000) + _tone(6000)
    y = telephone(x)[: len(x)]
    assert _band_energy(y, 900, 1100) > 0.5 * _band_energy(x, 900, 1100)
    assert _band_energy(y, 5500, 6500) < 0.01 * _band_energy(x, 5500, 6500)
    assert _band_energy(y, 50, 150) < 0.05 * _band_energy(x, 50, 150)


def test_each_clip_gives_three_augmented_variants_or_nine():
    x = _tone(440)
    names = [n for n, _ in augment(x, np.random.default_rng(0))]
    assert [n.split("-")[0] for n in names] == ["speed0.9", "speed1.0", "speed1.1"]
    assert {n.split("-")[1][:5] for n in names} == {"clean", "noise", "phone"}
    assert len(augment(x, np.random.default_rng(0), all_variants=True)) == 9


def test_held_out_split_is_deterministic_and_disjoint(tmp_path):
    pairs = [Pair(tmp_path / f"c{i}.wav", f"句子{i}") for i in range(10)]
    train, test = split(pairs, 0.2)
    assert len(test) == 2 and not set(train) & set(test) and set(train) | set(test) == set(pairs)
    assert split(list(reversed(pairs)), 0.2) == (train, test)


def test_ct2_model_files_round_trip(tmp_path):
    variables = {"a/weight": np.arange(12, dtype=np.float16).reshape(3, 4), "a/num_heads": np.array(8, dtype=np.int8),
                 "b/bias": np.ones(5, dtype=np.float32)}
    write_model_bin(tmp_path / "model.bin", "WhisperSpec", 3, variables, {"c/weight": "a/weight"})
    spec, rev, back, aliases = read_model_bin(tmp_path / "model.bin")
    assert (spec, rev, aliases) == ("WhisperSpec", 3, {"c/weight": "a/weight"})
    assert back.keys() == variables.keys()
    assert all((back[k] == v).all() and back[k].dtype == v.dtype for k, v in variables.items())


@pytest.mark.slow  # imports torch + transformers (~15 s on a quiet 2-core box) and loads Whisper twice
def test_whisper_base_in_transformers_gives_the_same_output_as_ctranslate2(tmp_path):
    pytest.importorskip("torch", reason="the train extra (torch, transformers, peft) is not installed")
    pytest.importorskip("transformers")
    import ctranslate2
    import torch
    from faster_whisper.feature_extractor import FeatureExtractor

    from agent.speech.assets import AssetError, whisper_base_dir
    from pipelines.whisper_ct2_weights import load_hf_from_ct2, save_ct2_from_hf

    try:
        base = whisper_base_dir(MODELS)
    except AssetError as exc:
        pytest.skip(str(exc))
    model = load_hf_from_ct2(base)
    feats = FeatureExtractor()(load_clip("BAC009S0764W0121.wav").astype(np.float32) / 32768)[:, :3000]
    feats = np.pad(feats, ((0, 0), (0, 3000 - feats.shape[1])))[None].astype(np.float32)
    ct = ctranslate2.models.Whisper(str(base), device="cpu", compute_type="float32")
    ct_enc = np.array(ct.encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
    with torch.no_grad():
        hf_enc = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    assert np.abs(ct_enc - hf_enc).max() < 0.02  # fp16 weights, two runtimes
    prompt = [50258, 50260, 50359, 50363]
    ct_ids = ct.generate(ctranslate2.StorageView.from_array(ct_enc), [prompt], beam_size=1, max_length=60)[0]
    with torch.no_grad():
        hf_ids = model.generate(torch.from_numpy(feats), decoder_input_ids=torch.tensor([prompt]),
                                max_new_tokens=56, do_sample=False, num_beams=1)[0].tolist()
    hf_text = [t for t in hf_ids if t < 50257]
    assert hf_text == ct_ids.sequences_ids[0] and len(hf_text) > 5
    # and back: the exported directory holds the same weights as the base
    out = save_ct2_from_hf(model, base, tmp_path / "back")
    _, _, a, _ = read_model_bin(base / "model.bin")
    _, _, b, _ = read_model_bin(out / "model.bin")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
