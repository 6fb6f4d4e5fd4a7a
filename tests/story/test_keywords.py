"""The no-LLM keyword extractor and the processReply-like prompt cleanup: exact outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pictale.story.keywords import (
    appearance_keywords,
    clean_prompt,
    keyword_prompt,
    keywords,
    merge_keywords,
    place_keywords,
)

ACTION = (
    '*She smiles and draws her silver sword.* "We must reach the old castle before nightfall," Lucy whispered quietly.'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Asterisks and quotes go, stopwords and -ly adverbs split phrases, past tense ("whispered") drops.
        (ACTION, "smiles, draws, silver sword, reach, old castle, nightfall, lucy"),
        ("Sasha and her little brown dog ran through the dark forest. It was raining.",
         "sasha, little brown dog, dark forest, raining"),
        # Runs longer than three words keep their last three; possessive 's is dropped.
        ("The big red wooden house stood on a green hill. Lucy's cat slept on the porch.",
         "big, red wooden house, green hill, lucy cat, porch"),
        ("I don't know... maybe we should go back home?", "home"),
        ("Two girls with long red hair are laughing in a sunny kitchen <be-face:lucy:0.4>",
         "two girls, long red hair, laughing, sunny kitchen"),
        # Duplicates (any case) are dropped, and so is a lone word already inside an earlier phrase.
        ("The dragon, the dragon! The DRAGON flew over the dragon castle.", "dragon, dragon castle"),
        ("", ""),
        ("Oh well, yes, I think so.", ""),
    ],
)  # fmt: skip
def test_keyword_prompt_exact(text, expected):
    assert keyword_prompt(text) == expected


def test_limit_and_drop():
    assert keywords(ACTION, limit=3) == ["smiles", "draws", "silver sword"]
    text = "Sasha and her little brown dog ran through the dark forest."
    assert keywords(text, drop=["Sasha"]) == ["little brown dog", "dark forest"]
    assert keywords("Captain Hook waves his hook hand.", drop=["captain_hook"]) == ["waves", "hand"]


def test_place_and_appearance_keywords():
    assert place_keywords("The big red wooden house stood on a green hill near the mountains.") == [
        "red wooden house",
        "green hill",
        "mountains",
    ]
    assert appearance_keywords("Two girls with long red hair are laughing in a sunny kitchen.") == [
        "long red hair",
        "laughing",
    ]
    assert merge_keywords(["red hat", "hat"], ["red hat", "blue sky", "tree"], limit=2) == ["red hat", "blue sky"]


def test_same_input_same_output_in_fresh_processes():
    code = f"from pictale.story.keywords import keyword_prompt as k; print(k({ACTION!r}))"
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outputs.add(result.stdout.strip())
    assert outputs == {keyword_prompt(ACTION)}
    assert keyword_prompt(ACTION) == keyword_prompt(ACTION)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Quotes go, sentence dots and newlines become commas; the avatar token and the decimal weight stay.
        ('"A girl in the forest. Night time."\n<be-face:lucy:0.4>, (red hair:1.2)!!\n\n  sword & shield',
         "A girl in the forest, Night time, <be-face:lucy:0.4>, (red hair:1.2), sword shield"),
        ("a, , b,,, c.", "a, b, c"),
        ("<be-face:lucy:0,4> smile... 3.5 m tall. Lucy.", "<be-face:lucy:0,4> smile, 3.5 m tall, Lucy"),
        ("“Curly”  quotes\r\nand\ttabs, 'single', it's", "Curly quotes, and tabs, single, it's"),
        ("castle<be-style:ink_v2.1:0.7>.<lora:toy-3:0.9>", "castle<be-style:ink_v2.1:0.7>, <lora:toy-3:0.9>"),
        ("line one\nline two", "line one, line two"),
        ("", ""),
    ],
)  # fmt: skip
def test_clean_prompt(text, expected):
    assert clean_prompt(text) == expected
