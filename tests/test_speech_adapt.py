"""Dialect adaptation pipeline: augmentation, the held-out split, and the CTranslate2 <->
transformers weight mapping that makes LoRA fine-tuning possible without hub weights."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.asr_adapt import Pair, add_noise, augment, speed, split, telephone
from pipelines.whisper_ct2_weights import read_model_bin, write_model_bin
from tests.speech_helpers import MODELS, clip, load_clip, manifest


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
    # A trained adapter shipped as factors gives, merged with numpy onto the CTranslate2 file,
    # the same weights as peft's own merge exported through transformers.
    from peft import LoraConfig, get_peft_model

    from pipelines.asr_adapt import lora_factors, lora_targets
    from pipelines.whisper_ct2_weights import merge_lora_into_ct2

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(["q_proj", "v_proj"], 6, 2)))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)  # peft starts B at zero: make the adapter do something
    factors = lora_factors(peft_model)
    assert any(".encoder.layers.5." in k for k in factors) and not any(".encoder.layers.3." in k for k in factors)
    np.savez(tmp_path / "adapter.npz", **factors)
    by_numpy = read_model_bin(merge_lora_into_ct2(base, tmp_path / "adapter.npz", tmp_path / "np") / "model.bin")[2]
    by_peft = read_model_bin(save_ct2_from_hf(peft_model.merge_and_unload(), base, tmp_path / "pt") / "model.bin")[2]
    changed = [k for k in a if not np.array_equal(a[k], by_numpy[k])]
    assert "decoder/layer_0/attention/linear_0/weight" in changed  # cross-attention q
    assert "encoder/layer_5/self_attention/linear_0/weight" in changed and "encoder/layer_0/self_attention/linear_0/weight" not in changed
    assert all(np.allclose(by_numpy[k].astype(np.float32), by_peft[k].astype(np.float32), atol=2e-3) for k in a)


def test_an_adapter_changes_only_the_rows_of_the_projection_it_adapts(tmp_path):
    """v_proj of encoder layer 0 lives in rows 2d..3d of CTranslate2's fused q/k/v tensor."""
    from pipelines.whisper_ct2_weights import merge_lora_into_ct2

    d, r = 8, 2
    rng = np.random.default_rng(0)
    base_vars = {"encoder/layer_0/self_attention/linear_0/weight": rng.standard_normal((3 * d, d)).astype(np.float16),
                 "decoder/layer_0/attention/linear_0/weight": rng.standard_normal((d, d)).astype(np.float16)}
    (tmp_path / "base").mkdir()
    write_model_bin(tmp_path / "base" / "model.bin", "WhisperSpec", 3, base_vars, {})
    A, B = rng.standard_normal((r, d)).astype(np.float32), rng.standard_normal((d, r)).astype(np.float32)
    np.savez(tmp_path / "a.npz", **{"model.encoder.layers.0.self_attn.v_proj.weight.lora_A": A,
                                    "model.encoder.layers.0.self_attn.v_proj.weight.lora_B": B, "scale": np.float32(2.0)})
    out = read_model_bin(merge_lora_into_ct2(tmp_path / "base", tmp_path / "a.npz", tmp_path / "out") / "model.bin")[2]
    fused, before = out["encoder/layer_0/self_attention/linear_0/weight"], base_vars["encoder/layer_0/self_attention/linear_0/weight"]
    assert np.array_equal(fused[: 2 * d], before[: 2 * d])
    assert np.allclose(fused[2 * d :].astype(np.float32), before[2 * d :].astype(np.float32) + 2.0 * B @ A, atol=1e-2)
    assert np.array_equal(out["decoder/layer_0/attention/linear_0/weight"], base_vars["decoder/layer_0/attention/linear_0/weight"])
    np.savez(tmp_path / "bad.npz", **{"model.encoder.layers.9.self_attn.q_proj.weight.lora_A": A,
                                      "model.encoder.layers.9.self_attn.q_proj.weight.lora_B": B, "scale": np.float32(1.0)})
    with pytest.raises(ValueError, match="no CTranslate2 counterpart"):
        merge_lora_into_ct2(tmp_path / "base", tmp_path / "bad.npz", tmp_path / "out2")


@pytest.mark.slow  # torch + transformers import and Whisper base in transformers (~20 s)
def test_a_gpu_box_without_the_audio_stack_trains_from_examples_prepared_here(tmp_path):
    """bench/bench_asr_adapt.py: `prepare` writes the held-in split's features and texts, `train`
    needs only that file and the base directory (the step a GPU box runs), and its adapter holds
    LoRA factors for the top encoder layers and the decoder, ready for merge_lora_into_ct2."""
    pytest.importorskip("torch", reason="the train extra (torch, transformers, peft) is not installed")
    import json

    from agent.speech.assets import AssetError, whisper_base_dir
    from bench.bench_asr_adapt import main

    try:
        base = whisper_base_dir(MODELS)
    except AssetError as exc:
        pytest.skip(str(exc))
    items = [it for it in manifest() if it["audio"].split("/")[-1].startswith("BAC009")][:5]
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"audio": str(clip(it["audio"].split("/")[-1])), "text": it["text"]}, ensure_ascii=False) + "\n"
        for it in items), encoding="utf-8")
    main(["prepare", "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "ex.npz"), "--augment", "none"])
    data = np.load(tmp_path / "ex.npz")
    texts = json.loads(str(data["texts"]))
    assert len(texts) == 4 and {t for t in texts} <= {it["text"] for it in items}  # 1 of 5 held out
    assert data["f0"].dtype == np.float16 and data["f0"].shape[0] == 80
    main(["train", "--examples", str(tmp_path / "ex.npz"), "--base", str(base), "--out", str(tmp_path / "a"),
          "--device", "cpu", "--epochs", "1"])
    factors = np.load(tmp_path / "a" / "adapter.npz")
    names = [k for k in factors.files if k.endswith(".lora_A")]
    assert any(".encoder.layers.5." in k for k in names) and any(".decoder.layers.0." in k for k in names)
    assert not any(".encoder.layers.0." in k for k in names)  # the frozen bottom stays as it was
