"""Whisper weights between CTranslate2 and transformers, without the hub.

The offline Whisper base ships only as a CTranslate2 `model.bin` (float16).  The adaptation
pipeline needs it as a transformers `WhisperForConditionalGeneration` to fine-tune, and needs the
result back as a CTranslate2 directory for the ASR stage.  CTranslate2 has a converter only in
the transformers -> CTranslate2 direction and it needs a hub-style model directory, so both the
reader/writer of the `model.bin` layout (version 6: header, named tensors, aliases) and the name
mapping are written here by hand.  `tests/test_speech_adapt.py` checks that the transformers
model built from the file gives the same encoder output and the same transcript as CTranslate2.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2 DataType enum -> numpy
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n).decode().rstrip("\0")


def _wstr(f: BinaryIO, s: str) -> None:
    raw = s.encode() + b"\0"
    f.write(struct.pack("<H", len(raw)) + raw)


def read_model_bin(path: Path) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """-> (spec name, spec revision, variables, aliases)."""
    with open(path, "rb") as f:
        version = _u32(f)
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 model format version {version}; this reader knows 6")
        spec = _str(f)
        revision = _u32(f)
        variables: dict[str, np.ndarray] = {}
        for _ in range(_u32(f)):
            name = _str(f)
            rank = f.read(1)[0]
            shape = [_u32(f) for _ in range(rank)]
            code = f.read(1)[0]
            nbytes = _u32(f)
            if code not in _DTYPES:
                raise ValueError(f"{name}: unsupported CTranslate2 dtype code {code}")
            variables[name] = np.frombuffer(f.read(nbytes), dtype=_DTYPES[code]).reshape(shape).copy()
        aliases = {_str(f): _str(f) for _ in range(_u32(f))}
    return spec, revision, variables, aliases


def write_model_bin(path: Path, spec: str, revision: int, variables: dict[str, np.ndarray],
                    aliases: dict[str, str]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6))
        _wstr(f, spec)
        f.write(struct.pack("<I", revision))
        f.write(struct.pack("<I", len(variables)))
        for name in sorted(variables):
            a = np.asarray(variables[name], order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
            _wstr(f, name)
            f.write(bytes([a.ndim]))
            for d in a.shape:
                f.write(struct.pack("<I", d))
            f.write(bytes([_CODES[a.dtype]]))
            f.write(struct.pack("<I", a.nbytes))
            f.write(a.tobytes())
        f.write(struct.pack("<I", len(aliases)))
        for k, v in aliases.items():
            _wstr(f, k)
            _wstr(f, v)


def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    return len({k.split("/")[1] for k in variables if k.startswith(f"{side}/layer_") and k.split("/")[1][6:].isdigit()})


def hf_config(variables: dict[str, np.ndarray], ct2_config: dict) -> "object":
    from transformers import WhisperConfig

    d_model = variables["encoder/conv1/weight"].shape[0]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layers(variables, "encoder"),
        decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, bos_token_id=50257,
        suppress_tokens=ct2_config.get("suppress_ids"), begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
    )


def _ln(prefix_ct2: str, prefix_hf: str) -> list[tuple[str, str]]:
    return [(f"{prefix_ct2}/gamma", f"{prefix_hf}.weight"), (f"{prefix_ct2}/beta", f"{prefix_hf}.bias")]


def _lin(prefix_ct2: str, prefix_hf: str) -> list[tuple[str, str]]:
    return [(f"{prefix_ct2}/weight", f"{prefix_hf}.weight"), (f"{prefix_ct2}/bias", f"{prefix_hf}.bias")]


def name_map(n_enc: int, n_dec: int) -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]]]:
    """(one-to-one CT2 -> HF names, fused CT2 tensors -> the HF tensors stacked in them)."""
    one: list[tuple[str, str]] = [
        *_lin("encoder/conv1", "model.encoder.conv1"), *_lin("encoder/conv2", "model.encoder.conv2"),
        ("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight"),
        *_ln("encoder/layer_norm", "model.encoder.layer_norm"),
        ("decoder/embeddings/weight", "model.decoder.embed_tokens.weight"),
        ("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight"),
        *_ln("decoder/layer_norm", "model.decoder.layer_norm"),
    ]
    fused: list[tuple[str, list[str]]] = []
    for i in range(n_enc):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        one += [*_lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj"),
                *_ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm"),
                *_lin(f"{c}/ffn/linear_0", f"{h}.fc1"), *_lin(f"{c}/ffn/linear_1", f"{h}.fc2"),
                *_ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")]
        fused += [(f"{c}/self_attention/linear_0/{p}", [f"{h}.self_attn.{x}_proj.{p}" for x in "qkv"])
                  for p in ("weight", "bias")]
    for i in range(n_dec):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        one += [*_lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj"),
                *_ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm"),
                *_lin(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj"),
                *_lin(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj"),
                *_ln(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm"),
                *_lin(f"{c}/ffn/linear_0", f"{h}.fc1"), *_lin(f"{c}/ffn/linear_1", f"{h}.fc2"),
                *_ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")]
        fused += [(f"{c}/self_attention/linear_0/{p}", [f"{h}.self_attn.{x}_proj.{p}" for x in "qkv"])
                  for p in ("weight", "bias")]
        fused += [(f"{c}/attention/linear_1/{p}", [f"{h}.encoder_attn.{x}_proj.{p}" for x in "kv"])
                  for p in ("weight", "bias")]
    return one, fused


def load_hf_from_ct2(model_dir: Path):
    """A transformers WhisperForConditionalGeneration (float32) with the CTranslate2 weights."""
    import torch
    from transformers import WhisperForConditionalGeneration

    _, _, variables, _ = read_model_bin(model_dir / "model.bin")
    config = hf_config(variables, json.loads((model_dir / "config.json").read_text()))
    with torch.device("meta"):  # no random init of 74M parameters: the weights come from the file
        model = WhisperForConditionalGeneration(config)
    state = model.state_dict()
    one, fused = name_map(config.encoder_layers, config.decoder_layers)
    new: dict[str, torch.Tensor] = {}
    for c, h in one:
        new[h] = torch.from_numpy(variables[c].astype(np.float32))
    for c, parts in fused:
        for h, piece in zip(parts, np.split(variables[c].astype(np.float32), len(parts), axis=0)):
            if h in state:  # HF's k_proj has no bias (CTranslate2 stores zeros there)
                new[h] = torch.from_numpy(piece.copy())
    new["proj_out.weight"] = new["model.decoder.embed_tokens.weight"]
    missing = set(state) - set(new)
    if missing:
        raise ValueError(f"CTranslate2 -> transformers mapping left {len(missing)} tensors unset: {sorted(missing)[:5]}")
    model.load_state_dict(new, strict=True, assign=True)
    model.tie_weights()
    model.generation_config.decoder_start_token_id = 50258
    return model.eval()


def _write_model_dir(base_dir: Path, out_dir: Path, spec: str, revision: int, variables: dict[str, np.ndarray],
                     aliases: dict[str, str]) -> Path:
    """A CTranslate2 directory with new weights and base_dir's config and tokenizer; model.bin
    appears only once complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
        if (base_dir / name).exists():
            shutil.copyfile(base_dir / name, out_dir / name)
    write_model_bin(out_dir / "model.bin.part", spec, revision, variables, aliases)
    (out_dir / "model.bin.part").rename(out_dir / "model.bin")
    return out_dir


def save_ct2_from_hf(model, base_dir: Path, out_dir: Path) -> Path:
    """Write a fine-tuned transformers Whisper back as a CTranslate2 directory (float16 weights,
    loaded as int8 by the ASR stage's compute_type), reusing base_dir's config and tokenizer."""
    spec, revision, variables, aliases = read_model_bin(base_dir / "model.bin")
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    one, fused = name_map(cfg.encoder_layers, cfg.decoder_layers)
    for c, h in one:
        variables[c] = state[h].astype(np.float16)
    for c, parts in fused:
        present = next(state[h] for h in parts if h in state)
        pieces = [state[h] if h in state else np.zeros_like(present) for h in parts]  # k_proj has no bias
        variables[c] = np.concatenate(pieces, axis=0).astype(np.float16)
    return _write_model_dir(base_dir, out_dir, spec, revision, variables, aliases)


def merge_lora_into_ct2(base_dir: Path, adapter: Path, out_dir: Path) -> Path:
    """Apply a LoRA adapter (asr_adapt's `adapter.npz`: '<hf weight>.lora_A/.lora_B' + 'scale')
    to a CTranslate2 Whisper directory with numpy only: W += scale * B @ A on the matching
    tensor, or on its rows inside a fused q/k/v tensor.  This is how a shipped ~1 MB adapter
    becomes a model directory on a machine without torch."""
    spec, revision, variables, aliases = read_model_bin(base_dir / "model.bin")
    factors = np.load(adapter)
    scale = float(factors["scale"])
    n_enc, n_dec = _layers(variables, "encoder"), _layers(variables, "decoder")
    one, fused = name_map(n_enc, n_dec)
    where: dict[str, tuple[str, int, int]] = {h: (c, 0, 1) for c, h in one}
    for c, parts in fused:
        for i, h in enumerate(parts):
            where[h] = (c, i, len(parts))
    keys = sorted(k[: -len(".lora_A")] for k in factors.files if k.endswith(".lora_A"))
    if not keys:
        raise ValueError(f"{adapter}: no LoRA factors in it")
    for hf in keys:
        if hf not in where:
            raise ValueError(f"{adapter}: {hf} has no CTranslate2 counterpart")
        c, i, n = where[hf]
        delta = scale * (factors[hf + ".lora_B"].astype(np.float32) @ factors[hf + ".lora_A"].astype(np.float32))
        w = variables[c].astype(np.float32)
        rows = w.shape[0] // n
        if delta.shape != (rows, w.shape[1]):
            raise ValueError(f"{adapter}: {hf} delta {delta.shape} does not fit {c} {w.shape}")
        w[i * rows : (i + 1) * rows] += delta
        variables[c] = w.astype(variables[c].dtype)
    return _write_model_dir(base_dir, out_dir, spec, revision, variables, aliases)
