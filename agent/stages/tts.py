"""TTS stage: bot.replies -> audio.out (20 ms 8 kHz mu-law frames tagged with the reply id, then
a ReplyAudioEnd that says where the reply's audio ends).

The reply is split into sentences (CJK punctuation) and synthesised chunk by chunk.  A BargeIn
on call.control marks the reply as interrupted: nothing more of it is synthesised (a reply
that arrives after its own barge-in, e.g. on replay, is dropped), and the connector playing
audio.out drops the frames of that reply it has not played yet (agent/audiocall.py does).  A
BargeIn without a reply id (the caller went on speaking before the reply to their last turn
started) drops every reply to an earlier turn than the BargeIn's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from agent import events as ev
from agent import topics
from agent.speech.frames import pcm_to_ulaw_frames
from agent.speech.tts import TtsEngine, TtsError, split_sentences
from agent.stages.base import CallContext, Emit, Stage

log = structlog.get_logger("dianxiao.stages.tts")


@dataclass
class CallSpeech:
    interrupted: set[str] = field(default_factory=set)
    # a BargeIn with no reply id (the caller went on before the reply started): replies to turns
    # before this one are not synthesised
    cancel_before_turn: int = 0


class TtsStage(Stage):
    name = "tts"
    # Streaming (issue 17): the runner publishes each clause's frames as soon as they are
    # synthesised, so the first clause (<= 12 characters, split_sentences) plays while the rest
    # is synthesised; espeak-ng is a subprocess, so it runs off the event loop.
    streams = True
    blocking = True
    reads = (topics.REPLIES, topics.CONTROL)
    writes = (topics.AUDIO_OUT,)

    def __init__(self, engine: TtsEngine) -> None:
        self.engine = engine
        self.version = engine.name

    def new_state(self, call_id: str) -> CallSpeech:
        return CallSpeech()

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        return [e for part in self.handle_stream(event, ctx) for e in part]

    def handle_stream(self, event: Any, ctx: CallContext) -> Any:
        """One part per synthesised chunk (its frames), then the ReplyAudioEnd, always last."""
        st: CallSpeech = ctx.state
        if isinstance(event, ev.BargeIn):
            if event.reply_event_id:
                st.interrupted.add(event.reply_event_id)
            else:
                st.cancel_before_turn = max(st.cancel_before_turn, event.turn)
            return
        if not isinstance(event, ev.BotReply):
            return
        if event.turn < st.cancel_before_turn:
            st.interrupted.add(event.event_id)
            log.info("reply to an earlier turn dropped: the caller went on", call_id=ctx.call_id, turn=event.turn)
        index = 0
        for chunk in split_sentences(event.text) if event.text.strip() else []:
            out: list[Emit] = []
            if event.event_id in st.interrupted:
                break
            try:
                pcm, rate = self.engine.synthesize(chunk)
            except TtsError as exc:
                log.error("tts failed; chunk skipped", call_id=ctx.call_id, chunk=chunk, error=str(exc))
                continue
            for payload in pcm_to_ulaw_frames(pcm, rate):
                out.append(Emit(topics.AUDIO_OUT, self.make(
                    ev.AudioFrame, event, ctx, index, codec="pcmu8k", frame_index=index,
                    reply_event_id=event.event_id, payload=payload,
                )))
                index += 1
            if out:
                yield out
        # Where the reply ends (even a silent or interrupted one): the connector reports when
        # it has played up to here, and only then may the agent hang up after a goodbye.
        end = self.make(ev.ReplyAudioEnd, event, ctx, index, reply_event_id=event.event_id, frames=index)
        yield [Emit(topics.AUDIO_OUT, end)]
