"""The engine: owns one loaded pipeline and turns a GenerationSpec into images.

Only the worker thread calls into it (DESIGN.md rule 5): diffusers pipelines are not thread-safe.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from pathlib import Path

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image

from pictale.core.errors import ModelLoadError
from pictale.core.types import GenerationSpec, Mode, ModelEntry
from pictale.engine import models, previews, samplers, stepping
from pictale.engine.adapters import AvatarAdapters, JobAdapters
from pictale.engine.batching import (
    IP_ROWS,
    BatchItem,
    per_image_rows,
    steady_vae_layout,
)
from pictale.engine.checks.adapter_fit import check_adapter_fit, check_flux_adapter_fit, flux_dims, unet_dims
from pictale.engine.demo.layout import adapter_roots
from pictale.engine.families import unet_batching
from pictale.engine.families.flux import batching as flux_batching
from pictale.engine.families.flux import generate as flux_family
from pictale.engine.families.flux.files import FluxOptions
from pictale.engine.families.flux.variant import pipeline_variant
from pictale.engine.families.sd3 import generate as t5_family
from pictale.engine.families.support import T5_FAMILIES
from pictale.engine.hires import decode_latents, upscale_first_pass
from pictale.engine.previews import watch_x0
from pictale.engine.run import EngineResult, RunControl, run_batches, step_callback
from pictale.engine.runtime import (
    BoundedCache,
    cuda_memory,
    img2img_steps,
    pick_device,
    pick_dtype,
    quiet_loading_bars,
    uses_cfg,
    variation_latents,
)
from pictale.engine.speed.apply import apply_speed
from pictale.engine.speed.options import SpeedOptions
from pictale.engine.text_encoding import encode_prompts

log = logging.getLogger(__name__)

EMBED_CACHE_SIZE = 64


class Engine:
    """One loaded checkpoint; txt2img, img2img and inpaint share its weights through `from_pipe`."""

    def __init__(
        self,
        *,
        device: str = "auto",
        dtype: str = "auto",
        ip_adapter_path: Path | None = None,
        controlnet_path: Path | None = None,
        t5_max_tokens: int = t5_family.DEFAULT_T5_TOKENS,
        flux: FluxOptions | None = None,
        speed: SpeedOptions | None = None,
    ) -> None:
        quiet_loading_bars()
        self.device = pick_device(device)
        self.t5_max_tokens = t5_max_tokens  # T5 family prompt limit (Settings.t5_max_tokens)
        self.dtype = self._configured_dtype = pick_dtype(dtype, self.device)
        self._flux = flux
        """FLUX.1 single files: where their companions are and the memory mode (`families.flux.files`)."""
        self.entry: ModelEntry | None = None
        self.family: str | None = None
        self._pipe = None
        self._variants: dict[Mode | str, object] = {}
        self.flux_variant: str | None = None
        """FLUX.1 models: "schnell", "dev" or "kontext" (`families.flux.variant`); None for the others."""
        self._base_scheduler_config: dict = {}
        self._tiling = False
        self._embeds = BoundedCache(EMBED_CACHE_SIZE)
        # Avatars (LoRA, embeddings, IP-Adapter, ControlNet) live on the loaded pipeline, set per job.
        self._adapters = AvatarAdapters(
            ip_adapter_path=ip_adapter_path, controlnet_path=controlnet_path, device=self.device, dtype=self.dtype
        )
        self._adapter_paths = (ip_adapter_path, controlnet_path)
        """The user's adapter folders; the demo model uses its own (`demo.layout.adapter_roots`)."""
        self._job = JobAdapters()
        self._speed = speed or SpeedOptions()
        """--compile / --low-vram (`engine.speed`), applied on each load; what they did: `speed_notes`/`_report`."""
        self.speed_notes: list[str] = []
        self.speed_report: dict = {}
        self.checkpoint_loads = 0

    # -- model lifecycle -------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self, entry: ModelEntry) -> None:
        """Load `entry`, freeing the previous checkpoint first so two never sit in memory together.

        When `entry` cannot be loaded, the previous checkpoint is loaded again (it keeps serving) and the error
        names the file and the reason.
        """
        previous = self.entry
        self.unload()
        try:
            self._load(entry)
        except Exception:
            if previous is not None:
                log.warning("could not load %s; loading %s again", entry.title, previous.title)
                self._load(previous)
            raise

    def _load(self, entry: ModelEntry) -> None:
        pipe = models.load_pipeline(entry, device=self.device, dtype=self._configured_dtype, flux=self._flux)
        dtype = getattr(pipe, "dtype", self._configured_dtype)
        if dtype != self.dtype:  # FLUX.1 runs in bfloat16 where float16 was asked for (CUDA)
            self.dtype = dtype
            self._adapters = AvatarAdapters(
                ip_adapter_path=self._adapter_paths[0], controlnet_path=self._adapter_paths[1],
                device=self.device, dtype=dtype,
            )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        steady_vae_layout(pipe.vae)
        self.checkpoint_loads += 1
        self._pipe = pipe
        self._variants = {Mode.TXT2IMG: pipe}
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self.entry = entry
        family = models.pipeline_family(pipe)
        self.family = family if family in ("flux", "sd3", "sdxl") else entry.family or "sd15"
        self.flux_variant = pipeline_variant(pipe) if self.family == "flux" else None
        self._tiling = False
        unet = getattr(pipe, "unet", None)
        dims = unet_dims(unet, entry.model_name, self.family) if unet is not None else None
        self._adapters.use(*adapter_roots(entry, *self._adapter_paths), dims)
        if self._speed.active:
            self.speed_notes, self.speed_report = apply_speed(self, pipe, self._speed)
        memory = getattr(pipe, "pictale_memory_mode", None)
        log.info("loaded %s (%s) on %s/%s%s", entry.title, self.family, self.device, self.dtype,
                 f"; memory: {memory}" if memory else "")  # fmt: skip

    def adapter_loads(self) -> dict[str, int]:
        """Adapters loaded so far (LoRAs, embeddings, face/style image embeddings), by kind and digest."""
        return self._adapters.load_counts()

    def check_adapter_fit(self, avatars) -> None:
        """422 naming the file and the model when an avatar's adapter does not fit the loaded model (no torch
        work: safe from a request thread before the job is queued)."""
        adapters = self._adapters
        if adapters.dims is not None:
            check_adapter_fit(avatars, adapters.dims, adapters.ip.root, adapters.controlnet_path)
        elif self.family == "flux" and self._pipe is not None:
            dims = flux_dims(self._pipe.transformer.config, self.entry.model_name)
            check_flux_adapter_fit(avatars, dims, adapters.ip.root, adapters.controlnet_path)

    def unload(self) -> None:
        self._variants.clear()
        self._embeds.clear()
        self._adapters.reset()
        self._job = JobAdapters()
        self._pipe = None
        self.entry = None
        self.flux_variant = None
        self.speed_notes, self.speed_report = [], {}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _pipeline(self, mode: Mode):
        pipe = self._variants.get(mode)
        if pipe is None:
            base = self._variants[Mode.TXT2IMG]
            cls = AutoPipelineForImage2Image if mode is Mode.IMG2IMG else AutoPipelineForInpainting
            pipe = cls.from_pipe(base)
            pipe.set_progress_bar_config(disable=True)
            self._variants[mode] = pipe
        return pipe

    # -- generation ------------------------------------------------------------------------------

    def generate(
        self,
        spec: GenerationSpec,
        prompts: list[str],
        negative_prompts: list[str],
        seeds: list[int],
        subseeds: list[int],
        control: RunControl | None = None,
        init_images: list[Image.Image] | None = None,
        masks: list[Image.Image] | None = None,
    ) -> EngineResult:
        """Run `spec.n_iter` batches of `spec.batch_size`; prompts/seeds are per image, already resolved."""
        if self._pipe is None:
            raise ModelLoadError("no model is loaded")
        control = control or RunControl()
        if self.family == "flux":
            return flux_family.generate(
                self, spec, prompts, negative_prompts, seeds, subseeds, control, init_images, masks
            )
        if self.family in T5_FAMILIES:
            return t5_family.generate(
                self, spec, prompts, negative_prompts, seeds, subseeds, control, init_images, masks
            )
        self._job = job = self._adapters.apply(self._pipe, self.family, spec.avatars)
        if job.poses:
            pipe = self._adapters.controlnet_pipeline(self._pipe, self.family, spec.mode, len(job.poses))
        else:
            pipe = self._pipeline(spec.mode)
        # A fresh scheduler per request: a sampler swap never leaks into the next job.
        pipe.scheduler = samplers.make_scheduler(
            self._base_scheduler_config, spec.sampler, spec.scheduler, seed=seeds[0] if seeds else None
        )
        self._set_tiling(spec.tiling)

        def one(sl: slice, batch_no: int) -> tuple[list[Image.Image], bool]:
            inits = init_images[sl] if init_images else None
            with self._per_image(pipe, len(seeds[sl]), uses_cfg(pipe, spec.cfg_scale)):
                return self._run_batch(
                    pipe, spec, prompts[sl], negative_prompts[sl], seeds[sl], subseeds[sl], control, batch_no, inits,
                    masks[sl] if masks else None,
                )  # fmt: skip

        return run_batches(spec.n_iter, spec.batch_size, seeds, subseeds, control, one)

    def _per_image(self, pipe, images: int, cfg: bool):
        """Image i of a batch bit-identical to the same seed alone (batch_size 1, OpenAI n=1), where merged
        batches are verified so: the batch-size dependent kernels run per image (`engine.batching`)."""
        if images < 2 or not self.batches_identically:
            return contextlib.nullcontext()
        return per_image_rows(pipe, images, cfg)

    @property
    def batches_identically(self) -> bool:
        """True where merged batches are verified bit-identical to lone runs: float32 on the CPU (elsewhere the
        service merges too unless `Settings.deterministic`)."""
        return self.device == "cpu" and self.dtype == torch.float32

    def generate_batch(self, items: list[BatchItem]) -> list[EngineResult | BaseException]:
        """Several txt2img requests that differ only in prompts and seeds, in as few pipeline calls as possible.

        Each image is bit-identical to its request run alone (see `engine.batching`); requests whose prompt
        embeddings have another length run in another call, and all run alone under a sampler seeded for the
        whole call. Returns, per request, its result or what ended it (JobCancelled when it was cancelled while
        the others went on).
        """
        if self._pipe is None:
            raise ModelLoadError("no model is loaded")
        if self.family == "flux":
            return flux_batching.generate_batch(self, items)
        if self.family in T5_FAMILIES:
            return [self._alone(item) for item in items]  # never merged: only the UNet path is verified for it
        return unet_batching.generate_batch(self, items)

    def generate_stream(self, items: list[BatchItem], admit, finish) -> None:
        """Requests that join a running batch between denoising steps (`admit()` brings them) and leave when their
        own steps are done: each outcome goes to `finish(item, result or exception)` at once (`engine.stepping`)."""
        stepping.generate_stream(self, items, admit, finish)

    def _alone(self, item: BatchItem) -> EngineResult | BaseException:
        try:
            return self.generate(item.spec, item.prompts, item.negatives, item.seeds, item.subseeds, item.control)
        except Exception as exc:  # reported per request
            return exc

    def previews(self, latents: torch.Tensor, width: int, height: int) -> list[str]:
        """Cheap base64 PNG previews of latents from `RunControl.on_latents` (empty when the family has none)."""
        return previews.preview_pngs(latents, self.family, width, height)

    def _run_batch(
        self, pipe, spec, prompts, negatives, seeds, subseeds, control, batch_no, init_images, masks
    ) -> tuple[list[Image.Image], bool]:
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        embeds = self._encode(prompts, negatives, spec.clip_skip)
        kwargs: dict = dict(embeds)
        kwargs.update(num_inference_steps=spec.steps, guidance_scale=spec.cfg_scale, generator=gens)
        kwargs.update(self._job.ip_kwargs(IP_ROWS, uses_cfg(pipe, spec.cfg_scale), self.device, self.dtype))
        hires = spec.hires if spec.mode is Mode.TXT2IMG else None
        passes = 2 if hires else 1
        if spec.mode is Mode.TXT2IMG:
            kwargs.update(width=spec.width, height=spec.height)
            kwargs.update(self._job.control_kwargs(spec.mode, spec.width, spec.height))
            total = spec.steps
            if spec.subseed_strength > 0:
                kwargs["latents"] = variation_latents(pipe, spec, seeds, subseeds).to(self.device, self.dtype)
        else:
            strength = spec.denoising_strength
            if strength <= 0:
                return list(init_images), False  # nothing to denoise: the prepared init images as they are
            steps, total = img2img_steps(spec.steps, strength)
            kwargs.update(image=init_images, strength=strength, num_inference_steps=steps)
            if spec.mode is Mode.INPAINT:
                kwargs.update(mask_image=masks, width=spec.width, height=spec.height)
                kwargs.update(self._job.control_kwargs(spec.mode, spec.width, spec.height))
            else:
                kwargs.update(self._job.control_kwargs(spec.mode, *init_images[0].size))
        stopped = {"early": False}
        job_count = spec.n_iter * passes
        x0 = watch_x0(pipe.scheduler) if control.on_latents is not None else None
        kwargs["callback_on_step_end"] = step_callback(control, total, batch_no * passes, job_count, stopped, x0)
        kwargs["output_type"] = "latent" if hires else "pil"
        with torch.inference_mode():
            out = pipe(**kwargs)
        if not hires:
            return list(out.images), stopped["early"]
        if stopped["early"]:
            # A1111 skips the hires pass of an interrupted or skipped batch and returns the first pass.
            return decode_latents(pipe, out.images), True
        return self._hires_pass(spec, hires, out.images, embeds, prompts, negatives, seeds, control, batch_no)

    def _hires_pass(self, spec, hires, latents, embeds, prompts, negatives, seeds, control, batch_no):
        """Second pass of the hires fix: upscale (in latent or pixel space), then img2img at the target size."""
        width, height = hires.target_size(spec.width, spec.height)
        i2i = self._pipeline(Mode.IMG2IMG)
        i2i.scheduler = samplers.make_scheduler(
            self._base_scheduler_config,
            hires.sampler or spec.sampler,
            hires.scheduler or spec.scheduler,
            seed=seeds[0],
        )
        image = upscale_first_pass(self._pipe, latents, width, height, hires.upscaler)
        if hires.prompt or hires.negative_prompt:
            embeds = self._encode(
                [hires.prompt or p for p in prompts],
                [hires.negative_prompt or n for n in negatives],
                spec.clip_skip,
            )
        strength = hires.denoising_strength
        if strength <= 0:
            images = image if isinstance(image, list) else decode_latents(self._pipe, image)
            return images, False
        steps, total = img2img_steps(hires.second_pass_steps or spec.steps, strength)
        stopped = {"early": False}
        x0 = watch_x0(i2i.scheduler) if control.on_latents is not None else None
        # The IP-Adapter lives on the shared UNet and needs its embeds here too; ControlNet is skipped.
        ip = self._job.ip_kwargs(IP_ROWS, uses_cfg(i2i, spec.cfg_scale), self.device, self.dtype)
        with torch.inference_mode():
            out = i2i(
                **embeds,
                **ip,
                image=image,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=spec.cfg_scale,
                generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
                callback_on_step_end=step_callback(control, total, batch_no * 2 + 1, spec.n_iter * 2, stopped, x0),
                output_type="pil",
            )
        return list(out.images), stopped["early"]

    def _encode(self, prompts: list[str], negatives: list[str], clip_skip: int) -> dict:
        """Prompt embeddings, cached across jobs: chats and books repeat their prompts and negatives."""
        # A text-encoder LoRA or a new embedding changes the embeddings: the adapter state is part of the key.
        key = (tuple(prompts), tuple(negatives), clip_skip, self._job.text_key)
        return self._embeds.get_or_make(
            key, lambda: encode_prompts(self._pipe, prompts, negatives, clip_skip=clip_skip)
        )

    def _set_tiling(self, tiling: bool) -> None:
        """Seamless tiling as A1111 does it: circular padding on every conv of the UNet and VAE."""
        if tiling == self._tiling:
            return
        for module in (self._pipe.unet, self._pipe.vae):
            for layer in module.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.padding_mode = "circular" if tiling else "zeros"
        self._tiling = tiling

    # -- diagnostics --------------------------------------------------------------------------------

    def memory(self) -> dict:
        """CUDA memory numbers in A1111's `/memory` shape."""
        return cuda_memory()
