"""Compare the quantisation modes of pipelines/nlu_quant.py on one exported fp32 model: each
file calibrates its own per-intent thresholds on dev (in the run-time session) and is then
scored on test (intents only, no rules).  One JSON line per file:

    python -m pipelines.nlu_train --out DIR --epochs 3 --keep-fp32     # DIR/model.fp32.onnx
    python bench/bench_nlu_quant.py --model DIR [--modes dynamic dynamic-pc ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_nlu import _pct  # noqa: E402  (a sibling script: the NLU benchmark's percentile)
from agent.resources import DATA_DIR


def _cpu_p95_ms(model_dir: Path, onnx_file: str, examples) -> float:
    from agent.nlu.model import OnnxIntentModel

    m = OnnxIntentModel(model_dir, onnx_file=onnx_file)
    cpu = []
    for e in examples:
        c0 = time.process_time()
        m.probs(e.text, e.context)
        cpu.append((time.process_time() - c0) * 1000)
    return _pct(cpu, 0.95)


def main() -> None:
    from agent.nlu.evaluate import load_examples
    from pipelines.nlu_quant import MODES, quantize
    from pipelines.nlu_train import calibrate_and_score

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="a dir written with --keep-fp32")
    ap.add_argument("--modes", nargs="*", default=sorted(MODES))
    ap.add_argument("--dev", type=Path, default=DATA_DIR / "nlu" / "dev.jsonl")
    ap.add_argument("--test", type=Path, default=DATA_DIR / "nlu" / "test.jsonl")
    ap.add_argument("--keep", action="store_true", help="keep the quantised files")
    a = ap.parse_args()
    meta = json.loads((a.model / "meta.json").read_text(encoding="utf-8"))
    names = meta["labels"]
    dev, test = load_examples(a.dev), load_examples(a.test)
    first = int(meta.get("first_adapted_layer", 12 - int(meta.get("adapt_layers", 2))))
    fp32 = a.model / "model.fp32.onnx"
    if not fp32.exists():
        sys.exit(f"{fp32} is missing: train with --keep-fp32")
    for mode in ["fp32", *a.modes]:
        f = fp32 if mode == "fp32" else quantize(fp32, a.model / f"model.{mode}.onnx", mode, first, calib=dev)
        r = calibrate_and_score(a.model, f.name, dev, test, names)
        print(json.dumps({"metric": "nlu_quant", "mode": mode, "mb": round(f.stat().st_size / 1e6, 1),
                          "dev_micro_f1": r["dev"]["micro_f1"], "test_micro_f1": r["test"]["micro_f1"],
                          "test_exact": r["test"]["exact_match"],
                          "cpu_p95_ms": round(_cpu_p95_ms(a.model, f.name, test), 2),
                          "loadavg": round(os.getloadavg()[0], 1)}), flush=True)
        if mode != "fp32" and not a.keep:
            f.unlink()


if __name__ == "__main__":
    main()
