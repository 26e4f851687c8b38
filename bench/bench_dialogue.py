"""Per-turn latency of NLU + DST + policy + reply (templates, no LLM) over simulated calls.

Prints one JSON object per line: {"metric": ..., "value": ..., "unit": ...}.
    .venv/bin/python bench/bench_dialogue.py [--calls 300] [--playbook cloud_saas]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from agent.dialogue import DialogueState, load_playbook
from agent.dialogue.turn import step
from agent.events import NluResult
from agent.machine import machine
from agent.nlu import load_understander
from agent.percentiles import percentile
from agent.simulator import PERSONAS, make_caller


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--playbook", default="cloud_saas")
    ap.add_argument("--nlu-model", default=None)
    args = ap.parse_args()

    pb = load_playbook(args.playbook)
    t0 = time.perf_counter()
    understander = load_understander(args.nlu_model)
    understander.understand("你好")  # load tables / model before timing
    load_ms = (time.perf_counter() - t0) * 1000

    total, nlu_ms, core_ms = [], [], []
    for i in range(args.calls):
        caller = make_caller(PERSONAS[i % len(PERSONAS)], pb, 10_000 + i)
        state, replies, said = DialogueState(), [], []
        turn = 0
        while (text := caller(turn + 1, replies)) is not None:
            turn += 1
            a = time.perf_counter()
            out = understander.understand(text, context=tuple(said[-3:]))
            b = time.perf_counter()
            result = NluResult(call_id="bench", turn=turn, text=text, intents=out.intents, entities=out.entities)
            state, _action, reply = step(state, result, pb)
            c = time.perf_counter()
            said.append(text)
            replies.append(reply)
            nlu_ms.append((b - a) * 1000)
            core_ms.append((c - b) * 1000)
            total.append((c - a) * 1000)
            if reply.ends_call:
                caller(turn + 1, replies)
                break

    def pct(xs: list[float], q: float) -> float:
        return round(percentile(xs, q) or 0.0, 3)

    m = machine()
    described = f"{m['cpu']}, {m['cores']} cpus ({'+'.join(m['simd']) or 'no AVX2'}), python {platform.python_version()}"
    lines = [
        {"metric": "dialogue_turns", "value": len(total), "unit": "turns"},
        {"metric": "turn_p50_ms", "value": pct(total, 0.5), "unit": "ms", "what": "NLU+DST+policy+reply"},
        {"metric": "turn_p95_ms", "value": pct(total, 0.95), "unit": "ms", "what": "NLU+DST+policy+reply"},
        {"metric": "turn_max_ms", "value": round(max(total), 3), "unit": "ms"},
        {"metric": "nlu_p95_ms", "value": pct(nlu_ms, 0.95), "unit": "ms"},
        {"metric": "dialogue_core_p95_ms", "value": pct(core_ms, 0.95), "unit": "ms", "what": "DST+policy+reply"},
        {"metric": "dialogue_core_mean_ms", "value": round(statistics.fmean(core_ms), 3), "unit": "ms"},
        {"metric": "nlu_load_ms", "value": round(load_ms, 1), "unit": "ms"},
        {"metric": "machine", "value": described, "unit": "", "nlu": getattr(understander, "version", "?"),
         "playbook": f"{pb.name}@{pb.version}"},
    ]
    for line in lines:
        print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
