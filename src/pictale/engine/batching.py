"""Several requests in one pipeline call, each image bit-identical to the request run alone.

On the CPU a few kernels pick their algorithm by the batch size, so a row of a merged batch would come out a
few ulps away from the same row computed alone:

- matrix products with few rows (MKL takes other code paths below about 4 rows): the time, added-condition
  and IP-Adapter embeddings, one row per image;
- convolutions PyTorch runs without oneDNN for a batch of one small input (`use_mkldnn` in ATen's
  Convolution.cpp): the UNet without CFG, the VAE decoding one image;
- layouts: the VAE's attention output is channels-last for several images, contiguous for one
  (`steady_vae_layout` makes it contiguous always).

`split_batch` makes exactly those calls per request, with the rows each request's own call would have had
(its negatives then its positives under CFG), and leaves the heavy ones batched. Everything else (large
products, oneDNN convolutions, attention, norms, the sampler step) computes each row the same whatever the
batch: tests/engine/test_batching.py checks the claim on this machine's kernels (`Engine.batches_identically`:
float32 on the CPU). Elsewhere (CUDA) requests still merge, unsplit, and rows may differ from lone runs as much as
diffusers' own batches do (1/255 on a few pixels); `--deterministic` runs every request alone there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pictale.core.errors import JobCancelled
from pictale.core.types import GenerationSpec, Mode
from pictale.engine.adapters import canonical
from pictale.engine.run import EngineResult

IP_ROWS = 1
"""IP-Adapter embeds are passed for one prompt: diffusers (0.42) repeats them for each prompt of the call itself.
With a row per prompt, a batch of n got n*n rows, which the attention folds into n times the image tokens."""
SMALL_TOKENS = 16
"""Linear inputs with fewer positions per row than this are computed per request."""
_NATIVE_CONV_MAX = 20480
"""ATen runs a one-image convolution of at most this many input elements without oneDNN."""


@dataclass
class BatchItem:
    """One request of a merged batch: its per-image prompts and seeds, and its own controls."""

    spec: GenerationSpec
    prompts: list[str]
    negatives: list[str]
    seeds: list[int]
    subseeds: list[int]
    control: object
    """A RunControl (engine.engine) steering this request only."""

    @property
    def size(self) -> int:
        return len(self.prompts)


def row_groups(sizes: list[int], cfg: bool) -> list[torch.Tensor]:
    """Per request, the batch rows of its own call in that call's order (negatives first under CFG)."""
    total = sum(sizes)
    groups, start = [], 0
    for n in sizes:
        rows = list(range(start, start + n))
        if cfg:
            rows = rows + [total + r for r in rows]
        groups.append(torch.tensor(rows, dtype=torch.long))
        start += n
    return groups


def _uses_onednn(conv: nn.Conv2d, x: torch.Tensor, batch: int) -> bool:
    """ATen's choice of oneDNN for a float CPU convolution of `batch` images shaped like `x`'s rows."""
    kh, kw = conv.kernel_size
    per_image = x[0].numel()
    first = (
        any(s != 1 for s in conv.stride)
        or any(d != 1 for d in conv.dilation)
        or batch >= 16
        or (kh, kw) != (1, 1)
        or torch.get_num_threads() > 1
    )
    second = conv.groups > 1 or (kh > 3 and kw > 3) or batch > 1 or batch * per_image > _NATIVE_CONV_MAX
    return first and second


def _empty_like_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty tensor of `rows` rows laid out like `t` (channels-last stays channels-last)."""
    shape = (rows, *t.shape[1:])
    block = t[0].numel() if t.shape[0] else 0
    if t.is_contiguous() or t.stride(0) != block:
        return t.new_empty(shape)
    return torch.empty_strided(shape, (block, *t.stride()[1:]), dtype=t.dtype, device=t.device)


def _take(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of `x` in the memory layout the request's own call would have had (kernels pick paths by it)."""
    part = x.index_select(0, rows)
    if x.is_contiguous():
        return part
    out = _empty_like_rows(x, len(rows))
    out.copy_(part)
    return out


def _split_call(forward, x: torch.Tensor, groups: list[torch.Tensor], args, kwargs) -> torch.Tensor:
    groups = [rows.to(x.device) for rows in groups]
    parts = [forward(_take(x, rows), *args, **kwargs) for rows in groups]
    out = _empty_like_rows(parts[0], x.shape[0])
    for rows, part in zip(groups, parts, strict=True):
        out[rows] = part
    return out


def _linear(module: nn.Module, groups: list[torch.Tensor], rows: int):
    forward = module.forward

    def split_forward(x, *args, **kwargs):
        if x.dim() >= 2 and x.shape[0] == rows and x.numel() // max(1, x.shape[-1]) < rows * SMALL_TOKENS:
            return _split_call(forward, x, groups, args, kwargs)
        return forward(x, *args, **kwargs)

    return split_forward


def _conv(module: nn.Conv2d, groups: list[torch.Tensor], rows: int):
    forward = module.forward
    split_for: dict[tuple, bool] = {}  # by input shape: the kernel choice depends on nothing else here

    def split_forward(x, *args, **kwargs):
        if x.dim() == 4 and x.shape[0] == rows and x.device.type == "cpu" and x.dtype == torch.float32:
            split = split_for.get(x.shape)
            if split is None:
                alone = all(_uses_onednn(module, x, len(g)) for g in groups)
                split = split_for[x.shape] = not (alone and _uses_onednn(module, x, rows))
            if split:
                return _split_call(forward, x, groups, args, kwargs)
        return forward(x, *args, **kwargs)

    return split_forward


@contextlib.contextmanager
def split_batch(models: list[nn.Module], groups: list[torch.Tensor]) -> Iterator[None]:
    """While active, the batch-size dependent calls of `models` run per request (see the module docstring).

    `groups` are the rows of each request in the denoiser's batch (`row_groups`).
    """
    rows = sum(len(g) for g in groups)
    patched: list[tuple[nn.Module, object]] = []
    try:
        for model in models:
            for module in model.modules():
                make = next((m for t, m in _MAKERS.items() if isinstance(module, t)), None)
                if make is not None:
                    previous = module.__dict__.get("forward")
                    module.forward = make(module, groups, rows)
                    patched.append((module, previous))
        yield
    finally:
        for module, previous in patched:
            if previous is None:
                del module.forward
            else:
                module.forward = previous


_MAKERS = {nn.Linear: _linear, nn.Conv2d: _conv}


@contextlib.contextmanager
def per_image_rows(pipe, images: int, cfg: bool) -> Iterator[None]:
    """`split_batch` with one group per image on the pipeline's UNet (and ControlNet) and VAE: a batch of
    `images` then gives each image bit for bit as a batch of one with its seed would (A1111 batch_size,
    OpenAI n). Variants made with `from_pipe` share these modules, so a hires pass is covered too."""
    groups = [1] * images
    denoisers = [m for m in (pipe.unet, getattr(pipe, "controlnet", None)) if m is not None]
    with split_batch(denoisers, row_groups(groups, cfg)), split_batch([pipe.vae], row_groups(groups, False)):
        yield


def steady_vae_layout(vae: nn.Module) -> None:
    """Make the VAE's attention blocks return contiguous tensors, in every run (called once per load).

    Their output is a transposed view whose layout depends on the batch size: channels-last for several images,
    ambiguous (treated as contiguous) for one. The layout flows down the residual stream and picks the
    group-norm, upsampling and convolution kernels, so a merged decode could not match a lone one. Contiguous,
    it is the same for every batch size; a one-image decode is unchanged by it, bit for bit.
    """
    from diffusers.models.attention_processor import Attention

    for module in vae.modules():
        if isinstance(module, Attention) and not getattr(module, "_pictale_contiguous", False):
            module.register_forward_hook(_contiguous_output)
            module._pictale_contiguous = True


def _contiguous_output(_module, _args, output):
    if isinstance(output, torch.Tensor) and not output.is_contiguous():
        return output.contiguous()
    return None


class GroupState:
    """Per-step bookkeeping of a merged call: who is still in, and whether it stops early."""

    def __init__(self, items: list[BatchItem], sizes: list[int]) -> None:
        self.items = items
        self.offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        self.dropped: set[int] = set()
        self.stopped = False

    def callback(self, total: int, x0: dict | None):
        def on_step_end(p, i, t, cb_kwargs):
            for k, item in enumerate(self.items):
                if k not in self.dropped and item.control.cancelled():
                    self.dropped.add(k)
                    if item.control.on_cancelled is not None:
                        item.control.on_cancelled()
            live = [k for k in range(len(self.items)) if k not in self.dropped]
            if not live:
                raise JobCancelled("cancelled")
            # A1111 interrupt and skip act on the running batch: the whole call stops early, decoded.
            if any(self.items[k].control.interrupted() or self.items[k].control.skipped() for k in live):
                self.stopped = True
                p._interrupt = True
            step = min(i + 1, total)
            latents = x0.pop("x0", None) if x0 is not None else None
            latents = latents if latents is not None else cb_kwargs.get("latents")
            for k in live:
                control = self.items[k].control
                if control.on_latents is not None and latents is not None:
                    start = self.offsets[k]
                    control.on_latents(step, latents[start : start + self.items[k].size])
                if control.on_step is not None:
                    control.on_step(step, total, 0, 1)
            return {}

        return on_step_end


def group_results(items: list[BatchItem], images: list, state: GroupState) -> list[EngineResult | BaseException]:
    """Each request's images of a merged call (or JobCancelled for those cancelled while the others went on)."""
    interrupted = any(item.control.interrupted() for item in items)
    results: list[EngineResult | BaseException] = []
    start = 0
    for k, item in enumerate(items):
        if state.stopped:
            item.control.clear_skip()
        if k in state.dropped:
            results.append(JobCancelled("cancelled"))
        else:
            results.append(EngineResult(images[start : start + item.size], item.seeds, item.subseeds, interrupted))
        start += item.size
    return results


def check_batchable(first: GenerationSpec, other: GenerationSpec) -> None:
    """Requests of one merged call may differ only in prompts and seeds (and their image counts)."""
    same = (
        other.mode is Mode.TXT2IMG
        and first.mode is Mode.TXT2IMG
        and first.hires is None
        and other.hires is None
        and first.subseed_strength == 0
        and other.subseed_strength == 0
        and first.n_iter == 1
        and other.n_iter == 1
        and (first.width, first.height, first.steps, first.cfg_scale, first.clip_skip, first.tiling)
        == (other.width, other.height, other.steps, other.cfg_scale, other.clip_skip, other.tiling)
        and first.distilled_cfg_scale == other.distilled_cfg_scale
        and (first.sampler, first.scheduler) == (other.sampler, other.scheduler)
        and _avatar_state(first) == _avatar_state(other)
    )
    if not same:
        raise ValueError("these requests cannot share one batch")


def _avatar_state(spec: GenerationSpec) -> list:
    return [(ref.kind, ref.digest, ref.token, weight) for ref, weight in canonical(spec.avatars)]
