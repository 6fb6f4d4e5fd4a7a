"""Character references on FLUX.1 Kontext: the same book with and without them, scored against the reference.

A live `pictale serve` on the model (default the tiny Kontext; pass a real FLUX.1 Kontext [dev] folder and a
real CLIP on a GPU). The character's face avatar is `--face` (an image file), else a portrait the model draws
first. Each round makes the book twice with the same seed, `character_references` on and off (alternating which
goes first, so machine noise hits both), and reads `clip_i_ref` (CLIP-I: the cosine of the page's chosen image
and the character's reference image, the face) of the pages that show the character, with CLIP-T beside it
(does the edit still follow the page text?) and the book's time. The tiny model draws noise: its numbers show
the plumbing, not whether references help; the figure that matters comes from a real Kontext.

    .venv/bin/python bench/kontext_books.py [--model PATH] [--clip-model PATH_OR_HUB_ID] [--face sasha.png]
        [--rounds 3] [--size 64] [--steps 4] [--candidates 2] [--face-weight 0] [--strength 1.0]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from live_server import start_server

CHARACTER = "a girl of 8 with curly red hair, freckles, a green raincoat and yellow boots"
PAGES = [
    "Sasha wakes up early and looks out of the window at the snowy garden.",
    "Sasha puts on her green raincoat and her yellow boots and runs outside.",
    "In the garden Sasha finds small tracks in the fresh snow.",
    "Behind the old oak tree Sasha finds a little fox, shivering in the cold.",
    "Sasha shares her warm bread with the fox, who eats it slowly.",
    "That night Sasha reads a story to the fox by the warm fire.",
]
STYLE = "children's book illustration, watercolor"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-flux-kontext", help="a FLUX.1 Kontext folder, file or tiny-flux-kontext")
    ap.add_argument("--clip-model", default=None, help="CLIP scorer (default: the tiny CLIP beside a tiny model)")
    ap.add_argument("--face", type=Path, default=None, help="the character's face image (default: a drawn portrait)")
    ap.add_argument("--face-weight", type=float, default=0.0, help="its IP-Adapter weight (>0 needs the adapter)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--strength", type=float, default=1.0, help="reference_strength of the edits")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PICTALE_CLIP_MODEL": args.clip_model} if args.clip_model else {}
        proc, base = start_server(Path(args.model), Path(tmp) / "data", **env)
        client = httpx.Client(base_url=base, timeout=3600)
        try:
            face = args.face.read_bytes() if args.face else portrait(client, args)
            avatar = {"kind": "face", "name": "sasha_face"}
            client.post("/v1/avatars", data=avatar, files=[("files", ("face.png", face))]).raise_for_status()
            tokens = f"<be-face:sasha_face:{args.face_weight}>"
            client.post("/v1/characters", json={"name": "sasha", "description": CHARACTER, "avatars": tokens})
            body = {
                "story": "\n\n".join(PAGES),
                "characters": ["sasha"],
                "style": STYLE,
                "candidates": args.candidates,
                "width": args.size,
                "height": args.size,
                "steps": args.steps,
                "sampler": "Euler",
                "reference_strength": args.strength,
            }
            for refs in (True, False):  # warm-up (CLIP and the Kontext edit pipeline load), not counted
                book(client, {**body, "seed": 1, "character_references": refs})
            rows: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
            for i in range(args.rounds):
                for refs in (True, False) if i % 2 == 0 else (False, True):
                    t0 = time.perf_counter()
                    view = book(client, {**body, "seed": 100 + i, "character_references": refs})
                    seconds = time.perf_counter() - t0
                    ref_i, clip_t = page_means(view)
                    rows[refs].append((ref_i, clip_t, seconds))
                    label = "with   " if refs else "without"
                    print(f"round {i + 1} {label} references: CLIP-I ref {ref_i:.4f}, CLIP-T {clip_t:.4f}, "
                          f"{seconds:.1f} s")  # fmt: skip
            mean = {k: [statistics.mean(col) for col in zip(*v, strict=True)] for k, v in rows.items()}
            on, off = mean[True], mean[False]
            print(f"\n{args.model}: {len(PAGES)} pages with the character x {args.candidates} candidates, "
                  f"{args.size} px, {args.steps} steps, strength {args.strength}, {args.rounds} rounds")  # fmt: skip
            print(f"mean CLIP-I ref (chosen pages vs. the face)  with {on[0]:.4f} | without {off[0]:.4f} | "
                  f"difference {on[0] - off[0]:+.4f}")  # fmt: skip
            print(f"mean CLIP-T (chosen pages vs. their text)   with {on[1]:.4f} | without {off[1]:.4f} | "
                  f"difference {on[1] - off[1]:+.4f}")  # fmt: skip
            ratio = statistics.median(a[2] / b[2] for a, b in zip(rows[True], rows[False], strict=True))
            print(f"mean book time  with {on[2]:.1f} s | without {off[2]:.1f} s | median ratio {ratio:.2f}")
        finally:
            proc.terminate()
            proc.wait(30)


def portrait(client: httpx.Client, args) -> bytes:
    """The character's face drawn by the model itself (txt2img), when no `--face` is given."""
    prompt = f"portrait of Sasha, {CHARACTER}, looking at the viewer, plain background, {STYLE}"
    body = {"prompt": prompt, "width": args.size, "height": args.size, "steps": args.steps, "sampler_name": "Euler"}
    r = client.post("/sdapi/v1/txt2img", json={**body, "seed": 1})
    r.raise_for_status()
    return base64.b64decode(r.json()["images"][0])


def book(client: httpx.Client, body: dict) -> dict:
    r = client.post("/v1/books", json=body)
    r.raise_for_status()
    book_id = r.json()["id"]
    with client.stream("GET", f"/v1/jobs/{book_id}/events") as events:  # SSE, as a client would follow it
        for line in events.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() in ("done", "failed", "cancelled"):
                break
    view = client.get(f"/v1/books/{book_id}").json()
    assert view["state"] == "done", view
    return view


def page_means(view: dict) -> tuple[float, float]:
    """Mean CLIP-I ref and CLIP-T of the chosen images of the pages with a character reference."""
    scored = [p["scores"] for p in view["pages"] if p.get("reference") and "clip_i_ref" in (p["scores"] or {})]
    assert scored, "no page with a character reference was scored"
    return statistics.mean(s["clip_i_ref"] for s in scored), statistics.mean(s["clip_t"] for s in scored)


if __name__ == "__main__":
    main()
