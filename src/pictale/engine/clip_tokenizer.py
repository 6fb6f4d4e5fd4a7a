"""CLIP BPE tokenizer files (vocab.json, merges.txt) built offline, exactly as CLIP's SimpleTokenizer does.

The real 49408-token vocabulary shipped in `engine/configs/` was made with
`python -m pictale.engine.clip_tokenizer <open_clip/bpe_simple_vocab_16e6.txt.gz> <out dir>`; the tiny
models use the same layout with merges trained on a small corpus.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from functools import lru_cache
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# SimpleTokenizer keeps the first 49152 - 256 - 2 merges of the open_clip BPE file.
CLIP_NUM_MERGES = 49152 - 256 - 2

TINY_CORPUS = (
    "a photo of a cat",
    "a photo of a dog sitting on a red chair",
    "a portrait of a girl with long hair, cartoon style",
    "a boy running in the park with his friend",
    "a castle on a hill at sunset, watercolor painting",
    "a dragon flying over the sea, highly detailed",
    "the little fox and the old bear read a book in the forest",
    "an astronaut riding a horse on the moon",
    "low quality, blurry, bad anatomy, worst quality, text, watermark",
    "masterpiece, best quality, illustration, children's book, soft light",
    "she smiles; he laughs. they walk home together at night 1 2 3 4 5 6 7 8 9 0",
)


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in SimpleTokenizer order: bytes, bytes + `</w>`, one token per merge, then BOS, EOS."""
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def merges_from_open_clip(bpe_gz: Path) -> list[tuple[str, str]]:
    """The merges SimpleTokenizer uses, read from open_clip's `bpe_simple_vocab_16e6.txt.gz`."""
    with gzip.open(bpe_gz) as f:
        lines = f.read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]]  # type: ignore[misc]


def train_tiny_merges(corpus: tuple[str, ...] = TINY_CORPUS, max_merges: int = 1000) -> list[tuple[str, str]]:
    """BPE merges learnt from a few prompts with CLIP's normalizer and pre-tokenizer.

    A plain loop rather than `tokenizers.BpeTrainer`, whose tie-breaking between equally frequent pairs
    changes from run to run: the tiny models must be byte-identical every time.
    """
    from collections import Counter

    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            words[(*piece[:-1], piece[-1] + "</w>")] += 1
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = Counter({_merge(word, best): count for word, count in words.items()})
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _added_token(content: str, *, normalized: bool, special: bool) -> dict[str, object]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def tokenizer_config(vocab: dict[str, int], pad_token: str = EOS) -> dict[str, object]:
    """tokenizer_config.json as openai/clip-vit-large-patch14 (pad EOS) or SDXL's tokenizer_2 (pad "!")."""
    added = {vocab[BOS]: _added_token(BOS, normalized=True, special=False)}
    added[vocab[EOS]] = _added_token(EOS, normalized=False, special=False)
    if pad_token not in (BOS, EOS):
        added[vocab[pad_token]] = _added_token(pad_token, normalized=False, special=True)
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): added[i] for i in sorted(added)},
        "additional_special_tokens": [],
        "bos_token": BOS,
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": EOS,
    }


def write_clip_tokenizer(directory: Path, merges: list[tuple[str, str]], *, pad_token: str = EOS) -> dict[str, int]:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json; return the vocab."""
    vocab = clip_vocab(merges)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    for name, data in (
        ("tokenizer_config.json", tokenizer_config(vocab, pad_token)),
        ("special_tokens_map.json", special),
    ):
        (directory / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return vocab


def main(argv: list[str]) -> None:
    """Write the real CLIP tokenizer files from open_clip's BPE file: `<bpe.txt.gz> <out dir> [pad]`."""
    bpe_gz, out = Path(argv[0]), Path(argv[1])
    pad = argv[2] if len(argv) > 2 else EOS
    vocab = write_clip_tokenizer(out, merges_from_open_clip(bpe_gz), pad_token=pad)
    print(f"wrote {len(vocab)} tokens to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
