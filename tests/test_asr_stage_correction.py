"""The live ASR stage corrects domain near-homophones in the final transcript and keeps what the
recogniser actually wrote, so QA sees both."""

from __future__ import annotations

import numpy as np

from agent import events as ev
from agent.settings import Settings
from agent.speech.asr import AsrResult
from agent.speech.factories import _corrector
from agent.stages.asr import AsrStage
from agent.stages.base import CallContext


class _HeardEngine:
    """Stands in for Whisper only to fix what was 'heard'; Whisper itself is tested elsewhere."""

    name = "heard"

    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, pcm16, hotwords=()):
        return AsrResult(self.text, self.text, "zh", None, -0.1, len(pcm16) // 16, 1.0)


def _final(stage: AsrStage) -> ev.TranscriptFinal:
    seg = ev.SpeechSegment(call_id="c", turn=1, start_ms=0, end_ms=1000, final=True,
                           audio_pcm16=np.zeros(16000, dtype="<i2").tobytes())
    (emit,) = stage.handle(seg, CallContext(call_id="c", state=stage.new_state("c")))
    return emit.event


def test_a_misheard_concurrency_is_corrected_and_the_raw_text_kept():
    stage = AsrStage(_HeardEngine("我要一千病发的"), corrector=_corrector(Settings().playbook))
    final = _final(stage)
    assert final.text == "我要一千并发的"
    assert final.raw_text == "我要一千病发的"
    assert final.corrections and final.corrections[0]["after"] == "并发"
    assert final.asr_model.endswith("+asrfix")


def test_correction_can_be_switched_off_and_clean_text_is_left_alone():
    assert _final(AsrStage(_HeardEngine("我要一千病发的"))).text == "我要一千病发的"
    clean = _final(AsrStage(_HeardEngine("你们的价格是多少"), corrector=_corrector(Settings().playbook)))
    assert clean.text == "你们的价格是多少" and clean.raw_text is None and clean.corrections == []
