"""The story planner: scene prompts from chats (`/imagine` modes) and from story pages, by an LLM or by rules.

Every function takes `llm: StoryLLM | None`. With an LLM it asks it; without one, or when it fails, keyword rules
answer and the result says so (`source`, `error`), so a dead LLM degrades pictures instead of failing requests.
Character prefixes are never written here: the caller composes style + `<be-char:name>` + scene.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pictale.core.errors import InvalidRequest, LLMUnavailable
from pictale.core.types import Character
from pictale.story.keywords import (
    appearance_keywords,
    clean_prompt,
    keyword_prompt,
    keywords,
    merge_keywords,
    place_keywords,
)
from pictale.story.llm import StoryLLM

MODES = ("last", "raw_last", "face", "background")
MAX_PAGES = 48
LONG_PARAGRAPH_WORDS = 60
"""Without a page count, a paragraph longer than this is split at sentence ends (a picture-book page is short)."""

Source = Literal["llm", "keywords", "raw"]


@dataclass(frozen=True)
class ScenePrompt:
    prompt: str
    source: Source
    include_character: bool
    """Whether the mode wants the character prefix (`<be-char:name>`) that the caller adds."""
    error: str | None = None
    """Why the LLM was not used although one was given (its failure); None otherwise."""


@dataclass(frozen=True)
class PagePlan:
    prompt: str
    """The scene only: no style, no character descriptions."""
    characters: list[str]
    """Names (as spelled in the given characters) of those on the page, in order of appearance."""
    source: Source
    error: str | None = None


_KEYWORD_RULE = "No sentences, no explanations, no quotes: answer with the comma-separated keyword list only."
_SYSTEM = {
    # SillyTavern's "quiet prompt" for /imagine last, asked of a separate chat so the model does not role-play.
    "last": "You write prompts for an image generator. Describe the scene of the LAST message of the chat as one "
    "comma-separated list of keywords: the location, the characters by gender and count, their positioning, the "
    "main act, their looks and clothing. Use the earlier messages to keep the place and the people consistent. "
    + _KEYWORD_RULE,
    "face": "You write prompts for an image generator. Describe a close-up portrait of the main character as they "
    "are in the LAST messages, as one comma-separated list of keywords: face, expression, hair, eyes and the "
    "clothes visible in a close-up. No background, no other people. " + _KEYWORD_RULE,
    "background": "You write prompts for an image generator. Describe only the LOCATION of the last message of the "
    "chat as one comma-separated list of keywords: the place, time of day, weather, light and notable objects. "
    "No people, no characters, no actions. " + _KEYWORD_RULE,
}
_PAGE_SYSTEM = (
    "You plan the pictures of a picture book. For the page you are given, write the prompt of its picture for an "
    "image generator as one comma-separated keyword list of the scene: location, who is there (by kind and count), "
    "positioning, the main act, mood and light. Do not describe the listed characters' looks (their descriptions "
    "are added separately); name them only. Also list which of the listed characters appear in the picture."
)
_PAGE_SCHEMA = '{"prompt": "keyword, keyword, ...", "characters": ["name", ...]}'


def message_text(message: dict[str, Any]) -> str:
    """The text of an OpenAI chat message: its string content, or its text parts joined (images ignored)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        texts = [p if isinstance(p, str) else p.get("text", "") for p in content if isinstance(p, str | dict)]
        return "\n".join(t.strip() for t in texts if isinstance(t, str) and t.strip())
    return ""


def _name_words(character: Character | None) -> list[str]:
    return character.name.replace("_", " ").replace("-", " ").split() if character else []


def imagine_prompt(
    messages: list[dict[str, Any]], mode: str, character: Character | None, llm: StoryLLM | None, *, context: int = 6
) -> ScenePrompt:
    """A scene prompt for the last chat message in one of `MODES` (SillyTavern's /imagine), without the prefix."""
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}; got {mode!r}", param="mode")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of chat messages", param="messages")
    if context < 0:
        raise InvalidRequest("context must be 0 or more messages", param="context")
    last = message_text(messages[-1])
    if not last:
        raise InvalidRequest("the last message of messages has no text to imagine", param="messages")
    include = mode != "background"
    if mode == "raw_last":
        return ScenePrompt(clean_prompt(last), "raw", include)
    # System messages are the client's instructions to its own model, not part of the story.
    earlier = [m for m in messages[:-1] if isinstance(m, dict) and m.get("role") != "system" and message_text(m)]
    history = earlier[-context:] if context else []
    error = None
    if llm is not None:
        try:
            reply = clean_prompt(llm.chat(_imagine_messages(mode, history, messages[-1], character), temperature=0.2))
            if not reply:
                raise LLMUnavailable(f"the LLM at {llm.base_url} did not answer: the prompt was empty")
            return ScenePrompt(_finish(mode, reply), "llm", include)
        except LLMUnavailable as exc:
            error = exc.message
    return ScenePrompt(_finish(mode, _imagine_keywords(mode, last, history, character)), "keywords", include, error)


def _speaker(message: dict[str, Any], character: Character | None) -> str:
    if isinstance(message.get("name"), str) and message["name"].strip():
        return message["name"].strip()
    role = message.get("role", "user")
    if role == "assistant":
        return character.name if character else "Assistant"
    return str(role).capitalize()


def _imagine_messages(
    mode: str, history: list[dict[str, Any]], last: dict[str, Any], character: Character | None
) -> list[dict[str, str]]:
    # One transcript in one user message (as Open WebUI's template does): the model reads the chat, not joins it.
    lines = [f"{_speaker(m, character)}: {message_text(m)}" for m in history]
    parts = [f"<chat_history>\n{chr(10).join(lines)}\n</chat_history>"] if lines else []
    parts.append(f"<last_message>\n{_speaker(last, character)}: {message_text(last)}\n</last_message>")
    if character is not None and mode != "background":  # a background has no people: do not suggest one
        parts.append(
            f"Main character: {character.name}" + (f" ({character.description})" if character.description else "")
        )
    parts.append("Write the keyword list now.")
    return [{"role": "system", "content": _SYSTEM[mode]}, {"role": "user", "content": "\n\n".join(parts)}]


def _imagine_keywords(mode: str, last: str, history: list[dict[str, Any]], character: Character | None) -> str:
    """The no-LLM prompt: keywords of the last message, helped by the earlier ones (newest first)."""
    names = _name_words(character)
    earlier = [message_text(m) for m in reversed(history)]
    if mode == "face":
        # Only looks: other words of the message ("ship", "points") would pull the close-up away from the face.
        return ", ".join(merge_keywords(*(appearance_keywords(t, drop=names) for t in [last, *earlier]), limit=8))
    if mode == "background":
        return ", ".join(merge_keywords(*(place_keywords(t) for t in [last, *earlier]), limit=6))
    scene = keywords(last, limit=10, drop=names)
    # The last message rarely repeats where it happens; borrow the place of the earlier ones so the scene stays.
    if not place_keywords(last):
        scene = merge_keywords(scene, merge_keywords(*(place_keywords(t) for t in earlier), limit=2), limit=12)
    return ", ".join(scene)


def _finish(mode: str, prompt: str) -> str:
    if mode == "face" and not prompt.lower().startswith("close-up portrait"):
        return ", ".join(p for p in ("close-up portrait", prompt) if p)
    if mode == "background" and "no humans" not in prompt.lower():
        return ", ".join(p for p in (prompt, "scenery, no humans") if p)
    return prompt


def story_needs_llm() -> InvalidRequest:
    """The 422 for a story from keywords without an LLM (a book checks it when it is made)."""
    return InvalidRequest(
        "writing a story from keywords needs an LLM: start pictale with --llm-base-url (any OpenAI-compatible "
        "chat endpoint), or give the story text instead",
        param="keywords",
    )


def write_story(
    keywords: str, *, reading_level: str, pages: int, characters: list[Character], llm: StoryLLM | None
) -> str:
    """A short story of `pages` paragraphs written by the LLM from `keywords` (raises LLMUnavailable if it fails)."""
    if not keywords or not keywords.strip():
        raise InvalidRequest("keywords must say what the story is about", param="keywords")
    _check_pages(pages)
    if llm is None:
        raise story_needs_llm()
    cast = "\n".join(f"- {c.name}" + (f": {c.description}" if c.description else "") for c in characters)
    system = (
        f"You write short picture-book stories for readers {reading_level}. Write exactly {pages} paragraphs, "
        "separated by blank lines; each paragraph is one page and describes something that can be drawn. "
        "Plain prose only: no title, no headings, no page numbers, no lists."
    )
    user = f"Story idea: {keywords.strip()}" + (f"\n\nCharacters (use these names):\n{cast}" if cast else "")
    text = llm.chat(
        [{"role": "system", "content": system}, {"role": "user", "content": user}], max_tokens=160 * pages + 200
    )
    # Models add titles and "Page 1:" labels despite being asked not to; they are not story text.
    lines = [
        ln for ln in text.splitlines() if not re.match(r"^\s*(#+\s|\**\s*(page|title)\b[^.!?]*:?\**\s*$)", ln, re.I)
    ]
    return re.sub(r"\n\s*\n\s*", "\n\n", "\n".join(lines)).strip()


def _check_pages(pages: int) -> None:
    if not isinstance(pages, int) or isinstance(pages, bool) or not 1 <= pages <= MAX_PAGES:
        raise InvalidRequest(f"pages must be between 1 and {MAX_PAGES}; got {pages!r}", param="pages")


# A sentence ends at . ! ? or … (with any closing quotes or brackets) followed by whitespace and a capital letter,
# a digit or an opening quote, unless the word before the dot is a known abbreviation (Mr., Dr., St.) or an
# initial (J. R. R.). `"Run!" she said.` stays one sentence because "she" is lower-case.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_ABBREVIATIONS = frozenset(("mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "mt", "vs", "etc", "e.g", "i.e"))


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` by the rule above, whitespace collapsed."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for m in _BOUNDARY.finditer(text):
        following = text[m.end() : m.end() + 1]
        if not (following.isupper() or following.isdigit() or following in "\"'“‘([") or not following:
            continue
        previous = text[start : m.start()].rsplit(" ", 1)[-1]
        if m.group().startswith(".") and (
            previous.lower() in _ABBREVIATIONS or (len(previous) == 1 and previous.isalpha())
        ):
            continue
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


def _balanced(sentences: list[str], chunks: int) -> list[str]:
    """`chunks` contiguous groups of sentences whose word counts are as even as cumulative targets allow."""
    cum = [0]
    for s in sentences:
        cum.append(cum[-1] + len(s.split()))
    bounds = [0]
    for i in range(1, chunks):
        target = cum[-1] * i / chunks
        # Each cut stays after the previous one and leaves at least one sentence for every later chunk.
        cuts = range(bounds[-1] + 1, len(sentences) - (chunks - i) + 1)
        bounds.append(min(cuts, key=lambda j: (abs(cum[j] - target), j)))
    bounds.append(len(sentences))
    return [" ".join(sentences[a:b]) for a, b in itertools.pairwise(bounds)]


def split_pages(story: str, pages: int | None, llm: StoryLLM | None = None) -> list[str]:
    """Pages of a story by rules (the LLM is not needed): paragraphs, regrouped by sentences to fit `pages`."""
    del llm  # Rules are deterministic and good enough; the parameter keeps the planner signatures uniform.
    if not isinstance(story, str) or not story.strip():
        raise InvalidRequest("story must contain text", param="story")
    if pages is not None:
        _check_pages(pages)
    blocks = [b for b in re.split(r"\n\s*\n", story.strip()) if b.strip()]
    if len(blocks) == 1:
        # No blank lines: a story typed one paragraph per line.
        blocks = [line for line in blocks[0].splitlines() if line.strip()]
    paragraphs = [" ".join(b.split()) for b in blocks]
    if pages is not None:
        if len(paragraphs) == pages:
            return paragraphs
        sentences = [s for p in paragraphs for s in split_sentences(p)]
        if len(sentences) < pages:
            raise InvalidRequest(
                f"the story has {len(sentences)} sentences, too few for {pages} pages (a sentence is never split)",
                param="pages",
            )
        return _balanced(sentences, pages)
    result: list[str] = []
    for paragraph in paragraphs:
        words = len(paragraph.split())
        sentences = split_sentences(paragraph)
        chunks = min(len(sentences), math.ceil(words / LONG_PARAGRAPH_WORDS))
        result.extend(_balanced(sentences, chunks) if chunks > 1 else [paragraph])
    if len(result) > MAX_PAGES:
        raise InvalidRequest(
            f"the story makes {len(result)} pages, more than {MAX_PAGES}; shorten it or give pages", param="pages"
        )
    return result


def _aliases(character: Character) -> list[str]:
    words = character.name.replace("_", " ").replace("-", " ").split()
    full = " ".join(words).lower()
    return [full, words[0].lower()] if len(words) > 1 else [full]


def _resolve_names(names: Any, characters: list[Character]) -> list[str]:
    """The given characters the LLM named, case-insensitively, by full or first name; others dropped."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        return []
    found: list[str] = []
    for name in names:
        if not isinstance(name, str):
            continue
        key = " ".join(name.replace("_", " ").replace("-", " ").split()).lower()
        for c in characters:
            if key in (c.name.lower(), *_aliases(c)) and c.name not in found:
                found.append(c.name)
                break
    return found


def characters_in(text: str, characters: list[Character]) -> list[str]:
    """Names of the characters whose name or first name appears in `text` (whole words, any case), in order."""
    hits = []
    for index, c in enumerate(characters):
        positions = [m.start() for a in _aliases(c) for m in re.finditer(rf"\b{re.escape(a)}\b", text, re.I)]
        if positions:
            hits.append((min(positions), index, c.name))
    return [name for _, _, name in sorted(hits)]


def plan_page(page_text: str, story_so_far: list[str], characters: list[Character], llm: StoryLLM | None) -> PagePlan:
    """The scene prompt of one page and who is in it; the LLM sees the last pages and the cast, rules otherwise."""
    if not isinstance(page_text, str) or not page_text.strip():
        raise InvalidRequest("the page has no text", param="page_text")
    error = None
    if llm is not None:
        cast = "\n".join(f"- {c.name}" + (f": {c.description}" if c.description else "") for c in characters)
        # The last three pages carry the place and the people forward; older pages cost tokens for little.
        first = len(story_so_far) - len(story_so_far[-3:])
        recent = [f"Page {first + i + 1}: {t}" for i, t in enumerate(story_so_far[-3:])]
        user = "\n\n".join(
            part
            for part in (
                f"Characters:\n{cast}" if cast else "Characters: none",
                "The story so far:\n" + "\n".join(recent) if recent else "",
                f"This page:\n{page_text.strip()}",
            )
            if part
        )
        try:
            data = llm.chat_json(
                [{"role": "system", "content": _PAGE_SYSTEM}, {"role": "user", "content": user}], _PAGE_SCHEMA
            )
            prompt = clean_prompt(data["prompt"]) if isinstance(data.get("prompt"), str) else ""
            if not prompt:
                raise LLMUnavailable(f"the LLM at {llm.base_url} did not answer: the JSON had no prompt")
            return PagePlan(prompt, _resolve_names(data.get("characters"), characters), "llm")
        except LLMUnavailable as exc:
            error = exc.message
    names = [w for c in characters for w in _aliases(c)]
    return PagePlan(keyword_prompt(page_text, drop=names), characters_in(page_text, characters), "keywords", error)


def compose_prompt(style: str, characters: list[str], scene: str) -> str:
    """The prompt the service receives: `style, <be-char:a>, <be-char:b>, scene`, empty parts dropped."""
    parts = [style.strip().strip(","), *(f"<be-char:{name}>" for name in characters if name), scene.strip().strip(",")]
    return ", ".join(p.strip() for p in parts if p.strip())
