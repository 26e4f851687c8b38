"""The tracker's state is rebuilt from the log: the same NLU results give the same state."""

from __future__ import annotations

from agent import events as ev
from agent.dialogue import load_playbook
from agent.stages.base import CallContext
from agent.stages.dst import DstStage
from tests.dialogue_helpers import nlu

TURNS = [
    ("你们的SaaS能支持多少并发？", ["feature_inquiry"], [("product", "saas")]),
    ("那这个版本的年费是多少？", ["price_inquiry"], []),
    ("还要异地备份", ["supplement_demand", "feature_inquiry"], [("feature", "offsite_backup")]),
]


def _events():
    return [nlu(t, i, e, turn=n).model_copy(update={"event_id": f"{n:032x}"}) for n, (t, i, e) in enumerate(TURNS, 1)]


def test_replaying_the_nlu_results_rebuilds_the_same_state_and_outputs():
    pb = load_playbook("cloud_saas")
    runs = []
    for _ in range(2):
        stage = DstStage(pb)
        ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
        outs = [stage.handle(e, ctx)[0].event for e in _events()]
        runs.append((ctx.state, [(o.event_id, o.state) for o in outs]))
    assert runs[0] == runs[1]
    state = runs[0][0].state
    assert state.value("features") == ["offsite_backup"] and state.value("plan") == "saas_pro"


def test_a_state_event_carries_the_playbook_version_and_the_planned_action():
    pb = load_playbook("cloud_saas")
    stage = DstStage(pb)
    ctx = CallContext(call_id="c1", state=stage.new_state("c1"))
    out = stage.handle(_events()[0], ctx)[0].event
    assert isinstance(out, ev.DialogueStateUpdated) and out.playbook_version == "cloud_saas@1.0"
    assert out.state["next_action"]["name"] == "answer_capacity"
