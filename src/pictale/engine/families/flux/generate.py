"""Generation for FLUX.1 (schnell, dev, Kontext): txt2img, img2img, inpaint, hires fix and Kontext editing.

Prompts go to the pipeline as embeddings made once per (prompts, negatives, T5 limit, adapters) and cached: the
CLIP-L encoder gives only the pooled vector (prompt cut at 77 tokens), T5 the sequence (`max_sequence_length`).
A1111 attention syntax is stripped to plain words, as on SD3 (`families.sd3.generate.plain_prompts`).

- Guidance: schnell has none (its transformer has no guidance embedding, the value is ignored). dev and Kontext
  take the distilled guidance `spec.distilled_cfg_scale` (Forge's "Distilled CFG Scale"; the profile's when
  None). `spec.cfg_scale` above 1 is true CFG with the negative prompt (a second transformer pass per step), as
  in Forge; at 1 (the profiles' default) the negative prompt is unused and the infotext says so.
- T5: `t5_budget` as on SD3, with schnell capped at 256 tokens (what it was distilled with) and dev/Kontext at
  512. The infotext says `T5 tokens: <count>/<limit>` and what was cut.
- Sizes: Flux latents are packed 2x2, so sizes are multiples of 16 (the service floors them first).
- Kontext: img2img and inpaint run reference editing (`FluxKontextInpaintPipeline`: the init image is both the
  reference the model attends to and the start point noised to `denoising_strength`; img2img masks the whole
  image). `max_area` is the job's size and `_auto_resize` is off, so the output and the reference keep their
  sizes (flux.md section 7). txt2img on Kontext is plain txt2img.
- Variation seeds: the seed's and the subseed's noise in Flux's unpacked latent shape, slerped, then packed.
- Previews: the x0 estimate of each step, unpacked to 16 channels (`engine.previews` maps them to RGB).

Avatars (LoRA, the XLabs IP-Adapter, the union ControlNet) are set per job by `AvatarAdapters.apply`: its
IP-Adapter kwargs go to every call of the job (hires too), and a job with poses runs the ControlNet variant of
its mode (the hires pass runs without it, as on the UNet path). On Kontext a pose job runs the ControlNet
pipelines, without reference editing, and the infotext says so.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from PIL import Image

from pictale.core.types import GenerationSpec, Mode
from pictale.engine.batching import row_groups, split_batch
from pictale.engine.families.flow_samplers import FLUX_PIPELINE_ARGS, make_flow_scheduler, requested_name
from pictale.engine.families.flux.variant import pipeline_variant
from pictale.engine.families.sd3.generate import _generators, _img2img_steps, plain_prompts, t5_budget
from pictale.engine.families.support import check_avatars
from pictale.engine.hires import decode_latents, second_pass_texts, upscale_first_pass
from pictale.engine.previews import watch_x0
from pictale.engine.run import EngineResult, RunControl, run_job, step_callback
from pictale.engine.runtime import slerp
from pictale.prompt.attention import strip_attention

LATENT_CHANNELS = 16
DEFAULT_GUIDANCE = {"dev": 3.5, "kontext": 2.5}
"""Distilled guidance when the job gives none: BFL's dev default and its Kontext example."""
MAX_T5 = {"schnell": 256, "dev": 512, "kontext": 512}


def guidance(spec: GenerationSpec, variant: str) -> float | None:
    """The distilled guidance the transformer gets; None for schnell, which has no guidance embedding."""
    if variant == "schnell":
        return None
    return DEFAULT_GUIDANCE[variant] if spec.distilled_cfg_scale is None else float(spec.distilled_cfg_scale)


def pipeline(engine, kind: str):
    """The Flux pipeline for `kind` ("txt2img", "img2img", "inpaint", "kontext-edit"), sharing the loaded weights."""
    key = f"flux-{kind}"
    pipe = engine._variants.get(key)
    if pipe is None:
        import diffusers

        base = engine._pipe
        name = {
            "txt2img": type(base).__name__,
            "img2img": "FluxImg2ImgPipeline",
            "inpaint": "FluxInpaintPipeline",
            "kontext-edit": "FluxKontextInpaintPipeline",
        }[kind]
        pipe = base if name == type(base).__name__ else getattr(diffusers, name).from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        engine._variants[key] = pipe
    return pipe


def unpack(pipe, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Packed (B, h/2*w/2, 64) latents -> (B, 16, h, w), h and w the latent size of a width x height image."""
    return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)


def variation_noise(pipe, spec: GenerationSpec, seeds: list[int], subseeds: list[int]) -> torch.Tensor:
    """A1111's variation seed on Flux: slerp of the seed's and subseed's noise, drawn as the pipeline draws it
    (one CPU generator per image, unpacked shape), then packed."""
    factor = pipe.vae_scale_factor * 2
    h, w = 2 * (spec.height // factor), 2 * (spec.width // factor)
    shape = (1, LATENT_CHANNELS, h, w)
    rows = []
    for seed, sub in zip(seeds, subseeds, strict=True):
        a = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))
        b = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(sub)))
        rows.append(slerp(spec.subseed_strength, a, b))
    noise = torch.cat(rows)
    return pipe._pack_latents(noise, len(rows), LATENT_CHANNELS, h, w)


def per_image(pipe, images: int, exact: bool):
    """Image i of a batch bit-identical to its seed alone (A1111 batch_size, OpenAI n) where `exact` (float32 on
    the CPU): the batch-size dependent calls of the transformer and VAE run per image (`engine.batching`)."""
    if images < 2 or not exact:
        return contextlib.nullcontext()
    return split_rows(pipe, [1] * images)


@contextlib.contextmanager
def split_rows(pipe, sizes: list[int]):
    groups = row_groups(sizes, False)  # true CFG is a second pass on FLUX.1, never a doubled batch
    with split_batch([pipe.transformer], groups), split_batch([pipe.vae], groups):
        yield


def generate(
    engine,
    spec: GenerationSpec,
    prompts: list[str],
    negatives: list[str],
    seeds: list[int],
    subseeds: list[int],
    control: RunControl,
    init_images: list[Image.Image] | None,
    masks: list[Image.Image] | None,
) -> EngineResult:
    """`Engine.generate` for a FLUX.1 model: `spec.n_iter` batches of `spec.batch_size`."""
    check_avatars(spec.avatars, "flux")
    engine._job = engine._adapters.apply(engine._pipe, "flux", spec.avatars)
    run = _Run(engine, spec, control, plain_prompts(prompts), plain_prompts(negatives))
    return run_job(spec, run, seeds, subseeds, control, init_images, masks)


class _Run:
    """One job's Flux pipeline calls and the infotext notes they produce."""

    def __init__(self, engine, spec: GenerationSpec, control: RunControl, prompts: list[str], negatives: list[str]):
        self.engine, self.spec, self.control = engine, spec, control
        self.prompts, self.negatives = prompts, negatives
        self.variant = pipeline_variant(engine._pipe)
        self.kontext = self.variant == "kontext"
        self.hires = spec.hires if spec.mode is Mode.TXT2IMG else None
        self.true_cfg = spec.cfg_scale > 1
        self.guidance = guidance(spec, self.variant)
        texts = prompts + (negatives if self.true_cfg else [])
        if self.hires is not None:
            texts += [strip_attention(t) for t in (self.hires.prompt, self.hires.negative_prompt) if t]
        setting = spec.t5_tokens or engine.t5_max_tokens  # the service sets the variant's (schnell 256, dev 512)
        self.budget = t5_budget(engine._pipe.tokenizer_2, texts, setting, maximum=MAX_T5[self.variant])
        self.notes: dict[str, Any] = {}
        self._scheduler_notes()
        self.notes.update(self.budget.infotext())
        if not self.true_cfg and any(n.strip() for n in negatives):
            self.notes["Negative prompt note"] = "unused: FLUX.1 reads the negative prompt only at CFG scale > 1"
        if self.kontext and engine._job.poses:
            self.notes["Pose note"] = (
                "Kontext reference editing takes no ControlNet: this job ran ControlNet without it"
            )
        if spec.tiling:
            self.notes["Tiling"] = None
            self.notes["Tiling note"] = "tiling is not supported on FLUX.1 models; ignored"

    def _scheduler(self, sampler: str | None, mode: Mode):
        return make_flow_scheduler(self.engine._base_scheduler_config, sampler, mode, FLUX_PIPELINE_ARGS)

    def _scheduler_notes(self) -> None:
        spec = self.spec
        mode = Mode.TXT2IMG if spec.mode is Mode.TXT2IMG else Mode.IMG2IMG
        _, label = self._scheduler(spec.sampler, mode)
        self.notes.update({"Sampler": label, "Schedule type": None})
        ran = [(requested_name(spec.sampler), label)]
        if self.hires is not None and self.hires.sampler:
            ran.append((requested_name(self.hires.sampler), self._scheduler(self.hires.sampler, Mode.IMG2IMG)[1]))
        changed = [f"{asked} -> {label}" for asked, label in ran if asked != label]
        if changed:
            self.notes["Sampler note"] = f"{', '.join(changed)} (FLUX.1 samples with flow matching)"

    # -- text ------------------------------------------------------------------------------------

    def _text_kwargs(self, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
        engine = self.engine
        negatives = negatives if self.true_cfg else []
        key = ("flux", tuple(prompts), tuple(negatives), self.budget.limit, engine._job.text_key)
        return dict(engine._embeds.get_or_make(key, lambda: self._encode(prompts, negatives)))

    def _encode(self, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
        pipe, device, limit = self.engine._pipe, self.engine.device, self.budget.limit
        with torch.inference_mode():
            pe, ppe, _ = pipe.encode_prompt(prompts, prompts, device=device, max_sequence_length=limit)
            embeds = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
            if negatives:
                npe, nppe, _ = pipe.encode_prompt(negatives, negatives, device=device, max_sequence_length=limit)
                embeds.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=nppe)
        return embeds

    def _common(self, prompts: list[str], negatives: list[str], seeds: list[int]) -> dict[str, Any]:
        return {**self._text_kwargs(prompts, negatives), **self.call_kwargs(seeds)}

    def call_kwargs(self, seeds: list[int]) -> dict[str, Any]:
        """What every call of the job passes besides the prompts: generators, T5 limit, guidance, IP-Adapter."""
        kwargs: dict[str, Any] = {"generator": _generators(seeds), "max_sequence_length": self.budget.limit}
        # schnell ignores guidance; passing 0 keeps the pipelines' own defaults (7.0 for img2img) out of sight
        kwargs["guidance_scale"] = self.guidance if self.guidance is not None else 0.0
        if self.true_cfg:
            kwargs["true_cfg_scale"] = self.spec.cfg_scale
        kwargs.update(self.engine._job.flux_ip)  # on every call while a face/style is attached (it crashes without)
        return kwargs

    # -- one batch -------------------------------------------------------------------------------

    def batch(self, sl: slice, seeds, subseeds, batch_no: int, init_images, masks) -> tuple[list[Image.Image], bool]:
        spec, engine = self.spec, self.engine
        prompts, negatives = self.prompts[sl], self.negatives[sl]
        kwargs = self._common(prompts, negatives, seeds)
        passes = 2 if self.hires else 1
        poses = engine._job.poses
        if spec.mode is Mode.TXT2IMG:
            pipe = pipeline(engine, "txt2img")
            kwargs.update(width=spec.width, height=spec.height, num_inference_steps=spec.steps)
            if self.kontext and not poses:
                kwargs.update(max_area=spec.width * spec.height, _auto_resize=False)
            total = spec.steps
            if spec.subseed_strength > 0:
                kwargs["latents"] = variation_noise(pipe, spec, seeds, subseeds).to(engine.device, engine.dtype)
        else:
            strength = spec.denoising_strength
            if strength <= 0:
                return list(init_images), False  # nothing to denoise: the prepared init images as they are
            steps, total = _img2img_steps(spec.steps, strength)
            width, height = (spec.width, spec.height) if spec.mode is Mode.INPAINT else init_images[0].size
            kwargs.update(image=init_images, strength=strength, num_inference_steps=steps, width=width, height=height)
            if self.kontext and not poses:
                pipe = pipeline(engine, "kontext-edit")
                if masks is None:  # img2img: the whole image may change, the reference guides every part of it
                    masks = [Image.new("L", img.size, 255) for img in init_images]
                kwargs.update(
                    mask_image=masks, image_reference=init_images, max_area=width * height, _auto_resize=False
                )
            elif spec.mode is Mode.INPAINT:
                pipe = pipeline(engine, "inpaint")
                kwargs.update(mask_image=masks)
            else:
                pipe = pipeline(engine, "img2img")
        if poses:  # the union ControlNet variant of the same mode, sharing every weight
            pipe = engine._adapters.flux_controlnet_pipeline(engine._pipe, spec.mode, len(poses))
            size = (spec.width, spec.height) if spec.mode is not Mode.IMG2IMG else init_images[0].size
            kwargs.update(engine._job.flux_control_kwargs(*size))
        pipe.scheduler, _ = self._scheduler(spec.sampler, spec.mode if spec.mode is Mode.TXT2IMG else Mode.IMG2IMG)
        stopped = {"early": False}
        x0 = watch_x0(pipe.scheduler) if self.control.on_latents is not None else None
        job_no, job_count = batch_no * passes, spec.n_iter * passes
        callback = step_callback(
            self.control, total, job_no, job_count, stopped, x0, getattr(pipe.scheduler, "order", 1)
        )
        kwargs["callback_on_step_end"] = callback
        kwargs["output_type"] = "latent" if self.hires else "pil"
        with torch.inference_mode(), per_image(pipe, len(seeds), self.engine.batches_identically):
            out = pipe(**kwargs)
        if not self.hires:
            return list(out.images), stopped["early"]
        latents = unpack(pipe, out.images, spec.width, spec.height)
        if stopped["early"]:
            return decode_latents(engine._pipe, latents), True  # A1111 skips hires after an interrupt
        return self._hires_pass(latents, prompts, negatives, seeds, batch_no)

    def _hires_pass(self, latents, prompts, negatives, seeds, batch_no: int) -> tuple[list[Image.Image], bool]:
        """Second pass: upscale (latents or pixels), then Flux img2img at the target size (no reference)."""
        spec, hires, engine = self.spec, self.hires, self.engine
        width, height = hires.target_size(spec.width, spec.height)
        width, height = width // 16 * 16, height // 16 * 16
        i2i = pipeline(engine, "img2img")
        i2i.scheduler, _ = self._scheduler(hires.sampler or spec.sampler, Mode.IMG2IMG)
        image = upscale_first_pass(engine._pipe, latents, width, height, hires.upscaler)
        strength = hires.denoising_strength
        if strength <= 0:
            return (image if isinstance(image, list) else decode_latents(engine._pipe, image)), False
        prompts, negatives = second_pass_texts(hires, prompts, negatives)
        steps, total = _img2img_steps(hires.second_pass_steps or spec.steps, strength)
        stopped = {"early": False}
        x0 = watch_x0(i2i.scheduler) if self.control.on_latents is not None else None
        callback = step_callback(
            self.control, total, batch_no * 2 + 1, spec.n_iter * 2, stopped, x0, getattr(i2i.scheduler, "order", 1)
        )
        kwargs = self._common(prompts, negatives, seeds)
        kwargs.update(image=image, width=width, height=height, strength=strength, num_inference_steps=steps)
        with torch.inference_mode(), per_image(i2i, len(seeds), self.engine.batches_identically):
            out = i2i(**kwargs, callback_on_step_end=callback, output_type="pil")
        return list(out.images), stopped["early"]
