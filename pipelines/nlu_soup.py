"""Average several joint-NLU adapters into one ("model soup").

Adapters trained with the same recipe on the same frozen base differ mostly by the noise of one
run (seed, order, which writers were in): single runs land within about +-0.01 of each other on
dev, so one run's luck decides a comparison.  Their average usually keeps what they agree on and
cancels what one run made up, at no cost at run time: the result is one adapter of the same shape.

The average is exact for the LoRA part: the mean of the deltas  (1/k) sum_i s_i B_i A_i  is itself
a low-rank product  [s_1 B_1/k ... s_k B_k/k] @ [A_1; ...; A_k]  of rank k*r, written with scale 1.
The heads (LayerNorm + three linear maps on the shared hidden space) are averaged weight by weight,
which is close to averaging their logits because the encoders stay close to the common base.
Thresholds and the open-feature bar are then calibrated on dev like any trained adapter
(`pipelines.nlu_joint.rescore`).

    python -m pipelines.nlu_soup --out X/joint.npz A.npz B.npz C.npz [--no-onnx]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from agent.nlu.joint import merged_gazetteer, read_adapter
from pipelines.nlu_joint import export_onnx, rescore, write_adapter


class SoupError(ValueError):
    pass


# what every member must share for their weights to be averaged at all
_SAME = ("format", "labels", "tags", "max_len", "base_path", "n_layers", "bot_prev", "full_finetune")


def average_adapters(paths: list[Path]) -> dict[str, np.ndarray]:
    """The arrays of one adapter whose encoder delta and heads are the mean of the members'."""
    if len(paths) < 2:
        raise SoupError("a soup needs at least two adapters")
    members = [read_adapter(p) for p in paths]
    cfg0, arr0 = members[0]
    for p, (cfg, arr) in zip(paths[1:], members[1:]):
        for k in _SAME:
            if cfg.get(k) != cfg0.get(k):
                raise SoupError(f"{p}: {k} is {cfg.get(k)!r}, {paths[0]} has {cfg0.get(k)!r}: not averageable")
        if cfg.get("full_finetune"):
            raise SoupError(f"{p}: full fine-tunes are not supported (LoRA adapters only)")
        if set(k for k in arr if k.startswith("lora.")) != set(k for k in arr0 if k.startswith("lora.")):
            raise SoupError(f"{p}: adapts other weights than {paths[0]}")
        if not np.array_equal(arr.get("vocab_ids", np.zeros(0)), arr0.get("vocab_ids", np.zeros(0))):
            raise SoupError(f"{p}: another tokenizer than {paths[0]}")
    k = len(members)
    out: dict[str, np.ndarray] = {}
    for name in sorted(n[: -len(".A")] for n in arr0 if n.startswith("lora.") and n.endswith(".A")):
        As, Bs = [], []
        for cfg, arr in members:
            scale = float(cfg.get("lora_alpha", 1)) / float(cfg.get("lora_r", 1))
            As.append(arr[f"{name}.A"].astype(np.float32))
            Bs.append(arr[f"{name}.B"].astype(np.float32) * (scale / k))
        out[f"{name}.A"] = np.concatenate(As, axis=0).astype(np.float16)
        out[f"{name}.B"] = np.concatenate(Bs, axis=1).astype(np.float16)
    for name in (n for n in arr0 if n.startswith("head.")):
        out[name] = np.mean([arr[name].astype(np.float32) for _c, arr in members], axis=0)
    for name in ("tokenizer.json", "vocab_ids"):
        if name in arr0:
            out[name] = arr0[name]
    gaz = merged_gazetteer([cfg for cfg, _a in members])  # the later (larger-corpus) member wins a clash
    rank = sum(int(cfg.get("lora_r", 1)) for cfg, _a in members)
    config = {key: v for key, v in cfg0.items() if key not in ("onnx", "onnx_weights", "dev")}
    config.update(
        version=f"joint-e5small-soup{k}-{time.strftime('%Y%m%d%H%M%S')}",
        lora_r=rank, lora_alpha=rank,  # the factors already carry each member's scale / k
        gazetteer=gaz,
        soup_of=[cfg["version"] for cfg, _a in members],
        train_corpus_examples=max(int(cfg.get("train_corpus_examples", 0)) for cfg, _a in members),
    )
    out["config.json"] = np.frombuffer(json.dumps(config, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    return out


def make_soup(paths: list[Path], out: Path, onnx: bool = True, score: bool = True) -> dict:
    write_adapter(out, average_adapters(paths))
    if onnx:
        export_onnx(out)
    return rescore(out) if score else {}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.nlu_soup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapters", nargs="+", type=Path, help="joint.npz files (or directories holding one) to average")
    ap.add_argument("--out", type=Path, required=True, help="where to write the averaged joint.npz")
    ap.add_argument("--no-onnx", action="store_true", help="skip the INT8 ONNX export of the merged layers")
    ap.add_argument("--no-score", action="store_true", help="skip calibrating thresholds on dev (they stay the first member's)")
    a = ap.parse_args(argv)
    paths = [p / "joint.npz" if p.is_dir() else p for p in a.adapters]
    try:
        m = make_soup(paths, a.out, onnx=not a.no_onnx, score=not a.no_score)
    except SoupError as exc:
        raise SystemExit(f"nlu_soup: {exc}") from None
    print(json.dumps({"out": str(a.out), "dev_model": m.get("dev_model")}, ensure_ascii=False))


if __name__ == "__main__":
    main()
