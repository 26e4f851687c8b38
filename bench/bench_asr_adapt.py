"""Whisper LoRA adaptation on another machine (a GPU box): training throughput, and an adapter
to bring back.

The adaptation pipeline (pipelines/asr_adapt.py) needs the audio stack (faster-whisper,
CTranslate2, PyAV) for its features and its CER; a GPU box often has only torch.  So the work
splits where the data is smallest - the training examples:

    # here, beside the audio: the same split, augmentation and features as asr_adapt
    python bench/bench_asr_adapt.py prepare --data MANIFEST --out examples.npz [--max-train 600]
    # on the GPU box (torch + transformers + peft + soxr; the Whisper base CTranslate2 directory)
    python bench/bench_asr_adapt.py train --examples examples.npz --base WHISPER_DIR --device cuda --out DIR
    # here again: merge the adapter, CER before/after on the held-out split (and --eval-data)
    python bench/bench_asr_adapt.py score --data MANIFEST --adapter DIR/adapter.npz --out MODEL_DIR

Every step prints JSON lines; `train` reports steps per second, epoch losses and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def log(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def prepare(args: argparse.Namespace) -> None:
    from pipelines.asr_adapt import read_pairs, split, training_examples

    train_pairs, test_pairs = split(read_pairs(Path(args.data)), args.held_out)
    if args.max_train:
        train_pairs = train_pairs[: args.max_train]
    examples = training_examples(train_pairs, args.augment, 0, np.random.default_rng(0))
    arrays = {f"f{i}": f.astype(np.float16) for i, (f, _) in enumerate(examples)}
    arrays["texts"] = np.array(json.dumps([t for _, t in examples], ensure_ascii=False))
    np.savez_compressed(args.out, **arrays)
    log({"event": "prepared", "examples": len(examples), "train_clips": len(train_pairs),
         "held_out": len(test_pairs), "bytes": Path(args.out).stat().st_size})


def train(args: argparse.Namespace) -> None:
    import torch
    from tokenizers import Tokenizer

    from pipelines.asr_adapt import lora_factors, train_lora
    from pipelines.whisper_ct2_weights import load_hf_from_ct2

    torch.manual_seed(0)
    data = np.load(args.examples)
    texts = json.loads(str(data["texts"]))
    examples = [(data[f"f{i}"].astype(np.float32), t) for i, t in enumerate(texts)]
    base = Path(args.base)
    t0 = time.perf_counter()
    model = load_hf_from_ct2(base)
    log({"event": "loaded", "seconds": round(time.perf_counter() - t0, 2), "device": args.device,
         "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
         "torch": torch.__version__})
    total_steps = 0

    def log_and_count(obj: dict) -> None:  # train_lora's epoch lines carry the step count so far
        nonlocal total_steps
        total_steps = max(total_steps, obj.get("steps", 0))
        log(obj)

    t0 = time.perf_counter()
    peft_model = train_lora(model, Tokenizer.from_file(str(base / "tokenizer.json")), examples,
                            epochs=args.epochs, lr=args.lr, batch=args.batch, device=args.device, rank=args.rank,
                            targets=args.targets.split(","), log=log_and_count,
                            train_encoder_layers=args.train_encoder_layers, train_decoder=args.train_decoder,
                            progress=False)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    factors = lora_factors(peft_model)
    np.savez_compressed(out / "adapter.npz", **{k: v.astype(np.float16) if v.ndim else v for k, v in factors.items()})
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    log({"event": "trained", "examples": len(examples), "epochs": args.epochs, "steps": total_steps,
         "seconds": round(seconds, 1), "steps_per_s": round(total_steps / seconds, 2),
         "examples_per_s": round(len(examples) * args.epochs / seconds, 1),
         "peak_gpu_mb": None if peak is None else round(peak), "adapter": str(out / "adapter.npz")})


def score(args: argparse.Namespace) -> None:
    from agent.speech.assets import whisper_base_dir
    from pipelines.asr_adapt import held_out_cer, read_pairs, split
    from pipelines.whisper_ct2_weights import merge_lora_into_ct2

    base = Path(args.base) if args.base else whisper_base_dir(Path(args.models_dir))
    _, test_pairs = split(read_pairs(Path(args.data)), args.held_out)
    if args.max_eval:
        test_pairs = test_pairs[: args.max_eval]
    model = merge_lora_into_ct2(base, Path(args.adapter), Path(args.out))
    result = {"event": "scored", "held_out": len(test_pairs)}
    for name, pairs in (("", test_pairs), ("extra_", read_pairs(Path(args.eval_data)) if args.eval_data else [])):
        if pairs:
            before, after = held_out_cer(base, pairs, args.threads), held_out_cer(model, pairs, args.threads)
            result.update({f"{name}cer_before": before["cer"], f"{name}cer_after": after["cer"],
                           f"{name}cer_8k_before": before["cer_8k"], f"{name}cer_8k_after": after["cer_8k"]})
    log(result)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="training examples (features + texts) of the held-in split")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--held-out", type=float, default=0.2)
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--augment", choices=("mix", "all", "none"), default="mix")
    t = sub.add_parser("train", help="LoRA on the examples; writes OUT/adapter.npz")
    t.add_argument("--examples", required=True)
    t.add_argument("--base", required=True, help="Whisper CTranslate2 directory (model.bin, config, tokenizer)")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--rank", type=int, default=8)
    t.add_argument("--targets", default="q_proj,v_proj")
    t.add_argument("--train-encoder-layers", type=int, default=2)
    t.add_argument("--train-decoder", action=argparse.BooleanOptionalAction, default=True)
    s = sub.add_parser("score", help="merge the adapter and compare CER with the base")
    s.add_argument("--data", required=True)
    s.add_argument("--adapter", required=True)
    s.add_argument("--out", required=True, help="merged CTranslate2 model directory")
    s.add_argument("--base", default=None)
    s.add_argument("--models-dir", default=".dianxiao/models")
    s.add_argument("--held-out", type=float, default=0.2)
    s.add_argument("--max-eval", type=int, default=0, help="first N held-out clips only (0 = all)")
    s.add_argument("--eval-data", default=None, help="another manifest to watch for forgetting")
    s.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    {"prepare": prepare, "train": train, "score": score}[args.step](args)


if __name__ == "__main__":
    main()
