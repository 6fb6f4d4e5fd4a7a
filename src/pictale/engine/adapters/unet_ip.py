"""IP-Adapter face and style avatars: one adapter slot per avatar, image embeddings computed once per avatar.

Files looked for under the IP-Adapter root (`settings.ip_adapter_path`), in the `h94/IP-Adapter` layout:

    family  kind   adapter weights                                              image encoder
    sd15    face   models/ip-adapter-full-face_sd15.safetensors                 models/image_encoder/
    sd15    style  models/ip-adapter_sd15.safetensors                           models/image_encoder/
    sdxl    face   sdxl_models/ip-adapter-plus-face_sdxl_vit-h.safetensors      models/image_encoder/  (ViT-H)
                   or, when that file or models/image_encoder/ is absent,
                   sdxl_models/ip-adapter_sdxl.safetensors                      sdxl_models/image_encoder/
    sdxl    style  sdxl_models/ip-adapter_sdxl.safetensors                      sdxl_models/image_encoder/
    sd3     both   sd3/ip-adapter.safetensors (InstantX SD3.5-Large-IP-Adapter)  sd3/image_encoder/  (SigLIP)

SD3 has its own code (`families.sd3.ip_adapter`: one adapter, one face or style per job); this module is the UNet's.
Only .safetensors adapter files and safetensors image encoders are read. A missing file raises
UnsupportedFeature naming the path. The image encoders are loaded here, not registered on the pipeline: every
slot gets precomputed `ip_adapter_image_embeds`, so slots may use different encoders (SDXL plus-face beside a
basic style adapter) and the pipeline never encodes an image itself.

Embeddings are built the way diffusers' `prepare_ip_adapter_image_embeds` builds them (checked bit for bit):
basic projections use `image_embeds` with zeros as the negative; full-face / plus projections use the
penultimate hidden states, with the encoder's output for an all-zero image as the negative.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarRef
from pictale.engine.checks.adapter_fit import IPFiles, ip_files  # noqa: F401 (re-exported)
from pictale.engine.runtime import BoundedCache

log = logging.getLogger(__name__)

EMBED_CACHE_SIZE = 256
STATE_CACHE_MAX_BYTES = 256 * 1024 * 1024
_QUIET_LOGGERS = ("diffusers.loaders.ip_adapter", "diffusers.models.modeling_utils")


def _read_adapter(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            part, _, rest = key.partition(".")
            if part in state:
                state[part][rest] = f.get_tensor(key)
    if not state["image_proj"] or not state["ip_adapter"]:
        raise UnsupportedFeature(f"{path.name}: not an IP-Adapter file (no image_proj.* / ip_adapter.* keys)")
    return state


def uses_hidden_states(state: dict[str, dict[str, torch.Tensor]]) -> bool:
    """diffusers' rule: only the basic ImageProjection (`proj.weight`) takes `image_embeds`."""
    return "proj.weight" not in state["image_proj"]


@contextlib.contextmanager
def _quiet():
    """load_ip_adapter warns that no image encoder was loaded: on purpose here (embeds are precomputed)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class IPAdapterSlots:
    """The IP-Adapter slot layout on one pipeline's UNet, adapter state dicts and per-avatar image embeddings."""

    def __init__(self, root: Path | None, *, device: str, dtype: torch.dtype) -> None:
        self.root = Path(root) if root is not None else None
        self.device = device
        self.dtype = dtype
        self.layout: tuple[Path, ...] = ()
        self.encoder_calls = 0
        self.encoded: Counter[str] = Counter()
        """Image embeddings computed per avatar ("face:DIGEST"); a cache hit does not count."""
        self._states: dict[Path, dict] = {}
        self._encoders: dict[Path, tuple] = {}
        self._embeds = BoundedCache(EMBED_CACHE_SIZE)
        self._parked: tuple | None = None
        """(layout, attention processors, encoder_hid_proj, encoder_hid_dim_type) of a detached layout."""

    def reset(self) -> None:
        """Forget the slot layout and free the encoders (the pipeline they were applied to is gone)."""
        self.layout = ()
        self._parked = None
        self._encoders.clear()

    def apply(self, pipe, slots: Sequence[tuple[IPFiles, float]]) -> bool:
        """Load the slot layout if it changed and set one scale per slot; True when the layout changed."""
        layout = tuple(files.weights for files, _ in slots)
        changed = layout != self.layout
        if changed:
            if self.layout:
                self._detach(pipe, park=not layout)
            self.layout = ()
            if layout and self._parked is not None and self._parked[0] == layout:
                self._reattach(pipe)
            elif layout:
                self._parked = None
                states = [self._state(path) for path in layout]
                previous = getattr(pipe, "feature_extractor", None)
                with _quiet():
                    pipe.load_ip_adapter(
                        states,
                        subfolder=[""] * len(states),
                        weight_name=[p.name for p in layout],
                        image_encoder_folder=None,
                    )
                if hasattr(pipe, "feature_extractor") and pipe.feature_extractor is not previous:
                    pipe.register_modules(feature_extractor=previous)  # the stub it registers is never used
            self.layout = layout
            log.debug("IP-Adapter layout: %s", [p.name for p in layout] or "none")
        if slots:
            pipe.set_ip_adapter_scale([float(weight) for _, weight in slots])
        return changed

    def _detach(self, pipe, *, park: bool) -> None:
        """Take the layout off the UNet. Parked (a job without faces/styles), it comes back in a few ms
        instead of a full reload: a stream that alternates LoRA and face avatars would otherwise pay ~50 ms
        per switch. Detached, the UNet runs exactly as without an IP-Adapter (diffusers' own unload)."""
        unet = pipe.unet
        self._parked = (
            (self.layout, dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
            if park
            else None
        )
        pipe.unload_ip_adapter()

    def _reattach(self, pipe) -> None:
        layout, procs, proj, dim_type = self._parked
        unet = pipe.unet
        unet.set_attn_processor(procs)
        unet.encoder_hid_proj = proj
        unet.config.encoder_hid_dim_type = dim_type
        self._parked = None
        log.debug("IP-Adapter layout re-attached: %s", [p.name for p in layout])

    def _state(self, path: Path) -> dict:
        """Adapter state dicts stay in RAM, so a new layout (another face count) does not re-read the disk.

        On CPU the UNet's slot weights are these very tensors (no copy); on a GPU they are a second copy, kept
        only for files up to STATE_CACHE_MAX_BYTES (SD 1.5 adapters; the SDXL ones are re-read).
        """
        state = self._states.get(path)
        if state is None:
            state = _read_adapter(path)
            if str(self.device).startswith("cpu") or path.stat().st_size <= STATE_CACHE_MAX_BYTES:
                self._states[path] = state
        return state

    # -- image embeddings ------------------------------------------------------------------------

    def embeds(self, ref: AvatarRef, files: IPFiles) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) embeddings of the avatar's images: [images, ...], cached by digest and encoder."""
        hidden = uses_hidden_states(self._state(files.weights))
        key = (ref.digest, str(files.encoder), hidden, str(self.dtype))
        return self._embeds.get_or_make(key, lambda: self._encode(ref, files, hidden))

    def _encode(self, ref: AvatarRef, files: IPFiles, hidden: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images = [_open_rgb(path, ref) for path in ref.files]
        if not images:
            raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r} has no image")
        encoder, processor = self._encoder(files.encoder)
        pixels = processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        self.encoder_calls += 1
        self.encoded[f"{ref.kind.value}:{ref.digest[:16]}"] += 1
        with torch.inference_mode():
            if hidden:
                pos = encoder(pixels, output_hidden_states=True).hidden_states[-2]
                neg = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
            else:
                pos = encoder(pixels).image_embeds
                neg = torch.zeros_like(pos)
        return pos, neg

    def _encoder(self, folder: Path) -> tuple:
        hit = self._encoders.get(folder)
        if hit is not None:
            return hit
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        try:
            encoder = CLIPVisionModelWithProjection.from_pretrained(
                folder, dtype=self.dtype, use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise UnsupportedFeature(f"cannot load the IP-Adapter image encoder {folder}/: {exc}") from exc
        encoder = encoder.to(self.device).eval()
        if (folder / "preprocessor_config.json").is_file():
            processor = CLIPImageProcessor.from_pretrained(folder)
        else:  # h94's encoders ship without one: diffusers builds this one
            size = encoder.config.image_size
            processor = CLIPImageProcessor(size=size, crop_size=size)
        self._encoders[folder] = (encoder, processor)
        return encoder, processor


def batch_embeds(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], batch: int, cfg: bool, device, dtype
) -> list[torch.Tensor]:
    """`ip_adapter_image_embeds` with `batch` rows per half: per slot [2*batch or batch, images, ...].

    With CFG the pipeline splits each tensor in halves (negatives first, like its prompt embeds). diffusers 0.42
    repeats the embeds once per prompt itself, so the engine asks for one row (`batch=1`); more rows would give
    each prompt duplicated image tokens.
    """
    out = []
    for pos, neg in pairs:
        rows = [neg] * batch + [pos] * batch if cfg else [pos] * batch
        out.append(torch.stack(rows).to(device=device, dtype=dtype))
    return out


def _open_rgb(path: Path, ref: AvatarRef) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r}: cannot read image {Path(path).name}") from exc
