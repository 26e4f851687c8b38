"""Which stages exist and how to build them from settings.

`STAGE_FACTORIES` maps a stage name (as used by `dianxiao stage NAME`) to a function that
builds the stage from settings.  The speech stages register here too when their extra is
installed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agent.settings import Settings
from agent.stages.base import Stage


def _nlu(settings: Settings) -> Stage:
    from agent.nlu import load_understander
    from agent.stages.nlu import NluStage

    return NluStage(load_understander(settings.nlu_model))


def _dst(settings: Settings) -> Stage:
    from agent.dialogue import load_playbook
    from agent.stages.dst import DstStage

    return DstStage(load_playbook(settings.playbook))


def _policy(settings: Settings) -> Stage:
    from agent.dialogue import load_playbook
    from agent.stages.policy import PolicyStage

    # With an LLM endpoint the policy writes drafts (bot.drafts) and the phrasing stage writes
    # the replies; the network call never runs inside the policy's handle.
    return PolicyStage(load_playbook(settings.playbook), phrase=bool(settings.llm_base_url))


def _phrasing(settings: Settings) -> Stage:
    from agent.dialogue.llm import make_phraser
    from agent.stages.phrasing import PhrasingStage

    phraser = make_phraser(settings.llm_base_url, settings.llm_model, settings.llm_timeout_s, settings.llm_api_key)
    # Without an endpoint the policy writes no drafts, so this stage idles; a draft that does
    # come (a policy configured apart from it) still gets its template reply, never lost.
    return PhrasingStage(phraser)


def _hangup(settings: Settings) -> Stage:
    from agent.dialogue import load_playbook
    from agent.stages.hangup import HangupStage, silence_goodbye

    pb = load_playbook(settings.playbook)
    return HangupStage(silence_goodbye(pb), playbook_version=f"{pb.name}@{pb.version}")


def _dtmf(settings: Settings) -> Stage:
    from agent.dialogue import load_playbook
    from agent.dtmf import dtmf_map
    from agent.stages.dtmf import DtmfStage

    return DtmfStage(dtmf_map(load_playbook(settings.playbook)))


def _outcome(settings: Settings) -> Stage:
    from agent.stages.outcome import OutcomeStage

    return OutcomeStage()


def _speech(name: str) -> Callable[[Settings], Stage]:
    def build(settings: Settings) -> Stage:
        from agent.speech import factories  # needs the `speech` extra

        return getattr(factories, f"{name}_stage")(settings)

    return build


STAGE_FACTORIES: dict[str, Callable[[Settings], Stage]] = {
    "nlu": _nlu,
    "dst": _dst,
    "policy": _policy,
    "phrasing": _phrasing,
    "hangup": _hangup,
    "dtmf": _dtmf,
    "outcome": _outcome,
    "vad": _speech("vad"),
    "asr": _speech("asr"),
    "tts": _speech("tts"),
}

#: the stages of a text-mode call, in flow order (hangup ends the call after the goodbye;
#: dtmf turns key presses into understanding; outcome writes the call's call.outcome at its end)
TEXT_STAGES = ("nlu", "dst", "policy", "hangup", "dtmf", "outcome")
#: the stages of an audio-mode call (caller audio in, bot audio out), in flow order
AUDIO_STAGES = ("vad", "asr", "nlu", "dst", "policy", "tts", "hangup", "dtmf", "outcome")


def with_phrasing(names: Iterable[str | Any], settings: Settings) -> list[Any]:
    """`names` with the phrasing stage after the policy when an LLM endpoint is configured (the
    policy then writes drafts, which nothing else turns into replies)."""
    out = list(names)
    if settings.llm_base_url and "policy" in out and "phrasing" not in out:
        out.insert(out.index("policy") + 1, "phrasing")
    return out


def build_stage(name: str, settings: Settings) -> Stage:
    try:
        factory = STAGE_FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_FACTORIES)}") from None
    return factory(settings)
