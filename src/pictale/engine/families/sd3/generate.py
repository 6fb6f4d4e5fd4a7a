"""Generation for the T5 family (Stable Diffusion 3): txt2img, img2img, inpaint and hires fix.

Prompts go to the pipeline as text (`prompt`, and the same string as `prompt_2`/`prompt_3`); SD3 encodes it
with both CLIP encoders (cut at 77 tokens, as in every SD3 UI) and with T5 up to `max_sequence_length`.

- T5 limit: `Settings.t5_max_tokens` (default 256, at most 512) is the T5 sequence length. When a prompt or
  negative prompt has more T5 tokens than that, the job runs at 512, SD3's maximum; beyond 512 the text is
  cut there. The infotext says `T5 tokens: <count>/<limit>` (count of the longest text, with `</s>`) and,
  when cut, `T5 truncated: ...`.
- A1111 attention syntax `(word:1.2)`, `[word]` and `BREAK` is stripped to plain words with the prompt
  package's parser (`strip_attention`): the weights are ignored, because SD3's pipeline takes text and its
  joint attention has no per-token emphasis that matches A1111's. Clip skip is ignored too (SD3 already uses
  the penultimate CLIP layer).
- Samplers map to flow-matching schedulers (`flow_samplers`); the infotext names the one that ran.
- Avatars: LoRA, and one face or style avatar through diffusers' SD3 IP-Adapter (`sd3_ip_adapter`), whose
  embeddings reach every pass (hires too); seeds: one CPU generator per image, as on the UNet path.
- Jobs never merge into batches, tiling is ignored (the transformer has no convolutions to pad) and
  said so in the infotext.

The engine's notes reach the infotext through `EngineResult.infotext`, which the service merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from pictale.core.types import GenerationSpec, Mode
from pictale.engine.families.flow_samplers import make_flow_scheduler, requested_name
from pictale.engine.families.support import check_avatars
from pictale.engine.hires import decode_latents, second_pass_texts, upscale_first_pass
from pictale.engine.previews import watch_x0
from pictale.engine.run import EngineResult, RunControl, run_job, step_callback
from pictale.engine.runtime import img2img_steps, variation_latents
from pictale.prompt.attention import strip_attention

DEFAULT_T5_TOKENS = 256
MAX_T5_TOKENS = 512


@dataclass(frozen=True)
class T5Budget:
    """How many T5 tokens the longest text has, and the sequence length the job runs with."""

    count: int
    limit: int
    has_t5: bool = True

    @property
    def truncated(self) -> bool:
        return self.count > self.limit

    def infotext(self) -> dict[str, Any]:
        if not self.has_t5:
            return {"T5 tokens": "none (loaded without T5)"}
        notes: dict[str, Any] = {"T5 tokens": f"{self.count}/{self.limit}"}
        if self.truncated:
            notes["T5 truncated"] = f"prompt cut to its first {self.limit} of {self.count} T5 tokens"
        return notes


def t5_budget(tokenizer, texts: list[str], setting: int = DEFAULT_T5_TOKENS, maximum: int = MAX_T5_TOKENS) -> T5Budget:
    """The T5 sequence length for `texts`: the setting, or `maximum` (SD3's 512; FLUX.1 schnell's 256) when a
    text is longer than the setting."""
    base = max(1, min(int(setting), maximum))
    if tokenizer is None:  # an SD3 loaded without T5: nothing to count, the setting is passed unused
        return T5Budget(0, base, has_t5=False)
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    count = max((len(i) for i in ids), default=0)
    return T5Budget(count, base if count <= base else maximum)


def plain_prompts(prompts: list[str]) -> list[str]:
    """A1111 prompts as T5 reads them: attention brackets, weights and BREAK removed."""
    return [strip_attention(p) for p in prompts]


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
    """`Engine.generate` for a T5-family model: `spec.n_iter` batches of `spec.batch_size`."""
    check_avatars(spec.avatars, engine.family)
    engine._job = engine._adapters.apply(engine._pipe, engine.family, spec.avatars)
    run = _Run(engine, spec, control, plain_prompts(prompts), plain_prompts(negatives))
    return run_job(spec, run, seeds, subseeds, control, init_images, masks)


class _Run:
    """One job's pipeline calls: texts, T5 limit, scheduler and the infotext notes they produce."""

    def __init__(self, engine, spec: GenerationSpec, control: RunControl, prompts: list[str], negatives: list[str]):
        self.engine, self.spec, self.control = engine, spec, control
        self.prompts, self.negatives = prompts, negatives
        self.pipe = engine._pipeline(spec.mode)
        self.hires = spec.hires if spec.mode is Mode.TXT2IMG else None
        texts = prompts + negatives
        if self.hires is not None:
            texts += [strip_attention(t) for t in (self.hires.prompt, self.hires.negative_prompt) if t]
        self.budget = t5_budget(getattr(self.pipe, "tokenizer_3", None), texts, engine.t5_max_tokens)
        self.scheduler_for = lambda sampler, mode: make_flow_scheduler(engine._base_scheduler_config, sampler, mode)
        self.pipe.scheduler, label = self.scheduler_for(spec.sampler, spec.mode)
        self.notes: dict[str, Any] = {"Sampler": label, "Schedule type": None, **self.budget.infotext()}
        ran = [(requested_name(spec.sampler), label)]
        if self.hires is not None and self.hires.sampler:
            ran.append((requested_name(self.hires.sampler), self.scheduler_for(self.hires.sampler, Mode.IMG2IMG)[1]))
        changed = [f"{asked} -> {label}" for asked, label in ran if asked != label]
        if changed:
            self.notes["Sampler note"] = f"{', '.join(changed)} (SD3 samples with flow matching)"
        if spec.tiling:
            self.notes["Tiling"] = None
            self.notes["Tiling note"] = "tiling is not supported on SD3 models; ignored"

    def _text_kwargs(self, prompts: list[str], negatives: list[str]) -> dict[str, Any]:
        """The prompt embeddings of the call, cached like the UNet path's: chats and books repeat prompts and
        negatives, and T5-XXL is the costly part of an SD3 text encoding."""
        engine = self.engine
        cfg = self.spec.cfg_scale > 1  # SD3 pipelines use CFG exactly then; without it no negatives are made
        key = ("t5", tuple(prompts), tuple(negatives), self.budget.limit, cfg, engine._job.text_key)
        return dict(engine._embeds.get_or_make(key, lambda: self._encode(prompts, negatives, cfg)))

    def _encode(self, prompts: list[str], negatives: list[str], cfg: bool) -> dict[str, Any]:
        with torch.inference_mode():
            pe, npe, ppe, nppe = self.pipe.encode_prompt(
                prompt=prompts,
                prompt_2=prompts,
                prompt_3=prompts,
                negative_prompt=negatives,
                negative_prompt_2=negatives,
                negative_prompt_3=negatives,
                do_classifier_free_guidance=cfg,
                device=self.engine.device,
                max_sequence_length=self.budget.limit,
            )
        embeds = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
        if cfg:
            embeds.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=nppe)
        return embeds

    def _ip_kwargs(self) -> dict[str, Any]:
        # SD3 pipelines use CFG exactly when guidance_scale > 1; the embeds' layout depends on it.
        return self.engine._job.sd3_ip_kwargs(self.spec.cfg_scale > 1, self.engine.device, self.engine.dtype)

    def batch(self, sl: slice, seeds, subseeds, batch_no: int, init_images, masks) -> tuple[list[Image.Image], bool]:
        spec, pipe, engine = self.spec, self.pipe, self.engine
        prompts, negatives = self.prompts[sl], self.negatives[sl]
        kwargs = self._text_kwargs(prompts, negatives)
        kwargs.update(num_inference_steps=spec.steps, guidance_scale=spec.cfg_scale, generator=_generators(seeds))
        kwargs.update(self._ip_kwargs())
        passes = 2 if self.hires else 1
        if spec.mode is Mode.TXT2IMG:
            kwargs.update(width=spec.width, height=spec.height)
            total = spec.steps
            if spec.subseed_strength > 0:
                kwargs["latents"] = variation_latents(pipe, spec, seeds, subseeds).to(engine.device, engine.dtype)
        else:
            strength = spec.denoising_strength
            if strength <= 0:
                return list(init_images), False  # nothing to denoise: the prepared init images as they are
            steps, total = _img2img_steps(spec.steps, strength)
            width, height = (spec.width, spec.height) if spec.mode is Mode.INPAINT else init_images[0].size
            # SD3's img2img resizes its input to the pipeline's default size unless told the size.
            kwargs.update(image=init_images, strength=strength, num_inference_steps=steps, width=width, height=height)
            if spec.mode is Mode.INPAINT:
                kwargs.update(mask_image=masks)
        stopped = {"early": False}
        x0 = watch_x0(pipe.scheduler) if self.control.on_latents is not None else None
        job_no, job_count = batch_no * passes, spec.n_iter * passes
        order = getattr(pipe.scheduler, "order", 1)
        kwargs["callback_on_step_end"] = step_callback(self.control, total, job_no, job_count, stopped, x0, order)
        kwargs["output_type"] = "latent" if self.hires else "pil"
        with torch.inference_mode():
            out = pipe(**kwargs)
        if not self.hires:
            return list(out.images), stopped["early"]
        if stopped["early"]:
            return decode_latents(engine._pipe, out.images), True  # A1111 skips hires after an interrupt
        return self._hires_pass(out.images, prompts, negatives, seeds, batch_no)

    def _hires_pass(self, latents, prompts, negatives, seeds, batch_no: int) -> tuple[list[Image.Image], bool]:
        """Second pass: upscale (latents or pixels), then SD3 img2img at the target size."""
        spec, hires, engine = self.spec, self.hires, self.engine
        width, height = hires.target_size(spec.width, spec.height)
        i2i = engine._pipeline(Mode.IMG2IMG)
        i2i.scheduler, _ = self.scheduler_for(hires.sampler or spec.sampler, Mode.IMG2IMG)
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
        with torch.inference_mode():
            out = i2i(
                **self._text_kwargs(prompts, negatives),
                **self._ip_kwargs(),
                image=image,
                width=width,
                height=height,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=spec.cfg_scale,
                generator=_generators(seeds),
                callback_on_step_end=callback,
                output_type="pil",
            )
        return list(out.images), stopped["early"]


def _img2img_steps(steps: int, strength: float) -> tuple[int, int]:
    """(num_inference_steps, steps that run) for SD3's img2img, which keeps the fraction A1111 rounds down."""
    steps, _ = img2img_steps(steps, strength)
    return steps, steps - int(max(steps - steps * strength, 0))


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
