"""StoryLLM against the fake chat server, tolerant JSON parsing, and failures as LLMUnavailable."""

from __future__ import annotations

import time

import pytest

from pictale.core.config import Settings
from pictale.core.errors import LLMUnavailable, PictaleError
from pictale.story.llm import FALLBACK_MODEL, StoryLLM, make_llm, parse_json_object
from tests.story.fake_llm import MODEL

HI = [{"role": "user", "content": "hi"}]


def test_chat_returns_the_reply_and_sends_model_temperature_and_seed(fake_llm):
    fake_llm.reply = lambda messages: f"  echo: {messages[-1]['content']}\n"
    llm = StoryLLM(fake_llm.base_url)
    assert llm.chat(HI, temperature=0.3, max_tokens=50) == "echo: hi"
    body = fake_llm.requests[-1]
    assert body["model"] == MODEL  # no model configured: the first one `/models` lists
    assert body["messages"] == HI
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.3, 50, 0)


def test_configured_model_and_seed_are_sent(fake_llm):
    StoryLLM(fake_llm.base_url, "my-model", seed=7).chat(HI)
    assert (fake_llm.requests[-1]["model"], fake_llm.requests[-1]["seed"]) == ("my-model", 7)


def test_no_seed_when_none(fake_llm):
    StoryLLM(fake_llm.base_url, "m", seed=None).chat(HI)
    assert "seed" not in fake_llm.requests[-1]


def test_chat_json_parses_a_fenced_reply_with_chatter(fake_llm):
    fake_llm.reply = lambda m: 'Sure!\n```json\n{"prompt": "a red {kite}", "characters": ["sasha"]}\n```\nEnjoy.'
    llm = StoryLLM(fake_llm.base_url, "m")
    data = llm.chat_json([{"role": "system", "content": "Plan."}, *HI], '{"prompt": "..."}')
    assert data == {"prompt": "a red {kite}", "characters": ["sasha"]}
    sent = fake_llm.requests[-1]["messages"]
    # The JSON instruction joins the existing system message instead of adding a second one.
    assert sent[0] == {
        "role": "system",
        "content": 'Plan.\n\nAnswer with one JSON object only, no other text, shaped like: {"prompt": "..."}',
    }
    assert sent[1:] == HI


def test_chat_json_adds_a_system_message_when_there_is_none(fake_llm):
    fake_llm.reply = lambda m: '{"a": 1}'
    assert StoryLLM(fake_llm.base_url, "m").chat_json(HI, "{}") == {"a": 1}
    assert [m["role"] for m in fake_llm.requests[-1]["messages"]] == ["system", "user"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Here you go: {"a": "}"} and {"b": 2}', {"a": "}"}),
        ('{not json} then {"b": 2}', {"b": 2}),
        ('[1, {"c": 3}]', {"c": 3}),
        ("no json here", None),
        ('{"a": 1', None),
    ],
)
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


def test_unparseable_json_reply_is_llm_unavailable(fake_llm):
    fake_llm.reply = lambda m: "I cannot do that."
    with pytest.raises(LLMUnavailable) as info:
        StoryLLM(fake_llm.base_url, "m").chat_json(HI, "{}")
    assert info.value.message == (
        f"the LLM at {fake_llm.base_url} did not answer: the reply was not a JSON object: 'I cannot do that.'"
    )


def test_empty_reply_is_llm_unavailable(fake_llm):
    fake_llm.reply = lambda m: "   "
    with pytest.raises(LLMUnavailable, match="the reply was empty"):
        StoryLLM(fake_llm.base_url, "m").chat(HI)


def test_http_error_is_llm_unavailable(fake_llm):
    fake_llm.fail_status = 500
    with pytest.raises(LLMUnavailable, match=r"did not answer: HTTP 500: fake failure"):
        StoryLLM(fake_llm.base_url, "m").chat(HI)


def test_unreachable_endpoint_fails_fast_naming_the_url(closed_url):
    start = time.monotonic()
    with pytest.raises(LLMUnavailable) as info:
        StoryLLM(closed_url, "m", timeout=2).chat(HI)
    assert time.monotonic() - start < 5
    assert info.value.message == f"the LLM at {closed_url} did not answer: Connection refused"
    assert isinstance(info.value, PictaleError)
    assert (info.value.status, info.value.code) == (502, "llm_unavailable")


def test_silent_endpoint_times_out(silent_url):
    with pytest.raises(LLMUnavailable, match=r"did not answer: timed out"):
        StoryLLM(silent_url, "m", timeout=0.2).chat(HI)


def test_model_discovery_falls_back_to_local_model(closed_url):
    assert StoryLLM(closed_url, timeout=1).model == FALLBACK_MODEL


def test_make_llm(tmp_path):
    assert make_llm(Settings(data_dir=tmp_path, llm_base_url=None)) is None
    llm = make_llm(
        Settings(data_dir=tmp_path, llm_base_url="http://127.0.0.1:9/v1/", llm_model="qwen", llm_timeout=3.0)
    )
    assert isinstance(llm, StoryLLM)
    assert (llm.base_url, llm.model, llm.timeout) == ("http://127.0.0.1:9/v1", "qwen", 3.0)
