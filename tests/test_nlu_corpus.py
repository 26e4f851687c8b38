"""The hand-written corpus loader: splits by writer, strict checks naming FILE:LINE, and the
half-written line a writer may be appending right now (skipped with a warning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.nlu.corpus import (CorpusError, CorpusWarning, load_split, read_file, split_counts,
                              template_examples)


def _line(**kw) -> str:
    obj = {"id": "w01-0001", "writer": "w01", "domain": "cloud", "text": "云服务器多少钱一年",
           "intents": ["price_inquiry"],
           "entities": [{"type": "product", "span": "云服务器", "value": "cloud_server"},
                        {"type": "term", "span": "一年", "value": 12}]}
    obj.update(kw)
    return json.dumps(obj, ensure_ascii=False)


def _write(tmp_path: Path, name: str, *lines: str) -> Path:
    d = tmp_path / "utterances"
    d.mkdir(exist_ok=True)
    p = d / f"{name}.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_a_good_line_gives_spans_as_offsets(tmp_path):
    (ex,) = read_file(_write(tmp_path, "w01", _line()))
    assert ex.intents == ("price_inquiry",)
    assert [(s.type, ex.text[s.start:s.end], s.value) for s in ex.entities] == [
        ("product", "云服务器", "cloud_server"), ("term", "一年", 12)]
    assert ex.to_example().entities == (("product", "cloud_server"), ("term", "12"))


def test_the_same_surface_twice_takes_successive_occurrences(tmp_path):
    line = _line(text="一年还是一年", intents=["price_inquiry"],
                 entities=[{"type": "term", "span": "一年", "value": 12}, {"type": "term", "span": "一年", "value": 12}])
    (ex,) = read_file(_write(tmp_path, "w01", line))
    assert [(s.start, s.end) for s in ex.entities] == [(0, 2), (4, 6)]


@pytest.mark.parametrize("kw, message", [
    ({"intents": ["buy_now"]}, "unknown intent 'buy_now'"),
    ({"intents": ["other", "affirm"]}, "'other' must stand alone"),
    ({"entities": [{"type": "colour", "span": "云服务器", "value": "red"}]}, "unknown entity type 'colour'"),
    ({"entities": [{"type": "product", "span": "数据库", "value": "cloud_database"}]}, "span '数据库' is not a substring"),
    ({"intents": []}, "'intents' must be a non-empty list"),
    ({"text": ""}, "'text' must be a non-empty string"),
    ({"entities": [{"type": "product", "span": "云服务器"}]}, "'value' is missing"),
])
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, kw, message):
    path = _write(tmp_path, "w01", _line(), _line(**kw))
    with pytest.raises(CorpusError, match=message) as err:
        read_file(path)
    assert f"{path}:2:" in str(err.value)


def test_a_half_written_line_is_skipped_with_a_warning(tmp_path):
    path = _write(tmp_path, "w01", _line(), _line()[:25])
    with pytest.warns(CorpusWarning, match=r"w01.jsonl:2: skipped"):
        assert len(read_file(path)) == 1
    with pytest.raises(CorpusError, match="not JSON"):
        read_file(path, strict_json=True)


def test_splits_follow_the_writer_id_or_writers_yaml(tmp_path):
    for wid in ("w01", "w02", "d01", "t01"):
        _write(tmp_path, wid, _line(id=f"{wid}-0001", writer=wid))
    d = tmp_path / "utterances"
    assert [e.writer for e in load_split("train", d)] == ["w01", "w02"]
    assert [e.writer for e in load_split("dev", d)] == ["d01"]
    assert [e.writer for e in load_split("test", d)] == ["t01"]
    (tmp_path / "writers.yaml").write_text("w02: dev\nd01: {split: train, region: 广东}\n", encoding="utf-8")
    assert [e.writer for e in load_split("train", d)] == ["d01", "w01"]
    assert [e.writer for e in load_split("dev", d)] == ["w02"]
    (tmp_path / "writers.yaml").write_text("w02: holdout\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unknown split 'holdout'"):
        load_split("train", d)


def test_the_shipped_corpus_passes_its_checks():
    """Every complete line of every writer file (the files are still being written)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        counts = split_counts()
    assert sum(counts["train"].values()) > 0


def test_template_lines_get_spans_where_the_value_is_found(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "我要一千并发的云服务器", "intents": ["feature_inquiry", "product_inquiry"],
                             "entities": [{"type": "concurrency", "value": 1000}, {"type": "product", "value": "cloud_server"}]},
                            ensure_ascii=False) + "\n", encoding="utf-8")
    (ex,) = template_examples(p)
    got = {(s.type, ex.text[s.start:s.end], s.value) for s in ex.entities}
    assert ("product", "云服务器", "cloud_server") in got
    assert any(t == "concurrency" and v == 1000 and "一千" in surf for t, surf, v in got)


def _script(**kw) -> str:
    obj = {"id": "w01-s01", "writer": "w01", "domain": "cloud",
           "turns": ["云服务器多少钱", "要四核八G的，五台"], "bot": ["您需要什么配置？"],
           "expected_slots": {"product": "cloud_server", "quantity": 5}, "expected_active_intents": ["price_inquiry"]}
    obj.update(kw)
    return json.dumps(obj, ensure_ascii=False)


@pytest.mark.parametrize("kw,message", [
    ({"bot": []}, "'bot' must be 1 strings"),
    ({"turns": ["只有一句"], "bot": []}, "'turns' must be 2-6"),
    ({"expected_slots": {"prodcut": "cloud_server"}}, "unknown slot 'prodcut'"),
    ({"expected_slots": {"quantity": "五台"}}, "slot 'quantity' must be a number"),
    ({"expected_slots": {"features": "gpu"}}, "slot 'features' must be a list"),
    ({"expected_active_intents": ["price_enquiry"]}, "unknown intent 'price_enquiry'"),
])
def test_a_bad_script_is_an_error_naming_file_and_line(tmp_path, kw, message):
    from agent.nlu.corpus import check_scripts_file

    path = tmp_path / "w01.jsonl"
    path.write_text(_script() + "\n" + _script(**kw) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=message) as err:
        check_scripts_file(path)
    assert f"{path}:2" in str(err.value)


def test_the_shipped_scripts_pass_their_checks():
    from agent.nlu.corpus import SCRIPT_DIR, check_scripts_file, writer_files

    files = writer_files(SCRIPT_DIR)
    assert len(files) >= 90 and all(check_scripts_file(p) >= 1 for p in files.values())
