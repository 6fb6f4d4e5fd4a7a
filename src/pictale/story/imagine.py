"""`/v1/story/imagine`: SillyTavern's `/imagine` done by the server: a picture of the chat so far.

The prompt writer (the LLM, or the keyword rules without one) reads the last message and a few before it;
the character comes in as `<be-char:NAME>` (its description and avatar tokens) for the modes that show it.
Sizes follow SillyTavern: `face` is portrait (height = width x 1.5), `background` landscape (width = height
x 1.8), both rounded to 64.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pictale.core.errors import InvalidRequest
from pictale.core.types import Character, GenerationSpec
from pictale.story.planner import ScenePrompt, imagine_prompt


@dataclass(frozen=True)
class ImaginePlan:
    spec: GenerationSpec
    scene: ScenePrompt
    character: str | None


def shape(mode: str, width: int, height: int) -> tuple[int, int]:
    """SillyTavern's forced aspect ratios for `face` and `background`, rounded to multiples of 64."""
    if mode == "face":
        return width, _round64(width * 1.5)
    if mode == "background":
        return _round64(height * 1.8), height
    return width, height


def plan_imagine(
    messages: list[dict[str, Any]],
    mode: str,
    character: Character | None,
    llm: Any,
    *,
    context: int,
    base: GenerationSpec,
) -> ImaginePlan:
    """Write the prompt (LLM or keywords) and the spec of the picture; `base` holds size, steps, seed..."""
    scene = imagine_prompt(messages, mode, character, llm, context=context)
    if not scene.prompt.strip():
        raise InvalidRequest("no words to picture in the last message", param="messages")
    with_character = character is not None and scene.include_character
    prompt = f"<be-char:{character.name}>, {scene.prompt}" if with_character else scene.prompt
    width, height = shape(mode, base.width, base.height)
    extra = dict(base.extra)
    extra["infotext_extra"] = {"Imagine": mode, "Prompt source": scene.source}
    spec = replace(base, prompt=prompt, width=width, height=height, extra=extra)
    return ImaginePlan(spec, scene, character.name if with_character else None)


def _round64(x: float) -> int:
    return max(64, round(x / 64) * 64)
