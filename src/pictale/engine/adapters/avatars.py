"""Avatars applied per job on the loaded pipeline: LoRA, textual-inversion embeddings, IP-Adapter, OpenPose.

The base model is never reloaded. Each job sets the whole adapter state it needs, so nothing leaks from the job
before:

- LoRA: loaded once per digest as the named adapter `be_lora_<digest[:12]>` and kept (least recently used ones
  are deleted past MAX_LORAS); a job activates only its own with their weights (`set_adapters`); a job without
  LoRA disables them all, which is bit-identical to a pipeline that never loaded one. Never fused.
- Embeddings: loaded once per digest under `ref.token` (both encoders for SDXL `clip_l`/`clip_g` files). The
  weight of an embedding is the prompt's business (the service writes the token, or `(token:w)`).
- Face / style: one IP-Adapter slot per avatar with its own scale (`adapters.unet_ip`); no slots, no IP-Adapter.
- Pose: an OpenPose ControlNet (`<controlnet_path>/openpose-<family>/`, diffusers folder, safetensors),
  one per pose avatar (MultiControlNetModel of the same model), on a `from_pipe` variant of the base pipeline.

On SD3: LoRA (on the transformer and the CLIP encoders) and one face or style avatar through diffusers' SD3
IP-Adapter (`families.sd3.ip_adapter`); pose and embedding avatars are refused with a 422 (`family_support`).

On FLUX.1: LoRA in every format diffusers converts (peft, ai-toolkit, kohya, XLabs), one face or style avatar
through the XLabs IP-Adapter (`families.flux.ip_adapter`) and pose avatars through a union ControlNet
(`families.flux.controlnet`). The Flux generation path calls, per job:

- `job.flux_ip`: kwargs for EVERY pipeline call of the job ({} without face/style; while an IP-Adapter is
  attached a call without them fails);
- with `job.poses`: `adapters.flux_controlnet_pipeline(base, mode, len(job.poses))` instead of the plain
  variant, called with `job.flux_control_kwargs(width, height)` (control_image, control_mode,
  controlnet_conditioning_scale); the seed draws the same noise as without a pose.

Token order never matters: avatars are merged by (kind, digest) (weights summed exactly) and sorted. Weight 0
(after merging) means the avatar is not applied at all, so the image is exactly the one without its token.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file as load_safetensors

from pictale.core.errors import ModelLoadError, UnsupportedFeature
from pictale.core.images import resize_image
from pictale.core.types import AvatarKind, AvatarRef, Mode
from pictale.engine.adapters.unet_ip import IPAdapterSlots, batch_embeds, ip_files
from pictale.engine.checks.adapter_fit import (
    ModelDims,
    check_adapter_fit,
    check_flux_adapter_fit,
    controlnet_folder,
    flux_dims,
    lora_family_hint,
)
from pictale.engine.families.flux.controlnet import FluxControlNets
from pictale.engine.families.flux.ip_adapter import FluxIPAdapter
from pictale.engine.families.sd3.ip_adapter import SD3IPAdapter, sd3_embeds_kwargs
from pictale.engine.families.support import T5_FAMILIES, check_avatars, lora_mismatch_message

MAX_LORAS = 16
_KIND_ORDER = {AvatarKind.FACE: 0, AvatarKind.STYLE: 1, AvatarKind.POSE: 2, AvatarKind.LORA: 3, AvatarKind.EMBEDDING: 4}


def canonical(avatars: tuple[AvatarRef, ...] | list[AvatarRef]) -> list[tuple[AvatarRef, float]]:
    """Avatars merged by (kind, digest) with exactly summed weights, zero weights dropped, in a fixed order."""
    groups: dict[tuple[AvatarKind, str], list[AvatarRef]] = {}
    for ref in avatars:
        groups.setdefault((ref.kind, ref.digest), []).append(ref)
    merged = []
    for _key, refs in sorted(groups.items(), key=lambda item: (_KIND_ORDER[item[0][0]], item[0][1])):
        weight = math.fsum(r.weight for r in refs)
        if weight != 0:
            merged.append((min(refs, key=lambda r: r.name), weight))
    return merged


def lora_adapter_name(digest: str) -> str:
    """Descriptive, never a substring of a module name (offline-models.md error #7)."""
    return f"be_lora_{digest[:12]}"


@dataclass
class JobAdapters:
    """What one job adds to its pipeline calls, built by `AvatarAdapters.apply`."""

    text_key: tuple = ()
    """Changes whenever prompt embeddings would: active text-encoder LoRAs and loaded embeddings."""
    ip_embeds: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    poses: list[tuple[Image.Image, float]] = field(default_factory=list)
    sd3_ip: tuple[torch.Tensor, torch.Tensor] | None = None
    """SD3: the (positive, negative) embeddings of the job's one face/style avatar."""
    flux_ip: dict = field(default_factory=dict)
    """FLUX.1: the IP-Adapter kwargs (`ip_adapter_image_embeds`, ...) for every pipeline call of the job."""
    flux_controlnets: FluxControlNets | None = None

    def flux_control_kwargs(self, width: int, height: int) -> dict:
        """FLUX.1: control_image / control_mode / controlnet_conditioning_scale of the job's poses ({} if none)."""
        if not self.poses or self.flux_controlnets is None:
            return {}
        return self.flux_controlnets.call_kwargs(self.poses, width, height)

    def ip_kwargs(self, batch: int, cfg: bool, device, dtype) -> dict:
        if not self.ip_embeds:
            return {}
        return {"ip_adapter_image_embeds": batch_embeds(self.ip_embeds, batch, cfg, device, dtype)}

    def sd3_ip_kwargs(self, cfg: bool, device, dtype) -> dict:
        return sd3_embeds_kwargs(self.sd3_ip, cfg, device, dtype)

    def control_kwargs(self, mode: Mode, width: int, height: int) -> dict:
        """ControlNet arguments with each pose resized (crop and resize, A1111's default) to the output size."""
        if not self.poses:
            return {}
        images = [resize_image(1, img, width, height) for img, _ in self.poses]
        scales = [float(w) for _, w in self.poses]
        single = len(images) == 1
        key = "image" if mode is Mode.TXT2IMG else "control_image"
        return {key: images[0] if single else images, "controlnet_conditioning_scale": scales[0] if single else scales}


class AvatarAdapters:
    """Adapter state of the engine's loaded pipeline; `apply` is called by the worker before each job."""

    def __init__(self, *, ip_adapter_path: Path | None, controlnet_path: Path | None, device: str, dtype) -> None:
        self.controlnet_path = Path(controlnet_path) if controlnet_path is not None else None
        self.device = device
        self.dtype = dtype
        self.ip = IPAdapterSlots(ip_adapter_path, device=device, dtype=dtype)
        self.sd3_ip = SD3IPAdapter(ip_adapter_path, device=device, dtype=dtype)
        self.flux_ip = FluxIPAdapter(ip_adapter_path, device=device, dtype=dtype)
        self.flux_cn = FluxControlNets(controlnet_path, device=device, dtype=dtype)
        self.dims: ModelDims | None = None
        """The loaded model's shapes that adapter files must fit (`checks.adapter_fit`), set on load."""

        self._loras: OrderedDict[str, bool] = OrderedDict()  # adapter name -> touches a text encoder
        self._active: tuple[tuple[str, float], ...] | None = None
        self._tokens: set[str] = set()
        self._embedding_digests: set[str] = set()
        self._controlnets: dict[str, object] = {}
        self._cn_pipes: dict[tuple[Mode, int], object] = {}
        self.lora_slots = None
        """Compiled UNet: LoRAs go into hot-swapped slots (`speed.lora_slots.LoraSlots`), set after `use`."""
        self.loads: Counter[str] = Counter()
        """LoRAs and embeddings loaded onto a pipeline ("lora:DIGEST"): what avatar affinity on Ray saves."""

    def use(self, ip_adapter_path: Path | None, controlnet_path: Path | None, dims: ModelDims | None) -> None:
        """Adapter folders and shapes for the model just loaded (the demo has its own folders, beside it)."""
        self.reset()
        self.ip.root = Path(ip_adapter_path) if ip_adapter_path is not None else None
        self.sd3_ip.root = self.flux_ip.root = self.ip.root
        self.controlnet_path = Path(controlnet_path) if controlnet_path is not None else None
        if self.flux_cn.root != self.controlnet_path:
            self.flux_cn = FluxControlNets(self.controlnet_path, device=self.device, dtype=self.dtype)
        self.dims = dims

    def load_counts(self) -> dict[str, int]:
        """Adapter loads so far: LoRAs, embeddings, and face/style image embeddings computed ("face:DIGEST")."""
        return dict(self.loads + self.ip.encoded)

    def reset(self) -> None:
        """The pipeline is gone (unload / other checkpoint): everything applied to it goes with it."""
        self._loras.clear()
        self._active = None
        self._tokens.clear()
        self._embedding_digests.clear()
        self._controlnets.clear()
        self._cn_pipes.clear()
        self.lora_slots = None
        self.ip.reset()
        self.sd3_ip.reset()
        self.flux_ip.reset()
        self.flux_cn.reset()

    # -- per job ---------------------------------------------------------------------------------

    def apply(self, pipe, family: str, avatars: tuple[AvatarRef, ...]) -> JobAdapters:
        """Set the pipeline's adapters to exactly this job's avatars; returns the job's call arguments."""
        refs = canonical(avatars)
        check_avatars(avatars, family)  # the service checked already; this guards other callers
        by_kind: dict[AvatarKind, list[tuple[AvatarRef, float]]] = {kind: [] for kind in AvatarKind}
        for ref, weight in refs:
            by_kind[ref.kind].append((ref, weight))
        for ref, _ in by_kind[AvatarKind.EMBEDDING]:
            self._load_embedding(pipe, family, ref)
        text_loras = self._apply_loras(pipe, family, by_kind[AvatarKind.LORA])
        job = JobAdapters(text_key=(text_loras, tuple(sorted(self._tokens))))

        ip_refs = by_kind[AvatarKind.FACE] + by_kind[AvatarKind.STYLE]
        if self.dims is not None:  # before any adapter is loaded: a file that does not fit is a 422, not a crash
            check_adapter_fit(avatars, self.dims, self.ip.root, self.controlnet_path)
        if family == "flux":  # check_avatars allowed at most one face/style
            name = Path(getattr(pipe, "name_or_path", None) or "FLUX.1").name
            check_flux_adapter_fit(
                avatars, flux_dims(pipe.transformer.config, name), self.ip.root, self.controlnet_path
            )
            job.flux_ip = self.flux_ip.apply(pipe, ip_refs[0] if ip_refs else None)
            if by_kind[AvatarKind.POSE]:
                self.flux_cn.net(by_kind[AvatarKind.POSE][0][0].name)
                job.poses = [(_pose_image(ref), weight) for ref, weight in by_kind[AvatarKind.POSE]]
                job.flux_controlnets = self.flux_cn
            return job
        if family in T5_FAMILIES:  # check_avatars allowed at most one
            job.sd3_ip = self.sd3_ip.apply(pipe, ip_refs[0] if ip_refs else None)
            return job
        slots = [(ip_files(self.ip.root, family, ref.kind, ref.name), weight) for ref, weight in ip_refs]
        job.ip_embeds = [self.ip.embeds(ref, files) for (ref, _), (files, _) in zip(ip_refs, slots, strict=True)]
        if self.ip.apply(pipe, slots):
            self._cn_pipes.clear()  # variants are built after the IP-Adapter state (offline-models.md #11)

        if by_kind[AvatarKind.POSE]:
            self._controlnet(family, by_kind[AvatarKind.POSE][0][0].name)
            job.poses = [(_pose_image(ref), weight) for ref, weight in by_kind[AvatarKind.POSE]]
        return job

    def controlnet_pipeline(self, base, family: str, mode: Mode, count: int):
        """The ControlNet variant of `base` for `mode` with `count` pose inputs, shared weights, cached."""
        key = (mode, count)
        pipe = self._cn_pipes.get(key)
        if pipe is None:
            from diffusers import (
                AutoPipelineForImage2Image,
                AutoPipelineForInpainting,
                AutoPipelineForText2Image,
                MultiControlNetModel,
            )

            net = self._controlnets[family]
            controlnet = net if count == 1 else MultiControlNetModel([net] * count)
            cls = {
                Mode.TXT2IMG: AutoPipelineForText2Image,
                Mode.IMG2IMG: AutoPipelineForImage2Image,
                Mode.INPAINT: AutoPipelineForInpainting,
            }[mode]
            pipe = cls.from_pipe(base, controlnet=controlnet)
            pipe.set_progress_bar_config(disable=True)
            self._cn_pipes[key] = pipe
        return pipe

    def flux_controlnet_pipeline(self, base, mode: Mode, count: int):
        """FLUX.1: the union-ControlNet variant of `base` for `mode` with `count` poses, shared weights, cached."""
        return self.flux_cn.pipeline(base, mode, count)

    # -- LoRA ------------------------------------------------------------------------------------

    def _apply_loras(self, pipe, family: str, loras: list[tuple[AvatarRef, float]]) -> tuple:
        if self.lora_slots is not None:
            return self.lora_slots.apply(pipe, family, loras, _single_file)
        keep = {lora_adapter_name(ref.digest) for ref, _ in loras}
        names = [self._load_lora(pipe, family, ref, keep) for ref, _ in loras]
        active = tuple(zip(names, (float(w) for _, w in loras), strict=True))
        if active != self._active:
            if active:
                pipe.enable_lora()
                pipe.set_adapters(list(names), [w for _, w in active])
            elif self._loras:
                pipe.disable_lora()
            self._active = active
        return tuple((name, w) for name, w in active if self._loras[name])

    def _load_lora(self, pipe, family: str, ref: AvatarRef, keep: set[str]) -> str:
        name = lora_adapter_name(ref.digest)
        if name in self._loras:
            self._loras.move_to_end(name)
            return name
        path = _single_file(ref)
        trained_for = ref.family or lora_family_hint(path)
        if trained_for is None and family in T5_FAMILIES:
            trained_for = "a UNet model (SD 1.5/SDXL)"  # no transformer.* keys: nothing of it fits SD3
        if trained_for and trained_for != family:
            raise UnsupportedFeature(lora_mismatch_message(ref.name, trained_for, family))
        while len(self._loras) >= MAX_LORAS:
            old = next((n for n in self._loras if n not in keep), None)
            if old is None:
                break
            pipe.delete_adapters(old)
            del self._loras[old]
            self._active = None
        try:
            pipe.load_lora_weights(load_safetensors(str(path)), adapter_name=name)
        except Exception as exc:
            self._drop_partial(pipe, name)
            reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UnsupportedFeature(
                f"lora {ref.name!r} does not fit the loaded model ({family}): {reason[:300]}"
            ) from exc
        parts = {part for part, names in pipe.get_list_adapters().items() if name in names}
        if not parts:
            raise UnsupportedFeature(f"lora {ref.name!r} has no layers that match the loaded model ({family})")
        self._loras[name] = any(part.startswith("text_encoder") for part in parts)
        self.loads[f"lora:{ref.digest[:16]}"] += 1
        self._active = None  # a fresh adapter is active on load: set the job's set again
        return name

    @staticmethod
    def _drop_partial(pipe, name: str) -> None:
        try:
            if any(name in names for names in pipe.get_list_adapters().values()):
                pipe.delete_adapters(name)
        except Exception:  # the load failed half-way; nothing more to undo
            pass

    # -- embeddings ------------------------------------------------------------------------------

    def _load_embedding(self, pipe, family: str, ref: AvatarRef) -> None:
        if ref.digest in self._embedding_digests:
            return
        from safetensors.torch import load_file

        token = ref.token or ref.name
        tensors = load_file(str(_single_file(ref)))
        xl = getattr(pipe, "text_encoder_2", None) is not None
        sdxl_file = "clip_l" in tensors or "clip_g" in tensors
        trained_for = "sdxl" if sdxl_file else (ref.family or "sd15")
        if xl != sdxl_file or (ref.family and ref.family != family):
            raise UnsupportedFeature(
                f"embedding {ref.name!r} was trained for {ref.family or trained_for}; the loaded model is {family}"
            )
        if sdxl_file:
            parts = [(tensors.get("clip_l"), pipe.text_encoder, pipe.tokenizer)]
            parts.append((tensors.get("clip_g"), pipe.text_encoder_2, pipe.tokenizer_2))
        else:
            vectors = tensors.get("emb_params")
            if vectors is None and len(tensors) == 1:
                vectors = next(iter(tensors.values()))
            parts = [(vectors, pipe.text_encoder, pipe.tokenizer)]
        for vectors, encoder, _tokenizer in parts:
            width = encoder.get_input_embeddings().weight.shape[-1]
            if vectors is None or vectors.ndim not in (1, 2) or vectors.shape[-1] != width:
                raise UnsupportedFeature(f"embedding {ref.name!r} does not fit the loaded model ({family})")
        for vectors, encoder, tokenizer in parts:
            try:
                pipe.load_textual_inversion(vectors, token=token, text_encoder=encoder, tokenizer=tokenizer)
            except ValueError as exc:
                raise UnsupportedFeature(f"embedding {ref.name!r} cannot be loaded: {exc}") from exc
        self._embedding_digests.add(ref.digest)
        self.loads[f"embedding:{ref.digest[:16]}"] += 1
        self._tokens.add(token)

    # -- ControlNet ------------------------------------------------------------------------------

    def _controlnet(self, family: str, name: str):
        net = self._controlnets.get(family)
        if net is not None:
            return net
        if self.controlnet_path is None:
            raise UnsupportedFeature(f"pose avatar {name!r} needs an OpenPose ControlNet; none is configured")
        folder = controlnet_folder(self.controlnet_path, family)
        if not (folder / "config.json").is_file():
            raise UnsupportedFeature(f"pose avatar {name!r} needs the OpenPose ControlNet {folder}/ (not found)")
        from diffusers import ControlNetModel

        try:
            net = ControlNetModel.from_pretrained(folder, use_safetensors=True, local_files_only=True, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise UnsupportedFeature(
                f"cannot load the OpenPose ControlNet {folder}/ (safetensors only): {exc}"
            ) from exc
        net = net.to(self.device).eval()
        self._controlnets[family] = net
        return net


def _single_file(ref: AvatarRef) -> Path:
    if not ref.files:
        raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r} has no file")
    path = Path(ref.files[0])
    # Avatar blobs are content-addressed (no suffix) and were checked as safetensors at upload; files from
    # the models dir must say what they are. Either way they are only ever parsed as safetensors.
    if ref.source != "avatar" and path.suffix.lower() != ".safetensors":
        raise UnsupportedFeature(f"{ref.kind.value} avatar {ref.name!r}: only .safetensors files are loaded")
    if not path.is_file():
        raise ModelLoadError(f"{ref.kind.value} avatar {ref.name!r}: its file {path} is missing")
    return path


def _pose_image(ref: AvatarRef) -> Image.Image:
    if not ref.files:
        raise UnsupportedFeature(f"pose avatar {ref.name!r} has no image")
    try:
        with Image.open(ref.files[0]) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise UnsupportedFeature(f"pose avatar {ref.name!r}: cannot read image {Path(ref.files[0]).name}") from exc
