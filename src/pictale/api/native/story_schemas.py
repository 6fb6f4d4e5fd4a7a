"""Wire schemas of `/v1/story/imagine` and `/v1/books` (strict: an unknown field is a 422 naming it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pictale.api.native.job_schemas import JobRequest
from pictale.core.config import Settings
from pictale.core.errors import InvalidRequest
from pictale.core.limits import GUIDANCE_MAX, Seed, check_size_text
from pictale.core.types import GenerationSpec
from pictale.service.profiles import Profile

MAX_PAGES = 48
MAX_MESSAGE_CHARS = 100_000
"""One chat message given to imagine (the prompt written from it has its own limit)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class ChatMessage(BaseModel):
    """An OpenAI chat message; other fields of the chat format (name, tool_calls, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=32)
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        size = len(v) if isinstance(v, str) else len(str(v or ""))
        if size > MAX_MESSAGE_CHARS:
            raise ValueError(f"content is {size} characters, more than the limit of {MAX_MESSAGE_CHARS}")
        return v


class _Picture(_Strict):
    """Generation settings shared by imagine and books."""

    negative_prompt: str = Field("", max_length=10000)
    width: int | None = None
    height: int | None = None
    size: str | None = None
    """"WIDTHxHEIGHT" (as the OpenAI API), instead of width/height."""
    steps: int | None = Field(None, ge=1)
    cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    distilled_cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    """FLUX.1 dev/Kontext only (as on the job API); unset: the model's."""
    sampler: str | None = None
    scheduler: str | None = None
    """Unset fields get the model's defaults, as on the job API (few-step models: their sampler and steps)."""
    seed: Seed = -1
    model: str | None = None

    def base_spec(self, profile: Profile | None, family: str | None, *, limits: Settings) -> GenerationSpec:
        """Size, steps, CFG, sampler, seed and model resolved like a `/v1/jobs` request (no prompt yet)."""
        width, height = self.width, self.height
        if self.size is not None:
            size = check_size_text(self.size, max_width=limits.max_width, max_height=limits.max_height)
            if size is None:
                raise InvalidRequest(f"size {self.size!r} must look like WIDTHxHEIGHT, e.g. 512x768", param="size")
            width, height = size
        job = JobRequest.model_construct(
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            distilled_cfg_scale=self.distilled_cfg_scale,
            width=width,
            height=height,
            sampler=self.sampler,
            scheduler=self.scheduler,
            model=self.model,
        )
        return job.to_spec(profile, family=family)


class ImagineRequest(_Picture):
    """SillyTavern's `/imagine` on the server: a picture for the chat so far."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    character: str | None = Field(None, max_length=64)
    mode: str = "last"
    """last | raw_last | face | background (see story.planner.imagine_prompt)."""
    context: int = Field(6, ge=1, le=50)
    """How many messages before the last one the prompt writer reads."""
    response_format: Literal["b64_json", "url"] = "b64_json"
    session: str | None = Field(None, min_length=1, max_length=200)
    """A newer imagine of the same key and session cancels this one (a chat that moved on)."""


class BookRequest(_Picture):
    """A picture book: a story (or keywords for the LLM to write one), characters, pages, candidates per page."""

    title: str | None = Field(None, max_length=200)
    story: str | None = Field(None, max_length=100_000)
    keywords: str | None = Field(None, max_length=2000)
    """Instead of `story`: the LLM writes the story first (needs --llm-base-url)."""
    reading_level: str = Field("age 4-6", max_length=100)
    length: int = Field(6, ge=1, le=MAX_PAGES)
    """Pages of a story the LLM writes (when `pages` is not given)."""
    pages: int | None = Field(None, ge=1, le=MAX_PAGES)
    """None: one page per paragraph (long ones split at sentences)."""
    characters: list[str] = Field(default_factory=list, max_length=8)
    style: str = Field("", max_length=2000)
    """Prefix of every page's prompt, e.g. "children's book illustration, watercolor"."""
    candidates: int = Field(2, ge=1, le=8)
    """Images generated and scored per page; the best one is chosen."""
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    """Keep generating (N at a time) until the best total score reaches it, up to `max_candidates`."""
    max_candidates: int | None = Field(None, ge=1, le=32)
    clip_t_weight: float = Field(1.0, ge=0.0)
    """Weight of the text-image score (CLIP-T) in the total."""
    clip_i_weight: float = Field(1.0, ge=0.0)
    """Weight of the consistency score (CLIP-I: characters' reference images and earlier chosen pages)."""
    character_references: bool = True
    """On a FLUX.1 Kontext model, a page that shows a character is a Kontext edit of the character's reference
    image (its face avatar's first image, else the page where it first appeared); other models ignore it."""
    reference_strength: float = Field(1.0, gt=0.0, le=1.0)
    """Denoising strength of those edits: 1.0 draws a new picture steered by the reference; lower keeps more of
    the reference's own picture."""

    @model_validator(mode="after")
    def _one_source(self) -> BookRequest:
        has_story, has_keywords = bool((self.story or "").strip()), bool((self.keywords or "").strip())
        # InvalidRequest (not ValueError) passes through pydantic: the 422 names the field it is about.
        if self.story is not None and not has_story and not has_keywords:
            raise InvalidRequest("story is empty: give the story's text (or keywords for the LLM)", param="story")
        if has_story == has_keywords:
            raise InvalidRequest(
                "give either story (the text) or keywords (the LLM writes the story), not both", param="story"
            )
        if self.clip_t_weight + self.clip_i_weight <= 0:
            raise InvalidRequest("clip_t_weight and clip_i_weight must not both be 0", param="clip_t_weight")
        if self.max_candidates is not None and self.max_candidates < self.candidates:
            raise InvalidRequest(
                f"max_candidates must be at least candidates ({self.candidates})", param="max_candidates"
            )
        return self

    def to_request(self, profile: Profile | None, family: str | None, *, limits: Settings) -> dict[str, Any]:
        """The stored request of the book (what a resumed run reads), generation settings resolved."""
        spec = self.base_spec(profile, family, limits=limits)
        out = self.model_dump(exclude={"size"})
        out.update(
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            cfg_scale=spec.cfg_scale,
            distilled_cfg_scale=spec.distilled_cfg_scale,
            sampler=spec.sampler,
            scheduler=spec.scheduler,
            max_candidates=self.max_candidates or self.candidates,
        )
        return out


class RegenerateRequest(_Strict):
    seed: Seed | None = None
    """The page's new base seed (-1 or none: a random one)."""
    prompt: str | None = Field(None, max_length=10000)
    """An edited prompt for the page (may use <be-char:...> and avatar tokens)."""


class ChooseRequest(_Strict):
    candidate: int
    """The index of the page's candidate to show (checked against the page's candidates: 422 naming the range)."""
