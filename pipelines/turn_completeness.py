"""Rebuild the turn-completeness classifier (agent/data/turn/completeness.npz, issue 17).

    python -m pipelines.turn_completeness                 # train, report held-out writers, write the model
    python -m pipelines.turn_completeness --out /tmp/c.npz --report-only

Only the train writers' utterance files are read (agent/data/nlu/corpus/utterances/w*.jsonl, the
split writers.yaml names "train"); the dev and test writers' files are never opened, so the NLU's
held-out figures stay untouched.  Every eighth train writer is first held out to report how well
the classifier tells whole lines from cut ones on writers it did not see (one JSON line), then the
shipped model is trained on all train writers.  Deterministic: same corpus, same weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agent.nlu.corpus import read_objects
from agent.resources import DATA_DIR
from agent.speech import completeness as cp

UTTERANCES = DATA_DIR / "nlu" / "corpus" / "utterances"


def train_writer_files(folder: Path = UTTERANCES) -> list[Path]:
    from pipelines.corpus_check import writers

    split = writers()
    # Only w-files, by name: the d*/t* files are not even listed into a variable.
    return sorted(p for p in folder.glob("w*.jsonl") if split.get(p.stem) == "train")


def lines_of(paths: list[Path]) -> list[str]:
    return [obj["text"] for p in paths for _, obj in read_objects(p, strict_json=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=cp.default_path())
    ap.add_argument("--cuts", type=int, default=2, help="cut copies of each line (incomplete examples)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--report-only", action="store_true", help="held-out report, write nothing")
    a = ap.parse_args()
    files = train_writer_files()
    held = files[::8]
    fit = [p for p in files if p not in held]
    t0 = time.perf_counter()
    probe = cp.train(cp.examples(lines_of(fit), a.cuts), epochs=a.epochs)
    # scored on whole lines vs. cut ones (no clause examples): the question the stage asks
    report = cp.accuracy(probe, cp.examples(lines_of(held), a.cuts, seed=18, clauses=False))
    print(json.dumps({"metric": "turn_completeness_heldout_writers", "held_out": [p.stem for p in held],
                      **report, "train_s": round(time.perf_counter() - t0, 1)}, ensure_ascii=False), flush=True)
    if a.report_only:
        return
    lines = lines_of(files)
    model = cp.train(cp.examples(lines, a.cuts), epochs=a.epochs,
                     meta={"writers": [p.stem for p in files], "lines": len(lines), "cuts_per_line": a.cuts,
                           "n_buckets": cp.N_BUCKETS, "built_by": "python -m pipelines.turn_completeness"})
    model.save(a.out)
    print(json.dumps({"metric": "turn_completeness_written", "path": str(a.out), "lines": len(lines),
                      "bytes": a.out.stat().st_size}), flush=True)


if __name__ == "__main__":
    main()
