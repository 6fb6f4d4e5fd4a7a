"""Face and style avatars on FLUX.1 through the XLabs Flux IP-Adapter (diffusers' `FluxIPAdapterMixin`).

Files under the IP-Adapter root (`Settings.ip_adapter_path`), beside SD3's:

    flux/ip_adapter.safetensors   XLabs-AI/flux-ip-adapter (or -v2) weights, saved as safetensors
                                  (`ip_adapter_proj_model.*`, `double_blocks.<i>.processor.ip_adapter_double_stream_*`)
    flux/image_encoder/           openai/clip-vit-large-patch14 as CLIPVisionModelWithProjection (config.json,
                                  model.safetensors, preprocessor_config.json)

One face or style avatar per job (`family_support`), but all of its images: the adapter takes embeddings shaped
(1, images, width), each image its own 4 tokens, so nothing is averaged. Embeddings are the encoder's
`image_embeds` as the pipeline's own `encode_image` computes them, cached by avatar digest; the negative (a black
image, used only with true CFG) is computed once and passed too, so no pipeline call ever runs the encoder.

Once loaded, diffusers' Flux attention processors fail on a call without an IP image (flux.md §5), so a job
without face/style parks the adapter: the transformer gets its own processors back and `encoder_hid_proj` goes,
and it runs exactly as if no IP-Adapter had been loaded; the next face job re-attaches it without a reload. The
adapter lives on the transformer, which every `from_pipe` variant (img2img, inpaint, Kontext, ControlNet) shares:
while it is attached, every call of the job must get `apply`'s kwargs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarRef
from pictale.engine.adapters.unet_ip import EMBED_CACHE_SIZE, IPFiles, _open_rgb, _quiet
from pictale.engine.families.support import FLUX_IP_ENCODER, FLUX_IP_WEIGHTS, missing_flux_ip_adapter
from pictale.engine.runtime import BoundedCache

log = logging.getLogger(__name__)


def flux_ip_files(root: Path | None, ref: AvatarRef) -> IPFiles:
    """The Flux adapter and encoder for `ref`; UnsupportedFeature saying where to put them when absent."""
    message = missing_flux_ip_adapter(root, ref)
    if message is not None:
        raise UnsupportedFeature(message)
    return IPFiles(Path(root) / FLUX_IP_WEIGHTS, Path(root) / FLUX_IP_ENCODER)


class FluxIPAdapter:
    """The XLabs IP-Adapter of one Flux pipeline's transformer (attached, parked or not loaded) and its embeddings."""

    def __init__(self, root: Path | None, *, device: str, dtype: torch.dtype) -> None:
        self.root = Path(root) if root is not None else None
        self.device = device
        self.dtype = dtype
        self.attached = False
        self.loads = 0
        self.encoder_calls = 0
        self._plain: dict | None = None
        """The transformer's own attention processors, put back whenever the adapter is parked."""
        self._adapter: tuple[dict, torch.nn.Module] | None = None
        """(IP attention processors, image projection) once loaded, attached or parked."""
        self._pipe = None
        """The pipeline the image encoder was registered on by `load_ip_adapter`."""
        self._embeds = BoundedCache(EMBED_CACHE_SIZE)

    def reset(self) -> None:
        """The pipeline is gone: forget the adapter and its encoder (cached embeddings stay valid)."""
        self.attached = False
        self._plain = None
        self._adapter = None
        self._pipe = None

    def apply(self, pipe, slot: tuple[AvatarRef, float] | None) -> dict:
        """Attach the adapter at the slot's weight and return the call kwargs; park it and return {} for None."""
        if slot is None:
            self.park(pipe)
            return {}
        ref, weight = slot
        files = flux_ip_files(self.root, ref)
        self._attach(pipe, files)
        pos, neg = self.embeds(ref, files)
        pipe.set_ip_adapter_scale(float(weight))
        return {
            "ip_adapter_image_embeds": [pos.to(self.device)],
            "negative_ip_adapter_image_embeds": [neg.to(self.device)],
        }

    def park(self, pipe) -> None:
        if not self.attached:
            return
        transformer = pipe.transformer
        transformer.encoder_hid_proj = None
        transformer.set_attn_processor(dict(self._plain))  # set_attn_processor pops from the dict it gets
        self.attached = False
        log.debug("Flux IP-Adapter parked")

    def _attach(self, pipe, files: IPFiles) -> None:
        if self.attached:
            return
        transformer = pipe.transformer
        self._plain = dict(transformer.attn_processors)
        if self._adapter is not None:
            procs, proj = self._adapter
            transformer.encoder_hid_proj = proj
            transformer.set_attn_processor(dict(procs))
            self.attached = True
            return
        try:
            with _quiet():
                pipe.load_ip_adapter(
                    str(files.weights.parent),
                    weight_name=files.weights.name,
                    image_encoder_pretrained_model_name_or_path=str(files.encoder),
                    image_encoder_dtype=self.dtype,
                    local_files_only=True,
                )
        except Exception as exc:
            transformer.encoder_hid_proj = None  # a half-done load must not stay on the model
            transformer.set_attn_processor(dict(self._plain))
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UnsupportedFeature(
                f"the Flux IP-Adapter {files.weights} (image encoder {files.encoder}/) does not fit the loaded model: "
                f"{reason[:300]}"
            ) from exc
        self._adapter = (dict(transformer.attn_processors), transformer.encoder_hid_proj)
        self._pipe = pipe
        self.attached = True
        self.loads += 1
        log.debug("Flux IP-Adapter loaded from %s", files.weights)

    # -- image embeddings ------------------------------------------------------------------------

    def embeds(self, ref: AvatarRef, files: IPFiles) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) embeddings [1, images, width] of the avatar; cached by digest (after `_attach`)."""
        key = (ref.digest, str(files.encoder), str(self.dtype))
        pos = self._embeds.get_or_make(key, lambda: self._encode(ref))
        neg = self._embeds.get_or_make(("black", str(files.encoder), str(self.dtype)), self._encode_black)
        return pos, neg

    def _encode(self, ref: AvatarRef) -> torch.Tensor:
        images = [_open_rgb(path, ref) for path in ref.files]
        if not images:
            raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r} has no image")
        return self._run_encoder(images)

    def _encode_black(self) -> torch.Tensor:
        from PIL import Image

        # What the pipeline encodes as the negative when given none: a black image (its size does not matter,
        # the processor resizes a constant image to a constant image).
        return self._run_encoder([Image.new("RGB", (64, 64))])

    def _run_encoder(self, images: list) -> torch.Tensor:
        pipe = self._pipe
        if pipe is None or getattr(pipe, "image_encoder", None) is None:
            raise UnsupportedFeature("the Flux IP-Adapter's image encoder is not loaded")
        self.encoder_calls += 1
        with torch.inference_mode():
            embeds = pipe.encode_image(images, self.device, 1)  # [images, width]
        return embeds[None].clone()
