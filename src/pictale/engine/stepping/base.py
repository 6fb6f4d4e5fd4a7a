"""What every row of the step loop answers the same way, whatever its family: a request's images, its rows in
the denoiser batch (twice its images under CFG), what it must share with the other rows of one call, and where
it is in its own timesteps."""

from __future__ import annotations

import torch


class RowSteps:
    """Mixed into the row dataclasses; they hold `latents`, `embeds`, `cfg`, `timesteps` and `index`."""

    latents: torch.Tensor
    embeds: torch.Tensor
    cfg: bool
    timesteps: torch.Tensor
    index: int

    @property
    def images(self) -> int:
        return self.latents.shape[0]

    @property
    def rows(self) -> int:
        """Rows of the denoiser batch this request takes (negatives then positives under CFG)."""
        return self.images * (2 if self.cfg else 1)

    @property
    def shape(self) -> tuple:
        """What the other rows of one call must share: the prompt embeddings' length (T5 or CLIP) and width."""
        return tuple(self.embeds.shape[1:])

    @property
    def done(self) -> bool:
        return self.index >= len(self.timesteps)

    @property
    def t(self) -> torch.Tensor:
        return self.timesteps[self.index]
