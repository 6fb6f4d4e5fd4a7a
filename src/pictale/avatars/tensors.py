"""What a .safetensors upload holds: a LoRA or a textual-inversion embedding, and the base family it fits.

LoRA families: "sd15" and "sdxl" (UNet keys, kohya/A1111, diffusers or peft names) and "sd3" (diffusers/peft
keys on SD3's transformer, `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`, optionally with the
CLIP encoders), which is the format diffusers' SD3 loader reads, and "flux" (FLUX.1, in every format diffusers'
Flux loader converts: diffusers/peft `transformer.single_transformer_blocks.*` with optional `.alpha` (diffusers'
scripts, ai-toolkit), kohya BFL names `lora_unet_double_blocks_*` / `single_blocks_*` (optionally with CLIP-L
`lora_te1_` layers) and XLabs `double_blocks.<i>.processor.qkv_lora1.down.weight`). SD3 and Flux both name their
joint blocks `transformer_blocks`: a transformer LoRA is Flux's when it has any Flux-only layer (single-stream
blocks, `x_embedder`, the guidance embedder) or Flux's width (3072), SD3's otherwise.

Only the header is parsed (names, shapes, dtypes) with the `safetensors` library; embeddings, being small,
are also read as numpy arrays to reject NaN/inf. Nothing is ever unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from pictale.core.errors import InvalidUpload

FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
MAX_EMBEDDING_VECTORS = 75  # a CLIP prompt chunk; more could never fit in one
SD2_HIDDEN = 1024  # OpenCLIP-H (SD 2.x): not a family pictale serves

# Module paths (dots or underscores) that belong to a Stable Diffusion UNet, in diffusers or LDM naming.
_UNET_ROOTS = re.compile(
    r"^(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block|conv_in|conv_out|"
    r"time_embedding|time_embed|add_embedding|label_emb|conv_norm_out|out)[._]"
)
# SD3's MMDiT and FLUX.1's transformer (diffusers names, dots as _), and what only Flux has.
_SD3_ROOTS = re.compile(r"^(transformer_blocks|context_embedder|pos_embed|time_text_embed|norm_out|proj_out)(_|$)")
_FLUX_ROOTS = re.compile(
    r"^(transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|time_text_embed|norm_out|proj_out)(_|$)"
)
_FLUX_ONLY = re.compile(r"^(single_transformer_blocks|x_embedder)(_|$)|guidance_embedder")
FLUX_WIDTH = 3072
# kohya BFL names (`lora_unet_double_blocks_0_img_attn_qkv`, ComfyUI: `diffusion_model.`) and XLabs' processors.
_BFL_ROOTS = re.compile(r"^(double_blocks|single_blocks|final_layer|img_in|txt_in|time_in|vector_in|guidance_in)[._]")
_XLABS = re.compile(
    r"^(?:diffusion_model\.)?((?:double|single)_blocks\.\d+\.processor\.\w+_lora\d*)\.(down|up)\.weight$"
)
_TE_LAYERS = re.compile(r"(^|[._])(layers|resblocks)[._]\d+")
# Which family a UNet module path implies: attention layouts differ between SD 1.5 and SDXL.
_SD15_LAYOUT = re.compile(
    r"down_blocks_0_attentions|up_blocks_3_attentions|input_blocks_[12]_1_|output_blocks_(9|10|11)_1_"
)
_SDXL_LAYOUT = re.compile(r"transformer_blocks_[1-9]|up_blocks_0_attentions|add_embedding|label_emb")
_CROSS_ATTN_KV = re.compile(r"attn2_to_[kv]$")
_TE_INPUT_WIDTH = re.compile(r"self_attn_(q|k|v|out)_proj$|mlp_fc1$")  # layers whose input is the TE width

_DOWN = (".lora_down.weight", ".lora.down.weight", "_lora.down.weight", ".lora_A.weight", ".lora_A.default.weight")
_UP = (".lora_up.weight", ".lora.up.weight", "_lora.up.weight", ".lora_B.weight", ".lora_B.default.weight")
_EXTRA = (".alpha", ".dora_scale", ".lora_magnitude_vector", ".lora_magnitude_vector.weight")
_PREFIXES = (
    ("text_encoder_2.", "te2"),
    ("text_encoder.", "te"),
    ("unet.", "unet"),
    ("transformer.", "transformer"),
    ("base_model.model.", "unet"),
)


@dataclass(frozen=True)
class TensorFileInfo:
    """The result of inspecting a LoRA or embedding file."""

    family: str
    """"sd15", "sdxl", "sd3" or "flux"."""
    cross_attention_dim: int | None
    """Width of the text conditioning it was made for (UNet cross-attention input; TI: the vector width(s))."""
    vectors: int | None = None
    """Embeddings: how many token vectors."""
    rank: int | None = None
    """LoRA: the largest rank."""


def read_header(path: Path, filename: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from the file's header; 422 naming the file when it is not safetensors."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidUpload(f"{filename}: not a valid .safetensors file ({exc})", param="files") from None
    if not header:
        raise InvalidUpload(f"{filename}: the .safetensors file holds no tensors", param="files")
    return header


def _split_lora_key(key: str) -> tuple[str, str, str] | None:
    """(component, module, role) of a LoRA tensor name in kohya, diffusers, peft or XLabs form; None if not LoRA."""
    if m := _XLABS.match(key):
        return "flux", m.group(1).replace(".", "_"), "down" if m.group(2) == "down" else "up"
    key = key.removeprefix("diffusion_model.")
    if m := re.match(r"^lora_transformer_(.+)$", key):
        component, rest = "transformer", m.group(1)
    elif m := re.match(r"^lora_(unet|te1|te2|te)_(.+)$", key):
        component, rest = m.group(1), m.group(2)
        if component == "unet" and _BFL_ROOTS.match(rest):
            component = "flux"
    elif _BFL_ROOTS.match(key):
        component, rest = "flux", key
    else:
        component, rest = "unet", key  # peft files saved from a bare UNet carry no prefix
        for prefix, comp in _PREFIXES:
            if key.startswith(prefix):
                component, rest = comp, key[len(prefix) :]
                break
    for suffixes, role in ((_DOWN, "down"), (_UP, "up"), (_EXTRA, "extra")):
        for suffix in suffixes:
            if rest.endswith(suffix):
                module = rest[: -len(suffix)]
                # old diffusers attention processors: attn2.processor.to_k_lora.down.weight
                module = re.sub(r"[._]processor[._](to_[qkv]|to_out)_lora$", r".\1", module)
                return component, module.replace(".", "_"), role
    return None


def inspect_lora(path: Path, filename: str) -> TensorFileInfo:
    """Check that the file is a LoRA for SD 1.5, SDXL or SD3 and say which; 422 naming the file and the reason."""
    header = read_header(path, filename)
    pairs: dict[tuple[str, str], dict[str, tuple[str, tuple[int, ...]]]] = {}
    unknown = []
    for key, (dtype, shape) in header.items():
        split = _split_lora_key(key)
        if split is None:
            unknown.append(key)
            continue
        component, module, role = split
        if role != "extra":
            pairs.setdefault((component, module), {})[role] = (dtype, shape)
    if not pairs:
        raise InvalidUpload(
            f"{filename}: not a LoRA: none of its {len(header)} tensors has LoRA names "
            f"(lora_down/lora_up or lora_A/lora_B), e.g. {sorted(header)[0]!r}",
            param="files",
        )
    if unknown:
        raise InvalidUpload(
            f"{filename}: not a LoRA pictale can apply: {len(unknown)} tensors are not LoRA weights, "
            f"e.g. {sorted(unknown)[0]!r} (LyCORIS/LoHa/LoKr files are not supported)",
            param="files",
        )
    ranks, cross_dims, te_hidden = set(), set(), {}
    for (component, module), roles in pairs.items():
        where = f"{filename}: tensor pair {component}:{module}"
        if set(roles) != {"down", "up"}:
            missing = ({"down", "up"} - set(roles)).pop()
            raise InvalidUpload(f"{where} has no {missing} weight", param="files")
        (ddt, down), (udt, up) = roles["down"], roles["up"]
        if ddt not in FLOAT_DTYPES or udt not in FLOAT_DTYPES:
            raise InvalidUpload(f"{where} is not floating point ({ddt}/{udt})", param="files")
        if len(down) not in (2, 4) or len(up) != len(down) or down[0] != up[1] or down[0] == 0:
            raise InvalidUpload(f"{where} has mismatched shapes {list(down)} and {list(up)}", param="files")
        if component == "transformer" and not (_SD3_ROOTS.match(module) or _FLUX_ROOTS.match(module)):
            raise InvalidUpload(
                f"{filename}: not an SD 1.5/SDXL/SD3/FLUX.1 LoRA: {module!r} is not part of a Stable Diffusion UNet, "
                "an SD3 or a FLUX.1 transformer (other transformer LoRAs are not supported)",
                param="files",
            )
        if component == "unet" and not _UNET_ROOTS.match(module):
            raise InvalidUpload(
                f"{filename}: not an SD 1.5/SDXL LoRA: {module!r} is not part of a Stable Diffusion UNet",
                param="files",
            )
        if component in ("te", "te1", "te2") and not _TE_LAYERS.search(module):
            raise InvalidUpload(f"{filename}: {module!r} is not part of a CLIP text encoder", param="files")
        ranks.add(down[0])
        if component == "unet" and _CROSS_ATTN_KV.search(module):
            cross_dims.add(down[1])
        if component in ("te", "te1", "te2") and _TE_INPUT_WIDTH.search(module):
            te_hidden.setdefault(component, down[1])
    if len(cross_dims) > 1:
        raise InvalidUpload(f"{filename}: cross-attention widths disagree ({sorted(cross_dims)})", param="files")
    components = {c for c, _ in pairs}
    if components & {"transformer", "flux"}:
        if "unet" in components:
            raise InvalidUpload(f"{filename}: has both UNet and transformer layers", param="files")
        return TensorFileInfo(family=_transformer_family(pairs), cross_attention_dim=None, rank=max(ranks))
    family = _lora_family(filename, {c for c, _ in pairs}, {m for c, m in pairs if c == "unet"}, cross_dims, te_hidden)
    cross = cross_dims.pop() if cross_dims else _cross_from_text_encoders(family, te_hidden)
    return TensorFileInfo(family=family, cross_attention_dim=cross, rank=max(ranks))


def _transformer_family(pairs: dict) -> str:
    """ "flux" for BFL/XLabs names, Flux-only layers or Flux's width; "sd3" otherwise."""
    for (component, module), roles in pairs.items():
        if component == "flux" or (component == "transformer" and _FLUX_ONLY.search(module)):
            return "flux"
        if component == "transformer" and module.endswith("attn_to_q") and roles["down"][1][-1] == FLUX_WIDTH:
            return "flux"
    return "sd3"


def _lora_family(filename: str, components: set, modules: set, cross_dims: set, te_hidden: dict) -> str:
    dim = next(iter(cross_dims), None)
    widths = set(te_hidden.values()) | ({dim} if dim else set())
    if SD2_HIDDEN in widths and not components & {"te1", "te2"}:
        raise InvalidUpload(
            f"{filename}: this LoRA is for Stable Diffusion 2.x (width 1024), which pictale does not serve; "
            "use an SD 1.5 or SDXL LoRA",
            param="files",
        )
    if dim == 2048 or components & {"te1", "te2"}:
        return "sdxl"
    if dim == 768:
        return "sd15"
    joined = " ".join(modules)
    sd15, sdxl = bool(_SD15_LAYOUT.search(joined)), bool(_SDXL_LAYOUT.search(joined))
    if sdxl and not sd15:
        return "sdxl"
    if sd15 and not sdxl:
        return "sd15"
    if not modules and components == {"te"}:
        return "sd15"  # one text encoder only: the SD 1.x layout
    raise InvalidUpload(
        f"{filename}: cannot tell whether this LoRA is for SD 1.5 or SDXL from its layers "
        f"(cross-attention width {dim or 'unknown'})",
        param="files",
    )


def _cross_from_text_encoders(family: str, te_hidden: dict) -> int | None:
    """UNet cross-attention width implied by the text encoders: SD 1.5 = TE width; SDXL = TE1 + TE2 widths."""
    if family == "sd15":
        return te_hidden.get("te")
    first, second = te_hidden.get("te1", te_hidden.get("te")), te_hidden.get("te2")
    return first + second if first and second else None


def inspect_embedding(path: Path, filename: str) -> TensorFileInfo:
    """Check a textual-inversion file (A1111 `emb_params`/`string_to_param`, SDXL `clip_l`+`clip_g`, or
    diffusers' single tensor) and say which family it fits; 422 naming the file and the reason."""
    header = read_header(path, filename)
    keys = sorted(header)
    if {"clip_l", "clip_g"} <= set(keys):
        parts = {k: header[k] for k in ("clip_l", "clip_g")}
        family = "sdxl"
    else:
        params = [k for k in keys if k == "emb_params" or k.startswith("string_to_param")]
        if len(params) == 1:
            parts = {params[0]: header[params[0]]}
        elif len(keys) == 1:
            parts = {keys[0]: header[keys[0]]}  # diffusers: {token: vector(s)}
        else:
            raise InvalidUpload(
                f"{filename}: not a textual-inversion embedding: expected one tensor, `emb_params`, "
                f"`string_to_param.*` or `clip_l` + `clip_g`, found {len(keys)} tensors ({', '.join(keys[:4])})",
                param="files",
            )
        family = "sd15"
    counts, widths = set(), []
    for key, (dtype, shape) in parts.items():
        if dtype not in FLOAT_DTYPES:
            raise InvalidUpload(f"{filename}: tensor {key!r} is {dtype}, not floating point", param="files")
        if len(shape) not in (1, 2) or 0 in shape:
            raise InvalidUpload(
                f"{filename}: tensor {key!r} has shape {list(shape)}; an embedding is [vectors, width]", param="files"
            )
        counts.add(1 if len(shape) == 1 else shape[0])
        widths.append(shape[-1])
    if len(counts) != 1:
        raise InvalidUpload(f"{filename}: clip_l and clip_g have different vector counts", param="files")
    vectors = counts.pop()
    if not 1 <= vectors <= MAX_EMBEDDING_VECTORS:
        raise InvalidUpload(
            f"{filename}: {vectors} vectors; an embedding has 1 to {MAX_EMBEDDING_VECTORS}", param="files"
        )
    if family == "sd15" and widths[0] == SD2_HIDDEN:
        raise InvalidUpload(
            f"{filename}: this embedding is for Stable Diffusion 2.x (width 1024), which pictale does not serve",
            param="files",
        )
    _check_finite(path, filename, [k for k, (dt, _) in parts.items() if dt != "BF16"])
    return TensorFileInfo(family=family, cross_attention_dim=sum(widths), vectors=vectors)


def _check_finite(path: Path, filename: str, keys: list[str]) -> None:
    with safe_open(str(path), framework="numpy") as f:
        for key in keys:
            if not np.isfinite(f.get_tensor(key)).all():
                raise InvalidUpload(f"{filename}: tensor {key!r} contains NaN or infinite values", param="files")
