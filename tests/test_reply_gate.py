"""The one rule for which replies may still reach the caller (agent/reply_gate.py), shared by the
phone bridge and the simulated line of `dianxiao call`."""

from __future__ import annotations

from agent import events as ev
from agent.reply_gate import ReplyGate


def _frame(reply: str, turn: int) -> ev.AudioFrame:
    return ev.AudioFrame(call_id="c1", stage="tts", turn=turn, codec="pcmu8k", reply_event_id=reply, payload=b"\xff" * 160)


def test_a_caller_who_speaks_over_a_reply_stops_that_reply_and_no_other():
    gate = ReplyGate()
    assert gate.passes(_frame("r1", 1))
    gate.on_barge_in(ev.BargeIn(call_id="c1", stage="vad", turn=2, reply_event_id="r1", heard_ms=300))
    assert not gate.passes(_frame("r1", 1)) and gate.is_cancelled("r1")
    assert not gate.passes(ev.ReplyAudioEnd(call_id="c1", turn=1, reply_event_id="r1", frames=40))
    assert gate.passes(_frame("r2", 2)) and not gate.is_cancelled("r2")


def test_a_caller_who_went_on_before_the_reply_started_drops_every_reply_to_an_earlier_turn():
    """Even frames of that reply still being synthesised when the barge-in came arrive later and
    are dropped; the reply to the merged turn plays."""
    gate = ReplyGate()
    gate.on_barge_in(ev.BargeIn(call_id="c1", stage="vad", turn=3, reply_event_id=None))
    assert not gate.passes(_frame("late", 2)) and gate.is_cancelled("late")
    assert not gate.passes(ev.ReplyAudioEnd(call_id="c1", turn=2, reply_event_id="late", frames=10))
    assert gate.passes(_frame("now", 3)) and gate.passes(ev.ReplyAudioEnd(call_id="c1", turn=3, reply_event_id="now"))
    # a second such barge-in at an older turn does not reopen anything
    gate.on_barge_in(ev.BargeIn(call_id="c1", stage="vad", turn=1, reply_event_id=None))
    assert not gate.passes(_frame("other", 2))
    assert gate.passes(ev.AudioFrame(call_id="c1", stage="x", turn=0, codec="pcmu8k"))  # not a reply: not gated
