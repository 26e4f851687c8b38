"""Optional LLM phrasing of template replies through an OpenAI-compatible endpoint (what vllm,
llama.cpp's server or Ollama serve at /v1/chat/completions).

The template reply is always made first; the LLM may only rephrase it.  Its text is thrown away
(and the template used) when the call fails or times out, when it is empty or much longer than
the template, or when it states a number the catalogue, the caller or the quote does not hold.
Compliance replies (do-not-call, hand-off, AI disclosure) are never rephrased."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import structlog

from agent.dialogue.playbook import Playbook
from agent.dialogue.policy import Action, Reply
from agent.dialogue.replies import allowed_numbers, unsupported_numbers
from agent.dialogue.state import DialogueState

log = structlog.get_logger(__name__)

#: replies whose exact wording is a compliance matter
KEEP_TEMPLATE = frozenset({"exit_do_not_call", "handoff_human", "identify_ai"})

_SYSTEM = (
    "你是{company}的电话销售AI助手{agent_name}。把给你的回复改写成更自然的口语中文，"
    "一到两句话，不超过{limit}个字。不要加入原回复里没有的任何数字、价格、承诺或产品。只输出改写后的回复。"
)


@dataclass(frozen=True)
class LlmPhraser:
    base_url: str
    model: str
    timeout_s: float = 1.5
    api_key: str | None = None

    def phrase(self, reply: Reply, action: Action, state: DialogueState, playbook: Playbook) -> Reply:
        """The LLM's wording of `reply` if it passes the checks, else `reply` unchanged."""
        if action.name in KEEP_TEMPLATE or (action.then is not None and action.then.name in KEEP_TEMPLATE):
            return reply
        try:
            text = self._complete(reply.text, state, playbook)
        except (OSError, urllib.error.URLError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("llm phrasing failed, using template", error=str(exc)[:200], action=reply.action)
            return reply
        problem = check_phrasing(text, reply.text, allowed_numbers(state, playbook, action))
        if problem:
            log.warning("llm phrasing rejected, using template", reason=problem, action=reply.action)
            return reply
        return reply.model_copy(update={"text": text, "decided_by": "llm"})

    def _complete(self, template_text: str, state: DialogueState, pb: Playbook) -> str:
        limit = max(30, len(template_text) + 10)
        body = {
            "model": self.model,
            "temperature": 0.3,
            "max_tokens": 128,
            "messages": [
                {"role": "system", "content": _SYSTEM.format(company=pb.company, agent_name=pb.agent_name, limit=limit)},
                {"role": "user", "content": f"客户刚说：{state.last_text}\n原回复：{template_text}"},
            ],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 (configured URL)
            data = json.loads(resp.read().decode("utf-8"))
        return str(data["choices"][0]["message"]["content"]).strip()


def check_phrasing(text: str, template_text: str, allowed: set[float]) -> str | None:
    """Why an LLM phrasing may not be used, or None if it may."""
    if not text:
        return "empty"
    if len(text) > 2 * len(template_text) + 20:
        return "too long"
    bad = unsupported_numbers(text, allowed)
    if bad:
        return f"numbers not in the catalogue: {bad}"
    return None


def make_phraser(base_url: str | None, model: str, timeout_s: float, api_key: str | None = None) -> LlmPhraser | None:
    return LlmPhraser(base_url=base_url, model=model, timeout_s=timeout_s, api_key=api_key) if base_url else None
