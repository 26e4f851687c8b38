"""A line-test stage: plays the caller's own audio back (audio.in -> audio.out).

Used to check a telephony connector end to end without the speech stages (`dianxiao sip serve
--echo`), and by the connector tests.  Each caller frame becomes one bot frame of the same call,
tagged with a per-call reply id so that a barge-in can cancel it like a real reply."""

from __future__ import annotations

from typing import Any

from agent import events as ev
from agent import topics
from agent.stages.base import CallContext, Emit, Stage


class EchoStage(Stage):
    name = "echo"
    reads = (topics.AUDIO_IN,)
    writes = (topics.AUDIO_OUT,)

    def handle(self, event: Any, ctx: CallContext) -> list[Emit]:
        if not isinstance(event, ev.AudioFrame) or event.codec != "pcmu8k":
            return []
        out = self.make(
            ev.AudioFrame, event, ctx, 0, codec="pcmu8k", frame_index=event.frame_index,
            reply_event_id=ev.derived_event_id(ctx.call_id, self.name, 0), payload=event.payload,
        )
        return [Emit(topics.AUDIO_OUT, out)]
