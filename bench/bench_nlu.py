"""NLU latency per utterance (rules, and the trained model when --model is given), model size
and RAM, as JSON lines:  {"metric": ..., "value": ..., "unit": ..., ...}

    python bench/bench_nlu.py [--model .dianxiao/nlu-model] [--data agent/data/nlu/test.jsonl] [--repeat 3]
    python bench/bench_nlu.py --joint [PATH] --split dev     # the joint model (numpy), on a corpus split

One BLAS thread (set here, before numpy loads): the NLU stage shares 2 cores with ASR/VAD.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from agent.machine import machine
from agent.percentiles import percentile
from agent.resources import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(xs: list[float], q: float) -> float:
    return percentile(xs, q) or 0.0


def emit(metric: str, value: float, unit: str, **extra) -> None:
    print(json.dumps({"metric": metric, "value": round(value, 3), "unit": unit, **extra, "machine": machine()},
                     ensure_ascii=False), flush=True)


def bench(name: str, und, examples, repeat: int) -> None:
    for e in examples[:20]:  # warm caches (pinyin, ORT arena)
        und.understand(e.text, e.context)
    lat, cpu = [], []
    for _ in range(repeat):
        for e in examples:
            t0, c0 = time.perf_counter(), time.process_time()
            und.understand(e.text, e.context)
            lat.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    load = os.getloadavg()[0]
    emit("nlu_latency_p50", _pct(lat, 0.5), "ms", understander=name, n=len(lat), loadavg=round(load, 1))
    emit("nlu_latency_p95", _pct(lat, 0.95), "ms", understander=name, n=len(lat), loadavg=round(load, 1))
    # CPU time of the whole process (all threads, ORT's included): what the utterance costs when
    # the machine is not shared; wall time above includes waiting for a core on a loaded box
    emit("nlu_cpu_p50", _pct(cpu, 0.5), "ms", understander=name, n=len(cpu))
    emit("nlu_cpu_p95", _pct(cpu, 0.95), "ms", understander=name, n=len(cpu))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=DATA_DIR / "nlu" / "test.jsonl")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--joint", nargs="?", const="joint", default=None,
                    help="also the joint model: the shipped one, or this .npz")
    ap.add_argument("--split", choices=("train", "dev"), default=None, help="utterances of a corpus split instead of --data")
    a = ap.parse_args()
    from agent.nlu.evaluate import load_examples
    from agent.nlu.rules import RuleUnderstander

    if a.split:
        from agent.nlu.corpus import load_split

        examples = [c.to_example() for c in load_split(a.split)]
    else:
        examples = load_examples(a.data)
    rss0 = _rss_mb()
    rules = RuleUnderstander()
    bench("rules", rules, examples, a.repeat)
    emit("nlu_rss", _rss_mb(), "MB", understander="rules", note="whole process after loading")
    if a.model:
        from agent.nlu.model import ModelUnderstander

        t0 = time.perf_counter()
        model = ModelUnderstander(a.model, rules=rules)
        emit("nlu_model_load", (time.perf_counter() - t0) * 1000, "ms")
        size = sum(p.stat().st_size for p in a.model.iterdir() if p.is_file()) / 1e6
        emit("nlu_model_files", size, "MB", path=str(a.model))
        bench("model", model, examples, a.repeat)
        emit("nlu_rss", _rss_mb(), "MB", understander="model", rss_before_load_mb=round(rss0, 1))
    if a.joint:
        from agent.nlu.joint import SHIPPED, JointUnderstander

        path = SHIPPED if a.joint == "joint" else Path(a.joint)
        rss1 = _rss_mb()
        t0 = time.perf_counter()
        joint = JointUnderstander(path, rules=rules)
        emit("nlu_model_load", (time.perf_counter() - t0) * 1000, "ms", understander="joint",
             note="merged layers from the cache when present (first start: dequantise + merge)")
        # one adapter, or the members of an ensemble (the default since session 9)
        members = getattr(joint.model, "members", [joint.model])
        # INT8 layers beside an adapter, or built at first use into the cache (shipped members)
        onnx = [m.layers_file for m in members if m.layers_file is not None]
        files = [m.path for m in members] + onnx
        emit("nlu_model_files", sum(f.stat().st_size for f in files) / 1e6, "MB", path=str(path),
             members=len(members), understander="joint",
             layers="onnxruntime int8" if len(onnx) == len(members) else "numpy float32")
        bench("joint", joint, examples, a.repeat)
        emit("nlu_rss", _rss_mb(), "MB", understander="joint", rss_before_load_mb=round(rss1, 1))


if __name__ == "__main__":
    main()
