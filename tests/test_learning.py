"""A sales manager learns the playbook from the best calls: calls carry their outcomes (the
call's own, and the CRM's deal joined later), both sides' moves are tagged with one act set,
`dianxiao learn` proposes a change with its evidence, the manager accepts it as a new version,
and an A/B campaign on other customers shows whether it converts better.

The customers are the stochastic simulator's (agent/simulator/customers.py); the agent's side
is the real NLU, dialogue state and policy.  The CLI runs as a separate process, as a manager
would run it."""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from agent import events as ev
from agent.dialogue import DialogueState, load_playbook
from agent.dialogue.playbook import Move
from agent.dialogue.turn import step
from agent.events import NluResult
from agent.learning.acts import bot_act, caller_acts, objection_of, seller_acts
from agent.learning.campaign import Arm, assign, parse_arms, run_simulated_campaign
from agent.learning.stats import msprt, wilson
from agent.nlu import load_understander
from agent.simulator import customers as sim

DX = str(Path(sys.executable).with_name("dianxiao"))
ROOT = Path(__file__).resolve().parents[1]


def dianxiao(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([DX, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def nlu():
    return load_understander("rules")  # the simulated customers' phrase bank was written with the rules


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """An explored campaign (bot calls), a top seller's transcripts and the CRM's outcomes,
    learned from, once for the tests below."""
    d = tmp_path_factory.mktemp("learn")
    store = d / "playbooks"
    dianxiao("campaign", "run", "--arms", "cloud_saas@1", "--customers", "800", "--seed", "11", "--explore",
             "--name", "learn", "--log", str(d / "calls.sqlite"), "--crm-out", str(d / "crm.csv"), "--playbooks", str(store))
    dianxiao("learn", "sellers", "--calls", "1500", "--seed", "12", "--out", str(d / "transcripts" / "top.csv"))
    out = dianxiao("learn", "--calls", str(d / "calls.sqlite"), "--transcripts", str(d / "transcripts"),
                   "--outcomes", str(d / "crm.csv"), "--win", "call", "--playbook", "cloud_saas@1", "--out", str(d),
                   "--playbooks", str(store))
    return d, store, out.stdout


# --- the simulator: documented, understood, able to tell moves apart ------------------------------


def test_the_simulated_customers_are_the_ones_documented():
    doc = (ROOT / "docs" / "learning.md").read_text(encoding="utf-8")
    for objection, table in sim.SUCCESS.items():
        for act, p in table.items():
            want = f"{act} " + (" / ".join(f"{p[k]:.2f}" for k in ("high", "medium", "low")) if isinstance(p, dict) else f"{p:.2f}")
            assert want in doc, f"docs/learning.md does not say {want!r} for {objection}"
    d = sim.DISTRIBUTIONS
    assert "smb 0.50, mid 0.35, enterprise 0.15" in doc and d["segment"] == {"smb": 0.5, "mid": 0.35, "enterprise": 0.15}
    assert f"do-not-call {d['dnc_at_opening']:.2f}" in doc and f"{d['refuse_at_opening']:.2f}" in doc
    assert "uniform 7–12" in doc and d["patience_turns"] == (7, 12)


def test_every_customer_phrase_is_understood_as_the_act_it_means(nlu):
    pb = load_playbook("cloud_saas")
    for objection, phrases in sim.OBJECTION_PHRASES.items():
        for phrase in phrases:
            text = phrase.format(rival="阿里云")
            intents = [i.name for i in nlu.understand(text).intents]
            cue = {"price_objection": "price", "competitor_comparison": "competitor"}
            found = next((cue[i] for i in intents if i in cue), None) or pb.objection_cue(text)
            assert objection_of(caller_acts(intents, found)) == objection, (text, intents)
    for phrase in sim.REFUSE:
        assert "not_interested" in [i.name for i in nlu.understand(phrase).intents]
    for phrase in sim.YES_DEMO:
        assert "demo_request" in [i.name for i in nlu.understand(phrase).intents]


def test_the_same_lead_and_seed_is_the_same_customer_and_another_seed_is_not():
    a, b = sim.draw_persona("L1", 7), sim.draw_persona("L1", 7)
    assert a == b
    others = {sim.draw_persona("L1", s) for s in range(20)}
    assert len(others) > 10


def test_a_better_move_raises_the_chance_of_a_demo(nlu):
    """Customers who raise a timing objection: a trial offer books demos, the shipped callback
    offer books callbacks — the simulator tells the two playbooks apart."""
    pb = load_playbook("cloud_saas")
    trial = pb.model_copy(update={"moves": {"objection.timing": Move(act="offer_trial", offer="demo")}})
    demos = {"shipped": 0, "trial": 0}
    for i in range(300):
        persona = sim.draw_persona(f"T{i}", 3)
        if "timing" not in persona.objections or persona.opening != "talk":
            continue
        for name, book in (("shipped", pb), ("trial", trial)):
            customer, state, replies, said = sim.Customer(persona, 3), DialogueState(), [], []
            for turn in range(1, 20):
                text = customer(turn, replies)
                if text is None:
                    break
                o = nlu.understand(text, context=tuple(said[-3:]))
                said.append(text)
                state, _, reply = step(state, NluResult(call_id="t", turn=turn, text=text, intents=o.intents,
                                                        entities=o.entities), book)
                replies.append(reply)
            demos[name] += any(r.action == "book_demo" for r in replies)
    assert demos["trial"] > demos["shipped"]


# --- acts on both sides -----------------------------------------------------------------------


def test_the_bot_and_a_human_seller_are_tagged_with_the_same_acts():
    pb = load_playbook("cloud_saas")
    assert bot_act("price_objection") == "cheaper_plan" == seller_acts(pb.templates["price_objection"].replace("{alternative}", "要是预算紧，换个小的"))[0]
    assert bot_act("compare") == "compare_rival" == seller_acts("跟阿里云比，同配置下我们年费更低。要不要先免费试用对比一下？")[0]
    assert bot_act("offer_trial") == "offer_trial" == seller_acts(pb.templates["offer_trial"])[0]
    assert seller_acts("您的不少同行也是从腾讯云换过来的，要不先约个演示看看？")[0] == "reference_customer"
    assert seller_acts("要不约个时间，请您老板一起参加演示？")[0] == "invite_decider"
    assert bot_act("ask_slot", "您看什么时间方便，我再给您回电？") == "offer_callback"


def test_the_top_sellers_moves_are_read_from_their_words_alone():
    """The tagger sees only the text; the simulator knows which act it meant."""
    from agent.learning.transcripts import top_seller_calls

    made = top_seller_calls(200, 5, load_playbook("cloud_saas"))
    agree = total = 0
    for call in made:
        seller = [t["text"] for t in call["turns"] if t["speaker"] == "seller"]
        for text, act in zip(seller, call["_acts"]):
            total += 1
            agree += (seller_acts(text) or ["?"])[0] == act
    assert agree / total >= 0.98, f"{agree}/{total}"


# --- the playbook hook and versions -------------------------------------------------------------


def test_the_shipped_playbook_answers_as_before_and_a_move_changes_only_its_situation(nlu):
    pb = load_playbook("cloud_saas")
    moved = pb.model_copy(update={"moves": {"objection.price": Move(act="offer_trial", offer="demo")}})

    def talk(book, lines):
        state, out = DialogueState(), []
        for turn, text in enumerate(lines, start=1):
            o = nlu.understand(text)
            state, _, reply = step(state, NluResult(call_id="h", turn=turn, text=text, intents=o.intents,
                                                    entities=o.entities), book)
            out.append(reply.action)
        return out

    lines = ["你好", "想了解一下SaaS平台", "大概2000并发", "太贵了，预算不够", "好的"]
    assert talk(pb, lines) == ["opening", "ask_slot", "recommend", "price_objection", "book_demo"]
    assert talk(moved, lines) == ["opening", "ask_slot", "recommend", "offer_trial", "book_demo"]
    rival = ["你好", "想了解一下SaaS平台", "大概2000并发", "我们用的华为云，挺好的"]
    assert talk(pb, rival) == talk(moved, rival)


def test_same_lead_same_arm_and_the_split_is_kept():
    arms = parse_arms("cloud_saas@1,cloud_saas@2", "30/70")
    ids = [f"L{i}" for i in range(4000)]
    first = [assign(i, arms).ref for i in ids]
    assert first == [assign(i, arms).ref for i in reversed(ids)][::-1]
    share = first.count("cloud_saas@1") / len(ids)
    assert 0.27 < share < 0.33


def test_bad_arms_are_one_line_errors():
    out = dianxiao("campaign", "run", "--arms", "cloud_saas@1,cloud_saas@2", "--split", "50/30/20", "--customers", "5", ok=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--split" in out.stderr
    out = dianxiao("campaign", "run", "--arms", "cloud_saas@9", "--customers", "5", ok=False)
    assert out.returncode == 2 and "cloud_saas@9 does not exist" in out.stderr


# --- learn → proposal → accept -----------------------------------------------------------------


def test_learn_writes_a_proposal_and_a_report_with_what_the_bot_never_did(learned):
    d, _, stdout = learned
    proposal = yaml.safe_load((d / "proposal.yaml").read_text(encoding="utf-8"))
    assert proposal["base"] == "cloud_saas@1" and proposal["changes"]
    new_acts = [c for c in proposal["changes"] if c["path"][0] == "moves" and c["evidence"]["bot_never_used"]]
    assert new_acts, stdout  # a human seller's move the bot's own calls could not show
    move = new_acts[0]
    assert move["to"]["act"] in ("invite_decider", "reference_customer")
    assert move["evidence"]["lift_95ci"][0] > 0
    words = next(c for c in proposal["changes"] if c["path"] == ["templates", move["to"]["act"]])
    assert words["from"] is None and not re.search(r"\d", words["to"])  # the seller's words, no number
    report = (d / "report.html").read_text(encoding="utf-8")
    assert "<svg" in report and "Funnel by sale stage" in report and "95 % Wilson" in report
    assert "dianxiao learn accept" in report
    assert proposal["learned_from"]["outcomes_joined"] > 0  # the CRM's deals were joined to the calls


def test_accepting_writes_a_new_version_and_leaves_the_live_playbook_alone(learned):
    d, store, _ = learned
    shipped = (ROOT / "agent" / "data" / "playbooks" / "cloud_saas.yaml").read_bytes()
    out = dianxiao("learn", "accept", str(d / "proposal.yaml"), "--playbooks", str(store))
    assert "cloud_saas@2" in out.stdout
    assert (ROOT / "agent" / "data" / "playbooks" / "cloud_saas.yaml").read_bytes() == shipped
    assert load_playbook("cloud_saas").moves == {}
    v2 = load_playbook(store / "cloud_saas@2.yaml")
    assert v2.moves and all(m.act in v2.templates for m in v2.moves.values())
    # the same proposal again: its `from` values are no longer what the newest version holds
    again = dianxiao("learn", "accept", str(d / "proposal.yaml"), "--playbooks", str(store), ok=False)
    assert again.returncode == 2 and "no longer applies" in again.stderr and again.stderr.count("\n") == 1
    assert sorted(p.name for p in store.glob("*.yaml")) == ["cloud_saas@2.yaml"]


def test_an_ab_campaign_reports_conversion_per_arm_with_intervals(learned):
    d, store, _ = learned
    if not (store / "cloud_saas@2.yaml").exists():
        dianxiao("learn", "accept", str(d / "proposal.yaml"), "--playbooks", str(store))
    dianxiao("campaign", "run", "--arms", "cloud_saas@1,cloud_saas@2", "--split", "50/50", "--customers", "600",
             "--seed", "13", "--name", "ab", "--log", str(d / "ab.sqlite"), "--playbooks", str(store))
    out = dianxiao("campaign", "report", "--log", str(d / "ab.sqlite"), "--campaign", "ab", "--look-every", "100",
                   "--json", str(d / "ab.json"))
    rep = json.loads((d / "ab.json").read_text())
    arms = {a["arm"]: a for a in rep["arms"]}
    assert set(arms) == {"cloud_saas@1", "cloud_saas@2"} and sum(a["calls"] for a in arms.values()) == 600
    for a in arms.values():
        assert a["lo"] <= a["rate"] <= a["hi"]
    c = rep["comparisons"][0]
    assert c["always_valid"][0] <= c["fixed_95"][0] <= c["diff"] <= c["fixed_95"][1] <= c["always_valid"][1]
    assert "stop rule" in out.stdout


# --- bad inputs ---------------------------------------------------------------------------------


def test_an_outcome_for_an_unknown_call_is_refused_and_the_rest_is_imported(learned, tmp_path):
    d, _, _ = learned
    log = tmp_path / "calls.sqlite"
    log.write_bytes((d / "calls.sqlite").read_bytes())
    real = next(csv.DictReader((d / "crm.csv").open(encoding="utf-8")))
    rows = tmp_path / "crm.csv"
    rows.write_text("call_id,outcome,amount,date,external_id\n"
                    f"{real['call_id']},won,49800,2026-01-05,D-1\nno-such-call,won,100,2026-01-05,D-2\n", encoding="utf-8")
    out = dianxiao("outcomes", "import", str(rows), "--log", str(log), ok=False)
    assert out.returncode == 2 and "unknown call 'no-such-call'" in out.stderr
    assert "1 outcomes written" in out.stdout
    again = dianxiao("outcomes", "import", str(rows), "--log", str(log), ok=False)
    assert "0 outcomes written, 1 already there" in again.stdout
    bad = dianxiao("learn", "--calls", str(log), "--outcomes", str(rows), "--out", str(tmp_path), ok=False)
    assert bad.returncode == 2 and "outcome for unknown call 'no-such-call'" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_transcript_without_a_speaker_column_is_a_one_line_error(tmp_path):
    (tmp_path / "t.csv").write_text("call_id,text\nc1,您好\n", encoding="utf-8")
    out = dianxiao("learn", "--transcripts", str(tmp_path / "t.csv"), "--out", str(tmp_path), ok=False)
    assert out.returncode == 2 and "has no speaker column" in out.stderr and out.stderr.count("\n") == 1


def test_the_example_transcript_in_the_docs_is_read(nlu):
    from agent.learning.data import read_transcripts

    recs = read_transcripts(ROOT / "docs" / "examples" / "transcripts.csv", load_playbook("cloud_saas"), nlu)
    assert recs and all(r.source == "human" for r in recs)
    assert any(d.move == "invite_decider" for r in recs for d in r.decisions)


# --- the CRM webhook in --------------------------------------------------------------------------


def test_the_crm_webhook_needs_a_valid_signature_and_a_known_call(learned, tmp_path):
    import uvicorn

    from agent.outcomes import webhook_app
    from connectors.campaign.crm import sign
    from connectors.mqtt.broker import free_tcp_port

    d, _, _ = learned
    log = tmp_path / "calls.sqlite"
    log.write_bytes((d / "calls.sqlite").read_bytes())
    call_id = next(csv.DictReader((d / "crm.csv").open(encoding="utf-8")))["call_id"]
    port = free_tcp_port()
    server = uvicorn.Server(uvicorn.Config(webhook_app(log, "s3cret"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)

        def post(obj, secret="s3cret"):
            body = json.dumps(obj).encode()
            ts = str(int(time.time()))
            return httpx.post(f"http://127.0.0.1:{port}/outcomes", content=body, timeout=10,
                              headers={"X-Dianxiao-Timestamp": ts, "X-Dianxiao-Signature": sign(secret, ts, body)})

        deal = {"call_id": call_id, "outcome": "deal_won", "amount": 49800, "date": "2026-02-01", "external_id": "CRM-7"}
        assert post(deal, secret="wrong").status_code == 401
        assert post({**deal, "call_id": "nobody"}).status_code == 422
        ok = post(deal)
        assert ok.status_code == 200 and ok.json()["written"] == 1
        assert post(deal).json()["duplicates"] == 1
    finally:
        server.should_exit = True
        thread.join(10)
    from agent.calllog import CallLog

    got = [e for e in CallLog(log).events(call_id) if isinstance(e, ev.CallOutcome) and e.source == "crm_webhook"]
    assert [(e.outcome, e.amount, e.external_id) for e in got] == [("deal_won", 49800.0, "CRM-7")]


# --- statistics ---------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = wilson(10, 100)
    assert abs(lo - 0.0552) < 1e-3 and abs(hi - 0.1744) < 1e-3
    assert wilson(0, 0) == (0.0, 1.0)


def test_looking_after_every_batch_does_not_inflate_the_error_rate():
    """A/A campaigns looked at 20 times each: the mSPRT stop rule fires in at most ~alpha of
    them (a fixed-n test looked at this often would fire far more)."""
    rng = random.Random(5)
    fired = naive = 0
    runs = 300
    for _ in range(runs):
        ka = kb = na = nb = 0
        hit = hit_naive = False
        for _look in range(20):
            for _ in range(50):
                na += 1
                ka += rng.random() < 0.2
                nb += 1
                kb += rng.random() < 0.2
            s = msprt(ka, na, kb, nb, 0.05)
            hit |= s.reject
            hit_naive |= s.fixed_lo > 0 or s.fixed_hi < 0
        fired += hit
        naive += hit_naive
    assert fired / runs <= 0.06
    assert naive > fired


def test_deterministic_simulated_campaign_writes_one_outcome_per_call(tmp_path):
    pb = load_playbook("cloud_saas")
    s = run_simulated_campaign([(Arm("cloud_saas@1", 1.0), pb)], 40, seed=2, log=tmp_path / "c.sqlite", name="t")
    from agent.calllog import CallLog

    log = CallLog(tmp_path / "c.sqlite")
    ids = log.call_ids()
    assert len(ids) == 40 == s.calls
    for cid in ids:
        outs = [e for e in log.events(cid) if isinstance(e, ev.CallOutcome)]
        assert len(outs) == 1 and outs[0].kind == "call" and outs[0].sale_stage is not None


def test_the_call_page_shows_the_calls_outcomes(tmp_path):
    """A reviewer opens a campaign call in the console and sees its outcome and the CRM's deal."""
    import re as _re

    from fastapi.testclient import TestClient

    from agent.console.app import create_app, open_console
    from agent.outcomes import BusinessOutcome, OutcomeWriter
    from agent.settings import Settings

    pb = load_playbook("cloud_saas")
    run_simulated_campaign([(Arm("cloud_saas@1", 1.0), pb)], 30, seed=4, log=tmp_path / "bus.sqlite", name="spring")
    from agent.calllog import CallLog

    log = CallLog(tmp_path / "bus.sqlite")
    call_id = next(c for c in log.call_ids()
                   if any(isinstance(e, ev.CallOutcome) and e.outcome == "demo_booked" for e in log.events(c)))
    log.close()
    w = OutcomeWriter(tmp_path / "bus.sqlite")
    w.write_one(BusinessOutcome(call_id=call_id, outcome="won", amount=19800, date="2026-03-01", external_id="CRM-1"), "csv")
    w.close()
    con = open_console(Settings(data_dir=tmp_path))
    con.store.set_user("rita", "correct horse battery", "reviewer")
    client = TestClient(create_app(con))
    token = _re.search(r'name="token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "rita", "password": "correct horse battery", "token": token})
    page = client.get(f"/calls/{call_id}").text
    con.log.close()
    con.store.close()
    assert "Outcomes" in page and "demo_booked" in page and "reached closing" in page
    assert "deal_won" in page and "19800 元" in page and "CRM-1" in page
