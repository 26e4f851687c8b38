"""Heard copies of corpus lines (pipelines/heard_corpus.py): no TTS, no ASR - the spoken set and
the `--save-transcripts` file are written by hand in the shapes those tools write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.nlu.corpus import read_file
from pipelines.heard_corpus import convert, main, sample

W01 = [
    {"id": "w01-0001", "writer": "w01", "domain": "cloud", "text": "云服务器多少钱一个月",
     "intents": ["price_inquiry"], "entities": [{"type": "product", "span": "云服务器", "value": "cloud_server"},
                                                {"type": "term", "span": "一个月", "value": 1}]},
    {"id": "w01-0002", "writer": "w01", "domain": "cloud", "bot_prev": "给您按4核8G报价？", "text": "不是，要八核十六G",
     "intents": ["deny", "feature_inquiry"], "entities": [{"type": "feature", "span": "八核十六G", "value": "8核16g"}]},
    {"id": "w01-0003", "writer": "w01", "domain": "none", "text": "你好", "intents": ["greeting"], "entities": []},
]
D01 = [{"id": "d01-0001", "writer": "d01", "domain": "none", "text": "喂", "intents": ["greeting"], "entities": []}]
T01 = [{"id": "t01-0001", "writer": "t01", "domain": "none", "text": "再见", "intents": ["goodbye"], "entities": []}]


def _write(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus" / "utterances"
    _write(d / "w01.jsonl", W01)
    _write(d / "d01.jsonl", D01)
    _write(d / "t01.jsonl", T01)
    return d


def _spoken_and_transcripts(tmp_path: Path, heard: list[str]) -> tuple[Path, Path]:
    """A spoken set as pipelines/spoken_synth writes it (id kept, bot_prev kept) and the
    `dianxiao eval spoken --save-transcripts` lines for it (same order, no spans)."""
    spoken = [{"audio": f"wav/{i}.wav", "text": x["text"], "intents": x["intents"], "entities": x["entities"],
               "context": [], "split": "train", "id": x["id"], **({"bot_prev": x["bot_prev"]} if "bot_prev" in x else {})}
              for i, x in enumerate(W01)]
    trans = [{"text": h, "asr": h, "intents": x["intents"],
              "entities": [{"type": e["type"], "value": e["value"]} for e in x["entities"]],
              "context": [], "reference": x["text"], "source": "asr"} for x, h in zip(W01, heard)]
    return _write(tmp_path / "s" / "spoken.jsonl", spoken), _write(tmp_path / "s" / "transcripts.jsonl", trans)


def test_sample_is_seeded_and_keeps_the_split(corpus: Path) -> None:
    a = sample("train", 2, seed=3, directory=corpus)
    assert a == sample("train", 2, seed=3, directory=corpus)
    assert len(a) == 2 and all(x["writer"] == "w01" for x in a)
    assert [x["id"] for x in sample("dev", 5, seed=0, directory=corpus)] == ["d01-0001"]
    with pytest.raises(ValueError, match="frozen"):
        sample("test", 1, seed=0, directory=corpus)


def test_heard_lines_keep_intents_and_only_the_spans_the_ear_wrote(corpus: Path, tmp_path: Path) -> None:
    # line 1: the product was misheard (云服物器) but the term survived; line 2 heard verbatim
    # with its bot_prev; line 3: the ear heard nothing.
    spoken, trans = _spoken_and_transcripts(tmp_path, ["云服物器多少钱一个月", "不是，要八核十六G", ""])
    lines, counts = convert(spoken, trans, corpus)
    assert counts["lines"] == 3 and counts["written"] == 2 and counts["empty_transcript"] == 1
    assert counts["entities_kept"] == 2 and counts["entities_dropped"] == 1
    assert counts["dropped_by_type"] == {"product": 1}
    first, second = lines
    assert first["text"] == "云服物器多少钱一个月" and first["intents"] == ["price_inquiry"]
    assert first["entities"] == [{"type": "term", "span": "一个月", "value": 1}]
    assert first["reference"] == "云服务器多少钱一个月" and first["id"] == "w01-0001-heard"
    assert (second["bot_prev"], second["writer"], second["domain"]) == ("给您按4核8G报价？", "w01", "cloud")
    # the output is what JointConfig.extra_data reads (agent.nlu.corpus.read_file)
    out = _write(tmp_path / "heard.jsonl", lines)
    read = read_file(out)
    assert [ex.text for ex in read] == ["云服物器多少钱一个月", "不是，要八核十六G"]
    assert read[1].bot_prev == "给您按4核8G报价？" and read[1].entities[0].start == 4


def test_convert_refuses_transcripts_of_another_set(corpus: Path, tmp_path: Path) -> None:
    spoken, trans = _spoken_and_transcripts(tmp_path, ["a", "b", "c"])
    other = [json.loads(x) for x in trans.read_text(encoding="utf-8").splitlines()]
    other[1]["reference"] = "别的句子"
    _write(trans, other)
    with pytest.raises(ValueError, match="line 2"):
        convert(spoken, trans, corpus)
    _write(trans, other[:2])
    with pytest.raises(ValueError, match="2 lines"):
        convert(spoken, trans, corpus)


def test_cli_writes_the_heard_file(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spoken, trans = _spoken_and_transcripts(tmp_path, ["云服务器多少钱一个月", "不是要八核十六G", "你好"])
    out = tmp_path / "heard.jsonl"
    assert main(["convert", "--spoken", str(spoken), "--transcripts", str(trans), "--corpus", str(corpus),
                 "--out", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["written"] == 3 and counts["identical_to_reference"] == 2 and counts["entities_dropped"] == 0
    assert len(read_file(out)) == 3


def test_spoken_synth_keeps_the_corpus_id_and_bot_prev(corpus: Path, tmp_path: Path) -> None:
    """The join key (id) and the agent's previous words travel through the synthetic set."""
    import numpy as np

    from pipelines.spoken_synth import read_items, synthesise_set

    class Tones:
        name = "tones"

        def synthesize(self, text: str) -> tuple[np.ndarray, int]:
            return (0.3 * np.sin(np.arange(800 * len(text)) / 5)).astype(np.float32), 16000

    items = read_items(corpus / "w01.jsonl")
    assert [it.id for it in items] == ["w01-0001", "w01-0002", "w01-0003"]
    synthesise_set(items, tmp_path / "s", Tones(), normalise=None, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "s" / "spoken.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ["w01-0001", "w01-0002", "w01-0003"]
    assert lines[1]["bot_prev"] == "给您按4核8G报价？" and "bot_prev" not in lines[0]


def test_a_span_the_ear_wrote_in_digits_is_found_in_the_scoring_form() -> None:
    from pipelines.heard_corpus import find_surface, heard_line

    assert find_surface("我们有80台电脑，签3年", "八十台电脑") == "80台电脑"
    assert find_surface("我们有80台电脑，签3年", "三年") == "3年"
    assert find_surface("麻烦IOT平台多少钱", "IoT平台") == "IOT平台"
    assert find_surface("要1800并发", "八百") is None, "a number is not cut out of a longer one"
    assert find_surface("我们有80台电脑", "八十台电脑", exact_only=True) is None
    src = {"id": "w01-0009", "writer": "w01", "text": "我们有八十台电脑", "intents": ["product_inquiry"],
           "entities": [{"type": "quantity", "span": "八十台电脑", "value": 80}]}
    line, kept, dropped = heard_line(src, "我们有80台电脑")
    assert line["entities"] == [{"type": "quantity", "span": "80台电脑", "value": 80}] and not dropped
    assert heard_line(src, "我们有80台电脑", exact_only=True)[2] == src["entities"]


def test_a_writer_range_keeps_the_sample_when_writers_are_added(corpus: Path) -> None:
    from pipelines.heard_corpus import writer_set

    assert writer_set("w01-w03,d01") == {"w01", "w02", "w03", "d01"} and writer_set(None) is None
    before = sample("train", 2, seed=5, directory=corpus, writers=writer_set("w01-w01"))
    _write(corpus / "w02.jsonl", [{**W01[2], "id": "w02-0001", "writer": "w02"}])
    assert sample("train", 2, seed=5, directory=corpus, writers=writer_set("w01-w01")) == before
