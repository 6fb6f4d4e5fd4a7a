"""A small client for any OpenAI-compatible chat endpoint (LM Studio, Ollama, llama.cpp, vLLM)."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
from openai import OpenAI

from pictale.core.config import Settings
from pictale.core.errors import LLMUnavailable

FALLBACK_MODEL = "local-model"
"""Model name sent when none is configured and `/models` says nothing (LM Studio and llama.cpp accept any)."""

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


class StoryLLM:
    """Chat with one OpenAI-compatible endpoint; every failure becomes `LLMUnavailable` naming the endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        seed: int | None = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.seed = seed
        self.timeout = timeout
        self._model = model
        # Local servers ignore the key, but the client refuses to start without one.
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=1)

    @property
    def model(self) -> str:
        """The configured model, else the endpoint's first listed model, else "local-model" (asked once, lazily)."""
        if self._model is None:
            # Lazily, so a server that starts before its LLM does not block or fail at startup.
            try:
                listed = self._client.models.list(timeout=min(self.timeout, 10.0))
                first = next(iter(listed.data), None)
                self._model = first.id if first is not None and first.id else FALLBACK_MODEL
            except openai.OpenAIError:
                self._model = FALLBACK_MODEL
        return self._model

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float = 0.7,
        max_tokens: int = 512,
        seed: int | None = None,
    ) -> str:
        """Send `messages` and return the reply text; raise `LLMUnavailable` on any failure or an empty reply."""
        kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if (seed if seed is not None else self.seed) is not None:
            # A fixed seed makes llama.cpp / vLLM / Ollama replies repeatable; servers without seeds ignore it.
            kwargs["seed"] = seed if seed is not None else self.seed
        try:
            response = self._client.chat.completions.create(model=self.model, messages=messages, **kwargs)
        except openai.OpenAIError as exc:
            raise self._unavailable(_reason(exc)) from exc
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        if not content or not content.strip():
            raise self._unavailable("the reply was empty")
        return content.strip()

    def chat_json(
        self, messages: list[dict[str, Any]], schema_hint: str, *, temperature: float = 0.2, max_tokens: int = 512
    ) -> dict[str, Any]:
        """Ask for one JSON object shaped like `schema_hint` and parse the reply tolerantly (fences, chatter)."""
        # No `response_format`: several local servers reject `json_object`; an instruction works everywhere.
        instruction = f"Answer with one JSON object only, no other text, shaped like: {schema_hint}"
        asked = [dict(m) for m in messages]
        if asked and asked[0].get("role") == "system" and isinstance(asked[0].get("content"), str):
            asked[0]["content"] = f"{asked[0]['content']}\n\n{instruction}"
        else:
            asked.insert(0, {"role": "system", "content": instruction})
        reply = self.chat(asked, temperature=temperature, max_tokens=max_tokens)
        parsed = parse_json_object(reply)
        if parsed is None:
            raise self._unavailable(f"the reply was not a JSON object: {reply[:200]!r}")
        return parsed

    def _unavailable(self, reason: str) -> LLMUnavailable:
        return LLMUnavailable(f"the LLM at {self.base_url} did not answer: {reason}")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text`, inside ``` fences or surrounded by chatter; None when there is none."""
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1), text] if fenced else [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    return None


def make_llm(settings: Settings) -> StoryLLM | None:
    """The configured story LLM, or None when `llm_base_url` is unset (the planner then uses keyword rules)."""
    if not settings.llm_base_url:
        return None
    return StoryLLM(
        settings.llm_base_url, settings.llm_model, api_key=settings.llm_api_key, timeout=settings.llm_timeout
    )


def _reason(exc: openai.OpenAIError) -> str:
    """A short human reason: the OS error under a connection failure, the status and message of an HTTP error."""
    if isinstance(exc, openai.APIStatusError):
        # `exc.message` repeats the status ("Error code: 500 - ..."); the server's own message says more.
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"HTTP {exc.status_code}: {detail}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    cause: BaseException | None = exc
    innermost = str(exc)
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        if str(cause):
            innermost = str(cause)
        cause = cause.__cause__ or cause.__context__
    return innermost
