"""The trained intent model at run time: ONNX Runtime (INT8) + the tokenizer, no torch.

`ModelUnderstander` puts the model in front of the rules: the model decides the intents when it
is confident (some intent over its calibrated threshold), the rules decide otherwise and for
the compliance intents (do_not_call, request_human, ask_if_robot are never left to a model's
miss), and entities always come from the rules + lexicon.  `decided_by` records which path
chose the intents."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.events import Intent
from agent.nlu import NluOutput
from agent.nlu.rules import RuleUnderstander

SAFETY_INTENTS = ("do_not_call", "request_human", "ask_if_robot")
_HAS_WORD = re.compile(r"[\w\u3400-\u9fff]")


class ModelError(RuntimeError):
    """A model directory that cannot be used (missing files, wrong format)."""


def read_meta(model_dir: str | Path) -> dict:
    d = Path(model_dir)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        raise ModelError(f"{d}: no meta.json (train one with `dianxiao nlu-train --out {d}`)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != "dianxiao-nlu-onnx/1":
        raise ModelError(f"{d}: unknown model format {meta.get('format')!r}")
    return meta


class IntentEncoder:
    """Text (+ the previous caller turn) -> the model's input feeds, one utterance, unpadded."""

    def __init__(self, model_dir: str | Path, max_len: int = 64) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("the trained NLU needs the nlu extra (onnxruntime, tokenizers)") from exc
        self.tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tok.enable_truncation(max_len)
        # padded to the utterance itself (one per call): no compute spent on pad positions
        self.tok.no_padding()

    def feeds(self, text: str, context: Sequence[str] = ()) -> dict[str, np.ndarray]:
        # training (pipelines/nlu_train.encode) always gives an utterance without context a blank
        # second segment; a single-segment input here was a train/serve mismatch that cost 2.3 F1
        # points at fp32
        pair = context[-1] if context and context[-1] else " "
        enc = self.tok.encode(text or " ", pair)
        return {"input_ids": np.array([enc.ids], dtype=np.int64),
                "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}


class OnnxIntentModel:
    """The exported intent model in an ONNX Runtime session.

    One intra-op thread and no spinning: an utterance is 10-40 tokens, where a second thread
    halves nothing (measured: same wall time, twice the CPU, docs/nlu.md) and a spinning
    worker steals the core the ASR/VAD stages of the same call need."""

    def __init__(self, model_dir: str | Path, threads: int = 1, onnx_file: str | None = None) -> None:
        d = Path(model_dir)
        self.meta = read_meta(d)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError("the trained NLU needs the nlu extra (onnxruntime, tokenizers)") from exc
        self.labels: list[str] = self.meta["labels"]
        self.thresholds = np.array([self.meta["thresholds"][n] for n in self.labels], dtype=np.float32)
        self.version: str = self.meta["version"]
        self.encoder = IntentEncoder(d, int(self.meta.get("max_len", 64)))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = d / (onnx_file or self.meta["onnx"])
        if not path.exists():
            raise ModelError(f"{path} is missing")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def probs(self, text: str, context: Sequence[str] = ()) -> np.ndarray:
        return self.session.run(["probs"], self.encoder.feeds(text, context))[0][0]


class ModelUnderstander:
    def __init__(self, model_dir: str | Path, rules: RuleUnderstander | None = None) -> None:
        self.model = OnnxIntentModel(model_dir)
        self.rules = rules or RuleUnderstander()
        self.version = self.model.version

    def understand(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> NluOutput:
        ruled = self.rules.understand(text, context)
        if not _HAS_WORD.search(text or ""):
            return NluOutput(ruled.intents, ruled.entities, "rule", self.version)
        p = self.model.probs(text[:2000], tuple(context))
        chosen = {n: float(p[i]) for i, n in enumerate(self.model.labels) if p[i] >= self.model.thresholds[i]}
        chosen.pop("other", None) if len(chosen) > 1 else None
        if not chosen:  # nothing over its threshold: low confidence, the rules decide
            return NluOutput(ruled.intents, ruled.entities, "rule", self.version)
        for i in ruled.intents:
            if i.name in SAFETY_INTENTS and i.name not in chosen:
                chosen[i.name] = i.score
        intents = [Intent(name=n, score=round(s, 3)) for n, s in chosen.items()]
        return NluOutput(intents, ruled.entities, "model", self.version)
