"""The planner with the fake LLM and without one: imagine modes, story pages, page plans, prompt composition."""

from __future__ import annotations

import json

import pytest

from pictale.core.errors import InvalidRequest, LLMUnavailable
from pictale.core.types import Character
from pictale.story.llm import StoryLLM
from pictale.story.planner import (
    MAX_PAGES,
    PagePlan,
    ScenePrompt,
    compose_prompt,
    imagine_prompt,
    plan_page,
    split_pages,
    split_sentences,
    write_story,
)

SASHA = Character(name="sasha", description="a small girl with red hair")
MAX = Character(name="max_the_dog", description="a brown dog")
CHAT = [
    {"role": "system", "content": "You are Sasha, a role-play bot."},
    {"role": "user", "content": "Let's walk to the old lighthouse by the sea."},
    {"role": "assistant", "content": "*Sasha takes your hand* The wind is cold on the rocky beach tonight."},
    {"role": "user", "content": "Look over there!"},
    {"role": "assistant", "content": [{"type": "text", "text": "*She points and laughs.* A seal with long whiskers!"}]},
]
CHAT_PLACES = "rocky beach tonight, old lighthouse"
NUMBERED = [{"role": "system", "content": "sys"}] + [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(9)
]


@pytest.fixture
def llm(fake_llm):
    return StoryLLM(fake_llm.base_url, "m")


@pytest.fixture
def dead_llm(closed_url):
    return StoryLLM(closed_url, "m", timeout=2)


# -- imagine_prompt without an LLM: keyword rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # The last message names no place, so the places of the earlier messages (newest first) keep the scene.
        ("last", ScenePrompt(f"points, laughs, seal, long whiskers, {CHAT_PLACES}", "keywords", True)),
        ("raw_last", ScenePrompt("She points and laughs, A seal with long whiskers", "raw", True)),
        ("face", ScenePrompt("close-up portrait, laughs", "keywords", True)),
        ("background", ScenePrompt("rocky beach tonight, old lighthouse, sea, scenery, no humans", "keywords", False)),
    ],
)  # fmt: skip
def test_imagine_without_llm(mode, expected):
    assert imagine_prompt(CHAT, mode, SASHA, None) == expected


def test_raw_last_keeps_the_exclamation_out_and_the_text_in():
    # raw_last is the cleaned message itself: SillyTavern's ((last message)) without the emphasis.
    assert imagine_prompt(CHAT, "raw_last", None, None).prompt == "She points and laughs, A seal with long whiskers"


def test_face_and_background_keywords_without_llm():
    chat = [{"role": "user", "content": "Sasha smiles shyly, her green eyes shining under a straw hat."}]
    face = imagine_prompt(chat, "face", SASHA, None)
    assert face.prompt == "close-up portrait, smiles, green eyes shining, straw hat"
    assert imagine_prompt(chat, "background", SASHA, None).prompt == "scenery, no humans"


def test_context_zero_uses_only_the_last_message():
    assert imagine_prompt(CHAT, "last", SASHA, None, context=0).prompt == "points, laughs, seal, long whiskers"


# -- imagine_prompt with the fake LLM --------------------------------------------------------------------------------


def test_last_sends_the_previous_messages_as_context_and_cleans_the_reply(fake_llm, llm):
    fake_llm.reply = lambda messages: '"Beach, 1girl, sunset.\nwaves <be-face:lucy:0.4>"'
    result = imagine_prompt(NUMBERED, "last", SASHA, llm)
    assert result == ScenePrompt("Beach, 1girl, sunset, waves <be-face:lucy:0.4>", "llm", True, None)
    body = fake_llm.requests[-1]
    assert body["temperature"] == 0.2
    system, user = body["messages"]
    assert system["role"] == "system" and "comma-separated list of keywords" in system["content"]
    # The 6 messages before the last (system messages left out), speakers named, then the last one.
    assert user == {
        "role": "user",
        "content": "<chat_history>\nUser: message 2\nsasha: message 3\nUser: message 4\nsasha: message 5\n"
        "User: message 6\nsasha: message 7\n</chat_history>\n\n<last_message>\nUser: message 8\n</last_message>\n\n"
        "Main character: sasha (a small girl with red hair)\n\nWrite the keyword list now.",
    }


def test_context_parameter_limits_the_history(fake_llm, llm):
    imagine_prompt(NUMBERED, "last", None, llm, context=2)
    assert fake_llm.last_user_text() == (
        "<chat_history>\nUser: message 6\nAssistant: message 7\n</chat_history>\n\n"
        "<last_message>\nUser: message 8\n</last_message>\n\nWrite the keyword list now."
    )


def test_face_and_background_with_llm(fake_llm, llm):
    fake_llm.reply = lambda messages: "green eyes, freckles, smiling"
    assert imagine_prompt(CHAT, "face", SASHA, llm) == ScenePrompt(
        "close-up portrait, green eyes, freckles, smiling", "llm", True
    )
    assert "close-up portrait of the main character" in fake_llm.requests[-1]["messages"][0]["content"]
    fake_llm.reply = lambda messages: "rocky beach, lighthouse, night, cold wind."
    assert imagine_prompt(CHAT, "background", SASHA, llm) == ScenePrompt(
        "rocky beach, lighthouse, night, cold wind, scenery, no humans", "llm", False
    )
    system, user = fake_llm.requests[-1]["messages"]
    assert "Describe only the LOCATION" in system["content"]
    assert "Main character" not in user["content"]  # no people suggested for a background


def test_raw_last_never_asks_the_llm(fake_llm, llm):
    assert imagine_prompt(CHAT, "raw_last", SASHA, llm).source == "raw"
    assert fake_llm.requests == []


def test_llm_down_falls_back_to_keywords_with_the_error(dead_llm, closed_url):
    result = imagine_prompt(CHAT, "last", SASHA, dead_llm)
    assert result == ScenePrompt(
        "points, laughs, seal, long whiskers, rocky beach tonight, old lighthouse",
        "keywords",
        True,
        f"the LLM at {closed_url} did not answer: Connection refused",
    )


def test_empty_llm_prompt_falls_back(fake_llm, llm):
    fake_llm.reply = lambda messages: '"..."'
    result = imagine_prompt(CHAT, "background", None, llm)
    assert (result.source, result.prompt) == ("keywords", f"{CHAT_PLACES}, sea, scenery, no humans")
    assert result.error == f"the LLM at {fake_llm.base_url} did not answer: the prompt was empty"


@pytest.mark.parametrize(
    ("messages", "mode", "param", "text"),
    [
        ([], "last", "messages", "non-empty"),
        ([{"role": "user", "content": "  "}], "last", "messages", "no text"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "face", "messages",
         "no text"),
        (CHAT, "scene", "mode", "last, raw_last, face, background"),
    ],
)  # fmt: skip
def test_imagine_validation(messages, mode, param, text):
    with pytest.raises(InvalidRequest) as info:
        imagine_prompt(messages, mode, None, None)
    assert info.value.param == param
    assert text in info.value.message
    assert info.value.status == 422


# -- write_story ------------------------------------------------------------------------------------------------------


def test_write_story_asks_the_llm_and_drops_titles(fake_llm, llm):
    fake_llm.reply = lambda messages: "Title: The Kite\n\nSasha finds a kite.\n\nPage 2:\nThe kite flies high."
    story = write_story("kite, wind", reading_level="age 4-6", pages=2, characters=[SASHA], llm=llm)
    assert story == "Sasha finds a kite.\n\nThe kite flies high."
    system, user = fake_llm.requests[-1]["messages"]
    assert "readers age 4-6" in system["content"] and "exactly 2 paragraphs" in system["content"]
    assert user["content"] == (
        "Story idea: kite, wind\n\nCharacters (use these names):\n- sasha: a small girl with red hair"
    )


def test_write_story_needs_an_llm():
    with pytest.raises(InvalidRequest, match=r"needs an LLM.*--llm-base-url.*story text instead"):
        write_story("kite", reading_level="age 4-6", pages=2, characters=[], llm=None)


def test_write_story_with_the_llm_down_raises(dead_llm):
    with pytest.raises(LLMUnavailable):
        write_story("kite", reading_level="age 4-6", pages=2, characters=[], llm=dead_llm)


# -- split_pages ------------------------------------------------------------------------------------------------------

STORY = """Sasha woke up early. The sun was shining! She ran to the window.

Outside, her dog Max was barking at a squirrel. "Stop it, Max!" she laughed. Max did not stop.

They went to the park. Mr. Brown was feeding the ducks. Sasha waved at him."""
P1 = "Sasha woke up early. The sun was shining! She ran to the window."
P2 = 'Outside, her dog Max was barking at a squirrel. "Stop it, Max!" she laughed. Max did not stop.'
P3 = "They went to the park. Mr. Brown was feeding the ducks. Sasha waved at him."


def test_split_pages_by_paragraphs():
    assert split_pages(STORY, None, None) == [P1, P2, P3]
    assert split_pages(STORY, 3, None) == [P1, P2, P3]
    assert split_pages(STORY.replace("\n\n", "\n"), None, None) == [P1, P2, P3]  # one paragraph per line


def test_split_pages_regroups_sentences_to_the_page_count():
    assert split_pages(STORY, 2, None) == [
        "Sasha woke up early. The sun was shining! She ran to the window. "
        "Outside, her dog Max was barking at a squirrel.",
        '"Stop it, Max!" she laughed. Max did not stop. They went to the park. Mr. Brown was feeding the ducks. '
        "Sasha waved at him.",
    ]
    assert split_pages(STORY, 5, None) == [
        "Sasha woke up early. The sun was shining!",
        "She ran to the window. Outside, her dog Max was barking at a squirrel.",
        '"Stop it, Max!" she laughed.',
        "Max did not stop. They went to the park.",
        "Mr. Brown was feeding the ducks. Sasha waved at him.",
    ]


def test_long_paragraphs_split_at_sentences():
    sentence = "The little red fox ran across the wide green field again."  # 11 words
    page = " ".join([sentence] * 10)  # 110 words: two pages of five sentences
    assert split_pages(page, None, None) == [" ".join([sentence] * 5)] * 2


def test_split_sentences_rule():
    text = '"Run!" she said. Dr. Who came. J. R. R. Tolkien wrote it. It cost 3.5 dollars... Then? "Yes," he said.'
    assert split_sentences(text) == [
        '"Run!" she said.',
        "Dr. Who came.",
        "J. R. R. Tolkien wrote it.",
        "It cost 3.5 dollars...",
        "Then?",
        '"Yes," he said.',
    ]


@pytest.mark.parametrize(
    ("story", "pages", "param"),
    [
        ("   \n ", None, "story"),
        (STORY, 0, "pages"),
        (STORY, MAX_PAGES + 1, "pages"),
        (STORY, 10, "pages"),  # 9 sentences: a sentence is never split
        ("\n\n".join(f"Page {i}." for i in range(MAX_PAGES + 1)), None, "pages"),
    ],
)
def test_split_pages_validation(story, pages, param):
    with pytest.raises(InvalidRequest) as info:
        split_pages(story, pages, None)
    assert info.value.param == param


# -- plan_page --------------------------------------------------------------------------------------------------------


def test_plan_page_with_llm_json(fake_llm, llm):
    reply = {"prompt": 'park, ducks, "sunny"', "characters": ["SASHA", "Bob", "max", "sasha"]}
    fake_llm.reply = lambda messages: "```json\n" + json.dumps(reply) + "\n```"
    plan = plan_page("Sasha and Max feed the ducks.", ["p1", "p2", "p3", "p4"], [SASHA, MAX], llm)
    # Unknown "Bob" dropped, names matched in any case and by first name, duplicates once.
    assert plan == PagePlan("park, ducks, sunny", ["sasha", "max_the_dog"], "llm", None)
    assert fake_llm.last_user_text() == (
        "Characters:\n- sasha: a small girl with red hair\n- max_the_dog: a brown dog\n\n"
        "The story so far:\nPage 2: p2\nPage 3: p3\nPage 4: p4\n\nThis page:\nSasha and Max feed the ducks."
    )
    assert '"characters"' in fake_llm.requests[-1]["messages"][0]["content"]


def test_plan_page_bad_json_falls_back(fake_llm, llm):
    fake_llm.reply = lambda messages: '{"characters": ["sasha"]}'
    plan = plan_page("Max barks at the red kite.", [], [SASHA, MAX], llm)
    assert plan == PagePlan(
        "barks, red kite",
        ["max_the_dog"],
        "keywords",
        f"the LLM at {fake_llm.base_url} did not answer: the JSON had no prompt",
    )


def test_plan_page_without_llm_matches_names_in_order_of_appearance():
    plan = plan_page("Max and SASHA play in the sunny garden.", [], [SASHA, MAX], None)
    assert plan == PagePlan("play, sunny garden", ["max_the_dog", "sasha"], "keywords", None)
    # Whole words only ("maxine" is not Max), and no match means no characters.
    assert plan_page("Maxine reads a book.", [], [SASHA, MAX], None) == PagePlan(
        "maxine reads, book", [], "keywords", None
    )


def test_plan_page_llm_down(dead_llm, closed_url):
    plan = plan_page("Sasha flies a kite.", [], [SASHA], dead_llm)
    assert plan == PagePlan(
        "flies, kite", ["sasha"], "keywords", f"the LLM at {closed_url} did not answer: Connection refused"
    )


def test_plan_page_needs_text():
    with pytest.raises(InvalidRequest) as info:
        plan_page("  ", [], [], None)
    assert info.value.param == "page_text"


# -- compose_prompt ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "characters", "scene", "expected"),
    [
        ("watercolor, soft light", ["sasha", "max_the_dog"], "park, ducks",
         "watercolor, soft light, <be-char:sasha>, <be-char:max_the_dog>, park, ducks"),
        ("", [], "park", "park"),
        ("ink, ", ["sasha"], "", "ink, <be-char:sasha>"),
        ("  ", [], "  ", ""),
    ],
)  # fmt: skip
def test_compose_prompt(style, characters, scene, expected):
    assert compose_prompt(style, characters, scene) == expected
