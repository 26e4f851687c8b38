"""Quantise the exported fp32 intent model, and score any ONNX export the way the stage runs it.

The quantisation modes (`MODES`) are the options compared in docs/nlu.md; `nlu_train` ships
one of them (`DEFAULT_MODE`).  Every mode keeps the 250k-row embedding in INT8: in fp32 it
alone is 384 MB, over the 200 MB bar for the model files.

Scoring goes through `agent.nlu.model.OnnxIntentModel` — the class the NLU stage uses — so the
thresholds calibrated here on dev, and the test figures, are those of the deployed session
(one utterance per call, the same tokenisation and second segment)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.nlu.evaluate import Example

MODES = {
    "dynamic": "dynamic INT8, one scale per tensor",
    "dynamic-pc": "dynamic INT8, one scale per output channel",
    "dynamic-pc-rr": "dynamic INT8 per channel, 7-bit weights (reduce_range)",
    "dynamic-pc-fp32top": "dynamic INT8 per channel; the adapted top layers' MatMuls and the head stay fp32",
    "dynamic-pc-fp32head": "dynamic INT8 per channel; the classifier head stays fp32",
    "static-qdq": "static INT8 (QDQ), activation ranges calibrated on dev, per-channel weights",
}
# Every per-channel mode lands within 1 F1 point of fp32 and dev cannot tell them apart
# (docs/nlu.md); 7-bit weights are the portable one: x86 CPUs without VNNI multiply u8 x s8
# pairs into a saturating int16, which full-range 8-bit weights can overflow.
DEFAULT_MODE = "dynamic-pc-rr"

_LAYER = re.compile(r"layer\.(\d+)/")


def fp32_nodes(onnx_path: Path, first_adapted: int) -> list[str]:
    """Names of the MatMul/Gemm nodes of the adapted layers (index >= first_adapted) and of the
    head: the weights LoRA changed, whose small deltas INT8 rounding would blur."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    out = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        m = _LAYER.search(node.name)
        if (m and int(m.group(1)) >= first_adapted) or "classifier" in node.name:
            out.append(node.name)
            if node.op_type == "Gemm":
                # the quantiser first rewrites a Gemm into a MatMul named "<gemm>_MatMul" and
                # matches the exclusion list against that name
                out.append(node.name + "_MatMul")
    return out


class _DevReader:
    """Feeds dev utterances, encoded as at run time, to the static-range calibrator."""

    def __init__(self, encode, examples: Sequence[Example]) -> None:
        self._items = iter([encode(e.text, e.context) for e in examples])

    def get_next(self):
        return next(self._items, None)


def quantize(fp32: Path, out: Path, mode: str, first_adapted: int, calib: Sequence[Example] = ()) -> Path:
    """Write `out` (in the model dir, beside tokenizer.json) from `fp32` with one of `MODES`;
    static-qdq calibrates its activation ranges on `calib` (the dev split)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if mode not in MODES:
        raise ValueError(f"unknown quantisation mode {mode!r}; one of {sorted(MODES)}")
    if mode == "static-qdq":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        from agent.nlu.model import IntentEncoder

        if not calib:
            raise ValueError("static-qdq needs calibration utterances")
        quantize_static(str(fp32), str(out), _DevReader(IntentEncoder(out.parent).feeds, calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul", "Gather", "Gemm"])
        return out
    kw: dict = {"weight_type": QuantType.QInt8, "per_channel": mode != "dynamic", "reduce_range": mode.endswith("-rr")}
    if mode == "dynamic-pc-fp32top":
        kw["nodes_to_exclude"] = fp32_nodes(fp32, first_adapted)
    elif mode == "dynamic-pc-fp32head":
        kw["nodes_to_exclude"] = fp32_nodes(fp32, 10**9)
    quantize_dynamic(str(fp32), str(out), **kw)
    return out


def session_probs(model_dir: Path, onnx_file: str, examples: Sequence[Example], n_labels: int) -> np.ndarray:
    """Probabilities from the run-time session over `onnx_file` in `model_dir`, one call per utterance."""
    from agent.nlu.model import OnnxIntentModel

    if not examples:
        return np.zeros((0, n_labels), dtype=np.float32)
    m = OnnxIntentModel(model_dir, onnx_file=onnx_file)
    return np.stack([m.probs(e.text, e.context) for e in examples])
