"""What a generation returns to every entry point, and the A1111 infotext and `info` built from it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from pictale import __version__
from pictale.core.samplers import AUTOMATIC, default_schedule, schedule_label
from pictale.core.types import GenerationSpec, Mode, ModelEntry
from pictale.jobs.finishing import Later
from pictale.storage.infotext import build_infotext, encode_image

VERSION = f"pictale-{__version__}"


@dataclass
class GenerationResult:
    spec: GenerationSpec
    images: list[bytes]
    """Encoded images (PNG unless another samples_format was asked), each carrying its infotext."""
    pil_images: list[Any]
    infotexts: list[str]
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]
    model: ModelEntry | None
    interrupted: bool = False
    job_timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    extra_params: dict[str, Any] = field(default_factory=dict)

    def pixels(self) -> list[Any]:
        """The decoded images (decoded again from the encoded ones if a retained result let them go)."""
        if not self.pil_images and self.images:
            import io

            from PIL import Image

            self.pil_images = [Image.open(io.BytesIO(data)).convert("RGB") for data in self.images]
        return self.pil_images

    def release_pixels(self) -> None:
        """A retained result keeps its encoded images and texts; decoded pixels and input images go."""
        self.pil_images = []
        self.spec = replace(self.spec, init_images=(), mask=None)

    def info(self) -> dict[str, Any]:
        """A1111's `info` object (the API sends it JSON-encoded as a string)."""
        spec = self.spec
        model = self.model
        return {
            "prompt": self.prompts[0] if self.prompts else spec.prompt,
            "all_prompts": self.prompts,
            "negative_prompt": self.negative_prompts[0] if self.negative_prompts else spec.negative_prompt,
            "all_negative_prompts": self.negative_prompts,
            "seed": self.seeds[0] if self.seeds else spec.seed,
            "all_seeds": self.seeds,
            "subseed": self.subseeds[0] if self.subseeds else spec.subseed,
            "all_subseeds": self.subseeds,
            "subseed_strength": spec.subseed_strength,
            "width": spec.width,
            "height": spec.height,
            "sampler_name": self.extra_params.get("Sampler") or spec.sampler,  # what ran (SD3 maps names)
            "cfg_scale": spec.cfg_scale,
            "distilled_cfg_scale": self.extra_params.get("Distilled CFG Scale"),  # FLUX.1 dev/Kontext (Forge)
            "steps": spec.steps,
            "batch_size": spec.batch_size,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": model.model_name if model else None,
            "sd_model_hash": model.short_hash if model else None,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": spec.denoising_strength if _denoises(spec) else None,
            "extra_generation_params": _jsonable(self.extra_params),
            "index_of_first_image": 0,
            "infotexts": self.infotexts,
            "styles": list(spec.styles),
            "job_timestamp": self.job_timestamp,
            "clip_skip": spec.clip_skip,
            "is_using_inpainting_conditioning": False,
            "version": VERSION,
        }

    def info_json(self) -> str:
        return json.dumps(self.info(), ensure_ascii=False)


def infotext_params(
    spec: GenerationSpec, model: ModelEntry | None, seed: int, subseed: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """The `Key: value` line of the infotext, in A1111's key order."""
    params: dict[str, Any] = {
        "Steps": spec.steps,
        "Sampler": spec.sampler,
        "Schedule type": _schedule_type(spec),
        "CFG scale": spec.cfg_scale,
        "Distilled CFG Scale": None,  # Forge's key, here: the service gives it for FLUX.1 dev/Kontext jobs
        "Seed": seed,
        "Size": f"{spec.width}x{spec.height}",
        "Model hash": model.short_hash if model else None,
        "Model": model.model_name if model else None,
        "Variation seed": subseed if spec.subseed_strength > 0 else None,
        "Variation seed strength": spec.subseed_strength if spec.subseed_strength > 0 else None,
        "Denoising strength": spec.denoising_strength if _denoises(spec) else None,
        "Clip skip": spec.clip_skip if spec.clip_skip > 1 else None,
        "RNG": "CPU",
        "Tiling": True if spec.tiling else None,
    }
    params.update(extra)
    params["Version"] = VERSION
    return params


def make_infotext(prompt: str, negative: str, params: dict[str, Any]) -> str:
    return build_infotext(prompt, negative, params)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = None
    return out


def _schedule_type(spec: GenerationSpec) -> str | None:
    """A1111 writes the schedule that ran: the sampler's default for Automatic, nothing when it has none."""
    schedule = spec.scheduler if spec.scheduler != AUTOMATIC else default_schedule(spec.sampler)
    return schedule_label(schedule) if schedule != AUTOMATIC else None


def _denoises(spec: GenerationSpec) -> bool:
    return spec.mode is not Mode.TXT2IMG or spec.hires is not None


def hires_params(spec: GenerationSpec) -> dict[str, Any]:
    """A1111's hires-fix infotext keys."""
    h = spec.hires
    assert h is not None
    resized = h.resize_x or h.resize_y
    w, ht = h.target_size(spec.width, spec.height)
    return {
        "Hires upscale": None if resized else h.scale,
        "Hires resize": f"{w}x{ht}" if resized else None,
        "Hires steps": h.second_pass_steps or None,
        "Hires upscaler": h.upscaler,
        "Hires sampler": h.sampler if h.sampler and h.sampler != spec.sampler else None,
        "Hires schedule type": schedule_label(h.scheduler) if h.scheduler and h.scheduler != spec.scheduler else None,
        "Hires prompt": h.prompt or None,
        "Hires negative prompt": h.negative_prompt or None,
    }


def encode_later(result: GenerationResult, fmt: str, pnginfo: bool, compress_level: int = 1) -> Later:
    """The result with its images still to encode (`result.images` filled by `build()`, off the worker): PNG at
    `compress_level` (or the A1111 `samples_format`), carrying each image's infotext unless `enable_pnginfo` is
    off."""

    def build() -> GenerationResult:
        texts = result.infotexts
        result.images = [
            encode_image(img, texts[i] if pnginfo else None, fmt, compress_level=compress_level)
            for i, img in enumerate(result.pil_images)
        ]
        return result

    return Later(build)
