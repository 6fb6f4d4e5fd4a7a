"""Characters for one caller: `<be-char:name>` expanded in a spec before the avatar compiler sees it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pictale.core.types import Character, GenerationSpec
from pictale.prompt.characters import Expansion, add_negatives, check_negative, expand, has_characters


class OwnerCharacters:
    """The `CharacterSource` the expansion asks: one owner's characters in the store."""

    def __init__(self, store: Any, owner: str) -> None:
        self.store = store
        self.owner = owner

    def get(self, name: str) -> Character | None:
        return self.store.get(self.owner, name)

    def names(self) -> list[str]:
        return self.store.names(self.owner)


def expand_characters(store: Any | None, owner: str, spec: GenerationSpec) -> GenerationSpec:
    """The spec with every prompt's characters expanded, their negatives added, the seed of a "fixed" one.

    Per image, the negative prompt gains the negatives of that image's characters. A request seed of -1
    becomes the seed of the first character (in prompt order) whose seed policy is "fixed". The infotext
    gains `Characters: sasha, tom`. A spec without character tokens comes back unchanged.
    """
    prompts = list(spec.extra.get("prompts") or [spec.prompt])
    negatives = list(spec.extra.get("negative_prompts") or [spec.negative_prompt])
    for negative in dict.fromkeys(negatives):
        check_negative(negative)
    hires = spec.hires
    if hires is not None:
        check_negative(hires.negative_prompt, param="hr_negative_prompt")
    hires_calls = hires is not None and has_characters(hires.prompt)
    if not hires_calls and not any(has_characters(p) for p in dict.fromkeys(prompts)):
        return spec

    source = OwnerCharacters(store, owner) if store is not None else None
    expanded = {p: expand(p, "", source) for p in dict.fromkeys(prompts)}
    count = max(len(prompts), len(negatives))  # 1 or the image count (the service checks the lengths)
    per_image = [expanded[prompts[i % len(prompts)]] for i in range(count)]
    new_negatives = [add_negatives(negatives[i % len(negatives)], e.characters) for i, e in enumerate(per_image)]
    used = [c for e in expanded.values() for c in e.characters]

    if hires is not None and (hires_calls or hires.negative_prompt):
        main = per_image[0]
        hp = expand(hires.prompt, "", source, param="hr_prompt") if hires_calls else Expansion(hires.prompt, "")
        cast = hp.characters if hires_calls else main.characters  # an empty hr_prompt reuses the prompt
        used += hp.characters
        negative = add_negatives(hires.negative_prompt, cast) if hires.negative_prompt else ""
        if hires_calls and not hires.negative_prompt and len(set(new_negatives)) == 1:
            # the hires pass would reuse the prompt's negative: give it this pass's characters' negatives too
            negative = add_negatives(new_negatives[0], cast)
            negative = "" if negative == new_negatives[0] else negative
        hires = replace(hires, prompt=hp.prompt, negative_prompt=negative)

    names = list(dict.fromkeys(c.name for c in used))
    extra = dict(spec.extra)
    if count > 1:
        extra["prompts"] = [e.prompt for e in per_image]
        extra["negative_prompts"] = new_negatives
    if names:
        extra["infotext_extra"] = {**(extra.get("infotext_extra") or {}), "Characters": ", ".join(names)}
    seed = spec.seed
    if seed is None or seed < 0:
        fixed = next((c for c in used if c.seed_policy == "fixed" and c.seed is not None), None)
        seed = fixed.seed if fixed is not None else seed
    return replace(
        spec,
        prompt=per_image[0].prompt,
        negative_prompt=new_negatives[0],
        seed=seed,
        hires=hires,
        extra=extra,
    )
