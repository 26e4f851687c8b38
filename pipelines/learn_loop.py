"""The learning loop end to end, on simulated customers (docs/learning.md):

1. an exploration campaign with the shipped playbook (cloud_saas@1, random moves per objection),
   seed 101: the calls to learn from, with the CRM's deal outcomes as a CSV;
2. a top human seller's calls against the same kind of customers, seed 202, as transcripts;
3. `dianxiao learn` on both → proposal.yaml + report.html;
4. `dianxiao learn accept` → cloud_saas@2 in the version store;
5. an A/B campaign cloud_saas@1 vs @2 on held-out customers (seed 303, other lead ids);
6. `dianxiao campaign report` → the lift with its intervals.

Each step is the CLI command printed before it runs, so the numbers in README can be re-made
one command at a time.

    python pipelines/learn_loop.py --out build/learn [--learn-leads 4000] [--ab-leads 6000]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> str:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(out.stdout.rstrip())
    if out.stderr.strip():
        print(out.stderr.rstrip(), file=sys.stderr)
    print(f"  ({time.perf_counter() - t:.1f} s)\n", flush=True)
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/learn"))
    ap.add_argument("--learn-leads", type=int, default=6000)
    ap.add_argument("--human-calls", type=int, default=3000)
    ap.add_argument("--ab-leads", type=int, default=8000)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in ("learn.sqlite", "ab.sqlite"):
        for suffix in ("", "-wal", "-shm"):
            (out / (old + suffix)).unlink(missing_ok=True)
    store = out / "playbooks"
    for old in store.glob("*.yaml"):
        old.unlink()
    dx = [str(Path(sys.executable).with_name("dianxiao"))]
    common = ["--playbooks", str(store)]
    run(dx + ["campaign", "run", "--arms", "cloud_saas@1", "--customers", str(args.learn_leads), "--seed", "101",
              "--explore", "--name", "learn", "--log", str(out / "learn.sqlite"), "--crm-out", str(out / "crm.csv"), *common])
    run(dx + ["learn", "sellers", "--calls", str(args.human_calls), "--seed", "202", "--out", str(out / "transcripts" / "top_seller.csv")])
    run(dx + ["learn", "--calls", str(out / "learn.sqlite"), "--transcripts", str(out / "transcripts"),
              "--outcomes", str(out / "crm.csv"), "--win", "call", "--playbook", "cloud_saas@1", "--out", str(out), *common])
    run(dx + ["learn", "accept", str(out / "proposal.yaml"), *common])
    run(dx + ["campaign", "run", "--arms", "cloud_saas@1,cloud_saas@2", "--split", "50/50", "--customers", str(args.ab_leads),
              "--seed", "303", "--name", "ab", "--log", str(out / "ab.sqlite"), "--crm-out", str(out / "ab-crm.csv"), *common])
    run(dx + ["campaign", "report", "--log", str(out / "ab.sqlite"), "--campaign", "ab", "--json", str(out / "ab.json")])
    run(dx + ["outcomes", "import", str(out / "ab-crm.csv"), "--log", str(out / "ab.sqlite")])
    run(dx + ["campaign", "report", "--log", str(out / "ab.sqlite"), "--campaign", "ab", "--on", "deal"])
    rep = json.loads((out / "ab.json").read_text())
    c = rep["comparisons"][0]
    print(json.dumps({"control": c["control"], "learned": c["arm"], "lift": round(c["diff"], 4),
                      "fixed_95": [round(x, 4) for x in c["fixed_95"]],
                      "always_valid_95": [round(x, 4) for x in c["always_valid"]],
                      "arms": {a["arm"]: [a["calls"], a["wins"], round(a["rate"], 4)] for a in rep["arms"]}}))


if __name__ == "__main__":
    main()
