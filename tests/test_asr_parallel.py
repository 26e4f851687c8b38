"""Issue 17: several callers finish speaking at once.  The ASR decodes them in parallel (one
worker per core), a caller waiting for an answer (final) goes before a head start (partial),
and a partial that newer audio of the same turn has replaced is never decoded at all."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent import events as ev
from agent import topics
from agent.settings import Settings
from agent.stages.asr import AsrStage
from agent.testing import running_pipeline
from tests.speech_helpers import MODELS, load_clip


class Watched:
    """The real engine; it only notes when each decode ran (start, end, audio ms)."""

    def __init__(self, inner):
        self.inner, self.name, self.workers = inner, inner.name, inner.workers
        self.decodes: list[tuple[float, float, int]] = []
        self._lock = threading.Lock()

    def transcribe(self, pcm, hotwords=()):
        started = time.perf_counter()
        result = self.inner.transcribe(pcm, hotwords)
        with self._lock:
            self.decodes.append((started, time.perf_counter(), len(pcm) // 16))
        return result


@pytest.fixture(scope="module")
def two_worker_engine():
    pytest.importorskip("faster_whisper", reason="the speech extra is not installed")
    from agent.speech.asr import make_engine
    from agent.speech.assets import AssetError

    try:
        return make_engine("faster-whisper", "whisper-base", MODELS, cpu_threads=1, workers=2)
    except AssetError as exc:
        pytest.skip(str(exc))


def segment(call: str, audio, end_ms: int, final: bool, turn: int = 1) -> ev.SpeechSegment:
    return ev.SpeechSegment(call_id=call, stage="vad", turn=turn, start_ms=0, end_ms=end_ms, final=final,
                            audio_pcm16=audio.astype("<i2").tobytes())


async def finals_of(bus, calls: set[str], timeout: float) -> dict[str, ev.TranscriptFinal]:
    consumer = bus.consumer("test-reader", [topics.TRANSCRIPTS])
    await consumer.start()
    got: dict[str, ev.TranscriptFinal] = {}
    try:
        deadline = time.monotonic() + timeout
        while set(got) != calls and time.monotonic() < deadline:
            for rec in await consumer.getmany(timeout_ms=200):
                e = ev.decode(rec.value)
                if isinstance(e, ev.TranscriptFinal):
                    got[e.call_id] = e
    finally:
        await consumer.stop()
    return got


async def test_callers_who_finish_together_are_decoded_in_parallel_finals_first(embedded_bus, tmp_path,
                                                                                two_worker_engine):
    engine = Watched(two_worker_engine)
    stage = AsrStage(engine, [])
    stage.workers = 2
    clip = load_clip("BAC009S0764W0121.wav")  # ~4.6 s
    short = clip[: len(clip) // 2]
    ms = lambda a: len(a) // 16  # noqa: E731
    async with running_pipeline(embedded_bus, Settings(data_dir=tmp_path, models_dir=MODELS), [stage]):
        # Two callers are mid-sentence (partials), three have just finished (finals).  Caller
        # e's partial is followed by the final of the same turn before any worker is free.
        batch = [segment("a", short, ms(short), False), segment("b", short, ms(short), False),
                 segment("c", clip, ms(clip), True), segment("d", clip, ms(clip), True),
                 segment("e", short, ms(short), False), segment("e", clip, ms(clip), True)]
        await embedded_bus.publish_many([(topics.SPEECH, s.call_id, ev.encode(s)) for s in batch])
        finals = await finals_of(embedded_bus, {"c", "d", "e"}, timeout=60)
        # the partials of a and b are still decoded, after the finals
        for _ in range(300):
            if len(engine.decodes) >= 5:
                break
            await asyncio.sleep(0.1)

    assert set(finals) == {"c", "d", "e"} and all(f.text for f in finals.values())
    decodes = sorted(engine.decodes)
    # e's partial was never decoded: 3 finals + the 2 partials of a and b
    assert len(decodes) == 5
    # the first two decodes to start were finals (whole clip), not the earlier-queued partials
    assert [d[2] for d in decodes[:2]] == [ms(clip), ms(clip)]
    assert sorted(d[2] for d in decodes[3:]) == [ms(short), ms(short)]
    # and two decodes ran at the same time: the second started before the first ended
    assert decodes[1][0] < decodes[0][1]
