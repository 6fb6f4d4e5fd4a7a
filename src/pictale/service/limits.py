"""The limits of one generation, checked before it is queued: every dialect and the CLI get the same messages."""

from __future__ import annotations

from dataclasses import replace

from pictale.core.config import Settings
from pictale.core.errors import InvalidRequest
from pictale.core.limits import (
    GUIDANCE_MAX,
    MIN_SIZE,
    T5_TOKENS_MAX,
    check_dimension,
    check_finite,
    check_seed,
    check_text,
)
from pictale.core.types import GenerationSpec, HiresSpec


def check_spec(s: Settings, spec: GenerationSpec) -> GenerationSpec:
    """Every limit of a generation checked before it is queued (core.limits: one rule per field for every
    dialect and the CLI); the size floored to multiples of 8 as A1111 does."""
    check_seed(spec.seed, "seed")
    check_seed(spec.subseed, "subseed")
    for name in ("cfg_scale", "subseed_strength", "denoising_strength"):
        check_finite(getattr(spec, name), name)
    _check_guidance(spec)
    check_dimension(spec.width, "width", s.max_width, "--max-width")
    check_dimension(spec.height, "height", s.max_height, "--max-height")
    width, height = spec.width // 8 * 8, spec.height // 8 * 8
    if not 1 <= spec.steps <= s.max_steps:
        raise InvalidRequest(f"steps must be from 1 to {s.max_steps} (got {_short(spec.steps)})", param="steps")
    for name in ("batch_size", "n_iter"):
        value = getattr(spec, name)
        if not 1 <= value <= s.max_batch_images:
            raise InvalidRequest(f"{name} must be from 1 to {s.max_batch_images} (got {_short(value)})", param=name)
    if spec.total_images > s.max_batch_images:
        raise InvalidRequest(
            f"batch_size x n_iter = {spec.total_images} images is above the limit of {s.max_batch_images}",
            param="batch_size",
        )
    if not 0.0 <= spec.subseed_strength <= 1.0:
        raise InvalidRequest("subseed_strength must be between 0 and 1", param="subseed_strength")
    _check_prompts(s, spec)
    if spec.hires is not None:
        _check_hires(s, spec.hires, width, height)
    if not 0.0 <= spec.denoising_strength <= 1.0:
        raise InvalidRequest("denoising_strength must be between 0 and 1", param="denoising_strength")
    if not 1 <= spec.clip_skip <= 12:
        raise InvalidRequest(
            f"clip_skip (A1111: CLIP_stop_at_last_layers) must be from 1 to 12 (got {_short(spec.clip_skip)})",
            param="CLIP_stop_at_last_layers",
        )
    if not 0 <= spec.mask_blur <= 64:
        raise InvalidRequest(f"mask_blur must be from 0 to 64 (got {_short(spec.mask_blur)})", param="mask_blur")
    if not 0 <= spec.inpaint_full_res_padding <= max(s.max_width, s.max_height):
        raise InvalidRequest(
            f"inpaint_full_res_padding must be from 0 to {max(s.max_width, s.max_height)} "
            f"(got {_short(spec.inpaint_full_res_padding)})",
            param="inpaint_full_res_padding",
        )
    return replace(spec, width=width, height=height)


def _check_guidance(spec: GenerationSpec) -> None:
    """FLUX.1's distilled guidance (None: the model's profile) and a job's T5 length, when given."""
    value = spec.distilled_cfg_scale
    if value is not None:
        check_finite(value, "distilled_cfg_scale")
        if not 0.0 <= value <= GUIDANCE_MAX:
            raise InvalidRequest(
                f"distilled_cfg_scale must be from 0 to {GUIDANCE_MAX:g} (got {value:g})", param="distilled_cfg_scale"
            )
    if spec.t5_tokens is not None and not 1 <= spec.t5_tokens <= T5_TOKENS_MAX:
        raise InvalidRequest(f"t5_tokens must be from 1 to {T5_TOKENS_MAX} (got {_short(spec.t5_tokens)})")


def _check_prompts(s: Settings, spec: GenerationSpec) -> None:
    limit = s.max_prompt_chars
    for field, texts in (
        ("prompt", [spec.prompt, *spec.extra.get("prompts", ())]),
        ("negative_prompt", [spec.negative_prompt, *spec.extra.get("negative_prompts", ())]),
    ):
        for text in texts:
            check_text(text, field, limit)
    if spec.hires is not None:
        check_text(spec.hires.prompt, "hr_prompt", limit)
        check_text(spec.hires.negative_prompt, "hr_negative_prompt", limit)


def _check_hires(s: Settings, hires: HiresSpec, width: int, height: int) -> None:
    check_finite(hires.scale, "hr_scale")
    check_finite(hires.denoising_strength, "hr_denoising_strength")
    if hires.scale <= 0 and not (hires.resize_x or hires.resize_y):
        raise InvalidRequest(f"hr_scale must be above 0 (got {hires.scale})", param="hr_scale")
    if hires.resize_x < 0 or hires.resize_y < 0:
        raise InvalidRequest("hr_resize_x and hr_resize_y must not be negative", param="hr_resize_x")
    if max(hires.resize_x, hires.resize_y) > 8 * max(s.max_width, s.max_height) or hires.scale > 64:
        raise InvalidRequest(
            f"{'hr_resize_x/hr_resize_y' if hires.resize_x or hires.resize_y else 'hr_scale'}: hires size is above "
            f"the maximum of {s.max_width}x{s.max_height}",
            param="hr_resize_x" if hires.resize_x or hires.resize_y else "hr_scale",
        )
    hw, hh = hires.target_size(width, height)
    if hw > s.max_width or hh > s.max_height or hw < MIN_SIZE or hh < MIN_SIZE:
        raise InvalidRequest(
            f"{'hr_resize_x/hr_resize_y' if hires.resize_x or hires.resize_y else 'hr_scale'}: hires size "
            f"{hw}x{hh} is outside {MIN_SIZE}x{MIN_SIZE}..{s.max_width}x{s.max_height}",
            param="hr_resize_x" if hires.resize_x or hires.resize_y else "hr_scale",
        )
    if not 0 <= hires.second_pass_steps <= s.max_steps:
        raise InvalidRequest(
            f"hr_second_pass_steps must be from 0 to {s.max_steps} (got {_short(hires.second_pass_steps)})",
            param="hr_second_pass_steps",
        )
    if not 0.0 <= hires.denoising_strength <= 1.0:
        raise InvalidRequest("hr denoising_strength must be between 0 and 1", param="hr_denoising_strength")


def _short(value: int) -> str:
    """A number as the client sent it, cut when it is absurdly long (2**70 stays readable)."""
    text = str(value)
    return text if len(text) <= 12 else text[:12] + "..."
