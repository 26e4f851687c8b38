"""Text normalisation for speech-like Chinese, keeping a map back to the caller's characters.

Every step (width/case folding, traditional -> simplified, dialect words -> Mandarin, ASR
homophone repair) rewrites spans; `Normalized` keeps, for each output character, the span of the
original text it came from, so entity offsets point into what the caller actually said."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

# Long inputs are cut before the expensive steps: a real turn is < 200 characters, and a stage
# must answer in milliseconds even when a transcript runs away.
MAX_CHARS = 512


@dataclass(frozen=True)
class Normalized:
    orig: str
    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def orig_span(self, start: int, end: int) -> tuple[int, int]:
        if not self.text or end <= start:
            return (0, 0)
        return (self.starts[start], self.ends[end - 1])

    def orig_text(self, start: int, end: int) -> str:
        a, b = self.orig_span(start, end)
        return self.orig[a:b]


def _identity(text: str) -> Normalized:
    n = len(text)
    return Normalized(text, text, tuple(range(n)), tuple(range(1, n + 1)))


def _rewrite(norm: Normalized, pieces: Iterable[tuple[int, int, str]]) -> Normalized:
    """Replace non-overlapping [a, b) spans of norm.text (sorted) by new strings."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for a, b, new in pieces:
        out.append(norm.text[pos:a])
        starts.extend(norm.starts[pos:a])
        ends.extend(norm.ends[pos:a])
        if b > a:
            s, e = norm.starts[a], norm.ends[b - 1]
        else:  # pure insertion: anchor on the neighbour
            s = e = norm.starts[a] if a < len(norm.text) else (norm.ends[-1] if norm.ends else 0)
        out.append(new)
        starts.extend([s] * len(new))
        ends.extend([e] * len(new))
        pos = b
    out.append(norm.text[pos:])
    starts.extend(norm.starts[pos:])
    ends.extend(norm.ends[pos:])
    return Normalized(norm.orig, "".join(out), tuple(starts), tuple(ends))


def _per_char(norm: Normalized, f: Callable[[str], str]) -> Normalized:
    pieces = []
    for i, ch in enumerate(norm.text):
        new = f(ch)
        if new != ch:
            pieces.append((i, i + 1, new))
    return _rewrite(norm, pieces) if pieces else norm


def _map_regex(norm: Normalized, pattern: re.Pattern[str], table: dict[str, str]) -> Normalized:
    pieces = [(m.start(), m.end(), table[m.group(0)]) for m in pattern.finditer(norm.text)]
    return _rewrite(norm, pieces) if pieces else norm


_CJK = r"\u3400-\u9fff"
_SPACE_INSIDE_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")
_MULTISPACE = re.compile(r"\s{2,}")
_SPELLED_LATIN = re.compile(r"(?<![a-z0-9])[a-z](?: [a-z])+(?![a-z0-9])")


_PUNCT = {"。": ".", "、": ",", "「": '"', "」": '"', "『": '"', "』": '"', "【": "[", "】": "]", "《": "<", "》": ">"}


def _between_cjk(text: str, a: int, b: int) -> bool:
    return a > 0 and b < len(text) and bool(re.match(rf"[{_CJK}]", text[a - 1])) and bool(re.match(rf"[{_CJK}]", text[b]))


def _fold_char(ch: str) -> str:
    folded = _PUNCT.get(ch) or unicodedata.normalize("NFKC", ch).lower()
    # NFKC may expand (e.g. ㎏ -> kg); keep it, offsets still map to the one source char.
    return folded


@lru_cache(maxsize=1)
def _t2s() -> Callable[[str], str]:
    try:  # OpenCC when installed (the nlu extra); a small table of sales words otherwise
        import opencc

        conv = opencc.OpenCC("t2s")
        return lambda ch: conv.convert(ch) if ord(ch) > 0x2E80 else ch
    except Exception:  # noqa: BLE001 - any failure just means the fallback table
        return lambda ch: _T2S_FALLBACK.get(ch, ch)


_T2S_FALLBACK = dict(
    zip(
        "雲務價錢們個這麼嗎備發試機統對買貴點說話電時間還幾級專業號碼線異彈擴儲寬帶網絡軟體產擇開關會議過來後見聯繫係與華為騰訊裡裏優預萬塊兩億單簽約訂購費報資絕興擾煩別總經轉謝請問題應該東廣較減護維監設傳測實現讓給從沒聽樣準標進組態數據庫遷權門戶結構營銷額達鐘週兒麵錯勞話議種範圍陸壓縮齊術",
        "云务价钱们个这么吗备发试机统对买贵点说话电时间还几级专业号码线异弹扩储宽带网络软体产择开关会议过来后见联系系与华为腾讯里里优预万块两亿单签约订购费报资绝兴扰烦别总经转谢请问题应该东广较减护维监设传测实现让给从没听样准标进组态数据库迁权门户结构营销额达钟周儿面错劳话议种范围陆压缩齐术",
        strict=True,
    )
)


def _compile(table: dict[str, str]) -> re.Pattern[str]:
    keys = sorted(table, key=len, reverse=True)
    return re.compile("|".join(re.escape(k) for k in keys))


def normalize_basic(text: str) -> Normalized:
    """Width, case, script and whitespace folding only."""
    norm = _identity(text[:MAX_CHARS])
    norm = _per_char(norm, _fold_char)
    t2s = _t2s()
    norm = _per_char(norm, t2s)
    # A space between Chinese words is an ASR pause (a clause break) unless the caller's text is
    # spelled out character by character ("云 服 务 器").
    tokens = norm.text.split()
    spelled = len(tokens) >= 3 and sum(len(t) == 1 for t in tokens) >= 0.6 * len(tokens)
    gap = "" if spelled else ","
    norm = _rewrite(norm, [(m.start(), m.end(), gap if _between_cjk(norm.text, m.start(), m.end()) else "")
                           for m in _SPACE_INSIDE_CJK.finditer(norm.text)])
    norm = _rewrite(norm, [(m.start(), m.end(), " ") for m in _MULTISPACE.finditer(norm.text)])
    # ASR spells acronyms letter by letter ("c r m", "e r p"): join the letters back into the word
    gaps = [(run.start() + i, run.start() + i + 1, "") for run in _SPELLED_LATIN.finditer(norm.text)
            for i, ch in enumerate(run.group(0)) if ch == " "]
    return _rewrite(norm, gaps) if gaps else norm


@dataclass(frozen=True)
class Rewriter:
    """Dialect words and ASR homophones -> Mandarin sales vocabulary, then pinyin repair."""

    table: dict[str, str]
    pinyin_targets: tuple[str, ...]

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile_cached(tuple(sorted(self.table.items())))

    def __call__(self, text: str) -> Normalized:
        norm = normalize_basic(text)
        if self.table:
            norm = _map_regex(norm, self.pattern, self.table)
        if self.pinyin_targets:
            norm = _pinyin_repair(norm, self.pinyin_targets)
        return norm


@lru_cache(maxsize=8)
def _compile_cached(items: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    return _compile(dict(items))


# --- pinyin-aware repair of domain words mis-heard by ASR (限购 -> 线构 kind of errors) ---

_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"))
_FUZZY_FINALS = (("ang", "an"), ("eng", "en"), ("ing", "in"))


def _fuzzy(syl: str) -> str:
    for a, b in _FUZZY_INITIALS:
        if syl.startswith(a):
            syl = b + syl[len(a):]
            break
    if syl.startswith("n"):
        syl = "l" + syl[1:]
    for a, b in _FUZZY_FINALS:
        if syl.endswith(a):
            syl = syl[: -len(a)] + b
            break
    return syl


@lru_cache(maxsize=4096)
def _char_key(ch: str, fuzzy: bool = True) -> str:
    if not ("\u4e00" <= ch <= "\u9fff"):
        return ch
    try:
        from pypinyin import lazy_pinyin
    except ImportError:  # without pypinyin the repair step is a no-op
        return ch
    syl = lazy_pinyin(ch)[0]
    return _fuzzy(syl) if fuzzy else syl


@lru_cache(maxsize=8)
def _target_index(targets: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    # two-character words only by exact pinyin: fuzzy sounds make too many false friends
    # (怎么样时间 -> 怎么演示间); longer words tolerate the fuzzy initials/finals.
    return {tuple("=" * (len(t) == 2) + _char_key(c, len(t) > 2) for c in t): t for t in targets}


def _pinyin_repair(norm: Normalized, targets: tuple[str, ...]) -> Normalized:
    index = _target_index(targets)
    lengths = sorted({len(k) for k in index}, reverse=True)
    text = norm.text
    fuzzy_keys = [_char_key(c) for c in text]
    strict_keys = ["=" + _char_key(c, False) for c in text]
    pieces: list[tuple[int, int, str]] = []
    i = 0
    while i < len(text):
        hit = None
        if "\u4e00" <= text[i] <= "\u9fff":
            for n in lengths:
                if i + n <= len(text):
                    t = index.get(tuple((strict_keys if n == 2 else fuzzy_keys)[i : i + n]))
                    if t is not None:
                        hit = (n, t)
                        break
        if hit:
            n, t = hit
            if text[i : i + n] != t:
                pieces.append((i, i + n, t))
            i += n
        else:
            i += 1
    return _rewrite(norm, pieces) if pieces else norm
