"""Whisper's beam often has the right sales word in a lower-ranked hypothesis; the rescorer
picks it by domain knowledge - and leaves speech without sales words alone."""

from __future__ import annotations

import numpy as np
import pytest

from agent import events as ev
from agent.asrfix import build_lexicon
from agent.asrfix.rescore import Rescorer, rule_understands, term_chars, lexicon_surfaces
from agent.settings import Settings
from agent.speech.asr import AsrResult
from agent.speech.factories import _corrector, _rescorer
from agent.stages.asr import AsrStage
from agent.stages.base import CallContext
from tests.speech_helpers import MODELS, load_clip


@pytest.fixture(scope="module")
def rescorer() -> Rescorer:
    playbook = Settings().playbook
    return Rescorer.for_lexicon(_corrector(playbook), build_lexicon(playbook), rule_understands())


def test_a_rival_heard_right_only_in_the_second_hypothesis_wins(rescorer):
    hyps = [("若同馨云那边给的价格比你们低", -0.40), ("腾讯云那边给的价格比你们低", -0.55)]
    choice = rescorer.pick(hyps)
    assert choice.index == 1 and "腾讯云" in choice.correction.text


def test_an_understood_request_beats_a_garbled_one(rescorer):
    hyps = [("吉隆坡好还是不好", -0.30), ("给我转人工", -0.60)]
    assert rescorer.pick(hyps).index == 1


def test_a_looping_hypothesis_never_wins_by_repeating_a_term(rescorer):
    hyps = [("1.5倍以上是安全的", -0.30), ("1.5倍以上是安全的1.5倍以上是安全的", -0.50)]
    assert rescorer.pick(hyps).index == 0
    surfaces = lexicon_surfaces(build_lexicon(Settings().playbook))
    assert term_chars(hyps[1][0], surfaces) == term_chars(hyps[0][0], surfaces)


def test_speech_without_sales_words_keeps_whispers_first_hypothesis(rescorer):
    hyps = [("新基金法取消了对持股股东的行政审批", -0.30), ("新基金法取消了对持股股东的行政审", -0.35),
            ("新基金法取消了对持股股东的行政申报", -0.50)]
    choice = rescorer.pick(hyps)
    assert choice.index == 0 and choice.correction.text == hyps[0][0]
    with pytest.raises(ValueError):
        rescorer.pick([])


class _BeamEngine:
    name = "beam"

    def __init__(self, hyps: list[tuple[str, float]]) -> None:
        self.hyps = tuple(hyps)

    def transcribe(self, pcm16, hotwords=()):
        return AsrResult(self.hyps[0][0], self.hyps[0][0], "zh", None, -0.1, len(pcm16) // 16, 1.0,
                         hypotheses=self.hyps)


def test_the_live_stage_publishes_the_chosen_hypothesis_and_says_so():
    playbook = Settings().playbook
    stage = AsrStage(_BeamEngine([("若同馨云那边给的价格比你们低", -0.4), ("腾讯云那边给的价格比你们低", -0.5)]),
                     corrector=_corrector(playbook), rescorer=_rescorer(playbook))
    seg = ev.SpeechSegment(call_id="c", turn=1, start_ms=0, end_ms=1000, final=True,
                           audio_pcm16=np.zeros(16000, dtype="<i2").tobytes())
    (emit,) = stage.handle(seg, CallContext(call_id="c", state=stage.new_state("c")))
    final = emit.event
    assert final.text == "腾讯云那边给的价格比你们低"
    assert final.raw_text == "若同馨云那边给的价格比你们低"  # what Whisper ranked first, for QA
    assert final.corrections[0]["kind"] == "nbest" and final.corrections[0]["id"] == "hypothesis 2 of 2"


def test_whisper_returns_its_n_best_with_the_first_as_the_transcript():
    from agent.speech.assets import AssetError, whisper_base_dir
    from agent.speech.asr import FasterWhisperEngine

    try:
        base = whisper_base_dir(MODELS)
    except AssetError as exc:
        pytest.skip(str(exc))
    engine = FasterWhisperEngine(base, nbest=5)
    res = engine.transcribe(load_clip("BAC009S0764W0121.wav"))
    assert len(res.hypotheses) == 5 and res.hypotheses[0][0] == res.text
    assert len({t for t, _ in res.hypotheses}) > 1
    assert FasterWhisperEngine(base).transcribe(load_clip("BAC009S0764W0121.wav")).hypotheses == ()


def test_the_final_reuses_the_early_partials_rescoring_so_publishing_it_costs_nothing_more():
    """The VAD sends the turn's audio as a partial during the pause, then the same audio as
    the final: the choice is made once, off the end-of-turn path."""
    playbook = Settings().playbook
    picks = []

    class CountingRescorer:
        def __init__(self, inner):
            self.inner = inner

        def pick(self, hyps):
            picks.append(hyps)
            return self.inner.pick(hyps)

    stage = AsrStage(_BeamEngine([("若同馨云那边给的价格比你们低", -0.4), ("腾讯云那边给的价格比你们低", -0.5)]),
                     corrector=_corrector(playbook), rescorer=CountingRescorer(_rescorer(playbook)))
    ctx = CallContext(call_id="c", state=stage.new_state("c"))
    audio = np.zeros(16000, dtype="<i2").tobytes()
    for final in (False, True):
        seg = ev.SpeechSegment(call_id="c", turn=1, start_ms=0, end_ms=1000, final=final, audio_pcm16=audio)
        out = stage.handle(seg, ctx)
    assert out[0].event.text == "腾讯云那边给的价格比你们低"
    assert len(picks) == 1
