"""Put several trained joint adapters together as one ensemble and calibrate it on dev.

    python -m pipelines.nlu_ensemble --out DIR A/joint.npz B/joint.npz C/joint.npz

DIR gets one sub-directory per member (m1/, m2/, ...: the adapter and, when the member has one,
its INT8 ONNX layers), `ensemble.json` (members, version, the intent thresholds and the
open-feature bar chosen on dev for the averaged probabilities, as `pipelines.nlu_joint.score`
does for one adapter) and `ensemble.metrics.json` (dev figures, per member and averaged).
`DIANXIAO_NLU_MODEL=DIR` (or `--nlu-model DIR`) then runs it (agent/nlu/joint.JointEnsemble).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from agent.nlu.joint import ENSEMBLE_FILE, ENSEMBLE_FORMAT, JointEnsemble, JointUnderstander, read_adapter


def write_manifest(out: Path, members: list[Path], copy: bool = True) -> Path:
    """DIR/ensemble.json naming the members (copied into DIR/m1, m2, ... unless `copy` is False,
    in which case they must already lie under DIR)."""
    out.mkdir(parents=True, exist_ok=True)
    names, versions = [], []
    for i, src in enumerate(members, 1):
        src = src / "joint.npz" if src.is_dir() else src
        cfg, _arrays = read_adapter(src)
        if copy:
            dst = out / f"m{i}" / "joint.npz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            onnx = src.with_name(cfg["onnx"]) if cfg.get("onnx") else None
            if onnx is not None and onnx.exists():
                shutil.copy2(onnx, dst.with_name(onnx.name))
        else:
            dst = src
        names.append(str(dst.relative_to(out)))
        versions.append(cfg["version"])
    manifest = {"format": ENSEMBLE_FORMAT, "version": f"joint-e5small-ensemble{len(names)}-{time.strftime('%Y%m%d%H%M%S')}",
                "members": names, "member_versions": versions, "entity_mode": "hybrid", "thresholds": {},
                "open_feature_min_conf": 0.0}
    path = out / ENSEMBLE_FILE
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def calibrate_ensemble(manifest: Path, base: str | None = None, dev: list | None = None) -> dict:
    """Thresholds and the open-feature bar for the averaged probabilities, chosen on dev (the
    corpus's dev split unless `dev` is given), written into the manifest; returns the dev figures
    (ensemble and each member on its own)."""
    from agent.nlu.corpus import load_split
    from agent.nlu.evaluate import evaluate
    from agent.nlu.rules import RuleUnderstander
    from pipelines.nlu_joint import calibrate_open_feature_conf, dev_thresholds

    dev = load_split("dev") if dev is None else dev
    ens = JointEnsemble(manifest, base=base)
    thr = dev_thresholds(ens, dev, ens.labels)
    cfg = json.loads(manifest.read_text(encoding="utf-8"))
    cfg["thresholds"] = thr
    manifest.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    rules = RuleUnderstander()
    und = JointUnderstander(manifest, rules=rules, base=base)
    examples = [ex.to_example() for ex in dev]
    min_conf, res = calibrate_open_feature_conf(und, examples)
    cfg["open_feature_min_conf"] = min_conf
    cfg["dev"] = res["summary"]
    manifest.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
    per_member = {}
    for m in cfg["members"]:
        r = evaluate(JointUnderstander(manifest.parent / m, rules=rules, base=base), examples)["summary"]
        per_member[m] = {k: r[k] for k in ("micro_f1", "exact_match", "entity_f1")}
    metrics = {"ensemble": str(manifest), "version": cfg["version"], "members": cfg["members"],
               "member_versions": cfg.get("member_versions"), "thresholds": thr, "open_feature_min_conf": min_conf,
               "dev_model": res["summary"], "dev_model_entity_per_type": res["entity_per_type"],
               "dev_model_per_intent": res["per_intent"], "dev_members": per_member}
    manifest.with_name("ensemble.metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.nlu_ensemble", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapters", nargs="+", type=Path, help="member joint.npz files (or directories holding one)")
    ap.add_argument("--out", type=Path, required=True, help="directory to write the ensemble into")
    a = ap.parse_args(argv)
    if len(a.adapters) < 2:
        raise SystemExit("nlu_ensemble: an ensemble needs at least two adapters")
    m = calibrate_ensemble(write_manifest(a.out, a.adapters))
    print(json.dumps({"out": str(a.out), "dev_model": m["dev_model"], "dev_members": m["dev_members"]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
