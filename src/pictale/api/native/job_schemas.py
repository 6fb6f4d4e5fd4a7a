"""`POST /v1/jobs`: pictale's own generation schema, translated with `to_spec()`.

Unlike the A1111 and OpenAI dialects (tolerant, as their clients expect), pictale's own schema is strict: an
unknown field is a 422 naming it, so a typo ("step", "cfg") never silently falls back to a default. Unknown
sampler or schedule names are 422 too (A1111 quietly runs DPM++ 2M instead).

Defaults: what the model's profile says (`service.profiles`): DPM++ 2M (Karras), 20 steps, CFG 7 for standard
models, the few-step settings for LCM / Turbo / Lightning / Hyper-SD models, and FLUX.1's own (Euler, CFG 1,
schnell 4 steps, dev and Kontext 28 with distilled guidance). Size: 512x512, 1024x1024 on SDXL, SD3 and FLUX.1
(floored to multiples of 16 there), or the profile's size (SDXL Turbo: 512).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pictale.api.a1111.schemas import HIRES_UPSCALERS
from pictale.core.errors import InvalidRequest
from pictale.core.images import decode_image, decode_images
from pictale.core.limits import GUIDANCE_MAX, Seed
from pictale.core.samplers import (
    AUTOMATIC,
    SCHEDULERS_API,
    check_sampler_name,
    check_schedule_name,
    default_schedule,
    resolve_sampler,
    schedule_suffix,
    supported_schedules,
)
from pictale.core.types import GenerationSpec, HiresSpec
from pictale.service.profiles import Profile, apply_profile, default_profile, default_size

_PROFILED = ("sampler", "scheduler", "steps", "cfg_scale", "distilled_cfg_scale", "width", "height")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class HiresRequest(_Strict):
    """Hires fix: a second img2img pass at a larger size (A1111's `enable_hr` + `hr_*` fields)."""

    scale: float = Field(2.0, gt=0, le=8)
    upscaler: str = "Latent"
    second_pass_steps: int = Field(0, ge=0)
    """0: as many steps as the first pass."""
    resize_x: int = Field(0, ge=0)
    resize_y: int = Field(0, ge=0)
    denoising_strength: float = Field(0.7, ge=0.0, le=1.0)
    sampler: str | None = None
    scheduler: str | None = None
    prompt: str = ""
    negative_prompt: str = ""

    @field_validator("upscaler")
    @classmethod
    def _known_upscaler(cls, v: str) -> str:
        if v not in HIRES_UPSCALERS:
            raise ValueError(f"upscaler {v!r} is not available; use one of {sorted(HIRES_UPSCALERS)}")
        return v


class JobRequest(_Strict):
    """A generation in pictale's own schema, plus how to deliver it. Every field is optional."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: Seed = -1
    """-1: random."""
    subseed: Seed = -1
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    steps: int | None = Field(None, ge=1)
    cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    """Above 1: real CFG with the negative prompt (on FLUX.1 too, at twice the cost; its profile says 1)."""
    distilled_cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    """FLUX.1 dev/Kontext: the distilled guidance (Forge's "Distilled CFG Scale"); unset: the model's (3.5,
    Kontext 2.5). Other models ignore it."""
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    """An A1111 sampler name; a schedule may end it ("DPM++ 2M Karras")."""
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    clip_skip: int | None = Field(None, ge=1, le=12)
    tiling: bool = False
    model: str | None = None
    """A checkpoint title, name or hash for this job only; default: the configured one."""
    init_images: list[str] | None = None
    """base64 or data: URLs; any makes this img2img (inpaint with `mask`)."""
    mask: str | None = None
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    resize_mode: int = Field(0, ge=0, le=3)
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_fill: int = Field(1, ge=0, le=3)
    """0 fill, 1 original, 2 latent noise, 3 latent nothing."""
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(32, ge=0, le=256)
    inpainting_mask_invert: bool = False
    styles: list[str] = Field(default_factory=list)
    hires: HiresRequest | None = None
    # delivery
    session: str | None = Field(None, min_length=1, max_length=200)
    """Real-time use: a new job of the same key and session replaces (cancels) this one."""
    callback_url: str | None = Field(None, max_length=2000)
    """POSTed the final job object once when the job ends."""
    previews: bool = True
    """Step events carry a base64 PNG preview when the engine makes one."""
    response_format: Literal["url", "b64_json"] = "url"

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("callback_url must be an absolute http:// or https:// URL")
        return v.strip()

    @field_validator("sampler", "scheduler", "model", "session")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    def explicit(self) -> set[str]:
        """The profile-filled fields the client set (a schedule ending the sampler name sets `scheduler`)."""
        given = {name for name in _PROFILED if getattr(self, name) is not None}
        if self.sampler and schedule_suffix(self.sampler):
            given.add("scheduler")
        return given

    def to_spec(
        self,
        profile: Profile | None = None,
        *,
        family: str | None = None,
        options: dict[str, Any] | None = None,
        max_pixels: int = 4096 * 4096,
        max_images: int = 16,
    ) -> GenerationSpec:
        """The GenerationSpec; fields left unset come from `profile` (default: a standard model's)."""
        profile = profile or default_profile()
        check_sampler_name(self.sampler, "sampler")
        check_schedule_name(self.scheduler, "scheduler")
        explicit = self.explicit()
        side = default_size(profile, family)
        given = {name: getattr(self, name) for name in _PROFILED if getattr(self, name) is not None}
        # A schedule ending the sampler name counts as explicit; resolve_sampler reads it from the name.
        fields = apply_profile({"width": side, "height": side, "scheduler": None, **given}, profile, explicit)
        sampler, schedule = _resolve(fields["sampler"], fields["scheduler"], strict="scheduler" in explicit)
        clip_skip = self.clip_skip or int((options or {}).get("CLIP_stop_at_last_layers") or 1)
        images = decode_images(self.init_images or (), field="init_images", max_pixels=max_pixels, max_count=max_images)
        if self.mask and not images:
            raise InvalidRequest("mask: a mask needs init_images (inpainting edits a given image)", param="mask")
        mask = decode_image(self.mask, field="mask", max_pixels=max_pixels) if self.mask else None
        hires = self._hires(sampler, schedule)
        denoising = self.denoising_strength
        if hires is not None and not images:
            denoising = hires.denoising_strength  # txt2img: the only denoising is the hires pass (infotext)
        return GenerationSpec(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            subseed=self.subseed,
            subseed_strength=self.subseed_strength,
            steps=int(fields["steps"]),
            cfg_scale=float(fields["cfg_scale"]),
            distilled_cfg_scale=fields.get("distilled_cfg_scale"),
            width=int(fields["width"]),
            height=int(fields["height"]),
            sampler=sampler,
            scheduler=schedule,
            batch_size=self.batch_size,
            n_iter=self.n_iter,
            clip_skip=clip_skip,
            tiling=self.tiling,
            model=self.model,
            hires=hires,
            init_images=images,
            mask=mask,
            denoising_strength=denoising,
            resize_mode=self.resize_mode,
            mask_blur=self.mask_blur,
            inpainting_fill=self.inpainting_fill,
            inpaint_full_res=self.inpaint_full_res,
            inpaint_full_res_padding=self.inpaint_full_res_padding,
            inpainting_mask_invert=self.inpainting_mask_invert,
            styles=tuple(self.styles),
        )

    def _hires(self, sampler: str, schedule: str) -> HiresSpec | None:
        h = self.hires
        if h is None:
            return None
        check_sampler_name(h.sampler, "hires.sampler")
        check_schedule_name(h.scheduler, "hires.scheduler")
        hr_sampler = hr_schedule = None
        if h.sampler or h.scheduler:
            strict = bool(h.scheduler or (h.sampler and schedule_suffix(h.sampler)))
            hr_sampler, hr_schedule = _resolve(
                h.sampler or sampler, h.scheduler or schedule, strict=strict, param="hires.scheduler"
            )
        return HiresSpec(
            scale=h.scale,
            upscaler=h.upscaler,
            second_pass_steps=h.second_pass_steps,
            resize_x=h.resize_x,
            resize_y=h.resize_y,
            denoising_strength=h.denoising_strength,
            sampler=hr_sampler,
            scheduler=hr_schedule,
            prompt=h.prompt,
            negative_prompt=h.negative_prompt,
        )


def _canonical_schedule(key: str | None) -> str | None:
    lowered = (key or "").strip().lower()
    found = [
        s["name"]
        for s in SCHEDULERS_API
        if lowered in {k.lower() for k in (s["name"], s["label"], *(s["aliases"] or ()))}
    ]
    return found[0] if found else None


def _resolve(sampler: str, schedule: str | None, *, strict: bool, param: str = "scheduler") -> tuple[str, str]:
    """Canonical (sampler, schedule). A schedule the client asked for and the sampler cannot follow is a 422;
    one the profile suggested quietly becomes the sampler's own (the client picked another sampler)."""
    name, resolved = resolve_sampler(sampler, schedule)
    wanted = _canonical_schedule(schedule_suffix(sampler) or schedule)
    if strict and wanted not in (None, AUTOMATIC, default_schedule(name)) and wanted not in supported_schedules(name):
        raise InvalidRequest(
            f"{param}: schedule type {wanted!r} is not available for the {name} sampler; "
            f"it supports {[AUTOMATIC, *supported_schedules(name)]}",
            param=param,
        )
    return name, resolved
