"""A caller pauses mid-sentence, the agent ends the turn there, and the caller goes on before the
reply to the fragment plays: the VAD sends the whole sentence again as a new turn that
`retracts_turn` the fragment (tests/test_turn_completeness.py).  These stories check what the
NLU and the dialogue state make of it: the fragment's understanding, and the reply chosen for it
that the caller never heard, no longer count."""

from __future__ import annotations

from agent import events as ev
from agent.nlu import load_understander
from agent.stages.base import CallContext
from agent.stages.dst import DstCallState, DstStage
from agent.stages.nlu import NluStage


class Call:
    """The NLU and DST stages of one call, fed transcripts and the agent's replies in order."""

    def __init__(self) -> None:
        self.nlu, self.dst = NluStage(load_understander("rules")), DstStage()
        self.nctx = CallContext(call_id="c1", state=self.nlu.new_state("c1"))
        self.dctx = CallContext(call_id="c1", state=self.dst.new_state("c1"))
        self.states: list[dict] = []
        self.nlu_results: list[ev.NluResult] = []

    def caller(self, turn: int, text: str, retracts: int | None = None) -> dict:
        final = ev.TranscriptFinal(call_id="c1", stage="asr", turn=turn, text=text, retracts_turn=retracts)
        (res,) = [e.event for e in self.nlu.handle(final, self.nctx)]
        self.nlu_results.append(res)
        (upd,) = [e.event for e in self.dst.handle(res, self.dctx)]
        self.states.append(upd.state)
        return upd.state

    def agent(self, turn: int, text: str) -> None:
        self.nlu.handle(ev.BotReply(call_id="c1", stage="policy", turn=turn, text=text, action="answer"), self.nctx)


def _without_turn(value):
    """The state with every turn number blanked: the paused caller's sentence is turn 2, the
    other caller's turn 1; everything else must be the same."""
    if isinstance(value, dict):
        return {k: None if k == "turn" else _without_turn(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_turn(v) for v in value]
    return value


OPENING = "你好，我们是做企业软件的，想了解一下您这边的需求。"
FRAGMENT = "我们不要"  # a refusal on its own ...
WHOLE = "我们不要那种按人头收费的，企业邮箱五十个人一年多少钱"  # ... a price question once finished
GOODBYE = "好的，那不打扰您了，祝您工作顺利。"


def test_a_caller_who_paused_mid_sentence_ends_with_the_state_of_one_who_said_it_in_one_breath():
    paused = Call()
    paused.agent(0, OPENING)
    cut = paused.caller(1, FRAGMENT)
    assert cut["next_action"]["name"] != "answer_price"  # the fragment was tracked like any turn ...
    paused.agent(1, GOODBYE)  # ... and answered: that reply was cancelled unheard
    merged = paused.caller(2, WHOLE, retracts=1)

    at_once = Call()
    at_once.agent(0, OPENING)
    whole = at_once.caller(1, WHOLE)

    assert _without_turn(merged) == _without_turn(whole)
    assert "not_interested" not in merged["intent_stack"] and merged["slots"]["product"]["value"] == "enterprise_email"
    assert paused.nlu_results[-1].retracts_turn == 1
    # the NLU heard the whole sentence after the opening, not after its own first half and the goodbye
    assert paused.nctx.state.said == [WHOLE] and paused.nctx.state.bot_prev == OPENING


def test_without_the_retraction_the_fragment_would_have_stayed_in_the_state():
    """The same call where the second turn does not take the first back (as before session 8):
    the fragment's refusal is still in the state, so the story above tests something real."""
    kept = Call()
    kept.agent(0, OPENING)
    kept.caller(1, FRAGMENT)
    kept.agent(1, GOODBYE)
    merged = kept.caller(2, WHOLE)
    at_once = Call()
    at_once.agent(0, OPENING)
    assert _without_turn(merged) != _without_turn(at_once.caller(1, WHOLE))


def test_only_the_turn_just_before_can_be_taken_back_and_the_undo_survives_a_restart():
    call = Call()
    call.agent(0, OPENING)
    call.caller(1, "你们的云服务器怎么卖")
    call.agent(1, "云服务器按配置收费，您大概要几台？")
    after_two = call.caller(2, "三台吧")
    call.agent(2, "好的，三台的话我给您报个价。")
    # a retraction naming an older turn (a late or replayed event) changes nothing it cannot undo
    stale = call.caller(3, "对了还要异地备份", retracts=1)
    assert stale["turn"] == 3 and "offsite_backup" in str(stale)

    snap = call.dst.dump_state(call.dctx.state)
    restored = call.dst.load_state("c1", snap)
    assert isinstance(restored, DstCallState) and restored.last_turn == 3
    assert restored.before_last is not None and restored.before_last.model_dump(mode="json") == {
        k: v for k, v in after_two.items() if k != "next_action"}
    # a snapshot written before retractions existed (the DialogueState itself) still loads
    old = call.dst.load_state("c1", restored.state.model_dump(mode="json"))
    assert old.state == restored.state and old.before_last is None


async def test_the_review_console_marks_a_turn_the_caller_took_back(tmp_path):
    """QA reading the call sees which turn was a fragment and which holds the whole sentence."""
    from agent import topics
    from agent.bus import EmbeddedBus
    from agent.calllog import CallLog
    from agent.console.callview import build_call_view

    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    await bus.start()
    for topic, e in [
        (topics.CONTROL, ev.CallStarted(call_id="c1", stage="sip", direction="inbound")),
        (topics.TRANSCRIPTS, ev.TranscriptFinal(call_id="c1", stage="asr", turn=1, text=FRAGMENT)),
        (topics.CONTROL, ev.BargeIn(call_id="c1", stage="vad", turn=2, reply_event_id=None)),
        (topics.TRANSCRIPTS, ev.TranscriptFinal(call_id="c1", stage="asr", turn=2, text=WHOLE, retracts_turn=1)),
    ]:
        await bus.publish(topic, "c1", ev.encode(e))
    await bus.close()
    view = build_call_view(CallLog(tmp_path / "bus.sqlite"), "c1", {}, mask=False)
    by_turn = {t.turn: t for t in view.turns}
    assert by_turn[1].taken_back_by == 2 and by_turn[2].taken_back_by is None
    assert by_turn[2].caller_text == WHOLE


def test_an_event_without_a_retraction_is_written_as_before_so_an_older_stage_still_reads_it():
    """Events reject unknown fields; the new one is left out of the JSON while it is empty."""
    import json

    plain = json.loads(ev.encode(ev.TranscriptFinal(call_id="c1", turn=2, text=WHOLE)))
    assert "retracts_turn" not in plain
    taken = ev.decode(ev.encode(ev.TranscriptFinal(call_id="c1", turn=2, text=WHOLE, retracts_turn=1)))
    assert taken.retracts_turn == 1
