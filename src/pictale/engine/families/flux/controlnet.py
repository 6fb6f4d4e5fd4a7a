"""Pose avatars on FLUX.1 through a union ControlNet (InstantX / Shakker-Labs), pose mode 4.

The net lives in `<controlnet_path>/flux-union/`: a diffusers folder (config.json +
diffusion_pytorch_model.safetensors) of InstantX/FLUX.1-dev-Controlnet-Union or
Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro(-2.0). Union-Pro-2.0 has no mode embedding (`num_mode` null) and runs
without a mode. Facts: `shared/reference/flux.md` §6.

What diffusers 0.42.1 gets wrong, and what is done about it here:

- The seed: the ControlNet pipelines VAE-encode the pose with `latent_dist.sample(generator)` before drawing the
  noise, so the same seed gave other noise than without a pose (and scale 0 was not the image without it). The
  pipelines here rewind the generators to where they were at the start of the call just before the latents are
  drawn, so txt2img, img2img and inpaint draw exactly the numbers of the plain pipelines.
- Several poses: every pose is one entry of a FluxMultiControlNetModel of the same net (`[net] * n`; a single
  net with n images silently applies only the first, since the per-step scales are zipped with the nets).
- Batches: img2img and inpaint pass the union mode as one row per pose, which breaks for batch > 1; the
  multi-net here expands each mode to the batch. One pose also goes through it (the same image as the plain net).
- Face/style: the ControlNet img2img and inpaint pipelines take no IP-Adapter arguments; here they accept
  `ip_adapter_image_embeds` and hand the projected image tokens to the transformer as FluxPipeline does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FluxControlNetImg2ImgPipeline,
    FluxControlNetInpaintPipeline,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxMultiControlNetModel,
)
from PIL import Image

from pictale.core.errors import UnsupportedFeature
from pictale.core.images import resize_image
from pictale.core.types import Mode
from pictale.engine.families.support import FLUX_CONTROLNET

POSE_MODE = 4
"""The union nets' mode for OpenPose images (canny 0, tile 1, depth 2, blur 3, pose 4, gray 5, low quality 6)."""
PUBLIC_WEIGHTS = (
    "InstantX/FLUX.1-dev-Controlnet-Union or Shakker-Labs/FLUX.1-dev-ControlNet-Union-Pro as a diffusers folder "
    "(config.json, diffusion_pytorch_model.safetensors)"
)


class _KeepsSeedNoise:
    """Pipeline mixin: the control images' VAE samples do not use up the seed (see the module docstring)."""

    _seed_states: tuple | list = ()

    def __call__(self, *args, generator=None, **kwargs):
        gens = generator if isinstance(generator, list) else [] if generator is None else [generator]
        self._seed_states = [(g, g.get_state()) for g in gens]
        try:
            return super().__call__(*args, generator=generator, **kwargs)
        finally:
            self._seed_states = ()

    def prepare_latents(self, *args, **kwargs):
        for gen, state in self._seed_states:
            gen.set_state(state)
        self._seed_states = []
        return super().prepare_latents(*args, **kwargs)


class _TakesIPEmbeds(_KeepsSeedNoise):
    """img2img / inpaint: accept FluxPipeline's `ip_adapter_image_embeds` (one entry per IP-Adapter)."""

    def __call__(self, *args, ip_adapter_image_embeds=None, negative_ip_adapter_image_embeds=None, **kwargs):
        if ip_adapter_image_embeds is not None:
            prompt, embeds = (args[0] if args else kwargs.get("prompt")), kwargs.get("prompt_embeds")
            batch = embeds.shape[0] if embeds is not None else len(prompt) if isinstance(prompt, list) else 1
            batch *= kwargs.get("num_images_per_prompt") or 1
            with torch.no_grad():  # what FluxTransformer2DModel computes from `ip_adapter_image_embeds`
                tokens = self.transformer.encoder_hid_proj([torch.cat([e] * batch) for e in ip_adapter_image_embeds])
            kwargs["joint_attention_kwargs"] = {
                **(kwargs.get("joint_attention_kwargs") or {}),
                "ip_hidden_states": tokens,
            }
        return super().__call__(*args, **kwargs)


class PoseControlNetPipeline(_KeepsSeedNoise, FluxControlNetPipeline):
    pass


class PoseControlNetImg2ImgPipeline(_TakesIPEmbeds, FluxControlNetImg2ImgPipeline):
    pass


class PoseControlNetInpaintPipeline(_TakesIPEmbeds, FluxControlNetInpaintPipeline):
    pass


PIPELINES = {
    Mode.TXT2IMG: PoseControlNetPipeline,
    Mode.IMG2IMG: PoseControlNetImg2ImgPipeline,
    Mode.INPAINT: PoseControlNetInpaintPipeline,
}


class PoseNets(FluxMultiControlNetModel):
    """One pose per net entry; each entry's mode is expanded to the batch (diffusers' img2img/inpaint do not)."""

    def forward(self, hidden_states, controlnet_cond, controlnet_mode, *args, **kwargs):
        if controlnet_mode is not None:
            batch = hidden_states.shape[0]
            controlnet_mode = [None if m is None else m.reshape(-1)[:1].expand(batch) for m in controlnet_mode]
        return super().forward(hidden_states, controlnet_cond, controlnet_mode, *args, **kwargs)


class FluxControlNets:
    """The union ControlNet beside one Flux pipeline and its `from_pipe` pose variants, loaded on first use."""

    def __init__(self, root: Path | None, *, device: str, dtype: torch.dtype) -> None:
        self.root = Path(root) if root is not None else None
        self.device = device
        self.dtype = dtype
        self.loads = 0
        self._net: FluxControlNetModel | None = None
        self._pipes: dict[tuple[Mode, int], object] = {}

    def reset(self) -> None:
        """The pipeline is gone: its variants go (the net, independent of it, is kept)."""
        self._pipes.clear()

    @property
    def folder(self) -> Path | None:
        return self.root / FLUX_CONTROLNET if self.root is not None else None

    def net(self, name: str = "") -> FluxControlNetModel:
        """The union net; UnsupportedFeature naming the folder and the public weights when it is missing."""
        if self._net is not None:
            return self._net
        what = f"pose avatar {name!r}" if name else "a pose avatar"
        folder = self.folder
        if folder is None:
            raise UnsupportedFeature(f"{what} needs a Flux union ControlNet; no ControlNet directory is configured")
        if not (folder / "config.json").is_file():
            raise UnsupportedFeature(
                f"{what} on FLUX.1 needs the union ControlNet {folder}/ (not found): save {PUBLIC_WEIGHTS} there"
            )
        try:
            net = FluxControlNetModel.from_pretrained(
                folder, use_safetensors=True, local_files_only=True, torch_dtype=self.dtype
            )
        except (OSError, ValueError, RuntimeError) as exc:
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UnsupportedFeature(
                f"cannot load the Flux ControlNet {folder}/ (safetensors only): {reason[:300]}"
            ) from exc
        self._net = net.to(self.device).eval()
        self.loads += 1
        return self._net

    def pipeline(self, base, mode: Mode, count: int):
        """The ControlNet variant of `base` for `mode` with `count` poses, sharing base's components; cached."""
        key = (Mode(mode), count)
        pipe = self._pipes.get(key)
        if pipe is None:
            nets = PoseNets([self.net()] * count)
            pipe = PIPELINES[key[0]].from_pipe(base, controlnet=nets)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[key] = pipe
        return pipe

    def call_kwargs(self, poses: list[tuple[Image.Image, float]], width: int, height: int) -> dict:
        """control_image / control_mode / controlnet_conditioning_scale for `poses` (image, weight), each pose
        cropped and resized to the output size (A1111's default); {} without poses."""
        if not poses:
            return {}
        union = self.net().config.num_mode is not None
        return {
            "control_image": [resize_image(1, img, width, height) for img, _ in poses],
            "control_mode": [POSE_MODE if union else None for _ in poses],
            "controlnet_conditioning_scale": [float(w) for _, w in poses],
        }
