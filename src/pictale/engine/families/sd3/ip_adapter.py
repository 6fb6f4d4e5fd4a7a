"""Face and style avatars on SD3 through diffusers' SD3 IP-Adapter (`SD3IPAdapterMixin`, InstantX format).

Files under the IP-Adapter root (`Settings.ip_adapter_path`), beside the h94 layout of SD 1.5/SDXL:

    sd3/ip-adapter.safetensors   InstantX/SD3.5-Large-IP-Adapter's weights (`image_proj.*`, `ip_adapter.<i>.*`),
                                 saved as safetensors (the hub's ip-adapter.bin is a pickle: never read)
    sd3/image_encoder/           its SigLIP vision encoder, google/siglip-so400m-patch14-384 (config.json,
                                 model.safetensors, preprocessor_config.json)

Face and style use the same adapter (InstantX made one). diffusers' SD3 IP-Adapter takes one adapter, one
image embedding per prompt and one scale, so an SD3 job has at most one face/style token (more are a 422 from
`family_support` before queueing), and an avatar with several images gets the mean of their embeddings.

Embeddings are what the pipeline's own `encode_image` computes (the encoder's penultimate hidden states, zeros
as the negative), cached by avatar digest. The encoder is loaded here, never registered on the pipeline. A job
without face/style parks the adapter: the transformer gets its original attention processors back, so it runs
exactly as if no IP-Adapter had ever been loaded, and the next face job re-attaches it without a reload.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarRef
from pictale.engine.adapters.unet_ip import EMBED_CACHE_SIZE, IPFiles, _open_rgb, _quiet, _read_adapter
from pictale.engine.families.support import SD3_IP_ENCODER, SD3_IP_WEIGHTS, missing_sd3_ip_adapter
from pictale.engine.runtime import BoundedCache

log = logging.getLogger(__name__)


def sd3_ip_files(root: Path | None, ref: AvatarRef) -> IPFiles:
    """The SD3 adapter and encoder for `ref`; UnsupportedFeature saying where to put them when absent."""
    message = missing_sd3_ip_adapter(root, ref)
    if message is not None:
        raise UnsupportedFeature(message)
    return IPFiles(Path(root) / SD3_IP_WEIGHTS, Path(root) / SD3_IP_ENCODER)


def sd3_embeds_kwargs(pair: tuple[torch.Tensor, torch.Tensor] | None, cfg: bool, device, dtype) -> dict:
    """`ip_adapter_image_embeds` for one prompt: [negative, positive] with CFG (the pipeline chunks it in two
    and repeats each half per prompt itself), else [positive]."""
    if pair is None:
        return {}
    pos, neg = pair
    rows = [neg, pos] if cfg else [pos]
    return {"ip_adapter_image_embeds": torch.stack(rows).to(device=device, dtype=dtype)}


class SD3IPAdapter:
    """The SD3 IP-Adapter of one pipeline's transformer (attached, parked or not loaded) and its embeddings."""

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
        self._encoder: tuple | None = None
        self._embeds = BoundedCache(EMBED_CACHE_SIZE)

    def reset(self) -> None:
        """The pipeline is gone: forget the adapter and free the encoder (embeddings stay valid)."""
        self.attached = False
        self._plain = None
        self._adapter = None
        self._encoder = None

    def apply(self, pipe, slot: tuple[AvatarRef, float] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Attach the adapter at the slot's scale and return its (positive, negative) embeds; park it for None."""
        if slot is None:
            self.park(pipe)
            return None
        ref, weight = slot
        files = sd3_ip_files(self.root, ref)
        pair = self.embeds(ref, files)
        self._attach(pipe, files)
        pipe.set_ip_adapter_scale(float(weight))
        return pair

    def park(self, pipe) -> None:
        if not self.attached:
            return
        transformer = pipe.transformer
        # The projection first: its resampler's attention layers count as processors of the transformer too.
        transformer.image_proj = None
        transformer.set_attn_processor(dict(self._plain))  # set_attn_processor pops from the dict it gets
        self.attached = False
        log.debug("SD3 IP-Adapter parked")

    def _attach(self, pipe, files: IPFiles) -> None:
        if self.attached:
            return
        transformer = pipe.transformer
        self._plain = dict(transformer.attn_processors)
        if self._adapter is not None:
            procs, proj = self._adapter
            transformer.image_proj = proj
            transformer.set_attn_processor(dict(procs))
            self.attached = True
            return
        state = _read_adapter(files.weights)
        try:
            with _quiet():
                pipe.load_ip_adapter(state, image_encoder_folder=None)
        except Exception as exc:
            transformer.image_proj = None  # a half-done load must not stay on the model
            transformer.set_attn_processor(dict(self._plain))
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UnsupportedFeature(
                f"the SD3 IP-Adapter {files.weights} does not fit the loaded model: {reason[:300]}"
            ) from exc
        self._adapter = (dict(transformer.attn_processors), transformer.image_proj)
        self.attached = True
        self.loads += 1
        log.debug("SD3 IP-Adapter loaded from %s", files.weights)

    # -- image embeddings ------------------------------------------------------------------------

    def embeds(self, ref: AvatarRef, files: IPFiles) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) [tokens, width] embeddings of the avatar, its images averaged; cached by digest."""
        key = (ref.digest, str(files.encoder), str(self.dtype))
        return self._embeds.get_or_make(key, lambda: self._encode(ref, files))

    def _encode(self, ref: AvatarRef, files: IPFiles) -> tuple[torch.Tensor, torch.Tensor]:
        images = [_open_rgb(path, ref) for path in ref.files]
        if not images:
            raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r} has no image")
        encoder, processor = self._load_encoder(files.encoder)
        pixels = processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        self.encoder_calls += 1
        with torch.inference_mode():
            hidden = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        # One image is used as is (bit for bit what diffusers' encode_image gives); several are averaged in
        # float32, since the SD3 pipeline has a slot for one image only.
        pos = hidden[0] if len(images) == 1 else hidden.float().mean(dim=0).to(hidden.dtype)
        return pos, torch.zeros_like(pos)

    def _load_encoder(self, folder: Path) -> tuple:
        if self._encoder is not None and self._encoder[0] == folder:
            return self._encoder[1:]
        from transformers import SiglipImageProcessor, SiglipVisionModel

        try:
            encoder = SiglipVisionModel.from_pretrained(
                folder, dtype=self.dtype, use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise UnsupportedFeature(
                f"cannot load the SD3 IP-Adapter image encoder {folder}/ (a SigLIP vision model, safetensors): {exc}"
            ) from exc
        encoder = encoder.to(self.device).eval()
        if (folder / "preprocessor_config.json").is_file():
            processor = SiglipImageProcessor.from_pretrained(folder)
        else:  # SigLIP's own preprocessing (mean/std 0.5) at the encoder's size
            size = encoder.config.image_size
            processor = SiglipImageProcessor(size={"height": size, "width": size})
        self._encoder = (folder, encoder, processor)
        return encoder, processor
