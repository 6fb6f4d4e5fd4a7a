"""OpenAI images wire shapes (`/v1/images/...`): tolerant, strings accepted everywhere (multipart sends only
strings), translated with `to_spec()`. The choices made where OpenAI's API does not fit diffusion models are
listed in `api/openai/__init__.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pictale.api.openai.masks import openai_mask, transparency_mask
from pictale.core.config import Settings
from pictale.core.errors import InvalidImage, InvalidRequest
from pictale.core.images import decode_image
from pictale.core.limits import MIN_SIZE, check_size_text
from pictale.core.samplers import check_sampler_name, check_schedule_name, resolve_sampler
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.prompt.grammar import scan, splice
from pictale.service.profiles import Profile, default_profile

EDIT_STRENGTH = 0.75
"""Denoising strength of an edit without a mask: a variation that keeps the picture's layout."""
MASKED_EDIT_STRENGTH = 1.0
"""With a mask, OpenAI replaces the transparent area: start it from noise (the rest is kept exactly)."""
COMPAT_SIZE = (1024, 1024)
"""Block Entropy's default size."""
NATIVE_SIZE = {"sd15": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024}
MAX_PARTIAL_IMAGES = 3
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
QUALITIES = frozenset({"low", "medium", "high", "auto"})
BACKGROUNDS = frozenset({"transparent", "opaque", "auto"})


class OpenAIParamError(InvalidRequest):
    """An invalid parameter, with OpenAI's error code (`invalid_value`, `integer_above_max_value`, ...)."""

    def __init__(self, message: str, *, param: str, code: str = "invalid_value") -> None:
        super().__init__(message, param=param)
        self.code = code


def missing(param: str) -> OpenAIParamError:
    return OpenAIParamError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


@dataclass(frozen=True)
class Context:
    """What a translation needs from the running server."""

    settings: Settings
    models: Sequence[ModelEntry]
    current: ModelEntry | None
    clip_skip: int = 1
    profile_for: Callable[[ModelEntry], Profile] | None = None
    """The model's defaults (few-step models: their sampler, steps, CFG, size); None: the standard ones."""
    refuse_unloadable: Callable[[str], None] | None = None
    """Raises the 4xx of a name that is a checkpoint file in the models dir which cannot load."""


@dataclass(frozen=True)
class Delivery:
    """How the images go back: not part of the generation itself."""

    response_format: str
    """"url" or "b64_json" (streams always carry base64)."""
    output_format: str | None
    """"png", "jpeg" or "webp"; None: as the server encodes (A1111 option samples_format, PNG by default)."""
    output_compression: int | None
    stream: bool
    partial_images: int
    quality: str
    background: str


class ImagesRequest(BaseModel):
    """`POST /v1/images/generations`; the fields the edits form shares. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True, allow_inf_nan=False)

    prompt: str | None = None
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    stream: bool | None = None
    partial_images: int | None = None
    # accepted and ignored (Block Entropy's `user` carried avatar weights; pictale reads prompt tokens)
    quality: Any = None
    style: Any = None
    user: Any = None
    background: Any = None
    # pictale extensions
    negative_prompt: str | None = Field(None, validation_alias=AliasChoices("negative_prompt", "negprompt"))
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = Field(
        None, validation_alias=AliasChoices("guidance", "guidance_scale", "cfg_scale", "cfg")
    )
    sampler: str | None = Field(None, validation_alias=AliasChoices("sampler", "sampler_name"))
    scheduler: str | None = None
    clip_skip: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        """Forms send "" for a field left empty: that means the default, as a missing field does."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip() and k != "prompt")}
        return data

    @classmethod
    def parse(cls, fields: dict[str, Any]):
        """Validate a dict (e.g. multipart fields) with the same 400 errors FastAPI gives a JSON body."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None

    # -- translation -------------------------------------------------------------------------------
    def compat(self, ctx: Context) -> bool:
        """Block Entropy mode: `--compat blockentropy`, or a model id starting with "be-"."""
        mode = (ctx.settings.compat or "").strip().lower()
        return mode == "blockentropy" or (self.model or "").strip().lower().startswith("be-")

    def checkpoint(self, ctx: Context) -> ModelEntry | None:
        """The checkpoint `model` names, or None (OpenAI names like "dall-e-3" use the loaded model); a checkpoint
        file that cannot load is a 400 naming it."""
        found = find_checkpoint(ctx.models, self.model or "")
        if found is None and self.model and ctx.refuse_unloadable is not None:
            ctx.refuse_unloadable(self.model)
        return found

    def profile(self, ctx: Context) -> Profile:
        """Defaults for what the client left unset: DPM++ 2M, 20 steps, CFG 7, or a few-step model's own."""
        entry = self.checkpoint(ctx) or ctx.current
        if entry is None or ctx.profile_for is None:
            return default_profile()
        return ctx.profile_for(entry)

    def checked_prompt(self) -> str:
        if self.prompt is None:
            raise missing("prompt")
        if not self.prompt.strip():
            raise OpenAIParamError(
                "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string "
                "instead.",
                param="prompt",
                code="empty_string",
            )
        return self.prompt

    def images_per_input(self, ctx: Context, inputs: int = 1) -> int:
        """`n` checked against the limit; Block Entropy mode makes one image (n is its seed)."""
        if self.compat(ctx):
            return 1
        n = 1 if self.n is None else self.n
        limit = ctx.settings.max_batch_images
        if n < 1:
            raise OpenAIParamError(
                f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.",
                param="n",
                code="integer_below_min_value",
            )
        if n * inputs > limit:
            what = f"{n} images per input image x {inputs} images = {n * inputs}" if inputs > 1 else str(n)
            raise OpenAIParamError(
                f"Invalid 'n': integer above maximum value. Expected a value <= {limit // inputs}, but got {what} "
                f"instead (this server makes at most {limit} images per request).",
                param="n",
                code="integer_above_max_value",
            )
        return n

    def common(self, ctx: Context) -> dict[str, Any]:
        """Spec fields shared by generations and edits."""
        prompt = self.checked_prompt()
        seed = -1 if self.seed is None else self.seed
        if self.compat(ctx) and self.seed is None and self.n is not None:
            seed = self.n  # Block Entropy: "We repurpose n as the seed"
        profile = self.profile(ctx)
        # a sampler named without a schedule gets its own default schedule, not the profile's
        schedule = self.scheduler if self.scheduler is not None or self.sampler else profile.scheduler
        if self.sampler:
            check_sampler_name(self.sampler, "sampler")
        if self.scheduler:
            check_schedule_name(self.scheduler, "scheduler")
        if self.clip_skip is not None and not 1 <= self.clip_skip <= 12:
            raise OpenAIParamError(
                f"Invalid 'clip_skip': expected a value from 1 to 12, but got {self.clip_skip}.", param="clip_skip"
            )
        sampler, schedule = resolve_sampler(self.sampler or profile.sampler, schedule)
        entry = self.checkpoint(ctx)
        return {
            "prompt": prompt,
            "negative_prompt": self.negative_prompt or "",
            "seed": seed,
            "steps": profile.steps if self.steps is None else self.steps,
            "cfg_scale": profile.cfg_scale if self.guidance is None else self.guidance,
            "distilled_cfg_scale": profile.distilled_cfg_scale,  # FLUX.1 dev/Kontext: the model's own
            "sampler": sampler,
            "scheduler": schedule,
            "clip_skip": self.clip_skip if self.clip_skip is not None else ctx.clip_skip,
            "model": entry.title if entry is not None else None,
        }

    def requested_size(self, ctx: Context) -> tuple[int, int] | None:
        """`size` as (width, height) floored to multiples of 8; None for "auto" or absent."""
        text = (self.size or "").strip().lower()
        if not text or text == "auto":
            return None
        s = ctx.settings
        try:
            size = check_size_text(text, max_width=s.max_width, max_height=s.max_height)
        except InvalidRequest as exc:
            raise OpenAIParamError(f"Invalid 'size': {exc.message.removeprefix('size ')}.", param="size") from None
        if size is None:
            shown = self.size if len(self.size or "") <= 40 else f"{self.size[:40]}..."
            raise OpenAIParamError(
                f"Invalid 'size': {shown!r}. Expected 'auto' or 'WIDTHxHEIGHT', e.g. '512x512' or '1024x1536'.",
                param="size",
            )
        return size

    def default_size(self, ctx: Context) -> tuple[int, int]:
        """Block Entropy's 1024x1024 in compat mode, else the model family's native square."""
        if self.compat(ctx) and self.size is None:
            w, h = COMPAT_SIZE
        else:
            profile = self.profile(ctx)
            w = h = profile.size or native_size(self.checkpoint(ctx) or ctx.current, profile.variant)
        return min(w, ctx.settings.max_width) // 8 * 8, min(h, ctx.settings.max_height) // 8 * 8

    def to_spec(self, ctx: Context) -> GenerationSpec:
        n = self.images_per_input(ctx)
        width, height = self.requested_size(ctx) or self.default_size(ctx)
        return GenerationSpec(**self.common(ctx), width=width, height=height, batch_size=n)

    def delivery(self, ctx: Context) -> Delivery:
        fmt = (self.response_format or "").strip().lower()
        if not fmt:
            # the GPT image models only ever answer base64 (Open WebUI omits response_format for them)
            fmt = "b64_json" if (self.model or "").strip().lower().startswith("gpt-image") else "url"
        if fmt not in ("url", "b64_json"):
            raise OpenAIParamError(
                f"Invalid value: {self.response_format!r}. Supported values are: 'url' and 'b64_json'.",
                param="response_format",
            )
        out = None
        if self.output_format is not None:
            out = OUTPUT_FORMATS.get(self.output_format.strip().lower())
            if out is None:
                raise OpenAIParamError(
                    f"Invalid value: {self.output_format!r}. Supported values are: 'png', 'jpeg' and 'webp'.",
                    param="output_format",
                )
        if self.output_compression is not None and not 0 <= self.output_compression <= 100:
            raise OpenAIParamError(
                f"Invalid 'output_compression': expected a value from 0 to 100, but got {self.output_compression}.",
                param="output_compression",
            )
        partial = 0 if self.partial_images is None else self.partial_images
        if not 0 <= partial <= MAX_PARTIAL_IMAGES:
            raise OpenAIParamError(
                f"Invalid 'partial_images': expected a value from 0 to {MAX_PARTIAL_IMAGES}, but got {partial}.",
                param="partial_images",
            )
        quality = str(self.quality or "auto").lower()
        background = str(self.background or "auto").lower()
        return Delivery(
            response_format=fmt,
            output_format=out,
            output_compression=self.output_compression,
            stream=bool(self.stream),
            partial_images=partial,
            quality=quality if quality in QUALITIES else "auto",
            background=background if background in BACKGROUNDS else "auto",
        )


class EditRequest(ImagesRequest):
    """`POST /v1/images/edits` (multipart): the images and mask come as files beside these fields."""

    strength: float | None = Field(None, validation_alias=AliasChoices("strength", "denoising_strength"))
    mask_blur: int | None = None

    def to_spec(  # type: ignore[override]
        self, ctx: Context, images: Sequence[tuple[str, bytes | str]], mask: tuple[str, bytes | str] | None = None
    ) -> GenerationSpec:
        """`images` and `mask` are (field name, raw bytes or base64) pairs, in upload order."""
        common = self.common(ctx)
        if not images:
            raise missing("image")
        limit = ctx.settings.max_upload_images
        if len(images) > limit:
            raise OpenAIParamError(
                f"Invalid 'image': {len(images)} images sent, at most {limit} are accepted.", param="image"
            )
        n = self.images_per_input(ctx, len(images))
        max_pixels = ctx.settings.max_image_pixels
        decoded = [decode_image(data, field=field, max_pixels=max_pixels) for field, data in images]
        first = decoded[0]
        if mask is not None:
            field, data = mask
            edit_area = openai_mask(decode_image(data, field=field, max_pixels=max_pixels))
            if edit_area.size != first.size:
                raise InvalidImage(
                    f"Invalid 'mask': the mask is {edit_area.width}x{edit_area.height} but the image is "
                    f"{first.width}x{first.height}; they must have the same dimensions.",
                    param="mask",
                )
            if edit_area.getbbox() is None:
                raise InvalidImage(
                    "Invalid 'mask': it has no fully transparent pixels (alpha 0), so there is nothing to edit.",
                    param="mask",
                )
        else:
            edit_area = transparency_mask(first)
        width, height = self.requested_size(ctx) or self.edit_size(ctx, first)
        if self.strength is not None and not 0.0 <= self.strength <= 1.0:
            raise OpenAIParamError(
                f"Invalid 'strength': expected a value from 0 to 1, but got {self.strength}.", param="strength"
            )
        if self.mask_blur is not None and not 0 <= self.mask_blur <= 64:
            raise OpenAIParamError(
                f"Invalid 'mask_blur': expected a value from 0 to 64, but got {self.mask_blur}.", param="mask_blur"
            )
        default_strength = MASKED_EDIT_STRENGTH if edit_area is not None else EDIT_STRENGTH
        return GenerationSpec(
            **common,
            width=width,
            height=height,
            # image i of the output is an edit of input image i mod k: one batch holds each input once
            batch_size=len(decoded),
            n_iter=n,
            init_images=tuple(decoded),
            mask=edit_area,
            denoising_strength=default_strength if self.strength is None else self.strength,
            resize_mode=1,  # crop and resize: a different `size` never distorts the picture
            mask_blur=self.mask_blur or 0,
            inpainting_fill=1,  # "original": a strength below 1 keeps what is there
            inpaint_full_res=False,
        )

    def edit_size(self, ctx: Context, image: Image.Image) -> tuple[int, int]:
        """No size: the image's own (scaled down to fit the maximum), or 1024x1024 in Block Entropy mode."""
        if self.compat(ctx) and self.size is None:
            return self.default_size(ctx)
        s = ctx.settings
        # the image's own size, brought within the limits (a small image is scaled up to the minimum side)
        scale = max(1.0, MIN_SIZE / min(image.width, image.height))
        scale = min(scale, s.max_width / image.width, s.max_height / image.height)
        w, h = int(image.width * scale) // 8 * 8, int(image.height * scale) // 8 * 8
        if w < MIN_SIZE or h < MIN_SIZE:
            raise InvalidImage(f"Invalid 'image': {image.width}x{image.height} is too small to edit.", param="image")
        return w, h


# -- helpers ---------------------------------------------------------------------------------------
def find_checkpoint(models: Sequence[ModelEntry], name: str) -> ModelEntry | None:
    """Match a title, model name or file name of a known checkpoint (never a path or hub lookup)."""
    wanted = name.strip()
    if not wanted:
        return None
    bare = wanted.split(" [", 1)[0]
    for entry in models:
        names = {entry.title, entry.model_name, entry.filename, Path(entry.filename).name, Path(entry.filename).stem}
        if wanted in names or bare in names:
            return entry
    return None


def native_size(entry: ModelEntry | None, flux_variant: str | None = None) -> int:
    if flux_variant is not None:  # a hub model's family is known once it is loaded; its profile knows it is Flux
        return NATIVE_SIZE["flux"]
    if entry is None:
        return 512
    if entry.family in NATIVE_SIZE:
        return NATIVE_SIZE[entry.family]
    return 1024 if "xl" in entry.model_name.lower() else 512


def one_spec_per_job(spec: GenerationSpec) -> list[GenerationSpec]:
    """Masked edits of several images run as one job per image: the service pastes every inpainted output
    over the first init image. Image j's job makes its n outputs with seeds seed + j*n ... (or random)."""
    if spec.mask is None or len(spec.init_images) < 2:
        return [spec]
    n = spec.n_iter
    return [
        replace(spec, init_images=(img,), batch_size=n, n_iter=1, seed=spec.seed + j * n if spec.seed >= 0 else -1)
        for j, img in enumerate(spec.init_images)
    ]


def interleave(per_job: Sequence[Sequence[bytes]]) -> list[bytes]:
    """Outputs of one job per image back in the documented order: output i is an edit of image i mod k."""
    if len(per_job) == 1:
        return list(per_job[0])
    return [images[m] for m in range(max(map(len, per_job))) for images in per_job if m < len(images)]


def revised_prompt(prompt: str) -> str | None:
    """The prompt without its avatar and LoRA tokens, when it had any: the words the model read."""
    tokens, _ = scan(prompt)
    if not tokens:
        return None
    return splice(prompt, [(t, "") for t in tokens]).strip()
