"""The agent hangs up after a goodbye the caller heard out, not after one they talked over.

bench_voice at 10 calls (issue 17): a premature endpoint handed the policy half a sentence, it
answered with a goodbye, the caller's second half barged into it, and the hang-up stage ended
the call on the goodbye's ReplyPlayed(interrupted=True): BYE mid-turn, the turn unanswered."""

from __future__ import annotations

from agent import events as ev
from agent.stages.base import CallContext
from agent.stages.hangup import HangupStage


def _ended(out):
    return [e.event for e in out if isinstance(e.event, ev.CallEnded)]


def _goodbye(turn):
    return ev.BotReply(call_id="c", stage="policy", turn=turn, text="好的，不打扰您了，再见。", action="exit_polite",
                       ends_call=True)


def test_a_goodbye_the_caller_talked_over_does_not_end_the_call_and_the_next_one_played_out_does():
    stage = HangupStage()
    ctx = CallContext(call_id="c", state=stage.new_state("c"))
    stage.handle(ev.CallStarted(call_id="c", stage="sip", mode="audio"), ctx)
    first = _goodbye(3)
    assert stage.handle(first, ctx) == []
    talked_over = ev.ReplyPlayed(call_id="c", stage="sip", turn=3, reply_event_id=first.event_id, frames=380,
                                 interrupted=True)
    assert _ended(stage.handle(talked_over, ctx)) == []
    second = _goodbye(4)
    stage.handle(second, ctx)
    played = ev.ReplyPlayed(call_id="c", stage="sip", turn=4, reply_event_id=second.event_id, frames=380)
    (ended,) = _ended(stage.handle(played, ctx))
    assert (ended.reason, ended.reply_event_id) == ("bot_ended", second.event_id)


def test_a_silence_goodbye_the_caller_talked_over_may_be_said_again_later():
    stage = HangupStage()
    ctx = CallContext(call_id="c", state=stage.new_state("c"))
    stage.handle(ev.CallStarted(call_id="c", stage="sip", mode="audio"), ctx)
    (reply,) = [e.event for e in stage.handle(ev.CallerSilent(call_id="c", stage="silence", silent_ms=10000), ctx)]
    stage.handle(reply, ctx)  # the stage reads its own reply on bot.replies
    stage.handle(ev.ReplyPlayed(call_id="c", stage="sip", reply_event_id=reply.event_id, interrupted=True), ctx)
    again = stage.handle(ev.CallerSilent(call_id="c", stage="silence", silent_ms=10000), ctx)
    assert [e.event.action for e in again] == ["exit_silence"]
