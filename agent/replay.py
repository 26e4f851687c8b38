"""Replay a recorded call through (possibly new versions of) some stages and diff the results.

Because stages are pure `handle(event, ctx)` functions, replay needs no bus: the recorded inputs
of the first chosen stage are fed through the chain in-process, and each stage's new outputs are
compared, turn by turn, with what it produced during the call.  Teams keep golden calls and run
`dianxiao replay CALL --check` in CI: any change in intents, state or reply fails it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent import events as ev
from agent.calllog import CallLog
from agent.stages.base import CallContext, Stage

#: what each replayable stage's output looks like, reduced to what a reviewer compares
_OUTPUT_TYPES: dict[type, str] = {
    ev.NluResult: "nlu",
    ev.DialogueStateUpdated: "dst",
    ev.BotReply: "policy",
}


def summarise(event: Any) -> Any:
    if isinstance(event, ev.NluResult):
        return {
            "intents": sorted(i.name for i in event.intents),
            "entities": sorted(f"{e.type}={e.value}" for e in event.entities),
        }
    if isinstance(event, ev.DialogueStateUpdated):
        return event.state
    if isinstance(event, ev.BotReply):
        return {"action": event.action, "text": event.text}
    if isinstance(event, ev.TranscriptFinal):
        return {"text": event.text}
    return event.model_dump(mode="json", exclude={"event_id", "ts_wall", "ts_mono_ns", "seq", "caused_by"})


def dict_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values ("path: old -> new")."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path}: (none) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{path}: {old[key]!r} -> (none)")
            else:
                out.extend(dict_diff(old[key], new[key], path))
        return out
    return [] if old == new else [f"{prefix or 'value'}: {old!r} -> {new!r}"]


@dataclass
class StageDiff:
    stage: str
    turn: int
    recorded: Any
    replayed: Any
    changes: list[str] = field(default_factory=list)


@dataclass
class ReplayResult:
    call_id: str
    stages: list[str]
    diffs: list[StageDiff]
    inputs: int

    @property
    def changed(self) -> list[StageDiff]:
        return [d for d in self.diffs if d.changes]


def replay_events(call_id: str, recorded: Sequence[Any], stages: Sequence[Stage]) -> ReplayResult:
    if not stages:
        raise ValueError("choose at least one stage to replay")
    stages = _with_recorded_phrasing(recorded, stages)
    first = stages[0]
    topic_of = _OUTPUT_TYPES
    # The first stage's inputs: recorded events of the types it consumes (transcripts for nlu…)
    inputs = [e for e in recorded if _topic_guess(e) in first.reads]
    current: list[Any] = inputs
    new_outputs: dict[str, dict[int, Any]] = {}
    for stage in stages:
        ctx = CallContext(call_id=call_id, state=stage.new_state(call_id))
        produced: list[Any] = []
        for event in current:
            if event.event_id in ctx.seen:
                continue
            ctx.seen.add(event.event_id)
            for emit in stage.handle(event, ctx):
                produced.append(emit.event)
        label = _label(stage)
        new_outputs.setdefault(label, {}).update({e.turn: e for e in produced if topic_of.get(type(e)) == label})
        current = produced
    old_outputs: dict[str, dict[int, Any]] = {}
    for e in recorded:
        name = topic_of.get(type(e))
        if name is not None:
            old_outputs.setdefault(name, {})[e.turn] = e
    diffs: list[StageDiff] = []
    for label in dict.fromkeys(_label(s) for s in stages):
        old, new = old_outputs.get(label, {}), new_outputs.get(label, {})
        for turn in sorted(set(old) | set(new)):
            a = summarise(old[turn]) if turn in old else None
            b = summarise(new[turn]) if turn in new else None
            diffs.append(StageDiff(label, turn, a, b, dict_diff(a, b)))
    # replies the NLU reads for context are fed in log order (the recorded ones), not counted as turns
    context_only = set(getattr(first, "context_topics", ()))
    return ReplayResult(call_id, [s.name for s in stages], diffs, sum(_topic_guess(e) not in context_only for e in inputs))


def _label(stage: Stage) -> str:
    # The phrasing stage finishes the policy's reply: its replies compare as the policy's.
    return getattr(stage, "replay_as", stage.name)


def _with_recorded_phrasing(recorded: Sequence[Any], stages: Sequence[Stage]) -> list[Stage]:
    """For a call made with LLM phrasing: the policy writes drafts again and a phrasing stage
    answers them from the LLM results recorded on the call's replies, whatever the settings,
    so that a replay never calls the LLM and gives the same replies every time."""
    from agent.dialogue.llm import RecordedPhraser
    from agent.stages.phrasing import PhrasingStage
    from agent.stages.policy import PolicyStage

    if not any(isinstance(e, ev.BotReply) and e.phrased_by is not None for e in recorded):
        return list(stages)
    recorded_llm = RecordedPhraser.from_events(recorded)
    out: list[Stage] = []
    for stage in stages:
        if isinstance(stage, PhrasingStage):
            continue  # replaced by the recorded one, right after the policy
        if isinstance(stage, PolicyStage):
            stage = PolicyStage(stage.playbook, phrase=True)
        out.append(stage)
        if isinstance(stage, PolicyStage):
            out.append(PhrasingStage(recorded_llm))
    return out


def replay_call(log: CallLog, call_id: str, stages: Sequence[Stage]) -> ReplayResult:
    recorded = log.events(call_id)
    if not recorded:
        raise LookupError(f"no call {call_id!r} in the log {log.path}")
    return replay_events(call_id, recorded, stages)


_INPUT_TOPIC = {
    ev.TranscriptFinal: "transcripts",
    ev.TranscriptPartial: "transcripts",
    ev.NluResult: "nlu.results",
    ev.DialogueStateUpdated: "dialogue.state",
    ev.ReplyDraft: "bot.drafts",
    ev.BotReply: "bot.replies",
    ev.CallStarted: "call.control",
    ev.CallEnded: "call.control",
    ev.BargeIn: "call.control",
    ev.SpeechSegment: "speech.segments",
    ev.SpeechStarted: "speech.segments",
}


def _topic_guess(event: Any) -> str | None:
    # Event types map one-to-one onto topics except audio frames (in or out), which replay
    # does not feed (ASR/TTS replay starts from speech segments / replies).
    return _INPUT_TOPIC.get(type(event))
