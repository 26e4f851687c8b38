"""Whatever the NLU hands over (odd values, unknown names, junk text), the dialogue core answers
and never crashes the stage."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dialogue import DialogueState, load_playbook
from agent.dialogue.turn import step
from agent.events import Entity, Intent, NluResult

PB = load_playbook("cloud_saas")
INTENTS = ["greeting", "product_inquiry", "price_inquiry", "feature_inquiry", "integration_inquiry",
           "purchase_intent", "price_objection", "competitor_comparison", "demo_request", "callback_request",
           "not_interested", "do_not_call", "request_human", "ask_if_robot", "supplement_demand", "affirm",
           "deny", "other", "made_up_intent"]
TYPES = ["product", "concurrency", "quantity", "budget", "term", "callback_time", "competitor", "feature",
         "system", "region", "phone", "plan", "weird_type"]
VALUES = st.one_of(
    st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.text(max_size=12), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["saas", "saas_pro", "cloud_server", "offsite_backup", "aliyun", "ERP", "两千"]),
)
ENTITY = st.builds(lambda t, v, s: Entity(type=t, value=v, start=s, end=(s + 2) if s is not None else None),
                   st.sampled_from(TYPES), VALUES, st.one_of(st.none(), st.integers(-5, 30)))
TURN = st.tuples(st.text(max_size=40), st.lists(st.sampled_from(INTENTS), max_size=4), st.lists(ENTITY, max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TURN, min_size=1, max_size=6))
def test_any_sequence_of_nlu_results_gets_a_reply(turns):
    state = DialogueState()
    for n, (text, intents, entities) in enumerate(turns, start=1):
        nlu = NluResult(call_id="fuzz", turn=n, text=text, intents=[Intent(name=i) for i in intents], entities=entities)
        state, action, reply = step(state, nlu, PB)
        assert isinstance(reply.text, str) and reply.text
        DialogueState.model_validate(state.model_dump(mode="json"))
        if reply.ends_call:
            break
