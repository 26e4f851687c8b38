"""Sales NLU: text (+ previous caller turns) -> multi-label intents and normalised entities.

`Understander` is the interface the NLU stage calls; `load_understander(settings)` picks the
trained model when one is configured (with the rules as fallback) or the rules alone."""

from __future__ import annotations

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

    def understand(self, text: str, context: Sequence[str] = ()) -> NluOutput: ...


def load_understander(model_dir: str | None = None) -> Understander:
    """The rules alone, or (model_dir set) the trained ONNX model with the rules as fallback.
    A model directory that cannot be loaded is an error here, at start-up, not per event."""
    from agent.nlu.rules import RuleUnderstander

    if not model_dir:
        return RuleUnderstander()
    from agent.nlu.model import ModelUnderstander

    return ModelUnderstander(model_dir)
