"""Samples with fixed seeds, their likeness (CLIP-I to the photos) and prompt adherence (CLIP-T), and the choice
of checkpoint (training.md §4).

History entries are dicts `{"step": int, "clip_i": float, "clip_t": float}`; step 0 is the base model (the same
prompts and seeds at LoRA weight 0), which sets the prompt-adherence floor. Offline, only the tiny CLIP exists: it
tests the plumbing, not the meaning (§4); the learning itself is tested in latent space (§1.6).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from pictale.engine.clip_scoring import ClipScorer

ADHERENCE_SLACK = 0.02
"""δ: a checkpoint is eligible while its CLIP-T stays within δ of the base's (not tuned)."""


def sample(
    pipe,
    prompts: list[str],
    seeds: list[int],
    size: tuple[int, int],
    *,
    steps: int = 20,
    guidance: float | None = None,
    scale: float = 1.0,
) -> list[Image.Image]:
    """One image per (prompt, seed), prompt-major, through the pipeline with its current adapter at `scale`."""
    width, height = size
    flux = type(pipe).__name__.startswith("Flux")
    images = []
    for prompt in prompts:
        for seed in seeds:
            kwargs = {"joint_attention_kwargs" if flux else "cross_attention_kwargs": {"scale": scale}}
            if guidance is not None:
                kwargs["guidance_scale"] = guidance
            with torch.no_grad():
                out = pipe(
                    prompt,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    **kwargs,
                )
            images.append(out.images[0])
    return images


def clip_prompt(prompt: str, trigger: str, class_word: str) -> str:
    """The prompt CLIP-T is measured against: CLIP does not know the trigger, so the class word stands in."""
    return prompt.replace(trigger, class_word).replace(f"{class_word} {class_word}", class_word)


def score(
    images: list[Image.Image],
    photos: list,
    prompts: list[str],
    clip_model: str | Path | ClipScorer,
) -> dict[str, float]:
    """{"clip_i": mean over images of the best cosine to a training photo, "clip_t": mean image-prompt cosine}.

    `photos`: PreparedPhoto or PIL images; `prompts`: one per image, or one per group of images (prompt-major,
    as `sample` makes them)."""
    if not images:
        raise ValueError("no images to score")
    if len(images) % len(prompts):
        raise ValueError(f"{len(images)} images do not split into groups for {len(prompts)} prompts")
    per = len(images) // len(prompts)
    texts = [p for p in prompts for _ in range(per)]
    scorer = clip_model if isinstance(clip_model, ClipScorer) else ClipScorer(clip_model)
    refs = [p if isinstance(p, Image.Image) else Image.open(p.path) for p in photos]
    img = torch.tensor(scorer.image_features(images))
    ref = torch.tensor(scorer.image_features(refs))
    txt = torch.tensor(scorer.text_features(texts))
    clip_i = (img @ ref.T).max(dim=1).values.mean()
    clip_t = (img * txt).sum(dim=1).mean()
    return {"clip_i": round(float(clip_i), 6), "clip_t": round(float(clip_t), 6)}


def choose(history: list[dict], slack: float = ADHERENCE_SLACK) -> tuple[int, str]:
    """(best step, why): the best likeness among checkpoints whose prompt adherence stayed within `slack` of the
    base's (ties: better adherence, then the earlier step); the best likeness overall if none did."""
    base = next((h for h in history if h["step"] == 0), None)
    trained = [h for h in history if h["step"] > 0]
    if not trained:
        raise ValueError("no scored checkpoint to choose from")

    def rank(h):
        return (h["clip_i"], h["clip_t"], -h["step"])

    if base is None:
        best = max(trained, key=rank)
        return best["step"], f"best likeness {best['clip_i']:.3f} (no base score to guard prompt adherence)"
    floor = base["clip_t"] - slack
    eligible = [h for h in trained if h["clip_t"] >= floor]
    if eligible:
        best = max(eligible, key=rank)
        return best["step"], (
            f"best likeness {best['clip_i']:.3f} (base {base['clip_i']:.3f}) among {len(eligible)} of "
            f"{len(trained)} checkpoints whose prompt adherence stayed ≥ {floor:.3f} (base {base['clip_t']:.3f} - "
            f"{slack}); its adherence {best['clip_t']:.3f}"
        )
    best = max(trained, key=rank)
    return best["step"], (
        f"best likeness {best['clip_i']:.3f}; every checkpoint fell below the prompt-adherence floor {floor:.3f} "
        "(over-fitted: try fewer steps or a lower learning rate)"
    )


def should_stop(history: list[dict]) -> bool:
    """True when likeness has fallen at two samples in a row after its best (§4: it peaks, then degrades)."""
    trained = [h for h in history if h["step"] > 0]
    if len(trained) < 3:
        return False
    best = max(range(len(trained)), key=lambda i: (trained[i]["clip_i"], -i))
    after = trained[best + 1 :]
    return len(after) >= 2 and all(h["clip_i"] < trained[best]["clip_i"] for h in after[-2:])
