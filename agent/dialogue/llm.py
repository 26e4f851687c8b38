"""Optional LLM phrasing of template replies through an OpenAI-compatible endpoint (what vllm,
llama.cpp's server or Ollama serve at /v1/chat/completions).

The template reply is always made first (by the policy, a pure step); the LLM may only rephrase
it.  The call to the endpoint is an effect, so it lives in its own stage (agent/stages/phrasing.py)
and runs as an awaited httpx request, never on the policy's `handle`: a slow endpoint delays only
its own call's reply.  The LLM text is thrown away (and the template used) when the request fails
or times out, when it is empty or much longer than the template, or when it states a number the
catalogue, the caller or the quote does not hold.  Compliance replies (do-not-call, hand-off, AI
disclosure) are never rephrased.  What the LLM answered is recorded on the reply event (prompt
hash, text), and a replay answers from that record (`RecordedPhraser`) instead of the network."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.dialogue.playbook import Playbook
from agent.dialogue.policy import Action
from agent.dialogue.replies import unsupported_numbers
from agent.dialogue.state import DialogueState

log = structlog.get_logger(__name__)

#: replies whose exact wording is a compliance matter
KEEP_TEMPLATE = frozenset({"exit_do_not_call", "handoff_human", "identify_ai"})

_SYSTEM = (
    "你是{company}的电话销售AI助手{agent_name}。把给你的回复改写成更自然的口语中文，"
    "一到两句话，不超过{limit}个字。不要加入原回复里没有的任何数字、价格、承诺或产品。只输出改写后的回复。"
)


def keeps_template(action: Action) -> bool:
    return action.name in KEEP_TEMPLATE or (action.then is not None and action.then.name in KEEP_TEMPLATE)


def build_prompt(template_text: str, state: DialogueState, pb: Playbook) -> list[dict[str, str]]:
    """The chat messages asking for a rewording of `template_text` (pure: the policy builds it)."""
    limit = max(30, len(template_text) + 10)
    return [
        {"role": "system", "content": _SYSTEM.format(company=pb.company, agent_name=pb.agent_name, limit=limit)},
        {"role": "user", "content": f"客户刚说：{state.last_text}\n原回复：{template_text}"},
    ]


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """Stable key of a prompt: the same dialogue turn under the same playbook hashes the same,
    which is how a replay finds the LLM answer recorded for it."""
    blob = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LlmAnswer:
    """What asking for a phrasing gave: the LLM's text, or None and why not."""

    text: str | None
    note: str | None = None


class LlmPhraser:
    """Asks the endpoint, asynchronously (httpx), with a timeout; never raises."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 1.5, api_key: str | None = None) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        self._client: Any = None
        try:  # fail at start-up, not on the first reply (which would then be a dead letter)
            import httpx  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("LLM phrasing needs httpx: pip install 'dianxiao[llm]'") from exc

    async def answer(self, messages: list[dict[str, str]], key: str) -> LlmAnswer:
        import httpx  # the `llm` extra; only needed when an endpoint is configured

        if self._client is None:
            # One pooled client: a keep-alive connection per call in flight instead of a TCP
            # handshake per reply.  Created here, on the loop that uses it.
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        body = {"model": self.model, "temperature": 0.3, "max_tokens": 128, "messages": messages}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            resp = await self._client.post(self.base_url.rstrip("/") + "/chat/completions", json=body,
                                           headers=headers)
            resp.raise_for_status()
            return LlmAnswer(str(resp.json()["choices"][0]["message"]["content"]).strip())
        except httpx.TimeoutException:
            return LlmAnswer(None, f"timeout after {self.timeout_s:g} s")
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            return LlmAnswer(None, f"error: {type(exc).__name__}: {str(exc)[:160]}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass
class RecordedPhraser:
    """A replay's phraser: answers from the LLM results recorded on a call's replies, by prompt
    hash, and never touches the network, so a replay is deterministic with the endpoint down."""

    by_hash: dict[str, LlmAnswer] = field(default_factory=dict)
    model: str | None = None

    @classmethod
    def from_events(cls, events: Iterable[Any]) -> RecordedPhraser:
        rec = cls()
        for e in events:
            key = getattr(e, "prompt_hash", None)
            if getattr(e, "type", None) == "bot.reply" and key:
                rec.by_hash[key] = LlmAnswer(e.llm_text, e.phrasing_note if e.llm_text is None else None)
                rec.model = rec.model or e.llm_model
        return rec

    async def answer(self, messages: list[dict[str, str]], key: str) -> LlmAnswer:
        return self.lookup(key)

    def lookup(self, key: str) -> LlmAnswer:
        # A prompt the call never sent (the template or playbook changed since): there is no
        # honest LLM answer to use, so the template stands and the diff shows the change.
        return self.by_hash.get(key) or LlmAnswer(None, "not recorded: the prompt differs from the call's")


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
