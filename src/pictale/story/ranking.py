"""Scoring a page's candidates: CLIP-T (image vs. page text) and CLIP-I (image vs. references), weighted.

- CLIP-T: cosine between the candidate's CLIP image embedding and the page text's CLIP text embedding.
- CLIP-I: mean cosine between the candidate and each reference image: the reference images (face/style avatars)
  of the characters on the page, and the chosen images of earlier pages that share a character with it (of
  all earlier pages when the page has no character, which keeps the look of the book).
- CLIP-I ref (`clip_i_ref`, pages with a character reference only, see `story.references`): the cosine with
  that one image; reported, not part of the total (the reference is among the CLIP-I references already).
- total: (w_t * CLIP-T + w_i * CLIP-I) / (w_t + w_i); CLIP-T alone when there is no reference yet (page 1
  without avatars): every candidate of a page has the same references, so the ranking stays fair.
The best total wins; ties go to the earlier candidate (the lower seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

Vector = Sequence[float]


@dataclass(frozen=True)
class Scores:
    clip_t: float
    clip_i: float | None
    total: float
    clip_i_ref: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        out = {k: round(v, 6) if v is not None else None for k, v in asdict(self).items()}
        if out["clip_i_ref"] is None:
            del out["clip_i_ref"]  # only pages with a character reference have it
        return out

    def infotext(self) -> dict[str, str]:
        """A1111-style infotext entries: `CLIP-T: 0.3101, CLIP-I: 0.8402, Score: 0.5751`."""
        out = {"CLIP-T": f"{self.clip_t:.4f}"}
        if self.clip_i is not None:
            out["CLIP-I"] = f"{self.clip_i:.4f}"
        if self.clip_i_ref is not None:
            out["CLIP-I ref"] = f"{self.clip_i_ref:.4f}"
        out["Score"] = f"{self.total:.4f}"
        return out


def cosine(a: Vector, b: Vector) -> float:
    """Cosine of two normalised embeddings (their dot product)."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


def score(image: Vector, text: Vector, references: Sequence[Vector], w_text: float, w_image: float) -> Scores:
    """Scores of one candidate; weights are >= 0 with a positive sum (checked by the request schema)."""
    clip_t = cosine(image, text)
    if not references:
        return Scores(clip_t, None, clip_t)
    clip_i = sum(cosine(image, r) for r in references) / len(references)
    return Scores(clip_t, clip_i, (w_text * clip_t + w_image * clip_i) / (w_text + w_image))


def best(scores: Sequence[Scores]) -> int:
    """Index of the best total (the first of equals)."""
    return max(range(len(scores)), key=lambda i: (scores[i].total, -i))
