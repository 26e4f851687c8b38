"""Optional LLM phrasing against a real HTTP server on 127.0.0.1 that speaks the OpenAI chat
completions protocol (a stub that answers what each test tells it to)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent import events as ev
from agent.dialogue import load_playbook
from agent.dialogue.llm import LlmPhraser
from agent.stages.base import CallContext
from agent.stages.dst import DstStage
from agent.stages.policy import PolicyStage
from tests.dialogue_helpers import nlu


class _Stub:
    def __init__(self) -> None:
        self.answer = ""
        self.delay = 0.0
        self.requests: list[dict] = []


@pytest.fixture
def llm_server():
    stub = _Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append({"path": self.path, "body": body})
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


def reply_for(stub, text, intents, entities=(), timeout=1.0):
    """Run one caller turn through the real DST and policy stages with the LLM phraser."""
    pb = load_playbook("cloud_saas")
    dst, policy = DstStage(pb), PolicyStage(pb, phraser=LlmPhraser(stub.url, "stub-model", timeout_s=timeout))
    ctx = CallContext(call_id="c1", state=dst.new_state("c1"))
    result = nlu(text, intents, list(entities), turn=1).model_copy(update={"event_id": ev.new_event_id()})
    state_event = dst.handle(result, ctx)[0].event
    return policy.handle(state_event, CallContext(call_id="c1"))[0].event


QUOTE = ("云服务器2000并发多少钱", ["price_inquiry"], [("product", "cloud_server"), ("concurrency", 2000)])


def test_the_llm_rephrases_a_quote_when_it_keeps_to_the_catalogue(llm_server):
    llm_server.answer = "给您推荐标准型，4核8G，2000并发够用，一年9800元，要不要先免费演示下？"
    reply = reply_for(llm_server, *QUOTE)
    assert reply.decided_by == "llm" and reply.text == llm_server.answer
    sent = llm_server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "stub-model"
    assert "9800" in sent["body"]["messages"][1]["content"]  # the template it must keep to


def test_an_llm_reply_with_a_price_the_catalogue_lacks_is_thrown_away(llm_server):
    llm_server.answer = "标准型今天特价，一年只要6800元！"
    reply = reply_for(llm_server, *QUOTE)
    assert reply.decided_by == "template" and "9800元" in reply.text and "6800" not in reply.text


def test_a_slow_llm_falls_back_to_the_template_after_the_timeout(llm_server):
    llm_server.answer = "标准型一年9800元。"
    llm_server.delay = 1.0
    t0 = time.monotonic()
    reply = reply_for(llm_server, *QUOTE, timeout=0.2)
    assert time.monotonic() - t0 < 0.9
    assert reply.decided_by == "template" and "9800元" in reply.text


def test_an_unreachable_llm_falls_back_to_the_template():
    stub = _Stub()
    stub.url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    reply = reply_for(stub, *QUOTE, timeout=0.5)
    assert reply.decided_by == "template" and "9800元" in reply.text


def test_do_not_call_is_never_rephrased(llm_server):
    llm_server.answer = "好的好的，那我们下次再联系哈～"
    reply = reply_for(llm_server, "别再给我打电话了", ["do_not_call"])
    assert reply.decided_by == "template" and reply.ends_call and not llm_server.requests
