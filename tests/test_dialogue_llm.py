"""Optional LLM phrasing against a real HTTP server on 127.0.0.1 that speaks the OpenAI chat
completions protocol (a stub that answers what each test tells it to)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import events as ev
from agent.calllog import CallLog
from agent.dialogue import load_playbook
from agent.dialogue.llm import LlmPhraser
from agent.pipeline import TEXT_STAGES, build_stage
from agent.replay import replay_call
from agent.settings import Settings
from agent.stages.base import CallContext
from agent.stages.dst import DstStage
from agent.stages.phrasing import PhrasingStage
from agent.stages.policy import PolicyStage
from agent.testing import running_pipeline
from agent.textcall import run_text_call
from tests.dialogue_helpers import nlu


class _Stub:
    def __init__(self) -> None:
        self.answer = ""
        self.delay = 0.0
        self.slow_for = ""
        self.requests: list[dict] = []


@pytest.fixture
def llm_server():
    stub = _Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append({"path": self.path, "body": body})
            # a slow model for the prompts that contain `slow_for` (or for all, with no marker)
            if not stub.slow_for or stub.slow_for in json.dumps(body, ensure_ascii=False):
                time.sleep(stub.delay)
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": stub.answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield stub
    server.shutdown()
    server.server_close()


def draft_for(text, intents, entities=(), call_id="c1"):
    """One caller turn through the real DST and policy stages, with phrasing on: the draft."""
    pb = load_playbook("cloud_saas")
    dst, policy = DstStage(pb), PolicyStage(pb, phrase=True)
    ctx = CallContext(call_id=call_id, state=dst.new_state(call_id))
    result = nlu(text, intents, list(entities), turn=1).model_copy(
        update={"event_id": ev.new_event_id(), "call_id": call_id})
    state_event = dst.handle(result, ctx)[0].event
    return state_event, policy.handle(state_event, CallContext(call_id=call_id))[0].event


def reply_for(stub, text, intents, entities=(), timeout=1.0):
    """The final reply the phrasing stage makes of that turn's draft (a real HTTP request)."""
    _, draft = draft_for(text, intents, entities)
    phrasing = PhrasingStage(LlmPhraser(stub.url, "stub-model", timeout_s=timeout))

    async def go():
        try:
            return (await phrasing.handle_async(draft, CallContext(call_id="c1")))[0].event
        finally:
            await phrasing.phraser.aclose()

    return asyncio.run(go())


QUOTE = ("云服务器2000并发多少钱", ["price_inquiry"], [("product", "cloud_server"), ("concurrency", 2000)])


def test_the_llm_rephrases_a_quote_when_it_keeps_to_the_catalogue(llm_server):
    llm_server.answer = "给您推荐标准型，4核8G，2000并发够用，一年9800元，要不要先免费演示下？"
    reply = reply_for(llm_server, *QUOTE)
    assert reply.decided_by == "llm" and reply.text == llm_server.answer
    # what the LLM produced is on the reply itself, for the console and for replay
    assert reply.phrased_by == "llm" and reply.llm_text == llm_server.answer and "9800元" in reply.template_text
    assert len(reply.prompt_hash) == 64 and reply.llm_model == "stub-model"
    sent = llm_server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "stub-model"
    assert "9800" in sent["body"]["messages"][1]["content"]  # the template it must keep to


def test_an_llm_reply_with_a_price_the_catalogue_lacks_is_thrown_away(llm_server):
    llm_server.answer = "标准型今天特价，一年只要6800元！"
    reply = reply_for(llm_server, *QUOTE)
    assert reply.decided_by == "template" and "9800元" in reply.text and "6800" not in reply.text
    assert reply.llm_text == llm_server.answer and "6800" in reply.phrasing_note


def test_a_slow_llm_falls_back_to_the_template_after_the_timeout(llm_server):
    llm_server.answer = "标准型一年9800元。"
    llm_server.delay = 1.0
    t0 = time.monotonic()
    reply = reply_for(llm_server, *QUOTE, timeout=0.2)
    assert time.monotonic() - t0 < 0.9
    assert reply.decided_by == "template" and "9800元" in reply.text
    assert reply.llm_text is None and reply.phrasing_note.startswith("timeout")


def test_an_unreachable_llm_falls_back_to_the_template():
    stub = _Stub()
    stub.url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    reply = reply_for(stub, *QUOTE, timeout=0.5)
    assert reply.decided_by == "template" and "9800元" in reply.text


def test_do_not_call_is_never_rephrased(llm_server):
    llm_server.answer = "好的好的，那我们下次再联系哈～"
    reply = reply_for(llm_server, "别再给我打电话了", ["do_not_call"])
    assert reply.decided_by == "template" and reply.ends_call and not llm_server.requests


SLOW_CALLER = "云服务器2000并发多少钱"
FAST_CALLER = "云服务器500并发多少钱"


async def test_a_slow_llm_for_one_call_does_not_hold_up_another_calls_reply(llm_server, embedded_bus, tmp_path):
    """Two callers ask at once; the model is slow only for the first.  The second caller's
    reply comes while the first one's request is still out, and the first still gets the LLM
    wording once it answers (within the timeout).  Then the call log is replayed with the
    endpoint down: the same replies, and no request reaches the LLM."""
    llm_server.answer = "标准型一年9800元，2000并发够用，要不要先免费演示下？"
    llm_server.slow_for, llm_server.delay = SLOW_CALLER, 1.5
    settings = Settings(llm_base_url=llm_server.url, llm_model="stub-model", llm_timeout_s=4.0)

    async def timed(text):
        t0 = time.monotonic()
        call = await run_text_call(embedded_bus, [text])
        return call, time.monotonic() - t0

    async with running_pipeline(embedded_bus, settings) as pipe:
        assert "phrasing" in [r.stage.name for r in pipe.runners]
        (slow, slow_s), (fast, fast_s) = await asyncio.gather(timed(SLOW_CALLER), timed(FAST_CALLER))
    assert slow_s >= 1.5 and fast_s < 1.0, (slow_s, fast_s)
    assert slow.replies[0].phrased_by == "llm" and slow.replies[0].text == llm_server.answer
    assert fast.replies[0].phrased_by is not None
    sent = len(llm_server.requests)

    # the endpoint goes away; the replay must not need it
    llm_server.url = "http://127.0.0.1:9/v1"
    log = CallLog(embedded_bus.path)
    try:
        for call in (slow, fast):
            result = replay_call(log, call.call_id, [build_stage(n, Settings()) for n in TEXT_STAGES])
            assert result.changed == [], [d.changes for d in result.changed]
            replayed = [d.replayed["text"] for d in result.diffs if d.stage == "policy"]
            assert replayed == [r.text for r in call.replies]
    finally:
        log.close()
    assert len(llm_server.requests) == sent
