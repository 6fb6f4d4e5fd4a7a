"""A1111 wire shapes: tolerant (unknown keys ignored, null means default), translated with `to_spec()`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from pictale.core.errors import InitImageMissing, InvalidRequest, ScriptNotFound
from pictale.core.images import decode_image, decode_images
from pictale.core.limits import GUIDANCE_MAX
from pictale.core.samplers import resolve_sampler
from pictale.core.types import GenerationSpec, HiresSpec

LATENT_UPSCALE_MODES = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
PIXEL_UPSCALERS = ("None", "Lanczos", "Nearest")
HIRES_UPSCALERS = frozenset(LATENT_UPSCALE_MODES + PIXEL_UPSCALERS)

# The alwayson scripts pictale accepts; A1111 answers 422 for a title it does not know.
KNOWN_ALWAYSON_SCRIPTS: frozenset[str] = frozenset()

DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": [],
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "sampler_index": "Euler",
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "distilled_cfg_scale": None,
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": 0.75,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "comments": None,
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
    "force_task_id": None,
}

TXT2IMG_DEFAULTS: dict[str, Any] = {
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "firstpass_image": None,
}

IMG2IMG_DEFAULTS: dict[str, Any] = {
    "init_images": None,
    "resize_mode": 0,
    "image_cfg_scale": None,
    "mask": None,
    "mask_blur_x": 4,
    "mask_blur_y": 4,
    "mask_blur": None,
    "mask_round": True,
    "inpainting_fill": 0,
    "inpaint_full_res": True,
    "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None,
    "latent_mask": None,
    "include_init_images": False,
}


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)


class GenerationRequest(_Tolerant):
    """Fields shared by txt2img and img2img. Every field is optional; null means the A1111 default."""

    prompt: str | list[str] | None = None
    negative_prompt: str | list[str] | None = None
    styles: list[str] | None = None
    seed: int | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    seed_resize_from_h: int | None = None
    seed_resize_from_w: int | None = None
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int | None = Field(None, ge=1)
    n_iter: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    cfg_scale: float | None = None
    distilled_cfg_scale: float | None = Field(None, ge=0.0, le=GUIDANCE_MAX)
    """Forge's: FLUX.1 dev/Kontext's distilled guidance; unset: the model's (3.5, Kontext 2.5); others ignore it."""
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = None
    do_not_save_grid: bool | None = None
    eta: float | None = None
    denoising_strength: float | None = Field(None, ge=0.0, le=1.0)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = None
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool | None = None
    save_images: bool | None = None
    alwayson_scripts: dict[str, Any] | None = None
    infotext: str | None = None
    force_task_id: str | None = None

    wire_defaults: ClassVar[dict[str, Any]] = {}

    def filled(self) -> dict[str, Any]:
        """The request with every default filled in: A1111's `parameters` echo."""
        data = {**DEFAULTS, **self.wire_defaults}
        for key, value in self.model_dump().items():
            if value is not None:
                data[key] = value
        return data

    def explicit(self) -> set[str]:
        """GenerationSpec fields the client set itself (a few-step model's defaults fill only the others)."""
        sent = {k for k in self.model_fields_set if getattr(self, k) is not None}
        out = {name for name in ("steps", "cfg_scale", "distilled_cfg_scale", "width", "height") if name in sent}
        if sent & {"sampler_name", "sampler_index"}:
            out |= {"sampler", "scheduler"}
        if "scheduler" in sent:
            out.add("scheduler")
        return out

    def check_scripts(self) -> None:
        if self.script_name:
            raise ScriptNotFound(f"Selectable script not found: {self.script_name}", param="script_name")
        for title in self.alwayson_scripts or {}:
            if title.lower() not in KNOWN_ALWAYSON_SCRIPTS:
                raise ScriptNotFound(f"always on script {title} not found", param="alwayson_scripts")

    def common_spec(self, options: dict[str, Any]) -> dict[str, Any]:
        d = self.filled()
        overrides = d["override_settings"] or {}
        sampler, schedule = resolve_sampler(d["sampler_name"] or d["sampler_index"], d["scheduler"])
        prompts = d["prompt"] if isinstance(d["prompt"], list) else [d["prompt"]]
        negatives = d["negative_prompt"] if isinstance(d["negative_prompt"], list) else [d["negative_prompt"]]
        clip_skip = overrides.get("CLIP_stop_at_last_layers", options.get("CLIP_stop_at_last_layers", 1))
        extra: dict[str, Any] = {}
        if len(prompts) > 1:
            extra["prompts"] = prompts
        if len(negatives) > 1:
            extra["negative_prompts"] = negatives
        return {
            "prompt": prompts[0] if prompts else "",
            "negative_prompt": negatives[0] if negatives else "",
            "seed": int(d["seed"]),
            "subseed": int(d["subseed"]),
            "subseed_strength": float(d["subseed_strength"]),
            "steps": int(d["steps"]),
            "cfg_scale": float(d["cfg_scale"]),
            "distilled_cfg_scale": d["distilled_cfg_scale"],
            "width": int(d["width"]),
            "height": int(d["height"]),
            "sampler": sampler,
            "scheduler": schedule,
            "batch_size": int(d["batch_size"]),
            "n_iter": int(d["n_iter"]),
            "clip_skip": _int(clip_skip, "CLIP_stop_at_last_layers"),
            "tiling": bool(d["tiling"]),
            "model": overrides.get("sd_model_checkpoint") or None,
            "styles": tuple(d["styles"] or ()),
            "denoising_strength": float(d["denoising_strength"]),
            "extra": extra,
        }


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool | None = None
    firstphase_width: int | None = None
    firstphase_height: int | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = None
    hr_resize_x: int | None = None
    hr_resize_y: int | None = None
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = None
    hr_negative_prompt: str | None = None
    firstpass_image: str | None = None

    wire_defaults: ClassVar[dict[str, Any]] = TXT2IMG_DEFAULTS

    def to_spec(self, options: dict[str, Any]) -> GenerationSpec:
        self.check_scripts()
        fields = self.common_spec(options)
        if self.enable_hr:
            fields["hires"] = self.hires_spec(fields["denoising_strength"])
        return GenerationSpec(**fields)

    def hires_spec(self, denoising: float) -> HiresSpec:
        upscaler = self.hr_upscaler or "Latent"
        if upscaler not in HIRES_UPSCALERS:
            raise InvalidRequest(
                f"hr_upscaler {upscaler!r} is not available; use one of {sorted(HIRES_UPSCALERS)}", param="hr_upscaler"
            )
        sampler, schedule = None, None
        if self.hr_sampler_name or self.hr_scheduler:
            sampler, schedule = resolve_sampler(
                self.hr_sampler_name or self.sampler_name or self.sampler_index, self.hr_scheduler or self.scheduler
            )
        return HiresSpec(
            scale=self.hr_scale if self.hr_scale is not None else 2.0,
            upscaler=upscaler,
            second_pass_steps=self.hr_second_pass_steps or 0,
            resize_x=self.hr_resize_x or 0,
            resize_y=self.hr_resize_y or 0,
            denoising_strength=denoising,
            sampler=sampler,
            scheduler=schedule,
            prompt=self.hr_prompt or "",
            negative_prompt=self.hr_negative_prompt or "",
        )


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] | None = None
    resize_mode: int | None = Field(None, ge=0, le=3)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = Field(None, ge=0, le=64)
    mask_blur_y: int | None = Field(None, ge=0, le=64)
    mask_blur: int | None = Field(None, ge=0, le=64)
    mask_round: bool | None = None
    inpainting_fill: int | None = Field(None, ge=0, le=3)
    inpaint_full_res: bool | int | None = None
    inpaint_full_res_padding: int | None = Field(None, ge=0)
    inpainting_mask_invert: int | bool | None = None
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = None

    wire_defaults: ClassVar[dict[str, Any]] = IMG2IMG_DEFAULTS

    def filled(self) -> dict[str, Any]:
        data = super().filled()
        if not data.get("include_init_images"):
            data["init_images"] = None
            data["mask"] = None
        return data

    def to_spec(self, options: dict[str, Any], *, max_pixels: int, max_images: int = 16) -> GenerationSpec:
        self.check_scripts()
        if not self.init_images:
            raise InitImageMissing("Init image not found", param="init_images")
        images = decode_images(self.init_images, field="init_images", max_pixels=max_pixels, max_count=max_images)
        mask = decode_image(self.mask, field="mask", max_pixels=max_pixels) if self.mask else None
        blur = self.mask_blur if self.mask_blur is not None else max(self.mask_blur_x or 4, self.mask_blur_y or 4)
        return GenerationSpec(
            **self.common_spec(options),
            init_images=images,
            mask=mask,
            resize_mode=self.resize_mode or 0,
            mask_blur=blur,
            inpainting_fill=self.inpainting_fill if self.inpainting_fill is not None else 0,
            inpaint_full_res=bool(self.inpaint_full_res) if self.inpaint_full_res is not None else True,
            inpaint_full_res_padding=self.inpaint_full_res_padding or 0,
            inpainting_mask_invert=bool(self.inpainting_mask_invert),
        )


class OptionsUpdate(_Tolerant):
    model_config = ConfigDict(extra="allow")


class PngInfoRequest(_Tolerant):
    image: str = ""


def _int(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(f"{field} must be an integer (got {value!r})", param=field) from None
