"""Which of the agent's replies may still reach the caller's ear (one per live call).

Two things close the gate on a reply, and every side that plays replies out — the telephony
bridge (connectors/bridge.py) and the simulated phone line of `dianxiao call` (agent/audiocall.py)
— must apply them the same way, or a test on the simulated line proves nothing about the phone:

- a `BargeIn` naming the reply: the caller spoke over it, the rest of it is dropped;
- a `BargeIn` with no reply id at caller turn N: the caller went on before the reply to their
  previous turn started (the VAD merged the two turns), so every reply to a turn before N is
  dropped, including frames of it that are still being synthesised and arrive later.

A reply whose frames were dropped is reported `interrupted` when its `ReplyAudioEnd` comes (so a
goodbye the caller never heard does not end the call)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent import events as ev


@dataclass
class ReplyGate:
    cancelled: set[str] = field(default_factory=set)  # reply ids whose audio is dropped
    before_turn: int = 0  # replies to caller turns before this one are dropped

    def on_barge_in(self, event: ev.BargeIn) -> None:
        if event.reply_event_id:
            self.cancelled.add(event.reply_event_id)
        else:
            self.before_turn = max(self.before_turn, event.turn)

    def passes(self, event: ev.AudioFrame | ev.ReplyAudioEnd) -> bool:
        """May this frame (or end marker) of a reply still play?  A reply to a turn the caller went
        on from is remembered as cancelled the first time one of its parts is seen."""
        rid = event.reply_event_id
        if not rid:
            return True
        if rid in self.cancelled:
            return False
        if event.turn < self.before_turn:
            self.cancelled.add(rid)
            return False
        return True

    def is_cancelled(self, reply_event_id: str | None) -> bool:
        return bool(reply_event_id) and reply_event_id in self.cancelled
