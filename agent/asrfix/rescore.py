"""Pick, among Whisper's n-best hypotheses, the one a sales caller most plausibly said.

Whisper's beam search already has the right words in a lower-ranked hypothesis more often than
post-correction can rebuild them from the first one (并发 in hypothesis 3, 病发 in hypothesis 1).
Each hypothesis is corrected (agent/asrfix/correct.py), then ranked by

    Whisper's own score + term_weight × characters of lexicon terms in it
                        + intent_weight × (the NLU understands something in it)

so a hypothesis only wins when it carries domain words or a recognisable request - on speech
without sales words (the real news clips) the first hypothesis almost always stays.  The two
weights were chosen on synthetic TRAIN-split calls, never the test split (docs/spoken.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.asrfix.correct import Change, Correction, Corrector
from agent.asrfix.lexicon import DomainLexicon
from agent.speech.textnorm import for_cer

TERM_WEIGHT = 0.2
INTENT_WEIGHT = 0.5


def lexicon_surfaces(lexicon: DomainLexicon) -> tuple[str, ...]:
    """Target terms in scoring form, longest first (so 异地备份 is counted before 备份)."""
    return tuple(sorted({for_cer(t.text) for t in lexicon.terms if t.target and len(for_cer(t.text)) >= 2},
                        key=len, reverse=True))


def domain_terms_in(text: str, surfaces: Sequence[str]) -> list[str]:
    """Lexicon surfaces found in text (scoring form), longest first, non-overlapping, one entry
    per occurrence."""
    t = for_cer(text)
    taken = [False] * len(t)
    found = []
    for s in surfaces:
        start = t.find(s)
        while start >= 0:
            if not any(taken[start : start + len(s)]):
                found.append(s)
                taken[start : start + len(s)] = [True] * len(s)
            start = t.find(s, start + 1)
    return found


def term_chars(text: str, surfaces: Sequence[str]) -> int:
    """Characters of the distinct lexicon terms in `text`.  Distinct: a hypothesis that says a
    term twice - Whisper looping - earns nothing for it."""
    return sum(len(s) for s in set(domain_terms_in(text, surfaces)))


def plausible_against(first: str, other: str) -> bool:
    """A lower-ranked hypothesis may replace the first only if it is about as long (the same
    speech, heard differently) and does not loop."""
    from agent.speech.asr import looks_degenerate

    a, b = len(for_cer(first)), len(for_cer(other))
    return b <= a * 1.25 + 2 and b >= a * 0.75 - 2 and not looks_degenerate(other)


@dataclass(frozen=True)
class Choice:
    index: int  # which hypothesis (0 = Whisper's first)
    raw_text: str  # that hypothesis as Whisper wrote it (normalised)
    correction: Correction  # and after the post-correction
    value: float


@dataclass
class Rescorer:
    corrector: Corrector
    surfaces: tuple[str, ...]
    understands: Callable[[str], bool] | None = None  # True: the NLU finds a non-`other` intent
    term_weight: float = TERM_WEIGHT
    intent_weight: float = INTENT_WEIGHT

    @classmethod
    def for_lexicon(cls, corrector: Corrector, lexicon: DomainLexicon,
                    understands: Callable[[str], bool] | None = None) -> Rescorer:
        return cls(corrector, lexicon_surfaces(lexicon), understands)

    def value(self, fixed_text: str, score: float) -> float:
        v = score + self.term_weight * term_chars(fixed_text, self.surfaces)
        if self.understands is not None and self.intent_weight and self.understands(fixed_text):
            v += self.intent_weight
        return v

    def pick(self, hypotheses: Sequence[tuple[str, float]]) -> Choice:
        """hypotheses: (normalised text, Whisper's score), Whisper's order.  Ties keep the
        earlier one.  With one hypothesis this is just the post-correction."""
        if not hypotheses:
            raise ValueError("no hypotheses to choose from")
        best: Choice | None = None
        first = hypotheses[0][0]
        seen: set[str] = set()
        for i, (text, score) in enumerate(hypotheses):
            # The same words with other punctuation (a quarter of Whisper's n-best) score lower
            # and earn the same bonus: they cannot win, so they are not corrected again.
            form = for_cer(text)
            if not text or form in seen or (i and not plausible_against(first, text)):
                continue
            seen.add(form)
            fixed = self.corrector.correct(text)
            v = self.value(fixed.text, score)
            if best is None or v > best.value:
                best = Choice(i, text, fixed, v)
        if best is None:
            return Choice(0, hypotheses[0][0], self.corrector.correct(hypotheses[0][0]), float("-inf"))
        return best


def rule_understands() -> Callable[[str], bool]:
    """The intent-level signal: does the rule NLU (the default understander, no model to
    load) find a request other than `other` in the text?"""
    from agent.nlu.rules import RuleUnderstander

    rules = RuleUnderstander()
    return lambda text: any(i.name != "other" for i in rules.understand(text).intents)


def correct_transcript(text: str, hypotheses: Sequence[tuple[str, float]], corrector: Corrector | None,
                       rescorer: Rescorer | None) -> tuple[str, list[dict]]:
    """What a call publishes for a transcript and the change report: the rescorer's choice when
    there are several hypotheses, else the post-correction of `text`, else `text` as is.  One
    definition for the ASR stage, `dianxiao eval spoken` and the benchmark."""
    if rescorer is not None and len(hypotheses) > 1:
        choice = rescorer.pick(hypotheses)
        return choice.correction.text, choice_changes(choice, text, len(hypotheses))
    if corrector is not None:
        fixed = corrector.correct(text)
        return fixed.text, [c.as_dict() for c in fixed.changes]
    return text, []


def choice_changes(choice: Choice, first_text: str, n: int) -> list[dict]:
    """The correction report of a choice: a leading `nbest` entry when it is not Whisper's
    first hypothesis, then the post-correction's own changes."""
    out = []
    if choice.index:
        out.append(Change(0, len(first_text), first_text, choice.raw_text, "nbest",
                          f"hypothesis {choice.index + 1} of {n}", choice.value,
                          "more domain terms / an understood request").as_dict())
    return out + [c.as_dict() for c in choice.correction.changes]
