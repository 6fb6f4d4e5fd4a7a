"""Prompts without an LLM: a deterministic keyword extractor, and the cleanup applied to LLM-written prompts.

The extractor is a small RAKE-like rule set (no NLP models to download): lower-case the text, drop avatar tokens,
asterisks and quotes, cut it into clauses at punctuation, and keep the runs of words between stopwords as phrases
(at most three words, keeping the last three because English noun phrases end in their noun). Stopwords cover
function words, pronouns, common verbs of saying/going/seeing, past-tense verbs (irregular ones listed, regular
ones by their -ed), contractions and -ly adverbs, so what stays is
mostly nouns, adjectives and -ing actions: the words an image model can draw. Same input, same output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_PHRASE_WORDS = 3


def _words(text: str) -> frozenset[str]:
    """A vocabulary written as whitespace-separated words (long lists stay readable)."""
    return frozenset(text.split())


STOPWORDS = _words(
    """
    a an the and or but nor so yet for of to in on at by with from into onto upon about above across after against
    along among around as before behind below beneath beside besides between beyond despite down during except
    inside like near off out outside over past since through throughout till toward towards under until up via
    within without than then
    i me my mine myself you your yours yourself yourselves we us our ours ourselves they them their theirs
    themselves he him his himself she her hers herself it its itself one ones someone somebody something anything
    everything nothing anyone everyone nobody everybody thing things stuff
    this that these those what which who whom whose when where why how whatever whoever
    some any each every all both few many much more most other another such no not own same several lot lots
    very really just too also still even only quite rather almost already soon once again ever never always
    maybe perhaps here there now today tomorrow yesterday moment while instead else enough away back
    together however though although because if unless whether either neither
    be am is are was were been being have has had having do does did doing done will would shall should can
    could may might must say says said saying tell tells told ask asks asked reply replies replied answer answers
    answered go goes went gone going come comes came coming get gets got getting make makes made take takes took
    taken give gives gave given let lets see sees saw seen look looks looked know knows knew known think thinks
    thought want wants wanted need needs needed like likes liked feel feels felt seem seems seemed try tries tried
    keep keeps kept put puts begin begins began start starts started find finds found use used mean means meant
    oh ah uh um hmm hey hi hello yes yeah no nope ok okay well wow please thanks thank sorry
    """
)

# Past-tense verbs glue themselves to nouns ("dog ran", "house stood") and draw nothing: irregular ones are listed,
# regular ones end in -ed (6+ letters, so "red", "bed", "shed" stay), except these adjectives.
_PAST_TENSE = _words(
    """
    ran sat stood slept fell flew ate drank held wore swam sang heard caught brought bought fought threw grew drew
    rode woke spoke wrote hid led met lay laid sent spent built won lost dug hung stuck struck shook broke chose
    froze forgot became cried dried tried lied died sighed smiled nodded hugged grabbed stepped stopped
    """
)
_ED_ADJECTIVES = _words(
    """
    tired scared excited frightened worried surprised shocked striped spotted hooded armored armoured bearded
    crowded abandoned enchanted haunted twisted tangled wrinkled freckled curled sacred wicked rugged ragged beloved
    crooked jagged hundred kindred talented colored coloured wounded bored amazed annoyed confused embarrassed
    """
)

_LY_NOT_ADVERBS = _words("family fly jelly belly lily holly curly ugly lonely friendly silly italy july")

PLACE_WORDS = _words(
    """
    forest woods wood jungle beach sea ocean shore coast lake river pond stream waterfall island mountain hill
    lighthouse valley cliff cave desert field meadow garden park farm barn village town city street road alley
    square market shop store cafe restaurant tavern inn bar pub kitchen bedroom room hall hallway library classroom
    school castle palace tower dungeon temple church cathedral house home cottage cabin hut tent camp bridge harbor
    harbour port ship boat station train space spaceship planet moon sky cloud snow rain storm night sunset sunrise
    dawn dusk morning evening swamp marsh glacier volcano ruins graveyard cemetery office hospital museum theater
    theatre arena stadium playground zoo attic basement cellar balcony rooftop roof yard porch backyard lab
    laboratory
    """
)

APPEARANCE_WORDS = _words(
    """
    hair eyes eye face smile smiling grin grinning frown frowning tears crying laugh laughing blush blushing freckles
    beard moustache mustache glasses skin lips cheeks nose ears dress shirt hat cap hood cloak coat jacket scarf
    gown robe armor armour helmet crown necklace earrings makeup braid braids ponytail bangs curls curly expression
    happy sad angry scared afraid surprised shocked tired sleepy worried nervous shy proud excited calm serious
    wink winking pale tanned
    """
)

_AVATAR_TOKEN = re.compile(r"<[A-Za-z][\w.-]*:[^<>\s]*>")
_ANGLE = re.compile(r"<[^<>]*>")
# Clause breaks: sentence and list punctuation, brackets, the asterisks of *actions*, double quotes, dashes.
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]{}*\"“”„«»…—–/|\n\r\t]+|\s-+\s")
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def _is_content(word: str, drop: frozenset[str]) -> bool:
    if word in STOPWORDS or word in drop or "'" in word:  # an apostrophe left after 's: a contraction (don't)
        return False
    if len(word) < 2 and not word.isdigit():
        return False
    if word in _PAST_TENSE or (len(word) >= 6 and word.endswith("ed") and word not in _ED_ADJECTIVES):
        return False
    return not (len(word) > 4 and word.endswith("ly") and word not in _LY_NOT_ADVERBS)


def _split_run(run: list[str]) -> list[list[str]]:
    """Cut a run of content words into phrases of at most three, from the end: "big red wooden house" ->
    "big", "red wooden house" (the noun and its nearest adjectives stay together)."""
    chunks: list[list[str]] = []
    while run:
        cut = max(0, len(run) - MAX_PHRASE_WORDS)
        chunks.append(run[cut:])
        run = run[:cut]
    return chunks[::-1]


def _phrases(text: str, drop: frozenset[str]) -> list[list[str]]:
    """Every candidate phrase of `text` in reading order, as word lists (not deduplicated)."""
    text = _ANGLE.sub(" ", text.replace("’", "'").replace("‘", "'")).lower()
    phrases: list[list[str]] = []
    for clause in _CLAUSE_BREAK.split(text):
        run: list[str] = []
        for raw in _WORD.findall(clause):
            word = raw[:-2] if raw.endswith("'s") else raw  # possessive: "lucy's hat" -> "lucy hat"
            if _is_content(word, drop):
                run.append(word)
            else:
                phrases.extend(_split_run(run))
                run = []
        phrases.extend(_split_run(run))
    return phrases


def _select(phrases: Iterable[list[str]], limit: int) -> list[str]:
    """Deduplicate keeping order (a lone word already inside an earlier phrase is redundant) and keep `limit`."""
    out: list[str] = []
    seen_words: set[str] = set()
    for words in phrases:
        phrase = " ".join(words)
        if phrase in out or (len(words) == 1 and words[0] in seen_words):
            continue
        out.append(phrase)
        seen_words.update(words)
        if len(out) >= limit:
            break
    return out


def _drop_set(drop: Iterable[str]) -> frozenset[str]:
    return frozenset(w for item in drop for w in _WORD.findall(item.lower().replace("_", " ")))


def keywords(text: str, *, limit: int = 12, drop: Iterable[str] = ()) -> list[str]:
    """The salient phrases of `text`, lower-case, in reading order, at most `limit`; words in `drop` are skipped."""
    return _select(_phrases(text, _drop_set(drop)), limit)


def keyword_prompt(text: str, *, limit: int = 12, drop: Iterable[str] = ()) -> str:
    """`keywords` joined into a comma-separated prompt."""
    return ", ".join(keywords(text, limit=limit, drop=drop))


def _has_word(words: list[str], vocabulary: frozenset[str]) -> bool:
    # A trailing "s" is a plural often enough ("mountains", "woods" is listed itself) to be worth one lookup.
    return any(w in vocabulary or (w.endswith("s") and w[:-1] in vocabulary) for w in words)


def place_keywords(text: str, *, limit: int = 6) -> list[str]:
    """Only the phrases that name a place, a landscape, weather or time of day ("dark forest", "night")."""
    return _select((p for p in _phrases(text, frozenset()) if _has_word(p, PLACE_WORDS)), limit)


def appearance_keywords(text: str, *, limit: int = 8, drop: Iterable[str] = ()) -> list[str]:
    """Only the phrases about looks: hair, eyes, clothes, expression ("long red hair", "smiling")."""
    return _select((p for p in _phrases(text, _drop_set(drop)) if _has_word(p, APPEARANCE_WORDS)), limit)


def merge_keywords(*groups: Iterable[str], limit: int = 12) -> list[str]:
    """Concatenate keyword lists, deduplicated as `keywords` does, at most `limit`."""
    return _select((k.split() for group in groups for k in group), limit)


# processReply-like cleanup of LLM output (SillyTavern): tokens such as <be-face:lucy:0.4> and <lora:x:0.8> are
# lifted out first so that nothing below can touch their dots, colons or weights.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_QUOTES = re.compile(r"[\"“”„«»`]")
_SENTENCE_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_DISALLOWED = re.compile(r"[^\w\s,:(){}<>\[\]\-'.\ue000\ue001]")


def clean_prompt(text: str) -> str:
    """Tidy an LLM-written prompt into one comma list: no quotes, newlines and sentence dots become commas, odd
    characters dropped; avatar/LoRA tokens and decimal numbers (0.4) stay intact."""
    tokens: list[str] = []

    def lift(match: re.Match[str]) -> str:
        tokens.append(match.group(0))
        return f"\ue000{len(tokens) - 1}\ue001"

    text = _AVATAR_TOKEN.sub(lift, text)
    text = _QUOTES.sub("", text).replace("’", "'").replace("‘", "'")
    text = re.sub(r"\s*[\r\n]+\s*", ", ", text)
    text = _SENTENCE_DOT.sub(",", text)
    text = _DISALLOWED.sub("", text)
    parts = (" ".join(part.split()).strip(" '") for part in text.split(","))
    joined = ", ".join(part for part in parts if part)
    return _PLACEHOLDER.sub(lambda m: tokens[int(m.group(1))], joined)
