"""The NLU stage hears the caller's words as an answer to what the agent just said."""

from __future__ import annotations

from collections.abc import Sequence

from agent import events as ev
from agent.nlu import NluOutput
from agent.stages.base import CallContext
from agent.stages.nlu import NluCallState, NluStage


class _Listener:
    """An understander that answers `affirm` and remembers what it was given."""

    version = "listener"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], str | None]] = []

    def understand(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> NluOutput:
        self.calls.append((text, tuple(context), bot_prev))
        return NluOutput([ev.Intent(name="affirm")], [], "model", self.version)


class _OldStyle:
    """An understander written before `bot_prev` existed."""

    version = "old"

    def understand(self, text: str, context: Sequence[str] = ()) -> NluOutput:
        return NluOutput([ev.Intent(name="other")], [], "rule", self.version)


def _reply(turn: int, text: str) -> ev.BotReply:
    return ev.BotReply(call_id="c1", turn=turn, stage="policy", text=text, action="offer_demo")


def _said(turn: int, text: str) -> ev.TranscriptFinal:
    return ev.TranscriptFinal(call_id="c1", turn=turn, stage="asr", text=text)


def test_a_caller_who_says_yes_after_the_demo_offer_is_understood_as_answering_it():
    und = _Listener()
    stage = NluStage(und)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    assert stage.handle(_said(1, "我想了解下云桌面"), ctx)[0].event.intents[0].name == "affirm"
    assert stage.handle(_reply(1, "需要我们安排工程师上门演示吗？"), ctx) == []  # a reply produces nothing
    stage.handle(_said(2, "好啊，下礼拜二下午得闲"), ctx)
    assert und.calls[0] == ("我想了解下云桌面", (), None)
    assert und.calls[1] == ("好啊，下礼拜二下午得闲", ("我想了解下云桌面",), "需要我们安排工程师上门演示吗？")


def test_the_bot_s_last_words_survive_a_restart_of_the_stage():
    stage = NluStage(_Listener())
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    stage.handle(_said(1, "喂你好"), ctx)
    stage.handle(_reply(1, "您好，请问贵公司多少人用？"), ctx)
    restored = stage.load_state("c1", stage.dump_state(ctx.state))
    assert restored == NluCallState(said=["喂你好"], bot_prev="您好，请问贵公司多少人用？", said_turn=1, bot_prev_turn=1)
    # a snapshot written before the state held the bot's words (a bare list of turns) still loads
    assert stage.load_state("c1", ["喂你好"]) == NluCallState(said=["喂你好"])


def test_an_understander_without_bot_prev_still_works_in_the_stage():
    stage = NluStage(_OldStyle())
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    stage.handle(_reply(1, "您看可以吗？"), ctx)
    (out,) = stage.handle(_said(2, "可以"), ctx)
    assert out.event.intents[0].name == "other"
