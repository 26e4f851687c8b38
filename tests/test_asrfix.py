"""The ear mis-hears sales words as homophones; the corrector puts the domain term back, leaves
ordinary Mandarin and numbers alone, and says what it changed."""

from __future__ import annotations

import pytest

from agent.asrfix import Corrector, build_lexicon
from agent.asrfix.lexicon import LexiconError
from agent.asrfix.pinyin import FUZZY, sequence_similarity, spelled_syllables, split_syllable, syllable_similarity


@pytest.fixture(scope="module")
def corrector() -> Corrector:
    return Corrector(build_lexicon("cloud_saas"))


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("我要性价比高的云服物器", "我要性价比高的云服务器"),
        ("还要支持一地被分", "还要支持异地备份"),
        ("有没有以地容灾", "有没有异地容灾"),
        ("我们需要1000病发的", "我们需要1000并发的"),
        ("你们的年飞多少钱", "你们的年费多少钱"),
        ("最好能对接我现有的一阿皮系统", "最好能对接我现有的ERP系统"),
        ("我想了解一下你们的萨斯平台", "我想了解一下你们的SaaS平台"),
        ("能对接西尔爱慕吗", "能对接CRM吗"),
        ("支持高仿吗", "支持高防吗"),
        ("私有话部署可以吗", "私有化部署可以吗"),
    ],
)
def test_a_misheard_domain_word_is_put_back(corrector: Corrector, heard: str, meant: str) -> None:
    fixed = corrector.correct(heard)
    assert fixed.text == meant
    assert fixed.changes, "every change is reported"
    for ch in fixed.changes:
        assert heard[ch.start:ch.end] == ch.before
        assert ch.after in fixed.text


@pytest.mark.parametrize(
    "said",
    [
        "年份是多少",  # a real word one tone-insensitive syllable away from 年费
        "前一天我打过电话",  # 前一 sounds like 迁移 but 一天 straddles it
        "我想先使用一下",  # 使用 is an everyday word; 试用 is too generic to be written by sound
        "我们用的是用有的系统",  # 是用 is grammar, not 试用
        "我们用服务器",  # 用 is not 云
        "签一个合同",
        "明天下午三点再打给我",
        "我们公司有三百多人",
        "不需要了谢谢",
        "你是机器人吗",
        "我是做服装生意的",
        "能对接CRM吗",
        "跟阿里云比怎么样",
    ],
)
def test_ordinary_mandarin_is_left_alone(corrector: Corrector, said: str) -> None:
    fixed = corrector.correct(said)
    assert fixed.text == said, fixed.changes
    assert fixed.changes == ()


def test_numbers_are_never_rewritten(corrector: Corrector) -> None:
    # 一千 / 两万 / 1000 stay exactly as heard even inside a window that sounds like a term.
    for said in ("我要一千病发", "两万块一年", "1000并发多少钱", "幺三八零零一三八零零零"):
        fixed = corrector.correct(said)
        for ch in fixed.changes:
            assert not any(c in "0123456789一二两三四五六七八九十百千万" for c in ch.before), ch
    assert corrector.correct("我要一千病发").text == "我要一千并发"


def test_the_composite_request_is_repaired_in_one_pass(corrector: Corrector) -> None:
    heard = "我要性价比高的云服物器，还要支持一地被分，最好能对接我现有的一阿皮系统"
    fixed = corrector.correct(heard)
    assert fixed.text == "我要性价比高的云服务器，还要支持异地备份，最好能对接我现有的ERP系统"
    assert [c.after for c in fixed.changes] == ["云服务器", "异地备份", "ERP"]


def test_bad_input_gets_a_result_not_a_crash(corrector: Corrector) -> None:
    for text in ("", "   ", "？？！！", "😀😀", "hello world", "云" * 10000):
        fixed = corrector.correct(text)
        assert isinstance(fixed.text, str)


def test_hotword_prompt_leads_with_the_catalogue() -> None:
    lex = build_lexicon("cloud_saas")
    terms = lex.prompt_terms(max_chars=80)
    assert terms[0] == "云服务器"
    for must in ("异地备份", "并发", "年费", "SaaS", "ERP"):
        assert must in terms
    assert sum(len(t) + 1 for t in terms) <= 80
    assert not any("_" in t for t in terms)
    # numbers as spoken come from the catalogue's capacities (prompt only, never written by sound)
    numbers = {t.text for t in lex.terms if t.kind == "number"}
    assert "一千并发" in numbers and "两万并发" in numbers
    assert not any(t.target for t in lex.terms if t.kind == "number")


def test_unknown_playbook_is_a_clear_error() -> None:
    with pytest.raises(LexiconError, match="not found"):
        build_lexicon("no_such_playbook")


def test_pinyin_similarity_forgives_the_usual_confusions() -> None:
    s = split_syllable
    assert syllable_similarity(s("zhi"), s("zi")) == FUZZY
    assert syllable_similarity(s("nian"), s("lian")) == FUZZY
    assert syllable_similarity(s("fei"), s("hei")) == FUZZY
    assert syllable_similarity(s("bing"), s("bin")) == FUZZY
    assert syllable_similarity(s("fang"), s("fan")) == FUZZY
    assert syllable_similarity(s("nian"), s("nian")) == 1.0
    assert syllable_similarity(s("fen"), s("fei")) < FUZZY
    assert sequence_similarity(spelled_syllables("yun fu wu qi"), spelled_syllables("yun fu qi")) == pytest.approx(0.75)


def test_confusions_learned_from_the_ear_are_applied_and_guarded() -> None:
    """Whisper wrote 病发 for 并发 and 试用 as 是用 on train audio; only the first is kept as a
    learned confusion, because 是用 also occurs in what callers really say."""
    from agent.asrfix.confusions import mine

    lexicon = build_lexicon("cloud_saas")
    pairs = [
        ("我们要一千并发的", "我们要1000病发的"),
        ("能扛住两万并发吗", "能扛住20000病发吗"),
        ("有异地备份吗", "有一地被分吗"),
        ("可以先试用吗", "可以先是用吗"),
        ("我们就是用这个的", "我们就是用这个的"),
    ]
    mined = {c["heard"]: c for c in mine(pairs, lexicon)}
    assert mined["病发"]["meant"] == "并发" and mined["病发"]["count"] == 2
    assert mined["一地被分"]["meant"] == "异地备份"
    assert "是用" not in mined, "a spelling callers really use is never learned"
    learned = {h: (c["meant"], c["kind"], c["id"]) for h, c in mined.items()}
    fixed = Corrector(lexicon, learned=learned).correct("能扛住3000病发吗")
    assert fixed.text == "能扛住3000并发吗"
    assert fixed.changes[0].note == "learned confusion"
    # the guard still holds: numbers and exact terms are untouched
    assert Corrector(lexicon, learned={"一千": ("并发", "feature", "concurrency")}).correct("一千并发").text == "一千并发"


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("还有能扛住800点发吗", "还有能扛住800并发吗"),  # one syllable of 并发 right, beside a number
        ("最好能支持2万订发", "最好能支持2万并发"),
        ("半年能做吗续算10万", "半年能做吗预算10万"),  # 预算 is everyday: only the number lets it be written
    ],
)
def test_beside_a_large_number_one_misheard_syllable_is_forgiven(corrector: Corrector, heard: str, meant: str) -> None:
    fixed = corrector.correct(heard)
    assert fixed.text == meant
    assert [ch.note for ch in fixed.changes] == ["beside a number"]


@pytest.mark.parametrize(
    "said",
    [
        "我3点发给你",  # a small number: a time, not a capacity
        "开3000元发票",  # 发票 crosses the window's edge
        "最多能出30000块哈",  # 块 counts money: 块哈 is not 并发 though 哈 is one fuzzy step from 发
        "我打算3000买",  # 打算 is an ordinary word
        "发1000个发货单",
        "我们预算5万要800并发",  # already right
        "前日算3500",  # 前日 crosses the edge
    ],
)
def test_words_beside_numbers_that_are_not_the_term_stay(corrector: Corrector, said: str) -> None:
    assert corrector.correct(said).text == said


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("能对接我们的1RT吗", "能对接我们的ERP吗"),  # Whisper writes E's yi as 1
        ("最好能对接我现有的arp系统", "最好能对接我现有的ERP系统"),
        ("现有的sat系统", "现有的SAP系统"),
        ("能不能接触雷pi", "能不能接触API"),  # a character heard for the first letter
    ],
)
def test_a_latin_token_that_spells_a_term_but_one_letter_sound_is_the_term(corrector: Corrector, heard: str,
                                                                          meant: str) -> None:
    fixed = corrector.correct(heard)
    assert fixed.text == meant
    assert [ch.note for ch in fixed.changes] == ["spelled letters"]


@pytest.mark.parametrize(
    "said",
    [
        "我们的KPI怎么算",  # a real three-letter acronym: too short to forgive a letter
        "ROI多少",
        "我需要1个cdm",  # one letter from CDN and from CRM: a coin toss, left alone
        "开个app",
        "iPhone可以吗",
        "用的是CPU和GPU",
    ],
)
def test_latin_words_that_are_not_a_misheard_term_stay(corrector: Corrector, said: str) -> None:
    assert corrector.correct(said).text == said
