"""The trainable part: peft LoRA layers on the UNet/transformer (and optionally the text encoders), the optimiser.

Targets (`spec.extra["targets"]`):
- "transformer" (default on SD 1.5/SDXL): attention q/k/v/out plus `proj_in/out` and the feed-forwards of every
  transformer block: kohya's default `networks.lora` set, which A1111, ComfyUI and Forge all map.
- "attention": q/k/v/out only (diffusers' DreamBooth default; learns less, training.md §1.6).
- "all": also the ResNet convs and time-embedding projections (LoCon-like; the §1.6 learning-check recipe).
FLUX.1 always uses diffusers' Flux script set: joint attention (with the text-stream projections), both
feed-forwards, and the single blocks' q/k/v (they match `attn.to_q` etc.).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

log = logging.getLogger(__name__)

ADAPTER = "pictale_train"
_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
_TRANSFORMER = [*_ATTENTION, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
_ALL = [*_TRANSFORMER, "conv1", "conv2", "conv_shortcut", "time_emb_proj"]
SD_TARGETS = {"attention": _ATTENTION, "transformer": _TRANSFORMER, "all": _ALL}
FLUX_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def denoiser(pipe):
    """The UNet or the Flux transformer."""
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


def text_encoders(pipe, family: str) -> dict:
    """{state-dict prefix: text encoder} trained with `train_text_encoder` (none on Flux)."""
    if family == "flux":
        return {}
    found = {"text_encoder": pipe.text_encoder}
    if family == "sdxl":
        found["text_encoder_2"] = pipe.text_encoder_2
    return found


def add_lora(pipe, family: str, spec, *, train_text_encoder: bool) -> dict:
    """Freeze the base and add the LoRA layers; {"unet"|"transformer"|"text_encoder"|...: module with LoRA}.

    The initial LoRA weights come from `spec.seed` (the global RNG is forked, so nothing else is disturbed)."""
    from peft import LoraConfig, inject_adapter_in_model

    for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if (m := getattr(pipe, part, None)) is not None:
            m.requires_grad_(False)
    if family == "flux":
        targets = FLUX_TARGETS
    else:
        choice = spec.extra.get("targets", "transformer")
        if choice not in SD_TARGETS:
            raise ValueError(f"unknown LoRA targets {choice!r}: one of {', '.join(SD_TARGETS)}")
        targets = SD_TARGETS[choice]
    modules = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = denoiser(pipe)
        model.add_adapter(_config(LoraConfig, spec, targets), adapter_name=ADAPTER)
        modules["transformer" if family == "flux" else "unet"] = model
        if train_text_encoder:
            # transformers 5.25's add_adapter refuses peft 0.21 (training.md §1.2); inject directly
            for prefix, te in text_encoders(pipe, family).items():
                inject_adapter_in_model(_config(LoraConfig, spec, TE_TARGETS), te, adapter_name=ADAPTER)
                modules[prefix] = te
    for module in modules.values():
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trainable LoRA weights stay fp32 whatever the base dtype
    return modules


def _config(cls, spec, targets):
    return cls(
        r=spec.rank, lora_alpha=spec.alpha, init_lora_weights="gaussian", target_modules=list(targets), lora_dropout=0.0
    )


def trainable(modules: dict) -> list[torch.nn.Parameter]:
    """The LoRA parameters in a fixed order (module order, then parameter order): the optimiser's order."""
    return [p for m in modules.values() for p in m.parameters() if p.requires_grad]


def lora_state(modules: dict) -> dict[str, torch.Tensor]:
    """peft state dicts of every LoRA'd module, keys prefixed `unet.`/`transformer.`/`text_encoder[_2].`."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for prefix, module in modules.items():
        for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER).items():
            out[f"{prefix}.{k}"] = v.detach().clone()
    return out


def load_lora_state(modules: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Put saved LoRA weights back (resume)."""
    from peft.utils import set_peft_model_state_dict

    for prefix, module in modules.items():
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        result = set_peft_model_state_dict(module, part, adapter_name=ADAPTER)
        missing = [k for k in getattr(result, "unexpected_keys", []) if ADAPTER in k]
        if missing:
            raise ValueError(f"saved LoRA state does not fit {prefix}: {missing[:3]}")


def make_optimizer(params: list, spec, device: str) -> tuple[torch.optim.Optimizer, str]:
    """(optimiser, the name actually used). AdamW; bitsandbytes AdamW8bit on CUDA; Prodigy when installed."""
    name = spec.optimizer
    if name == "adamw8bit":
        if str(device).startswith("cuda") and importlib.util.find_spec("bitsandbytes") is not None:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=spec.learning_rate, weight_decay=1e-2), name
        log.warning("adamw8bit needs CUDA and bitsandbytes; training with AdamW instead")
        name = "adamw"
    if name == "prodigy":
        if importlib.util.find_spec("prodigyopt") is None:
            raise ValueError("optimizer 'prodigy' needs the prodigyopt package (pip install prodigyopt)")
        from prodigyopt import Prodigy

        lr = spec.learning_rate if spec.learning_rate >= 0.1 else 1.0  # Prodigy's lr is a multiplier, ≈ 1.0
        opt = Prodigy(
            params,
            lr=lr,
            betas=(0.9, 0.99),
            weight_decay=1e-2,
            use_bias_correction=True,
            safeguard_warmup=True,
            decouple=True,
        )
        return opt, name
    if name != "adamw":
        raise ValueError(f"unknown optimizer {spec.optimizer!r}: adamw, adamw8bit or prodigy")
    return torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=1e-2), name
