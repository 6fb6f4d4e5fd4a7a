"""LoRA avatars on a compiled UNet without recompiles: a fixed number of LoRA slots, hot-swapped.

A compiled UNet recompiles whenever its module structure or a guarded attribute changes, and loading a LoRA, setting
the active adapters or `set_adapters` (peft writes each weight as a Python float) all do that. So in compiled mode,
before the UNet is compiled, `install` loads `slots` zero LoRAs of rank `rank` on every layer a LoRA may touch (the
Linear and 1x1 convolution layers of the transformer blocks: what diffusers and kohya LoRAs train) and makes them all
active with tensor scalings (`enable_lora_hotswap` / peft's `prepare_model_for_compiled_hotswap`). Per job:

- a LoRA not in a slot is hot-swapped into one the job does not use (`load_lora_into_unet(..., hotswap=True)`):
  its weights are copied into the slot's (zero-padded) tensors, the rest of the slot is zeroed;
- weights are written into the scaling tensors in place (slot base scaling x avatar weight; unused slots 0), so a
  weight change is a tensor fill, never a recompile;
- text-encoder layers of a LoRA (not compiled; hot-swapping them is not supported by diffusers) load the ordinary
  way, one named adapter per file, and are set per job as in eager mode.

Limits, each a clear 422: more LoRAs in one image than slots, a rank above `rank`, and layers outside the slots
(LoCon/LyCORIS convolutions, ...).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from safetensors.torch import load_file as load_safetensors

from pictale.core.errors import UnsupportedFeature
from pictale.core.types import AvatarRef
from pictale.engine.checks.adapter_fit import lora_family_hint
from pictale.engine.families.support import lora_mismatch_message

log = logging.getLogger(__name__)

MAX_TEXT_LORAS = 16
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def slot_name(index: int) -> str:
    return f"pictale_slot_{index}"


def slot_targets(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers a slot covers: Linear and 1x1 Conv2d layers inside the UNet's transformer blocks (`attentions`)."""
    out = {}
    for name, module in unet.named_modules():
        if ".attentions." not in f".{name}":
            continue
        if isinstance(module, torch.nn.Linear) or (
            isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
        ):
            out[name] = module
    return out


def _zero_lora(targets: dict[str, torch.nn.Module], rank: int, device, dtype) -> dict[str, torch.Tensor]:
    state = {}
    for name, module in targets.items():
        conv = isinstance(module, torch.nn.Conv2d)
        fan_in = module.in_channels if conv else module.in_features
        fan_out = module.out_channels if conv else module.out_features
        tail = (1, 1) if conv else ()
        state[f"unet.{name}.lora_A.weight"] = torch.zeros(rank, fan_in, *tail, device=device, dtype=dtype)
        state[f"unet.{name}.lora_B.weight"] = torch.zeros(fan_out, rank, *tail, device=device, dtype=dtype)
    return state


class LoraSlots:
    """The compiled UNet's LoRA slots and the text-encoder LoRAs beside them; `apply` runs once per job."""

    def __init__(self, pipe, *, rank: int, slots: int) -> None:
        self.rank = rank
        self.count = slots
        self._resident: list[str | None] = [None] * slots  # digest per slot
        self._base: list[list[tuple[object, float]]] = [[] for _ in range(slots)]  # (layer, scaling at weight 1)
        self._weights: list[float | None] = [None] * slots
        self._text: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # adapter name -> encoders it is on
        self._text_active: tuple | None = None
        self._install(pipe)

    def _install(self, pipe) -> None:
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap

        unet = pipe.unet
        param = next(unet.parameters())
        zero = _zero_lora(slot_targets(unet), self.rank, param.device, param.dtype)
        unet.enable_lora_hotswap(target_rank=self.rank)
        names = [slot_name(i) for i in range(self.count)]
        for name in names:
            pipe.load_lora_into_unet(dict(zero), network_alphas=None, unet=unet, adapter_name=name, _pipeline=pipe)
        unet.set_adapters(names, [1.0] * len(names))  # all slots active, always: the active set never changes
        # Tensor scalings (peft writes floats on set_adapters), all slots at rank `rank`: from here on hot-swaps and
        # weight changes are in-place tensor writes.
        prepare_model_for_compiled_hotswap(unet, target_rank=self.rank, config=unet.peft_config, check_compiled="warn")
        self._layers = [m for m in unet.modules() if hasattr(m, "scaling") and names[0] in getattr(m, "scaling", {})]
        for i in range(self.count):
            self._set_weight(i, 0.0)

    # -- per job ---------------------------------------------------------------------------------

    def apply(self, pipe, family: str, loras: list[tuple[AvatarRef, float]], single_file) -> tuple:
        """Put this job's LoRAs in slots with their weights; returns the active text-encoder LoRAs (cache key)."""
        if len(loras) > self.count:
            raise UnsupportedFeature(
                f"compiled mode runs at most {self.count} LoRA avatar(s) per image (--compile-lora-slots); "
                f"this prompt has {len(loras)}"
            )
        wanted = {ref.digest for ref, _ in loras}
        weights = [0.0] * self.count
        text: list[tuple[str, float]] = []
        for ref, weight in loras:
            state, alphas, meta = self._read(pipe, family, ref, single_file)
            unet_part = any(key.startswith("unet.") for key in state)
            if unet_part:
                slot = self._slot_for(ref, wanted)
                if self._resident[slot] != ref.digest:
                    self._swap_in(pipe, slot, ref, state, alphas, meta)
                weights[slot] = float(weight)
            name = self._text_lora(pipe, ref, state, alphas, meta, wanted)
            if name is not None:
                text.append((name, float(weight)))
            if not unet_part and name is None:
                raise UnsupportedFeature(f"lora {ref.name!r} has no layers that match the loaded model ({family})")
        for slot, weight in enumerate(weights):
            self._set_weight(slot, weight)
        self._set_text(pipe, text)
        return tuple(text)

    def _read(self, pipe, family: str, ref: AvatarRef, single_file):
        path = single_file(ref)
        trained_for = ref.family or lora_family_hint(path)
        if trained_for and trained_for != family:
            raise UnsupportedFeature(lora_mismatch_message(ref.name, trained_for, family))
        kwargs = {"unet_config": pipe.unet.config} if getattr(pipe, "text_encoder_2", None) is not None else {}
        try:
            return pipe.lora_state_dict(load_safetensors(str(path)), return_lora_metadata=True, **kwargs)
        except Exception as exc:
            raise UnsupportedFeature(f"lora {ref.name!r} cannot be read: {_first_line(exc)}") from exc

    def _slot_for(self, ref: AvatarRef, wanted: set[str]) -> int:
        if ref.digest in self._resident:
            return self._resident.index(ref.digest)
        free = [i for i, digest in enumerate(self._resident) if digest not in wanted]
        return next((i for i in free if self._resident[i] is None), free[0])

    def _swap_in(self, pipe, slot: int, ref: AvatarRef, state, alphas, meta) -> None:
        for key, tensor in state.items():
            if key.startswith("unet.") and "lora_B" in key and tensor.ndim > 1 and tensor.shape[1] > self.rank:
                raise UnsupportedFeature(
                    f"lora {ref.name!r} has rank {tensor.shape[1]}; compiled mode takes LoRAs up to rank {self.rank} "
                    "(--compile-lora-rank)"
                )
        self._resident[slot] = None  # until the swap is through: a failed one leaves a slot of unknown content
        self._set_weight(slot, 0.0)
        try:
            pipe.load_lora_into_unet(
                state, network_alphas=alphas, unet=pipe.unet, adapter_name=slot_name(slot), metadata=meta,
                _pipeline=pipe, hotswap=True,
            )  # fmt: skip
        except Exception as exc:
            raise UnsupportedFeature(
                f"lora {ref.name!r} cannot be hot-swapped into the compiled model: {_first_line(exc)[:300]} "
                "(compiled mode takes LoRAs on the attention and projection layers, with one alpha for all)"
            ) from exc
        name = slot_name(slot)
        self._base[slot] = [(layer, float(layer.scaling[name])) for layer in self._layers]
        self._weights[slot] = None
        self._resident[slot] = ref.digest
        log.info("lora %s hot-swapped into slot %d", ref.name, slot)

    def _set_weight(self, slot: int, weight: float) -> None:
        if self._weights[slot] == weight:
            return
        name = slot_name(slot)
        if self._base[slot]:
            for layer, base in self._base[slot]:
                layer.scaling[name].fill_(base * weight)
        else:  # the zero placeholder: nothing to scale but keep it at 0
            for layer in self._layers:
                layer.scaling[name].fill_(0.0)
        self._weights[slot] = weight

    # -- text encoders (eager, named adapters as in `adapters.avatars`) ----------------------------

    def _text_lora(self, pipe, ref: AvatarRef, state, alphas, meta, wanted: set[str]) -> str | None:
        name = f"be_lora_te_{ref.digest[:12]}"
        if name in self._text:
            self._text.move_to_end(name)
            return name
        parts = [enc for enc in TEXT_ENCODERS if any(key.startswith(f"{enc}.") for key in state)]
        parts = [enc for enc in parts if getattr(pipe, enc, None) is not None]
        if not parts:
            return None
        from diffusers.utils.peft_utils import delete_adapter_layers

        keep = {f"be_lora_te_{digest[:12]}" for digest in wanted}
        while len(self._text) >= MAX_TEXT_LORAS:
            old = next((n for n in self._text if n not in keep), None)
            if old is None:
                break
            for enc in self._text.pop(old):
                delete_adapter_layers(getattr(pipe, enc), old)
            self._text_active = None
        for enc in parts:
            try:
                pipe.load_lora_into_text_encoder(
                    state, network_alphas=alphas, text_encoder=getattr(pipe, enc), prefix=enc, lora_scale=1.0,
                    adapter_name=name, metadata=meta, _pipeline=pipe,
                )  # fmt: skip
            except Exception as exc:
                raise UnsupportedFeature(
                    f"lora {ref.name!r} does not fit the text encoder: {_first_line(exc)}"
                ) from exc
        self._text[name] = tuple(parts)
        self._text_active = None
        return name

    def _set_text(self, pipe, active: list[tuple[str, float]]) -> None:
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        key = tuple(active)
        if key == self._text_active:
            return
        for enc in TEXT_ENCODERS:
            encoder = getattr(pipe, enc, None)
            if encoder is None or not any(enc in parts for parts in self._text.values()):
                continue
            mine = [(name, w) for name, w in active if enc in self._text[name]]
            if mine:
                enable_lora_for_text_encoder(encoder)
                set_adapters_for_text_encoder([n for n, _ in mine], encoder, [w for _, w in mine])
            else:
                disable_lora_for_text_encoder(encoder)
        self._text_active = key


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
