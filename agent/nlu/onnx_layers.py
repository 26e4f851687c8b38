"""The merged encoder layers of a joint adapter as an INT8 ONNX file, built from the numpy weights
with no torch: written beside the adapter at training time (`python -m pipelines.nlu_joint
export-onnx`), or at first use into the cache for an adapter shipped without it, so that the
repository ships only the adapters (3.3 MB each) and not 14.5 MB of derived layers per adapter.
(Until session 9 the export went through torch.onnx; this builder's file gives the same hidden
states bit for bit, checked on the three shipped members.)

The graph is the one `agent.nlu.encoder.NumpyEncoder.forward` computes (fused QKV, softmax
attention, post-LayerNorm, exact GELU); its MatMul weights are initializers, so ONNX Runtime's
dynamic quantisation turns them into per-channel INT8 exactly as the training-time export does.
Needs the `onnx` package (in the `nlu` extra) besides onnxruntime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OPSET = 17  # LayerNormalization


def build_fp32(layers: Sequence[Sequence[np.ndarray]], n_heads: int, eps: float, out: Path) -> Path:
    """Write the float32 graph: input `embedded` (1, seq, H), output `hidden` (1, seq, H)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden = int(np.asarray(layers[0][2]).shape[0])
    dh = hidden // n_heads
    inits: list = []
    nodes: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    shape5 = const("shape5", np.array([1, -1, 3, n_heads, dh], dtype=np.int64))
    shape3 = const("shape3", np.array([1, -1, hidden], dtype=np.int64))
    axis0 = const("axis0", np.array([0], dtype=np.int64))
    scale = const("scale", np.array(1.0 / dh ** 0.5, dtype=np.float32))
    half = const("half", np.array(0.5, dtype=np.float32))
    one = const("one", np.array(1.0, dtype=np.float32))
    rsqrt2 = const("rsqrt2", np.array(0.7071067811865476, dtype=np.float32))

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    x = "embedded"
    for i, layer in enumerate(layers):
        qkv, qkv_b, ao, ao_b, aln_w, aln_b, fi, fi_b, fo, fo_b, oln_w, oln_b = (
            np.ascontiguousarray(np.asarray(w, dtype=np.float32)) for w in layer)
        w = {n: const(f"w{i}.{n}", v) for n, v in (
            ("qkv", qkv), ("qkv_b", qkv_b), ("ao", ao), ("ao_b", ao_b), ("aln_w", aln_w), ("aln_b", aln_b),
            ("fi", fi), ("fi_b", fi_b), ("fo", fo), ("fo_b", fo_b), ("oln_w", oln_w), ("oln_b", oln_b))}
        p = f"l{i}."
        a = node("Add", [node("MatMul", [x, w["qkv"]], p + "qkv"), w["qkv_b"]], p + "qkv_add")
        a = node("Transpose", [node("Reshape", [a, shape5], p + "qkv5")], p + "qkv_t", perm=[2, 0, 3, 1, 4])
        nodes.append(helper.make_node("Split", [a], [p + "q3", p + "k3", p + "v3"], name=p + "split", axis=0))
        q, k, v = (node("Squeeze", [p + f"{n}3", axis0], p + n) for n in "qkv")
        s = node("Mul", [node("MatMul", [q, node("Transpose", [k], p + "kt", perm=[0, 1, 3, 2])], p + "qk"), scale], p + "qk_s")
        ctx = node("MatMul", [node("Softmax", [s], p + "att", axis=-1), v], p + "ctx")
        ctx = node("Reshape", [node("Transpose", [ctx], p + "ctx_t", perm=[0, 2, 1, 3]), shape3], p + "ctx3")
        o = node("Add", [node("Add", [node("MatMul", [ctx, w["ao"]], p + "ao"), w["ao_b"]], p + "ao_add"), x], p + "res1")
        x = node("LayerNormalization", [o, w["aln_w"], w["aln_b"]], p + "ln1", axis=-1, epsilon=float(eps))
        h = node("Add", [node("MatMul", [x, w["fi"]], p + "fi"), w["fi_b"]], p + "fi_add")
        erf = node("Erf", [node("Mul", [h, rsqrt2], p + "h_r")], p + "erf")
        g = node("Mul", [node("Mul", [h, half], p + "h_half"), node("Add", [erf, one], p + "erf1")], p + "gelu")
        o = node("Add", [node("Add", [node("MatMul", [g, w["fo"]], p + "fo"), w["fo_b"]], p + "fo_add"), x], p + "res2")
        x = node("LayerNormalization", [o, w["oln_w"], w["oln_b"]], p + "ln2", axis=-1, epsilon=float(eps))
    nodes.append(helper.make_node("Identity", [x], ["hidden"], name="out"))
    graph = helper.make_graph(
        nodes, "joint-layers",
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [1, "seq", hidden])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "seq", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dianxiao")
    model.ir_version = 8  # what onnxruntime 1.18+ reads
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def build_int8(layers: Sequence[Sequence[np.ndarray]], n_heads: int, eps: float, out: Path,
               reduce_range: bool = True) -> Path:
    """The INT8 layers file at `out` (written whole or not at all: a reader never sees half)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    fp32 = build_fp32(layers, n_heads, eps, tmp.with_suffix(".fp32.onnx"))
    root = logging.getLogger()
    quiet = _DropPreprocessAdvice()
    root.addFilter(quiet)  # the quantiser advises pre-processing on the root logger: not for us
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
        os.replace(tmp, out)
    finally:
        root.removeFilter(quiet)
        fp32.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()
