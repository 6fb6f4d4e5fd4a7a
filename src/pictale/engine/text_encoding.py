"""A1111-style prompt encoding for SD 1.5 and SDXL: weights, BREAK, and long prompts in 75-token chunks.

Each prompt is parsed with `parse_prompt_attention`, tokenized without special tokens and cut into chunks of
`model_max_length - 2` tokens (75 for CLIP). A chunk is wrapped as [bos] + tokens + [eos] + [pad...] (what the
tokenizer's own max-length padding gives, so a short plain prompt encodes exactly like diffusers), encoded on
its own, weighted ("Original" emphasis) and the chunks are concatenated along the sequence axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pictale.prompt.attention import is_break, parse_prompt_attention

COMMA_BACKTRACK = 20  # A1111 setting `comma_padding_backtrack`


@dataclass(frozen=True)
class _Encoder:
    """One tokenizer + text encoder pair; `penultimate` marks SDXL's fixed layer choice."""

    tokenizer: object
    model: torch.nn.Module
    penultimate: bool

    @property
    def length(self) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", 77)
        max_length = getattr(self.tokenizer, "model_max_length", limit) or limit
        return min(int(max_length), int(limit))


@dataclass
class _Encoded:
    embeds: torch.Tensor  # [chunks * length, features]
    pooled: torch.Tensor | None  # SDXL: text_embeds of the first chunk


def encode_prompts(
    pipe, prompts: list[str], negative_prompts: list[str], *, clip_skip: int = 1
) -> dict[str, torch.Tensor]:
    """Encode prompts and negatives the A1111 way; returns the embeds kwargs of a diffusers SD/SDXL call."""
    if len(prompts) != len(negative_prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(negative_prompts)} negative prompts")
    if not prompts:
        raise ValueError("no prompts to encode")
    is_xl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = _encoders(pipe, is_xl)
    # SDXL follows A1111 (sdxl_clip_l_skip off): always the penultimate layer, clip skip has no effect.
    skip = 1 if is_xl else max(1, int(clip_skip or 1))
    cache: dict[tuple[str, int], _Encoded] = {}

    def encode(text: str) -> _Encoded:
        key = (text, skip)
        if key not in cache:
            cache[key] = _encode_one(pipe, encoders, text, skip)
        return cache[key]

    cond = [encode(p) for p in prompts]
    # A1111 and diffusers both zero an all-empty SDXL negative prompt (force_zeros_for_empty_prompt).
    zero_uncond = (
        is_xl and all(n == "" for n in negative_prompts) and getattr(pipe.config, "force_zeros_for_empty_prompt", True)
    )
    if zero_uncond:
        uncond = [_Encoded(torch.zeros_like(c.embeds), _zeros_like(c.pooled)) for c in cond]
    else:
        uncond = [encode(n) for n in negative_prompts]

    # Different chunk counts: pad with empty-prompt chunks (zeros for a zeroed SDXL negative).
    target = max(e.embeds.shape[0] for e in cond + uncond)

    def padded(items: list[_Encoded], zeros: bool = False) -> torch.Tensor:
        rows = [e.embeds for e in items]
        if any(r.shape[0] < target for r in rows):
            filler = encode("").embeds
            filler = torch.zeros_like(filler) if zeros else filler
            rows = [_pad_to(r, target, filler) for r in rows]
        return torch.stack(rows)

    out = {"prompt_embeds": padded(cond), "negative_prompt_embeds": padded(uncond, zero_uncond)}
    if is_xl:
        out["pooled_prompt_embeds"] = torch.stack([c.pooled for c in cond])
        out["negative_pooled_prompt_embeds"] = torch.stack([u.pooled for u in uncond])
    device = _execution_device(pipe, encoders[-1].model)
    return {k: v.to(device=device, dtype=encoders[-1].model.dtype) for k, v in out.items()}


def prompt_chunks(tokenizer, text: str, *, chunk_size: int = 75) -> list[tuple[list[int], list[float]]]:
    """A1111's tokenize_line: (token ids, weights) per chunk, without start/end/padding tokens."""
    fragments = parse_prompt_attention(text)
    plain = [f[0] for f in fragments if not is_break(f)]
    token_lists = iter(
        tokenizer(plain, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] if plain else []
    )
    comma = tokenizer.get_vocab().get(",</w>")

    chunks: list[tuple[list[int], list[float]]] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def flush() -> None:
        nonlocal tokens, weights, last_comma
        chunks.append((tokens, weights))
        tokens, weights, last_comma = [], [], -1

    for fragment in fragments:
        if is_break(fragment):
            flush()
            continue
        weight = fragment[1]
        for token in next(token_lists):
            if comma is not None and token == comma:
                last_comma = len(tokens)
            elif len(tokens) == chunk_size and last_comma != -1 and chunk_size - last_comma <= COMMA_BACKTRACK:
                # The words after the last comma move to the next chunk rather than being cut in half.
                cut = last_comma + 1
                moved = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                flush()
                tokens, weights = list(moved[0]), list(moved[1])
            if len(tokens) == chunk_size:
                flush()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        flush()
    return chunks


def _encoders(pipe, is_xl: bool) -> list[_Encoder]:
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if is_xl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    encoders = [_Encoder(tok, model, is_xl) for tok, model in pairs if tok is not None and model is not None]
    if not encoders:
        raise ValueError("the pipeline has no text encoder")
    return encoders


def _encode_one(pipe, encoders: list[_Encoder], text: str, skip: int) -> _Encoded:
    parts, pooled = [], None
    for enc in encoders:
        source = _expand_multi_vector_tokens(pipe, enc.tokenizer, text)
        chunks = prompt_chunks(enc.tokenizer, source, chunk_size=enc.length - 2)
        embeds, enc_pooled = _run_encoder(enc, chunks, skip)
        parts.append(embeds)
        if enc_pooled is not None:
            pooled = enc_pooled
    longest = max(p.shape[0] for p in parts)
    if any(p.shape[0] < longest for p in parts):  # SDXL tokenizers with different vocabularies
        parts = [
            _pad_to(p, longest, _run_encoder(e, [([], [])], skip)[0]) if p.shape[0] < longest else p
            for p, e in zip(parts, encoders, strict=True)
        ]
    return _Encoded(torch.cat(parts, dim=-1), pooled)


@torch.no_grad()
def _run_encoder(enc: _Encoder, chunks: Sequence[tuple[list[int], list[float]]], skip: int):
    """Encode chunks as one batch: ([chunks * length, features], pooled of the first chunk or None)."""
    tok = enc.tokenizer
    bos, eos = tok.bos_token_id, tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    ids, mults = [], []
    for tokens, weights in chunks:
        fill = enc.length - 2 - len(tokens)
        ids.append([bos, *tokens, eos] + [pad] * fill)
        mults.append([1.0, *weights] + [1.0] * (fill + 1))
    input_ids = torch.tensor(ids, dtype=torch.long, device=enc.model.device)

    if enc.penultimate:
        out = enc.model(input_ids, output_hidden_states=True)
        z = out.hidden_states[-2]
    elif skip <= 1:
        out = enc.model(input_ids)  # the same call as diffusers makes, so plain prompts match bit for bit
        z = out[0]
    else:
        out = enc.model(input_ids, output_hidden_states=True)
        z = out.hidden_states[-min(skip, len(out.hidden_states))]
        z = getattr(enc.model, "text_model", enc.model).final_layer_norm(z)

    z = _emphasis_original(z, torch.tensor(mults, dtype=torch.float32, device=z.device))
    pooled = getattr(out, "text_embeds", None)
    return z.reshape(-1, z.shape[-1]), (pooled[0] if pooled is not None else None)


def _emphasis_original(z: torch.Tensor, mults: torch.Tensor) -> torch.Tensor:
    """A1111 "Original" emphasis: scale each token, then restore each chunk's mean."""
    if bool((mults == 1.0).all()):
        return z
    z32 = z.float()
    before = z32.mean(dim=(1, 2), keepdim=True)
    weighted = z32 * mults.unsqueeze(-1)
    after = weighted.mean(dim=(1, 2), keepdim=True)
    ratio = torch.where(after == 0, torch.ones_like(after), before / after)
    return (weighted * ratio).to(z.dtype)


def _expand_multi_vector_tokens(pipe, tokenizer, text: str) -> str:
    """diffusers' textual-inversion rewrite ("tok" -> "tok tok_1 ..."), only when such tokens are loaded."""
    added = getattr(tokenizer, "added_tokens_encoder", {})
    convert = getattr(pipe, "maybe_convert_prompt", None)
    if convert is None or not any(t.endswith("_1") for t in added):
        return text  # skipping also avoids the tokenizer's misleading "sequence too long" warning
    return convert(text, tokenizer)


def _pad_to(embeds: torch.Tensor, rows: int, filler: torch.Tensor) -> torch.Tensor:
    """Append copies of the one-chunk `filler` until `embeds` has `rows` rows."""
    missing = (rows - embeds.shape[0]) // filler.shape[0]
    return torch.cat([embeds, filler.repeat(missing, 1)]) if missing > 0 else embeds


def _zeros_like(t: torch.Tensor | None) -> torch.Tensor | None:
    return torch.zeros_like(t) if t is not None else None


def _execution_device(pipe, model: torch.nn.Module) -> torch.device:
    try:
        return pipe._execution_device
    except (AttributeError, RuntimeError):
        return model.device
